"""The mesh's checks, without a network: records it refuses, blocks it refuses, moves it refuses.

Meshes are connected in one process by p2pico.testing.FakeNet, so what crosses
the "wire" is exactly the bytes the protocols produce.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dag import cbor
from dag.cid import CID, DAG_CBOR
from dag.did import Keypair
from p2pico.engine import PicoError
from p2pico.net import NetError, StreamFailed
from p2pico.testing import FakeNet, start_mesh
from protocols import location
from protocols.messages import (
    BLOCKS_PROTOCOL,
    LOC_PROTOCOL,
    MOVE_PROTOCOL,
    MSG_PROTOCOL,
    EventRequest,
    ManifestRequest,
    MessageError,
    MovePrefetch,
    MovePropose,
    Reply,
    Target,
    WantRequest,
    decode_blocks_request,
    decode_move_request,
    encode_manifest,
)

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
RID = "io.p2pico.counter"


async def test_gossiped_forged_and_older_records_are_refused(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        pico = await a.create_pico([COUNTER])
        held = a.records[pico.did]

        # A record for this DID signed by some other key: refused, the held one stays.
        intruder = Keypair.generate()
        forged = location.build_record(intruder, intruder, seq=held.seq + 10)
        forged_for_did = forged.replace(intruder.did.encode(), pico.did.encode())
        await a._on_gossip("12D3KooWintruder", forged_for_did)
        assert a.records[pico.did] is held

        # A validly signed but older record: ignored.
        newer = location.build_record(pico.keypair, a.engine_key, seq=held.seq + 1, prev=held)
        assert a.consider(newer, source="test") is not None
        await a._on_gossip("12D3KooWpeer", held.raw)
        assert a.records[pico.did].seq == held.seq + 1

        # Same sequence, other content: reported as equivocation, resolved deterministically.
        rival = location.build_record(pico.keypair, intruder, seq=held.seq + 1, prev=held)
        kept = a.consider(rival, source="test")
        assert len(a.equivocations) == 1
        assert kept is a.records[pico.did]
        nursery.cancel_scope.cancel()


async def test_move_refuses_blocks_that_do_not_match_their_cid(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        for _ in range(3):
            await a.event(Target(pico.did), "counter", "inc", {})

        def corrupt(protocol: str, reply: bytes) -> bytes:
            # Flip one byte inside the block payloads A serves.
            if protocol == BLOCKS_PROTOCOL:
                i = len(reply) // 2
                return reply[:i] + bytes([reply[i] ^ 0x01]) + reply[i + 1 :]
            return reply

        world[a.peer_id].tamper = corrupt
        with pytest.raises(
            Exception,
            match=r"move failed: .* refused: block bytes do not match CID baf[a-z2-7]+: digest is",
        ):
            await a.move(pico.did, b.peer_id)
        # Nothing changed: A still hosts the pico and serves it; B holds nothing.
        assert a.engine.hosts(pico.did)
        assert not b.engine.hosts(pico.did)
        assert a.records[pico.did].host == a.peer_id
        assert await a.query(Target(pico.did), RID, "count", {}) == 3

        # With honest blocks the same move goes through.
        world[a.peer_id].tamper = None
        result = await a.move(pico.did, b.peer_id)
        assert result["host"] == b.peer_id
        assert b.engine.hosts(pico.did)
        assert not a.engine.hosts(pico.did)
        assert await a.query(Target(pico.did), RID, "count", {}) == 3  # routed to B
        nursery.cancel_scope.cancel()


async def test_target_refuses_a_move_with_a_stale_record(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        stale = a.records[pico.did]
        newer = location.build_record(pico.keypair, a.engine_key, seq=stale.seq + 1, prev=stale)
        b.consider(newer, source="test")  # B already saw a newer record

        propose = MovePropose(pico.did, pico.head, pico.keypair.seed, stale.raw)
        reply = Reply.decode(
            await world[b.peer_id].handlers[MOVE_PROTOCOL](a.peer_id, propose.encode())
        )
        assert reply.code == "move-refused"
        assert reply.error == f"a newer record for {pico.did} exists (seq {stale.seq + 1})"
        assert not b.engine.hosts(pico.did)

        # A key that is not the DID's is refused too.
        wrong = MovePropose(pico.did, pico.head, Keypair.generate().seed, stale.raw)
        reply = Reply.decode(
            await world[b.peer_id].handlers[MOVE_PROTOCOL](a.peer_id, wrong.encode())
        )
        assert reply.error == "the key sent does not belong to the DID"
        nursery.cancel_scope.cancel()


async def test_blocks_are_served_only_to_the_move_target(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        for request in (WantRequest(pico.did, [pico.head]), ManifestRequest(pico.did, pico.head)):
            with pytest.raises(StreamFailed, match="may not fetch blocks"):
                await world[b.peer_id].request(a.peer_id, BLOCKS_PROTOCOL, request.encode())
        nursery.cancel_scope.cancel()


async def test_move_refuses_a_manifest_that_leaves_out_blocks(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        await a.event(Target(pico.did), "counter", "inc", {})

        def drop_one(protocol: str, reply: bytes) -> bytes:
            value = cbor.decode(reply)
            if protocol == BLOCKS_PROTOCOL and isinstance(value, dict) and "cids" in value:
                return encode_manifest(value["cids"][:-1])
            return reply

        world[a.peer_id].tamper = drop_one
        with pytest.raises(
            Exception, match=r"manifest left out block bafy[a-z2-7]+ \(reachable from bafy"
        ):
            await a.move(pico.did, b.peer_id)
        assert a.engine.hosts(pico.did)
        assert not b.engine.hosts(pico.did)
        nursery.cancel_scope.cancel()


async def test_a_move_whose_reply_was_lost_still_completes(tmp_path: Path) -> None:
    """The target committed but its reply never arrived: the source asks, and hands over."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        await a.event(Target(pico.did), "counter", "inc", {})
        world[b.peer_id].lose_replies.add(MOVE_PROTOCOL)
        result = await a.move(pico.did, b.peer_id)
        assert result["host"] == b.peer_id
        assert b.engine.hosts(pico.did)
        assert not a.engine.hosts(pico.did)
        world[b.peer_id].lose_replies.clear()
        assert await a.query(Target(pico.did), RID, "count", {}) == 1
        nursery.cancel_scope.cancel()


async def test_an_engine_that_sees_a_newer_host_stands_down(tmp_path: Path) -> None:
    """The reply was lost and the target was unreachable afterwards: the source keeps the
    pico until the target's record reaches it, then hands over instead of serving a copy."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        await a.event(Target(pico.did), "counter", "inc", {})
        net_b = world[b.peer_id]
        net_b.lose_replies.add(MOVE_PROTOCOL)
        net_b.lose_replies.add(LOC_PROTOCOL)  # and A cannot ask B what it holds
        with pytest.raises(PicoError, match="did not answer"):
            await a.move(pico.did, b.peer_id)
        assert a.engine.hosts(pico.did)  # A could not know B took over
        assert b.engine.hosts(pico.did)
        net_b.lose_replies.clear()

        # B's record (pushed to its peers when it adopted the pico) reaches A.
        await trio.testing.wait_all_tasks_blocked()
        assert a.records[pico.did].host == b.peer_id
        assert not a.engine.hosts(pico.did)
        assert await a.query(Target(pico.did), RID, "count", {}) == 1  # served by B
        nursery.cancel_scope.cancel()


async def test_a_restarted_engine_does_not_take_back_a_pico_it_lost(tmp_path: Path) -> None:
    """A's disk says it hosts the pico, but its newest record names B: it must stand down,
    not sign itself a higher record."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        await a.event(Target(pico.did), "counter", "inc", {})
        world[b.peer_id].lose_replies.update({MOVE_PROTOCOL, LOC_PROTOCOL})
        with pytest.raises(PicoError, match="did not answer"):
            await a.move(pico.did, b.peer_id)
        world[b.peer_id].lose_replies.clear()
        await trio.testing.wait_all_tasks_blocked()
        taken = b.records[pico.did]
        a.home.save_record(pico.did, taken.raw)  # as if gossip reached A just before it stopped
        nursery.cancel_scope.cancel()

    del world[a.peer_id]
    async with trio.open_nursery() as nursery:
        b2 = await start_mesh(nursery, tmp_path / "b", world)
        a2 = await start_mesh(nursery, tmp_path / "a", world)
        await trio.testing.wait_all_tasks_blocked()
        assert a2.records[pico.did].host == b2.peer_id  # A signed no record of its own
        assert a2.records[pico.did].seq >= taken.seq
        assert not a2.engine.hosts(pico.did)
        assert b2.engine.hosts(pico.did)
        assert await a2.query(Target(pico.did), RID, "count", {}) == 1
        nursery.cancel_scope.cancel()


async def test_rule_state_moves_with_the_pico(tmp_path: Path) -> None:
    """`select when door opened and door closed`: opened on A, closed after the move to B."""
    pair = """ruleset pair {
      meta { shares fired }
      global { fired = function() { ent:fired.defaultsTo(0) } }
      rule both { select when door opened and door closed  fired { ent:fired := fired() + 1 } }
    }"""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([pair])
        await a.event(Target(pico.did), "door", "opened", {})
        await a.move(pico.did, b.peer_id)
        await a.event(Target(pico.did), "door", "closed", {})  # routed to B
        assert await a.query(Target(pico.did), "pair", "fired", {}) == 1
        nursery.cancel_scope.cancel()


async def test_a_precopy_leaves_the_move_only_what_changed_since(tmp_path: Path) -> None:
    """The target copies the pico's blocks while it still serves; events that land before
    the move pauses it are carried by the move, which fetches only those blocks."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        for _ in range(5):
            await a.event(Target(pico.did), "counter", "inc", {})
        await trio.testing.wait_all_tasks_blocked()  # B holds A's record
        manifests: list[int] = []

        def count(protocol: str, reply: bytes) -> bytes:
            value = cbor.decode(reply)
            if protocol == BLOCKS_PROTOCOL and isinstance(value, dict) and "cids" in value:
                manifests.append(len(value["cids"]))
            return reply

        world[a.peer_id].tamper = count
        move_handler = world[b.peer_id].handlers[MOVE_PROTOCOL]
        copied_heads = []

        async def on_move(peer: str, data: bytes) -> bytes:
            reply = await move_handler(peer, data)
            request = decode_move_request(data)
            if isinstance(request, MovePrefetch):
                copied_heads.append(request.head)
                # one more event after the copy and before the move pauses the pico
                await a.event(Target(pico.did), "counter", "inc", {})
            return reply

        world[b.peer_id].handlers[MOVE_PROTOCOL] = on_move
        result = await a.move(pico.did, b.peer_id)
        assert result["host"] == b.peer_id
        assert len(copied_heads) == 1
        assert b.engine.store.has(copied_heads[0])  # copied ahead
        copy, move = manifests
        # the copy carried the whole pico; the move the new head, its state root, the
        # counter's ruleset block and the cause (not the old heads or the KRL source)
        assert copy > move
        assert move == 4
        assert b.engine.hosts(pico.did)
        assert not a.engine.hosts(pico.did)
        assert await a.query(Target(pico.did), RID, "count", {}) == 6
        assert not b._prefetched
        assert not a._precopied
        assert not b.moves_open()
        # the history B now holds verifies back to genesis
        assert b.engine.picos[pico.did].seq == 6
        nursery.cancel_scope.cancel()


async def test_a_precopy_is_refused_from_an_engine_that_does_not_host_the_pico(
    tmp_path: Path,
) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        c = await start_mesh(nursery, tmp_path / "c", world)
        pico = await a.create_pico([COUNTER])
        await trio.testing.wait_all_tasks_blocked()
        prefetch = MovePrefetch(pico.did, pico.head)
        reply = Reply.decode(
            await world[b.peer_id].handlers[MOVE_PROTOCOL](c.peer_id, prefetch.encode())
        )
        assert reply.code == "move-refused"
        assert reply.error == f"{c.peer_id} is not the host of {pico.did} as far as we know"
        assert not b._prefetched
        nursery.cancel_scope.cancel()


async def test_a_target_that_forgot_its_copy_is_sent_everything(tmp_path: Path) -> None:
    """The manifest request names the head the target copied; one that lost its copy (a
    restart, a copy forgotten) names none and gets the whole pico, not the changes only."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        for _ in range(3):
            await a.event(Target(pico.did), "counter", "inc", {})
        await trio.testing.wait_all_tasks_blocked()
        manifests: list[int] = []

        def count(protocol: str, reply: bytes) -> bytes:
            value = cbor.decode(reply)
            if protocol == BLOCKS_PROTOCOL and isinstance(value, dict) and "cids" in value:
                manifests.append(len(value["cids"]))
            return reply

        world[a.peer_id].tamper = count
        move_handler = world[b.peer_id].handlers[MOVE_PROTOCOL]

        async def on_move(peer: str, data: bytes) -> bytes:
            reply = await move_handler(peer, data)
            if isinstance(decode_move_request(data), MovePrefetch):
                assert pico.did in b._prefetched
                b._prefetched.clear()  # as if B restarted between the copy and the move
            return reply

        world[b.peer_id].handlers[MOVE_PROTOCOL] = on_move
        result = await a.move(pico.did, b.peer_id)
        assert result["host"] == b.peer_id
        copy, move = manifests
        assert move == copy  # the whole pico again (B still had the blocks: none re-sent)
        assert await a.query(Target(pico.did), RID, "count", {}) == 3
        nursery.cancel_scope.cancel()


def test_prefetch_and_manifest_since_round_trip() -> None:
    cid = CID.of(cbor.encode({"k": 1}), DAG_CBOR)
    assert decode_move_request(MovePrefetch("did:key:z6Mk", cid).encode()) == MovePrefetch(
        "did:key:z6Mk", cid
    )
    plain = ManifestRequest("did:key:z6Mk", cid)
    assert decode_blocks_request(plain.encode()) == plain
    assert b"since" not in plain.encode()  # what engines before pre-copy sent
    since = ManifestRequest("did:key:z6Mk", cid, cid)
    assert decode_blocks_request(since.encode()) == since
    with pytest.raises(MessageError, match="field 'head' must be CID"):
        decode_move_request(cbor.encode({"op": "prefetch", "did": "d", "head": "bafy"}))


async def test_the_bytes_of_a_held_record_are_not_verified_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        pico = await a.create_pico([COUNTER])
        held = a.records[pico.did]
        parsed: list[bytes] = []
        parse = location.parse_record

        def counting(raw: bytes) -> location.LocationRecord:
            parsed.append(raw)
            return parse(raw)

        monkeypatch.setattr(location, "parse_record", counting)
        assert a.consider(held.raw, source="test") is held  # the same bytes: no check
        assert parsed == []
        altered = held.raw[:-1] + bytes([held.raw[-1] ^ 1])  # other bytes: checked, refused
        assert a.consider(altered, source="test") is None
        assert parsed == [altered]
        newer = location.build_record(pico.keypair, a.engine_key, seq=held.seq + 1, prev=held)
        taken = a.consider(newer, source="test")
        assert taken is not None
        assert taken.seq == held.seq + 1
        assert a.consider(held.raw, source="test") is taken  # the old bytes: checked, stale
        assert parsed == [altered, newer, held.raw]
        nursery.cancel_scope.cancel()


async def test_a_newer_record_gives_up_a_request_on_its_way_to_the_old_host(
    tmp_path: Path,
) -> None:
    """A request waiting on a host that stopped answering is given up the moment a newer
    record for its pico arrives (a replica took over), so it can go to the new host."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await b.create_pico([COUNTER])
        await trio.testing.wait_all_tasks_blocked()
        record = a.records[pico.did]
        silent = trio.Event()

        async def never_answers(peer: str, data: bytes) -> bytes:
            await silent.wait()
            raise AssertionError("not reached")

        world[b.peer_id].handlers[MSG_PROTOCOL] = never_answers
        request = EventRequest(Target(pico.did), "counter", "inc", {}, mid="a/x/1", hops=1)
        failed: list[str] = []

        async def send() -> None:
            try:
                await a._request_host(record, request)
            except NetError as e:
                failed.append(str(e))

        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert [seq for seq, _ in a._in_flight[pico.did]] == [record.seq]
        a.consider(record.raw, source="test")  # the same record again: nothing happens
        await trio.testing.wait_all_tasks_blocked()
        assert failed == []
        newer = location.build_record(pico.keypair, a.engine_key, seq=record.seq + 1, prev=record)
        a.consider(newer, source="test")
        await trio.testing.wait_all_tasks_blocked()
        assert failed == [f"a newer record than seq {record.seq} arrived; asking its host"]
        assert pico.did not in a._in_flight
        # and one sent with the older record now is given up at once
        with pytest.raises(NetError, match=r"a newer record than seq \d+ is held"):
            await a._request_host(record, request)
        nursery.cancel_scope.cancel()
