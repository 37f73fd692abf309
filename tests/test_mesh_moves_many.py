"""Issue 6, Must show 1: 100 moves of one pico among 5 engines under load.

Five real ``p2pico node`` processes on loopback (B to E bootstrap from A).  A counter
pico is created on A and moved 100 times, each time to the next engine in the ring,
while four clients send ``counter:inc`` to it, each through a different engine
(B, C, D, E), alternating its DID and its ECI.  Every acknowledged event must have
been applied exactly once (the counts acknowledged are exactly 1..N and the final
count is N) and in each client's sending order (its counts increase).

The clients are paced by the moves, not by time: a client may be at most
EVENTS_PER_MOVE events ahead of the moves started so far, so events and moves
interleave all the way through and the history (which every move carries) stays
a few thousand heads long.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import trio

from p2pico.testing import NodeProcess, cli, start_node

COUNTER = Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl"
RID = "io.p2pico.counter"
MOVES = 100
EVENTS_PER_MOVE = 3
CLIENTS = 4

pytestmark = pytest.mark.slow


@pytest.fixture
def five_nodes(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[NodeProcess] = []
    try:
        a = start_node(tmp_path / "a", log_dir=tmp_path)
        started.append(a)
        for name in "bcde":
            started.append(start_node(tmp_path / name, bootstrap=[a.multiaddr], log_dir=tmp_path))
        yield started
    finally:
        for node in started:
            node.stop()


async def test_100_moves_among_5_engines_under_4_senders(five_nodes: list[NodeProcess]) -> None:
    nodes = five_nodes
    a = nodes[0]
    made = cli("pico", "new", "--ruleset", str(COUNTER), node=a)
    did, eci = made["did"], made["eci"]

    acknowledged: list[int] = []
    per_sender: dict[str, list[int]] = {}
    moves_started = 0
    move_started = trio.Condition()
    moving = True
    move_seconds: list[float] = []

    async def sender(name: str, via: NodeProcess) -> None:
        sent = 0
        async with httpx.AsyncClient(base_url=via.url, timeout=120) as client:
            while moving or sent < EVENTS_PER_MOVE * (MOVES + 1):
                # paced by the moves: at most EVENTS_PER_MOVE ahead of them
                async with move_started:
                    while moving and sent >= EVENTS_PER_MOVE * (moves_started + 1):
                        await move_started.wait()
                target = did if sent % 2 == 0 else eci
                r = await client.post(f"/sky/event/{target}/none/counter/inc", json={"by": 1})
                body = r.json()
                assert r.status_code == 200, (name, sent, body)
                assert "error" not in body, (name, sent, body)
                [directive] = [d for d in body["directives"] if d["name"] == "count"]
                count = directive["options"]["count"]
                acknowledged.append(count)
                per_sender.setdefault(name, []).append(count)
                sent += 1

    async def mover() -> None:
        nonlocal moves_started, moving
        host = 0
        # One connection per move: an idle keep-alive connection may be closed by the
        # server just as it is reused (each node is asked only every fifth move).
        limits = httpx.Limits(max_keepalive_connections=0)
        clients = [httpx.AsyncClient(base_url=n.url, timeout=180, limits=limits) for n in nodes]
        try:
            for i in range(MOVES):
                to = (host + 1) % len(nodes)
                async with move_started:
                    moves_started += 1
                    move_started.notify_all()
                started = time.perf_counter()
                r = await clients[host].post(
                    "/api/move", json={"did": did, "to": nodes[to].peer_id}
                )
                move_seconds.append(time.perf_counter() - started)
                assert r.status_code == 200, (i, r.text)
                assert r.json()["host"] == nodes[to].peer_id, (i, r.json())
                host = to
        finally:
            for c in clients:
                await c.aclose()
            async with move_started:
                moving = False
                move_started.notify_all()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, via in enumerate(nodes[1 : CLIENTS + 1]):
            nursery.start_soon(sender, f"via-{'bcde'[i]}", via)
        nursery.start_soon(mover)
    elapsed = time.perf_counter() - started

    total = len(acknowledged)
    final_host = nodes[MOVES % len(nodes)]
    move_seconds.sort()
    print(
        f"{MOVES} moves and {total} events in {elapsed:.1f} s; move p50 "
        f"{move_seconds[len(move_seconds) // 2]:.3f} s, max {move_seconds[-1]:.3f} s"
    )
    # Every acknowledged event was applied exactly once ...
    assert sorted(acknowledged) == list(range(1, total + 1))
    assert cli("query", did, RID, "count", node=a) == total
    # ... and each sender's in the order it sent them.
    assert set(per_sender) == {"via-b", "via-c", "via-d", "via-e"}
    for name, counts in per_sender.items():
        assert counts == sorted(counts), name
        assert len(counts) >= EVENTS_PER_MOVE * (MOVES + 1), name
    # Every engine routes to the final host, and its history verifies from genesis.
    for node in nodes:
        assert cli("resolve", did, node=node) == final_host.peer_id
    log = cli("log", did, node=final_host)
    assert log["verified"] is True
    assert log["heads"][0]["seq"] == total  # one head per event; a retry adds none
    async with httpx.AsyncClient(timeout=30) as client:
        stats = [(await client.get(f"{n.url}/api/stats")).json() for n in nodes]
    print("retries", [s["retries"] for s in stats], "duplicates", [s["duplicates"] for s in stats])
    for s in stats:
        assert s["rejected"].get("message-bad-signature", 0) == 0, s
        assert s["rejected"].get("record-forged", 0) == 0, s
        assert s["rejected"].get("record-equivocation", 0) == 0, s
