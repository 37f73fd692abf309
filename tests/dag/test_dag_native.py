"""dag/_native.c, the C path of a one-key HAMT set: the same blocks, CIDs and cache as the
Python path, and a decline (None) wherever the Python path must do the work; and the block
store's Bloom filter in C: the same bits as store._Filter's Python."""

import gc
import json
import os
import random
import sqlite3
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dag import block as block_mod
from dag import cbor, hamt
from dag import store as store_mod
from dag.block import Block
from dag.cid import CID
from dag.store import MemoryBlockStore

native = hamt._native
if native is None and os.environ.get("P2PICO_REQUIRE_NATIVE"):
    pytest.fail("dag._native was not built (setup.py) and P2PICO_REQUIRE_NATIVE is set")
pytestmark = pytest.mark.skipif(native is None, reason="dag._native is not built")

WIDTHS = [3, 4, 5, 6, 8]


def _cache_state(
    cache: hamt.NodeCache,
) -> tuple[list[tuple[bytes, int, bytes, bytes, int]], int]:
    """The cache's nodes in LRU order, with their weights, and its total."""
    return [(k, n.bits, n.blob, n.offs, w) for k, n, w in cache._nodes.items()], cache.bytes


def _assert_untracked(cache: hamt.NodeCache) -> None:
    """No cached node is in the cyclic GC's lists (the nodes hamt_set made and those
    NodeCache._put filed in the C table)."""
    assert isinstance(cache._nodes, native.NodeTable)
    assert len(cache._nodes)
    for _, node, _ in cache._nodes.items():
        assert not gc.is_tracked(node)


class _Counting:
    """dag._native, counting the calls of its function `counted` that did the work (not None)
    and declined (None); every other name is dag._native's own."""

    def __init__(self, counted: str) -> None:
        self.counted = counted
        self.done = self.declined = 0

    def __getattr__(self, name: str) -> object:
        fn = getattr(native, name)
        if name != self.counted:
            return fn

        def count(*args: object) -> object:
            got = fn(*args)
            if got is None:
                self.declined += 1
            else:
                self.done += 1
            return got

        return count


def _both(
    monkeypatch: pytest.MonkeyPatch,
    items: dict[str, object],
    sets: list[tuple[str, object]],
    width: int,
    counting: _Counting | None = None,
    cache_limits: tuple[int, int] = (1 << 17, 96 << 20),
) -> tuple[list[list[Block]], list[list[Block]]]:
    """Run `sets` one commit each through the C path and through the Python path, from the
    same map; return each path's written blocks per commit (caches compared on the way)."""
    runs = []
    for use_native in (True, False):
        monkeypatch.setattr(hamt, "_native", (counting or native) if use_native else None)
        store = MemoryBlockStore()
        cache = hamt.NodeCache(*cache_limits)
        root, blocks = hamt.build_blocks(items, cache, bit_width=width)
        store.put_many(blocks)
        cid, commits, states = root.cid, [], []
        for key, value in sets:
            new, written = hamt.update_cached(store, cid, [(key, value)], cache)
            store.put_many(written)
            commits.append(written)
            states.append(_cache_state(cache))
            cid = new.cid
        if use_native:
            _assert_untracked(cache)
        runs.append((commits, states))
    (c_commits, c_states), (py_commits, py_states) = runs
    assert c_states == py_states  # the same nodes, in the same LRU order
    return c_commits, py_commits


def _same(a: list[list[Block]], b: list[list[Block]]) -> None:
    assert [[(x.cid, x.data) for x in w] for w in a] == [[(x.cid, x.data) for x in w] for w in b]


@pytest.mark.parametrize("width", WIDTHS)
def test_sets_equal_the_python_path(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    rng = random.Random(width)
    items: dict[str, object] = {f"k{i:05d}": i for i in range(2000)}
    sets: list[tuple[str, object]] = []
    for n in range(300):
        pick = rng.random()
        if pick < 0.5:
            sets.append((f"k{rng.randrange(2000):05d}", rng.choice([n, -n, "x" * (n % 40), None])))
        elif pick < 0.8:
            sets.append((f"new{n}", [n, {"a": n}]))  # a new key: a new slot or a fuller bucket
        else:
            sets.append((f"k{rng.randrange(2000):05d}", rng.random()))
    counting = _Counting("hamt_set")
    c, py = _both(monkeypatch, items, sets, width, counting)
    _same(c, py)
    assert counting.done + counting.declined == len(sets)
    assert counting.done > 0.9 * len(sets)  # the C path did most; overflows were declined
    # and each commit's root is the one a whole rebuild gives
    final = dict(items)
    final.update(sets)
    assert c[-1][-1].cid == hamt.build(MemoryBlockStore(), final, bit_width=width)
    for written in c:
        for block in written:
            assert block.data == Block.encode(block.value).data  # canonical bytes
            assert block.cid == CID.of(block.data)


@pytest.mark.parametrize("limits", [(3, 1 << 30), (1 << 17, 6000)])
def test_evictions_equal_the_python_path(
    monkeypatch: pytest.MonkeyPatch, limits: tuple[int, int]
) -> None:
    """A cache too small for the path (by count, then by bytes): the C code evicts as
    NodeCache._put does, and misses go through the store."""
    rng = random.Random(7)
    items: dict[str, object] = {f"k{i:05d}": i for i in range(3000)}
    sets: list[tuple[str, object]] = [(f"k{rng.randrange(3000):05d}", n) for n in range(200)]
    counting = _Counting("hamt_set")
    c, py = _both(monkeypatch, items, sets, 5, counting, limits)
    _same(c, py)
    assert counting.done == len(sets)


KEYS = st.one_of(st.text(alphabet="abcdefghij", min_size=1, max_size=3), st.text(max_size=6))
VALUES = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.binary(max_size=9),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(WIDTHS),
    st.dictionaries(KEYS, VALUES, max_size=120),
    st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=30),
)
def test_random_sets_equal_the_python_path(
    monkeypatch: pytest.MonkeyPatch,
    width: int,
    items: dict[str, object],
    sets: list[tuple[str, object]],
) -> None:
    c, py = _both(monkeypatch, items, sets, width)
    _same(c, py)


def _full_bucket_map() -> tuple[MemoryBlockStore, hamt.NodeCache, CID, str]:
    """A bitWidth-3 map whose root slot for a fresh key holds a full bucket (3 entries)."""
    store, cache = MemoryBlockStore(), hamt.NodeCache()
    p = hamt._width(3)
    by_slot: dict[int, list[str]] = {}
    i = 0
    while True:
        key = f"x{i}"
        slot = p.index(hamt._hash(key.encode()), 0)
        by_slot.setdefault(slot, []).append(key)
        if len(by_slot[slot]) == 4:
            break
        i += 1
    *three, fourth = by_slot[slot]
    root, blocks = hamt.build_blocks({k: 1 for k in three}, cache, bit_width=3)
    store.put_many(blocks)
    return store, cache, root.cid, fourth


def test_a_full_bucket_is_declined_and_overflows_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    store, cache, root, fourth = _full_bucket_map()
    top = cache._get(store, root, None)
    k = fourth.encode()

    def lookup(child: bytes) -> hamt._Node:
        return cache._get(store, CID._parse_bytes(child), top.p)

    assert native is not None
    before = _cache_state(cache)
    got = native.hamt_set(
        top,
        cache,
        lookup,
        k,
        cbor.encode(1),
        hamt._Node,
        hamt._ROOT_PREFIX,
        hamt._ROOT_SUFFIX,
        root.buffer,
    )
    assert got is None
    assert _cache_state(cache) == before  # a decline leaves the cache as it was
    # update_cached then overflows the bucket into a child node, as the Python path does
    new, written = hamt.update_cached(store, root, [(fourth, 1)], cache)
    store.put_many(written)
    assert len(written) == 2  # the child node and the root
    assert hamt.to_dict(store, new.cid)[fourth] == 1


def test_bad_arguments_raise_type_errors() -> None:
    assert native is not None
    store, cache, root, _ = _full_bucket_map()
    top = cache._get(store, root, None)
    affixes = (hamt._ROOT_PREFIX, hamt._ROOT_SUFFIX, root.buffer)
    with pytest.raises(TypeError, match="9 arguments"):
        native.hamt_set(top, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="value"):
        native.hamt_set(top, cache, None, b"k", "1", hamt._Node, *affixes)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="node_type"):
        native.hamt_set(top, cache, None, b"k", b"\x01", len, *affixes)  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="_nodes"):
        native.hamt_set(top, object(), None, b"k", b"\x01", hamt._Node, *affixes)  # type: ignore[arg-type]
    py_cache = hamt.NodeCache()
    py_cache._nodes = hamt._PyNodeTable(10, 1000)
    with pytest.raises(TypeError, match="NodeTable"):
        native.hamt_set(top, py_cache, None, b"k", b"\x01", hamt._Node, *affixes)
    bad = hamt._Node(top.bits, "not bytes", top.offs, top.p)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="blob and offs"):
        native.hamt_set(bad, cache, None, b"k", b"\x01", hamt._Node, *affixes)  # type: ignore[arg-type]
    bad = hamt._Node(top.bits, top.blob, top.offs[:-1], top.p)
    with pytest.raises(TypeError, match="uint32s"):
        native.hamt_set(bad, cache, None, b"k", b"\x01", hamt._Node, *affixes)  # type: ignore[arg-type]
    for offs in (top.offs[:-4] + b"\xff\xff\x00\x00", b"\x01\x00\x00\x00" + top.offs[4:]):
        bad = hamt._Node(top.bits, top.blob, offs, top.p)
        with pytest.raises(ValueError, match="rise from 0 to len"):
            native.hamt_set(bad, cache, None, b"k", b"\x01", hamt._Node, *affixes)  # type: ignore[arg-type]


class _SubNode(hamt._Node):
    __slots__ = ()


def _set_with(node_type: type[hamt._Node]) -> tuple[CID, list[CID], list[type]]:
    """One hamt_set on a fresh 300-entry map (bitWidth 5) whose cached nodes are of
    `node_type`: the new root, the new nodes and the types of the nodes the cache then holds."""
    store, cache = MemoryBlockStore(), hamt.NodeCache()
    root, blocks = hamt.build_blocks({f"k{i}": i for i in range(300)}, cache, bit_width=5)
    store.put_many(blocks)
    for key, node, weight in cache._nodes.items():  # the same nodes, as node_type
        cache._nodes.put(key, node_type(node.bits, node.blob, node.offs, node.p), weight)
    top = cache._nodes.get(root.cid.buffer)
    assert type(top) is node_type

    def lookup(child: bytes) -> hamt._Node:
        raise AssertionError("every node is cached")

    got = native.hamt_set(
        top, cache, lookup, b"k7", cbor.encode(-1), node_type, hamt._ROOT_PREFIX,
        hamt._ROOT_SUFFIX, root.cid.buffer,
    )  # fmt: skip
    assert got is not None
    new_root, new = got
    return new_root.cid, [b.cid for b in new], [type(n) for _, n, _ in cache._nodes.items()]


def test_nodes_of_another_type_take_the_generic_attribute_path() -> None:
    """hamt_set reads and sets _Node's slots in place; a subclass's nodes (whose type is not
    _Node) go through attribute lookup, with the same blocks, and the nodes it makes are of
    the type it is given; a node with an unset slot raises what the attribute would."""
    assert native is not None
    plain = _set_with(hamt._Node)
    sub = _set_with(_SubNode)
    assert sub[:2] == plain[:2]
    assert set(plain[2]) == {hamt._Node}
    assert set(sub[2]) == {_SubNode}
    store, cache, root, _ = _full_bucket_map()
    unset = hamt._Node.__new__(hamt._Node)
    with pytest.raises(AttributeError, match="p"):
        native.hamt_set(
            unset, cache, None, b"k", b"\x01", hamt._Node, hamt._ROOT_PREFIX,
            hamt._ROOT_SUFFIX, root.buffer,
        )  # type: ignore[arg-type]  # fmt: skip
    unset.p = cache._get(store, root, None).p
    with pytest.raises(AttributeError, match="bits"):
        native.hamt_set(
            unset, cache, None, b"k", b"\x01", hamt._Node, hamt._ROOT_PREFIX,
            hamt._ROOT_SUFFIX, root.buffer,
        )  # type: ignore[arg-type]  # fmt: skip


def _table_ops(seed: int, n: int) -> list[tuple[object, ...]]:
    """Random NodeTable operations over a few hundred keys, most of them CIDs (a sha2-256
    multihash at the end) and some not (the table hashes those)."""
    rng = random.Random(seed)
    keys = [CID.of(b"%d" % i).buffer for i in range(300)] + [b"k%d" % i for i in range(60)]
    p = hamt._width(5)
    ops: list[tuple[object, ...]] = []
    for i in range(n):
        key, pick = rng.choice(keys), rng.random()
        if pick < 0.5:
            node = hamt._Node.from_enc(i, (b"\x81\x82a1\x01",) * rng.randrange(4), p)
            ops.append(("put", key, node, rng.randrange(2000)))
        elif pick < 0.7:
            ops.append(("drop", key))
        elif pick < 0.85:
            ops.append(("get", key))
        else:
            ops.append(("touch", key))
    return ops


def _run_table(table: Any, ops: list[tuple[object, ...]]) -> list[object]:
    out: list[object] = []
    for name, key, *rest in ops:
        if name == "touch" and table.get(key) is None:
            continue  # a KeyError either way (tested below)
        out.append(getattr(table, str(name))(key, *rest))
        out.append((len(table), table.bytes))
    out.append(table.items())
    return out


@pytest.mark.parametrize(("size", "max_bytes"), [(1 << 17, 1 << 30), (40, 1 << 30), (500, 9000)])
def test_the_c_node_table_is_python_s(size: int, max_bytes: int) -> None:
    """The same operations on the C table and on hamt._PyNodeTable: the same answers, sizes,
    weights and LRU order, with and without evictions (by count and by weight); the index
    grows and is rebuilt on the way (4,000 operations over 360 keys)."""
    assert native is not None
    ops = _table_ops(size, 4000)
    c_table = native.NodeTable(size, max_bytes)
    py_table = hamt._PyNodeTable(size, max_bytes)
    got = _run_table(c_table, ops)
    assert got == _run_table(py_table, ops)
    assert got[-1]  # it held nodes at the end
    assert sum(1 for op in ops if op[0] == "put") > 1500
    for _, node, _ in c_table.items():
        assert not gc.is_tracked(node)


def test_the_node_table_refuses_bad_arguments() -> None:
    assert native is not None
    p = hamt._width(5)
    table = native.NodeTable(10, 1000)
    key = CID.of(b"x").buffer
    with pytest.raises(KeyError):
        table.touch(key)
    with pytest.raises(TypeError, match="3 arguments"):
        table.put(key, hamt._Node.from_enc(1, (b"\x81",), p))  # type: ignore[call-arg]
    offs = hamt._U32([0, 1]).tobytes()
    for bad in (
        hamt._Node(1, "not bytes", offs, p),  # type: ignore[arg-type]
        hamt._Node(1, b"\x81", offs[:-1], p),
        hamt._Node(1, b"\x81", b"", p),
        hamt._Node(1, b"\x81", bytearray(offs), p),  # type: ignore[arg-type]
        hamt._Node(1.0, b"\x81", offs, p),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="bits, blob and offs"):
            table.put(key, bad, 1)
        assert gc.is_tracked(bad)  # left as it was
    with pytest.raises(AttributeError):
        table.put(key, object(), 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty bytes"):
        table.get("a str")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty bytes"):
        table.drop(b"")
    with pytest.raises(ValueError, match="weight"):
        table.put(key, hamt._Node.from_enc(1, (b"\x81",), p), -1)
    with pytest.raises(ValueError, match=">= 0"):
        native.NodeTable(-1, 10)
    assert len(table) == 0
    assert table.bytes == 0
    assert table.items() == []


def test_a_lookup_error_propagates() -> None:
    """A child the store lost raises through the C code (state.py then rebuilds the map)."""
    store = MemoryBlockStore()
    items = {f"k{i}": i for i in range(500)}
    root, _ = hamt.build_blocks(items, None, bit_width=5)
    store.put_many([root])  # the root only: every child is missing
    with pytest.raises(hamt.MissingBlock):
        hamt.update_cached(store, root.cid, [("k1", 2)], hamt.NodeCache())


# -- the block store's Bloom filter (store._Filter.add_many and .maybe in C)


def _python_filter(nbits: int, keys: list[bytes]) -> store_mod._Filter:
    f = store_mod._Filter(nbits)
    for key in keys:
        f.add(key)
    return f


# CIDs (or any bytes): sha2-256 ones (their key is 8 digest bytes) and others (hashed first)
sha_cids = st.builds(
    lambda prefix, digest: prefix + b"\x12\x20" + digest,
    st.sampled_from([b"", b"\x01\x71", b"\x01\x55", b"\x01\x70"]),
    st.binary(min_size=32, max_size=32),
)
filter_keys = st.lists(st.one_of(sha_cids, st.binary(min_size=0, max_size=40)), max_size=60)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([1 << 6, 1 << 12, 1 << 16, 1 << 20]), filter_keys, filter_keys)
def test_the_c_filter_sets_and_reads_the_bits_python_does(
    nbits: int, keys: list[bytes], probes: list[bytes]
) -> None:
    """Keys as CIDs, rows of CIDs, and idx keys (store._k, as the rebuild's scan of idx gives
    them): the same bits as Python's filter given the CIDs."""
    assert native is not None
    py = _python_filter(nbits, keys)
    c = store_mod._Filter(nbits)
    third = len(keys) // 3
    assert native.bloom_add(c.bits, c.mask, keys[:third]) == third
    rows = [(k,) for k in keys[third : 2 * third]]
    assert native.bloom_add(c.bits, c.mask, rows) == third
    idx_rows = [(store_mod._k(k),) for k in keys[2 * third :]]
    assert native.bloom_add(c.bits, c.mask, idx_rows) == len(keys) - 2 * third
    assert c.bits == py.bits
    assert native.bloom_maybe(c.bits, c.mask, probes + keys) == [
        k for k in probes + keys if k in py
    ]
    assert native.bloom_maybe(c.bits, c.mask, keys) == keys  # no false negatives


def _put_many_and_fail(s: store_mod.SqliteBlockStore, blocks: list[Block]) -> None:
    with s.group():
        s.put_many(blocks)
        raise RuntimeError("undo")


def test_the_store_fills_the_same_filter_and_index_with_and_without_c(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Inserts, a rollback, deletes, index merges and a rebuild of the filter (its scan of idx)
    through both paths: the same filter bits, and the same rows in idx."""
    n = store_mod.FILTER_MIN_BITS // 16 + 300  # past one entry per 16 bits: a rebuild
    blocks = [Block.raw(b"block %d" % i) for i in range(n)]
    filters = []
    for use_native in (True, False):
        monkeypatch.setattr(store_mod, "_native", native if use_native else None)
        with store_mod.SqliteBlockStore(tmp_path / f"{use_native}.sqlite", batch=500) as s:
            for at in range(0, n, 700):
                s.put_many(blocks[at : at + 700])
            with pytest.raises(RuntimeError, match="undo"):
                _put_many_and_fail(s, [Block.raw(b"rolled back")])
            assert s.delete_many([b.cid for b in blocks[-650:-600]]) == 50  # some in a batch
            s.put_many(blocks[-640:-630])  # put again: twice in their merge bucket
            later = 0
            while s._building is not None:  # the rebuild's scan, a step per transaction
                s.put(Block.raw(b"later %d" % later))
                later += 1
            assert later > 1
            assert s._filter is not None
            assert s._filter.mask + 1 > store_mod.FILTER_MIN_BITS
            assert s._filter.maybe([b.cid.buffer for b in blocks]) == [b.cid.buffer for b in blocks]
            assert s._indexed_upto > n // 2
            idx = s._db.execute("SELECT k, id FROM idx ORDER BY k").fetchall()
            assert len(idx) > n // 2
            filters.append((bytes(s._filter.bits), s._filter.count, idx))
    assert filters[0] == filters[1]


def test_bad_filter_arguments_raise() -> None:
    assert native is not None
    bits = bytearray(8)
    with pytest.raises(TypeError, match="3 arguments"):
        native.bloom_add(bits, 63)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bytearray"):
        native.bloom_add(bytes(8), 63, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not fit"):
        native.bloom_add(bits, 62, [])  # not a power of two less one
    with pytest.raises(ValueError, match="does not fit"):
        native.bloom_maybe(bits, 127, [])  # more bits than the bytearray has
    with pytest.raises(TypeError, match="must be bytes or an int, got str"):
        native.bloom_add(bits, 63, ["cid"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be bytes, got int"):
        native.bloom_maybe(bits, 63, [5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be bytes, got tuple"):
        native.bloom_maybe(bits, 63, [(b"row",)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not iterable"):
        native.bloom_maybe(bits, 63, 5)  # type: ignore[arg-type]


def _twins(digests: list[bytes]) -> list[bytes]:
    """dag-cbor and raw CIDs of the same digests: pairs with one 64-bit key (store._k)."""
    return [p + b"\x12\x20" + d for d in digests for p in (b"\x01\x71", b"\x01\x55")]


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.lists(st.one_of(sha_cids, st.binary(min_size=0, max_size=12)), max_size=40),
        st.lists(st.binary(min_size=32, max_size=32), max_size=8).map(_twins),
    ),
    st.data(),
)
def test_the_c_merge_rows_are_python_s(bucket: list[bytes], data: st.DataObject) -> None:
    """Present keys once each, in idx order (their 64-bit key, then bytewise), as (key, id)
    pairs; duplicates and keys gone from entries left out (store._merge_rows)."""
    assert native is not None
    held = data.draw(st.lists(st.sampled_from(bucket), unique=True) if bucket else st.just([]))
    dupes = data.draw(st.lists(st.sampled_from(held), max_size=5) if held else st.just([]))
    entries = {k: 1000 + i for i, k in enumerate(held)}
    out: list[int] = [-1]
    n = native.merge_rows(bucket + dupes, entries, out)
    assert out[0] == -1
    expected = sorted(set(held), key=lambda k: (store_mod._k(k), k))
    assert n == len(expected)
    assert out[1::2] == [store_mod._k(k) for k in expected]
    assert all(-(1 << 63) <= k < 1 << 63 for k in out[1::2])
    assert out[2::2] == [entries[k] for k in expected]
    py: list[int] = [-1]
    store_mod._native = None  # type: ignore[assignment]  # the Python fallback
    try:
        assert store_mod._merge_rows(bucket + dupes, entries, py) == n
    finally:
        store_mod._native = native
    assert py == out


def test_bad_merge_rows_arguments_raise() -> None:
    assert native is not None
    with pytest.raises(TypeError, match="3 arguments"):
        native.merge_rows([], {})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="must be lists"):
        native.merge_rows((b"k",), {}, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes, got str"):
        native.merge_rows([b"k", "k"], {b"k": 1}, [])  # type: ignore[list-item]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_c_spliced_blocks_are_python_s(data: bytes) -> None:
    """native.spliced (Block._spliced where C is built) makes the Block the Python code
    makes: the same CID in every slot, the same bytes, a value decoded on first use."""
    assert native is not None
    assert Block._spliced is native.spliced
    c, py = native.spliced(data), block_mod._SPLICED_PY(data)
    assert type(c) is Block
    assert type(c.cid) is CID
    assert c.data is data
    assert c.cid == py.cid
    assert hash(c.cid) == hash(py.cid)
    assert str(c.cid) == str(py.cid)
    assert (c.cid.version, c.cid.codec, c.cid.multihash, c.cid.buffer) == (
        py.cid.version,
        py.cid.codec,
        py.cid.multihash,
        py.cid.buffer,
    )
    assert c.cid == CID.of(data)

    def decoded(block: Block) -> object:
        try:
            return block.value
        except cbor.DagCborError as e:
            return ("error", str(e))

    assert decoded(c) == decoded(py)


def test_c_spliced_and_bind_blocks_refuse_bad_arguments() -> None:
    assert native is not None
    with pytest.raises(TypeError, match="must be bytes, got bytearray"):
        native.spliced(bytearray(b"\xa0"))  # type: ignore[arg-type]

    class NoSlots:
        pass

    class SomeSlots:  # "version" is a slot, "codec" is not: nothing of it may be kept
        __slots__ = ("version",)

    with pytest.raises(TypeError, match="not a __slots__ member"):
        native.bind_blocks(NoSlots, Block, object())
    with pytest.raises(TypeError, match=r"SomeSlots\.codec is not a __slots__ member"):
        native.bind_blocks(SomeSlots, Block, object())
    with pytest.raises(TypeError, match="bind_blocks"):
        native.bind_blocks(CID, Block)  # type: ignore[call-arg]
    # a failed bind leaves the binding as it was
    cid, expected = native.spliced(b"\xa0").cid, CID.of(b"\xa0")
    assert (cid.version, cid.codec, cid.multihash, cid.buffer) == (
        expected.version,
        expected.codec,
        expected.multihash,
        expected.buffer,
    )


def _store_state(s: store_mod.SqliteBlockStore) -> tuple[object, ...]:
    db = s._db
    return (
        db.execute("SELECT id, cid, data, at FROM blk ORDER BY id").fetchall(),
        Path(f"{db.execute('PRAGMA database_list').fetchone()[2]}-data").read_bytes(),
        db.execute("SELECT k, id FROM idx ORDER BY k").fetchall(),
        dict(s._pending),
        None if s._batch is None else dict(s._batch.entries),
        [list(b) for b in s._buckets],
        s._tail,
        None if s._filter is None else (bytes(s._filter.bits), s._filter.count),
    )


def test_small_puts_fill_the_store_as_the_python_path_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Puts of a few blocks (a commit's), through insert_rows/insert_record and through
    Python: duplicates in one put, blocks put before (in memory, in a batch being merged, in
    idx), a rolled-back group, deletes and puts again; the same rows, memory and filter."""
    rng = random.Random(7)
    # a third of them past 512 bytes (INLINE_MAX): their bytes in the data file
    pool = [Block.raw(b"b%d" % i * (1 if i % 3 else 300)) for i in range(3000)]
    plan: list[tuple[str, list[int]]] = []
    nxt = 0
    for step in range(400):
        if step % 37 == 36:  # new blocks, put again later (with an old one: the Python path)
            plan.append(("undo", [nxt, nxt + 1] + [rng.randrange(nxt)] * (step % 2)))
        elif step % 53 == 52:
            plan.append(("delete", [rng.randrange(nxt) for _ in range(4)]))
        else:  # new blocks (a duplicate now and then), and old ones in a third of the puts
            new = list(range(nxt, nxt + rng.randrange(1, 8)))
            nxt = new[-1] + 1
            old = [rng.randrange(nxt) for _ in range(rng.randrange(3))] if step % 3 == 0 else []
            plan.append(("put", new + new[: rng.randrange(2)] + old))
    states = []
    counting = _Counting("insert_rows")
    for use_native in (True, False):
        monkeypatch.setattr(store_mod, "_native", counting if use_native else None)
        live: set[int] = set()  # the pool's blocks the store must hold
        with store_mod.SqliteBlockStore(tmp_path / f"{use_native}.sqlite", batch=64) as s:
            assert (s._sql is not None) == use_native  # rows and merges bound from C, or not
            for what, ids in plan:
                blocks = [pool[i] for i in ids]
                if what == "put":
                    s.put_many(blocks)
                    live.update(ids)
                elif what == "delete":
                    s.delete_many([b.cid for b in blocks])
                    live.difference_update(ids)
                else:
                    with pytest.raises(RuntimeError, match="undo"):
                        _put_many_and_fail(s, blocks)
            with s.group():  # and inside a group
                s.put_many([*pool[:5], Block.raw(b"grouped")])
            live.update(range(5))
            states.append(_store_state(s))
            held = [i for i, b in enumerate(pool) if s.get(b.cid) == b.data]
            assert held == sorted(live)  # and none other, rolled back or deleted, is there
    assert counting.done > 150
    assert counting.declined > 50
    assert states[0] == states[1]


@pytest.mark.parametrize("share", [False, True])
def test_insert_rows_gives_the_rows_or_declines(share: bool) -> None:
    assert native is not None
    f = store_mod._Filter(1 << 12)
    a, b, c = Block.raw(b"a" * 513), Block.raw(b"b" * 512), Block.encode({"c": "x" * 600})
    buf = bytearray(b"xyz")  # bytes buffered before: the file's 1000..1002
    got = native.insert_rows([a, b, a, c], f.bits, f.mask, 41, buf, 1000, share)
    assert got is not None
    args, keys = got
    assert keys == [a.cid.buffer, b.cid.buffer, c.cid.buffer]  # each CID once, first kept
    at = 1003
    assert args == [
        41, a.cid.buffer, b"", at << 24 | len(a.data),
        42, b.cid.buffer, b.data, 0,  # 512 bytes or less: in the row
        43, c.cid.buffer, b"", (at + len(a.data)) << 24 | len(c.data),
    ]  # fmt: skip
    assert buf == b"xyz" + a.data + c.data
    assert all(type(x) is int for x in args[::4] + args[3::4])  # sqlite3 binds no adapter
    if share:  # the blocks' own bytes, bound in place by Sql.run
        assert args[1] is a.cid.buffer
        assert args[6] is b.data
        assert all(type(x) is bytes for x in args[1::4] + args[2::4])
    else:  # copies Python's sqlite3 binds without an adapter lookup
        assert all(type(x) is bytearray for x in args[1::4] + args[2::4])
    f.add(b.cid.buffer)  # the filter may hold b: the Python path checks memory and idx
    assert native.insert_rows((a, b), f.bits, f.mask, 1, buf, 0, share) is None
    assert native.insert_rows([], f.bits, f.mask, 1, buf, 0, share) is None
    assert native.insert_rows([a] * 17, f.bits, f.mask, 1, buf, 0, share) is None  # two INSERTs
    assert native.insert_rows([a, object()], f.bits, f.mask, 1, buf, 0, share) is None  # type: ignore[list-item]
    big = Block.raw(bytes(1 << 24))  # a row's data, not the file's
    assert native.insert_rows([a, big], f.bits, f.mask, 1, buf, 0, share) is None
    assert buf == b"xyz" + a.data + c.data  # declined: the buffer as it was
    with pytest.raises(OverflowError, match="2\\*\\*38"):
        native.insert_rows([a], f.bits, f.mask, 1, buf, (1 << 38) - 600, share)
    assert buf == b"xyz" + a.data + c.data


def test_sql_runs_on_the_stores_connection_and_raises_as_sqlite3_does(tmp_path: Path) -> None:
    assert native is not None
    s = store_mod.SqliteBlockStore(tmp_path / "s.sqlite")
    sql = s._sql
    assert sql is not None
    block = Block.encode({"x": "y" * 600})
    s.put(block)  # through sql.run: a row, its bytes in the data file
    meta = "INSERT INTO meta (key, value) VALUES (?, ?)"
    sql.run(meta, [0, "skipped", b"probe", 7, 1], 2, 4)  # params[2:4]; bytes bind as a blob
    assert s._db.execute("SELECT value FROM meta WHERE key = ?", (b"probe",)).fetchone() == (7,)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed") as e:
        sql.run(meta, [b"probe", 8], 0, 2)
    assert e.value.sqlite_errorcode == 1555  # SQLITE_CONSTRAINT_PRIMARYKEY
    with pytest.raises(sqlite3.OperationalError, match='near "VALUSE": syntax error'):
        sql.run("INSERT INTO meta VALUSE (?, ?)", [1, 2], 0, 2)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        sql.run("DELETE FROM absent WHERE k = ?", [1], 0, 1)
    with pytest.raises(ValueError, match="one statement"):
        sql.run("SELECT 1; SELECT 2", [], 0, 0)
    with pytest.raises(ValueError, match="has 2 parameters, 1 given"):
        sql.run(meta, [b"k", 1], 0, 1)
    with pytest.raises(IndexError, match="0:3 is not a slice of 2"):
        sql.run(meta, [b"k", 1], 0, 3)
    with pytest.raises(TypeError, match="parameter 1 is float"):
        sql.run(meta, [b"k", 1.5], 0, 2)
    with pytest.raises(OverflowError):
        sql.run(meta, [b"k", 1 << 64], 0, 2)
    sql.run("SELECT ?", [None], 0, 1)  # a statement with rows: they are discarded
    assert s.get(block.cid) == block.data  # the store goes on: nothing was left bound
    s.put(Block.raw(b"after"))
    assert len(s) == 2
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        sql.run(meta, [b"k", 1], 0, 2)
    with store_mod.SqliteBlockStore(tmp_path / "s.sqlite") as again:  # all of it was committed
        assert again.get(block.cid) == block.data
        probe = again._db.execute("SELECT value FROM meta WHERE key = ?", (b"probe",))
        assert probe.fetchall() == [(7,)]


def test_sql_takes_only_the_connection_opened_since_sql_expect(tmp_path: Path) -> None:
    assert native is not None
    assert store_mod._bind_sqlite()  # binding again (a reimport) keeps the first binding
    native.sql_expect()
    with pytest.raises(RuntimeError, match="no connection was opened"):
        native.Sql(str(tmp_path / "a.sqlite"))
    db = sqlite3.connect(tmp_path / "a.sqlite")
    try:
        with pytest.raises(ValueError, match=r"not .*b\.sqlite"):
            native.Sql(os.path.realpath(tmp_path / "b.sqlite"))
        with pytest.raises(RuntimeError, match="no connection was opened"):  # taken: once
            native.Sql(os.path.realpath(tmp_path / "a.sqlite"))
    finally:
        db.close()


def test_bad_insert_arguments_raise() -> None:
    assert native is not None
    bits = bytearray(8)
    buf = bytearray()
    with pytest.raises(TypeError, match="7 arguments"):
        native.insert_rows([], bits, 63, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="list or a tuple"):
        native.insert_rows(iter([]), bits, 63, 1, buf, 0, False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytearray"):
        native.insert_rows([], bytes(8), 63, 1, buf, 0, False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not fit"):
        native.insert_rows([], bits, 127, 1, buf, 0, False)
    with pytest.raises(TypeError):
        native.insert_rows([], bits, 63, "1", buf, 0, False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="buf must be a bytearray"):
        native.insert_rows([], bits, 63, 1, b"", 0, False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="end must be"):
        native.insert_rows([], bits, 63, 1, buf, -1, False)
    buckets: list[list[bytes]] = [[] for _ in range(256)]
    with pytest.raises(TypeError, match="5 arguments"):
        native.insert_record([], 1, {}, buckets)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="buckets"):
        native.insert_record([], 1, {}, buckets[:255], [])
    with pytest.raises(TypeError, match="non-empty bytes, got str"):
        native.insert_record(["cid"], 1, {}, buckets, [])  # type: ignore[list-item]
    pending: dict[bytes, int] = {}
    log: list[tuple[None, bytes, int]] = []
    native.insert_record([b"\x01\x80", b"\x02\x05"], 7, pending, buckets, log)
    assert pending == {b"\x01\x80": 7, b"\x02\x05": 8}
    assert buckets[0] == [b"\x01\x80"]
    assert buckets[0x85] == [b"\x02\x05"]
    assert log == [(None, b"\x01\x80", 7), (None, b"\x02\x05", 8)]


def test_sign_spliced_signs_as_pynacl() -> None:
    assert native is not None
    from dag import did
    from dag.did import Keypair, verify

    assert did._SIGN_SPLICED is native.sign_spliced  # bound, and the check at import passed
    kp = Keypair.from_seed(bytes(range(32, 64)))
    for n in (0, 1, 64, 300, 5000):
        msg = os.urandom(n)
        got = kp.sign_spliced(b"\x82\x58\x40", msg)
        assert got == b"\x82\x58\x40" + kp.sign(msg) + msg  # Ed25519 is deterministic
        assert verify(kp.public_key, msg, got[3:67])
    assert kp.sign_spliced(b"", b"m")[64:] == b"m"


def test_sign_spliced_bad_arguments_and_no_signer() -> None:
    assert native is not None
    from dag import did

    secret = did.Keypair.from_seed(bytes(32))._secret
    with pytest.raises(TypeError, match="3 arguments"):
        native.sign_spliced(b"", b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="argument 2 must be bytes"):
        native.sign_spliced(b"", bytearray(b"m"), secret)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 bytes"):
        native.sign_spliced(b"", b"m", secret[:32])
    native.bind_signer(0)
    try:
        with pytest.raises(RuntimeError, match="bind_signer was not called"):
            native.sign_spliced(b"", b"m", secret)
    finally:
        assert did._native_signer() is native.sign_spliced  # bound again, checked again
    assert native.sign_spliced(b"", b"m", secret)[64:] == b"m"


def test_a_signer_that_signs_otherwise_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert native is not None
    from dag import did

    secret = did.Keypair.from_seed(bytes(32))._secret
    monkeypatch.setattr(did.nacl.bindings, "crypto_sign", lambda m, sk: bytes(64) + m)
    try:
        assert did._native_signer() is None  # its signature is not the (patched) PyNaCl one
        with pytest.raises(RuntimeError, match="bind_signer was not called"):
            native.sign_spliced(b"", b"m", secret)  # and it was unbound
    finally:
        monkeypatch.undo()
        assert did._native_signer() is native.sign_spliced


_CIDS = st.binary(max_size=8).map(CID.of) | st.binary(max_size=8).map(lambda b: CID.of(b, 0x55))
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text()
    | st.binary(max_size=600)
    | _CIDS,
    lambda inner: (
        st.lists(inner, max_size=20)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5), inner, max_size=20)
    ),
    max_leaves=60,
)


def _py_encode(value: object) -> bytes | None:
    try:
        return cbor._encode_py(value)
    except cbor.DagCborError:
        return None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES)
def test_cbor_encode_gives_the_python_encoders_bytes(value: object) -> None:
    assert native is not None
    want = _py_encode(value)
    if want is None:  # refused in Python (NaN, infinities, ints past 64 bits): refused in C
        with pytest.raises((TypeError, ValueError, OverflowError)):
            native.cbor_encode(value)
    else:
        assert native.cbor_encode(value) == want
        assert cbor.encode(value) == want


def test_cbor_encode_edges() -> None:
    assert native is not None
    deep: object = "x"
    for _ in range(cbor.MAX_DEPTH):
        deep = [deep]
    for value in (
        2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, -(2**64), 0, -1, 23, 24, -24, -25,
        255, 256, 65535, 65536, 2**32 - 1, 2**32, -0.0, 1e300, "é" * 300, b"\x00" * 70000,
        {f"k{i}": i for i in range(100)}, {"b": 1, "aa": 2, "a": 3, "é": 4}, deep,
        {"bool": [True, False, None], "t": (1, (2,))},
    ):  # fmt: skip
        assert native.cbor_encode(value) == cbor._encode_py(value), repr(value)[:60]
    refused: list[object] = [
        2**64, -(2**64) - 1, float("nan"), [float("inf")], {1: 2}, {"s": {1}}, bytearray(b"x"),
        {"x": ["\ud800"]}, ["\ud800"], {"\ud800": 1}, [deep], object(), {"d": OrderedDict()},
    ]  # fmt: skip
    for value in refused:
        with pytest.raises((TypeError, ValueError, OverflowError)):  # not a SystemError
            native.cbor_encode(value)
        with pytest.raises(cbor.DagCborError):  # the Python path's error, with its path
            cbor.encode(value)
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="nested too deep"):
        native.cbor_encode(cyclic)
    with pytest.raises(cbor.DagCborError, match="nesting deeper than 256 levels"):
        cbor.encode(cyclic)


# -- the decoder: cbor_decode and cbor_links take exactly the bytes cbor._decode_py takes

_REFUSED = object()
_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ipld"
_POSITIVE = sorted((_FIXTURES / "codec-fixtures" / "fixtures").glob("*/*.dag-cbor"))
_NEGATIVE = [
    bytes.fromhex(case["hex"])
    for f in sorted(
        (_FIXTURES / "codec-fixtures" / "negative-fixtures" / "dag-cbor" / "decode").glob("*.json")
    )
    for case in json.loads(f.read_text())
]


def _exact(a: object, b: object) -> bool:
    """Equal values of the same types all the way down (1 is not True nor 1.0; -0.0 is not
    0.0; dict keys in the same order)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_exact(a[k], b[k]) for k in a)
    if type(a) is list:
        assert isinstance(b, list)
        return len(a) == len(b) and all(_exact(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        assert isinstance(b, float)
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


def _agree(data: bytes) -> object:
    """Check that C and Python decode `data` alike; return the value (or _REFUSED)."""
    assert native is not None
    try:
        want: object = cbor._decode_py(data)
    except cbor.DagCborError:
        want = _REFUSED
    try:
        got: object = native.cbor_decode(data)
    except ValueError:  # UnicodeDecodeError and CIDError are ValueErrors too
        got = _REFUSED
    try:
        links: object = native.cbor_links(data)
    except ValueError:
        links = _REFUSED
    if want is _REFUSED:
        assert got is _REFUSED, f"C took what Python refuses: {data.hex()}"
        assert links is _REFUSED, f"cbor_links took what Python refuses: {data.hex()}"
        return want
    assert got is not _REFUSED, f"C refused what Python takes: {data.hex()}"
    assert _exact(got, want), data.hex()
    assert links == list(block_mod.iter_links(want))
    assert all(type(c) is CID for c in links)  # type: ignore[attr-defined]
    assert cbor.decode(data) == want
    return want


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES)
def test_c_decodes_canonical_bytes_as_python_does(value: object) -> None:
    try:
        data = cbor._encode_py(value)
    except cbor.DagCborError:
        return
    assert _agree(data) is not _REFUSED


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES, st.data())
def test_c_refuses_what_python_refuses_in_mutated_bytes(value: object, draw: st.DataObject) -> None:
    try:
        data = bytearray(cbor._encode_py(value))
    except cbor.DagCborError:
        return
    for _ in range(draw.draw(st.integers(1, 3))):
        i = draw.draw(st.integers(0, len(data)))
        op = draw.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        if op == "insert" or i == len(data):
            data.insert(i, draw.draw(st.integers(0, 255)))
        elif op == "flip":
            data[i] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw.draw(st.integers(0, 255))
        else:
            del data[i:]
    _agree(bytes(data))


@settings(max_examples=1500)
@given(st.binary(max_size=48))
def test_c_and_python_agree_on_any_bytes(data: bytes) -> None:
    _agree(data)


def test_c_and_python_agree_on_the_codec_fixtures() -> None:
    assert len(_POSITIVE) == 128
    assert _NEGATIVE
    for path in _POSITIVE:
        assert _agree(path.read_bytes()) is not _REFUSED, path.parent.name
    for data in _NEGATIVE:
        assert _agree(data) is _REFUSED, data.hex()


def _c_refuses(decode: Any, data: bytes) -> str:
    """The message of the ValueError `decode` (cbor_decode or cbor_links) raises for `data`."""
    try:
        decode(data)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"C took {data.hex()}")


def test_c_decoder_edges() -> None:
    assert native is not None
    link = CID.of(b"x")
    deep: object = 1
    for _ in range(cbor.MAX_DEPTH):
        deep = [deep]
    taken: list[object] = [
        2**64 - 1, -(2**64), -(2**63), -(2**63) - 1, 2**63, 0, -1, 23, 24, 255, 256, -0.0,
        5e-324, "é\U0010ffff", "\x00", {"b": 1, "aa": 2, "a": 3, "é": 4}, deep, [link],
        {"l": [CID.parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n")]},  # a v0 CID
        {"l": CID.of(b"x", 0x55)}, CID.v1(0x300, b"\x12\x20" + bytes(32)),  # 2-byte codec
        {f"k{i}": i for i in range(40)}, b"", "", [], {},
    ]  # fmt: skip
    for value in taken:
        data = cbor.encode(value)
        assert _exact(native.cbor_decode(data), cbor._decode_py(data)), repr(value)[:60]
    refused = [
        "", "18", "1817", "190017", "f93c00", "fa3f800000", "f7", "f0", "f818", "fb7ff8000000000000",
        "fb7ff0000000000000", "9f01ff", "5f41ff", "a2616101616101", "a2616201616101", "a10101",
        "62c328", "63eda080", "62c0af", "0101", "c1", "d82a4100", "d82a4101", "d82a40", "d82b01",
        "d9002a582500", "d82a5825000171122000", "9b" + "ff" * 8, "bb" + "ff" * 8,
        "5b" + "ff" * 8, "7b" + "ff" * 8, "8" + "1" * 1, "a1" + "6161", "1c", "3f", "ff",
    ]  # fmt: skip
    for hexdata in refused:
        assert _c_refuses(native.cbor_decode, bytes.fromhex(hexdata))
        assert _c_refuses(native.cbor_links, bytes.fromhex(hexdata))
        with pytest.raises(cbor.DagCborError):
            cbor.decode(bytes.fromhex(hexdata))
    too_deep = cbor.encode(deep)
    too_deep = b"\x81" + too_deep  # 257 levels
    assert _c_refuses(native.cbor_decode, too_deep) == "nested too deep"
    with pytest.raises(cbor.DagCborError, match="deeper than 256"):
        cbor.decode(too_deep)
    for bad in (bytearray(b"\x01"), "01", None):
        with pytest.raises(TypeError):
            native.cbor_decode(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            native.cbor_links(bad)  # type: ignore[arg-type]


def test_c_links_are_iter_links() -> None:
    assert native is not None
    a, b, c = CID.of(b"a"), CID.of(b"b"), CID.of(b"c", 0x55)
    value = {"x": [a, {"y": (b, [c])}], "z": a, "n": 1}
    assert native.links(value) == list(block_mod.iter_links(value)) == [a, b, c, a]
    assert native.links(a) == [a]
    assert native.links(5) == native.links("s") == []
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(RecursionError):
        native.links(cyclic)


def test_a_decoded_block_is_decoded_on_first_use() -> None:
    value = {"a": [CID.of(b"1"), 2.5], "b": {"c": CID.of(b"2", 0x55)}}
    data = cbor.encode(value)
    block = Block.decode(CID.of(data), data)
    assert block._value is block_mod._NOT_DECODED  # checked, not yet decoded
    assert block.links() == [CID.of(b"1"), CID.of(b"2", 0x55)]
    assert block._value is block_mod._NOT_DECODED
    assert _exact(block.value, value)
    assert block.links() == [CID.of(b"1"), CID.of(b"2", 0x55)]
    bad = bytes.fromhex("a2616201616101")  # keys out of order: refused at decode, with where
    with pytest.raises(cbor.DagCborError, match="offset"):
        Block.decode(CID.of(bad), bad)
