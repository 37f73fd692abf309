"""Stateful `select when` expressions: the reference engine's event-exp, scope and within tables."""

from __future__ import annotations

import json

import pytest
from krl_fakes import FakeContext, send_event

import krl

# One rule per construct; each listens on its own domain and answers with its name.
RULES = {
    "before": "x a before x b",
    "after": "x a after x b",
    "then": "x a then x b name re#bob#",
    "and": "x a and x b",
    "or": "x a or x b",
    "between": "x a between(x b, x c)",
    "not_between": "x a not between(x b, x c)",
    "and_or": "(x a and x b) or x c",
    "or_and": "x a and (x b or x c)",
    "before_n": "before(x a, x b, x c)",
    "after_n": "after(x a, x b, x c)",
    "then_n": "then(x a, x b, x c)",
    "and_n": "and(x a, x b, x c)",
    "or_n": "or(x a, x b, x c, x d)",
    "any": "any 2 (x a, x b, x c, x d)",
    "count": "count 3 (x a)",
    "repeat": "repeat 3 (x a name re#bob#)",
    "or_duppath": "(x a before x a) or x a",
    "notbet_duppath": "x a not between(x b, x a)",
    "ab_or_b": "(x a and x b) or x b",
    "ab_or_ca": "(x a and x b) or (x c and x a)",
}
AGGREGATE_RULES = {
    "count_max": ("count 3 (x a b re#(\\d+)#) max(m)", ["m"]),
    "repeat_min": ("repeat 3 (x a b re#(\\d+)#) min(m)", ["m"]),
    "repeat_sum": ("repeat 3 (x a b re#(\\d+)#) sum(m)", ["m"]),
    "repeat_avg": ("repeat 3 (x a b re#(\\d+)#) avg(m)", ["m"]),
    "repeat_push": ("repeat 3 (x a b re#(\\d+)#) push(m)", ["m"]),
    "repeat_push_multi": (
        "repeat 5 (x a a re#(\\d+)# b re#(\\d+) (.*)#) push(a, b, c, d)",
        ["a", "b", "c", "d"],
    ),
    "repeat_sum_multi": ("repeat 3 (x a a re#(\\d+)# b re#(\\d+)#) sum(a, b)", ["a", "b"]),
}


def _ruleset(name: str) -> krl.Ruleset:
    if name in RULES:
        select, options = RULES[name], "{}"
    else:
        select, names = AGGREGATE_RULES[name]
        options = "{" + ", ".join(f'"{n}": {n}' for n in names) + "}"
    source = f'ruleset t.ee {{ rule {name} {{ select when {select} send_directive("{name}", {options}) }} }}'
    return krl.compile_ruleset(source)


# (rule, event type, attrs, expected options or None): the reference's event-exp table.
A, B, C, D = "a", "b", "c", "d"
TABLE: list[tuple[str, list[tuple[str, dict[str, object], object]]]] = [
    ("before", [(A, {}, None), (B, {}, {}), (B, {}, None), (B, {}, None), (A, {}, None),
                (A, {}, None), (C, {}, None), (B, {}, {})]),
    ("after", [(A, {}, None), (B, {}, None), (A, {}, {}), (A, {}, None), (A, {}, None),
               (B, {}, None), (C, {}, None), (A, {}, {})]),
    ("then", [(A, {"name": "bob"}, None), (B, {"name": "bob"}, {}), (B, {"name": "bob"}, None),
              (A, {"name": "bob"}, None), (B, {"name": "..."}, None), (B, {"name": "bob"}, None)]),
    ("and", [(A, {}, None), (C, {}, None), (B, {}, {}), (B, {}, None), (A, {}, {}),
             (B, {}, None), (B, {}, None), (B, {}, None), (A, {}, {})]),
    ("or", [(A, {}, {}), (B, {}, {}), (C, {}, None)]),
    ("between", [(B, {}, None), (A, {}, None), (C, {}, {}), (B, {}, None), (A, {}, None),
                 (A, {}, None), (C, {}, {}), (B, {}, None), (A, {}, None), (B, {}, None),
                 (C, {}, {})]),
    ("not_between", [(B, {}, None), (C, {}, {}), (B, {}, None), (A, {}, None), (C, {}, None),
                     (B, {}, None), (C, {}, {}), (C, {}, None)]),
    ("and_or", [(C, {}, {}), (A, {}, None), (C, {}, None), (B, {}, {})]),
    ("or_and", [(A, {}, None), (B, {}, {}), (C, {}, None), (A, {}, {})]),
    ("before_n", [(A, {}, None), (B, {}, None), (C, {}, {})]),
    ("after_n", [(C, {}, None), (B, {}, None), (A, {}, {})]),
    ("then_n", [(A, {}, None), (B, {}, None), (C, {}, {}), (A, {}, None), (C, {}, None),
                (B, {}, None), (C, {}, None)]),
    ("and_n", [(A, {}, None), (C, {}, None), (B, {}, {})]),
    ("or_n", [(A, {}, {}), (D, {}, {})]),
    ("any", [(A, {}, None), (A, {}, None), (B, {}, {}), (C, {}, None), (A, {}, {})]),
    ("count", [(A, {}, None), (A, {}, None), (A, {}, {}), (A, {}, None), (A, {}, None),
               (A, {}, {}), (A, {}, None)]),
    ("repeat", [(A, {"name": "bob"}, None), (A, {"name": "bob"}, None),
                (A, {"name": "bob"}, {}), (A, {"name": "bob"}, {}),
                (A, {"name": "..."}, None), (A, {"name": "bob"}, None)]),
    ("count_max", [(A, {"b": "3"}, None), (A, {"b": "8"}, None), (A, {"b": "5"}, {"m": 8}),
                   (A, {"b": "1"}, None), (A, {"b": "0"}, None), (A, {"b": "0"}, {"m": 1}),
                   (A, {"b": "0"}, None), (A, {"b": "0"}, None), (A, {"b": "7"}, {"m": 7})]),
    ("repeat_min", [(A, {"b": "5"}, None), (A, {"b": "3"}, None), (A, {"b": "4"}, {"m": 3}),
                    (A, {"b": "5"}, {"m": 3}), (A, {"b": "6"}, {"m": 4}), (A, {"b": None}, None),
                    (A, {"b": "3"}, None), (A, {"b": "8"}, None), (A, {"b": "1"}, {"m": 1}),
                    (A, {"b": "2"}, {"m": 1}), (A, {"b": "3"}, {"m": 1}),
                    (A, {"b": "4"}, {"m": 2}), (A, {"b": "5"}, {"m": 3}),
                    (A, {"b": "6"}, {"m": 4}), (A, {"b": "7"}, {"m": 5})]),
    ("repeat_sum", [(A, {"b": "1"}, None), (A, {"b": "2"}, None), (A, {"b": "3"}, {"m": 6}),
                    (A, {"b": "4"}, {"m": 9})]),
    ("repeat_avg", [(A, {"b": "1"}, None), (A, {"b": "2"}, None), (A, {"b": "3"}, {"m": 2}),
                    (A, {"b": "100"}, {"m": 35})]),
    ("repeat_push", [(A, {"b": "1"}, None), (A, {"b": "2"}, None),
                     (A, {"b": "3"}, {"m": ["1", "2", "3"]}),
                     (A, {"b": "4"}, {"m": ["2", "3", "4"]}), (A, {"b": "five"}, None),
                     (A, {"b": "6"}, None), (A, {"b": "7"}, None),
                     (A, {"b": "8"}, {"m": ["6", "7", "8"]})]),
    ("repeat_push_multi", [
        (A, {"a": "1", "b": "2 three"}, None), (A, {"a": "2", "b": "3 four"}, None),
        (A, {"a": "3", "b": "4 five"}, None), (A, {"a": "4", "b": "5 six"}, None),
        (A, {"a": "5", "b": "6 seven"}, {
            "a": ["1", "2", "3", "4", "5"], "b": ["2", "3", "4", "5", "6"],
            "c": ["three", "four", "five", "six", "seven"], "d": [None] * 5,
        }),
    ]),
    ("repeat_sum_multi", [(A, {"a": "1", "b": "2"}, None), (A, {"a": "2", "b": "3"}, None),
                          (A, {"a": "3", "b": "4"}, {"a": 6, "b": 9})]),
    ("or_duppath", [(A, {}, {}), (A, {}, {})]),
    ("notbet_duppath", [(A, {}, None), (B, {}, None), (A, {}, {})]),
    ("ab_or_b", [(B, {}, {}), (A, {}, None), (B, {}, {}), (B, {}, {}), (A, {}, None)]),
    ("ab_or_ca", [(A, {}, None), (C, {}, {}), (A, {}, None), (B, {}, {})]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "steps"), TABLE, ids=[name for name, _ in TABLE])
def test_reference_event_exp_table(
    name: str, steps: list[tuple[str, dict[str, object], object]]
) -> None:
    rs = _ruleset(name)
    ctx = FakeContext()
    for i, (etype, attrs, expected) in enumerate(steps):
        got = send_event(rs, ctx, "x", etype, attrs)
        want = [] if expected is None else [(name, expected)]
        assert got == want, f"step {i}: x:{etype} {attrs}"
        for state in ctx.rule_states.values():  # the state is plain JSON data
            assert json.loads(json.dumps(state)) == state


WITHIN = """ruleset t.within {
  rule five_minutes { select when foo a before foo b within 5 minutes send_directive("foo") }
  rule four_seconds { select when bar a before bar b within 1 + 3 second send_directive("bar") }
  rule a_year { select when baz a or (baz b and baz c) within 1 year send_directive("baz") }
  rule two_seconds { select when repeat 3 (qux a b re#c#) within 2 seconds send_directive("qux") }
}"""

# (time in ms, domain, type, attrs, fires?): the reference's within table.
WITHIN_TABLE = [
    (10000000000000, "foo", "a", {}, False),
    (10000000000001, "foo", "b", {}, True),
    (10000000000002, "foo", "a", {}, False),
    (10000000555555, "foo", "b", {}, False),
    (10000000555556, "foo", "a", {}, False),
    (10000000255557, "foo", "b", {}, True),
    (10000000000000, "bar", "a", {}, False),
    (10000000003999, "bar", "b", {}, True),
    (10000000000000, "bar", "a", {}, False),
    (10000000004000, "bar", "b", {}, True),
    (10000000000000, "bar", "a", {}, False),
    (10000000004001, "bar", "b", {}, False),
    (10000000000000, "baz", "a", {}, True),
    (10000000000000, "baz", "b", {}, False),
    (10031536000000, "baz", "c", {}, True),
    (10000000000000, "baz", "c", {}, False),
    (10040000000000, "baz", "b", {}, False),
    (10050000000000, "baz", "c", {}, True),
    (10000000000000, "qux", "a", {"b": "c"}, False),
    (10000000000001, "qux", "a", {"b": "c"}, False),
    (10000000001002, "qux", "a", {"b": "c"}, True),
    (10000000002003, "qux", "a", {"b": "c"}, False),
    (10000000002004, "qux", "a", {"b": "c"}, False),
    (10000000002005, "qux", "a", {"b": "c"}, True),
    (10000000002006, "qux", "a", {"b": "c"}, True),
    (10000000002007, "qux", "a", {"b": "z"}, False),
    (10000000002008, "qux", "a", {"b": "c"}, False),
    (10000000002009, "qux", "a", {"b": "c"}, False),
    (10000000004008, "qux", "a", {"b": "c"}, True),
]


def test_reference_within_table(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(WITHIN)
    for i, (ms, domain, etype, attrs, fires) in enumerate(WITHIN_TABLE):
        got = send_event(rs, ctx, domain, etype, attrs, time=ms / 1000)
        assert got == ([(domain, {})] if fires else []), f"step {i}"


SETTINGS = """ruleset t.scope {
  rule both {
    select when s a name re#(.*)# setting(n0) and s b name re#(.*)# setting(n1)
    send_directive("both", {"n0": n0, "n1": n1})
  }
  rule timed {
    select when (w zero or w one name re#(.*)# setting(n1))
            and (w two name re#(.*)# setting(n2) or w three)
            within 1 second
    send_directive("timed", {"n1": n1, "n2": n2})
  }
  rule guarded {
    select when g a v re#(\\d+)# setting(first) before g b v re#(\\d+)# setting(second)
                where second.as("Number") > first.as("Number")
    send_directive("guarded", {"first": first, "second": second})
  }
}"""


def test_setting_values_accumulate_until_the_rule_fires(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(SETTINGS)
    assert send_event(rs, ctx, "s", "a", {"name": "A"}) == []
    assert send_event(rs, ctx, "s", "b", {"name": "B"}) == [("both", {"n0": "A", "n1": "B"})]
    assert ctx.rule_states == {}  # firing resets the state
    assert send_event(rs, ctx, "s", "b", {"name": "C"}) == []
    assert ctx.rule_states == {("t.scope", "both"): {"states": ["s1"], "setting": {"n1": "C"}}}
    assert send_event(rs, ctx, "s", "a", {"name": "D"}) == [("both", {"n0": "D", "n1": "C"})]


def test_within_expiry_drops_setting_values(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(SETTINGS)
    assert send_event(rs, ctx, "w", "one", {"name": "x"}, time=0) == []
    assert send_event(rs, ctx, "w", "two", {"name": "y"}, time=0.5) == [
        ("timed", {"n1": "x", "n2": "y"})
    ]
    assert send_event(rs, ctx, "w", "one", {"name": "p"}, time=10) == []
    assert send_event(rs, ctx, "w", "two", {"name": "q"}, time=12) == []  # expired: starts over
    assert send_event(rs, ctx, "w", "zero", {}, time=12.5) == [("timed", {"n1": None, "n2": "q"})]


def test_where_sees_setting_values_from_earlier_events(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(SETTINGS)
    assert send_event(rs, ctx, "g", "a", {"v": "5"}) == []
    assert send_event(rs, ctx, "g", "b", {"v": "3"}) == []  # where fails: back to start
    assert send_event(rs, ctx, "g", "b", {"v": "9"}) == []
    assert send_event(rs, ctx, "g", "a", {"v": "5"}) == []
    assert send_event(rs, ctx, "g", "b", {"v": "9"}) == [("guarded", {"first": "5", "second": "9"})]


def test_state_is_written_only_when_it_changes(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset("ruleset t.w { rule r { select when a x before a y } }")
    send_event(rs, ctx, "a", "y")
    assert ctx.rule_state_writes == 0
    send_event(rs, ctx, "a", "x")
    send_event(rs, ctx, "a", "x")
    assert ctx.rule_state_writes == 1
    assert ctx.rule_states == {("t.w", "r"): {"states": ["s0"]}}
    send_event(rs, ctx, "a", "y")
    assert ctx.rule_state_writes == 2
    assert ctx.rule_states == {}


def test_stateless_rules_never_touch_rule_state(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        "ruleset t.s { rule r { select when a x name re#(.+)# setting(n) or a y } }"
    )
    send_event(rs, ctx, "a", "x", {"name": "n"})
    send_event(rs, ctx, "a", "x")
    send_event(rs, ctx, "a", "y")
    assert ctx.rule_state_writes == 0


def test_iter_select_runs_matchers_lazily(ctx: FakeContext) -> None:
    rs = krl.compile_ruleset(
        "ruleset t.l { rule stop { select when a x fired { last } }"
        ' rule counted { select when count 2 (a x) send_directive("two") } }'
    )
    for _ in range(3):
        assert send_event(rs, ctx, "a", "x") == []  # `last` stops before `counted` is matched
    assert ctx.rule_states == {}
    budget = krl.Budget()
    event = krl.Event("a", "x", {})
    assert [s.rule.name for s in rs.select(event, ctx, budget)] == ["stop"]
    assert ctx.rule_states == {("t.l", "counted"): {"states": ["s0"]}}  # select is eager


def test_machine_size_is_bounded() -> None:
    events = ", ".join(f"a e{i}" for i in range(13))
    with pytest.raises(krl.KrlCompileError, match="more than 5000 state transitions"):
        krl.compile_ruleset(f"ruleset t.big {{ rule r {{ select when and({events}) }} }}")
