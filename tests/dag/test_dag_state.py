from pathlib import Path

import pytest

from dag.block import Block, BlockMismatchError
from dag.cid import CID
from dag.state import (
    InvalidState,
    PicoState,
    RulesetState,
    read_state,
    state_blocks,
    write_state,
)
from dag.store import MemoryBlockStore, MissingBlock, SqliteBlockStore

SRC_A = 'ruleset a { rule hello { select when echo hello send_directive("hi") } }'
SRC_B = "ruleset b { global { x = 1 } }"


def make_state(n: int = 0) -> PicoState:
    return PicoState(
        did="did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        rulesets=(
            RulesetState(rid="a", source=SRC_A, ent={"n": n, "names": ["x", "y"]}),
            RulesetState(rid="b", source=SRC_B, ent={"l": CID.of(b"big value")}),
        ),
        channels={"eci1": {"tags": ["admin"], "policy": None}, "eci2": {"tags": []}},
        meta={"created": 1700000000000, "name": "p"},
    )


def test_round_trip() -> None:
    store = MemoryBlockStore()
    state = make_state()
    root = write_state(store, state)
    assert read_state(store, root) == state
    assert len(store) == 6  # root, channels, 2 ruleset blocks, 2 sources
    assert write_state(store, state) == root
    assert len(store) == 6


def test_root_shape() -> None:
    store = MemoryBlockStore()
    root = write_state(store, make_state())
    blk = store.get_block(root)
    assert blk is not None
    value = blk.value
    assert isinstance(value, dict)
    assert set(value) == {"v", "did", "rulesets", "channels", "meta"}
    assert value["v"] == 1
    assert [e["rid"] for e in value["rulesets"]] == ["a", "b"]
    rs = store.get_block(value["rulesets"][0]["state"])
    assert rs is not None
    assert isinstance(rs.value, dict)
    assert rs.value["src"] == CID.of(SRC_A.encode(), 0x55)


def test_structural_sharing() -> None:
    store = MemoryBlockStore()
    write_state(store, make_state(0))
    before = set(store.cids())
    root = write_state(store, make_state(1))
    new = set(store.cids()) - before
    assert len(new) == 2
    assert root in new
    (rs_cid,) = new - {root}
    rs = store.get_block(rs_cid)
    assert rs is not None
    assert rs.value == {
        "rid": "a",
        "src": CID.of(SRC_A.encode(), 0x55),
        "ent": {"n": 1, "names": ["x", "y"]},
    }


def test_ruleset_order_matters() -> None:
    store = MemoryBlockStore()
    s = make_state()
    swapped = PicoState(did=s.did, rulesets=s.rulesets[::-1], channels=s.channels, meta=s.meta)
    assert write_state(store, s) != write_state(store, swapped)
    assert read_state(store, write_state(store, swapped)).rulesets[0].rid == "b"


def test_sqlite_round_trip(tmp_path: Path) -> None:
    with SqliteBlockStore(tmp_path / "state.db") as store:
        root = write_state(store, make_state(3))
    with SqliteBlockStore(tmp_path / "state.db") as store:
        assert read_state(store, root) == make_state(3)


def test_missing_block() -> None:
    full = MemoryBlockStore()
    root = write_state(full, make_state())
    partial = MemoryBlockStore()
    src = Block.raw(SRC_A.encode())
    partial.put_many(
        b for cid in full.cids() if cid != src.cid and (b := full.get_block(cid)) is not None
    )
    with pytest.raises(
        MissingBlock, match=f"block {src.cid} is not in the store \\(source of a\\)"
    ):
        read_state(partial, root)


def test_corrupt_block() -> None:
    store = MemoryBlockStore()
    root = write_state(store, make_state())
    store._blocks[root] = Block.encode({"v": 1}).data
    with pytest.raises(BlockMismatchError):
        read_state(store, root)


@pytest.mark.parametrize(
    ("root_value", "message"),
    [
        ({"v": 2}, "unsupported state version 2"),
        ([1], "expected a map, got list"),
        ({"v": 1, "did": 5}, "field 'did' must be str, got int"),
        (
            {"v": 1, "did": "d", "rulesets": [{"rid": "a", "state": "x"}]},
            "rulesets\\[0\\]: field 'state' must be CID, got str",
        ),
        (
            {"v": 1, "did": "d", "rulesets": [], "channels": CID.of(b"c", 0x55)},
            "expected codec 0x71, got 0x55",
        ),
    ],
)
def test_invalid_state(root_value: object, message: str) -> None:
    store = MemoryBlockStore()
    blk = Block.encode(root_value)
    store.put(blk)
    with pytest.raises(InvalidState, match=message):
        read_state(store, blk.cid)


def test_rid_mismatch() -> None:
    store = MemoryBlockStore()
    rs = Block.encode({"rid": "other", "src": Block.raw(b"").cid, "ent": {}})
    ch = Block.encode({})
    root = Block.encode(
        {
            "v": 1,
            "did": "d",
            "rulesets": [{"rid": "a", "state": rs.cid}],
            "channels": ch.cid,
            "meta": {},
        }
    )
    store.put_many([rs, ch, root, Block.raw(b"")])
    with pytest.raises(InvalidState, match="rid is 'other', but the state root lists it as 'a'"):
        read_state(store, root.cid)


def test_rule_states_round_trip_and_are_absent_when_empty() -> None:
    store = MemoryBlockStore()
    plain = PicoState(did="did:key:x", rulesets=(RulesetState("r", SRC_A, {"n": 1}),))
    with_rules = PicoState(
        did="did:key:x",
        rulesets=(RulesetState("r", SRC_A, {"n": 1}, rules={"pair": {"seen": ["a"]}}),),
    )
    root_plain = write_state(store, plain)
    root_rules = write_state(store, with_rules)
    assert root_plain != root_rules
    assert read_state(store, root_rules).rulesets[0].rules == {"pair": {"seen": ["a"]}}
    assert read_state(store, root_plain).rulesets[0].rules == {}
    rs_block = store.get_block(state_blocks(plain)[1][1].cid)
    assert rs_block is not None
    assert rs_block.value == {"rid": "r", "src": state_blocks(plain)[1][0].cid, "ent": {"n": 1}}
