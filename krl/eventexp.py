"""State machines for stateful ``select when`` expressions (``and``, ``before``, ``count``, …).

Neighbours: ``compiler`` compiles each event pattern to a :data:`Guard` and asks
:func:`build_machine` for the machine of the whole expression, then wraps both in
:func:`stateful_matcher`; ``runtime`` calls the matcher like any other. The state of
a rule lives with the pico: it is read and written through
``Context.rule_state_get``/``rule_state_set`` as plain JSON-like data.

Semantics follow pico-engine's ``select-when`` (written afresh):

- Every expression becomes a non-deterministic machine. States are strings:
  ``"start"``, ``"end"`` and ``"s0"``, ``"s1"``, … Each transition is labelled with
  a condition on the event: a pattern, ``not`` a condition, or ``any`` of several.
- For an event the rule listens for, every transition out of every current state is
  tried. If one reaches ``"end"`` the rule fires; otherwise, if some matched, their
  targets become the current states; otherwise the states stay as they were.
- ``then`` adds, at each point between two events, a transition back to
  ``"start"`` for any listened-for event that is not the expected one.
- A pattern whose domain and type match but whose attribute regexes or ``where``
  fail drops the accumulated ``setting`` values and aggregator windows; if nothing
  else matched, the machine is back at ``"start"`` (so ``repeat`` starts over).
- ``setting`` values accumulate across events in the state until the rule fires.
- Aggregators (``count``/``repeat`` … ``max(m)``) keep a window of captures: a new
  one at ``"start"``, a sliding one at ``"end"`` (``repeat``), else it grows.
- ``within`` resets the machine when the time since it left ``"start"``
  (``Event.time``) exceeds the limit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import ast
from .runtime import Event, Frame, Matcher, Run, is_number, normalize, to_number

__all__ = [
    "MAX_TRANSITIONS",
    "Guard",
    "Machine",
    "MachineTooLarge",
    "PatternCode",
    "build_machine",
    "stateful_matcher",
]

# A pattern's extra checks: run the attribute regexes, bind its `setting` slots and
# test `where`; returns the captures, or None when the event does not match.
Guard = Callable[[Event, Frame, Run], list[object] | None]

# Conditions on an event: ("p", pattern index) | ("not", cond) | ("any", (cond, …)).
Cond = tuple[Any, ...]
Machine = dict[str, tuple[tuple[Cond, str], ...]]

# `and`, `any` and `count` copy sub-machines; beyond this many transitions the
# expression is refused when the ruleset loads rather than slowing every event.
MAX_TRANSITIONS = 5000


@dataclass(frozen=True, slots=True)
class PatternCode:
    """A compiled ``domain type [attr re#…#]* [setting(…)] [where …]``."""

    domain: str
    type: str
    guard: Guard | None
    setting: tuple[str, ...]
    aggregator: tuple[str, tuple[str, ...]] | None  # (op, names) inside count/repeat


class MachineTooLarge(Exception):
    """The expression needs more than MAX_TRANSITIONS transitions."""


class _Builder:
    """Builds a machine from an event expression, in the style of Thompson's construction.

    States are integers while building; ``join(a, b)`` makes them one state (union-find).
    Every call of :meth:`build` makes fresh states, so building a node twice copies it.
    """

    def __init__(self, index: Callable[[ast.EventPattern, ast.Aggregator | None], int]) -> None:
        self.index = index
        self.edges: list[tuple[int, Cond, int]] = []  # (from, cond, to), before merges
        self.merged: dict[int, int] = {}
        self.counter = itertools.count(2)  # 0 and 1 are reserved for the outermost start/end

    def fresh(self) -> int:
        return next(self.counter)

    def add(self, src: int, cond: Cond, dst: int) -> None:
        if len(self.edges) >= MAX_TRANSITIONS:
            raise MachineTooLarge
        self.edges.append((src, cond, dst))

    def find(self, state: int) -> int:
        root = state
        while root in self.merged:
            root = self.merged[root]
        while state != root:  # path compression
            self.merged[state], state = root, self.merged[state]
        return root

    def join(self, old: int, new: int) -> None:
        """From now on ``old`` and ``new`` are one state (a union-find merge)."""
        old, new = self.find(old), self.find(new)
        if old != new:
            self.merged[old] = new

    def chain(self, parts: Sequence[Callable[[], tuple[int, int]]]) -> tuple[int, int]:
        """Each part after the previous one (``before``)."""
        start, end = parts[0]()
        for part in parts[1:]:
            s, e = part()
            self.join(s, end)
            end = e
        return start, end

    def build(self, node: ast.EventExpr, agg: ast.Aggregator | None = None) -> tuple[int, int]:
        if isinstance(node, ast.EventPattern):
            start, end = self.fresh(), self.fresh()
            self.add(start, ("p", self.index(node, agg)), end)
            return start, end
        args = node.args
        op = node.op
        parts = [self._thunk(a, agg) for a in args]
        if op == "or":
            start, end = self.fresh(), self.fresh()
            for part in parts:
                s, e = part()
                self.join(s, start)
                self.join(e, end)
            return start, end
        if op == "before":
            return self.chain(parts)
        if op == "after":
            return self.chain(parts[::-1])
        if op == "then":
            return self.then(parts)
        if op == "and":
            return self.and_(parts)
        if op == "between":
            return self.chain([parts[1], parts[0], parts[2]])
        if op == "not between":
            start, mid = parts[1]()
            s3, end = parts[2]()
            self.join(s3, mid)
            s1, e1 = parts[0]()
            self.join(s1, mid)
            self.join(e1, start)
            return start, end
        assert node.count is not None
        if op == "any":
            return self.any_(node.count, parts)
        inner = self._thunk(args[0], node.aggregator)
        start, end = self.chain([inner] * node.count)
        if op == "repeat":  # once at the end, every further match fires again
            s, e = inner()
            self.join(s, end)
            self.join(e, end)
        return start, end

    def _thunk(
        self, node: ast.EventExpr, agg: ast.Aggregator | None
    ) -> Callable[[], tuple[int, int]]:
        return lambda: self.build(node, agg)

    def then(self, parts: Sequence[Callable[[], tuple[int, int]]]) -> tuple[int, int]:
        start, end = parts[0]()
        merge_points = []
        for part in parts[1:]:
            s, e = part()
            self.join(s, end)
            merge_points.append(end)
            end = e
        for point in merge_points:
            point = self.find(point)
            expected = tuple(
                dict.fromkeys(c for src, c, _ in self.edges if self.find(src) == point)
            )
            self.add(point, ("not", ("any", expected)), start)
        return start, end

    def and_(self, parts: Sequence[Callable[[], tuple[int, int]]]) -> tuple[int, int]:
        if len(parts) == 1:
            return parts[0]()
        # n-ary `and` nests to the right, and(a, and(b, c)), as the reference does.
        first = parts[0]
        rest = lambda: self.and_(parts[1:])  # noqa: E731 - a thunk, built once per copy
        start, end = self.fresh(), self.fresh()
        for order in ((first, rest), (rest, first)):
            s, e = self.chain(order)
            self.join(s, start)
            self.join(e, end)
        return start, end

    def any_(self, n: int, parts: Sequence[Callable[[], tuple[int, int]]]) -> tuple[int, int]:
        start, end = self.fresh(), self.fresh()
        for order in itertools.permutations(range(len(parts)), n):
            s, e = self.chain([parts[i] for i in order])
            self.join(s, start)
            self.join(e, end)
        return start, end


def build_machine(
    node: ast.EventExpr, index: Callable[[ast.EventPattern, ast.Aggregator | None], int]
) -> Machine:
    """The machine of ``node``; ``index`` numbers each (pattern, aggregator) it meets.

    Raises :class:`MachineTooLarge` when the expression needs too many transitions.
    """
    builder = _Builder(index)
    start, end = builder.build(node)
    find = builder.find
    names: dict[int, str] = {find(start): "start", find(end): "end"}
    machine: dict[str, list[tuple[Cond, str]]] = {}
    for src, cond, dst in builder.edges:
        src, dst = find(src), find(dst)
        for state in (src, dst):
            if state not in names:
                names[state] = f"s{len(names) - 2}"
        edges = machine.setdefault(names[src], [])
        if (cond, names[dst]) not in edges:
            edges.append((cond, names[dst]))
    return {state: tuple(edges) for state, edges in machine.items()}


# ---------------------------------------------------------------------------
# Matching


def _to_float(value: object) -> float:
    """A capture as a number for max/min/sum/avg; anything non-numeric counts as 0."""
    return float(to_number(value) or 0)


def _aggregate(op: str, window: list[object]) -> object:
    if op == "push":
        return list(window)
    numbers = [_to_float(v) for v in window]
    if op == "max":
        return normalize(max(numbers))
    if op == "min":
        return normalize(min(numbers))
    total = sum(numbers)
    return normalize(total if op == "sum" else total / len(numbers))


def stateful_matcher(
    rid: str,
    rule: str,
    machine: Machine,
    patterns: Sequence[PatternCode],
    slots: dict[str, int],
    within: Callable[[Frame, Run], object] | None,
) -> Matcher:
    """A rule matcher that advances the rule's machine, kept through the Context.

    ``slots`` maps every ``setting``/aggregator name to its slot in the rule frame.
    When the machine reaches ``"end"`` the matcher fills those slots and returns True.
    """
    end_loops = "end" in machine  # only `repeat` has transitions out of "end"

    def match(event: Event, frame: Frame, run: Run) -> bool:
        old = run.ctx.rule_state_get(rid, rule)
        state: dict[str, Any] = old if isinstance(old, dict) else {}
        stored = state.get("states")
        states = [s for s in stored if s in machine] if isinstance(stored, list) else []
        states = states or ["start"]
        setting = dict(state.get("setting") or {})
        windows = dict(state.get("windows") or {})
        started = state.get("started")
        if within is not None:
            limit = within(frame, run)
            if not is_number(started):
                started = event.time
            if is_number(limit) and event.time - started > limit:  # type: ignore[operator]
                states, setting = ["start"], {}
            if "start" in states:
                started = event.time
        for name, slot in slots.items():
            frame[slot] = setting.get(name)
        dropped = False

        def test(cond: Cond) -> bool:
            nonlocal dropped
            kind = cond[0]
            if kind == "not":
                return not test(cond[1])
            if kind == "any":
                return any(test(c) for c in cond[1])
            pattern = patterns[cond[1]]
            if event.type != pattern.type or event.domain != pattern.domain:
                return False
            if pattern.guard is None:
                return True
            captures = pattern.guard(event, frame, run)
            if captures is None:
                dropped = True
                setting.clear()
                windows.clear()
                for slot in slots.values():
                    frame[slot] = None
                return False
            for i, name in enumerate(pattern.setting):
                setting[name] = captures[i] if i < len(captures) else None
            if pattern.aggregator is not None:
                op, names = pattern.aggregator
                for i, name in enumerate(names):
                    value = captures[i] if i < len(captures) else None
                    window = list(windows.get(name) or [])
                    if "start" in states:
                        window = [value]
                    elif "end" in states:
                        window = [*window[1:], value]
                    else:
                        window.append(value)
                    windows[name] = window
                    setting[name] = frame[slots[name]] = _aggregate(op, window)
            return True

        targets: list[str] = []
        for current in states:
            for cond, target in machine[current]:
                if test(cond) and target not in targets:
                    targets.append(target)
        fired = "end" in targets
        if fired:
            for name, slot in slots.items():
                frame[slot] = setting.get(name)
            setting = {}
            states = ["end"]
        elif targets:
            states = targets
        elif dropped:
            states = ["start"]
        if dropped:
            started = None
        new: dict[str, Any] = {}
        if not fired or end_loops:
            at_start = states == ["start"]
            if not at_start:
                new["states"] = states
            if setting:
                new["setting"] = setting
            if windows and not at_start:
                new["windows"] = windows
            if within is not None and started is not None and not at_start:
                new["started"] = normalize(started)
        value = new or None
        if value != old:
            run.ctx.rule_state_set(rid, rule, value)
        return fired

    return match
