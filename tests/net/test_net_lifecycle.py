"""p2pico.net lifecycle: bootstrap, restarts and redials, shutdown, logging."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import pytest
import trio

from p2pico import net as net_module
from p2pico.net import Net, PeerUnreachable, StreamFailed, serve_net

ECHO = "/p2pico/test-echo/1.0.0"
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
StartNet = Callable[..., Awaitable[Net]]  # the start_net fixture (tests/net/conftest.py)


async def echo(peer: str, payload: bytes) -> bytes:
    return payload


async def test_bootstrap_connects_before_started(start_net: StartNet, net_a: Net) -> None:
    """A node with a bootstrap address is connected to it when serve_net reports started."""
    seen = trio.Event()

    async def on_connect(peer: str) -> None:
        seen.set()

    net_a.on_peer_connected(on_connect)
    b = await start_net(bootstrap=net_a.multiaddrs())
    assert b.connected_peers() == [net_a.peer_id]
    with trio.fail_after(5):
        await seen.wait()


async def test_unreachable_bootstrap_is_not_fatal(
    start_net: StartNet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead bootstrap address is retried, logged and given up on; the node still starts."""
    monkeypatch.setattr(net_module, "BOOTSTRAP_BACKOFF", 0.01)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    ghost = (await start_net()).peer_id  # a real id; nobody listens on the port
    with trio.fail_after(20):
        net = await start_net(bootstrap=[f"/ip4/127.0.0.1/tcp/{port}/p2p/{ghost}"])
    assert net.connected_peers() == []
    assert "giving up after 3 attempt(s)" in caplog.text


async def test_malformed_bootstrap_address_is_refused(start_net: StartNet) -> None:
    """A bootstrap address without /p2p/<id> is a configuration error, raised at once."""
    with pytest.raises(ValueError, match=r"^not a dialable p2p multiaddr: '/ip4/127.0.0.1/tcp/1'$"):
        await start_net(bootstrap=["/ip4/127.0.0.1/tcp/1"])


async def test_restarted_peer_is_reachable_again_at_once(
    start_net: StartNet, net_a: Net, nursery: trio.Nursery
) -> None:
    """A dial that failed while the peer was down does not block the redial (P7)."""
    seed = os.urandom(32)
    b_done = trio.Event()
    b_cancel = trio.CancelScope()

    async def run_b(listen: list[str], *, task_status: trio.TaskStatus[Net]) -> None:  # type: ignore[name-defined]  # trio-stubs
        with b_cancel:
            await serve_net(seed, listen, task_status=task_status)
        b_done.set()

    b1: Net = await nursery.start(run_b, LOOPBACK)
    b1.set_handler(ECHO, echo)
    address = b1.multiaddrs()[0]
    await net_a.connect(address)
    assert await net_a.request(b1.peer_id, ECHO, b"one") == b"one"

    b_cancel.cancel()
    with trio.fail_after(5):
        await b_done.wait()
    # a may still hold the dead connection (P13) and its persistent stream: a request
    # written on that stream before a notices fails with StreamFailed (it may have been
    # read); the next one finds the stream dead, redials, and the dial fails, which puts b
    # in libp2p's 60-second negative dial cache.

    async def ask_until_a_dial_fails() -> None:
        try:
            await net_a.request(b1.peer_id, ECHO, b"two")
        except StreamFailed:
            await net_a.request(b1.peer_id, ECHO, b"two again")

    with trio.fail_after(10), pytest.raises(PeerUnreachable, match=r"^dial to .* failed"):
        await ask_until_a_dial_fails()

    b_done = trio.Event()
    b_cancel = trio.CancelScope()
    b2: Net = await nursery.start(run_b, [address.rsplit("/p2p/", 1)[0]])
    b2.set_handler(ECHO, echo)
    assert b2.peer_id == b1.peer_id
    with trio.fail_after(5):
        assert await net_a.request(b2.peer_id, ECHO, b"three") == b"three"


async def test_shutdown_is_quick(start_net: StartNet, net_a: Net, nursery: trio.Nursery) -> None:
    """Cancelling serve_net with live connections returns promptly and frees the port."""
    done = trio.Event()
    cancel = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[Net]) -> None:  # type: ignore[name-defined]  # trio-stubs
        with cancel:
            await serve_net(os.urandom(32), LOOPBACK, net_a.multiaddrs(), task_status=task_status)
        done.set()

    async def ignore(sender: str, data: bytes) -> None:
        pass

    b: Net = await nursery.start(run)
    listen_port = int(b.multiaddrs()[0].split("/")[4])
    b.subscribe("t", ignore)
    net_a.subscribe("t", ignore)
    b.set_handler(ECHO, echo)
    assert await net_a.request(b.peer_id, ECHO, b"x") == b"x"
    start = trio.current_time()
    cancel.cancel()
    with trio.fail_after(3):
        await done.wait()
    print(f"\nshutdown took {(trio.current_time() - start) * 1000:.1f} ms")
    # libp2p's listener lives in a trio system task; serve_net must have closed it.
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", listen_port)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_libp2p_logging_is_routed_through_p2pico() -> None:
    """libp2p's WARNING+ records reach the p2pico.libp2p logger; known noise comes as DEBUG."""
    target = logging.getLogger("p2pico.libp2p")
    handler = _ListHandler()
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    try:
        source = logging.getLogger("libp2p.test")
        source.warning("something odd")
        source.error("Failed to open stream to peer X:\n  details")
        source.info("chatter")
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
    seen = [(r.name, r.levelname, r.getMessage().split(":")[0]) for r in handler.records]
    assert seen == [
        ("libp2p.test", "WARNING", "something odd"),
        ("libp2p.test", "DEBUG", "Failed to open stream to peer X"),
    ]
