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
from collections import OrderedDict
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
# A bucket is a tuple: tuples of atoms are untracked by the cyclic GC, which matters for a
# cache of thousands of decoded nodes.
Bucket: TypeAlias = tuple[Entry, ...]
Element: TypeAlias = "CID | Bucket"
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


def _bad(where: str | CID, reason: str) -> NoReturn:
    # a CID names a node; the message is only formatted when there is an error
    raise HamtError(f"{f'HAMT node {where}' if isinstance(where, CID) else where}: {reason}")


# The indices of the set bits of a bitmap byte, least significant first.
_BITS: Final = tuple(tuple(k for k in range(8) if b >> k & 1) for b in range(256))


def _indices(bitmap: bytes) -> builtins.list[int]:
    """The set bits of a node's map, in index order (bit i = bit i % 8 of byte i // 8)."""
    bits = _BITS
    return [j << 3 | k for j, byte in enumerate(bitmap) if byte for k in bits[byte]]


def _decode_node(value: object, where: str | CID) -> Slots:
    if type(value) is not list or len(value) != 2:
        _bad(where, "a node must be [map, data]")
    bitmap, data = value
    if type(bitmap) is not bytes or len(bitmap) != MAP_BYTES:
        _bad(where, f"map must be {MAP_BYTES} bytes (bitWidth {BIT_WIDTH})")
    if type(data) is not list:
        _bad(where, "data must be a list")
    indices = _indices(bitmap)
    if len(indices) != len(data):
        _bad(where, f"map has {len(indices)} bits set but data has {len(data)} elements")
    return {i: _element(el, i, where) for i, el in zip(indices, data, strict=True)}


def _element(el: object, i: int, where: str | CID) -> Element:
    """A decoded element at index `i`, checked: a dag-cbor link or a sorted bucket."""
    if isinstance(el, CID):
        if el.codec != DAG_CBOR:
            _bad(where, f"child link {el} is not dag-cbor")
        return el
    if type(el) is not list or not 1 <= len(el) <= BUCKET_SIZE:
        _bad(where, f"element {i} must be a link or a bucket of 1..{BUCKET_SIZE} entries")
    bucket: builtins.list[Entry] = []
    for entry in el:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not bytes:
            _bad(where, f"bucket {i}: an entry must be [key bytes, value]")
        if bucket and entry[0] <= bucket[-1][0]:
            _bad(where, f"bucket {i}: keys are not sorted and unique")
        bucket.append((entry[0], entry[1]))
    return tuple(bucket)


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
    return _decode_node(value, cid)


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


def _element_encodings(data: bytes, *, root: bool) -> tuple[int, tuple[bytes, ...]]:
    """A node's (or root's) bitmap as an int and its elements' bytes in index order, sliced
    from its block.

    A cached node is spliced from these, so they are taken from the stored bytes rather than
    encoded again (the block was strictly decoded: its items are canonical).
    """
    pos = len(_ROOT_PREFIX) if root else 0
    if data[pos : pos + len(_NODE_PREFIX)] != _NODE_PREFIX:  # pragma: no cover - decoded above
        raise HamtError("a node must start with [map (32 bytes), ...]")
    pos += len(_NODE_PREFIX)
    bits = int.from_bytes(data[pos : pos + MAP_BYTES], "little")
    pos += MAP_BYTES
    count = bits.bit_count()
    pos = pos + len(cbor.array_head(count))
    enc: builtins.list[bytes] = []
    for _ in range(count):
        if data[pos] == 0xD8 and data[pos + 1] == 0x2A and data[pos + 2] == 0x58:
            end = pos + 4 + data[pos + 3]  # a link: tag 42, bytes with a one-byte length
        else:
            end = _skip(data, pos)
        enc.append(data[pos:end])
        pos = end
    return bits, tuple(enc)


# -- building ----------------------------------------------------------------------------


def _build(
    entries: list[tuple[bytes, bytes, object]],
    depth: int,
    out: list[Block],
    nodes: dict[CID, _Node] | None = None,
) -> Slots:
    """The canonical node at `depth` for (key, hash, value) entries; child blocks go to out
    (and, with `nodes`, each child's _Node, for a NodeCache)."""
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
            node = _Node.of(_build(group, depth + 1, out, nodes))
            child = _node_block(node)
            out.append(child)
            if nodes is not None:
                nodes[child.cid] = node
            slots[i] = child.cid
    return slots


def _sorted_bucket(entries: Iterable[Entry]) -> Bucket:
    return tuple(sorted(entries, key=lambda e: e[0]))


def build_blocks(
    items: Mapping[str, object] | Iterable[tuple[str, object]], cache: NodeCache | None = None
) -> tuple[Block, list[Block]]:
    """Encode a whole map; return (root block, every block including the root).

    With `cache`, the nodes go into it as they are built (so the first updates of a large
    map find them there instead of reading and decoding them back).
    """
    pairs = items.items() if isinstance(items, Mapping) else items
    entries: dict[bytes, tuple[bytes, bytes, object]] = {}
    for key, value in pairs:
        k = _key(key)
        _check_value(key, value)
        entries[k] = (k, _hash(k), value)
    blocks: list[Block] = []
    nodes: dict[CID, _Node] | None = {} if cache is not None else None
    slots = _build(list(entries.values()), 0, blocks, nodes)
    top = _Node.of(slots)
    root = Block._spliced(b"".join((_ROOT_PREFIX, top.data(), _ROOT_SUFFIX)))
    blocks.append(root)
    if cache is not None and nodes is not None:
        for cid, node in nodes.items():
            cache._put(cid, node)
        cache._put(root.cid, top)
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
            return _decode_node(block.value, cid)
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
        out[i] = ((k, value),)
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
                e for bucket in child.values() if isinstance(bucket, tuple) for e in bucket
            )
        else:
            out[i] = ov.add(_block(_node_value(child)))
        return out
    rest = tuple((ek, ev) for ek, ev in el if ek != k)
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
    """A node as its bitmap (an int: bit i set when index i holds an element) and the
    DAG-CBOR encoding of each element, in index order.

    Elements are decoded when a change reaches them.  A tuple of bytes and an int hold no
    references the cyclic GC has to follow: with thousands of cached nodes, a representation
    with a dict and lists per node made every young-generation collection walk them all.
    """

    __slots__ = ("bits", "enc", "size")

    def __init__(self, bits: int, enc: tuple[bytes, ...], size: int = -1) -> None:
        self.bits = bits
        self.enc = enc
        self.size = sum(map(len, enc)) if size < 0 else size  # bytes of the elements

    @classmethod
    def of(cls, slots: Slots) -> _Node:
        bits = 0
        for i in slots:
            bits |= 1 << i
        return cls(bits, tuple(_encode_element(slots[i]) for i in sorted(slots)))

    def get(self, i: int) -> Element | None:
        """The element at index `i`, decoded; None if the slot is empty."""
        bits = self.bits
        if not bits >> i & 1:
            return None
        return _decode_element(self.enc[(bits & ((1 << i) - 1)).bit_count()], i)

    def link(self, i: int) -> CID | None:
        """The child link at index `i`, or None (an empty slot or a bucket)."""
        bits = self.bits
        if not bits >> i & 1:
            return None
        return _decode_link(self.enc[(bits & ((1 << i) - 1)).bit_count()])

    def replace(self, i: int, el: Element | None) -> _Node:
        """A copy with element `i` set to `el` (None: removed)."""
        bits, enc = self.bits, self.enc
        r = (bits & ((1 << i) - 1)).bit_count()
        present = bits >> i & 1
        size = self.size - len(enc[r]) if present else self.size
        if el is None:
            if not present:
                return self
            return _Node(bits & ~(1 << i), enc[:r] + enc[r + 1 :], size)
        e = _encode_element(el)
        if present:
            return _Node(bits, (*enc[:r], e, *enc[r + 1 :]), size + len(e))
        return _Node(bits | 1 << i, (*enc[:r], e, *enc[r:]), size + len(e))

    def links(self) -> builtins.list[CID]:
        return [el for el in map(_decode_link, self.enc) if el is not None]

    def leaf_entries(self) -> builtins.list[Entry] | None:
        """Every entry if the node holds at most BUCKET_SIZE and no links, else None."""
        n = 0
        for e in self.enc:
            first = e[0]
            if not 0x81 <= first <= 0x80 + BUCKET_SIZE:  # a link (or malformed: decode says)
                return None
            n += first - 0x80
            if n > BUCKET_SIZE:
                return None
        out: builtins.list[Entry] = []
        for r, e in enumerate(self.enc):
            el = _decode_element(e, r)
            assert not isinstance(el, CID)
            out += el
        return out

    def data(self) -> bytes:
        """The node's bytes: [map, data], spliced from the element encodings."""
        enc = self.enc
        head = _NODE_PREFIX + self.bits.to_bytes(MAP_BYTES, "little") + cbor.array_head(len(enc))
        return b"".join((head, *enc))


def _encode_element(el: Element) -> bytes:
    if isinstance(el, CID):
        return cbor.encode_cid(el)
    return cbor.encode([[k, v] for k, v in el])


def _node_block(node: _Node) -> Block:
    block = Block._spliced(node.data())
    if len(block.data) > MAX_BLOCK:  # pragma: no cover - prevented by the entry bounds
        raise HamtError(f"HAMT node of {len(block.data)} bytes exceeds {MAX_BLOCK}")
    return block


_LINK36: Final = b"\xd8\x2a\x58\x25\x00"  # tag 42, bytes(37), 0x00: a 36-byte binary CID follows


def _decode_link(e: bytes) -> CID | None:
    if len(e) == 41 and e[:5] == _LINK36:
        cid = CID.parse(e[5:])
    elif e[0] == 0xD8:
        cid = cbor.decode_trusted(e)  # type: ignore[assignment]
    else:
        return None
    el = _element(cid, -1, "HAMT node")
    assert isinstance(el, CID)
    return el


def _decode_element(e: bytes, i: int) -> Element:
    """An element from its bytes (part of a block already strictly decoded, or encoded here)."""
    link = _decode_link(e)
    if link is not None:
        return link
    return _element(cbor.decode_trusted(e), i, "HAMT node")


# array(2), then bytes(32): the bitmap.  A root is {"hamt": node, "hashAlg": 18, "bucketSize": 3}
# with its keys in canonical order (by length, then bytewise).
_NODE_PREFIX: Final = b"\x82\x58\x20"
_ROOT_PREFIX: Final = cbor.map_head(3) + cbor.encode("hamt")
_ROOT_SUFFIX: Final = (
    cbor.encode("hashAlg") + cbor.encode(HASH_ALG) + cbor.encode("bucketSize") + cbor.encode(3)
)


class NodeCache:
    """Decoded HAMT nodes by CID, for ``update_cached``: the least recently used are dropped
    past `size` nodes or `max_bytes` (the memory the nodes take, estimated).

    Nodes are immutable (a CID names one content), so one cache serves every HAMT of a store.
    An update drops the nodes it replaces, so the cache holds the live tree rather than past
    versions of its top nodes: a map of a million entries (65,795 nodes, about 84 MB) stays
    whole in the default budget and a commit then reads nothing back.
    """

    def __init__(self, size: int = 1 << 17, max_bytes: int = 96 << 20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        # keyed by the binary CID (bytes hash and compare in C); an OrderedDict: dropping the
        # oldest is O(1) (next(iter(dict)) after many deletions from the front of a plain
        # dict scans the holes they leave)
        self._nodes: OrderedDict[bytes, tuple[_Node, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._nodes)

    def _get(self, store: BlockStore, cid: CID, *, root: bool) -> _Node:
        hit = self._nodes.get(cid.buffer)
        if hit is not None:
            self._nodes.move_to_end(cid.buffer)
            return hit[0]
        block = store.get_block(cid)
        if block is None:
            raise MissingBlock(cid, f" (HAMT {'root' if root else 'node'})")
        # checked whole on the way in; the node keeps only the element bytes
        _load_root(store, cid, block) if root else _load_node(store, cid, block)
        node = _Node(*_element_encodings(block.data, root=root))
        self._put(cid, node)
        return node

    def _put(self, cid: CID, node: _Node) -> None:
        nodes = self._nodes
        key = cid.buffer
        old = nodes.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        # the object, its int bitmap and tuple, each bytes object with its header, and the
        # cache's key and entry (sys.getsizeof of a cached 1,000,000-entry map agrees to 1%)
        weight = 350 + 41 * len(node.enc) + node.size
        nodes[key] = (node, weight)  # inserted last: the most recently used
        self.bytes += weight
        while len(nodes) > self.size or self.bytes > self.max_bytes:
            self.bytes -= nodes.popitem(last=False)[1][1]

    def _drop(self, cid: CID) -> None:
        old = self._nodes.pop(cid.buffer, None)
        if old is not None:
            self.bytes -= old[1]


class _CachedOverlay:
    """New nodes of one update first, then the cache, then the store."""

    def __init__(self, store: BlockStore, cache: NodeCache) -> None:
        self.store = store
        self.cache = cache
        self.new: dict[CID, tuple[Block, _Node]] = {}
        self.overflows: builtins.set[CID] = builtins.set()  # roots of sub-trees built whole
        self.replaced: builtins.list[CID] = []  # nodes of the old tree a new node replaces

    def node(self, cid: CID) -> _Node:
        hit = self.new.get(cid)
        if hit is not None:
            return hit[1]
        return self.cache._get(self.store, cid, root=False)

    def add(self, node: _Node) -> CID:
        block = _node_block(node)
        self.new[block.cid] = (block, node)
        return block.cid


def _cset(ov: _CachedOverlay, node: _Node, depth: int, k: bytes, h: bytes, value: object) -> _Node:
    if depth >= MAX_DEPTH:  # pragma: no cover - needs a sha2-256 collision
        raise HamtError("maximum depth reached")
    i = h[depth]
    el = node.get(i)
    new: Element
    if el is None:
        new = ((k, value),)
    elif isinstance(el, CID):
        new = ov.add(_cset(ov, ov.node(el), depth + 1, k, h, value))
        ov.replaced.append(el)
    elif any(ek == k for ek, _ in el) or len(el) < BUCKET_SIZE:
        new = _sorted_bucket([*((ek, ev) for ek, ev in el if ek != k), (k, value)])
    else:  # a full bucket overflows into a child node
        group = [(ek, _hash(ek), ev) for ek, ev in el] + [(k, h, value)]
        built: builtins.list[Block] = []
        nodes: dict[CID, _Node] = {}
        child_slots = _build(group, depth + 1, built, nodes)
        for b in built:
            ov.new[b.cid] = (b, nodes[b.cid])
        new = ov.add(_Node.of(child_slots))
        ov.overflows.add(new)
    return node.replace(i, new)


def _cdelete(ov: _CachedOverlay, node: _Node, depth: int, k: bytes, h: bytes) -> _Node | None:
    i = h[depth]
    el = node.get(i)
    if el is None:
        return None
    if isinstance(el, CID):
        child = _cdelete(ov, ov.node(el), depth + 1, k, h)
        if child is None:
            return None
        ov.replaced.append(el)
        entries = child.leaf_entries()
        if entries is not None:  # collapse the child into a bucket here
            return node.replace(i, _sorted_bucket(entries))
        return node.replace(i, ov.add(child))
    rest = tuple((ek, ev) for ek, ev in el if ek != k)
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
    top = old_top = cache._get(store, root, root=True)
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
    if top is not old_top:
        cache._drop(root)
    for cid in ov.replaced:
        cache._drop(cid)

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
                    for el in ov.new[stack.pop()][1].links():
                        if el in ov.new and el not in seen:
                            seen.add(el)
                            needed.append(ov.new[el][0])
                            cache._put(el, ov.new[el][1])
                            stack.append(el)
        return hit[1]

    if len(hashes) == 1:
        # One change: every new node is in the final tree (one per level of its path, the
        # sub-tree of an overflowed bucket, and no child a delete collapsed, since a node
        # that links a new child cannot collapse), so there is nothing to sort out.
        for cid, (block, node) in ov.new.items():
            needed.append(block)
            cache._put(cid, node)
    for h in hashes if len(hashes) > 1 else ():
        at: _Node | None = top
        depth = 0
        while at is not None and depth < MAX_DEPTH:
            el = at.link(h[depth])
            at = None if el is None else take(el)
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


def _same_bucket(a: Bucket, b: Bucket) -> bool:
    # compare encodings: 1 == 1.0 == True in Python, but they are different data
    return cbor.encode([list(e) for e in a]) == cbor.encode([list(e) for e in b])


def _diff(store: BlockStore, a: Slots, b: Slots) -> Iterator[bytes]:
    for i in sorted(a.keys() | b.keys()):
        ea, eb = a.get(i), b.get(i)
        if isinstance(ea, CID) and ea == eb:
            continue  # a shared sub-tree
        if isinstance(ea, tuple) and isinstance(eb, tuple) and _same_bucket(ea, eb):
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
