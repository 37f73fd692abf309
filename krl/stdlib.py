"""KRL operators, standard-library functions and the ``event:``/``meta:`` modules.

Neighbours: ``runtime`` defines the values these operate on; ``compiler`` looks
names up in :data:`BINARY_OPS`, :data:`STDLIB`, :data:`ACTIONS` and :data:`MODULES`.

Every function here takes the current ``Run`` first and then KRL values; missing
trailing arguments are simply not passed, so Python defaults stand for "omitted".
Semantics follow pico-engine's ``krl-stdlib`` (JavaScript coercions), written afresh.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import decimal
import functools
import hashlib
import hmac
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from .errors import KrlRuntimeError
from .redos import check_regex
from .runtime import (
    KrlAction,
    KrlFunction,
    KrlRegExp,
    Run,
    StdlibFunction,
    call_value,
    compare,
    is_callable,
    is_null,
    is_number,
    krl_equals,
    normalize,
    to_number,
    to_plain,
    to_string,
    truthy,
    type_of,
)

__all__ = [
    "ACTIONS",
    "BINARY_OPS",
    "MODULES",
    "MODULE_ACTIONS",
    "REFERENCE_MODULES",
    "STDLIB",
    "compile_regex",
    "delete_path",
    "encode",
    "get_key",
    "get_path",
    "key_path",
    "op_neg",
    "schedule_record",
    "set_path",
]

_MISSING: Any = object()

# ---------------------------------------------------------------------------
# Regular expressions: KRL uses JavaScript syntax; translate the differences that matter.


def _translate_regex(source: str, multiline: bool) -> str:
    out: list[str] = []
    i, n = 0, len(source)
    in_class = False
    while i < n:
        ch = source[i]
        if ch == "\\" and i + 1 < n:
            out.append(source[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            if source.startswith("[^]", i):  # JavaScript's "any character"
                out.append(r"[\s\S]")
                i += 3
                in_class = False
                continue
        elif ch == "$" and not multiline:
            out.append(r"\Z")
            i += 1
            continue
        elif source.startswith("(?<", i) and source[i + 3 : i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=512)
def compile_regex(source: str, flags: str = "") -> KrlRegExp:
    """A KrlRegExp from JavaScript-style source; raises ValueError with a reason."""
    py_flags = 0
    if "i" in flags:
        py_flags |= re.IGNORECASE
    if "m" in flags:
        py_flags |= re.MULTILINE
    translated = _translate_regex(source, "m" in flags)
    try:
        pattern = re.compile(translated, py_flags)
    except re.error as err:
        raise ValueError(f"invalid regular expression re#{source}#: {err}") from None
    max_subject = check_regex(source, translated, py_flags)  # ValueError if unsafe
    return KrlRegExp(source, "".join(f for f in "gim" if f in flags), pattern, max_subject)


def _regex_arg(value: object) -> KrlRegExp:
    if isinstance(value, KrlRegExp):
        return value
    try:
        return compile_regex(to_string(value))
    except ValueError as err:
        raise KrlRuntimeError(str(err)) from None


# ---------------------------------------------------------------------------
# Infix and prefix operators


# Text a transaction builds is paid for by its length, so that no rule or query can take the
# node's memory (40 doublings of "x" by `s + s` are 40 steps and 2**40 characters): a string
# of more than TEXT_FREE characters costs a step per TEXT_PER_STEP of them besides its
# operation's own, and one of more than MAX_TEXT is refused before it is built. The step
# budget (a million) then bounds what a transaction builds to about 64 MB.
TEXT_FREE = 4096
TEXT_PER_STEP = 64
MAX_TEXT = 1 << 24


def pay_text(run: Run, n: int, what: str) -> None:
    """Charge the building of `n` characters of text (`what`: for the error)."""
    if n > MAX_TEXT:
        raise KrlRuntimeError(f"{what} would be {n} characters long; the limit is {MAX_TEXT}")
    run.budget.charge(run, n // TEXT_PER_STEP)


def join_text(run: Run, parts: list[str], sep: str = "") -> str:
    """``sep.join(parts)`` in a transaction, a long result paid for (pay_text)."""
    n = sum(map(len, parts)) + len(sep) * max(len(parts) - 1, 0)
    if n > TEXT_FREE:
        pay_text(run, n, "the joined string")
    return sep.join(parts)


def add_text(run: Run, a: object, b: object) -> object:
    """``a + b``: numbers add, anything else joins as strings, a long one paid for
    (pay_text). Not in BINARY_OPS: it needs the run."""
    if is_number(a) and is_number(b):
        return normalize(a + b)  # type: ignore[operator]
    x, y = to_string(a), to_string(b)
    n = len(x) + len(y)
    if n > TEXT_FREE:
        pay_text(run, n, "the string joined by +")
    return x + y


def _numbers(a: object, b: object, message: str) -> tuple[int | float, int | float]:
    x, y = to_number(a), to_number(b)
    if x is None or y is None:
        raise KrlRuntimeError(message.format(to_string(a), to_string(b)))
    return x, y


def op_sub(a: object, b: object) -> object:
    x, y = _numbers(a, b, "{1} cannot be subtracted from {0}")
    return normalize(x - y)


def op_mul(a: object, b: object) -> object:
    x, y = _numbers(a, b, "{0} cannot be multiplied by {1}")
    return normalize(x * y)


def op_div(a: object, b: object) -> object:
    x, y = _numbers(a, b, "{0} cannot be divided by {1}")
    if y == 0:
        return 0  # KRL: division by zero gives 0
    return normalize(x / y)


def op_mod(a: object, b: object) -> object:
    x, y = _numbers(a, b, "Cannot calculate {0} modulo {1}")
    if y == 0:
        return 0
    if type(x) is int and type(y) is int:
        r = abs(x) % abs(y)
        return -r if x < 0 else r
    return normalize(math.fmod(x, y))


def op_neg(a: object) -> object:
    x = to_number(a)
    if x is None:
        raise KrlRuntimeError(f"Cannot negate {to_string(a)}")
    return normalize(-x)


def op_like(a: object, b: object) -> bool:
    rx = _regex_arg(b)
    return rx.pattern.search(rx.subject(to_string(a))) is not None


def op_cmp(a: object, b: object) -> int:
    s, t = to_string(a), to_string(b)
    return 0 if s == t else (1 if s > t else -1)


def op_contains(a: object, b: object) -> bool:
    if isinstance(a, list):
        return any(krl_equals(x, b) for x in a)
    if isinstance(a, dict):
        return to_string(b) in a
    return False


# "+" is add_text, which takes the run besides its operands
BINARY_OPS: dict[str, Callable[[object, object], object]] = {
    "-": op_sub,
    "*": op_mul,
    "/": op_div,
    "%": op_mod,
    "==": krl_equals,
    "!=": lambda a, b: not krl_equals(a, b),
    "<": lambda a, b: compare(a, b) < 0,
    ">": lambda a, b: compare(a, b) > 0,
    "<=": lambda a, b: compare(a, b) <= 0,
    ">=": lambda a, b: compare(a, b) >= 0,
    "<=>": compare,
    "cmp": op_cmp,
    "like": op_like,
    "><": op_contains,
}

# ---------------------------------------------------------------------------
# Paths: m{k}, m{[k1, k2]}, put/set/delete


def key_path(path: object) -> list[str]:
    if isinstance(path, list):
        return [to_string(k) for k in path]
    return [to_string(path)]


def _index(key: str) -> int | None:
    return int(key) if key.isdigit() and key.isascii() else None


def get_key(value: object, key: object) -> object:
    """``value{key}`` / ``value[key]``: only maps and arrays have members."""
    if isinstance(value, dict):
        return value.get(key if type(key) is str else to_string(key))
    if isinstance(value, list):
        i = key if type(key) is int else _index(to_string(key))
        if i is not None and 0 <= i < len(value):
            return value[i]
    return None


def get_path(value: object, path: object) -> object:
    if not isinstance(path, list):
        return get_key(value, path)
    for key in key_path(path):
        value = get_key(value, key)
        if value is None:
            return None
    return value


def set_path(root: object, keys: list[str], value: object, lists: bool) -> object:
    """A copy of ``root`` with ``value`` at ``keys``.

    Missing levels become maps, or lists when ``lists`` is set and the next key is
    an integer (lodash ``set``, used by ``ent:x{path} :=``). A non-index key on a
    list turns it into a map with string indexes.
    """
    if not keys:
        return value
    key, rest = keys[0], keys[1:]
    if isinstance(root, list):
        i = _index(key)
        if i is not None:
            out = list(root)
            if i >= len(out):
                out.extend([None] * (i + 1 - len(out)))
            out[i] = set_path(out[i], rest, value, lists)
            return out
        root = {str(j): v for j, v in enumerate(root)}
    if isinstance(root, dict):
        new = dict(root)
        new[key] = set_path(root.get(key), rest, value, lists)
        return new
    if lists and _index(key) is not None:
        return set_path([], keys, value, lists)
    return {key: set_path(None, rest, value, lists)}


def delete_path(root: object, keys: list[str]) -> object:
    if not keys:
        return None
    key, rest = keys[0], keys[1:]
    if isinstance(root, dict):
        if key not in root:
            return root
        new = dict(root)
        if rest:
            new[key] = delete_path(root[key], rest)
        else:
            del new[key]
        return new
    if isinstance(root, list):
        i = _index(key)
        if i is None or i >= len(root):
            return root
        out = list(root)
        if rest:
            out[i] = delete_path(root[i], rest)
        else:
            out[i] = None  # lodash unset leaves a hole in an array
        return out
    return root


# ---------------------------------------------------------------------------
# JSON


def encode(value: object, indent: object = None) -> str:
    # As pico-engine: the indent is parseInt(indent, 10) || 0 spaces (at most 10), so
    # .encode("2") indents by two spaces and a non-numeric indent means none.
    text = indent if isinstance(indent, str) else to_string(indent) if is_number(indent) else ""
    digits = re.match(r"[+-]?\d+", text.lstrip())
    width = int(digits.group()) if digits else 0
    return _encode(value, " " * max(0, min(10, width)), "")


def _encode(value: object, step: str, current: str) -> str:
    if value is None or value is True or value is False or is_number(value):
        if type(value) is float and not math.isfinite(value):
            return "null"
        return "null" if value is None else to_string(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | dict):
        if not value:
            return "[]" if isinstance(value, list) else "{}"
        inner = current + step
        sep, colon, nl = (",\n" + inner, ": ", "\n") if step else (",", ":", "")
        if isinstance(value, list):
            items = [_encode(v, step, inner) for v in value]
            return "[" + nl + inner * bool(step) + sep.join(items) + nl + current * bool(step) + "]"
        pairs = [
            json.dumps(k, ensure_ascii=False) + colon + _encode(v, step, inner)
            for k, v in value.items()
        ]
        return "{" + nl + inner * bool(step) + sep.join(pairs) + nl + current * bool(step) + "}"
    if type(value) is KrlRegExp:
        return json.dumps(to_string(value), ensure_ascii=False)
    return json.dumps(f"[{type_of(value)}]")  # "[Function]", "[Action]", as the reference


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def decode(run: Run, value: object = None) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(
            value,
            parse_float=lambda t: normalize(float(t)),
            parse_int=lambda t: normalize(int(t)) if len(t) < 400 else float(t),
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError):
        return value


# ---------------------------------------------------------------------------
# Universal operators


def _as(run: Run, value: object = None, kind: object = _MISSING) -> object:
    if kind is _MISSING:
        return value
    vtype = type_of(value)
    if vtype == kind:
        return value
    if kind == "Boolean":
        if value == "false":
            return False
        if vtype == "Number":
            return value != 0
        return truthy(value)
    if kind == "String":
        return to_string(value)
    if kind == "Number":
        return to_number(value)
    if kind == "RegExp":
        source = to_string(value)
        if vtype != "String" and re.fullmatch(r"\[[a-z]+\]", source, re.IGNORECASE):
            source = "\\[" + source[1:-1] + "\\]"
        return _regex_arg(source)
    raise KrlRuntimeError(
        f'Cannot use the .as("{to_string(kind)}") operator with {to_string(value)} (type {vtype})'
    )


def _defaults_to(
    run: Run, value: object = None, default: object = None, message: object = None
) -> object:
    if not is_null(value):
        return value
    if not is_null(message):
        run.ctx.log("debug", f"[DEFAULTSTO] {to_string(message)}")
    return default


def _klog(run: Run, value: object = None, message: object = None) -> object:
    label = "klog" if is_null(message) else to_string(message)
    try:
        text = encode(value)
    except Exception:  # klog never throws
        text = to_string(value)
    run.ctx.log("klog", f"{label} {text}")
    return value


def _sprintf(run: Run, value: object = None, template: object = None) -> object:
    if is_null(template):
        return ""
    text = to_string(template)
    if is_number(value):
        spec = "%d"
    elif isinstance(value, str):
        spec = "%s"
    else:
        return text
    shown = to_string(value)
    most = len(text) + text.count(spec) * len(shown)  # every spec replaced, at most
    if most > TEXT_FREE:
        pay_text(run, most, "the formatted string")
    pattern = re.compile(r"(^|[^\\])" + spec)
    parts = [pattern.sub(lambda m: m.group(1) + shown, p) for p in text.split("\\\\")]
    return "\\".join(parts).replace("\\" + spec, spec)


# ---------------------------------------------------------------------------
# Strings


def _str_fn(fn: Callable[[str], object]) -> Callable[..., object]:
    return lambda run, value=None: fn(to_string(value))


def _match(run: Run, value: object = None, regex: object = None) -> bool:
    if isinstance(regex, str):
        regex = _regex_arg(regex)
    elif not isinstance(regex, KrlRegExp):
        return False
    return regex.pattern.search(regex.subject(to_string(value))) is not None


def _extract(run: Run, value: object = None, regex: object = _MISSING) -> list[object]:
    if regex is _MISSING:
        return []
    rx = _regex_arg(regex)
    text = rx.subject(to_string(value))
    if rx.is_global:
        return [m.group(0) for m in rx.pattern.finditer(text)]
    m = rx.pattern.search(text)
    return list(m.groups()) if m else []


def _split(run: Run, value: object = None, sep: object = None) -> list[object]:
    text = to_string(value)
    if isinstance(sep, KrlRegExp):
        return [p for p in sep.pattern.split(sep.subject(text))]
    s = to_string(sep)
    if s == "":
        return list(text)
    return list(text.split(s))


_JS_REPLACEMENT = re.compile(r"\$(\$|&|\d{1,2}|`|')")


def _expand(template: str, m: re.Match[str]) -> str:
    def one(t: re.Match[str]) -> str:
        tok = t.group(1)
        if tok == "$":
            return "$"
        if tok == "&":
            return m.group(0)
        if tok == "`":
            return m.string[: m.start()]
        if tok == "'":
            return m.string[m.end() :]
        n = int(tok)
        if 1 <= n <= (m.re.groups or 0):
            return m.group(n) or ""
        return t.group(0)

    return _JS_REPLACEMENT.sub(one, template)


def _replace(
    run: Run, value: object = None, regex: object = _MISSING, repl: object = None
) -> object:
    if regex is _MISSING:
        return value
    text = to_string(value)
    if isinstance(regex, KrlRegExp) or is_callable(repl):
        rx = _regex_arg(regex)
        rx.subject(text)
        count = 0 if rx.is_global else 1
        made = [len(text)]  # characters of the result so far, at most (pay_text)

        def paid(piece: str) -> str:
            before = made[0]
            made[0] = after = before + len(piece)
            if after > TEXT_FREE:
                if after > MAX_TEXT:
                    pay_text(run, after, "the replaced string")
                run.budget.charge(run, after // TEXT_PER_STEP - before // TEXT_PER_STEP)
            return piece

        if is_callable(repl):

            def call(m: re.Match[str]) -> str:
                run.budget.charge(run)
                args = [m.group(0), *m.groups(), m.start(), text]
                return paid(to_string(call_value(run, repl, args)))

            return rx.pattern.sub(call, text, count=count)
        template = "" if is_null(repl) else to_string(repl)
        return rx.pattern.sub(lambda m: paid(_expand(template, m)), text, count=count)
    needle = to_string(regex)
    template = "" if is_null(repl) else to_string(repl)
    at = text.find(needle)
    if at < 0:
        return text
    m = re.compile(re.escape(needle)).search(text, at)
    assert m is not None
    return text[:at] + _expand(template, m) + text[at + len(needle) :]


def _substr(run: Run, value: object = None, start: object = None, length: object = None) -> str:
    text = to_string(value)
    s = to_number(start) if start is not None else None
    if s is None:
        return text
    if s > len(text):
        return ""
    n = to_number(length) if length is not None else None
    end: float
    if n is None:
        end = len(text)
    elif n > 0:
        end = s + n
    else:
        end = len(text) + n
    # JavaScript's String.prototype.substring: clamp both ends to the string, then swap
    # them if needed ("This is a string".substr(5, -15) is "his ", as on pico-engine).
    lo, hi = sorted(_clamp_index(x, len(text)) for x in (s, end))
    return text[lo:hi]


def _clamp_index(x: float, size: int) -> int:
    if x != x or x <= 0:
        return 0
    return size if x >= size else int(x)


def _ord(run: Run, value: object = None) -> object:
    text = to_string(value)
    return ord(text[0]) if text else None


def _chr(run: Run, value: object = None) -> object:
    n = to_number(value)
    if n is None or not math.isfinite(n):
        return None
    try:
        return chr(int(n) % 0x10000)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Collections


def _items(value: object, name: str) -> Iterator[tuple[object, object]]:
    if isinstance(value, list):
        return iter(enumerate(value))
    if isinstance(value, dict):
        return iter(value.items())
    raise KrlRuntimeError(f"{name} only works on collections (Array or Map), not {type_of(value)}")


def _function_arg(fn: object, name: str) -> object:
    if not is_callable(fn):
        raise KrlRuntimeError(f"{name} expects a function, found {type_of(fn)}")
    return fn


# The function ``map``, ``filter`` and ``collect`` use when given none (or null), as the
# reference does: ``[3, null].map()`` is a copy, ``[1, 2, 2].collect()`` groups by value.
_IDENTITY = StdlibFunction("identity", ("val",), lambda run, v=None: v)


def _iterate(
    run: Run, value: object, fn: object, name: str
) -> Iterator[tuple[object, object, object]]:
    """(key, element, fn(element, key, collection)) for each element, charging the budget.

    As the reference, a non-collection is refused first, and the function is checked
    only when there is an element to call it on (``[].all()`` is true)."""
    items = _items(value, name)
    if value:
        fn = _function_arg(fn, name)
    for key, item in items:
        run.budget.charge(run)
        yield key, item, call_value(run, fn, (item, key, value))


def _call_each(run: Run, items: list[object], fn: KrlFunction) -> list[object]:
    """``fn(item, index, items)`` for each item: the fast path of ``map`` and ``filter``
    for a KRL function over an Array. One step per iteration, charged inline as
    ``Budget.charge`` does, then the call's own step (in the function's entry)."""
    budget = run.budget
    entry, frame = fn.entry, fn.frame
    out: list[object] = []
    append = out.append
    if len(fn.code.params) <= 1:  # pass no more than it reads: no tuple for the rest
        for item in items:
            steps = budget.steps + 1
            budget.steps = steps
            if steps >= budget.limit:
                budget.tick(run)
            append(entry(frame, run, item))
        return out
    for i, item in enumerate(items):
        steps = budget.steps + 1
        budget.steps = steps
        if steps >= budget.limit:
            budget.tick(run)
        append(entry(frame, run, item, i, items))
    return out


def _map(run: Run, value: object = None, fn: object = None) -> object:
    if type(fn) is KrlFunction and type(value) is list:
        return _call_each(run, value, fn)
    if is_null(fn):
        fn = _IDENTITY
    pairs = [(k, r) for k, _, r in _iterate(run, value, fn, "map")]
    if isinstance(value, list):
        return [r for _, r in pairs]
    return {k: r for k, r in pairs}


def _filter(run: Run, value: object = None, fn: object = None) -> object:
    if type(fn) is KrlFunction and type(value) is list:
        results = _call_each(run, value, fn)
        return [v for v, r in zip(value, results, strict=True) if r is True or truthy(r)]
    if is_null(fn):
        fn = _IDENTITY
    kept = [(k, v) for k, v, r in _iterate(run, value, fn, "filter") if truthy(r)]
    if isinstance(value, list):
        return [v for _, v in kept]
    return dict(kept)


def _any(run: Run, value: object = None, fn: object = None) -> bool:
    return any(truthy(r) for _, _, r in _iterate(run, value, fn, "any"))


def _all(run: Run, value: object = None, fn: object = None) -> bool:
    return all(truthy(r) for _, _, r in _iterate(run, value, fn, "all"))


def _collect(run: Run, value: object = None, fn: object = None) -> dict[str, list[object]]:
    groups: dict[str, list[object]] = {}
    if is_null(fn):
        fn = _IDENTITY
    for _, item, r in _iterate(run, value, fn, "collect"):
        groups.setdefault(to_string(r), []).append(item)
    return groups


def _reduce(run: Run, value: object = None, fn: object = None, init: object = _MISSING) -> object:
    if not isinstance(value, list):
        raise KrlRuntimeError(f"reduce only works on an Array, not {type_of(value)}")
    items = value
    if not items:  # as the reference, no function is needed for an empty Array
        return 0 if init is _MISSING else init
    fn = _function_arg(fn, "reduce")
    if init is _MISSING:
        acc, start = items[0], 1
    else:
        acc, start = init, 0
    budget = run.budget
    if type(fn) is KrlFunction:  # the fast path: charged inline as in _call_each
        entry, frame = fn.entry, fn.frame
        two = len(fn.code.params) <= 2  # pass no more than it reads
        for i in range(start, len(items)):
            steps = budget.steps + 1
            budget.steps = steps
            if steps >= budget.limit:
                budget.tick(run)
            if two:
                acc = entry(frame, run, acc, items[i])
            else:
                acc = entry(frame, run, acc, items[i], i, value)
        return acc
    for i in range(start, len(items)):
        budget.charge(run)
        acc = call_value(run, fn, (acc, items[i], i, value))
    return acc


def _length(run: Run, value: object = None) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    return 0


def _keys(run: Run, value: object = None, path: object = _MISSING) -> list[object]:
    if path is not _MISSING:
        value = get_path(value, path)
    if isinstance(value, dict):
        return list(value.keys())
    if isinstance(value, list):
        return [str(i) for i in range(len(value))]
    return []


def _values(run: Run, value: object = None, path: object = _MISSING) -> list[object]:
    if path is not _MISSING:
        value = get_path(value, path)
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _put(run: Run, value: object = None, path: object = _MISSING, new: object = _MISSING) -> object:
    if path is _MISSING:
        return value
    if new is _MISSING:
        if isinstance(value, dict) and isinstance(path, dict):
            return {**value, **path}
        if isinstance(path, dict) and value is None:
            return dict(path)
        return value
    return _put_path(value, key_path(path), new, True)


def _put_path(root: object, keys: list[str], value: object, top: bool) -> object:
    """``put(path, value)``: a copy of ``root`` with ``value`` at ``keys``, as the reference.

    Missing levels become maps. Below the top, an Array stays an Array only when the key
    is an index from 0 to its length (the length appends), else it becomes a map with
    string indexes: ``{"one": [2, 3]}.put(["one", "3"], 4)`` is
    ``{"one": {"0": 2, "1": 3, "3": 4}}``. The top Array is padded with nulls instead
    (``["a", "b"].put([5], "x")``); a non-index key turns it into a map too.
    """
    if not keys:
        return value
    key, rest = keys[0], keys[1:]
    if isinstance(root, list):
        i = _index(key)
        if i is not None and (top or i <= len(root)):
            out = list(root)
            if i >= len(out):
                out.extend([None] * (i + 1 - len(out)))
            out[i] = _put_path(out[i], rest, value, False)
            return out
        root = {str(j): v for j, v in enumerate(root)}
    if isinstance(root, dict):
        new = dict(root)
        new[key] = _put_path(root.get(key), rest, value, False)
        return new
    return {key: _put_path(None, rest, value, False)}


def _set(run: Run, value: object = None, path: object = _MISSING, new: object = None) -> object:
    if path is _MISSING:
        return value
    return set_path(value, key_path(path), new, lists=True)


def _get(run: Run, value: object = None, path: object = None) -> object:
    return get_path(value, path)


def _delete(run: Run, value: object = None, path: object = _MISSING) -> object:
    if path is _MISSING:
        return value
    return delete_path(value, key_path(path))


def _append(run: Run, *args: object) -> list[object]:
    out: list[object] = []
    for arg in args:
        if isinstance(arg, list):
            run.budget.charge(run, len(arg) // 64)
            out.extend(arg)
        else:
            out.append(arg)
    return out


def _head(run: Run, value: object = None) -> object:
    if not isinstance(value, list):
        return value
    return value[0] if value else None


def _tail(run: Run, value: object = None) -> list[object]:
    return list(value[1:]) if isinstance(value, list) else []


def _join(run: Run, value: object = None, sep: object = None) -> str:
    if not isinstance(value, list):
        return to_string(value)
    return join_text(run, [to_string(v) for v in value], "," if sep is None else to_string(sep))


def _index_of(run: Run, value: object = None, item: object = None) -> int:
    if not isinstance(value, list):
        raise KrlRuntimeError(f"index only works on an Array, not {type_of(value)}")
    for i, v in enumerate(value):
        if krl_equals(v, item):
            return i
    return -1


def _reverse(run: Run, value: object = None) -> object:
    if not isinstance(value, list):
        raise KrlRuntimeError(f"reverse only works on Arrays, not {type_of(value)}")
    return value[::-1]


def _slice(run: Run, value: object = None, a: object = _MISSING, b: object = _MISSING) -> object:
    """``slice(i)`` is items 0..i, ``slice(i, j)`` items i..j (swapped if i > j), both
    inclusive; out of range gives ``[]`` and no index gives the whole Array."""
    if not isinstance(value, list):
        raise KrlRuntimeError(f"slice only works on an Array, not {type_of(value)}")
    if not value:
        return []
    if a is _MISSING:
        return value
    i = to_number(a)
    if i is None:
        raise KrlRuntimeError(f"The .slice() operator cannot use {to_string(a)} as an index")
    if b is _MISSING:
        if i > len(value) or i == -math.inf:  # slice(len) is the whole Array
            return []
        return value[: int(i + 1)]  # as lodash's slice, a negative end counts from the end
    j = to_number(b)
    if j is None:
        raise KrlRuntimeError(f"The .slice() operator cannot use {to_string(b)} as the other index")
    start, end = (i, j) if i <= j else (j, i)
    if start < 0 or end >= len(value):
        return []
    return value[int(start) : int(end + 1)]


def _is_empty(run: Run, value: object = None) -> bool:
    if isinstance(value, str | list | dict):
        return len(value) == 0
    return True


def _unique(run: Run, value: object = None) -> object:
    if not isinstance(value, list):
        return value
    out: list[object] = []
    for v in value:
        run.budget.charge(run)
        if not any(krl_equals(v, u) for u in out):
            out.append(v)
    return out


def _sort(run: Run, value: object = None, how: object = None) -> object:
    if not isinstance(value, list):
        return value
    run.budget.charge(run, len(value))
    if is_callable(how) and type(how) is not KrlAction:  # anything else sorts by default

        def cmp(a: object, b: object) -> int:
            run.budget.charge(run)
            n = to_number(call_value(run, how, (a, b)))
            return 0 if not n else (1 if n > 0 else -1)

        return sorted(value, key=functools.cmp_to_key(cmp))
    if how == "numeric":
        return sorted(value, key=functools.cmp_to_key(compare))
    if how == "ciremun":
        return sorted(value, key=functools.cmp_to_key(lambda a, b: compare(b, a)))
    by_string = sorted(value, key=lambda v: to_string(v).encode("utf-16-be"))
    if how == "reverse":
        by_string.reverse()
    return by_string


_SAFE = 2**53  # integers up to this stay int (runtime.normalize)


def _range(run: Run, start: object = None, end: object = _MISSING) -> list[object]:
    if end is _MISSING:
        return []
    a, b = to_number(start), to_number(end)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return []
    count = math.floor(abs(b - a)) + 1
    run.budget.charge(run, count)  # before building the list
    if type(a) is int and type(b) is int and -_SAFE <= a <= _SAFE and -_SAFE <= b <= _SAFE:
        return list(range(a, b + 1) if b >= a else range(a, b - 1, -1))  # all ints
    step = 1 if b >= a else -1
    return [normalize(a + step * i) for i in range(count)]


# ---------------------------------------------------------------------------
# Tables


def _fn(name: str, params: str, impl: Callable[..., Any], variadic: bool = False) -> StdlibFunction:
    return StdlibFunction(name, tuple(params.split()), impl, variadic)


STDLIB: dict[str, StdlibFunction] = {
    f.name: f
    for f in [
        _fn("as", "val type", _as),
        _fn("defaultsTo", "val default message", _defaults_to),
        _fn("isnull", "val", lambda run, v=None: is_null(v)),
        _fn("typeof", "val", lambda run, v=None: type_of(v)),
        _fn("klog", "val message", _klog),
        _fn("sprintf", "val template", _sprintf),
        _fn("encode", "val indent", lambda run, v=None, indent=None: encode(v, indent)),
        _fn("decode", "val", decode),
        _fn("noop", "", lambda run, *args: None, variadic=True),
        # numbers
        _fn("range", "val end", _range),
        _fn("chr", "val", _chr),
        # strings
        _fn("lc", "val", _str_fn(str.lower)),
        _fn("uc", "val", _str_fn(str.upper)),
        _fn("capitalize", "val", _str_fn(lambda s: s[:1].upper() + s[1:])),
        _fn("trim", "val", _str_fn(str.strip)),
        _fn("trimLeading", "val", _str_fn(str.lstrip)),
        _fn("trimTrailing", "val", _str_fn(str.rstrip)),
        _fn(
            "startsWith",
            "val target",
            lambda run, v=None, t=None: to_string(v).startswith(to_string(t)),
        ),
        _fn(
            "endsWith",
            "val target",
            lambda run, v=None, t=None: to_string(v).endswith(to_string(t)),
        ),
        _fn("contains", "val target", lambda run, v=None, t=None: to_string(t) in to_string(v)),
        _fn("match", "val regex", _match),
        _fn("extract", "val regex", _extract),
        _fn("split", "val separator", _split),
        _fn("replace", "val regex replacement", _replace),
        _fn("substr", "val start length", _substr),
        _fn("ord", "val", _ord),
        # collections
        _fn("length", "val", _length),
        _fn("isEmpty", "val", _is_empty),
        _fn("keys", "val path", _keys),
        _fn("values", "val path", _values),
        _fn("put", "val path value", _put),
        _fn("set", "val path value", _set),
        _fn("get", "val path", _get),
        _fn("delete", "val path", _delete),
        _fn("append", "val", _append, variadic=True),
        _fn("head", "val", _head),
        _fn("tail", "val", _tail),
        _fn("join", "val separator", _join),
        _fn("index", "val elm", _index_of),
        _fn("reverse", "val", _reverse),
        _fn("slice", "val start end", _slice),
        _fn("unique", "val", _unique),
        _fn("sort", "val how", _sort),
        _fn("map", "val iter", _map),
        _fn("filter", "val iter", _filter),
        _fn("reduce", "val iter init", _reduce),
        _fn("collect", "val iter", _collect),
        _fn("any", "val iter", _any),
        _fn("all", "val iter", _all),
        _fn("none", "val iter", lambda run, v=None, f=None: not _any(run, v, f)),
        _fn("notall", "val iter", lambda run, v=None, f=None: not _all(run, v, f)),
    ]
}

# ---------------------------------------------------------------------------
# Actions (usable only in an action block)


def _send_directive(run: Run, name: object = None, options: object = None) -> object:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise KrlRuntimeError(f"send_directive options must be a Map, not {type_of(options)}")
    plain = to_plain(options, "directive options")
    directive_name = to_string(name)
    run.ctx.send_directive(directive_name, plain)
    origin = run.host or run  # a module's directive belongs to the rule that used it
    event = origin.event
    return {
        "type": "directive",
        "name": directive_name,
        "options": plain,
        "meta": {
            "rid": origin.rid,
            "rule_name": origin.rule,
            "txnId": event.eid if event else None,
        },
    }


ACTIONS: dict[str, StdlibFunction] = {
    "send_directive": _fn("send_directive", "name options", _send_directive),
    "noop": STDLIB["noop"],
}

# ---------------------------------------------------------------------------
# Modules: module:name properties (read without parentheses) and functions

Property = Callable[[Run], object]


def _event_attr(run: Run, name: object = None) -> object:
    if run.event is None:
        return None
    return run.event.attrs.get(to_string(name))


def _event_attrs(run: Run) -> object:
    if run.event is None:
        return None
    attrs = run.event.attrs
    return attrs if type(attrs) is dict else dict(attrs)


def _meta_name(key: str) -> Property:
    return lambda run: run.ruleset.meta.get(key)


def _origin_eid(run: Run) -> str | None:
    event = (run.host or run).event
    return event.eid if event is not None else None


MODULES: dict[str, dict[str, Property | StdlibFunction]] = {
    "event": {
        "attrs": _event_attrs,
        "attr": _fn("attr", "name", _event_attr),
        "domain": lambda run: run.event.domain if run.event else None,
        "type": lambda run: run.event.type if run.event else None,
        "name": lambda run: run.event.type if run.event else None,
        "eid": lambda run: run.event.eid if run.event else None,
        "time": lambda run: normalize(run.event.time) if run.event else None,
        "eci": lambda run: run.ctx.eci if run.event else None,
    },
    "meta": {
        "rid": lambda run: run.rid,
        "eci": lambda run: run.ctx.eci,
        "picoId": lambda run: run.ctx.pico_id,
        "ruleName": lambda run: None if run.in_query else run.rule,
        "inQuery": lambda run: run.in_query,
        "inEvent": lambda run: (run.host or run).event is not None,
        # an event's eid; in a query (and module code run by one) the query's own id
        "txnId": lambda run: _origin_eid(run) or run.ctx.txn_id,
        "rulesetName": _meta_name("name"),
        "rulesetDescription": _meta_name("description"),
        "rulesetAuthor": _meta_name("author"),
        "rulesetVersion": _meta_name("version"),
    },
}

# ---------------------------------------------------------------------------
# time: ISO-8601 UTC strings; the current time comes from the Budget's clock.

_ORDINAL = re.compile(r"(\d{4})-?(\d{3})(T.*)?")
_TIME_ONLY = re.compile(r"\d{2}:?\d{2}(:?\d{2}(\.\d+)?)?([zZ]|[+-]\d{2}:?\d{2})?")


def _format_time(moment: datetime.datetime) -> str:
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _now(run: Run) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(run.budget.clock(), datetime.UTC)


def parse_time(run: Run, value: object) -> datetime.datetime:
    """An epoch-milliseconds number or an ISO-8601 string (date, week, ordinal or time only).

    Times without a zone are UTC (the reference uses the server's zone); a time alone
    means today. Raises KrlRuntimeError for anything else.
    """
    if is_number(value):
        try:
            return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)  # type: ignore[operator]
        except (OverflowError, OSError, ValueError):
            raise KrlRuntimeError(f"time out of range: {to_string(value)}") from None
    if isinstance(value, str):
        text = value.strip()
        m = _ORDINAL.fullmatch(text)
        if m:
            text = (
                datetime.date(int(m.group(1)), 1, 1) + datetime.timedelta(int(m.group(2)) - 1)
            ).isoformat() + (m.group(3) or "")
        elif _TIME_ONLY.fullmatch(text):
            text = _now(run).date().isoformat() + "T" + text
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            return moment
    raise KrlRuntimeError(f"Invalid date string: {to_string(value)}")


_TIME_UNITS = {
    "years": "years", "year": "years", "y": "years",
    "months": "months", "month": "months", "M": "months",
    "weeks": "weeks", "week": "weeks", "w": "weeks",
    "days": "days", "day": "days", "d": "days",
    "hours": "hours", "hour": "hours", "h": "hours",
    "minutes": "minutes", "minute": "minutes", "m": "minutes",
    "seconds": "seconds", "second": "seconds", "s": "seconds",
    "milliseconds": "milliseconds", "millisecond": "milliseconds", "ms": "milliseconds",
}  # fmt: skip


def _add_months(moment: datetime.datetime, months: int) -> datetime.datetime:
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise KrlRuntimeError("time out of range")
    last_day = calendar.monthrange(year, month + 1)[1]
    return moment.replace(year=year, month=month + 1, day=min(moment.day, last_day))


def _time_add(run: Run, date: object = None, spec: object = None) -> str:
    moment = parse_time(run, date)
    if not isinstance(spec, dict):
        return _format_time(moment)
    delta = datetime.timedelta()
    months = 0
    try:
        for key, amount in spec.items():
            unit = _TIME_UNITS.get(key) or _TIME_UNITS.get(key.lower())
            n = amount if is_number(amount) else None
            if unit is None or n is None or not math.isfinite(n):
                continue  # unknown units and non-numbers are ignored
            if unit in ("years", "months"):
                months += int(n) * (12 if unit == "years" else 1)
            else:
                delta += datetime.timedelta(**{unit: n})
        return _format_time(_add_months(moment, months) + delta)
    except OverflowError:
        raise KrlRuntimeError("time out of range") from None


# C strftime directives, always in UTC (the reference uses the server's zone).
_STRFTIME = frozenset("aAbBcdDeFHIjklmMpSTuwyYzZ%")


def _strftime(run: Run, date: object = None, fmt: object = None) -> str:
    moment = parse_time(run, date).astimezone(datetime.UTC)

    def one(m: re.Match[str]) -> str:
        d = m.group(1)
        if d == "L":
            return f"{moment.microsecond // 1000:03d}"
        if d == "e":
            return f"{moment.day:2d}"
        if d == "k":
            return f"{moment.hour:2d}"
        if d == "l":
            return f"{(moment.hour % 12) or 12:2d}"
        if d in _STRFTIME:
            return moment.strftime("%" + d)
        return m.group(0)

    return re.sub(r"%(.)", one, to_string(fmt))


def _time_compare(run: Run, a: object = None, b: object = None) -> int:
    x, y = parse_time(run, a), parse_time(run, b)
    return 0 if x == y else (1 if x > y else -1)


TIME: dict[str, Property | StdlibFunction] = {
    "now": _fn("now", "opts", lambda run, opts=None: _format_time(_now(run))),
    "new": _fn("new", "date", lambda run, date=None: _format_time(parse_time(run, date))),
    "add": _fn("add", "date spec", _time_add),
    "strftime": _fn("strftime", "date fmt", _strftime),
    "compare": _fn("compare", "a b", _time_compare),
}
MODULES["time"] = TIME

# ---------------------------------------------------------------------------
# Set operations, splice, pairwise and the 32-bit bitwise operators


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else [value]


def _contains_equal(items: list[object], value: object) -> bool:
    return any(krl_equals(value, item) for item in items)


def _union(run: Run, a: object = None, b: object = _MISSING) -> object:
    if b is _MISSING:
        return a
    out: list[object] = []
    for item in _as_list(a) + _as_list(b):
        run.budget.charge(run)
        if not _contains_equal(out, item):
            out.append(item)
    return out


def _intersection(run: Run, a: object = None, b: object = _MISSING) -> list[object]:
    if b is _MISSING:
        return []
    others = _as_list(b)
    out: list[object] = []
    for item in _as_list(a):
        run.budget.charge(run)
        if _contains_equal(others, item) and not _contains_equal(out, item):
            out.append(item)
    return out


def _difference(run: Run, a: object = None, b: object = _MISSING) -> object:
    if b is _MISSING:
        return a
    others = _as_list(b)
    out: list[object] = []
    for item in _as_list(a):
        run.budget.charge(run)
        if not _contains_equal(others, item):
            out.append(item)
    return out


def _has(run: Run, value: object = None, other: object = None) -> bool:
    """Every element of ``other`` is in ``value``."""
    rest = _difference(run, other, _as_list(value))
    return isinstance(rest, list) and not rest


def _group_by_string(run: Run, value: list[object]) -> list[list[object]]:
    """Groups of elements with the same string form, in JavaScript object key order:
    array-index-like keys first, in numeric order, then the rest in first-seen order."""
    groups: dict[str, list[object]] = {}
    for item in value:
        run.budget.charge(run)
        groups.setdefault(to_string(item), []).append(item)

    def index_like(key: str) -> bool:
        return key.isdigit() and key.isascii() and (key == "0" or key[0] != "0")

    keys = sorted((k for k in groups if index_like(k)), key=int)
    keys += [k for k in groups if not index_like(k)]
    return [groups[k] for k in keys]


def _once(run: Run, value: object = None) -> object:
    if not isinstance(value, list):
        return value
    return [g[0] for g in _group_by_string(run, value) if len(g) == 1]


def _duplicates(run: Run, value: object = None) -> list[object]:
    if not isinstance(value, list):
        return []
    return [g[0] for g in _group_by_string(run, value) if len(g) > 1]


def _splice(
    run: Run,
    value: object = None,
    start: object = None,
    count: object = None,
    insert: object = _MISSING,
) -> list[object]:
    if not isinstance(value, list):
        raise KrlRuntimeError(f"splice only works on an Array, not {type_of(value)}")
    if not value:
        return []
    i = to_number(start)
    if i is None or not math.isfinite(i):
        raise KrlRuntimeError(f"The .splice() operator cannot use {to_string(start)} as an index")
    n = to_number(count)
    if n is None or not math.isfinite(n):
        raise KrlRuntimeError(
            f"The .splice() operator cannot use {to_string(count)} as a number of elements"
        )
    first = int(min(max(i, 0), len(value) - 1))
    removed = int(n)
    if removed < 0 or first + removed > len(value):
        removed = len(value) - first
    middle = [] if insert is _MISSING else _as_list(insert)
    run.budget.charge(run, len(value) // 64)
    return value[:first] + middle + value[first + removed :]


def _pairwise(run: Run, value: object = None, fn: object = None) -> list[object]:
    if not isinstance(value, list):
        raise KrlRuntimeError(f"The .pairwise() operator cannot be called on {to_string(value)}")
    if len(value) < 2:
        raise KrlRuntimeError("The .pairwise() operator needs a longer array")
    if not is_callable(fn):
        raise KrlRuntimeError(f"The .pairwise() operator cannot use {to_string(fn)} as a function")
    lists = [_as_list(v) for v in value]
    longest = max(len(items) for items in lists)
    out: list[object] = []
    for i in range(longest):
        run.budget.charge(run)
        args = [items[i] if i < len(items) else None for items in lists]
        out.append(call_value(run, fn, args))
    return out


def _int32(value: object) -> int | None:
    """JavaScript ToInt32, or None when the value is not a number."""
    n = to_number(value)
    if n is None:
        return None
    if not math.isfinite(n):
        return 0
    n = int(n) & 0xFFFFFFFF
    return n - 0x100000000 if n >= 0x80000000 else n


def _bitwise(op: Callable[[int, int], int]) -> Callable[..., object]:
    def impl(run: Run, a: object = None, b: object = None) -> object:
        x, y = _int32(a), _int32(b)
        if x is None or y is None:
            return None
        return _int32(op(x, y))

    return impl


def _bnot(run: Run, a: object = None) -> object:
    x = _int32(a)
    return None if x is None else ~x


STDLIB.update(
    (f.name, f)
    for f in [
        _fn("union", "a b", _union),
        _fn("intersection", "a b", _intersection),
        _fn("difference", "a b", _difference),
        _fn("has", "val other", _has),
        _fn("once", "val", _once),
        _fn("duplicates", "val", _duplicates),
        _fn("splice", "val start nElements value", _splice),
        _fn("pairwise", "val iter", _pairwise),
        _fn("shiftLeft", "val n", _bitwise(lambda x, n: x << (n & 31))),
        _fn("shiftRight", "val n", _bitwise(lambda x, n: x >> (n & 31))),
        _fn("band", "val other", _bitwise(lambda x, y: x & y)),
        _fn("bor", "val other", _bitwise(lambda x, y: x | y)),
        _fn("bxor", "val other", _bitwise(lambda x, y: x ^ y)),
        _fn("bnot", "val", _bnot),
    ]
)

# ---------------------------------------------------------------------------
# math


def _math_number(value: object) -> int | float | None:
    n = to_number(value)
    return n if n is not None and math.isfinite(n) else None


def _decimal_round(rounding: str) -> Callable[..., object]:
    """lodash ``ceil``/``floor``/``round`` with a decimal precision (negative allowed)."""

    def impl(run: Run, value: object = None, precision: object = None) -> object:
        n = _math_number(value)
        if n is None:
            return None
        p = to_number(precision)
        places = 0 if p is None or not math.isfinite(p) else max(-292, min(292, int(p)))
        mode = rounding
        if rounding == "half" and n < 0:
            mode = decimal.ROUND_HALF_DOWN  # Math.round: halves go toward +Infinity
        elif rounding == "half":
            mode = decimal.ROUND_HALF_UP
        with decimal.localcontext() as ctx:
            ctx.prec = 400
            exact = decimal.Decimal(repr(n) if isinstance(n, float) else n)
            try:
                result = exact.quantize(decimal.Decimal(1).scaleb(-places), rounding=mode)
            except decimal.InvalidOperation:  # more digits than any double holds
                return n
        return normalize(float(result)) if places > 0 else normalize(int(result))

    return impl


def _math_abs(run: Run, value: object = None) -> object:
    n = _math_number(value)
    return None if n is None else abs(n)


def _math_int(run: Run, value: object = None) -> object:
    n = _math_number(value)
    return None if n is None else normalize(int(n))


def _math_sqrt(run: Run, value: object = None) -> object:
    n = _math_number(value)
    return None if n is None or n < 0 else normalize(math.sqrt(n))


_HASH_ALGORITHMS = sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake"))


def _digest_args(algorithm: object, encoding: object, what: str) -> str:
    if algorithm not in _HASH_ALGORITHMS:
        if isinstance(algorithm, str):
            raise KrlRuntimeError(f"math:{what} doesn't recognize the hash algorithm {algorithm}")
        raise KrlRuntimeError(
            f"math:{what} was given {to_string(algorithm)} instead of a algorithm string"
        )
    enc = "hex" if not truthy(encoding) else encoding
    if enc not in ("hex", "base64"):
        raise KrlRuntimeError(
            f'math:{what} encoding must be "hex" or "base64" but was {to_string(enc)}'
        )
    return str(enc)


def _encode_digest(digest: bytes, encoding: str) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")


def _math_hash(
    run: Run, algorithm: object = None, text: object = None, encoding: object = None
) -> str:
    enc = _digest_args(algorithm, encoding, "hash")
    digest = hashlib.new(str(algorithm), to_string(text).encode("utf-8")).digest()
    return _encode_digest(digest, enc)


def _math_hmac(
    run: Run,
    algorithm: object = None,
    key: object = None,
    message: object = None,
    encoding: object = None,
) -> str:
    if not isinstance(key, str):
        raise KrlRuntimeError("math:hmac needs a key string")
    enc = _digest_args(algorithm, encoding, "hmac")
    digest = hmac.new(key.encode("utf-8"), to_string(message).encode("utf-8"), str(algorithm))
    return _encode_digest(digest.digest(), enc)


def _base64encode(run: Run, text: object = None, encoding: object = None) -> str:
    return base64.b64encode(to_string(text).encode("utf-8")).decode("ascii")


def _base64decode(run: Run, text: object = None, encoding: object = None) -> str:
    data = re.sub(r"[^A-Za-z0-9+/]", "", to_string(text).replace("-", "+").replace("_", "/"))
    data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
    raw = base64.b64decode(data + "=" * (-len(data) % 4))
    return raw.decode("utf-8", errors="replace")


MODULES["math"] = {
    "abs": _fn("abs", "number", _math_abs),
    "ceiling": _fn("ceiling", "number precision", _decimal_round(decimal.ROUND_CEILING)),
    "floor": _fn("floor", "number precision", _decimal_round(decimal.ROUND_FLOOR)),
    "round": _fn("round", "number precision", _decimal_round("half")),
    "int": _fn("int", "number", _math_int),
    "sqrt": _fn("sqrt", "number", _math_sqrt),
    "hash": _fn("hash", "algorithm str encoding", _math_hash),
    "hmac": _fn("hmac", "algorithm key message encoding", _math_hmac),
    "hashAlgorithms": lambda run: list(_HASH_ALGORITHMS),
    "base64encode": _fn("base64encode", "str encoding", _base64encode),
    "base64decode": _fn("base64decode", "str encoding", _base64decode),
}

# ---------------------------------------------------------------------------
# random: every draw comes from the Budget's random source (seedable in tests).

_WORD_TEXT = (
    "able acid aged also area army away baby back ball band bank base bath bear beat been "
    "bell belt best bird blow blue boat body bone book born both bowl burn busy cake call "
    "calm camp card care case cash cast cell chip city club coal coat code cold come cook "
    "cool copy corn cost crew crop dark data date dawn deal dear deep deer desk dirt dish "
    "door down draw drop drum duck dust duty earn east easy edge else even ever face fact "
    "fair fall farm fast fear feed feel fill film find fine fire fish five flag flat flow "
    "food foot fork form fort four free frog fuel full fund game gate gift girl give glad "
    "goal gold golf good gray grow hair half hall hand hang hard hawk head heat help herd "
    "hide high hill hold hole home hope horn host hour huge idea inch iron item jazz join "
    "jump keep kind king kite knee lake lamp land lane last late lawn lead leaf lift line "
    "lion list load lock long loud love luck mail main make mark meal meet milk mind mint "
    "moon most move much nail name near neck nest news next nice nine node note once open "
    "oven pace page pair park part path peak pear pick pine pink pipe plan play plum poem "
    "pond pool port post quiz rain rate read real rice rich ride ring rise road rock roof "
    "room root rope rose rule safe sail salt sand save seed ship shoe shop side sign silk "
    "sing site size skin slow snow soap sock soft soil song soup star stem step stop such "
    "swim tail tall team tent test tide tile time tiny tone tool tree trip tune vase very "
    "view vote wall warm wave weed west wide wild wind wing wise wolf wood wool word work "
    "yard year zero zone"
)
_WORDS = tuple(_WORD_TEXT.split())
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _random_bounds(upper: object, lower: object, whole: bool) -> tuple[float, float]:
    lo, hi = to_number(lower), to_number(upper)
    if whole:
        lo = None if lo is None else _js_round(lo)
        hi = None if hi is None else _js_round(hi)
    top = (1 if lo is None else 0) if hi is None else hi
    bottom = 0 if lo is None else lo
    return (min(bottom, top), max(bottom, top))


def _js_round(x: float) -> float:
    return math.floor(x + 0.5) if math.isfinite(x) else x


def _random_integer(run: Run, upper: object = None, lower: object = None) -> object:
    lo, hi = _random_bounds(upper, lower, whole=True)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return run.budget.random.randint(int(lo), int(hi))


def _random_number(run: Run, upper: object = None, lower: object = None) -> object:
    lo, hi = _random_bounds(upper, lower, whole=False)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return normalize(run.budget.random.uniform(lo, hi))


def _random_uuid(run: Run) -> str:
    """A cuid-shaped id ("c" and 24 base-36 characters); only its uniqueness matters."""
    rng = run.budget.random
    return "c" + "".join(rng.choice(_BASE36) for _ in range(24))


MODULES["random"] = {
    "uuid": _fn("uuid", "", _random_uuid),
    "word": _fn("word", "", lambda run: run.budget.random.choice(_WORDS)),
    "integer": _fn("integer", "upper lower", _random_integer),
    "number": _fn("number", "upper lower", _random_number),
}


# ---------------------------------------------------------------------------
# Modules that reach the engine: event:send, schedule:*, ctx:query (Context methods)


def _text(value: object, what: str) -> str:
    """A non-empty string argument, or a KrlRuntimeError naming ``what``."""
    if not isinstance(value, str) or not value:
        raise KrlRuntimeError(f"{what} (a String), not {to_string(value)}")
    return value


def _event_send(run: Run, options: object = None, host: object = None) -> None:
    """`event:send({"eci" | "did" | "sub", "domain", "name" | "type", "attrs"}, host)`."""
    if not isinstance(options, dict):
        raise KrlRuntimeError(f"event:send expects a Map of options, not {type_of(options)}")
    target = options.get("eci")
    sub = options.get("sub")
    if is_null(target) and isinstance(sub, dict):  # a subscription: its Tx channel
        target = sub.get("Tx")
        if not truthy(host):
            host = sub.get("Tx_host")
    if truthy(host):
        raise KrlRuntimeError(
            f"event:send: host is not supported; address the pico by DID (host {to_string(host)})"
        )
    if is_null(target):
        target = options.get("did")
    kind = options.get("name")
    if is_null(kind):
        kind = options.get("type")
    attrs = options.get("attrs")
    if is_null(attrs):
        attrs = {}
    if not isinstance(attrs, dict):
        raise KrlRuntimeError(f"event:send attrs must be a Map, not {type_of(attrs)}")
    run.ctx.send_event(
        _text(target, "event:send needs an eci or a did"),
        _text(options.get("domain"), "event:send needs a domain"),
        _text(kind, "event:send needs a name"),
        to_plain(attrs, "event attributes"),
    )


def schedule_record(
    job_id: object,
    eci: object,
    domain: object,
    type: object,
    attrs: object,
    at: object,
    timespec: object,
) -> dict[str, Any]:
    """A job as KRL sees it (the reference's shape): ``{id, type: "at", time (epoch ms)}``
    or ``{id, type: "repeat", timespec}``, with the event pico-engine stores, ``event:
    {eci, domain, name, data: {attrs}, time: 0}`` (``eci`` is the channel of the event
    that scheduled it).

    ``at`` is epoch seconds (None for a repeat job). `schedule:list`/`get` show jobs so,
    and `schedule … setting(v)` binds the record of the job it made.
    """
    view: dict[str, Any] = {"id": job_id}
    if at is not None:
        seconds = to_number(at)
        view["type"] = "at"
        view["time"] = normalize(round(seconds * 1000)) if seconds is not None else None
    else:
        view["type"] = "repeat"
        view["timespec"] = timespec
    view["event"] = {
        "eci": eci or None,  # a job scheduled by an event sent to the DID has no channel
        "domain": domain,
        "name": type,
        "data": {"attrs": attrs or {}},
        "time": 0,
    }
    return to_plain(view, "a scheduled job")  # type: ignore[no-any-return]


def _own_jobs(run: Run) -> list[dict[str, Any]]:
    """The calling ruleset's scheduled jobs, as KRL sees them (the reference's shape)."""
    jobs = []
    for job in run.ctx.schedule_list():
        if job.get("rid", run.rid) != run.rid:
            continue
        event = job.get("event")
        event = event if isinstance(event, dict) else {}
        jobs.append(
            schedule_record(
                job.get("id"),
                job.get("eci"),
                event.get("domain"),
                event.get("type", event.get("name")),
                event.get("attrs"),
                job.get("time"),
                job.get("timespec"),
            )
        )
    return jobs


def _schedule_get(run: Run, job_id: object = None) -> object:
    wanted = to_string(job_id)
    return next((job for job in _own_jobs(run) if job["id"] == wanted), None)


def _schedule_remove(run: Run, job_id: object = None) -> bool:
    wanted = to_string(job_id)
    if not any(job["id"] == wanted for job in _own_jobs(run)):
        return False  # not this ruleset's job: leave it alone
    return bool(run.ctx.schedule_remove(wanted))


def _schedule_clear(run: Run) -> None:
    for job in _own_jobs(run):
        run.ctx.schedule_remove(to_string(job["id"]))


def _ctx_query(
    run: Run, eci: object = None, rid: object = None, name: object = None, args: object = None
) -> object:
    if is_null(args):
        args = {}
    if not isinstance(args, dict):
        raise KrlRuntimeError(f"ctx:query args must be a Map, not {type_of(args)}")
    return run.ctx.query_pico(
        _text(eci, "ctx:query needs an eci"),
        _text(rid, "ctx:query needs a rid"),
        _text(name, "ctx:query needs a name"),
        to_plain(args, "query arguments"),
    )


def _plain_or_none(value: object, what: str) -> object:
    return None if is_null(value) else to_plain(value, what)


def _ctx_new_pico(run: Run, rulesets: object = None) -> str:
    return run.ctx.new_pico(_plain_or_none(rulesets, "ctx:newPico rulesets"))


def _ctx_del_pico(run: Run, eci: object = None) -> None:
    run.ctx.del_pico(_text(eci, "ctx:delPico needs an eci"))


def _ctx_move(run: Run, to: object = None) -> None:
    """`ctx:move(to)` (p2pico): move this pico to the engine whose peer id is ``to``, once
    the transaction commits.  The host may not offer it (then a KrlRuntimeError)."""
    move = getattr(run.ctx, "move_to", None)
    if move is None:
        raise KrlRuntimeError("ctx:move is not offered by this engine")
    move(_text(to, "ctx:move needs the peer id of the engine to move to"))


def _ctx_new_channel(
    run: Run, tags: object = None, event_policy: object = None, query_policy: object = None
) -> object:
    return run.ctx.new_channel(
        _plain_or_none(tags, "channel tags"),
        _plain_or_none(event_policy, "an event policy"),
        _plain_or_none(query_policy, "a query policy"),
    )


def _ctx_put_channel(
    run: Run,
    eci: object = None,
    tags: object = None,
    event_policy: object = None,
    query_policy: object = None,
) -> None:
    run.ctx.put_channel(
        _text(eci, "ctx:putChannel needs an eci"),
        _plain_or_none(tags, "channel tags"),
        _plain_or_none(event_policy, "an event policy"),
        _plain_or_none(query_policy, "a query policy"),
    )


def _ctx_upsert_channel(
    run: Run, tags: object = None, event_policy: object = None, query_policy: object = None
) -> None:
    run.ctx.upsert_channel(
        _plain_or_none(tags, "channel tags"),
        _plain_or_none(event_policy, "an event policy"),
        _plain_or_none(query_policy, "a query policy"),
    )


def _ctx_del_channel(run: Run, eci: object = None) -> None:
    run.ctx.del_channel(_text(eci, "ctx:delChannel needs an eci"))


def _ctx_install(run: Run, url: object = None, config: object = None) -> str:
    if not isinstance(url, str):
        raise KrlRuntimeError(f"Expected string for url but got {type_of(url)}")
    if is_null(config):
        config = {}
    if not isinstance(config, dict):
        raise KrlRuntimeError(f"ctx:install config must be a Map, not {type_of(config)}")
    return run.ctx.install(url, to_plain(config, "a ruleset config"))


def _ctx_uninstall(run: Run, rid: object = None) -> None:
    if not isinstance(rid, str):
        raise KrlRuntimeError(f"Expected string for rid but got {type_of(rid)}")
    run.ctx.uninstall(rid)


def _ctx_event(
    run: Run,
    eci: object = None,
    domain: object = None,
    name: object = None,
    attrs: object = None,
    host: object = None,
) -> None:
    """`ctx:event(eci, domain, name, attrs, host)`: `event:send` with positional arguments."""
    _event_send(run, {"eci": eci, "domain": domain, "name": name, "attrs": attrs}, host)


def _ctx_event_query(
    run: Run,
    eci: object = None,
    domain: object = None,
    name: object = None,
    attrs: object = None,
    rid: object = None,
    query_name: object = None,
    args: object = None,
) -> object:
    """`ctx:eventQuery(eci, domain, name, attrs, rid, queryName, args)`: the event, then the
    query on the same channel; the query's result."""
    if is_null(attrs):
        attrs = {}
    if not isinstance(attrs, dict):
        raise KrlRuntimeError(f"ctx:eventQuery attrs must be a Map, not {type_of(attrs)}")
    if is_null(args):
        args = {}
    if not isinstance(args, dict):
        raise KrlRuntimeError(f"ctx:eventQuery args must be a Map, not {type_of(args)}")
    return run.ctx.event_query(
        _text(eci, "ctx:eventQuery needs an eci"),
        _text(domain, "ctx:eventQuery needs a domain"),
        _text(name, "ctx:eventQuery needs a name"),
        to_plain(attrs, "event attributes"),
        _text(rid, "ctx:eventQuery needs a rid"),
        _text(query_name, "ctx:eventQuery needs a queryName"),
        to_plain(args, "query arguments"),
    )


def _ctx_flush(run: Run, url: object = None) -> None:
    if not isinstance(url, str):
        raise KrlRuntimeError(f"Expected string for url but got {type_of(url)}")
    run.ctx.flush(url)


def _ruleset_info(key: str) -> Property:
    """A field of this ruleset's `ctx:rulesets` entry: its install ``url`` or ``config``."""

    def info(run: Run) -> object:
        for entry in run.ctx.rulesets():
            if entry.get("rid") == run.rid:
                return entry.get(key)
        return None

    return info


# ---------------------------------------------------------------------------
# http: (catalog §2.7). krl turns the arguments into a request (URL, headers, body); the
# engine sends it (Context.http_request) with its timeouts, size limits and address policy.

_HTTP_PARAMS = "url qs headers body auth json form parseJSON autoraise autosend dontFollowRedirect"
HTTP_USER_AGENT = "pico-engine-core-http"  # the reference's, so servers see the same client


def _qs_pairs(prefix: str, value: object, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _qs_pairs(f"{prefix}[{key}]", item, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _qs_pairs(f"{prefix}[{index}]", item, out)
    else:
        out.append((prefix, "" if value is None else to_string(value)))


def query_string(params: dict[str, Any]) -> str:
    """``params`` as npm ``qs`` writes them by default (RFC 3986, indices):
    ``a[0]=1&m[x]=2`` with the brackets percent-encoded; null is ``k=``; empty lists and
    maps give nothing."""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        _qs_pairs(key, value, out)
    return "&".join(f"{_pct(k)}={_pct(v)}" for k, v in out)


def _pct(text: str) -> str:
    # qs's RFC 3986 encoder keeps exactly the unreserved characters A-Z a-z 0-9 - . _ ~
    return urllib.parse.quote(text, safe="", errors="replace")


def _http_map(value: object, what: str, method: str) -> dict[str, Any] | None:
    if is_null(value):
        return None
    if not isinstance(value, dict):
        raise KrlRuntimeError(f"http:{method} {what} must be a Map, not {type_of(value)}")
    plain: dict[str, Any] = to_plain(value, f"http:{method} {what}")
    return plain


def _http_request(
    method: str,
    url: object,
    qs: object,
    headers: object,
    body: object,
    auth: object,
    json_: object,
    form: object,
) -> tuple[str, list[tuple[str, str]], bytes | None]:
    """The URL, headers and body of a request from the KRL arguments, as the reference
    builds them: ``body`` (text) wins over ``json`` over ``form``."""
    m = method.lower()
    if not truthy(url):
        raise KrlRuntimeError(f"http:{m} needs a url string")
    if not isinstance(url, str):
        raise KrlRuntimeError(f"http:{m} was given {to_string(url)} instead of a url string")
    params = _http_map(qs, "qs", m)
    if params:
        encoded = query_string(params)
        if encoded:  # a URL that already has a query gets `&` (the reference adds a 2nd `?`)
            url = url + ("&" if "?" in url else "?") + encoded
    given = _http_map(headers, "headers", m) or {}
    sent: dict[str, tuple[str, str]] = {"user-agent": ("user-agent", HTTP_USER_AGENT)}
    for key, value in given.items():
        sent[key.lower()] = (key, to_string(value))
    if isinstance(auth, dict) and isinstance(auth.get("username"), str):
        password = auth.get("password")
        token = f"{auth['username']}:{password if isinstance(password, str) else ''}"
        basic = base64.b64encode(token.encode("utf-8")).decode("ascii")
        sent["authorization"] = ("Authorization", f"Basic {basic}")
    content: bytes | None = None
    content_type = None
    if truthy(body):
        content = to_string(body).encode("utf-8")
    elif truthy(json_):
        content = encode(to_plain(json_, f"http:{m} json")).encode("utf-8")
        content_type = "application/json"
    elif truthy(form):
        fields = _http_map(form, "form", m) or {}
        content = query_string(fields).encode("utf-8")
        content_type = "application/x-www-form-urlencoded"
    if content_type is not None and "content-type" not in sent:
        sent["content-type"] = ("content-type", content_type)
    if content is not None and method in ("GET", "HEAD"):
        raise KrlRuntimeError(f"http:{m} cannot send a body (body, json or form)")
    return url, list(sent.values()), content


def _http_autosend_target(value: object, m: str) -> tuple[str, str, str, dict[str, Any]]:
    """``autosend: {eci, domain, name | type, attrs}`` (``data: {attrs}`` works too)."""
    if not isinstance(value, dict):
        raise KrlRuntimeError(f"http:{m} autosend must be a Map, not {type_of(value)}")
    kind = value.get("name")
    if is_null(kind):
        kind = value.get("type")
    attrs = value.get("attrs")
    data = value.get("data")
    if is_null(attrs) and isinstance(data, dict):
        attrs = data.get("attrs")
    if is_null(attrs):
        attrs = {}
    if not isinstance(attrs, dict):
        raise KrlRuntimeError(f"http:{m} autosend attrs must be a Map, not {type_of(attrs)}")
    return (
        _text(value.get("eci"), f"http:{m} autosend needs an eci"),
        _text(value.get("domain"), f"http:{m} autosend needs a domain"),
        _text(kind, f"http:{m} autosend needs a name"),
        to_plain(attrs, "event attributes"),
    )


def _http(method: str) -> StdlibFunction:
    m = method.lower()

    def call(
        run: Run,
        url: object = None,
        qs: object = None,
        headers: object = None,
        body: object = None,
        auth: object = None,
        json_: object = None,
        form: object = None,
        parse_json: object = None,
        autoraise: object = None,
        autosend: object = None,
        dont_follow_redirect: object = None,
    ) -> object:
        target, header_list, content = _http_request(
            method, url, qs, headers, body, auth, json_, form
        )
        follow = not truthy(dont_follow_redirect)
        if truthy(autosend):
            eci, domain, kind, attrs = _http_autosend_target(autosend, m)
            run.ctx.http_autosend(
                method, target, header_list, content, follow, eci, domain, kind, attrs
            )
            return None
        started = time.monotonic()
        try:
            response = run.ctx.http_request(method, target, header_list, content, follow)
        finally:  # waiting on the network is not the CPU the time budget is there for
            run.budget.deadline += time.monotonic() - started
        if parse_json is True:  # only true itself, as the reference
            response = {**response, "content": decode(run, response.get("content"))}
        if truthy(autoraise):
            run.ctx.raise_event("http", m, {**response, "label": to_string(autoraise)}, None)
        return response

    return _fn(m, _HTTP_PARAMS, call)


_HTTP = {
    method.lower(): _http(method) for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
}


MODULES["schedule"] = {
    "list": _fn("list", "", _own_jobs),
    "get": _fn("get", "id", _schedule_get),
}
MODULES["ctx"] = {
    "query": _fn("query", "eci rid name args", _ctx_query),
    "picoId": lambda run: run.ctx.pico_id,
    "rid": lambda run: run.rid,
    "rid_name": _meta_name("name"),
    "rid_description": _meta_name("description"),
    "rid_author": _meta_name("author"),
    "rid_version": _meta_name("version"),
    "rid_url": _ruleset_info("url"),
    "rid_config": _ruleset_info("config"),
    "parent": lambda run: run.ctx.parent(),
    "children": lambda run: run.ctx.children(),
    "channels": lambda run: run.ctx.channels(),
    "rulesets": lambda run: run.ctx.rulesets(),
    "logs": _fn("logs", "", lambda run: run.ctx.logs()),
}
MODULES["meta"].update(
    {
        "host": lambda run: run.ctx.base_url(),
        "rid_url": _ruleset_info("url"),
        "rulesetURI": _ruleset_info("url"),
        "rid_config": _ruleset_info("config"),
        "rulesetConfig": _ruleset_info("config"),
    }
)
MODULES["math"]["hashFunctions"] = _fn("hashFunctions", "", lambda run: list(_HASH_ALGORITHMS))
MODULES["http"] = {"get": _HTTP["get"], "head": _HTTP["head"]}  # also usable as functions

MODULE_ACTIONS: dict[str, dict[str, StdlibFunction]] = {
    "event": {"send": _fn("send", "options host", _event_send)},
    "schedule": {
        "remove": _fn("remove", "id", _schedule_remove),
        "clear": _fn("clear", "", _schedule_clear),
    },
    "ctx": {
        "newPico": _fn("newPico", "rulesets", _ctx_new_pico),
        "delPico": _fn("delPico", "eci", _ctx_del_pico),
        "newChannel": _fn("newChannel", "tags eventPolicy queryPolicy", _ctx_new_channel),
        "putChannel": _fn("putChannel", "eci tags eventPolicy queryPolicy", _ctx_put_channel),
        "upsertChannel": _fn("upsertChannel", "tags eventPolicy queryPolicy", _ctx_upsert_channel),
        "delChannel": _fn("delChannel", "eci", _ctx_del_channel),
        "install": _fn("install", "url config", _ctx_install),
        "uninstall": _fn("uninstall", "rid", _ctx_uninstall),
        "event": _fn("event", "eci domain name attrs host", _ctx_event),
        "eventQuery": _fn(
            "eventQuery", "eci domain name attrs rid queryName args", _ctx_event_query
        ),
        "flush": _fn("flush", "url", _ctx_flush),
        "move": _fn("move", "to", _ctx_move),
    },
    "http": _HTTP,
}

# Modules of pico-engine that krl leaves out on purpose (krl/README.md says why): using
# one is a "not supported" compile error rather than "unknown module".
REFERENCE_MODULES = frozenset({"app", "dido", "engine", "indy", "keys", "ursa"})
