"""The floor of a commit: the native work every signed, durable p2pico commit does, timed with
no Python around it. Used by scripts/bench/engine.py and scripts/bench/dag.py to print, beside
their goals, how much CPU per commit is left for what runs in Python.

- ``sign_us``: one Ed25519 signature of a head-sized payload, made as dag.head makes a head's
  (``Keypair.sign_spliced``: libsodium called from dag/_native.c where it is built, else
  through PyNaCl);
- ``sha256_us``: the sha2-256 digests of a commit's blocks (their CIDs);
- ``sqlite_us``: a commit's blocks written as dag/store.py writes them (its tables, page size,
  WAL and cache settings): the ``group`` commits' rows inserted into ``blk`` 64 a statement
  (each row the CID and the bytes of a block of up to 512 bytes, or where they are in the
  data file), their larger blocks appended to the data file by one write, one COMMIT per
  ``group`` commits, and each block's row in the cid index ``idx`` (by its 64-bit key),
  sorted in batches of 4,096 and spread over the transactions, 128 rows a statement. The
  statements' arguments and each group's bytes are built before the clock starts.

Times are process CPU time per commit, in µs: the least of three runs (a floor; the VM's
speed and the page cache vary from run to run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__":  # run on its own: scripts/bench/dag.py beside it is not `dag`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from dag.did import Keypair
from dag.store import (
    _INSERTS,
    _MERGE,
    _MERGE_ROWS,
    _ROWS_AT_ONCE,
    CACHE_KIB,
    INLINE_MAX,
    PAGE_SIZE,
    WAL_CHECKPOINT_BYTES,
)

_INDEX_BATCH = 4096
_INDEX_ROWS = _MERGE_ROWS


_RUNS = 3


def sign_us(payload_bytes: int = 250, seconds: float = 0.2) -> float:
    key, payload = Keypair.generate(), os.urandom(payload_bytes)
    prefix = b"\xa2" + os.urandom(8)  # an envelope's first bytes, before the signature
    best = float("inf")
    for _ in range(_RUNS):
        n, start = 0, time.process_time()
        while n < 2000 or time.process_time() - start < seconds:
            key.sign_spliced(prefix, payload)
            n += 1
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def sha256_us(block_sizes: Sequence[int], rounds: int = 4000) -> float:
    datas = [os.urandom(size) for size in block_sizes]
    sha256 = hashlib.sha256
    best = float("inf")
    for _ in range(_RUNS):
        start = time.process_time()
        for _ in range(rounds):
            for data in datas:
                sha256(data).digest()
        best = min(best, (time.process_time() - start) / rounds * 1e6)
    return best


def sqlite_us(block_sizes: Sequence[int], group: int, commits: int) -> float:
    return min(_sqlite_run(block_sizes, group, commits) for _ in range(_RUNS))


def _sqlite_run(block_sizes: Sequence[int], group: int, commits: int) -> float:
    rng = random.Random(7)
    step = 4 * _ROWS_AT_ONCE  # the store's own statements: 64 rows, then the rest at the COMMIT
    merge = _MERGE  # the store's merge statement, _INDEX_ROWS rows
    datas = [rng.randbytes(size) for size in block_sizes]
    rows: list[list[bytearray | int]] = []
    batches: list[list[int]] = []
    pending: list[tuple[int, int]] = []
    next_id, end = 1, 0
    for _ in range(commits):
        args: list[bytearray | int] = []
        for data in datas:
            cid = b"\x01\x71\x12\x20" + rng.randbytes(32)  # CIDv1 dag-cbor sha2-256, binary
            # bound as the store binds them: bytearrays and ints (0: no `at`, stored as NULL)
            if len(data) <= INLINE_MAX:  # in its row
                args += (next_id, bytearray(cid), bytearray(data), 0)
            else:
                args += (next_id, bytearray(cid), bytearray(), end << 24 | len(data))
                end += len(data)
            pending.append((int.from_bytes(cid[-8:], "little", signed=True), next_id))
            next_id += 1
        rows.append(args)
        if len(pending) >= _INDEX_BATCH:
            pending.sort()
            for at in range(0, len(pending) - _INDEX_ROWS + 1, _INDEX_ROWS):
                batches.append([x for row in pending[at : at + _INDEX_ROWS] for x in row])
            pending = []
    group_rows = []  # each group's INSERT parameters, a statement's at a time
    for at in range(0, commits, group):
        args = [x for commit in rows[at : at + group] for x in commit]
        group_rows.append([args[part : part + step] for part in range(0, len(args), step)])
    filed = b"".join(d for d in datas if len(d) > INLINE_MAX)
    group_bytes = [filed * len(rows[at : at + group]) for at in range(0, commits, group)]
    with tempfile.TemporaryDirectory(prefix="p2pico-floor-") as tmp:
        db = sqlite3.connect(str(Path(tmp) / "floor.sqlite"), isolation_level=None)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // PAGE_SIZE}")
        db.execute(
            "CREATE TABLE blk"
            " (id INTEGER PRIMARY KEY, cid BLOB NOT NULL, data BLOB NOT NULL, at INTEGER)"
        )
        fd = os.open(Path(tmp) / "floor.sqlite-data", os.O_RDWR | os.O_CREAT, 0o644)
        db.execute("CREATE TABLE idx (k INTEGER PRIMARY KEY, id INTEGER NOT NULL)")
        every = max(1, commits // max(1, len(batches)))  # commits per index statement
        merged = 0
        start = time.process_time()
        end = 0
        for at in range(0, commits, group):
            db.execute("BEGIN IMMEDIATE")
            for part in group_rows[at // group]:
                db.execute(_INSERTS[len(part) // 4], part)
            data = group_bytes[at // group]
            os.pwrite(fd, data, end)
            end += len(data)
            while merged < len(batches) and merged * every < at + group:
                db.execute(merge, batches[merged])
                merged += 1
            db.execute("COMMIT")
        spent = time.process_time() - start
        db.close()
        os.close(fd)
    return spent / commits * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description="A commit's native floor, in µs of CPU.")
    parser.add_argument(
        "--blocks",
        default="80,202,56,318",
        help="a commit's block sizes in bytes (default: a counter event's, scripts/bench/engine.py)",
    )
    parser.add_argument("--group", type=int, default=64, help="commits per transaction")
    parser.add_argument("--commits", type=int, default=8_000, help="commits SQLite writes")
    args = parser.parse_args()
    sizes = [int(size) for size in args.blocks.split(",")]
    row = {
        "block_sizes": sizes,
        "group": args.group,
        "sign_us": round(sign_us(), 2),
        "sha256_us": round(sha256_us(sizes), 2),
        "sqlite_us": round(sqlite_us(sizes, args.group, args.commits), 2),
    }
    row["floor_us"] = round(row["sign_us"] + row["sha256_us"] + row["sqlite_us"], 2)
    print(json.dumps(row, indent=2))
    print(f"{'blocks':>24} {'sign':>7} {'sha2-256':>9} {'store':>7} {'floor':>7} {'commits/s':>10}")
    print(
        f"{args.blocks:>24} {row['sign_us']:>7} {row['sha256_us']:>9} {row['sqlite_us']:>7} "
        f"{row['floor_us']:>7} {1e6 / row['floor_us']:>10,.0f}"
    )


if __name__ == "__main__":
    main()
