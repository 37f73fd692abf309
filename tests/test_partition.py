"""Issue 6, partition behaviour: real ``p2pico node`` processes, each in its own network
namespace, and links cut and healed under them (tests/netns.py).

a. A pico S on B sends events (``event:send`` by DID) to a pico P on A while A is cut
   off: B accepts them and queues them in S's outbox (``/api/stats`` ``outbox``); after
   the heal every one arrives exactly once, in order.
b. A hosts P with one replica R; A is cut off from R and from the client's engine C.
   R takes P over after the lease; meanwhile A refuses to acknowledge what it cannot
   replicate. After the heal A takes R's record and stands down; every engine holds the
   same record and the same head chain, every acknowledged event is in it exactly once,
   and the heads A wrote alone are reported as a fork (``p2pico log``, ``/api/stats``),
   never adopted.

No sleeps: the test waits on answers, on ``GET /api/records/DID?after=N&wait=S`` and on
``GET /api/handled`` (``p2pico.testing.eventually``). Skipped, with the reason, where
user namespaces are not available; ``P2PICO_REQUIRE_NETNS=1`` makes that a failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from netns import Lab, unavailable

from p2pico import history
from p2pico.net import PeerUnreachable
from p2pico.replicas import REPLICATE_PATIENCE, Replicas, Unreplicated
from p2pico.testing import FakeNet, NodeProcess, cli, eventually, start_mesh
from protocols.messages import Target

SEEN = """
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
RELAY = """
ruleset io.p2pico.relay {
  rule relay {
    select when test relay
    event:send({"eci": event:attr("to"), "domain": "test", "type": "add",
                "attrs": {"n": event:attr("n")}})
  }
}
"""
RID = "io.p2pico.seen"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    why = unavailable()
    if why is not None:
        if os.environ.get("P2PICO_REQUIRE_NETNS"):
            pytest.fail(why)
        pytest.skip(why)
    monkeypatch.setenv("P2PICO_REPLICA_LEASE", "2")
    made = Lab(tmp_path)
    try:
        yield made
    finally:
        made.close()


def _get(node: NodeProcess, path: str, **params: Any) -> Any:
    r = httpx.get(f"{node.url}{path}", params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _event(node: NodeProcess, target: str, type: str, **attrs: Any) -> dict[str, Any]:
    r = httpx.post(f"{node.url}/sky/event/{target}/none/test/{type}", json=attrs, timeout=120)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _seen(node: NodeProcess, did: str) -> list[int]:
    r = httpx.get(f"{node.url}/sky/cloud/{did}/{RID}/seen", timeout=60)
    assert r.status_code == 200, r.text
    seen: list[int] = r.json()
    return seen


def _pico(tmp_path: Path, node: NodeProcess, source: str, name: str) -> str:
    path = tmp_path / f"{name}.krl"
    path.write_text(source)
    did: str = cli("pico", "new", "--ruleset", str(path), node=node)["did"]
    return did


@pytest.mark.slow
def test_event_sends_queue_at_the_sender_while_the_target_is_cut_off(
    tmp_path: Path, lab: Lab
) -> None:
    lab.add_host("a")
    lab.add_host("b")
    a = lab.start_node("a", tmp_path / "a")
    b = lab.start_node("b", tmp_path / "b", bootstrap=[a.multiaddr])
    p = _pico(tmp_path, a, SEEN, "seen")
    s = _pico(tmp_path, b, RELAY, "relay")
    # B knows where P is and has sent it one event: the path works before the cut.
    assert _get(b, f"/api/records/{p}", after=-1, wait=30)["host"] == a.peer_id
    assert "error" not in _event(b, s, "relay", to=p, n=0)
    eventually(lambda: _seen(a, p) == [0], "the first event:send landed", [a.url])

    lab.cut("a")
    total = 20
    for n in range(1, total + 1):  # accepted by S at once: its sends wait in B's outbox
        assert "error" not in _event(b, s, "relay", to=p, n=n)
    assert _get(b, "/api/stats")["outbox"] == total
    assert _seen(a, p) == [0]

    healed = time.monotonic()
    lab.heal("a")
    eventually(
        lambda: _seen(a, p) == list(range(total + 1)),
        "every queued event:send arrived exactly once, in order",
        [a.url],
    )
    print(f"{total} queued event:sends delivered {time.monotonic() - healed:.1f} s after the heal")
    assert _get(b, "/api/stats")["outbox"] == 0


@pytest.mark.slow
def test_a_host_cut_off_from_its_replica_is_replaced_and_its_own_heads_are_a_fork(
    tmp_path: Path, lab: Lab
) -> None:
    for name in ("a", "r", "c"):
        lab.add_host(name)
    a = lab.start_node("a", tmp_path / "a")
    r = lab.start_node("r", tmp_path / "r", bootstrap=[a.multiaddr])
    c = lab.start_node("c", tmp_path / "c", bootstrap=[a.multiaddr, r.multiaddr])
    p = _pico(tmp_path, a, SEEN, "seen")
    assert cli("replicas", p, "--add", r.peer_id, node=a)["replicas"] == [r.peer_id]
    seq0 = _get(c, f"/api/records/{p}", after=-1, wait=30)["seq"]
    acked: list[int] = []
    for n in range(1, 6):
        assert "error" not in _event(c, p, "add", n=n)
        acked.append(n)
    last_acked = cli("log", p, node=a)["heads"][0]

    lab.cut("a")
    cut = time.monotonic()
    alone: dict[str, Any] = {}

    async def partitioned() -> None:
        async with trio.open_nursery() as nursery:

            async def on_a() -> None:  # A commits it, but no replica can take it
                alone.update(await trio.to_thread.run_sync(lambda: _event(a, p, "add", n=100)))

            nursery.start_soon(on_a)
            # C's engine gives up on A once R's record reaches it, and asks R
            taken = await trio.to_thread.run_sync(
                lambda: _get(c, f"/api/records/{p}", after=seq0, wait=30)
            )
            assert taken["host"] == r.peer_id
            print(f"C holds R's record {time.monotonic() - cut:.1f} s after the cut")
            for n in range(6, 11):
                body = await trio.to_thread.run_sync(lambda n=n: _event(c, p, "add", n=n))
                assert "error" not in body, body
                acked.append(n)

    trio.run(partitioned)
    # A ran it and committed it, but answered an error: never acknowledged
    assert "is not on any replica" in alone.get("error", ""), alone
    mine = cli("log", p, node=a)
    assert mine["verified"] is True
    assert mine["heads"][1] == last_acked  # A's own head on top of the last acknowledged
    alone_head = mine["heads"][0]

    healed = time.monotonic()
    lab.heal("a")
    # A takes R's record, hands the pico over and keeps its lone head as a fork
    assert _get(a, f"/api/records/{p}", after=seq0, wait=30)["host"] == r.peer_id
    print(f"A holds R's record {time.monotonic() - healed:.1f} s after the heal")
    assert "error" not in _event(a, p, "add", n=11)  # through A, now to R
    acked.append(11)
    assert p not in [x["did"] for x in _get(a, "/api/picos")]
    assert _seen(r, p) == acked  # every acknowledged event once, in order; 100 never
    assert _seen(c, p) == acked

    # One record everywhere, no equivocation; one head chain: R's, also on A once A
    # holds it (imported), where A's own head of the partition is reported as a fork.
    records = [_get(n, f"/api/records/{p}") for n in (a, r, c)]
    assert len({(x["host"], x["seq"]) for x in records}) == 1, records
    stats = {n.peer_id: _get(n, "/api/stats") for n in (a, r, c)}
    for s in stats.values():
        assert s["rejected"].get("record-equivocation", 0) == 0, stats
        assert s["rejected"].get("record-forged", 0) == 0, stats
    assert stats[r.peer_id]["replicas"]["takeovers"] == 1
    assert stats[a.peer_id]["replicas"]["forks_kept"] == 1
    truth = cli("log", p, node=r)
    assert truth["verified"] is True
    assert "fork" not in truth
    assert alone_head["cid"] not in [h["cid"] for h in truth["heads"]]
    car = tmp_path / "p.car"
    cli("export", p, "-o", str(car), node=r)
    imported = cli("import", str(car), node=a)
    assert imported["seq"] == truth["heads"][0]["seq"]
    seen_on_a = cli("log", p, node=a)
    assert seen_on_a["heads"] == truth["heads"]
    cli("import", str(car), node=c)  # C never held the history: it verifies the same chain
    seen_on_c = cli("log", p, node=c)
    assert seen_on_c["heads"] == truth["heads"]
    assert "fork" not in seen_on_c
    theirs = next(h for h in truth["heads"] if h["seq"] == alone_head["seq"])
    assert seen_on_a["fork"] == {
        "seq": alone_head["seq"],
        "heads": [theirs["cid"], alone_head["cid"]],
    }


# -- in process, on trio's MockClock: the stand-down keeps the lone head as a fork ------------


async def test_lone_heads_are_kept_as_a_fork_at_the_stand_down(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        ra, rb = Replicas(a, lease=2.0), Replicas(b, lease=2.0)
        await nursery.start(ra.serve)
        await nursery.start(rb.serve)
        pico = await a.create_pico([SEEN])
        did = pico.did
        await ra.add(did, b.peer_id)
        for n in (1, 2):
            await a.event(Target(did), "test", "add", {"n": n})
        acked_seq = pico.seq

        # A is cut off: its next event commits there, is refused as unreplicated, and B
        # takes the pico over after the lease from the acknowledged head.
        real_request = a.net.request

        async def cut(*args: object, **kwargs: object) -> bytes:
            raise PeerUnreachable("cut off")

        a.net.request = cut  # type: ignore[method-assign]
        replicating = trio.Event()
        replicate = a.engine.replicate
        assert replicate is not None

        async def watched(p: Any) -> None:
            replicating.set()
            await replicate(p)

        a.engine.replicate = watched
        refused: list[Unreplicated] = []

        async def lone() -> None:
            with pytest.raises(Unreplicated) as caught:
                await a.event(Target(did), "test", "add", {"n": 100})
            refused.append(caught.value)

        async with trio.open_nursery() as inner:
            inner.start_soon(lone)
            await replicating.wait()
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(REPLICATE_PATIENCE + 1)  # also past B's lease
        a.engine.replicate = replicate
        assert len(refused) == 1
        await trio.testing.wait_all_tasks_blocked()
        assert b.engine.hosts(did)
        lone_head, lone_seq = pico.head, pico.seq
        assert lone_seq == acked_seq + 1
        await b.event(Target(did), "test", "add", {"n": 3})  # B's own seq acked_seq + 1

        # Healed: A stands down and keeps its lone head as a fork, not as the pico's head.
        a.net.request = real_request  # type: ignore[method-assign]
        mock_clock.jump(1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert not a.engine.hosts(did)
        assert ra.forks_kept == 1
        assert [(h.cid, h.seq, h.fork) for h in a.home.imported_heads(did)] == [
            (lone_head, lone_seq, True)
        ]
        assert history.current_head(a.engine, did) is None  # never adopted
        assert await b.query(Target(did), RID, "seen", {}) == [1, 2, 3]

        # Once A holds the true chain (B's export, imported), its log reports the fork.
        roots, blocks = history.parse_car(
            b"".join(history.car_chunks(b.engine, b.engine.picos[did].head))
        )
        history.import_blocks(a.engine, roots, blocks)
        current = history.current_head(a.engine, did)
        assert current is not None
        log = history.log(a.engine, did, current)
        truth = b.engine.picos[did]
        assert log["heads"][0]["cid"] == str(truth.head)  # type: ignore[index]
        b_head = log["heads"][0]["cid"]  # type: ignore[index]
        assert log["fork"] == {"seq": lone_seq, "heads": [b_head, str(lone_head)]}
        assert a.rejections["record-equivocation"] == 0
        assert b.rejections["record-equivocation"] == 0
        nursery.cancel_scope.cancel()
