"""Built-in module members that reach the engine (event:send, schedule:*, ctx:query),
`select where`, and the generated `__testing` map."""

from __future__ import annotations

import pytest
from krl_fakes import FakeContext, send_event

import krl


def _rule(actions: str, post: str = "") -> krl.Ruleset:
    return krl.compile_ruleset(f"ruleset r.s {{ rule go {{ select when t go {actions} {post} }} }}")


def test_event_send_by_eci_and_did(ctx: FakeContext) -> None:
    rs = _rule(
        """every {
            event:send({"eci": "e-1", "domain": "d", "type": "t", "attrs": {"a": [1]}});
            event:send({"did": "did:peer:x", "domain": "d", "name": "n"});
            event:send({"sub": {"Tx": "e-2", "Tx_host": null}, "domain": "d", "name": "s"},
                       host = null) setting(r)
        }""",
        "fired { ent:r := r.isnull() }",
    )
    send_event(rs, ctx, "t", "go")
    assert ctx.sent == [
        ("e-1", "d", "t", {"a": [1]}),
        ("did:peer:x", "d", "n", {}),
        ("e-2", "d", "s", {}),
    ]
    assert ctx.ents[("r.s", "r")] is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            '{"eci": "e", "domain": "d", "type": "t"}, "http://x"',
            "host is not supported; address the pico by DID",
        ),
        (
            '{"sub": {"Tx": "e", "Tx_host": "http://h"}, "domain": "d", "type": "t"}',
            "host is not supported",
        ),
        ('{"domain": "d", "type": "t"}', "event:send needs an eci or a did"),
        ('{"eci": "e", "type": "t"}', "event:send needs a domain"),
        ('{"eci": "e", "domain": "d"}', "event:send needs a name"),
        ('{"eci": "e", "domain": "d", "type": "t", "attrs": [1]}', "attrs must be a Map"),
        ('"e"', "event:send expects a Map of options"),
    ],
)
def test_event_send_errors(ctx: FakeContext, options: str, message: str) -> None:
    rs = _rule(f"event:send({options})")
    with pytest.raises(krl.KrlRuntimeError, match=message):
        send_event(rs, ctx, "t", "go")
    assert ctx.sent == []


def test_event_send_is_an_action() -> None:
    with pytest.raises(krl.KrlCompileError, match="'event:send' is an action"):
        krl.compile_ruleset("ruleset a { global { x = event:send({}) } }")


JOBS = [
    {
        "id": "j1",
        "rid": "r.s",
        "eci": "c-sched",
        "event": {"domain": "d", "type": "t", "attrs": {"x": 1}},
        "time": 1700000000.5,
    },
    {"id": "j2", "rid": "other", "event": {"domain": "d", "type": "u", "attrs": {}}, "time": 5},
    {
        "id": "j3",
        "rid": "r.s",
        "event": {"domain": "d", "type": "c", "attrs": {}},
        "timespec": "* * * * *",
    },
]


def test_schedule_list_get_remove_clear(ctx: FakeContext) -> None:
    ctx.jobs = [dict(j) for j in JOBS]
    rs = krl.compile_ruleset(
        """ruleset r.s { meta { shares list, get }
        global { list = function() { schedule:list() }; get = function(id) { schedule:get(id) } }
        rule rm { select when t rm every { schedule:remove(event:attrs{"id"}) setting(ok) }
            fired { ent:ok := ok } }
        rule clear { select when t clear schedule:clear() } }"""
    )
    budget = krl.Budget()
    assert rs.query("list", {}, ctx, budget) == [
        {
            "id": "j1",
            "type": "at",
            "time": 1700000000500,
            "event": {
                "eci": "c-sched",
                "domain": "d",
                "name": "t",
                "data": {"attrs": {"x": 1}},
                "time": 0,
            },
        },
        {
            "id": "j3",
            "type": "repeat",
            "timespec": "* * * * *",
            "event": {"eci": None, "domain": "d", "name": "c", "data": {"attrs": {}}, "time": 0},
        },
    ]
    assert rs.query("get", {"id": "j3"}, ctx, budget)["id"] == "j3"  # type: ignore[index]
    assert rs.query("get", {"id": "j2"}, ctx, budget) is None  # another ruleset's job

    send_event(rs, ctx, "t", "rm", {"id": "j2"})  # not ours: left alone
    assert ctx.ents[("r.s", "ok")] is False
    assert ctx.removed == []
    send_event(rs, ctx, "t", "rm", {"id": "j1"})
    assert ctx.ents[("r.s", "ok")] is True
    assert [j["id"] for j in ctx.jobs] == ["j2", "j3"]

    send_event(rs, ctx, "t", "clear")
    assert [j["id"] for j in ctx.jobs] == ["j2"]


def test_ctx_query(ctx: FakeContext) -> None:
    ctx.query_result = {"n": 3}
    rs = krl.compile_ruleset(
        """ruleset r.s { meta { shares q, bad }
        global {
            q = function() { ctx:query("eci-9", "a.b", "count", {"x": [1]}){"n"} + 1 }
            bad = function() { ctx:query("eci-9", "a.b", "count", [1]) }
        } }"""
    )
    assert rs.query("q", {}, ctx, krl.Budget()) == 4
    assert ctx.queries == [("eci-9", "a.b", "count", {"x": [1]})]
    with pytest.raises(krl.KrlRuntimeError, match="ctx:query args must be a Map"):
        rs.query("bad", {}, ctx, krl.Budget())


def test_select_where(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset r.s {
        rule all { select where true
            send_directive("all", {"d": event:domain, "t": event:type}) }
        rule set_watcher { select when watcher set always { ent:watcher := event:attrs{"d"} } }
        rule watched { select where event:domain == ent:watcher send_directive("watched") }
        rule plain { select when foo bar send_directive("plain") } }"""
    )
    assert send_event(rs, ctx, "foo", "bar") == [("all", {"d": "foo", "t": "bar"}), ("plain", {})]
    assert send_event(rs, ctx, "watcher", "set", {"d": "baz"}) == [
        ("all", {"d": "watcher", "t": "set"})
    ]
    assert send_event(rs, ctx, "baz", "anything") == [
        ("all", {"d": "baz", "t": "anything"}),
        ("watched", {}),
    ]


def test_testing_map_generated_and_always_queryable(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset r.s { meta { shares hello, said }
        global { hello = function(obj, extra = 1) { obj }; said = 3 }
        rule r1 { select when echo hello name re#(.*)# or echo bye
            pre { a = event:attr("age"); b = event:attrs{"city"} } }
        rule r2 { select when say hello always { ent:x := event:attrs{"name"} } }
        rule r3 { select where true } }"""
    )
    assert rs.query("__testing", {}, ctx, krl.Budget()) == {
        "queries": [{"name": "hello", "args": ["obj", "extra"]}, {"name": "said", "args": []}],
        "events": [
            {"domain": "echo", "name": "hello", "attrs": ["name", "age", "city"]},
            {"domain": "echo", "name": "bye", "attrs": ["name", "age", "city"]},
            {"domain": "say", "name": "hello", "attrs": ["name"]},
        ],
    }


def test_testing_map_redefined_reading_the_generated_one(ctx: FakeContext) -> None:
    # The reference's testing.krl.
    rs = krl.compile_ruleset(
        """ruleset io.picolabs.testing {
        global {
            __testing = { "queries": [{"name": "joke"}], "event": __testing["events"] }
        }
        rule say_hello { select when say hello always { ent:said := event:attrs{"name"} } } }"""
    )
    assert rs.query("__testing", {}, ctx, krl.Budget()) == {
        "queries": [{"name": "joke"}],
        "event": [{"domain": "say", "name": "hello", "attrs": ["name"]}],
    }
