"""Block stores (memory, SQLite) and DAG walking over blocks from block.py; state.py writes here."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, runtime_checkable

from dag.block import Block
from dag.cid import CID


class MissingBlock(KeyError):
    """A block needed to read or walk a DAG is not in the store."""

    def __init__(self, cid: CID, context: str = "") -> None:
        self.cid = cid
        super().__init__(f"block {cid} is not in the store{context}")

    def __str__(self) -> str:
        return str(self.args[0])


@runtime_checkable
class BlockStore(Protocol):
    def get(self, cid: CID) -> bytes | None: ...
    def has(self, cid: CID) -> bool: ...
    def put(self, block: Block) -> None: ...
    def put_many(self, blocks: Iterable[Block]) -> None: ...
    def get_block(self, cid: CID) -> Block | None:
        """The block for `cid`, re-verified against it; None if absent."""
        ...


class MemoryBlockStore:
    """Blocks in a dict; for tests and short-lived engines."""

    def __init__(self) -> None:
        self._blocks: dict[CID, bytes] = {}

    def get(self, cid: CID) -> bytes | None:
        return self._blocks.get(cid)

    def has(self, cid: CID) -> bool:
        return cid in self._blocks

    def put(self, block: Block) -> None:
        self._blocks[block.cid] = block.data

    def put_many(self, blocks: Iterable[Block]) -> None:
        for block in blocks:
            self._blocks[block.cid] = block.data

    def get_block(self, cid: CID) -> Block | None:
        data = self._blocks.get(cid)
        return None if data is None else Block.decode(cid, data)

    def delete_many(self, cids: Iterable[CID]) -> int:
        """Delete these blocks (absent ones are skipped); return how many were deleted."""
        n = 0
        for cid in cids:
            if self._blocks.pop(cid, None) is not None:
                n += 1
        return n

    def cids(self) -> Iterator[CID]:
        return iter(list(self._blocks))

    def __len__(self) -> int:
        return len(self._blocks)


# One INSERT statement for up to this many blocks (a commit writes a handful): binding one
# statement's rows costs less than executemany's per-row steps; larger batches use executemany.
_MULTI_ROWS: Final = 16
_INSERT: Final = "INSERT OR IGNORE INTO blocks (cid, data) VALUES "
_INSERTS: Final = [""] + [_INSERT + ", ".join(["(?, ?)"] * n) for n in range(1, _MULTI_ROWS + 1)]
# SQLite's page cache per connection (negative: KiB). The default (2 MB) is smaller than the
# cid index of a store of a few hundred thousand blocks; every insert lands on a random leaf
# of that index (CIDs are hashes), so a small cache reads leaves back from the file.
CACHE_KIB: Final = 64 * 1024
# Page size of a new database (SQLite's default is 4,096; an existing home keeps its own). A
# commit of a large map writes 12-16 KB of blocks (HAMT nodes, an inline map): with 16 KB pages
# that is fewer pages, overflow chains and WAL frames (two write calls each) per commit. A
# replay of 20,000 recorded commits of the 100,000-entry bench pico, group commit, three rounds
# interleaved on a busy 2-core VM: 110-143 us of CPU each with 4 KB pages, 95-111 with 16 KB;
# the 10-entry pico (725 B per commit) 49-56 either way.
PAGE_SIZE: Final = 16384
# WAL bytes before SQLite copies the frames into the database (a checkpoint; SQLite's default
# is 1,000 pages, 4 MB with 4 KB pages). Each insert dirties a random leaf of the cid index,
# and a checkpoint writes each dirty page once however many commits wrote it to the WAL, so
# rarer checkpoints write fewer pages (17 KB commits in a SQLite-only micro-benchmark with 4 KB
# pages: 145-152 us of CPU each with the default, 131 with 4,096 pages, 115 with 16,384); the
# WAL may grow to 32 MB (8,192 pages of 4 KB, 2,048 of 16 KB).
WAL_CHECKPOINT_BYTES: Final = 32 * 1024 * 1024


class SqliteBlockStore:
    """Blocks in one SQLite table `blocks(cid BLOB PRIMARY KEY, data BLOB)`, WAL mode, one thread."""

    def __init__(self, path: str | Path) -> None:
        # isolation_level=None: autocommit, so put_many can own its BEGIN/COMMIT.
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._group_depth = 0  # > 0 inside group(): put_many joins the open transaction
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # no effect once the file has tables
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS blocks (cid BLOB PRIMARY KEY, data BLOB NOT NULL)"
        )
        (page,) = self._db.execute("PRAGMA page_size").fetchone()
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // int(page)}")

    def get(self, cid: CID) -> bytes | None:
        row = self._db.execute("SELECT data FROM blocks WHERE cid = ?", (cid.buffer,)).fetchone()
        return None if row is None else bytes(row[0])

    def has(self, cid: CID) -> bool:
        row = self._db.execute("SELECT 1 FROM blocks WHERE cid = ?", (cid.buffer,)).fetchone()
        return row is not None

    def put(self, block: Block) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)", (block.cid.buffer, block.data)
        )

    def put_many(self, blocks: Iterable[Block]) -> None:
        if not isinstance(blocks, list | tuple):
            blocks = list(blocks)
        if self._group_depth:
            self._insert(blocks)
            return
        self._db.execute("BEGIN")
        try:
            self._insert(blocks)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _insert(self, blocks: list[Block] | tuple[Block, ...]) -> None:
        n = len(blocks)
        if n > _MULTI_ROWS:
            self._db.executemany(_INSERT + "(?, ?)", [(b.cid.buffer, b.data) for b in blocks])
        elif n:
            args: list[bytes] = []
            for b in blocks:
                args += (b.cid.buffer, b.data)
            self._db.execute(_INSERTS[n], args)

    @contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: every ``put``/``put_many`` inside is one SQLite transaction.

        Several pico commits then cost one COMMIT. Nothing written inside is durable, or
        visible to other connections, until the outermost ``group`` exits; an exception
        rolls all of it back, so the caller must not publish a head written inside until
        then. Nested groups join the outermost one.
        """
        if self._group_depth:
            self._group_depth += 1
            try:
                yield
            finally:
                self._group_depth -= 1
            return
        self._db.execute("BEGIN")
        self._group_depth = 1
        try:
            yield
        except BaseException:
            self._group_depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._group_depth = 0
        self._db.execute("COMMIT")

    def get_block(self, cid: CID) -> Block | None:
        data = self.get(cid)
        return None if data is None else Block.decode(cid, data)

    def delete_many(self, cids: Iterable[CID]) -> int:
        """Delete these blocks in one transaction; return how many were deleted."""
        rows = [(cid.buffer,) for cid in cids]
        before = self._db.total_changes
        self._db.execute("BEGIN")
        try:
            self._db.executemany("DELETE FROM blocks WHERE cid = ?", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return self._db.total_changes - before

    def cids(self) -> Iterator[CID]:
        rows = self._db.execute("SELECT cid FROM blocks").fetchall()
        return (CID.parse(bytes(r[0])) for r in rows)

    def __len__(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM blocks").fetchone()
        return int(n)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteBlockStore:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def walk(store: BlockStore, root: CID, *, absent: Collection[CID] = ()) -> Iterator[Block]:
    """Yield every block reachable from `root` once, depth-first, verifying each.

    Links to a CID in `absent` are not followed: the known end of a truncated history (the
    `prev` of the oldest head a GC kept, dag/gc.py).  Any other missing block raises.
    """
    seen = {root, *absent}
    stack = [root]
    while stack:
        cid = stack.pop()
        block = store.get_block(cid)
        if block is None:
            raise MissingBlock(cid, f" (reachable from {root})")
        yield block
        for link in reversed(block.links()):
            if link not in seen:
                seen.add(link)
                stack.append(link)
