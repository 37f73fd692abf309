"""p2pico.bitswap over two real libp2p nodes in this process, plus Net's frame streams."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.lowlevel
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from dag.block import Block
from dag.cid import CID, DAG_CBOR
from dag.store import MemoryBlockStore
from p2pico.bitswap import KEEP_IDLE, PROTOCOL_ID, Bitswap
from p2pico.net import (
    FrameStream,
    Net,
    PeerUnreachable,
    ProtocolNotSupported,
    StreamFailed,
)
from protocols import bitswap
from protocols.bitswap import Message, PayloadBlock, cid_prefix

LEAF = Block.encode({"leaf": 1})
ROOT = Block.encode({"root": True, "kids": [LEAF.cid]})
OTHER = Block.encode({"unrelated": "secret"})
RAW_BLOCK = Block.raw(b"raw bytes")


def node(net: Net, *blocks: Block) -> Bitswap:
    store = MemoryBlockStore()
    store.put_many(blocks)
    swap = Bitswap(net, store)
    swap.start()
    return swap


async def test_frame_streams_carry_many_frames_both_ways(pair: tuple[Net, Net]) -> None:
    a, b = pair
    seen: list[bytes] = []

    async def echo(peer: str, stream: FrameStream) -> None:
        assert peer == a.peer_id
        while (frame := await stream.receive_frame()) is not None:
            seen.append(frame)
            await stream.send_frame(frame[::-1])

    b.set_stream_handler("/test/echo/1", echo)
    stream = await a.open_stream(b.peer_id, "/test/echo/1")
    assert stream.remote_peer == b.peer_id
    for payload in (b"one", b"", b"three" * 1000):
        await stream.send_frame(payload)
        assert await stream.receive_frame() == payload[::-1]
    await stream.close()
    assert await stream.receive_frame() is None  # b's handler returned and closed its side
    assert seen == [b"one", b"", b"three" * 1000]


async def test_open_stream_to_a_peer_without_the_protocol(pair: tuple[Net, Net]) -> None:
    a, b = pair
    with pytest.raises(ProtocolNotSupported):
        await a.open_stream(b.peer_id, "/test/none/1")


async def test_blocks_travel_both_ways(pair: tuple[Net, Net]) -> None:
    a, b = pair
    swap_a = node(a, RAW_BLOCK)
    swap_b = node(b, ROOT, LEAF)
    swap_b.allow(a.peer_id, roots=[ROOT.cid])
    swap_a.allow(b.peer_id)
    with trio.fail_after(10):
        got = await swap_a.fetch(b.peer_id, [ROOT.cid, LEAF.cid])
    assert got == {ROOT.cid: ROOT, LEAF.cid: LEAF}
    assert got[ROOT.cid].value == {"root": True, "kids": [LEAF.cid]}
    with trio.fail_after(10):
        assert await swap_b.fetch(a.peer_id, [RAW_BLOCK.cid]) == {RAW_BLOCK.cid: RAW_BLOCK}


async def test_messages_to_a_peer_share_one_kept_stream_and_a_broken_one_is_replaced(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    swap_a = node(a)
    swap_b = node(b, ROOT, LEAF, RAW_BLOCK)
    swap_b.allow(a.peer_id)
    with trio.fail_after(20):
        for cid in (ROOT.cid, LEAF.cid, RAW_BLOCK.cid):
            assert list(await swap_a.fetch(b.peer_id, [cid])) == [cid]
        # a's wants and cancels went on one stream, and b's answers on one stream back
        assert (swap_a.streams_opened, swap_b.streams_opened) == (1, 1)
        kept = swap_a._outboxes[b.peer_id].stream
        assert kept is not None
        await kept.reset()  # as when the peer resets it: the next message goes on a new one
        assert list(await swap_a.fetch(b.peer_id, [LEAF.cid])) == [LEAF.cid]
    assert (swap_a.streams_opened, swap_b.streams_opened) == (2, 1)


async def read_payloads(
    stream: FrameStream, got: list[PayloadBlock], count: int, done: trio.Event
) -> None:
    """Read Bitswap messages into ``got`` until the peer closes; ``done`` once ``count`` came."""
    while (frame := await stream.receive_frame()) is not None:
        got.extend(bitswap.decode(frame).payload)
        if len(got) == count:
            done.set()


async def want_all(a: Net, b: Net, blocks: list[Block]) -> None:
    """a asks b for ``blocks`` in one wantlist."""
    wants = await a.open_stream(b.peer_id, PROTOCOL_ID)
    entries = tuple(bitswap.WantEntry(x.cid) for x in blocks)
    await wants.send_frame(bitswap.encode(Message(entries=entries)))


async def test_a_reply_waits_for_a_peer_too_busy_to_read_it(
    pair: tuple[Net, Net], mock_clock: trio.testing.MockClock
) -> None:
    """b's answer (2 MB, eight times the yamux window) waits while a reads nothing for 6 s
    (trio's clock, jumped): py-libp2p's write alone gave up after 5 s, and the reply was
    dropped (a Helia node busy for that long never got its blocks and stalled)."""
    a, b = pair
    blocks = [Block.raw(bytes([i]) * 250_000) for i in range(8)]
    swap_b = node(b, *blocks)
    swap_b.allow(a.peer_id)
    reading = trio.Event()
    got: list[PayloadBlock] = []
    done = trio.Event()

    async def busy(peer: str, stream: FrameStream) -> None:  # a's Bitswap, slow to read
        await reading.wait()
        await read_payloads(stream, got, len(blocks), done)

    a.set_stream_handler(PROTOCOL_ID, busy)
    await want_all(a, b, blocks)
    # b has filled a's window and waits for more (the clock stands still until jumped)
    # (py-libp2p's yamux has no event for it: looked at once per scheduling round)
    while (outbox := swap_b._outboxes.get(a.peer_id)) is None or outbox.stream is None:
        await trio.lowlevel.checkpoint()
    muxed = outbox.stream._stream.muxed_stream
    while muxed.send_window > 0:
        await trio.lowlevel.checkpoint()
    mock_clock.jump(6)
    for _ in range(100):  # b's writer wakes (before the fix: gives up) while a still waits
        await trio.lowlevel.checkpoint()
    reading.set()
    mock_clock.rate = 1  # from now on trio's clock runs, and b's writer looks again
    with trio.fail_after(20):
        await done.wait()
    assert sorted(x.data for x in got) == sorted(x.data for x in blocks)
    assert swap_b.streams_opened == 1


async def test_a_reply_goes_on_a_new_stream_when_the_peer_resets_the_first(
    pair: tuple[Net, Net],
) -> None:
    """As Helia does to a stream it aborts: a resets b's first stream mid-reply. The reply
    goes again on a new stream (before, only a kept stream's failure was retried)."""
    a, b = pair
    blocks = [Block.raw(bytes([i]) * 250_000) for i in range(4)]
    swap_b = node(b, *blocks)
    swap_b.allow(a.peer_id)
    streams: list[FrameStream] = []
    got: list[PayloadBlock] = []
    done = trio.Event()

    async def resets_the_first(peer: str, stream: FrameStream) -> None:
        streams.append(stream)
        if len(streams) == 1:
            await stream._stream.read(1)  # the reply has started (the stream is set up)
            await stream.reset()
            return
        await read_payloads(stream, got, len(blocks), done)

    a.set_stream_handler(PROTOCOL_ID, resets_the_first)
    await want_all(a, b, blocks)
    with trio.fail_after(20):
        await done.wait()
    assert sorted(x.data for x in got) == sorted(x.data for x in blocks)
    assert (len(streams), swap_b.streams_opened) == (2, 2)


async def test_a_kept_stream_idle_too_long_is_closed_and_not_reused(
    pair: tuple[Net, Net], mock_clock: trio.testing.MockClock
) -> None:
    """Helia resets an inbound Bitswap stream after 10 s without a message, and a message
    that meets the reset is lost unseen: a stream idle for KEEP_IDLE seconds is retired."""
    a, b = pair
    swap_a = node(a)
    swap_b = node(b, ROOT, LEAF)
    swap_b.allow(a.peer_id)
    assert list(await swap_a.fetch(b.peer_id, [ROOT.cid])) == [ROOT.cid]
    assert list(await swap_a.fetch(b.peer_id, [LEAF.cid])) == [LEAF.cid]
    assert (swap_a.streams_opened, swap_a.streams_retired) == (1, 0)  # busy: kept
    first = swap_a._outboxes[b.peer_id].stream
    mock_clock.jump(KEEP_IDLE + 0.5)
    assert list(await swap_a.fetch(b.peer_id, [ROOT.cid])) == [ROOT.cid]
    assert (swap_a.streams_opened, swap_a.streams_retired) == (2, 1)
    assert swap_a._outboxes[b.peer_id].stream is not first
    assert first is not None
    assert first._stream.muxed_stream.send_closed  # closed, not reset
    assert not first._stream.muxed_stream.reset_received


async def test_a_closed_connection_drops_the_kept_streams_and_a_new_one_serves(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    swap_a = node(a)
    swap_b = node(b, ROOT, LEAF)
    swap_b.allow(a.peer_id)
    gone = {a.peer_id: trio.Event(), b.peer_id: trio.Event()}
    # registered after Bitswap's own callback, so each runs once Bitswap has seen the close
    a.on_peer_disconnected(lambda peer: gone[peer].set())
    b.on_peer_disconnected(lambda peer: gone[peer].set())
    with trio.fail_after(20):
        assert list(await swap_a.fetch(b.peer_id, [ROOT.cid])) == [ROOT.cid]
        assert set(swap_a._outboxes) == {b.peer_id}
        assert set(swap_b._outboxes) == {a.peer_id}
        await a._host.disconnect(ID.from_base58(b.peer_id))
        await gone[b.peer_id].wait()
        await gone[a.peer_id].wait()
        assert swap_a._outboxes == {}
        assert swap_b._outboxes == {}
        # a redials; each side opens one new stream for its messages
        assert list(await swap_a.fetch(b.peer_id, [LEAF.cid])) == [LEAF.cid]
    assert (swap_a.streams_opened, swap_b.streams_opened) == (2, 2)
    assert set(swap_a._outboxes) == {b.peer_id}


async def test_a_peer_we_cannot_reach_leaves_no_outbox(pair: tuple[Net, Net]) -> None:
    a, b = pair
    swap_a = node(a)
    node(b)
    # a peer with no known address: unreachable at once
    stranger = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
    with trio.fail_after(5), pytest.raises(PeerUnreachable):
        await swap_a.fetch(stranger, [ROOT.cid])
    assert swap_a._outboxes == {}
    assert swap_a.streams_opened == 0


async def test_grants_are_per_peer_and_per_dag(pair: tuple[Net, Net]) -> None:
    a, b = pair
    swap_a = node(a)
    swap_b = node(b, ROOT, LEAF, OTHER)
    # No grant: DONT_HAVE for everything, so the fetch ends at once with nothing.
    with trio.fail_after(5):
        assert await swap_a.fetch(b.peer_id, [ROOT.cid, OTHER.cid]) == {}
    # A grant for ROOT's DAG covers ROOT and LEAF, not OTHER.
    swap_b.allow(a.peer_id, roots=[ROOT.cid])
    assert swap_b.may_serve(a.peer_id, LEAF.cid)
    assert not swap_b.may_serve(a.peer_id, OTHER.cid)
    assert not swap_b.may_serve(b.peer_id, ROOT.cid)
    with trio.fail_after(5):
        got = await swap_a.fetch(b.peer_id, [ROOT.cid, LEAF.cid, OTHER.cid])
    assert set(got) == {ROOT.cid, LEAF.cid}
    swap_b.revoke(a.peer_id)
    with trio.fail_after(5):
        assert await swap_a.fetch(b.peer_id, [ROOT.cid]) == {}


async def test_custom_may_serve_rule(pair: tuple[Net, Net]) -> None:
    a, b = pair
    swap_a = node(a)
    store = MemoryBlockStore()
    store.put_many([ROOT, LEAF])
    asked: list[tuple[str, CID]] = []

    def rule(peer: str, cid: CID) -> bool:
        asked.append((peer, cid))
        return cid == LEAF.cid

    Bitswap(b, store, may_serve=rule).start()
    with trio.fail_after(5):
        assert await swap_a.fetch(b.peer_id, [ROOT.cid, LEAF.cid]) == {LEAF.cid: LEAF}
    assert sorted(asked, key=str) == sorted([(a.peer_id, ROOT.cid), (a.peer_id, LEAF.cid)], key=str)


async def evil_server(net: Net, reply: PayloadBlock) -> None:
    """Answer every wantlist on ``net`` with ``reply`` (and nothing else)."""

    async def handler(peer: str, stream: FrameStream) -> None:
        while (frame := await stream.receive_frame()) is not None:
            if bitswap.decode(frame).entries:
                out = await net.open_stream(peer, PROTOCOL_ID)
                await out.send_frame(bitswap.encode(Message(payload=(reply,))))
                await out.close()

    net.set_stream_handler(PROTOCOL_ID, handler)


async def test_tampered_block_is_rejected(pair: tuple[Net, Net]) -> None:
    a, b = pair
    swap_a = node(a)
    await evil_server(b, PayloadBlock(cid_prefix(ROOT.cid), ROOT.data + b"\x00"))
    with trio.move_on_after(0.5) as scope:  # the real block never comes: wait out a timeout
        got = await swap_a.fetch(b.peer_id, [ROOT.cid], timeout=0.4)
    assert not scope.cancelled_caught
    assert got == {}


async def test_block_that_hashes_right_but_is_not_dag_cbor_is_rejected(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    swap_a = node(a)
    junk = b"\xa1"  # a map header with nothing after it: not DAG-CBOR
    wanted = CID.of(junk, DAG_CBOR)
    await evil_server(b, PayloadBlock(cid_prefix(wanted), junk))
    with trio.fail_after(5):
        assert await swap_a.fetch(b.peer_id, [wanted]) == {}  # settles at once: refused
    assert swap_a.blocks_rejected == 1


async def test_garbage_on_the_stream_resets_it_and_the_node_carries_on(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    swap_a = node(a)
    node(b, RAW_BLOCK).allow(a.peer_id)
    stream = await a.open_stream(b.peer_id, PROTOCOL_ID)
    await stream.send_frame(b"\x0b")  # wire type 3: not a Bitswap message
    with trio.fail_after(5), contextlib.suppress(StreamFailed):
        assert await stream.receive_frame() is None  # b reset the stream: the read ends
    with trio.fail_after(5):
        assert await swap_a.fetch(b.peer_id, [RAW_BLOCK.cid]) == {RAW_BLOCK.cid: RAW_BLOCK}
