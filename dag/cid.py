"""Content identifiers (CIDv0/CIDv1) with own varint and base32 code; used by cbor.py and block.py."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final, NoReturn, final

import base58

DAG_PB: Final = 0x70
DAG_CBOR: Final = 0x71
RAW: Final = 0x55
LIBP2P_KEY: Final = 0x72
IDENTITY: Final = 0x00
SHA2_256: Final = 0x12

# A varint longer than 9 bytes cannot hold a 63-bit value; the multiformats spec caps them there.
MAX_VARINT_BYTES: Final = 9


class CIDError(ValueError):
    """A CID (or multihash/varint inside one) could not be parsed or built."""


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128, as used by multiformats."""
    if n < 0:
        raise CIDError(f"varint must be non-negative, got {n}")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Read a minimal unsigned varint at `offset`; return (value, offset after it)."""
    value = 0
    shift = 0
    pos = offset
    while True:
        if pos >= len(data):
            raise CIDError(f"truncated varint at byte {offset}")
        if pos - offset >= MAX_VARINT_BYTES:
            raise CIDError(f"varint at byte {offset} is longer than {MAX_VARINT_BYTES} bytes")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and pos - offset > 1:
                raise CIDError(f"non-minimal varint at byte {offset}")
            return value, pos
        shift += 7


def _fail(reason: str) -> NoReturn:
    raise CIDError(reason)


def _check_multihash(mh: bytes, where: str = "multihash") -> None:
    code, pos = decode_varint(mh)
    size, pos = decode_varint(mh, pos)
    if len(mh) - pos != size:
        _fail(
            f"{where}: digest length is {size} but {len(mh) - pos} bytes follow (hash code 0x{code:x})"
        )


@final
class CID:
    """An immutable CID; equality and hashing use the binary form (`buffer`)."""

    __slots__ = ("_buffer", "_str", "codec", "multihash", "version")

    version: int
    codec: int
    multihash: bytes
    _buffer: bytes
    _str: str | None

    def __init__(self, version: int, codec: int, multihash: bytes) -> None:
        multihash = bytes(multihash)
        _check_multihash(multihash)
        if version == 0:
            if codec != DAG_PB:
                _fail(f"CIDv0 must use codec dag-pb (0x70), not 0x{codec:x}")
            if len(multihash) != 34 or multihash[:2] != b"\x12\x20":
                _fail("CIDv0 must hold a 32-byte sha2-256 multihash")
            buffer = multihash
        elif version == 1:
            if codec < 0:
                _fail(f"codec must be non-negative, got {codec}")
            buffer = b"\x01" + encode_varint(codec) + multihash
        else:
            _fail(f"unsupported CID version {version}")
        self._init(version, codec, multihash, buffer)

    def _init(self, version: int, codec: int, multihash: bytes, buffer: bytes) -> None:
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "multihash", multihash)
        object.__setattr__(self, "_buffer", buffer)
        object.__setattr__(self, "_str", None)

    @classmethod
    def _trusted(cls, version: int, codec: int, multihash: bytes, buffer: bytes) -> CID:
        # the slots' own setters: a third of the cost of five object.__setattr__ calls, which
        # counts when every block of a commit makes one
        cid = _new(cls)
        _set_version(cid, version)
        _set_codec(cid, codec)
        _set_multihash(cid, multihash)
        _set_buffer(cid, buffer)
        _set_str(cid, None)
        return cid

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def v1(cls, codec: int, multihash: bytes) -> CID:
        return cls(1, codec, multihash)

    @classmethod
    def of(cls, data: bytes, codec: int = DAG_CBOR) -> CID:
        """The sha2-256 CIDv1 of `data` under `codec`."""
        mh = b"\x12\x20" + _sha256(data).digest()
        if codec == DAG_CBOR:
            prefix = b"\x01\x71"
        elif codec == RAW:
            prefix = b"\x01\x55"
        else:
            prefix = b"\x01" + encode_varint(codec)
        cid = _new(cls)
        _set_version(cid, 1)
        _set_codec(cid, codec)
        _set_multihash(cid, mh)
        _set_buffer(cid, prefix + mh)
        _set_str(cid, None)
        return cid

    @classmethod
    def parse(cls, x: str | bytes) -> CID:
        """Parse a CID string (`Qm…`, multibase `b…`/`B…`/`z…`/`f…`) or binary CID."""
        if isinstance(x, str):
            return cls._parse_str(x)
        if isinstance(x, bytes | bytearray | memoryview):
            return cls._parse_bytes(bytes(x))
        raise CIDError(f"cannot parse a CID from {type(x).__name__}")

    @classmethod
    def _parse_bytes(cls, data: bytes) -> CID:
        # The common case first: a 36-byte sha2-256 CIDv1 with a one-byte codec (dag-cbor, raw,
        # dag-pb); its varints are minimal and its digest length right by construction.
        if len(data) == 36 and data[0] == 1 and data[1] < 0x80 and data[2:4] == b"\x12\x20":
            return cls._trusted(1, data[1], data[2:], data)
        if len(data) == 34 and data[0] == 0x12 and data[1] == 0x20:
            return cls._trusted(0, DAG_PB, data, data)
        if not data:
            _fail("empty CID")
        version, pos = decode_varint(data)
        if version != 1:
            if data[0] == 0x12:
                _fail(f"binary CIDv0 must be 34 bytes, got {len(data)}")
            _fail(f"unsupported CID version {version}")
        codec, pos = decode_varint(data, pos)
        mh = data[pos:]
        if not mh:
            _fail("CID has no multihash")
        _check_multihash(mh)
        return cls._trusted(1, codec, mh, data)

    @classmethod
    def _parse_str(cls, s: str) -> CID:
        if not s:
            _fail("empty CID string")
        if len(s) == 46 and s.startswith("Qm"):
            raw = _b58decode(s, s)
            if len(raw) != 34 or raw[:2] != b"\x12\x20":
                _fail(f"invalid CIDv0 {s!r}: not a sha2-256 multihash")
            return cls._trusted(0, DAG_PB, raw, raw)
        prefix, body = s[0], s[1:]
        if prefix in "bB":
            raw = _b32decode(body, s)
        elif prefix == "z":
            raw = _b58decode(body, s)
        elif prefix in "fF":
            try:
                raw = bytes.fromhex(body)
            except ValueError:
                _fail(f"invalid base16 in CID {s!r}")
        else:
            _fail(f"unsupported multibase prefix {prefix!r} in CID {s!r}")
        if raw[:1] == b"\x12":
            _fail(f"CIDv0 cannot be multibase-encoded: {s!r}")
        return cls._parse_bytes(raw)

    # -- views -------------------------------------------------------------------------------

    @property
    def buffer(self) -> bytes:
        """Binary CID (for v0, the 34-byte multihash)."""
        return self._buffer

    @property
    def hash_code(self) -> int:
        mh = self.multihash
        if mh[:2] == b"\x12\x20":  # sha2-256, every CID a Block has: no varints to read
            return SHA2_256
        return decode_varint(mh)[0]

    @property
    def digest(self) -> bytes:
        mh = self.multihash
        if mh[:2] == b"\x12\x20":
            return mh[2:]
        _, pos = decode_varint(mh)
        _, pos = decode_varint(mh, pos)
        return mh[pos:]

    def __bytes__(self) -> bytes:
        return self._buffer

    def __str__(self) -> str:
        s = self._str
        if s is None:
            if self.version == 0:
                s = base58.b58encode(self._buffer).decode("ascii")
            else:
                s = "b" + base64.b32encode(self._buffer).decode("ascii").lower().rstrip("=")
            object.__setattr__(self, "_str", s)
        return s

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CID):
            return self._buffer == other._buffer
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._buffer)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CID is immutable")

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        return (CID.parse, (self._buffer,))


_new: Final = object.__new__
_sha256: Final = hashlib.sha256
_set_version: Final = CID.__dict__["version"].__set__
_set_codec: Final = CID.__dict__["codec"].__set__
_set_multihash: Final = CID.__dict__["multihash"].__set__
_set_buffer: Final = CID.__dict__["_buffer"].__set__
_set_str: Final = CID.__dict__["_str"].__set__


def _b32decode(body: str, s: str) -> bytes:
    if body != body.lower() and body != body.upper():
        _fail(f"mixed-case base32 in CID {s!r}")
    try:
        return base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        _fail(f"invalid base32 in CID {s!r}")


def _b58decode(body: str, s: str) -> bytes:
    try:
        return base58.b58decode(body)
    except ValueError:
        _fail(f"invalid base58btc in CID {s!r}")
