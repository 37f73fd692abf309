"""Exact texts of syntax and compile errors, caret line included."""

from __future__ import annotations

import pickle

import pytest

import krl

CASES = [
    pytest.param(
        "ruleset a {\n  rule r {\n    select when a b\n",
        "line 3, column 20: expected '}' to close the rule block opened at line 2, column 10, "
        "found end of input\n"
        "    select when a b\n"
        "                   ^",
        id="missing-rule-brace",
    ),
    pytest.param(
        "ruleset a {\n  global {\n    x = 1\n",
        "line 3, column 10: expected '}' to close the global block opened at line 2, column 10, "
        "found end of input\n"
        "    x = 1\n"
        "         ^",
        id="missing-global-brace",
    ),
    pytest.param(
        'ruleset a {\n  global {\n    x = "abc\n  }\n}\n',
        "line 5, column 2: expected '\"' to close the string opened at line 3, column 9, "
        "found end of input\n"
        "}\n"
        " ^",
        id="unterminated-string",
    ),
    pytest.param(
        "ruleset a {\n  rule r {\n    select when echo\n  }\n}",
        "line 4, column 3: expected an event type after the event domain 'echo', found '}'\n"
        "  }\n"
        "  ^",
        id="select-when-without-type",
    ),
    pytest.param(
        "ruleset a {\n  global { x = 1 ? 2 }\n}",
        "line 2, column 18: unexpected character '?'\n  global { x = 1 ? 2 }\n                 ^",
        id="bad-character",
    ),
    pytest.param(
        "ruleset a {\n  global { x = (1 + 2 }\n}",
        "line 2, column 23: expected ')' to close the parenthesis opened at line 2, column 16, "
        "found '}'\n"
        "  global { x = (1 + 2 }\n"
        "                      ^",
        id="unclosed-paren",
    ),
    pytest.param(
        "ruleset a {\n  global { m = {a: 1} }\n}",
        "line 2, column 17: expected a string map key or '}', found 'a'\n"
        "  global { m = {a: 1} }\n"
        "                ^",
        id="bare-map-key",
    ),
    pytest.param(
        "ruleset a {\n  rule r {\n    select when a b\n    fired { x := 1 }\n  }\n}",
        "line 4, column 13: expected a postlude statement (ent:name := value, clear, raise, log, "
        "last or name = value), found 'x'\n"
        "    fired { x := 1 }\n"
        "            ^",
        id="assign-non-ent",
    ),
    pytest.param(
        "ruleset a {\n  rule r {\n    select when a b\n    else { ent:x := 1 }\n  }\n}",
        "line 4, column 5: 'else' must follow a 'fired' or 'notfired' block\n"
        "    else { ent:x := 1 }\n"
        "    ^",
        id="bare-else",
    ),
    pytest.param(
        "ruleset a {\n  rule r {\n    pre { x = 1 }\n  }\n}",
        "line 3, column 5: expected 'select' at the start of the rule body, found 'pre'\n"
        "    pre { x = 1 }\n"
        "    ^",
        id="rule-without-select",
    ),
    pytest.param(
        "ruleset a { /* oops }",
        "line 1, column 22: expected '*/' to close the comment opened at line 1, column 13, "
        "found end of input\n"
        "ruleset a { /* oops }\n"
        "                     ^",
        id="unclosed-comment",
    ),
    pytest.param(
        "ruleset a {\n\tglobal { x = <<abc #{y}\n}",
        "line 3, column 2: expected '>>' to close the chevron string opened at line 2, column 15, "
        "found end of input\n"
        "}\n"
        " ^",
        id="unclosed-chevron",
    ),
    pytest.param(
        "ruleset a {\n\tglobal { x = 1 }\n} extra",
        "line 3, column 3: expected end of input after the ruleset, found 'extra'\n} extra\n  ^",
        id="trailing-text",
    ),
]


@pytest.mark.parametrize(("source", "message"), CASES)
def test_syntax_error_text(source: str, message: str) -> None:
    with pytest.raises(krl.KrlSyntaxError) as info:
        krl.parse_ruleset(source)
    assert str(info.value) == message


def test_caret_keeps_tabs() -> None:
    with pytest.raises(krl.KrlSyntaxError) as info:
        krl.parse_ruleset("ruleset a {\n\tglobal { x = 1 ? 2 }\n}")
    assert str(info.value).splitlines()[1:] == ["\tglobal { x = 1 ? 2 }", "\t               ^"]


def test_error_fields() -> None:
    with pytest.raises(krl.KrlSyntaxError) as info:
        krl.parse_ruleset("ruleset a {\n  global { x = 1 ? 2 }\n}")
    err = info.value
    assert (err.offset, err.line, err.column) == (29, 2, 18)
    assert err.message == "unexpected character '?'"
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err)


COMPILE_CASES = [
    pytest.param(
        "ruleset a { global { x = y } }",
        "line 1, column 26: undefined name 'y'\n"
        "ruleset a { global { x = y } }\n"
        "                         ^",
        id="undefined-name",
    ),
    pytest.param(
        "ruleset a { meta { shares nope } }",
        "line 1, column 27: 'nope' is listed in shares but not declared in global\n"
        "ruleset a { meta { shares nope } }\n"
        "                          ^",
        id="share-undeclared",
    ),
    pytest.param(
        "ruleset a { meta { use module b alias m use module c alias m } }",
        "line 1, column 60: the module alias 'm' is used twice\n"
        "ruleset a { meta { use module b alias m use module c alias m } }\n"
        "                                                           ^",
        id="module-alias-twice",
    ),
    pytest.param(
        "ruleset a { global { x = dido:routes } }",
        "line 1, column 26: the module 'dido' is not supported by p2pico\n"
        "ruleset a { global { x = dido:routes } }\n"
        "                         ^",
        id="reference-module-not-supported",
    ),
    pytest.param(
        "ruleset a { global { x = ctx:raiseEvent } }",
        "line 1, column 26: 'ctx:raiseEvent' is not defined\n"
        "ruleset a { global { x = ctx:raiseEvent } }\n"
        "                         ^",
        id="ctx-member-not-defined",
    ),
    pytest.param(
        "ruleset a { global { x = ctx:newPico } }",
        "line 1, column 26: 'ctx:newPico' is an action and can only be used in an action block\n"
        "ruleset a { global { x = ctx:newPico } }\n"
        "                         ^",
        id="ctx-action-in-an-expression",
    ),
    pytest.param(
        'ruleset a { global { x = http:post("u") } }',
        "line 1, column 26: 'http:post' is an action and can only be used in an action block\n"
        'ruleset a { global { x = http:post("u") } }\n'
        "                         ^",
        id="http-post-is-only-an-action",
    ),
    pytest.param(
        'ruleset a { rule r { select when a b ursa:sign("u") } }',
        "line 1, column 38: the action 'ursa:sign' is not supported by p2pico\n"
        'ruleset a { rule r { select when a b ursa:sign("u") } }\n'
        "                                     ^",
        id="reference-action-not-supported",
    ),
    pytest.param(
        "ruleset a { rule r { select when any 2 (a b, c d) } }",
        "line 1, column 34: 'any 2' needs a number between 1 and 1 (one less than the number "
        "of events)\n"
        "ruleset a { rule r { select when any 2 (a b, c d) } }\n"
        "                                 ^",
        id="any-too-many",
    ),
    pytest.param(
        "ruleset a { rule r { select when count 0 (a b) } }",
        "line 1, column 34: 'count' needs a count of at least 1\n"
        "ruleset a { rule r { select when count 0 (a b) } }\n"
        "                                 ^",
        id="count-zero",
    ),
    pytest.param(
        "ruleset a { global { x = re#(# } }",
        "line 1, column 26: invalid regular expression re#(#: missing ), unterminated subpattern "
        "at position 0\n"
        "ruleset a { global { x = re#(# } }\n"
        "                         ^",
        id="bad-regex",
    ),
    pytest.param(
        "ruleset a { global { x = 1; y = x; x = 2 } }",
        "line 1, column 36: 'x' is already declared in global\n"
        "ruleset a { global { x = 1; y = x; x = 2 } }\n"
        "                                   ^",
        id="duplicate-global",
    ),
    pytest.param(
        "ruleset a { global { a = b; b = 1 } }",
        "line 1, column 26: undefined name 'b'\n"
        "ruleset a { global { a = b; b = 1 } }\n"
        "                         ^",
        id="forward-value-reference",
    ),
    pytest.param(
        'ruleset a { global { x = send_directive("a") } }',
        "line 1, column 26: 'send_directive' is an action and can only be used in an action block\n"
        'ruleset a { global { x = send_directive("a") } }\n'
        "                         ^",
        id="action-in-expression",
    ),
    pytest.param(
        "ruleset a { global { act = defaction() { noop() }; t = function() { act() } } }",
        "line 1, column 69: 'act' is a defaction and can only be used in an action block\n"
        "ruleset a { global { act = defaction() { noop() }; t = function() { act() } } }\n"
        + " " * 68
        + "^",
        id="defaction-called-in-function",
    ),
    pytest.param(
        "ruleset a { global { act = defaction() { noop() }; b = act } "
        'rule r { select when a b send_directive("d", {"x": b()}) } }',
        "line 1, column 113: 'b' is a defaction and can only be used in an action block\n"
        "ruleset a { global { act = defaction() { noop() }; b = act } "
        'rule r { select when a b send_directive("d", {"x": b()}) } }\n' + " " * 112 + "^",
        id="defaction-alias-called-in-action-argument",
    ),
    pytest.param(
        "ruleset a { rule r { select when a b pre { act = defaction() { noop() }; "
        "x = [1].map(function(v) { act(v) }) } } }",
        "line 1, column 100: 'act' is a defaction and can only be used in an action block\n"
        "ruleset a { rule r { select when a b pre { act = defaction() { noop() }; "
        "x = [1].map(function(v) { act(v) }) } } }\n" + " " * 99 + "^",
        id="pre-defaction-called-in-closure",
    ),
    pytest.param(
        "ruleset a { meta { shares act } global { act = defaction() { noop() } } }",
        "line 1, column 27: 'act' is a defaction; only functions and values can be listed in "
        "shares\n"
        "ruleset a { meta { shares act } global { act = defaction() { noop() } } }\n"
        "                          ^",
        id="shared-defaction",
    ),
    pytest.param(
        "ruleset a { global { x = 1.nope() } }",
        "line 1, column 28: unknown operator or function 'nope'\n"
        "ruleset a { global { x = 1.nope() } }\n"
        "                           ^",
        id="unknown-operator",
    ),
    pytest.param(
        "ruleset a { rule r { select when a b } rule r { select when c d } }",
        "line 1, column 45: duplicate rule name 'r'\n"
        "ruleset a { rule r { select when a b } rule r { select when c d } }\n"
        "                                            ^",
        id="duplicate-rule",
    ),
]


@pytest.mark.parametrize(("source", "message"), COMPILE_CASES)
def test_compile_error_text(source: str, message: str) -> None:
    with pytest.raises(krl.KrlCompileError) as info:
        krl.compile_ruleset(source)
    assert str(info.value) == message


def test_defactions_are_called_as_actions_and_shadowed_by_values() -> None:
    """What the defaction check lets through: a defaction in its place (an action, also
    from another defaction), passed as a value, and a name it shares with a function or
    value of an inner scope."""
    krl.compile_ruleset(
        "ruleset a { meta { shares f, g } global {"
        ' act = defaction(x) { send_directive("d", {"x": x}) };'
        " twice = defaction(x) { every { act(x); act(x) } };"
        " f = function(act) { act(1) };"
        " g = function() { [act].length() } }"
        " rule r { select when a b pre { act = function(v) { v } } every { twice(act(2)) } } }"
    )


def test_functions_may_refer_forward_and_recurse() -> None:
    krl.compile_ruleset(
        "ruleset a { global { f = function(n) { n <= 0 => c | f(n - 1) }; c = 1 } }"
    )
