"""Replicas and failover: a pico's host keeps k replica engines up to date; when the
host stops answering past a lease, the first replica takes the pico over.

Neighbours: p2pico.mesh (location records, stand-down), p2pico.engine (its commit and
replicate hooks), protocols.replica (the wire codec), p2pico.net.

Host side.  The operator names a pico's replicas (``p2pico replicas DID --add PEER``,
``POST /api/picos/:did/replicas``); the list is kept in ``<home>/replicas.sqlite``.
For each replica peer one task sends ``sync`` frames: the blocks every commit wrote
(``Engine.on_commit``), then the new head, and a heartbeat every lease/4.  The engine
acknowledges an event only once a replica holds its commit (``Engine.replicate``).
A new record for a replicated pico (a republish, a restart) is first offered to the
replicas (``record``): a replica that took the pico over refuses it and answers with
its own record, so the host stands down instead of publishing.

Replica side.  A replica stores the blocks (each checked against its CID), checks that
the new head is signed by the pico and chains down to the head it held, and keeps the
pico's key sealed to its own engine key.  A replica of rank r (its place in the host's
list) takes the pico over when it has heard nothing from the host for (r + 1) leases:
it opens the key, signs the location record seq + 1 naming itself, starts the pico
from the newest head it holds, and replicates to the remaining replicas.  From that
moment it refuses the old host's syncs and records ("taken", with its record); the old
host takes the record and stands down (p2pico.mesh).

Why no acknowledged event is lost, and why two engines never both publish a record of
the same seq: the replica is the serialisation point.  A commit is acknowledged only
after the replica stored it, and the replica's takeover (the last check of the lease
and the signature) runs without yielding to other tasks, so every sync answered before
it is in the head it starts from and every sync after it is refused.  The old host
never publishes a record the replica did not accept first, so the replica's seq + 1 is
the only record of that seq.  The lease only decides *when* the replica gives up on the
host; a host that was merely paused (SIGSTOP) or cut off loses nothing acknowledged:
its commits after the takeover are refused by the replica and so never acknowledged,
and are dropped when it stands down.  With k > 1 the ranks stagger the takeovers by a
lease, and a replica asks its peers for a newer record just before taking over; if two
replicas still raced, the equivocation is detected and resolved the same way on every
engine (protocols.location.pick_equivocation) and the loser stands down.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nacl.bindings
import nacl.public
import nacl.signing
import trio

from dag.block import Block
from dag.cid import CID
from dag.did import Keypair, public_key_from_peer_id
from dag.head import chain_gap, verify_chain_tail, verify_head
from dag.store import walk
from p2pico.engine import NotHosted, Pico, PicoError
from p2pico.net import NetError
from protocols import location
from protocols.location import InvalidRecord
from protocols.messages import MessageError, Reply
from protocols.replica import (
    REPLICA_PROTOCOL,
    SYNC_BUDGET,
    DropRequest,
    RecordRequest,
    SyncAnswer,
    SyncItem,
    SyncRequest,
    decode_answers,
    decode_request,
    encode_answers,
)

if TYPE_CHECKING:
    from p2pico.mesh import Mesh

log = logging.getLogger("p2pico.replicas")

DEFAULT_LEASE = 10.0
# An event waits this long for a replica to hold its commit, then fails ("unreplicated").
REPLICATE_PATIENCE = 10.0
# A replica that falls this many blocks behind gets a full sync instead.
PENDING_LIMIT = 50_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hosting (
    did   TEXT NOT NULL,
    peer  TEXT NOT NULL,
    rank  INTEGER NOT NULL,
    PRIMARY KEY (did, peer)
);
CREATE TABLE IF NOT EXISTS replica (
    did      TEXT PRIMARY KEY,
    host     TEXT NOT NULL,
    sealed   BLOB NOT NULL,
    head     BLOB,
    seq      INTEGER NOT NULL,
    replicas TEXT NOT NULL
);
"""


def _missing(cid: CID) -> Block:
    raise PicoError(f"block {cid} is missing")


class Unreplicated(PicoError):
    """The commit was made but no replica holds it yet: not acknowledged (retry it)."""

    code = "unreplicated"


def seal_seed(seed: bytes, peer_id: str) -> bytes:
    """The pico's seed sealed (X25519 sealed box) to the engine key behind ``peer_id``."""
    curve = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key_from_peer_id(peer_id))
    return bytes(nacl.public.SealedBox(nacl.public.PublicKey(curve)).encrypt(seed))


def open_seed(sealed: bytes, engine_key: Keypair) -> bytes:
    private = nacl.signing.SigningKey(engine_key.seed).to_curve25519_private_key()
    return bytes(nacl.public.SealedBox(private).decrypt(sealed))


@dataclass
class _Role:
    """This engine replicates ``did`` for ``host``."""

    did: str
    host: str
    sealed: bytes
    head: CID | None
    seq: int
    replicas: tuple[str, ...]
    deadline: float = 0.0


@dataclass
class _Push:
    """What one replica peer of ours still needs, per DID, and what it acknowledged."""

    pending: dict[str, dict[CID, None]] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    joined: set[str] = field(default_factory=set)  # it has the sealed key
    full: set[str] = field(default_factory=set)  # it needs every block again
    wake: trio.Event = field(default_factory=trio.Event)


class Replicas:
    def __init__(self, mesh: Mesh, *, lease: float = DEFAULT_LEASE) -> None:
        self.mesh = mesh
        self.engine = mesh.engine
        self.net = mesh.net
        self.lease = lease
        self._db = sqlite3.connect(mesh.home.path / "replicas.sqlite", isolation_level=None)
        self._db.executescript(_SCHEMA)
        # host side: did -> replica peers in takeover order
        self.hosting: dict[str, list[str]] = {}
        for did, peer in self._db.execute("SELECT did, peer FROM hosting ORDER BY did, rank"):
            self.hosting.setdefault(did, []).append(peer)
        self._pushes: dict[str, _Push] = {}
        self._lost: dict[str, str] = {}  # did -> why we may no longer acknowledge it
        # did -> the newest seq a replica acknowledged (Replicas.standing_down reads it)
        self._acked: dict[str, int] = {}
        # stand-downs that left heads here no replica acknowledged (kept as forks)
        self.forks_kept = 0
        self._changed = trio.Event()
        # replica side: did -> role
        self.roles: dict[str, _Role] = {}
        for did, host, sealed, head, seq, peers in self._db.execute(
            "SELECT did, host, sealed, head, seq, replicas FROM replica"
        ):
            self.roles[did] = _Role(
                did, host, sealed, CID.parse(head) if head else None, seq, tuple(json.loads(peers))
            )
        self._roles_changed = trio.Event()
        self.takeovers = 0
        self._nursery: trio.Nursery | None = None
        self.engine.on_commit = self._on_commit
        self.engine.replicate = self.replicate
        self.engine.gc_roots = lambda: [r.head for r in self.roles.values() if r.head]
        mesh.replicas = self

    # -- lifetime ----------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.net.set_handler(REPLICA_PROTOCOL, self._on_request)
            now = trio.current_time()
            for role in self.roles.values():  # a restarted replica gives the host a fresh lease
                role.deadline = now + self._patience(role)
            for peer, box in self._pushes.items():  # made before we served
                nursery.start_soon(self._run_push, peer, box)
            for peers in self.hosting.values():
                for peer in peers:
                    self._push_to(peer)
            nursery.start_soon(self._watch_leases)
            task_status.started()

    def stats(self) -> dict[str, object]:
        return {
            "hosting": {did: list(peers) for did, peers in sorted(self.hosting.items())},
            "replicating": sorted(self.roles),
            "takeovers": self.takeovers,
            "forks_kept": self.forks_kept,
            "lease": self.lease,
        }

    def is_replicated(self, did: str) -> bool:
        return bool(self.hosting.get(did))

    # -- host side: configuration --------------------------------------------------------

    async def add(self, did: str, peer: str) -> dict[str, object]:
        """Make ``peer`` a replica of ``did`` (hosted here); returns once it holds the head."""
        pico = self.engine.picos.get(did)
        if pico is None:
            raise NotHosted(f"{did} is not hosted here; name its replicas on its host")
        if peer == self.mesh.peer_id:
            raise PicoError("a host cannot be its own pico's replica")
        try:
            public_key_from_peer_id(peer)
        except ValueError as e:
            raise PicoError(f"not a peer id: {peer!r} ({e})") from None
        peers = self.hosting.setdefault(did, [])
        if peer not in peers:
            peers.append(peer)
            self._save_hosting(did)
        self._lost.pop(did, None)
        box = self._push_to(peer)
        box.full.add(did)
        box.wake.set()
        await self._wait_acked(did, pico.seq, peers=[peer], patience=60.0)
        return {"did": did, "replicas": list(peers), "seq": pico.seq}

    async def remove(self, did: str, peer: str) -> dict[str, object]:
        peers = self.hosting.get(did, [])
        if peer in peers:
            peers.remove(peer)
            self._save_hosting(did)
            box = self._pushes.get(peer)
            if box is not None:
                box.pending.pop(did, None)
                box.acked.pop(did, None)
                box.joined.discard(did)
            try:
                await self.net.request(
                    peer, REPLICA_PROTOCOL, DropRequest(did).encode(), timeout=10
                )
            except NetError as e:
                log.info("could not tell %s to drop its replica of %s: %s", peer, did, e)
        return {"did": did, "replicas": list(peers)}

    def replicas_of(self, did: str) -> list[str]:
        return list(self.hosting.get(did, []))

    def _save_hosting(self, did: str) -> None:
        self._db.execute("DELETE FROM hosting WHERE did = ?", (did,))
        peers = self.hosting.get(did) or []
        self._db.executemany(
            "INSERT INTO hosting (did, peer, rank) VALUES (?, ?, ?)",
            [(did, peer, rank) for rank, peer in enumerate(peers)],
        )
        if not peers:
            self.hosting.pop(did, None)

    def _forget_hosting(self, did: str, why: str) -> None:
        if did in self.hosting:
            log.info("%s: no longer replicating it from here (%s)", did, why)
            self.hosting.pop(did)
            self._save_hosting(did)
        for box in self._pushes.values():
            box.pending.pop(did, None)
            box.acked.pop(did, None)
            box.joined.discard(did)
            box.full.discard(did)

    # -- host side: pushing ---------------------------------------------------------------

    def _on_commit(self, pico: Pico, blocks: list[Block]) -> None:
        """Engine hook: a commit of ``pico`` wrote ``blocks`` (its head last)."""
        for peer in self.hosting.get(pico.did, ()):
            box = self._push_to(peer)
            if pico.did in box.full:
                continue
            pending = box.pending.setdefault(pico.did, {})
            pending.update((b.cid, None) for b in blocks)
            if len(pending) > PENDING_LIMIT:
                box.pending.pop(pico.did)
                box.full.add(pico.did)
            box.wake.set()

    async def replicate(self, pico: Pico) -> None:
        """Engine hook: return once a replica holds ``pico``'s head (at once if it has none)."""
        if not self.hosting.get(pico.did):
            return
        await self._wait_acked(pico.did, pico.seq, peers=None, patience=REPLICATE_PATIENCE)

    async def _wait_acked(
        self, did: str, seq: int, *, peers: list[str] | None, patience: float
    ) -> None:
        for peer in peers or self.hosting.get(did, []):
            self._push_to(peer).wake.set()
        with trio.move_on_after(patience):
            while True:
                if did in self._lost:
                    raise NotHosted(self._lost[did])
                wanted = peers if peers is not None else self.hosting.get(did, [])
                if any(self._push_to(p).acked.get(did, -1) >= seq for p in wanted):
                    return
                if not wanted:
                    return  # no replicas left (removed meanwhile)
                await self._changed.wait()
        raise Unreplicated(
            f"commit seq {seq} of {did} is not on any replica after {patience:g} s "
            f"({', '.join(peers or self.hosting.get(did, [])) or 'none'}); not acknowledged"
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _push_to(self, peer: str) -> _Push:
        box = self._pushes.get(peer)
        if box is None:
            box = self._pushes[peer] = _Push()
            if self._nursery is not None:  # else serve() starts it
                self._nursery.start_soon(self._run_push, peer, box)
        return box

    def _items_for(self, peer: str, box: _Push) -> tuple[list[SyncItem], dict[str, list[CID]]]:
        """One sync frame's worth for ``peer``; also the blocks it took from ``pending``."""
        store = self.engine.store
        items: list[SyncItem] = []
        taken: dict[str, list[CID]] = {}
        budget = SYNC_BUDGET
        for did, peers in list(self.hosting.items()):
            if peer not in peers:
                continue
            pico = self.engine.picos.get(did)
            if pico is None:
                continue  # left (moved, taken over, deleted): see _run_push
            if did in box.full:
                box.full.discard(did)
                gap = chain_gap(store.get_block, pico.head)
                every = walk(store, pico.head, absent=[gap[1]] if gap else [])
                box.pending[did] = {block.cid: None for block in every}
            pending = box.pending.get(did, {})
            blocks: list[tuple[CID, bytes]] = []
            for cid in list(pending):
                if budget <= 0:
                    break
                data = store.get(cid)
                del pending[cid]
                if data is None:
                    continue  # collected since (a later commit no longer needs it)
                blocks.append((cid, data))
                budget -= len(data)
            taken[did] = [cid for cid, _ in blocks]
            sealed = None
            if did not in box.joined:
                sealed = seal_seed(pico.keypair.seed, peer)
            items.append(
                SyncItem(
                    did,
                    tuple(peers),
                    None if pending else pico.head,
                    tuple(blocks),
                    sealed,
                )
            )
        return items, taken

    async def _run_push(self, peer: str, box: _Push) -> None:
        """Keep ``peer`` up to date with every pico it replicates for us; heartbeat it."""
        while True:
            with trio.move_on_after(self.lease / 4):
                await box.wake.wait()
            box.wake = trio.Event()
            self._drop_departed(peer)
            items, taken = self._items_for(peer, box)
            if not items:
                if not any(peer in peers for peers in self.hosting.values()):
                    del self._pushes[peer]
                    return
                continue
            request = SyncRequest(int(self.lease * 1000), tuple(items))
            try:
                data = await self.net.request(
                    peer, REPLICA_PROTOCOL, request.encode(), timeout=max(self.lease, 5.0)
                )
                answers = decode_answers(data)
            except (NetError, MessageError) as e:
                log.info("sync with replica %s failed: %s", peer, e)
                for did, cids in taken.items():  # again, before anything newer
                    pending = box.pending.setdefault(did, {})
                    box.pending[did] = {**dict.fromkeys(cids), **pending}
                continue
            for answer in answers:
                self._take_answer(peer, box, answer)
            if any(box.pending.get(item.did) for item in items):
                box.wake.set()  # more blocks to send: go on at once
            self._notify()

    def _take_answer(self, peer: str, box: _Push, answer: SyncAnswer) -> None:
        did = answer.did
        if answer.error is None:
            box.joined.add(did)
            box.acked[did] = answer.seq
            self._acked[did] = max(self._acked.get(did, -1), answer.seq)
            return
        if answer.code == "taken" and answer.record is not None:
            log.error("%s: replica %s has taken it over: %s", did, peer, answer.error)
            taken = self.mesh.consider(answer.record, source=f"replica {peer}")
            if taken is not None and taken.host != self.mesh.peer_id:
                self._lost[did] = f"{did} was taken over by {taken.host} (record seq {taken.seq})"
                self._forget_hosting(did, f"taken over by {taken.host}")
            return
        if answer.code == "unknown":
            box.joined.discard(did)
        log.warning("replica %s of %s: %s; sending it every block again", peer, did, answer.error)
        box.pending.pop(did, None)
        box.full.add(did)
        box.wake.set()

    def _drop_departed(self, peer: str) -> None:
        """Picos we no longer host (moved, stood down): forget their replicas here."""
        for did in list(self.hosting):
            if did in self.engine.picos:
                continue
            held = self.mesh.records.get(did)
            if held is not None and held.host != self.mesh.peer_id:
                peers = self.hosting.get(did, [])
                self._forget_hosting(did, f"hosted by {held.host} now")
                if self._nursery is not None:
                    for p in peers:
                        self._nursery.start_soon(self._send_drop, p, did)

    def standing_down(self, pico: Pico) -> None:
        """We hand ``pico`` to the engine that took it over (p2pico.mesh, at an event
        boundary).  Heads committed here after the last one a replica acknowledged were
        never acknowledged to anyone and are not in the new host's history: the newest is
        kept as a fork (its blocks stay; ``p2pico log`` reports the fork once this node
        holds the pico's history, e.g. by import), never adopted as the pico's head.
        """
        acked = self._acked.pop(pico.did, None)
        if acked is None or pico.seq <= acked:
            return
        self.engine.home.save_imported_head(pico.did, pico.head, pico.seq, fork=True)
        self.forks_kept += 1
        log.error(
            "%s: heads seq %d to %d were written here after seq %d, the last a replica "
            "acknowledged; standing down, head %s is kept as a fork, never adopted",
            pico.did,
            acked + 1,
            pico.seq,
            acked,
            pico.head,
        )

    async def _send_drop(self, peer: str, did: str) -> None:
        try:
            await self.net.request(peer, REPLICA_PROTOCOL, DropRequest(did).encode(), timeout=10)
        except NetError as e:
            log.info("could not tell %s to drop its replica of %s: %s", peer, did, e)

    # -- host side: records ---------------------------------------------------------------

    async def republish(self, did: str) -> None:
        """A new record for a replicated pico: published only once its replicas accept it."""
        pico = self.engine.picos.get(did)
        held = self.mesh.records.get(did)
        if pico is None or held is None or held.host != self.mesh.peer_id:
            return
        raw = self.mesh._sign_record(pico.keypair, seq=held.seq + 1, prev=held)
        accepted = 0
        for peer in list(self.hosting.get(did, [])):
            try:
                data = await self.net.request(
                    peer, REPLICA_PROTOCOL, RecordRequest(did, raw).encode(), timeout=10
                )
                reply = Reply.decode(data)
            except (NetError, MessageError) as e:
                log.info("replica %s did not answer for %s's record: %s", peer, did, e)
                continue
            if reply.error is None:
                accepted += 1
                continue
            if reply.record is not None:
                taken = self.mesh.consider(reply.record, source=f"replica {peer}")
                if taken is not None and taken.host != self.mesh.peer_id:
                    self._lost[did] = f"{did} was taken over by {taken.host}"
                    self._forget_hosting(did, f"taken over by {taken.host}")
                    return
            log.warning(
                "replica %s refused record seq %d of %s: %s", peer, held.seq + 1, did, reply.error
            )
            return
        if accepted and self.mesh.records.get(did) is held:
            record = self.mesh.consider(raw, source="self")
            if record is not None:
                await self.mesh._publish(record)
        elif not accepted:
            log.warning("no replica of %s reachable; its record stays at seq %d", did, held.seq)

    # -- replica side --------------------------------------------------------------------

    def _patience(self, role: _Role) -> float:
        """How long this replica waits without news from the host before taking over."""
        me = self.mesh.peer_id
        rank = role.replicas.index(me) if me in role.replicas else len(role.replicas)
        return self.lease * (rank + 1)

    async def _on_request(self, peer: str, data: bytes) -> bytes:
        try:
            request = decode_request(data)
        except MessageError as e:
            return Reply(error=f"bad request: {e}", code="bad-request").encode()
        if isinstance(request, SyncRequest):
            lease = request.lease_ms / 1000 if request.lease_ms > 0 else self.lease
            answers = [self._sync_one(peer, item, lease) for item in request.picos]
            self._roles_changed.set()
            return encode_answers(answers)
        if isinstance(request, RecordRequest):
            return self._on_record(peer, request).encode()
        role = self.roles.get(request.did)
        if role is not None and role.host == peer:
            self._drop_role(request.did, f"{peer} asked")
        return Reply(ok=True).encode()

    def _taken(self, did: str) -> SyncAnswer | None:
        if not self.engine.hosts(did):
            return None
        held = self.mesh.records.get(did)
        return SyncAnswer(
            did,
            error=f"{self.mesh.peer_id} hosts {did} now",
            code="taken",
            record=held.raw if held is not None else None,
        )

    def _sync_one(self, peer: str, item: SyncItem, lease: float) -> SyncAnswer:
        did = item.did
        if (taken := self._taken(did)) is not None:
            return taken
        role = self.roles.get(did)
        if role is None:
            if item.sealed is None:
                return SyncAnswer(did, error="not a replica of this pico here", code="unknown")
            try:
                seed = open_seed(item.sealed, self.mesh.engine_key)
                if Keypair.from_seed(seed).did != did:
                    raise ValueError("the key does not belong to the DID")
            except Exception as e:
                return SyncAnswer(did, error=f"cannot open the sealed key: {e}", code="refused")
            role = self.roles[did] = _Role(did, peer, item.sealed, None, -1, item.replicas)
            log.info("%s: replicating it for %s", did, peer)
        elif role.host != peer:
            held = self.mesh.records.get(did)
            if held is None or held.host != peer:
                return SyncAnswer(did, error=f"{peer} is not {did}'s host", code="refused")
            role.host = peer  # it moved there
        try:
            blocks = [Block.decode(cid, data) for cid, data in item.blocks]
        except Exception as e:
            return SyncAnswer(did, error=f"a block does not match its CID: {e}", code="refused")
        store = self.engine.store
        store.put_many(blocks)
        if item.head is not None and item.head != role.head:
            problem = self._check_head(role, item.head)
            if problem is not None:
                return SyncAnswer(did, error=problem, code="missing")
        role.replicas = item.replicas
        role.deadline = trio.current_time() + lease * (
            (item.replicas.index(self.mesh.peer_id) + 1)
            if self.mesh.peer_id in item.replicas
            else len(item.replicas) + 1
        )
        self._save_role(role)
        return SyncAnswer(did, seq=role.seq, head=role.head)

    def _check_head(self, role: _Role, head_cid: CID) -> str | None:
        """Take ``head_cid`` as the newest head if it chains down to the one held."""
        store = self.engine.store
        cid: CID | None = head_cid
        newest = None
        while cid is not None and cid != role.head:
            block = store.get_block(cid)
            if block is None:
                if role.head is None and newest is not None:
                    break  # a history truncated by gc: verified below from its oldest head
                return f"head block {cid} is missing"
            try:
                head = verify_head(block)
            except Exception as e:
                return f"head {cid} does not verify: {e}"
            if head.pico != role.did:
                return f"head {cid} is signed for {head.pico}"
            if not store.has(head.state):
                return f"state {head.state} of head {cid} is missing"
            if newest is None:
                newest = head
            if head.seq <= role.seq:
                return f"head {head_cid} does not follow {role.head} (a fork at seq {head.seq})"
            cid = head.prev
        if newest is None:
            return None
        if role.head is None:
            try:
                verify_chain_tail(store.get_block, head_cid)
            except Exception as e:
                return f"the history of {head_cid} does not verify: {e}"
        role.head, role.seq = head_cid, newest.seq
        return None

    def _save_role(self, role: _Role) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO replica (did, host, sealed, head, seq, replicas)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                role.did,
                role.host,
                role.sealed,
                role.head.buffer if role.head else None,
                role.seq,
                json.dumps(list(role.replicas)),
            ),
        )

    def _drop_role(self, did: str, why: str) -> None:
        if self.roles.pop(did, None) is not None:
            log.info("%s: no longer a replica of it (%s)", did, why)
            self._db.execute("DELETE FROM replica WHERE did = ?", (did,))

    def _on_record(self, peer: str, request: RecordRequest) -> Reply:
        did = request.did
        if (taken := self._taken(did)) is not None:
            return Reply(error=taken.error, code="taken", record=taken.record)
        role = self.roles.get(did)
        if role is None or role.host != peer:
            return Reply(error=f"not a replica of {did} for {peer}", code="unknown")
        try:
            new = location.parse_record(request.record)
        except InvalidRecord as e:
            return Reply(error=f"bad record: {e}", code="refused")
        held = self.mesh.records.get(did)
        if new.did != did or new.host != peer:
            return Reply(error="the record does not name its sender as the host", code="refused")
        if held is not None and (new.seq != held.seq + 1 or new.prev != held.hash):
            return Reply(
                error=f"record seq {new.seq} does not follow seq {held.seq}",
                code="refused",
                record=held.raw,
            )
        self.mesh.consider(request.record, source=f"host {peer} (via replica)")
        role.deadline = trio.current_time() + self._patience(role)
        return Reply(ok=True)

    async def _watch_leases(self) -> None:
        while True:
            soonest = min((r.deadline for r in self.roles.values()), default=float("inf"))
            self._roles_changed = trio.Event()
            with trio.move_on_at(soonest):
                await self._roles_changed.wait()
            now = trio.current_time()
            for role in list(self.roles.values()):
                if role.deadline <= now:
                    await self._take_over(role)

    async def _take_over(self, role: _Role) -> None:
        did = role.did
        held = self.mesh.records.get(did)
        if held is not None and held.host != role.host:
            if held.host == self.mesh.peer_id and self.engine.hosts(did):
                self._drop_role(did, "hosted here")
            elif held.host != self.mesh.peer_id:
                self._drop_role(did, f"it is hosted by {held.host} now")
            return
        if role.head is None or held is None:
            log.warning("%s: host %s is silent but this replica holds no head yet", did, role.host)
            role.deadline = trio.current_time() + self._patience(role)
            return
        log.warning(
            "%s: host %s silent for %g s; checking peers before taking over",
            did,
            role.host,
            self._patience(role),
        )
        await self.mesh.resolve(did, refresh=True)  # another replica may have been faster
        # From here on, no awaits until the pico is ours: a sync from the host either came
        # before (and renewed the lease) or comes after (and is refused).
        held = self.mesh.records.get(did)
        if role.deadline > trio.current_time() or did not in self.roles:
            return  # the host spoke meanwhile
        if held is None or held.host != role.host:
            self._drop_role(did, f"hosted by {held.host if held else '?'} now")
            return
        keypair = Keypair.from_seed(open_seed(role.sealed, self.mesh.engine_key))
        try:  # everything the head reaches must be here before we sign for it
            head = verify_head(self.engine.store.get_block(role.head) or _missing(role.head))
            for _ in walk(self.engine.store, head.state):
                pass
        except Exception as e:
            log.error("%s: cannot take over from head %s: %s", did, role.head, e)
            role.deadline = trio.current_time() + self._patience(role)
            return
        raw = self.mesh._sign_record(keypair, seq=held.seq + 1, prev=held)
        record = self.mesh.consider(raw, source="takeover")
        if record is None or record.raw != raw:
            log.error("%s: a competing record won; not taking over", did)
            return
        self._drop_role(did, "taken over")
        self.engine.adopt(keypair, role.head)
        self.engine.drained(did)  # nothing is forwarded to a takeover
        self.takeovers += 1
        log.warning(
            "%s: took it over from %s at head seq %d (record seq %d)",
            did,
            role.host,
            role.seq,
            record.seq,
        )
        rest = [p for p in role.replicas if p != self.mesh.peer_id and p != role.host]
        if rest:
            self.hosting[did] = rest
            self._save_hosting(did)
            for peer in rest:
                box = self._push_to(peer)
                box.full.add(did)
                box.wake.set()
        assert self._nursery is not None
        self._nursery.start_soon(self.mesh._publish, record)
