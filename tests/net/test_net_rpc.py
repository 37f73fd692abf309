"""p2pico.net persistent request streams (/p2pico/rpc/1.0.0) between two real libp2p nodes."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from p2pico import net as net_module
from p2pico.net import Net, ProtocolNotSupported, StreamFailed
from protocols.framing import encode_frame, encode_uvarint
from protocols.rpc import MAX_IN_FLIGHT, RPC_PROTOCOL

ECHO = "/p2pico/test-echo/1.0.0"


async def echo(peer: str, payload: bytes) -> bytes:
    return payload


def streams_to(a: Net, b: Net) -> list[object]:
    return list(a._rpc_out.get(ID.from_base58(b.peer_id), []))


async def test_sequential_requests_share_one_stream(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    for i in range(20):
        assert await a.request(b.peer_id, ECHO, bytes([i])) == bytes([i])
    assert len(streams_to(a, b)) == 1
    assert b._rpc_inbound[ID.from_base58(a.peer_id)] == 1


async def test_answers_come_back_out_of_order_on_one_stream(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request waits for the second: only multiplexing lets both finish."""
    monkeypatch.setattr(net_module, "RPC_STREAMS_PER_PEER", 1)
    a, b = pair
    second_seen = trio.Event()
    order: list[bytes] = []

    async def handler(peer: str, payload: bytes) -> bytes:
        if payload == b"first":
            await second_seen.wait()
        else:
            second_seen.set()
        order.append(payload)
        return payload.upper()

    b.set_handler(ECHO, handler)
    results: dict[bytes, bytes] = {}

    async def ask(payload: bytes) -> None:
        results[payload] = await a.request(b.peer_id, ECHO, payload)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, b"first")
            await trio.testing.wait_all_tasks_blocked(0.05)
            nursery.start_soon(ask, b"second")
    assert results == {b"first": b"FIRST", b"second": b"SECOND"}
    assert order == [b"second", b"first"]
    assert len(streams_to(a, b)) == 1


async def test_in_flight_requests_are_bounded(
    pair: tuple[Net, Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_IN_FLIGHT per stream (and the stream limit), callers wait: backpressure."""
    monkeypatch.setattr(net_module, "RPC_STREAMS_PER_PEER", 2)
    a, b = pair
    release = trio.Event()
    running = 0
    most = 0

    async def slow(peer: str, payload: bytes) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return payload

    b.set_handler(ECHO, slow)
    bound = 2 * MAX_IN_FLIGHT
    done: list[int] = []

    async def ask(i: int) -> None:
        assert await a.request(b.peer_id, ECHO, i.to_bytes(2, "big")) == i.to_bytes(2, "big")
        done.append(i)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(bound + 10):
                nursery.start_soon(ask, i)
            while running < bound:
                await trio.testing.wait_all_tasks_blocked(0.05)
            await trio.testing.wait_all_tasks_blocked(0.2)
            assert running == bound  # the other 10 wait on our side
            assert done == []
            release.set()
    assert most == bound
    assert sorted(done) == list(range(bound + 10))
    assert len(streams_to(a, b)) == 2


async def test_a_dead_connection_fails_its_requests_and_the_next_one_reconnects(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    entered = trio.Event()
    release = trio.Event()

    async def handler(peer: str, payload: bytes) -> bytes:
        if payload == b"hang":
            entered.set()
            await release.wait()
        return payload

    b.set_handler(ECHO, handler)
    assert await a.request(b.peer_id, ECHO, b"warm") == b"warm"
    [first] = streams_to(a, b)

    async def hang() -> None:
        with pytest.raises(StreamFailed, match="ended before the answer"):
            await a.request(b.peer_id, ECHO, b"hang")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang)
            await entered.wait()
            await b._host.disconnect(ID.from_base58(a.peer_id))  # the connection dies
        release.set()
        assert await a.request(b.peer_id, ECHO, b"again") == b"again"
    [second] = streams_to(a, b)
    assert second is not first


async def test_a_new_connection_gets_a_new_stream(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    assert await a.request(b.peer_id, ECHO, b"one") == b"one"
    await a._host.disconnect(ID.from_base58(b.peer_id))
    with trio.fail_after(10):
        while streams_to(a, b):  # the reader notices the connection went
            await trio.testing.wait_all_tasks_blocked(0.01)
        assert await a.request(b.peer_id, ECHO, b"two") == b"two"
    assert len(streams_to(a, b)) == 1


async def test_a_late_answer_is_dropped_and_the_stream_lives_on(pair: tuple[Net, Net]) -> None:
    a, b = pair
    release = trio.Event()
    answered = trio.Event()

    async def handler(peer: str, payload: bytes) -> bytes:
        if payload == b"slow":
            await release.wait()
            answered.set()
        return payload

    b.set_handler(ECHO, handler)
    with pytest.raises(net_module.RequestTimeout):
        await a.request(b.peer_id, ECHO, b"slow", timeout=0.2)
    [stream] = streams_to(a, b)
    release.set()
    await answered.wait()
    with trio.fail_after(10):
        assert await a.request(b.peer_id, ECHO, b"fast") == b"fast"
    assert streams_to(a, b) == [stream]
    assert stream.client.late == 1  # type: ignore[attr-defined]


async def test_a_peer_without_rpc_gets_one_stream_per_request(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    b._host.remove_stream_handler(TProtocol(RPC_PROTOCOL))
    with trio.fail_after(10):
        assert await a.request(b.peer_id, ECHO, b"old") == b"old"
        assert await a.request(b.peer_id, ECHO, b"style") == b"style"
    assert ID.from_base58(b.peer_id) in a._no_rpc
    assert streams_to(a, b) == []
    with pytest.raises(ProtocolNotSupported, match=r"does not support /p2pico/nope/1\.0\.0$"):
        await a.request(b.peer_id, "/p2pico/nope/1.0.0", b"?")


async def test_both_paths_answer_alike(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    payload = bytes(range(256)) * 100
    for persistent in (True, False):
        a.persistent_streams = persistent
        assert await a.request(b.peer_id, ECHO, payload) == payload


async def test_garbage_on_an_rpc_stream_resets_it_and_the_node_carries_on(
    pair: tuple[Net, Net],
) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(RPC_PROTOCOL)])
    await stream.write(encode_frame(b"\x02\x00not a request"))
    with trio.fail_after(5), pytest.raises(StreamError):
        await stream.read(100)
    assert await a.request(b.peer_id, ECHO, b"fine") == b"fine"


async def test_a_half_frame_is_cut_off(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    b.request_read_timeout = 0.2
    stream = await a._host.new_stream(ID.from_base58(b.peer_id), [TProtocol(RPC_PROTOCOL)])
    await stream.write(encode_uvarint(50) + b"\x01\x00")  # promises 50 bytes, sends 2
    with trio.fail_after(5), pytest.raises(StreamError):
        await stream.read(100)


async def test_inbound_streams_per_peer_are_limited(pair: tuple[Net, Net]) -> None:
    a, b = pair
    b.set_handler(ECHO, echo)
    peer_b = ID.from_base58(b.peer_id)
    request = encode_frame(b"\x01\x00" + bytes([len(ECHO)]) + ECHO.encode() + b"hi")
    for _ in range(net_module.RPC_INBOUND_LIMIT):
        stream = await a._host.new_stream(peer_b, [TProtocol(RPC_PROTOCOL)])
        await stream.write(request)
        with trio.fail_after(5):
            assert await stream.read(100) == encode_frame(b"\x02\x00hi")
    # one more is reset at once (while it is negotiated, or on its first read)

    async def one_more() -> None:
        stream = await a._host.new_stream(peer_b, [TProtocol(RPC_PROTOCOL)])
        await stream.write(request)
        await stream.read(100)

    with trio.fail_after(5), pytest.raises((StreamError, StreamFailure)):
        await one_more()
