"""p2pico.net's per-frame shortcuts on py-libp2p (``_fewer_scheduling_rounds``,
``_write_frame_direct``): the same bytes and the same order as py-libp2p's own paths.

The direct write builds a yamux DATA frame in one Noise message itself; the peer reads
it with py-libp2p's yamux reader, so a wrong byte anywhere fails every request. Frames
it does not take (larger than one Noise message) go through ``stream.write``, and both
kinds interleave on one stream without reordering or corrupting each other.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import trio
import trio.testing
from libp2p.io.trio import TrioTCPStream
from libp2p.network.stream.net_stream import NetStream
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from p2pico import net as net_module
from p2pico.net import Net
from protocols.rpc import RPC_PROTOCOL

ECHO = "/test/echo/1"


def test_the_shortcuts_are_installed() -> None:
    assert Yamux._write_frame is net_module._lean_write_frame
    assert Yamux._read_data_body is net_module._buffered_data_body
    assert Yamux.read_stream is net_module._lean_read_stream
    assert TrioTCPStream.write is net_module._direct_tcp_write


async def test_new_streams_get_quick_locks(pair: tuple[Net, Net]) -> None:
    a, b = pair

    async def echo(peer: str, data: bytes) -> bytes:
        return data

    b.set_handler(ECHO, echo)
    assert await a.request(b.peer_id, ECHO, b"hello") == b"hello"
    (conn,) = a._rpc_out[net_module._parse_peer_id(b.peer_id)]
    stream = conn.stream
    assert isinstance(stream, NetStream)
    assert isinstance(stream._state_lock, net_module._QuickLock)
    muxed = stream.muxed_stream
    assert isinstance(muxed, YamuxStream)
    assert isinstance(muxed.window_lock, net_module._QuickLock)
    assert isinstance(muxed.rw_lock, net_module._QuickReadWriteLock)
    assert isinstance(muxed.conn._write_lock, net_module._QuickLock)


async def test_a_held_quick_lock_is_waited_for_in_order() -> None:
    lock = net_module._QuickLock()
    order: list[int] = []

    async def take(i: int) -> None:
        async with lock:
            order.append(i)
            await trio.lowlevel.checkpoint()

    async with lock, trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(take, i)
            await trio.testing.wait_all_tasks_blocked()
        assert order == []  # all five wait while we hold it
        lock.release()
        await trio.testing.wait_all_tasks_blocked()
        await lock.acquire()  # back to us once they are done
    assert order == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("concurrent", [1, 16])
async def test_direct_and_libp2p_writes_interleave_intact(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch, concurrent: int
) -> None:
    a, b = pair
    through_libp2p: Counter[int] = Counter()
    original = NetStream.write

    async def counted(self: NetStream, data: bytes) -> None:
        if self.get_protocol() == RPC_PROTOCOL:  # not stream negotiation or identify
            through_libp2p[len(data)] += 1
        await original(self, data)

    monkeypatch.setattr(NetStream, "write", counted)

    async def echo(peer: str, data: bytes) -> bytes:
        return data[::-1]

    b.set_handler(ECHO, echo)
    # sizes either side of one Noise message (65,519 bytes of plaintext, less the yamux
    # header and the rpc frame's own header), and well past it
    sizes = [0, 1, 200, 65_400, 65_600, 300_000]
    payloads = [os.urandom(size) for size in sizes * 3]
    failures: list[str] = []

    async def one(payload: bytes) -> None:
        answer = await a.request(b.peer_id, ECHO, payload)
        if answer != payload[::-1]:
            failures.append(f"{len(payload)} bytes came back wrong")

    with trio.fail_after(30):
        for start in range(0, len(payloads), concurrent):
            async with trio.open_nursery() as nursery:
                for payload in payloads[start : start + concurrent]:
                    nursery.start_soon(one, payload)
    assert failures == []
    # the large frames went through py-libp2p's write (three requests of each large size, and
    # their answers, framed a little differently)
    large = {size: n for size, n in through_libp2p.items() if size > 65_400}
    assert sorted(large.values()) == [3, 3, 3, 3]
    small = sum(n for size, n in through_libp2p.items() if size <= 65_400)
    if concurrent == 1:
        assert small == 0  # nothing else writing: every small frame went the direct way
    else:
        # a small frame that finds its stream's writer or window busy goes through py-libp2p
        # too, as net.py intends; most of the 24 (12 requests, 12 answers) go the direct way
        assert small < 12
