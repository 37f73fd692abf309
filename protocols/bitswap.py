"""Bitswap 1.2.0 messages: a hand-written protobuf codec plus the sans-I/O fetch state.

Neighbours: protocols.framing (the uvarint length prefix around each message), dag.cid (CIDs
inside messages), p2pico.bitswap (the trio driver that moves these messages over libp2p).
Sans-I/O: no trio, no libp2p. ``decode`` turns one message's bytes into a ``Message``;
``encode`` does the reverse; ``answer`` computes a server's replies to a wantlist;
``FetchSession`` tracks one client fetch.

Wire format (ipfs/specs ``src/bitswap-protocol.md``, "Bitswap 1.2.0: Wire Format")::

    message Message {
      message Wantlist {
        enum WantType { Block = 0; Have = 1; }
        message Entry {
          bytes block = 1;         // CID of the block
          int32 priority = 2;      // the priority (normalized). default to 1
          bool cancel = 3;         // whether this revokes an entry
          WantType wantType = 4;   // defaults to Block
          bool sendDontHave = 5;   // defaults to false
        }
        repeated Entry entries = 1;
        bool full = 2;             // whether this is the full wantlist
      }
      message Block { bytes prefix = 1; bytes data = 2; }   // prefix: the CID minus its digest
      enum BlockPresenceType { Have = 0; DontHave = 1; }
      message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; }

      Wantlist wantlist = 1;
      repeated bytes blocks = 2;   // 1.0.0 only; decoded into legacy_blocks, never sent
      repeated Block payload = 3;
      repeated BlockPresence blockPresences = 4;
      int32 pendingBytes = 5;
    }

Decoding rules, each a ``BitswapError`` naming the field and byte offset:

1. Protobuf wire types 0 (varint), 1 (64-bit), 2 (length-delimited) and 5 (32-bit) only;
   the deprecated groups (3, 4) and the undefined 6 and 7 are refused.
2. A known field must arrive with its declared wire type. Unknown fields are skipped, as
   protobuf requires, so a newer peer's additions do not break us.
3. Varints are at most ``MAX_PROTOBUF_VARINT_LEN`` bytes and fit in 64 bits; int32 fields
   take the low 32 bits as signed (protobuf's rule for a sign-extended negative value).
4. Sizes are bounded before anything is buffered or built: the message (``MAX_MESSAGE_SIZE``),
   each block (``MAX_BLOCK_SIZE``), each CID (``MAX_CID_SIZE``) and the number of wantlist
   entries, payload blocks and presences (``MAX_WANTLIST_ENTRIES`` and friends).
5. CIDs (wantlist entries, presences) must parse as CIDs; enum values must be known ones.

Proto3 repeats: a repeated scalar field keeps its last value and a repeated ``wantlist``
field is merged (entries appended), as protobuf parsers do. Encoding writes the canonical
form: fields in number order, defaults omitted.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, NoReturn

from dag.cid import CID, DAG_PB, SHA2_256, CIDError, decode_varint, encode_varint

__all__ = [
    "MAX_BLOCK_PRESENCES",
    "MAX_BLOCK_SIZE",
    "MAX_CID_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_PAYLOAD_BLOCKS",
    "MAX_WANTLIST_ENTRIES",
    "PROTOCOL_ID",
    "BitswapError",
    "BlockPresence",
    "FetchSession",
    "Message",
    "PayloadBlock",
    "PresenceType",
    "WantEntry",
    "WantType",
    "answer",
    "cid_from_payload",
    "cid_prefix",
    "decode",
    "encode",
]

PROTOCOL_ID: Final = "/ipfs/bitswap/1.2.0"

# The spec: "All protocol messages MUST be less than or equal to 4MiB in size." It is also
# protocols.framing.MAX_FRAME_SIZE, so a frame the framing layer accepts fits here.
MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
# The spec: implementations "MUST support sending and receiving individual blocks of sizes
# less than or equal to 2MiB". We accept up to that so any IPFS peer can send us its blocks;
# p2pico's own blocks stay at or below 256 KiB (shared/research/ipld.md §7).
MAX_BLOCK_SIZE: Final = 2 * 1024 * 1024
# A sha2-256 CIDv1 is 36 bytes. 128 leaves room for longer hashes and large codec numbers
# while refusing the identity-hash CIDs that smuggle whole blocks into a wantlist.
MAX_CID_SIZE: Final = 128
# A want of a sha2-256 CIDv1 costs 40 bytes on the wire, so a 4 MiB message carries up to
# ~105k of them, and real peers send that many: Helia walking a DAG of 13k blocks sent one
# wantlist of over 8,192 entries (our earlier cap, which reset the stream and stalled its
# walk). 131,072 lets every message of real CIDs through; only wants of tiny (identity)
# CIDs reach it, and it bounds the objects one message makes (~30 MB) and the lookups.
MAX_WANTLIST_ENTRIES: Final = 131_072
# Empty blocks take 4 bytes each on the wire; without a count cap one message could make
# us build a million objects. 8192 blocks or presences per message is ample for real peers.
MAX_PAYLOAD_BLOCKS: Final = 8192
MAX_BLOCK_PRESENCES: Final = 8192
# Protobuf varints encode up to 64 bits, which takes 10 bytes.
MAX_PROTOBUF_VARINT_LEN: Final = 10

# Protobuf wire types (protobuf.dev "Encoding": VARINT, I64, LEN, SGROUP, EGROUP, I32).
_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5
_WIRE_TYPE_NAMES: Final = {
    0: "varint",
    1: "64-bit",
    2: "length-delimited",
    3: "start-group",
    4: "end-group",
    5: "32-bit",
}
_MAX_FIELD_NUMBER: Final = (1 << 29) - 1


class BitswapError(ValueError):
    """A peer sent bytes that are not a valid Bitswap message; says which field and where."""

    def __init__(self, reason: str, *, field: str = "", offset: int | None = None) -> None:
        self.reason = reason
        self.field = field
        self.offset = offset
        where = []
        if field:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"byte {offset}")
        super().__init__(f"{reason} ({', '.join(where)})" if where else reason)


class WantType(enum.IntEnum):
    BLOCK = 0
    HAVE = 1


class PresenceType(enum.IntEnum):
    HAVE = 0
    DONT_HAVE = 1


@dataclass(frozen=True, slots=True)
class WantEntry:
    """One wantlist entry: ask for ``cid`` (or revoke the ask, if ``cancel``)."""

    cid: CID
    priority: int = 1
    cancel: bool = False
    want_type: WantType = WantType.BLOCK
    send_dont_have: bool = False


@dataclass(frozen=True, slots=True)
class PayloadBlock:
    """A block as Bitswap 1.1+ sends it: the CID prefix (no digest) and the bytes."""

    prefix: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class BlockPresence:
    cid: CID
    type: PresenceType


@dataclass(frozen=True, slots=True)
class Message:
    """One Bitswap message. All fields are optional; an empty Message encodes to b""."""

    entries: tuple[WantEntry, ...] = ()
    full: bool = False
    payload: tuple[PayloadBlock, ...] = ()
    presences: tuple[BlockPresence, ...] = ()
    pending_bytes: int = 0
    # Bitswap 1.0.0's ``blocks`` field: decoded so nothing is silently lost, never sent.
    legacy_blocks: tuple[bytes, ...] = field(default=())


# --- CID prefixes ---------------------------------------------------------------------------


def cid_prefix(cid: CID) -> bytes:
    """The Bitswap prefix of ``cid``: varints version, codec, multihash code, digest length."""
    buf = cid.buffer
    if len(buf) == 36 and buf[0] == 1 and buf[1] < 0x80 and buf[2:4] == b"\x12\x20":
        return buf[:4]  # the common case: its four varints are one byte each, as in the CID
    return _prefix_varints(cid)


def _prefix_varints(cid: CID) -> bytes:
    code, pos = decode_varint(cid.multihash)
    length, _ = decode_varint(cid.multihash, pos)
    return b"".join(encode_varint(n) for n in (cid.version, cid.codec, code, length))


def cid_from_payload(block: PayloadBlock) -> CID:
    """The CID of a payload block, computed from its prefix and a hash of its data.

    Only sha2-256 is supported (the only hash p2pico and Helia's defaults use).

    Raises:
        BitswapError: the prefix is malformed, trails bytes, names another hash function,
            a digest length other than 32, or an impossible CIDv0.
    """
    prefix = block.prefix
    if len(prefix) == 4 and prefix[0] == 1 and prefix[1] < 0x80 and prefix[2:] == b"\x12\x20":
        # the common case, a CIDv1 with a one-byte codec and sha2-256: the CID's bytes are
        # the prefix and the digest
        return CID.parse(prefix + hashlib.sha256(block.data).digest())
    values: list[int] = []
    pos = 0
    try:
        for _ in range(4):
            value, pos = decode_varint(prefix, pos)
            values.append(value)
    except CIDError as error:
        raise BitswapError(f"bad CID prefix: {error}", field="payload.prefix") from None
    if pos != len(prefix):
        raise BitswapError(
            f"CID prefix has {len(prefix) - pos} trailing byte(s)", field="payload.prefix"
        )
    version, codec, code, length = values
    if code != SHA2_256 or length != 32:
        raise BitswapError(
            f"unsupported multihash 0x{code:x} of length {length} (only sha2-256/32)",
            field="payload.prefix",
        )
    multihash = b"\x12\x20" + hashlib.sha256(block.data).digest()
    if version == 0 and codec != DAG_PB:
        raise BitswapError(f"CIDv0 prefix with codec 0x{codec:x}", field="payload.prefix")
    try:
        return CID(version, codec, multihash)
    except CIDError as error:
        raise BitswapError(f"bad CID prefix: {error}", field="payload.prefix") from None


# --- low-level protobuf reading ------------------------------------------------------------


def _fail(reason: str, field: str, offset: int) -> NoReturn:
    raise BitswapError(reason, field=field, offset=offset)


def _read_varint(data: bytes, pos: int, end: int, field: str) -> tuple[int, int]:
    """A protobuf varint (up to 10 bytes, 64 bits) at ``data[pos]``, not reading past ``end``."""
    if pos < end and data[pos] < 0x80:  # one byte: field keys, small lengths and flags
        return data[pos], pos + 1
    value = 0
    for i in range(MAX_PROTOBUF_VARINT_LEN):
        if pos + i >= end:
            _fail("truncated varint", field, pos)
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if value >= 1 << 64:
                _fail("varint exceeds 64 bits", field, pos)
            return value, pos + i + 1
    _fail(f"varint longer than {MAX_PROTOBUF_VARINT_LEN} bytes", field, pos)


def _int32(value: int) -> int:
    """Protobuf int32 from a decoded varint: the low 32 bits, signed."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _fields(
    data: bytes, start: int, end: int, where: str
) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(field number, wire type, tag offset, a, b)`` for each field in a range.

    For varint fields ``a`` is the value and ``b`` the offset after it; for length-delimited
    and fixed-width fields they are the start and end offsets of the bytes.
    """
    pos = start
    while pos < end:
        tag_at = pos
        tag = data[pos]
        if tag < 0x80:  # (_read_varint's one-byte case, inlined: one call less per field)
            pos += 1
        else:
            tag, pos = _read_varint(data, pos, end, f"{where} tag")
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            _fail(f"invalid field number {number}", f"{where} tag", tag_at)
        if wire == _VARINT:
            value, pos = _read_varint(data, pos, end, f"{where}.{number}")
            yield number, wire, tag_at, value, pos
        elif wire == _LEN:
            length, pos = _read_varint(data, pos, end, f"{where}.{number}")
            if length > end - pos:
                _fail(
                    f"length {length} runs past the end ({end - pos} byte(s) left)",
                    f"{where}.{number}",
                    pos,
                )
            yield number, wire, tag_at, pos, pos + length
            pos += length
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if size > end - pos:
                _fail(f"truncated {_WIRE_TYPE_NAMES[wire]} value", f"{where}.{number}", pos)
            yield number, wire, tag_at, pos, pos + size
            pos += size
        else:
            _fail(f"unsupported wire type {wire}", f"{where}.{number}", tag_at)


def _expect(wire: int, expected: int, field: str, offset: int) -> None:
    if wire != expected:
        _fail(
            f"wire type {_WIRE_TYPE_NAMES.get(wire, wire)}, expected {_WIRE_TYPE_NAMES[expected]}",
            field,
            offset,
        )


def _cid(data: bytes, start: int, end: int, field: str) -> CID:
    if end - start > MAX_CID_SIZE:
        _fail(f"CID of {end - start} bytes exceeds the maximum of {MAX_CID_SIZE}", field, start)
    try:
        return CID.parse(data[start:end])
    except CIDError as error:
        _fail(f"invalid CID: {error}", field, start)


# --- decode ---------------------------------------------------------------------------------

# Field numbers, named after the .proto above.
_MSG_WANTLIST, _MSG_BLOCKS, _MSG_PAYLOAD, _MSG_PRESENCES, _MSG_PENDING = 1, 2, 3, 4, 5
_WL_ENTRIES, _WL_FULL = 1, 2
_E_BLOCK, _E_PRIORITY, _E_CANCEL, _E_WANT_TYPE, _E_SEND_DONT_HAVE = 1, 2, 3, 4, 5
_B_PREFIX, _B_DATA = 1, 2
_P_CID, _P_TYPE = 1, 2


def decode(data: bytes) -> Message:
    """Decode one Bitswap message (the bytes inside one length-prefixed frame).

    Raises:
        BitswapError: the bytes break one of the rules in the module docstring.
    """
    data = bytes(data)
    if len(data) > MAX_MESSAGE_SIZE:
        _fail(f"message of {len(data)} bytes exceeds the maximum of {MAX_MESSAGE_SIZE}", "", 0)
    entries: list[WantEntry] = []
    full = False
    payload: list[PayloadBlock] = []
    presences: list[BlockPresence] = []
    legacy: list[bytes] = []
    pending = 0
    for number, wire, at, a, b in _fields(data, 0, len(data), "Message"):
        if number == _MSG_WANTLIST:
            _expect(wire, _LEN, "wantlist", at)
            full = _decode_wantlist(data, a, b, entries, full)
        elif number == _MSG_BLOCKS:
            _expect(wire, _LEN, "blocks", at)
            _check_block_size(b - a, "blocks", a)
            if len(legacy) + len(payload) >= MAX_PAYLOAD_BLOCKS:
                _fail(f"more than {MAX_PAYLOAD_BLOCKS} blocks", "blocks", a)
            legacy.append(data[a:b])
        elif number == _MSG_PAYLOAD:
            _expect(wire, _LEN, "payload", at)
            if len(legacy) + len(payload) >= MAX_PAYLOAD_BLOCKS:
                _fail(f"more than {MAX_PAYLOAD_BLOCKS} blocks", "payload", a)
            payload.append(_decode_payload_block(data, a, b))
        elif number == _MSG_PRESENCES:
            _expect(wire, _LEN, "blockPresences", at)
            if len(presences) >= MAX_BLOCK_PRESENCES:
                _fail(f"more than {MAX_BLOCK_PRESENCES} presences", "blockPresences", a)
            presences.append(_decode_presence(data, a, b))
        elif number == _MSG_PENDING:
            _expect(wire, _VARINT, "pendingBytes", at)
            pending = _int32(a)
    return Message(
        entries=tuple(entries),
        full=full,
        payload=tuple(payload),
        presences=tuple(presences),
        pending_bytes=pending,
        legacy_blocks=tuple(legacy),
    )


def _check_block_size(size: int, field: str, offset: int) -> None:
    if size > MAX_BLOCK_SIZE:
        _fail(f"block of {size} bytes exceeds the maximum of {MAX_BLOCK_SIZE}", field, offset)


def _decode_wantlist(
    data: bytes, start: int, end: int, entries: list[WantEntry], full: bool
) -> bool:
    for number, wire, at, a, b in _fields(data, start, end, "wantlist"):
        if number == _WL_ENTRIES:
            _expect(wire, _LEN, "wantlist.entries", at)
            if len(entries) >= MAX_WANTLIST_ENTRIES:
                _fail(f"more than {MAX_WANTLIST_ENTRIES} entries", "wantlist.entries", a)
            entries.append(_decode_entry(data, a, b))
        elif number == _WL_FULL:
            _expect(wire, _VARINT, "wantlist.full", at)
            full = a != 0
    return full


_WANT_TYPES: Final = {int(t): t for t in WantType}


def _decode_entry(data: bytes, start: int, end: int) -> WantEntry:
    entry = _decode_plain_entry(data, start, end)
    return entry if entry is not None else _decode_entry_fields(data, start, end)


def _decode_entry_fields(data: bytes, start: int, end: int) -> WantEntry:
    """Any entry, field by field: fields in any order, repeated ones (the last wins), unknown
    ones skipped, and the errors."""
    cid: CID | None = None
    # proto3 has no "present" bit for scalars: an absent priority is 0, not the "default 1"
    # the comment in the .proto mentions (that is a convention for senders).
    priority, cancel, want_type, send_dont_have = 0, False, WantType.BLOCK, False
    for number, wire, at, a, b in _fields(data, start, end, "entry"):
        if number == _E_BLOCK:
            _expect(wire, _LEN, "entry.block", at)
            cid = _cid(data, a, b, "entry.block")
        elif number == _E_PRIORITY:
            _expect(wire, _VARINT, "entry.priority", at)
            priority = _int32(a)
        elif number == _E_CANCEL:
            _expect(wire, _VARINT, "entry.cancel", at)
            cancel = a != 0
        elif number == _E_WANT_TYPE:
            _expect(wire, _VARINT, "entry.wantType", at)
            if a not in (WantType.BLOCK, WantType.HAVE):
                _fail(f"unknown wantType {a}", "entry.wantType", at)
            want_type = WantType(a)
        elif number == _E_SEND_DONT_HAVE:
            _expect(wire, _VARINT, "entry.sendDontHave", at)
            send_dont_have = a != 0
    if cid is None:
        _fail("wantlist entry without a CID", "entry.block", start)
    return WantEntry(cid, priority, cancel, want_type, send_dont_have)


def _decode_plain_entry(data: bytes, start: int, end: int) -> WantEntry | None:
    """The entry as encoders write it, or None for the general path (which also gives the
    errors): the CID first, with a one-byte length, then any of the four varint fields in
    their order, each once, each value one byte, and a known wantType."""
    if end - start < 2 or data[start] != 0x0A:
        return None
    cid_end = start + 2 + data[start + 1]
    if data[start + 1] >= 0x80 or cid_end > end:
        return None
    values = [0, 0, 0, 0]  # priority, cancel, wantType, sendDontHave: fields 2..5
    last, pos = _E_BLOCK, cid_end
    while pos < end:
        tag = data[pos]
        number = tag >> 3
        if tag & 7 != _VARINT or not last < number <= _E_SEND_DONT_HAVE or pos + 1 >= end:
            return None
        value = data[pos + 1]
        if value >= 0x80:
            return None
        values[number - _E_PRIORITY] = value
        last, pos = number, pos + 2
    want_type = _WANT_TYPES.get(values[2])
    if want_type is None:
        return None
    cid = _cid(data, start + 2, cid_end, "entry.block")
    return WantEntry(cid, values[0], values[1] != 0, want_type, values[3] != 0)


def _decode_payload_block(data: bytes, start: int, end: int) -> PayloadBlock:
    plain = _decode_plain_payload(data, start, end)
    return plain if plain is not None else _decode_payload_fields(data, start, end)


def _decode_plain_payload(data: bytes, start: int, end: int) -> PayloadBlock | None:
    """The block as encoders write it, or None for the general path (which also gives the
    errors): the prefix with a one-byte length, then the data with a length of one to three
    bytes, ending the range. Neither can pass its limit: a one-byte length is at most 127,
    under MAX_CID_SIZE, and a three-byte one under 2**21, MAX_BLOCK_SIZE (a test checks
    both)."""
    if end - start < 4 or data[start] != 0x0A:
        return None
    n = data[start + 1]
    tag_at = start + 2 + n
    if n >= 0x80 or tag_at + 1 >= end or data[tag_at] != 0x12:
        return None
    pos = tag_at + 1
    size = data[pos]
    if size < 0x80:
        pos += 1
    elif pos + 1 < end and data[pos + 1] < 0x80:
        size = (size & 0x7F) | data[pos + 1] << 7
        pos += 2
    elif pos + 2 < end and data[pos + 1] >= 0x80 and data[pos + 2] < 0x80:
        size = (size & 0x7F) | (data[pos + 1] & 0x7F) << 7 | data[pos + 2] << 14
        pos += 3
    else:
        return None
    if pos + size != end:
        return None
    return PayloadBlock(data[start + 2 : tag_at], data[pos:end])


def _decode_payload_fields(data: bytes, start: int, end: int) -> PayloadBlock:
    prefix = b""
    block = b""
    for number, wire, at, a, b in _fields(data, start, end, "payload"):
        if number == _B_PREFIX:
            _expect(wire, _LEN, "payload.prefix", at)
            if b - a > MAX_CID_SIZE:
                _fail(f"prefix of {b - a} bytes is too long", "payload.prefix", a)
            prefix = data[a:b]
        elif number == _B_DATA:
            _expect(wire, _LEN, "payload.data", at)
            _check_block_size(b - a, "payload.data", a)
            block = data[a:b]
    return PayloadBlock(prefix, block)


def _decode_presence(data: bytes, start: int, end: int) -> BlockPresence:
    cid: CID | None = None
    kind = PresenceType.HAVE
    for number, wire, at, a, b in _fields(data, start, end, "presence"):
        if number == _P_CID:
            _expect(wire, _LEN, "presence.cid", at)
            cid = _cid(data, a, b, "presence.cid")
        elif number == _P_TYPE:
            _expect(wire, _VARINT, "presence.type", at)
            if a not in (PresenceType.HAVE, PresenceType.DONT_HAVE):
                _fail(f"unknown presence type {a}", "presence.type", at)
            kind = PresenceType(a)
    if cid is None:
        _fail("block presence without a CID", "presence.cid", start)
    return BlockPresence(cid, kind)


# --- encode ---------------------------------------------------------------------------------


_ONE_BYTE: Final = tuple(bytes((i,)) for i in range(0x80))


def _uvarint(value: int) -> bytes:
    """A protobuf varint; negative int32 values are sign-extended to 64 bits (10 bytes)."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    return encode_varint(value + (1 << 64) if value < 0 else value)


def _key(number: int, wire: int) -> bytes:
    return _uvarint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _uvarint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    """A varint field, omitted when it holds the proto3 default 0/false."""
    return _key(number, _VARINT) + _uvarint(value) if value else b""


def _check_int32(value: int, name: str) -> None:
    if not -(1 << 31) <= value < 1 << 31:
        raise ValueError(f"{name} {value} does not fit in int32")


# An entry's field keys, written by _encode_entry without a call each.
_BLOCK_KEY: Final = _key(_E_BLOCK, _LEN)
_PRIORITY_KEY: Final = _key(_E_PRIORITY, _VARINT)
_CANCEL_KEY: Final = _key(_E_CANCEL, _VARINT)
_WANT_TYPE_KEY: Final = _key(_E_WANT_TYPE, _VARINT)
_SEND_DONT_HAVE_KEY: Final = _key(_E_SEND_DONT_HAVE, _VARINT)


def _encode_entry(entry: WantEntry) -> bytes:
    _check_int32(entry.priority, "priority")
    buf = entry.cid.buffer
    parts = [_BLOCK_KEY, _uvarint(len(buf)), buf]  # _len_field(_E_BLOCK, buf)
    if entry.priority:
        parts += (_PRIORITY_KEY, _uvarint(entry.priority))
    if entry.cancel:
        parts += (_CANCEL_KEY, b"\x01")
    if entry.want_type:
        parts += (_WANT_TYPE_KEY, _uvarint(int(entry.want_type)))
    if entry.send_dont_have:
        parts += (_SEND_DONT_HAVE_KEY, b"\x01")
    return b"".join(parts)


def encode(message: Message) -> bytes:
    """Encode a message canonically (fields in order, defaults left out).

    Raises:
        ValueError: the message breaks a limit a peer would enforce (so it would be refused):
            too large, too many items, an int32 out of range, or it has ``legacy_blocks``.
    """
    if message.legacy_blocks:
        raise ValueError("Bitswap 1.0.0 blocks are not sent; use payload")
    for limit, items, name in (
        (MAX_WANTLIST_ENTRIES, message.entries, "wantlist entries"),
        (MAX_PAYLOAD_BLOCKS, message.payload, "payload blocks"),
        (MAX_BLOCK_PRESENCES, message.presences, "block presences"),
    ):
        if len(items) > limit:
            raise ValueError(f"{len(items)} {name} exceed the maximum of {limit}")
    for block in message.payload:
        if len(block.data) > MAX_BLOCK_SIZE:
            raise ValueError(f"block of {len(block.data)} bytes exceeds {MAX_BLOCK_SIZE}")
    _check_int32(message.pending_bytes, "pendingBytes")
    parts: list[bytes] = []
    if message.entries or message.full:
        wantlist = b"".join(_len_field(_WL_ENTRIES, _encode_entry(e)) for e in message.entries)
        parts.append(_len_field(_MSG_WANTLIST, wantlist + _varint_field(_WL_FULL, message.full)))
    for block in message.payload:
        body = _len_field(_B_PREFIX, block.prefix) + _len_field(_B_DATA, block.data)
        parts.append(_len_field(_MSG_PAYLOAD, body))
    for presence in message.presences:
        body = _len_field(_P_CID, presence.cid.buffer) + _varint_field(_P_TYPE, presence.type)
        parts.append(_len_field(_MSG_PRESENCES, body))
    parts.append(_varint_field(_MSG_PENDING, message.pending_bytes))
    out = b"".join(parts)
    if len(out) > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {len(out)} bytes exceeds the maximum of {MAX_MESSAGE_SIZE}")
    return out


# --- server side: answering a wantlist -----------------------------------------------------

# Upper bound on the field keys and length prefixes around one item (block or presence),
# plus its CID prefix: what a reply costs beyond the block bytes themselves.
_ITEM_OVERHEAD: Final = 64


def answer(
    message: Message, lookup: Callable[[CID], bytes | None]
) -> tuple[list[Message], list[CID]]:
    """The replies a server sends for the wants in ``message``.

    ``lookup(cid)`` returns the block's bytes if we have it *and* may give it to this peer,
    else ``None`` (the spec treats "not willing to give" like "don't have"). Cancels need no
    reply; this server keeps no per-peer ledger, so they are simply dropped. Following the
    spec: a want-block we can serve gets the block; a want-have gets HAVE; a want we cannot
    serve gets DONT_HAVE only if the peer asked for it (``sendDontHave``). Higher priorities
    are answered first. Items are spread over as many messages as keep each one under
    ``MAX_MESSAGE_SIZE`` and the per-message item limits.

    Returns the replies and the CIDs we could not serve (for logging).
    """
    wants = sorted((e for e in message.entries if not e.cancel), key=lambda e: -e.priority)
    replies: list[Message] = []
    payload: list[PayloadBlock] = []
    presences: list[BlockPresence] = []
    size = 0
    missing: list[CID] = []
    seen: set[CID] = set()
    for entry in wants:
        if entry.cid in seen:
            continue
        seen.add(entry.cid)
        data = lookup(entry.cid)
        item: PayloadBlock | BlockPresence
        if data is None:
            missing.append(entry.cid)
            if not entry.send_dont_have:
                continue
            item = BlockPresence(entry.cid, PresenceType.DONT_HAVE)
            cost = len(entry.cid.buffer) + _ITEM_OVERHEAD
        elif entry.want_type is WantType.HAVE:
            item = BlockPresence(entry.cid, PresenceType.HAVE)
            cost = len(entry.cid.buffer) + _ITEM_OVERHEAD
        else:
            item = PayloadBlock(cid_prefix(entry.cid), data)
            cost = len(data) + _ITEM_OVERHEAD
        full = (
            size + cost > MAX_MESSAGE_SIZE
            or len(payload) >= MAX_PAYLOAD_BLOCKS
            or len(presences) >= MAX_BLOCK_PRESENCES
        )
        if full and (payload or presences):
            replies.append(Message(payload=tuple(payload), presences=tuple(presences)))
            payload, presences, size = [], [], 0
        if isinstance(item, PayloadBlock):
            payload.append(item)
        else:
            presences.append(item)
        size += cost
    if payload or presences:
        replies.append(Message(payload=tuple(payload), presences=tuple(presences)))
    return replies, missing


# --- client side: one fetch -----------------------------------------------------------------


class FetchSession:
    """What we want from one peer in one fetch, and what has come back so far.

    ``request()`` gives the wantlist message to send; ``receive(message)`` takes each
    message that arrives from that peer and returns the blocks in it we asked for, as
    ``(cid, data)`` pairs whose data hashes to the CID (checked here). Blocks we did not
    ask for, and blocks whose bytes hash to another CID, are counted in ``unsolicited``
    and otherwise ignored. A DONT_HAVE for a wanted CID settles it as missing. ``done``
    is true once every CID is received or refused. ``cancel()`` revokes every want of the
    session, answered or not, when the fetch ends: a peer may keep a want it has answered
    (Helia marks it sent, and ignores the same want again until it is cancelled), and a later
    fetch of the same block would then get no answer.
    """

    def __init__(self, cids: Iterable[CID]) -> None:
        self.wanted: dict[CID, None] = dict.fromkeys(cids)  # ordered, deduplicated
        if len(self.wanted) > MAX_WANTLIST_ENTRIES:
            raise ValueError(f"cannot want more than {MAX_WANTLIST_ENTRIES} blocks at once")
        self.received: set[CID] = set()
        self.refused: set[CID] = set()
        self.unsolicited = 0

    @property
    def outstanding(self) -> list[CID]:
        return [c for c in self.wanted if c not in self.received and c not in self.refused]

    @property
    def done(self) -> bool:
        return not self.outstanding

    def request(self) -> Message:
        return Message(
            entries=tuple(
                WantEntry(cid, priority=1, want_type=WantType.BLOCK, send_dont_have=True)
                for cid in self.wanted
            )
        )

    def cancel(self) -> Message:
        return Message(entries=tuple(WantEntry(cid, cancel=True) for cid in self.wanted))

    def receive(self, message: Message) -> list[tuple[CID, bytes]]:
        """Blocks from ``message`` that settle our wants; see the class docstring."""
        found: list[tuple[CID, bytes]] = []
        for block in message.payload:
            try:
                cid = cid_from_payload(block)
            except BitswapError:
                self.unsolicited += 1
                continue
            if cid in self.wanted and cid not in self.received:
                self.received.add(cid)
                self.refused.discard(cid)
                found.append((cid, block.data))
            else:
                self.unsolicited += 1
        for presence in message.presences:
            if (
                presence.type is PresenceType.DONT_HAVE
                and presence.cid in self.wanted
                and presence.cid not in self.received
            ):
                self.refused.add(presence.cid)
        return found

    def reject(self, cid: CID) -> None:
        """The driver found a received block unusable (its bytes hash to the CID but do not
        decode, e.g. invalid DAG-CBOR): settle it as refused, since no bytes can do better."""
        self.received.discard(cid)
        self.refused.add(cid)
