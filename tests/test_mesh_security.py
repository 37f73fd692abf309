"""Authenticated, idempotent messaging between engines, without a network.

Meshes are connected in one process by p2pico.testing.FakeNet, so what crosses
the "wire" is exactly the bytes the protocols produce, and a test can play the
hostile relay: alter a message, forge a record, replay an old one, drop a reply.
Every rejection is counted in ``Mesh.stats()`` (``GET /api/stats``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from dag import cbor
from dag.cid import CID
from dag.did import Keypair
from dag.state import read_state
from p2pico import engine as engine_mod
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.testing import FakeNet, start_mesh
from protocols import location, messages
from protocols.messages import MSG_PROTOCOL, EventRequest, Reply, Target

RECEIVER = """ruleset receiver {
  meta { shares got }
  global { got = function() { ent:got.defaultsTo([]) } }
  rule got { select when test got
    fired { ent:got := got().append(event:attrs{"n"}) }
  }
}"""

SENDER = """ruleset sender {
  rule send { select when test send
    foreach event:attrs{"ns"} setting(n)
    event:send({"eci": event:attrs{"to"}, "domain": "test", "type": "got", "attrs": {"n": n}})
  }
}"""

PARENT = """ruleset parent {
  meta { shares kid }
  global { kid = function() { ent:kid } }
  rule new_child { select when family new
    ctx:newPico(event:attrs{"rulesets"}) setting(eci)
    fired { ent:kid := eci }
  }
  rule hello { select when family hello
    event:send({"eci": event:attrs{"eci"}.defaultsTo(ent:kid), "domain": "test", "type": "got",
                "attrs": {"n": event:attrs{"n"}}})
  }
}"""

RID = "receiver"


async def got(mesh: Mesh, did: str) -> Any:
    return await mesh.query(Target(did), RID, "got", {})


async def wait_until(check: Callable[[], Awaitable[bool] | bool]) -> None:
    """Wait for a condition that the mesh's own tasks make true (no timing in the test)."""
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.01)


# -- location records: forged, replayed, equivocating ---------------------------------------


async def test_bad_records_are_rejected_counted_and_shown_in_api_stats(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        pico = await a.create_pico([RECEIVER])
        first = a.records[pico.did]
        second_raw = location.build_record(
            pico.keypair, a.engine_key, seq=first.seq + 1, prev=first
        )
        second = a.consider(second_raw, source="test")
        assert second is not None
        assert second.seq == 1

        # Forged: a record for the DID signed by another key (the pico signature fails).
        intruder = Keypair.generate()
        forged = location.build_record(intruder, intruder, seq=50).replace(
            intruder.did.encode(), pico.did.encode()
        )
        await a._on_gossip("12D3KooWrelay", forged)
        # Forged the other way: the pico's signature is good, the host's is another key's.
        own = location.build_record(pico.keypair, intruder, seq=51, prev=second)
        swapped = own.replace(intruder.peer_id.encode(), a.peer_id.encode())
        assert swapped != own
        await a._on_gossip("12D3KooWrelay", swapped)
        # Replayed: the old, validly signed seq 0 record again.
        await a._on_gossip("12D3KooWrelay", first.raw)
        # Equivocation: a second, different seq 1 signed by the pico for another host.
        rival = location.build_record(pico.keypair, intruder, seq=1, prev=first)
        a.consider(rival, source="test")

        assert a.records[pico.did].seq == 1
        assert a.records[pico.did].raw in (second.raw, rival)  # the lower hash wins
        assert len(a.equivocations) == 1
        stats = a.stats()
        assert stats["rejected"] == {
            "record-equivocation": 1,
            "record-forged": 2,
            "record-stale": 1,
        }

        # The same counters over HTTP.
        app = build_app(a, lambda: {"peer_id": a.peer_id})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            served = (await client.get("/api/stats")).json()
        assert served["rejected"] == stats["rejected"]
        assert served["duplicates"] == 0
        nursery.cancel_scope.cancel()


# -- signed messages ----------------------------------------------------------------------


async def test_a_relay_cannot_alter_or_forge_a_signed_message(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        receiver = await b.create_pico([RECEIVER])
        sender = await a.create_pico([SENDER])
        handle = world[b.peer_id].handlers[MSG_PROTOCOL]
        now_ms = int(a.engine.clock() * 1000)
        signed = messages.sign_request(
            EventRequest(Target(receiver.did), "test", "got", {"n": 1}, mid="m1", hops=1),
            sender.keypair,
            now_ms,
        )
        assert messages.check_signature(signed, now_ms) == sender.did

        async def send(request: EventRequest) -> Reply:
            return Reply.decode(await handle(a.peer_id, request.encode()))

        # Altered attributes, an altered target channel, a claimed sender that did not
        # sign, a signature without a sender, and a message signed an hour ago.
        altered = dataclasses.replace(signed, attrs={"n": 666})
        rerouted = dataclasses.replace(signed, target=Target(receiver.did, receiver.eci))
        impostor = dataclasses.replace(signed, sender=Keypair.generate().did)
        anonymous = dataclasses.replace(signed, sender=None)
        old = messages.sign_request(signed, sender.keypair, now_ms - 3600 * 1000)
        for bad, why in [
            (altered, f"signature does not verify for {sender.did}"),
            (rerouted, f"signature does not verify for {sender.did}"),
            (impostor, "signature does not verify for did:key:"),
            (anonymous, "a signed message needs both 'from' and 'sig'"),
            (old, "signed 3600 s in the past (at most 300 s either way)"),
        ]:
            reply = await send(bad)
            assert reply.code == "bad-signature", reply
            assert reply.error is not None
            assert why in reply.error, reply.error
        assert await got(b, receiver.did) == []
        assert b.stats()["rejected"] == {"message-bad-signature": 5}

        # The routing fields are not signed: a relay may count hops; the message still verifies.
        reply = await send(dataclasses.replace(signed, hops=2))
        assert reply.error is None, reply
        assert await got(b, receiver.did) == [1]
        nursery.cancel_scope.cancel()


async def test_family_channels_work_across_engines_for_their_owner_only(tmp_path: Path) -> None:
    """The parent's event:send is signed by its key, so the child's new host can tell
    it from another pico's: pico-engine issue #41, and README "Limits" before this."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        parent = await a.create_pico([PARENT])
        await a.event(Target(parent.did), "family", "new", {"rulesets": [RECEIVER]})
        kid_eci = await a.query(Target(parent.did), "parent", "kid", {})
        kid = a.engine.did_of_eci(kid_eci)
        assert kid is not None
        await a.move(kid, b.peer_id)
        assert b.engine.hosts(kid)
        assert not a.engine.hosts(kid)

        # The parent on A uses the child's family channel, now on B.
        await a.event(Target(parent.did), "family", "hello", {"n": 1})
        await wait_until(lambda: b.engine.picos[kid].ent[RID].get("got") == [1])

        # Another pico on A (same engine as the parent) may not; nor may HTTP.
        other = await a.create_pico([PARENT])
        await a.event(Target(other.did), "family", "hello", {"n": 2, "eci": kid_eci})
        await wait_until(lambda: not a._outboxes)
        with pytest.raises(Exception, match="only the owner can use it"):
            await a.event(Target(kid, kid_eci), "test", "got", {"n": 3})
        assert await got(b, kid) == [1]
        nursery.cancel_scope.cancel()


# -- retries and the dedup window --------------------------------------------------------


def lose_first_replies(net: FakeNet, protocol: str, count: int) -> list[int]:
    """The next ``count`` requests on ``protocol`` are handled, then their replies lost."""
    handler = net.handlers[protocol]
    lost = [0]

    async def handle(peer: str, data: bytes) -> bytes:
        reply = await handler(peer, data)
        if lost[0] < count:
            lost[0] += 1
            raise ConnectionResetError("the reply was lost")
        return reply

    net.handlers[protocol] = handle
    return lost


async def test_a_lost_reply_is_retried_and_the_event_applied_once(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        receiver = await b.create_pico([RECEIVER])
        lost = lose_first_replies(world[b.peer_id], MSG_PROTOCOL, 2)
        result = await a.event(Target(receiver.did), "test", "got", {"n": 7})
        assert lost == [2]
        assert isinstance(result, dict)
        assert result["directives"] == []
        assert await got(b, receiver.did) == [7]  # ran once, though sent three times
        assert a.stats()["retries"] == 2
        assert b.stats()["duplicates"] == 2
        # The second and third sends got the first one's answer, eid included.
        assert b.engine.picos[receiver.did].dedup[-1][1] == result
        nursery.cancel_scope.cancel()


async def test_the_dedup_window_moves_with_the_pico(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        c = await start_mesh(nursery, tmp_path / "c", world)
        receiver = await b.create_pico([RECEIVER])
        request = EventRequest(Target(receiver.did), "test", "got", {"n": 1}, mid="a/x/1", hops=1)
        first = Reply.decode(
            await world[b.peer_id].handlers[MSG_PROTOCOL](a.peer_id, request.encode())
        )
        assert first.error is None
        await b.move(receiver.did, c.peer_id)
        # The same message again, now at the new host: answered from the window, not re-run.
        again = Reply.decode(
            await world[c.peer_id].handlers[MSG_PROTOCOL](a.peer_id, request.encode())
        )
        assert again.ok == first.ok
        assert await got(c, receiver.did) == [1]
        assert c.stats()["duplicates"] == 1
        # The window is in the pico's signed state (meta.dedup links blocks of [key,
        # result] lists), moved with it: what a restart of C reads back.
        pico = c.engine.picos[receiver.did]
        assert [entry[:2] for entry in pico.dedup] == [["-|a/x/1", first.ok]]
        assert pico.state_root is not None
        assert stored_window(c, receiver.did) == [["-|a/x/1", first.ok]]
        # A different id is a different message.
        other = dataclasses.replace(request, mid="a/x/2")
        await world[c.peer_id].handlers[MSG_PROTOCOL](a.peer_id, other.encode())
        assert await got(c, receiver.did) == [1, 1]
        nursery.cancel_scope.cancel()


def stored_window(mesh: Mesh, did: str) -> list[object]:
    """The dedup window in the pico's committed state, read from the block store."""
    pico = mesh.engine.picos[did]
    assert pico.state_root is not None
    links = read_state(mesh.engine.store, pico.state_root).meta["dedup"]
    assert isinstance(links, list)
    window: list[object] = []
    for cid in links:
        assert isinstance(cid, CID)
        block = mesh.engine.store.get_block(cid)
        assert block is not None
        assert isinstance(block.value, list)
        assert len(block.value) <= engine_mod.DEDUP_BUCKET
        # [key, DAG-CBOR of the result] each
        window += [[key, cbor.decode(result)] for key, result in block.value]
    return window


async def send_with_mid(mesh: Mesh, peer: str, did: str, mid: str, n: int) -> Reply:
    """An event from ``peer`` with message id ``mid``, as the mesh protocol delivers it."""
    request = EventRequest(Target(did), "test", "got", {"n": n}, mid=mid, hops=1)
    net = mesh.net
    assert isinstance(net, FakeNet)
    return Reply.decode(await net.handlers[MSG_PROTOCOL](peer, request.encode()))


async def test_the_dedup_window_keeps_the_last_messages_in_small_blocks(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        receiver = await b.create_pico([RECEIVER])
        sizes = []
        for i in range(1, 81):
            assert (await send_with_mid(b, a.peer_id, receiver.did, f"a/x/{i}", i)).error is None
            pico = b.engine.picos[receiver.did]
            assert pico.state_root is not None
            root = b.engine.store.get_block(pico.state_root)
            assert root is not None
            sizes.append(len(root.data))
        window, per = engine_mod.DEDUP_WINDOW, engine_mod.DEDUP_BUCKET
        pico = b.engine.picos[receiver.did]
        keys = [entry[0] for entry in pico.dedup]
        # 80 messages in blocks of 8: the oldest blocks left while the rest held 64
        assert keys == [f"-|a/x/{i}" for i in range(80 - window + 1, 81)]
        assert [entry[:2] for entry in pico.dedup] == stored_window(b, receiver.did)
        # The state root links the blocks: it grows by a link per block, not per entry.
        assert max(sizes) - min(sizes) < 60 * (window // per + 1)
        # The oldest message kept is answered from the window; one before it runs again.
        duplicates = b.stats()["duplicates"]
        again = await send_with_mid(b, a.peer_id, receiver.did, f"a/x/{80 - window + 1}", 0)
        assert again.error is None
        assert b.stats()["duplicates"] == duplicates + 1
        assert (await send_with_mid(b, a.peer_id, receiver.did, "a/x/1", 1)).error is None
        assert b.stats()["duplicates"] == duplicates + 1
        assert (await got(b, receiver.did)).count(1) == 2
        # What a restart reads back from the store is the same window.
        pico = b.engine.picos[receiver.did]
        loaded = b.engine._load(pico.did, pico.keypair, pico.head)
        assert [e[:2] for e in loaded.dedup] == [e[:2] for e in pico.dedup]
        assert [blk.cid for blk, _ in loaded.dedup_buckets] == [
            blk.cid for blk, _ in pico.dedup_buckets
        ]
        nursery.cancel_scope.cancel()


async def test_a_dedup_window_kept_inline_by_an_older_state_still_loads(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        receiver = await b.create_pico([RECEIVER])
        for i in range(1, 12):
            assert (await send_with_mid(b, a.peer_id, receiver.did, f"a/x/{i}", i)).error is None
        pico = b.engine.picos[receiver.did]
        first = [e[:2] for e in pico.dedup]
        # As states were written before the window had blocks: the list inline in meta.
        pico.dedup_buckets = []
        pico.dedup_inline = None
        await b.event(Target(receiver.did), "test", "got", {"n": 100})  # no message id
        assert pico.state_root is not None
        inline = read_state(b.engine.store, pico.state_root).meta["dedup"]
        assert isinstance(inline, bytes)
        assert cbor.decode(inline) == first
        old = b.engine._load(pico.did, pico.keypair, pico.head)
        assert [e[:2] for e in old.dedup] == first
        assert old.dedup_buckets == []
        # Such a pico answers repeats from it, and its next message moves it into blocks.
        b.engine.picos[receiver.did] = old
        duplicates = b.stats()["duplicates"]
        assert (await send_with_mid(b, a.peer_id, receiver.did, "a/x/3", 3)).error is None
        assert b.stats()["duplicates"] == duplicates + 1
        assert (await send_with_mid(b, a.peer_id, receiver.did, "a/x/12", 12)).error is None
        assert stored_window(b, receiver.did) == [*first, ["-|a/x/12", old.dedup[-1][1]]]
        assert [e[0] for e in b.engine.picos[receiver.did].dedup][-1] == "-|a/x/12"
        nursery.cancel_scope.cancel()


# -- partitions: event:send waits in the sender's outbox -----------------------------------

EPOCH = 1_700_000_000


@pytest.fixture
def clock(autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> Any:
    """MockClock, with autojump off while KRL runs in a worker thread (as in
    tests/test_scheduled_events.py): time moves only when the whole mesh is idle."""
    real = trio.to_thread.run_sync
    busy = 0

    async def run_sync(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal busy
        busy += 1
        autojump_clock.autojump_threshold = math.inf
        try:
            return await real(fn, *args, **kwargs)
        finally:
            busy -= 1
            if not busy:
                autojump_clock.autojump_threshold = 0

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)
    return autojump_clock


async def test_sends_to_an_unreachable_pico_wait_and_arrive_in_order_after_heal(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        a.engine.clock = b.engine.clock = lambda: EPOCH + trio.current_time()
        receiver = await b.create_pico([RECEIVER])
        sender = await a.create_pico([SENDER])
        await a.resolve(receiver.did)

        world[b.peer_id].down = True  # B is cut off
        await a.event(Target(sender.did), "test", "send", {"to": receiver.did, "ns": [1, 2, 3]})
        await a.event(Target(sender.did), "test", "send", {"to": receiver.did, "ns": [4, 5]})
        started = trio.current_time()
        await wait_until(lambda: a.retries >= 12)
        assert a.stats()["outbox"] == 5  # all five wait at the sender's engine
        assert trio.current_time() - started > 5  # backed off, on the mock clock

        # Ten minutes later (mock time) B is back: everything arrives, once, in order.
        await trio.sleep(600)
        assert a.stats()["outbox"] == 5
        world[b.peer_id].down = False
        await wait_until(lambda: a.stats()["outbox"] == 0)
        assert await got(b, receiver.did) == [1, 2, 3, 4, 5]
        nursery.cancel_scope.cancel()
