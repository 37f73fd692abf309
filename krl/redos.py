"""A static check that keeps KRL regexes from backtracking catastrophically.

Neighbours: ``stdlib.compile_regex`` calls :func:`check_regex` on every pattern it
compiles (regex literals at ruleset load, and strings turned into regexes at run
time); the regex operators then refuse subjects longer than the limit it returns.

Python's ``re`` backtracks and cannot be interrupted, so the budget cannot stop a
runaway match. Instead, patterns whose backtracking can grow exponentially with
the subject are refused, and the polynomial ones are kept to degree 2 with a cap on
the subject length (see README "Safety model"). The analysis is conservative: it
may refuse a pattern that is in fact safe, never with a vague message.

It reads the parse tree of Python's ``re._parser`` (a private module, present from
3.11 on); if that ever changes shape, patterns are refused (fail closed), and the
tests notice.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# Python's own regex parser and compiler (private modules; typed as Any here).
sre: Any = importlib.import_module("re._parser")
_compiler: Any = importlib.import_module("re._compiler")

__all__ = ["LONG_SUBJECT", "SHORT_SUBJECT", "check_regex"]

LONG_SUBJECT = 1_000_000
"""Subject length limit for patterns that run in linear time per start position."""
SHORT_SUBJECT = 10_000
"""Subject length limit for patterns whose backtracking is quadratic."""

# Code points used to tell whether two one-character classes can match the same character.
_SAMPLE = (*range(0x250), 0x2028, 0x3000, 0x4E00, 0x1F600)
_SINGLE = frozenset({"LITERAL", "NOT_LITERAL", "ANY", "IN"})
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
_BIG = 100  # a bounded repeat above this counts as unbounded for the degree estimate


class _Refused(Exception):
    pass


def _name(op: Any) -> str:
    return str(op)


class _Analysis:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.free = 0  # unbounded repeats whose backtracking multiplies the work
        self.charsets: dict[str, frozenset[int]] = {}

    def flatten(self, items: Any) -> list[Any]:
        """Items of a sequence with (non-capturing or capturing) groups inlined."""
        out: list[Any] = []
        for op, av in items:
            if _name(op) == "SUBPATTERN":
                out.extend(self.flatten(av[-1]))
            else:
                out.append((op, av))
        return out

    def charset(self, item: Any) -> frozenset[int] | None:
        """The sample characters one single-character item matches (None: not one)."""
        if _name(item[0]) not in _SINGLE:
            return None
        key = repr(item)
        if key not in self.charsets:
            pattern = _compiler.compile(sre.SubPattern(self.state, [item]), self.state.flags)
            self.charsets[key] = frozenset(c for c in _SAMPLE if pattern.fullmatch(chr(c)))
        return self.charsets[key]

    def repeat_charset(self, item: Any) -> tuple[int, frozenset[int]] | None:
        """(min count, charset) of a repeat over one character class, or None."""
        if _name(item[0]) not in _REPEATS:
            return None
        lo, _, body = item[1]
        inner = self.flatten(body)
        if len(inner) != 1:
            return None
        chars = self.charset(inner[0])
        return None if chars is None else (lo, chars)

    def delimited(self, items: list[Any], k: int, cyclic: bool, at_end_ok: bool) -> bool:
        """True if the repeat ``items[k]`` can only stop at one place: it repeats one
        character class and the next thing that must match cannot be that class."""
        own = self.repeat_charset(items[k])
        if own is None:
            return False
        chars = own[1]
        may_fail = False
        j = k + 1
        while True:
            if j == len(items):
                if not cyclic:
                    return at_end_ok and not may_fail
                j = 0
            if j == k:
                return False
            op, _ = item = items[j]
            single = self.charset(item)
            if single is not None:
                return single.isdisjoint(chars)
            rep = self.repeat_charset(item)
            if rep is not None:
                if rep[0] >= 1:
                    return rep[1].isdisjoint(chars)
                if not rep[1].isdisjoint(chars):
                    return False
            elif _name(op) == "AT":
                may_fail = True
            else:
                return False
            j += 1

    def first(self, items: list[Any]) -> frozenset[int] | None:
        """Characters a sequence can start with; None if unknown or it can be empty."""
        out: set[int] = set()
        for item in items:
            single = self.charset(item)
            if single is not None:
                return frozenset(out | single)
            rep = self.repeat_charset(item)
            if rep is None:
                return None
            out |= rep[1]
            if rep[0] >= 1:
                return frozenset(out)
        return None

    def walk(self, items: list[Any], repeated: bool, cyclic: bool, top: bool) -> None:
        """``repeated``: inside a repeat that can run more than once; ``cyclic``: ``items``
        is that repeat's body, so its end is followed by its start again."""
        for k, (op, av) in enumerate(items):
            name = _name(op)
            if name in ("GROUPREF", "GROUPREF_EXISTS"):
                raise _Refused("backreferences are not allowed")
            if name in _REPEATS:
                lo, hi, body = av
                big = hi == sre.MAXREPEAT or hi > _BIG
                if repeated and lo != hi and not self.delimited(items, k, cyclic, False):
                    raise _Refused(
                        "a repeated group contains a quantifier that can match the same "
                        "text in more than one way (nested quantifiers)"
                    )
                if not repeated and big and not self.delimited(items, k, False, top):
                    self.free += 1
                inner = self.flatten(body)
                self.walk(inner, repeated or hi > 1, hi > 1, False)
            elif name == "BRANCH":
                branches = [self.flatten(b) for b in av[1]]
                if repeated:
                    seen: set[int] = set()
                    for branch in branches:
                        chars = self.first(branch)
                        if chars is None or not seen.isdisjoint(chars):
                            raise _Refused(
                                "an alternation inside a repeat has alternatives that can "
                                "start with the same character (or be empty)"
                            )
                        seen |= chars
                for branch in branches:
                    self.walk(branch, repeated, False, top and k == len(items) - 1)
            elif name in ("ASSERT", "ASSERT_NOT"):
                self.walk(self.flatten(av[1]), repeated, False, False)
            elif name == "ATOMIC_GROUP":
                self.walk(self.flatten(av), repeated, False, False)


def _anchored(items: list[Any], analysis: _Analysis) -> bool:
    if not items:
        return False
    op, av = items[0]
    if _name(op) == "AT":
        return _name(av) in ("AT_BEGINNING", "AT_BEGINNING_STRING") and not (
            analysis.state.flags & re.MULTILINE and _name(av) == "AT_BEGINNING"
        )
    if _name(op) == "BRANCH":
        return all(_anchored(analysis.flatten(b), analysis) for b in av[1])
    return False


def check_regex(source: str, translated: str, flags: int) -> int:
    """Refuse a pattern that can backtrack catastrophically (ValueError naming it);
    otherwise return the longest subject it may be matched against."""
    try:
        tree = sre.parse(translated, flags)
    except re.error:
        raise  # the caller reports invalid patterns
    analysis = _Analysis(tree.state)
    items = analysis.flatten(tree)
    try:
        analysis.walk(items, False, False, True)
    except _Refused as why:
        raise ValueError(f"unsafe regular expression re#{source}#: {why}") from None
    except Exception as err:  # the private parse tree changed shape: fail closed
        raise ValueError(
            f"unsafe regular expression re#{source}#: cannot be checked ({err!r})"
        ) from None
    degree = analysis.free + (0 if _anchored(items, analysis) else 1)
    if degree > 2:
        raise ValueError(
            f"unsafe regular expression re#{source}#: its backtracking grows as the "
            f"subject length to the power {degree}; anchor it with ^ or use negated "
            "classes such as [^,]* instead of .*"
        )
    return LONG_SUBJECT if degree <= 1 else SHORT_SUBJECT
