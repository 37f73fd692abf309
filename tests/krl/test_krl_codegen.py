"""Generated function code (krl/codegen.py): the same results and errors as closures,
the budget charged the same way, and generated source that holds only what the
generator chose.

Most checks are differential: each ruleset is compiled twice, with
``compile_ruleset(…, codegen=False)`` (function literals as closures, the reference
implementation) and with the default generated code, and every observable outcome
(query results, directives, raised events, entity values, error messages with their
line and column, steps charged) must be equal.
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import re
import tokenize
from collections.abc import Iterator
from typing import Any

import pytest
from cases_runner import Case, load_cases
from krl_fakes import FakeContext, send_event

import krl
from krl import codegen

CLOCK = 1_700_000_000.0


def _budget(**kwargs: Any) -> krl.Budget:
    return krl.Budget(random=random.Random(7), clock=lambda: CLOCK, **kwargs)


def _query(rs: krl.Ruleset, name: str, args: dict[str, object], **budget: Any) -> tuple[Any, ...]:
    """(result, steps) or ("error", class name, message, line, column, steps)."""
    b = _budget(**budget)
    try:
        return ("ok", rs.query(name, args, FakeContext(), b), b.steps)
    except krl.KrlError as err:
        line = getattr(err, "line", None)
        column = getattr(err, "column", None)
        return ("error", type(err).__name__, str(err), line, column, b.steps)


def _both(source: str) -> tuple[krl.Ruleset, krl.Ruleset]:
    return krl.compile_ruleset(source, codegen=False), krl.compile_ruleset(source)


def _same(source: str, name: str, args: dict[str, object], **budget: Any) -> tuple[Any, ...]:
    closures, generated = _both(source)
    expected = _query(closures, name, args, **budget)
    assert _query(generated, name, args, **budget) == expected
    return expected


# -- the shared case files, both ways ---------------------------------------------------


def _case_outcomes(case: Case, use_codegen: bool) -> list[object]:
    ctx = FakeContext()
    out: list[object] = []
    try:
        rulesets = [krl.compile_ruleset(s, codegen=use_codegen) for s in case.rulesets]
    except krl.KrlError as err:
        return [("compile error", type(err).__name__, str(err))]
    for rs in rulesets:
        ctx.modules[rs.rid] = rs
    by_rid = {rs.rid: rs for rs in rulesets}
    for step in case.steps:
        budget = _budget(max_seconds=60)
        try:
            if "query" in step:
                q = step["query"]
                rs = by_rid.get(q.get("rid", rulesets[0].rid), rulesets[0])
                out.append(rs.query(q["name"], q.get("args", {}), ctx, budget))
            else:
                ev = step["event"]
                when = step.get("time", 0) / 1000
                for rs in rulesets:
                    attrs = ev.get("attrs", {})
                    out.append(
                        send_event(rs, ctx, ev["domain"], ev["type"], attrs, budget, 20, when)
                    )
        except krl.KrlError as err:
            out.append(("error", type(err).__name__, str(err)))
        out.append(budget.steps)
    out += [sorted(ctx.ents.items()), ctx.raised, ctx.logs, ctx.scheduled, ctx.sent]
    return out


CASES = [c for c in load_cases() if c.steps or c.install_error]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_shared_cases_give_the_same_outcomes_as_closures(case: Case) -> None:
    assert _case_outcomes(case, True) == _case_outcomes(case, False)


def test_the_shared_cases_are_many() -> None:
    assert len(CASES) >= 100


# -- operators on every kind of value ---------------------------------------------------

VALUES: list[object] = [
    0,
    1,
    -7,
    3,
    2**30,
    2**53 - 1,
    2**53,
    -(2**53),
    1.5,
    -0.5,
    math.nan,
    "",
    "10",
    "9",
    "abc",
    " 0x1F ",
    None,
    True,
    False,
    [],
    [1, "a"],
    {},
    {"a": 1},
]

BINARY = ["+", "-", "*", "/", "%", "<", ">", "<=", ">=", "==", "!=", "<=>", "&&", "||", "like"]
OPERATORS = """
ruleset t.ops {
  meta { shares bin, un, k }
  global {
    ops = {
      %(ops)s
    }
    bin = function(op, a, b) { ops{op}(a, b) }
    un = function(a) { [-a, not a, +a, a => 1 | 2] }
    k = function(a) {
      [a + 1, 1 + a, a - 1, a * 3, a %% 2, a %% -2, a == 0, 0 != a, a < 2, 2 >= a,
       a + ",", "x" + a, a == "10", a / 4, a <=> 1, a + 1.5, a * 2 + 1 == 7]
    }
  }
}
"""


def test_operators_agree_on_every_pair_of_values() -> None:
    ops = ",\n      ".join(f'"{op}": function(a, b) {{ a {op} b }}' for op in BINARY)
    closures, generated = _both(OPERATORS % {"ops": ops})
    checked = 0
    for op in BINARY:
        for a in VALUES:
            for b in VALUES:
                args = {"op": op, "a": a, "b": b}
                expected = _query(closures, "bin", args)
                assert _query(generated, "bin", args) == expected, (op, a, b)
                checked += 1
    for a in VALUES:
        for name in ("un", "k"):
            assert _query(generated, name, {"a": a}) == _query(closures, name, {"a": a}), a
    assert checked == len(BINARY) * len(VALUES) ** 2


def test_integer_results_beyond_2_53_become_floats_as_with_closures() -> None:
    result = _same(
        "ruleset t.big { meta { shares f } global { f = function(a) { [a + 1, a * 2, a - -1] } } }",
        "f",
        {"a": 2**53},
    )
    # As floats, 2**53 + 1 rounds to 2**53: an int fast path without the range check
    # would give 2**53 + 1.
    assert result[1] == [2**53, 2**54, 2**53]


# -- calls: arguments, defaults, closures, named arguments ----------------------------------

CALLS = """
ruleset t.calls {
  meta { shares run }
  global {
    add = function(a, b = 10, c = a + b) { [a, b, c] }
    counter = function(start) {
      step = function(n) { start + n };
      twice = function(n) { step(step(n)) };
      [step(1), twice(1), step]
    }
    act = defaction(x) { send_directive("d", {"x": x}) }
    run = function(which) {
      which == "defaults" => [add(1), add(1, 2), add(1, null, 5), add(1, 2, 3, 4), add()] |
      which == "named" => [add(b = 2, a = 1), add(1, c = 0), add(c = 1)] |
      which == "closure" => counter(5)[2](100) + counter(1)[1] |
      which == "stdlib named" => "a-b".split(separator = "-") |
      which == "method" => 5.add(1) |
      which == "not a function" => which(1) |
      which == "null call" => null() |
      which == "action" => [act][0](1) |
      which == "index call" => [add][0](1) |
      "unknown"
    }
  }
}
"""


@pytest.mark.parametrize(
    "which",
    [
        "defaults",
        "named",
        "closure",
        "stdlib named",
        "method",
        "not a function",
        "null call",
        "action",
        "index call",
    ],
)
def test_calls_agree(which: str) -> None:
    _same(CALLS, "run", {"which": which})


def test_a_null_argument_takes_the_default_and_extra_arguments_are_ignored() -> None:
    result = _same(CALLS, "run", {"which": "defaults"})
    assert result[1] == [[1, 10, 11], [1, 2, 3], [1, 10, 5], [1, 2, 3], [None, 10, "null10"]]


# -- errors: message, line and column as with closures --------------------------------------

ERRORS = """ruleset t.err {
  meta { shares f }
  global {
    inner = function(x) {
      y = x{"a"};
      y - 1
    }
    g = function(x) { x.map(function(v) { v * "q" }) }
    h = function(x) { -x }
    k = function(x) { 1 + inner(x) }
    f = function(which) {
      which == 1 => inner({"a": "abc"}) |
      which == 2 => g([1, 2]) |
      which == 3 => h("q") |
      which == 4 => k({"a": "z"}) |
      which == 5 => [1].reduce(1) |
      which == 6 => "x".map(function(v) { v }) |
      ent:x(1)
    }
  }
}
"""


@pytest.mark.parametrize("which", [1, 2, 3, 4, 5, 6, 7])
def test_runtime_errors_carry_the_same_line_and_column(which: int) -> None:
    result = _same(ERRORS, "f", {"which": which})
    assert result[0] == "error"
    assert result[3] is not None
    assert result[4] is not None


def test_an_error_in_an_inner_function_points_at_the_inner_expression() -> None:
    result = _same(ERRORS, "f", {"which": 1})
    assert result[3:5] == (6, 7)  # `y - 1`
    assert "cannot be subtracted" in result[2]


def test_compile_errors_are_the_same_as_with_closures() -> None:
    sources = [
        "ruleset a { global { f = function(x, x) { x } } }",
        "ruleset a { global { f = function(x) { y = 1; y = 2; y } } }",
        "ruleset a { global { f = function() { nope } } }",
        "ruleset a { global { f = function() { nope(1) + also } } }",
        "ruleset a { global { f = function() { 1.nope() } } }",
        "ruleset a { global { f = function() { math:nope(1) } } }",
        "ruleset a { global { f = function() { 1.split(nope = 1) } } }",
        "ruleset a { global { f = function() { g(a = 1, 2) } g = function() { 1 } } }",
        "ruleset a { global { f = function() { send_directive } } }",
        "ruleset a { global { f = function() { x.split(b = undefined1, a = undefined2) } } }",
    ]
    for source in sources:
        messages = []
        for use_codegen in (False, True):
            with pytest.raises(krl.KrlCompileError) as info:
                krl.compile_ruleset(source, codegen=use_codegen)
            messages.append(str(info.value))
        assert messages[0] == messages[1], source


# -- budget and depth -----------------------------------------------------------------------

BUDGET = """
ruleset t.budget {
  meta { shares fib, each, deep, nested }
  global {
    fib = function(n) { n < 2 => n | fib(n - 1) + fib(n - 2) }
    each = function(n) {
      0.range(n - 1).map(function(x) { x + 1 }).filter(function(x) { x %% 2 })
        .reduce(function(a, b) { a + b }, 0)
    }
    deep = function(n) { n <= 0 => 0 | deep(n - 1) + 1 }
    nested = function(n) { %(nest)s }
  }
}
"""


def _budget_source() -> str:
    # Conditionals nested deeper than the generator nests Python blocks.
    depth = codegen.MAX_NESTING + 20
    nest = "".join(f"n == {i} => {i} | " for i in range(depth)) + "-1"
    return BUDGET % {"nest": nest}


def test_one_step_per_call_and_per_iteration() -> None:
    source = _budget_source()
    fib = _same(source, "fib", {"n": 10})
    assert fib[1:] == (55, 177)  # fib(10) makes 177 calls
    each = _same(source, "each", {"n": 10})
    # 1 call, range charges 10, map 10 iterations + 10 calls, filter 10 + 10, reduce 5 + 5
    assert each[1:] == (25, 1 + 10 + 20 + 20 + 10)


def test_step_time_and_depth_limits_hold() -> None:
    source = _budget_source()
    steps = _same(source, "fib", {"n": 25}, max_steps=5000)
    assert steps[1] == "KrlBudgetExceeded"
    assert "step budget of 5000" in steps[2]
    depth = _same(source, "deep", {"n": 150})
    assert depth[1] == "KrlBudgetExceeded"
    assert "call depth limit of 100" in depth[2]
    assert _same(source, "deep", {"n": 99})[1] == 99
    slow = _query(krl.compile_ruleset(source), "fib", {"n": 40}, max_steps=10**12, max_seconds=0)
    assert slow[1] == "KrlBudgetExceeded"
    assert "time budget" in slow[2]


def test_python_stack_exhaustion_is_a_budget_error() -> None:
    # Not _same: how many calls fit on Python's stack differs, so the steps do too.
    for rs in _both(_budget_source()):
        result = _query(rs, "deep", {"n": 100_000}, max_depth=1_000_000)
        assert result[1] == "KrlBudgetExceeded"
        assert "the Python stack ran out" in result[2]


def test_nesting_deeper_than_generated_blocks_falls_back_to_closures() -> None:
    source = _budget_source()
    for n in (0, codegen.MAX_NESTING + 5, codegen.MAX_NESTING + 19, 1000):
        expected = n if n < codegen.MAX_NESTING + 20 else -1
        assert _same(source, "nested", {"n": n})[1] == expected


# -- the generated source -----------------------------------------------------------------

HOSTILE = r"""
ruleset t.hostile {
  meta { shares f, g }
  global {
    __import__ = "'); import os; os.system('x') #"
    f = function(R, P, F, B, s, d, e, _type, _k0, v1, t1, __builtins__, exec) {
      _loc = <<#{R}-#{P}-#{F}-#{__import__}>>;
      [_loc, B + s + d, e, _type, _k0, v1, t1, __builtins__, exec, x.__class__, x{"__class__"}]
    }
    x = {"a": 1}
    g = function(eval) { f(eval, "'''", "\n", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) }
  }
}
"""

# Everything the generator may write: its own names and keywords, the attributes it
# reads, and numbers (slot indexes, the ±2**53 bounds, 0, 1). No strings at all.
_WORDS = {
    *(
        "def if else elif not and is None True False return try except raise finally pass as for in",
    ),
}
_OWN_NAME = re.compile(r"(P|R|B|s|d|e|F|_|(i\d+_)?[vt]\d+|_k\d+|_f\d+|_c\d+|_loc)\Z")
_ATTRIBUTES = {
    "budget",
    "steps",
    "limit",
    "tick",
    "depth",
    "max_depth",
    "entry",
    "frame",
    "call",
    "append",
}


def _tokens(source: str) -> Iterator[tokenize.TokenInfo]:
    return tokenize.generate_tokens(io.StringIO(source).readline)


def _check_vocabulary(source: str) -> None:
    words = set(" ".join(_WORDS).split())
    helpers = set(codegen._HELPERS)
    previous = ""
    for tok in _tokens(source):
        if tok.type == tokenize.STRING:
            raise AssertionError(f"a string literal in generated code: {tok.string}")
        if tok.type == tokenize.NAME:
            if previous == ".":
                assert tok.string in _ATTRIBUTES, tok.string
            else:
                ok = tok.string in words or tok.string in helpers or _OWN_NAME.match(tok.string)
                assert ok, f"unexpected name {tok.string!r}"
        if tok.type == tokenize.NUMBER:
            assert tok.string.isdigit(), tok.string
        previous = tok.string


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every generated source compiled while the test runs."""
    seen: list[str] = []
    load = codegen._Unit.load

    def recording(unit: Any) -> None:
        load(unit)
        seen.append(unit.ns["__krl_source__"])

    monkeypatch.setattr(codegen._Unit, "load", recording)
    return seen


def test_hostile_names_and_strings_stay_data(sources: list[str]) -> None:
    result = _same(HOSTILE, "g", {"eval": "E"})
    assert result[1][0] == "E-'''-\\n-'); import os; os.system('x') #"
    assert result[1][1:] == [6, 4, 5, 6, 7, 8, 9, 10, None, None]
    assert sources
    for source in sources:
        _check_vocabulary(source)
        for word in ("import", "system", "eval", "exec", "__class__"):
            assert word not in source


def test_generated_code_has_no_builtins() -> None:
    rs = krl.compile_ruleset(HOSTILE)
    frame = rs._globals(krl.runtime.Run(rs, FakeContext(), None, _budget(), None))  # type: ignore[arg-type]
    fn = frame[rs._global_names["f"]]
    assert isinstance(fn, krl.runtime.KrlFunction)
    assert fn.entry.__globals__["__builtins__"] == {}


def test_every_shared_case_generates_only_the_generator_vocabulary(sources: list[str]) -> None:
    for case in CASES:
        for source in case.rulesets:
            with contextlib.suppress(krl.KrlError):
                krl.compile_ruleset(source)
    assert len(sources) > 100
    for source in sources:
        _check_vocabulary(source)


def test_a_very_long_operator_chain_is_a_compile_error_not_a_crash() -> None:
    chain = " + ".join(["n"] * 3000)
    source = f"ruleset t.chain {{ meta {{ shares f }} global {{ f = function(n) {{ {chain} }} }} }}"
    for use_codegen in (False, True):
        with pytest.raises(krl.KrlCompileError, match="nested too deeply"):
            krl.compile_ruleset(source, codegen=use_codegen)
    short = " + ".join(["n"] * 200)
    rs = krl.compile_ruleset(source.replace(chain, short))
    assert rs.query("f", {"n": 1}, FakeContext(), _budget()) == 200


# -- map, filter and reduce with a function literal run inline --------------------------

LOOPS = """
ruleset t.loops {
  meta { shares run, atDepth }
  global {
    g = 100
    run = function(which, xs) {
      k = 3;
      which == "map0" => xs.map(function() { k }) |
      which == "map1" => xs.map(function(x) { x * k + g }) |
      which == "map2" => xs.map(function(x, i) { [x, i] }) |
      which == "map3" => xs.map(function(x, i, all) { all.length() + i }) |
      which == "map decl" => xs.map(function(x) { y = x + 1; z = y * y; z - k }) |
      which == "map call" => map(xs, function(x) { x + 1 }) |
      which == "filter1" => xs.filter(function(x) { x % 2 == 0 }) |
      which == "filter2" => xs.filter(function(x, i) { i > 0 && x }) |
      which == "filter bool" => xs.filter(function(x) { x > 1 }) |
      which == "reduce1" => xs.reduce(function(a) { a + 1 }, 0) |
      which == "reduce2" => xs.reduce(function(a, b) { a + b }, "") |
      which == "reduce4" => xs.reduce(function(a, b, i, all) { a + b * i + all.length() }, 0) |
      which == "reduce no init" => xs.reduce(function(a, b) { a + b }) |
      which == "nested" => xs.map(function(x) { xs.map(function(y) { x * y }) }) |
      which == "error" => xs.map(function(x) { x - {} }) |
      which == "error plain" => xs.map(function(x) { x{"a"} - 1 }) |
      which == "defaults" => xs.map(function(x, i = 5) { i }) |
      which == "named" => xs.map(iter = function(x) { x }) |
      "unknown"
    }
    atDepth = function(n, xs) { n <= 0 => xs.map(function(x) { x }) | atDepth(n - 1, xs) }
  }
}
"""

INPUTS: list[object] = [[], [1, 2, 3], [1, "a", None, [2], {"b": 1}], {"a": 1, "b": 2}, None, "str"]
WHICH = [
    "map0",
    "map1",
    "map2",
    "map3",
    "map decl",
    "map call",
    "filter1",
    "filter2",
    "filter bool",
    "reduce1",
    "reduce2",
    "reduce4",
    "reduce no init",
    "nested",
    "error",
    "error plain",
    "defaults",
    "named",
]


@pytest.mark.parametrize("which", WHICH)
def test_inline_loops_agree_on_every_input(which: str, sources: list[str]) -> None:
    closures, generated = _both(LOOPS)
    for xs in INPUTS:
        args = {"which": which, "xs": xs}
        assert _query(generated, "run", args) == _query(closures, "run", args), xs
    assert any("for " in source for source in sources)  # some of them ran inline


def test_inline_loops_keep_the_depth_and_step_limits() -> None:
    # The map's function runs one level deeper than atDepth(0): fine at 98, not at 99.
    assert _same(LOOPS, "atDepth", {"n": 98, "xs": [1, 2]})[1] == [1, 2]
    deep = _same(LOOPS, "atDepth", {"n": 99, "xs": [1, 2]})
    assert deep[1] == "KrlBudgetExceeded"
    assert "call depth limit" in deep[2]
    for limit in range(1, 12):  # the step budget runs out at every point of the loop
        _same(LOOPS, "run", {"which": "reduce4", "xs": [1, 2, 3]}, max_steps=limit)
    steps = _same(LOOPS, "run", {"which": "filter1", "xs": list(range(10))})
    assert steps[1:] == ([0, 2, 4, 6, 8], 1 + 20)


def test_an_inline_loop_in_a_parameter_default_checks_the_depth_the_call_would() -> None:
    # A default runs before the function's own depth is counted.
    source = """ruleset t.dflt { meta { shares f } global {
      f = function(n, xs, ys = xs.map(function(x) { x + n })) { n <= 0 => ys | f(n - 1, xs) }
    } }"""
    for n in (97, 98, 99, 100):
        _same(source, "f", {"n": n, "xs": [1, 2]})
