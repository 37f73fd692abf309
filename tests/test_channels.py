"""Channels and policies (catalog §3.1, §3.9) and the ctx: management functions (§2.7).

Policies and family channels are checked on every event and query that names an
ECI; a pico addressed by its DID is the owner path.  ctx:newPico children live on
the same engine, linked to their parent by family channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import krl
from p2pico import channels as chan
from p2pico.engine import Engine, PicoError, Work
from p2pico.home import Home
from p2pico.testing import FakeNet, new_pico, start_mesh
from protocols.messages import Target

MANAGER = """ruleset manager {
  meta { shares channels, children, parent, rulesets, child_hellos, from_child, memo }
  global {
    channels = function() { ctx:channels }
    children = function() { ctx:children }
    parent = function() { ctx:parent }
    rulesets = function() { ctx:rulesets }
    child_hellos = function(eci) { ctx:query(eci, "child", "hellos") }
    from_child = function() { ent:from_child.defaultsTo(0) }
    memo = function() { ent:memo }
  }
  rule new_channel { select when chan new
    ctx:newChannel(event:attrs{"tags"}, event:attrs{"eventPolicy"}, event:attrs{"queryPolicy"})
      setting(ch)
    fired { ent:memo := ch }
  }
  rule new_channel_then_fail { select when chan new_then_fail
    ctx:newChannel(["doomed"], null, null)
    fired { ent:memo := "x".as("Nope") }
  }
  rule put_channel { select when chan put
    ctx:putChannel(event:attrs{"eci"}, event:attrs{"tags"}, event:attrs{"eventPolicy"}, null)
  }
  rule del_channel { select when chan del  ctx:delChannel(event:attrs{"eci"}) }
  rule del_then_fail { select when chan del_then_fail
    ctx:delChannel(event:attrs{"eci"})
    fired { ent:memo := "x".as("Nope") }
  }
  rule new_child { select when family new
    ctx:newPico(event:attrs{"rulesets"}) setting(eci)
    fired { ent:memo := eci }
  }
  rule new_child_then_fail { select when family new_then_fail
    ctx:newPico([]) setting(eci)
    fired { ent:memo := "x".as("Nope") }
  }
  rule del_child { select when family del  ctx:delPico(event:attrs{"eci"}) }
  rule hello_child { select when family hello
    event:send({"eci": event:attrs{"eci"}, "domain": "child", "type": "hello"})
  }
  rule from_child { select when chan from_child
    fired { ent:from_child := from_child() + 1 }
  }
  rule install { select when rs install
    ctx:install(event:attrs{"url"}, event:attrs{"config"}) setting(rid)
    fired { ent:memo := rid }
  }
  rule uninstall { select when rs uninstall  ctx:uninstall(event:attrs{"rid"}) }
  rule allowed { select when chan ok  send_directive("ok") }
}"""

CHILD = """ruleset child {
  meta { shares hellos, parent, channels }
  global {
    hellos = function() { ent:hellos.defaultsTo(0) }
    parent = function() { ctx:parent }
    channels = function() { ctx:channels }
  }
  rule hello { select when child hello  fired { ent:hellos := hellos() + 1 } }
  rule tell_parent { select when child tell
    ctx:event(ctx:parent, "chan", "from_child", {"n": 1})
  }
}"""

GREETER = """ruleset greeter {
  meta { shares greet  provides greet }
  global { greet = function() { "hi " + ent:n.defaultsTo(0) } }
  rule bump { select when greeter bump  fired { ent:n := ent:n.defaultsTo(0) + 1 } }
}"""

USES_GREETER = """ruleset uses_greeter {
  meta { use module greeter  shares hello }
  global { hello = function() { greeter:greet() } }
}"""


# -- pure: tags and policies ---------------------------------------------------------------


def test_tags_are_cleaned_as_pico_framework_does() -> None:
    assert chan.clean_tags(["wellKnown_Rx", "Tx_Rx"]) == ["wellknown_rx", "tx_rx"]
    assert chan.clean_tags(["  Hello,   World!  "]) == ["hello-world"]
    assert chan.clean_tags(["--a--b--", "did:peer:2.Ez"]) == ["a-b", "did-peer-2-ez"]
    assert chan.clean_tags([]) == []
    for bad, message in [
        ("a", "Channel `tags` must be an array of non-empty strings."),
        ([1], "Channel `tags` must be an array of non-empty strings."),
        (["  "], "Channel tag cannot be a blank string."),
        (["!!"], "Channel tag cannot be a blank string."),
        (["System"], 'Cannot tag channel as "system".'),
    ]:
        with pytest.raises(chan.ChannelError) as caught:
            chan.clean_tags(bad)
        assert str(caught.value) == message


def test_policies_are_validated_with_the_references_messages() -> None:
    ok = {"allow": [{"domain": " a ", "name": "*"}], "deny": []}
    assert chan.clean_event_policy(ok) == {"allow": [{"domain": "a", "name": "*"}], "deny": []}
    assert chan.clean_query_policy({"allow": [], "deny": [{"rid": "r", "name": "f"}]}) == {
        "allow": [],
        "deny": [{"rid": "r", "name": "f"}],
    }
    event_shape = "EventPolicy expects {allow: EventPolicyRule[], deny: EventPolicyRule[]}"
    event_rule = "EventPolicyRule expects {domain: string, name: string}"
    query_shape = "QueryPolicy expects {allow: QueryPolicyRule[], deny: QueryPolicyRule[]}"
    query_rule = "QueryPolicyRule expects {rid: string, name: string}"
    for bad, message in [
        ({"allow": []}, event_shape),
        ({"allow": [], "deny": [], "x": []}, event_shape),
        ({"allow": {}, "deny": []}, event_shape),
        ("all", event_shape),
        ({"allow": [{"domain": "a"}], "deny": []}, event_rule),
        ({"allow": [{"domain": " ", "name": "b"}], "deny": []}, event_rule),
        ({"allow": [{"domain": "a", "name": 1}], "deny": []}, event_rule),
    ]:
        with pytest.raises(chan.ChannelError) as caught:
            chan.clean_event_policy(bad)
        assert str(caught.value) == message
    with pytest.raises(chan.ChannelError) as caught:
        chan.clean_query_policy({"deny": []})
    assert str(caught.value) == query_shape
    with pytest.raises(chan.ChannelError) as caught:
        chan.clean_query_policy({"allow": [{"domain": "d", "name": "n"}], "deny": []})
    assert str(caught.value) == query_rule


def test_deny_is_checked_before_allow_and_star_matches_anything() -> None:
    record = chan.new_record(
        ["t"],
        {"allow": [{"domain": "a", "name": "*"}], "deny": [{"domain": "*", "name": "bad"}]},
        {"allow": [{"rid": "r", "name": "f"}], "deny": []},
    )
    chan.check_event(record, "a", "anything", None)
    with pytest.raises(chan.ChannelError, match=r"^Denied by channel policy$"):
        chan.check_event(record, "a", "bad", None)  # allowed too, but deny wins
    with pytest.raises(chan.ChannelError, match=r"^Not allowed by channel policy$"):
        chan.check_event(record, "b", "x", None)
    chan.check_query(record, "r", "f", None)
    with pytest.raises(chan.ChannelError, match=r"^Not allowed by channel policy$"):
        chan.check_query(record, "r", "g", None)
    # A record without policies (made before policies existed) allows everything.
    chan.check_event({"tags": ["p2pico"], "family": False}, "x", "y", None)
    family = chan.family_record(["system", "child"], "did:key:parent")
    chan.check_event(family, "x", "y", "did:key:parent")
    for sender in (None, "did:key:other"):
        with pytest.raises(chan.ChannelError, match="only the owner can use it"):
            chan.check_query(family, "r", "f", sender)


# -- through the engine and HTTP ---------------------------------------------------------------


async def event(client: httpx.AsyncClient, target: str, kind: str, **attrs: Any) -> Any:
    domain, type_ = kind.split(":")
    r = await client.post(f"/sky/event/{target}/none/{domain}/{type_}", json=attrs)
    assert r.status_code == 200, r.text
    return r.json()


async def query(client: httpx.AsyncClient, target: str, rid: str, name: str, **args: Any) -> Any:
    r = await client.post(f"/sky/cloud/{target}/{rid}/{name}", json=args)
    assert r.status_code == 200, r.text
    return r.json() if r.content else None


async def test_policies_are_enforced_over_http_with_the_exact_errors(api: Any) -> None:
    client, _ = api
    made = await new_pico(client, MANAGER)
    policy = {
        "allow": [{"domain": "chan", "name": "*"}],
        "deny": [{"domain": "chan", "name": "new"}],
    }
    qpolicy = {"allow": [{"rid": "manager", "name": "memo"}], "deny": []}
    await event(
        client,
        made["did"],
        "chan:new",
        tags=["Guest Door"],
        eventPolicy=policy,
        queryPolicy=qpolicy,
    )
    guest = await query(client, made["eci"], "manager", "memo")
    assert guest["tags"] == ["guest-door"]
    assert guest["eventPolicy"] == policy
    assert guest["familyChannelPicoID"] is None
    eci = guest["id"]

    assert (await event(client, eci, "chan:ok"))["directives"][0]["name"] == "ok"
    assert await event(client, eci, "chan:new") == {"error": "Denied by channel policy"}
    assert await event(client, eci, "other:thing") == {"error": "Not allowed by channel policy"}
    assert (await query(client, eci, "manager", "memo"))["id"] == eci
    assert await query(client, eci, "manager", "channels") == {
        "error": "Not allowed by channel policy"
    }
    # The first channel and the DID (the owner path) still allow everything.
    assert "error" not in await event(client, made["eci"], "other:thing")
    assert isinstance(await query(client, made["did"], "manager", "channels"), list)
    # A bad policy fails the rule with the reference's TypeError text, and changes nothing.
    bad = await event(client, made["did"], "chan:new", tags=["x"], eventPolicy={"allow": []})
    assert "EventPolicy expects {allow: EventPolicyRule[], deny: EventPolicyRule[]}" in bad["error"]
    bad = await event(client, made["did"], "chan:new", tags=["system"])
    assert 'Cannot tag channel as "system".' in bad["error"]
    assert len(await query(client, made["did"], "manager", "channels")) == 3  # self, p2pico, guest
    assert await event(client, "cnope", "chan:ok") == {"error": "ECI not found cnope"}


async def test_put_and_delete_channels_and_the_operator_listing(api: Any) -> None:
    client, mesh = api
    made = await new_pico(client, MANAGER)
    await event(client, made["did"], "chan:new", tags=["a"])
    eci = (await query(client, made["did"], "manager", "memo"))["id"]
    only_ok = {"allow": [{"domain": "chan", "name": "ok"}], "deny": []}
    await event(client, made["did"], "chan:put", eci=eci, tags=["B", "c"], eventPolicy=only_ok)
    r = await client.get(f"/api/picos/{made['did']}/channels")
    listed = {c["id"]: c for c in r.json()}
    assert [c["id"] for c in r.json()] == sorted(listed)
    assert listed[eci]["tags"] == ["b", "c"]
    assert listed[eci]["eventPolicy"] == only_ok
    assert listed[eci]["queryPolicy"] == chan.ALLOW_ALL_QUERIES  # not given: unchanged
    assert listed[made["did"]]["tags"] == ["system", "self"]
    assert listed[made["did"]]["familyChannelPicoID"] == made["did"]
    assert listed[made["eci"]]["tags"] == ["p2pico"]
    assert await event(client, eci, "chan:new") == {"error": "Not allowed by channel policy"}

    # Self and family channels cannot be edited or deleted.
    r = await event(client, made["did"], "chan:put", eci=made["did"], tags=["x"])
    assert "Cannot edit the self channel." in r["error"]
    r = await event(client, made["did"], "chan:del", eci=made["did"])
    assert "Cannot delete family channels." in r["error"]
    assert (
        "ECI not found cnope"
        in (await event(client, made["did"], "chan:del", eci="cnope"))["error"]
    )

    # A rule error after delChannel keeps the channel.
    seq = mesh.engine.picos[made["did"]].seq
    r = await event(client, made["did"], "chan:del_then_fail", eci=eci)
    assert "Nope" in r["error"]
    assert mesh.engine.picos[made["did"]].seq == seq
    assert (await event(client, eci, "chan:ok"))["directives"]

    await event(client, made["did"], "chan:del", eci=eci)
    assert eci not in {
        c["id"] for c in (await client.get(f"/api/picos/{made['did']}/channels")).json()
    }
    assert await event(client, eci, "chan:ok") == {"error": f"ECI not found {eci}"}
    assert mesh.engine.did_of_eci(eci) is None
    r = await client.get("/api/picos/did:key:nope/channels")
    assert r.status_code == 404


async def test_a_rule_error_rolls_back_a_new_channel_and_a_new_child(api: Any) -> None:
    client, mesh = api
    made = await new_pico(client, MANAGER)
    pico = mesh.engine.picos[made["did"]]
    before = (dict(pico.channels), pico.seq, pico.head, len(mesh.engine.picos))
    assert "Nope" in (await event(client, made["did"], "chan:new_then_fail"))["error"]
    assert "Nope" in (await event(client, made["did"], "family:new_then_fail"))["error"]
    assert (dict(pico.channels), pico.seq, pico.head, len(mesh.engine.picos)) == before
    assert await query(client, made["did"], "manager", "children") == []


async def test_family_channels_refuse_http_and_serve_their_owner(api: Any) -> None:
    client, mesh = api
    engine = mesh.engine
    made = await new_pico(client, MANAGER)
    await event(client, made["did"], "family:new", rulesets=[CHILD])
    child_eci = await query(client, made["did"], "manager", "memo")
    child_did = engine.did_of_eci(child_eci)
    assert child_did is not None
    assert child_did != made["did"]
    assert child_did.startswith("did:key:z6Mk")
    assert engine.hosts(child_did)
    await trio.testing.wait_all_tasks_blocked()
    assert mesh.records[child_did].host == mesh.peer_id  # its location record is published

    refused = {"error": "This is a family channel and only the owner can use it."}
    assert await event(client, child_eci, "child:hello") == refused
    assert await query(client, child_eci, "child", "hellos") == refused

    # The parent reaches the child through its family channel: event:send and ctx:query.
    await event(client, made["did"], "family:hello", eci=child_eci)
    await trio.testing.wait_all_tasks_blocked()
    assert await query(client, child_did, "child", "hellos") == 1  # by DID: the owner path
    assert await query(client, made["did"], "manager", "child_hellos", eci=child_eci) == 1

    # The child reaches the parent through ctx:parent (a channel on the parent).
    parent_eci = await query(client, child_did, "child", "parent")
    assert engine.did_of_eci(parent_eci) == made["did"]
    assert await event(client, parent_eci, "chan:from_child") == refused
    await event(client, child_did, "child:tell")
    await trio.testing.wait_all_tasks_blocked()
    assert await query(client, made["did"], "manager", "from_child") == 1

    # Listings: children, parent, and both sides' family channels.
    assert await query(client, made["did"], "manager", "children") == [child_eci]
    assert await query(client, made["did"], "manager", "parent") is None
    parent_side = {c["id"]: c for c in await query(client, made["did"], "manager", "channels")}
    assert parent_side[parent_eci]["tags"] == ["system", "parent"]
    assert parent_side[parent_eci]["familyChannelPicoID"] == child_did
    child_side = await query(client, child_did, "child", "channels")
    assert {c["id"]: (c["tags"], c["familyChannelPicoID"]) for c in child_side} == {
        child_did: (["system", "self"], child_did),
        child_eci: (["system", "child"], made["did"]),
    }
    # The family eci is no channel of another pico: only its owner may use it.
    other = await new_pico(client, MANAGER)
    await event(client, other["did"], "family:hello", eci=child_eci)
    await trio.testing.wait_all_tasks_blocked()
    assert await query(client, child_did, "child", "hellos") == 1
    r = await query(client, other["did"], "manager", "child_hellos", eci=child_eci)
    assert "only the owner can use it" in r["error"]


async def test_del_pico_deletes_the_child_and_its_descendants(api: Any) -> None:
    client, mesh = api
    engine = mesh.engine
    made = await new_pico(client, MANAGER)
    await event(client, made["did"], "family:new", rulesets=[MANAGER])
    child_eci = await query(client, made["did"], "manager", "memo")
    child_did = engine.did_of_eci(child_eci)
    assert child_did is not None
    await event(client, child_did, "family:new", rulesets=[CHILD])
    grandchild_eci = await query(client, child_did, "manager", "memo")
    grandchild_did = engine.did_of_eci(grandchild_eci)
    assert grandchild_did is not None
    assert engine.hosts(grandchild_did)

    r = await event(client, made["did"], "family:del", eci=grandchild_eci)
    assert f"delPico({grandchild_eci}) - not found in children ECIs" in r["error"]

    await event(client, made["did"], "family:del", eci=child_eci)
    assert not engine.hosts(child_did)
    assert not engine.hosts(grandchild_did)
    assert await query(client, made["did"], "manager", "children") == []
    channels = await query(client, made["did"], "manager", "channels")
    assert [c["tags"] for c in channels if c["id"] != made["did"]] == [["p2pico"]]
    assert {h.did for h in engine.home.hosted()} == {made["did"]}
    assert engine.did_of_eci(child_eci) is None
    with pytest.raises(PicoError):
        await mesh.event(Target(child_did), "child", "hello", {})


async def test_install_and_uninstall(api: Any, tmp_path: Path) -> None:
    client, _mesh = api
    made = await new_pico(client, MANAGER)
    folder = tmp_path / "a" / "rulesets"  # <home>/rulesets
    folder.mkdir()
    (folder / "greeter.krl").write_text(GREETER)
    url = (folder / "greeter.krl").as_uri()

    r = await event(client, made["did"], "rs:install", url=url, config={"k": 1})
    assert "error" not in r, r
    assert await query(client, made["did"], "manager", "memo") == "greeter"
    await event(client, made["did"], "greeter:bump")  # the new ruleset hears events
    assert await query(client, made["did"], "greeter", "greet") == "hi 1"
    listed = {rs["rid"]: rs for rs in await query(client, made["did"], "manager", "rulesets")}
    assert listed["greeter"]["url"] == url
    assert listed["greeter"]["config"] == {"k": 1}
    assert listed["greeter"]["meta"]["krl"] == GREETER
    assert listed["manager"]["url"] is None

    # From source; a ruleset that uses greeter keeps it installed.
    await event(client, made["did"], "rs:install", url=USES_GREETER)
    assert await query(client, made["did"], "uses_greeter", "hello") == "hi 1"
    r = await event(client, made["did"], "rs:uninstall", rid="greeter")
    assert "Cannot uninstall greeter because uses_greeter depends on it" in r["error"]
    await event(client, made["did"], "rs:uninstall", rid="uses_greeter")
    await event(client, made["did"], "rs:uninstall", rid="greeter")
    r = await query(client, made["did"], "greeter", "greet")
    assert r == {"error": "Pico doesn't have greeter installed."}
    # Installed again: its entity variables went with the uninstall.
    await event(client, made["did"], "rs:install", url=url)
    assert await query(client, made["did"], "greeter", "greet") == "hi 0"

    outside = tmp_path / "outside.krl"
    outside.write_text(GREETER)
    r = await event(client, made["did"], "rs:install", url=outside.as_uri())
    assert "is outside this node's ruleset folders" in r["error"]
    r = await event(client, made["did"], "rs:install", url="https://example.com/x.krl")
    assert "installing from https URLs is not supported yet" in r["error"]
    r = await event(client, made["did"], "rs:install", url="ruleset broken {")
    assert "error" in r


COUNTERISH = "ruleset counterish { rule r { select when c c } }"


async def test_a_ruleset_installs_only_with_the_modules_it_uses(api: Any) -> None:
    """pico-engine's "Dependant module not loaded": a pico finds its modules among its own
    rulesets, so a ruleset whose module is missing is refused at install, on every path,
    and nothing of that install is kept."""
    client, mesh = api
    needs = "Dependant module not loaded: greeter (uses_greeter uses it"
    r = await client.post("/api/picos", json={"rulesets": [MANAGER, USES_GREETER]})
    assert needs in r.json()["error"], r.text
    made = await new_pico(client, MANAGER, USES_GREETER, GREETER)  # together: any order
    assert await query(client, made["did"], "uses_greeter", "hello") == "hi 0"

    made = await new_pico(client, MANAGER)
    r = await event(client, made["did"], "rs:install", url=USES_GREETER)
    assert needs in r["error"], r
    listed = await query(client, made["did"], "manager", "rulesets")
    assert [rs["rid"] for rs in listed] == ["manager"]
    await event(client, made["did"], "rs:install", url=GREETER)
    r = await event(client, made["did"], "rs:install", url=USES_GREETER)
    assert "error" not in r, r
    assert await query(client, made["did"], "uses_greeter", "hello") == "hi 0"
    # Only what is installed is checked: with greeter gone from under it (as a pico
    # installed before this check could be), other installs still go through.
    pico = mesh.engine.picos[made["did"]]
    pico.rulesets = [rs for rs in pico.rulesets if rs.rid != "greeter"]
    r = await event(client, made["did"], "rs:install", url=COUNTERISH)
    assert "error" not in r, r

    r = await event(client, made["did"], "family:new", rulesets=[USES_GREETER])
    assert "ctx:newPico: " + needs in r["error"], r
    assert await query(client, made["did"], "manager", "children") == []
    r = await event(client, made["did"], "family:new", rulesets=[USES_GREETER, GREETER])
    assert "error" not in r, r
    assert len(await query(client, made["did"], "manager", "children")) == 1


async def test_channels_children_and_rulesets_survive_a_restart(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        mesh = await start_mesh(nursery, tmp_path / "a", world)
        parent = await mesh.create_pico([MANAGER])
        await mesh.event(Target(parent.did), "chan", "new", {"tags": ["kept"]})
        await mesh.event(Target(parent.did), "family", "new", {"rulesets": [CHILD]})
        child_eci = await mesh.query(Target(parent.did), "manager", "memo", {})
        await mesh.event(Target(parent.did), "rs", "install", {"url": GREETER})
        before = await mesh.query(Target(parent.did), "manager", "channels", {})
        child_did = mesh.engine.did_of_eci(str(child_eci))
        assert child_did is not None
        mesh.engine.home.close()
        nursery.cancel_scope.cancel()

    engine = Engine(Home(tmp_path / "a"))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        assert engine.hosts(parent.did)
        assert engine.hosts(child_did)

        async def ask(did: str, rid: str, name: str, eci: str = "") -> object:
            return await engine.submit(did, Work("query", eci=eci, rid=rid, name=name))

        assert await ask(parent.did, "manager", "channels") == before
        assert await ask(parent.did, "manager", "children") == [child_eci]
        assert engine.picos[child_did].parent == {
            "eci": await ask(child_did, "child", "parent"),
            "did": parent.did,
        }
        assert await ask(parent.did, "greeter", "greet") == "hi 0"
        assert engine.picos[parent.did].eci == parent.eci  # the p2pico channel, still first
        # The family channel still serves its owner, and only its owner.
        hello = krl.Event("child", "hello", {})
        await engine.submit(
            child_did, Work("event", event=hello, eci=str(child_eci), sender=parent.did)
        )
        assert await ask(child_did, "child", "hellos") == 1
        with pytest.raises(PicoError, match="only the owner can use it"):
            await ask(child_did, "child", "hellos", eci=str(child_eci))
        nursery.cancel_scope.cancel()


async def test_picos_without_family_keep_their_state_shape(tmp_path: Path) -> None:
    """No parent, children or ctx:install'ed rulesets: nothing new in meta (CIDs unchanged)."""
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([CHILD])
        state = engine.state_of(pico, pico.ent, pico.rule_states)
        assert dict(state.meta) == {}
        assert list(state.channels) == [pico.eci]
        assert state.channels[pico.eci] == {"tags": ["p2pico"], "family": False}
        nursery.cancel_scope.cancel()
