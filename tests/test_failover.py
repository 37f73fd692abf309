"""Issue 6, Must show 2: replicas and failover, with real ``p2pico node`` processes.

Three engines on loopback: A hosts a pico, B is its replica (``p2pico replicas DID --add
B``), C is where a client sends its events.  The pico appends each event's ``n`` to a
list, so the list says exactly which events were applied, how often and in which order.

- kill -9 of A under load: the pico resumes on B, every acknowledged event is in the
  list exactly once, in order; A restarts on its home and stands down.
- A only paused (SIGSTOP, then SIGCONT) with an event in flight to it: B takes over, the
  event is applied once (on B), A stands down when it wakes, and every engine holds the
  same record for the pico: no engine counted an equivocation.

The lease is 2 s (``P2PICO_REPLICA_LEASE``).  No sleeps: the test waits on the records'
long-poll (``/api/records/DID?after=N&wait=S``) and on answers.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nacl.exceptions
import pytest
import trio
import trio.testing

from dag.cid import CID
from dag.did import Keypair
from dag.head import sign_head
from p2pico.net import PeerUnreachable
from p2pico.replicas import REPLICATE_PATIENCE, Replicas, Unreplicated, open_seed
from p2pico.testing import FakeNet, NodeProcess, cli, start_mesh, start_node
from protocols import location, replica
from protocols.messages import Reply, Target

RULESET = """
ruleset io.p2pico.seen {
  meta { shares seen }
  global {
    seen = function() { ent:seen.defaultsTo([]) }
  }
  rule add {
    select when test add
    pre { n = event:attr("n") }
    send_directive("added", {"n": n})
    fired { ent:seen := ent:seen.defaultsTo([]).append(n) }
  }
}
"""
RID = "io.p2pico.seen"
LEASE = "2"


@pytest.fixture
def three_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[NodeProcess]]:
    monkeypatch.setenv("P2PICO_REPLICA_LEASE", LEASE)
    started: list[NodeProcess] = []
    try:
        a = start_node(tmp_path / "a", log_dir=tmp_path)
        started.append(a)
        b = start_node(tmp_path / "b", bootstrap=[a.multiaddr], log_dir=tmp_path)
        started.append(b)
        c = start_node(tmp_path / "c", bootstrap=[a.multiaddr, b.multiaddr], log_dir=tmp_path)
        started.append(c)
        yield started
    finally:
        for node in started:
            if node.proc.poll() is None:
                node.stop()


def _replicated_pico(tmp_path: Path, a: NodeProcess, b: NodeProcess) -> tuple[str, int]:
    source = tmp_path / "seen.krl"
    source.write_text(RULESET)
    did = cli("pico", "new", "--ruleset", str(source), node=a)["did"]
    added = cli("replicas", did, "--add", b.peer_id, node=a)
    assert added["replicas"] == [b.peer_id], added
    assert cli("replicas", did, node=a)["replicas"] == [b.peer_id]
    record = httpx.get(f"{a.url}/api/records/{did}", timeout=10).json()
    assert record["host"] == a.peer_id
    return did, int(record["seq"])


async def _send(client: httpx.AsyncClient, did: str, n: int) -> bool:
    """One event through the client's engine; True once it is acknowledged."""
    r = await client.post(f"/sky/event/{did}/none/test/add", json={"n": n})
    body = r.json()
    if r.status_code != 200 or "error" in body:
        return False
    [directive] = [d for d in body["directives"] if d["name"] == "added"]
    assert directive["options"]["n"] == n
    return True


async def _record_after(node: NodeProcess, did: str, seq: int) -> dict[str, object]:
    """The node's record for ``did`` once it holds one newer than ``seq`` (long-poll)."""
    async with httpx.AsyncClient(base_url=node.url, timeout=60) as client:
        r = await client.get(f"/api/records/{did}", params={"after": seq, "wait": 30})
        assert r.status_code == 200, r.text
        result: dict[str, object] = r.json()
        return result


async def _hosted(node: NodeProcess) -> list[str]:
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        return [p["did"] for p in (await client.get("/api/picos")).json()]


async def _stood_down(node: NodeProcess, did: str, n: int) -> None:
    """Once ``node`` holds the newer record, an event sent through it reaches the new
    host: the stand-down was queued on the pico before it, so the pico has left ``node``
    by the time the event is answered."""
    async with httpx.AsyncClient(base_url=node.url, timeout=60) as client:
        assert await _send(client, did, n)
    assert did not in await _hosted(node)


async def _no_equivocation(nodes: list[NodeProcess], did: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        records = [(await client.get(f"{n.url}/api/records/{did}")).json() for n in nodes]
        stats = [(await client.get(f"{n.url}/api/stats")).json() for n in nodes]
    assert len({(r["host"], r["seq"], r["state"]) for r in records}) == 1, records
    for s in stats:
        assert s["rejected"].get("record-equivocation", 0) == 0, s
        assert s["rejected"].get("record-forged", 0) == 0, s


@pytest.mark.slow
async def test_kill_9_of_the_host_under_load(
    tmp_path: Path, three_nodes: list[NodeProcess]
) -> None:
    a, b, c = three_nodes
    did, seq0 = _replicated_pico(tmp_path, a, b)
    total, kill_after = 40, 15
    acked: list[int] = []
    failed: list[int] = []
    reached = trio.Event()
    started = time.perf_counter()

    async def client_loop() -> None:  # sends without pause: the kill lands mid-stream
        async with httpx.AsyncClient(base_url=c.url, timeout=120) as client:
            for n in range(1, total + 1):
                (acked if await _send(client, did, n) else failed).append(n)
                if n == kill_after:
                    reached.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_loop)
        await reached.wait()
        a.proc.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(a.proc.wait)
    elapsed = time.perf_counter() - started
    print(f"{total} events, host killed after {kill_after}: {elapsed:.1f} s; failed {failed}")

    record = await _record_after(c, did, seq0)
    assert record["host"] == b.peer_id
    assert cli("resolve", did, node=c) == b.peer_id
    seen = cli("query", did, RID, "seen", node=c)
    # every acknowledged event applied exactly once, in the order sent
    assert [n for n in seen if n in acked] == acked
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(acked) | set(failed)
    assert acked == list(range(1, total + 1))  # the client's engine retried across the failover
    log = cli("log", did, node=b)
    assert log["verified"] is True

    # A comes back on its home: it offers its record to B, is refused, and stands down.
    restarted = start_node(a.home, bootstrap=[b.multiaddr, c.multiaddr], log_dir=tmp_path)
    three_nodes[0] = restarted
    back = await _record_after(restarted, did, seq0)
    assert back["host"] == b.peer_id
    await _stood_down(restarted, did, total + 1)
    assert cli("query", did, RID, "seen", node=b) == [*acked, total + 1]
    await _no_equivocation([restarted, b, c], did)


@pytest.mark.slow
async def test_paused_host_is_replaced_and_stands_down(
    tmp_path: Path, three_nodes: list[NodeProcess]
) -> None:
    a, b, c = three_nodes
    did, seq0 = _replicated_pico(tmp_path, a, b)
    async with httpx.AsyncClient(base_url=c.url, timeout=120) as client:
        for n in range(1, 6):
            assert await _send(client, did, n)
        a.proc.send_signal(signal.SIGSTOP)
        try:
            results: dict[int, bool] = {}

            async def in_flight() -> None:  # reaches A while it is paused
                results[6] = await _send(client, did, 6)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_flight)
                taken = await _record_after(c, did, seq0)
                assert taken["host"] == b.peer_id
            assert results[6] is True  # C gave up on A when B's record came, and asked B
            for n in range(7, 10):
                assert await _send(client, did, n)
        finally:
            a.proc.send_signal(signal.SIGCONT)
    # A wakes up: its request from C runs there, but B refuses to replicate it, so it is
    # never acknowledged; A takes B's record and stands down.
    woke = await _record_after(a, did, seq0)
    assert woke["host"] == b.peer_id
    await _stood_down(a, did, 10)
    seen = cli("query", did, RID, "seen", node=a)
    assert seen == list(range(1, 11))
    await _no_equivocation([a, b, c], did)
    async with httpx.AsyncClient(timeout=10) as client:
        stats = (await client.get(f"{b.url}/api/stats")).json()
    assert stats["replicas"]["takeovers"] == 1


# -- in process, on trio's MockClock: the replica's checks and the lease, step by step ----


async def test_replica_checks_and_lease_in_process(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        ra, rb = Replicas(a, lease=2.0), Replicas(b, lease=2.0)
        await nursery.start(ra.serve)
        await nursery.start(rb.serve)
        pico = await a.create_pico([RULESET])
        did = pico.did
        added = await ra.add(did, b.peer_id)
        assert added["replicas"] == [b.peer_id]
        for n in (1, 2, 3):
            await a.event(Target(did), "test", "add", {"n": n})
        assert rb.roles[did].head == pico.head  # acknowledged, so the replica holds it
        assert rb.roles[did].seq == pico.seq
        sealed = rb.roles[did].sealed
        assert pico.keypair.seed not in sealed
        assert open_seed(sealed, b.engine_key) == pico.keypair.seed
        with pytest.raises(nacl.exceptions.CryptoError):
            open_seed(sealed, a.engine_key)  # sealed to B's engine key only

        # What the replica refuses: a block that is not its CID, a head it cannot chain
        # to the one it holds, a head signed by another key, a record from a non-host.
        head_block = a.engine.store.get_block(pico.head)
        assert head_block is not None
        wrong = replica.SyncItem(did, (b.peer_id,), None, ((head_block.cid, b"x"),))
        [bad] = await _sync(rb, a.peer_id, wrong)
        assert bad.code == "refused"
        assert "does not match its CID" in str(bad.error)
        other = Keypair.generate()
        forged = sign_head(other, seq=pico.seq + 1, prev=pico.head, state=pico.state_root, ts=0)
        [stranger] = await _sync(
            rb,
            a.peer_id,
            replica.SyncItem(did, (b.peer_id,), forged.cid, ((forged.cid, forged.data),)),
        )
        assert stranger.code == "missing"
        assert "signed for" in str(stranger.error)
        [lost] = await _sync(rb, a.peer_id, replica.SyncItem(did, (b.peer_id,), CID.of(b"?", 0x55)))
        assert lost.code == "missing"
        assert "is missing" in str(lost.error)
        held = b.records[did]
        rogue = location.build_record(pico.keypair, b.engine_key, seq=held.seq + 1, prev=held)
        reply = Reply.decode(
            await rb._on_request("12D3KooWrogue", replica.RecordRequest(did, rogue).encode())
        )
        assert reply.code == "unknown"
        assert rb.roles[did].seq == pico.seq  # none of it changed what the replica holds

        # A is cut off (its requests fail): its next event commits there but is not
        # acknowledged, and after the lease B takes the pico over from the acked head.
        real_request = a.net.request

        async def cut(*args: object, **kwargs: object) -> bytes:
            raise PeerUnreachable("cut off")

        a.net.request = cut  # type: ignore[method-assign]
        acked_seq = pico.seq
        failures: list[BaseException] = []

        async def unacked() -> None:
            try:
                await a.event(Target(did), "test", "add", {"n": 99})
            except Unreplicated as e:
                failures.append(e)

        # Jump the clock only once the event has committed on A and waits for a replica
        # (its KRL runs in a worker thread, which wait_all_tasks_blocked cannot see).
        replicating = trio.Event()
        replicate = a.engine.replicate
        assert replicate is not None

        async def watched(p: object) -> None:
            replicating.set()
            await replicate(p)  # type: ignore[arg-type]

        a.engine.replicate = watched  # type: ignore[assignment]
        async with trio.open_nursery() as inner:
            inner.start_soon(unacked)
            await replicating.wait()
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(REPLICATE_PATIENCE + 1)  # also past B's lease
        a.engine.replicate = replicate
        assert len(failures) == 1, failures
        assert "is not on any replica" in str(failures[0])
        await trio.testing.wait_all_tasks_blocked()
        assert b.engine.hosts(did)
        assert b.records[did].host == b.peer_id
        assert b.engine.picos[did].seq == acked_seq  # 99 never reached it
        assert rb.takeovers == 1

        # Healed: A's next heartbeat is answered "taken" with B's record; A stands down.
        a.net.request = real_request  # type: ignore[method-assign]
        mock_clock.jump(1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert not a.engine.hosts(did)
        assert a.records[did].host == b.peer_id
        assert await b.query(Target(did), RID, "seen", {}) == [1, 2, 3]
        assert a.rejections["record-equivocation"] == 0
        assert b.rejections["record-equivocation"] == 0
        nursery.cancel_scope.cancel()


async def _sync(r: Replicas, peer: str, item: replica.SyncItem) -> list[replica.SyncAnswer]:
    data = await r._on_request(peer, replica.SyncRequest(2000, (item,)).encode())
    return replica.decode_answers(data)
