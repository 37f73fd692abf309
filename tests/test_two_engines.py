"""The walking skeleton end to end: two real nodes, a counter pico, a live move.

A and B are separate ``p2pico node`` processes on loopback; B bootstraps from A.
The pico is created on A and every event goes through B, by DID and by ECI,
including while the pico moves from A to B.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from p2pico.testing import NodeProcess, cli, start_node

COUNTER = Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl"
RID = "io.p2pico.counter"

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[NodeProcess] = []

    def start(name: str, bootstrap: list[str] | None = None) -> NodeProcess:
        node = start_node(tmp_path / name, bootstrap=bootstrap, log_dir=tmp_path)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def count_of(node: NodeProcess, target: str) -> int:
    with node.client() as c:
        value = c.get(f"/sky/cloud/{target}/{RID}/count").json()
    assert isinstance(value, int), value
    return value


async def test_counter_pico_moves_from_a_to_b_without_losing_events(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = nodes("a")
    b = nodes("b", bootstrap=[a.multiaddr])

    made = cli("pico", "new", "--ruleset", str(COUNTER), node=a)
    did, eci = made["did"], made["eci"]
    assert did.startswith("did:key:z6Mk")
    assert cli("resolve", did, node=a) == a.peer_id

    acknowledged: list[int] = []  # counts reported by acknowledged events, all senders
    per_sender: dict[str, list[int]] = {}

    async def send(client: httpx.AsyncClient, sender: str, target: str) -> None:
        r = await client.post(f"/sky/event/{target}/none/counter/inc", json={"by": 1})
        body = r.json()
        assert "error" not in body, (sender, body)
        [directive] = [d for d in body["directives"] if d["name"] == "count"]
        count = directive["options"]["count"]
        acknowledged.append(count)
        per_sender.setdefault(sender, []).append(count)

    async with (
        httpx.AsyncClient(base_url=b.url, timeout=60) as via_b,
        httpx.AsyncClient(base_url=a.url, timeout=60) as via_a,
    ):
        # 100 events through B, which does not host the pico, by DID and by ECI.
        for i in range(100):
            await send(via_b, "warm-up", did if i % 2 == 0 else eci)
        assert acknowledged == list(range(1, 101))

        # Four senders keep going while the pico moves from A to B: two through B
        # (by DID and by ECI), one through A by DID, one through A by ECI.
        moving = True
        during_move: dict[str, int] = {}

        async def keep_sending(sender: str, client: httpx.AsyncClient, target: str) -> None:
            sent_after = 0
            while moving or sent_after < 10:
                await send(client, sender, target)
                if moving:
                    during_move[sender] = during_move.get(sender, 0) + 1
                else:
                    sent_after += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_sending, "b-did", via_b, did)
            nursery.start_soon(keep_sending, "b-eci", via_b, eci)
            nursery.start_soon(keep_sending, "a-did", via_a, did)
            nursery.start_soon(keep_sending, "a-eci", via_a, eci)
            result = await trio.to_thread.run_sync(
                lambda: cli("move", did, "--to", b.peer_id, node=a)
            )
            moving = False
        assert result["host"] == b.peer_id, result

    total = len(acknowledged)
    print(f"acknowledged {total} events; sent while the move ran: {during_move}")
    # Every acknowledged event was applied exactly once ...
    assert sorted(acknowledged) == list(range(1, total + 1))
    # ... and each sender's events were applied in the order it sent them.
    for sender, counts in per_sender.items():
        assert counts == sorted(counts), sender
    assert all(during_move.get(s, 0) > 0 for s in ("b-did", "b-eci", "a-did", "a-eci")), during_move
    assert count_of(b, did) == total
    assert count_of(a, eci) == total  # A forwards to B now
    assert cli("resolve", did, node=a) == b.peer_id
    assert cli("resolve", did, node=b) == b.peer_id

    # The history of signed heads verifies from genesis to the last event.
    log = cli("log", did, node=b)
    assert log["verified"] is True
    seqs = [h["seq"] for h in log["heads"]]
    assert seqs == list(range(total, -1, -1))  # one head per event, then genesis

    # The move ran without errors or warnings on either side.
    for node in (a, b):
        assert node.log is not None
        noisy = [
            ln for ln in node.log.read_text().splitlines() if " WARNING " in ln or " ERROR " in ln
        ]
        assert noisy == [], noisy

    # A restart of B keeps the state.
    assert b.stop() == 0
    b2 = nodes("b", bootstrap=[a.multiaddr])
    assert b2.peer_id == b.peer_id
    assert count_of(b2, did) == total
    assert count_of(b2, eci) == total
    assert cli("resolve", did, node=b2) == b.peer_id
    done = cli("event", eci, "counter:inc", "by=1", node=b2)
    assert done["directives"][0]["options"]["count"] == total + 1
    assert cli("query", did, RID, "count", node=a) == total + 1
    # Bad input gets a clear error and a non-zero exit; the node keeps serving.
    bad = cli("event", "no-such-eci", "counter:inc", node=a, exit_code=1)
    assert bad == {"error": "ECI not found no-such-eci"}
    assert cli("query", eci, RID, "count", node=b2) == total + 1


async def test_a_third_engine_learns_of_a_move_by_gossip(nodes) -> None:  # type: ignore[no-untyped-def]
    """C never asks about the pico; the records reach it by gossip relayed through A."""
    a = nodes("a")
    b = nodes("b", bootstrap=[a.multiaddr])
    c = nodes("c", bootstrap=[a.multiaddr])
    made = cli("pico", "new", "--ruleset", str(COUNTER), node=a)
    did = made["did"]
    with c.client() as client:
        first = client.get(f"/api/records/{did}", params={"after": -1, "wait": 30}).json()
        assert (first["host"], first["seq"]) == (a.peer_id, 0)
        cli("move", did, "--to", b.peer_id, node=a)
        moved = client.get(f"/api/records/{did}", params={"after": 0, "wait": 30}).json()
        assert (moved["host"], moved["seq"], moved["from"]) == (b.peer_id, 1, a.peer_id)
        # C now routes by DID straight to B, with no look-up.
        r = client.post(f"/sky/event/{did}/none/counter/inc", json={"by": 1}).json()
        assert "error" not in r, r
        assert r["directives"][0]["options"]["count"] == 1
