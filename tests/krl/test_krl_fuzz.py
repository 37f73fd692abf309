"""For any text, parsing returns a tree or raises KrlSyntaxError inside the text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import krl

FRAGMENTS = [
    "ruleset", "a.b", "{", "}", "(", ")", "[", "]", "meta", "global", "rule", "r", "select",
    "when", "a", "b", "or", "and", "pre", "x", "=", ":=", ";", ",", "1", "2.5", '"s"',
    "<<", ">>", "#{", "re#a#", "function", "=>", "|", "+", "-", "*", "not", "ent:x", "fired",
    "else", "always", "raise", "event", "attributes", "last", "if", "then", "send_directive",
    "setting", "where", "shares", ".", ":", "/*", "*/", "//", "\n", " ", "\\", '"', "#",
    "before", "then", "after", "between", "any", "count", "repeat", "max", "push", "within",
    "seconds", "foreach", "every", "choose", "sample", "defaction", "return", "error", "warn",
    "schedule", "at", "on", "final", "noop", "99999999",
]  # fmt: skip

texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(" ".join),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
)


def error_of(parse: Callable[[str], object], text: str) -> krl.KrlError | None:
    """The KRL error ``parse(text)`` raises, or None; any other exception propagates."""
    try:
        parse(text)
    except (krl.KrlSyntaxError, krl.KrlCompileError) as err:
        return err
    return None


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(texts)
def test_parse_only_raises_syntax_errors(text: str) -> None:
    err = error_of(krl.parse_ruleset, text)
    if err is not None:
        assert isinstance(err, krl.KrlSyntaxError)
        assert 0 <= err.offset <= len(text)
        assert err.line >= 1
        assert err.column >= 1
        assert str(err).startswith(f"line {err.line}, column {err.column}: ")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(texts)
def test_compile_only_raises_krl_errors(text: str) -> None:
    err = error_of(krl.compile_ruleset, text)
    if err is not None:
        assert isinstance(err, krl.KrlSyntaxError | krl.KrlCompileError)
        assert 0 <= err.offset <= len(text)


def test_deep_nesting_is_a_syntax_error() -> None:
    text = "ruleset a { global { x = " + "(" * 5000 + "1" + ")" * 5000 + " } }"
    with pytest.raises(krl.KrlSyntaxError, match="nested more than 120 levels deep"):
        krl.parse_ruleset(text)


def test_every_prefix_of_a_ruleset() -> None:
    source = 'ruleset a { rule r { select when a b pre { x = 1 } send_directive("d") } }'
    for i in range(len(source)):
        err = error_of(krl.parse_ruleset, source[:i])
        assert isinstance(err, krl.KrlSyntaxError)
        assert 0 <= err.offset <= i
