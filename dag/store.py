"""Block stores (memory, SQLite) and DAG walking over blocks from block.py; state.py writes here."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, runtime_checkable

from dag.block import Block
from dag.cid import CID

try:  # the C Bloom filter (setup.py builds it where it can; _Filter falls back to Python)
    from dag import _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None  # type: ignore[assignment]


class MissingBlock(KeyError):
    """A block needed to read or walk a DAG is not in the store."""

    def __init__(self, cid: CID, context: str = "") -> None:
        self.cid = cid
        super().__init__(f"block {cid} is not in the store{context}")

    def __str__(self) -> str:
        return str(self.args[0])


class StoreError(ValueError):
    """A block store file that cannot be opened: not a SQLite database, unreadable, or
    written by a newer p2pico (its format is above STORE_FORMAT)."""


def _unopenable(path: str | Path, error: sqlite3.Error) -> StoreError:
    return StoreError(f"block store {path}: cannot open it: {error}")


# The layout SqliteBlockStore writes, in the database's user_version (0: a file from before
# the number was kept, whose layout opening it brings up to date). A file whose number is
# higher was written by a newer p2pico and is refused, not misread.
STORE_FORMAT: Final = 1


@runtime_checkable
class BlockStore(Protocol):
    def get(self, cid: CID) -> bytes | None: ...
    def has(self, cid: CID) -> bool: ...
    def present(self, cids: Iterable[CID]) -> set[CID]:
        """Which of `cids` are stored."""
        ...

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        """The bytes of each of `cids` that is stored (absent ones are left out)."""
        ...

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

    def present(self, cids: Iterable[CID]) -> set[CID]:
        return {cid for cid in cids if cid in self._blocks}

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        blocks = self._blocks
        return {cid: blocks[cid] for cid in cids if cid in blocks}

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


# A lookup of which blocks idx holds already asks for up to this many by one statement.
_MULTI_ROWS: Final = 16
# A block's bytes are in the data file (unless it has at most INLINE_MAX or at least _AT_LEN
# bytes): its blk row has an empty `data` and `at` = offset * _AT_LEN + length (offsets below
# 2**38; _span reads it).
_AT_LEN: Final = 1 << 24
_AT_END: Final = 1 << 38
# A block of at most INLINE_MAX bytes stays in its row: for a few hundred bytes, SQLite's two
# copies cost less than a write call on the file (a commit of a small pico writes no file).
INLINE_MAX: Final = 512
# A row kept inline binds 0 for `at`, stored as NULL. Bound from C (_native.Sql, the usual
# case), the CID and data are the blocks' own bytes; through Python's sqlite3, every parameter
# is an int or a bytearray, the types it binds without looking for an adapter (a None or a
# bytes costs a failed lookup each).
_INSERT: Final = "INSERT INTO blk (id, cid, data, at) VALUES "
# A write transaction's new rows wait in memory (each is in `_pending` already) until there
# are _ROWS_AT_ONCE of them, which then go in by one statement: a group of commits costs one
# INSERT per 64 rows instead of one per commit (a statement's call and reset cost what 10-12
# rows' binding and steps do). The rest go in before the COMMIT, and before any statement that
# reads blk by an id that may be one of theirs (_put_rows).
_ROWS_AT_ONCE: Final = 64
_INSERTS: Final = [""] + [
    _INSERT + ", ".join(["(?, ?, ?, nullif(?, 0))"] * n) for n in range(1, _ROWS_AT_ONCE + 1)
]
# The CIDs of the blocks idx (by 64-bit key: the CIDs whose keys these are) or idx2 holds
_KNOWN: Final = [""] + [
    "SELECT blk.cid FROM idx JOIN blk ON blk.id = idx.id WHERE idx.k IN ("
    + ", ".join(["?"] * n)
    + ")"
    for n in range(1, _MULTI_ROWS + 1)
]
_KNOWN_SPILLED: Final = [""] + [
    "SELECT cid FROM idx2 WHERE cid IN (" + ", ".join(["?"] * n) + ")"
    for n in range(1, _MULTI_ROWS + 1)
]
_MERGE_ROWS: Final = 128
_MERGE: Final = "INSERT OR IGNORE INTO idx (k, id) VALUES " + ", ".join(["(?, ?)"] * _MERGE_ROWS)
# idx joined to blk: an idx row without its blk row is no block (none should exist: _sync
# drops from memory the entries whose blocks another connection deleted, before a merge); the
# blk row's cid must be the one asked for (another CID may have the same 64-bit key: idx2)
_GET_INDEXED: Final = (
    "SELECT blk.data, blk.at FROM idx JOIN blk ON blk.id = idx.id WHERE idx.k = ? AND blk.cid = ?"
)
_HAS_INDEXED: Final = (
    "SELECT 1 FROM idx JOIN blk ON blk.id = idx.id WHERE idx.k = ? AND blk.cid = ?"
)
_DELETE_INDEXED: Final = (
    "DELETE FROM idx WHERE k = ?1"
    " AND EXISTS (SELECT 1 FROM blk WHERE blk.id = idx.id AND blk.cid = ?2) RETURNING id"
)
_DELETE_ROW: Final = "DELETE FROM blk WHERE id = ? RETURNING at"
_GET_SPILLED: Final = (
    "SELECT blk.data, blk.at FROM idx2 JOIN blk ON blk.id = idx2.id WHERE idx2.cid = ?"
)
_HAS_SPILLED: Final = "SELECT 1 FROM idx2 JOIN blk ON blk.id = idx2.id WHERE idx2.cid = ?"
# Blob parameters given to Python's sqlite3 are bytearrays: it binds a bytearray directly, and
# looks up an adapter for anything else but int, float and str (two failed attribute lookups
# for bytes: 0.45 us a parameter, against 0.13 us for the copy). It then copies each blob into
# SQLite; the INSERTs of new rows, 30 or so parameters a commit, are bound from C instead.
_blob: Final = bytearray
# Blocks a get_many statement asks for (its parameters; SQLite allows 32,766 since 3.32).
GET_MANY_CHUNK: Final = 512
# SQLite's page cache per connection (negative: KiB).
CACHE_KIB: Final = 64 * 1024
# Page size of a new database (SQLite's default is 4,096; an existing home keeps its own). A
# commit of a large map writes 12-16 KB of blocks (HAMT nodes, an inline map): with 16 KB pages
# that is fewer pages, overflow chains and WAL frames (two write calls each) per commit.
PAGE_SIZE: Final = 16384
# WAL bytes before the frames are copied into the database (a checkpoint; SQLite's default is
# 1,000 pages): a checkpoint writes each dirty page once however many commits wrote it. The
# store runs its checkpoints itself, after syncing the data file, so no row reaches the
# database file before its block's bytes reach the disk; it reads the WAL's frames not yet
# copied after each write transaction from the wal-index (the -shm file: mxFrame at byte 16
# of its header, nBackfill at byte 96, in SQLite's documented format, native byte order).
WAL_CHECKPOINT_BYTES: Final = 32 * 1024 * 1024
# Without a wal-index to read: a checkpoint every this many write transactions. After a
# checkpoint that readers kept from copying enough, the next try waits as many.
CHECKPOINT_TRANSACTIONS: Final = 256
# The wal-index is read after every this many write transactions (and after one of 256 blocks
# or more): a transaction adds a few frames, so the WAL passes the limit by a few at most.
WAL_CHECK_EVERY: Final = 8
# A write transaction's blocks wait in memory until its COMMIT, or until they pass this.
DATA_BUFFER_BYTES: Final = 8 * 1024 * 1024
# The cid index is fed in batches: new blocks' (cid, id) wait in memory until there are
# `batch_rows(blocks)` of them, then the batch is merged into `idx` in cid order, a bucket
# (1/256 of the digest space) at a time, over the following write transactions. A batch of M
# entries into an index of L leaf pages dirties about L pages in all, so each block costs
# L * page / M bytes of index writes: M grows with the store (BATCH_PER_BLOCKS blocks per
# pending entry), between BATCH_MIN and BATCH_MAX entries (memory: 100-170 B each, twice over).
BATCH_MIN: Final = 4096
BATCH_MAX: Final = 131_072
BATCH_PER_BLOCKS: Final = 4
_BUCKETS: Final = 256
# Merge rows per block inserted while a batch is being merged: 2 finishes a batch of M before
# the next M blocks have arrived.
_MERGE_RATE: Final = 2
# A migration of an old home slower than this is logged (at INFO).
_SLOW_MIGRATION_S: Final = 1.0
# The filter of CIDs the store has (below): 16 bits per block at least, 2**16 to 2**27 bits
# (16 MiB); rebuilt larger once it holds more than one entry per 16 bits (then 1.4 % of new
# blocks take the SQL check), up to the cap. It is built by scanning idx, FILTER_SCAN rows per
# write transaction (or more: _SCAN_RATE), after the store opens; a rebuild is sized for
# _FILTER_GROWTH times the entries it starts with, so a growing store scans a fifteenth of a
# row per block it adds (four times: a third; twice: a row per block, 3.8 us of a
# 100,000-entry map's commit), and between rebuilds the filter holds one entry per 256 to 16
# bits (fewer blocks take the SQL check); a rebuild from more than 262,144 entries is capped.
FILTER_MIN_BITS: Final = 1 << 16
FILTER_MAX_BITS: Final = 1 << 27
FILTER_SCAN: Final = 1024
# A store whose idx has at most this many rows scans it whole at open (45 ms or less here):
# until the filter is whole, every put, has and present of a CID not in memory reads idx (a
# fresh store's first write of a large map, or a CAR import into a store just opened, read it
# once per block). A larger store's filter is built in steps, as after a rebuild.
FILTER_OPEN_ROWS: Final = 65_536
_SCAN_RATE: Final = 8  # or 8 rows per block the transaction inserted, if more
_FILTER_GROWTH: Final = 16
_log = logging.getLogger(__name__)


def _bind_sqlite() -> bool:
    """Whether the store's INSERTs can be bound from C (_native.Sql): the SQLite functions it
    calls, found with ctypes in the library Python's _sqlite3 loaded, then given to it."""
    if _native is None:
        return False
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        addresses = tuple(
            ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            for name in _native.SQLITE_FUNCTIONS
        )
    except (ImportError, OSError, AttributeError):  # e.g. SQLite linked into Python itself
        return False
    if not all(addresses):
        return False
    _native.sql_bind(
        addresses, (sqlite3.DatabaseError, sqlite3.OperationalError, sqlite3.IntegrityError)
    )
    return True


_SQL_BOUND: Final = _bind_sqlite()


_Saved = tuple[dict[bytes, int], list[list[bytes]], "_Batch | None", int, int, int, int]


def batch_rows(blocks: int) -> int:
    """Pending-index entries before a merge, for a store of `blocks` blocks."""
    return min(BATCH_MAX, max(BATCH_MIN, blocks // BATCH_PER_BLOCKS))


_M64: Final = (1 << 64) - 1


def _k(key: bytes) -> int:
    """A CID's key in idx, a signed 64-bit integer: its last eight bytes read little-endian
    when it ends in a sha2-256 multihash (every CID a Block has), else the last eight bytes of
    the sha2-256 of its bytes. Two CIDs may share one (a raw and a dag-cbor block of the same
    bytes have one digest): idx holds the first, idx2 the others by their whole CID."""
    if len(key) < 34 or key[-34] != 0x12 or key[-33] != 0x20:
        key = hashlib.sha256(key).digest()
    return int.from_bytes(key[-8:], "little", signed=True)


def _bucket(key: bytes) -> int:
    # the top byte of _k(key) (a sha2-256 CID's last byte), so bucket order is idx order and a
    # bucket one contiguous range of it; for any other CID it is only a bucket (merge order is
    # a matter of speed, not of correctness)
    return key[-1] ^ 0x80 if key else 0


class _Filter:
    """A Bloom filter of CIDs (two bit positions from their 64-bit key, _k: for a sha2-256 CID
    the digest's last 8 bytes).

    A put checks it first: a CID it does not hold is new, so the put needs no read of idx
    (that read cost as much as the insert itself: 8-15 us per 4-block commit at 256 K blocks).
    Deleted blocks keep their bits (a false positive only costs that read). dag/_native.c
    does ``add_many`` and ``maybe`` when it is built (the same bits; tests compare them).
    """

    __slots__ = ("bits", "count", "mask")

    def __init__(self, nbits: int) -> None:
        self.bits = bytearray(nbits >> 3)
        self.mask = nbits - 1
        self.count = 0

    def add(self, key: bytes | int) -> None:
        """Add a CID (bytes) or an idx key (int)."""
        bits, mask = self.bits, self.mask
        h = (key if isinstance(key, int) else _k(key)) & _M64
        p = h & mask
        bits[p >> 3] |= 1 << (p & 7)
        p = h >> 32 & mask
        bits[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def __contains__(self, key: bytes) -> bool:
        bits, mask = self.bits, self.mask
        h = _k(key) & _M64
        p = h & mask
        if not bits[p >> 3] >> (p & 7) & 1:
            return False
        p = h >> 32 & mask
        return bool(bits[p >> 3] >> (p & 7) & 1)

    def add_many(self, keys: Iterable[bytes | int] | Iterable[tuple[bytes | int]]) -> None:
        """Add every key: a CID or an idx key (or a row: a 1-tuple of one, as sqlite3 gives)."""
        if _native is not None:
            self.count += _native.bloom_add(self.bits, self.mask, keys)
            return
        for key in keys:
            self.add(key[0] if type(key) is tuple else key)

    def maybe(self, keys: Iterable[bytes]) -> list[bytes]:
        """The keys the filter may hold, in order (the others are surely new)."""
        if _native is not None:
            return _native.bloom_maybe(self.bits, self.mask, keys)
        return [key for key in keys if key in self]


def _merge_rows(bucket: list[bytes], entries: dict[bytes, int], out: list[int]) -> int:
    """The bucket's keys that `entries` still holds, each once, in idx order (_k, then
    bytewise), onto `out` as merge parameters: _k(key), id, ...; how many. dag/_native.c's
    merge_rows when built."""
    if _native is not None:
        return _native.merge_rows(bucket, entries, out)
    n = 0
    for k, key in sorted({(_k(key), key) for key in bucket}):
        i = entries.get(key)
        if i is not None:
            out += (k, i)
            n += 1
    return n


def _filter_bits(blocks: int) -> int:
    n = FILTER_MIN_BITS
    while n < 16 * blocks and n < FILTER_MAX_BITS:
        n <<= 1
    return n


def _span(at: int) -> tuple[int, int]:
    """A blk row's `at`: the offset and length of its block's bytes in the data file."""
    return divmod(at, _AT_LEN)


_PAGE: Final = 4096
_PUNCH: Final = 0x03  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_fallocate: object = None  # libc's fallocate, once looked up (False: none here)


def _punch(fd: int, lo: int, hi: int) -> None:
    """Give the whole pages of the data file's bytes lo..hi back to the file system (a hole
    reads as zeros); nothing where the system or its file system cannot."""
    global _fallocate
    start, stop = -(-lo // _PAGE) * _PAGE, hi // _PAGE * _PAGE
    if stop <= start or _fallocate is False:
        return
    if _fallocate is None:
        name = ctypes.util.find_library("c") if sys.platform == "linux" else None
        fn = getattr(ctypes.CDLL(name, use_errno=True), "fallocate", None) if name else None
        if fn is None:
            _fallocate = False
            return
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        fn.restype = ctypes.c_int
        _fallocate = fn
    if _fallocate(fd, _PUNCH, start, stop - start) != 0:  # type: ignore[operator]
        err = ctypes.get_errno()
        _log.info("block store: no holes punched in the data file (%s)", os.strerror(err))
        _fallocate = False


class _Batch:
    """A frozen pending set being merged into `idx`: its entries, by bucket, and progress."""

    __slots__ = ("buckets", "entries", "next", "upto")

    def __init__(self, entries: dict[bytes, int], buckets: list[list[bytes]], upto: int):
        self.entries = entries
        self.buckets = buckets
        self.next = 0  # buckets before this one are in idx
        self.upto = upto  # every blk row with id <= upto is in idx or in `entries`


class SqliteBlockStore:
    """Blocks in SQLite and a data file: rows appended in id order, bytes appended to the
    file, a cid index fed in sorted batches.

    Tables: ``blk(id INTEGER PRIMARY KEY, cid, data, at)`` holds every block once, appended in
    id order, so an insert touches only the table's last pages. A block's bytes are appended
    to the data file beside the database (its path and ``-data``; ``at`` is where: offset *
    2**24 + length), written once there instead of into the WAL and again at its checkpoint;
    ``data`` holds them instead for a block of at most 512 bytes or of 16 MiB or more and for
    rows written before the data file (``at`` NULL). Space of deleted blocks in the file is
    given back to the file system (a hole punched) once its pages hold no live block; the
    freed ranges are kept in ``punch(lo, hi)`` from the GC's COMMIT until they are punched,
    and punched at open if a process stopped in between.
    ``idx(k INTEGER PRIMARY KEY, id)``
    maps CIDs, by a 64-bit key (``_k``: for a sha2-256 CID, eight bytes of its digest), to ids
    for blocks with id <= ``meta.indexed_upto``, and ``idx2(cid PRIMARY KEY, id)`` the rare CID
    whose key idx holds for another. Newer blocks' (cid, id) are in memory (``_pending``;
    rebuilt from ``blk`` at open) until a batch of them is merged into ``idx`` in key order,
    in steps spread over later write transactions. WAL mode, one writing connection per file
    (another connection sees its committed blocks: a lookup that misses re-reads the new rows
    of ``blk``). A write transaction's bytes are written to the file before its COMMIT,
    and the file is synced before each checkpoint (the store runs them; SQLite's are off) and
    at close, so a row in the database file always has its bytes on disk; after a power loss,
    rows in the WAL whose bytes did not reach the file are dropped at open (as SQLite may drop
    its last transactions then, at ``synchronous=NORMAL``).
    """

    def __init__(self, path: str | Path, *, batch: int | None = None) -> None:
        # isolation_level=None: autocommit, so put_many can own its BEGIN/COMMIT.
        native = _native if _SQL_BOUND else None  # (None, also where a test set _native so)
        try:
            if native is not None:
                native.sql_expect()
            self._db = sqlite3.connect(str(path), isolation_level=None)
        except sqlite3.Error as e:
            raise _unopenable(path, e) from e
        # the INSERTs of new rows and index merges bound from C, on this connection (None:
        # through Python's sqlite3): its handle from SQLite, checked against the file's name
        self._sql: _native.Sql | None = None
        if native is not None:
            try:
                self._sql = native.Sql(os.path.realpath(path))
            except (RuntimeError, ValueError) as e:
                _log.info("block store: statements bound by Python's sqlite3 (%s)", e)
        self._fixed_batch = batch  # tests: a tiny batch so merges happen often
        self._group_depth = 0  # > 0 inside group(): put_many joins the open transaction
        try:
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # none once the file has tables
            self._db.execute("PRAGMA journal_mode=WAL")  # the first read of a file's header
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint(), after a data sync
        except sqlite3.Error as e:  # e.g. "file is not a database"
            self._close_db()
            raise _unopenable(path, e) from e
        self._fd = os.open(f"{path}-data", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._buf = bytearray()  # the open write transaction's bytes for the file, from _end
        self._end = 0  # the file's size when the buffer was begun
        self._begin_end = 0  # the file's size when the write transaction began
        self._end_stale = True  # whether another connection may have written since (_sync)
        self._data_from = 0  # blk rows before this id have their bytes in `data`
        self._dead: list[int] = []  # ids of the transaction's deleted rows with bytes in the file
        self._page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._unchecked = 0  # write transactions since the last checkpoint (or its try)
        self._held = False  # whether readers kept the last checkpoint from copying enough
        self._shm = -1  # the wal-index file (-1: not open yet; -2: none to read)
        self._path = str(path)
        self._pending: dict[bytes, int] = {}
        self._buckets: list[list[bytes]] = [[] for _ in range(_BUCKETS)]
        self._batch: _Batch | None = None
        self._credit = 0  # rows the current batch may merge now
        self._tail = 0  # the largest id this connection knows of in blk or idx
        self._indexed_upto = 0
        # _filter holds every CID in idx or in memory once _building is None; while it is being
        # (re)built by a scan of idx from _scan_from, new CIDs go into both
        self._filter: _Filter | None = None
        self._building: _Filter | None = None
        self._scan_from: int | None = None  # the last idx key scanned (None: from the start)
        self._scan_keys: list[bytes] = []
        self._spilled = False  # whether idx2 may hold rows (lookups that miss idx then read it)
        # undo log of the open write transaction (group rollback restores memory too)
        self._log: list[tuple[dict[bytes, int] | None, bytes, int]] = []  # (None: insert)
        self._saved: _Saved | None = None
        self._inserted = 0  # blocks the open write transaction added
        # INSERT parameters of the open write transaction's newest rows, not yet in blk, 4 a
        # row (id, cid, data, at): ids _tail - len(_rows) // 4 + 1 to _tail
        self._rows: list[int | bytes | bytearray] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._open_tables()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except BaseException as e:
            self._close_db()
            os.close(self._fd)
            if isinstance(e, sqlite3.Error):  # e.g. a damaged page, a database locked
                raise _unopenable(path, e) from e
            raise
        self._version = self._data_version()

    def _open_tables(self) -> None:
        (form,) = self._db.execute("PRAGMA user_version").fetchone()
        if form > STORE_FORMAT:
            raise StoreError(
                f"block store {self._path}: format {form}, written by a newer p2pico; this one"
                f" reads formats up to {STORE_FORMAT}"
            )
        names = {
            r for (r,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS blk"
            " (id INTEGER PRIMARY KEY, cid BLOB NOT NULL, data BLOB NOT NULL, at INTEGER)"
        )
        if not any(name == "at" for _, name, *_ in self._db.execute("PRAGMA table_info(blk)")):
            self._db.execute("ALTER TABLE blk ADD COLUMN at INTEGER")  # a home before the file
        old_idx = "idx" in names and any(
            name == "cid" for _, name, *_ in self._db.execute("PRAGMA table_info(idx)")
        )
        if old_idx:  # idx keyed by the whole CID (before 0.x): rebuilt below
            self._db.execute("DROP TABLE idx")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS idx (k INTEGER PRIMARY KEY, id INTEGER NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS idx2 (cid BLOB PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        # the data file's byte ranges a GC freed, written with its COMMIT and cleared once
        # they are punched: a process that stopped in between left them here
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS punch (lo INTEGER NOT NULL, hi INTEGER NOT NULL)"
        )
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('indexed_upto', 0)")
        if "blocks" in names and "blk" not in names:
            self._migrate()
        elif old_idx:
            self._reindex("rebuilt the cid index by 64-bit keys")
        self._db.execute(
            "INSERT OR IGNORE INTO meta SELECT 'data_from', coalesce(max(id), 0) + 1 FROM blk"
        )
        (self._data_from,) = self._db.execute(
            "SELECT value FROM meta WHERE key = 'data_from'"
        ).fetchone()
        self._drop_lost()
        for lo, hi in self._db.execute("SELECT lo, hi FROM punch").fetchall():
            _punch(self._fd, lo, hi)  # freed before a stop (no live block's bytes are there)
        self._db.execute("DELETE FROM punch")
        if form != STORE_FORMAT:
            self._db.execute(f"PRAGMA user_version={STORE_FORMAT}")  # with this transaction
        self._reload()

    def _drop_lost(self) -> None:
        """Drop the newest rows whose bytes are not all in the data file: their transactions
        were in the WAL, not yet checkpointed, when the machine lost power before the file's
        pages were written (rows are in id order in the file, so the lost ones are the last),
        and every row after the first of them, whose blocks may link to them (a head comes
        after its state's blocks). Scans back from the newest row to the last whose bytes
        are all there."""
        size = os.fstat(self._fd).st_size
        after: list[tuple[int, bytes]] = []  # rows after the last whole one, newest first
        cut = 0  # rows of `after` from here on are older than the oldest lost one
        rows = self._db.execute(
            "SELECT id, cid, at FROM blk WHERE id >= ? ORDER BY id DESC", (self._data_from,)
        )
        for i, c, at in rows:
            if at is not None:
                if sum(_span(at)) <= size:
                    break
                cut = len(after) + 1
            after.append((int(i), bytes(c)))
        lost = after[:cut]
        for i, key in lost:
            self._db.execute("DELETE FROM blk WHERE id = ?", (i,))
            self._db.execute("DELETE FROM idx WHERE k = ? AND id = ?", (_k(key), i))
            self._db.execute("DELETE FROM idx2 WHERE id = ?", (i,))
        if lost:
            _log.warning(
                "block store: dropped %d blocks whose bytes the data file lacks (%d bytes);"
                " their transactions were lost with the machine's power",
                len(lost),
                size,
            )

    def _migrate(self) -> None:
        # the layout before 0.x: blocks(cid BLOB PRIMARY KEY, data BLOB); one transaction
        self._db.execute("INSERT INTO blk (cid, data) SELECT cid, data FROM blocks ORDER BY rowid")
        self._db.execute("DROP TABLE blocks")
        self._db.execute(
            "UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM blk) WHERE key = 'indexed_upto'"
        )
        self._reindex("moved blocks to the appended layout")

    def _reindex(self, what: str) -> None:
        """idx (empty) from blk's rows up to indexed_upto; newer ones are merged as usual."""
        start = time.monotonic()
        (upto,) = self._db.execute("SELECT value FROM meta WHERE key = 'indexed_upto'").fetchone()
        rows = self._db.execute("SELECT id, cid FROM blk WHERE id <= ?", (upto,))
        keyed = sorted((_k(c), int(i)) for i, c in rows)  # CIDs with one key: any order
        args: list[int] = []
        for k, i in keyed:
            args += (k, i)
        self._index(args)
        took = time.monotonic() - start
        if took > _SLOW_MIGRATION_S:
            _log.info("block store: %s (%d blocks) in %.1f s", what, len(keyed), took)

    def _index(self, args: list[int]) -> None:
        """Insert (k, id, k, id, ...) into idx; a row whose key idx holds for another CID goes
        to idx2 instead."""
        db = self._db
        rows = len(args) // 2
        whole = rows - rows % _MERGE_ROWS
        sql = self._sql
        for at in range(0, 2 * whole, 2 * _MERGE_ROWS):  # a multi-row statement costs less per row
            before = db.total_changes
            if sql is not None:
                sql.run(_MERGE, args, at, at + 2 * _MERGE_ROWS)
            else:
                db.execute(_MERGE, args[at : at + 2 * _MERGE_ROWS])
            if db.total_changes - before < _MERGE_ROWS:
                self._spill(args[at : at + 2 * _MERGE_ROWS])
        if whole < rows:
            rest = args[2 * whole :]
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO idx (k, id) VALUES (?, ?)",
                zip(rest[::2], rest[1::2], strict=True),
            )
            if db.total_changes - before < rows - whole:
                self._spill(rest)

    def _spill(self, args: list[int]) -> None:
        """The rows of (k, id, ...) that idx ignored: its key there is another CID's (idx2),
        or the same block's (nothing to do)."""
        db = self._db
        for k, i in zip(args[::2], args[1::2], strict=True):
            (held,) = db.execute("SELECT id FROM idx WHERE k = ?", (k,)).fetchone()
            if held == i:
                continue
            (cid,) = db.execute("SELECT cid FROM blk WHERE id = ?", (i,)).fetchone()
            other = db.execute("SELECT cid FROM blk WHERE id = ?", (held,)).fetchone()
            if other is None:  # idx pointed at a block that is gone: the key is free
                db.execute("UPDATE idx SET id = ? WHERE k = ?", (i, k))
            elif bytes(other[0]) != bytes(cid):
                db.execute("INSERT OR IGNORE INTO idx2 (cid, id) VALUES (?, ?)", (cid, i))
                self._spilled = True

    def _reload(self) -> None:
        """Memory from the database: `indexed_upto`, then blk's newer rows into `_pending`."""
        (upto,) = self._db.execute("SELECT value FROM meta WHERE key = 'indexed_upto'").fetchone()
        self._indexed_upto = self._tail = int(upto)
        self._spilled = self._has_spilled()
        self._building = _Filter(_filter_bits(self._tail))
        self._load_tail()
        if self._indexed_upto <= FILTER_OPEN_ROWS:  # idx has at most this many rows
            while self._building is not None:  # a small store's filter is whole once open
                self._scan()

    def _has_spilled(self) -> bool:
        (n,) = self._db.execute("SELECT EXISTS (SELECT 1 FROM idx2)").fetchone()
        return bool(n)

    def _load_tail(self, after: int | None = None) -> None:
        """blk's rows after `after` (default: _tail) into the filter, those after _tail into memory."""
        tail = self._tail
        rows = self._db.execute(
            "SELECT id, cid FROM blk WHERE id > ? ORDER BY id", (tail if after is None else after,)
        )
        pending, buckets = self._pending, self._buckets
        keys = []
        for i, c in rows:
            key = bytes(c)
            keys.append(key)
            if i > tail:
                pending[key] = i
                buckets[_bucket(key)].append(key)
                self._tail = i
        self._filter_add(keys)

    def _filter_add(self, keys: Collection[bytes]) -> None:
        """Into the filter, and the one being built if any."""
        if self._filter is not None:
            self._filter.add_many(keys)
        if self._building is not None:
            self._building.add_many(keys)

    def _scan(self) -> None:
        """The next FILTER_SCAN rows of idx into the filter being built; swap it in at the end."""
        building = self._building
        if building is None:
            f = self._filter
            if f is None or f.count * 16 <= f.mask + 1 or f.mask + 1 >= FILTER_MAX_BITS:
                return
            building = self._building = _Filter(_filter_bits(_FILTER_GROWTH * f.count))
            self._scan_from = None
            # the entries in memory now (some reach idx behind the scan), a slice per step
            self._scan_keys = [*self._pending, *(self._batch.entries if self._batch else ())]
        step = max(FILTER_SCAN, _SCAN_RATE * self._inserted)  # ahead of the filter's growth
        if self._scan_keys:
            keys = self._scan_keys[-step:]
            del self._scan_keys[-step:]
            building.add_many(keys)
            return
        if self._scan_from is None:
            rows = self._db.execute("SELECT k FROM idx ORDER BY k LIMIT ?", (step,)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT k FROM idx WHERE k > ? ORDER BY k LIMIT ?", (self._scan_from, step)
            ).fetchall()
        building.add_many(rows)  # an idx key sets the bits its CID would
        if len(rows) == step:
            self._scan_from = rows[-1][0]
        else:
            building.add_many([bytes(c) for (c,) in self._db.execute("SELECT cid FROM idx2")])
            self._filter, self._building = building, None

    def _data_version(self) -> int:
        (v,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(v)

    def _sync(self) -> bool:
        """Catch up with another connection's commits, if any; True if there were some."""
        v = self._data_version()
        if v == self._version:
            return False
        self._end_stale = True
        self._version = v
        (upto,) = self._db.execute("SELECT value FROM meta WHERE key = 'indexed_upto'").fetchone()
        tail = self._tail
        if int(upto) >= tail:  # it indexed everything this connection knew of
            self._pending = {}
            self._buckets = [[] for _ in range(_BUCKETS)]
            self._batch = None
            self._credit = 0
            self._tail = int(upto)
        self._indexed_upto = max(self._indexed_upto, int(upto))
        self._spilled = self._spilled or self._has_spilled()
        self._load_tail(after=tail)
        # blocks in memory that the other connection deleted (its GC) must not reach idx
        where = [self._pending, *([self._batch.entries] if self._batch else [])]
        ids = [i for d in where for i in d.values()]
        if ids:
            q = "SELECT id FROM blk WHERE id >= ?"
            kept = {i for (i,) in self._db.execute(q, (min(ids),))}
            for d in where:
                for key in [k for k, i in d.items() if i not in kept]:
                    del d[key]
        return True

    # -- lookups

    def _id(self, key: bytes) -> int | None:
        i = self._pending.get(key)
        if i is None and self._batch is not None:
            i = self._batch.entries.get(key)
        return i

    def get(self, cid: CID) -> bytes | None:
        key = cid.buffer
        for _ in range(2):
            i = self._id(key)
            if i is not None:
                if self._rows and i > self._tail - len(self._rows) // 4:
                    self._put_rows()
                row = self._db.execute("SELECT data, at FROM blk WHERE id = ?", (i,)).fetchone()
            else:
                row = self._db.execute(_GET_INDEXED, (_k(key), _blob(key))).fetchone()
                if row is None and self._spilled:
                    row = self._db.execute(_GET_SPILLED, (_blob(key),)).fetchone()
            if row is not None:
                data, at = row
                return bytes(data) if at is None else self._read(at, cid)
            if not self._sync():
                break
        return None

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        """``get`` for many (a Bitswap answer's blocks): a statement per GET_MANY_CHUNK of
        them instead of one each; the rare CID idx does not hold (idx2, or committed by
        another connection since) takes ``get``'s own path."""
        found: dict[CID, bytes] = {}
        by_id: dict[int, CID] = {}
        by_key: dict[bytes, CID] = {}
        for cid in cids:
            key = cid.buffer
            i = self._id(key)
            if i is not None:
                by_id[i] = cid
            else:
                by_key[key] = cid
        if by_id and self._rows:
            self._put_rows()  # rows still waiting for their INSERT
        ids = list(by_id)
        for at in range(0, len(ids), GET_MANY_CHUNK):
            part = ids[at : at + GET_MANY_CHUNK]
            marks = ",".join("?" * len(part))
            for i, data, spot in self._db.execute(
                f"SELECT id, data, at FROM blk WHERE id IN ({marks})", part
            ):
                cid = by_id[i]
                found[cid] = bytes(data) if spot is None else self._read(spot, cid)
        keys = [_k(key) for key in by_key]
        for at in range(0, len(keys), GET_MANY_CHUNK):
            part = keys[at : at + GET_MANY_CHUNK]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                "SELECT blk.cid, blk.data, blk.at FROM idx JOIN blk ON blk.id = idx.id"
                f" WHERE idx.k IN ({marks})",
                part,
            )
            for stored, data, spot in rows:
                hit = by_key.get(bytes(stored))  # None: another CID's block under that key
                if hit is not None and hit not in found:
                    found[hit] = bytes(data) if spot is None else self._read(spot, hit)
        rest = [cid for cid in (*by_id.values(), *by_key.values()) if cid not in found]
        if rest and (self._spilled or self._sync()):
            for cid in rest:
                data = self.get(cid)
                if data is not None:
                    found[cid] = data
        return found

    def has(self, cid: CID) -> bool:
        key = cid.buffer
        for _ in range(2):
            if self._stored(key):
                return True
            if not self._sync():
                break
        return False

    def present(self, cids: Iterable[CID]) -> set[CID]:
        """Which of `cids` are stored: ``has`` for many, without a read for those the filter
        does not hold (a CAR import asks for every block it brings)."""
        self._sync()
        return {cid for cid in cids if self._stored(cid.buffer)}

    def _stored(self, key: bytes) -> bool:
        """Whether the CID `key` is in memory, idx or idx2 as this connection knows them (a CID
        the filter does not hold is in none of them: _insert relies on it too)."""
        if self._id(key) is not None:
            return True
        f = self._filter
        if f is not None and key not in f:
            return False
        if self._db.execute(_HAS_INDEXED, (_k(key), _blob(key))).fetchone():
            return True
        return bool(self._spilled and self._db.execute(_HAS_SPILLED, (_blob(key),)).fetchone())

    def get_block(self, cid: CID) -> Block | None:
        data = self.get(cid)
        return None if data is None else Block.decode(cid, data)

    def _read(self, at: int, cid: CID | bytes) -> bytes:
        """A block's bytes in the data file (or still in the open transaction's buffer)."""
        off, n = _span(at)
        if self._buf and off >= self._end:
            return bytes(self._buf[off - self._end : off - self._end + n])
        data = os.pread(self._fd, n, off)
        if len(data) != n:
            c = cid if isinstance(cid, CID) else CID.parse(cid)
            raise OSError(
                f"block store: block {c} is {n} bytes at offset {off} of {self._path}-data,"
                f" which ends at {os.fstat(self._fd).st_size}"
            )
        return data

    def cids(self) -> Iterator[CID]:
        self._put_rows()
        rows = self._db.execute("SELECT cid FROM blk ORDER BY id").fetchall()
        return (CID.parse(bytes(r[0])) for r in rows)

    def tail_id(self) -> int:
        """The id of the newest committed block this connection knows of (ids grow with
        each insert; inside an open write transaction, the id before it began)."""
        return self._tail if self._saved is None else self._saved[5]

    def blocks_after(self, after: int) -> Iterator[tuple[int, CID, bytes]]:
        """(id, cid, data) of the blocks with ids above `after`, oldest first, read as
        the caller goes (no write to this store until it is done)."""
        self._put_rows()
        rows = self._db.execute(
            "SELECT id, cid, data, at FROM blk WHERE id > ? ORDER BY id", (after,)
        )
        return (
            (int(i), CID.parse(bytes(c)), bytes(d) if at is None else self._read(at, bytes(c)))
            for i, c, d, at in rows
        )

    def __len__(self) -> int:
        self._put_rows()
        (n,) = self._db.execute("SELECT count(*) FROM blk").fetchone()
        return int(n)

    # -- writes

    def put(self, block: Block) -> None:
        self.put_many((block,))

    def put_many(self, blocks: Iterable[Block]) -> None:
        if not isinstance(blocks, list | tuple):
            blocks = list(blocks)
        if self._group_depth:
            self._insert(blocks)
            return
        if not blocks:
            return
        self._begin()
        try:
            self._insert(blocks)
        except BaseException:
            self._rollback()
            raise
        self._commit()

    def _insert(self, blocks: list[Block] | tuple[Block, ...]) -> None:
        f = self._filter
        if _native is not None and f is not None:
            # the common case in C: blocks the filter has never seen, so none is in memory or
            # idx (the filter holds every CID of both); None: the checks below are needed
            first = self._tail + 1
            rows = _native.insert_rows(
                blocks, f.bits, f.mask, first, self._buf, self._end, self._sql is not None
            )
            if rows is not None:
                params, keys = rows
                n = len(keys)
                self._wait(params)
                self._tail += n
                _native.insert_record(keys, first, self._pending, self._buckets, self._log)
                f.count += _native.bloom_add(f.bits, f.mask, keys)  # self._filter_add, inlined
                if self._building is not None:
                    self._building.add_many(keys)
                self._inserted += n
                if len(self._buf) > DATA_BUFFER_BYTES:
                    self._flush()
                return
        pending = self._pending
        batch = self._batch
        fresh: dict[bytes, bytes] = {}
        for b in blocks:
            key = b.cid.buffer
            if key in pending or key in fresh or (batch is not None and key in batch.entries):
                continue
            fresh[key] = b.data
        if not fresh:
            return
        maybe = list(fresh) if f is None else f.maybe(fresh)
        for at in range(0, len(maybe), _MULTI_ROWS):  # blocks idx has already stay as they are
            part = maybe[at : at + _MULTI_ROWS]
            for (known,) in self._db.execute(_KNOWN[len(part)], [*map(_k, part)]):
                fresh.pop(bytes(known), None)  # (or another CID with the same key)
            if self._spilled:
                for (known,) in self._db.execute(_KNOWN_SPILLED[len(part)], [*map(_blob, part)]):
                    fresh.pop(bytes(known), None)
        n = len(fresh)
        if not n:
            return
        first = self._tail + 1
        buf = self._buf
        new: list[tuple[int, bytearray, bytearray, int]] = []
        for j, (key, data) in enumerate(fresh.items()):
            if INLINE_MAX < len(data) < _AT_LEN:
                at = self._end + len(buf)
                if at + len(data) >= _AT_END:
                    raise OverflowError("block store: the data file would pass 2**38 bytes")
                buf += data
                new.append((first + j, _blob(key), _blob(), at * _AT_LEN + len(data)))
            else:
                new.append((first + j, _blob(key), _blob(data), 0))
        self._wait([x for row in new for x in row])
        self._tail = first + n - 1
        buckets, log, i = self._buckets, self._log, first
        for key in fresh:
            pending[key] = i
            buckets[key[-1] ^ 0x80].append(key)  # _bucket(key)
            log.append((None, key, i))
            i += 1
        self._filter_add(fresh.keys())
        self._inserted += n
        if len(buf) > DATA_BUFFER_BYTES:
            self._flush()

    def _wait(self, params: list[int | bytes | bytearray]) -> None:
        """New rows (their INSERT parameters) wait; each 64 of them go in."""
        self._rows += params
        if len(self._rows) >= 4 * _ROWS_AT_ONCE:
            self._put_rows(whole=True)

    def _put_rows(self, *, whole: bool = False) -> None:
        """The waiting rows into blk (inside the write transaction), _ROWS_AT_ONCE a
        statement; `whole`: only as many as fill statements, the rest wait on."""
        rows, step, sql = self._rows, 4 * _ROWS_AT_ONCE, self._sql
        end = len(rows) - len(rows) % step if whole else len(rows)
        for at in range(0, end, step):
            stop = min(at + step, end)
            if sql is not None:
                sql.run(_INSERTS[(stop - at) // 4], rows, at, stop)
            else:
                self._db.execute(_INSERTS[(stop - at) // 4], rows[at:stop])
        del rows[:end]

    def _flush(self) -> None:
        """The buffered bytes into the data file (inside the write transaction)."""
        view, at = memoryview(self._buf), self._end
        while view:
            n = os.pwrite(self._fd, view, at)
            view, at = view[n:], at + n
        view.release()
        self._end = at
        self._buf.clear()

    def delete_many(self, cids: Iterable[CID]) -> int:
        """Delete these blocks in one transaction (or the open group's); return how many were."""
        keys = [cid.buffer for cid in cids]
        own = not self._group_depth
        if own:
            self._begin()
        n = 0
        try:
            self._put_rows()  # a row to delete may be one of them
            for key in keys:
                where = self._pending
                i = where.pop(key, None)
                if i is None and self._batch is not None:
                    where = self._batch.entries
                    i = where.pop(key, None)
                if i is not None:
                    self._log.append((where, key, i))
                # an entry may be in idx as well as in memory (reloaded after a crash mid-merge)
                row = self._db.execute(_DELETE_INDEXED, (_k(key), _blob(key))).fetchone()
                if row is None and self._spilled:
                    row = self._db.execute(
                        "DELETE FROM idx2 WHERE cid = ? RETURNING id", (_blob(key),)
                    ).fetchone()
                if i is None and row is not None:
                    i = int(row[0])
                if i is not None:
                    gone = self._db.execute(_DELETE_ROW, (i,)).fetchone()
                    if gone is not None:
                        n += 1
                        if gone[0] is not None:
                            self._dead.append(i)
        except BaseException:
            if own:
                self._rollback()
            raise
        if own:
            self._commit(maintain=False)
        return n

    # -- transactions and the index merge

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._sync()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        b = self._batch
        self._saved = (
            self._pending,
            self._buckets,
            b,
            0 if b is None else b.next,
            self._credit,
            self._tail,
            self._indexed_upto,
        )
        self._log.clear()
        self._inserted = 0
        if self._end_stale:  # else the file ends where this connection's last write left it
            self._end = os.fstat(self._fd).st_size
            self._end_stale = False
        self._begin_end = self._end
        self._buf.clear()
        self._dead.clear()

    def _commit(self, *, maintain: bool = True) -> None:
        """End the open write transaction: the merge step that is due, the blocks' bytes into
        the data file, then COMMIT; if any fails, the transaction is undone in the database
        and in memory. Then the space of blocks it deleted goes back to the file system, and
        a checkpoint runs if one is due."""
        try:
            self._put_rows()
            if maintain:
                self._maintain()
            gaps = self._gaps() if self._dead else []
            if gaps:  # in the database with the deletes: a stop before the punch loses no space
                self._db.executemany("INSERT INTO punch (lo, hi) VALUES (?, ?)", gaps)
            self._flush()
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._saved = None
        if gaps:
            for lo, hi in gaps:
                _punch(self._fd, lo, hi)
            try:
                self._db.execute("DELETE FROM punch")  # its own transaction
            except sqlite3.OperationalError as e:  # busy: the next open punches them again
                _log.info("block store: holes punched, their record kept (%s)", e)
        self._unchecked += 1
        if self._unchecked % WAL_CHECK_EVERY and self._inserted < 256:
            return  # the WAL is looked at every few transactions, or after a large one
        backlog = self._wal_backlog()
        if backlog is None:
            due = self._unchecked >= CHECKPOINT_TRANSACTIONS
        else:
            due = backlog * self._page >= WAL_CHECKPOINT_BYTES and (
                not self._held or self._unchecked >= CHECKPOINT_TRANSACTIONS
            )
        if due:
            self.checkpoint()
            backlog = self._wal_backlog()
            self._held = backlog is not None and backlog * self._page >= WAL_CHECKPOINT_BYTES

    def _wal_backlog(self) -> int | None:
        """The WAL's frames not yet copied into the database (None: no wal-index here)."""
        if self._shm == -2:
            return None
        if self._shm == -1:
            try:
                self._shm = os.open(f"{self._path}-shm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._shm = -2
                return None
        head = os.pread(self._shm, 100, 0)
        if len(head) < 100:
            return None
        frames = int.from_bytes(head[16:20], sys.byteorder)
        copied = int.from_bytes(head[96:100], sys.byteorder)
        return max(0, frames - copied)

    def checkpoint(self) -> None:
        """Sync the data file, then copy the WAL's frames into the database (a PASSIVE
        checkpoint: it does what readers allow)."""
        os.fdatasync(self._fd)
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self._unchecked = 0

    def _gaps(self) -> list[tuple[int, int]]:
        """The byte ranges of the data file that no block holds around the deleted blocks
        (asked inside the transaction: no other writer is appending)."""
        db, gaps, upto = self._db, [], -1
        for i in sorted(self._dead):
            if i < upto:  # inside the gap found last
                continue
            prev = db.execute(
                "SELECT at FROM blk WHERE id < ? AND id >= ? AND at IS NOT NULL"
                " ORDER BY id DESC LIMIT 1",
                (i, self._data_from),
            ).fetchone()
            nxt = db.execute(
                "SELECT id, at FROM blk WHERE id > ? AND at IS NOT NULL ORDER BY id LIMIT 1", (i,)
            ).fetchone()
            lo = 0 if prev is None else sum(_span(prev[0]))
            if nxt is None:
                hi, upto = self._end, 1 << 62  # the end before this transaction's new bytes
            else:
                hi, upto = _span(nxt[1])[0], nxt[0]
            gaps.append((lo, hi))
        self._dead.clear()
        return gaps

    def _rollback(self) -> None:
        """Undo the open write transaction, in the database, the data file and memory."""
        self._buf.clear()
        self._dead.clear()
        self._rows.clear()
        if self._db.in_transaction:
            if os.fstat(self._fd).st_size > self._begin_end:  # still under the write lock
                os.ftruncate(self._fd, self._begin_end)
            self._end = self._begin_end
            self._db.execute("ROLLBACK")
        saved = self._saved
        self._saved = None
        if saved is None:
            return
        pending, buckets, batch, nxt, self._credit, self._tail, self._indexed_upto = saved
        self._pending, self._buckets, self._batch = pending, buckets, batch
        if batch is not None:
            batch.next = nxt
        for where, key, i in reversed(self._log):
            if where is None:  # an insert
                del pending[key]
                buckets[_bucket(key)].pop()
            else:  # a delete
                where[key] = i
        self._log.clear()

    def _batch_size(self) -> int:
        return self._fixed_batch or batch_rows(self._tail)

    def _maintain(self) -> None:
        """Before a write transaction's COMMIT: the next step of the index merge, if due."""
        n = self._inserted
        self._scan()
        full = len(self._pending) >= self._batch_size()
        if self._batch is not None:
            self._credit += _MERGE_RATE * n
            self._merge(self._batch, finish=full)  # finish early only if the next is due
        if self._batch is None and full:
            self._batch = _Batch(self._pending, self._buckets, self._tail)
            self._pending = {}
            self._buckets = [[] for _ in range(_BUCKETS)]
            self._credit = _MERGE_RATE * n
            self._merge(self._batch, finish=False)

    def _merge(self, batch: _Batch, *, finish: bool) -> None:
        entries = batch.entries
        args: list[int] = []  # (k, id) of each row, flat
        while batch.next < _BUCKETS and (finish or self._credit > 0):
            bucket = batch.buckets[batch.next]
            batch.next += 1
            if bucket:
                _merge_rows(bucket, entries, args)
                self._credit -= len(bucket)
        self._index(args)
        if batch.next == _BUCKETS:
            self._db.execute(
                "UPDATE meta SET value = max(value, ?) WHERE key = 'indexed_upto'", (batch.upto,)
            )
            self._indexed_upto = max(self._indexed_upto, batch.upto)
            self._batch = None
            self._credit = 0

    @contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: every ``put``/``put_many``/``delete_many`` inside is one transaction.

        Several pico commits then cost one COMMIT. Nothing written inside is durable, or
        visible to other connections, until the outermost ``group`` exits; an exception
        rolls all of it back (the in-memory index too), so the caller must not publish a head
        written inside until then. Nested groups join the outermost one.
        """
        if self._group_depth:
            self._group_depth += 1
            try:
                yield
            finally:
                self._group_depth -= 1
            return
        self._begin()
        self._group_depth = 1
        try:
            yield
        except BaseException:
            self._group_depth = 0
            self._rollback()
            raise
        self._group_depth = 0
        self._commit()

    def close(self) -> None:
        """Close the connection (SQLite checkpoints when it is the last one: the data file is
        synced first)."""
        if self._fd < 0:
            return
        try:
            if os.fstat(self._fd).st_size:
                os.fdatasync(self._fd)
            self._close_db()
        finally:
            os.close(self._fd)
            self._fd = -1
            if self._shm >= 0:
                os.close(self._shm)
            self._shm = -2

    def _close_db(self) -> None:
        if self._sql is not None:
            self._sql.close()  # its statements before the connection
        self._db.close()

    def __enter__(self) -> SqliteBlockStore:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def get_with_links(store: BlockStore, cid: CID) -> tuple[Block, list[CID]] | None:
    """``store.get_block(cid)`` and its ``links()``, the bytes parsed once; None if absent."""
    data = store.get(cid)
    return None if data is None else Block.decode_links(cid, data)


def walk(store: BlockStore, root: CID, *, absent: Collection[CID] = ()) -> Iterator[Block]:
    """Yield every block reachable from `root` once, depth-first, verifying each.

    Links to a CID in `absent` are not followed: the known end of a truncated history (the
    `prev` of the oldest head a GC kept, dag/gc.py).  Any other missing block raises.
    """
    seen = {root, *absent}
    stack = [root]
    while stack:
        cid = stack.pop()
        got = get_with_links(store, cid)
        if got is None:
            raise MissingBlock(cid, f" (reachable from {root})")
        block, links = got
        yield block
        for link in reversed(links):
            if link not in seen:
                seen.add(link)
                stack.append(link)
