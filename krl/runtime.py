"""Values, budgets and the compiled Ruleset that the engine drives.

Neighbours: ``compiler`` builds :class:`Ruleset` objects out of closures;
``stdlib`` implements the operators on the values defined here; the engine calls
:meth:`Ruleset.select`, :meth:`Ruleset.run` and :meth:`Ruleset.query`.

KRL values are plain Python data: ``None``, ``bool``, ``int``, ``float``, ``str``,
``list``, ``dict`` (string keys), plus :class:`KrlRegExp` and the two callable
kinds :class:`KrlFunction` and :class:`StdlibFunction`. Their semantics are
JavaScript's, as in pico-engine: see :func:`truthy`, :func:`to_string`,
:func:`to_number`, :func:`krl_equals` and :func:`compare`. Integral numbers are
always ``int`` (so ``4 / 2`` is ``2``), and lists and dicts are never mutated in
place once built, so values can be shared freely.
"""

from __future__ import annotations

import contextlib
import math
import random as _random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from .errors import KrlBudgetExceeded, KrlError, KrlRuntimeError, line_column

__all__ = [
    "Budget",
    "Context",
    "Event",
    "KrlAction",
    "KrlFunction",
    "KrlRegExp",
    "ModuleFunction",
    "ModuleInstance",
    "ModuleUse",
    "Rule",
    "RuleResult",
    "Ruleset",
    "Selection",
    "StdlibFunction",
    "compare",
    "krl_equals",
    "to_number",
    "to_plain",
    "to_string",
    "truthy",
    "type_of",
]

Frame = list[Any]
"""Variable slots of one scope; slot 0 holds the enclosing scope's frame."""
Eval = Callable[[Frame, "Run"], Any]
Exec = Callable[[Frame, "Run"], None]

MAX_SAFE_INTEGER = 2**53


# ---------------------------------------------------------------------------
# Engine-facing data


@dataclass(frozen=True, slots=True)
class Event:
    domain: str
    type: str
    attrs: Mapping[str, object] = field(default_factory=dict)
    eid: str = "none"
    time: float = 0.0


class Context(Protocol):
    """What a ruleset needs from the engine; one per transaction."""

    pico_id: str
    eci: str
    # The transaction's id: `meta:txnId` in a query (in an event it is the event's eid).
    txn_id: str

    def ent_get(self, rid: str, name: str) -> object: ...
    def ent_set(self, rid: str, name: str, value: object) -> None: ...
    def ent_clear(self, rid: str, name: str) -> None: ...
    def raise_event(
        self, domain: str, type: str, attrs: Mapping[str, object], for_rid: str | None
    ) -> None: ...
    def send_directive(self, name: str, options: Mapping[str, object]) -> None: ...
    def log(self, level: str, message: str) -> None: ...

    # The state of a rule's stateful `select when` expression (`and`, `before`,
    # `count`, `within`, …): None, or a JSON-like dict to store with the pico,
    # per (pico, rid, rule). Set only when it changes; None clears it. Rules whose
    # expression is a single event or an `or` of events never call these.
    def rule_state_get(self, rid: str, rule: str) -> object: ...
    def rule_state_set(self, rid: str, rule: str, state: object) -> None: ...

    # `schedule D event T at t` (``at``: epoch seconds) or `… repeat "cron"`
    # (``timespec``): persist the job for this pico and ruleset, and return its id,
    # which `setting(name)` binds (``setting_name`` is that name, or None).
    def schedule_event(
        self,
        domain: str,
        type: str,
        attrs: Mapping[str, object],
        at: float | None,
        timespec: str | None,
        setting_name: str | None,
    ) -> str: ...

    def get_module(self, rid: str) -> Ruleset:
        """The compiled ruleset ``rid`` installed on this pico, for `use module rid`.

        Raise ``KrlRuntimeError("Module not found: RID")`` when this pico does not have
        it. Called at most once per (using ruleset, alias) and transaction, when the
        alias is first used; krl configures and evaluates the module itself.
        """
        ...

    def send_event(self, target: str, domain: str, type: str, attrs: Mapping[str, object]) -> None:
        """`event:send`: start a new transaction for the event on another (or this) pico.

        ``target`` is an eci, or a DID when the options map gave ``did`` (and no eci).
        Fire and forget: the sender gets no directives back. ``attrs`` is plain data.
        """
        ...

    def schedule_list(self) -> list[dict[str, object]]:
        """The scheduled jobs of this pico (`schedule:list`, `schedule:get`).

        Each job is ``{"id", "rid", "event": {"domain", "type", "attrs"}}`` plus
        ``"time"`` (epoch seconds, a one-shot job) or ``"timespec"`` (a cron string).
        krl keeps only the jobs whose ``rid`` is the calling ruleset's, so the engine
        may return every job of the pico.
        """
        ...

    def schedule_remove(self, job_id: str) -> bool:
        """`schedule:remove(id)`: cancel one job; True if it existed.

        krl calls it only for ids that ``schedule_list`` gave for the calling ruleset.
        """
        ...

    def query_pico(self, target: str, rid: str, name: str, args: Mapping[str, object]) -> object:
        """`ctx:query(eci, rid, name, args)`: run a shared function on another pico.

        ``target`` is an eci (or a DID); ``args`` is plain data. Return the query's
        plain result, or raise ``KrlRuntimeError`` with the reason it failed.
        """
        ...

    # -- ctx: pico management (catalog §2.7). Arguments are plain data (or None when
    # KRL gave null); the engine validates them and raises ``KrlRuntimeError`` with the
    # reference's message. Changes belong to the transaction, like entity writes.

    def channels(self) -> list[dict[str, object]]:
        """`ctx:channels`: ``{id, tags, eventPolicy, queryPolicy, familyChannelPicoID}``
        for every channel of this pico, sorted by id."""
        ...

    def new_channel(
        self, tags: object, event_policy: object, query_policy: object
    ) -> dict[str, object]:
        """`ctx:newChannel`: make a channel (a None policy allows all); return its record."""
        ...

    def put_channel(
        self, eci: str, tags: object, event_policy: object, query_policy: object
    ) -> None:
        """`ctx:putChannel`: replace what is given (not None) on a channel."""
        ...

    def upsert_channel(self, tags: object, event_policy: object, query_policy: object) -> None:
        """`ctx:upsertChannel`: update the channel with these (sorted) tags, or make one."""
        ...

    def del_channel(self, eci: str) -> None:
        """`ctx:delChannel`: delete a channel (family channels cannot be deleted)."""
        ...

    def rulesets(self) -> list[dict[str, object]]:
        """`ctx:rulesets`: ``{rid, url, config, meta}`` for each installed ruleset."""
        ...

    def install(self, url_or_source: str, config: Mapping[str, object]) -> str:
        """`ctx:install`: install (or reinstall) a ruleset from a URL or KRL source; its rid."""
        ...

    def uninstall(self, rid: str) -> None:
        """`ctx:uninstall`: remove a ruleset and its entity variables."""
        ...

    def parent(self) -> str | None:
        """`ctx:parent`: the eci this pico uses to reach its parent, None for a root pico."""
        ...

    def children(self) -> list[str]:
        """`ctx:children`: the family ecis of this pico's children."""
        ...

    def new_pico(self, rulesets: object) -> str:
        """`ctx:newPico`: make a child pico (``rulesets``: a list of ``{url, config}``, or
        None); return the eci of its family channel, which only this pico may use."""
        ...

    def del_pico(self, eci: str) -> None:
        """`ctx:delPico`: delete the child behind one of ``children()``, recursively."""
        ...

    def event_query(
        self,
        target: str,
        domain: str,
        type: str,
        attrs: Mapping[str, object],
        rid: str,
        name: str,
        args: Mapping[str, object],
    ) -> object:
        """`ctx:eventQuery`: send the event to the pico behind ``target`` (an eci or a DID),
        wait for it, then run the query ``rid``/``name`` there and return its plain result.
        Raise ``KrlRuntimeError`` with the reason when either fails."""
        ...

    def logs(self) -> list[dict[str, object]]:
        """`ctx:logs()`: this pico's recent log entries (`log` statements, `klog`, failures),
        oldest first, each a plain map."""
        ...

    def flush(self, url: str) -> None:
        """`ctx:flush(url)`: load and compile the ruleset at ``url`` again, or raise
        ``KrlRuntimeError`` saying why it cannot."""
        ...

    def base_url(self) -> str | None:
        """`meta:host`: the base URL of this node's HTTP API, None when it has none."""
        ...

    # -- http: (catalog §2.7). krl turns the KRL arguments into a request; the engine
    # sends it under its limits and address policy. Waiting on the network does not
    # count against the Budget's time (krl extends the deadline by the wait).

    def http_request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        follow_redirects: bool,
    ) -> dict[str, object]:
        """Send one request and return ``{content (text), content_type, content_length,
        headers (lower-cased names), status_code, status_line}``; raise
        ``KrlRuntimeError("http:METHOD: reason")`` when there is no response."""
        ...

    def http_autosend(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        follow_redirects: bool,
        target: str,
        domain: str,
        type: str,
        attrs: Mapping[str, object],
    ) -> None:
        """`autosend`: send the request later, without waiting, and deliver the event
        ``domain:type`` to ``target`` with the response's fields over ``attrs``."""
        ...


class Budget:
    """Bounds the work one transaction may do: steps, wall-clock time and call depth.

    A step is counted for every KRL function call, every iteration of a stdlib
    higher-order operator, and for every element a stdlib operator creates
    (``range``), so neither runaway recursion nor a huge ``map`` can hang the engine.

    Hot paths (generated function code, ``map``/``filter``/``reduce``) charge one step
    inline: ``steps += 1`` and, only when ``steps`` reaches ``limit``, :meth:`tick`.
    ``limit`` is the first step count at which something must be checked: one past
    ``max_steps``, or the next multiple of ``CLOCK_INTERVAL`` (a clock read). The
    limits are fixed when the budget is made.
    """

    __slots__ = (
        "_random",
        "clock",
        "deadline",
        "limit",
        "max_depth",
        "max_seconds",
        "max_steps",
        "next_clock",
        "steps",
    )

    # Time is checked every this many steps; a step is far cheaper than a clock read.
    CLOCK_INTERVAL = 1024

    def __init__(
        self,
        max_steps: int = 1_000_000,
        max_seconds: float = 5.0,
        max_depth: int = 100,
        *,
        random: _random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.max_depth = max_depth
        self.steps = 0
        self.deadline = time.monotonic() + max_seconds
        self.next_clock = self.CLOCK_INTERVAL  # the step count of the next clock read
        self.limit = min(max_steps + 1, self.next_clock)
        # The transaction's sources of chance and of the current time (epoch seconds):
        # `sample`, `random:*` and `time:now` use these, so tests can pin them.  The
        # default Random is made on first use: seeding one costs ~10 µs, and most
        # transactions draw nothing.
        self._random = random
        self.clock = clock

    @property
    def random(self) -> _random.Random:
        if self._random is None:
            self._random = _random.Random()
        return self._random

    def charge(self, run: Run, steps: int = 1) -> None:
        self.steps += steps
        if self.steps >= self.limit:
            self.tick(run)

    def tick(self, run: Run) -> None:
        """``steps`` reached ``limit``: refuse past ``max_steps``, read the clock when a
        multiple of ``CLOCK_INTERVAL`` was reached or passed, and move ``limit`` on."""
        steps = self.steps
        if steps > self.max_steps:
            raise KrlBudgetExceeded(f"step budget of {self.max_steps} exceeded in {run.where}")
        if steps >= self.next_clock:
            if time.monotonic() > self.deadline:
                raise KrlBudgetExceeded(
                    f"time budget of {self.max_seconds:g} seconds exceeded in {run.where}"
                )
            interval = self.CLOCK_INTERVAL
            self.next_clock = (steps // interval + 1) * interval
        self.limit = min(self.max_steps + 1, self.next_clock)


@dataclass(frozen=True, slots=True)
class Selection:
    """A rule whose ``select when`` matched an event, with its ``setting`` values."""

    rule: Rule
    settings: tuple[object, ...]

    @property
    def bindings(self) -> dict[str, object]:
        return dict(zip(self.rule.setting_names, self.settings, strict=True))


@dataclass(frozen=True, slots=True)
class RuleResult:
    """What a rule run tells the engine.

    ``last``: run no more rules of this ruleset for this event. ``halted``: an
    ``error error`` statement ran (``last`` is set too); the engine drops the rest
    of the transaction's schedule and every event this rule raised except the last
    one, the ``system:error`` event for this ruleset.
    """

    fired: bool
    last: bool
    halted: bool = False


# ---------------------------------------------------------------------------
# Value kinds beyond plain data


class KrlRegExp:
    """A compiled regex literal; ``source`` and ``flags`` are in KRL (JavaScript) form."""

    __slots__ = ("flags", "max_subject", "pattern", "source")

    def __init__(
        self, source: str, flags: str, pattern: re.Pattern[str], max_subject: int = 1_000_000
    ) -> None:
        self.source = source
        self.flags = flags
        self.pattern = pattern
        self.max_subject = max_subject  # longer subjects are refused (see krl.redos)

    def subject(self, text: str) -> str:
        """``text``, if it is short enough to match against safely."""
        if len(text) > self.max_subject:
            raise KrlRuntimeError(
                f"the text is too long for {self!r}: {len(text)} characters, "
                f"at most {self.max_subject} for this pattern"
            )
        return text

    @property
    def is_global(self) -> bool:
        return "g" in self.flags

    def __repr__(self) -> str:
        return f"re#{self.source}#{self.flags}"


class KrlCallable:
    __slots__ = ()

    def call(self, run: Run, args: Sequence[object], named: Mapping[str, object] | None) -> Any:
        raise NotImplementedError


class StdlibFunction(KrlCallable):
    """A built-in operator: ``impl(run, *args)``; ``params`` names its arguments."""

    __slots__ = ("impl", "name", "params", "variadic")

    def __init__(
        self,
        name: str,
        params: tuple[str, ...],
        impl: Callable[..., Any],
        variadic: bool = False,
    ) -> None:
        self.name = name
        self.params = params
        self.impl = impl
        self.variadic = variadic

    def arrange(self, args: Sequence[object], named: Mapping[str, object] | None) -> list[object]:
        out = list(args) if self.variadic else list(args[: len(self.params)])
        if named:
            for key, value in named.items():
                if key in self.params:
                    index = self.params.index(key)
                    while len(out) <= index:
                        out.append(None)
                    out[index] = value
        return out

    def call(self, run: Run, args: Sequence[object], named: Mapping[str, object] | None) -> Any:
        return self.impl(run, *self.arrange(args, named))

    def __repr__(self) -> str:
        return f"<krl stdlib {self.name}>"


Entry = Callable[..., Any]
"""A function's code entry: ``entry(parent_frame, run, *args)``. It charges the
budget, checks the call depth, binds the arguments (a missing or null one takes its
default; extra ones are ignored) and evaluates the body."""


class FunctionCode:
    """The compiled form of a ``function(…){…}`` or ``defaction(…){…}`` literal.

    ``params`` are the parameter names, in order (they occupy frame slots
    1..len(params)); ``entry`` runs the code (see :data:`Entry`). Functions get an
    entry generated by :mod:`krl.codegen`; defactions get :func:`closure_entry`.
    """

    __slots__ = ("entry", "name", "params")

    def __init__(self, params: tuple[str, ...], entry: Entry, name: str = "function") -> None:
        self.params = params
        self.entry = entry
        self.name = name


def closure_entry(
    params: tuple[tuple[str, Eval | None], ...],
    body: tuple[tuple[int, Eval], ...],
    result: Eval,
    nslots: int,
    actions: Exec | None = None,
) -> Entry:
    """The entry of code compiled to closures: ``params`` are (name, default) pairs,
    ``body`` the (slot, value) declarations, ``actions`` a defaction's action block."""
    nparams = len(params)
    defaults = tuple((i + 1, d) for i, (_, d) in enumerate(params) if d is not None)

    def entry(parent: Frame, run: Run, *args: object) -> Any:
        budget = run.budget
        budget.charge(run)
        depth = run.depth
        if depth >= budget.max_depth:
            raise depth_exceeded(run)
        frame: Frame = [None] * nslots
        frame[0] = parent
        frame[1 : 1 + min(nparams, len(args))] = args[:nparams]
        for slot, default in defaults:  # in order: a default sees the parameters before it
            if frame[slot] is None:
                frame[slot] = default(frame, run)
        run.depth = depth + 1
        try:
            for index, expr in body:
                frame[index] = expr(frame, run)
            if actions is not None:
                actions(frame, run)
            return result(frame, run)
        finally:
            run.depth = depth

    return entry


def depth_exceeded(run: Run) -> KrlBudgetExceeded:
    budget = run.budget
    return KrlBudgetExceeded(f"call depth limit of {budget.max_depth} exceeded in {run.where}")


class KrlFunction(KrlCallable):
    """A KRL function value: compiled code plus the frame it closes over.

    ``entry`` is ``code.entry``, kept here too so a call is ``f.entry(f.frame, run, …)``.
    """

    __slots__ = ("code", "entry", "frame")

    def __init__(self, code: FunctionCode, frame: Frame) -> None:
        self.code = code
        self.frame = frame
        self.entry = code.entry

    def call(self, run: Run, args: Sequence[object], named: Mapping[str, object] | None) -> Any:
        return self.invoke(run, args, named)

    def invoke(self, run: Run, args: Sequence[object], named: Mapping[str, object] | None) -> Any:
        if named:
            params = self.code.params
            values = list(args[: len(params)])
            values.extend([None] * (len(params) - len(values)))
            for i, name in enumerate(params):
                if name in named:
                    values[i] = named[name]
            args = values
        return self.entry(self.frame, run, *args)

    def __repr__(self) -> str:
        return f"<krl function {self.code.name}>"


class KrlAction(KrlFunction):
    """A ``defaction`` value: callable only from an action block (:meth:`perform`)."""

    __slots__ = ()

    def call(self, run: Run, args: Sequence[object], named: Mapping[str, object] | None) -> Any:
        raise KrlRuntimeError(
            f"'{self.code.name}' is an action and can only be used in an action block"
        )

    def perform(self, run: Run, args: Sequence[object], named: Mapping[str, object] | None) -> Any:
        return self.invoke(run, args, named)

    def __repr__(self) -> str:
        return f"<krl action {self.code.name}>"


def call_value(run: Run, fn: object, args: Sequence[object], what: str = "value") -> Any:
    """Call a KRL function value with positional arguments (used by stdlib)."""
    if type(fn) is KrlFunction:
        return fn.entry(fn.frame, run, *args)
    if isinstance(fn, KrlCallable):
        return fn.call(run, args, None)
    raise KrlRuntimeError(f"{what} is not a function: {to_string(fn)} ({type_of(fn)})")


def is_callable(value: object) -> bool:
    return isinstance(value, KrlCallable)


# ---------------------------------------------------------------------------
# JavaScript-like value semantics


def is_number(x: object) -> bool:
    t = type(x)
    return t is int or (t is float and x == x)


def normalize(x: int | float) -> int | float:
    """Integral floats become ints, as KRL prints ``6/3`` as ``2``."""
    if type(x) is float:
        if x.is_integer() and -MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER:
            return int(x)
        return x
    if -MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER:
        return x
    return float(x)


def truthy(x: object) -> bool:
    """JavaScript truthiness: null, false, 0, NaN and "" are false; [] and {} are true."""
    if x is None or x is False:
        return False
    if x is True:
        return True
    t = type(x)
    if t is int:
        return x != 0
    if t is float:
        return x == x and x != 0
    if t is str:
        return x != ""
    return True


_HEX = re.compile(r"0x[0-9a-f]+", re.IGNORECASE)
_RADIX = re.compile(r"0([oObB])([0-7]+)")  # 0o72, 0b101 (digits checked below)
_JS_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_JS_SPACE = " \t\n\r\v\f\u00a0\ufeff\u2028\u2029"


def type_of(x: object) -> str:
    if x is None:
        return "Null"
    t = type(x)
    if t is bool:
        return "Boolean"
    if t is int:
        return "Number"
    if t is float:
        return "Number" if x == x else "Null"
    if t is str:
        return "Hex" if _HEX.fullmatch(x) else "String"  # type: ignore[call-overload]
    if t is list:
        return "Array"
    if t is dict:
        return "Map"
    if t is KrlRegExp:
        return "RegExp"
    if t is KrlAction:
        return "Action"
    if isinstance(x, KrlCallable):
        return "Function"
    return "JSObject"


def is_null(x: object) -> bool:
    return x is None or (type(x) is float and x != x)


def format_number(x: int | float) -> str:
    """A number as JavaScript's ``String(x)`` writes it."""
    if type(x) is int:
        return str(x)
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    digits_t, exponent = Decimal(repr(abs(x))).normalize().as_tuple()[1:]
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_t))
    k = len(digits)
    n = exponent + k  # the decimal point sits after n digits
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        e = n - 1
        out = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + out


def to_string(x: object) -> str:
    if type(x) is str:
        return x
    if x is None:
        return "null"
    if x is True:
        return "true"
    if x is False:
        return "false"
    t = type(x)
    if t is int or t is float:
        return format_number(x)  # type: ignore[arg-type]
    if t is list:
        return "[Array]"
    if t is dict:
        return "[Map]"
    if t is KrlRegExp:
        return repr(x)
    if isinstance(x, KrlCallable):
        return "[Action]" if t is KrlAction else "[Function]"
    return "[JSObject]"


def to_number(x: object) -> int | float | None:
    """JavaScript-like numeric conversion; None when impossible."""
    t = type(x)
    if t is int:
        return x  # type: ignore[return-value]
    if t is float:
        return x if x == x else None  # type: ignore[return-value]
    if x is None:
        return 0
    if t is bool:
        return 1 if x else 0
    if t is str:
        s = x.strip(_JS_SPACE)  # type: ignore[attr-defined]
        if s == "":
            return 0
        if _HEX.fullmatch(s):
            return normalize(int(s, 16))
        radix = _RADIX.fullmatch(s)
        if radix:
            base = 8 if radix.group(1) in "oO" else 2
            try:
                return normalize(int(radix.group(2), base))
            except ValueError:  # a digit the base lacks ("0b12")
                return None
        if _JS_DECIMAL.fullmatch(s):
            return normalize(float(s))
        if s in ("Infinity", "+Infinity"):
            return math.inf
        if s == "-Infinity":
            return -math.inf
        return None
    if t is list or t is dict:
        return len(x)  # type: ignore[arg-type]
    return None


def krl_equals(a: object, b: object) -> bool:
    """Deep structural equality with no cross-type coercion ("1" != 1)."""
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return False
    if (ta is int or ta is float) and (tb is int or tb is float):
        return a == b
    if is_null(a) or is_null(b):
        return is_null(a) and is_null(b)
    if ta is not tb:
        return False
    if isinstance(a, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(krl_equals(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(krl_equals(v, b[k]) for k, v in a.items())
    if isinstance(a, KrlRegExp) and isinstance(b, KrlRegExp):
        return a.source == b.source and a.flags == b.flags
    return False


def compare(a: object, b: object) -> int:
    """-1, 0 or 1: numerically if both convert to numbers, else by string form."""
    x = to_number(a)
    y = to_number(b)
    if x is None or y is None:
        s, t = to_string(a), to_string(b)
        return 0 if s == t else (1 if s > t else -1)
    return 0 if x == y else (1 if x > y else -1)


def to_plain(value: object, what: str) -> Any:
    """A JSON-like copy of ``value`` for the engine; functions are refused.

    Regexes become their ``re#…#`` text, NaN and infinities become null (as JSON does).
    """
    t = type(value)
    if value is None or t is str or t is bool or t is int:
        return value
    if t is float:
        assert isinstance(value, float)
        return normalize(value) if math.isfinite(value) else None
    if t is list:
        assert isinstance(value, list)
        return [to_plain(v, what) for v in value]
    if t is dict:
        assert isinstance(value, dict)
        return {k: to_plain(v, what) for k, v in value.items()}
    if t is KrlRegExp:
        return repr(value)
    if isinstance(value, KrlCallable):
        raise KrlRuntimeError(f"a function cannot be used as {what}; only data can")
    raise KrlRuntimeError(f"a {type_of(value)} cannot be used as {what}")


# ---------------------------------------------------------------------------
# One evaluation: the state compiled closures receive alongside their frame


class StopRule(Exception):
    """Raised by ``last`` to leave the rule body; never escapes :meth:`Ruleset.run`."""


class Run:
    """Per-call state: the engine context, the event, the budget and where we are."""

    __slots__ = (
        "budget",
        "ctx",
        "depth",
        "event",
        "final",
        "fired",
        "halted",
        "host",
        "in_query",
        "last",
        "rule",
        "ruleset",
    )

    def __init__(
        self,
        ruleset: Ruleset,
        ctx: Context,
        event: Event | None,
        budget: Budget,
        rule: str | None,
        in_query: bool = False,
    ) -> None:
        self.ruleset = ruleset
        self.ctx = ctx
        self.event = event
        self.budget = budget
        self.rule = rule
        self.in_query = in_query
        self.depth = 0
        self.last = False
        self.halted = False
        self.fired = False
        self.final = True  # on the last iteration of every `foreach` (or there is none)
        self.host: Run | None = None  # inside module code: the run of the outermost user

    def module_run(self, ruleset: Ruleset) -> Run:
        """The run for code of a used module: no event, no rule, not a query (as the
        reference's module context); the engine context and budget are shared."""
        inner = Run(ruleset, self.ctx, None, self.budget, None)
        inner.depth = self.depth
        inner.host = self.host or self
        return inner

    @property
    def where(self) -> str:
        if self.host is not None:
            return f"module {self.rid}"
        if self.in_query:
            return f"query {self.rule}"
        if self.rule is None:
            return "global declarations"
        return f"rule {self.rule}"

    @property
    def rid(self) -> str:
        return self.ruleset.rid


# ---------------------------------------------------------------------------
# Modules: `use module RID alias A with k = v`


@dataclass(frozen=True, slots=True)
class ModuleUse:
    """One `use module` clause; ``with_`` values are evaluated in the user's global frame."""

    alias: str
    rid: str
    with_: tuple[tuple[str, Eval], ...] = ()


class ModuleInstance:
    """One configured copy of a ruleset: its global frame and the modules it uses.

    A ruleset's *root* instance (``config`` None: ``configure using`` defaults) holds
    the globals rules and queries see; its frame is managed by :class:`Ruleset`. A
    used module gets a fresh instance per (user instance, alias) and transaction,
    configured with the user's ``with`` values. The instance is kept in slot 0 of its
    global frame, so compiled code finds the modules of the ruleset it was written in.
    """

    __slots__ = ("_frame", "_uses", "chain", "config", "ruleset")

    def __init__(
        self, ruleset: Ruleset, config: Mapping[str, object] | None, chain: tuple[str, ...]
    ) -> None:
        self.ruleset = ruleset
        self.config = config
        self.chain = chain  # rids from the ruleset the engine runs down to this one
        self._frame: Frame | None = None
        # (context, alias -> instance) as one attribute: a root instance is shared by
        # the threads of every pico running its ruleset (see Ruleset._cached)
        self._uses: tuple[object, dict[str, ModuleInstance]] = (None, {})

    def use(self, alias: str, gframe: Frame, run: Run) -> ModuleInstance:
        """The instance behind ``alias``, resolved at its first use in this transaction."""
        ctx, uses = self._uses
        if ctx is not run.ctx:
            uses = {}
            self._uses = (run.ctx, uses)
        instance = uses.get(alias)
        if instance is None:
            clause = self.ruleset.uses[alias]
            if clause.rid in self.chain:
                cycle = " -> ".join((*self.chain, clause.rid))
                raise KrlRuntimeError(f"Dependency cycle: {cycle}")
            module = run.ctx.get_module(clause.rid)
            if not isinstance(module, Ruleset) or module.rid != clause.rid:
                raise KrlRuntimeError(f"Module not found: {clause.rid}")
            config = {name: value(gframe, run) for name, value in clause.with_}
            instance = ModuleInstance(module, config, (*self.chain, clause.rid))
            uses[alias] = instance
        return instance

    def frame(self, run: Run) -> Frame:
        """The global frame of a used module, evaluated once with ``run`` (a module run)."""
        if self._frame is None:
            self._frame = self.ruleset._global_init(run, self)
        return self._frame

    def provided(self, alias: str, name: str, run: Run) -> object:
        """The value of ``name``, which the module must list in ``provides``."""
        ruleset = self.ruleset
        if name not in ruleset.provides:
            raise KrlRuntimeError(f"module {ruleset.rid} (alias {alias}) does not provide '{name}'")
        return self.frame(run)[ruleset._global_names[name]]


class ModuleFunction(KrlCallable):
    """A provided function read as a value (``alias:f`` without a call): calling it
    runs the function as module code, like ``alias:f(…)`` does."""

    __slots__ = ("fn", "ruleset")

    def __init__(self, fn: KrlCallable, ruleset: Ruleset) -> None:
        self.fn = fn
        self.ruleset = ruleset

    def call(self, run: Run, args: Sequence[object], named: Mapping[str, object] | None) -> Any:
        inner = run.module_run(self.ruleset)
        try:
            return self.fn.call(inner, args, named)
        except KrlRuntimeError as err:
            module_error(err, inner)
            raise

    def __repr__(self) -> str:
        return f"<krl module function {self.ruleset.rid} {self.fn!r}>"


def module_error(err: KrlRuntimeError, run: Run) -> None:
    """Locate an error raised by module code in the module's own source."""
    if err.rid is None and err.span is not None:
        err.rid = run.rid
        err.line, err.column, _ = line_column(run.ruleset.source, err.span[0])
        host = run.host
        if host is not None and err.rule is None:
            err.rule = f"used by {host.rid}" + (f" {host.where}" if host.rule else "")


# ---------------------------------------------------------------------------
# Compiled rulesets

Matcher = Callable[[Event, Frame, "Run"], bool]
"""Fills the rule frame's ``setting`` slots and returns True when the event matches."""


class Rule:
    """A compiled rule: which events it listens for, its matcher and its body.

    ``any_event`` is set for ``select where``: the rule is salient for every event.
    """

    __slots__ = (
        "any_event",
        "body",
        "events",
        "matcher",
        "name",
        "needs_globals",
        "nslots",
        "setting_names",
    )

    def __init__(
        self,
        name: str,
        events: frozenset[tuple[str, str]],
        setting_names: tuple[str, ...],
        matcher: Matcher,
        needs_globals: bool,
        body: Callable[[Frame, Run], bool],
        nslots: int,
        any_event: bool = False,
    ) -> None:
        self.any_event = any_event
        self.name = name
        self.events = events  # salience: the (domain, type) pairs that can match
        self.setting_names = setting_names  # occupy slots 1..n of the rule frame
        self.matcher = matcher
        self.needs_globals = needs_globals  # the matcher has a `where` clause
        self.body = body
        self.nslots = nslots

    def __repr__(self) -> str:
        return f"<krl rule {self.name}>"


class Ruleset:
    """A compiled ruleset; one object serves every pico that installs it."""

    def __init__(
        self,
        *,
        rid: str,
        meta: Mapping[str, object],
        shares: frozenset[str],
        provides: frozenset[str],
        rules: tuple[Rule, ...],
        global_names: Mapping[str, int],
        global_init: Callable[[Run, ModuleInstance], Frame],
        globals_are_pure: bool,
        source: str,
        filename: str,
        uses: Sequence[ModuleUse] = (),
    ) -> None:
        self.rid = rid
        self.meta = meta
        self.shares = shares
        self.provides = provides
        self.rules = rules
        self.source = source
        self.filename = filename
        self.uses: dict[str, ModuleUse] = {u.alias: u for u in uses}
        self._global_names = global_names
        self._global_init = global_init
        self._root = ModuleInstance(self, None, (rid,))
        self._pure_frame: Frame | None = None
        self._globals_are_pure = globals_are_pure
        # (context, its global frame): one attribute, read and written whole, because
        # picos sharing this ruleset run transactions in different threads at once
        self._cached: tuple[object, Frame] | None = None
        # `select where` rules are salient for every event, in source order with the rest.
        self._any_event = tuple(rule for rule in rules if rule.any_event)
        keys = {key for rule in rules for key in rule.events}
        self._salient: dict[tuple[str, str], tuple[Rule, ...]] = {
            key: tuple(rule for rule in rules if rule.any_event or key in rule.events)
            for key in keys
        }

    def __repr__(self) -> str:
        return f"<krl ruleset {self.rid}>"

    # -- globals --------------------------------------------------------

    def _globals(self, run: Run) -> Frame:
        """The global frame; computed once if pure, else once per transaction (context)."""
        if self._globals_are_pure:
            if self._pure_frame is None:
                self._pure_frame = self._global_init(run, self._root)
            return self._pure_frame
        cached = self._cached
        if cached is not None and cached[0] is run.ctx:
            return cached[1]
        rule, in_query = run.rule, run.in_query
        run.rule, run.in_query = None, False
        try:
            frame = self._global_init(run, self._root)
        finally:
            run.rule, run.in_query = rule, in_query
        self._cached = (run.ctx, frame)
        return frame

    # -- engine API -------------------------------------------------------

    def select(self, event: Event, ctx: Context, budget: Budget) -> list[Selection]:
        """The rules, in source order, whose ``select when`` matches ``event``.

        Every salient rule's matcher runs now, so stateful expressions advance even
        for rules a ``last`` would skip; :meth:`iter_select` runs them lazily.
        """
        return list(self.iter_select(event, ctx, budget))

    def iter_select(self, event: Event, ctx: Context, budget: Budget) -> Iterator[Selection]:
        """Like :meth:`select`, but each rule's matcher runs only when it is reached.

        This is the reference engine's order: a rule's ``where`` sees what earlier
        rules wrote, and a rule skipped by ``last`` (stop iterating) keeps its state.
        """
        for rule in self._salient.get((event.domain, event.type), self._any_event):
            run = Run(self, ctx, event, budget, rule.name)
            with self._errors(run):
                gframe = self._globals(run) if rule.needs_globals else None
                frame: Frame = [None] * rule.nslots
                frame[0] = gframe
                matched = rule.matcher(event, frame, run)
            if matched:
                yield Selection(rule, tuple(frame[1 : 1 + len(rule.setting_names)]))

    def run(self, selection: Selection, event: Event, ctx: Context, budget: Budget) -> RuleResult:
        """Evaluate the selected rule: pre, action block, postlude."""
        rule = selection.rule
        run = Run(self, ctx, event, budget, rule.name)
        with self._errors(run):
            frame: Frame = [None] * rule.nslots
            frame[0] = self._globals(run)
            frame[1 : 1 + len(selection.settings)] = selection.settings
            with contextlib.suppress(StopRule):
                rule.body(frame, run)
        return RuleResult(run.fired, run.last, run.halted)

    def query(self, name: str, args: Mapping[str, object], ctx: Context, budget: Budget) -> object:
        """Call a shared function by parameter name, or return a shared value."""
        if name not in self.shares and name != "__testing":
            raise KrlRuntimeError(f'Ruleset {self.rid} does not have query function "{name}"')
        run = Run(self, ctx, None, budget, name, in_query=True)
        with self._errors(run):
            value = self._globals(run)[self._global_names[name]]
            if isinstance(value, KrlFunction):
                positional: list[object] = []
                index = 0
                while str(index) in args:  # "0", "1", … also work positionally
                    positional.append(args[str(index)])
                    index += 1
                named = {k: v for k, v in args.items() if not k.isdigit()}
                value = value.call(run, positional, named)
            elif isinstance(value, KrlCallable):
                value = value.call(run, [], dict(args))
            return to_plain(value, f"the result of query {name}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _errors(self, run: Run) -> _ErrorScope:
        return _ErrorScope(self, run)


class _ErrorScope:
    """Turns anything raised inside a ruleset into a located KrlRuntimeError."""

    __slots__ = ("ruleset", "run")

    def __init__(self, ruleset: Ruleset, run: Run) -> None:
        self.ruleset = ruleset
        self.run = run

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> Literal[False]:
        if exc is None:
            return False
        run, ruleset = self.run, self.ruleset
        if isinstance(exc, RecursionError):
            err: KrlRuntimeError = KrlBudgetExceeded(
                f"call depth limit exceeded in {run.where} (the Python stack ran out)"
            )
        elif isinstance(exc, KrlRuntimeError):
            err = exc
        elif isinstance(exc, KrlError) or not isinstance(exc, Exception):
            return False  # compile errors, KeyboardInterrupt, …: not ours to rewrite
        else:
            err = KrlRuntimeError(f"internal error: {type(exc).__name__}: {exc}")
        if err.rid is None:
            err.rid = ruleset.rid
        if err.rule is None and run.rule is not None:
            err.rule = f"query {run.rule}" if run.in_query else f"rule {run.rule}"
        if err.span is not None and err.line is None:
            err.line, err.column, _ = line_column(ruleset.source, err.span[0])
        if err is exc:
            return False
        raise err from exc
