"""The parser's speed devices keep its results: fast node builders, the one-regex lexer, gc."""

from __future__ import annotations

import dataclasses
import gc

import pytest

import krl
from krl import ast
from krl import parser as krl_parser
from krl.lexer import scan, tokenize


def test_builders_make_the_same_frozen_nodes_as_the_constructors() -> None:
    span = ast.Span(3, 7)
    built_span = krl_parser._span(3, 7)
    assert built_span == span
    assert hash(built_span) == hash(span)
    assert type(built_span) is ast.Span
    ident = krl_parser._identifier(3, 7, "name")
    assert ident == ast.Identifier(span, "name")
    call = krl_parser._call(0, 9, ident, (krl_parser._arg(span, None, ident),))
    assert call == ast.Call(
        ast.Span(0, 9), ast.Identifier(span, "name"), (ast.Arg(span, None, ident),)
    )
    binary = krl_parser._binary(1, 2, "+", ident, ident)
    assert binary == ast.Binary(ast.Span(1, 2), "+", ident, ident)
    assert repr(binary) == repr(ast.Binary(ast.Span(1, 2), "+", ident, ident))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.name = "other"  # type: ignore[misc]


def test_parsed_tree_compares_equal_to_one_built_by_hand() -> None:
    tree = krl.parse_expression('f(a, "s").g{"k"} + 1')
    s = ast.Span
    f_call = ast.Call(
        s(0, 9),
        ast.Identifier(s(0, 1), "f"),
        (
            ast.Arg(s(2, 3), None, ast.Identifier(s(2, 3), "a")),
            ast.Arg(s(5, 8), None, ast.String(s(5, 8), "s")),
        ),
    )
    path = ast.Path(
        s(0, 16),
        ast.DotAccess(s(0, 11), f_call, ast.Identifier(s(10, 11), "g")),
        ast.String(s(12, 15), "k"),
    )
    assert tree == ast.Binary(s(0, 20), "+", path, ast.Number(s(19, 20), 1))


@pytest.mark.parametrize(
    ("source", "tokens"),
    [
        ("a.5.3", [("SYMBOL", "a"), ("RAW", "."), ("NUMBER", 5.3)]),
        (".5.3", [("NUMBER", 0.5), ("RAW", "."), ("NUMBER", 3)]),
        ("x = .25", [("SYMBOL", "x"), ("RAW", "="), ("NUMBER", 0.25)]),
        ("re#a#gi re", [("REGEXP", ("a", "gi")), ("SYMBOL", "re")]),
        ("rest<<a>>", [("SYMBOL", "rest"), ("CHEVRON_OPEN", "<<"), ("CHEVRON_STRING", "a"), ("CHEVRON_CLOSE", ">>")]),
        ("a<=b>=c><d", [("SYMBOL", "a"), ("RAW", "<="), ("SYMBOL", "b"), ("RAW", ">="), ("SYMBOL", "c"), ("RAW", "><"), ("SYMBOL", "d")]),
        ("a>>b", [("SYMBOL", "a"), ("RAW", ">"), ("RAW", ">"), ("SYMBOL", "b")]),
        ("<<#{ {} }>>", [("CHEVRON_OPEN", "<<"), ("BEESTING_OPEN", "#{"), ("RAW", "{"), ("RAW", "}"), ("BEESTING_CLOSE", "}"), ("CHEVRON_CLOSE", ">>")]),
    ],
)  # fmt: skip
def test_rare_tokens(source: str, tokens: list[tuple[str, object]]) -> None:
    assert [(t.kind, t.value) for t in tokenize(source)[:-1]] == tokens


def test_scan_tuples_match_tokens() -> None:
    source = 'ruleset a { global { x = <<hi #{"y"}>>.length() } }'
    for (key, kind, value, start, end), tok in zip(scan(source), tokenize(source), strict=True):
        assert (kind, value, start, end) == (tok.kind, tok.value, tok.start, tok.end)
        if kind in ("SYMBOL", "RAW"):
            assert key == tok.text


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ruleset a { global { x = re#ab", "expected '#' to close the regular expression"),
        ('ruleset a { global { x = "ab', "expected '\"' to close the string"),
        ("ruleset a { /* x", "expected '*/' to close the comment"),
        ("ruleset a { global { x = <<a #{ b", "expected '}' to close the '#{'"),
        ("ruleset a { global { x = <<a", "expected '>>' to close the chevron string"),
        ("ruleset a { global { x = a & b } }", "unexpected character '&'"),
    ],
)
def test_unclosed_and_unexpected(source: str, message: str) -> None:
    with pytest.raises(krl.KrlSyntaxError) as info:
        krl.parse_ruleset(source)
    assert info.value.message.startswith(message)


@pytest.mark.parametrize("enabled", [True, False])
def test_parse_leaves_the_collector_as_it_found_it(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        if enabled:
            gc.enable()
        else:
            gc.disable()
        krl.parse_ruleset("ruleset a { }")
        assert gc.isenabled() is enabled
        with pytest.raises(krl.KrlSyntaxError):
            krl.parse_ruleset("ruleset a {")
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()
