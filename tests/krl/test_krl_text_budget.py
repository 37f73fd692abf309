"""Text a transaction builds is paid for by its length (krl.stdlib.pay_text): no rule or query
can take the node's memory by doubling a string, and a string past MAX_TEXT is refused before
it is built. Both ways of running KRL (closures, generated functions) agree."""

from __future__ import annotations

import random
from typing import Any

import pytest

import krl
from krl.stdlib import MAX_TEXT, TEXT_FREE, TEXT_PER_STEP
from tests.krl.krl_fakes import FakeContext

SOURCE = """
ruleset text.budget {
  meta { shares doubled, chevrons, joined, squared, called, formatted, short, global_double }
  global {
    doubled = function(s, n) { n <= 0 => s.length() | doubled(s + s, n - 1) }
    chevrons = function(s, n) { n <= 0 => s.length() | chevrons(<<#{s}#{s}>>, n - 1) }
    joined = function(s, n) { n <= 0 => s.length() | joined([s, s].join(s), n - 1) }
    squared = function(s, n) { n <= 0 => s.length() | squared(s.replace(re#x#g, s), n - 1) }
    called = function(s, n) {
      n <= 0 => s.length() | called(s.replace(re#x#g, function(m) { s }), n - 1)
    }
    formatted = function(s, n) {
      n <= 0 => s.length() | formatted(s.sprintf(<<%s %s %s %s>>), n - 1)
    }
    short = function(n) { [1, 2, 3].map(function(x) { "ab" + x }).join("") + n }
    big = "x" + "y"
    global_double = function(n) { 0.range(n).reduce(function(a, b) { a + a }, big).length() }
  }
}
"""


def query(rs: krl.Ruleset, name: str, args: dict[str, object], **budget: Any) -> tuple[Any, ...]:
    b = krl.Budget(random=random.Random(7), clock=lambda: 1_700_000_000.0, **budget)
    try:
        return ("ok", rs.query(name, args, FakeContext(), b), b.steps)
    except krl.KrlError as err:
        return ("error", type(err).__name__, str(err), b.steps)


def both(name: str, args: dict[str, object], **budget: Any) -> tuple[Any, ...]:
    closures = krl.compile_ruleset(SOURCE, codegen=False)
    generated = krl.compile_ruleset(SOURCE)
    expected = query(closures, name, args, **budget)
    assert query(generated, name, args, **budget) == expected
    return expected


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("doubled", "the string joined by +"),
        ("chevrons", "the joined string"),
        ("joined", "the joined string"),
        ("squared", "the replaced string"),
        ("called", "the replaced string"),
        ("formatted", "the formatted string"),
    ],
)
def test_a_string_that_keeps_growing_is_refused_before_it_is_built(name: str, what: str) -> None:
    # 40 doublings of "xx" would be 2**41 characters in 40 steps (the others grow faster)
    result = both(name, {"s": "xx", "n": 40}, max_steps=10**9)
    assert result[:2] == ("error", "KrlRuntimeError")
    assert f"{what} would be " in result[2]
    assert f"characters long; the limit is {MAX_TEXT}" in result[2]


def test_long_text_costs_steps_and_the_step_budget_stops_it() -> None:
    # 2**18 characters after 18 doublings: each long one cost a step per TEXT_PER_STEP
    ok = both("doubled", {"s": "x", "n": 18})
    paid = sum(2**k // TEXT_PER_STEP for k in range(1, 19) if 2**k > TEXT_FREE)
    assert ok[:2] == ("ok", 2**18)
    assert ok[2] >= paid
    stopped = both("doubled", {"s": "x", "n": 23}, max_steps=100_000)
    assert stopped[:2] == ("error", "KrlBudgetExceeded")
    assert "step budget of 100000" in stopped[2]
    # in a rule's own code (closures) as in functions
    assert both("global_double", {"n": 30}, max_steps=10**9)[1] == "KrlRuntimeError"


def test_short_text_costs_nothing_more() -> None:
    # a call, three iterations of map and their calls: no step for the text
    assert both("short", {"n": 7})[:3] == ("ok", "ab1ab2ab37", 7)
