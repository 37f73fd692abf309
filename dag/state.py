"""A pico's state as a DAG of blocks (block.py) in a store (store.py); head.py signs its root CID."""

from __future__ import annotations

import bisect
import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, NoReturn, TypeVar

from dag import cbor, hamt
from dag.block import Block
from dag.cid import CID, DAG_CBOR, RAW
from dag.store import BlockStore, MissingBlock

STATE_VERSION: Final = 1
_T = TypeVar("_T")

# A ruleset's entity map is stored inline in its ruleset block while it is small, and as an
# IPLD HAMT (dag/hamt.py) whose root the block links to once it has more than ENT_HAMT_ENTRIES
# entries or its inline encoding would exceed ENT_HAMT_BYTES.  An inline map is re-encoded
# whole by every commit that changes it, a HAMT writes a path of small nodes (two or three
# blocks more, each costing a hash, a CID and a row): measured (README "Large entity maps"),
# inline is the cheaper in CPU up to about 512 small entries (6.7 KB) and about even at 1,000
# (12 KB), where the HAMT writes 2.4 KB instead.  The choice depends on the content only, so equal
# states give equal CIDs; a map crossing a threshold converts on its next commit.
ENT_HAMT_ENTRIES: Final = 512
ENT_HAMT_BYTES: Final = 12 * 1024
# The bitWidth of a HAMT made for an entity map.  A HAMT keeps the width it was made with as it
# is updated (one made at bitWidth 8, the default before, stays at 8).
ENT_HAMT_BIT_WIDTH: Final = hamt.BIT_WIDTH
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


class _Deleted:
    def __repr__(self) -> str:
        return "DELETED"


# In an Overlay's changes: the name is removed.
DELETED: Final = _Deleted()


class Overlay(Mapping[str, object]):
    """`base` seen with `changes` on top (a value, or DELETED), without copying `base`.

    A transaction's entity writes over a pico's entity map: building the next state then
    costs O(changes), not O(entries).  ``apply`` writes the changes into `base` in place.
    """

    __slots__ = ("_len", "base", "changes")

    def __init__(self, base: Mapping[str, object], changes: Mapping[str, object]) -> None:
        self.base = base
        self.changes = changes
        n = len(base)
        for name, value in changes.items():
            if name in base:
                n -= value is DELETED
            else:
                n += value is not DELETED
        self._len = n

    def __getitem__(self, name: str) -> object:
        value = self.changes.get(name, _MISSING)
        if value is _MISSING:
            return self.base[name]
        if value is DELETED:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        value = self.changes.get(name, _MISSING)  # type: ignore[call-overload]
        if value is _MISSING:
            return name in self.base
        return value is not DELETED

    def __iter__(self) -> Iterator[str]:
        changes = self.changes
        for name in self.base:
            if changes.get(name, _MISSING) is not DELETED:
                yield name
        for name, value in changes.items():
            if value is not DELETED and name not in self.base:
                yield name

    def __len__(self) -> int:
        return self._len

    def apply(self) -> dict[str, object]:
        """Write the changes into `base` (which must be a dict) and return it."""
        base = self.base
        assert isinstance(base, dict), "Overlay.apply needs a dict base"
        for name, value in self.changes.items():
            if value is DELETED:
                base.pop(name, None)
            else:
                base[name] = value
        return base


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed between the state `base` and the one being encoded (see state_blocks).

    `ent`: per rid, the entity names set or removed since `base`; a ruleset whose rid is not
    in it has the entity map it had in `base` (a ruleset that `base` lacks is encoded whole).
    `channels=False`: the channels are those of `base`.
    """

    base: CID
    ent: Mapping[str, Collection[str]] = field(default_factory=dict)
    channels: bool = True


@functools.lru_cache(maxsize=1024)
def _source_block(source: str) -> Block:
    return Block.raw(source.encode("utf-8"))


def state_blocks(
    state: PicoState, store: BlockStore | None = None, *, delta: Delta | None = None
) -> tuple[Block, list[Block]]:
    """Encode `state`; return (root block, all blocks including the root).

    With `store`, a large entity map (a HAMT) last written or read through this module in
    that store is updated in place: only its changed paths are encoded and returned, as the
    rest is already in the store.  Without it, every block of the state is returned.

    With `store` and `delta` (the state root `state` differs from, which must be in `store`,
    and what changed since), only the changed entities are encoded: O(changes), whatever the
    size of the maps.  Only blocks that `delta.base` lacks are returned.  The result is the
    same as without `delta` (same CIDs), provided `delta` tells the truth.
    """
    if delta is not None and store is not None:
        return _delta_blocks(state, store, delta)
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
    root_block, nodes = hamt.build_blocks(
        slots, None if store is None else _node_cache(store), bit_width=ENT_HAMT_BIT_WIDTH
    )
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


# -- the delta path: O(changes) per commit -------------------------------------------------
#
# Per store, the encoded form of recently written states, by state root CID: for each ruleset
# its block, source CID, encoded rules, and either the inline entity map as encoded
# (key, slot) pieces kept in canonical order (so a changed entry re-encodes that entry and
# splices the rest) or the HAMT root (updated through hamt.update_cached).  A commit takes the
# entry of its base out of the memo and files it under the new root (no copy); on a miss the
# entry is rebuilt from the base's blocks in the store (O(entries) for an inline map, O(1) for
# a HAMT), so the memo only ever saves work.


@dataclass(slots=True)
class _Inline:
    pieces: dict[str, tuple[bytes, int]]  # name -> (encoded key + slot, size as _ent_field counts)
    order: list[bytes]  # the pieces, sorted: canonical key order (encoded keys are prefix-free)
    size: int


@dataclass(slots=True)
class _RsMemo:
    block: Block
    src: CID
    rules: bytes | None  # the encoded `rules` map; None when absent
    ent: _Inline | CID  # an inline map, or the root of its HAMT


@dataclass(slots=True)
class _StateMemo:
    rulesets: dict[str, _RsMemo]
    channels: Block


_DELTA_MEMO_SIZE: Final = 256
_RS_KEYS: Final = {k: cbor.encode(k) for k in ("ent", "rid", "src", "rules")}
_S = TypeVar("_S")


class _PerStore(Generic[_S]):
    """One `factory()` object per store, held by a weak reference to the store; the last
    store's is found first (a commit asks three times, and a WeakKeyDictionary lookup is a
    Python call that makes a weak reference). TypeError for a store that cannot be weakly
    referenced."""

    def __init__(self, factory: Callable[[], _S]) -> None:
        self._factory = factory
        self._by_store: weakref.WeakKeyDictionary[BlockStore, _S] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[BlockStore], _S] | None = None

    def of(self, store: BlockStore) -> _S:
        last = self._last
        if last is not None and last[0]() is store:
            return last[1]
        # (get first: setdefault would build its default, and a weak reference with a
        # callback, on every call)
        held = self._by_store.get(store)
        if held is None:
            held = self._by_store.setdefault(store, self._factory())
        self._last = (weakref.ref(store), held)
        return held

    def clear(self) -> None:
        self._by_store.clear()
        self._last = None


_delta_memo: Final[_PerStore[OrderedDict[CID, _StateMemo]]] = _PerStore(OrderedDict)
_node_caches: Final[_PerStore[hamt.NodeCache]] = _PerStore(hamt.NodeCache)


def _forget_memos() -> None:
    """Drop every store's memo and node cache (tests: as after a restart)."""
    _delta_memo.clear()
    _node_caches.clear()


def _memo_of(store: BlockStore) -> OrderedDict[CID, _StateMemo] | None:
    try:
        return _delta_memo.of(store)
    except TypeError:  # a store that cannot be weakly referenced: no memo
        return None


def _node_cache(store: BlockStore) -> hamt.NodeCache:
    try:
        return _node_caches.of(store)
    except TypeError:
        return hamt.NodeCache()


def _piece(rid: str, name: str, value: object, out: list[Block]) -> tuple[bytes, int]:
    _, n, data = _slot_bytes(rid, name, value, VALUE_LINK_BYTES, out)
    return cbor.encode(name) + data, n + len(name.encode("utf-8")) + 9


def _slot_bytes(
    rid: str, name: str, value: object, limit: int, out: list[Block]
) -> tuple[object, int, bytes]:
    """_slot, with the slot's encoding."""
    data = cbor.encode(value)
    if len(data) <= limit and not _is_link_slot(value):
        return value, len(data), data
    slot, n = _slot(rid, name, value, limit, out)
    return slot, n, cbor.encode(slot)


def _ruleset_block(rid: str, src: CID, ent: bytes, rules: bytes | None) -> Block:
    k = _RS_KEYS
    parts = [
        cbor.map_head(3 if rules is None else 4),
        k["ent"],
        ent,
        k["rid"],
        cbor.encode_str(rid),
    ]
    parts += (k["src"], cbor.encode_cid(src))
    if rules is not None:
        parts += (k["rules"], rules)
    return Block._spliced(b"".join(parts))


# The state root {"v", "did", "meta", "channels", "rulesets"} (canonical key order: by length,
# then bytewise) and a rulesets entry {"rid", "state"}, spliced as _ruleset_block is.
_ROOT_PREFIX: Final = cbor.map_head(5) + cbor.encode("v") + cbor.encode(STATE_VERSION)
_ROOT_KEYS: Final = {k: cbor.encode(k) for k in ("did", "meta", "channels", "rulesets")}
_ENTRY_HEAD: Final = cbor.map_head(2) + cbor.encode("rid")
_ENTRY_STATE: Final = cbor.encode("state")


def _root_block(
    did: str, entries: list[tuple[str, CID]], channels: CID, meta: Mapping[str, object]
) -> Block:
    """The state root block, the same bytes as state_blocks' Block.encode of it (spliced
    when the encoder is Python's)."""
    if cbor.NATIVE:
        value = {
            "v": STATE_VERSION,
            "did": did,
            "rulesets": [{"rid": rid, "state": cid} for rid, cid in entries],
            "channels": channels,
            "meta": dict(meta),
        }
        return Block.encode(value)
    k = _ROOT_KEYS
    meta_bytes = cbor.encode(dict(meta)) if meta else b"\xa0"  # {} is the common case
    parts = [_ROOT_PREFIX, k["did"], cbor.encode_str(did), k["meta"], meta_bytes]
    parts += (
        k["channels"],
        cbor.encode_cid(channels),
        k["rulesets"],
        cbor.array_head(len(entries)),
    )
    for rid, cid in entries:
        parts += (_ENTRY_HEAD, cbor.encode_str(rid), _ENTRY_STATE, cbor.encode_cid(cid))
    return Block._spliced(b"".join(parts))


def _inline_bytes(inline: _Inline) -> bytes:
    return cbor.map_head(len(inline.order)) + b"".join(inline.order)


def _fresh_inline(rid: str, ent: Mapping[str, object], out: list[Block]) -> _Inline | None:
    """The inline form of `ent`, or None when it belongs in a HAMT (as _ent_field decides)."""
    if len(ent) > ENT_HAMT_ENTRIES:
        return None
    linked: list[Block] = []
    pieces: dict[str, tuple[bytes, int]] = {}
    size = 0
    for name, value in ent.items():
        pieces[name] = p = _piece(rid, name, value, linked)
        size += p[1]
        if size > ENT_HAMT_BYTES:
            return None
    out += linked
    return _Inline(pieces, sorted(p for p, _ in pieces.values()), size)


def _fresh_ent(did: str, rs: RulesetState, store: BlockStore, out: list[Block]) -> _Inline | CID:
    inline = _fresh_inline(rs.rid, rs.ent, out)
    if inline is not None:
        return inline
    slots: dict[str, object] = {}
    for name, value in rs.ent.items():
        slots[name], _ = _slot(rs.rid, name, value, hamt.MAX_VALUE_BYTES, out)
    root_block, nodes = hamt.build_blocks(slots, _node_cache(store), bit_width=ENT_HAMT_BIT_WIDTH)
    out += nodes
    return root_block.cid


def _update_inline(
    rs: RulesetState, inline: _Inline, names: Collection[str], out: list[Block]
) -> _Inline | None:
    """`inline` with `names` re-read from rs.ent, changed in place; None if no longer inline."""
    if len(rs.ent) > ENT_HAMT_ENTRIES:
        return None
    linked: list[Block] = []
    order = inline.order
    for name in names:
        old = inline.pieces.pop(name, None)
        if old is not None:
            i = bisect.bisect_left(order, old[0])
            assert order[i] == old[0]
            del order[i]
            inline.size -= old[1]
        value = rs.ent.get(name, _MISSING)
        if value is not _MISSING:
            inline.pieces[name] = p = _piece(rs.rid, name, value, linked)
            bisect.insort(order, p[0])
            inline.size += p[1]
    if inline.size > ENT_HAMT_BYTES:
        return None
    out += linked
    return inline


def _update_ent(
    did: str,
    rs: RulesetState,
    old: _Inline | CID,
    names: Collection[str],
    store: BlockStore,
    out: list[Block],
) -> _Inline | CID:
    if isinstance(old, _Inline):
        inline = _update_inline(rs, old, names, out)
        return inline if inline is not None else _fresh_ent(did, rs, store, out)
    if len(rs.ent) <= ENT_HAMT_ENTRIES:  # may fit inline again: decided on the whole map
        inline = _fresh_inline(rs.rid, rs.ent, out)
        if inline is not None:
            return inline
    # the HAMT is updated in place, at its own bitWidth (a map written at 8 stays at 8)
    linked: list[Block] = []
    changes: list[tuple[str, object, bytes]] = []
    for name in names:
        value = rs.ent.get(name, _MISSING)
        if value is _MISSING:
            changes.append((name, hamt.DELETE, b""))
        else:
            slot, _, data = _slot_bytes(rs.rid, name, value, hamt.MAX_VALUE_BYTES, linked)
            changes.append((name, slot, data))
    try:
        root, nodes = hamt.update_cached_encoded(store, old, changes, _node_cache(store))
    except MissingBlock:  # the store lost the old tree: rebuild
        return _fresh_ent(did, rs, store, out)
    out += linked
    out += nodes
    return root.cid


def _base_memo(store: BlockStore, base: CID) -> _StateMemo | None:
    """The memo of state root `base`, taken out of the memo, or rebuilt from its blocks."""
    memo = _memo_of(store)
    hit = memo.pop(base, None) if memo is not None else None
    if hit is not None:
        return hit
    block = store.get_block(base)
    if block is None or type(block.value) is not dict:
        return None
    value = block.value
    channels_cid = value.get("channels")
    entries = value.get("rulesets")
    if not isinstance(channels_cid, CID) or type(entries) is not list:
        return None
    channels = store.get_block(channels_cid)
    if channels is None:
        return None
    rulesets: dict[str, _RsMemo] = {}
    for entry in entries:
        if type(entry) is not dict or not isinstance(entry.get("state"), CID):
            return None
        rs_block = store.get_block(entry["state"])
        if rs_block is None or type(rs_block.value) is not dict:
            return None
        rv = rs_block.value
        rid, src, ent = rv.get("rid"), rv.get("src"), rv.get("ent")
        if type(rid) is not str or not isinstance(src, CID):
            return None
        rules = cbor.encode(rv["rules"]) if "rules" in rv else None
        part: _Inline | CID
        if isinstance(ent, CID):
            part = ent
        elif type(ent) is dict:  # stored slots: re-encoding them gives the stored bytes
            pieces = {}
            for name, slot in ent.items():
                data = cbor.encode(slot)
                pieces[name] = (cbor.encode(name) + data, len(data) + len(name.encode()) + 9)
            part = _Inline(pieces, sorted(p for p, _ in pieces.values()), 0)
            part.size = sum(n for _, n in pieces.values())
        else:
            return None
        rulesets[rid] = _RsMemo(rs_block, src, rules, part)
    return _StateMemo(rulesets, channels)


def _delta_blocks(state: PicoState, store: BlockStore, delta: Delta) -> tuple[Block, list[Block]]:
    base = _base_memo(store, delta.base)
    if base is None:  # not a state root we can read: encode it whole
        return state_blocks(state, store)
    blocks: list[Block] = []
    entries: list[tuple[str, CID]] = []
    rulesets: dict[str, _RsMemo] = {}
    for rs in state.rulesets:
        src = _source_block(rs.source)
        rules = cbor.encode(dict(rs.rules)) if rs.rules else None
        old = base.rulesets.get(rs.rid)
        names = delta.ent.get(rs.rid)
        if old is None:
            ent = _fresh_ent(state.did, rs, store, blocks)
        elif names:
            ent = _update_ent(state.did, rs, old.ent, names, store, blocks)
        else:
            ent = old.ent
        if (
            old is not None
            and ent is old.ent
            and not names
            and (src.cid, rules)
            == (
                old.src,
                old.rules,
            )
        ):
            rs_block = old.block  # nothing of this ruleset changed
        else:
            if cbor.NATIVE and rules is None and isinstance(ent, CID):  # (as _root_block)
                rs_block = Block.encode({"ent": ent, "rid": rs.rid, "src": src.cid})
            else:
                ent_bytes = _inline_bytes(ent) if isinstance(ent, _Inline) else cbor.encode_cid(ent)
                rs_block = _ruleset_block(rs.rid, src.cid, ent_bytes, rules)
            blocks.append(rs_block)
            if old is None or old.src != src.cid:
                blocks.append(src)
        rulesets[rs.rid] = _RsMemo(rs_block, src.cid, rules, ent)
        entries.append((rs.rid, rs_block.cid))
    if delta.channels:
        channels = Block.encode({eci: dict(rec) for eci, rec in state.channels.items()})
        if channels.cid != base.channels.cid:
            blocks.append(channels)
    else:
        channels = base.channels
    root = _root_block(state.did, entries, channels.cid, state.meta)
    blocks.append(root)
    memo = _memo_of(store)
    if memo is not None:
        memo[root.cid] = _StateMemo(rulesets, channels)
        memo.move_to_end(root.cid)
        while len(memo) > _DELTA_MEMO_SIZE:
            memo.popitem(last=False)
    return root, blocks


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
