"""dag/gc.py: mark from roots (head chains within a retention window), sweep the rest."""

from pathlib import Path

import pytest

from dag.block import Block
from dag.cid import CID
from dag.did import Keypair
from dag.gc import collect, reachable
from dag.head import InvalidHead, sign_head, verify_chain, verify_chain_tail
from dag.state import PicoState, RulesetState, write_state
from dag.store import MemoryBlockStore, SqliteBlockStore

KEY = Keypair.from_seed(bytes(32))


def history(store: MemoryBlockStore | SqliteBlockStore, n: int) -> list[CID]:
    """n+1 heads (seq 0..n) of a pico whose entity `n` counts, each with a cause block."""
    heads: list[CID] = []
    prev = None
    for seq in range(n + 1):
        state = PicoState(did=KEY.did, rulesets=(RulesetState("r", "ruleset r {}", {"n": seq}),))
        root = write_state(store, state)
        cause = Block.encode({"domain": "d", "type": "t", "eid": f"e{seq}"})
        head = sign_head(KEY, seq=seq, prev=prev, state=root, ts=seq, cause=cause.cid)
        store.put_many([cause, head])
        heads.append(head.cid)
        prev = head.cid
    return heads


def test_delete_many_memory_and_sqlite(tmp_path: Path) -> None:
    blocks = [Block.raw(bytes([i])) for i in range(5)]
    for store in (MemoryBlockStore(), SqliteBlockStore(tmp_path / "s.db")):
        store.put_many(blocks)
        assert store.delete_many([blocks[0].cid, blocks[1].cid, Block.raw(b"absent").cid]) == 2
        assert len(store) == 3
        assert not store.has(blocks[0].cid)
        assert store.has(blocks[2].cid)
        assert store.delete_many([]) == 0


def test_collect_keeps_everything_reachable_and_deletes_the_rest() -> None:
    store = MemoryBlockStore()
    heads = history(store, 4)
    orphan = Block.raw(b"orphan")
    store.put(orphan)
    total = len(store)
    report = collect(store, [heads[-1]], keep_history=None)
    assert report.deleted == 1
    assert report.bytes_freed == len(orphan.data)
    assert report.kept == total - 1 == len(store)
    assert report.truncated == {}
    assert len(verify_chain(store.get_block, heads[-1])) == 5
    # idempotent
    assert collect(store, [heads[-1]], keep_history=None).deleted == 0


def test_retention_window_truncates_old_heads_and_their_states(tmp_path: Path) -> None:
    with SqliteBlockStore(tmp_path / "b.db") as store:
        heads = history(store, 9)
        report = collect(store, [heads[-1]], keep_history=2)
        assert report.truncated == {heads[-1]: 7}
        assert report.deleted > 0
        for cid in heads[:7]:
            assert not store.has(cid)
        for cid in heads[7:]:
            assert store.has(cid)
        with pytest.raises(InvalidHead, match="missing head block"):
            verify_chain(store.get_block, heads[-1])
        chain, missing = verify_chain_tail(store.get_block, heads[-1])
        assert [h.seq for h in chain] == [7, 8, 9]
        assert missing == heads[6]
        # what is left is exactly the three heads with their states and causes
        live, _, _ = reachable(store, [heads[-1]], keep_history=None)
        assert live == set(store.cids())
        # collecting again, keeping all history, over a truncated chain works
        again = collect(store, [heads[-1]], keep_history=None)
        assert again.deleted == 0
        assert again.missing == 1
        assert again.truncated == {heads[-1]: 7}


def test_keep_history_zero_keeps_only_the_current_state() -> None:
    store = MemoryBlockStore()
    heads = history(store, 3)
    collect(store, [heads[-1]], keep_history=0)
    chain, missing = verify_chain_tail(store.get_block, heads[-1])
    assert [h.seq for h in chain] == [3]
    assert missing == heads[2]


def test_shared_blocks_survive_and_windows_are_per_root() -> None:
    """An older root (e.g. an imported head) keeps its own window."""
    store = MemoryBlockStore()
    heads = history(store, 9)
    report = collect(store, [heads[-1], heads[4]], keep_history=1)
    assert report.truncated == {heads[-1]: 8, heads[4]: 3}
    assert {c for c in heads if store.has(c)} == {heads[3], heads[4], heads[8], heads[9]}
    # the source block is shared by every state: still there
    assert store.has(Block.raw(b"ruleset r {}").cid)


def test_non_head_roots_keep_everything_they_link() -> None:
    store = MemoryBlockStore()
    heads = history(store, 2)
    holder = Block.encode({"all": heads[-1]})  # a generic block linking a head
    store.put(holder)
    collect(store, [holder.cid], keep_history=0)
    assert len(verify_chain(store.get_block, heads[-1])) == 3


def test_dry_run_and_bad_arguments() -> None:
    store = MemoryBlockStore()
    heads = history(store, 3)
    n = len(store)
    report = collect(store, [heads[-1]], keep_history=0, dry_run=True)
    assert report.deleted > 0
    assert len(store) == n
    assert report.kept == n - report.deleted
    with pytest.raises(ValueError, match="keep_history"):
        collect(store, [], keep_history=-1)
    # no roots: everything goes
    assert collect(store, [], keep_history=None).kept == 0
    assert len(store) == 0


def test_missing_root_is_reported_not_fatal() -> None:
    store = MemoryBlockStore()
    report = collect(store, [Block.raw(b"gone").cid], keep_history=None)
    assert report.missing == 1
    assert report.deleted == 0
