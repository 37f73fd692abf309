"""Messages of p2pico's libp2p protocols: DAG-CBOR maps checked field by field (pure codec).

Each request and response travels as one length-prefixed frame (protocols.framing),
carried by p2pico.net on a persistent request stream (protocols.rpc names the
protocol per request) or on a fresh stream; p2pico.mesh is the trio driver.  The
protocols:

    /p2pico/msg/1.0.0     event | query | whois-eci | move → Reply
    /p2pico/loc/1.0.0     sync | locate | push        → {"records": [bytes]}
    /p2pico/move/1.0.0    prefetch | propose | drained → Reply
    /p2pico/blocks/1.0.0  manifest                    → {"cids": [CID]}
                          want                        → {"blocks": [bytes | null]}
    /p2pico/explore/1.0.0 summary                     → SummaryReply (p2pico.explorer)
                          about | history | manage    → Reply

A decoder never trusts its input: a missing or mistyped field raises
MessageError naming the field, which the driver turns into an error reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from dag import cbor
from dag.cid import CID
from dag.did import InvalidDid, Keypair, public_key_from_did, verify

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


# Messages between picos are signed by the sending pico's DID key over this prefix and
# the request's signed part (everything but the routing fields ``hops`` and ``forwarded``).
MSG_SIG_DOMAIN: Final = b"p2pico-msg:"
# A signed request whose time is further than this from the receiver's clock is refused.
MAX_CLOCK_SKEW_MS: Final = 5 * 60 * 1000
# A message id is at most this long (sender id, engine boot, counter).
MAX_MID: Final = 256


@dataclass(frozen=True, slots=True)
class EventRequest:
    """An event for the pico ``target.did``.

    ``mid`` is the sender-chosen message id: a retry carries the same one, and the pico's
    dedup window answers a duplicate with the first result.  ``sender``, ``time_ms`` and
    ``sig`` are set on a message from another pico: its DID, when it was signed, and the
    Ed25519 signature by that DID's key over ``signed_part`` (see ``sign_request``).
    """

    target: Target
    domain: str
    type: str
    attrs: dict[str, object] = field(default_factory=dict)
    eid: str = "none"
    hops: int = 0
    forwarded: bool = False  # sent by the previous host while draining its queue after a move
    mid: str = ""
    time_ms: int = 0
    sender: str | None = None
    sig: bytes | None = None

    def signed_part(self) -> dict[str, object]:
        return {
            "op": "event",
            **self.target.to_value(),
            "domain": self.domain,
            "type": self.type,
            "attrs": self.attrs,
            "eid": self.eid,
            "mid": self.mid,
            "time": self.time_ms,
            "from": self.sender,
        }

    def encode(self) -> bytes:
        return cbor.encode(
            {**self.signed_part(), "hops": self.hops, "forwarded": self.forwarded, "sig": self.sig}
        )


@dataclass(frozen=True, slots=True)
class QueryRequest:
    target: Target
    rid: str
    name: str
    args: dict[str, object] = field(default_factory=dict)
    hops: int = 0
    forwarded: bool = False
    mid: str = ""
    time_ms: int = 0
    sender: str | None = None
    sig: bytes | None = None

    def signed_part(self) -> dict[str, object]:
        return {
            "op": "query",
            **self.target.to_value(),
            "rid": self.rid,
            "name": self.name,
            "args": self.args,
            "mid": self.mid,
            "time": self.time_ms,
            "from": self.sender,
        }

    def encode(self) -> bytes:
        return cbor.encode(
            {**self.signed_part(), "hops": self.hops, "forwarded": self.forwarded, "sig": self.sig}
        )


PicoRequest = EventRequest | QueryRequest


class BadSignature(MessageError):
    """A signed request that does not verify, or is too old or too new; the text says why."""


def sign_request(request: PicoRequest, key: Keypair, now_ms: int) -> PicoRequest:
    """``request`` from the pico ``key``, signed at ``now_ms`` (epoch milliseconds)."""
    unsigned = replace(request, sender=key.did, time_ms=now_ms, sig=None)
    signature = key.sign(MSG_SIG_DOMAIN + cbor.encode(unsigned.signed_part()))
    return replace(unsigned, sig=signature)


def check_signature(request: PicoRequest, now_ms: int) -> str | None:
    """The verified sender DID of ``request`` (None when it is unsigned); BadSignature if
    the signature, the sender's DID or the time is wrong.  Unsigned requests come from
    outside the mesh's picos (HTTP, a move's hand-over of such a request): their ECI is
    their capability, and they may use no family channel."""
    if request.sender is None and request.sig is None:
        return None
    if request.sender is None or request.sig is None:
        raise BadSignature("a signed message needs both 'from' and 'sig'")
    try:
        key = public_key_from_did(request.sender)
    except InvalidDid as e:
        raise BadSignature(f"'from' is not a did:key: {e}") from None
    if not verify(key, MSG_SIG_DOMAIN + cbor.encode(request.signed_part()), request.sig):
        raise BadSignature(f"signature does not verify for {request.sender}")
    skew = request.time_ms - now_ms
    if abs(skew) > MAX_CLOCK_SKEW_MS:
        raise BadSignature(
            f"signed {abs(skew) // 1000} s in the {'future' if skew > 0 else 'past'}"
            f" (at most {MAX_CLOCK_SKEW_MS // 1000} s either way)"
        )
    return request.sender


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
    if op in ("event", "query"):
        mid = _opt_str(msg, "mid") or ""
        if len(mid) > MAX_MID:
            raise MessageError(f"field 'mid' is longer than {MAX_MID} characters")
        sig_field = _field(msg, "sig", bytes, optional=True)
        sig = sig_field if isinstance(sig_field, bytes) else None
        time_ms, sender = _int(msg, "time"), _opt_str(msg, "from")
    if op == "event":
        return EventRequest(
            Target.from_value(msg),
            _str(msg, "domain"),
            _str(msg, "type"),
            _map(msg, "attrs"),
            _opt_str(msg, "eid") or "none",
            _int(msg, "hops"),
            forwarded,
            mid=mid,
            time_ms=time_ms,
            sender=sender,
            sig=sig,
        )
    if op == "query":
        return QueryRequest(
            Target.from_value(msg),
            _str(msg, "rid"),
            _str(msg, "name"),
            _map(msg, "args"),
            _int(msg, "hops"),
            forwarded,
            mid=mid,
            time_ms=time_ms,
            sender=sender,
            sig=sig,
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


# At most this many records in one push (a batch of what one peer has not been sent yet).
MAX_PUSH: Final = 256


def encode_loc_push(records: list[bytes]) -> bytes:
    """Records the sender just took, for a peer to take too; the reply (``{"records": []}``)
    is the acknowledgement."""
    return cbor.encode({"op": "push", "records": records})


def decode_loc_push(data: bytes) -> list[bytes] | None:
    """The records of a push; None when ``data`` is another /p2pico/loc request."""
    msg = _decode_map(data)
    if msg.get("op") != "push":
        return None
    records = _field(msg, "records", list)
    assert isinstance(records, list)
    if len(records) > MAX_PUSH:
        raise MessageError(f"a push carries at most {MAX_PUSH} records, got {len(records)}")
    if not all(isinstance(r, bytes) for r in records):
        raise MessageError("every entry of 'records' must be bytes")
    return records


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


@dataclass(frozen=True, slots=True)
class MovePrefetch:
    """Source → target, before a move: copy the blocks of ``head`` now, while the pico
    still serves (pre-copy), so the move itself, with the pico paused, only fetches what
    changed since.  Carries no key and changes nothing: the target may ignore it."""

    did: str
    head: CID

    def encode(self) -> bytes:
        return cbor.encode({"op": "prefetch", "did": self.did, "head": self.head})


def decode_move_request(data: bytes) -> MovePropose | MoveDrained | MovePrefetch:
    msg = _decode_map(data)
    op = _str(msg, "op")
    if op == "drained":
        return MoveDrained(_str(msg, "did"))
    if op == "prefetch":
        prefetch_head = _field(msg, "head", CID)
        assert isinstance(prefetch_head, CID)
        return MovePrefetch(_str(msg, "did"), prefetch_head)
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
    the requester verifies every block against its CID and walks the DAG itself.

    ``since``: the head whose blocks the requester copied ahead of the move (and still
    holds, verified); the answer may then leave out everything reachable from it."""

    did: str
    root: CID
    since: CID | None = None

    def encode(self) -> bytes:
        since = {} if self.since is None else {"since": self.since}
        return cbor.encode({"op": "manifest", "did": self.did, "root": self.root, **since})


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
        since = _field(msg, "since", CID, optional=True)
        assert isinstance(root, CID)
        assert since is None or isinstance(since, CID)
        return ManifestRequest(_str(msg, "did"), root, since)
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


# -- /p2pico/explore/1.0.0 (the mesh explorer, p2pico.explorer) ---------------------------

EXPLORE_PROTOCOL: Final = "/p2pico/explore/1.0.0"
# The longest a host holds a summary request open waiting for a change (long poll).
MAX_WATCH_WAIT_MS: Final = 30_000
# What an operator may change on a pico from the explorer, on its host.
MANAGE_ACTIONS: Final = ("install", "uninstall", "new-child", "del-child")


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    """The answering engine's hosted picos as map summaries.

    With the ``epoch`` and ``version`` of an earlier answer, only what changed since;
    the host may hold the request up to ``wait_ms`` until something does (a long poll).
    A different epoch (the engine restarted) gets a full answer.
    """

    epoch: str | None = None
    version: int = 0
    wait_ms: int = 0

    def encode(self) -> bytes:
        return cbor.encode(
            {"op": "summary", "epoch": self.epoch, "version": self.version, "wait": self.wait_ms}
        )


@dataclass(frozen=True, slots=True)
class AboutRequest:
    """Everything the pico page shows of one pico, answered by its host."""

    did: str
    hops: int = 0

    def encode(self) -> bytes:
        return cbor.encode({"op": "about", "did": self.did, "hops": self.hops})


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """The pico's verified head chain, newest first, at most ``limit`` heads."""

    did: str
    limit: int = 200
    hops: int = 0

    def encode(self) -> bytes:
        return cbor.encode(
            {"op": "history", "did": self.did, "limit": self.limit, "hops": self.hops}
        )


@dataclass(frozen=True, slots=True)
class ManageRequest:
    """An operator's change to a pico, run by its host between transactions.

    ``action`` is one of MANAGE_ACTIONS; ``args``: install ``{"source" | "url", "config"}``,
    uninstall ``{"rid"}``, new-child ``{"rulesets": [source or url, ...]}``, del-child ``{"did"}``.
    """

    did: str
    action: str
    args: dict[str, object] = field(default_factory=dict)
    hops: int = 0

    def encode(self) -> bytes:
        return cbor.encode(
            {
                "op": "manage",
                "did": self.did,
                "action": self.action,
                "args": self.args,
                "hops": self.hops,
            }
        )


ExploreRequest = SummaryRequest | AboutRequest | HistoryRequest | ManageRequest


def decode_explore_request(data: bytes) -> ExploreRequest:
    msg = _decode_map(data)
    op = _str(msg, "op")
    if op == "summary":
        wait = _int(msg, "wait")
        if not 0 <= wait <= MAX_WATCH_WAIT_MS:
            raise MessageError(f"field 'wait' must be 0 to {MAX_WATCH_WAIT_MS} ms, got {wait}")
        return SummaryRequest(_opt_str(msg, "epoch"), _int(msg, "version"), wait)
    if op == "about":
        return AboutRequest(_str(msg, "did"), _int(msg, "hops"))
    if op == "history":
        limit = _int(msg, "limit", 200)
        if limit < 1:
            raise MessageError(f"field 'limit' must be at least 1, got {limit}")
        return HistoryRequest(_str(msg, "did"), limit, _int(msg, "hops"))
    if op == "manage":
        action = _str(msg, "action")
        if action not in MANAGE_ACTIONS:
            raise MessageError(
                f"field 'action' must be one of {', '.join(MANAGE_ACTIONS)}, got {action!r}"
            )
        return ManageRequest(_str(msg, "did"), action, _map(msg, "args"), _int(msg, "hops"))
    raise MessageError(f"unknown op {op!r} on {EXPLORE_PROTOCOL}")


@dataclass(frozen=True, slots=True)
class SummaryReply:
    """An engine's picos for the map: ``picos`` changed (or all, when ``full``), and the
    DIDs that left it since: ``moved`` away (its record names another host) or ``deleted``."""

    epoch: str
    version: int
    full: bool
    picos: list[dict[str, object]]
    moved: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return cbor.encode(
            {
                "epoch": self.epoch,
                "version": self.version,
                "full": self.full,
                "picos": self.picos,
                "moved": self.moved,
                "deleted": self.deleted,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> SummaryReply:
        msg = _decode_map(data)
        full = _field(msg, "full", bool)
        picos = _field(msg, "picos", list)
        assert isinstance(full, bool)
        assert isinstance(picos, list)
        for i, pico in enumerate(picos):
            if not isinstance(pico, dict) or not isinstance(pico.get("did"), str):
                raise MessageError(f"'picos' entry {i} must be a map with a string 'did'")
        lists: list[list[str]] = []
        for name in ("moved", "deleted"):
            value = _field(msg, name, list)
            assert isinstance(value, list)
            if not all(isinstance(d, str) for d in value):
                raise MessageError(f"every entry of {name!r} must be a DID string")
            lists.append(value)
        return cls(_str(msg, "epoch"), _int(msg, "version"), full, picos, lists[0], lists[1])
