"""rulesets/io.picolabs.wrangler.krl: the events, attributes and functions of pico-engine
1.4's wrangler (catalog §5.1), driven over HTTP on one node."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import PDS, SUBSCRIPTION, WITNESS, WRANGLER, Node

import krl
from p2pico import builtin

GREETER = """ruleset io.p2pico.greeter {
  meta { name "Greeter"  description "says hello"  author "tests"  shares hello, broken, nothing }
  global {
    nothing = function() { null }
    hello = function(to) { "hello, " + to }
    broken = function() { {"error": "it broke", "error_str": "really"} }
  }
}"""

# Sits next to the greeter in the node's ruleset folder: installed by absoluteURL + rid.
NEIGHBOUR = (
    """ruleset io.p2pico.neighbour { meta { shares where }  global { where = "next door" } }"""
)

# Queries other picos through wrangler used as a module, from its own queries.
ASKER = """ruleset io.p2pico.asker {
  meta {
    use module io.picolabs.wrangler alias wrangler
    shares ask, sky
  }
  global {
    ask = function(eci, rid, name, args) { wrangler:picoQuery(eci, rid, name, args) }
    sky = function(eci, rid, name, args) { wrangler:skyQuery(eci, rid, name, args) }
  }
}"""


async def test_a_wrangler_pico_gets_pds_and_subscription_as_a_child_does(node: Node) -> None:
    did = await node.new_pico(WITNESS, name="Hub")
    assert await node.query(did, WRANGLER, "installedRIDs") == [
        WRANGLER,
        "io.p2pico.witness",
        PDS,
        SUBSCRIPTION,
    ]
    # A top-level pico has no parent; its eci is its system,self channel (its DID).
    assert await node.query(did, WRANGLER, "myself") == {"name": "Hub", "id": did, "eci": did}
    assert await node.query(did, WRANGLER, "name") == "Hub"
    assert await node.query(did, WRANGLER, "id") == did
    assert await node.query(did, WRANGLER, "parent_eci") is None
    assert await node.query(did, WRANGLER, "children") == []

    # The shipped rulesets were installed by URL, from the node's ruleset folder.
    assert await node.query(did, WRANGLER, "rulesetConfig", rid=PDS) == {}
    assert await node.query(did, WRANGLER, "rulesetMeta", rid=SUBSCRIPTION) == {
        "name": "Subscription",
        "description": krl.compile_ruleset(builtin.source(SUBSCRIPTION)).meta["description"],
        "author": "p2pico",
    }

    # The events of set-up, in the order pico-engine raises them.
    seen = await node.query(did, "io.p2pico.witness", "seen")
    kinds = [f"{e['domain']}:{e['type']}" for e in seen]
    assert kinds == [
        "wrangler:pico_created",
        "wrangler:install_ruleset_request",
        "wrangler:install_ruleset_request",
        "wrangler:pico_initialized",
        "wrangler:ruleset_installed",
        "wrangler:ruleset_installed",
        "pds:updated_profile",
        "wrangler:need_wellKnown_Rx",
        "pds:profile_updated",
        "wrangler:wellKnown_Rx_created",
    ]
    assert [e["attrs"] for e in seen[1:3]] == [
        {"url": builtin.url(PDS)},
        {"url": builtin.url(SUBSCRIPTION)},
    ]
    assert seen[4]["attrs"] == {"url": builtin.url(PDS), "rids": [PDS]}
    assert seen[3]["attrs"] == {"name": "Hub", "eci": did, "uiEci": None}

    # Its channels: the CLI's, the wellKnown_Rx (subscription) and pds (pds).
    [well_known] = node.tagged(did, "wellknown_rx", "tx_rx")
    assert well_known["eventPolicy"] == {
        "allow": [
            {"domain": "wrangler", "name": "subscription"},
            {"domain": "wrangler", "name": "new_subscription_request"},
            {"domain": "wrangler", "name": "inbound_removal"},
        ],
        "deny": [],
    }
    assert well_known["queryPolicy"] == {
        "allow": [{"rid": SUBSCRIPTION, "name": "wellKnown_Rx"}],
        "deny": [],
    }
    [pds] = node.tagged(did, "pds")
    assert pds["eventPolicy"] == {"allow": [{"domain": "pds", "name": "*"}], "deny": []}
    assert await node.query(did, PDS, "getChannelEci") == pds["id"]
    assert len(node.tagged(did, "p2pico")) == 1
    assert len(node.channels(did)) == 4  # and system,self


async def test_channels_filters_by_tags_in_any_order_and_case(node: Node) -> None:
    did = await node.new_pico()
    everything = await node.query(did, WRANGLER, "channels")
    assert everything == node.channels(did)
    [well_known] = node.tagged(did, "wellknown_rx", "tx_rx")
    for tags in ("wellKnown_Rx,Tx_Rx", "Tx_Rx,wellKnown_Rx", ["tx_rx", "WELLKNOWN_RX"]):
        assert await node.query(did, WRANGLER, "channels", tags=tags) == [well_known]
    assert await node.query(did, WRANGLER, "channels", tags="tx_rx") == []
    assert await node.query(did, WRANGLER, "channels", tags="system,self") == [
        c for c in everything if c["id"] == did
    ]


async def test_new_child_request_makes_an_initialized_child(node: Node) -> None:
    parent = await node.new_pico(WITNESS, name="Parent")
    done = await node.ok(parent, "wrangler:new_child_request", name="Kid", color="red")

    [created] = await node.seen(parent, "new_child_created")
    child_eci = created["eci"]
    assert created == {"name": "Kid", "color": "red", "eci": child_eci, "uiEci": None}
    assert done["directives"] == []
    child = node.engine.did_of_eci(child_eci)
    assert child is not None
    assert node.engine.hosts(child)

    # The child's wrangler installed pds and subscription, and reported back.
    assert await node.query(child, WRANGLER, "installedRIDs") == [WRANGLER, PDS, SUBSCRIPTION]
    [system_parent] = node.tagged(parent, "system", "parent")
    assert await node.query(child, WRANGLER, "myself") == {
        "name": "Kid",
        "id": child,
        "eci": child_eci,
    }
    assert await node.query(child, WRANGLER, "parent_eci") == system_parent["id"]
    [initialized] = await node.seen(parent, "child_initialized")
    assert initialized == {"name": "Kid", "color": "red", "eci": child_eci, "uiEci": None}
    # It came in on the family channel the child owns.
    events = await node.query(parent, "io.p2pico.witness", "seen_of", type="child_initialized")
    assert events[0]["eci"] == system_parent["id"]

    # The child has its own wellKnown_Rx and pds channel, and a profile named after it.
    assert len(node.tagged(child, "wellknown_rx", "tx_rx")) == 1
    assert len(node.tagged(child, "pds")) == 1
    assert (await node.query(child, PDS, "profile", key="name"))["profile"] == "Kid"

    # children() asks each child (through its family channel) for its name.
    assert await node.query(parent, WRANGLER, "children") == [
        {"eci": child_eci, "name": "Kid", "parent_eci": system_parent["id"]}
    ]
    # The child's name changes with wrangler:name_changed.
    await node.ok(child, "wrangler:name_changed", name="Kiddo")
    assert (await node.query(parent, WRANGLER, "children"))[0]["name"] == "Kiddo"

    # A name is required: no child, no event.
    await node.ok(parent, "wrangler:new_child_request")
    assert len(await node.seen(parent, "new_child_created")) == 1
    assert len(await node.query(parent, WRANGLER, "children")) == 1


async def test_children_are_deleted_by_the_parent_or_at_their_own_request(node: Node) -> None:
    parent = await node.new_pico(WITNESS, name="Parent")
    for name in ("one", "two"):
        await node.ok(parent, "wrangler:new_child_request", name=name)
    one, two = [c["eci"] for c in await node.query(parent, WRANGLER, "children")]
    did_one, did_two = node.engine.did_of_eci(one), node.engine.did_of_eci(two)
    assert did_one
    assert did_two

    await node.ok(parent, "wrangler:child_deletion_request", eci=one)
    assert await node.seen(parent, "child_deleted") == [{"eci": one}]
    assert not node.engine.hosts(did_one)
    assert [c["eci"] for c in await node.query(parent, WRANGLER, "children")] == [two]
    assert node.tagged(parent, "system", "parent") != []  # two's is still there

    # The child asks: wrangler:ready_for_deletion sends child_deletion_request up.
    await node.ok(did_two, "wrangler:ready_for_deletion")
    assert await node.seen(parent, "child_deleted") == [{"eci": one}, {"eci": two}]
    assert not node.engine.hosts(did_two)
    assert await node.query(parent, WRANGLER, "children") == []
    assert node.tagged(parent, "system", "parent") == []

    # An eci that is not a child fails the event with the engine's reason.
    failed = await node.event(parent, "wrangler:child_deletion_request", eci="nope")
    assert failed["error"].startswith(
        "delPico(nope) - not found in children ECIs (in io.picolabs.wrangler, rule deleteOneChild"
    )

    # A top-level pico has no parent to ask: nothing happens.
    await node.ok(parent, "wrangler:ready_for_deletion")
    assert node.engine.hosts(parent)


async def test_install_and_uninstall_from_a_url_a_sibling_and_source(node: Node) -> None:
    folder = Path(node.engine.home.path) / "rulesets"
    folder.mkdir(exist_ok=True)
    (folder / "io.p2pico.greeter.krl").write_text(GREETER)
    (folder / "io.p2pico.neighbour.krl").write_text(NEIGHBOUR)
    greeter_url = (folder / "io.p2pico.greeter.krl").as_uri()
    did = await node.new_pico(WITNESS)

    await node.ok(did, "wrangler:install_ruleset_request", url=greeter_url, config={"tone": "warm"})
    # (The first two are pds and subscription, at set-up.)
    assert (await node.seen(did, "ruleset_installed"))[2:] == [
        {"url": greeter_url, "config": {"tone": "warm"}, "rids": ["io.p2pico.greeter"]}
    ]
    assert await node.query(did, "io.p2pico.greeter", "hello", to="you") == "hello, you"
    assert await node.query(did, WRANGLER, "rulesetConfig", rid="io.p2pico.greeter") == {
        "tone": "warm"
    }
    assert await node.query(did, WRANGLER, "rulesetMeta", rid="io.p2pico.greeter") == {
        "name": "Greeter",
        "description": "says hello",
        "author": "tests",
    }

    # absoluteURL + rid: the rid's file beside absoluteURL.
    await node.ok(
        did, "wrangler:install_ruleset_request", absoluteURL=greeter_url, rid="io.p2pico.neighbour"
    )
    installed = await node.seen(did, "ruleset_installed")
    assert installed[-1] == {
        "rid": "io.p2pico.neighbour",
        "url": (folder / "io.p2pico.neighbour.krl").as_uri(),
        "rids": ["io.p2pico.neighbour"],
    }
    assert await node.query(did, "io.p2pico.neighbour", "where") == "next door"

    # The KRL source in place of a URL.
    source = "ruleset io.p2pico.inline { meta { shares n }  global { n = 7 } }"
    await node.ok(did, "wrangler:install_ruleset_request", url=source)
    assert (await node.seen(did, "ruleset_installed"))[-1]["rids"] == ["io.p2pico.inline"]
    assert await node.query(did, "io.p2pico.inline", "n") == 7

    rids = await node.query(did, WRANGLER, "installedRIDs")
    assert rids[-3:] == ["io.p2pico.greeter", "io.p2pico.neighbour", "io.p2pico.inline"]

    await node.ok(did, "wrangler:uninstall_ruleset_request", rid="io.p2pico.neighbour")
    assert await node.seen(did, "ruleset_uninstalled") == [{"rid": "io.p2pico.neighbour"}]
    assert "io.p2pico.neighbour" not in await node.query(did, WRANGLER, "installedRIDs")

    # Bad input fails the event with the reason, and installs nothing.
    outside = await node.event(did, "wrangler:install_ruleset_request", url="file:///etc/passwd")
    assert "file:///etc/passwd is outside this node's ruleset folders" in outside["error"]
    broken = await node.event(did, "wrangler:install_ruleset_request", url="ruleset x { rule }")
    assert "error" in broken
    assert len(await node.seen(did, "ruleset_installed")) == 5

    # A used module cannot go.
    in_use = await node.event(did, "wrangler:uninstall_ruleset_request", rid=WRANGLER)
    assert re.match(
        r"Cannot uninstall io\.picolabs\.wrangler because .*io\.picolabs\.pds.* depends on it",
        in_use["error"],
    ), in_use


async def test_flushing_reinstalls_every_ruleset_from_its_url(node: Node) -> None:
    folder = Path(node.engine.home.path) / "rulesets"
    folder.mkdir(exist_ok=True)
    path = folder / "io.p2pico.greeter.krl"
    path.write_text(GREETER)
    did = await node.new_pico(WITNESS)
    await node.ok(did, "wrangler:install_ruleset_request", url=path.as_uri())
    path.write_text(GREETER.replace('"hello, "', '"hi, "'))
    assert await node.query(did, "io.p2pico.greeter", "hello", to="x") == "hello, x"
    await node.ok(did, "wrangler:rulesets_need_flushing")
    assert await node.query(did, "io.p2pico.greeter", "hello", to="x") == "hi, x"
    assert await node.seen(did, "rulesets_flushed") == [{}]  # once, on the final iteration


async def test_channels_are_made_and_deleted_through_events(node: Node) -> None:
    did = await node.new_pico(WITNESS)
    policy = {"allow": [{"domain": "door", "name": "*"}], "deny": []}
    queries = {"allow": [{"rid": "*", "name": "*"}], "deny": []}
    await node.ok(
        did,
        "wrangler:new_channel_request",
        tags=["Front Door", "guests"],
        eventPolicy=policy,
        queryPolicy=queries,
    )
    [made] = await node.seen(did, "channel_created")
    channel = made["channel"]
    assert made == {
        "tags": ["Front Door", "guests"],
        "eventPolicy": policy,
        "queryPolicy": queries,
        "channel": channel,
    }
    assert channel["tags"] == ["front-door", "guests"]
    assert channel["eventPolicy"] == policy
    assert node.tagged(did, "guests", "front-door") == [channel]
    refused = await node.event(channel["id"], "wrangler:new_child_request", name="x")
    assert refused == {"error": "Not allowed by channel policy"}

    # Every one of tags, eventPolicy and queryPolicy is required.
    await node.ok(did, "wrangler:new_channel_request", tags=["half"], eventPolicy=policy)
    assert len(await node.seen(did, "channel_created")) == 1
    assert node.tagged(did, "half") == []

    await node.ok(did, "wrangler:channel_deletion_request", eci=channel["id"])
    assert await node.seen(did, "channel_deleted") == [{"eci": channel["id"]}]
    assert node.tagged(did, "guests", "front-door") == []
    gone = await node.event(channel["id"], "door:open")
    assert gone == {"error": f"ECI not found {channel['id']}"}
    family = await node.event(did, "wrangler:channel_deletion_request", eci=did)
    assert family["error"].startswith("Cannot delete family channels. (in io.picolabs.wrangler")


async def test_pico_query_and_sky_query(node: Node) -> None:
    parent = await node.new_pico(ASKER, name="Parent")
    await node.ok(parent, "wrangler:new_child_request", name="Kid")
    [kid] = await node.query(parent, WRANGLER, "children")
    kid_did = node.engine.did_of_eci(kid["eci"])
    assert kid_did is not None
    await node.ok(kid_did, "wrangler:install_ruleset_request", url=GREETER)
    other = await node.new_pico(GREETER)
    other_eci = node.tagged(other, "p2pico")[0]["id"]

    async def ask(fn: str, eci: str, rid: str, name: str, args: Any = None) -> Any:
        return await node.query(
            parent, "io.p2pico.asker", fn, eci=eci, rid=rid, name=name, args=args
        )

    # A family channel (only the parent may use it), another pico's channel, a DID.
    assert await ask("ask", kid["eci"], WRANGLER, "name") == "Kid"
    assert await ask("ask", kid["eci"], "io.p2pico.greeter", "hello", {"to": "kid"}) == "hello, kid"
    assert await ask("ask", other_eci, "io.p2pico.greeter", "hello", {"to": "B"}) == "hello, B"
    assert await ask("ask", other, "io.p2pico.greeter", "hello", {"to": "C"}) == "hello, C"
    assert await ask("sky", other_eci, "io.p2pico.greeter", "hello", {"to": "D"}) == "hello, D"

    # Over HTTP too, as the UI's testing tab calls them.
    assert (
        await node.query(
            parent,
            WRANGLER,
            "picoQuery",
            eci=other_eci,
            mod="io.p2pico.greeter",
            func="hello",
            params={"to": "E"},
            _host="http://elsewhere:3000",
        )
        == "hello, E"
    )

    # A pico's own channel: pico-engine's canned answers.
    own = node.tagged(parent, "p2pico")[0]["id"]
    canned = {
        "status_code": 400,
        "status_line": "HTTP/1.1 400 Pico should not query itself",
        "content": '{"error":"Pico should not query itself"}',
    }
    assert await ask("ask", own, WRANGLER, "name") == canned
    assert await ask("sky", own, WRANGLER, "name") == {
        "error": "sky query request was unsuccesful.",
        "httpStatus": {"code": 400, "message": "HTTP/1.1 400 Pico should not query itself"},
        "picoQueryError": "Pico should not query itself",
        "picoQueryErrorMsg": 0,
        "picoQueryReturnValue": {"error": "Pico should not query itself"},
    }
    # skyQuery turns an answer that carries an error, or null, into its error map.
    assert await ask("sky", other_eci, "io.p2pico.greeter", "broken") == {
        "error": "sky query request was unsuccesful.",
        "httpStatus": {"code": 200, "message": "HTTP/1.1 200 OK"},
        "picoQueryError": "it broke",
        "picoQueryErrorMsg": "really",
        "picoQueryReturnValue": {"error": "it broke", "error_str": "really"},
    }
    assert await ask("sky", other_eci, "io.p2pico.greeter", "nothing") == {
        "error": "sky query request was unsuccesful.",
        "httpStatus": {"code": 200, "message": "HTTP/1.1 200 OK"},
        "picoQueryError": 0,
        "picoQueryErrorMsg": 0,
        "picoQueryReturnValue": None,
    }
    assert await ask("ask", other_eci, "io.p2pico.greeter", "nothing") is None
    # A query that fails fails the asking query, with the reason.
    failed = await ask("ask", other_eci, "io.p2pico.nothing", "x")
    assert "Pico doesn't have io.p2pico.nothing installed." in failed["error"]


async def test_a_root_pico_is_named_by_engine_ui_setup(node: Node) -> None:
    did = await node.new_pico(builtin.source(WRANGLER), wrangler=False)
    assert await node.query(did, WRANGLER, "myself") == {"name": None, "id": None, "eci": None}
    await node.ok(did, "engine_ui:setup")
    assert await node.query(did, WRANGLER, "myself") == {"name": "Pico", "id": did, "eci": did}
    # Only once: a later setup keeps the name it has.
    await node.ok(did, "wrangler:name_changed", name="Root")
    await node.ok(did, "engine_ui:setup")
    assert await node.query(did, WRANGLER, "name") == "Root"


async def test_system_online_is_passed_to_every_child(node: Node) -> None:
    parent = await node.new_pico(name="Parent")
    await node.ok(parent, "wrangler:new_child_request", name="Kid")
    [kid] = await node.query(parent, WRANGLER, "children")
    kid_did = node.engine.did_of_eci(kid["eci"])
    assert kid_did is not None
    await node.ok(kid_did, "wrangler:install_ruleset_request", url=ONLINE)
    await node.ok(parent, "system:online", since="boot")
    assert await node.query(kid_did, "io.p2pico.online", "onlines") == [
        {"attrs": {"since": "boot"}, "eci": kid["eci"]}
    ]


ONLINE = """ruleset io.p2pico.online {
  meta { shares onlines }
  global { onlines = function() { ent:onlines.defaultsTo([]) } }
  rule online { select when system online
    fired { ent:onlines := onlines().append({"attrs": event:attrs, "eci": meta:eci}) } }
}"""


async def test_testing_lists_the_references_queries_and_events(node: Node) -> None:
    did = await node.new_pico()
    testing = await node.query(did, WRANGLER, "__testing")
    assert {q["name"] for q in testing["queries"]} == {
        "name",
        "myself",
        "channels",
        "installedRIDs",
        "skyQuery",
        "children",
    }
    assert {(e["domain"], e["name"], tuple(e["attrs"])) for e in testing["events"]} == {
        ("wrangler", "new_child_request", ("name", "backgroundColor")),
        ("wrangler", "child_deletion_request", ("eci",)),
        ("wrangler", "new_channel_request", ("tags", "eventPolicy", "queryPolicy")),
        ("wrangler", "channel_deletion_request", ("eci",)),
        ("wrangler", "install_ruleset_request", ("url",)),
        ("wrangler", "install_ruleset_request", ("absoluteURL", "rid")),
        ("wrangler", "uninstall_ruleset_request", ("rid",)),
    }


async def test_post_api_picos_checks_wrangler_and_name(node: Node) -> None:
    before = set(node.engine.picos)
    for body, reason in [
        ({"wrangler": "yes"}, "'wrangler' must be true or false"),
        ({"name": "x"}, "'name' must be a non-blank string, and needs 'wrangler': true"),
        ({"wrangler": True, "name": " "}, "'name' must be a non-blank string"),
        ({"wrangler": True, "name": 3}, "'name' must be a non-blank string"),
    ]:
        r = await node.client.post("/api/picos", json={"rulesets": [], **body})
        assert r.status_code == 400, body
        assert reason in r.json()["error"], (body, r.json())
    assert set(node.engine.picos) == before
    # The default name of a wrangler pico is pico-engine's root name.
    did = await node.new_pico()
    assert await node.query(did, WRANGLER, "name") == "Pico"
