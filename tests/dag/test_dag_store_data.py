"""SqliteBlockStore's data file: blocks' bytes appended beside the database, read back from it
(or from the open transaction's buffer), cut back on rollback, checked after a power loss,
synced before each checkpoint, and given back to the file system when GC deletes blocks."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from dag import store as store_mod
from dag.block import Block
from dag.store import SqliteBlockStore


def data_path(db: Path) -> Path:
    return Path(f"{db}-data")


def big(tag: bytes, size: int = 600) -> Block:
    """A raw block past INLINE_MAX (512 bytes), so its bytes go to the data file."""
    return Block.raw(tag.ljust(size, b"."))


def test_blocks_of_512_bytes_or_less_stay_in_their_rows(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    sizes = [0, 1, 300, 512, 513, 2000]
    blocks = [Block.raw(bytes([i]) * n) for i, n in enumerate(sizes)]
    with SqliteBlockStore(path) as store:
        store.put_many(blocks)
        rows = store._db.execute("SELECT length(data), at FROM blk ORDER BY id").fetchall()
        assert rows == [
            (0, None),
            (1, None),
            (300, None),
            (512, None),
            (0, 513),
            (0, 513 << 24 | 2000),
        ]
        assert data_path(path).read_bytes() == blocks[4].data + blocks[5].data
        assert [store.get(b.cid) for b in blocks] == [b.data for b in blocks]


def _in_a_group_then_fail(
    store: SqliteBlockStore,
    step: Callable[[], object],
    path: Path | None = None,
    sizes: list[int] | None = None,
) -> None:
    with store.group():
        step()
        if path is not None and sizes is not None:
            sizes.append(data_path(path).stat().st_size)
        raise RuntimeError("undo")


def test_bytes_go_to_the_data_file_and_come_back_to_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    blocks = [big(b"block %d" % i, 600 + i) for i in range(40)]
    with SqliteBlockStore(path) as store:
        store.put_many(blocks[:10])
        with store.group():
            for b in blocks[10:]:
                store.put(b)
        assert data_path(path).read_bytes() == b"".join(b.data for b in blocks)
        rows = store._db.execute("SELECT data, at FROM blk ORDER BY id").fetchall()
        offsets = [0]
        for b in blocks:
            offsets.append(offsets[-1] + len(b.data))
        assert rows == [
            (b"", o << 24 | len(b.data)) for o, b in zip(offsets[:-1], blocks, strict=True)
        ]
        with SqliteBlockStore(path) as other:  # another connection, open at the same time
            assert [other.get_block(b.cid) for b in blocks] == blocks
        assert [(c, d) for _, c, d in store.blocks_after(0)] == [(b.cid, b.data) for b in blocks]
    with SqliteBlockStore(path) as store:  # reopened
        assert all(store.has(b.cid) for b in blocks)
        assert [store.get(b.cid) for b in blocks] == [b.data for b in blocks]


def test_a_group_reads_its_own_blocks_before_and_after_its_buffer_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(store_mod, "DATA_BUFFER_BYTES", 2000)
    path = tmp_path / "blocks.sqlite"
    blocks = [Block.raw(bytes([i]) * 600) for i in range(10)]
    with SqliteBlockStore(path) as store:
        with store.group():
            store.put_many(blocks[:2])  # 1,200 bytes: buffered
            assert data_path(path).stat().st_size == 0
            assert store.get(blocks[0].cid) == blocks[0].data
            store.put_many(blocks[2:6])  # past 2,000 bytes: written to the file now
            assert data_path(path).stat().st_size == 3600
            store.put(blocks[6])  # buffered again, behind them
            assert [store.get(b.cid) for b in blocks[:7]] == [b.data for b in blocks[:7]]
        assert data_path(path).read_bytes() == b"".join(b.data for b in blocks[:7])


def test_a_rollback_cuts_the_file_back_and_the_next_commit_takes_its_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(store_mod, "DATA_BUFFER_BYTES", 500)
    path = tmp_path / "blocks.sqlite"
    kept, lost, later = Block.raw(b"k" * 700), Block.raw(b"l" * 800), Block.raw(b"z" * 600)
    with SqliteBlockStore(path) as store:
        store.put(kept)
        sizes: list[int] = []
        with pytest.raises(RuntimeError, match="undo"):
            _in_a_group_then_fail(store, lambda: store.put(lost), path, sizes)
        assert sizes == [1500]  # past 500 bytes: in the file before the rollback
        assert data_path(path).read_bytes() == kept.data
        assert not store.has(lost.cid)
        store.put(later)
        assert data_path(path).read_bytes() == kept.data + later.data
        assert store.get(later.cid) == later.data


def test_rows_whose_bytes_a_power_loss_took_are_dropped_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The WAL kept the newest transactions' rows, the file lost their bytes: those blocks,
    and the newer ones kept in their rows, are gone from blk, idx and memory, the others read
    as before, and new puts work."""
    path = tmp_path / "blocks.sqlite"
    old = [big(b"old %d" % i) for i in range(300)]
    new = [big(b"new %d" % i) for i in range(5)]
    small = Block.encode({"prev": new[-1].cid})
    with SqliteBlockStore(path, batch=100) as store:  # old ones merged into idx
        for at in range(0, 300, 50):
            store.put_many(old[at : at + 50])
        assert store._db.execute("SELECT count(*) FROM idx").fetchone()[0] >= 200
        size = data_path(path).stat().st_size
        store.put_many(new)
        store.put(small)  # in its row, after them: it may link to them, so it goes too
        store.put(Block.raw(b"x" * 512))
    # the file as the disk had it: the last transaction's bytes, and one more block's, missing
    os.truncate(data_path(path), size - len(old[-1].data))
    lost = [old[-1], *new, small, Block.raw(b"x" * 512)]
    with caplog.at_level(logging.WARNING, logger="dag.store"):
        store = SqliteBlockStore(path, batch=100)
    with store:
        assert "dropped 8 blocks" in caplog.text
        assert not any(store.has(b.cid) for b in lost)
        assert [store.get_block(b.cid) for b in old[:-1]] == old[:-1]
        assert len(store) == 299
        again = big(b"after")
        store.put_many([again, old[-1]])
        assert store.get(again.cid) == again.data
        assert store.get(old[-1].cid) == old[-1].data
    with SqliteBlockStore(path) as store:
        assert len(store) == 301


def test_the_data_file_is_synced_before_each_checkpoint_and_at_close(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        events.append("sync")
        real(fd)

    monkeypatch.setattr(store_mod.os, "fdatasync", fdatasync)
    monkeypatch.setattr(store_mod, "WAL_CHECKPOINT_BYTES", 4 * 16384)  # four frames
    monkeypatch.setattr(store_mod, "WAL_CHECK_EVERY", 1)
    path = tmp_path / "blocks.sqlite"
    store = SqliteBlockStore(path)
    store._db.set_trace_callback(lambda sql: events.append(sql) if "checkpoint" in sql else None)
    backlogs = []
    for i in range(12):
        store.put(big(b"%d" % i))  # a transaction of 1-2 frames (blk, then idx)
        backlogs.append(store._wal_backlog())
        assert backlogs[-1] is not None
        assert backlogs[-1] < 4, "the WAL passed the limit without a checkpoint"
    assert events[:2] == ["sync", "PRAGMA wal_checkpoint(PASSIVE)"]
    assert len(events) >= 4
    assert events == ["sync", "PRAGMA wal_checkpoint(PASSIVE)"] * (len(events) // 2)
    assert 0 in backlogs  # each checkpoint copied every frame (no reader held one)
    events.clear()
    store.close()
    assert events == ["sync"]
    store.close()  # twice: nothing more
    assert events == ["sync"]


def test_a_block_of_16_mib_or_more_stays_in_its_row(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    huge, small = Block.raw(bytes(1 << 24)), big(b"small")
    with SqliteBlockStore(path) as store:
        store.put_many([small, huge])
        rows = store._db.execute("SELECT length(data), at FROM blk ORDER BY id").fetchall()
        assert rows == [(0, len(small.data)), (1 << 24, None)]
        assert data_path(path).read_bytes() == small.data
        assert store.get(huge.cid) == huge.data
        assert store.delete_many([huge.cid]) == 1


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_gc_gives_dead_blocks_space_back_and_keeps_every_live_byte(tmp_path: Path) -> None:
    """Rounds of deletes (alone and in groups, one rolled back) over 4 KiB-ish blocks: every
    live block reads back whole, and the file's allocated space falls with the live bytes
    (where the file system punches holes; ext4, xfs, btrfs and tmpfs do)."""
    rng = random.Random(5)
    path = tmp_path / "blocks.sqlite"
    blocks = [Block.raw(rng.randbytes(rng.randrange(1000, 9000))) for _ in range(1500)]
    with SqliteBlockStore(path) as store:
        for at in range(0, len(blocks), 100):
            with store.group():
                store.put_many(blocks[at : at + 100])
        total = data_path(path).stat().st_size
        os.fsync(store._fd)
        live = set(range(len(blocks)))
        with pytest.raises(RuntimeError, match="undo"):  # rolled back: nothing punched
            _in_a_group_then_fail(store, lambda: store.delete_many([b.cid for b in blocks[:700]]))
        assert all(store.get(b.cid) == b.data for b in blocks)
        for step in range(4):
            doomed = rng.sample(sorted(live), len(live) // 2)
            if step % 2:
                with store.group():
                    store.delete_many([blocks[i].cid for i in doomed[: len(doomed) // 2]])
                    store.delete_many([blocks[i].cid for i in doomed[len(doomed) // 2 :]])
            else:
                assert store.delete_many([blocks[i].cid for i in doomed]) == len(doomed)
            live -= set(doomed)
            assert all(store.get(blocks[i].cid) == blocks[i].data for i in live)
            assert not any(store.has(blocks[i].cid) for i in doomed)
        assert data_path(path).stat().st_size == total  # holes, not a shorter file
        live_bytes = sum(len(blocks[i].data) for i in live)
        if store_mod._fallocate is False:
            pytest.skip("this file system punches no holes")
        # each live block keeps at most the two pages its ends share with dead neighbours
        assert _allocated(data_path(path)) <= live_bytes + len(live) * 2 * 4096
        assert _allocated(data_path(path)) < total // 4
        # everything deleted, the tail too: only the file's last, partial page stays (a
        # writer may be appending to it), and the file system's own block for the file's
        # extents (ext4 counts it)
        store.delete_many([blocks[i].cid for i in live])
        assert _allocated(data_path(path)) <= 2 * 4096
        fresh = big(b"after the holes")
        store.put(fresh)
        assert store.get(fresh.cid) == fresh.data
        assert data_path(path).stat().st_size == total + len(fresh.data)


class _Stop(BaseException):
    """A process stopping where it is (as a kill would), in a test."""


def test_space_a_gc_freed_is_given_back_at_open_after_a_stop_before_the_punch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GC's COMMIT records the freed ranges with the deletes: a process that stops before
    punching them leaves them recorded, and the next open punches them."""
    rng = random.Random(9)
    path = tmp_path / "blocks.sqlite"
    blocks = [Block.raw(rng.randbytes(8192)) for _ in range(400)]
    with SqliteBlockStore(path) as store:
        store.put_many(blocks)
    before = _allocated(data_path(path))
    punch = store_mod._punch

    def stop(fd: int, lo: int, hi: int) -> None:
        raise _Stop

    store = SqliteBlockStore(path)
    monkeypatch.setattr(store_mod, "_punch", stop)
    with pytest.raises(_Stop):
        store.delete_many([b.cid for b in blocks[:300]])  # committed, then the stop
    store._db.close()  # no close(): nothing more of this process runs
    os.close(store._fd)
    db = sqlite3.connect(path)
    try:
        (recorded,) = db.execute("SELECT count(*) FROM punch").fetchone()
    finally:
        db.close()
    assert recorded == 1  # one range: the first 300 blocks, next to each other
    assert _allocated(data_path(path)) >= before  # nothing given back yet
    monkeypatch.setattr(store_mod, "_punch", punch)
    with SqliteBlockStore(path) as store:
        assert store._db.execute("SELECT count(*) FROM punch").fetchone() == (0,)
        assert all(store.get(b.cid) == b.data for b in blocks[300:])
        assert not any(store.has(b.cid) for b in blocks[:300])
        if store_mod._fallocate is False:
            pytest.skip("this file system punches no holes")
        assert _allocated(data_path(path)) <= 100 * 8192 + 4 * 4096


def test_a_home_before_the_data_file_keeps_its_rows_and_gains_the_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "blocks.sqlite"
    db = sqlite3.connect(path)  # blk as the store wrote it before the data file
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE blk (id INTEGER PRIMARY KEY, cid BLOB NOT NULL, data BLOB NOT NULL)")
    db.execute("CREATE TABLE idx (k INTEGER PRIMARY KEY, id INTEGER NOT NULL)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('indexed_upto', 0)")
    old = [Block.raw(b"old %d" % i) for i in range(20)]
    db.executemany(
        "INSERT INTO blk (cid, data) VALUES (?, ?)", [(b.cid.buffer, b.data) for b in old]
    )
    db.commit()
    db.close()
    new = [big(b"new %d" % i) for i in range(5)]
    with SqliteBlockStore(path) as store:
        assert store._data_from == 21
        store.put_many(new)
        assert [store.get(b.cid) for b in old + new] == [b.data for b in old + new]
        assert store.delete_many([old[3].cid, new[1].cid, old[19].cid]) == 3
    with SqliteBlockStore(path) as store:  # no row is lost at open: the old ones have no `at`
        assert len(store) == 22
        assert data_path(path).stat().st_size == sum(len(b.data) for b in new)


def test_two_writing_connections_take_turns_at_the_end_of_the_file(tmp_path: Path) -> None:
    """Each connection learns where the other left the file (its commits change SQLite's
    data_version), also when it first saw them in a read."""
    path = tmp_path / "blocks.sqlite"
    blocks = [big(b"turn %d" % i, 520 * (i + 1)) for i in range(8)]
    with SqliteBlockStore(path) as a, SqliteBlockStore(path) as b:
        a.put(blocks[0])
        assert b.get(blocks[0].cid) == blocks[0].data  # b sees a's commit in a read
        b.put(blocks[1])
        a.put_many(blocks[2:4])
        with b.group():
            b.put_many(blocks[4:6])
        a.put(blocks[6])
        b.put(blocks[7])
        for s in (a, b):
            assert [s.get(x.cid) for x in blocks] == [x.data for x in blocks]
    assert data_path(path).read_bytes() == b"".join(x.data for x in blocks)
    with SqliteBlockStore(path) as c:
        assert [c.get_block(x.cid) for x in blocks] == blocks
