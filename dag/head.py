"""Signed head blocks (UCAN-1.0-shaped envelope) over a state root from state.py, keys from did.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn

from dag import cbor
from dag.block import Block
from dag.cid import CID, DAG_CBOR
from dag.did import InvalidDid, Keypair, public_key_from_did, verify

# varsig header: varsig 0x34, version 1, Ed25519 key (0xed), Ed25519 (0xed), sha2-512 (0x13),
# payload encoding DAG-CBOR (0x71) -- the UCAN 1.0 spec's example header for EdDSA.
VARSIG_ED25519_DAG_CBOR: Final = bytes.fromhex("3401ed01ed011371")
HEAD_TAG: Final = "p2pico/head@1.0.0"
# seq and ts must stay exact in JS engines.
MAX_SAFE_INT: Final = 2**53 - 1
# canonical array(2) head + bytes(64) head: the signed payload is everything after the signature.
_ENVELOPE_PREFIX: Final = b"\x82\x58\x40"
_BODY_KEYS: Final = frozenset({"pico", "seq", "prev", "state", "ts", "cause"})


class InvalidHead(ValueError):
    """A head block (or chain of them) is malformed, wrongly signed or broken."""


@dataclass(frozen=True, slots=True)
class Head:
    """A verified head: pico `pico` committed state `state` as its `seq`-th head."""

    pico: str
    seq: int
    prev: CID | None
    state: CID
    ts: int
    cause: CID | None
    cid: CID


def _safe_int(name: str, v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_SAFE_INT:
        raise InvalidHead(f"{name} must be an int in 0..2**53-1, got {v!r}")
    return v


def _cid(name: str, v: object) -> CID:
    if isinstance(v, CID):
        return v
    raise InvalidHead(f"{name} must be a CID, got {v!r}")


def _opt_cid(name: str, v: object) -> CID | None:
    return None if v is None else _cid(name, v)


def _check_genesis(seq: int, prev: CID | None) -> None:
    if (seq == 0) != (prev is None):
        raise InvalidHead(
            f"seq {seq} with prev {prev}: exactly the genesis head (seq 0) has no prev"
        )


def sign_head(
    keypair: Keypair, *, seq: int, prev: CID | None, state: CID, ts: int, cause: CID | None = None
) -> Block:
    """Build and sign a head block for `keypair`'s pico."""
    if not (  # the checks below in one expression (a commit's path); they say what is wrong
        type(seq) is int
        and type(ts) is int
        and 0 <= seq <= MAX_SAFE_INT
        and 0 <= ts <= MAX_SAFE_INT
        and isinstance(state, CID)
        and (cause is None or isinstance(cause, CID))
        and (prev is None if seq == 0 else isinstance(prev, CID))
    ):
        _safe_int("seq", seq)
        _safe_int("ts", ts)
        _opt_cid("prev", prev)
        _cid("state", state)
        _opt_cid("cause", cause)
        _check_genesis(seq, prev)
        raise AssertionError("sign_head: the fast check and the checks disagree")
    payload = head_payload(keypair.did, seq=seq, prev=prev, state=state, ts=ts, cause=cause)
    # [sig, payload] encoded: array(2), bytes(64) header, the signature, the payload's bytes
    # (the same bytes Block.encode would give, without encoding the payload twice).
    return Block._spliced(keypair.sign_spliced(_ENVELOPE_PREFIX, payload))


# The payload {"h": varsig, HEAD_TAG: body} with its keys in canonical order (by encoded length,
# then bytewise: "h" before the tag; in the body ts, seq, pico, prev, cause, state).
_PAYLOAD_PREFIX: Final = b"".join(
    (
        cbor.map_head(2),
        cbor.encode("h"),
        cbor.encode(VARSIG_ED25519_DAG_CBOR),
        cbor.encode(HEAD_TAG),
        cbor.map_head(len(_BODY_KEYS)),
        cbor.encode("ts"),
    )
)
_K_SEQ: Final = cbor.encode("seq")
_K_PICO: Final = cbor.encode("pico")
_K_PREV: Final = cbor.encode("prev")
_K_CAUSE: Final = cbor.encode("cause")
_K_STATE: Final = cbor.encode("state")
_NULL: Final = cbor.encode(None)


@functools.lru_cache(maxsize=1024)
def _encoded_did(did: str) -> bytes:
    return cbor.encode_str(did)


def head_payload(
    pico: str, *, seq: int, prev: CID | None, state: CID, ts: int, cause: CID | None
) -> bytes:
    """The DAG-CBOR bytes of a head's signed payload: ``cbor.encode({"h":
    VARSIG_ED25519_DAG_CBOR, HEAD_TAG: {...}})``, spliced from pre-encoded parts when the
    encoder is Python's (tests compare the two); the arguments are not checked here
    (sign_head checks them).
    """
    if cbor.NATIVE:
        body = {"ts": ts, "seq": seq, "pico": pico, "prev": prev, "cause": cause, "state": state}
        return cbor.encode({"h": VARSIG_ED25519_DAG_CBOR, HEAD_TAG: body})
    return b"".join(
        (
            _PAYLOAD_PREFIX,
            cbor.encode_uint(ts),
            _K_SEQ,
            cbor.encode_uint(seq),
            _K_PICO,
            _encoded_did(pico),
            _K_PREV,
            _NULL if prev is None else cbor.encode_cid(prev),
            _K_CAUSE,
            _NULL if cause is None else cbor.encode_cid(cause),
            _K_STATE,
            cbor.encode_cid(state),
        )
    )


def looks_like_head(data: bytes) -> bool:
    """Whether block bytes begin as a head block does (the envelope and the payload's
    fixed start): a cheap filter before ``verify_head`` when scanning many blocks."""
    return data[:3] == _ENVELOPE_PREFIX and data[67 : 67 + len(_PAYLOAD_PREFIX)] == _PAYLOAD_PREFIX


def head_seq_prev(block: Block) -> tuple[int, CID | None]:
    """A head block's seq and prev, read without verifying it (InvalidHead if it has no
    such shape): for walking a chain whose newest head was verified."""
    return _body(block)


def verify_head(block: Block) -> Head:
    """Check shape, header, signer and signature of a head block; return its body."""
    try:
        return _verify(block)
    except InvalidHead as exc:
        raise InvalidHead(f"head {block.cid}: {exc}") from None


def _verify(block: Block) -> Head:
    def bad(reason: str) -> NoReturn:
        raise InvalidHead(reason)

    if block.cid.codec != DAG_CBOR:
        bad(f"codec must be dag-cbor, not 0x{block.cid.codec:x}")
    value = block.value
    if type(value) is not list or len(value) != 2:
        bad("must be a 2-element array [signature, payload]")
    sig, payload = value
    if type(sig) is not bytes or len(sig) != 64:
        bad("signature must be 64 bytes")
    if type(payload) is not dict or set(payload) != {"h", HEAD_TAG}:
        bad(f'payload must be a map with exactly the keys "h" and "{HEAD_TAG}"')
    if payload["h"] != VARSIG_ED25519_DAG_CBOR:
        bad(f"unsupported varsig header {payload['h']!r}")
    body = payload[HEAD_TAG]
    if type(body) is not dict or set(body) != _BODY_KEYS:
        bad(f"body must be a map with exactly the keys {sorted(_BODY_KEYS)}")
    pico = body["pico"]
    if type(pico) is not str:
        bad("pico must be a did:key string")
    seq = _safe_int("seq", body["seq"])
    ts = _safe_int("ts", body["ts"])
    prev = _opt_cid("prev", body["prev"])
    state = _cid("state", body["state"])
    cause = _opt_cid("cause", body["cause"])
    _check_genesis(seq, prev)
    try:
        key = public_key_from_did(pico)
    except InvalidDid as exc:
        bad(f"pico is not an Ed25519 did:key: {exc}")
    # Block.decode/encode guarantee canonical bytes, so the signed payload is a slice of them.
    data = block.data
    if data[:3] != _ENVELOPE_PREFIX:  # pragma: no cover - implied by the checks above
        bad("not a canonical envelope")
    if not verify(key, data[67:], sig):
        bad(f"signature does not verify for {pico}")
    return Head(pico=pico, seq=seq, prev=prev, state=state, ts=ts, cause=cause, cid=block.cid)


def verify_chain(get: Callable[[CID], Block | None], head_cid: CID) -> list[Head]:
    """Verify the chain from `head_cid` back to genesis; return it oldest first."""
    return _chain(get, head_cid, truncated_ok=False)[0]


def verify_chain_tail(
    get: Callable[[CID], Block | None], head_cid: CID
) -> tuple[list[Head], CID | None]:
    """Like verify_chain, but a missing older head ends the chain instead of failing.

    Returns the heads that are present, oldest first, and the CID of the first missing `prev`
    (None when the chain reaches genesis).  After a GC with a retention window
    (dag/gc.py) the heads before the window are gone; every head kept still verifies.
    """
    return _chain(get, head_cid, truncated_ok=True)


def chain_gap(get: Callable[[CID], Block | None], head_cid: CID) -> tuple[int, CID] | None:
    """Where a history held in a store ends short of genesis: (oldest seq held, its missing prev).

    None when the chain reaches genesis.  Follows `prev` links without checking signatures
    (verify_chain_tail does that): it only tells a walk which missing block is expected, so a
    truncated history (dag/gc.py) can still be exported and moved.
    """
    cid: CID | None = head_cid
    seq = -1
    while cid is not None:
        block = get(cid)
        if block is None:
            return (seq, cid) if seq >= 0 else None
        try:
            body = _body(block)
        except InvalidHead:
            return None  # not a head: verification will say why
        seq, cid = body
    return None


def _body(block: Block) -> tuple[int, CID | None]:
    value = block.value
    if type(value) is not list or len(value) != 2 or type(value[1]) is not dict:
        raise InvalidHead("not a head envelope")
    body = value[1].get(HEAD_TAG)
    if type(body) is not dict:
        raise InvalidHead("not a head envelope")
    seq, prev = body.get("seq"), body.get("prev")
    if type(seq) is not int or not (prev is None or isinstance(prev, CID)):
        raise InvalidHead("not a head envelope")
    return seq, prev


def _chain(
    get: Callable[[CID], Block | None], head_cid: CID, *, truncated_ok: bool
) -> tuple[list[Head], CID | None]:
    chain: list[Head] = []
    cid: CID | None = head_cid
    while cid is not None:
        want = f"seq {chain[-1].seq - 1}" if chain else "the newest head"
        block = get(cid)
        if block is None:
            if truncated_ok and chain:
                chain.reverse()
                return chain, cid
            raise InvalidHead(f"missing head block {cid} ({want})")
        if block.cid != cid:
            raise InvalidHead(f"asked for head {cid} ({want}) but got block {block.cid}")
        try:
            head = verify_head(block)
        except InvalidHead as exc:
            raise InvalidHead(f"{exc} ({want})") from None
        if chain:
            newer = chain[-1]
            if head.pico != newer.pico:
                raise InvalidHead(
                    f"head {cid} (seq {head.seq}) is signed by {head.pico}, "
                    f"but head {newer.cid} (seq {newer.seq}) by {newer.pico}"
                )
            if head.seq != newer.seq - 1:
                raise InvalidHead(
                    f"broken chain: head {newer.cid} (seq {newer.seq}) links to {cid} "
                    f"with seq {head.seq}, expected {newer.seq - 1}"
                )
        chain.append(head)
        cid = head.prev
    chain.reverse()
    return chain, None


def detect_fork(a: Head, b: Head) -> bool:
    """True when `a` and `b` prove equivocation: same pico and seq, different heads."""
    return a.pico == b.pico and a.seq == b.seq and a.cid != b.cid
