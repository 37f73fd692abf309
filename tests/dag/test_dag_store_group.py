"""SqliteBlockStore.group: several put_many calls in one SQLite transaction (group commit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dag.block import Block
from dag.store import SqliteBlockStore


def blocks(n: int, tag: str) -> list[Block]:
    return [Block.encode({"tag": tag, "i": i}) for i in range(n)]


def test_a_group_is_one_transaction_visible_only_when_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "blocks.sqlite"
    with SqliteBlockStore(path) as store, SqliteBlockStore(path) as reader:
        first, second = blocks(3, "a"), blocks(2, "b")
        with store.group():
            store.put_many(first)
            store.put(second[0])
            with store.group():  # nested: joins the outer transaction
                store.put_many(second[1:])
            assert all(store.has(b.cid) for b in [*first, *second])  # seen by its writer
            assert not any(reader.has(b.cid) for b in first)  # not yet by anyone else
        assert all(reader.get(b.cid) == b.data for b in [*first, *second])
        store.put_many(blocks(1, "after"))  # outside a group put_many commits by itself again
        assert len(reader) == 6


def test_an_exception_rolls_the_whole_group_back(tmp_path: Path) -> None:
    with SqliteBlockStore(tmp_path / "blocks.sqlite") as store:
        kept = blocks(1, "kept")
        store.put_many(kept)

        def failing_group() -> None:
            with store.group():
                store.put_many(blocks(4, "lost"))
                raise RuntimeError("commit failed")

        with pytest.raises(RuntimeError, match="commit failed"):
            failing_group()
        assert len(store) == 1
        with store.group():  # usable again
            store.put_many(blocks(2, "new"))
        assert len(store) == 3


@pytest.mark.parametrize("n", [0, 1, 5, 16, 17, 40])
def test_put_many_stores_every_block_once_whatever_the_batch_size(tmp_path: Path, n: int) -> None:
    # up to 16 blocks go in one multi-row INSERT, more through executemany
    with SqliteBlockStore(tmp_path / "blocks.sqlite") as store:
        batch = blocks(n, "x")
        store.put_many(iter(batch + batch[:3]))  # a generator, with repeats
        with store.group():
            store.put_many(tuple(batch))  # again, all present already: ignored
        assert len(store) == n
        assert all(store.get(b.cid) == b.data for b in batch)
