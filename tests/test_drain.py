"""``p2pico node drain`` and the move progress bar, with real ``p2pico node`` processes.

A hosts four counter picos (one with a count), B and C are empty.  ``p2pico node drain``
on A moves all four, spread over B and C by load, prints one progress line per pico and
a summary; afterwards A refuses new picos and moves to it, its root pico stays, and
every moved pico answers with its state through any engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2pico.testing import NodeProcess, cli, start_node

COUNTER = Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl"
RID = "io.p2pico.counter"

pytestmark = pytest.mark.slow


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        a = start_node(tmp_path / "a", log_dir=tmp_path)
        started.append(a)
        for name in "bc":
            started.append(start_node(tmp_path / name, bootstrap=[a.multiaddr], log_dir=tmp_path))
        yield started
    finally:
        for node in started:
            node.stop()


def _p2pico(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pico", "--node", node.url, *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_move_prints_a_progress_bar(three_nodes: list[NodeProcess]) -> None:
    a, b, _ = three_nodes
    did = cli("pico", "new", "--ruleset", str(COUNTER), node=a)["did"]
    cli("event", did, "counter:inc", "by=3", node=a)
    done = _p2pico(a, "move", did, "--to", b.peer_id, "--progress")
    assert done.returncode == 0, done.stderr
    moved = json.loads(done.stdout)
    assert moved["host"] == b.peer_id
    total = moved["blocks"]  # every block the target needed: the whole history
    assert total >= 4
    assert f"] {total}/{total} blocks, moved" in done.stderr
    assert cli("query", did, RID, "count", node=a) == 3


def test_drain_moves_every_pico_away_and_refuses_new_ones(
    three_nodes: list[NodeProcess],
) -> None:
    a, b, c = three_nodes
    dids = [cli("pico", "new", "--ruleset", str(COUNTER), node=a)["did"] for _ in range(4)]
    cli("event", dids[0], "counter:inc", "by=7", node=a)

    done = _p2pico(a, "node", "drain")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["drained"] == 4, summary
    assert summary["failed"] == {}
    assert summary["left"] == []
    assert summary["refusing_new_picos"] is True
    lines = done.stderr.splitlines()
    assert lines[0] == "draining: 4 picos to move"
    assert [line.split("]")[0] for line in lines[1:]] == ["[1/4", "[2/4", "[3/4", "[4/4"]

    hosts = Counter(cli("resolve", did, node=c) for did in dids)
    assert hosts == {b.peer_id: 2, c.peer_id: 2}  # spread by load
    assert cli("query", dids[0], RID, "count", node=a) == 7
    listed = {p["did"] for p in httpx.get(f"{a.url}/api/picos", timeout=10).json()}
    assert listed.isdisjoint(dids)
    # the root pico is not moved ...
    assert any(p.get("root") for p in httpx.get(f"{a.url}/api/picos", timeout=10).json())

    # ... and A takes no new picos: neither created there nor moved to it.
    refused = httpx.post(f"{a.url}/api/picos", json={"rulesets": []}, timeout=10).json()
    assert "draining" in refused["error"]
    back = httpx.post(f"{b.url}/api/move", json={"did": dids[0], "to": a.peer_id}, timeout=60)
    assert "draining" in back.json()["error"]
    assert cli("resolve", dids[0], node=b) in (b.peer_id, c.peer_id)
