"""A pico's state as a DAG of blocks (block.py) in a store (store.py); head.py signs its root CID."""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NoReturn, TypeVar

from dag import cbor, hamt
from dag.block import Block
from dag.cid import CID, DAG_CBOR, RAW
from dag.store import BlockStore, MissingBlock

STATE_VERSION: Final = 1
_T = TypeVar("_T")

# A ruleset's entity map is stored inline in its ruleset block while it is small, and as an
# IPLD HAMT (dag/hamt.py) whose root the block links to once it has more than ENT_HAMT_ENTRIES
# entries or its inline encoding would exceed ENT_HAMT_BYTES: about 1k entries or half the
# 256 KiB block limit (ipld.md §7), leaving room for the rest of the block (rules, source link).
# The choice depends on the content only, so equal states give equal CIDs.
ENT_HAMT_ENTRIES: Final = 1000
ENT_HAMT_BYTES: Final = 128 * 1024
# An entity value whose encoding exceeds this goes to its own block; its slot holds {"/": CID}
# (DAG-JSON's link shape).  Inside a HAMT the limit is hamt.MAX_VALUE_BYTES (200 B), which keeps
# every HAMT node under 256 KiB.
VALUE_LINK_BYTES: Final = 16 * 1024
# No block we write may exceed this (the py-libp2p message limit, ipld.md §7).
MAX_BLOCK: Final = 256 * 1024
_LINK_KEY: Final = "/"


class InvalidState(ValueError):
    """A state block is missing fields or has the wrong shape."""


class ValueTooLarge(InvalidState):
    """An entity value whose block alone would exceed MAX_BLOCK."""


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


def state_blocks(state: PicoState, store: BlockStore | None = None) -> tuple[Block, list[Block]]:
    """Encode `state`; return (root block, all blocks including the root).

    With `store`, a large entity map (a HAMT) last written or read through this module in
    that store is updated in place: only its changed paths are encoded and returned, as the
    rest is already in the store.  Without it, every block of the state is returned.
    """
    blocks: list[Block] = []
    entries = []
    for rs in state.rulesets:
        src = _source_block(rs.source)
        extra: list[Block] = []
        ent = _ent_field(state.did, rs, store, extra)
        body: dict[str, object] = {"rid": rs.rid, "src": src.cid, "ent": ent}
        if rs.rules:  # absent when empty, so rulesets without stateful rules keep their CIDs
            body["rules"] = dict(rs.rules)
        rs_block = Block.encode(body)
        blocks += (src, rs_block, *extra)
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
    root, blocks = state_blocks(state, store)
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
        rulesets.append(_read_ruleset(store, did, rid, rs_cid))
    ch_cid = _field(value, "channels", CID, where)
    where = f"channels block {ch_cid}"
    records = _dict(_load(store, ch_cid, DAG_CBOR, "channels"), where)
    channels = {eci: _dict(rec, f"{where}, channel {eci!r}") for eci, rec in records.items()}
    meta = _field(value, "meta", dict, f"state root {root}")
    return PicoState(did=did, rulesets=tuple(rulesets), channels=channels, meta=meta)


def _read_ruleset(store: BlockStore, did: str, rid: str, cid: CID) -> RulesetState:
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
    ent_field = value.get("ent")
    if isinstance(ent_field, CID):
        try:
            slots = hamt.to_dict(store, ent_field)
        except hamt.HamtError as exc:
            _bad(where, f"entity map: {exc}")
    else:
        slots = _field(value, "ent", dict, where)
    ent = {name: _resolve(store, slot, f"{where}, entity {name!r}") for name, slot in slots.items()}
    if isinstance(ent_field, CID):
        _remember(store, did, rid, ent, ent_field)
    return RulesetState(rid=rid, source=source, ent=ent, rules=rules)


# -- entity maps: inline or HAMT, large values linked -------------------------------------


def _is_link_slot(v: object) -> bool:
    return type(v) is dict and len(v) == 1 and _LINK_KEY in v


def _slot(rid: str, name: str, value: object, limit: int, out: list[Block]) -> tuple[object, int]:
    """The stored form of one value and its encoded size; a linked value's block goes to out."""
    data = cbor.encode(value)
    # A value shaped like a link slot is always linked, so a slot of that shape is never data.
    if len(data) <= limit and not _is_link_slot(value):
        return value, len(data)
    block = Block.encode(value)
    if len(block.data) > MAX_BLOCK:
        raise ValueTooLarge(
            f"entity {rid}:{name} is {len(block.data)} bytes encoded; a block may hold {MAX_BLOCK}"
        )
    out.append(block)
    link = {_LINK_KEY: block.cid}
    return link, len(cbor.encode(link))


def _resolve(store: BlockStore, slot: object, where: str) -> object:
    if _is_link_slot(slot):
        assert isinstance(slot, dict)
        cid = slot[_LINK_KEY]
        if isinstance(cid, CID):
            return _load(store, cid, DAG_CBOR, where)
    return slot


def _ent_field(did: str, rs: RulesetState, store: BlockStore | None, out: list[Block]) -> object:
    """The `ent` field of a ruleset block: an inline map, or the CID of a HAMT."""
    ent = rs.ent
    if len(ent) <= ENT_HAMT_ENTRIES:
        linked: list[Block] = []
        inline: dict[str, object] = {}
        size = 0
        for name, value in ent.items():
            inline[name], n = _slot(rs.rid, name, value, VALUE_LINK_BYTES, linked)
            size += n + len(name.encode("utf-8")) + 9  # key and value headers, generously
            if size > ENT_HAMT_BYTES:
                break
        else:
            out += linked
            return inline
    if store is not None:
        root = _update_hamt(store, did, rs, out)
        if root is not None:
            return root
    slots: dict[str, object] = {}
    for name, value in ent.items():
        slots[name], _ = _slot(rs.rid, name, value, hamt.MAX_VALUE_BYTES, out)
    root_block, nodes = hamt.build_blocks(slots)
    out += nodes
    if store is not None:
        _remember(store, did, rs.rid, ent, root_block.cid)
    return root_block.cid


# The last HAMT written or read per (store, pico, rid), with a copy of its entity map: the next
# commit then diffs the maps and rewrites only the changed paths (a handful of blocks) instead
# of re-encoding a map of, say, a million entries.
_MEMO_SIZE: Final = 8
_memo: weakref.WeakKeyDictionary[
    BlockStore, OrderedDict[tuple[str, str], tuple[dict[str, object], CID]]
]
_memo = weakref.WeakKeyDictionary()
_MISSING: Final = object()


def _remember(store: BlockStore, did: str, rid: str, ent: Mapping[str, object], root: CID) -> None:
    try:
        per_store = _memo.setdefault(store, OrderedDict())
    except TypeError:  # a store that cannot be weakly referenced: no memo
        return
    per_store[(did, rid)] = (dict(ent), root)
    per_store.move_to_end((did, rid))
    while len(per_store) > _MEMO_SIZE:
        per_store.popitem(last=False)


def _same(a: object, b: object) -> bool:
    return a is b or (a == b and cbor.encode(a) == cbor.encode(b))  # 1 == 1.0, yet they differ


def _update_hamt(store: BlockStore, did: str, rs: RulesetState, out: list[Block]) -> CID | None:
    try:
        per_store = _memo.get(store)
    except TypeError:
        return None
    hit = per_store.get((did, rs.rid)) if per_store is not None else None
    if hit is None:
        return None
    old, root = hit
    ent = rs.ent
    changes: list[tuple[str, object]] = []
    linked: list[Block] = []
    common = 0
    for name, value in ent.items():
        prev = old.get(name, _MISSING)
        if prev is value:  # the common case, checked first: a commit copies unchanged values
            common += 1
            continue
        if prev is not _MISSING:
            common += 1
            if _same(prev, value):
                continue
        slot, _ = _slot(rs.rid, name, value, hamt.MAX_VALUE_BYTES, linked)
        changes.append((name, slot))
    if common != len(old):
        changes += [(name, hamt.DELETE) for name in old.keys() - ent.keys()]
    if not changes:
        return root
    try:
        new_root, nodes = hamt.update_blocks(store, root, changes)
    except MissingBlock:  # the store lost the old tree: rebuild
        return None
    out += linked
    out += nodes
    _remember(store, did, rs.rid, ent, new_root.cid)
    return new_root.cid


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
