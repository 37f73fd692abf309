"""SqliteBlockStore's waiting rows: a write transaction's new blk rows stay in memory until 64
of them fill one INSERT (or the COMMIT comes); every read inside the transaction sees them, a
rollback drops them, and the COMMIT writes them all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dag import store as store_mod
from dag.block import Block
from dag.store import SqliteBlockStore


def small(i: int) -> Block:
    return Block.encode({"n": i})


def blk_inserts(store: SqliteBlockStore) -> list[str]:
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if "INTO blk" in sql else None)
    return seen


def test_a_group_writes_its_rows_64_a_statement(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    blocks = [small(i) for i in range(150)]
    with SqliteBlockStore(path) as store:
        inserts = blk_inserts(store)
        with store.group():
            for at in range(0, 150, 5):  # 30 commits of 5 blocks
                store.put_many(blocks[at : at + 5])
                if at == 60:  # 65 rows: one statement took 64, one row waits
                    assert len(inserts) == 1
                    assert inserts[0].count("nullif(") == 64
                    assert len(store._rows) == 4
                    assert store.get(blocks[63].cid) == blocks[63].data  # in blk: no INSERT
                    assert len(inserts) == 1
                    assert len(store._rows) == 4
            assert len(inserts) == 2  # 128 rows in; 22 wait for the COMMIT
            other = sqlite3.connect(path)
            assert other.execute("SELECT count(*) FROM blk").fetchone() == (0,)  # before COMMIT
            other.close()
        assert len(inserts) == 3
        assert inserts[2].count("nullif(") == 22
        assert store._rows == []
        with SqliteBlockStore(path) as other:
            assert [other.get(b.cid) for b in blocks] == [b.data for b in blocks]
            ids = [int(i) for (i,) in other._db.execute("SELECT id FROM blk ORDER BY id")]
            assert ids == list(range(1, 151))


def test_reads_inside_a_group_see_the_waiting_rows(tmp_path: Path) -> None:
    blocks = [small(i) for i in range(10)]
    with SqliteBlockStore(tmp_path / "blocks.sqlite") as store:
        store.put_many(blocks[:2])
        with store.group():
            store.put_many(blocks[2:])
            assert len(store._rows) == 4 * 8  # all waiting
            assert store.get(blocks[9].cid) == blocks[9].data
            store.put(small(10))  # waits, after the rows a read put in
            assert len(store._rows) == 4
            assert [c for _, c, _ in store.blocks_after(2)] == [b.cid for b in blocks[2:]] + [
                small(10).cid
            ]
            store.put(small(12))
            assert len(store) == 12
            store.put(small(13))
            assert [b.cid for b in blocks] + [small(i).cid for i in (10, 12, 13)] == list(
                store.cids()
            )
            store.put(small(11))
            assert store.delete_many([small(11).cid, blocks[3].cid]) == 2
        assert not store.has(small(11).cid)
        assert not store.has(blocks[3].cid)
        assert len(store) == 12


def test_a_rollback_drops_the_waiting_rows(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    blocks = [small(i) for i in range(100)]
    with SqliteBlockStore(path) as store:
        store.put(blocks[0])
        waiting: list[int] = []

        def commits_then_fails() -> None:
            with store.group():
                store.put_many(blocks[1:71])  # 64 rows in blk, 6 waiting
                waiting.append(len(store._rows) // 4)
                raise RuntimeError("stop")

        with pytest.raises(RuntimeError, match="stop"):
            commits_then_fails()
        assert waiting == [6]
        assert store._rows == []
        assert len(store) == 1
        assert not any(store.has(b.cid) for b in blocks[1:])
        with store.group():
            store.put_many(blocks[1:4])
        assert [store.get(b.cid) for b in blocks[:4]] == [b.data for b in blocks[:4]]
    with SqliteBlockStore(path) as store:  # reopened: exactly the committed blocks
        assert [c for _, c, _ in store.blocks_after(0)] == [b.cid for b in blocks[:4]]


def test_a_failed_insert_undoes_the_transaction(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A statement that fails as the waiting rows go in (here at the COMMIT) rolls the whole
    transaction back, memory included; the store goes on working."""
    blocks = [small(i) for i in range(20)]
    with SqliteBlockStore(tmp_path / "blocks.sqlite") as store:
        real = store._put_rows

        def failing(*, whole: bool = False) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(store, "_put_rows", failing)
        with pytest.raises(OSError, match="disk full"), store.group():
            store.put_many(blocks[:10])
        monkeypatch.setattr(store, "_put_rows", real)
        assert store._rows == []
        assert len(store) == 0
        assert not store.has(blocks[0].cid)
        store.put_many(blocks)
        assert [store.get(b.cid) for b in blocks] == [b.data for b in blocks]


def test_the_filtered_path_waits_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Blocks the C fast path declines (here: no C) wait the same way."""
    monkeypatch.setattr(store_mod, "_native", None)
    path = tmp_path / "blocks.sqlite"
    blocks = [small(i) for i in range(70)]
    with SqliteBlockStore(path) as store:
        inserts = blk_inserts(store)
        with store.group():
            store.put_many(blocks[:3])
            store.put_many(blocks[:5])  # three of them again: two rows more
            assert inserts == []
            assert len(store._rows) == 4 * 5
            assert store.get(blocks[4].cid) == blocks[4].data
            assert len(inserts) == 1
            store.put_many(blocks[5:])
        assert [store.get(b.cid) for b in blocks] == [b.data for b in blocks]
        assert len(store) == 70
