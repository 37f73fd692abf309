"""A node's home folder: engine key, block store, and the node's own tables.

Layout of ``--home DIR`` (default ``~/.p2pico``):

    engine.key      32-byte Ed25519 seed of the engine (mode 0600); its peer id names the node
    blocks.sqlite   the content-addressed block store (dag.store.SqliteBlockStore), with
                    its data file blocks.sqlite-data (the blocks' bytes)
    node.sqlite     picos hosted here (seed, head, record seq), newest location record per DID,
                    heads imported from CARs (p2pico.history), forked ones flagged, the
                    node's settings (the DID of its root pico, p2pico.root), and the
                    Bitswap grants (peer id, DID) the operator made (p2pico.bitswap)
    node.json       written when the node is ready: {"peer_id", "multiaddrs", "http"}
    lock            locked (flock) by the node serving the home, which wrote its pid there:
                    a second node on the same home is refused (``lock_home``)

Each database keeps its layout's number in its user_version (blocks.sqlite:
dag.store.STORE_FORMAT; node.sqlite: HOME_FORMAT); one written by a newer p2pico is
refused with a HomeError, as is a file that is not a database.

A pico's state lives only in blocks; node.sqlite holds pointers to it (the head
CID) and the pico's private key, which never enters a block.

Head pointers after a group commit are written later (``note_heads``, then
``flush_heads``, which the engine calls about once a second and at shutdown), so an
event's commit costs one SQLite transaction, not two.  Nothing is lost if the process
dies in between: the head blocks are in blocks.sqlite, and opening the home reads the
blocks appended since the last flush (``settings.heads_upto``, a block id) and moves
each hosted pico's pointer to the newest head found there that extends it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dag.block import Block
from dag.cid import CID
from dag.did import Keypair
from dag.head import InvalidHead, head_seq_prev, looks_like_head, verify_head
from dag.store import SqliteBlockStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_HOME = Path("~/.p2pico").expanduser()

# node.sqlite's layout, in its user_version (0: from before the number was kept)
HOME_FORMAT = 1


class HomeError(Exception):
    """A home folder that cannot be opened or served: the message says which file and why."""


@contextmanager
def lock_home(path: Path) -> Iterator[None]:
    """Hold the home's lock while a node serves it; HomeError if another process holds it.

    Two nodes on one home would share an engine key (one peer id twice in the mesh) and
    both commit the same picos: forks.  The lock is an flock on ``lock``, which the kernel
    drops with the process, so a node that was killed leaves no stale lock behind.
    """
    path.mkdir(parents=True, exist_ok=True)
    file = path / "lock"
    fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise HomeError(
                f"{path} is served by another node (pid {holder}); stop it first, or give"
                " this one another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


_SCHEMA = """
CREATE TABLE IF NOT EXISTS picos (
    did   TEXT PRIMARY KEY,
    seed  BLOB NOT NULL,
    head  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    did    TEXT PRIMARY KEY,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (
    did   TEXT NOT NULL,
    cid   BLOB NOT NULL,
    seq   INTEGER NOT NULL,
    fork  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (did, cid)
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grants (
    peer  TEXT NOT NULL,
    did   TEXT NOT NULL,
    PRIMARY KEY (peer, did)
);
"""


@dataclass(frozen=True, slots=True)
class HostedPico:
    did: str
    keypair: Keypair
    head: CID


@dataclass(frozen=True, slots=True)
class ImportedHead:
    cid: CID
    seq: int
    fork: bool  # conflicts with the history this node already held when it was imported


class Home:
    """Everything a node keeps on disk.  One instance per process; not thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.engine_key = self._load_or_create_key(path / "engine.key")
        try:
            self.blocks = SqliteBlockStore(path / "blocks.sqlite")
        except StoreError as e:
            raise HomeError(str(e)) from e
        # head pointers noted after group commits, not yet in the picos table
        self._dirty: dict[str, CID] = {}
        file = path / "node.sqlite"
        try:
            self._db = self._open_db(file)
        except BaseException as e:
            self.blocks.close()
            if isinstance(e, sqlite3.Error):
                raise HomeError(f"{file}: cannot open it: {e}") from e
            raise
        self._recover_heads()

    @staticmethod
    def _open_db(file: Path) -> sqlite3.Connection:
        db = sqlite3.connect(file, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # the first read of the file's header
            db.execute("PRAGMA synchronous=NORMAL")
            (form,) = db.execute("PRAGMA user_version").fetchone()
            if form > HOME_FORMAT:
                raise HomeError(
                    f"{file}: format {form}, written by a newer p2pico; this one reads formats"
                    f" up to {HOME_FORMAT}"
                )
            db.executescript(_SCHEMA)
            if form != HOME_FORMAT:
                db.execute(f"PRAGMA user_version={HOME_FORMAT}")
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _load_or_create_key(file: Path) -> Keypair:
        if file.exists():
            try:
                seed = file.read_bytes()
            except OSError as e:
                raise HomeError(f"{file}: cannot read the engine key: {e.strerror or e}") from e
            if len(seed) != 32:
                raise HomeError(f"{file}: expected a 32-byte Ed25519 seed, found {len(seed)} bytes")
            return Keypair.from_seed(seed)
        key = Keypair.generate()
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.seed)
        return key

    def close(self) -> None:
        self.flush_heads()
        self._db.close()
        self.blocks.close()

    # -- hosted picos ----------------------------------------------------------

    def hosted(self) -> list[HostedPico]:
        """The picos hosted here, with their current head (noted ones included)."""
        rows = self._db.execute("SELECT did, seed, head FROM picos ORDER BY did").fetchall()
        dirty = self._dirty
        return [
            HostedPico(did, Keypair.from_seed(seed), dirty.get(did) or CID.parse(head))
            for did, seed, head in rows
        ]

    def save_pico(self, did: str, keypair: Keypair, head: CID) -> None:
        self._dirty.pop(did, None)
        self._db.execute(
            "INSERT INTO picos (did, seed, head) VALUES (?, ?, ?) "
            "ON CONFLICT(did) DO UPDATE SET head = excluded.head, seed = excluded.seed",
            (did, keypair.seed, head.buffer),
        )

    def set_head(self, did: str, head: CID) -> None:
        self._dirty.pop(did, None)
        self._db.execute("UPDATE picos SET head = ? WHERE did = ?", (head.buffer, did))

    def note_heads(self, heads: Iterable[tuple[str, CID]]) -> None:
        """Several picos' new head pointers (after a group commit), written by the next
        ``flush_heads``; their head blocks are committed already (see the module's doc)."""
        self._dirty.update(heads)

    @property
    def heads_pending(self) -> int:
        """How many noted head pointers wait for ``flush_heads``."""
        return len(self._dirty)

    def flush_heads(self, *, foreign: bool | None = None) -> None:
        """Write the noted head pointers, and the block id they cover, in one transaction
        (with `foreign`, also opening or closing a ``foreign_blocks`` section)."""
        rows = [(head.buffer, did) for did, head in self._dirty.items()]
        upto = self.blocks.tail_id()
        self._db.execute("BEGIN")
        try:
            self._db.executemany("UPDATE picos SET head = ? WHERE did = ?", rows)
            self._set_heads_upto(upto)
            if foreign:
                self._db.execute("INSERT OR REPLACE INTO settings VALUES ('foreign_open', '1')")
            elif foreign is not None:
                self._db.execute("DELETE FROM settings WHERE key = 'foreign_open'")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._dirty.clear()

    @contextmanager
    def foreign_blocks(self) -> Iterator[None]:
        """A section whose stored blocks came from elsewhere (a CAR import), never from a
        commit here, so that no recovery takes a head among them for a hosted pico's (one
        signed with its key by a former host may extend the pointer). The pointers are
        flushed on the way in and out, so a recovery scans none of these blocks; a process
        that stopped inside leaves the section marked, and the blocks after the pointers'
        mark are then known to be foreign. The section must not yield to the engine (no
        commit can land inside it): p2pico.history's import is synchronous."""
        self.flush_heads(foreign=True)
        try:
            yield
        finally:
            self.flush_heads(foreign=False)

    def _set_heads_upto(self, upto: int) -> None:
        self._db.execute(
            "INSERT INTO settings (key, value) VALUES ('heads_upto', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(upto),),
        )

    def _recover_heads(self) -> None:
        """Move each hosted pico's pointer to the newest head among the blocks appended
        since the last ``flush_heads`` that extends it (a crash lost the pointer, never the
        commit).  A head that is not validly signed, or does not lead back to the
        pointer through its prev links, is left alone."""
        row = self._db.execute("SELECT value FROM settings WHERE key = 'heads_upto'").fetchone()
        tail = self.blocks.tail_id()
        if row is None:  # a new home, or one whose pointers were always written at once
            self._set_heads_upto(tail)
            return
        upto = int(row[0])
        if self._db.execute("SELECT 1 FROM settings WHERE key = 'foreign_open'").fetchone():
            # stopped inside a foreign_blocks section: what follows the mark is an import's
            log.info("home: blocks %d-%d are an unfinished import's; no head taken", upto, tail)
            self._db.execute("DELETE FROM settings WHERE key = 'foreign_open'")
            self._set_heads_upto(tail)
            return
        if upto >= tail:
            return
        imported = {bytes(cid) for (cid,) in self._db.execute("SELECT cid FROM heads")}
        pointers = {
            did: CID.parse(head) for did, head in self._db.execute("SELECT did, head FROM picos")
        }
        found: dict[str, list[tuple[int, CID]]] = {}
        for _, cid, data in self.blocks.blocks_after(upto):
            if not looks_like_head(data):
                continue
            try:
                head = verify_head(Block.decode(cid, data))
            except (InvalidHead, ValueError):
                continue
            if head.pico in pointers and head.cid.buffer not in imported:
                found.setdefault(head.pico, []).append((head.seq, head.cid))
        for did, heads in found.items():
            current = pointers[did]
            # the newest that extends the pointer (a head of another branch, a fork kept
            # by a host that stood down, may be newer and is passed over)
            for seq, cid in sorted(heads, key=lambda h: -h[0]):
                if cid == current:
                    break
                if self._extends(cid, current):
                    self._db.execute("UPDATE picos SET head = ? WHERE did = ?", (cid.buffer, did))
                    log.info("home: head of %s recovered from its blocks: seq %d %s", did, seq, cid)
                    break
        self._set_heads_upto(tail)

    def _extends(self, new: CID, old: CID) -> bool:
        """Whether the chain back from head `new` passes through head `old`."""
        try:
            block = self.blocks.get_block(old)
            if block is None:
                return False
            old_seq = head_seq_prev(block)[0]
            cid = new
            while (block := self.blocks.get_block(cid)) is not None:
                seq, prev = head_seq_prev(block)
                if seq <= old_seq:
                    return cid == old
                if prev is None:
                    return False
                cid = prev
            return False
        except (InvalidHead, ValueError):
            return False

    def forget_pico(self, did: str) -> None:
        """The pico moved away: drop its key and head pointer (its blocks stay until GC)."""
        self._dirty.pop(did, None)
        self._db.execute("DELETE FROM picos WHERE did = ?", (did,))

    # -- location records ------------------------------------------------------

    def records(self) -> list[bytes]:
        return [r for (r,) in self._db.execute("SELECT record FROM records")]

    def save_record(self, did: str, record: bytes) -> None:
        self._db.execute(
            "INSERT INTO records (did, record) VALUES (?, ?) "
            "ON CONFLICT(did) DO UPDATE SET record = excluded.record",
            (did, record),
        )

    # -- imported heads (p2pico.history) ---------------------------------------

    def imported_heads(self, did: str) -> list[ImportedHead]:
        """Heads imported for `did`, in the order they were first imported."""
        rows = self._db.execute(
            "SELECT cid, seq, fork FROM heads WHERE did = ? ORDER BY rowid", (did,)
        ).fetchall()
        return [ImportedHead(CID.parse(cid), seq, bool(fork)) for cid, seq, fork in rows]

    def save_imported_head(self, did: str, cid: CID, seq: int, *, fork: bool) -> None:
        """Remember an imported head (once; imported again, it is flagged a fork if that
        import found it one: the current history may have moved on since)."""
        self._db.execute(
            "INSERT INTO heads (did, cid, seq, fork) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (did, cid) DO UPDATE SET fork = max(fork, excluded.fork)",
            (did, cid.buffer, seq, int(fork)),
        )

    def all_imported_heads(self) -> list[tuple[str, ImportedHead]]:
        """Every imported head of every DID (the roots GC keeps besides hosted picos)."""
        rows = self._db.execute("SELECT did, cid, seq, fork FROM heads ORDER BY rowid").fetchall()
        return [
            (did, ImportedHead(CID.parse(cid), seq, bool(fork))) for did, cid, seq, fork in rows
        ]

    # -- Bitswap grants (p2pico.bitswap) -----------------------------------------

    def grants(self) -> list[tuple[str, str]]:
        """Every (peer id, DID) the operator shared, in the order they were first shared."""
        rows = self._db.execute("SELECT peer, did FROM grants ORDER BY rowid").fetchall()
        return [(str(peer), str(did)) for peer, did in rows]

    def save_grant(self, peer: str, did: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO grants (peer, did) VALUES (?, ?)", (peer, did))

    def delete_grants(self, peer: str) -> None:
        self._db.execute("DELETE FROM grants WHERE peer = ?", (peer,))

    # -- settings ---------------------------------------------------------------

    def root_did(self) -> str | None:
        """The DID of the node's root pico, made on its first start (p2pico.root)."""
        row = self._db.execute("SELECT value FROM settings WHERE key = 'root_did'").fetchone()
        return None if row is None else str(row[0])

    def set_root_did(self, did: str) -> None:
        self._db.execute(
            "INSERT INTO settings (key, value) VALUES ('root_did', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (did,),
        )

    # -- node.json -------------------------------------------------------------

    def write_node_json(self, info: dict[str, object]) -> None:
        tmp = self.path / "node.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(self.path / "node.json")

    def remove_node_json(self) -> None:
        (self.path / "node.json").unlink(missing_ok=True)
