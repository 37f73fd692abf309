"""Large entity maps (HAMT) and large values (linked blocks) in dag/state.py."""

from pathlib import Path

import pytest

from dag import hamt
from dag.block import Block
from dag.cid import CID
from dag.state import (
    ENT_HAMT_ENTRIES,
    MAX_BLOCK,
    InvalidState,
    PicoState,
    RulesetState,
    ValueTooLarge,
    read_state,
    state_blocks,
    write_state,
)
from dag.store import MemoryBlockStore, SqliteBlockStore, walk

DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
SRC = "ruleset r { }"


def pico(ent: dict[str, object]) -> PicoState:
    return PicoState(did=DID, rulesets=(RulesetState("r", SRC, ent),))


def ruleset_block(store: MemoryBlockStore, root: CID) -> dict[str, object]:
    blk = store.get_block(root)
    assert blk is not None
    assert isinstance(blk.value, dict)
    rs = store.get_block(blk.value["rulesets"][0]["state"])
    assert rs is not None
    assert isinstance(rs.value, dict)
    return rs.value


def test_small_map_stays_inline_with_the_old_cid() -> None:
    ent = {f"k{i}": i for i in range(ENT_HAMT_ENTRIES)}
    store = MemoryBlockStore()
    root = write_state(store, pico(ent))
    # the encoding before HAMTs existed: the map inline in the ruleset block
    src = Block.raw(SRC.encode())
    rs = Block.encode({"rid": "r", "src": src.cid, "ent": ent})
    assert ruleset_block(store, root)["ent"] == ent
    assert rs.cid == read_root_ruleset_cid(store, root)
    assert read_state(store, root) == pico(ent)


def read_root_ruleset_cid(store: MemoryBlockStore, root: CID) -> CID:
    blk = store.get_block(root)
    assert blk is not None
    assert isinstance(blk.value, dict)
    cid = blk.value["rulesets"][0]["state"]
    assert isinstance(cid, CID)
    return cid


def test_large_map_becomes_a_hamt_and_reads_back_the_same() -> None:
    ent: dict[str, object] = {f"k{i}": i for i in range(ENT_HAMT_ENTRIES + 1)}
    store = MemoryBlockStore()
    root = write_state(store, pico(ent))
    link = ruleset_block(store, root)["ent"]
    assert isinstance(link, CID)
    assert hamt.to_dict(store, link) == ent
    assert read_state(store, root) == pico(ent)
    # one entry fewer: inline again
    ent.pop("k0")
    assert isinstance(ruleset_block(store, write_state(store, pico(ent)))["ent"], dict)


def test_a_large_inline_map_by_bytes_becomes_a_hamt() -> None:
    ent: dict[str, object] = {f"k{i}": "x" * 1000 for i in range(200)}  # ~200 KiB
    store = MemoryBlockStore()
    root = write_state(store, pico(ent))
    assert isinstance(ruleset_block(store, root)["ent"], CID)
    assert read_state(store, root) == pico(ent)
    assert all(len(b.data) <= MAX_BLOCK for b in walk(store, root))


def test_same_content_same_root_whatever_the_path() -> None:
    a = {f"k{i}": i for i in range(3000)}
    store = MemoryBlockStore()
    write_state(store, pico(a))
    b = dict(a)
    b["k7"] = "seven"
    del b["k8"]
    b["new"] = [1, 2]
    incremental = write_state(store, pico(b))  # through the memo: only changed paths
    fresh = write_state(MemoryBlockStore(), pico(b))  # built from scratch
    assert incremental == fresh
    assert read_state(store, incremental) == pico(b)


def test_one_change_writes_a_handful_of_blocks(tmp_path: Path) -> None:
    ent: dict[str, object] = {f"k{i}": i for i in range(100_000)}
    with SqliteBlockStore(tmp_path / "b.db") as store:
        write_state(store, pico(ent))
        assert all(len(b.data) <= MAX_BLOCK for b in walk(store, write_state(store, pico(ent))))
        before = len(store)
        loaded = read_state(store, write_state(store, pico(ent)))  # seeds the memo too
        ent2 = dict(loaded.rulesets[0].ent)
        ent2["k5"] = 6
        root, blocks = state_blocks(pico(ent2), store)
        new = [b for b in blocks if not store.has(b.cid)]
        store.put_many(new)
        assert len(new) <= 6  # state root, ruleset block, HAMT root and 1-2 nodes
        assert len(store) == before + len(new)
        assert read_state(store, root.cid).rulesets[0].ent == ent2


def test_memo_survives_a_lost_tree() -> None:
    ent = {f"k{i}": i for i in range(2000)}
    store = MemoryBlockStore()
    write_state(store, pico(ent))
    store._blocks.clear()  # e.g. collected: the memo's tree is gone, so rebuild
    ent["k1"] = "one"
    root = write_state(store, pico(ent))
    assert read_state(store, root) == pico(ent)


def test_large_value_goes_to_its_own_block() -> None:
    big = "y" * 20_000
    store = MemoryBlockStore()
    root = write_state(store, pico({"big": big, "small": 1}))
    slot = ruleset_block(store, root)["ent"]
    assert isinstance(slot, dict)
    assert slot["small"] == 1
    link = slot["big"]
    assert isinstance(link, dict)
    assert set(link) == {"/"}
    value_block = store.get_block(link["/"])
    assert value_block is not None
    assert value_block.value == big
    assert read_state(store, root) == pico({"big": big, "small": 1})


def test_value_near_the_block_limit() -> None:
    near = "z" * (MAX_BLOCK - 16)
    store = MemoryBlockStore()
    root = write_state(store, pico({"near": near}))
    assert read_state(store, root).rulesets[0].ent["near"] == near
    assert max(len(b.data) for b in walk(store, root)) <= MAX_BLOCK
    with pytest.raises(ValueTooLarge, match="a block may hold 262144"):
        write_state(store, pico({"over": "z" * MAX_BLOCK}))


def test_link_shaped_values_are_not_mistaken_for_links() -> None:
    tricky = {"/": CID.of(b"x")}
    store = MemoryBlockStore()
    root = write_state(store, pico({"t": tricky, "c": CID.of(b"y")}))
    assert read_state(store, root).rulesets[0].ent == {"t": tricky, "c": CID.of(b"y")}


def test_values_inside_a_hamt_over_200_bytes_are_linked() -> None:
    ent: dict[str, object] = {f"k{i}": i for i in range(1500)}
    ent["mid"] = "m" * 500
    store = MemoryBlockStore()
    root = write_state(store, pico(ent))
    link = ruleset_block(store, root)["ent"]
    assert isinstance(link, CID)
    slot = hamt.get(store, link, "mid")
    assert isinstance(slot, dict)
    assert set(slot) == {"/"}
    assert read_state(store, root) == pico(ent)


def test_broken_hamt_is_an_invalid_state() -> None:
    store = MemoryBlockStore()
    bad = Block.encode({"hashAlg": 0x22, "bucketSize": 3, "hamt": [bytes(32), []]})
    src = Block.raw(SRC.encode())
    rs = Block.encode({"rid": "r", "src": src.cid, "ent": bad.cid})
    ch = Block.encode({})
    root = Block.encode(
        {
            "v": 1,
            "did": DID,
            "rulesets": [{"rid": "r", "state": rs.cid}],
            "channels": ch.cid,
            "meta": {},
        }
    )
    store.put_many([bad, src, rs, ch, root])
    with pytest.raises(InvalidState, match="entity map: HAMT root"):
        read_state(store, root.cid)
