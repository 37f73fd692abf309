"""A subscription between picos on two engines, made through wrangler events, that
keeps carrying events both ways after either pico moves (issue 4, "Must show" 3).

A, B and C are real ``p2pico node`` processes on loopback; B bootstraps from A, C from both.
Alice is made on A and Bob on B with ``p2pico pico new --wrangler``.  Subscription
events travel with ``event:send`` to the other side's channel, with no host: each
engine maps the ECI to the pico's DID and the DID to its current engine.

``event:send`` is fire and forget, so after an event the test waits for its effect
on the other pico by asking that pico again (``eventually``) until it shows, within
a generous bound; nothing depends on how long a step takes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2pico import testing
from p2pico.testing import NodeProcess, cli, start_node

SUB = "io.picolabs.subscription"
PINGED = "io.p2pico.pinged"

# Counts ping:ping events, with the channel each came in on.
PINGED_KRL = """ruleset io.p2pico.pinged {
  meta { shares pings }
  global { pings = function() { ent:pings.defaultsTo([]) } }
  rule ping {
    select when ping ping
    fired { ent:pings := pings().append({"eci": meta:eci, "n": event:attr("n")}) }
  }
}
"""

pytestmark = pytest.mark.slow


# every node a test started, for eventually()'s waits
STARTED: list[NodeProcess] = []


@pytest.fixture
def nodes(tmp_path: Path):  # type: ignore[no-untyped-def]
    STARTED.clear()

    def start(name: str, bootstrap: list[str] | None = None) -> NodeProcess:
        node = start_node(tmp_path / name, bootstrap=bootstrap, log_dir=tmp_path)
        STARTED.append(node)
        return node

    yield start
    for node in STARTED:
        node.stop()
    STARTED.clear()


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """``check()`` until it returns something truthy: between checks, wait for any node to
    handle another event (p2pico.testing.eventually; no polling)."""
    return testing.eventually(check, what, [n.url for n in STARTED], timeout)


def query(node: NodeProcess, target: str, rid: str, name: str, **args: Any) -> Any:
    with node.client() as c:
        r = c.post(f"/sky/cloud/{target}/{rid}/{name}", json=args)
    assert r.status_code == 200, r.text
    return r.json() if r.content else None


def event(node: NodeProcess, target: str, kind: str, **attrs: Any) -> Any:
    domain, type_ = kind.split(":")
    with node.client() as c:
        r = c.post(f"/sky/event/{target}/none/{domain}/{type_}", json=attrs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "error" not in body, body
    return body


def ping_both_ways(
    via: NodeProcess, alice: str, bob: str, a_bus: dict[str, Any], b_bus: dict[str, Any], n: int
) -> None:
    """Alice pings Bob and Bob pings Alice on the subscription; both arrive on its channels."""
    before_a = len(query(via, alice, PINGED, "pings"))
    before_b = len(query(via, bob, PINGED, "pings"))
    event(
        via,
        alice,
        "wrangler:send_event_on_subs",
        Tx_role="bob",
        domain="ping",
        type="ping",
        attrs={"n": n},
    )
    event(
        via,
        bob,
        "wrangler:send_event_on_subs",
        subID=b_bus["Id"],
        domain="ping",
        type="ping",
        attrs={"n": n + 1},
    )
    got_b = eventually(lambda: query(via, bob, PINGED, "pings")[before_b:], f"ping {n} to bob")
    got_a = eventually(
        lambda: query(via, alice, PINGED, "pings")[before_a:], f"ping {n + 1} to alice"
    )
    assert got_b == [{"eci": b_bus["Rx"], "n": n}]
    assert got_a == [{"eci": a_bus["Rx"], "n": n + 1}]


def test_a_subscription_across_engines_survives_moves(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = nodes("a")
    b = nodes("b", bootstrap=[a.multiaddr])
    c = nodes("c", bootstrap=[a.multiaddr, b.multiaddr])  # a move dials its target
    pinged = tmp_path / "pinged.krl"
    pinged.write_text(PINGED_KRL)

    alice = cli("pico", "new", "--wrangler", "--name", "Alice", "--ruleset", str(pinged), node=a)[
        "did"
    ]
    bob = cli("pico", "new", "--wrangler", "--name", "Bob", "--ruleset", str(pinged), node=b)["did"]
    assert cli("resolve", alice, node=b) == a.peer_id
    assert cli("resolve", bob, node=a) == b.peer_id
    assert query(a, bob, "io.picolabs.wrangler", "myself")["name"] == "Bob"

    # Alice asks Bob, at his wellKnown_Rx; the request goes from A to B.
    bob_well_known = query(a, bob, SUB, "wellKnown_Rx")["id"]
    event(
        a,
        alice,
        "wrangler:subscription",
        wellKnown_Tx=bob_well_known,
        Rx_role="alice",
        Tx_role="bob",
        name="friends",
    )
    [pending] = eventually(lambda: query(b, bob, SUB, "inbound"), "bob's inbound request")
    [out] = query(a, alice, SUB, "outbound")
    assert pending == {
        "Rx_role": "bob",
        "Tx_role": "alice",
        "Id": out["Id"],
        "Tx": out["Rx"],
        "Rx": pending["Rx"],
    }

    # Bob approves, through A (which routes the event to B by DID).
    event(a, bob, "wrangler:pending_subscription_approval", Id=pending["Id"])
    [a_bus] = eventually(lambda: query(a, alice, SUB, "established"), "alice's subscription")
    [b_bus] = query(b, bob, SUB, "established")
    assert a_bus == {
        "Rx_role": "alice",
        "Tx_role": "bob",
        "Id": pending["Id"],
        "Rx": out["Rx"],
        "Tx": pending["Rx"],
    }
    assert b_bus == {
        "Rx_role": "bob",
        "Tx_role": "alice",
        "Id": pending["Id"],
        "Rx": pending["Rx"],
        "Tx": out["Rx"],
    }
    assert query(a, alice, SUB, "outbound") == []
    assert query(b, bob, SUB, "inbound") == []

    ping_both_ways(a, alice, bob, a_bus, b_bus, 1)

    # Bob moves from B to C: the same channels reach him there.
    moved = cli("move", bob, "--to", c.peer_id, node=b)
    assert moved["host"] == c.peer_id
    assert cli("resolve", bob, node=c) == c.peer_id
    ping_both_ways(a, alice, bob, a_bus, b_bus, 3)
    ping_both_ways(c, alice, bob, a_bus, b_bus, 5)

    # Alice moves from A to B: again.
    cli("move", alice, "--to", b.peer_id, node=a)
    assert cli("resolve", alice, node=b) == b.peer_id
    ping_both_ways(c, alice, bob, a_bus, b_bus, 7)

    # Every ping arrived once, in order, on the subscription's channel.
    assert [p["n"] for p in query(a, bob, PINGED, "pings")] == [1, 3, 5, 7]
    assert [p["n"] for p in query(a, alice, PINGED, "pings")] == [2, 4, 6, 8]

    # Bob ends the subscription from C; Alice's side (on B) hears of it.
    event(c, bob, "wrangler:subscription_cancellation", Id=b_bus["Id"])
    eventually(lambda: query(a, alice, SUB, "established") == [], "alice's cancellation")
    assert query(a, bob, SUB, "established") == []
    with b.client() as client:
        gone = client.post(f"/sky/event/{b_bus['Rx']}/none/ping/ping").json()
    assert gone == {"error": f"ECI not found {b_bus['Rx']}"}

    # Nothing went wrong in the engines' logs.
    for node in (a, b, c):
        assert node.log is not None
        noisy = [
            ln for ln in node.log.read_text().splitlines() if " WARNING " in ln or " ERROR " in ln
        ]
        assert noisy == [], noisy
