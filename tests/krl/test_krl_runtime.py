"""Rulesets running against a fake Context: rules, postludes, raise chains, queries, budgets."""

from __future__ import annotations

import pathlib

import pytest
from krl_fakes import FakeContext, evaluate, send_event

import krl

ROOT = pathlib.Path(__file__).resolve().parents[2]

COUNTER = """
ruleset io.example.counter {
  meta { shares count }
  global { count = function(){ ent:count.defaultsTo(0) } }
  rule inc {
    select when counter inc
    pre { n = ent:count.defaultsTo(0) + 1 }
    send_directive("count", {"count": n})
    fired { ent:count := n }
  }
}
"""


def test_counter(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(COUNTER)
    assert rs.rid == "io.example.counter"
    assert rs.shares == frozenset({"count"})
    assert rs.query("count", {}, ctx, krl.Budget()) == 0
    assert send_event(rs, ctx, "counter", "inc") == [("count", {"count": 1})]
    assert send_event(rs, ctx, "counter", "inc") == [("count", {"count": 2})]
    assert ctx.ents == {("io.example.counter", "count"): 2}
    assert rs.query("count", {}, ctx, krl.Budget()) == 2
    assert send_event(rs, ctx, "counter", "dec") == []


def test_counter_krl_file(ctx: FakeContext) -> None:
    source = (ROOT / "rulesets" / "counter.krl").read_text()
    rs = krl.compile_ruleset(source, filename="counter.krl")
    assert rs.rid == "io.p2pico.counter"
    assert rs.meta["name"] == "Counter"
    assert send_event(rs, ctx, "counter", "inc") == [("count", {"count": 1})]
    assert send_event(rs, ctx, "counter", "inc", {"by": "5"}) == [("count", {"count": 6})]
    assert send_event(rs, ctx, "counter", "inc", {"by": 2.5}) == [("count", {"count": 8.5})]
    assert rs.query("count", {}, ctx, krl.Budget()) == 8.5
    send_event(rs, ctx, "counter", "reset")
    assert rs.query("count", {}, ctx, krl.Budget()) == 0


def test_select_returns_rules_in_source_order(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        "ruleset a { rule r1 { select when a b } rule r2 { select when a c or a b }"
        " rule r3 { select when x y } }"
    )
    names = [s.rule.name for s in rs.select(krl.Event("a", "b", {}), ctx, krl.Budget())]
    assert names == ["r1", "r2"]
    result = rs.run(rs.select(krl.Event("a", "b", {}), ctx, krl.Budget())[0],
                    krl.Event("a", "b", {}), ctx, krl.Budget())  # fmt: skip
    assert result == krl.RuleResult(fired=True, last=False)


def test_setting_captures_from_attribute_regexes(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { rule r {
          select when echo hello name re#^(\\w+)\\s(\\w+)$# age re#(\\d+)# setting(first, last, age)
          send_directive("hi", {"first": first, "last": last, "age": age})
        } }"""
    )
    event = krl.Event("echo", "hello", {"name": "Ada Lovelace", "age": 36})
    (sel,) = rs.select(event, ctx, krl.Budget())
    assert sel.bindings == {"first": "Ada", "last": "Lovelace", "age": "36"}
    rs.run(sel, event, ctx, krl.Budget())
    assert ctx.directives == [("hi", {"first": "Ada", "last": "Lovelace", "age": "36"})]
    assert rs.select(krl.Event("echo", "hello", {"name": "Ada"}), ctx, krl.Budget()) == []


def test_missing_attribute_matches_as_empty_string(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        'ruleset a { rule r { select when a b x re#(.*)# setting(x) send_directive("d", {"x": x}) } }'
    )
    assert send_event(rs, ctx, "a", "b") == [("d", {"x": ""})]


def test_where_clause_sees_settings_globals_and_entities(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { global { limit = 3 }
          rule r { select when a b n re#(\\d+)# setting(n) where n.as("Number") < limit
                                                                && ent:open.defaultsTo(true)
            send_directive("ok") } }"""
    )
    assert send_event(rs, ctx, "a", "b", {"n": "2"}) == [("ok", {})]
    assert send_event(rs, ctx, "a", "b", {"n": "4"}) == []
    ctx.ents[("a", "open")] = False
    assert send_event(rs, ctx, "a", "b", {"n": "2"}) == []


def test_or_binds_null_for_the_other_branch(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { rule r {
          select when a b x re#(.+)# setting(x) or a c y re#(.+)# setting(y)
          send_directive("d", {"x": x, "y": y}) } }"""
    )
    assert send_event(rs, ctx, "a", "b", {"x": "1"}) == [("d", {"x": "1", "y": None})]
    assert send_event(rs, ctx, "a", "c", {"y": "2"}) == [("d", {"x": None, "y": "2"})]


def test_if_then_fired_else_always(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { rule r { select when a b
          pre { ok = event:attr("ok") }
          if ok then send_directive("yes")
          fired { ent:log := "fired" } else { ent:log := "not" } finally { ent:n := 1 }
        } }"""
    )
    event = krl.Event("a", "b", {"ok": 0})
    (sel,) = rs.select(event, ctx, krl.Budget())
    assert rs.run(sel, event, ctx, krl.Budget()) == krl.RuleResult(False, False)
    assert ctx.ents == {("a", "log"): "not", ("a", "n"): 1}
    assert ctx.directives == []
    send_event(rs, ctx, "a", "b", {"ok": "0"})  # "0" is truthy
    assert ctx.ents[("a", "log")] == "fired"
    assert ctx.directives == [("yes", {})]


def test_rule_without_action_fires_and_noop(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a {
          rule r1 { select when a b fired { ent:b := 1 } }
          rule r2 { select when a b noop() fired { ent:c := 1 } }
        }"""
    )
    send_event(rs, ctx, "a", "b")
    assert ctx.ents == {("a", "b"): 1, ("a", "c"): 1}


def test_raise_chain_is_breadth_first(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a {
          rule start { select when t start
            send_directive("start")
            fired { raise t event "step" attributes {"n": 1}; raise t event "other" } }
          rule step { select when t step
            pre { n = event:attrs{"n"} }
            send_directive("step", {"n": n})
            fired { raise t event "step" attributes {"n": n + 1} if n < 3 } }
          rule other { select when t other send_directive("other") }
        }"""
    )
    names = [(d, o.get("n")) for d, o in send_event(rs, ctx, "t", "start")]
    assert names == [("start", None), ("step", 1), ("other", None), ("step", 2), ("step", 3)]
    assert ctx.raised[0] == ("t", "step", {"n": 1}, None)


def test_raise_forms(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { rule r { select when a b
          pre { kind = "x" }
          fired {
            raise a event kind;
            raise event " d : t " attributes {"k": [1]} for "io.other";
            raise a event "z" for meta:rid
          } } }"""
    )
    send_event(rs, ctx, "a", "b", max_events=1)
    assert ctx.raised == [
        ("a", "x", {}, None),
        ("d", "t", {"k": [1]}, "io.other"),
        ("a", "z", {}, "a"),
    ]


def test_last_stops_later_rules(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a {
          rule r1 { select when a b fired { ent:x := 1; last if event:attr("stop"); ent:y := 1 } }
          rule r2 { select when a b fired { ent:z := 1 } }
        }"""
    )
    event = krl.Event("a", "b", {"stop": True})
    first = rs.select(event, ctx, krl.Budget())[0]
    assert rs.run(first, event, ctx, krl.Budget()) == krl.RuleResult(True, True)
    assert ctx.ents == {("a", "x"): 1}
    ctx.ents.clear()
    send_event(rs, ctx, "a", "b", {"stop": False})
    assert ctx.ents == {("a", "x"): 1, ("a", "y"): 1, ("a", "z"): 1}


def test_entity_paths_and_clear(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { rule r { select when a b fired {
          ent:m{["a", 0, "b"]} := 1;
          ent:m{"c"} := "x";
          ent:gone := 5;
          clear ent:gone;
          clear ent:m{"c"};
          ent:nothing := null
        } } }"""
    )
    send_event(rs, ctx, "a", "b")
    assert ctx.ents == {("a", "m"): {"a": [{"b": 1}]}}


def test_log_and_klog(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { rule r { select when a b
          pre { x = [1, 2].klog("the list") }
          fired { log info "x is " + x.encode() } } }"""
    )
    send_event(rs, ctx, "a", "b")
    assert ctx.logs == [("klog", "the list [1,2]"), ("info", "x is [1,2]")]


def test_meta_and_event_identifiers(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset my.rid { meta { name "N" } rule r { select when d t
          send_directive("m", {"rid": meta:rid, "eci": meta:eci, "pico": meta:picoId,
            "rule": meta:ruleName, "name": meta:rulesetName,
            "dom": event:domain, "type": event:type, "attrs": event:attrs, "eid": event:eid}) } }"""
    )
    event = krl.Event("d", "t", {"a": 1}, eid="e1")
    (sel,) = rs.select(event, ctx, krl.Budget())
    rs.run(sel, event, ctx, krl.Budget())
    assert ctx.directives[0][1] == {
        "rid": "my.rid", "eci": "eci-1", "pico": "pico-1", "rule": "r", "name": "N",
        "dom": "d", "type": "t", "attrs": {"a": 1}, "eid": "e1",
    }  # fmt: skip


def test_query_arguments_and_errors(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a { meta { shares add, answer, f2 }
          global {
            add = function(a, b = 10) { a + b };
            answer = 42;
            secret = function() { 1 };
            f2 = function() { function(x) { x } }
          } }"""
    )
    b = krl.Budget()
    assert rs.query("add", {"a": 1}, ctx, b) == 11
    assert rs.query("add", {"a": 1, "b": 2, "junk": 3}, ctx, b) == 3
    assert rs.query("add", {"0": 5, "1": 6}, ctx, b) == 11
    assert rs.query("answer", {}, ctx, b) == 42
    with pytest.raises(
        krl.KrlRuntimeError, match=r"^Ruleset a does not have query function \"secret\"$"
    ):
        rs.query("secret", {}, ctx, b)
    with pytest.raises(krl.KrlRuntimeError, match="a function cannot be used as the result"):
        rs.query("f2", {}, ctx, b)


def test_function_value_cannot_be_stored(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        "ruleset a { rule r { select when a b fired { ent:f := function() { 1 } } } }"
    )
    with pytest.raises(krl.KrlRuntimeError) as info:
        send_event(rs, ctx, "a", "b")
    err = info.value
    assert err.message == "a function cannot be used as the value of ent:f; only data can"
    assert (err.rid, err.rule, err.line) == ("a", "rule r", 1)
    assert str(err).startswith(
        "a function cannot be used as the value of ent:f; only data can (in a, rule r, line 1"
    )


def test_runtime_error_location(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        """ruleset a {
  rule r {
    select when a b
    pre { x = {"a": 1} - re#x# }
  }
}"""
    )
    with pytest.raises(krl.KrlRuntimeError) as info:
        send_event(rs, ctx, "a", "b")
    err = info.value
    assert err.message == "re#x# cannot be subtracted from [Map]"
    assert (err.line, err.column) == (4, 15)
    assert str(err) == "re#x# cannot be subtracted from [Map] (in a, rule r, line 4, column 15)"


def test_calling_a_non_function(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset("ruleset a { rule r { select when a b pre { f = 3; y = f(1) } } }")
    with pytest.raises(krl.KrlRuntimeError, match=r"^'f' is not a function \(it is Number\)"):
        send_event(rs, ctx, "a", "b")


def test_python_attributes_are_unreachable() -> None:
    assert evaluate('"abc"{"__class__"}') is None
    assert evaluate('{"__class__": 1}.__class__') == 1
    assert evaluate("[1].__len__") is None
    assert evaluate('"x".__class__') is None
    with pytest.raises(krl.KrlCompileError):
        krl.compile_ruleset("ruleset a { global { x = 1.__class__() } }")
    with pytest.raises(krl.KrlCompileError):
        krl.compile_ruleset('ruleset a { global { x = eval("1") } }')


def test_globals_that_read_entities_are_per_transaction() -> None:
    rs = krl.compile_ruleset(
        """ruleset a { meta { shares c } global { c = ent:n.defaultsTo(0) }
          rule r { select when a b fired { ent:n := c + 1 } } }"""
    )
    ctx1 = FakeContext()
    send_event(rs, ctx1, "a", "b")
    ctx2 = FakeContext()
    ctx2.ents = dict(ctx1.ents)
    send_event(rs, ctx2, "a", "b")
    assert rs.query("c", {}, FakeContext(), krl.Budget()) == 0
    assert ctx2.ents[("a", "n")] == 2


class TestBudget:
    def test_runaway_recursion(self, ctx: FakeContext) -> None:
        rs = krl.compile_ruleset(
            "ruleset a { meta { shares f } global { f = function(n) { f(n) } } }"
        )
        with pytest.raises(krl.KrlBudgetExceeded) as info:
            rs.query("f", {"n": 1}, ctx, krl.Budget())
        assert info.value.message == "call depth limit of 100 exceeded in query f"

    def test_deep_recursion_within_limits(self, ctx: FakeContext) -> None:
        rs = krl.compile_ruleset(
            """ruleset a { meta { shares sum } global {
              sum = function(n) { n <= 0 => 0 | n + sum(n - 1) } } }"""
        )
        assert rs.query("sum", {"n": 90}, ctx, krl.Budget()) == 4095
        with pytest.raises(krl.KrlBudgetExceeded, match="call depth limit"):
            rs.query("sum", {"n": 500}, ctx, krl.Budget())
        # A depth limit set beyond what Python's stack allows still ends in a KRL error.
        with pytest.raises(krl.KrlBudgetExceeded, match="call depth limit exceeded"):
            rs.query("sum", {"n": 50_000}, ctx, krl.Budget(max_depth=10**6))

    def test_step_budget_in_tail_heavy_recursion(self, ctx: FakeContext) -> None:
        rs = krl.compile_ruleset(
            """ruleset a { meta { shares f } global {
              f = function(n) { n > 0 => f(n - 1) + f(n - 1) | 1 } } }"""
        )
        with pytest.raises(krl.KrlBudgetExceeded) as info:
            rs.query("f", {"n": 30}, ctx, krl.Budget(max_steps=10_000))
        assert info.value.message == "step budget of 10000 exceeded in query f"

    def test_huge_map_is_bounded(self, ctx: FakeContext) -> None:
        rs = krl.compile_ruleset(
            """ruleset a { rule r { select when a b
              pre { xs = 1.range(10000).map(function(x) { 0.range(1000).length() }) } } }"""
        )
        with pytest.raises(krl.KrlBudgetExceeded) as info:
            send_event(rs, ctx, "a", "b", budget=krl.Budget(max_steps=100_000))
        assert info.value.message == "step budget of 100000 exceeded in rule r"

    def test_range_is_charged_before_it_is_built(self, ctx: FakeContext) -> None:
        rs = krl.compile_ruleset(
            "ruleset a { rule r { select when a b pre { xs = 0.range(1000000000000) } } }"
        )
        with pytest.raises(krl.KrlBudgetExceeded, match="step budget"):
            send_event(rs, ctx, "a", "b")

    def test_time_budget(self, ctx: FakeContext) -> None:
        rs = krl.compile_ruleset(
            """ruleset a { meta { shares f } global {
              f = function(n) { n > 0 => f(n - 1) + f(n - 1) | 1 } } }"""
        )
        with pytest.raises(krl.KrlBudgetExceeded, match=r"time budget of 0\.05 seconds exceeded"):
            rs.query("f", {"n": 40}, ctx, krl.Budget(max_steps=10**12, max_seconds=0.05))

    def test_budget_spans_one_transaction(self, ctx: FakeContext) -> None:
        rs = krl.compile_ruleset(
            """ruleset a { meta { shares f } global {
              f = function() { 0.range(60).length() } } }"""
        )
        budget = krl.Budget(max_steps=150)
        rs.query("f", {}, ctx, budget)
        rs.query("f", {}, ctx, budget)
        with pytest.raises(krl.KrlBudgetExceeded):
            rs.query("f", {}, ctx, budget)


def test_counter_counts_many_events(ctx: FakeContext) -> None:
    # Speed is measured in scripts/bench/, not asserted here.
    rs = krl.compile_ruleset(COUNTER)
    event = krl.Event("counter", "inc", {})
    n = 2000
    for _ in range(n):
        budget = krl.Budget()
        for sel in rs.select(event, ctx, budget):
            rs.run(sel, event, ctx, budget)
    assert ctx.ents[("io.example.counter", "count")] == n
