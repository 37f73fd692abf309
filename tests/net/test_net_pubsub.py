"""p2pico.net gossipsub: publish/subscribe between two real nodes."""

from __future__ import annotations

import pytest
import trio

from p2pico.net import Net, RequestTimeout

TOPIC = "p2pico/test/1"


def collector() -> tuple[
    trio.MemorySendChannel[tuple[str, bytes]], trio.MemoryReceiveChannel[tuple[str, bytes]]
]:
    return trio.open_memory_channel[tuple[str, bytes]](1000)


async def test_publish_reaches_the_other_node_and_ourselves(pair: tuple[Net, Net]) -> None:
    """Messages flow both ways once each side has the other in its mesh."""
    a, b = pair
    a_send, a_recv = collector()
    b_send, b_recv = collector()

    async def on_a(sender: str, data: bytes) -> None:
        await a_send.send((sender, data))

    async def on_b(sender: str, data: bytes) -> None:
        await b_send.send((sender, data))

    a.subscribe(TOPIC, on_a)
    b.subscribe(TOPIC, on_b)
    with trio.fail_after(10):
        await a.wait_for_topic_peer(b.peer_id, TOPIC)
        await b.wait_for_topic_peer(a.peer_id, TOPIC)

        await a.publish(TOPIC, b"from a")
        assert await b_recv.receive() == (a.peer_id, b"from a")
        assert await a_recv.receive() == (a.peer_id, b"from a")  # our own, too

        await b.publish(TOPIC, b"from b")
        assert await a_recv.receive() == (b.peer_id, b"from b")
        assert await b_recv.receive() == (b.peer_id, b"from b")


async def test_many_messages_in_order(pair: tuple[Net, Net]) -> None:
    """A burst of 100 publishes arrives complete and in order (publish applies backpressure)."""
    a, b = pair
    send, recv = collector()

    async def on_b(sender: str, data: bytes) -> None:
        await send.send((sender, data))

    async def ignore(sender: str, data: bytes) -> None:
        pass

    a.subscribe(TOPIC, ignore)
    b.subscribe(TOPIC, on_b)
    with trio.fail_after(15):
        await a.wait_for_topic_peer(b.peer_id, TOPIC)
        await b.wait_for_topic_peer(a.peer_id, TOPIC)
        for i in range(100):
            await a.publish(TOPIC, b"%d" % i)
        got = [(await recv.receive())[1] for _ in range(100)]
    assert got == [b"%d" % i for i in range(100)]


async def test_failing_topic_handler_does_not_stop_delivery(
    pair: tuple[Net, Net], caplog: pytest.LogCaptureFixture
) -> None:
    """A handler exception is logged and the next message is still delivered."""
    a, b = pair
    send, recv = collector()

    async def on_b(sender: str, data: bytes) -> None:
        if data == b"poison":
            raise ValueError("bad message")
        await send.send((sender, data))

    async def ignore(sender: str, data: bytes) -> None:
        pass

    a.subscribe(TOPIC, ignore)
    b.subscribe(TOPIC, on_b)
    with trio.fail_after(10):
        await b.wait_for_topic_peer(a.peer_id, TOPIC)
        await a.wait_for_topic_peer(b.peer_id, TOPIC)
        await a.publish(TOPIC, b"poison")
        await a.publish(TOPIC, b"fine")
        assert await recv.receive() == (a.peer_id, b"fine")
    assert "handler" in caplog.text
    assert "bad message" in caplog.text


async def test_wait_for_topic_peer_times_out(pair: tuple[Net, Net]) -> None:
    """Waiting for a peer that never subscribes raises RequestTimeout."""
    a, b = pair

    async def ignore(sender: str, data: bytes) -> None:
        pass

    a.subscribe(TOPIC, ignore)
    with pytest.raises(RequestTimeout, match=r"not in the 'p2pico/test/1' mesh after 0.2 s$"):
        await a.wait_for_topic_peer(b.peer_id, TOPIC, timeout=0.2)
