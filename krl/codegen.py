"""Generate Python functions for KRL ``function(…){…}`` literals.

Neighbours: ``compiler`` calls :func:`function_code` for each function literal it
meets and lends this module its closure compiler (for the constructs generated
here as a call to a closure, and for compile-time checks); ``runtime`` runs the
result through :class:`~krl.runtime.FunctionCode`; ``stdlib`` supplies operators.

What is generated. One Python function per KRL function literal, with the
literal's nested function literals generated alongside it in the same unit::

    def _f0(P, R, v1=None, *_):      # P: the frame the literal was evaluated in
        B = R.budget                  # one step per call, inline; Budget.tick
        s = B.steps + 1               # checks the step cap and the clock
        B.steps = s
        if s >= B.limit:
            B.tick(R)
        d = R.depth                   # the call-depth cap
        if d >= B.max_depth:
            _depth(R)
        try:
            R.depth = d + 1
            if _type(v1) is _int:     # n < 2, with an int fast path
                t0 = v1 < _k1
            else:
                t0 = _cmp(v1, _k1) < 0
            …
            return t9
        except _KRE as e:
            _loc(e)                   # the KRL span of the failing line
            raise
        finally:
            R.depth = d

Parameters and declarations are Python locals ``v<slot>`` (the slot the closure
compiler would give them). A function that contains a nested function literal, or
a construct generated as a closure call (``ent:``, ``event:``, module calls,
defactions, nesting deeper than :data:`MAX_NESTING`), also keeps the frame list
``F`` of the closure design, written alongside the locals, so closures and inner
functions see exactly what they would see with closures only. Outer variables
are read from the parent frames: ``P[i]``, ``P[0][i]``.

A function that calls nothing (no stdlib, KRL or closure calls) leaves
``R.depth`` alone: nothing it runs reads it. Such a function literal given to
``map``, ``filter`` or ``reduce`` (with an initial value) is also written inline,
as a ``for`` loop over an Array in the caller, with locals ``i<n>_v<slot>``; the
loop charges the iteration's and the call's steps and checks the callee's depth,
as the call would (:meth:`_Fn.inline_loop`).

Safety by construction:

- the generator writes only the statement shapes in this module, with names it
  makes up (``P R B s d e F _ v<n> t<n> i<n>_v<n> i<n>_t<n> _k<n> _f<n> _c<n>``
  and fixed helper names); KRL
  names, strings, numbers and regexes never enter the source text: every value
  is a ``_k<n>`` entry of the unit's namespace, and every name is resolved to a
  slot at compile time;
- the namespace's ``__builtins__`` is empty: the code can reach only the helpers
  listed in :data:`_HELPERS` (KRL operators, ``type``, ``int``, ``str``, ``list``,
  ``enumerate``);
- member access still goes through ``stdlib.get_key``/``get_path``, calls still
  accept only KRL and stdlib functions (``_isfn``), the engine is still reached
  only through ``Context`` (in closures and stdlib functions);
- budget: one step per call (above) and per higher-order iteration (stdlib), the
  depth cap, the clock check (``Budget.tick``); a Python ``RecursionError`` still
  becomes ``KrlBudgetExceeded`` in ``Ruleset``;
- errors: each operation that can fail is on a line of its own, and the unit maps
  each line to the span the closure compiler would have put on the error (the
  innermost enclosing operator, call or negation), so messages, lines and columns
  are the same as with closures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from . import ast
from .errors import KrlRuntimeError
from .runtime import (
    FunctionCode,
    KrlCallable,
    KrlFunction,
    Run,
    StdlibFunction,
    compare,
    depth_exceeded,
    krl_equals,
    to_string,
    truthy,
    type_of,
)
from .stdlib import (
    BINARY_OPS,
    STDLIB,
    TEXT_FREE,
    add_text,
    get_key,
    get_path,
    join_text,
    op_div,
    op_mod,
    op_mul,
    op_neg,
    op_sub,
)

if TYPE_CHECKING:
    from .compiler import Scope, _Compiler

__all__ = ["MAX_NESTING", "describe_callee", "function_code"]

MAX_NESTING = 60
"""Deepest ``if`` nesting generated; deeper code is run by closures (Python refuses
source indented more than 100 levels)."""

# Integral results within ±2**53 stay int (runtime.normalize); outside they need the
# general operator. The generator writes these two numbers itself.
_LOW, _HIGH = -(2**53), 2**53

Span = tuple[int, int]
Line = tuple[int, str, Span | None, str]  # indent, text, span, "frame"/"calls": only then


def _is_function(value: object) -> bool:
    return isinstance(value, KrlCallable)


def _not_a_function(value: object, shown: str) -> NoReturn:
    raise KrlRuntimeError(f"{shown} is not a function (it is {type_of(value)})")


def _depth(run: Run) -> NoReturn:
    raise depth_exceeded(run)


_HELPERS: dict[str, object] = {
    "_type": type,
    "_len": len,
    "_int": int,
    "_str": str,
    "_KRE": KrlRuntimeError,
    "_KF": KrlFunction,
    "_isfn": _is_function,
    "_notfn": _not_a_function,
    "_depth": _depth,
    "_truthy": truthy,
    "_add": add_text,
    "_sub": op_sub,
    "_mul": op_mul,
    "_div": op_div,
    "_mod": op_mod,
    "_neg": op_neg,
    "_eq": krl_equals,
    "_cmp": compare,
    "_ts": to_string,
    "_key": get_key,
    "_path": get_path,
    "_join": join_text,
    "_list": list,
    "_enum": enumerate,
}

# map/filter/reduce with a function literal: run inline (see _Fn.inline_loop).
_INLINE = {STDLIB[name].impl: name for name in ("map", "filter", "reduce")}


def describe_callee(node: ast.Expr) -> str:
    if isinstance(node, ast.Identifier):
        return f"'{node.name}'"
    if isinstance(node, ast.DomainIdentifier):
        return f"'{node.domain}:{node.name}'"
    return "the called value"


def function_code(compiler: _Compiler, node: ast.Function, scope: Scope, name: str) -> FunctionCode:
    """Generate, compile and load the code of ``node`` (and of the function literals
    inside it); ``scope`` is the scope the literal appears in."""
    unit = _Unit(compiler)
    root = _Fn(unit, node, scope, name)
    root.generate()
    unit.load()
    return unit.codes[root.index]


def _locator(spans: dict[int, Span]) -> Callable[[KrlRuntimeError], None]:
    def locate(err: KrlRuntimeError) -> None:
        """Give ``err`` the span of the generated line it passed through, if it has none.

        Called from the handler of the generated function, so the head of the
        traceback is that function's frame and ``tb_lineno`` its failing line."""
        if err.span is None:
            tb = err.__traceback__
            if tb is not None:
                err.span = spans.get(tb.tb_lineno)

    return locate


class _Unit:
    """One generated Python module: a function literal and the literals nested in it."""

    def __init__(self, compiler: _Compiler) -> None:
        self.compiler = compiler
        self.ns: dict[str, Any] = {"__builtins__": {}, **_HELPERS}
        self.functions: list[_Fn] = []
        self.codes: list[FunctionCode] = []
        self.nconst = 0
        self.ninline = 0

    def const(self, value: object) -> str:
        """A made-up name bound to ``value`` in the unit's namespace."""
        name = f"_k{self.nconst}"
        self.nconst += 1
        self.ns[name] = value
        return name

    def add(self, fn: _Fn) -> int:
        self.functions.append(fn)
        return len(self.functions) - 1

    def add_inline(self) -> int:
        self.ninline += 1
        return self.ninline

    def load(self) -> None:
        out: list[str] = []
        spans: dict[int, Span] = {}
        for fn in self.functions:
            fn.assemble(out, spans)
        source = "\n".join(out) + "\n"
        self.ns["_loc"] = _locator(spans)
        self.ns["__krl_source__"] = source  # for reading and tests; no code refers to it
        exec(compile(source, "<krl generated>", "exec"), self.ns)
        for fn in self.functions:
            code = FunctionCode(tuple(fn.params), self.ns[f"_f{fn.index}"], fn.name)
            self.ns[f"_c{fn.index}"] = code
            self.codes.append(code)


class _Fn:
    """The generator of one function literal's Python function."""

    def __init__(
        self,
        unit: _Unit,
        node: ast.Function,
        parent: Scope,
        name: str,
        host: _Fn | None = None,
    ) -> None:
        self.unit = unit
        self.node = node
        self.name = name
        self.scope = type(parent)(parent)
        # ``host``: the body is written inline into host's code (a loop of map, filter
        # or reduce), with locals of its own prefix; otherwise it is a def of the unit.
        self.host = host
        self.prefix = "" if host is None else f"i{unit.add_inline()}_"
        self.index = -1 if host is not None else unit.add(self)
        self.params: list[str] = []
        self.lines: list[Line] = [] if host is None else host.lines
        self.depth: int = 2 if host is None else host.depth  # inside the def and its try
        self.span: Span | None = None if host is None else host.span  # an error's span
        self.frame = False  # whether the frame list F is needed
        self.calls = False  # whether the body calls anything (else run.depth stays put)
        self.ntemps = 0
        self.kinds: dict[str, str | None] = {}

    # -- output ------------------------------------------------------------

    def emit(self, text: str, indent: int = 0, only: str = "") -> None:
        """A line; ``only="frame"``/``"calls"``: kept only if the function turns out to
        need the frame list / to call something."""
        self.lines.append((self.depth + indent, text, self.span, only))

    def temp(self) -> str:
        self.ntemps += 1
        return f"{self.prefix}t{self.ntemps}"

    def local(self, slot: int) -> str:
        return f"{self.prefix}v{slot}"

    @contextmanager
    def at(self, span: ast.Span) -> Iterator[None]:
        """Errors on lines emitted inside get ``span`` (an annotating node)."""
        saved = self.span
        self.span = (span.start, span.end)
        try:
            yield
        finally:
            self.span = saved

    @contextmanager
    def capture(self) -> Iterator[list[Line]]:
        """Collect the lines emitted inside, to place them later (or drop them)."""
        saved = self.lines
        self.lines = []
        try:
            yield self.lines
        finally:
            self.lines = saved

    def assemble(self, out: list[str], spans: dict[int, Span]) -> None:
        nparams = len(self.params)
        params = "".join(f", v{i}=None" for i in range(1, nparams + 1))
        head = [
            (0, f"def _f{self.index}(P, R{params}, *_):"),
            (1, "B = R.budget"),
            (1, "s = B.steps + 1"),
            (1, "B.steps = s"),
            (1, "if s >= B.limit:"),
            (2, "B.tick(R)"),
            (1, "d = R.depth"),
            (1, "if d >= B.max_depth:"),
            (2, "_depth(R)"),
            (1, "try:"),
        ]
        if not self.calls:  # nothing it runs reads the depth: leave it as it is
            head[6:8] = [(1, "if R.depth >= B.max_depth:")]
        if self.frame:
            slots = ["P", *(f"v{i}" for i in range(1, nparams + 1))]
            slots.extend(["None"] * (self.scope.size - len(slots)))
            head.append((2, f"F = [{', '.join(slots)}]"))
        for indent, text in head:
            out.append("    " * indent + text)
        for indent, text, span, only in self.lines:
            if (only == "frame" and not self.frame) or (only == "calls" and not self.calls):
                continue
            out.append("    " * indent + text)
            if span is not None:
                spans[len(out)] = span
        tail = [(1, "except _KRE as e:"), (2, "_loc(e)"), (2, "raise")]
        if self.calls:
            tail += [(1, "finally:"), (2, "R.depth = d")]
        for indent, text in tail:
            out.append("    " * indent + text)

    # -- the function --------------------------------------------------------

    def generate(self) -> None:
        compiler, scope, node = self.unit.compiler, self.scope, self.node
        for param in node.params:
            if param.name in scope.names:
                compiler.fail(f"duplicate parameter '{param.name}'", param.span)
            slot = scope.size  # what declare() gives a new name
            if param.default is not None:
                local = self.local(slot)
                self.emit(f"if {local} is None:")
                self.depth += 1
                value, _ = self.expr(param.default)
                self.emit(f"{local} = {value}")
                self.emit(f"F[{slot}] = {local}", only="frame")
                self.depth -= 1
            declared = scope.declare(param.name)
            assert declared == slot == len(self.params) + 1
            self.params.append(param.name)
        self.emit("R.depth = d + 1", only="calls")
        for decl in node.body:
            if decl.name.name in scope.names:
                compiler.fail(
                    f"'{decl.name.name}' is already declared in this function", decl.name.span
                )
            if isinstance(decl.value, ast.Function | ast.DefAction):  # may call itself
                slot = scope.declare(decl.name.name)
                value, kind = self.expr(decl.value, decl.name.name)
            else:
                value, kind = self.expr(decl.value, decl.name.name)
                slot = scope.declare(decl.name.name)
            local = self.local(slot)
            self.emit(f"{local} = {value}")
            self.emit(f"F[{slot}] = {local}", only="frame")
            self.kinds[local] = kind
        self.tail(node.result)

    def tail(self, node: ast.Expr) -> None:
        """``return node``; the branches of a conditional return from where they are."""
        if isinstance(node, ast.Conditional) and self.depth < MAX_NESTING:
            test, kind = self.expr(node.test)
            self.emit(f"if {self.truth(test, kind)}:")
            self.depth += 1
            self.tail(node.then)
            self.depth -= 1
            self.emit("else:")
            self.depth += 1
            self.tail(node.otherwise)
            self.depth -= 1
            return
        result, _ = self.expr(node)
        self.emit(f"return {result}")

    # -- expressions ---------------------------------------------------------
    #
    # Each returns (text, kind): text is a name or a keyword holding the value, kind
    # is "int", "float", "str", "bool" or "null" when the value's type is known at
    # compile time, else None.

    def expr(self, node: ast.Expr, name: str = "function") -> tuple[str, str | None]:
        if isinstance(node, ast.Null):
            return "None", "null"
        if isinstance(node, ast.Boolean):
            return ("True" if node.value else "False"), "bool"
        if isinstance(node, ast.Number):
            return self.unit.const(node.value), type(node.value).__name__
        if isinstance(node, ast.String):
            return self.unit.const(node.value), "str"
        if isinstance(node, ast.RegExp):
            return self.unit.const(self.unit.compiler.regex(node)), None
        if isinstance(node, ast.Identifier):
            return self.identifier(node)
        if isinstance(node, ast.Function):
            return self.function_literal(node, name)
        if isinstance(node, ast.Binary):
            return self.binary(node)
        if isinstance(node, ast.Unary):
            return self.unary(node)
        if isinstance(node, ast.Conditional):
            return self.conditional(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.DotCall):
            return self.dot_call(node)
        if isinstance(node, ast.Path | ast.Index):
            target, _ = self.expr(node.target)
            key, _ = self.expr(node.key)
            t = self.temp()
            helper = "_path" if isinstance(node, ast.Path) else "_key"
            self.emit(f"{t} = {helper}({target}, {key})")
            return t, None
        if isinstance(node, ast.DotAccess):
            target, _ = self.expr(node.target)
            t = self.temp()
            self.emit(f"{t} = _key({target}, {self.unit.const(node.name.name)})")
            return t, None
        if isinstance(node, ast.Array):
            return self.array(node)
        if isinstance(node, ast.Map):
            pairs = []
            for entry_key, entry_value in node.entries:
                text, _ = self.expr(entry_value)
                pairs.append(f"{self.unit.const(entry_key.value)}: {text}")
            t = self.temp()
            self.emit(f"{t} = {{{', '.join(pairs)}}}")
            return t, None
        if isinstance(node, ast.Chevron):
            return self.chevron(node)
        return self.fallback(node, name)  # DomainIdentifier, DefAction

    def fallback(self, node: ast.Expr, name: str = "function") -> tuple[str, str | None]:
        """``node`` compiled to a closure by the compiler, called with the frame."""
        closure = self.unit.compiler.expr(node, self.scope, name)
        t = self.temp()
        self.emit(f"{t} = {self.unit.const(closure)}(F, R)")
        self.frame = self.calls = True
        return t, None

    def identifier(self, node: ast.Identifier) -> tuple[str, str | None]:
        where = self.scope.resolve(node.name)
        if where is None:
            fn = STDLIB.get(node.name)
            if fn is not None:
                return self.unit.const(fn), None
            self.unit.compiler.identifier(node, self.scope)  # raises the compile error
            raise AssertionError("unreachable")  # pragma: no cover
        text, kind, is_local = self.locate(*where)
        if is_local:
            return text, kind
        t = self.temp()
        self.emit(f"{t} = {text}")
        return t, None

    def locate(self, depth: int, slot: int) -> tuple[str, str | None, bool]:
        """Where a variable is: (a local's name, its kind, True) or (a frame path, None,
        False). An inline body's outer scope is its host's own."""
        if self.host is not None and depth > 0:
            return self.host.locate(depth - 1, slot)
        if depth == 0:
            local = self.local(slot)
            return local, self.kinds.get(local), True
        return f"P{'[0]' * (depth - 1)}[{slot}]", None, False

    def function_literal(self, node: ast.Function, name: str) -> tuple[str, str | None]:
        child = _Fn(self.unit, node, self.scope, name)
        child.generate()
        t = self.temp()
        self.emit(f"{t} = _KF(_c{child.index}, F)")
        self.frame = True
        return t, None

    def array(self, node: ast.Array) -> tuple[str, str | None]:
        compiler = self.unit.compiler
        if all(
            isinstance(i, ast.Null | ast.Boolean | ast.Number | ast.String | ast.RegExp)
            for i in node.items
        ):
            value = [
                compiler.regex(i) if isinstance(i, ast.RegExp) else compiler.constant(i, "")
                for i in node.items
            ]
            return self.unit.const(value), None  # never mutated, so it can be shared
        items = [self.expr(i)[0] for i in node.items]
        t = self.temp()
        self.emit(f"{t} = [{', '.join(items)}]")
        return t, None

    def chevron(self, node: ast.Chevron) -> tuple[str, str | None]:
        if all(isinstance(p, ast.String) for p in node.parts):
            text = "".join(p.value for p in node.parts if isinstance(p, ast.String))
            return self.unit.const(text), "str"
        parts = []
        for part in node.parts:
            text, kind = self.expr(part)
            parts.append(text if kind == "str" else f"_ts({text})")
        t = self.temp()
        self.emit(f"{t} = _join(R, [{', '.join(parts)}])")
        return t, "str"

    # -- operators -------------------------------------------------------------

    def unary(self, node: ast.Unary) -> tuple[str, str | None]:
        if node.op == "+":
            return self.expr(node.operand)
        if node.op == "not":
            value, kind = self.expr(node.operand)
            t = self.temp()
            self.emit(f"{t} = not {value}" if kind == "bool" else f"{t} = not _truthy({value})")
            return t, "bool"
        with self.at(node.span):
            value, _ = self.expr(node.operand)
            t = self.temp()
            self.emit(f"{t} = _neg({value})")
        return t, None

    def binary(self, node: ast.Binary) -> tuple[str, str | None]:
        op = node.op
        if op in ("&&", "||"):
            return self.logical(node)
        with self.at(node.span):
            a, ka = self.expr(node.left)
            b, kb = self.expr(node.right)
            t = self.temp()
            if op == "+":
                return self.add(t, a, ka, b, kb)
            if op == "-":
                self.int_op(t, "-", "_sub", a, ka, b, kb)
            elif op == "*":
                self.int_op(t, "*", "_mul", a, ka, b, kb)
            elif op == "%":
                self.mod(t, node, a, ka, b)
            elif op in ("<", ">", "<=", ">="):
                self.compare(t, op, a, ka, b, kb)
                return t, "bool"
            elif op in ("==", "!="):
                self.equals(t, op == "==", a, ka, b, kb)
                return t, "bool"
            elif op == "/":
                self.emit(f"{t} = _div({a}, {b})")
            else:
                self.emit(f"{t} = {self.unit.const(BINARY_OPS[op])}({a}, {b})")
        return t, None

    def checks(self, want: str, *operands: tuple[str, str | None]) -> list[str] | None:
        """Conditions that the operands are of type ``want`` (None: one never is)."""
        out = []
        for text, kind in operands:
            if kind == want:
                continue
            if kind is not None:
                return None
            out.append(f"_type({text}) is _{want}")
        return out

    def int_op(
        self, t: str, pyop: str, slow: str, a: str, ka: str | None, b: str, kb: str | None
    ) -> None:
        """``t = a pyop b`` when both are ints and the result stays within ±2**53 (`slow`:
        the call for the rest, "_add" taking the run first)."""
        call = f"{slow}(R, {a}, {b})" if slow == "_add" else f"{slow}({a}, {b})"
        conds = self.checks("int", (a, ka), (b, kb))
        if conds is None:
            self.emit(f"{t} = {call}")
            return
        conds.append(f"{_LOW} <= ({t} := {a} {pyop} {b}) <= {_HIGH}")
        self.emit(f"if not ({' and '.join(conds)}):")
        self.emit(f"{t} = {call}", 1)

    def add(self, t: str, a: str, ka: str | None, b: str, kb: str | None) -> tuple[str, str | None]:
        # two strings are joined inline while short; a long one is paid for (_add: add_text)
        short = f"_len({a}) + _len({b}) <= {TEXT_FREE}"
        if ka == "str" or kb == "str":  # a string on either side: the result is a string
            conds = self.checks("str", (a, ka), (b, kb))
            if conds is None:
                self.emit(f"{t} = _add(R, {a}, {b})")
            else:
                self.emit(f"if {' and '.join([*conds, short])}:")
                self.emit(f"{t} = {a} + {b}", 1)
                self.emit("else:")
                self.emit(f"{t} = _add(R, {a}, {b})", 1)
            return t, "str"
        if ka is None and kb is None:
            self.emit(
                f"if _type({a}) is _int and _type({b}) is _int"
                f" and {_LOW} <= ({t} := {a} + {b}) <= {_HIGH}:"
            )
            self.emit("pass", 1)
            self.emit(f"elif _type({a}) is _str and _type({b}) is _str and {short}:")
            self.emit(f"{t} = {a} + {b}", 1)
            self.emit("else:")
            self.emit(f"{t} = _add(R, {a}, {b})", 1)
            return t, None
        self.int_op(t, "+", "_add", a, ka, b, kb)
        return t, None

    def mod(self, t: str, node: ast.Binary, a: str, ka: str | None, b: str) -> None:
        right = node.right
        positive = isinstance(right, ast.Number) and type(right.value) is int and right.value > 0
        conds = self.checks("int", (a, ka)) if positive else None
        if conds is None:
            self.emit(f"{t} = _mod({a}, {b})")
            return
        # op_mod of ints: the sign of the dividend; for a >= 0 and b > 0 that is a % b
        conds.append(f"{a} >= 0")
        self.emit(f"if {' and '.join(conds)}:")
        self.emit(f"{t} = {a} % {b}", 1)
        self.emit("else:")
        self.emit(f"{t} = _mod({a}, {b})", 1)

    def compare(self, t: str, op: str, a: str, ka: str | None, b: str, kb: str | None) -> None:
        conds = self.checks("int", (a, ka), (b, kb))
        slow = f"{t} = _cmp({a}, {b}) {op} 0"
        if conds is None:
            self.emit(slow)
        elif not conds:
            self.emit(f"{t} = {a} {op} {b}")
        else:
            self.emit(f"if {' and '.join(conds)}:")
            self.emit(f"{t} = {a} {op} {b}", 1)
            self.emit("else:")
            self.emit(slow, 1)

    def equals(self, t: str, equal: bool, a: str, ka: str | None, b: str, kb: str | None) -> None:
        pyop, neg = ("==", "") if equal else ("!=", "not ")
        slow = f"{t} = {neg}_eq({a}, {b})"
        for want in ("int", "str"):
            if want not in (ka, kb):
                continue
            conds = self.checks(want, (a, ka), (b, kb))
            if conds is None:
                break
            if not conds:
                self.emit(f"{t} = {a} {pyop} {b}")
                return
            self.emit(f"if {' and '.join(conds)}:")
            self.emit(f"{t} = {a} {pyop} {b}", 1)
            self.emit("else:")
            self.emit(slow, 1)
            return
        self.emit(slow)

    def truth(self, text: str, kind: str | None) -> str:
        return text if kind == "bool" else f"_truthy({text})"

    def logical(self, node: ast.Binary) -> tuple[str, str | None]:
        if self.depth >= MAX_NESTING:
            return self.fallback(node)
        a, ka = self.expr(node.left)
        t = self.temp()
        self.emit(f"{t} = {a}")
        test = self.truth(t, ka)
        self.emit(f"if {test}:" if node.op == "&&" else f"if not {test}:")
        self.depth += 1
        b, kb = self.expr(node.right)
        self.emit(f"{t} = {b}")
        self.depth -= 1
        return t, ka if ka == kb else None

    def conditional(self, node: ast.Conditional) -> tuple[str, str | None]:
        if self.depth >= MAX_NESTING:
            return self.fallback(node)
        test, kind = self.expr(node.test)
        t = self.temp()
        self.emit(f"if {self.truth(test, kind)}:")
        self.depth += 1
        then, kt = self.expr(node.then)
        self.emit(f"{t} = {then}")
        self.depth -= 1
        self.emit("else:")
        self.depth += 1
        otherwise, ko = self.expr(node.otherwise)
        self.emit(f"{t} = {otherwise}")
        self.depth -= 1
        return t, kt if kt == ko else None

    # -- calls -----------------------------------------------------------------

    def call(self, node: ast.Call) -> tuple[str, str | None]:
        callee, compiler = node.callee, self.unit.compiler
        if isinstance(callee, ast.Identifier) and self.scope.resolve(callee.name) is None:
            fn = STDLIB.get(callee.name)
            if fn is not None:
                return self.static_call(fn, None, node.args, node.span)
        if isinstance(callee, ast.DomainIdentifier) and callee.domain in compiler.aliases:
            return self.fallback(node)
        if isinstance(callee, ast.DomainIdentifier) and callee.domain != "ent":
            member = compiler.module_member(callee)
            if not isinstance(member, StdlibFunction):
                compiler.fail(f"'{callee.domain}:{callee.name}' is not a function", callee.span)
            return self.static_call(member, None, node.args, node.span)
        target, _ = self.expr(callee)
        return self.dynamic_call(target, None, node.args, node.span, callee)

    def dot_call(self, node: ast.DotCall) -> tuple[str, str | None]:
        name, compiler = node.name, self.unit.compiler
        if isinstance(name, ast.DomainIdentifier) and name.domain in compiler.aliases:
            return self.fallback(node)
        if isinstance(name, ast.Identifier) and self.scope.resolve(name.name) is not None:
            # The receiver compiles first but runs after the callee is read and checked.
            with self.capture() as receiver_lines:
                receiver_value, _ = self.expr(node.receiver)
            target, _ = self.identifier(name)
            return self.dynamic_call(
                target, (receiver_lines, receiver_value), node.args, node.span, name
            )
        with self.at(node.span), self.capture() as lines:  # a stdlib call's argument
            value, _ = self.expr(node.receiver)
        receiver = (lines, value)
        fn: StdlibFunction | None
        if isinstance(name, ast.DomainIdentifier):
            member = compiler.module_member(name)
            if not isinstance(member, StdlibFunction):
                compiler.fail(f"'{name.domain}:{name.name}' is not a function", name.span)
            fn = member
        else:
            fn = STDLIB.get(name.name)
            if fn is None:
                compiler.fail(f"unknown operator or function '{name.name}'", name.span)
        return self.static_call(fn, receiver, node.args, node.span)

    def arguments(
        self, args: Sequence[ast.Arg]
    ) -> tuple[list[tuple[list[Line], str]], list[tuple[str, list[Line], str, ast.Span]]]:
        """Each argument's lines (not yet placed) and value, in source order."""
        positional: list[tuple[list[Line], str]] = []
        named: list[tuple[str, list[Line], str, ast.Span]] = []
        for arg in args:
            if arg.name is None and named:
                self.unit.compiler.fail(
                    "positional arguments must come before named arguments", arg.span
                )
            with self.capture() as lines:
                value, _ = self.expr(arg.value)
            if arg.name is None:
                positional.append((lines, value))
            else:
                named.append((arg.name, lines, value, arg.span))
        return positional, named

    def static_call(
        self,
        fn: StdlibFunction,
        receiver: tuple[list[Line], str] | None,
        args: Sequence[ast.Arg],
        span: ast.Span,
    ) -> tuple[str, str | None]:
        """A known stdlib function; arguments in parameter order, as the closure compiler
        arranges them (named ones in place, extra positional ones never evaluated)."""
        self.calls = True
        with self.at(span):
            positional, named = self.arguments(args)
            values: list[tuple[list[Line], str]] = []
            if receiver is not None:
                values.append(receiver)
            values.extend(positional)
            if not fn.variadic:
                values = values[: len(fn.params)]
            for key, lines, value, arg_span in named:
                if key not in fn.params:
                    self.unit.compiler.fail(f"'{fn.name}' has no parameter named '{key}'", arg_span)
                index = fn.params.index(key)
                while len(values) <= index:
                    values.append(([], "None"))
                values[index] = (lines, value)
            for lines, _ in values:
                self.lines.extend(lines)
            t = self.temp()
            texts = "".join(f", {v}" for _, v in values)
            call = f"{t} = {self.unit.const(fn.impl)}(R{texts})"
            literal = self.inline_candidate(fn, receiver is not None, args, named, len(values))
            if literal is None or not self.inline_loop(fn, literal, t, [v for _, v in values]):
                self.emit(call)
            else:
                self.emit("else:")
                self.emit(call, 1)
        return t, None

    # -- map, filter and reduce with a function literal, inline ------------------

    def inline_candidate(
        self,
        fn: StdlibFunction,
        has_receiver: bool,
        args: Sequence[ast.Arg],
        named: list[Any],
        n: int,
    ) -> ast.Function | None:
        """The function literal of ``xs.map(function(x) {…})`` (also ``filter``, and
        ``reduce`` with an initial value), if its body can run inline."""
        kind = _INLINE.get(fn.impl)
        if kind is None or named or n != (3 if kind == "reduce" else 2):
            return None
        position = 0 if has_receiver else 1
        if len(args) <= position:
            return None
        literal = args[position].value
        if not isinstance(literal, ast.Function):
            return None
        if len(literal.params) > (4 if kind == "reduce" else 3):
            return None
        if any(p.default is not None for p in literal.params):
            return None
        return literal

    def inline_loop(
        self, fn: StdlibFunction, literal: ast.Function, t: str, values: list[str]
    ) -> bool:
        """For an Array, the loop of ``map``/``filter``/``reduce`` with the literal's body
        in it; ``if`` emitted, the caller adds ``else:`` and the stdlib call. As with the
        call: per element one step for the iteration, one for the call (charged in that
        order), the callee's depth check; nothing in the body calls, so the depth the
        body runs at is never read. False if the literal's body does not qualify."""
        child = next((f for f in self.unit.functions if f.node is literal), None)
        if child is None or child.calls or child.frame or self.depth > 20:
            return False
        if max((line[0] for line in child.lines), default=0) > 30:
            return False
        kind = _INLINE[fn.impl]
        items = values[0]
        self.emit(f"if _type({items}) is _list:")
        self.depth += 1
        body = _Fn(self.unit, literal, self.scope, child.name, host=self)
        names = [body.local(i) for i in range(1, len(literal.params) + 1)]
        lead = 1 if kind == "reduce" else 0  # reduce's first parameter is the accumulator
        item = names[lead] if len(names) > lead else body.temp()
        index = names[lead + 1] if len(names) > lead + 1 else None
        if len(names) > lead + 2:
            self.emit(f"{names[lead + 2]} = {items}")
        self.emit(f"{t} = {values[2]}" if kind == "reduce" else f"{t} = []")
        if index is None:
            self.emit(f"for {item} in {items}:")
        else:
            self.emit(f"for {index}, {item} in _enum({items}):")
        self.depth += 1
        for _ in range(2):
            self.emit("s = B.steps + 1")
            self.emit("B.steps = s")
            self.emit("if s >= B.limit:")
            self.emit("B.tick(R)", 1)
        self.emit("if R.depth >= B.max_depth:")  # what the callee's entry checks
        self.emit("_depth(R)", 1)
        if kind == "reduce" and names:
            self.emit(f"{names[0]} = {t}")
        body.depth = self.depth
        result, result_kind = body.inline_body()
        assert not body.calls, "inlined a body that calls"
        assert not body.frame, "inlined a body that needs a frame"
        if kind == "map":
            self.emit(f"{t}.append({result})")
        elif kind == "filter":
            self.emit(f"if {self.truth(result, result_kind)}:")
            self.emit(f"{t}.append({item})", 1)
        else:
            self.emit(f"{t} = {result}")
        self.depth -= 2
        return True

    def inline_body(self) -> tuple[str, str | None]:
        """The parameters (already bound by the host's loop), declarations and result."""
        for param in self.node.params:
            self.params.append(param.name)
            self.scope.declare(param.name)
        for decl in self.node.body:
            value, kind = self.expr(decl.value, decl.name.name)
            local = self.local(self.scope.declare(decl.name.name))
            self.emit(f"{local} = {value}")
            self.kinds[local] = kind
        return self.expr(self.node.result)

    def dynamic_call(
        self,
        target: str,
        receiver: tuple[list[Line], str] | None,
        args: Sequence[ast.Arg],
        span: ast.Span,
        callee: ast.Expr,
    ) -> tuple[str, str | None]:
        """A call of a value: checked to be callable before the arguments run; a plain
        KRL function with positional arguments is entered directly."""
        self.calls = True
        positional, named = self.arguments(args)
        plain = self.temp()
        self.emit(f"{plain} = _type({target}) is _KF")
        with self.at(span):
            self.emit(f"if not {plain} and not _isfn({target}):")
            self.emit(f"_notfn({target}, {self.unit.const(describe_callee(callee))})", 1)
        values: list[str] = []
        if receiver is not None:
            self.lines.extend(receiver[0])
            values.append(receiver[1])
        for lines, value in positional:
            self.lines.extend(lines)
            values.append(value)
        for _, lines, _, _ in named:
            self.lines.extend(lines)
        t = self.temp()
        listed = ", ".join(values)
        with self.at(span):
            if named:
                pairs = ", ".join(f"{self.unit.const(k)}: {v}" for k, _, v, _ in named)
                self.emit(f"{t} = {target}.call(R, [{listed}], {{{pairs}}})")
                return t, None
            self.emit(f"if {plain}:")
            self.emit(
                f"{t} = {target}.entry({target}.frame, R{''.join(', ' + v for v in values)})", 1
            )
            self.emit("else:")
            self.emit(f"{t} = {target}.call(R, [{listed}], None)", 1)
        return t, None
