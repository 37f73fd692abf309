"""Pure-Python strict DAG-CBOR reader: cbor.py's slow path, it names the offset and path of a fault."""

from __future__ import annotations

import math
import struct
from typing import NoReturn

from dag.cbor import MAX_DEPTH, DagCborError, format_path
from dag.cid import CID, CIDError

_MAJOR_NAMES = (
    "unsigned int",
    "negative int",
    "byte string",
    "text string",
    "array",
    "map",
    "tag",
    "simple/float",
)
# Smallest argument that needs each width; anything smaller must use a shorter head.
_MIN_FOR_WIDTH = {1: 24, 2: 0x100, 4: 0x10000, 8: 0x1_0000_0000}


def read(data: bytes) -> object:
    """Decode exactly one canonical DAG-CBOR value or raise DagCborError."""
    r = _Reader(data)
    value = r.item(0)
    if r.pos != len(data):
        extra = len(data) - r.pos
        r.fail(f"{extra} trailing byte{'s' if extra > 1 else ''} after the value", r.pos, root=True)
    return value


class _Reader:
    __slots__ = ("data", "path", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.path: list[str | int] = []

    def fail(self, reason: str, offset: int, *, root: bool = False) -> NoReturn:
        path = None if root or not self.path else format_path(self.path)
        raise DagCborError(reason, offset=offset, path=path)

    def take(self, n: int, start: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            self.fail(
                f"unexpected end of data: need {n} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left",
                start,
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def head(self) -> tuple[int, int, int, int]:
        """Read an item head; return (major, additional info, argument, start offset)."""
        start = self.pos
        if start >= len(self.data):
            self.fail("unexpected end of data: expected a value", start)
        ib = self.data[start]
        self.pos += 1
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            return major, ai, ai, start
        if ai <= 27:
            width = 1 << (ai - 24)
            arg = int.from_bytes(self.take(width, start), "big")
            if major != 7 and arg < _MIN_FOR_WIDTH[width]:
                what = {2: "length", 3: "length", 4: "length", 5: "length", 6: "tag"}.get(
                    major, "integer"
                )
                self.fail(
                    f"non-minimal {what} encoding ({arg} written in {width + 1} bytes)", start
                )
            return major, ai, arg, start
        if ai == 31:
            if major in (2, 3, 4, 5):
                self.fail(f"indefinite-length {_MAJOR_NAMES[major]} is not allowed", start)
            if major == 7:
                self.fail("unexpected break code (0xff)", start)
        self.fail(f"invalid additional information {ai} for {_MAJOR_NAMES[major]}", start)

    def item(self, depth: int) -> object:
        major, ai, arg, start = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self.take(arg, start)
        if major == 3:
            return self.text(arg, start)
        if major in (4, 5) and depth >= MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH} levels", start)
        if major == 4:
            items = []
            for i in range(arg):
                self.path.append(i)
                items.append(self.item(depth + 1))
                self.path.pop()
            return items
        if major == 5:
            return self.map(arg, depth)
        if major == 6:
            return self.tag(arg, start)
        return self.simple(ai, arg, start)

    def text(self, n: int, start: int) -> str:
        raw = self.take(n, start)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"invalid UTF-8 in string: {exc.reason} at string byte {exc.start}", start)

    def map(self, n: int, depth: int) -> dict[str, object]:
        out: dict[str, object] = {}
        prev: bytes | None = None
        for _ in range(n):
            kstart = self.pos
            major, _ai, klen, _ = self.head()
            if major != 3:
                self.fail(f"map key must be a text string, found {_MAJOR_NAMES[major]}", kstart)
            raw = self.data[self.pos : self.pos + klen]
            key = self.text(klen, kstart)
            if prev is not None:
                if raw == prev:
                    self.fail(f"duplicate map key {_q(key)}", kstart)
                if (len(raw), raw) < (len(prev), prev):
                    self.fail(
                        f"map keys out of order: {_q(key)} after {_q(prev.decode())} "
                        "(keys sort by byte length, then bytewise)",
                        kstart,
                    )
            prev = raw
            self.path.append(key)
            out[key] = self.item(depth + 1)
            self.path.pop()
        return out

    def tag(self, number: int, start: int) -> CID:
        if number != 42:
            self.fail(f"tag {number} is not allowed (DAG-CBOR only allows tag 42, for CIDs)", start)
        inner = self.pos
        major, _ai, n, _ = self.head()
        if major != 2:
            self.fail(f"tag 42 must hold a byte string, found {_MAJOR_NAMES[major]}", inner)
        raw = self.take(n, inner)
        if raw[:1] != b"\x00":
            self.fail("CID in tag 42 must start with the 0x00 multibase prefix", inner)
        try:
            return CID.parse(raw[1:])
        except CIDError as exc:
            self.fail(f"invalid CID in tag 42: {exc}", inner)

    def simple(self, ai: int, arg: int, start: int) -> object:
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            self.fail("undefined is not allowed", start)
        if ai in (25, 26):
            self.fail(f"float must be 64-bit, found {16 if ai == 25 else 32}-bit", start)
        if ai == 27:
            value: float = struct.unpack(">d", arg.to_bytes(8, "big"))[0]
            if math.isnan(value):
                self.fail("float NaN is not allowed", start)
            if math.isinf(value):
                self.fail(f"float {'-' if value < 0 else ''}Infinity is not allowed", start)
            return value
        self.fail(f"simple value {arg} is not allowed", start)


def _q(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
