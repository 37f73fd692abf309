"""p2pico.net's buffered TCP reads (``_buffered_tcp_read`` on py-libp2p's TrioTCPStream).

One recv() serves a Noise message's length and body; what a read does not take is the
next read's, in order, and EOF and a broken connection read as py-libp2p reads them.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.security.noise.io import NoisePacketReadWriter

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


# -- Noise messages cut straight from the buffer (_lean_noise_read_msg) --------------------


class Transport:
    """What ``_lean_noise_read_msg`` uses of py-libp2p's NoiseTransportReadWriter: its packet
    reader over a raw connection over our TCP stream, and ``decrypt`` (marked, not undone)."""

    prefix = b""

    def __init__(self, raw: Chunks) -> None:
        self.read_writer = NoisePacketReadWriter(RawConnection(tcp(raw), initiator=False))

    def decrypt(self, data: bytes) -> bytes:
        return b"<" + data + b">"


async def lean(raw: Chunks) -> bytes:
    return await net_module._lean_noise_read_msg(Transport(raw))


async def test_noise_messages_come_whole_from_any_split_of_the_bytes() -> None:
    wire = b"\x00\x05hello\x00\x00\x00\x03abc"
    for cuts in ([], [1], [1, 2, 3], [6, 7, 8, 9], list(range(1, len(wire)))):
        pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
        raw = Chunks(*pieces)
        transport = Transport(raw)
        got = [await net_module._lean_noise_read_msg(transport) for _ in range(3)]
        assert got == [b"<hello>", b"<>", b"<abc>"], cuts
        assert len(raw.asked) == len(pieces)  # one receive per piece, none wasted


async def test_a_message_cut_short_fails_as_py_libp2p_fails() -> None:
    for wire in (b"\x00", b"\x00\x05hel"):
        with pytest.raises(IncompleteReadError) as ours:
            await lean(Chunks(wire))
        with pytest.raises(IncompleteReadError) as theirs:  # py-libp2p's own reader
            await NoisePacketReadWriter(
                RawConnection(tcp(Chunks(wire)), initiator=False)
            ).read_msg()
        assert type(ours.value) is type(theirs.value)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ConnectionClosedError, match="reset by remote peer"):
        await lean(Chunks(b"\x00\x05he", trio.BrokenResourceError("reset")))
