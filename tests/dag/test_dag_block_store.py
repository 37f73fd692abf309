from collections.abc import Iterator
from pathlib import Path

import pytest

from dag.block import Block, BlockError, BlockMismatchError, iter_links
from dag.cbor import DagCborError
from dag.cid import CID, DAG_CBOR, RAW
from dag.store import BlockStore, MemoryBlockStore, MissingBlock, SqliteBlockStore, walk


def test_block_constructors() -> None:
    b = Block.encode({"a": [1, 2]})
    assert b.cid == CID.of(b.data)
    assert b.cid.codec == DAG_CBOR
    assert b.value == {"a": [1, 2]}
    r = Block.raw(b"hello")
    assert r.cid == CID.of(b"hello", RAW)
    assert r.value == b"hello"
    assert r.links() == []
    assert Block.decode(b.cid, b.data) == b
    with pytest.raises(TypeError, match=r"Block\.encode\(\)"):
        Block(b.cid, b.data, None)
    with pytest.raises(AttributeError):
        b.data = b""


def test_block_mismatch() -> None:
    b = Block.encode({"a": 1})
    tampered = b.data[:-1] + b"\x02"
    with pytest.raises(
        BlockMismatchError, match=f"^block bytes do not match CID {b.cid}: digest is [0-9a-f]{{64}}"
    ):
        Block.decode(b.cid, tampered)
    with pytest.raises(BlockMismatchError):
        Block.decode(CID.of(b"x", RAW), b"y")


def test_block_decode_is_strict() -> None:
    data = bytes.fromhex("1801")  # hashes fine, but not canonical
    with pytest.raises(DagCborError, match="non-minimal integer"):
        Block.decode(CID.of(data), data)


def test_block_unsupported() -> None:
    with pytest.raises(BlockError, match="unsupported codec 0x72"):
        Block.decode(CID.v1(0x72, CID.of(b"x").multihash), b"x")
    with pytest.raises(BlockError, match="unsupported hash function 0x0"):
        Block.decode(CID.v1(RAW, b"\x00\x01x"), b"x")


def test_links_depth_first() -> None:
    a, b, c = (CID.of(bytes([i])) for i in range(3))
    value = {"x": [a, {"y": b}], "z": c, "n": None}
    blk = Block.encode(value)
    # decoded maps come back in canonical key order: n, x, z
    assert blk.links() == [a, b, c]
    assert list(iter_links(value)) == [a, b, c]
    assert list(iter_links((a, [b]))) == [a, b]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockStore]:
    if request.param == "memory":
        yield MemoryBlockStore()
    else:
        with SqliteBlockStore(tmp_path / "blocks.db") as s:
            yield s


def test_store_basics(store: BlockStore) -> None:
    assert isinstance(store, BlockStore)
    b = Block.encode({"k": "v"})
    assert store.get(b.cid) is None
    assert not store.has(b.cid)
    assert store.get_block(b.cid) is None
    store.put(b)
    store.put(b)  # idempotent
    assert store.has(b.cid)
    assert store.get(b.cid) == b.data
    got = store.get_block(b.cid)
    assert got is not None
    assert got.value == {"k": "v"}
    store.put_many([Block.raw(bytes([i])) for i in range(10)])
    assert all(store.has(CID.of(bytes([i]), RAW)) for i in range(10))


def test_sqlite_persists_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    blocks = [Block.encode({"i": i}) for i in range(5)]
    with SqliteBlockStore(path) as s:
        s.put_many(blocks)
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s2 = SqliteBlockStore(str(path))
    try:
        assert len(s2) == 5
        assert set(s2.cids()) == {b.cid for b in blocks}
        assert [s2.get_block(b.cid) for b in blocks] == blocks
    finally:
        s2.close()


def test_sqlite_get_block_reverifies(tmp_path: Path) -> None:
    """Bytes changed on disk, in the data file or in a row's `data`, fail the CID check."""
    with SqliteBlockStore(tmp_path / "s.db") as s:
        b = Block.encode([1, 2, 3])  # small: in its row
        large = Block.encode(["x" * 600])  # in the data file
        s.put_many([b, large])
        assert (tmp_path / "s.db-data").read_bytes() == large.data
        with open(tmp_path / "s.db-data", "r+b") as f:
            f.write(b"\x81\x78")  # a list of a 120-byte string, not of 600
        with pytest.raises(BlockMismatchError):
            s.get_block(large.cid)
        s._db.execute("UPDATE blk SET data = ? WHERE at IS NULL", (b"\x83\x01\x02\x04",))
        with pytest.raises(BlockMismatchError):
            s.get_block(b.cid)


def test_walk(store: BlockStore) -> None:
    leaf = Block.raw(b"leaf")
    mid = Block.encode({"l": leaf.cid, "again": leaf.cid})
    root = Block.encode([mid.cid, leaf.cid])
    store.put_many([leaf, mid, root])
    assert [b.cid for b in walk(store, root.cid)] == [root.cid, mid.cid, leaf.cid]
    missing = Block.encode({"gone": CID.of(b"nowhere")})
    store.put(missing)
    with pytest.raises(
        MissingBlock, match=f"^block {CID.of(b'nowhere')} is not in the store"
    ) as info:
        list(walk(store, missing.cid))
    assert info.value.cid == CID.of(b"nowhere")
    assert isinstance(info.value, KeyError)
