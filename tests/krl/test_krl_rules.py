"""Rule bodies: foreach, postlude guards, action blocks, defaction, error and schedule."""

from __future__ import annotations

import random

import pytest
from krl_fakes import FakeContext, send_event

import krl

FOREACH = """ruleset t.foreach {
  global { twice = function(list) { [list, list] } }
  rule basic { select when each basic foreach [1, 2, 3] setting(x) send_directive("basic", {"x": x}) }
  rule map {
    select when each map
    foreach {"a": 1, "b": 2, "c": 3} setting(v, k)
    send_directive("map", {"k": k, "v": v})
  }
  rule nested {
    select when each nested
    foreach [1, 2] setting(x) foreach ["a", "b"] setting(y)
    send_directive("nested", {"x": x, "y": y})
  }
  rule scope {
    select when each scope
    foreach twice([1, 2]) setting(list)
      foreach list setting(foo)
        foreach 0.range(foo) setting(bar)
    pre { baz = foo * bar }
    send_directive("scope", {"foo": foo, "bar": bar, "baz": baz})
  }
  rule final {
    select when each final
    foreach event:attrs{"x"}.split(",") setting(x)
      foreach event:attrs{"y"}.split(",") setting(y)
    send_directive("final", {"x": x, "y": y})
    always { raise each event "final_raised" attributes {"x": x, "y": y} on final }
  }
  rule final_raised {
    select when each final_raised
    send_directive("final_raised", event:attrs)
  }
  rule key_vs_index {
    select when each key_vs_index
    foreach {"foo": "bar", "baz": "qux"} setting(a, k) foreach ["one", "two"] setting(b, i)
    send_directive("kvi", {"a": a, "k": k, "b": b, "i": i})
  }
  rule others {
    select when each others
    foreach event:attrs{"c"} setting(v, k)
    send_directive("other", {"v": v, "k": k})
    always { ent:always := ent:always.defaultsTo(0) + 1 }
  }
  rule stops {
    select when each stops
    foreach [1, 2, 3] setting(x)
    send_directive("stops", {"x": x})
    fired { last if x == 2 }
  }
}"""


@pytest.fixture
def each() -> krl.Ruleset:
    return krl.compile_ruleset(FOREACH)


def _names(directives: list[tuple[str, object]]) -> list[object]:
    return [options for _, options in directives]


def test_foreach_arrays_maps_and_nesting(each: krl.Ruleset, ctx: FakeContext) -> None:
    assert _names(send_event(each, ctx, "each", "basic")) == [{"x": 1}, {"x": 2}, {"x": 3}]
    assert _names(send_event(each, ctx, "each", "map")) == [
        {"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "c", "v": 3},
    ]  # fmt: skip
    assert _names(send_event(each, ctx, "each", "nested")) == [
        {"x": 1, "y": "a"}, {"x": 1, "y": "b"}, {"x": 2, "y": "a"}, {"x": 2, "y": "b"},
    ]  # fmt: skip
    assert _names(send_event(each, ctx, "each", "key_vs_index")) == [
        {"a": "bar", "k": "foo", "b": "one", "i": 0},
        {"a": "bar", "k": "foo", "b": "two", "i": 1},
        {"a": "qux", "k": "baz", "b": "one", "i": 0},
        {"a": "qux", "k": "baz", "b": "two", "i": 1},
    ]


def test_foreach_scope_reruns_pre(each: krl.Ruleset, ctx: FakeContext) -> None:
    once = [
        {"foo": 1, "bar": 0, "baz": 0}, {"foo": 1, "bar": 1, "baz": 1},
        {"foo": 2, "bar": 0, "baz": 0}, {"foo": 2, "bar": 1, "baz": 2}, {"foo": 2, "bar": 2, "baz": 4},
    ]  # fmt: skip
    assert _names(send_event(each, ctx, "each", "scope")) == once + once


@pytest.mark.parametrize(
    ("x", "y", "finals"),
    [
        ("a", "0", [("a", "0")]),
        ("a", "0,1", [("a", "0"), ("a", "1")]),
        ("a,b", "0,1", [("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")]),
    ],
)
def test_on_final_runs_on_the_last_iteration_of_every_loop(
    each: krl.Ruleset, ctx: FakeContext, x: str, y: str, finals: list[tuple[str, str]]
) -> None:
    got = send_event(each, ctx, "each", "final", {"x": x, "y": y})
    want = [("final", {"x": a, "y": b}) for a, b in finals]
    want.append(("final_raised", {"x": finals[-1][0], "y": finals[-1][1]}))
    assert got == want


def test_foreach_over_strings_null_and_numbers(each: krl.Ruleset, ctx: FakeContext) -> None:
    assert _names(send_event(each, ctx, "each", "others", {"c": "hi"})) == [
        {"v": "h", "k": "0"}, {"v": "i", "k": "1"},
    ]  # fmt: skip
    assert ctx.ents[("t.foreach", "always")] == 2
    for value in (None, 5, [], {}):
        assert send_event(each, ctx, "each", "others", {"c": value}) == []
    assert ctx.ents[("t.foreach", "always")] == 2  # no iteration: not even `always` runs


def test_last_stops_the_loop(each: krl.Ruleset, ctx: FakeContext) -> None:
    assert _names(send_event(each, ctx, "each", "stops")) == [{"x": 1}, {"x": 2}]


def test_foreach_iterations_are_charged_to_the_budget(each: krl.Ruleset, ctx: FakeContext) -> None:
    with pytest.raises(krl.KrlBudgetExceeded):
        send_event(each, ctx, "each", "nested", budget=krl.Budget(max_steps=3))


def test_deep_path_assignment_creates_missing_levels(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        'ruleset t.p { rule r { select when a b always { ent:x{["a", 0, "b"]} := 1;'
        ' ent:y{["m", "k"]} := 2; ent:y{["m", "j"]} := 3 } } }'
    )
    send_event(rs, ctx, "a", "b")
    assert ctx.ents[("t.p", "x")] == {"a": [{"b": 1}]}
    assert ctx.ents[("t.p", "y")] == {"m": {"k": 2, "j": 3}}


POSTLUDE = """ruleset t.post {
  rule r {
    select when p r
    if event:attrs{"go"} then noop()
    fired { ent:log := ent:log.defaultsTo([]).append("fired") }
    else { ent:log := ent:log.defaultsTo([]).append("else") }
    finally { ent:log := ent:log.defaultsTo([]).append("finally") if event:attrs{"fin"} }
  }
  rule n {
    select when p n
    if event:attrs{"go"} then noop()
    notfired { ent:n := "notfired" } else { ent:n := "else" }
  }
}"""


def test_postlude_variants_and_guards(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(POSTLUDE)
    send_event(rs, ctx, "p", "r", {"go": True, "fin": True})
    send_event(rs, ctx, "p", "r", {"go": 0})
    assert ctx.ents[("t.post", "log")] == ["fired", "finally", "else"]
    send_event(rs, ctx, "p", "n", {"go": False})
    assert ctx.ents[("t.post", "n")] == "notfired"
    send_event(rs, ctx, "p", "n", {"go": "yes"})
    assert ctx.ents[("t.post", "n")] == "else"


ACTIONS = """ruleset t.act {
  global {
    greet = defaction(name, greeting = "Hello") {
      msg = greeting + " " + name
      send_directive("greet", {"msg": msg}) setting(d)
      return d{"options"}{"msg"}
    }
    both = defaction(a) {
      every { greet(a) setting(x) greet(greeting = "Hi", name = a) setting(y) }
      returns [x, y]
    }
    maybe = defaction(go) { if go then send_directive("maybe") }
    plain = function() { 1 }
  }
  rule chooser {
    select when act choose
    choose event:attrs{"which"} {
      one => send_directive("one")
      two => send_directive("two")
    }
    fired { ent:chose := ent:chose.defaultsTo(0) + 1 }
  }
  rule sampled { select when act sample sample { send_directive("a") send_directive("b") send_directive("c") } }
  rule user { select when act user greet("Ada") setting(r) fired { ent:r := r } }
  rule nested { select when act nested both("Bo") setting(r) fired { ent:r := r } }
  rule gated { select when act gated maybe(event:attrs{"go"}) }
  rule named { select when act named send_directive(options = {"k": 1}, name = "named") }
  rule labelled {
    select when act labelled
    if event:attrs{"go"} then every { first => send_directive("x") send_directive("y") }
    notfired { ent:skipped := true }
  }
  rule misuse_fn { select when act misuse_fn plain() }
  rule misuse_action { select when act misuse_action pre { x = [greet][0]("a") } }
}"""


@pytest.fixture
def acts() -> krl.Ruleset:
    return krl.compile_ruleset(ACTIONS)


def test_choose_runs_the_labelled_action(acts: krl.Ruleset, ctx: FakeContext) -> None:
    assert send_event(acts, ctx, "act", "choose", {"which": "two"}) == [("two", {})]
    assert send_event(acts, ctx, "act", "choose", {"which": "three"}) == []
    assert ctx.ents[("t.act", "chose")] == 2  # no matching label still counts as fired


def test_sample_uses_the_budget_random_source(acts: krl.Ruleset, ctx: FakeContext) -> None:
    budget = krl.Budget(random=random.Random(7))
    got = [send_event(acts, ctx, "act", "sample", budget=budget)[0][0] for _ in range(8)]
    expected = random.Random(7)
    assert got == [expected.choice("abc") for _ in range(8)]


def test_defaction_with_defaults_setting_and_return(acts: krl.Ruleset, ctx: FakeContext) -> None:
    assert send_event(acts, ctx, "act", "user") == [("greet", {"msg": "Hello Ada"})]
    assert ctx.ents[("t.act", "r")] == "Hello Ada"
    assert send_event(acts, ctx, "act", "nested") == [
        ("greet", {"msg": "Hello Bo"}),
        ("greet", {"msg": "Hi Bo"}),
    ]
    assert ctx.ents[("t.act", "r")] == ["Hello Bo", "Hi Bo"]
    assert send_event(acts, ctx, "act", "gated", {"go": 0}) == []
    assert send_event(acts, ctx, "act", "gated", {"go": 1}) == [("maybe", {})]


def test_named_arguments_and_labels_in_every(acts: krl.Ruleset, ctx: FakeContext) -> None:
    assert send_event(acts, ctx, "act", "named") == [("named", {"k": 1})]
    assert send_event(acts, ctx, "act", "labelled", {"go": True}) == [("x", {}), ("y", {})]
    assert send_event(acts, ctx, "act", "labelled") == []
    assert ctx.ents[("t.act", "skipped")] is True


def test_actions_and_functions_are_not_interchangeable(acts: krl.Ruleset, ctx: FakeContext) -> None:
    with pytest.raises(krl.KrlRuntimeError, match=r"^'plain' is not an action \(it is Function\)"):
        send_event(acts, ctx, "act", "misuse_fn")
    with pytest.raises(krl.KrlRuntimeError, match="'greet' is an action and can only be used"):
        send_event(acts, ctx, "act", "misuse_action")
    assert krl.compile_ruleset(ACTIONS).query  # the ruleset itself compiles


def test_choose_needs_labels() -> None:
    with pytest.raises(krl.KrlCompileError, match="needs a label"):
        krl.compile_ruleset(
            'ruleset t { rule r { select when a b choose 1 { send_directive("x") } } }'
        )


def test_typeof_action() -> None:
    rs = krl.compile_ruleset(
        "ruleset t { meta { shares t } global { a = defaction() { noop() }; t = a.typeof() } }"
    )
    assert rs.query("t", {}, FakeContext(), krl.Budget()) == "Action"


ERRORS = """ruleset t.err {
  rule warn { select when e warn always { error warn "careful"; ent:after_warn := true } }
  rule stop {
    select when e stop
    always {
      raise e event "dropped";
      error error {"why": "broken"};
      ent:after_error := true
    }
  }
  rule later { select when e stop always { ent:later := true } }
  rule dropped { select when e dropped always { ent:dropped := true } }
  rule caught {
    select when system error
    send_directive("caught", event:attrs)
  }
}"""


def test_error_warn_raises_system_error_and_continues(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(ERRORS)
    got = send_event(rs, ctx, "e", "warn")
    assert got == [
        ("caught", {"level": "warn", "data": "careful", "rid": "t.err", "rule_name": "warn",
                    "genus": "user"}),
    ]  # fmt: skip
    assert ctx.raised[0][3] == "t.err"  # to this ruleset only
    assert ctx.ents[("t.err", "after_warn")] is True


def test_error_error_halts_like_last_and_clears_the_schedule(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(ERRORS)
    event = krl.Event("e", "stop", {})
    stop, _later = rs.select(event, ctx, krl.Budget())
    result = rs.run(stop, event, ctx, krl.Budget())
    assert result == krl.RuleResult(fired=True, last=True, halted=True)
    ctx.raised.clear()
    got = send_event(rs, ctx, "e", "stop")
    assert [name for name, _ in got] == ["caught"]
    assert got[0][1]["data"] == {"why": "broken"}
    assert ("t.err", "after_error") not in ctx.ents
    assert ("t.err", "later") not in ctx.ents
    assert ("t.err", "dropped") not in ctx.ents


SCHEDULES = """ruleset t.sched {
  rule at {
    select when s at
    always {
      schedule s event "later" at time:add(time:now(), {"minutes": 5}) attributes {"n": 1}
        setting(id);
      ent:id := id
    }
  }
  rule ms { select when s ms always { schedule s event "ms" at 1700000000000 } }
  rule cron { select when s cron always { schedule event "s:tick" repeat "0 */5 * * * *" } }
  rule bad { select when s bad always { schedule event "nodomain" repeat "* * * * *" } }
}"""


def test_schedule_at_and_repeat(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(SCHEDULES)
    budget = krl.Budget(clock=lambda: 1_000_000.25)
    send_event(rs, ctx, "s", "at", budget=budget)
    send_event(rs, ctx, "s", "ms")
    send_event(rs, ctx, "s", "cron")
    assert ctx.scheduled == [
        ("s", "later", {"n": 1}, 1_000_300.25, None, "id"),
        ("s", "ms", {}, 1_700_000_000.0, None, None),
        ("s", "tick", {}, None, "0 */5 * * * *", None),
    ]
    # setting(v) binds the job's record, as the reference does (and schedule:get shows it)
    assert ctx.ents[("t.sched", "id")] == {
        "id": "job-1",
        "type": "at",
        "time": 1_000_300_250,
        "event": {
            "eci": "eci-1",
            "domain": "s",
            "name": "later",
            "data": {"attrs": {"n": 1}},
            "time": 0,
        },
    }
    with pytest.raises(krl.KrlRuntimeError, match='schedule event expects "domain:type"'):
        send_event(rs, ctx, "s", "bad")


def test_schedule_needs_at_or_repeat() -> None:
    with pytest.raises(krl.KrlSyntaxError, match="expected 'at' or 'repeat'"):
        krl.parse_ruleset(
            'ruleset t { rule r { select when a b always { schedule a event "b" } } }'
        )
