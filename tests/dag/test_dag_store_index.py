"""SqliteBlockStore's layout: blocks appended to `blk`, the cid index `idx` fed in sorted batches.

The store keeps the (cid, id) of blocks not yet in `idx` in memory and merges them in steps
over later write transactions; these tests run it with tiny batches so that merges, steps,
reopenings mid-merge and rollbacks happen everywhere, and compare it with MemoryBlockStore.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dag.block import Block
from dag.cid import CID
from dag.store import FILTER_MIN_BITS, MemoryBlockStore, SqliteBlockStore, _k

POOL = [Block.encode({"i": i, "pad": "x" * (i % 5) * 40}) for i in range(20)] + [
    Block.raw(bytes([i]) * (i + 1)) for i in range(6)
]
# raw twins of dag-cbor blocks: the same digest, so the same 64-bit key in idx (one of each
# pair goes to idx2)
POOL += [Block.raw(b.data) for b in POOL[:3]]
assert _k(POOL[-1].cid.buffer) == _k(POOL[2].cid.buffer)
assert POOL[-1].cid != POOL[2].cid


def consistent(store: SqliteBlockStore) -> None:
    """The database and the store's memory agree: every block is found exactly one way."""
    db = store._db
    blk = {int(i): bytes(c) for i, c in db.execute("SELECT id, cid FROM blk")}
    idx: dict[bytes, int] = {}  # by CID: idx's rows (by 64-bit key) and idx2's
    for k, i in db.execute("SELECT k, id FROM idx"):
        assert i in blk, f"idx key {k} points at id {i}, which blk lacks"
        assert _k(blk[i]) == k, f"block {i} is in idx under another key"
        idx[blk[i]] = i
    for c, i in db.execute("SELECT cid, id FROM idx2"):
        cid = bytes(c)
        assert cid not in idx, "a CID both in idx and idx2"
        held = db.execute("SELECT id FROM idx WHERE k = ?", (_k(cid),)).fetchone()
        assert held is not None, "idx2 holds a CID whose key idx does not"
        assert held[0] != i
        assert store._spilled
        idx[cid] = i
    (upto,) = db.execute("SELECT value FROM meta WHERE key = 'indexed_upto'").fetchone()
    assert store._indexed_upto == upto
    assert len(set(blk.values())) == len(blk), "a CID stored twice"
    batch = store._batch.entries if store._batch is not None else {}
    assert not set(store._pending) & set(batch)
    for i, cid in blk.items():
        assert cid in store._pending or cid in batch or cid in idx, f"block {i} unreachable"
        for where in (store._pending, batch, idx):
            assert where.get(cid, i) == i
        if i <= upto:
            assert idx.get(cid) == i, f"block {i} <= indexed_upto {upto} is not in idx"
    for where in (store._pending, batch, idx):
        for cid, i in where.items():
            assert blk.get(i) == cid, f"{cid.hex()} points at id {i}, which blk lacks"
    assert store._tail >= max(blk, default=0)
    if store._filter is not None and store._building is None:
        assert all(cid in store._filter for cid in blk.values())


def same(store: SqliteBlockStore, model: MemoryBlockStore) -> None:
    consistent(store)
    assert len(store) == len(model)
    assert sorted(store.cids(), key=bytes) == sorted(model.cids(), key=bytes)
    for b in POOL:
        assert store.has(b.cid) == model.has(b.cid)
        assert store.get(b.cid) == model.get(b.cid)
    assert_get_many(store, model)


def assert_get_many(store: SqliteBlockStore, model: MemoryBlockStore) -> None:
    asked = [b.cid for b in POOL]
    assert store.get_many(asked) == model.get_many(asked)


idxs = st.lists(st.integers(0, len(POOL) - 1), max_size=6)
leaf = st.one_of(
    st.tuples(st.just("put"), st.integers(0, len(POOL) - 1)),
    st.tuples(st.just("put_many"), idxs),
    st.tuples(st.just("delete"), idxs),
)


def groups(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A group of ops (possibly groups), and whether it raises at its end."""
    return st.tuples(st.just("group"), st.lists(inner, max_size=5), st.booleans())


op = st.recursive(leaf, groups, max_leaves=8)
top = st.one_of(op, st.tuples(st.just("reopen")), st.tuples(st.just("rewind"), st.integers(1, 10)))


class Boom(Exception):
    pass


def apply(op: Any, store: SqliteBlockStore, model: MemoryBlockStore) -> None:
    kind = op[0]
    if kind == "put":
        store.put(POOL[op[1]])
        model.put(POOL[op[1]])
    elif kind == "put_many":
        store.put_many(POOL[i] for i in op[1])
        model.put_many(POOL[i] for i in op[1])
    elif kind == "delete":
        cids = [POOL[i].cid for i in op[1]]
        assert store.delete_many(cids) == model.delete_many(cids)
    else:
        saved = dict(model._blocks)
        try:
            with store.group():
                for inner in op[1]:
                    apply(inner, store, model)
                    assert_get_many(store, model)  # rows and bytes not yet written
                if op[2]:
                    raise Boom
        except Boom:
            model._blocks = saved
            if store._group_depth:  # an inner group raised: the outer one goes on
                raise


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.lists(top, max_size=25))
def test_the_store_behaves_as_a_dict_through_merges_rollbacks_and_reopens(
    batch: int, ops: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blocks.sqlite"
        model = MemoryBlockStore()
        store = SqliteBlockStore(path, batch=batch)
        try:
            for o in ops:
                if o[0] == "reopen":  # without finishing a merge that may be under way
                    store.close()
                    store = SqliteBlockStore(path, batch=batch)
                elif o[0] == "rewind":  # a crash before indexed_upto moved on
                    store.close()
                    db = sqlite3.connect(path)
                    db.execute(
                        "UPDATE meta SET value = max(0, value - ?) WHERE key = 'indexed_upto'",
                        (o[1],),
                    )
                    db.commit()
                    db.close()
                    store = SqliteBlockStore(path, batch=batch)
                else:
                    with contextlib.suppress(Boom):
                        apply(o, store, model)
                same(store, model)
        finally:
            store.close()


def test_a_merge_runs_in_steps_and_a_reopen_mid_merge_keeps_every_block(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    blocks = [Block.encode({"n": i}) for i in range(400)]
    with SqliteBlockStore(path, batch=200) as store:
        for b in blocks[:200]:
            store.put(b)  # the 200th fills the batch: it is frozen, its merge starts
        batch = store._batch
        assert batch is not None
        assert 0 < batch.next < 256
        assert store._pending == {}
        steps = 0
        for b in blocks[200:260]:  # each put merges about two more entries (a bucket or so)
            before = batch.next
            store.put(b)
            steps += batch.next > before
        assert steps > 20
        assert store._batch is batch  # many small steps, not finished yet
        (in_idx,) = store._db.execute("SELECT count(*) FROM idx").fetchone()
        assert 0 < in_idx < 200
        consistent(store)
    # closed mid-merge: indexed_upto is still 0, the blocks come back from blk
    with SqliteBlockStore(path, batch=200) as store:
        assert store._indexed_upto == 0
        assert len(store._pending) == 260
        consistent(store)
        assert [store.get(b.cid) for b in blocks[:260]] == [b.data for b in blocks[:260]]
        store.put_many(blocks[:260])  # all there already: nothing written
        assert len(store) == 260
        for b in blocks[260:]:
            store.put(b)
        consistent(store)
        assert store._indexed_upto >= 200  # the re-merge finished (INSERT OR IGNORE)
    with SqliteBlockStore(path) as store:  # the automatic batch size
        assert sorted(store.cids(), key=bytes) == sorted((b.cid for b in blocks), key=bytes)
        consistent(store)


def test_a_home_written_by_the_old_layout_is_migrated_at_open(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    old = [Block.encode({"old": i}) for i in range(50)] + [Block.raw(b"r%d" % i) for i in range(9)]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE blocks (cid BLOB PRIMARY KEY, data BLOB NOT NULL)")
    db.executemany("INSERT INTO blocks VALUES (?, ?)", [(b.cid.buffer, b.data) for b in old])
    db.commit()
    db.close()
    with SqliteBlockStore(path) as store:
        tables = {n for (n,) in store._db.execute("SELECT name FROM sqlite_master")}
        assert "blocks" not in tables
        assert {"blk", "idx", "meta"} <= tables
        ids = [int(i) for (i,) in store._db.execute("SELECT id FROM blk ORDER BY id")]
        assert ids == list(range(1, len(old) + 1))  # rowid order
        assert store._indexed_upto == len(old)
        assert store._pending == {}
        consistent(store)
        assert all(store.get_block(b.cid) == b for b in old)
        store.put_many(old[:5])  # present: ignored
        new = Block.encode({"new": 1})
        store.put(new)
        assert len(store) == len(old) + 1
    with SqliteBlockStore(path) as store:
        assert sorted(store.cids(), key=bytes) == sorted([b.cid for b in [*old, new]], key=bytes)
        consistent(store)


def test_a_rolled_back_group_leaves_memory_as_the_database_is(tmp_path: Path) -> None:
    with SqliteBlockStore(tmp_path / "blocks.sqlite", batch=3) as store:
        store.put_many(POOL[:5])  # a batch frozen and partly merged
        pending, batch = dict(store._pending), store._batch
        nxt = None if batch is None else batch.next

        def failing_group() -> None:
            with store.group():
                store.put_many(POOL[5:12])
                store.delete_many([POOL[0].cid, POOL[6].cid])
                store.put(POOL[0])
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError, match="abort"):
            failing_group()
        assert store._pending == pending
        assert store._batch is batch
        assert (None if batch is None else batch.next) == nxt
        consistent(store)
        assert [store.has(b.cid) for b in POOL[:12]] == [True] * 5 + [False] * 7


def test_two_connections_on_one_file_see_each_others_blocks(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    with SqliteBlockStore(path, batch=2) as a, SqliteBlockStore(path, batch=2) as b:
        a.put_many(POOL[:3])
        b.put_many(POOL[2:6])  # POOL[2] is a's already
        a.put(POOL[6])
        assert all(b.get(x.cid) == x.data for x in POOL[:7])
        assert all(a.get(x.cid) == x.data for x in POOL[:7])
        assert len(a) == len(b) == 7
        consistent(a)
        consistent(b)
    with SqliteBlockStore(path) as store:
        consistent(store)
        assert len(store) == 7


def test_the_cid_filter_grows_and_never_hides_a_stored_block(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    n = FILTER_MIN_BITS // 16 + 500  # past one entry per 16 bits: rebuilt larger
    blocks = [Block.raw(i.to_bytes(4, "big")) for i in range(n)]
    with SqliteBlockStore(path, batch=1000) as store:
        store.put_many(blocks[:10])
        assert store._filter is not None
        assert store._filter.mask + 1 == FILTER_MIN_BITS
        for at in range(10, n, 1000):
            store.put_many(blocks[at : at + 1000])
        later = 0
        while store._building is not None and later < 100:  # the rebuild's scan, in steps
            store.put(Block.raw(b"later %d" % later))
            later += 1
        assert store._building is None
        assert later > 1
        assert store._filter is not None
        assert store._filter.mask + 1 > FILTER_MIN_BITS
        consistent(store)
        store.put_many(blocks)  # all there: the filter says "maybe", idx says "have"
        assert len(store) == n + later
        store._filter.bits[:] = b"\xff" * len(store._filter.bits)  # every CID a "maybe"
        fresh = Block.raw(b"fresh")
        store.put_many([fresh, *blocks[:20]])
        assert len(store) == n + later + 1
        assert store.get(fresh.cid) == fresh.data
        consistent(store)


def test_a_growing_store_rebuilds_its_filter_once_per_sixteenfold_growth(tmp_path: Path) -> None:
    """Each rebuild scans idx whole, so a store that keeps growing pays for it per block it adds:
    sized for 16 times its entries, the filter built at 4,096 entries (one per 16 bits of the
    smallest filter, or a little more: the scan starts at a write's end) holds 65,536 or more
    before the next rebuild; sized for 4 times, it was rebuilt again before 60,000."""
    n = 60_000
    rebuilds, building = [], False
    with SqliteBlockStore(tmp_path / "blocks.sqlite", batch=4096) as store:
        for at in range(0, n, 1000):
            store.put_many([Block.raw(b"g%d" % i) for i in range(at, at + 1000)])
            if store._building is not None and not building:
                assert store._filter is not None
                rebuilds.append((len(store), store._filter.count))
            building = store._building is not None
        assert len(rebuilds) == 1, rebuilds
        assert store._building is None
        assert store._filter is not None
        assert store._filter.mask + 1 >= 16 * 16 * rebuilds[0][1]  # 16 bits an entry, x 16
        assert store._filter.count * 16 <= store._filter.mask + 1  # no further rebuild due
        consistent(store)


def test_a_small_store_opens_with_its_whole_filter(tmp_path: Path) -> None:
    """Up to FILTER_OPEN_ROWS rows of idx are scanned at open: the CIDs a CAR import or a
    large write brings right after are then told new by the filter, not by a read of idx."""
    path = tmp_path / "blocks.sqlite"
    blocks = [Block.raw(b"s%d" % i) for i in range(3000)]
    with SqliteBlockStore(path, batch=500) as store:
        for at in range(0, len(blocks), 250):
            store.put_many(blocks[at : at + 250])
    with SqliteBlockStore(path) as store:
        (indexed,) = store._db.execute("SELECT count(*) FROM idx").fetchone()
        assert indexed >= 2000  # most of them are read from idx, not from memory
        assert store._building is None
        assert store._filter is not None
        keys = [b.cid.buffer for b in blocks]
        assert store._filter.maybe(keys) == keys
        reads: list[str] = []
        store._db.set_trace_callback(reads.append)
        fresh = [Block.raw(b"f%d" % i) for i in range(500)]
        assert store.present([b.cid for b in fresh]) == set()
        assert store.present([b.cid for b in blocks[:100]]) == {b.cid for b in blocks[:100]}
        store._db.set_trace_callback(None)
        # about 1 % of the fresh ones are false positives; all 500 read idx without the scan
        assert 100 <= sum("idx" in r for r in reads) < 130
        consistent(store)


def test_cids_are_parsed_back_from_blk(tmp_path: Path) -> None:
    with SqliteBlockStore(tmp_path / "blocks.sqlite", batch=1) as store:
        store.put_many(POOL)
        assert [c for c in store.cids() if isinstance(c, CID)] == [b.cid for b in POOL]


def test_a_block_another_connection_deletes_is_gone_here_too(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    with SqliteBlockStore(path, batch=4) as a, SqliteBlockStore(path, batch=4) as gc:
        a.put_many(POOL[:3])  # in a's memory, not yet in idx
        assert gc.delete_many([POOL[1].cid]) == 1  # another process's GC
        a.put_many(POOL[3:12])  # a merges its batch, POOL[1]'s entry with it
        assert not a.has(POOL[1].cid)
        assert a.get(POOL[1].cid) is None
        assert not gc.has(POOL[1].cid)
        a.put(POOL[1])  # stored again: found again, by both
        a.put_many(POOL[12:20])
        assert a.get(POOL[1].cid) == gc.get(POOL[1].cid) == POOL[1].data
    with SqliteBlockStore(path) as store:
        assert sorted(store.cids(), key=bytes) == sorted((b.cid for b in POOL[:20]), key=bytes)
        assert all(store.get(b.cid) == b.data for b in POOL[:20])


def test_cids_and_data_are_stored_as_blobs(tmp_path: Path) -> None:
    """Parameters are bound as bytearrays (store._blob): SQLite must still hold BLOBs that a
    bytes key finds, in blk and after the merge in idx, and read back as bytes."""
    path = tmp_path / "blocks.sqlite"
    with SqliteBlockStore(path, batch=4) as store:
        store.put_many(POOL[:9])  # past one batch: merged into idx
        assert store._indexed_upto > 0
    db = sqlite3.connect(path)
    types = set(db.execute("SELECT typeof(cid), typeof(data) FROM blk"))
    assert types == {("blob", "blob")}
    assert set(db.execute("SELECT typeof(k), typeof(id) FROM idx")) == {("integer", "integer")}
    assert db.execute("SELECT count(*) FROM idx").fetchone()[0] > 0
    db.close()
    with SqliteBlockStore(path, batch=4) as store:
        for b in POOL[:9]:
            got = store.get(b.cid)
            assert type(got) is bytes
            assert got == b.data
            assert store.has(b.cid)
        store.put_many(POOL[:9])  # all known: nothing written twice
        assert len(store) == 9


def test_two_cids_with_one_key_are_both_found(tmp_path: Path) -> None:
    """A raw and a dag-cbor block of the same bytes share a digest, so a 64-bit key: idx holds
    the first merged, idx2 the other; both are found, survive a reopen and a rebuild of the
    filter, and deleting either leaves the other."""
    path = tmp_path / "blocks.sqlite"
    cbor_blocks = [Block.encode({"twin": i}) for i in range(40)]
    raw_blocks = [Block.raw(b.data) for b in cbor_blocks]
    with SqliteBlockStore(path, batch=8) as store:
        store.put_many(cbor_blocks[:20])
        store.put_many(raw_blocks)  # half of them collide with blocks idx holds by now
        store.put_many(cbor_blocks[20:])  # the others with raw ones merged first
        store.put_many(POOL[:12])  # past the last batch: everything above is merged
        assert store._indexed_upto >= 80
        consistent(store)
        (spilled,) = store._db.execute("SELECT count(*) FROM idx2").fetchone()
        assert spilled == 40
        for b in [*cbor_blocks, *raw_blocks]:
            assert store.get(b.cid) == b.data
            assert store.has(b.cid)
        store.put_many([*raw_blocks, *cbor_blocks])  # all known: nothing written twice
        assert len(store) == 92
    with SqliteBlockStore(path, batch=8) as store:
        assert store._spilled
        while store._building is not None:  # the filter's scan: idx, then idx2
            store.put(Block.encode({"later": len(store)}))
        assert store._filter is not None
        keys = [b.cid.buffer for b in [*cbor_blocks, *raw_blocks]]
        assert store._filter.maybe(keys) == keys
        assert store.delete_many([b.cid for b in raw_blocks[:10] + cbor_blocks[30:]]) == 20
        consistent(store)
        for b in raw_blocks[:10] + cbor_blocks[30:]:
            assert store.get(b.cid) is None
            assert not store.has(b.cid)
        for b in cbor_blocks[:10] + raw_blocks[30:]:
            assert store.get(b.cid) == b.data
        store.put_many(raw_blocks[:10])  # back: into memory, then merged beside their twins
        store.put_many([Block.encode({"more": i}) for i in range(20)])
        consistent(store)
        assert all(store.get(b.cid) == b.data for b in raw_blocks)


def test_a_home_with_the_cid_keyed_index_is_reindexed_at_open(tmp_path: Path) -> None:
    """idx keyed by whole CIDs (before 64-bit keys) is rebuilt from blk up to indexed_upto;
    blocks after it are merged as usual."""
    path = tmp_path / "blocks.sqlite"
    blocks = [Block.encode({"old": i}) for i in range(30)] + [
        Block.raw(b"r%d" % i) for i in range(5)
    ]
    blocks.append(Block.raw(blocks[0].data))  # a twin: same key as blocks[0]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE blk (id INTEGER PRIMARY KEY, cid BLOB NOT NULL, data BLOB NOT NULL)")
    db.execute("CREATE TABLE idx (cid BLOB PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.executemany(
        "INSERT INTO blk VALUES (?, ?, ?)",
        [(i + 1, b.cid.buffer, b.data) for i, b in enumerate(blocks)],
    )
    db.executemany(
        "INSERT INTO idx VALUES (?, ?)", [(b.cid.buffer, i + 1) for i, b in enumerate(blocks[:32])]
    )
    db.execute("INSERT INTO meta VALUES ('indexed_upto', 32)")
    db.commit()
    db.close()
    with SqliteBlockStore(path, batch=4) as store:
        cols = [name for _, name, *_ in store._db.execute("PRAGMA table_info(idx)")]
        assert cols == ["k", "id"]
        (n,) = store._db.execute("SELECT count(*) FROM idx").fetchone()
        assert n == 32
        assert set(store._pending.values()) == {33, 34, 35, 36}
        consistent(store)
        assert all(store.get(b.cid) == b.data for b in blocks)
        store.put_many([Block.encode({"new": i}) for i in range(8)])  # a merge: the twin to idx2
        consistent(store)
        assert store._spilled
    with SqliteBlockStore(path) as store:
        consistent(store)
        assert all(store.get(b.cid) == b.data for b in blocks)
        assert len(store) == len(blocks) + 8


def test_get_many_is_get_for_many(tmp_path: Path) -> None:
    blocks = [Block.raw(bytes([i]) * 600) for i in range(30)]  # the bytes in the data file
    blocks += [Block.encode({"i": i}) for i in range(30)]  # the bytes in blk
    path = tmp_path / "blocks.sqlite"
    with SqliteBlockStore(path, batch=4) as a, SqliteBlockStore(path) as b:
        a.put_many(blocks[:20])  # in idx by now (batches of 4), some still in memory
        b.put_many(blocks[20:30])  # another connection's: `a` sees them too
        a.put_many(POOL[:3])
        a.put_many(POOL[-3:])  # the raw twins: idx2, once merged
        for x in POOL[3:13]:  # a transaction each: merge steps; the last one stays in memory
            a.put(x)
        asked = [x.cid for x in [*blocks, *POOL]]
        want = {x.cid: x.data for x in [*blocks[:30], *POOL[:13], *POOL[-3:]]}
        assert a._spilled  # every way a block is found: idx2, idx, memory
        assert a._indexed_upto > 0
        assert a._pending
        assert a.get_many(asked) == want
        assert a.get_many(asked) == {c: a.get(c) for c in asked if a.get(c) is not None}
        assert a.get_many([]) == {}
        many = [Block.encode({"many": i}) for i in range(1300)]  # more than a statement asks
        a.put_many(many)
        assert a.get_many([x.cid for x in many]) == {x.cid: x.data for x in many}


def test_present_is_has_for_many(tmp_path: Path) -> None:
    blocks = [Block.raw(bytes([i])) for i in range(40)]
    path = tmp_path / "blocks.sqlite"
    with SqliteBlockStore(path, batch=4) as a, SqliteBlockStore(path) as b:
        model = MemoryBlockStore()
        for s in (a, model):
            s.put_many(blocks[:10])
        b.put_many(blocks[10:20])  # another connection's: `a` sees them too
        model.put_many(blocks[10:20])
        asked = [blk.cid for blk in blocks]
        want = {blk.cid for blk in blocks[:20]}
        assert a.present(asked) == model.present(asked) == want
        assert {c for c in asked if a.has(c)} == want
        assert a._filter is not None
        a._filter.bits[:] = b"\xff" * len(a._filter.bits)  # every CID a "maybe": reads idx
        assert a.present(asked) == want
        assert a.present([]) == set()
