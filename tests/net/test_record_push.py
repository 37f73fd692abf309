"""Location records reach every engine by acknowledged push, relayed by the engines between.

Real ``p2pico node`` processes on loopback: n1, n2 and n3 bootstrap to n0 and to nobody
else, so a record made on n3 reaches n1 and n2 only if n0 takes it and pushes it on.
Gossipsub carries no records any more and catch-up syncs run only when peers connect
(before any of these picos exist), so the push is the only path here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pico.testing import NodeProcess, start_node

COUNTER = (Path(__file__).resolve().parents[2] / "rulesets" / "counter.krl").read_text()


@pytest.fixture
def star(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    nodes = [start_node(tmp_path / "n0")]
    try:
        for i in range(1, 4):
            nodes.append(start_node(tmp_path / f"n{i}", bootstrap=[nodes[0].multiaddr]))
        yield nodes
    finally:
        for node in reversed(nodes):
            node.stop()


def test_a_burst_of_records_reaches_every_engine_through_a_relay(
    star: list[NodeProcess],
) -> None:
    origin = star[-1]
    with origin.client() as c:
        dids = []
        for _ in range(40):
            r = c.post("/api/picos", json={"rulesets": [COUNTER]})
            assert r.status_code == 200, r.text
            dids.append(r.json()["did"])
    for node in star:
        with node.client() as c:
            for did in dids:
                # waits until the node holds it (no look-ups on this route)
                r = c.get(f"/api/records/{did}", params={"after": -1, "wait": 30})
                assert r.status_code == 200, f"{node.home.name} lacks {did}: {r.text}"
                assert r.json()["host"] == origin.peer_id
    # the leaves never connected to the origin: n0 relayed every record
    with star[1].client() as c:
        peers = {row["did"] for row in c.get("/api/records").json()}
    assert set(dids) <= peers
