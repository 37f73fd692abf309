"""The O(changes) commit path: dag.state Overlay / Delta and dag.hamt.update_cached.

Every result is compared with the path that encodes everything from scratch: the same
root CID, canonical bytes, and every block the new state reaches in the store.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dag import cbor, hamt
from dag.block import Block
from dag.cid import CID, RAW
from dag.state import (
    DELETED,
    ENT_HAMT_ENTRIES,
    Delta,
    Overlay,
    PicoState,
    RulesetState,
    read_state,
    state_blocks,
    write_state,
)
from dag.store import MemoryBlockStore, walk

DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.text(alphabet="abcdef", min_size=1, max_size=3)
VALUES = st.one_of(
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=5),
    st.none(),
    st.just("x" * 300),  # over the 200-byte HAMT value limit: linked inside a HAMT
    st.just({"/": "looks like a link"}),  # always linked
)


def state(ents: dict[str, object], channels: object = None, rules: object = None) -> PicoState:
    return PicoState(
        DID,
        tuple(
            RulesetState(rid, f"ruleset {rid} {{ }}", ent, {"r": rules} if rules else {})  # type: ignore[arg-type]
            for rid, ent in ents.items()
        ),
        channels or {"c": {"tags": ["t"]}},  # type: ignore[arg-type]
        {"m": 1},
    )


def reachable(store: MemoryBlockStore, root: CID) -> set[CID]:
    return {b.cid for b in walk(store, root)}


def test_overlay_reads_like_the_changed_map() -> None:
    base: dict[str, object] = {"a": 1, "b": 2, "c": 3}
    view = Overlay(base, {"b": DELETED, "d": 4, "a": 5, "zz": DELETED})
    assert dict(view) == {"a": 5, "c": 3, "d": 4}
    assert len(view) == 3
    assert ("b" in view, "zz" in view, "d" in view) == (False, False, True)
    assert (view.get("b"), view["a"]) == (None, 5)
    assert base == {"a": 1, "b": 2, "c": 3}  # untouched until apply
    assert view.apply() is base
    assert base == {"a": 5, "c": 3, "d": 4}


def test_only_changed_blocks_are_returned() -> None:
    store = MemoryBlockStore()
    ent = {f"k{i}": i for i in range(50)}
    root = write_state(store, state({"a": ent, "b": {"x": 1}}))
    view = Overlay(ent, {"k3": "three"})
    new, blocks = state_blocks(
        state({"a": view, "b": {"x": 1}}), store, delta=Delta(root, {"a": ["k3"]}, channels=False)
    )
    # the ruleset block of "a" and the state root: not "b", not the sources, not the channels
    assert len(blocks) == 2
    assert blocks[-1] == new
    store.put_many(blocks)
    assert read_state(store, new.cid) == state({"a": dict(view), "b": {"x": 1}})


@pytest.mark.parametrize("native", [True, False], ids=["encoded", "spliced"])
def test_a_million_entry_commit_touches_only_its_path(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a million here (that is the benchmark), but the same shape: a deep HAMT. The ruleset
    block and the state root are encoded as dicts where the encoder is C's, else spliced; both
    must give the CIDs a whole encode gives."""
    from dag import cbor

    if native and not cbor.NATIVE:
        pytest.skip("dag._native is not built")
    monkeypatch.setattr(cbor, "NATIVE", native)
    store = MemoryBlockStore()
    ent: dict[str, object] = {f"k{i}": i for i in range(20_000)}
    root = write_state(store, state({"a": ent}))
    for i in range(5):
        view = Overlay(ent, {f"k{i * 31}": "changed", f"new{i}": i})
        new, blocks = state_blocks(
            state({"a": view}), store, delta=Delta(root, {"a": view.changes})
        )
        # state root, ruleset block, HAMT root and the nodes on two paths
        assert 3 <= len(blocks) <= 9
        store.put_many(blocks)
        assert new.cid == write_state(MemoryBlockStore(), state({"a": dict(view)}))
        view.apply()
        root = new.cid


def test_a_lost_memo_is_rebuilt_from_the_store() -> None:
    import dag.state as module

    store = MemoryBlockStore()
    ents: dict[str, dict[str, object]] = {"a": {f"k{i}": i for i in range(1500)}, "b": {"x": 1}}
    root = write_state(store, state(ents))
    module._forget_memos()
    views = {"a": Overlay(ents["a"], {"k1": DELETED}), "b": Overlay(ents["b"], {"y": 2})}
    new, blocks = state_blocks(
        state(views), store, delta=Delta(root, {"a": ["k1"], "b": ["y"]}, channels=False)
    )
    store.put_many(blocks)
    assert new.cid == write_state(MemoryBlockStore(), state({r: dict(v) for r, v in views.items()}))


def test_a_delta_whose_base_is_not_a_state_encodes_everything() -> None:
    store = MemoryBlockStore()
    junk = Block.raw(b"not a state")
    store.put(junk)
    new, blocks = state_blocks(state({"a": {"x": 1}}), store, delta=Delta(junk.cid, {}))
    assert new.cid == write_state(MemoryBlockStore(), state({"a": {"x": 1}}))
    assert any(b.cid.codec == RAW for b in blocks)  # the source block too: a whole state


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.lists(st.tuples(KEYS, st.one_of(VALUES, st.just(DELETED))), max_size=4),
        st.booleans(),  # channels change
        st.one_of(st.none(), st.integers(0, 3)),  # rule state
    ),
    max_size=25,
)


@SLOW
@given(st.dictionaries(KEYS, VALUES, max_size=30), OPS, st.integers(0, 2))
def test_delta_commits_equal_full_encoding(
    start: dict[str, object],
    ops: list[tuple[str, list[tuple[str, object]], bool, int | None]],
    big: int,
) -> None:
    """Random commits through deltas give the CIDs of encoding each state from scratch.

    `big` pads map "a" to just under, at, or over the inline limit, so maps cross between
    inline and HAMT forms in both directions.
    """
    pad = {f"pad{i:04d}": i for i in range(ENT_HAMT_ENTRIES - 2 + big)}
    ents: dict[str, dict[str, object]] = {"a": {**pad, **start}, "b": dict(start)}
    store = MemoryBlockStore()
    root = write_state(store, state(ents))
    channels: dict[str, object] = {"c": {"tags": ["t"]}}
    for rid, changes, new_channels, rules in ops:
        if new_channels:
            channels = {"c": {"tags": [f"t{len(store)}"]}}
        views = {r: Overlay(e, dict(changes) if r == rid else {}) for r, e in ents.items()}
        new, blocks = state_blocks(
            state(views, channels, rules),  # type: ignore[arg-type]
            store,
            delta=Delta(root, {rid: [k for k, _ in changes]}, channels=new_channels),
        )
        for block in blocks:
            if block.cid.codec != RAW:
                assert cbor.encode(block.value) == block.data  # spliced bytes are canonical
        store.put_many(blocks)
        fresh = MemoryBlockStore()
        expected = write_state(
            fresh, state({r: dict(v) for r, v in views.items()}, channels, rules)
        )  # type: ignore[arg-type]
        assert new.cid == expected
        assert reachable(store, new.cid) == reachable(fresh, expected)  # nothing left out
        for r, v in views.items():
            ents[r] = v.apply()
        root = new.cid


@SLOW
@given(
    st.dictionaries(st.text(alphabet="abcdefghij", min_size=1, max_size=3), VALUES, max_size=120),
    st.lists(
        st.lists(
            st.tuples(
                st.text(alphabet="abcdefghij", min_size=1, max_size=3),
                st.one_of(st.integers(0, 9), st.just(hamt.DELETE)),
            ),
            min_size=1,
            max_size=6,
        ),
        max_size=10,
    ),
    st.integers(1, 8),
)
def test_update_cached_equals_update_blocks(
    start: dict[str, object], batches: list[list[tuple[str, object]]], cache_size: int
) -> None:
    start = {k: v for k, v in start.items() if len(cbor.encode(v)) <= hamt.MAX_VALUE_BYTES}
    store = MemoryBlockStore()
    root = hamt.build(store, start)
    cache = hamt.NodeCache(cache_size)  # tiny caches: nodes come and go
    for changes in batches:
        plain, plain_new = hamt.update_blocks(store, root, changes)
        cached, cached_new = hamt.update_cached(store, root, changes, cache)
        assert cached.data == plain.data
        assert {b.cid for b in cached_new} == {b.cid for b in plain_new}
        for block in cached_new:
            assert cbor.encode(block.value) == block.data
        store.put_many(cached_new)
        root = cached.cid


def test_update_cached_over_deep_collisions() -> None:
    store = MemoryBlockStore()
    rng = random.Random(5)
    keys = [f"c{n}" for n in range(4000)]
    model: dict[str, object] = {}
    root = hamt.empty(store)
    cache = hamt.NodeCache(16)
    for _ in range(300):
        changes: list[tuple[str, object]] = []
        for _ in range(rng.randint(1, 8)):
            key = rng.choice(keys)
            if rng.random() < 0.3:
                changes.append((key, hamt.DELETE))
                model.pop(key, None)
            else:
                changes.append((key, rng.randint(0, 99)))
                model[key] = changes[-1][1]
        new, blocks = hamt.update_cached(store, root, changes, cache)
        store.put_many(blocks)
        root = new.cid
    assert hamt.to_dict(store, root) == model
    assert root == hamt.build(MemoryBlockStore(), model)


def _ent_link(store: MemoryBlockStore, root: CID, rid: str = "a") -> object:
    value = store.get_block(root)
    assert value is not None
    assert isinstance(value.value, dict)
    for entry in value.value["rulesets"]:
        if entry["rid"] == rid:
            rs = store.get_block(entry["state"])
            assert rs is not None
            assert isinstance(rs.value, dict)
            return rs.value["ent"]
    raise AssertionError(rid)


def test_a_width_8_hamt_of_an_existing_pico_stays_at_width_8(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pico whose map was written as a bitWidth-8 HAMT (before narrower maps) keeps it:
    commits update it in place at width 8, through the delta path and without it."""
    import dag.state as module

    store = MemoryBlockStore()
    ent: dict[str, object] = {f"k{i}": i for i in range(1500)}
    monkeypatch.setattr(module, "ENT_HAMT_BIT_WIDTH", 8)
    root = write_state(store, state({"a": ent}))
    monkeypatch.setattr(module, "ENT_HAMT_BIT_WIDTH", hamt.BIT_WIDTH)
    old = _ent_link(store, root)
    assert isinstance(old, CID)
    assert hamt.bit_width(store, old) == 8
    module._forget_memos()  # as after a restart: the memo is rebuilt from the blocks
    for i in range(6):
        view = Overlay(ent, {f"k{i * 7}": "changed", f"new{i}": i, f"k{i * 11 + 1}": DELETED})
        new, blocks = state_blocks(
            state({"a": view}), store, delta=Delta(root, {"a": view.changes})
        )
        store.put_many(blocks)
        ent = view.apply()
        root = new.cid
        link = _ent_link(store, root)
        assert isinstance(link, CID)
        assert hamt.bit_width(store, link) == 8
        assert link == hamt.build(MemoryBlockStore(), ent, bit_width=8)
    # without a delta: the memo of the last HAMT read keeps the width too
    read_state(store, root)
    ent = {**ent, "k1000": "again"}
    root = write_state(store, state({"a": ent}))
    link = _ent_link(store, root)
    assert isinstance(link, CID)
    assert link == hamt.build(MemoryBlockStore(), ent, bit_width=8)
    # shrunk under the thresholds: inline, as a fresh encoding; grown again: the new width
    small = {f"k{i}": i for i in range(10)}
    shrink: dict[str, object] = {**dict.fromkeys(ent.keys() - small.keys(), DELETED), **small}
    view = Overlay(ent, shrink)
    new, blocks = state_blocks(state({"a": view}), store, delta=Delta(root, {"a": view.changes}))
    store.put_many(blocks)
    assert _ent_link(store, new.cid) == small
    assert new.cid == write_state(MemoryBlockStore(), state({"a": small}))
    big = {f"n{i}": i for i in range(ENT_HAMT_ENTRIES + 1)}
    view2 = Overlay(dict(small), big)
    new2, blocks = state_blocks(
        state({"a": view2}), store, delta=Delta(new.cid, {"a": view2.changes})
    )
    store.put_many(blocks)
    link = _ent_link(store, new2.cid)
    assert isinstance(link, CID)
    assert hamt.bit_width(store, link) == hamt.BIT_WIDTH
    assert new2.cid == write_state(MemoryBlockStore(), state({"a": dict(view2)}))


def test_crossing_the_thresholds_both_ways_stays_canonical() -> None:
    """Entries past ENT_HAMT_ENTRIES, and bytes past ENT_HAMT_BYTES, make a HAMT; back under
    both, inline again; every commit has the CID of a fresh encoding."""
    from dag.state import ENT_HAMT_BYTES

    store = MemoryBlockStore()
    ent: dict[str, object] = {f"k{i}": 0 for i in range(ENT_HAMT_ENTRIES)}
    root = write_state(store, state({"a": ent}))
    assert isinstance(_ent_link(store, root), dict)
    big = "x" * 150  # a few of these pass the bytes threshold with fewer entries
    steps: list[dict[str, object]] = [
        {"over": 1},  # entries: HAMT
        {"over": DELETED},  # inline again
        {f"k{i}": DELETED for i in range(ENT_HAMT_ENTRIES // 2)},
        {f"b{i}": big for i in range(ENT_HAMT_BYTES // 150)},  # bytes: HAMT
        {f"b{i}": DELETED for i in range(ENT_HAMT_BYTES // 150)},  # inline again
    ]
    kinds = []
    for changes in steps:
        view = Overlay(ent, changes)
        new, blocks = state_blocks(state({"a": view}), store, delta=Delta(root, {"a": changes}))
        store.put_many(blocks)
        ent = view.apply()
        root = new.cid
        assert root == write_state(MemoryBlockStore(), state({"a": ent}))
        kinds.append(type(_ent_link(store, root)).__name__)
    assert kinds == ["CID", "dict", "dict", "CID", "dict"]


def test_each_store_keeps_its_own_memo_and_node_cache() -> None:
    import gc

    import dag.state as module

    a, b = MemoryBlockStore(), MemoryBlockStore()
    memo_a, cache_a = module._memo_of(a), module._node_cache(a)
    memo_b, cache_b = module._memo_of(b), module._node_cache(b)
    assert memo_a is not memo_b
    assert cache_a is not cache_b
    for _ in range(2):  # the last store's are found first, the other's through the dicts
        assert module._memo_of(a) is memo_a
        assert module._node_cache(a) is cache_a
        assert module._memo_of(b) is memo_b
        assert module._node_cache(b) is cache_b
    del b, memo_b, cache_b
    gc.collect()
    c = MemoryBlockStore()  # may take b's address: b's weak reference is dead, not c's
    assert module._memo_of(c) is not memo_a
    assert not module._memo_of(c)
    assert module._node_cache(c) is not cache_a
    assert len(module._node_cache(c)._nodes) == 0
