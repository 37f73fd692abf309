"""Regexes cannot hang the engine: catastrophic patterns are refused, subjects capped.

No timing is asserted: an unsafe pattern never reaches Python's matcher at all.
"""

from __future__ import annotations

import pytest
from krl_fakes import FakeContext, evaluate

import krl
from krl.redos import LONG_SUBJECT, SHORT_SUBJECT
from krl.stdlib import compile_regex


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("^(a+)+$", "nested quantifiers"),
        ("(a*)*", "nested quantifiers"),
        ("(x+x+)+y", "nested quantifiers"),
        ("(\\w+\\s?)*$", "nested quantifiers"),
        ("(a+){20}", "nested quantifiers"),
        ("(a|ab)*c", "alternation inside a repeat"),
        ("(a|b?)+", "alternation inside a repeat"),
        ("(a)\\1", "backreferences are not allowed"),
        ("(.*)(.*)x", "to the power 3"),
    ],
)
def test_catastrophic_patterns_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        compile_regex(pattern)
    assert f"re#{pattern}#" in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "limit"),
    [
        ("^(.*)$", LONG_SUBJECT),
        ("(.*)", LONG_SUBJECT),
        ("(\\d+)", LONG_SUBJECT),
        ("^([^,]+),(.+)$", LONG_SUBJECT),
        ("(\\d{1,3}\\.){3}\\d{1,3}", LONG_SUBJECT),
        ("(?:a|b)*c", LONG_SUBJECT),
        ("#\\{(.+?)\\}", SHORT_SUBJECT),
        ("^(.*),(.*)$", SHORT_SUBJECT),
        ("(?:\\s*,\\s*\\w+)*", SHORT_SUBJECT),
        ("([a-z0-9-]+\\.)+[a-z]{2,}", SHORT_SUBJECT),
    ],
)
def test_ordinary_patterns_are_accepted(pattern: str, limit: int) -> None:
    assert compile_regex(pattern).max_subject == limit


def test_literal_is_a_compile_error() -> None:
    with pytest.raises(krl.KrlCompileError) as info:
        krl.compile_ruleset('ruleset a { global { x = "aaab".match(re#^(a+)+$#) } }')
    assert info.value.message.startswith("unsafe regular expression re#^(a+)+$#: ")
    assert (info.value.line, info.value.column) == (1, 39)


def test_pattern_built_at_run_time_is_a_runtime_error() -> None:
    subject = "a" * 40 + "b"  # about 2**40 steps in Python's re, were it allowed to run
    for expr in (
        f'"{subject}".match("^(a+)+$")',
        f'"{subject}".replace("(a|aa)*b".as("RegExp"), "")',
    ):
        with pytest.raises(krl.KrlRuntimeError, match="unsafe regular expression"):
            evaluate(expr)


def test_long_subjects_are_refused() -> None:
    long = "a" * (SHORT_SUBJECT + 1)
    with pytest.raises(krl.KrlRuntimeError, match=r"too long for re#\.\*,#: 10001 characters"):
        evaluate(f'"{long}".match(re#.*,#)')
    with pytest.raises(krl.KrlRuntimeError, match="too long"):
        evaluate(f'"{long}".split(re#.*,#)')
    assert evaluate(f'"{long}".match(re#^a+$#)') is True  # linear patterns: a higher cap


def test_select_attribute_subject_cap() -> None:
    rs = krl.compile_ruleset(
        "ruleset a { rule r { select when t t x re#(.*),# setting(v) send_directive(v) } }"
    )
    ctx = FakeContext()
    event = krl.Event("t", "t", {"x": "y" * (SHORT_SUBJECT + 1)})
    with pytest.raises(krl.KrlRuntimeError, match="too long"):
        list(rs.iter_select(event, ctx, krl.Budget()))
    short = krl.Event("t", "t", {"x": "yy,"})
    assert [s.bindings for s in rs.iter_select(short, ctx, krl.Budget())] == [{"v": "yy"}]
