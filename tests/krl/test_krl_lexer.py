from __future__ import annotations

import pytest

from krl.errors import KrlSyntaxError
from krl.lexer import tokenize


def kinds(source: str) -> list[tuple[str, object]]:
    return [(t.kind, t.value) for t in tokenize(source)[:-1]]


def test_symbols_numbers_and_punctuation() -> None:
    assert kinds("a = 1.5 + .5 <=> b2") == [
        ("SYMBOL", "a"),
        ("RAW", "="),
        ("NUMBER", 1.5),
        ("RAW", "+"),
        ("NUMBER", 0.5),
        ("RAW", "<=>"),
        ("SYMBOL", "b2"),
    ]


def test_longest_punctuation_first() -> None:
    assert [t.text for t in tokenize("<= < || | == => = := : >= >< > && != ")[:-1]] == [
        "<=", "<", "||", "|", "==", "=>", "=", ":=", ":", ">=", "><", ">", "&&", "!=",
    ]  # fmt: skip


def test_integral_decimal_is_int() -> None:
    assert kinds("2.0 007") == [("NUMBER", 2), ("NUMBER", 7)]


def test_dot_after_value_is_member_access() -> None:
    assert kinds("a.b x[0].c") == [
        ("SYMBOL", "a"), ("RAW", "."), ("SYMBOL", "b"),
        ("SYMBOL", "x"), ("RAW", "["), ("NUMBER", 0), ("RAW", "]"), ("RAW", "."), ("SYMBOL", "c"),
    ]  # fmt: skip
    assert kinds("1.range(3)")[:3] == [("NUMBER", 1), ("RAW", "."), ("SYMBOL", "range")]


def test_string_escapes_only_quote_and_backslash() -> None:
    assert kinds(r'"a\"b\\c\nd"') == [("STRING", 'a"b\\c\\nd')]


def test_string_may_span_lines() -> None:
    assert kinds('"a\nb"') == [("STRING", "a\nb")]


def test_comments_are_skipped() -> None:
    assert kinds("a // line\n /* block\n */ b") == [("SYMBOL", "a"), ("SYMBOL", "b")]


def test_regexp() -> None:
    assert kinds(r"re#^a\#b\d+$#gi") == [("REGEXP", (r"^a#b\d+$", "gi"))]


def test_regexp_flags_stop_at_non_flag() -> None:
    assert kinds("re#a#if") == [("REGEXP", ("a", "i")), ("SYMBOL", "f")]


def test_chevron_with_nested_beesting() -> None:
    assert kinds('<<Hi #{ {"a": 1}{"a"} } \\>\\#{x}>>') == [
        ("CHEVRON_OPEN", "<<"),
        ("CHEVRON_STRING", "Hi "),
        ("BEESTING_OPEN", "#{"),
        ("RAW", "{"),
        ("STRING", "a"),
        ("RAW", ":"),
        ("NUMBER", 1),
        ("RAW", "}"),
        ("RAW", "{"),
        ("STRING", "a"),
        ("RAW", "}"),
        ("BEESTING_CLOSE", "}"),
        ("CHEVRON_STRING", " >#{x}"),
        ("CHEVRON_CLOSE", ">>"),
    ]


def test_chevron_inside_beesting() -> None:
    assert [t.kind for t in tokenize("<<a#{<<b>>}c>>")] == [
        "CHEVRON_OPEN", "CHEVRON_STRING", "BEESTING_OPEN", "CHEVRON_OPEN", "CHEVRON_STRING",
        "CHEVRON_CLOSE", "BEESTING_CLOSE", "CHEVRON_STRING", "CHEVRON_CLOSE", "EOF",
    ]  # fmt: skip


def test_token_offsets() -> None:
    toks = tokenize('ab  "c"')
    assert [(t.start, t.end) for t in toks] == [(0, 2), (4, 7), (7, 7)]


@pytest.mark.parametrize(
    "source",
    ['"abc', "re#abc", "<<abc", "<<a #{ b", "/* x", "a ? b", "a ! b"],
)
def test_lex_errors(source: str) -> None:
    with pytest.raises(KrlSyntaxError):
        tokenize(source)
