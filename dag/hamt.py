"""An IPLD HashMap (HAMT, ipld/ipld specs/advanced-data-layouts/hamt/spec.md) over store.py blocks.

state.py keeps a ruleset's large entity map in one of these.  Parameters: hashAlg sha2-256
(multihash 0x12, the spec's default; see README "HAMT"), bitWidth 8 (so a level's index is one
byte of the key's hash and `map` is 32 bytes), bucketSize 3.  Blocks, as the spec's schema::

    root  {"hashAlg": 18, "bucketSize": 3, "hamt": [map, data]}
    node  [map, data]                      data: one element per set bit of map, in index order
    element  CID (child node) | [[key, value], ...]   (a bucket: 1..3 entries sorted by key)

Bit `i` of `map` is bit `i % 8` (least significant first) of byte `i // 8`.  Keys are the UTF-8
bytes of str keys.  The tree is canonical (CHAMP rules): a slot holding at most bucketSize
entries is a bucket, a slot holding more is a child node, whatever the order of sets and
deletes, so equal contents give equal root CIDs and unchanged sub-trees keep their CIDs.

Block size: a node holds at most 256 x 3 = 768 entries, so entries are bounded (keys at most
`MAX_KEY_BYTES`, encoded values at most `MAX_VALUE_BYTES`) to keep every block under 256 KiB;
callers put larger values in their own blocks and store the link (state.py does).
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, NoReturn, TypeAlias

from dag import cbor
from dag.block import Block
from dag.cid import CID, DAG_CBOR
from dag.store import BlockStore, MissingBlock

HASH_ALG: Final = 0x12  # sha2-256
BIT_WIDTH: Final = 8
BUCKET_SIZE: Final = 3
MAP_BYTES: Final = (1 << BIT_WIDTH) // 8
MAX_DEPTH: Final = 32  # bytes of a sha2-256 digest: one per level
MAX_BLOCK: Final = 256 * 1024
# 768 entries x (1 + 2 + 128 + 200 bytes) + headers = 254.5 KiB, the worst case of one node.
MAX_KEY_BYTES: Final = 128
MAX_VALUE_BYTES: Final = 200

Entry: TypeAlias = tuple[bytes, object]
Element: TypeAlias = "CID | list[Entry]"
Slots: TypeAlias = dict[int, Element]  # index (0..255) -> element; a node, decoded


class HamtError(ValueError):
    """A HAMT block is malformed, or a key or value is out of bounds."""


class _Deleted:
    def __repr__(self) -> str:
        return "DELETE"


# In `update` changes: remove the key.
DELETE: Final = _Deleted()


def _hash(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _key(key: str) -> bytes:
    data = key.encode("utf-8")
    if len(data) > MAX_KEY_BYTES:
        raise HamtError(f"key {key[:40]!r}... is {len(data)} bytes; the limit is {MAX_KEY_BYTES}")
    return data


def _check_value(key: str, value: object) -> None:
    size = len(cbor.encode(value))
    if size > MAX_VALUE_BYTES:
        raise HamtError(
            f"value of {key!r} is {size} bytes encoded; the limit is {MAX_VALUE_BYTES} "
            "(store it in its own block and put the link here)"
        )


# -- encoding ----------------------------------------------------------------------------


def _node_value(slots: Slots) -> list[object]:
    bitmap = bytearray(MAP_BYTES)
    data: list[object] = []
    for i in sorted(slots):
        bitmap[i >> 3] |= 1 << (i & 7)
        el = slots[i]
        data.append(el if isinstance(el, CID) else [[k, v] for k, v in el])
    return [bytes(bitmap), data]


def _block(value: object) -> Block:
    block = Block.encode(value)
    if len(block.data) > MAX_BLOCK:  # pragma: no cover - prevented by the entry bounds
        raise HamtError(f"HAMT node of {len(block.data)} bytes exceeds {MAX_BLOCK}")
    return block


def _root_block(slots: Slots) -> Block:
    return _block({"hashAlg": HASH_ALG, "bucketSize": BUCKET_SIZE, "hamt": _node_value(slots)})


def _bad(where: str, reason: str) -> NoReturn:
    raise HamtError(f"{where}: {reason}")


def _decode_node(value: object, where: str) -> Slots:
    if type(value) is not list or len(value) != 2:
        _bad(where, "a node must be [map, data]")
    bitmap, data = value
    if type(bitmap) is not bytes or len(bitmap) != MAP_BYTES:
        _bad(where, f"map must be {MAP_BYTES} bytes (bitWidth {BIT_WIDTH})")
    if type(data) is not list:
        _bad(where, "data must be a list")
    indices = [i for i in range(1 << BIT_WIDTH) if bitmap[i >> 3] >> (i & 7) & 1]
    if len(indices) != len(data):
        _bad(where, f"map has {len(indices)} bits set but data has {len(data)} elements")
    slots: Slots = {}
    for i, el in zip(indices, data, strict=True):
        if isinstance(el, CID):
            if el.codec != DAG_CBOR:
                _bad(where, f"child link {el} is not dag-cbor")
            slots[i] = el
            continue
        if type(el) is not list or not 1 <= len(el) <= BUCKET_SIZE:
            _bad(where, f"element {i} must be a link or a bucket of 1..{BUCKET_SIZE} entries")
        bucket: list[Entry] = []
        for entry in el:
            if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not bytes:
                _bad(where, f"bucket {i}: an entry must be [key bytes, value]")
            if bucket and entry[0] <= bucket[-1][0]:
                _bad(where, f"bucket {i}: keys are not sorted and unique")
            bucket.append((entry[0], entry[1]))
        slots[i] = bucket
    return slots


def _load(store: BlockStore, cid: CID, what: str) -> object:
    block = store.get_block(cid)
    if block is None:
        raise MissingBlock(cid, f" (HAMT {what})")
    return block.value


def _load_root(store: BlockStore, root: CID, block: Block | None = None) -> Slots:
    value = block.value if block is not None else _load(store, root, "root")
    where = f"HAMT root {root}"
    if type(value) is not dict or value.keys() != {"hashAlg", "bucketSize", "hamt"}:
        _bad(where, "must be a map with exactly hashAlg, bucketSize and hamt")
    if value["hashAlg"] != HASH_ALG or value["bucketSize"] != BUCKET_SIZE:
        _bad(
            where,
            f"only hashAlg 0x{HASH_ALG:x} with bucketSize {BUCKET_SIZE} is supported, got "
            f"{value['hashAlg']!r} and {value['bucketSize']!r}",
        )
    return _decode_node(value["hamt"], where)


def _load_node(store: BlockStore, cid: CID, block: Block | None = None) -> Slots:
    value = block.value if block is not None else _load(store, cid, "node")
    return _decode_node(value, f"HAMT node {cid}")


def _skip(data: bytes, pos: int) -> int:
    """The offset after the DAG-CBOR item at `pos` (bytes already strictly decoded)."""
    first = data[pos]
    major, info = first >> 5, first & 31
    pos += 1
    if info < 24:
        n = info
    else:
        size = 1 << (info - 24)  # 24..27: 1, 2, 4 or 8 bytes
        n = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if major in (2, 3):
        return pos + n
    if major == 4:
        for _ in range(n):
            pos = _skip(data, pos)
    elif major == 5:
        for _ in range(2 * n):
            pos = _skip(data, pos)
    elif major == 6:
        pos = _skip(data, pos)
    return pos  # ints, floats (their 8 bytes were read as n), null, booleans


def _element_encodings(
    data: bytes, *, root: bool, count: int
) -> tuple[builtins.list[bytes | None], bytes]:
    """Each element's bytes, by index, sliced from a node's (or root's) block, and its bitmap.

    A cached node is spliced from these, so they are taken from the stored bytes rather than
    encoded again (the block was strictly decoded: its items are canonical).
    """
    pos = len(_ROOT_PREFIX) if root else 0
    if data[pos : pos + len(_NODE_PREFIX)] != _NODE_PREFIX:  # pragma: no cover - decoded above
        raise HamtError("a node must start with [map (32 bytes), ...]")
    pos += len(_NODE_PREFIX)
    bitmap = data[pos : pos + MAP_BYTES]
    pos += MAP_BYTES
    pos = pos + len(cbor.array_head(count))
    enc: builtins.list[bytes | None] = [None] * (1 << BIT_WIDTH)
    for i in range(1 << BIT_WIDTH):
        if bitmap[i >> 3] >> (i & 7) & 1:
            end = _skip(data, pos)
            enc[i] = data[pos:end]
            pos = end
    return enc, bytes(bitmap)


# -- building ----------------------------------------------------------------------------


def _build(entries: list[tuple[bytes, bytes, object]], depth: int, out: list[Block]) -> Slots:
    """The canonical node at `depth` for (key, hash, value) entries; child blocks go to out."""
    if depth >= MAX_DEPTH:  # pragma: no cover - needs a sha2-256 collision
        raise HamtError("maximum depth reached: more than bucketSize keys share a hash")
    groups: dict[int, list[tuple[bytes, bytes, object]]] = {}
    for e in entries:
        groups.setdefault(e[1][depth], []).append(e)
    slots: Slots = {}
    for i, group in groups.items():
        if len(group) <= BUCKET_SIZE:
            slots[i] = _sorted_bucket((k, v) for k, _, v in group)
        else:
            child = _block(_node_value(_build(group, depth + 1, out)))
            out.append(child)
            slots[i] = child.cid
    return slots


def _sorted_bucket(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: e[0])


def build_blocks(
    items: Mapping[str, object] | Iterable[tuple[str, object]],
) -> tuple[Block, list[Block]]:
    """Encode a whole map; return (root block, every block including the root)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    entries: dict[bytes, tuple[bytes, bytes, object]] = {}
    for key, value in pairs:
        k = _key(key)
        _check_value(key, value)
        entries[k] = (k, _hash(k), value)
    blocks: list[Block] = []
    slots = _build(list(entries.values()), 0, blocks)
    root = _root_block(slots)
    blocks.append(root)
    return root, blocks


def build(store: BlockStore, items: Mapping[str, object] | Iterable[tuple[str, object]]) -> CID:
    """Write a HAMT holding `items` (later pairs win) and return its root CID."""
    root, blocks = build_blocks(items)
    store.put_many(b for b in blocks if not store.has(b.cid))
    return root.cid


# -- reading -----------------------------------------------------------------------------


def get(store: BlockStore, root: CID, key: str, default: object = None) -> object:
    """The value of `key`, or `default`."""
    k = _key(key)
    h = _hash(k)
    slots = _load_root(store, root)
    for depth in range(MAX_DEPTH):
        el = slots.get(h[depth])
        if el is None:
            return default
        if isinstance(el, CID):
            slots = _load_node(store, el)
            continue
        for ek, ev in el:
            if ek == k:
                return ev
        return default
    return default  # pragma: no cover


def _entries(store: BlockStore, slots: Slots) -> Iterator[Entry]:
    for i in sorted(slots):
        el = slots[i]
        if isinstance(el, CID):
            yield from _entries(store, _load_node(store, el))
        else:
            yield from el


def _str(key: bytes, where: str) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        _bad(where, f"key {key!r} is not UTF-8")


def items(store: BlockStore, root: CID) -> Iterator[tuple[str, object]]:
    """Every (key, value), in hash order (depth-first by index)."""
    for k, v in _entries(store, _load_root(store, root)):
        yield _str(k, f"HAMT {root}"), v


def to_dict(store: BlockStore, root: CID) -> dict[str, object]:
    return dict(items(store, root))


def blocks_of(store: BlockStore, root: CID) -> Iterator[CID]:
    """The CIDs of every node of the HAMT, root first."""
    yield root
    stack = [el for el in _load_root(store, root).values() if isinstance(el, CID)]
    while stack:
        cid = stack.pop()
        yield cid
        stack += [el for el in _load_node(store, cid).values() if isinstance(el, CID)]


# -- updating ----------------------------------------------------------------------------


class _Overlay:
    """Reads new blocks first, then the store; nothing is written until the end."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.new: dict[CID, Block] = {}

    def node(self, cid: CID) -> Slots:
        block = self.new.get(cid)
        if block is not None:
            return _decode_node(block.value, f"HAMT node {cid}")
        return _load_node(self.store, cid)

    def add(self, block: Block) -> CID:
        self.new[block.cid] = block
        return block.cid


def _count(slots: Slots) -> int | None:
    """Entries of a node without links, else None."""
    n = 0
    for el in slots.values():
        if isinstance(el, CID):
            return None
        n += len(el)
    return n


def _set(ov: _Overlay, slots: Slots, depth: int, k: bytes, h: bytes, value: object) -> Slots:
    if depth >= MAX_DEPTH:  # pragma: no cover - needs a sha2-256 collision
        raise HamtError("maximum depth reached")
    i = h[depth]
    out = dict(slots)
    el = slots.get(i)
    if el is None:
        out[i] = [(k, value)]
    elif isinstance(el, CID):
        child = _set(ov, ov.node(el), depth + 1, k, h, value)
        out[i] = ov.add(_block(_node_value(child)))
    elif any(ek == k for ek, _ in el) or len(el) < BUCKET_SIZE:
        out[i] = _sorted_bucket([*((ek, ev) for ek, ev in el if ek != k), (k, value)])
    else:  # a full bucket overflows into a child node
        group = [(ek, _hash(ek), ev) for ek, ev in el] + [(k, h, value)]
        built: list[Block] = []
        child_slots = _build(group, depth + 1, built)
        for b in built:
            ov.add(b)
        out[i] = ov.add(_block(_node_value(child_slots)))
    return out


def _delete(ov: _Overlay, slots: Slots, depth: int, k: bytes, h: bytes) -> Slots | None:
    """The node without `k`, or None if `k` is absent."""
    i = h[depth]
    el = slots.get(i)
    if el is None:
        return None
    out = dict(slots)
    if isinstance(el, CID):
        child = _delete(ov, ov.node(el), depth + 1, k, h)
        if child is None:
            return None
        n = _count(child)
        if n is not None and n <= BUCKET_SIZE:  # collapse the child into a bucket here
            out[i] = _sorted_bucket(
                e for bucket in child.values() if isinstance(bucket, list) for e in bucket
            )
        else:
            out[i] = ov.add(_block(_node_value(child)))
        return out
    rest = [(ek, ev) for ek, ev in el if ek != k]
    if len(rest) == len(el):
        return None
    if rest:
        out[i] = rest
    else:
        del out[i]
    return out


def update_blocks(
    store: BlockStore, root: CID, changes: Mapping[str, object] | Iterable[tuple[str, object]]
) -> tuple[Block, list[Block]]:
    """Apply changes (value, or DELETE) to the HAMT at `root` without writing anything.

    Returns the new root block and the new blocks it needs that the old tree did not have:
    only the paths from changed entries to the root (structural sharing).
    """
    pairs = changes.items() if isinstance(changes, Mapping) else changes
    ov = _Overlay(store)
    slots = _load_root(store, root)
    for key, value in pairs:
        k = _key(key)
        h = _hash(k)
        if value is DELETE:
            new = _delete(ov, slots, 0, k, h)
            if new is not None:
                slots = new
        else:
            _check_value(key, value)
            slots = _set(ov, slots, 0, k, h, value)
    root_block = _root_block(slots)
    # Keep only the new blocks the final tree still links to.
    needed: list[Block] = []
    stack = [el for el in slots.values() if isinstance(el, CID)]
    seen: builtins.set[CID] = builtins.set()
    while stack:
        cid = stack.pop()
        block = ov.new.get(cid)
        if block is None or cid in seen:
            continue
        seen.add(cid)
        needed.append(block)
        stack += [el for el in ov.node(cid).values() if isinstance(el, CID)]
    needed.append(root_block)
    return root_block, needed


def update(
    store: BlockStore, root: CID, changes: Mapping[str, object] | Iterable[tuple[str, object]]
) -> CID:
    """Apply changes (value, or DELETE to remove) and write the new path blocks; new root CID."""
    new_root, blocks = update_blocks(store, root, changes)
    store.put_many(b for b in blocks if not store.has(b.cid))
    return new_root.cid


def set(store: BlockStore, root: CID, key: str, value: object) -> CID:
    """Set `key` to `value`; only the path from its bucket to the root is rewritten."""
    return update(store, root, [(key, value)])


def delete(store: BlockStore, root: CID, key: str) -> CID:
    """Remove `key` (absent: the same root), collapsing nodes as the spec requires."""
    return update(store, root, [(key, DELETE)])


def empty(store: BlockStore) -> CID:
    return build(store, ())


# -- cached updates (state.py's commit path) ----------------------------------------------
#
# ``update_blocks`` decodes every node of the path from the store and re-encodes it whole.  A
# commit that changes one entry of a large map then pays for decoding and encoding the root
# (up to 256 links, about 10 KB) and the inner nodes on the path every time.  ``NodeCache``
# keeps recently used nodes decoded, with the encoding of each element, so a changed node's
# bytes are spliced from the cached element encodings and only the changed element is encoded.


class _Node:
    """A decoded node and the DAG-CBOR encoding of each of its elements, by index."""

    __slots__ = ("bitmap", "enc", "slots")

    def __init__(
        self,
        slots: Slots,
        enc: builtins.list[bytes | None] | None = None,
        bitmap: bytes | None = None,
    ) -> None:
        self.slots = slots
        if enc is None or bitmap is None:
            enc = [None] * (1 << BIT_WIDTH)
            bits = bytearray(MAP_BYTES)
            for i, el in slots.items():
                enc[i] = _encode_element(el)
                bits[i >> 3] |= 1 << (i & 7)
            bitmap = bytes(bits)
        self.enc = enc
        self.bitmap = bitmap

    def replace(self, i: int, el: Element | None) -> _Node:
        """A copy with element `i` set to `el` (None: removed)."""
        slots = dict(self.slots)
        enc = builtins.list(self.enc)
        bits = bytearray(self.bitmap)
        if el is None:
            del slots[i]
            enc[i] = None
            bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        else:
            slots[i] = el
            enc[i] = _encode_element(el)
            bits[i >> 3] |= 1 << (i & 7)
        return _Node(slots, enc, bytes(bits))

    def data(self) -> bytes:
        """The node's bytes: [map, data], spliced from the element encodings."""
        head = _NODE_PREFIX + self.bitmap + cbor.array_head(len(self.slots))
        return head + b"".join(filter(None, self.enc))


def _encode_element(el: Element) -> bytes:
    return cbor.encode(el if isinstance(el, CID) else [[k, v] for k, v in el])


# array(2), then bytes(32): the bitmap.  A root is {"hamt": node, "hashAlg": 18, "bucketSize": 3}
# with its keys in canonical order (by length, then bytewise).
_NODE_PREFIX: Final = b"\x82\x58\x20"
_ROOT_PREFIX: Final = cbor.map_head(3) + cbor.encode("hamt")
_ROOT_SUFFIX: Final = (
    cbor.encode("hashAlg") + cbor.encode(HASH_ALG) + cbor.encode("bucketSize") + cbor.encode(3)
)


class NodeCache:
    """Decoded HAMT nodes by CID (least recently used dropped past `size`), for ``update_cached``.

    Nodes are immutable (a CID names one content), so one cache serves every HAMT of a store.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._nodes: dict[CID, _Node] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def _get(self, store: BlockStore, cid: CID, *, root: bool) -> _Node:
        node = self._nodes.pop(cid, None)
        if node is None:
            block = store.get_block(cid)
            if block is None:
                raise MissingBlock(cid, f" (HAMT {'root' if root else 'node'})")
            slots = _load_root(store, cid, block) if root else _load_node(store, cid, block)
            node = _Node(slots, *_element_encodings(block.data, root=root, count=len(slots)))
        self._put(cid, node)
        return node

    def _put(self, cid: CID, node: _Node) -> None:
        self._nodes[cid] = node  # (re)inserted last: the most recently used
        while len(self._nodes) > self.size:
            del self._nodes[next(iter(self._nodes))]


class _CachedOverlay:
    """New nodes of one update first, then the cache, then the store."""

    def __init__(self, store: BlockStore, cache: NodeCache) -> None:
        self.store = store
        self.cache = cache
        self.new: dict[CID, tuple[Block, _Node]] = {}
        self.overflows: builtins.set[CID] = builtins.set()  # roots of sub-trees built whole

    def node(self, cid: CID) -> _Node:
        hit = self.new.get(cid)
        if hit is not None:
            return hit[1]
        return self.cache._get(self.store, cid, root=False)

    def add(self, node: _Node) -> CID:
        block = Block._spliced(node.data())
        if len(block.data) > MAX_BLOCK:  # pragma: no cover - prevented by the entry bounds
            raise HamtError(f"HAMT node of {len(block.data)} bytes exceeds {MAX_BLOCK}")
        self.new[block.cid] = (block, node)
        return block.cid


def _cset(ov: _CachedOverlay, node: _Node, depth: int, k: bytes, h: bytes, value: object) -> _Node:
    if depth >= MAX_DEPTH:  # pragma: no cover - needs a sha2-256 collision
        raise HamtError("maximum depth reached")
    i = h[depth]
    el = node.slots.get(i)
    new: Element
    if el is None:
        new = [(k, value)]
    elif isinstance(el, CID):
        new = ov.add(_cset(ov, ov.node(el), depth + 1, k, h, value))
    elif any(ek == k for ek, _ in el) or len(el) < BUCKET_SIZE:
        new = _sorted_bucket([*((ek, ev) for ek, ev in el if ek != k), (k, value)])
    else:  # a full bucket overflows into a child node
        group = [(ek, _hash(ek), ev) for ek, ev in el] + [(k, h, value)]
        built: builtins.list[Block] = []
        child_slots = _build(group, depth + 1, built)
        for b in built:
            ov.new[b.cid] = (b, _Node(_decode_node(b.value, f"HAMT node {b.cid}")))
        new = ov.add(_Node(child_slots))
        ov.overflows.add(new)
    return node.replace(i, new)


def _cdelete(ov: _CachedOverlay, node: _Node, depth: int, k: bytes, h: bytes) -> _Node | None:
    i = h[depth]
    el = node.slots.get(i)
    if el is None:
        return None
    if isinstance(el, CID):
        child = _cdelete(ov, ov.node(el), depth + 1, k, h)
        if child is None:
            return None
        n = _count(child.slots)
        if n is not None and n <= BUCKET_SIZE:  # collapse the child into a bucket here
            return node.replace(
                i,
                _sorted_bucket(
                    e for bucket in child.slots.values() if isinstance(bucket, list) for e in bucket
                ),
            )
        return node.replace(i, ov.add(child))
    rest = [(ek, ev) for ek, ev in el if ek != k]
    if len(rest) == len(el):
        return None
    return node.replace(i, rest or None)


def update_cached(
    store: BlockStore,
    root: CID,
    changes: Mapping[str, object] | Iterable[tuple[str, object]],
    cache: NodeCache,
) -> tuple[Block, builtins.list[Block]]:
    """``update_blocks`` through `cache`: the same result, encoding only what changed."""
    pairs = changes.items() if isinstance(changes, Mapping) else changes
    ov = _CachedOverlay(store, cache)
    top = cache._get(store, root, root=True)
    hashes: builtins.list[bytes] = []
    for key, value in pairs:
        k = _key(key)
        h = _hash(k)
        hashes.append(h)
        if value is DELETE:
            new = _cdelete(ov, top, 0, k, h)
            if new is not None:
                top = new
        else:
            _check_value(key, value)
            top = _cset(ov, top, 0, k, h, value)
    root_block = Block._spliced(b"".join((_ROOT_PREFIX, top.data(), _ROOT_SUFFIX)))
    if len(root_block.data) > MAX_BLOCK:  # pragma: no cover - prevented by the entry bounds
        raise HamtError(f"HAMT root of {len(root_block.data)} bytes exceeds {MAX_BLOCK}")
    # The new nodes the final tree links to: new nodes lie on the changed keys' paths (or
    # under a bucket that overflowed on one); nodes replaced by a later change are left out.
    needed: builtins.list[Block] = []
    seen: builtins.set[CID] = builtins.set()

    def take(cid: CID) -> _Node | None:
        hit = ov.new.get(cid)
        if hit is None:
            return None
        if cid not in seen:
            seen.add(cid)
            needed.append(hit[0])
            cache._put(cid, hit[1])
            if cid in ov.overflows:  # built whole: every node under it is new
                stack = [cid]
                while stack:
                    for el in ov.new[stack.pop()][1].slots.values():
                        if isinstance(el, CID) and el in ov.new and el not in seen:
                            seen.add(el)
                            needed.append(ov.new[el][0])
                            cache._put(el, ov.new[el][1])
                            stack.append(el)
        return hit[1]

    for h in hashes:
        node: _Node | None = top
        depth = 0
        while node is not None and depth < MAX_DEPTH:
            el = node.slots.get(h[depth])
            node = take(el) if isinstance(el, CID) else None
            depth += 1
    cache._put(root_block.cid, top)
    needed.append(root_block)
    return root_block, needed


# -- diff --------------------------------------------------------------------------------


def _subtree(store: BlockStore, el: Element | None) -> dict[bytes, object]:
    if el is None:
        return {}
    if isinstance(el, CID):
        return dict(_entries(store, _load_node(store, el)))
    return dict(el)


def _same_bucket(a: list[Entry], b: list[Entry]) -> bool:
    # compare encodings: 1 == 1.0 == True in Python, but they are different data
    return cbor.encode([list(e) for e in a]) == cbor.encode([list(e) for e in b])


def _diff(store: BlockStore, a: Slots, b: Slots) -> Iterator[bytes]:
    for i in sorted(a.keys() | b.keys()):
        ea, eb = a.get(i), b.get(i)
        if isinstance(ea, CID) and ea == eb:
            continue  # a shared sub-tree
        if isinstance(ea, list) and isinstance(eb, list) and _same_bucket(ea, eb):
            continue
        if isinstance(ea, CID) and isinstance(eb, CID):
            yield from _diff(store, _load_node(store, ea), _load_node(store, eb))
            continue
        da, db = _subtree(store, ea), _subtree(store, eb)
        for k in sorted(da.keys() | db.keys()):
            if k not in da or k not in db or cbor.encode(da[k]) != cbor.encode(db[k]):
                yield k


def diff(store: BlockStore, a: CID, b: CID) -> Iterator[str]:
    """Keys added, removed or changed between HAMTs `a` and `b`; shared sub-trees are skipped."""
    if a == b:
        return
    for k in _diff(store, _load_root(store, a), _load_root(store, b)):
        yield _str(k, f"HAMT {a} / {b}")
