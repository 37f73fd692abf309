"""``/p2pico/replica/1.0.0``: a host keeps its picos' replicas up to date (pure codec).

p2pico.replicas is the trio driver.  Requests (DAG-CBOR maps, one frame each):

    sync    {"op": "sync", "lease_ms", "picos": [SyncItem]}  → {"picos": [SyncAnswer]}
    record  {"op": "record", "did", "record"}                → Reply (protocols.messages)
    drop    {"op": "drop", "did"}                             → Reply

A ``sync`` is both the heartbeat (every lease/4, items without blocks) and the push
of new commits (the blocks each commit wrote, then the head once all of its blocks
went).  The first item for a DID carries the pico's key sealed to the replica's
engine key (``sealed``), which is when the replica takes the role on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dag import cbor
from dag.cid import CID
from protocols.messages import MessageError, _decode_map, _field, _int, _str

REPLICA_PROTOCOL: Final = "/p2pico/replica/1.0.0"
# Blocks in one sync frame (frames are ≤ 4 MiB; a block is ≤ 256 KiB).
SYNC_BUDGET: Final = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SyncItem:
    did: str
    replicas: tuple[str, ...]  # every replica of the pico, in takeover order
    head: CID | None  # the head to hold once ``blocks`` are stored (None: a heartbeat)
    blocks: tuple[tuple[CID, bytes], ...] = ()
    sealed: bytes | None = None  # the pico's seed sealed to the replica's engine key

    def to_cbor(self) -> dict[str, object]:
        value: dict[str, object] = {
            "did": self.did,
            "replicas": list(self.replicas),
            "head": self.head,
            "blocks": [[cid, data] for cid, data in self.blocks],
        }
        if self.sealed is not None:
            value["sealed"] = self.sealed
        return value


@dataclass(frozen=True, slots=True)
class SyncRequest:
    lease_ms: int
    picos: tuple[SyncItem, ...]

    def encode(self) -> bytes:
        return cbor.encode(
            {"op": "sync", "lease_ms": self.lease_ms, "picos": [p.to_cbor() for p in self.picos]}
        )


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    """``seq``/``head``: what the replica holds now; else ``error`` and ``code``
    (``taken``: the replica took the pico over, ``record`` is its location record)."""

    did: str
    seq: int = -1
    head: CID | None = None
    error: str | None = None
    code: str | None = None
    record: bytes | None = None

    def to_cbor(self) -> dict[str, object]:
        if self.error is not None:
            value: dict[str, object] = {"did": self.did, "error": self.error, "code": self.code}
            if self.record is not None:
                value["record"] = self.record
            return value
        return {"did": self.did, "seq": self.seq, "head": self.head}


@dataclass(frozen=True, slots=True)
class RecordRequest:
    did: str
    record: bytes

    def encode(self) -> bytes:
        return cbor.encode({"op": "record", "did": self.did, "record": self.record})


@dataclass(frozen=True, slots=True)
class DropRequest:
    did: str

    def encode(self) -> bytes:
        return cbor.encode({"op": "drop", "did": self.did})


def _item(value: object, where: str) -> SyncItem:
    if not isinstance(value, dict):
        raise MessageError(f"{where} must be a map")
    replicas = _field(value, "replicas", list)
    assert isinstance(replicas, list)
    if not all(isinstance(p, str) and p for p in replicas):
        raise MessageError(f"{where}.replicas must be a list of peer ids")
    head = _field(value, "head", CID, optional=True)
    assert head is None or isinstance(head, CID)
    raw_blocks = _field(value, "blocks", list)
    assert isinstance(raw_blocks, list)
    blocks: list[tuple[CID, bytes]] = []
    for i, pair in enumerate(raw_blocks):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not isinstance(pair[0], CID)
            or not isinstance(pair[1], bytes)
        ):
            raise MessageError(f"{where}.blocks[{i}] must be [CID, bytes]")
        blocks.append((pair[0], pair[1]))
    sealed = _field(value, "sealed", bytes, optional=True)
    assert sealed is None or isinstance(sealed, bytes)
    return SyncItem(_str(value, "did"), tuple(replicas), head, tuple(blocks), sealed)


def decode_request(data: bytes) -> SyncRequest | RecordRequest | DropRequest:
    msg = _decode_map(data)
    op = _str(msg, "op")
    if op == "sync":
        items = _field(msg, "picos", list)
        assert isinstance(items, list)
        return SyncRequest(
            _int(msg, "lease_ms"),
            tuple(_item(v, f"picos[{i}]") for i, v in enumerate(items)),
        )
    if op == "record":
        record = _field(msg, "record", bytes)
        assert isinstance(record, bytes)
        return RecordRequest(_str(msg, "did"), record)
    if op == "drop":
        return DropRequest(_str(msg, "did"))
    raise MessageError(f"unknown op {op!r} on {REPLICA_PROTOCOL}")


def encode_answers(answers: list[SyncAnswer]) -> bytes:
    return cbor.encode({"picos": [a.to_cbor() for a in answers]})


def decode_answers(data: bytes) -> list[SyncAnswer]:
    msg = _decode_map(data)
    items = _field(msg, "picos", list)
    assert isinstance(items, list)
    out: list[SyncAnswer] = []
    for i, v in enumerate(items):
        if not isinstance(v, dict):
            raise MessageError(f"picos[{i}] must be a map")
        did = _str(v, "did")
        if "error" in v:
            record = _field(v, "record", bytes, optional=True)
            assert record is None or isinstance(record, bytes)
            code = _field(v, "code", str, optional=True)
            assert code is None or isinstance(code, str)
            out.append(SyncAnswer(did, error=_str(v, "error"), code=code or "error", record=record))
            continue
        head = _field(v, "head", CID, optional=True)
        assert head is None or isinstance(head, CID)
        out.append(SyncAnswer(did, seq=_int(v, "seq", -1), head=head))
    return out
