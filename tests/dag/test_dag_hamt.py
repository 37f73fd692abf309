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


def apply_op(
    store: MemoryBlockStore, root: CID, model: dict[str, object], key: str, op: str, value: object
) -> CID:
    """One "set" or "delete" on the HAMT at ``root`` and on its dict ``model``; the new root."""
    if op == "set":
        model[key] = value
        return hamt.set(store, root, key, value)
    model.pop(key, None)
    return hamt.delete(store, root, key)


def node_count(store: MemoryBlockStore, root: CID) -> int:
    return sum(1 for _ in walk(store, root))


def _node_of(store: MemoryBlockStore, cid: CID, *, root: bool) -> list[object]:
    block = store.get_block(cid)
    assert block is not None
    value = block.value
    if root:
        assert isinstance(value, dict)
        value = value["hamt"]
    assert isinstance(value, list)
    return value


def _paths(store: MemoryBlockStore, root: CID) -> list[list[int]]:
    """The index path (below the root) of every bucket in the tree."""
    width = hamt.bit_width(store, root)
    out: list[list[int]] = []

    def visit(node: list[object], path: list[int]) -> None:
        bitmap, data = node
        assert isinstance(bitmap, bytes)
        assert isinstance(data, list)
        bits = int.from_bytes(bitmap, "little")
        indices = [i for i in range(1 << width) if bits >> i & 1]
        for i, el in zip(indices, data, strict=True):
            if isinstance(el, CID):
                visit(_node_of(store, el, root=False), [*path, i])
            else:
                out.append([*path, i])

    visit(_node_of(store, root, root=True), [])
    return out


def check_canonical(store: MemoryBlockStore, root: CID) -> None:
    """The CHAMP rules of the spec, checked on a stored tree of any bitWidth: every node's map
    has the root's size, buckets hold 1..3 entries sorted by key, each key sits at the index
    its hash gives at that depth, and a non-root node holds more than bucketSize entries
    (else it would have been collapsed into a bucket of its parent)."""
    import hashlib

    width = hamt.bit_width(store, root)

    def index(key: bytes, depth: int) -> int:
        bits = "".join(f"{b:08b}" for b in hashlib.sha256(key).digest())
        return int(bits[depth * width : (depth + 1) * width], 2)

    def visit(node: list[object], depth: int) -> int:
        bitmap, data = node
        assert isinstance(bitmap, bytes)
        assert isinstance(data, list)
        assert len(bitmap) * 8 == 1 << width
        bits = int.from_bytes(bitmap, "little")
        indices = [i for i in range(1 << width) if bits >> i & 1]
        assert len(indices) == len(data)
        total = 0
        for i, el in zip(indices, data, strict=True):
            if isinstance(el, CID):
                below = visit(_node_of(store, el, root=False), depth + 1)
                assert below > 3, "a child node with <= bucketSize entries must be a bucket"
                total += below
            else:
                assert isinstance(el, list)
                assert 1 <= len(el) <= 3
                keys = [e[0] for e in el]
                assert keys == sorted(keys)
                assert len(set(keys)) == len(keys)
                assert all(index(k, depth) == i for k in keys)
                total += len(el)
        return total

    visit(_node_of(store, root, root=True), 0)


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
    map_bytes = (1 << hamt.BIT_WIDTH) // 8
    assert block.value == {"hashAlg": 0x12, "bucketSize": 3, "hamt": [bytes(map_bytes), []]}
    r1 = hamt.set(store, root, "a", 1)
    assert hamt.get(store, r1, "a") == 1
    assert hamt.to_dict(store, r1) == {"a": 1}
    assert hamt.delete(store, r1, "a") == root
    assert hamt.delete(store, root, "missing") == root


def test_layout_follows_the_spec() -> None:
    """bitWidth 8: index = byte `depth` of sha2-256(key); map bit i = bit i%8 of byte i//8."""
    import hashlib

    store = MemoryBlockStore()
    root = hamt.build(store, {"k": "v"}, bit_width=8)
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


@pytest.mark.parametrize("width", [4, 5, 8])
def test_set_rewrites_only_the_path(width: int) -> None:
    store = MemoryBlockStore()
    items = {f"k{i}": i for i in range(20000)}
    root = hamt.build(store, items, bit_width=width)
    depth = max(len(p) for p in _paths(store, root))  # levels below the root
    before = set(store.cids())
    root2 = hamt.set(store, root, "k123", "changed")
    new = set(store.cids()) - before
    assert root2 in new
    assert 2 <= len(new) <= depth + 1  # the root and the nodes of one path
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
        root = apply_op(store, root, model, key, op, value)
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
    """bitWidth 8: 768 entries of maximal key and value in one node (3 per index, no overflow)."""
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
    root = hamt.build(store, items, bit_width=8)
    data = store.get(root)
    assert data is not None
    assert len(data) <= 256 * 1024
    assert len(store) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"hashAlg": 0x22, "bucketSize": 3, "hamt": [bytes(32), []]}, "only hashAlg 0x12"),
        ({"hashAlg": 0x12, "bucketSize": 3, "hamt": [bytes(3), []]}, "map is 3 bytes; it must"),
        ({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"", []]}, "map is 0 bytes; it must"),
        ({"hashAlg": 0x12, "bucketSize": 3, "hamt": ["xx", []]}, "map must be bytes"),
        ({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x01\x01", [[[b"a", 1]]]]}, "2 bits"),
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
    cid = hamt.build(store, items, bit_width=8)
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
    assert cid == hamt.build(MemoryBlockStore(), items, bit_width=8)


# -- bitWidth per map ------------------------------------------------------------------------

WIDTHS = [3, 4, 5, 6, 8]


def test_index_bits_follow_the_spec_worked_example() -> None:
    """The spec: "take the left-most bitWidth bits, offset by depth x bitWidth, from the hash".

    sha2-256("a") starts ca 97 81 12 = 11001010 10010111 10000001 00010010.  Worked out by
    hand from those bits: bitWidth 5 gives 11001 = 25, 01010 = 10, 01011 = 11, 11000 = 24;
    bitWidth 4 gives the nibbles 12, 10, 9, 7; bitWidth 6 gives 110010 = 50, 101001 = 41,
    011110 = 30, 000001 = 1; bitWidth 3 gives 110 = 6, 010 = 2, 101 = 5, 001 = 1; bitWidth 8
    the bytes 202, 151, 129, 18.
    """
    h = hamt._hash(b"a")
    expected = {
        3: [6, 2, 5, 1],
        4: [12, 10, 9, 7],
        5: [25, 10, 11, 24],
        6: [50, 41, 30, 1],
        8: [0xCA, 0x97, 0x81, 0x12],
    }
    for width, indices in expected.items():
        p = hamt._width(width)
        assert [p.index(h, d) for d in range(4)] == indices, width


@pytest.mark.parametrize("width", WIDTHS)
def test_a_key_sits_where_its_bits_say(width: int) -> None:
    """In stored blocks: "a" at its depth-0 index in the root map (bit i%8 of byte i//8), and,
    once four keys share that index, at its depth-1 index in the child."""
    import hashlib

    by_width = {3: (6, 2), 4: (12, 10), 5: (25, 10), 6: (50, 41), 8: (0xCA, 0x97)}
    i0, i1 = by_width[width]
    store = MemoryBlockStore()
    root = hamt.build(store, {"a": 1}, bit_width=width)
    bitmap, data = _node_of(store, root, root=True)
    expected = bytearray((1 << width) // 8)
    expected[i0 // 8] |= 1 << (i0 % 8)
    assert bitmap == bytes(expected)
    assert data == [[[b"a", 1]]]
    assert hamt.bit_width(store, root) == width

    def top(key: str) -> int:
        bits = "".join(f"{b:08b}" for b in hashlib.sha256(key.encode()).digest())
        return int(bits[:width], 2)

    same = [k for k in (f"s{n}" for n in range(20000)) if top(k) == i0][:3]
    root = hamt.build(store, {"a": 1, **dict.fromkeys(same, 0)}, bit_width=width)
    bitmap, data = _node_of(store, root, root=True)
    assert bitmap == bytes(expected)
    assert isinstance(data, list)
    assert len(data) == 1
    assert isinstance(data[0], CID)
    child_map, child_data = _node_of(store, data[0], root=False)
    assert isinstance(child_map, bytes)
    assert isinstance(child_data, list)
    bits = int.from_bytes(child_map, "little")
    assert bits >> i1 & 1
    bucket = child_data[(bits & ((1 << i1) - 1)).bit_count()]  # data index: set bits below i1
    assert [b"a", 1] in bucket
    check_canonical(store, root)


@SLOW
@given(st.sampled_from(WIDTHS), OPS)
def test_updates_match_build_at_every_width(
    width: int, ops: list[tuple[str, tuple[str, object]]]
) -> None:
    """Sets and deletes from empty, one at a time, give the root build() gives the final
    content (CHAMP canonical form), the tree is canonical, and to_dict round-trips."""
    store = MemoryBlockStore()
    model: dict[str, object] = {}
    root = hamt.empty(store, bit_width=width)
    history: list[tuple[CID, dict[str, object]]] = [(root, {})]
    for key, (op, value) in ops:
        root = apply_op(store, root, model, key, op, value)
        history.append((root, dict(model)))
    assert hamt.bit_width(store, root) == width
    assert hamt.to_dict(store, root) == model
    assert root == hamt.build(MemoryBlockStore(), model, bit_width=width)
    check_canonical(store, root)
    # every intermediate root is the canonical one of its content
    for cid, content in history[:: max(1, len(history) // 8)]:
        assert cid == hamt.build(MemoryBlockStore(), content, bit_width=width)


@SLOW
@given(st.sampled_from(WIDTHS), st.dictionaries(KEYS, VALUES, max_size=150), st.lists(KEYS))
def test_deletes_restore_the_prior_root(
    width: int, content: dict[str, object], extra: list[str]
) -> None:
    store = MemoryBlockStore()
    root = hamt.build(store, content, bit_width=width)
    added = [k for k in dict.fromkeys(extra) if k not in content]
    grown = hamt.update(store, root, [(k, k) for k in added])
    cache = hamt.NodeCache()
    shrunk, written = hamt.update_cached(store, grown, [(k, hamt.DELETE) for k in added], cache)
    store.put_many(written)
    assert shrunk.cid == root
    assert hamt.update(store, grown, [(k, hamt.DELETE) for k in reversed(added)]) == root


@SLOW
@given(st.sampled_from(WIDTHS), st.dictionaries(KEYS, VALUES, max_size=150), OPS)
def test_update_cached_equals_update_at_every_width(
    width: int, start: dict[str, object], ops: list[tuple[str, tuple[str, object]]]
) -> None:
    store = MemoryBlockStore()
    cache = hamt.NodeCache()
    root, blocks = hamt.build_blocks(start, cache, bit_width=width)
    store.put_many(blocks)
    changes = [(k, v if op == "set" else hamt.DELETE) for k, (op, v) in ops]
    plain = hamt.update(store, root.cid, changes)
    cached, written = hamt.update_cached(store, root.cid, changes, cache)
    assert cached.cid == plain
    assert cached.data == Block.encode(cached.value).data  # spliced bytes are canonical
    for block in written:
        assert block.data == Block.encode(block.value).data
    check_canonical(store, plain)


def test_a_width_8_map_is_updated_at_width_8() -> None:
    """A map written before narrower maps keeps its bitWidth and its CIDs: no migration."""
    store = MemoryBlockStore()
    items: dict[str, object] = {f"k{i}": i for i in range(3000)}
    old = hamt.build(store, items, bit_width=8)
    assert hamt.bit_width(store, old) == 8
    cache = hamt.NodeCache()
    root = old
    for i in range(0, 3000, 150):
        items[f"k{i}"] = -i
        items[f"n{i}"] = i
        new, written = hamt.update_cached(
            store, root, [(f"k{i}", -i), (f"n{i}", i), (f"k{i + 1}", hamt.DELETE)], cache
        )
        store.put_many(written)
        del items[f"k{i + 1}"]
        root = new.cid
    assert hamt.bit_width(store, root) == 8
    assert root == hamt.build(MemoryBlockStore(), items, bit_width=8)
    assert root != hamt.build(MemoryBlockStore(), items)  # the default width differs
    assert hamt.update(store, root, {"k0": 0}) == hamt.build(
        MemoryBlockStore(), {**items, "k0": 0}, bit_width=8
    )
    check_canonical(store, root)
    # diff across widths compares entries
    other = hamt.build(store, {**items, "k3": "x"}, bit_width=5)
    assert list(hamt.diff(store, root, other)) == ["k3"]


def test_a_node_whose_map_differs_from_its_roots_is_refused() -> None:
    store = MemoryBlockStore()
    child = Block.encode([b"\x01", [[[b"x", 1]]]])  # bitWidth 3 under a bitWidth 4 root
    store.put(child)
    h = hamt._hash(b"x")
    i = hamt._width(4).index(h, 0)
    bitmap = (1 << i).to_bytes(2, "little")
    root = Block.encode({"hashAlg": 0x12, "bucketSize": 3, "hamt": [bitmap, [child.cid]]})
    store.put(root)
    message = f"HAMT node {child.cid}: map is 1 bytes but the map's root has 2 .bitWidth 4."
    with pytest.raises(hamt.HamtError, match=message):
        hamt.to_dict(store, root.cid)
    with pytest.raises(hamt.HamtError, match=message):
        hamt.update_cached(store, root.cid, [("x", 2)], hamt.NodeCache())


def test_a_bad_map_length_names_the_root() -> None:
    store = MemoryBlockStore()
    root = Block.encode({"hashAlg": 0x12, "bucketSize": 3, "hamt": [bytes(6), []]})
    store.put(root)
    with pytest.raises(hamt.HamtError, match=f"HAMT root {root.cid}: map is 6 bytes"):
        hamt.get(store, root.cid, "x")
    with pytest.raises(hamt.HamtError, match="bitWidth 2 is not supported"):
        hamt.build(store, {}, bit_width=2)


@pytest.mark.parametrize("width", [3, 5])
def test_unsorted_bucket_and_count_mismatch_in_a_node(width: int) -> None:
    store = MemoryBlockStore()
    n = (1 << width) // 8
    bad_nodes = {
        "not sorted": [b"\x01" + bytes(n - 1), [[[b"b", 1], [b"a", 2]]]],
        "map has 2 bits set but data has 1 elements": [b"\x03" + bytes(n - 1), [[[b"a", 1]]]],
    }
    for message, node in bad_nodes.items():
        child = Block.encode(node)
        store.put(child)
        root = Block.encode(
            {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x01" + bytes(n - 1), [child.cid]]}
        )
        store.put(root)
        with pytest.raises(hamt.HamtError, match=f"HAMT node {child.cid}: .*{message}"):
            hamt.to_dict(store, root.cid)
