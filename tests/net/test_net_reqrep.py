"""p2pico.net request/response: two real libp2p nodes over loopback TCP + Noise + yamux."""

from __future__ import annotations

import os
import statistics
from collections.abc import Awaitable, Callable

import base58
import nacl.signing
import pytest
import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from p2pico.net import (
    Net,
    PeerUnreachable,
    ProtocolNotSupported,
    RequestTimeout,
    StreamFailed,
)
from protocols.framing import MAX_FRAME_SIZE, encode_uvarint

ECHO = "/p2pico/test-echo/1.0.0"
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
StartNet = Callable[..., Awaitable[Net]]  # the start_net fixture (tests/net/conftest.py)


async def echo(peer: str, payload: bytes) -> bytes:
    return payload


def expected_peer_id(seed: bytes) -> str:
    """The peer id computed by hand: identity multihash of PublicKey{Ed25519, key}."""
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    protobuf = b"\x08\x01\x12\x20" + public
    return base58.b58encode(b"\x00" + bytes([len(protobuf)]) + protobuf).decode()


async def test_peer_id_derives_from_seed(start_net: StartNet) -> None:
    """The node's peer id is the one pynacl derives from the seed."""
    seed = bytes(range(32))
    net = await start_net(seed)
    assert net.peer_id == expected_peer_id(seed)
    assert net.peer_id.startswith("12D3KooW")


async def test_seed_must_be_32_bytes(start_net: StartNet) -> None:
    """A seed of the wrong length is refused before anything starts."""
    with pytest.raises(ValueError, match=r"^Ed25519 seed must be 32 bytes, got 31$"):
        await start_net(b"\x00" * 31)


async def test_multiaddrs_report_real_port(net_a: Net) -> None:
    """Listening on port 0 reports the bound port, with /p2p/<id> appended."""
    [addr] = net_a.multiaddrs()
    assert addr.startswith("/ip4/127.0.0.1/tcp/")
    assert addr.endswith(f"/p2p/{net_a.peer_id}")
    assert int(addr.split("/")[4]) > 0


async def test_connect_returns_peer_id_and_both_sides_see_it(net_a: Net, net_b: Net) -> None:
    """connect() returns the remote id; on_peer_connected fires on both sides."""
    seen_a, seen_b = trio.Event(), trio.Event()
    got: dict[str, str] = {}

    async def on_a(peer: str) -> None:
        got["a"] = peer
        seen_a.set()

    async def on_b(peer: str) -> None:
        got["b"] = peer
        seen_b.set()

    net_a.on_peer_connected(on_a)
    net_b.on_peer_connected(on_b)
    assert await net_a.connect(net_b.multiaddrs()[0]) == net_b.peer_id
    with trio.fail_after(5):
        await seen_a.wait()
        await seen_b.wait()
    assert got == {"a": net_b.peer_id, "b": net_a.peer_id}
    assert net_a.connected_peers() == [net_b.peer_id]
    assert net_b.connected_peers() == [net_a.peer_id]
    # Connecting again is a no-op that still returns the id.
    assert await net_a.connect(net_b.multiaddrs()[0]) == net_b.peer_id


async def test_on_peer_connected_reports_only_new_connections(pair: tuple[Net, Net]) -> None:
    """A callback registered after a connection is not called for that peer."""
    a, b = pair
    calls: list[str] = []

    async def callback(peer: str) -> None:
        calls.append(peer)

    a.on_peer_connected(callback)
    b.set_handler(ECHO, echo)
    assert await a.request(b.peer_id, ECHO, b"x") == b"x"  # reuses the connection
    assert calls == []
    assert a.connected_peers() == [b.peer_id]


async def test_failing_peer_callback_does_not_hurt_the_node(
    pair: tuple[Net, Net], caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_peer_connected is logged; the node keeps working."""
    a, b = pair
    done = trio.Event()

    async def broken(peer: str) -> None:
        done.set()
        raise RuntimeError("boom")

    b.set_handler(ECHO, echo)
    a.on_peer_connected(broken)
    await a._host.disconnect(ID.from_base58(b.peer_id))
    assert await a.request(b.peer_id, ECHO, b"redial") == b"redial"  # a new connection
    with trio.fail_after(5):
        await done.wait()
    assert await a.request(b.peer_id, ECHO, b"still fine") == b"still fine"
    assert "on_peer_connected callback" in caplog.text


async def test_on_peer_disconnected_fires_when_the_last_connection_closes(
    pair: tuple[Net, Net], caplog: pytest.LogCaptureFixture
) -> None:
    """Each callback runs once per close, in order; one that raises is logged, the next runs."""
    a, b = pair
    calls: list[str] = []
    done = trio.Event()

    def broken(peer: str) -> None:
        calls.append("broken " + peer)
        raise RuntimeError("boom")

    def fine(peer: str) -> None:
        calls.append("fine " + peer)
        done.set()

    a.on_peer_disconnected(broken)
    a.on_peer_disconnected(fine)
    b.set_handler(ECHO, echo)
    await a._host.disconnect(ID.from_base58(b.peer_id))
    with trio.fail_after(5):
        await done.wait()
    assert calls == ["broken " + b.peer_id, "fine " + b.peer_id]
    assert "on_peer_disconnected callback" in caplog.text
    assert await a.request(b.peer_id, ECHO, b"redial") == b"redial"  # a new connection


async def test_request_response_both_directions(pair: tuple[Net, Net]) -> None:
    """Either side can ask the other; the handler sees the requester's peer id."""
    a, b = pair

    async def whoami(peer: str, payload: bytes) -> bytes:
        return peer.encode() + b"|" + payload

    a.set_handler(ECHO, whoami)
    b.set_handler(ECHO, whoami)
    assert await a.request(b.peer_id, ECHO, b"ping") == a.peer_id.encode() + b"|ping"
    assert await b.request(a.peer_id, ECHO, b"pong") == b.peer_id.encode() + b"|pong"
    assert await a.request(b.peer_id, ECHO, b"") == a.peer_id.encode() + b"|"


async def test_request_connects_on_demand(net_a: Net, net_b: Net) -> None:
    """After a disconnect, request() redials the address connect() was given.

    The reconnection fires on_peer_connected again, on both sides.
    """
    net_b.set_handler(ECHO, echo)
    seen_by_a, seen_by_b = trio.Semaphore(0), trio.Semaphore(0)

    async def on_a(peer: str) -> None:
        seen_by_a.release()

    async def on_b(peer: str) -> None:
        seen_by_b.release()

    net_a.on_peer_connected(on_a)
    net_b.on_peer_connected(on_b)
    await net_a.connect(net_b.multiaddrs()[0])
    await net_a._host.disconnect(ID.from_base58(net_b.peer_id))
    assert net_b.peer_id not in net_a.connected_peers()
    assert await net_a.request(net_b.peer_id, ECHO, b"again") == b"again"
    with trio.fail_after(5):
        for seen in (seen_by_a, seen_by_a, seen_by_b, seen_by_b):
            await seen.acquire()


async def test_inbound_peer_can_be_asked_back(pair: tuple[Net, Net]) -> None:
    """b never dialled a; it answers a's request over a's connection and can request back."""
    a, b = pair
    a.set_handler(ECHO, echo)
    assert await b.request(a.peer_id, ECHO, b"back") == b"back"


async def test_handler_exception_fails_stream_and_server_survives(
    pair: tuple[Net, Net], caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler resets the stream (StreamFailed); the next request is served."""
    a, b = pair

    async def flaky(peer: str, payload: bytes) -> bytes:
        if payload == b"bad":
            raise RuntimeError("handler bug")
        return payload

    b.set_handler(ECHO, flaky)
    # on a persistent stream the failure comes back as an answer, naming the error
    with pytest.raises(StreamFailed, match=r"request failed at .*: handler-failed: .*handler bug"):
        await a.request(b.peer_id, ECHO, b"bad")
    assert await a.request(b.peer_id, ECHO, b"good") == b"good"
    assert "handler failed on a request from" in caplog.text
    a.persistent_streams = False  # the one-shot path: the stream is reset
    with pytest.raises(StreamFailed, match=r"^(no response|stream failed)"):
        await a.request(b.peer_id, ECHO, b"bad")
    assert await a.request(b.peer_id, ECHO, b"good") == b"good"


async def test_unknown_protocol(pair: tuple[Net, Net]) -> None:
    """Asking for a protocol the peer does not serve raises ProtocolNotSupported."""
    a, b = pair
    with pytest.raises(ProtocolNotSupported, match=r"does not support /p2pico/nope/1.0.0$"):
        await a.request(b.peer_id, "/p2pico/nope/1.0.0", b"?")


async def test_unknown_peer_is_unreachable_quickly(net_a: Net) -> None:
    """A peer with no known address fails at once, without dialling."""
    stranger = expected_peer_id(os.urandom(32))
    with trio.fail_after(1), pytest.raises(PeerUnreachable, match=r"^no known address for peer"):
        await net_a.request(stranger, ECHO, b"hello?")


async def test_request_to_ourselves_is_refused(net_a: Net) -> None:
    """A node cannot dial itself."""
    with pytest.raises(PeerUnreachable, match=r"^cannot send a request to ourselves$"):
        await net_a.request(net_a.peer_id, ECHO, b"me")


async def test_bad_arguments_are_value_errors(net_a: Net) -> None:
    """Malformed peer ids and addresses are caller bugs: ValueError, not NetError."""
    with pytest.raises(ValueError, match=r"^not a peer id"):
        await net_a.request("nonsense", ECHO, b"")
    with pytest.raises(ValueError, match=r"^not a dialable p2p multiaddr"):
        await net_a.connect("/ip4/127.0.0.1/tcp/1")
    with pytest.raises(ValueError, match=r"^refusing to connect to ourselves"):
        await net_a.connect(net_a.multiaddrs()[0])


async def test_dead_address_is_unreachable(net_a: Net) -> None:
    """A dial to a port nobody listens on raises PeerUnreachable with the dial error."""
    # Reserve a port, then close it: connection refused.
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    ghost = expected_peer_id(os.urandom(32))
    with trio.fail_after(10), pytest.raises(PeerUnreachable, match=r"^dial to .* failed"):
        await net_a.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{ghost}")


async def test_request_timeout(pair: tuple[Net, Net]) -> None:
    """A handler slower than the requester's timeout gives RequestTimeout."""
    a, b = pair
    release = trio.Event()

    async def stuck(peer: str, payload: bytes) -> bytes:
        await release.wait()
        return payload

    b.set_handler(ECHO, stuck)
    with pytest.raises(RequestTimeout, match=r"timed out after 0.2 s$"):
        await a.request(b.peer_id, ECHO, b"slow", timeout=0.2)
    release.set()


async def test_stalled_requester_is_cut_off(pair: tuple[Net, Net]) -> None:
    """A peer that sends half a request and stalls gets its stream reset, not a hung task."""
    a, b = pair
    b.set_handler(ECHO, echo)
    b.request_read_timeout = 0.2
    peer_b = ID.from_base58(b.peer_id)
    stream = await a._host.new_stream(peer_b, [ECHO])
    await stream.write(encode_uvarint(10) + b"12")  # promises 10 bytes, sends 2
    with trio.fail_after(5), pytest.raises(StreamError):  # reset; yamux may report it as EOF
        await stream.read(100)


async def test_oversized_request_frame_is_rejected(pair: tuple[Net, Net]) -> None:
    """A length prefix over MAX_FRAME_SIZE resets the stream before any payload is read."""
    a, b = pair
    b.set_handler(ECHO, echo)
    peer_b = ID.from_base58(b.peer_id)
    stream = await a._host.new_stream(peer_b, [ECHO])
    await stream.write(encode_uvarint(MAX_FRAME_SIZE + 1))
    with trio.fail_after(5), pytest.raises(StreamError):  # reset; yamux may report it as EOF
        await stream.read(100)


async def test_one_mib_payload(pair: tuple[Net, Net]) -> None:
    """1 MiB goes out and comes back intact."""
    a, b = pair
    b.set_handler(ECHO, echo)
    payload = os.urandom(1024 * 1024)
    with trio.fail_after(20):
        assert await a.request(b.peer_id, ECHO, payload) == payload


async def test_hundred_sequential_round_trips(
    pair: tuple[Net, Net], record_property: object
) -> None:
    """100 requests in a row, each on a new stream; reports p50/p99 latency."""
    a, b = pair
    b.set_handler(ECHO, echo)
    latencies = []
    for i in range(100):
        start = trio.current_time()
        assert (
            await a.request(b.peer_id, ECHO, i.to_bytes(2, "big") * 50) == i.to_bytes(2, "big") * 50
        )
        latencies.append((trio.current_time() - start) * 1000)
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[98]
    print(f"\n100 sequential request round trips: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    record_property("p50_ms", round(p50, 2))  # type: ignore[operator]
    record_property("p99_ms", round(p99, 2))  # type: ignore[operator]
