"""Strict DAG-CBOR codec: own encoder; to decode, dag/_native.c's strict decoder, else cbor2 and a
re-encode to compare; _cbor_strict.py for errors."""

from __future__ import annotations

import json
import math
import struct
from typing import Final

import cbor2

from dag.cid import CID, CIDError

try:
    from dag import _native
except ImportError:  # built without the C extension (setup.py)
    _native = None  # type: ignore[assignment]

# Containers nested deeper than this are refused on encode and decode: it bounds recursion
# (and cyclic values on encode) well below Python's default recursion limit.
MAX_DEPTH: Final = 256
INT_MIN: Final = -(2**64)
INT_MAX: Final = 2**64 - 1

_DATA_MODEL = "None, bool, int, float, str, bytes, list, dict and CID"
# Whether encode runs in C: then encoding a small dict costs less than splicing its bytes from
# pre-encoded pieces in Python (head.py and state.py splice only without it).
NATIVE: Final = _native is not None


class DagCborError(ValueError):
    """A value cannot be DAG-CBOR encoded, or bytes are not canonical DAG-CBOR.

    `offset` is the byte offset of the problem (decode); `path` is where in the value it is,
    e.g. ``$.a[2]`` (encode, and decode when inside a container).
    """

    def __init__(self, reason: str, *, offset: int | None = None, path: str | None = None) -> None:
        self.reason = reason
        self.offset = offset
        self.path = path
        where = []
        if offset is not None:
            where.append(f"offset {offset}")
        if path is not None:
            where.append(path)
        super().__init__(f"at {', '.join(where)}: {reason}" if where else reason)


def format_path(segments: list[str | int]) -> str:
    """Render a value path: `$`, then `.key`, `["odd key"]` or `[index]` per step."""
    out = ["$"]
    for seg in segments:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif seg.isidentifier():
            out.append(f".{seg}")
        else:
            out.append(f"[{json.dumps(seg, ensure_ascii=False)}]")
    return "".join(out)


# -- encode -----------------------------------------------------------------------------------


def encode(value: object) -> bytes:
    """Encode `value` as canonical DAG-CBOR; raise DagCborError naming the path of a bad part."""
    if _native is not None:
        try:
            return _native.cbor_encode(value)  # the same bytes (tests/dag/test_dag_native.py)
        except Exception:  # refused or not taken in C: Python encodes it, or says what is wrong
            pass
    return _encode_py(value)


def _encode_py(value: object) -> bytes:
    """``encode`` in Python (without dag/_native.c, and for the values it refuses)."""
    out: list[bytes] = []
    try:
        _write(value, out, 0)
    except Exception as exc:  # anything outside the data model; _explain says where and why
        _explain(value, [], 0)
        raise DagCborError(f"cannot encode: {exc!r}", path="$") from exc
    return b"".join(out)


_BYTE: Final = [bytes((n,)) for n in range(256)]
_pack_float: Final = struct.Struct(">Bd").pack


def _head(major: int, n: int) -> bytes:
    """The shortest head for major type `major` (already shifted) and argument `n`."""
    if n < 24:
        return _BYTE[major | n]
    if n < 0x100:
        return _BYTE[major | 24] + _BYTE[n]
    if n < 0x10000:
        return bytes((major | 25,)) + n.to_bytes(2, "big")
    if n < 0x1_0000_0000:
        return bytes((major | 26,)) + n.to_bytes(4, "big")
    return bytes((major | 27,)) + n.to_bytes(8, "big")  # OverflowError past 2**64-1


def array_head(n: int) -> bytes:
    """The head of an array of `n` items, for callers that splice encoded items after it."""
    return _head(0x80, n)


def bytes_head(n: int) -> bytes:
    """The head of a byte string of `n` bytes."""
    return _head(0x40, n)


def map_head(n: int) -> bytes:
    """The head of a map of `n` pairs; the pairs must follow in canonical key order."""
    return _head(0xA0, n)


# Encoders of single items, for callers that splice encodings (dag/head.py, dag/state.py); each
# gives the bytes ``encode`` gives for that item.


def encode_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return _head(0x60, len(b)) + b


def encode_uint(n: int) -> bytes:
    """An int in 0 .. 2**64-1 (OverflowError above)."""
    if n < 0:
        raise ValueError(f"encode_uint takes a non-negative int, got {n}")
    return _head(0x00, n)


def encode_cid(cid: CID) -> bytes:
    buf = cid.buffer
    if len(buf) == 36:  # sha2-256 CIDv1 with a one-byte codec: tag 42, bytes(37), 0x00
        return b"\xd8\x2a\x58\x25\x00" + buf
    return b"\xd8\x2a" + _head(0x40, len(buf) + 1) + b"\x00" + buf


def _write(v: object, out: list[bytes], depth: int) -> None:
    """Append the encoding of `v`; raise (any exception) if it is not in the data model."""
    if type(v) is str:
        b = v.encode("utf-8")
        out.append(_head(0x60, len(b)))
        out.append(b)
    elif type(v) is int:
        out.append(_head(0x00, v) if v >= 0 else _head(0x20, -1 - v))
    elif type(v) is dict:
        if depth >= MAX_DEPTH:
            raise _TooDeep
        items = []
        for k, x in v.items():
            if type(k) is not str:
                raise TypeError("map key")
            kb = k.encode("utf-8")
            items.append((len(kb), kb, x))
        # keys are unique, so sorting by (length, bytes) never compares the values
        items.sort()
        out.append(_head(0xA0, len(items)))
        for n, kb, x in items:
            out.append(_head(0x60, n))
            out.append(kb)
            _write(x, out, depth + 1)
    elif type(v) is list or type(v) is tuple:
        if depth >= MAX_DEPTH:
            raise _TooDeep
        out.append(_head(0x80, len(v)))
        for x in v:
            _write(x, out, depth + 1)
    elif type(v) is bytes:
        out.append(_head(0x40, len(v)))
        out.append(v)
    elif type(v) is float:
        if not math.isfinite(v):
            raise ValueError("float")
        out.append(_pack_float(0xFB, v))  # always 64-bit
    elif v is None:
        out.append(b"\xf6")
    elif v is True:
        out.append(b"\xf5")
    elif v is False:
        out.append(b"\xf4")
    elif type(v) is CID:
        buf = v.buffer
        out.append(b"\xd8\x2a" + _head(0x40, len(buf) + 1) + b"\x00")
        out.append(buf)
    else:
        raise TypeError(type(v).__name__)


class _TooDeep(Exception):
    pass


def _explain(v: object, path: list[str | int], depth: int) -> None:
    """Walk the value and raise a DagCborError naming the first part _write refused."""

    def fail(reason: str) -> DagCborError:
        return DagCborError(reason, path=format_path(path))

    if v is None or type(v) is bool or type(v) is bytes or type(v) is CID:
        return
    if type(v) is str:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise fail(f"string is not valid Unicode text ({exc.reason})") from None
        return
    if type(v) is int:
        if not INT_MIN <= v <= INT_MAX:
            raise fail(f"integer {v} is outside the DAG-CBOR range -2**64 .. 2**64-1")
        return
    if type(v) is float:
        if math.isnan(v):
            raise fail("float NaN is not allowed")
        if math.isinf(v):
            raise fail(f"float {'-' if v < 0 else ''}Infinity is not allowed")
        return
    if (type(v) is list or type(v) is tuple or type(v) is dict) and depth >= MAX_DEPTH:
        raise fail(f"nesting deeper than {MAX_DEPTH} levels (is the value cyclic?)")
    if type(v) is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise fail(f"map key {k!r} is {type(k).__name__}; DAG-CBOR map keys must be str")
            try:
                k.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise fail(f"map key {k!r} is not valid Unicode text ({exc.reason})") from None
            path.append(k)
            _explain(x, path, depth + 1)
            path.pop()
        return
    if type(v) is list or type(v) is tuple:
        for i, x in enumerate(v):
            path.append(i)
            _explain(x, path, depth + 1)
            path.pop()
        return
    raise fail(f"cannot encode {type(v).__name__}: the DAG-CBOR data model is {_DATA_MODEL}")


# -- decode -----------------------------------------------------------------------------------


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> CID:
    if tag.tag != 42:
        raise DagCborError(f"tag {tag.tag} is not allowed")
    v = tag.value
    if type(v) is not bytes or v[:1] != b"\x00":
        raise DagCborError("tag 42 must hold a byte string starting with 0x00")
    try:
        return CID.parse(v[1:])
    except CIDError as exc:
        raise DagCborError(f"invalid CID in tag 42: {exc}") from None


def decode(data: bytes | bytearray | memoryview) -> object:
    """Decode one canonical DAG-CBOR value; any other input raises DagCborError."""
    data = bytes(data)
    if _native is not None:
        try:
            return _native.cbor_decode(data)  # canonical bytes only (tests/dag/test_dag_native.py)
        except Exception:  # refused in C: the Python path decides, and says where and why
            pass
    return _decode_py(data)


def _decode_py(data: bytes) -> object:
    """``decode`` in Python (without dag/_native.c, and for the bytes it refuses)."""
    try:
        value = cbor2.loads(
            data,
            tag_hook=_tag_hook,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            max_depth=MAX_DEPTH + 8,
        )
    except Exception:
        pass
    else:
        # Re-encoding and comparing rejects every non-canonical form cbor2 lets through
        # (non-minimal ints, short floats, key order, trailing bytes, simple values...).
        out: list[bytes] = []
        try:
            _write(value, out, 0)
        except Exception:
            pass
        else:
            if b"".join(out) == data:
                return value
    return _diagnose(data)


def decode_trusted(data: bytes) -> object:
    """Decode bytes already known to be canonical DAG-CBOR (a slice of a block that was
    strictly decoded, or bytes this package encoded), without ``decode``'s re-encoding check."""
    if _native is not None:
        try:
            return _native.cbor_decode(data)
        except Exception:  # refused in C (then not canonical after all): cbor2 reads it
            pass
    return cbor2.loads(data, tag_hook=_tag_hook, max_depth=MAX_DEPTH + 8)


def _diagnose(data: bytes) -> object:
    """Slow path: the pure-Python strict reader raises a precise error."""
    from dag._cbor_strict import read

    value = read(data)
    # The strict reader accepted what the fast path refused; report the first differing byte.
    again = encode(value)
    if again == data:
        return value
    n = next((i for i, (a, b) in enumerate(zip(data, again, strict=False)) if a != b), None)
    if n is None:
        n = min(len(data), len(again))
    raise DagCborError("not canonical DAG-CBOR: re-encoding differs here", offset=n)
