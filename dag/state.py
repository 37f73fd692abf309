"""A pico's state as a DAG of blocks (block.py) in a store (store.py); head.py signs its root CID."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NoReturn, TypeVar

from dag.block import Block
from dag.cid import CID, DAG_CBOR, RAW
from dag.store import BlockStore, MissingBlock

STATE_VERSION: Final = 1
_T = TypeVar("_T")


class InvalidState(ValueError):
    """A state block is missing fields or has the wrong shape."""


@dataclass(frozen=True, slots=True)
class RulesetState:
    rid: str
    source: str
    ent: Mapping[str, object] = field(default_factory=dict)
    # rule name -> state of its stateful `select when` expression (krl's rule state)
    rules: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PicoState:
    did: str
    rulesets: tuple[RulesetState, ...] = ()
    channels: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    meta: Mapping[str, object] = field(default_factory=dict)


@functools.lru_cache(maxsize=1024)
def _source_block(source: str) -> Block:
    return Block.raw(source.encode("utf-8"))


def state_blocks(state: PicoState) -> tuple[Block, list[Block]]:
    """Encode `state`; return (root block, all blocks including the root)."""
    blocks: list[Block] = []
    entries = []
    for rs in state.rulesets:
        src = _source_block(rs.source)
        body: dict[str, object] = {"rid": rs.rid, "src": src.cid, "ent": dict(rs.ent)}
        if rs.rules:  # absent when empty, so rulesets without stateful rules keep their CIDs
            body["rules"] = dict(rs.rules)
        rs_block = Block.encode(body)
        blocks += (src, rs_block)
        entries.append({"rid": rs.rid, "state": rs_block.cid})
    channels = Block.encode({eci: dict(rec) for eci, rec in state.channels.items()})
    root = Block.encode(
        {
            "v": STATE_VERSION,
            "did": state.did,
            "rulesets": entries,
            "channels": channels.cid,
            "meta": dict(state.meta),
        }
    )
    blocks += (channels, root)
    return root, blocks


def write_state(store: BlockStore, state: PicoState) -> CID:
    """Write the blocks of `state` that `store` lacks; return the root CID."""
    root, blocks = state_blocks(state)
    seen: set[CID] = set()
    new = []
    for b in blocks:
        if b.cid not in seen:
            seen.add(b.cid)
            if not store.has(b.cid):
                new.append(b)
    if new:
        store.put_many(new)
    return root.cid


def read_state(store: BlockStore, root: CID) -> PicoState:
    """Read and verify every block of the state rooted at `root`."""
    value = _dict(_load(store, root, DAG_CBOR, "state root"), f"state root {root}")
    where = f"state root {root}"
    if value.get("v") != STATE_VERSION:
        _bad(where, f"unsupported state version {value.get('v')!r}")
    did = _field(value, "did", str, where)
    rulesets = []
    for i, entry in enumerate(_field(value, "rulesets", list, where)):
        entry = _dict(entry, f"{where}, rulesets[{i}]")
        rid = _field(entry, "rid", str, f"{where}, rulesets[{i}]")
        rs_cid = _field(entry, "state", CID, f"{where}, rulesets[{i}]")
        rulesets.append(_read_ruleset(store, rid, rs_cid))
    ch_cid = _field(value, "channels", CID, where)
    where = f"channels block {ch_cid}"
    records = _dict(_load(store, ch_cid, DAG_CBOR, "channels"), where)
    channels = {eci: _dict(rec, f"{where}, channel {eci!r}") for eci, rec in records.items()}
    meta = _field(value, "meta", dict, f"state root {root}")
    return PicoState(did=did, rulesets=tuple(rulesets), channels=channels, meta=meta)


def _read_ruleset(store: BlockStore, rid: str, cid: CID) -> RulesetState:
    where = f"ruleset block {cid} ({rid})"
    value = _dict(_load(store, cid, DAG_CBOR, f"ruleset {rid}"), where)
    if _field(value, "rid", str, where) != rid:
        _bad(where, f"rid is {value['rid']!r}, but the state root lists it as {rid!r}")
    src_cid = _field(value, "src", CID, where)
    raw = _load(store, src_cid, RAW, f"source of {rid}")
    assert isinstance(raw, bytes)  # raw blocks decode to their bytes
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _bad(f"source block {src_cid} ({rid})", f"not UTF-8: {exc}")
    rules = value.get("rules", {})
    if type(rules) is not dict:
        _bad(where, f"field 'rules' must be a map, not {type(rules).__name__}")
    return RulesetState(rid=rid, source=source, ent=_field(value, "ent", dict, where), rules=rules)


def _load(store: BlockStore, cid: CID, codec: int, what: str) -> object:
    if cid.codec != codec:
        _bad(f"{what} {cid}", f"expected codec 0x{codec:x}, got 0x{cid.codec:x}")
    block = store.get_block(cid)
    if block is None:
        raise MissingBlock(cid, f" ({what})")
    return block.value


def _dict(v: object, where: str) -> dict[str, object]:
    if type(v) is not dict:
        _bad(where, f"expected a map, got {type(v).__name__}")
    return v


def _field(value: dict[str, object], name: str, kind: type[_T], where: str) -> _T:
    v = value.get(name)
    if not isinstance(v, kind):
        _bad(where, f"field {name!r} must be {kind.__name__}, got {type(v).__name__}")
    return v


def _bad(where: str, reason: str) -> NoReturn:
    raise InvalidState(f"{where}: {reason}")
