"""Messages of p2pico's libp2p protocols: DAG-CBOR maps checked field by field (pure codec).

Each request and response travels as one length-prefixed frame (protocols.framing)
on a fresh stream; p2pico.mesh is the trio driver.  The protocols:

    /p2pico/msg/1.0.0     event | query | whois-eci | move → Reply
    /p2pico/loc/1.0.0     sync | locate               → {"records": [bytes]}
    /p2pico/move/1.0.0    propose | drained           → Reply
    /p2pico/blocks/1.0.0  manifest                    → {"cids": [CID]}
                          want                        → {"blocks": [bytes | null]}

A decoder never trusts its input: a missing or mistyped field raises
MessageError naming the field, which the driver turns into an error reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from dag import cbor
from dag.cid import CID

MSG_PROTOCOL: Final = "/p2pico/msg/1.0.0"
LOC_PROTOCOL: Final = "/p2pico/loc/1.0.0"
MOVE_PROTOCOL: Final = "/p2pico/move/1.0.0"
BLOCKS_PROTOCOL: Final = "/p2pico/blocks/1.0.0"
LOC_TOPIC: Final = "/p2pico/loc/1"

# Orleans' MaxForwardCount is 2 (did-routing.md §2.5); one more hop lets a
# request that raced a move come back to the new host as a forwarded item.
MAX_HOPS: Final = 3
# At most this many CIDs in one want list.  The server stops adding blocks to its
# reply once it holds BLOCKS_REPLY_BUDGET bytes (blocks are ≤ 256 KiB, frames ≤ 4 MiB),
# so a reply may answer only a prefix of the list; the requester asks again for the rest.
MAX_WANT: Final = 2048
BLOCKS_REPLY_BUDGET: Final = 2 * 1024 * 1024
# A manifest lists every block reachable from a head; past this, a move needs paging
# (a pico with this many blocks is far beyond what the skeleton moves).
MAX_MANIFEST: Final = 100_000


class MessageError(ValueError):
    """A message that is not what its protocol expects; the text names the field."""


def _field(msg: Mapping[str, object], name: str, kind: type, *, optional: bool = False) -> object:
    if name not in msg or msg[name] is None:
        if optional:
            return None
        raise MessageError(f"missing field {name!r}")
    value = msg[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MessageError(f"field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _str(msg: Mapping[str, object], name: str) -> str:
    value = _field(msg, name, str)
    assert isinstance(value, str)
    if not value:
        raise MessageError(f"field {name!r} must not be empty")
    return value


def _opt_str(msg: Mapping[str, object], name: str) -> str | None:
    value = _field(msg, name, str, optional=True)
    assert value is None or isinstance(value, str)
    return value


def _map(msg: Mapping[str, object], name: str) -> dict[str, object]:
    value = _field(msg, name, dict, optional=True)
    assert value is None or isinstance(value, dict)
    return value if value is not None else {}


def _int(msg: Mapping[str, object], name: str, default: int = 0) -> int:
    value = _field(msg, name, int, optional=True)
    assert value is None or isinstance(value, int)
    return default if value is None else value


def _decode_map(data: bytes) -> dict[str, object]:
    try:
        value = cbor.decode(data)
    except cbor.DagCborError as e:
        raise MessageError(f"not DAG-CBOR: {e}") from e
    if not isinstance(value, dict):
        raise MessageError("a message must be a map")
    return value


# -- /p2pico/msg/1.0.0 ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message goes: always a pico DID (routing is by DID), and the channel
    (ECI) the caller used, if any, which the host checks against the pico's channels."""

    did: str
    eci: str | None = None

    def to_value(self) -> dict[str, object]:
        return {"did": self.did, "eci": self.eci}

    @classmethod
    def from_value(cls, msg: Mapping[str, object]) -> Target:
        return cls(did=_str(msg, "did"), eci=_opt_str(msg, "eci"))


@dataclass(frozen=True, slots=True)
class EventRequest:
    target: Target
    domain: str
    type: str
    attrs: dict[str, object] = field(default_factory=dict)
    eid: str = "none"
    hops: int = 0
    forwarded: bool = False  # sent by the previous host while draining its queue after a move

    def encode(self) -> bytes:
        return cbor.encode(
            {
                "op": "event",
                **self.target.to_value(),
                "domain": self.domain,
                "type": self.type,
                "attrs": self.attrs,
                "eid": self.eid,
                "hops": self.hops,
                "forwarded": self.forwarded,
            }
        )


@dataclass(frozen=True, slots=True)
class QueryRequest:
    target: Target
    rid: str
    name: str
    args: dict[str, object] = field(default_factory=dict)
    hops: int = 0
    forwarded: bool = False

    def encode(self) -> bytes:
        return cbor.encode(
            {
                "op": "query",
                **self.target.to_value(),
                "rid": self.rid,
                "name": self.name,
                "args": self.args,
                "hops": self.hops,
                "forwarded": self.forwarded,
            }
        )


@dataclass(frozen=True, slots=True)
class WhoisEci:
    eci: str

    def encode(self) -> bytes:
        return cbor.encode({"op": "whois-eci", "eci": self.eci})


@dataclass(frozen=True, slots=True)
class MoveCommand:
    """Ask the pico's host to move it (``p2pico move`` run against any node)."""

    did: str
    to: str
    hops: int = 0

    def encode(self) -> bytes:
        return cbor.encode({"op": "move", "did": self.did, "to": self.to, "hops": self.hops})


MsgRequest = EventRequest | QueryRequest | WhoisEci | MoveCommand


def decode_msg_request(data: bytes) -> MsgRequest:
    msg = _decode_map(data)
    op = _str(msg, "op")
    forwarded = _field(msg, "forwarded", bool, optional=True) is True
    if op == "event":
        return EventRequest(
            Target.from_value(msg),
            _str(msg, "domain"),
            _str(msg, "type"),
            _map(msg, "attrs"),
            _opt_str(msg, "eid") or "none",
            _int(msg, "hops"),
            forwarded,
        )
    if op == "query":
        return QueryRequest(
            Target.from_value(msg),
            _str(msg, "rid"),
            _str(msg, "name"),
            _map(msg, "args"),
            _int(msg, "hops"),
            forwarded,
        )
    if op == "whois-eci":
        return WhoisEci(_str(msg, "eci"))
    if op == "move":
        return MoveCommand(_str(msg, "did"), _str(msg, "to"), _int(msg, "hops"))
    raise MessageError(f"unknown op {op!r} on {MSG_PROTOCOL}")


# -- replies (msg and move) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """``ok`` carries the result; otherwise ``error`` (text) and ``code`` say why.

    ``record`` may carry a newer location record (a MOVED reply) so the caller
    fixes its routing without another look-up.
    """

    ok: object = None
    error: str | None = None
    code: str | None = None
    record: bytes | None = None

    def encode(self) -> bytes:
        value: dict[str, object] = {"ok": self.ok}
        if self.error is not None:
            value = {"error": self.error, "code": self.code or "error"}
        if self.record is not None:
            value["record"] = self.record
        return cbor.encode(value)

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        msg = _decode_map(data)
        record = _field(msg, "record", bytes, optional=True)
        assert record is None or isinstance(record, bytes)
        if "error" in msg:
            return cls(
                error=_str(msg, "error"), code=_opt_str(msg, "code") or "error", record=record
            )
        if "ok" not in msg:
            raise MessageError("a reply needs 'ok' or 'error'")
        return cls(ok=msg["ok"], record=record)


# -- /p2pico/loc/1.0.0 -------------------------------------------------------------


def encode_loc_request(did: str | None) -> bytes:
    """``did`` None asks for every record the peer holds (catch-up on connect)."""
    return cbor.encode({"op": "locate", "did": did} if did else {"op": "sync"})


def decode_loc_request(data: bytes) -> str | None:
    msg = _decode_map(data)
    op = _str(msg, "op")
    if op == "sync":
        return None
    if op == "locate":
        return _str(msg, "did")
    raise MessageError(f"unknown op {op!r} on {LOC_PROTOCOL}")


def encode_records(records: list[bytes]) -> bytes:
    return cbor.encode({"records": records})


def decode_records(data: bytes) -> list[bytes]:
    records = _field(_decode_map(data), "records", list)
    assert isinstance(records, list)
    if not all(isinstance(r, bytes) for r in records):
        raise MessageError("every entry of 'records' must be bytes")
    return records


# -- /p2pico/move/1.0.0 --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MovePropose:
    """Source → target: take this pico.  The seed travels inside the Noise channel.

    ``record`` is the source's current location record, the one the target's new
    record must name in ``_prev`` (check-and-set).
    """

    did: str
    head: CID
    seed: bytes
    record: bytes

    def encode(self) -> bytes:
        return cbor.encode(
            {
                "op": "propose",
                "did": self.did,
                "head": self.head,
                "seed": self.seed,
                "record": self.record,
            }
        )


@dataclass(frozen=True, slots=True)
class MoveDrained:
    """Source → target: every queued item has been forwarded; serve direct traffic now."""

    did: str

    def encode(self) -> bytes:
        return cbor.encode({"op": "drained", "did": self.did})


def decode_move_request(data: bytes) -> MovePropose | MoveDrained:
    msg = _decode_map(data)
    op = _str(msg, "op")
    if op == "drained":
        return MoveDrained(_str(msg, "did"))
    if op != "propose":
        raise MessageError(f"unknown op {op!r} on {MOVE_PROTOCOL}")
    head = _field(msg, "head", CID)
    seed = _field(msg, "seed", bytes)
    record = _field(msg, "record", bytes)
    assert isinstance(head, CID)
    assert isinstance(seed, bytes)
    assert isinstance(record, bytes)
    if len(seed) != 32:
        raise MessageError("field 'seed' must be 32 bytes")
    return MovePropose(_str(msg, "did"), head, seed, record)


# -- /p2pico/blocks/1.0.0 ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestRequest:
    """Which blocks are reachable from ``root``?  The answer is a hint, not trusted:
    the requester verifies every block against its CID and walks the DAG itself."""

    did: str
    root: CID

    def encode(self) -> bytes:
        return cbor.encode({"op": "manifest", "did": self.did, "root": self.root})


@dataclass(frozen=True, slots=True)
class WantRequest:
    did: str
    want: list[CID]

    def __post_init__(self) -> None:
        if len(self.want) > MAX_WANT:
            raise MessageError(f"at most {MAX_WANT} CIDs per want list")

    def encode(self) -> bytes:
        return cbor.encode({"op": "want", "did": self.did, "want": self.want})


def decode_blocks_request(data: bytes) -> ManifestRequest | WantRequest:
    msg = _decode_map(data)
    op = _str(msg, "op")
    if op == "manifest":
        root = _field(msg, "root", CID)
        assert isinstance(root, CID)
        return ManifestRequest(_str(msg, "did"), root)
    if op != "want":
        raise MessageError(f"unknown op {op!r} on {BLOCKS_PROTOCOL}")
    want = _field(msg, "want", list)
    assert isinstance(want, list)
    if not all(isinstance(c, CID) for c in want):
        raise MessageError("'want' must be a list of CIDs")
    return WantRequest(_str(msg, "did"), want)


def encode_manifest(cids: list[CID]) -> bytes:
    return cbor.encode({"cids": cids})


def decode_manifest(data: bytes) -> list[CID]:
    cids = _field(_decode_map(data), "cids", list)
    assert isinstance(cids, list)
    if len(cids) > MAX_MANIFEST or not all(isinstance(c, CID) for c in cids):
        raise MessageError(f"'cids' must be a list of at most {MAX_MANIFEST} CIDs")
    return cids


def encode_blocks(blocks: list[bytes | None]) -> bytes:
    return cbor.encode({"blocks": blocks})


def decode_blocks(data: bytes) -> list[bytes | None]:
    blocks = _field(_decode_map(data), "blocks", list)
    assert isinstance(blocks, list)
    if not all(b is None or isinstance(b, bytes) for b in blocks):
        raise MessageError("every entry of 'blocks' must be bytes or null")
    return blocks
