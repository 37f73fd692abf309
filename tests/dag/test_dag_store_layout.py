"""SqliteBlockStore's file layout: 16 KB pages for new homes, existing homes open as they are
(their blocks stay in their rows; new ones go to the data file); the layout's number in
user_version, a newer one and a file that is not a database refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dag.block import Block
from dag.store import PAGE_SIZE, STORE_FORMAT, SqliteBlockStore, StoreError


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
        assert pragma(store, "user_version") == STORE_FORMAT  # brought up to this layout
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


def test_a_store_keeps_its_format_number_and_an_unnumbered_one_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    block = Block.encode({"kept": 1})
    with SqliteBlockStore(path) as store:
        assert pragma(store, "user_version") == STORE_FORMAT == 1
        store.put(block)
    # a store written before the number was kept (user_version 0) is the same layout
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA user_version=0")
    db.commit()
    db.close()
    with SqliteBlockStore(path) as store:
        assert pragma(store, "user_version") == STORE_FORMAT
        assert store.get(block.cid) == block.data


def test_a_store_of_a_newer_format_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    block = Block.encode({"newer": True})
    with SqliteBlockStore(path) as store:
        store.put(block)
    db = sqlite3.connect(str(path))
    db.execute(f"PRAGMA user_version={STORE_FORMAT + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as e:
        SqliteBlockStore(path)
    assert str(e.value) == (
        f"block store {path}: format {STORE_FORMAT + 1}, written by a newer p2pico; this one"
        f" reads formats up to {STORE_FORMAT}"
    )
    assert path.read_bytes() == before  # nothing migrated, nothing dropped
    db = sqlite3.connect(str(path))
    db.execute(f"PRAGMA user_version={STORE_FORMAT}")
    db.commit()
    db.close()
    with SqliteBlockStore(path) as store:  # the refusal closed its files and lost nothing
        assert store.get(block.cid) == block.data


def test_a_file_that_is_not_a_database_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    path.write_bytes(b"not a database; " * 300)
    with pytest.raises(StoreError) as e:
        SqliteBlockStore(path)
    assert str(e.value) == f"block store {path}: cannot open it: file is not a database"
    assert not (tmp_path / "blocks.sqlite-data").exists()  # refused before creating it
