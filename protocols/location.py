"""Pico location records: who hosts a DID now (pure codec; used by p2pico.mesh).

A record is an IPNS record (ipfs/specs ``ipns-record.md``): a protobuf
``IpnsEntry`` holding ``signatureV2`` (field 8) and ``data`` (field 9), where
``data`` is DAG-CBOR.  p2pico adds underscore fields, as IPNS allows
(shared/research/did-routing.md §2.6):

    Value        b"/p2p/<engine peer id>"     the hosting engine
    Sequence     int                          +1 per move and per republish
    Validity     b"<RFC 3339 UTC>"            expiry (ValidityType 0 = EOL)
    TTL          int (ns)                     cache hint
    _did         "did:key:z6Mk…"              the pico
    _state       "active" | "moving" | "tombstone"
    _prev        bytes | null                 sha256 of the previous record (check-and-set chain)
    _from        str | null                   previous host peer id
    _kst         int                          key-state index, 0 for did:key
    _addrs       [str]                        the host's listen multiaddrs (…/p2p/<peer id>)
    _host_sig    bytes                        engine countersignature

Rule 1: the pico key signs ``"ipns-signature:" ‖ data`` (signatureV2).
Rule 2: the host engine signs ``"p2pico-host:" ‖ DAG-CBOR(data without _host_sig)``;
        an ``active`` or ``moving`` record without a valid host signature is rejected.
Rule 3: order is (_kst, Sequence, Validity); same _kst and Sequence with other
        bytes is equivocation, resolved to the lowest record hash and reported.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from dag import cbor
from dag.cid import CIDError, decode_varint, encode_varint
from dag.did import (
    InvalidDid,
    InvalidPeerId,
    Keypair,
    public_key_from_did,
    public_key_from_peer_id,
    verify,
)

# An IPNS record must not exceed 10 KiB (ipns-record.md, "Record Size Limit").
MAX_RECORD_SIZE: Final = 10 * 1024
# Validity window: a host republishes well before this (did-routing.md §2.6).
DEFAULT_VALIDITY: Final = _dt.timedelta(hours=24)
# Cache hint: stale caches heal within a minute without a push.
DEFAULT_TTL_NS: Final = 60 * 1_000_000_000

_PICO_DOMAIN: Final = b"ipns-signature:"
_HOST_DOMAIN: Final = b"p2pico-host:"
_STATES: Final = ("active", "moving", "tombstone")
# A host lists at most this many addresses, each at most 256 bytes.
MAX_ADDRS: Final = 16

State = Literal["active", "moving", "tombstone"]


RejectKind = Literal["forged", "expired", "malformed"]


class InvalidRecord(ValueError):
    """A location record that fails a check; the message says which.

    ``kind`` sorts the failures for the mesh's rejection counters: ``forged`` (a pico
    or host signature that does not verify), ``expired``, or ``malformed`` (anything
    else: size, encoding, a missing or mistyped field).
    """

    def __init__(self, message: str, kind: RejectKind = "malformed") -> None:
        super().__init__(message)
        self.kind: RejectKind = kind


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """A verified location record; ``raw`` is the exact protobuf bytes that were checked."""

    did: str
    host: str
    seq: int
    state: State
    validity: _dt.datetime
    ttl_ns: int
    prev: bytes | None
    from_host: str | None
    kst: int
    addrs: tuple[str, ...]
    raw: bytes

    @property
    def hash(self) -> bytes:
        """sha256 of the record bytes; what a successor names in ``_prev``."""
        return hashlib.sha256(self.raw).digest()

    def order_key(self) -> tuple[int, int, _dt.datetime]:
        return (self.kst, self.seq, self.validity)


# -- protobuf framing of IpnsEntry (only fields 8 and 9 are written) ----------


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    try:
        return decode_varint(buf, i)
    except CIDError as e:
        raise InvalidRecord(str(e)) from e


def _entry(signature: bytes, data: bytes) -> bytes:
    return (
        b"\x42"
        + encode_varint(len(signature))
        + signature  # field 8, wire type 2
        + b"\x4a"
        + encode_varint(len(data))
        + data  # field 9, wire type 2
    )


def _parse_entry(raw: bytes) -> tuple[bytes, bytes]:
    """Return (signatureV2, data); unknown fields (the V1 legacy ones) are skipped."""
    fields: dict[int, bytes] = {}
    i = 0
    while i < len(raw):
        key, i = _read_varint(raw, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(raw, i)
        elif wire == 2:
            length, i = _read_varint(raw, i)
            if i + length > len(raw):
                raise InvalidRecord(f"field {field} runs past the end of the record")
            fields[field] = raw[i : i + length]
            i += length
        else:
            raise InvalidRecord(f"unsupported protobuf wire type {wire} at offset {i}")
    if 8 not in fields or 9 not in fields:
        raise InvalidRecord("record lacks signatureV2 or data")
    return fields[8], fields[9]


# -- building ------------------------------------------------------------------


def _rfc3339(t: _dt.datetime) -> bytes:
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


def _parse_rfc3339(b: bytes) -> _dt.datetime:
    try:
        return _dt.datetime.strptime(b.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidRecord(f"Validity is not an RFC 3339 UTC time: {b!r}") from e


def build_record(
    pico: Keypair,
    host: Keypair,
    *,
    seq: int,
    state: State = "active",
    prev: LocationRecord | None = None,
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_VALIDITY,
    ttl_ns: int = DEFAULT_TTL_NS,
    addrs: Sequence[str] = (),
) -> bytes:
    """Sign a record saying ``host`` hosts ``pico`` (both keys are needed: Rules 1 and 2)."""
    now = now or _dt.datetime.now(_dt.UTC)
    data: dict[str, object] = {
        "Value": f"/p2p/{host.peer_id}".encode(),
        "Sequence": seq,
        "Validity": _rfc3339(now + validity),
        "ValidityType": 0,
        "TTL": ttl_ns,
        "_did": pico.did,
        "_state": state,
        "_prev": prev.hash if prev else None,
        "_from": prev.host if prev else None,
        "_kst": 0,
        "_addrs": list(addrs),
    }
    data["_host_sig"] = host.sign(_HOST_DOMAIN + cbor.encode(data))
    encoded = cbor.encode(data)
    return _entry(pico.sign(_PICO_DOMAIN + encoded), encoded)


# -- checking ------------------------------------------------------------------


def _get(data: dict[str, object], key: str, kind: type | tuple[type, ...]) -> object:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise InvalidRecord(f"field {key} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def parse_record(raw: bytes, *, now: _dt.datetime | None = None) -> LocationRecord:
    """Check every rule and return the record; raise InvalidRecord naming the first failure."""
    if len(raw) > MAX_RECORD_SIZE:
        raise InvalidRecord(f"record is {len(raw)} bytes, over the {MAX_RECORD_SIZE}-byte limit")
    signature, data_bytes = _parse_entry(raw)
    try:
        data = cbor.decode(data_bytes)
    except cbor.DagCborError as e:
        raise InvalidRecord(f"data is not strict DAG-CBOR: {e}") from e
    if not isinstance(data, dict):
        raise InvalidRecord("data is not a map")
    did = _get(data, "_did", str)
    assert isinstance(did, str)
    try:
        pico_key = public_key_from_did(did)
    except InvalidDid as e:
        raise InvalidRecord(f"_did: {e}") from e
    if not verify(pico_key, _PICO_DOMAIN + data_bytes, signature):
        raise InvalidRecord(f"pico signature does not verify for {did}", "forged")

    value = _get(data, "Value", bytes)
    assert isinstance(value, bytes)
    if not value.startswith(b"/p2p/"):
        raise InvalidRecord(f"Value is not /p2p/<peer id>: {value[:60]!r}")
    host = value[5:].decode(errors="replace")
    try:
        host_key = public_key_from_peer_id(host)
    except InvalidPeerId as e:
        raise InvalidRecord(f"Value: {e}") from e
    state = _get(data, "_state", str)
    if state not in _STATES:
        raise InvalidRecord(f"_state must be one of {', '.join(_STATES)}, not {state!r}")
    host_sig = data.get("_host_sig")
    if state != "tombstone" or host_sig is not None:
        if not isinstance(host_sig, bytes):
            raise InvalidRecord(
                "an active record needs the host's countersignature (_host_sig)", "forged"
            )
        unsigned = {k: v for k, v in data.items() if k != "_host_sig"}
        if not verify(host_key, _HOST_DOMAIN + cbor.encode(unsigned), host_sig):
            raise InvalidRecord(f"host countersignature does not verify for {host}", "forged")

    seq = _get(data, "Sequence", int)
    ttl = _get(data, "TTL", int)
    kst = _get(data, "_kst", int)
    assert isinstance(seq, int)
    assert isinstance(ttl, int)
    assert isinstance(kst, int)
    if data.get("ValidityType") != 0:
        raise InvalidRecord("ValidityType must be 0 (EOL)")
    validity_raw = _get(data, "Validity", bytes)
    assert isinstance(validity_raw, bytes)
    validity = _parse_rfc3339(validity_raw)
    if validity <= (now or _dt.datetime.now(_dt.UTC)):
        raise InvalidRecord(f"record expired at {validity.isoformat()}", "expired")
    prev = data.get("_prev")
    if prev is not None and not isinstance(prev, bytes):
        raise InvalidRecord("_prev must be bytes or null")
    addrs = data.get("_addrs", [])
    if (
        not isinstance(addrs, list)
        or len(addrs) > MAX_ADDRS
        or not all(isinstance(a, str) and a.startswith("/") and len(a) <= 256 for a in addrs)
    ):
        raise InvalidRecord(f"_addrs must be a list of at most {MAX_ADDRS} multiaddr strings")
    from_host = data.get("_from")
    if from_host is not None and not isinstance(from_host, str):
        raise InvalidRecord("_from must be a string or null")
    return LocationRecord(
        did=did,
        host=host,
        seq=seq,
        state=state,  # checked against _STATES above
        validity=validity,
        ttl_ns=ttl,
        prev=prev,
        from_host=from_host,
        kst=kst,
        addrs=tuple(addrs),
        raw=raw,
    )


Verdict = Literal["newer", "same", "older", "equivocation"]


def compare(new: LocationRecord, old: LocationRecord) -> Verdict:
    """How ``new`` relates to the record already held for the same DID (Rule 3)."""
    if new.raw == old.raw:
        return "same"
    if (new.kst, new.seq) == (old.kst, old.seq):
        return "equivocation"
    return "newer" if new.order_key() > old.order_key() else "older"


def pick_equivocation(a: LocationRecord, b: LocationRecord) -> LocationRecord:
    """Deterministic choice between two equivocating records: the lowest record hash."""
    return a if a.hash <= b.hash else b
