"""Collection operators at their edges, as pico-engine's krl-stdlib behaves.

The shared case files (stdlib_collections.json) hold the reference suite's own checks;
these cover the neighbouring inputs the fixes for those cases also decide: when a
higher-order operator needs its function, slice's index rules, put below the top of
a path, sort with something that is not a function, and the string form of an action.
"""

from __future__ import annotations

import re

import pytest
from krl_fakes import evaluate

import krl
from krl.errors import KrlRuntimeError

RESULTS = [
    # No function: map, filter and collect use the identity.
    ('[0, 1, "", "a", null].filter()', [1, "a"]),
    ('{"a": 0, "b": 2}.filter()', {"b": 2}),
    ('{"a": 1, "b": null}.map()', {"a": 1, "b": None}),
    ('["x", "y", "x"].collect(null)', {"x": ["x", "x"], "y": ["y"]}),
    # ... and no function is needed when there is nothing to call it on.
    ("[].map(5)", []),
    ("[].any(5)", False),
    ("{}.none(5)", True),
    ("[].reduce()", 0),
    ("[].reduce(null, 7)", 7),
    # slice: no index is the whole Array; slice(i) keeps 0..i, so slice(length) is all.
    ("[1, 2, 3].slice()", [1, 2, 3]),
    ("[1, 2, 3].slice(3)", [1, 2, 3]),
    ("[1, 2, 3].slice(4)", []),
    ('[1, 2, 3].slice("1")', [1, 2]),
    ("[1, 2, 3, 4, 5].slice(-2)", [1, 2, 3, 4]),  # lodash: a negative end counts back
    ("[1, 2, 3, 4, 5].slice(-9)", []),
    ("[1, 2, 3, 4].slice(2.5, 0.5)", [1, 2, 3]),  # lodash truncates the ends: 0 to 3
    ("[1, 2, 3].slice(-0.5, 1)", []),  # checked before truncating: -0.5 is out of range
    ("[].slice(function() { null })", []),
    # put: below the top, an Array keeps an index up to its length, else becomes a Map.
    ('{"l": [1]}.put(["l", "1"], 2)', {"l": [1, 2]}),
    ('{"l": [1]}.put(["l", 2], 3)', {"l": {"0": 1, "2": 3}}),
    ('{"l": [[1]]}.put(["l", 0, 3], 9)', {"l": [{"0": 1, "3": 9}]}),
    ('{"l": [1]}.put(["l", "x", "y"], 2)', {"l": {"0": 1, "x": {"y": 2}}}),
    ('[[1]].put([0, "1"], 2)', [[1, 2]]),
    ('["a"].put([2], "c")', ["a", None, "c"]),  # the top Array is padded
    ('{"a": 1}.put(["a", "b"], 2)', {"a": {"b": 2}}),
    # sort: anything but a sort name or a function sorts by default.
    ("[10, 9, 1].sort(5)", [1, 10, 9]),
    ('[10, 9, 1].sort("bogus")', [1, 10, 9]),
    ("[10, 9, 1].sort(defaction(x) { noop() })", [1, 10, 9]),
    # encode: functions and actions by their type, a regex by its text.
    (
        "[function() { 1 }, defaction() { noop() }, re#x#i].encode()",
        '["[Function]","[Action]","re#x#i"]',
    ),
]


@pytest.mark.parametrize(("expr", "expected"), RESULTS)
def test_collection_operator_results(expr: str, expected: object) -> None:
    assert evaluate(expr) == expected


ERRORS = [
    # A function is needed as soon as there is an element.
    ("[1].all()", "all expects a function, found Null"),
    ("[1].map(5)", "map expects a function, found Number"),
    ('{"a": 1}.collect("f")', "collect expects a function, found String"),
    ("[1].reduce()", "reduce expects a function, found Null"),
    ("[1, 2].reduce(null, 0)", "reduce expects a function, found Null"),
    # A non-collection is refused before the function is looked at.
    ("5.any(function(x) { x })", "any only works on collections (Array or Map), not Number"),
    ('"ab".filter()', "filter only works on collections (Array or Map), not String"),
    ('"abc".reverse()', "reverse only works on Arrays, not String"),
    ("null.reverse()", "reverse only works on Arrays, not Null"),
    ('[1, 2].pairwise("f")', "The .pairwise() operator cannot use f as a function"),
    ("[1, 2].slice(re#1#)", "The .slice() operator cannot use re#1# as an index"),
    ('[1, 2].slice(0, "x")', "The .slice() operator cannot use x as the other index"),
]


@pytest.mark.parametrize(("expr", "message"), ERRORS)
def test_collection_operator_errors(expr: str, message: str) -> None:
    with pytest.raises(KrlRuntimeError, match="^" + re.escape(message)):
        evaluate(expr)


def test_higher_order_operators_charge_a_step_per_element_with_no_function() -> None:
    budget = krl.Budget()
    evaluate("[1, 2, 3, 4].map()", budget=budget)
    mapped = budget.steps
    budget = krl.Budget()
    evaluate("[1, 2].map()", budget=budget)
    assert mapped - budget.steps == 2
