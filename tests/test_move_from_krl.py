"""A pico moves itself: ``wrangler:move_request {to}`` (ctx:move), with real nodes.

Two ``p2pico node`` processes.  A wrangler pico with the counter on A gets
``wrangler:move_request`` naming B's peer id; once that event's transaction commits, the
engine moves the pico (queued behind its work, as ``p2pico move`` is).  The record names
B and the count travelled with it.  The root pico refuses to move, and a function (so a
query) cannot call ctx:move.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2pico.testing import NodeProcess, cli, start_node

COUNTER = Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl"
RID = "io.p2pico.counter"

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        a = start_node(tmp_path / "a", log_dir=tmp_path)
        started.append(a)
        started.append(start_node(tmp_path / "b", bootstrap=[a.multiaddr], log_dir=tmp_path))
        yield started
    finally:
        for node in started:
            node.stop()


def _record_after(node: NodeProcess, did: str, seq: int) -> dict[str, object]:
    r = httpx.get(f"{node.url}/api/records/{did}", params={"after": seq, "wait": 30}, timeout=60)
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()
    return result


def test_a_pico_moves_itself_by_a_wrangler_event(
    tmp_path: Path, two_nodes: list[NodeProcess]
) -> None:
    a, b = two_nodes
    made = cli("pico", "new", "--wrangler", "--ruleset", str(COUNTER), node=a)
    did = made["did"]
    cli("event", did, "counter:inc", "by=5", node=a)
    seq = int(httpx.get(f"{a.url}/api/records/{did}", timeout=10).json()["seq"])

    answer = cli("event", did, "wrangler:move_request", f"to={b.peer_id}", node=a)
    assert "error" not in answer, answer
    moved = _record_after(a, did, seq)
    assert moved["host"] == b.peer_id
    assert cli("query", did, RID, "count", node=a) == 5
    assert did in {p["did"] for p in httpx.get(f"{b.url}/api/picos", timeout=10).json()}
    assert cli("event", did, "counter:inc", node=a)["directives"][0]["options"]["count"] == 6

    # The root pico is the node's own: its move request runs, the move is refused.
    root = next(p for p in httpx.get(f"{a.url}/api/picos", timeout=10).json() if p.get("root"))
    cli("event", root["did"], "wrangler:move_request", f"to={b.peer_id}", node=a)
    assert cli("resolve", root["did"], node=a) == a.peer_id

    # ctx:move is an action: a function (so a query) cannot use it; the compiler says where.
    source = tmp_path / "mover.krl"
    source.write_text("ruleset mover {\n  global { go = function(to) { ctx:move(to) } }\n}\n")
    refused = cli("pico", "new", "--ruleset", str(source), node=a, exit_code=1)
    assert refused["error"].startswith("line 2, column 32: 'ctx:move' is an action"), refused
