"""An IPLD HashMap (HAMT, ipld/ipld specs/advanced-data-layouts/hamt/spec.md) over store.py blocks.

state.py keeps a ruleset's large entity map in one of these.  Parameters: hashAlg sha2-256
(multihash 0x12, the spec's default; see README "HAMT"), bucketSize 3, and a bitWidth per map,
implied by the byte length of `map` (2**bitWidth / 8 bytes, as the spec says): any bitWidth of
`MIN_BIT_WIDTH`..`MAX_BIT_WIDTH` is read and updated at its own width (a map written with
bitWidth 8, the old default, stays at 8); new maps get `BIT_WIDTH`.  Blocks, as the spec's
schema::

    root  {"hashAlg": 18, "bucketSize": 3, "hamt": [map, data]}
    node  [map, data]                      data: one element per set bit of map, in index order
    element  CID (child node) | [[key, value], ...]   (a bucket: 1..3 entries sorted by key)

The index of a key at depth d is the integer value of bits d*w .. d*w+w-1 of its sha2-256
digest, bits numbered from the most significant bit of the first byte (the spec's "left-most
bitWidth bits, offset by depth x bitWidth"): with w = 8 it is byte d of the digest, with w = 5
depth 0 is the top 5 bits of byte 0 and depth 1 the low 3 bits of byte 0 then the top 2 of
byte 1.  A digest of 256 bits gives 256 // w levels.  Bit `i` of `map` is bit `i % 8` (least
significant first) of byte `i // 8`.  Keys are the UTF-8 bytes of str keys.  The tree is canonical (CHAMP rules): a slot holding at most bucketSize
entries is a bucket, a slot holding more is a child node, whatever the order of sets and
deletes, so equal contents give equal root CIDs and unchanged sub-trees keep their CIDs.

Block size: a node of bitWidth 8 holds at most 256 x 3 = 768 entries, so entries are bounded (keys at most
`MAX_KEY_BYTES`, encoded values at most `MAX_VALUE_BYTES`) to keep every block under 256 KiB;
callers put larger values in their own blocks and store the link (state.py does).  A foreign map
wider than 8 could exceed that: the node is then refused (HamtError) when it is written.
"""

from __future__ import annotations

import builtins
import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, NoReturn, TypeAlias, final

from dag import cbor
from dag.block import Block
from dag.cid import CID, DAG_CBOR
from dag.store import BlockStore, MissingBlock

try:  # the C commit path (setup.py builds it where it can: it is optional)
    from dag import _native
except ImportError:  # pragma: no cover - a build without a C compiler or OpenSSL headers
    _native = None  # type: ignore[assignment]

HASH_ALG: Final = 0x12  # sha2-256
HASH_BITS: Final = 256
# The bitWidth of new maps (chosen by measurement: README "HAMT"); the spec's default, and
# ours before, is 8.
BIT_WIDTH: Final = 5
MIN_BIT_WIDTH: Final = 3  # the spec's minimum: a 1-byte map
MAX_BIT_WIDTH: Final = 16  # maps up to 8 KiB; wider ones are refused as malformed
BUCKET_SIZE: Final = 3
MAX_BLOCK: Final = 256 * 1024
# 768 entries x (1 + 2 + 128 + 200 bytes) + headers = 254.5 KiB, the worst case of one node.
MAX_KEY_BYTES: Final = 128
MAX_VALUE_BYTES: Final = 200

Entry: TypeAlias = tuple[bytes, object]
# A bucket is a tuple: tuples of atoms are untracked by the cyclic GC, which matters for a
# cache of thousands of decoded nodes.
Bucket: TypeAlias = tuple[Entry, ...]
Element: TypeAlias = "CID | Bucket"
Slots: TypeAlias = dict[int, Element]  # index (0 .. 2**bitWidth - 1) -> element; a node, decoded


class HamtError(ValueError):
    """A HAMT block is malformed, or a key or value is out of bounds."""


class _Deleted:
    def __repr__(self) -> str:
        return "DELETE"


# In `update` changes: remove the key.
DELETE: Final = _Deleted()


def _hash(key: bytes) -> int:
    """The key's sha2-256 digest as an int, most significant bit first (see _Width.index)."""
    return int.from_bytes(hashlib.sha256(key).digest(), "big")


@final
class _Width:
    """What a bitWidth implies: the index of each level, the map's size, the node's prefix."""

    __slots__ = ("levels", "map_bytes", "mask", "prefix", "shifts", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.mask = (1 << width) - 1
        self.map_bytes = (1 << width) // 8
        self.levels = HASH_BITS // width  # full indices a 256-bit digest holds
        # index at depth d = bits d*w .. d*w+w-1 from the most significant: shift right by this
        self.shifts = tuple(HASH_BITS - width * (d + 1) for d in range(self.levels))
        # array(2), then the map's bytes head
        self.prefix = b"\x82" + cbor.bytes_head(self.map_bytes)

    def index(self, h: int, depth: int) -> int:
        if depth >= self.levels:  # pragma: no cover - needs a sha2-256 collision
            raise HamtError("maximum depth reached: more than bucketSize keys share a hash")
        return (h >> self.shifts[depth]) & self.mask


_WIDTHS: Final = {w: _Width(w) for w in range(MIN_BIT_WIDTH, MAX_BIT_WIDTH + 1)}
_BY_MAP_BYTES: Final = {p.map_bytes: p for p in _WIDTHS.values()}


def _width(bit_width: int) -> _Width:
    p = _WIDTHS.get(bit_width)
    if p is None:
        raise HamtError(
            f"bitWidth {bit_width!r} is not supported ({MIN_BIT_WIDTH}..{MAX_BIT_WIDTH})"
        )
    return p


def _key(key: str) -> bytes:
    data = key.encode("utf-8")
    if len(data) > MAX_KEY_BYTES:
        raise HamtError(f"key {key[:40]!r}... is {len(data)} bytes; the limit is {MAX_KEY_BYTES}")
    return data


def _check_value(key: str, value: object) -> None:
    _check_size(key, len(cbor.encode(value)))


def _check_size(key: str, size: int) -> None:
    if size > MAX_VALUE_BYTES:
        raise HamtError(
            f"value of {key!r} is {size} bytes encoded; the limit is {MAX_VALUE_BYTES} "
            "(store it in its own block and put the link here)"
        )


# -- encoding ----------------------------------------------------------------------------


def _node_value(slots: Slots, p: _Width) -> list[object]:
    bitmap = bytearray(p.map_bytes)
    data: list[object] = []
    for i in sorted(slots):
        bitmap[i >> 3] |= 1 << (i & 7)
        el = slots[i]
        data.append(el if isinstance(el, CID) else [[k, v] for k, v in el])
    return [bytes(bitmap), data]


def _block(value: object) -> Block:
    block = Block.encode(value)
    if len(block.data) > MAX_BLOCK:  # pragma: no cover - entry bounds (bitWidth <= 8)
        raise HamtError(f"HAMT node of {len(block.data)} bytes exceeds {MAX_BLOCK}")
    return block


def _root_block(slots: Slots, p: _Width) -> Block:
    return _block({"hashAlg": HASH_ALG, "bucketSize": BUCKET_SIZE, "hamt": _node_value(slots, p)})


def _bad(where: str | CID, reason: str) -> NoReturn:
    # a CID names a node; the message is only formatted when there is an error
    raise HamtError(f"{f'HAMT node {where}' if isinstance(where, CID) else where}: {reason}")


# The indices of the set bits of a bitmap byte, least significant first.
_BITS: Final = tuple(tuple(k for k in range(8) if b >> k & 1) for b in range(256))


def _indices(bitmap: bytes) -> builtins.list[int]:
    """The set bits of a node's map, in index order (bit i = bit i % 8 of byte i // 8)."""
    bits = _BITS
    return [j << 3 | k for j, byte in enumerate(bitmap) if byte for k in bits[byte]]


def _wrong_width(where: str | CID, n: int, root: _Width) -> NoReturn:
    _bad(
        where,
        f"map is {n} bytes but the map's root has {root.map_bytes} (bitWidth {root.width}): "
        "every node of a map has the root's bitWidth",
    )


def _map_width(bitmap: object, where: str | CID, root: _Width | None) -> _Width:
    """The bitWidth a node's map implies; under a root, it must be the root's."""
    if type(bitmap) is not bytes:
        _bad(where, f"map must be bytes, got {type(bitmap).__name__}")
    n = len(bitmap)
    if root is not None:
        if n != root.map_bytes:
            _wrong_width(where, n, root)
        return root
    p = _BY_MAP_BYTES.get(n)
    if p is None:
        _bad(
            where,
            f"map is {n} bytes; it must be 2**bitWidth / 8 bytes for a bitWidth of "
            f"{MIN_BIT_WIDTH}..{MAX_BIT_WIDTH} (1, 2, 4, ... {1 << (MAX_BIT_WIDTH - 3)} bytes)",
        )
    return p


def _decode_node(value: object, where: str | CID, root: _Width | None) -> tuple[Slots, _Width]:
    """A node's slots, checked, and its bitWidth (`root`'s, or from the map if it is the root)."""
    if type(value) is not list or len(value) != 2:
        _bad(where, "a node must be [map, data]")
    bitmap, data = value
    p = _map_width(bitmap, where, root)
    assert type(bitmap) is bytes
    if type(data) is not list:
        _bad(where, "data must be a list")
    indices = _indices(bitmap)
    if len(indices) != len(data):
        _bad(where, f"map has {len(indices)} bits set but data has {len(data)} elements")
    return {i: _element(el, i, where) for i, el in zip(indices, data, strict=True)}, p


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


def _load_root(store: BlockStore, root: CID, block: Block | None = None) -> tuple[Slots, _Width]:
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
    return _decode_node(value["hamt"], where, None)


def _load_node(store: BlockStore, cid: CID, p: _Width, block: Block | None = None) -> Slots:
    value = block.value if block is not None else _load(store, cid, "node")
    return _decode_node(value, cid, p)[0]


def bit_width(store: BlockStore, root: CID) -> int:
    """The bitWidth of the HAMT at `root` (from the byte length of its map)."""
    return _load_root(store, root)[1].width


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


def _element_blob(data: bytes, p: _Width, *, root: bool) -> tuple[int, bytes, bytes]:
    """A node's (or root's) bitmap as an int, its elements' bytes and where each starts (as
    _Node holds them), sliced from its block.

    A cached node is spliced from these, so they are taken from the stored bytes rather than
    encoded again (the block was strictly decoded: its items are canonical).
    """
    pos = len(_ROOT_PREFIX) if root else 0
    prefix = p.prefix
    if data[pos : pos + len(prefix)] != prefix:  # pragma: no cover - decoded above
        raise HamtError(f"a node must start with [map ({p.map_bytes} bytes), ...]")
    pos += len(prefix)
    bits = int.from_bytes(data[pos : pos + p.map_bytes], "little")
    pos += p.map_bytes
    count = bits.bit_count()
    start = pos = pos + len(cbor.array_head(count))
    starts = _U32()
    for _ in range(count):
        starts.append(pos - start)
        if data[pos] == 0xD8 and data[pos + 1] == 0x2A and data[pos + 2] == 0x58:
            pos += 4 + data[pos + 3]  # a link: tag 42, bytes with a one-byte length
        else:
            pos = _skip(data, pos)
    starts.append(pos - start)
    return bits, data[start:pos], starts.tobytes()


# -- building ----------------------------------------------------------------------------


def _build(
    entries: list[tuple[bytes, int, object]],
    depth: int,
    p: _Width,
    out: list[Block],
    nodes: dict[CID, _Node] | None = None,
) -> Slots:
    """The canonical node at `depth` for (key, hash, value) entries; child blocks go to out
    (and, with `nodes`, each child's _Node, for a NodeCache)."""
    if depth >= p.levels:  # pragma: no cover - needs a sha2-256 collision
        raise HamtError("maximum depth reached: more than bucketSize keys share a hash")
    shift, mask = p.shifts[depth], p.mask
    groups: dict[int, list[tuple[bytes, int, object]]] = {}
    for e in entries:
        groups.setdefault((e[1] >> shift) & mask, []).append(e)
    slots: Slots = {}
    for i, group in groups.items():
        if len(group) <= BUCKET_SIZE:
            slots[i] = _sorted_bucket((k, v) for k, _, v in group)
        else:
            node = _Node.of(_build(group, depth + 1, p, out, nodes), p)
            child = _node_block(node)
            out.append(child)
            if nodes is not None:
                nodes[child.cid] = node
            slots[i] = child.cid
    return slots


def _sorted_bucket(entries: Iterable[Entry]) -> Bucket:
    return tuple(sorted(entries, key=lambda e: e[0]))


def build_blocks(
    items: Mapping[str, object] | Iterable[tuple[str, object]],
    cache: NodeCache | None = None,
    *,
    bit_width: int = BIT_WIDTH,
) -> tuple[Block, list[Block]]:
    """Encode a whole map with `bit_width`; return (root block, every block including the root).

    With `cache`, the nodes go into it as they are built (so the first updates of a large
    map find them there instead of reading and decoding them back).
    """
    p = _width(bit_width)
    pairs = items.items() if isinstance(items, Mapping) else items
    entries: dict[bytes, tuple[bytes, int, object]] = {}
    for key, value in pairs:
        k = _key(key)
        _check_value(key, value)
        entries[k] = (k, _hash(k), value)
    blocks: list[Block] = []
    nodes: dict[CID, _Node] | None = {} if cache is not None else None
    slots = _build(list(entries.values()), 0, p, blocks, nodes)
    top = _Node.of(slots, p)
    root = Block._spliced(top.data(_ROOT_PREFIX, _ROOT_SUFFIX))
    blocks.append(root)
    if cache is not None and nodes is not None:
        for cid, node in nodes.items():
            cache._put(cid, node)
        cache._put(root.cid, top)
    return root, blocks


def build(
    store: BlockStore,
    items: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    bit_width: int = BIT_WIDTH,
) -> CID:
    """Write a HAMT holding `items` (later pairs win) and return its root CID."""
    root, blocks = build_blocks(items, bit_width=bit_width)
    store.put_many(b for b in blocks if not store.has(b.cid))
    return root.cid


# -- reading -----------------------------------------------------------------------------


def get(store: BlockStore, root: CID, key: str, default: object = None) -> object:
    """The value of `key`, or `default`."""
    k = _key(key)
    h = _hash(k)
    slots, p = _load_root(store, root)
    for depth in range(p.levels):
        el = slots.get(p.index(h, depth))
        if el is None:
            return default
        if isinstance(el, CID):
            slots = _load_node(store, el, p)
            continue
        for ek, ev in el:
            if ek == k:
                return ev
        return default
    return default  # pragma: no cover


def _entries(store: BlockStore, slots: Slots, p: _Width) -> Iterator[Entry]:
    for i in sorted(slots):
        el = slots[i]
        if isinstance(el, CID):
            yield from _entries(store, _load_node(store, el, p), p)
        else:
            yield from el


def _str(key: bytes, where: str) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        _bad(where, f"key {key!r} is not UTF-8")


def items(store: BlockStore, root: CID) -> Iterator[tuple[str, object]]:
    """Every (key, value), in hash order (depth-first by index)."""
    for k, v in _entries(store, *_load_root(store, root)):
        yield _str(k, f"HAMT {root}"), v


def to_dict(store: BlockStore, root: CID) -> dict[str, object]:
    return dict(items(store, root))


def blocks_of(store: BlockStore, root: CID) -> Iterator[CID]:
    """The CIDs of every node of the HAMT, root first."""
    yield root
    slots, p = _load_root(store, root)
    stack = [el for el in slots.values() if isinstance(el, CID)]
    while stack:
        cid = stack.pop()
        yield cid
        stack += [el for el in _load_node(store, cid, p).values() if isinstance(el, CID)]


# -- updating ----------------------------------------------------------------------------


class _Overlay:
    """Reads new blocks first, then the store; nothing is written until the end."""

    def __init__(self, store: BlockStore, p: _Width) -> None:
        self.store = store
        self.p = p
        self.new: dict[CID, Block] = {}

    def node(self, cid: CID) -> Slots:
        block = self.new.get(cid)
        if block is not None:
            return _decode_node(block.value, cid, self.p)[0]
        return _load_node(self.store, cid, self.p)

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


def _set(ov: _Overlay, slots: Slots, depth: int, k: bytes, h: int, value: object) -> Slots:
    p = ov.p
    i = p.index(h, depth)
    out = dict(slots)
    el = slots.get(i)
    if el is None:
        out[i] = ((k, value),)
    elif isinstance(el, CID):
        child = _set(ov, ov.node(el), depth + 1, k, h, value)
        out[i] = ov.add(_block(_node_value(child, p)))
    elif any(ek == k for ek, _ in el) or len(el) < BUCKET_SIZE:
        out[i] = _sorted_bucket([*((ek, ev) for ek, ev in el if ek != k), (k, value)])
    else:  # a full bucket overflows into a child node
        group = [(ek, _hash(ek), ev) for ek, ev in el] + [(k, h, value)]
        built: list[Block] = []
        child_slots = _build(group, depth + 1, p, built)
        for b in built:
            ov.add(b)
        out[i] = ov.add(_block(_node_value(child_slots, p)))
    return out


def _delete(ov: _Overlay, slots: Slots, depth: int, k: bytes, h: int) -> Slots | None:
    """The node without `k`, or None if `k` is absent."""
    i = ov.p.index(h, depth)
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
            out[i] = ov.add(_block(_node_value(child, ov.p)))
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
    only the paths from changed entries to the root (structural sharing).  The map keeps its
    bitWidth.
    """
    pairs = changes.items() if isinstance(changes, Mapping) else changes
    slots, p = _load_root(store, root)
    ov = _Overlay(store, p)
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
    root_block = _root_block(slots, p)
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


def empty(store: BlockStore, *, bit_width: int = BIT_WIDTH) -> CID:
    return build(store, (), bit_width=bit_width)


# -- cached updates (state.py's commit path) ----------------------------------------------
#
# ``update_blocks`` decodes every node of the path from the store and re-encodes it whole.  A
# commit that changes one entry of a large map then pays for decoding and encoding the root
# (up to 256 links, about 10 KB) and the inner nodes on the path every time.  ``NodeCache``
# keeps recently used nodes decoded, with the encoding of each element, so a changed node's
# bytes are spliced from the cached element encodings and only the changed element is encoded.


class _Node:
    """A node as its bitmap (an int: bit i set when index i holds an element), the DAG-CBOR
    encodings of its elements concatenated in index order (`blob`), and where each starts
    (`offs`: native uint32s, len(blob) last, so element r is blob[offs[r]:offs[r + 1]]).

    Elements are decoded when a change reaches them.  A node is three flat objects: a change
    copies and reads each contiguously, where a tuple of one bytes object per element cost
    a cache miss per element on a large map's path (the first touch of each, and its
    reference count on every copy and free).  Nor do they hold references the cyclic GC has
    to follow, and a node cannot lead back to itself, so ``_native.NodeTable`` takes the
    nodes it holds out of the GC's lists altogether (the C set's new nodes never enter them).
    """

    __slots__ = ("bits", "blob", "offs", "p")

    def __init__(self, bits: int, blob: bytes, offs: bytes, p: _Width) -> None:
        self.bits = bits
        self.blob = blob
        self.offs = offs
        self.p = p  # the map's bitWidth (one shared object per width)

    @classmethod
    def from_enc(cls, bits: int, enc: Sequence[bytes], p: _Width) -> _Node:
        """The node of these element encodings, in index order."""
        starts = [0]
        for e in enc:
            starts.append(starts[-1] + len(e))
        return cls(bits, b"".join(enc), _U32(starts).tobytes(), p)

    @classmethod
    def of(cls, slots: Slots, p: _Width) -> _Node:
        bits = 0
        for i in slots:
            bits |= 1 << i
        return cls.from_enc(bits, [_encode_element(slots[i]) for i in sorted(slots)], p)

    @property
    def enc(self) -> tuple[bytes, ...]:
        """The elements' encodings, in index order."""
        o, blob = memoryview(self.offs).cast("I"), self.blob
        return tuple(blob[o[r] : o[r + 1]] for r in range(len(o) - 1))

    @property
    def size(self) -> int:
        """The bytes of the elements."""
        return len(self.blob)

    def count(self) -> int:
        """How many elements the node holds."""
        return len(self.offs) // 4 - 1

    def _at(self, r: int) -> bytes:
        o = memoryview(self.offs).cast("I")
        return self.blob[o[r] : o[r + 1]]

    def get(self, i: int) -> Element | None:
        """The element at index `i`, decoded; None if the slot is empty."""
        bits = self.bits
        if not bits >> i & 1:
            return None
        return _decode_element(self._at((bits & ((1 << i) - 1)).bit_count()), i)

    def link(self, i: int) -> CID | None:
        """The child link at index `i`, or None (an empty slot or a bucket)."""
        bits = self.bits
        if not bits >> i & 1:
            return None
        return _decode_link(self._at((bits & ((1 << i) - 1)).bit_count()))

    def replace(self, i: int, el: Element | None) -> _Node:
        """A copy with element `i` set to `el` (None: removed)."""
        return self.replace_enc(i, None if el is None else _encode_element(el))

    def replace_enc(self, i: int, e: bytes | None) -> _Node:
        """A copy with element `i` set to the element encoded as `e` (None: removed)."""
        bits = self.bits
        r = (bits & ((1 << i) - 1)).bit_count()
        present = bits >> i & 1
        if e is None and not present:
            return self
        o = memoryview(self.offs).cast("I")
        lo = o[r]
        hi = o[r + 1] if present else lo
        new = b"" if e is None else e
        d = len(new) - (hi - lo)
        starts = _U32(self.offs[: 4 * r])
        if e is not None:
            starts.append(lo)
        starts.extend(x + d for x in o[r + 1 if present else r :])
        blob = b"".join((self.blob[:lo], new, self.blob[hi:]))
        bits = bits & ~(1 << i) if e is None else bits | 1 << i
        return _Node(bits, blob, starts.tobytes(), self.p)

    def links(self) -> builtins.list[CID]:
        return [el for el in map(_decode_link, self.enc) if el is not None]

    def leaf_entries(self) -> builtins.list[Entry] | None:
        """Every entry if the node holds at most BUCKET_SIZE and no links, else None."""
        n = 0
        blob = self.blob
        for at in memoryview(self.offs).cast("I")[:-1]:  # each element's first byte
            first = blob[at]
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

    def data(self, before: bytes = b"", after: bytes = b"") -> bytes:
        """The node's bytes: [map, data], spliced from the element encodings (between
        `before` and `after`: a root's other fields)."""
        p = self.p
        head = before + p.prefix + self.bits.to_bytes(p.map_bytes, "little")
        return b"".join((head, cbor.array_head(self.count()), self.blob, after))


def _encode_element(el: Element) -> bytes:
    if isinstance(el, CID):
        return cbor.encode_cid(el)
    return cbor.encode([[k, v] for k, v in el])


def _node_block(node: _Node) -> Block:
    block = Block._spliced(node.data())
    if len(block.data) > MAX_BLOCK:  # pragma: no cover - entry bounds (bitWidth <= 8)
        raise HamtError(f"HAMT node of {len(block.data)} bytes exceeds {MAX_BLOCK}")
    return block


def _U32(items: bytes | Iterable[int] = b"") -> array[int]:
    """_Node.offs as an array (native uint32s)."""
    return array("I", items)


assert array("I").itemsize == 4, "_Node.offs needs a 4-byte unsigned int"

_LINK36: Final = b"\xd8\x2a\x58\x25\x00"  # tag 42, bytes(37), 0x00: a 36-byte binary CID follows


def _decode_link(e: bytes) -> CID | None:
    """The link an element encodes, or None (a bucket).  Element bytes come from a block that
    was checked whole (links to dag-cbor only) or from our encoder: not checked again."""
    if len(e) == 41 and e[:5] == _LINK36:
        return CID._parse_bytes(e[5:])
    if e[0] == 0xD8:
        cid = cbor.decode_trusted(e)
        assert isinstance(cid, CID)
        return cid
    return None


def _entry_enc(k: bytes, venc: bytes) -> bytes:
    """A bucket entry [key, value] encoded, from the value's encoding."""
    return b"\x82" + cbor.bytes_head(len(k)) + k + venc


def _bucket_entries(e: bytes) -> builtins.list[tuple[bytes, bytes]]:
    """A bucket's entries as (key, the entry's encoding), sliced from the bucket's encoding
    (trusted bytes, as for _decode_link): array(n), then per entry 0x82, key bytes, value."""
    out: builtins.list[tuple[bytes, bytes]] = []
    pos = 1
    for _ in range(e[0] - 0x80):
        start = pos
        info = e[pos + 1] & 31  # the key's bytes head
        if info < 24:
            klen, kpos = info, pos + 2
        else:
            size = 1 << (info - 24)
            klen, kpos = int.from_bytes(e[pos + 2 : pos + 2 + size], "big"), pos + 2 + size
        pos = _skip(e, kpos + klen)
        out.append((e[kpos : kpos + klen], e[start:pos]))
    return out


def _decode_element(e: bytes, i: int) -> Element:
    """An element from its bytes (part of a block already strictly decoded, or encoded here)."""
    link = _decode_link(e)
    if link is not None:
        return link
    return _element(cbor.decode_trusted(e), i, "HAMT node")


# A root is {"hamt": node, "hashAlg": 18, "bucketSize": 3} with its keys in canonical order (by
# length, then bytewise); a node starts with _Width.prefix (array(2), the map's bytes head).
_ROOT_PREFIX: Final = cbor.map_head(3) + cbor.encode("hamt")
_ROOT_SUFFIX: Final = (
    cbor.encode("hashAlg") + cbor.encode(HASH_ALG) + cbor.encode("bucketSize") + cbor.encode(3)
)


class _PyNodeTable:
    """``_native.NodeTable`` in Python, for a build without the C extension: nodes by binary
    CID, least recently used first, at most `size` nodes and `max_bytes` of weight."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        # keyed by the binary CID (bytes hash and compare in C); an OrderedDict: dropping the
        # oldest is O(1) (next(iter(dict)) after many deletions from the front of a plain
        # dict scans the holes they leave)
        self._d: OrderedDict[bytes, tuple[_Node, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: bytes) -> _Node | None:
        hit = self._d.get(key)
        return None if hit is None else hit[0]

    def touch(self, key: bytes) -> None:
        self._d.move_to_end(key)

    def put(self, key: bytes, node: _Node, weight: int) -> None:
        d = self._d
        self.drop(key)
        d[key] = (node, weight)  # inserted last: the most recently used
        self.bytes += weight
        while len(d) > self.size or self.bytes > self.max_bytes:
            self.bytes -= d.popitem(last=False)[1][1]

    def drop(self, key: bytes) -> bool:
        old = self._d.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        return old is not None

    def items(self) -> list[tuple[bytes, _Node, int]]:
        return [(k, n, w) for k, (n, w) in self._d.items()]


class NodeCache:
    """Decoded HAMT nodes by CID, for ``update_cached``: the least recently used are dropped
    past `size` nodes or `max_bytes` (the memory the nodes take, estimated).

    Nodes are immutable (a CID names one content), so one cache serves every HAMT of a store.
    An update drops the nodes it replaces, so the cache holds the live tree rather than past
    versions of its top nodes: a map of a million entries (50,793 nodes at bitWidth 5, about
    38 MB; 65,795 nodes and 46 MB at 8) stays whole in the default budget and a commit then
    reads nothing back.  The table is ``_native.NodeTable`` where the C extension is built
    (``_native.hamt_set`` works on it directly), else ``_PyNodeTable``.
    """

    def __init__(self, size: int = 1 << 17, max_bytes: int = 96 << 20) -> None:
        self._nodes: _PyNodeTable | _native.NodeTable = (
            _PyNodeTable(size, max_bytes) if _native is None else _native.NodeTable(size, max_bytes)
        )

    @property
    def bytes(self) -> int:
        """The estimated memory of the nodes held (``_weight`` each)."""
        return self._nodes.bytes

    def __len__(self) -> int:
        return len(self._nodes)

    def _get(self, store: BlockStore, cid: CID, p: _Width | None) -> _Node:
        """The node `cid` of a map of bitWidth `p`, or with None, the root `cid`."""
        node = self._nodes.get(cid.buffer)
        if node is not None:
            if p is not None and node.p is not p:  # a node of another map's width
                _wrong_width(cid, node.p.map_bytes, p)
            self._nodes.touch(cid.buffer)
            return node
        block = store.get_block(cid)
        if block is None:
            raise MissingBlock(cid, f" (HAMT {'root' if p is None else 'node'})")
        # checked whole on the way in; the node keeps only the element bytes
        if p is None:
            p = _load_root(store, cid, block)[1]
            node = _Node(*_element_blob(block.data, p, root=True), p)
        else:
            _load_node(store, cid, p, block)
            node = _Node(*_element_blob(block.data, p, root=False), p)
        self._put(cid, node)
        return node

    @staticmethod
    def _weight(node: _Node) -> int:
        """A node's memory, estimated: the object, its int bitmap, its blob and offs with their
        headers, and its table entry; dag/_native.c's hamt_set computes the same.
        Calibrated with sys.getsizeof and the OrderedDict table's (_PyNodeTable) 160 bytes an
        entry: for a cached 1,000,000-entry map at bitWidth 5 it gives 38.1 MB against 35.4
        MB. The C table takes 62 bytes a node against the OrderedDict's 160 (tracemalloc,
        50,793 nodes), so there it errs high by about 150 bytes a node, on the side of a
        smaller cache."""
        return 380 + 4 * node.count() + node.size

    def _put(self, cid: CID, node: _Node) -> None:
        self._nodes.put(cid.buffer, node, self._weight(node))

    def _drop(self, cid: CID) -> None:
        self._nodes.drop(cid.buffer)


class _CachedOverlay:
    """New nodes of one update first, then the cache, then the store."""

    def __init__(self, store: BlockStore, cache: NodeCache, p: _Width) -> None:
        self.store = store
        self.cache = cache
        self.p = p
        self.new: dict[CID, tuple[Block, _Node]] = {}
        self.overflows: builtins.set[CID] = builtins.set()  # roots of sub-trees built whole
        self.replaced: builtins.list[CID] = []  # nodes of the old tree a new node replaces

    def node(self, cid: CID) -> _Node:
        hit = self.new.get(cid)
        if hit is not None:
            return hit[1]
        return self.cache._get(self.store, cid, self.p)

    def add(self, node: _Node) -> CID:
        block = _node_block(node)
        self.new[block.cid] = (block, node)
        return block.cid


def _cset(
    ov: _CachedOverlay, node: _Node, depth: int, k: bytes, h: int, value: object, venc: bytes
) -> _Node:
    """`node` with `k` set to `value` (encoded `venc`): buckets are spliced from their entries'
    encodings, so neither the other entries nor the value are decoded or encoded again."""
    p = ov.p
    if depth >= p.levels:  # pragma: no cover - needs a sha2-256 collision
        raise HamtError("maximum depth reached: more than bucketSize keys share a hash")
    i = (h >> p.shifts[depth]) & p.mask
    bits = node.bits
    if not bits >> i & 1:
        return node.replace_enc(i, b"\x81" + _entry_enc(k, venc))
    e = node._at((bits & ((1 << i) - 1)).bit_count())
    link = _decode_link(e)
    if link is not None:
        new_link = ov.add(_cset(ov, ov.node(link), depth + 1, k, h, value, venc))
        ov.replaced.append(link)
        return node.replace_enc(i, cbor.encode_cid(new_link))
    entries = _bucket_entries(e)
    if len(entries) < BUCKET_SIZE or any(ek == k for ek, _ in entries):
        entries = [x for x in entries if x[0] != k]
        entries.append((k, _entry_enc(k, venc)))
        entries.sort()  # by key: keys are unique
        return node.replace_enc(i, cbor.array_head(len(entries)) + b"".join(x for _, x in entries))
    # a full bucket overflows into a child node
    el = _decode_element(e, i)
    assert not isinstance(el, CID)
    group = [(ek, _hash(ek), ev) for ek, ev in el] + [(k, h, value)]
    built: builtins.list[Block] = []
    nodes: dict[CID, _Node] = {}
    child_slots = _build(group, depth + 1, ov.p, built, nodes)
    for b in built:
        ov.new[b.cid] = (b, nodes[b.cid])
    new = ov.add(_Node.of(child_slots, ov.p))
    ov.overflows.add(new)
    return node.replace_enc(i, cbor.encode_cid(new))


def _cdelete(ov: _CachedOverlay, node: _Node, depth: int, k: bytes, h: int) -> _Node | None:
    i = ov.p.index(h, depth)
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
    return update_cached_encoded(
        store,
        root,
        [(k, v, b"" if v is DELETE else cbor.encode(v)) for k, v in pairs],
        cache,
    )


def update_cached_encoded(
    store: BlockStore,
    root: CID,
    changes: Iterable[tuple[str, object, bytes]],
    cache: NodeCache,
) -> tuple[Block, builtins.list[Block]]:
    """``update_cached`` with each change as (key, value, ``cbor.encode(value)``), for a caller
    that has encoded the value already (state.py); `value` DELETE (its encoding unused) removes
    the key.  The encodings must be ``cbor.encode``'s: they are spliced into the nodes as given."""
    top = old_top = cache._get(store, root, None)
    if _native is not None:
        if not isinstance(changes, list | tuple):
            changes = list(changes)
        if len(changes) == 1 and changes[0][1] is not DELETE:
            done = _set_native(store, root, top, changes[0], cache)
            if done is not None:
                return done
    ov = _CachedOverlay(store, cache, top.p)
    hashes: builtins.list[int] = []
    for key, value, venc in changes:
        k = _key(key)
        h = _hash(k)
        hashes.append(h)
        if value is DELETE:
            new = _cdelete(ov, top, 0, k, h)
            if new is not None:
                top = new
        else:
            _check_size(key, len(venc))
            top = _cset(ov, top, 0, k, h, value, venc)
    root_block = Block._spliced(top.data(_ROOT_PREFIX, _ROOT_SUFFIX))
    if len(root_block.data) > MAX_BLOCK:  # pragma: no cover - entry bounds (bitWidth <= 8)
        raise HamtError(f"HAMT root of {len(root_block.data)} bytes exceeds {MAX_BLOCK}")
    # The new nodes the final tree links to: new nodes lie on the changed keys' paths (or
    # under a bucket that overflowed on one); nodes replaced by a later change are left out.
    needed: builtins.list[Block] = []
    if top is not old_top:
        cache._drop(root)
    for cid in ov.replaced:
        cache._drop(cid)
    if len(hashes) == 1:
        # One change: every new node is in the final tree (one per level of its path, the
        # sub-tree of an overflowed bucket, and no child a delete collapsed, since a node
        # that links a new child cannot collapse), so there is nothing to sort out.
        for cid, (block, node) in ov.new.items():
            needed.append(block)
            cache._put(cid, node)
    elif ov.new:
        _needed_nodes(ov, top, hashes, needed)
    cache._put(root_block.cid, top)
    needed.append(root_block)
    return root_block, needed


def _set_native(
    store: BlockStore,
    root: CID,
    top: _Node,
    change: tuple[str, object, bytes],
    cache: NodeCache,
) -> tuple[Block, builtins.list[Block]] | None:
    """One key set through dag/_native.c: what ``_cset`` and the rest of
    ``update_cached_encoded`` do for it, the cache's updates included; or None when the C
    code declines (a bucket overflows into a child node, a link is not a 36-byte CIDv1, a node
    would exceed the block limit, the maximum depth): the Python path then does it."""
    key, _, venc = change
    k = _key(key)
    _check_size(key, len(venc))
    p = top.p

    def lookup(child: bytes) -> _Node:  # a miss, or a hit at another width (an error)
        return cache._get(store, CID._parse_bytes(child), p)

    done = _native.hamt_set(
        top,
        cache,
        lookup,
        k,
        venc,
        _Node,
        _ROOT_PREFIX,
        _ROOT_SUFFIX,
        root.buffer,
    )
    if done is None:
        return None
    root_block, needed = done
    needed.append(root_block)
    return root_block, needed


def _needed_nodes(
    ov: _CachedOverlay, top: _Node, hashes: builtins.list[int], needed: builtins.list[Block]
) -> None:
    """Several changes: the new nodes on the final tree's paths to the changed keys (and the
    sub-trees of overflowed buckets) go to `needed` and into the cache."""
    cache = ov.cache
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
                    for el in ov.new[stack.pop()][1].links():
                        if el in ov.new and el not in seen:
                            seen.add(el)
                            needed.append(ov.new[el][0])
                            cache._put(el, ov.new[el][1])
                            stack.append(el)
        return hit[1]

    p = top.p
    for h in hashes:
        at: _Node | None = top
        depth = 0
        while at is not None and depth < p.levels:
            el = at.link(p.index(h, depth))
            at = None if el is None else take(el)
            depth += 1


# -- diff --------------------------------------------------------------------------------


def _subtree(store: BlockStore, el: Element | None, p: _Width) -> dict[bytes, object]:
    if el is None:
        return {}
    if isinstance(el, CID):
        return dict(_entries(store, _load_node(store, el, p), p))
    return dict(el)


def _same_bucket(a: Bucket, b: Bucket) -> bool:
    # compare encodings: 1 == 1.0 == True in Python, but they are different data
    return cbor.encode([list(e) for e in a]) == cbor.encode([list(e) for e in b])


def _changed(da: dict[bytes, object], db: dict[bytes, object]) -> Iterator[bytes]:
    for k in sorted(da.keys() | db.keys()):
        if k not in da or k not in db or cbor.encode(da[k]) != cbor.encode(db[k]):
            yield k


def _diff(store: BlockStore, a: Slots, b: Slots, p: _Width) -> Iterator[bytes]:
    for i in sorted(a.keys() | b.keys()):
        ea, eb = a.get(i), b.get(i)
        if isinstance(ea, CID) and ea == eb:
            continue  # a shared sub-tree
        if isinstance(ea, tuple) and isinstance(eb, tuple) and _same_bucket(ea, eb):
            continue
        if isinstance(ea, CID) and isinstance(eb, CID):
            yield from _diff(store, _load_node(store, ea, p), _load_node(store, eb, p), p)
            continue
        yield from _changed(_subtree(store, ea, p), _subtree(store, eb, p))


def diff(store: BlockStore, a: CID, b: CID) -> Iterator[str]:
    """Keys added, removed or changed between HAMTs `a` and `b`; shared sub-trees are skipped
    (maps of different bitWidths share none: their entries are compared whole)."""
    if a == b:
        return
    (sa, pa), (sb, pb) = _load_root(store, a), _load_root(store, b)
    if pa is pb:
        keys = _diff(store, sa, sb, pa)
    else:
        keys = _changed(dict(_entries(store, sa, pa)), dict(_entries(store, sb, pb)))
    for k in keys:
        yield _str(k, f"HAMT {a} / {b}")
