import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dag import hamt
from dag.block import Block
from dag.cid import CID
from dag.store import MemoryBlockStore, walk


def _colliding_keys() -> list[str]:
    """Keys whose hashes share their first byte (12) or first two bytes (6): deep trees."""
    import hashlib

    one, two = [], []
    n = 0
    while len(one) < 12 or len(two) < 6:
        key = f"c{n}"
        n += 1
        h = hashlib.sha256(key.encode()).digest()
        if h[0] == 0 and h[1] == 0 and len(two) < 6:
            two.append(key)
        elif h[0] == 0 and len(one) < 12:
            one.append(key)
    return one + two


COLLIDING = _colliding_keys()
KEYS = st.one_of(st.text(alphabet="abcdefghij", min_size=1, max_size=3), st.sampled_from(COLLIDING))
VALUES = st.one_of(st.integers(-5, 5), st.text(max_size=4), st.none(), st.booleans())
# (key, value) to set, or (key, None-marker) to delete
OPS = st.lists(
    st.tuples(KEYS, st.one_of(VALUES.map(lambda v: ("set", v)), st.just(("del", None)))),
    max_size=120,
)
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def node_count(store: MemoryBlockStore, root: CID) -> int:
    return sum(1 for _ in walk(store, root))


def test_colliding_keys_nest_and_collapse() -> None:
    store = MemoryBlockStore()
    root = hamt.empty(store)
    for k in COLLIDING:
        root = hamt.set(store, root, k, k)
    assert node_count(store, root) >= 3  # root, a node at depth 1, one at depth 2
    for k in COLLIDING[:-3]:
        root = hamt.delete(store, root, k)
    assert node_count(store, root) == 1  # three entries left: one bucket in the root
    assert root == hamt.build(
        store, dict.fromkeys(COLLIDING[-3:], None) | {k: k for k in COLLIDING[-3:]}
    )


def test_empty_and_small() -> None:
    store = MemoryBlockStore()
    root = hamt.empty(store)
    assert list(hamt.items(store, root)) == []
    assert hamt.get(store, root, "x", 7) == 7
    block = store.get_block(root)
    assert block is not None
    assert block.value == {"hashAlg": 0x12, "bucketSize": 3, "hamt": [bytes(32), []]}
    r1 = hamt.set(store, root, "a", 1)
    assert hamt.get(store, r1, "a") == 1
    assert hamt.to_dict(store, r1) == {"a": 1}
    assert hamt.delete(store, r1, "a") == root
    assert hamt.delete(store, root, "missing") == root


def test_layout_follows_the_spec() -> None:
    """Index = byte `depth` of sha2-256(key); map bit i = bit i%8 of byte i//8; data in index order."""
    import hashlib

    store = MemoryBlockStore()
    root = hamt.build(store, {"k": "v"})
    block = store.get_block(root)
    assert block is not None
    assert isinstance(block.value, dict)
    bitmap, data = block.value["hamt"]
    i = hashlib.sha256(b"k").digest()[0]
    expected = bytearray(32)
    expected[i // 8] |= 1 << (i % 8)
    assert bitmap == bytes(expected)
    assert data == [[[b"k", "v"]]]


def test_many_entries_make_child_nodes() -> None:
    store = MemoryBlockStore()
    items = {f"k{i}": i for i in range(5000)}
    root = hamt.build(store, items)
    assert hamt.to_dict(store, root) == items
    assert node_count(store, root) > 1
    for i in range(0, 5000, 97):
        assert hamt.get(store, root, f"k{i}") == i
    assert hamt.get(store, root, "nope") is None
    assert len(list(hamt.blocks_of(store, root))) == node_count(store, root)


def test_set_rewrites_only_the_path() -> None:
    store = MemoryBlockStore()
    items = {f"k{i}": i for i in range(20000)}
    root = hamt.build(store, items)
    before = set(store.cids())
    root2 = hamt.set(store, root, "k123", "changed")
    new = set(store.cids()) - before
    assert root2 in new
    assert 2 <= len(new) <= 4  # root + one or two levels of nodes
    assert hamt.get(store, root2, "k123") == "changed"
    assert hamt.get(store, root, "k123") == 123  # the old version is intact
    assert list(hamt.diff(store, root, root2)) == ["k123"]


@SLOW
@given(OPS)
def test_matches_dict_model_and_is_canonical(ops: list[tuple[str, tuple[str, object]]]) -> None:
    store = MemoryBlockStore()
    model: dict[str, object] = {}
    root = hamt.empty(store)
    for key, (op, value) in ops:
        if op == "set":
            root = hamt.set(store, root, key, value)
            model[key] = value
        else:
            root = hamt.delete(store, root, key)
            model.pop(key, None)
    assert hamt.to_dict(store, root) == model
    for key in model:
        assert hamt.get(store, root, key) == model[key]
    # canonical: the same root as building the final content in one go, in any order
    assert root == hamt.build(store, model)
    shuffled = list(model.items())
    random.Random(len(ops)).shuffle(shuffled)
    assert root == hamt.build(MemoryBlockStore(), shuffled)


@SLOW
@given(st.dictionaries(KEYS, VALUES, max_size=200), st.data())
def test_insertion_order_does_not_matter(content: dict[str, object], data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(content.items())))
    store = MemoryBlockStore()
    root = hamt.empty(store)
    for k, v in order:
        root = hamt.set(store, root, k, v)
    assert root == hamt.build(store, content)


@SLOW
@given(st.dictionaries(KEYS, VALUES, max_size=150), OPS)
def test_diff_equals_dict_diff(
    start: dict[str, object], ops: list[tuple[str, tuple[str, object]]]
) -> None:
    store = MemoryBlockStore()
    a = hamt.build(store, start)
    changes = [(k, v if op == "set" else hamt.DELETE) for k, (op, v) in ops]
    b = hamt.update(store, a, changes)
    model = dict(start)
    for k, v in changes:
        if v is hamt.DELETE:
            model.pop(k, None)
        else:
            model[k] = v
    assert hamt.to_dict(store, b) == model
    # 1 and True and 1.0 are == in Python but different data: compare encodings
    from dag.cbor import encode

    expected = {
        k
        for k in start.keys() | model.keys()
        if k not in start or k not in model or encode(start[k]) != encode(model[k])
    }
    got = list(hamt.diff(store, a, b))
    assert len(got) == len(set(got))
    assert set(got) == expected
    assert set(hamt.diff(store, b, a)) == expected


def test_diff_skips_shared_subtrees() -> None:
    store = MemoryBlockStore()
    a = hamt.build(store, {f"k{i}": i for i in range(20000)})
    b = hamt.set(store, a, "k5", -1)
    reads: list[CID] = []

    class Counting(MemoryBlockStore):
        def get_block(self, cid: CID) -> Block | None:
            reads.append(cid)
            return store.get_block(cid)

    assert list(hamt.diff(Counting(), a, b)) == ["k5"]
    assert len(reads) <= 6  # two roots and the two changed paths, not 20k entries' nodes


def test_update_many_writes_only_reachable_new_blocks() -> None:
    store = MemoryBlockStore()
    a = hamt.build(store, {f"k{i}": i for i in range(3000)})
    before = set(store.cids())
    changes = [(f"k{i}", "x") for i in range(10)] + [(f"k{i}", hamt.DELETE) for i in range(10)]
    b = hamt.update(store, a, changes)
    assert hamt.to_dict(store, b) == {f"k{i}": i for i in range(10, 3000)}
    new = set(store.cids()) - before
    assert new <= {blk.cid for blk in walk(store, b)}


def test_bounds() -> None:
    store = MemoryBlockStore()
    root = hamt.empty(store)
    with pytest.raises(hamt.HamtError, match="the limit is 128"):
        hamt.set(store, root, "k" * 129, 1)
    with pytest.raises(hamt.HamtError, match="the limit is 200"):
        hamt.set(store, root, "k", "x" * 300)


def test_worst_case_node_stays_under_256_kib() -> None:
    """768 entries of maximal key and value in one node (3 per index, no overflow)."""
    import hashlib

    per_index: dict[int, list[str]] = {}
    n = 0
    while len(per_index) < 256 or any(len(v) < 3 for v in per_index.values()):
        key = f"{n:0128d}"
        n += 1
        i = hashlib.sha256(key.encode()).digest()[0]
        if len(per_index.setdefault(i, [])) < 3:
            per_index[i].append(key)
    value = "v" * (hamt.MAX_VALUE_BYTES - 2)  # text header 2 bytes
    items = {k: value for keys in per_index.values() for k in keys}
    assert len(items) == 768
    store = MemoryBlockStore()
    root = hamt.build(store, items)
    data = store.get(root)
    assert data is not None
    assert len(data) <= 256 * 1024
    assert len(store) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"hashAlg": 0x22, "bucketSize": 3, "hamt": [bytes(32), []]}, "only hashAlg 0x12"),
        ({"hashAlg": 0x12, "bucketSize": 3, "hamt": [bytes(8), []]}, "map must be 32 bytes"),
        ({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x01" + bytes(31), []]}, "1 bits set"),
        (
            {
                "hashAlg": 0x12,
                "bucketSize": 3,
                "hamt": [b"\x01" + bytes(31), [[[b"b", 1], [b"a", 2]]]],
            },
            "not sorted",
        ),
        ([1, 2], "exactly hashAlg"),
    ],
)
def test_malformed(value: object, message: str) -> None:
    store = MemoryBlockStore()
    block = Block.encode(value)
    store.put(block)
    with pytest.raises(hamt.HamtError, match=message):
        list(hamt.items(store, block.cid))


class _CountingStore(MemoryBlockStore):
    """A memory store that counts reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, cid: CID) -> bytes | None:
        self.reads += 1
        return super().get(cid)


def test_a_cache_filled_by_build_serves_updates_without_reading_the_store() -> None:
    store = _CountingStore()
    cache = hamt.NodeCache()
    items = {f"k{i:05d}": i for i in range(3000)}
    root, blocks = hamt.build_blocks(items, cache)
    store.put_many(blocks)
    assert len(cache) == len(blocks)  # every node, the root included
    cid = root.cid
    for i in range(0, 3000, 7):
        new, written = hamt.update_cached(store, cid, [(f"k{i:05d}", -i)], cache)
        store.put_many(written)
        cid = new.cid
        items[f"k{i:05d}"] = -i
    assert store.reads == 0
    # the replaced versions left the cache: it holds the live tree, no more
    live = set(hamt.blocks_of(store, cid))
    assert len(cache) == len(live)
    assert cid == hamt.build(MemoryBlockStore(), items)


def test_the_cache_stays_within_its_byte_budget_and_still_gives_the_same_trees() -> None:
    store = MemoryBlockStore()
    items = {f"k{i:05d}": i for i in range(3000)}
    cid = hamt.build(store, items)
    cache = hamt.NodeCache(max_bytes=40_000)  # the root (about 21 KB) and a few more
    rng = random.Random(3)
    for _ in range(200):
        key = f"k{rng.randrange(4000):05d}"
        if rng.random() < 0.3:
            change: object = hamt.DELETE
            items.pop(key, None)
        else:
            change = items[key] = rng.randrange(100)
        new, written = hamt.update_cached(store, cid, [(key, change)], cache)
        store.put_many(written)
        cid = new.cid
        assert cache.bytes <= 40_000
    assert len(cache) > 0
    assert cid == hamt.build(MemoryBlockStore(), items)
