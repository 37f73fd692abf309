"""The rest of the standard library: set operations, splice, pairwise, bitwise, time, math, random."""

from __future__ import annotations

import random

import pytest
from krl_fakes import evaluate

import krl

CASES = [
    # set operations, with deep equality; scalars count as one-element lists
    ("[1, 2, [3]].union([2, [3], 4])", [1, 2, [3], 4]),
    ("[1, 1, 2].union(3)", [1, 2, 3]),
    ("[1, 2].union()", [1, 2]),
    ("[1, 2, {\"a\": 1}].intersection([{\"a\": 1}, 2, 5])", [2, {"a": 1}]),
    ("[1].intersection()", []),
    ("[1, 2, 3, 2].difference([2])", [1, 3]),
    ("5.difference([5])", []),
    ("[1, 2, 3].has([3, 1])", True),
    ("[1, 2, 3].has([4])", False),
    ("[1, 2].has(2)", True),
    # once/duplicates group by string form, integer-like keys first (JavaScript key order)
    ("[\"b\", 3, 1, 2, 1, \"b\", \"a\"].once()", [2, 3, "a"]),
    ("[1, \"1\", 2, 2, \"x\", \"x\", 3].duplicates()", [1, 2, "x"]),
    ("\"x\".once()", "x"),
    ("\"x\".duplicates()", []),
    # splice
    ("[1, 2, 3, 4].splice(1, 2)", [1, 4]),
    ("[1, 2, 3, 4].splice(1, 0, [\"a\", \"b\"])", [1, "a", "b", 2, 3, 4]),
    ("[1, 2, 3].splice(1, 1, \"x\")", [1, "x", 3]),
    ("[1, 2, 3].splice(-5, 1)", [2, 3]),
    ("[1, 2, 3].splice(9, 1)", [1, 2]),
    ("[1, 2, 3].splice(1, -1)", [1]),
    ("[].splice(0, 1)", []),
    # pairwise zips lists (scalars are one-element lists) and calls the function per tuple
    ("[[1, 2, 3], [4, 5, 6]].pairwise(function(a, b) { a + b })", [5, 7, 9]),
    ("[[1, 2], 3].pairwise(function(a, b) { [a, b] })", [[1, 3], [2, None]]),
    # 32-bit bitwise operators
    ("1.shiftLeft(4)", 16),
    ("1.shiftLeft(31)", -2147483648),
    ("(-16).shiftRight(2)", -4),
    ("12.band(10)", 8),
    ("12.bor(3)", 15),
    ("12.bxor(10)", 6),
    ("5.bnot()", -6),
    ("4294967297.bor(0)", 1),
    ("\"x\".band(1)", None),
    # math
    ("math:abs(-3.5)", 3.5),
    ("math:abs(\"x\")", None),
    ("math:round(2.5)", 3),
    ("math:round(-2.5)", -2),
    ("math:round(1.005, 2)", 1.01),
    ("math:round(1234.5, -2)", 1200),
    ("math:ceiling(4.006, 2)", 4.01),
    ("math:ceiling(6040, -2)", 6100),
    ("math:floor(-4.2)", -5),
    ("math:floor(4.069, 1)", 4),
    ("math:int(-4.9)", -4),
    ("math:int(\"7.8\")", 7),
    ("math:sqrt(16)", 4),
    ("math:sqrt(-1)", None),
    ("math:hash(\"sha256\", \"hi\")",
     "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"),
    ("math:hash(\"md5\", \"hi\", \"base64\")", "SfaKXIST7CwL9ImCHCH8Ow=="),
    ("math:hmac(\"sha1\", \"key\", \"msg\")", "102900b72b7bf1031eec76b4804b66052376896b"),
    ("math:base64encode(\"héllo\")", "aMOpbGxv"),
    ("math:base64decode(\"aMOpbGxv\")", "héllo"),
    ("math:hashAlgorithms >< \"sha256\"", True),
    # time (the clock is pinned to 2024-02-29T12:00:00.250Z)
    ("time:now()", "2024-02-29T12:00:00.250Z"),
    ("time:add(time:now(), {\"minutes\": 5, \"days\": -1, \"nope\": 3, \"hours\": \"x\"})",
     "2024-02-28T12:05:00.250Z"),
    ("time:add(\"2024-01-31\", {\"months\": 1})", "2024-02-29T00:00:00.000Z"),
    ("time:add(\"2024-02-29T00:00:00Z\", {\"years\": 1})", "2025-02-28T00:00:00.000Z"),
    ("time:new(\"2011-W20-6T13:45-06:00\")", "2011-05-21T19:45:00.000Z"),
    ("time:new(\"1967342\")", "1967-12-08T00:00:00.000Z"),
    ("time:new(\"08:30\")", "2024-02-29T08:30:00.000Z"),
    ("time:new(0)", "1970-01-01T00:00:00.000Z"),
    ("time:strftime(\"2024-03-05T07:08:09Z\", \"%Y/%m/%d %H:%M:%S %a %B %j %e|%L|%q\")",
     "2024/03/05 07:08:09 Tue March 065  5|000|%q"),
    ("time:compare(\"2024-01-01\", \"2023-12-31T23:59:59Z\")", 1),
    ("time:compare(0, \"1970-01-01T00:00:00Z\")", 0),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "expected"), CASES)
def test_stdlib_additions(expr: str, expected: object) -> None:
    budget = krl.Budget(clock=lambda: 1709208000.25)
    assert evaluate(expr, budget=budget) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("[1].pairwise(function(a) { a })", "needs a longer array"),
        ('[1, 2].splice("x", 1)', "cannot use x as an index"),
        ('time:new("not a date")', "Invalid date string: not a date"),
        ('math:hash("nope", "x")', "doesn't recognize the hash algorithm nope"),
        ('math:hmac("sha1", 1, "x")', "needs a key string"),
    ],
)
def test_stdlib_addition_errors(expr: str, message: str) -> None:
    with pytest.raises(krl.KrlRuntimeError, match=message):
        evaluate(expr)


def test_random_module_draws_from_the_budget_source() -> None:
    expr = "[random:integer(6, 1), random:number(), random:word(), random:uuid(), random:integer()]"
    first = evaluate(expr, budget=krl.Budget(random=random.Random(42)))
    again = evaluate(expr, budget=krl.Budget(random=random.Random(42)))
    assert first == again
    die, number, word, uuid, coin = first
    assert 1 <= die <= 6
    assert 0 <= number <= 1
    assert isinstance(word, str)
    assert word.isalpha()
    assert uuid.startswith("c")
    assert len(uuid) == 25
    assert coin in (0, 1)
    assert evaluate("random:integer(1, 3)", budget=krl.Budget(random=random.Random(1))) in (1, 2, 3)
