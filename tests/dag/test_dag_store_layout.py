"""SqliteBlockStore's file layout: 16 KB pages for new homes, existing homes open as they are."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dag.block import Block
from dag.store import PAGE_SIZE, WAL_CHECKPOINT_BYTES, SqliteBlockStore


def pragma(store: SqliteBlockStore, name: str) -> int:
    (value,) = store._db.execute(f"PRAGMA {name}").fetchone()
    return int(value)


def test_a_new_home_gets_16_kb_pages_and_a_32_mb_wal(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    block = Block.encode({"big": "x" * 40_000})  # spans pages (overflow) either way
    with SqliteBlockStore(path) as store:
        assert pragma(store, "page_size") == PAGE_SIZE == 16384
        assert pragma(store, "wal_autocheckpoint") * PAGE_SIZE == WAL_CHECKPOINT_BYTES
        store.put(block)
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
    new = [Block.encode({"new": i}) for i in range(3)]
    with SqliteBlockStore(path) as store:
        assert pragma(store, "page_size") == 4096  # a page size cannot change in WAL mode
        assert pragma(store, "wal_autocheckpoint") == WAL_CHECKPOINT_BYTES // 4096
        assert all(store.get_block(b.cid) == b for b in old)
        with store.group():
            store.put_many(new + old[:2])  # old blocks again: ignored
        assert len(store) == 8
        assert store.delete_many([old[0].cid, new[0].cid]) == 2
    with SqliteBlockStore(path) as store:
        assert sorted(store.cids(), key=bytes) == sorted(
            [b.cid for b in old[1:] + new[1:]], key=bytes
        )
