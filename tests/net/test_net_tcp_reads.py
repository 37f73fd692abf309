"""p2pico.net's buffered TCP reads (``_buffered_tcp_read`` on py-libp2p's TrioTCPStream).

One recv() serves a Noise message's length and body; what a read does not take is the
next read's, in order, and EOF and a broken connection read as py-libp2p reads them.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream

from p2pico import net as net_module


class Chunks:
    """A stand-in for trio's SocketStream: each receive_some answers the next chunk."""

    def __init__(self, *chunks: bytes | BaseException) -> None:
        self.chunks = list(chunks)
        self.asked: list[int | None] = []

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        self.asked.append(max_bytes)
        chunk = self.chunks.pop(0) if self.chunks else b""
        if isinstance(chunk, BaseException):
            raise chunk
        assert max_bytes is None or len(chunk) <= max_bytes
        return chunk


def tcp(stream: Chunks) -> TrioTCPStream:
    return TrioTCPStream(stream)  # type: ignore[arg-type]


def test_the_buffered_read_is_installed() -> None:
    assert TrioTCPStream.read is net_module._buffered_tcp_read


async def test_one_receive_serves_several_reads_in_order() -> None:
    raw = Chunks(b"\x00\x05hello\x00\x03abc", b"tail")
    conn = tcp(raw)
    assert await conn.read(2) == b"\x00\x05"
    assert await conn.read(5) == b"hello"
    assert await conn.read(2) == b"\x00\x03"
    assert await conn.read(10) == b"abc"  # at most what is kept: a short read, as recv()
    assert len(raw.asked) == 1
    assert raw.asked == [64 * 1024]
    assert await conn.read() == b"tail"
    assert len(raw.asked) == 2
    assert await conn.read(0) == b""
    assert await conn.read(4) == b""  # EOF
    assert len(raw.asked) == 3


async def test_a_reset_connection_raises_and_a_closed_one_reads_empty() -> None:
    conn = tcp(Chunks(b"ab", trio.BrokenResourceError("reset")))
    assert await conn.read(1) == b"a"
    assert await conn.read(1) == b"b"
    with pytest.raises(ConnectionClosedError, match="reset by remote peer"):
        await conn.read(1)
    assert await tcp(Chunks(trio.ClosedResourceError())).read(3) == b""


async def test_concurrent_readers_get_disjoint_bytes_in_order() -> None:
    raw = Chunks(b"0123456789")
    conn = tcp(raw)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await conn.read(4))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(reader)
        nursery.start_soon(reader)
    assert got == [b"0123", b"4567", b"89"]
    assert len(raw.asked) == 1
