"""p2pico.net's rpc sink: /p2pico/rpc/1.0.0 bytes go from py-libp2p's yamux reader straight
into the rpc state machines (``_install_sink``, ``_RpcSink``), on both ends.

Each test runs two real libp2p nodes on loopback. What must hold: frames cut across yamux
DATA frames, and several frames in one, decode in order; the receive window is credited
for bytes that never pass through a stream read (several MB flow over one stream, where
an uncredited window would stop the sender after 256 KiB and yamux would fail its write
after 5 s); resets, EOF and malformed frames end a sinked stream as they end a read one;
bytes that arrived before the sink was installed are handed over first.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, MAX_MESSAGE_SIZE

from p2pico import net as net_module
from p2pico.net import Net, StreamFailed
from protocols.framing import encode_frame, encode_uvarint
from protocols.rpc import RPC_PROTOCOL, RpcClient, RpcServer

ECHO = "/p2pico/test-echo/1.0.0"
LATE = "/p2pico/test-late-rpc/1.0.0"


async def echo(peer: str, payload: bytes) -> bytes:
    return payload


def request_frame(rid: int, body: bytes, protocol: str = ECHO) -> bytes:
    name = protocol.encode()
    return encode_frame(b"\x01" + encode_uvarint(rid) + encode_uvarint(len(name)) + name + body)


def answer_frame(rid: int, body: bytes) -> bytes:
    return encode_frame(b"\x02" + encode_uvarint(rid) + body)


def out_streams(a: Net, b: Net) -> list[Any]:
    return list(a._rpc_out.get(ID.from_base58(b.peer_id), []))


def inbound_rpc(net: Net, other: Net) -> list[Any]:
    """The yamux streams of the rpc streams ``other`` opened to ``net``."""
    conns = net._host.get_network().connections.get(ID.from_base58(other.peer_id), [])
    return [
        s.muxed_stream
        for c in conns
        for s in c.get_streams()
        if s.get_protocol() == RPC_PROTOCOL and not s.muxed_stream.is_initiator
    ]


async def read_eof(stream: Any) -> None:
    """The next read finds the end of the stream (b"" or StreamEOF, as py-libp2p has it)."""
    try:
        data = await stream.read(100)
    except StreamEOF:
        return
    assert data == b""


def sinked(muxed: Any) -> bool:
    return (
        type(muxed) is net_module._SinkedYamuxStream
        and muxed.__dict__.get("_p2pico_sink") is not None
        and muxed.conn.stream_buffers.get(muxed.stream_id) is muxed._p2pico_sink._buffer
    )


async def read_answers(stream: Any, n: int) -> dict[int, bytes]:
    """The answers to requests 0..n-1 read off a raw rpc stream, by request id."""
    client = RpcClient()
    for _ in range(n):  # the client only checks ids; it must know them as pending
        client.start_request(ECHO, b"")
    got: dict[int, bytes] = {}
    with trio.fail_after(10):
        while len(got) < n:
            for answer in client.receive(await stream.read(65536)):
                got[answer.id] = answer.body  # type: ignore[union-attr]
    return got


async def until(condition: Any) -> None:
    with trio.fail_after(10):
        while not condition():
            await trio.testing.wait_all_tasks_blocked(0.01)


def test_the_sink_is_supported_by_this_py_libp2p() -> None:
    assert net_module._SINKS


async def test_both_ends_of_an_rpc_stream_are_sinked(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    assert await a.request(b.peer_id, ECHO, b"hi") == b"hi"
    [out] = out_streams(a, b)
    assert sinked(out.stream.muxed_stream)
    [inbound] = inbound_rpc(b, a)
    assert sinked(inbound)
    # the buffers stay empty: nothing is left for a stream read
    assert len(out.stream.muxed_stream.conn.stream_buffers[out.stream.muxed_stream.stream_id]) == 0
    for i in range(50):
        assert await a.request(b.peer_id, ECHO, bytes([i]) * i) == bytes([i]) * i
    assert out_streams(a, b) == [out]


async def test_rpc_frames_skip_py_libp2p_s_frame_loop_on_both_ends(pair: tuple[Net, Net]) -> None:
    # _yamux_read_header reads yamux's headers and hands a whole DATA frame for a sinked
    # stream to its sink itself: each request and each answer is one such frame
    assert net_module._libp2p_yamux.read_exactly is net_module._yamux_read_header
    a, b = pair
    b.set_handler(ECHO, echo)
    assert await a.request(b.peer_id, ECHO, b"first") == b"first"  # opens and sinks the stream
    before = net_module.FAST_FRAMES[0]
    for i in range(20):
        assert await a.request(b.peer_id, ECHO, b"x" * i) == b"x" * i
    assert net_module.FAST_FRAMES[0] - before == 40  # 20 requests at b, 20 answers at a


async def test_requests_split_across_data_frames_and_packed_into_one(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(RPC_PROTOCOL)])
    frames = [request_frame(i, f"body {i}".encode() * (i + 1)) for i in range(6)]
    # frame 0 one byte per DATA frame, frame 1 cut in two, frames 2-5 in one DATA frame
    for byte in frames[0]:
        await stream.write(bytes([byte]))
    await stream.write(frames[1][:3])
    await stream.write(frames[1][3:])
    await stream.write(b"".join(frames[2:]))
    got = await read_answers(stream, 6)
    assert got == {i: f"body {i}".encode() * (i + 1) for i in range(6)}
    await stream.close()
    with trio.fail_after(10):  # the responder closes its side after our EOF
        await read_eof(stream)


async def test_answers_split_across_data_frames_and_packed_into_one(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-written responder: the two answers of a pair go out in one write, the
    next one a byte at a time, and one of 200 KiB (several yamux DATA frames)."""
    monkeypatch.setattr(net_module, "RPC_STREAMS_PER_PEER", 1)
    a, b = pair
    big = bytes(range(256)) * 800  # 200 KiB

    async def responder(stream: Any) -> None:
        server = RpcServer()
        held: list[bytes] = []
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return
            for request in server.receive(chunk):
                body = big if request.body == b"big" else request.body[::-1]
                held.append(server.respond(request.id, body))
                if len(held) == 2:
                    await stream.write(held[0] + held[1])
                    held.clear()
                elif request.body == b"slow":
                    frame = held.pop()
                    for byte in frame:
                        await stream.write(bytes([byte]))
                elif request.body == b"big":
                    await stream.write(held.pop())

    b._host.set_stream_handler(TProtocol(RPC_PROTOCOL), responder)
    results: dict[bytes, bytes] = {}

    async def ask(body: bytes) -> None:
        results[body] = await a.request(b.peer_id, ECHO, body)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, b"one")
            await trio.testing.wait_all_tasks_blocked(0.05)
            nursery.start_soon(ask, b"two")
        await ask(b"slow")
        await ask(b"big")
    assert results == {b"one": b"eno", b"two": b"owt", b"slow": b"wols", b"big": big}
    [out] = out_streams(a, b)
    assert sinked(out.stream.muxed_stream)


async def test_megabytes_of_answers_flow_over_one_stream(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 MiB of answers on one stream: only the sink's window credits let them through
    (the window is 256 KiB; a sender that waits 5 s for credit fails its write)."""
    monkeypatch.setattr(net_module, "RPC_STREAMS_PER_PEER", 1)
    a, b = pair
    size = 3 * 1024 * 1024

    async def blob(peer: str, payload: bytes) -> bytes:
        return payload * (size // len(payload))

    b.set_handler(ECHO, blob)
    with trio.fail_after(60):
        for i in range(2):
            assert await a.request(b.peer_id, ECHO, bytes([i]) * 1024) == bytes([i]) * size
        results: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            results[i] = await a.request(b.peer_id, ECHO, bytes([i]) * 1024)

        async with trio.open_nursery() as nursery:
            for i in range(2, 4):
                nursery.start_soon(ask, i)
    assert results == {i: bytes([i]) * size for i in range(2, 4)}
    [out] = out_streams(a, b)
    muxed = out.stream.muxed_stream
    assert sinked(muxed)
    # what was delivered is credited back: at most half the window outstanding
    assert muxed.target_recv_window - muxed.recv_window < muxed.target_recv_window // 2


async def test_megabytes_of_requests_flow_over_one_stream(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(net_module, "RPC_STREAMS_PER_PEER", 1)
    a, b = pair
    sizes: list[int] = []

    async def measure(peer: str, payload: bytes) -> bytes:
        sizes.append(len(payload))
        return len(payload).to_bytes(4, "big")

    b.set_handler(ECHO, measure)
    size = 3 * 1024 * 1024
    with trio.fail_after(60):
        for i in range(4):
            assert await a.request(b.peer_id, ECHO, bytes([i]) * size) == size.to_bytes(4, "big")
    assert sizes == [size] * 4
    [inbound] = inbound_rpc(b, a)
    assert sinked(inbound)
    assert inbound.target_recv_window - inbound.recv_window < inbound.target_recv_window // 2


async def test_a_reset_of_a_sinked_stream_fails_the_waiting_callers(pair: tuple[Net, Net]) -> None:
    a, b = pair
    entered = trio.Event()

    async def hang(peer: str, payload: bytes) -> bytes:
        if payload == b"hang":
            entered.set()
            await trio.sleep_forever()
        return payload

    b.set_handler(ECHO, hang)
    assert await a.request(b.peer_id, ECHO, b"warm") == b"warm"
    [first] = out_streams(a, b)
    [inbound] = inbound_rpc(b, a)

    async def waiting() -> None:
        # yamux drops a stream on RST, so the requester reads its end (as without a sink)
        with pytest.raises(StreamFailed, match="ended before the answer: the peer closed"):
            await a.request(b.peer_id, ECHO, b"hang")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            await entered.wait()
            await inbound.reset()  # the responder's side resets the stream
        assert first.dead is not None
        assert out_streams(a, b) == []
        assert await a.request(b.peer_id, ECHO, b"again") == b"again"
    [second] = out_streams(a, b)
    assert second is not first
    assert sinked(second.stream.muxed_stream)


async def test_a_peer_closing_a_sinked_stream_fails_the_waiting_callers(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    got_request = trio.Event()

    async def closer(stream: Any) -> None:  # reads one request, then closes without answering
        server = RpcServer()
        while not server.receive(await stream.read(65536)):
            pass
        got_request.set()
        await stream.close()
        await trio.sleep_forever()

    b._host.set_stream_handler(TProtocol(RPC_PROTOCOL), closer)
    with trio.fail_after(10), pytest.raises(StreamFailed, match="the peer closed the stream"):
        await a.request(b.peer_id, ECHO, b"anyone?")
    assert got_request.is_set()
    assert out_streams(a, b) == []


async def test_an_inbound_sinked_stream_answers_then_closes_after_eof(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    release = trio.Event()

    async def slow(peer: str, payload: bytes) -> bytes:
        await release.wait()
        return payload + b"!"

    b.set_handler(ECHO, slow)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(RPC_PROTOCOL)])
    await stream.write(request_frame(0, b"last words"))
    await stream.close()  # EOF while the request is being handled
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert ID.from_base58(a.peer_id) in b._rpc_inbound
    release.set()
    with trio.fail_after(10):
        assert await stream.read(65536) == answer_frame(0, b"last words!")
        await read_eof(stream)
        await until(lambda: ID.from_base58(a.peer_id) not in b._rpc_inbound)


async def test_a_reset_from_the_requester_ends_the_inbound_stream(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(RPC_PROTOCOL)])
    await stream.write(request_frame(0, b"x")[:4])  # a frame begun
    with trio.fail_after(10):
        await until(lambda: ID.from_base58(a.peer_id) in b._rpc_inbound)
        await stream.reset()
        await until(lambda: ID.from_base58(a.peer_id) not in b._rpc_inbound)
    assert await a.request(b.peer_id, ECHO, b"fine") == b"fine"


async def test_a_malformed_answer_resets_the_stream_and_fails_its_callers(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    reset_seen = trio.Event()

    async def liar(stream: Any) -> None:  # answers an id nobody asked
        server = RpcServer()
        while not server.receive(await stream.read(65536)):
            pass
        await stream.write(answer_frame(7, b"?"))
        try:
            while await stream.read(65536):
                pass
        except StreamError:
            reset_seen.set()

    b._host.set_stream_handler(TProtocol(RPC_PROTOCOL), liar)
    with (
        trio.fail_after(10),
        pytest.raises(StreamFailed, match=r"protocol error: .*unknown request id 7"),
    ):
        await a.request(b.peer_id, ECHO, b"q")
    with trio.fail_after(10):
        await reset_seen.wait()
    assert out_streams(a, b) == []


async def test_a_malformed_request_resets_the_stream(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(RPC_PROTOCOL)])
    await stream.write(request_frame(0, b"ok"))
    with trio.fail_after(10):
        assert await stream.read(65536) == answer_frame(0, b"ok")
    await stream.write(request_frame(0, b"id 0 again"))  # ids must increase
    with trio.fail_after(10), pytest.raises(StreamError):
        await stream.read(100)
    with trio.fail_after(10):
        await until(lambda: ID.from_base58(a.peer_id) not in b._rpc_inbound)


async def late_rpc_stream(a: Net, b: Net) -> tuple[trio.Event, list[Any], Any]:
    """A stream from ``a`` to ``b`` whose rpc server at ``b`` starts only once the gate is
    set (bytes wait in yamux's buffer meanwhile); ``seen`` gets b's yamux stream."""
    b.set_handler(ECHO, echo)
    gate = trio.Event()
    seen: list[Any] = []

    async def late_rpc(stream: Any) -> None:
        seen.append(stream.muxed_stream)
        await gate.wait()
        await b._serve_rpc(stream)

    b._host.set_stream_handler(TProtocol(LATE), late_rpc)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(LATE)])
    return gate, seen, stream


async def test_bytes_buffered_before_the_sink_are_handed_over_first(pair: tuple[Net, Net]) -> None:
    """The rpc server starts only after three requests (one cut short) wait in yamux's
    buffer; they are answered, in order, with the ones sent after the sink is in."""
    a, b = pair
    gate, seen, stream = await late_rpc_stream(a, b)
    frames = [request_frame(i, f"r{i}".encode()) for i in range(5)]
    early = b"".join(frames[:3]) + frames[3][:2]
    await stream.write(early)
    with trio.fail_after(10):
        await until(
            lambda: (
                bool(seen)
                and len(seen[0].conn.stream_buffers.get(seen[0].stream_id, b"")) == len(early)
            )
        )
    gate.set()
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert sinked(seen[0])
    await stream.write(frames[3][2:] + frames[4])
    got = b""
    expected = b"".join(answer_frame(i, f"r{i}".encode()) for i in range(5))  # its length
    with trio.fail_after(10):
        while len(got) < len(expected):
            got += await stream.read(65536)
    answers = RpcClient()
    for _ in range(5):
        answers.start_request(ECHO, b"")
    # in the order the handlers finished, which need not be the order asked
    got_answers = {x.id: x.body for x in answers.receive(got)}  # type: ignore[union-attr]
    assert got_answers == {i: f"r{i}".encode() for i in range(5)}


async def test_a_stream_closed_before_the_sink_is_read_as_before(pair: tuple[Net, Net]) -> None:
    """The requester wrote and closed before the server started: no sink (the stream is
    not open for reading); the request is read from the buffer and answered."""
    a, b = pair
    gate, seen, stream = await late_rpc_stream(a, b)
    await stream.write(request_frame(0, b"before the fin"))
    await stream.close()
    with trio.fail_after(10):
        await until(lambda: bool(seen) and seen[0].recv_closed)
    gate.set()
    with trio.fail_after(10):
        assert await stream.read(65536) == answer_frame(0, b"before the fin")
        await read_eof(stream)
    assert type(seen[0]) is not net_module._SinkedYamuxStream


async def test_a_failing_callback_never_reaches_the_yamux_reader(
    pair: tuple[Net, Net], caplog: pytest.LogCaptureFixture
) -> None:
    """A sink whose callback raises: the error is kept for its owner, the bytes after it
    are dropped, and the connection (the yamux reader) carries on."""
    a, b = pair
    b.set_handler(ECHO, echo)
    sinks: list[net_module._RpcSink] = []
    delivered: list[bytes] = []

    def on_bytes(data: bytes) -> None:
        delivered.append(data)
        if b"boom" in data:
            raise ValueError("boom")

    async def sinking(stream: Any) -> None:
        sink = net_module._install_sink(stream, on_bytes, b._nursery)
        assert sink is not None
        sinks.append(sink)
        await sink.wake.wait()
        sink.detach()
        await stream.reset()

    b._host.set_stream_handler(TProtocol(LATE), sinking)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(LATE)])
    await stream.write(b"fine")
    with trio.fail_after(10):
        await until(lambda: delivered == [b"fine"])
        await stream.write(b"boom")
        await stream.write(b"dropped")
        await until(lambda: bool(sinks) and sinks[0].wake.is_set())
        with pytest.raises(StreamError):
            await stream.read(100)
    assert isinstance(sinks[0].error, ValueError)
    assert delivered == [b"fine", b"boom"]
    assert "handling received bytes failed" in caplog.text
    assert await a.request(b.peer_id, ECHO, b"still up") == b"still up"


async def test_many_small_frames_credit_the_window_without_a_stall(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 concurrent requests (more than a window's worth) on one stream each way."""
    monkeypatch.setattr(net_module, "RPC_STREAMS_PER_PEER", 1)
    a, b = pair
    b.set_handler(ECHO, echo)
    body = b"x" * (DEFAULT_WINDOW_SIZE // 200)
    done = 0

    async def ask(i: int) -> None:
        nonlocal done
        assert await a.request(b.peer_id, ECHO, body + i.to_bytes(2, "big")) == body + i.to_bytes(
            2, "big"
        )
        done += 1

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(ask, i)
    assert done == 1000
    assert 1000 * len(body) > 2 * DEFAULT_WINDOW_SIZE > MAX_MESSAGE_SIZE
    [out] = out_streams(a, b)
    assert sinked(out.stream.muxed_stream)


class _HalfOnce:
    """Stands in for a trio socket's ``_sock`` for one send(), which takes half the bytes
    (as a kernel with a full send buffer does); it then puts the real socket back."""

    def __init__(self, holder: Any) -> None:
        self.holder = holder
        self.real = holder._sock
        self.sent: list[int] = []

    def send(self, data: bytes) -> int:
        self.holder._sock = self.real
        sent: int = self.real.send(data[: len(data) // 2])
        self.sent.append(sent)
        return sent


async def test_a_frame_the_kernel_takes_in_part_is_finished_whole(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our frames go out with one send() and no checkpoint (``_send_frame_now``); when the
    kernel takes only part of one, the rest follows before any other frame."""
    a, b = pair

    async def not_this_way(stream: Any, data: bytes) -> None:
        raise AssertionError("the frame took the awaited path")

    monkeypatch.setattr(net_module, "_write_frame_direct", not_this_way)
    b.set_handler(ECHO, echo)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(RPC_PROTOCOL)])
    tcp = stream.muxed_stream.conn.secured_conn.conn.read_writer.read_write_closer.stream
    conn = stream.muxed_stream.conn
    body = bytes(range(256)) * 200  # 51,200 bytes: one Noise message
    half = _HalfOnce(tcp.stream.socket)
    tcp.stream.socket._sock = half
    assert await net_module._write_shielded(stream, request_frame(0, body)) is None
    assert len(half.sent) == 1
    assert 0 < half.sent[0] < len(body)
    # both write locks given back: not held by this task (another task may hold one now,
    # since trio hands a released lock straight to a task waiting for it, such as yamux's
    # reader sending a window update while the tail went out)
    me = trio.lowlevel.current_task()
    assert conn._write_lock.statistics().owner is not me
    assert tcp.write_lock.statistics().owner is not me
    assert await net_module._write_shielded(stream, request_frame(1, b"next")) is None
    assert await read_answers(stream, 2) == {0: body, 1: b"next"}
