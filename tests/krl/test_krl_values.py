"""JavaScript-like value semantics and the stdlib subset, evaluated through real KRL."""

from __future__ import annotations

import pytest
from krl_fakes import FakeContext, evaluate

import krl
from krl.runtime import format_number

SEMANTICS = [
    # + concatenates unless both sides are numbers
    ('"a" + 1', "a1"),
    ('1 + "1"', "11"),
    ("null + 1", "null1"),
    ("1 + 2", 3),
    ("0.1 + 0.2", 0.30000000000000004),
    ("[1] + [2]", "[Array][Array]"),
    ('{"a": 1} + ""', "[Map]"),
    ("true + 1", "true1"),
    ("1.5 + 1.5", 3),
    # numeric operators coerce
    ('"5" * 2', 10),
    ('"3" * "4"', 12),
    ('"10" - 4', 6),
    ("1 / 2", 0.5),
    ("5 / 2", 2.5),
    ("4 / 2", 2),
    ("1 / 0", 0),
    ("7 % 0", 0),
    ("-7 % 3", -1),
    ("7.5 % 2", 1.5),
    ("[1, 2, 3] * 2", 6),
    ("null * 3", 0),
    ('-"5"', -5),
    ('+"5"', "5"),
    # equality is deep and strict about types
    ('"1" == 1', False),
    ("1 == 1.0", True),
    ('[1, {"a": [2]}] == [1, {"a": [2]}]', True),
    ('{"a": 1, "b": 2} == {"b": 2, "a": 1}', True),
    ("[1, 2] != [2, 1]", True),
    ("null == null", True),
    ("true == 1", False),
    # ordering: numbers if both convert, else strings
    ('"10" < "9"', False),
    ('"abc" < "b"', True),
    ("[1, 2, 3] > 2", True),
    ("null < 1", True),
    ("2 <=> 10", -1),
    ('"b" <=> "a"', 1),
    ('"2" cmp "10"', 1),
    ("3 cmp 3", 0),
    # like, ><
    ('"hello" like re#^h.l#', True),
    ('"hello" like "L+"', False),
    ('"hello" like re#L+#i', True),
    ("[1, [2]] >< [2]", True),
    ('{"a": 1} >< "a"', True),
    ('"abc" >< "b"', False),
    # truthiness through &&, ||, not and =>
    ("0 || 5", 5),
    ('[] || "x"', []),
    ('"" || "dflt"', "dflt"),
    ('"0" && "yes"', "yes"),
    ("{} && 1", 1),
    ("null && 1", None),
    ("not 0", True),
    ('not ""', True),
    ("not []", False),
    ('0 => "t" | "f"', "f"),
    ('"false" => "t" | "f"', "t"),
    ("false => 1 | null => 2 | 3", 3),
    # chevrons convert with .as("String")
    ("<<#{1}-#{null}-#{[1]}-#{true}-#{2.50}>>", "1-null-[Array]-true-2.5"),
    ("<<a\\>>b>>", "a>>b"),
]


@pytest.mark.parametrize(("expr", "expected"), SEMANTICS)
def test_semantics(expr: str, expected: object) -> None:
    result = evaluate(expr)
    assert result == expected
    assert type(result) is type(expected)


STDLIB = [
    ("null.defaultsTo(0)", 0),
    ('"".defaultsTo(0)', ""),
    ("0.defaultsTo(1)", 0),
    ('"5".as("Number")', 5),
    ('"2.50".as("Number")', 2.5),
    ('"0x1F".as("Number")', 31),
    ('"abc".as("Number")', None),
    ('5.as("String")', "5"),
    ('1.0e0.as("String")' if False else '1.5.as("String")', "1.5"),
    ('"false".as("Boolean")', False),
    ('0.as("Boolean")', False),
    ('"x".as("Boolean")', True),
    ('[1].as("Array")', [1]),
    ('"^a.c$".as("RegExp").typeof()', "RegExp"),
    ('"abc".match("^a.c$".as("RegExp"))', True),
    ("null.isnull()", True),
    ("0.isnull()", False),
    (
        '[null, true, 1, "s", "0x1", [], {}, re#a#].map(function(v) { v.typeof() })',
        ["Null", "Boolean", "Number", "String", "Hex", "Array", "Map", "RegExp"],
    ),
    ("typeof(function(){1})", "Function"),
    ('"abc".length()', 3),
    ('{"a": 1}.length()', 1),
    ("5.length()", 0),
    ('{"a": 1, "b": 2}.keys()', ["a", "b"]),
    ('{"a": 1, "b": 2}.values()', [1, 2]),
    ('{"a": {"b": 1}}.keys(["a"])', ["b"]),
    ('{"a": 1}.put({"b": 2})', {"a": 1, "b": 2}),
    ('{"a": 1}.put(["x", "y"], 2)', {"a": 1, "x": {"y": 2}}),
    ('{}.put(["a", 0], 1)', {"a": {"0": 1}}),
    ('{}.set(["a", 0], 1)', {"a": [1]}),
    ('{"a": {"b": [1, 2]}}.get(["a", "b", 1])', 2),
    ('{"a": {"b": 1, "c": 2}}.delete(["a", "b"])', {"a": {"c": 2}}),
    ("[1].append(2, [3, 4])", [1, 2, 3, 4]),
    ("null.append(1)", [None, 1]),
    ("[1, 2, 3].head()", 1),
    ("[1, 2, 3].tail()", [2, 3]),
    ("5.head()", 5),
    ("[1, 2, 3].map(function(x) { x * 2 })", [2, 4, 6]),
    ('{"a": 1, "b": 2}.map(function(v, k) { k + v })', {"a": "a1", "b": "b2"}),
    ("[1, 2, 3, 4].filter(function(x) { x % 2 == 0 })", [2, 4]),
    ('{"a": 1, "b": 2}.filter(function(v) { v > 1 })', {"b": 2}),
    ("[1, 2, 3].reduce(function(a, b) { a + b })", 6),
    ("[1, 2, 3].reduce(function(a, b) { a + b }, 10)", 16),
    ("[].reduce(function(a, b) { a + b })", 0),
    ("[7].reduce(function(a, b) { a + b })", 7),
    ("[1, 2].any(function(x) { x > 1 })", True),
    ("[1, 2].all(function(x) { x > 1 })", False),
    ("[1, 2].none(function(x) { x > 5 })", True),
    ('[1, null, "a"].join("-")', "1-null-a"),
    ("[1, 2].join()", "1,2"),
    ('"a,b,,c".split(",")', ["a", "b", "", "c"]),
    ('"a1b22c".split(re#\\d+#)', ["a", "b", "c"]),
    ('"Hello".uc() + "Hello".lc()', "HELLOhello"),
    ('"hello".capitalize()', "Hello"),
    ('"  x ".trim()', "x"),
    ('"abc".match(re#B#i)', True),
    ('"abc".match(5)', False),
    ('"a1b2".extract(re#(\\w)(\\d)#)', ["a", "1"]),
    ('"a1b2".extract(re#\\d#g)', ["1", "2"]),
    ('"abc".extract(re#(\\d)#)', []),
    ('"a.b.c".replace(".", "-")', "a-b.c"),
    ('"a1b22".replace(re#\\d+#g, "<$&>")', "a<1>b<22>"),
    ('"john smith".replace(re#(\\w+) (\\w+)#, "$2, $1")', "smith, john"),
    ('"abc".replace(re#b#, function(m) { m.uc() })', "aBc"),
    ('5.sprintf("n=%d, %d")', "n=5, 5"),
    ('"x".sprintf("<%s>")', "<x>"),
    ("[3, 1, 2].sort()", [1, 2, 3]),
    ("[10, 9, 1].sort()", [1, 10, 9]),
    ('[10, 9, 1].sort("numeric")', [1, 9, 10]),
    ('[10, 9, 1].sort("ciremun")', [10, 9, 1]),
    ('["b", "a"].sort("reverse")', ["b", "a"]),
    ("[1, 3, 2].sort(function(a, b) { b - a })", [3, 2, 1]),
    ("1.range(4)", [1, 2, 3, 4]),
    ("5.range(3)", [5, 4, 3]),
    ("[1, [2], [2]].unique()", [1, [2]]),
    ("[1, 2, 3].index(2)", 1),
    ("[1, 2, 3, 4].slice(1, 2)", [2, 3]),
    ("[1, 2, 3].reverse()", [3, 2, 1]),
    ('"hello".substr(1, 3)', "ell"),
    ('{"a": [1, 2.5, null, "s"]}.encode()', '{"a":[1,2.5,null,"s"]}'),
    ('{"a": [1]}.encode(2)', '{\n  "a": [\n    1\n  ]\n}'),
    ('"{\\"a\\": [1, 2.0]}".decode()', {"a": [1, 2]}),
    ('"not json".decode()', "not json"),
    ('lc("X")', "x"),
    ("append([1], 2)", [1, 2]),
    ('{"a": {"b": 1}}{["a", "b"]}', 1),
    ('{"a": 1}{"missing"}', None),
    ('"abc"{"x"}', None),
    ('"abc"[1]', None),
    ("[1, 2][1]", 2),
    ("[1, 2][5]", None),
    ('{"a": 1}.a', 1),
    ('{"a": {"b": 2}}["a"]["b"]', 2),
    ("noop()", None),
]


@pytest.mark.parametrize(("expr", "expected"), STDLIB)
def test_stdlib(expr: str, expected: object) -> None:
    assert evaluate(expr) == expected


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1, "1"), (1.5, "1.5"), (0.1 + 0.2, "0.30000000000000004"), (1e21, "1e+21"),
        (1e20, "100000000000000000000"), (1.5e-7, "1.5e-7"), (0.000001, "0.000001"),
        (-2.5, "-2.5"), (float("inf"), "Infinity"), (123456789.125, "123456789.125"),
    ],
)  # fmt: skip
def test_number_formatting(number: float, text: str) -> None:
    assert format_number(number) == text


def test_named_arguments_and_defaults() -> None:
    assert evaluate("f = function(a, b = a + 1, c = 3) { [a, b, c] }; f(1, c = 9)") == [1, 2, 9]


def test_null_argument_triggers_default() -> None:
    assert evaluate("f = function(a = 5) { a }; f(null)") == 5


def test_closures_capture_scope() -> None:
    source = """
      adder = function(n) { function(x) { x + n } };
      add2 = adder(2);
      [1, 2].map(add2)
    """
    assert evaluate(source) == [3, 4]


def test_user_function_as_method() -> None:
    assert evaluate("double = function(x) { x * 2 }; 21.double()") == 42


def test_stdlib_function_as_value() -> None:
    assert evaluate('["a", "b"].map(uc)') == ["A", "B"]


def test_defaults_to_with_message_logs() -> None:
    ctx = FakeContext()
    assert evaluate('null.defaultsTo(1, "was null")', ctx) == 1
    assert ctx.logs == [("debug", "[DEFAULTSTO] was null")]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('1 - "a"', "a cannot be subtracted from 1"),
        ("re#x# * 2", "re#x# cannot be multiplied by 2"),
        ('1.as("Nope")', 'Cannot use the .as("Nope") operator with 1 (type Number)'),
        ("5.map(function(x) { x })", "map only works on collections (Array or Map), not Number"),
        ("[1].map(5)", "map expects a function, found Number"),
        (
            '"x" like "("',
            "invalid regular expression re#(#: missing ), unterminated subpattern at position 0",
        ),
    ],
)
def test_runtime_errors(expr: str, message: str) -> None:
    with pytest.raises(krl.KrlRuntimeError) as info:
        evaluate(expr)
    assert info.value.message == message
