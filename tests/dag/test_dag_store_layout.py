"""SqliteBlockStore's file layout: 16 KB pages for new homes, existing homes open as they are
(their blocks stay in their rows; new ones go to the data file)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dag.block import Block
from dag.store import PAGE_SIZE, SqliteBlockStore


def pragma(store: SqliteBlockStore, name: str) -> int:
    (value,) = store._db.execute(f"PRAGMA {name}").fetchone()
    return int(value)


def test_a_new_home_gets_16_kb_pages_and_its_own_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    block = Block.encode({"big": "x" * 40_000})
    with SqliteBlockStore(path) as store:
        assert pragma(store, "page_size") == PAGE_SIZE == 16384
        assert pragma(store, "wal_autocheckpoint") == 0  # the store's, after a data sync
        store.put(block)
        assert (tmp_path / "blocks.sqlite-data").read_bytes() == block.data
    with SqliteBlockStore(path) as store:  # reopened: same pages, same block
        assert pragma(store, "page_size") == 16384
        assert store.get(block.cid) == block.data
        assert len(store) == 1


def test_an_existing_home_with_4_kb_pages_opens_and_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    old = [Block.encode({"old": i}) for i in range(5)]
    # the layout an older p2pico wrote: SQLite's default page size, WAL, the one table
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE blocks (cid BLOB PRIMARY KEY, data BLOB NOT NULL)")
    db.executemany("INSERT INTO blocks VALUES (?, ?)", [(b.cid.buffer, b.data) for b in old])
    db.commit()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    assert page_size == 4096
    new = [Block.encode({"new": i, "pad": "x" * 600}) for i in range(3)]
    with SqliteBlockStore(path) as store:
        assert pragma(store, "page_size") == 4096  # a page size cannot change in WAL mode
        assert all(store.get_block(b.cid) == b for b in old)
        with store.group():
            store.put_many(new + old[:2])  # old blocks again: ignored
        assert len(store) == 8
        rows = store._db.execute("SELECT data, at FROM blk ORDER BY id").fetchall()
        assert [bytes(d) for d, at in rows[:5]] == [b.data for b in old]  # kept in their rows
        assert [at for _, at in rows[:5]] == [None] * 5
        assert [bytes(d) for d, _ in rows[5:]] == [b""] * 3  # the new ones in the data file
        assert (tmp_path / "blocks.sqlite-data").read_bytes() == b"".join(b.data for b in new)
        assert store.delete_many([old[0].cid, new[0].cid]) == 2
    with SqliteBlockStore(path) as store:
        assert sorted(store.cids(), key=bytes) == sorted(
            [b.cid for b in old[1:] + new[1:]], key=bytes
        )
