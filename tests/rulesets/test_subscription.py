"""rulesets/io.picolabs.subscription.krl: the subscription life cycle of pico-engine 1.4
(catalog §5.2), between two picos of one node, and between two in-process engines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import PINGED, SUBSCRIPTION, WITNESS, WRANGLER, Node, Starter


class Pair:
    """Two wrangler picos, A and B, with the witness and ping counter, and helpers."""

    def __init__(self, a_node: Node, a: str, b_node: Node, b: str) -> None:
        self.a_node, self.a, self.b_node, self.b = a_node, a, b_node, b

    async def well_known(self, node: Node, did: str) -> str:
        channel = await node.query(did, SUBSCRIPTION, "wellKnown_Rx")
        eci: str = channel["id"]
        return eci

    async def buses(self, side: str, kind: str, **filters: Any) -> list[dict[str, Any]]:
        node, did = (self.a_node, self.a) if side == "a" else (self.b_node, self.b)
        found: list[dict[str, Any]] = await node.query(did, SUBSCRIPTION, kind, **filters)
        return found

    async def request(self, **attrs: Any) -> dict[str, Any]:
        """A asks B (wrangler:subscription); B's inbound request."""
        wk = await self.well_known(self.b_node, self.b)
        await self.a_node.ok(self.a, "wrangler:subscription", wellKnown_Tx=wk, **attrs)
        await self.b_node.settle()
        [pending] = await self.buses("b", "inbound")
        return pending

    async def lists(self) -> dict[str, int]:
        return {
            f"{side}.{kind}": len(await self.buses(side, kind))
            for side in "ab"
            for kind in ("outbound", "inbound", "established")
        }


@pytest.fixture
async def pair(node: Node) -> Pair:
    a = await node.new_pico(WITNESS, PINGED, name="A")
    b = await node.new_pico(WITNESS, PINGED, name="B")
    return Pair(node, a, node, b)


ROLES = {"Rx_role": "controller", "Tx_role": "thing", "name": "lights"}


async def test_request_approve_and_events_both_ways(pair: Pair) -> None:
    node, a, b = pair.a_node, pair.a, pair.b
    b_well_known = await pair.well_known(node, b)
    pending = await pair.request(**ROLES, _headers={"authorization": "Bearer A's"})

    # A keeps its request in outbound, B in inbound, each with its own Rx channel.
    [out] = await pair.buses("a", "outbound")
    Id, a_rx = out["Id"], out["Rx"]
    assert out == {
        "Rx_role": "controller",
        "Tx_role": "thing",
        "Id": Id,
        "wellKnown_Tx": b_well_known,
        "Rx": a_rx,
    }
    b_rx = pending["Rx"]
    assert pending == {
        "Rx_role": "thing",
        "Tx_role": "controller",
        "Id": Id,
        "Tx": a_rx,
        "Rx": b_rx,
    }
    [a_channel] = [c for c in node.channels(a) if c["id"] == a_rx]
    assert a_channel["tags"] == ["lights", "tx_rx"]
    assert [c["tags"] for c in node.channels(b) if c["id"] == b_rx] == [["lights", "tx_rx"]]
    assert a_channel["eventPolicy"] == {"allow": [{"domain": "*", "name": "*"}], "deny": []}

    [announced] = await node.seen(a, "outbound_pending_subscription_added")
    assert announced == {
        "wellKnown_Tx": b_well_known,
        **ROLES,
        "Id": Id,
        "Rx": a_rx,
        "channel_name": "lights",
        "channel_type": "Tx_Rx",
    }
    [arrived] = await node.seen(b, "inbound_pending_subscription_added")
    assert arrived["Id"] == Id
    assert arrived["Rx"] == b_rx
    assert (arrived["Rx_role"], arrived["Tx_role"], arrived["Tx"]) == ("thing", "controller", a_rx)
    # B's request came in on its wellKnown_Rx channel, without A's HTTP headers.
    [request] = await node.query(b, "io.p2pico.witness", "seen_of", type="new_subscription_request")
    assert request["eci"] == b_well_known
    assert request["headers"] is False
    [asked] = await node.query(a, "io.p2pico.witness", "seen_of", type="subscription")
    assert asked["headers"] is True

    await node.ok(b, "wrangler:pending_subscription_approval", Id=Id)
    assert await pair.buses("a", "established") == [
        {"Rx_role": "controller", "Tx_role": "thing", "Id": Id, "Rx": a_rx, "Tx": b_rx}
    ]
    assert await pair.buses("b", "established") == [
        {"Rx_role": "thing", "Tx_role": "controller", "Id": Id, "Tx": a_rx, "Rx": b_rx}
    ]
    assert await pair.lists() == {
        "a.outbound": 0, "a.inbound": 0, "a.established": 1,
        "b.outbound": 0, "b.inbound": 0, "b.established": 1,
    }  # fmt: skip
    [a_added] = await node.seen(a, "subscription_added")
    assert a_added["bus"] == (await pair.buses("a", "established"))[0]
    [b_added] = await node.seen(b, "subscription_added")
    assert b_added["bus"] == (await pair.buses("b", "established"))[0]

    # The filters of established(key, value).
    assert await pair.buses("a", "established", key="Tx_role", value="thing") != []
    assert await pair.buses("a", "established", key="Tx_role", value="other") == []
    assert await pair.buses("a", "established", key="Id", value=Id) != []

    # Events both ways on the subscription channels.
    await node.ok(
        a,
        "wrangler:send_event_on_subs",
        Tx_role="thing",
        domain="ping",
        type="ping",
        attrs={"n": 1},
    )
    await node.ok(
        b, "wrangler:send_event_on_subs", subID=Id, domain="ping", type="ping", attrs={"n": 2}
    )
    await node.ok(
        b,
        "wrangler:send_event_on_subs",
        Rx_role="thing",
        domain="ping",
        type="ping",
        attrs={"n": 3},
    )
    assert await node.query(b, "io.p2pico.pinged", "pings") == [{"eci": b_rx, "n": 1}]
    assert await node.query(a, "io.p2pico.pinged", "pings") == [
        {"eci": a_rx, "n": 2},
        {"eci": a_rx, "n": 3},
    ]

    # Nothing to send to, or no domain: a failure event says which.
    await node.ok(a, "wrangler:send_event_on_subs", Tx_role="nobody", domain="ping", type="ping")
    await node.ok(a, "wrangler:send_event_on_subs", subID=Id, type="ping")
    failures = await node.seen(a, "failed_to_send_event_to_sub")
    assert [(f["foundSubsToSendTo"], f["domainGiven"], f["typeGiven"]) for f in failures] == [
        (False, True, True),
        (True, False, True),
    ]
    assert len(await node.query(b, "io.p2pico.pinged", "pings")) == 1


async def test_b_rejects_a_pending_request(pair: Pair) -> None:
    node, a, b = pair.a_node, pair.a, pair.b
    pending = await pair.request(**ROLES)
    [out] = await pair.buses("a", "outbound")
    await node.ok(b, "wrangler:inbound_rejection", Id=pending["Id"])
    assert await pair.lists() == dict.fromkeys(await pair.lists(), 0)
    # Both Rx channels are gone.
    assert [c for c in node.channels(a) if c["id"] == out["Rx"]] == []
    assert [c for c in node.channels(b) if c["id"] == pending["Rx"]] == []
    [cancelled_b] = await node.seen(b, "inbound_subscription_cancelled")
    assert cancelled_b["bus"] == pending
    [cancelled_a] = await node.seen(a, "outbound_subscription_cancelled")
    assert cancelled_a["bus"] == out


async def test_a_withdraws_its_pending_request(pair: Pair) -> None:
    node, a, b = pair.a_node, pair.a, pair.b
    pending = await pair.request(**ROLES)
    [out] = await pair.buses("a", "outbound")
    await node.ok(a, "wrangler:outbound_cancellation", Id=out["Id"])
    assert await pair.lists() == dict.fromkeys(await pair.lists(), 0)
    assert [c for c in node.channels(b) if c["id"] == pending["Rx"]] == []
    assert [c for c in node.channels(a) if c["id"] == out["Rx"]] == []
    assert (await node.seen(a, "outbound_subscription_cancelled"))[0]["bus"] == out
    [removed] = await node.seen(b, "inbound_subscription_cancelled")
    assert removed["bus"] == pending


@pytest.mark.parametrize("side", ["a", "b"])
async def test_either_side_cancels_an_established_subscription(pair: Pair, side: str) -> None:
    node = pair.a_node
    pending = await pair.request(**ROLES)
    await node.ok(pair.b, "wrangler:pending_subscription_approval", Id=pending["Id"])
    [a_bus], [b_bus] = await pair.buses("a", "established"), await pair.buses("b", "established")
    await node.ok(
        pair.a if side == "a" else pair.b, "wrangler:subscription_cancellation", Id=pending["Id"]
    )
    assert await pair.lists() == dict.fromkeys(await pair.lists(), 0)
    assert [c for c in node.channels(pair.a) if c["id"] == a_bus["Rx"]] == []
    assert [c for c in node.channels(pair.b) if c["id"] == b_bus["Rx"]] == []
    assert [r["bus"] for r in await node.seen(pair.a, "subscription_removed")] == [a_bus]
    assert [r["bus"] for r in await node.seen(pair.b, "subscription_removed")] == [b_bus]
    # The cancelled channel no longer takes events.
    gone = await node.event(b_bus["Rx"], "ping:ping", n=9)
    assert gone == {"error": f"ECI not found {b_bus['Rx']}"}


async def test_auto_accept_by_pattern(pair: Pair) -> None:
    node, a, b = pair.a_node, pair.a, pair.b
    # B accepts any request in which it is asked to be a "thing" or a "lamp".
    await node.ok(
        b,
        "wrangler:autoAcceptConfigUpdate",
        configName="things",
        password="not checked",
        regexMap=json.dumps({"Rx_role": ["^thing$", "^lamp$"]}),
    )
    config = {
        "things": {
            "configName": "things",
            "password": "not checked",
            "entries": {"Rx_role": ["^thing$", "^lamp$"]},
        }
    }
    assert await node.query(b, SUBSCRIPTION, "autoAcceptConfig") == config
    assert len(await node.seen(b, "auto_accept_config_updated")) == 1

    wk = await pair.well_known(node, b)
    await node.ok(a, "wrangler:subscription", wellKnown_Tx=wk, **ROLES)
    [a_bus] = await pair.buses("a", "established")
    [b_bus] = await pair.buses("b", "established")
    assert (a_bus["Tx"], b_bus["Tx"]) == (b_bus["Rx"], a_bus["Rx"])
    assert len(await node.seen(b, "auto_accepted_subscription_request")) == 1

    # A role that matches no pattern waits for B's owner.
    await node.ok(a, "wrangler:subscription", wellKnown_Tx=wk, Rx_role="owner", Tx_role="car")
    [waiting] = await pair.buses("b", "inbound")
    assert waiting["Rx_role"] == "car"
    assert len(await pair.buses("b", "established")) == 1

    # A config given as a map; then deleting the first one.
    await node.ok(
        b,
        "wrangler:autoAcceptConfigUpdate",
        config={"configName": "cars", "entries": {"Rx_role": ["^car"]}},
    )
    await node.ok(a, "wrangler:subscription", wellKnown_Tx=wk, Rx_role="owner", Tx_role="cart")
    assert len(await pair.buses("b", "established")) == 2
    await node.ok(b, "wrangler:autoAcceptConfigUpdate", configName="things", delete=True)
    assert list(await node.query(b, SUBSCRIPTION, "autoAcceptConfig")) == ["cars"]
    await node.ok(a, "wrangler:subscription", wellKnown_Tx=wk, **ROLES)
    assert len(await pair.buses("b", "inbound")) == 2  # "thing" no longer accepted

    # No name: a failure event, nothing changes.
    await node.ok(b, "wrangler:autoAcceptConfigUpdate", regexMap="{}")
    assert len(await node.seen(b, "autoAcceptConfigUpdate_failure")) == 1
    assert list(await node.query(b, SUBSCRIPTION, "autoAcceptConfig")) == ["cars"]


async def test_malformed_requests_raise_the_failure_events(pair: Pair) -> None:
    node, a, b = pair.a_node, pair.a, pair.b
    await node.ok(a, "wrangler:subscription", Rx_role="x")
    assert await node.seen(a, "wellKnown_Tx_format_failure") == [{"Rx_role": "x"}]
    await node.ok(b, "wrangler:new_subscription_request", Rx_role="y")
    assert await node.seen(b, "no_Tx_failure") == [{"Rx_role": "y"}]
    assert await pair.lists() == dict.fromkeys(await pair.lists(), 0)


async def test_the_well_known_channel_lets_strangers_ask_and_nothing_else(pair: Pair) -> None:
    node, b = pair.a_node, pair.b
    wk = await pair.well_known(node, b)
    assert (await node.query(wk, SUBSCRIPTION, "wellKnown_Rx"))["id"] == wk
    refused = await node.event(wk, "wrangler:pending_subscription_approval", Id="x")
    assert refused == {"error": "Not allowed by channel policy"}
    assert await node.query(wk, SUBSCRIPTION, "established") == {
        "error": "Not allowed by channel policy"
    }
    assert await node.query(wk, WRANGLER, "myself") == {"error": "Not allowed by channel policy"}


async def test_tx_host_is_accepted_and_not_needed(pair: Pair) -> None:
    node = pair.a_node
    pending = await pair.request(**ROLES, Tx_host="http://elsewhere:3000")
    assert "Tx_host" not in pending
    await node.ok(pair.b, "wrangler:pending_subscription_approval", Id=pending["Id"])
    [bus] = await pair.buses("a", "established")
    assert "Tx_host" not in bus
    await node.ok(
        pair.a, "wrangler:send_event_on_subs", subID=bus["Id"], domain="ping", type="ping"
    )
    assert len(await node.query(pair.b, "io.p2pico.pinged", "pings")) == 1


async def test_cancel_subscriptions_ends_every_relationship(pair: Pair) -> None:
    node, a, b = pair.a_node, pair.a, pair.b
    first = await pair.request(**ROLES)
    await node.ok(b, "wrangler:pending_subscription_approval", Id=first["Id"])
    await pair.request(Rx_role="r", Tx_role="s")  # pending in B's inbound
    wk = await pair.well_known(node, a)
    await node.ok(
        b, "wrangler:subscription", wellKnown_Tx=wk, name="back"
    )  # pending in B's outbound
    assert await pair.lists() == {
        "a.outbound": 1, "a.inbound": 1, "a.established": 1,
        "b.outbound": 1, "b.inbound": 1, "b.established": 1,
    }  # fmt: skip
    await node.ok(b, "wrangler:cancel_subscriptions")
    assert await pair.lists() == dict.fromkeys(await pair.lists(), 0)
    [rel] = await node.seen(b, "cancel_relationships")
    assert len(rel["establishedIDs"]) == len(rel["inboundIDs"]) == len(rel["outboundIDs"]) == 1
    # The fanned-out events do not carry the lists.
    [cancellation] = await node.seen(b, "subscription_cancellation")
    assert cancellation == {"Id": rel["establishedIDs"][0]}


async def test_intent_to_delete_cancels_and_asks_to_be_deleted(node: Node) -> None:
    parent = await node.new_pico(WITNESS, name="Parent")
    await node.ok(parent, "wrangler:new_child_request", name="Kid")
    [kid] = await node.query(parent, WRANGLER, "children")
    kid_did = node.engine.did_of_eci(kid["eci"])
    assert kid_did is not None
    other = await node.new_pico(name="Other")
    pair = Pair(node, other, node, kid_did)
    pending = await pair.request(**ROLES)
    await node.ok(kid_did, "wrangler:pending_subscription_approval", Id=pending["Id"])

    await node.ok(kid_did, "wrangler:intent_to_delete", Id="no-such-subscription")
    assert node.engine.hosts(kid_did)
    await node.ok(kid_did, "wrangler:intent_to_delete", Id=pending["Id"])
    assert await pair.buses("a", "established") == []  # the other side heard of it
    assert not node.engine.hosts(kid_did)
    assert await node.seen(parent, "child_deleted") == [{"eci": kid["eci"]}]


async def test_a_subscription_between_two_engines(nodes: Starter) -> None:
    """The same handshake when A and B are on different engines (FakeNet in one process)."""
    one, two = await nodes("one"), await nodes("two")
    a = await one.new_pico(WITNESS, PINGED, name="A")
    b = await two.new_pico(WITNESS, PINGED, name="B")
    pair = Pair(one, a, two, b)
    assert not one.engine.hosts(b)
    pending = await pair.request(**ROLES)
    await two.ok(b, "wrangler:pending_subscription_approval", Id=pending["Id"])
    [a_bus] = await pair.buses("a", "established")
    [b_bus] = await pair.buses("b", "established")
    assert (a_bus["Tx"], b_bus["Tx"]) == (b_bus["Rx"], a_bus["Rx"])
    await one.ok(
        a,
        "wrangler:send_event_on_subs",
        Tx_role="thing",
        domain="ping",
        type="ping",
        attrs={"n": 1},
    )
    await two.ok(
        b,
        "wrangler:send_event_on_subs",
        Tx_role="controller",
        domain="ping",
        type="ping",
        attrs={"n": 2},
    )
    assert await two.query(b, "io.p2pico.pinged", "pings") == [{"eci": b_bus["Rx"], "n": 1}]
    assert await one.query(a, "io.p2pico.pinged", "pings") == [{"eci": a_bus["Rx"], "n": 2}]
    await one.ok(a, "wrangler:subscription_cancellation", Id=a_bus["Id"])
    assert await pair.lists() == dict.fromkeys(await pair.lists(), 0)


async def test_testing_lists_the_references_events(pair: Pair) -> None:
    testing = await pair.a_node.query(pair.a, SUBSCRIPTION, "__testing")
    assert {q["name"] for q in testing["queries"]} == {
        "established",
        "outbound",
        "inbound",
        "wellKnown_Rx",
        "autoAcceptConfig",
    }
    assert all("args" not in q for q in testing["queries"])
    assert ("wrangler", "pending_subscription_approval", ("Id",)) in {
        (e["domain"], e["name"], tuple(e["attrs"])) for e in testing["events"]
    }
