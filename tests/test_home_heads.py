"""Head pointers written after group commits (Home.note_heads / flush_heads), and found
again in the blocks when the process died before writing them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

import krl
from dag import cbor
from dag.block import Block
from dag.did import Keypair
from dag.head import Head, head_payload, looks_like_head, sign_head, verify_head
from p2pico.engine import HEADS_FLUSH_SECONDS, Engine, Work
from p2pico.home import Home

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
RID = "io.p2pico.counter"


def inc(eci: str) -> Work:
    return Work("event", event=krl.Event("counter", "inc", {"by": 1}), eci=eci)


def crash(home: Home) -> None:
    """Close the home's connections the way a killed process leaves them: no flush."""
    home._db.close()
    home.blocks.close()


def pointer(path: Path, did: str) -> bytes:
    """The head pointer as node.sqlite holds it, read from a connection of its own."""
    db = sqlite3.connect(path / "node.sqlite")
    try:
        (head,) = db.execute("SELECT head FROM picos WHERE did = ?", (did,)).fetchone()
    finally:
        db.close()
    return bytes(head)


def current_head(home: Home, did: str) -> tuple[Head, Keypair]:
    """A hosted pico's current head, verified, and its key."""
    hosted = next(h for h in home.hosted() if h.did == did)
    block = home.blocks.get_block(hosted.head)
    assert block is not None
    return verify_head(block), hosted.keypair


async def events(
    home: Home, n: int, *, pico_did: str | None = None, die: bool = False
) -> tuple[str, str]:
    """Create a counter pico (or use ``pico_did``), send it ``n`` events; (did, eci).
    ``die``: then ``crash`` the home while the engine runs (its last flush fails)."""
    engine = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        if pico_did is None:
            pico = engine.create_pico([COUNTER])
        else:
            pico = engine.picos[pico_did]
        for _ in range(n):
            work = inc(pico.eci)
            await engine.submit(pico.did, work)
            assert work.error is None
        did, eci = pico.did, pico.eci
        # what hosted() says is current at once, flushed or not
        assert {h.did: h.head for h in home.hosted()}[did] == pico.head
        if die:
            crash(home)
        nursery.cancel_scope.cancel()
    return did, eci


async def count_after_reopen(path: Path, did: str, eci: str) -> object:
    home = Home(path)
    engine = Engine(home)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            got = await engine.submit(did, Work("query", eci=eci, rid=RID, name="count"))
            nursery.cancel_scope.cancel()
    finally:
        home.close()
    return got


async def test_pointers_reach_node_sqlite_within_the_flush_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    home = Home(tmp_path)
    engine = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([COUNTER])
        created = pointer(tmp_path, pico.did)
        for _ in range(3):
            await engine.submit(pico.did, inc(pico.eci))
        assert home.heads_pending == 1
        assert pointer(tmp_path, pico.did) == created  # not written yet
        await trio.sleep(HEADS_FLUSH_SECONDS * 1.5)
        assert home.heads_pending == 0
        assert pointer(tmp_path, pico.did) == pico.head.buffer
        nursery.cancel_scope.cancel()
    home.close()


async def test_a_crash_before_the_flush_loses_no_commit(tmp_path: Path) -> None:
    home = Home(tmp_path)
    did, eci = await events(home, 5)
    home.flush_heads()
    flushed = pointer(tmp_path, did)
    await events(home, 7, pico_did=did, die=True)  # noted, never flushed
    assert pointer(tmp_path, did) == flushed

    again = Home(tmp_path)  # finds the 7 newer heads in the blocks
    recovered = current_head(again, did)[0]
    assert pointer(tmp_path, did) == recovered.cid.buffer
    assert recovered.seq == 5 + 7  # genesis is seq 0, then a head per event
    again.close()
    assert await count_after_reopen(tmp_path, did, eci) == 12


async def test_a_head_that_does_not_extend_the_pointer_is_not_taken(tmp_path: Path) -> None:
    home = Home(tmp_path)
    did, eci = await events(home, 2)
    home.flush_heads()
    head, keypair = current_head(home, did)
    current = head.cid
    # validly signed, newer seq, but on another branch (its prev is not the pointer)
    fork = sign_head(keypair, seq=head.seq + 5, prev=head.prev, state=head.state, ts=head.ts + 1)
    # and one that extends the pointer and names the pico, signed by another key
    stranger = Keypair.generate()
    payload = head_payload(
        did, seq=head.seq + 9, prev=current, state=head.state, ts=head.ts + 1, cause=None
    )
    forged = Block.encode([stranger.sign(payload), cbor.decode(payload)])
    assert looks_like_head(forged.data)  # so the scan reads it, and its signature fails
    home.blocks.put_many([fork, forged])
    crash(home)

    again = Home(tmp_path)
    assert {h.did: h.head for h in again.hosted()}[did] == current
    again.close()
    assert await count_after_reopen(tmp_path, did, eci) == 2


async def test_a_clean_close_leaves_nothing_to_scan(tmp_path: Path) -> None:
    home = Home(tmp_path)
    did, _ = await events(home, 4)
    home.close()  # flushes
    again = Home(tmp_path)
    assert again.heads_pending == 0
    (upto,) = again._db.execute("SELECT value FROM settings WHERE key = 'heads_upto'").fetchone()
    assert int(upto) == again.blocks.tail_id()
    assert {h.did: h.head for h in again.hosted()}[did].buffer == pointer(tmp_path, did)
    again.close()


def test_the_tail_id_inside_a_write_transaction_is_the_committed_one(tmp_path: Path) -> None:
    home = Home(tmp_path)
    store = home.blocks
    store.put(Block.encode({"n": 1}))
    committed = store.tail_id()
    try:
        with store.group():
            store.put(Block.encode({"n": 2}))
            assert store.tail_id() == committed  # the insert may still roll back
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert store.tail_id() == committed
    store.put(Block.encode({"n": 3}))
    assert store.tail_id() == committed + 1
    home.close()


async def test_the_newest_head_that_extends_the_pointer_wins_over_a_newer_fork(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path)
    did, eci = await events(home, 2)
    home.flush_heads()
    head, keypair = current_head(home, did)
    # a branch off the flushed pointer's parent, far ahead in seq, stored first
    fork = sign_head(keypair, seq=head.seq + 50, prev=head.prev, state=head.state, ts=head.ts)
    home.blocks.put(fork)
    await events(home, 3, pico_did=did, die=True)  # the real heads, never flushed

    again = Home(tmp_path)
    assert current_head(again, did)[0].seq == head.seq + 3
    again.close()
    assert await count_after_reopen(tmp_path, did, eci) == 5


def forged_extension(home: Home, did: str) -> Block:
    """A head signed with the pico's key (as a former host that kept it could) on the current
    pointer: it extends it, so only knowing where it came from keeps recovery off it."""
    head, keypair = current_head(home, did)
    return sign_head(keypair, seq=head.seq + 1, prev=head.cid, state=head.state, ts=head.ts + 1)


async def test_an_imported_head_is_never_recovered_as_the_hosted_one(tmp_path: Path) -> None:
    home = Home(tmp_path)
    did, eci = await events(home, 2)
    home.flush_heads()
    current = current_head(home, did)[0].cid
    with home.foreign_blocks():  # as a CAR import stores it
        imported = forged_extension(home, did)
        home.blocks.put(imported)
        home.save_imported_head(did, imported.cid, 3, fork=False)
    # fetched over Bitswap, then recorded as imported: stored outside a section
    head, keypair = current_head(home, did)
    fetched = sign_head(keypair, seq=3, prev=current, state=head.state, ts=1)
    home.blocks.put(fetched)
    home.save_imported_head(did, fetched.cid, 3, fork=True)
    crash(home)

    again = Home(tmp_path)
    assert {h.did: h.head for h in again.hosted()}[did] == current
    again.close()
    assert await count_after_reopen(tmp_path, did, eci) == 2

    # the host's own commits after an import are still found after a crash
    home = Home(tmp_path)
    with home.foreign_blocks():
        later = forged_extension(home, did)
        home.blocks.put(later)
        home.save_imported_head(did, later.cid, 3, fork=False)
    await events(home, 4, pico_did=did, die=True)
    again = Home(tmp_path)
    assert current_head(again, did)[0].seq == 2 + 4
    again.close()


async def test_a_stop_inside_an_import_takes_none_of_its_heads(tmp_path: Path) -> None:
    home = Home(tmp_path)
    did, eci = await events(home, 2)
    current = current_head(home, did)[0].cid
    try:
        with home.foreign_blocks():
            home.blocks.put(forged_extension(home, did))  # committed; its heads row is not
            crash(home)
    except sqlite3.ProgrammingError:  # the section's closing flush, on a closed database
        pass

    again = Home(tmp_path)
    assert {h.did: h.head for h in again.hosted()}[did] == current
    marked = again._db.execute("SELECT 1 FROM settings WHERE key = 'foreign_open'").fetchone()
    assert marked is None
    (upto,) = again._db.execute("SELECT value FROM settings WHERE key = 'heads_upto'").fetchone()
    assert int(upto) == again.blocks.tail_id()
    again.close()
    assert await count_after_reopen(tmp_path, did, eci) == 2
