"""The mesh: DID routing, location records and moves, driven over p2pico.net.

Neighbours: p2pico.engine (runs hosted picos), protocols.messages and
protocols.location (the pure codecs this module drives), p2pico.net (the only
libp2p user), p2pico.http (calls the request methods here).

Routing.  Every engine keeps the newest valid location record per DID (signed
by the pico, countersigned by its host).  Records arrive by gossip, by a full
sync with every peer we connect to, by asking connected peers when a DID is
unknown, and inside replies (a request that reaches an old host is forwarded
and the reply carries the newer record).  ECIs are resolved to DIDs the same
way, by asking peers; the DID is then routed as above.

Moving (source S, target T; did-routing.md §2.7):
 0. Pre-copy, while the pico still serves: S → T ``prefetch`` {did, head}; T fetches
    and verifies every block of that head (as in 3), and remembers the head and the
    blocks.  Steps 2-3 then move only what changed since (S's manifest stops at the
    copied blocks when T's request names the copied head; T's checks stop there too).
 1. S queues a move on the pico, so it starts at an event boundary; later
    requests wait in the pico's inbox.
 2. S → T ``propose`` {did, head, seed, S's current record}.
 3. T fetches every block reachable from the head from S (S serves blocks of
    that DID only to T, only while the move is open), verifies each against
    its CID and the whole head chain against the DID.
 4. T checks that the newest record it knows is the one S sent (check-and-set),
    signs record seq+1 naming itself, adopts the pico with a "forwarded" lane
    first, publishes the record and replies with it.
 5. S stores the record, drops the pico and its key, forwards its queue to T in
    order (``forwarded`` flag), then sends ``drained``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import random
import secrets
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

import krl
from dag.block import Block
from dag.cid import CID
from dag.did import Keypair
from dag.head import Head, chain_gap, verify_chain_tail
from dag.store import walk
from p2pico.engine import Engine, NotHosted, Pico, PicoError, Work
from p2pico.home import Home
from p2pico.net import Net, NetError, ProtocolNotSupported
from protocols import location, messages
from protocols.location import InvalidRecord, LocationRecord
from protocols.messages import (
    BLOCKS_PROTOCOL,
    BLOCKS_REPLY_BUDGET,
    LOC_PROTOCOL,
    LOC_TOPIC,
    MAX_HOPS,
    MAX_MANIFEST,
    MAX_WANT,
    MOVE_PROTOCOL,
    MSG_PROTOCOL,
    BadSignature,
    EventRequest,
    ManifestRequest,
    MessageError,
    MoveCommand,
    MoveDrained,
    MovePrefetch,
    MovePropose,
    PicoRequest,
    QueryRequest,
    Reply,
    Target,
    WantRequest,
    WhoisEci,
)

if TYPE_CHECKING:
    from p2pico.replicas import Replicas

log = logging.getLogger("p2pico.mesh")

# A host re-signs its picos' records this often; records are valid for 24 h.
REPUBLISH_INTERVAL = 12 * 3600
# Every this often, a full record sync with one connected peer repairs anything a
# push could not deliver (a peer that was unreachable for PUSH_ATTEMPTS tries).
ANTI_ENTROPY_INTERVAL = 60.0
# How long catch-up waits for a new peer to join the record topic before syncing.
TOPIC_JOIN_TIMEOUT = 10.0
# Record push (Mesh._push_record): a batch that fails is sent again this many times in
# all, then the peer is left to catch-up on reconnect and to anti-entropy.
PUSH_ATTEMPTS = 3
PUSH_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0
MOVE_TIMEOUT = 120.0
# A proposal that fails to reach the target (and that it did not take) is sent this often.
MOVE_ATTEMPTS = 3
# Pre-copy (Mesh._precopy): the target copies a pico's blocks before the move pauses it;
# P2PICO_PRECOPY=0 turns it off (scripts/bench/mesh.py compares the two).  A target
# forgets a copy whose move has not come after PRECOPY_KEEP seconds.
PRECOPY = os.environ.get("P2PICO_PRECOPY", "1") != "0"
PRECOPY_KEEP = 60.0
# Retries (see Mesh._deliver): a request from HTTP or KRL is sent again for up to this
# long, at most MAX_ATTEMPTS times, with backoff from BACKOFF_FIRST doubling to
# BACKOFF_MAX; a relay passing on a peer's request tries HOP_ATTEMPTS times (the sender
# retries the whole way); an event:send waits in its outbox as long as it takes.
DELIVERY_PATIENCE = 60.0
MAX_ATTEMPTS = 12
HOP_ATTEMPTS = 2
BACKOFF_FIRST = 0.02
BACKOFF_MAX = 2.0
# Reply codes after which a request is sent again (same message id).
RETRYABLE = frozenset({"not-hosted", "busy", "unreachable", "unreplicated"})
# event:sends waiting for one (sender, target) pair beyond this are dropped and counted.
OUTBOX_LIMIT = 10_000


def clean_event_names(domain: str, type: str) -> tuple[str, str]:
    """An event's domain and type trimmed; a blank one is refused (pico-engine's cleanEvent)."""
    domain, type = domain.strip(), type.strip()
    if not domain:
        raise PicoError("missing event.domain")
    if not type:
        raise PicoError("missing event.name")
    return domain, type


class Unreachable(PicoError):
    """The pico's host could not be reached (or would not take it) within the retries."""

    code = "unreachable"


@dataclasses.dataclass(frozen=True, slots=True)
class _Outgoing:
    """One event:send waiting in an outbox; ``mid`` stays the same across its retries."""

    domain: str
    type: str
    attrs: dict[str, object]
    mid: str
    signer: Keypair | None


class Mesh:
    def __init__(self, engine: Engine, net: Net, home: Home) -> None:
        self.engine = engine
        self.net = net
        self.home = home
        self.engine_key: Keypair = home.engine_key
        self.records: dict[str, LocationRecord] = {}
        self._held_raw: dict[bytes, LocationRecord] = {}  # record bytes -> the one held
        self.eci_dids: dict[str, str] = {}
        # did -> peer allowed to fetch that pico's blocks (the target of an open move)
        self._move_targets: dict[str, str] = {}
        # did -> (the head being moved, the blocks it reaches once the target asked for the
        # manifest): the target of a move gets those blocks and no others
        self._move_blocks: dict[str, tuple[CID, frozenset[CID]]] = {}
        # did -> [blocks served to the target, blocks in the manifest] of an open move
        # (GET /api/moves; `p2pico move` draws it as a progress bar)
        self.move_progress: dict[str, list[int]] = {}
        # picos being moved here: their blocks are not reachable from any root yet
        self._incoming: set[str] = set()
        # Pre-copy (Mesh._precopy).  Source: did -> [target, head, the blocks it may fetch]
        # while the target copies them, then did -> (target, head, the blocks it copied)
        # until the move ends.  Target: did -> (head, its seq, every block reachable from it,
        # all here and verified) until the move ends or PRECOPY_KEEP passes.
        self._precopy_grants: dict[str, list[Any]] = {}
        self._precopied: dict[str, tuple[str, CID, frozenset[CID]]] = {}
        self._prefetched: dict[str, tuple[CID, int, frozenset[CID]]] = {}
        self._prefetching: set[str] = set()  # target: copies under way (gc waits for them)
        self._nursery: trio.Nursery | None = None
        self.equivocations: list[tuple[LocationRecord, LocationRecord]] = []
        # What was refused, by kind (GET /api/stats): record-forged, record-expired,
        # record-malformed, record-stale (older than the one held: replayed or late),
        # record-equivocation, message-bad-signature, outbox-full.
        self.rejections: Counter[str] = Counter()
        self.retries = 0  # requests sent again (Mesh._deliver)
        # message ids: this engine's peer id, a per-start nonce, a counter
        self._boot = secrets.token_hex(4)
        self._mid_counter = itertools.count()
        # (sender DID, target) -> event:sends not yet delivered, in order
        self._outboxes: dict[tuple[str, str], deque[_Outgoing]] = {}
        self._records_changed = trio.Event()
        # did -> (record seq, cancel scope) of each request on its way to that record's
        # host; taking a newer record cancels them (Mesh._request_host)
        self._in_flight: dict[str, list[tuple[int, trio.CancelScope]]] = {}
        # peer -> records taken here and not yet acknowledged by that peer (Mesh._push_record)
        self._pushes: dict[str, _RecordPush] = {}
        self._not_engines: set[str] = set()  # peers without /p2pico/loc (a Helia node, say)
        # Called with every record we take and the one it replaced (p2pico.explorer).
        self.record_listeners: list[Callable[[LocationRecord, LocationRecord | None], None]] = []
        # event:send and ctx:query from KRL reach any pico of the mesh
        engine.send_hook = self._send_from_pico
        engine.send_nowait = self._queue_send
        engine.query_hook = self._query_from_pico
        engine.on_new_pico = self._publish_new_pico  # ctx:newPico children
        # p2pico.replicas sets itself here: a replicated pico's new records go through it
        self.replicas: Replicas | None = None
        # `p2pico node drain` (p2pico.drain): take no new picos, by move or creation
        self.draining = False
        engine.move_hook = self.move  # ctx:move (wrangler:move_request)

    @property
    def peer_id(self) -> str:
        return self.net.peer_id

    def stats(self) -> dict[str, object]:
        """Counters for operators: what was rejected, retried, answered from dedup, queued."""
        return {
            "rejected": dict(sorted(self.rejections.items())),
            "retries": self.retries,
            "duplicates": self.engine.duplicates,
            "outbox": sum(len(box) for box in self._outboxes.values()),
            **({"replicas": self.replicas.stats()} if self.replicas is not None else {}),
        }

    def _reject(self, kind: str, what: str) -> None:
        self.rejections[kind] += 1
        level = logging.INFO if kind in ("record-stale", "record-expired") else logging.WARNING
        log.log(level, "rejected (%s): %s", kind, what)

    def moves_open(self) -> bool:
        """Is a move into or out of this engine under way (its blocks may be unrooted)?"""
        return bool(self._move_targets or self._incoming or self._prefetching or self._prefetched)

    # -- lifetime ------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for raw in self.home.records():
                self.consider(raw, source="disk", persist=False)
            self.net.set_handler(MSG_PROTOCOL, self._on_msg)
            self.net.set_handler(LOC_PROTOCOL, self._on_loc)
            self.net.set_handler(MOVE_PROTOCOL, self._on_move)
            self.net.set_handler(BLOCKS_PROTOCOL, self._on_blocks)
            self.net.subscribe(LOC_TOPIC, self._on_gossip)
            self.net.on_peer_connected(self._catch_up)
            for did in list(self.engine.picos):
                await self._republish(did)
            for peer in self.net.connected_peers():
                nursery.start_soon(self._catch_up, peer)
            nursery.start_soon(self._anti_entropy)
            task_status.started()
            while True:
                await trio.sleep(REPUBLISH_INTERVAL)
                for did in list(self.engine.picos):
                    await self._republish(did)

    async def _anti_entropy(self) -> None:
        while True:
            await trio.sleep(ANTI_ENTROPY_INTERVAL)
            peers = self.net.connected_peers()
            if peers:
                await self._sync_with(random.choice(peers))

    # -- location records ------------------------------------------------------------

    def consider(
        self, raw: bytes, *, source: str, persist: bool = True, from_peer: str | None = None
    ) -> LocationRecord | None:
        """Keep ``raw`` if it is valid and newer than what we hold; return the record we now hold.

        A record we take is pushed on to every connected peer but ``from_peer`` (the one
        it came from, when it came from a peer).  The very bytes of a record we hold are
        not verified again (syncs and replies carry held records over and over).
        """
        same = self._held_raw.get(raw)
        if same is not None and self.records.get(same.did) is same:
            return same
        try:
            new = location.parse_record(raw)
        except InvalidRecord as e:
            self._reject(f"record-{e.kind}", f"location record from {source}: {e}")
            return None
        held = self.records.get(new.did)
        if held is not None:
            verdict = location.compare(new, held)
            if verdict == "older":
                self._reject(
                    "record-stale",
                    f"record seq {new.seq} of {new.did} from {source}: seq {held.seq} is held",
                )
            if verdict in ("same", "older"):
                return held
            if verdict == "equivocation":
                self.rejections["record-equivocation"] += 1
                log.error("equivocation for %s at seq %d (from %s)", new.did, new.seq, source)
                self.equivocations.append((held, new))
                new = location.pick_equivocation(held, new)
                if new is held:
                    return held
        self.records[new.did] = new
        if held is not None:
            self._held_raw.pop(held.raw, None)
        self._held_raw[new.raw] = new
        if new.host != self.peer_id and new.addrs:
            self.net.add_addrs(new.host, new.addrs)
        if (
            new.host != self.peer_id
            and self.engine.hosts(new.did)
            and new.did not in self._move_targets  # our own move: its reply may come later
            and self._nursery is not None
        ):
            self._nursery.start_soon(self._stand_down, new.did)
        if persist:
            self.home.save_record(new.did, new.raw)
        self._push_record(new, skip=from_peer)
        for seq, scope in self._in_flight.get(new.did, ()):
            if seq < new.seq:
                scope.cancel()  # its host is no longer the pico's (Mesh._request_host)
        for listener in self.record_listeners:
            listener(new, held)
        self._records_changed.set()
        self._records_changed = trio.Event()
        return new

    async def wait_for_record(self, did: str, *, after_seq: int) -> LocationRecord:
        """Wait until we hold a record for ``did`` newer than ``after_seq`` (no look-ups)."""
        while (held := self.records.get(did)) is None or held.seq <= after_seq:
            await self._records_changed.wait()
        return held

    async def _publish(self, record: LocationRecord) -> None:
        """Nothing left to do: ``consider`` already queued the record for every connected
        peer (``_push_record``). Records no longer go out on gossipsub: its queues drop
        under load and it costs about 8 ms of CPU per message-hop (libp2p-probe.md P3, P6);
        records that arrive on the topic (from older engines) are still taken."""

    def _push_record(self, record: LocationRecord, *, skip: str | None) -> None:
        """Queue ``record`` for every connected peer but ``skip`` and the record's host.

        Each peer has one task sending its queue in batches of up to MAX_PUSH records on
        ``/p2pico/loc/1.0.0`` and waiting for each acknowledgement before the next, so a
        burst is paced by how fast the peer takes records and coalesces (only the newest
        record per DID waits). A peer that takes a record it did not have pushes it on to
        its own peers: a flood over acknowledged streams, each record crossing each
        connection at most once per direction, unlike gossipsub (libp2p-probe.md P3, P5).
        """
        if self._nursery is None:
            return
        for peer in self.net.connected_peers():
            if peer in (skip, record.host, self.peer_id) or peer in self._not_engines:
                continue
            box = self._pushes.get(peer)
            if box is None:
                box = self._pushes[peer] = _RecordPush()
                self._nursery.start_soon(self._run_push, peer, box)
            box.pending[record.did] = record.raw
            box.wake.set()

    async def _run_push(self, peer: str, box: _RecordPush) -> None:
        failures = 0
        try:
            while True:
                if not box.pending:
                    box.wake = trio.Event()
                    await box.wake.wait()
                    continue
                batch = dict(itertools.islice(box.pending.items(), messages.MAX_PUSH))
                for did in batch:
                    del box.pending[did]
                try:
                    await self.net.request(
                        peer,
                        LOC_PROTOCOL,
                        messages.encode_loc_push(list(batch.values())),
                        timeout=PUSH_TIMEOUT,
                    )
                except ProtocolNotSupported:
                    self._not_engines.add(peer)
                    return
                except NetError as e:
                    failures += 1
                    if failures >= PUSH_ATTEMPTS:
                        log.info(
                            "pushing %d records to %s failed %d times (%s); it catches up by sync",
                            len(batch) + len(box.pending),
                            peer,
                            failures,
                            e,
                        )
                        return
                    for did, raw in batch.items():  # again, unless a newer one is waiting
                        box.pending.setdefault(did, raw)
                else:
                    failures = 0
        finally:
            if self._pushes.get(peer) is box:
                del self._pushes[peer]

    async def _republish(self, did: str) -> None:
        pico = self.engine.picos.get(did)
        held = self.records.get(did)
        if pico is None or (held is not None and held.host != self.peer_id):
            return  # gone, or another engine took it over and we are standing down
        if self.replicas is not None and self.replicas.is_replicated(did):
            # Its replicas accept the record first (one may have taken the pico over).
            assert self._nursery is not None
            self._nursery.start_soon(self.replicas.republish, did)
            return
        seq = held.seq + 1 if held else 0
        raw = self._sign_record(pico.keypair, seq=seq, prev=held)
        record = self.consider(raw, source="self")
        if record is not None:
            await self._publish(record)

    def _sign_record(self, pico: Keypair, *, seq: int, prev: LocationRecord | None) -> bytes:
        """A record naming this engine as host, with the addresses it listens on."""
        return location.build_record(
            pico, self.engine_key, seq=seq, prev=prev, addrs=self.net.multiaddrs()
        )

    async def _on_gossip(self, from_peer: str, data: bytes) -> None:
        self.consider(data, source=f"gossip via {from_peer}", from_peer=from_peer)

    async def _catch_up(self, peer: str) -> None:
        """Sync every record a newly connected peer holds, at once.

        Nothing falls between the two: the peer is connected, so every record either
        side takes from now on is pushed to the other (``_push_record``), and what it
        held before comes in the sync (and what we held, in its sync with us).
        """
        await self._sync_with(peer)

    async def _sync_with(self, peer: str) -> None:
        try:
            data = await self.net.request(peer, LOC_PROTOCOL, messages.encode_loc_request(None))
            for raw in messages.decode_records(data):
                self.consider(raw, source=f"sync with {peer}", from_peer=peer)
        except (NetError, MessageError) as e:
            log.info("record sync with %s failed: %s", peer, e)

    async def _on_loc(self, peer: str, data: bytes) -> bytes:
        pushed = messages.decode_loc_push(data)
        if pushed is not None:
            for raw in pushed:
                self.consider(raw, source=f"push from {peer}", from_peer=peer)
            return messages.encode_records([])  # the acknowledgement
        did = messages.decode_loc_request(data)
        if did is None:
            return messages.encode_records([r.raw for r in self.records.values()])
        held = self.records.get(did)
        return messages.encode_records([held.raw] if held else [])

    async def _ask_peers(
        self, make: Callable[[], bytes], protocol: str, handle: Callable[[bytes], None]
    ) -> None:
        """Send one request to every connected peer at once; ``handle`` sees each answer."""

        async def one(peer: str) -> None:
            try:
                handle(await self.net.request(peer, protocol, make(), timeout=5.0))
            except (NetError, MessageError) as e:
                log.debug("asking %s failed: %s", peer, e)

        async with trio.open_nursery() as nursery:
            for peer in self.net.connected_peers():
                nursery.start_soon(one, peer)

    async def resolve(self, did: str, *, refresh: bool = False) -> LocationRecord | None:
        """The newest record we can find for ``did``: ours, or our peers' if we have none."""
        if did in self.records and not refresh:
            return self.records[did]

        def take(data: bytes) -> None:
            for raw in messages.decode_records(data):
                self.consider(raw, source="look-up")

        await self._ask_peers(lambda: messages.encode_loc_request(did), LOC_PROTOCOL, take)
        return self.records.get(did)

    async def did_of(self, target: str) -> str:
        """A user's TARGET (DID or ECI) as a DID."""
        if target.startswith("did:"):
            return target
        did = self.engine.did_of_eci(target) or self.eci_dids.get(target)
        if did is not None:
            return did

        def take(data: bytes) -> None:
            reply = Reply.decode(data)
            if reply.error is None and isinstance(reply.ok, str):
                self.eci_dids[target] = reply.ok

        await self._ask_peers(lambda: WhoisEci(target).encode(), MSG_PROTOCOL, take)
        if target not in self.eci_dids:
            raise PicoError(f"ECI not found {target}")
        return self.eci_dids[target]

    # -- requests (from HTTP, from peers, and from KRL) -----------------------------------

    async def target(self, eci_or_did: str) -> Target:
        """A DID or ECI as a routable target; an ECI stays in it for the host's channel check.
        Surrounding blanks are trimmed, as pico-engine does."""
        eci_or_did = eci_or_did.strip()
        if not eci_or_did:
            raise PicoError("missing eci")
        did = await self.did_of(eci_or_did)
        return Target(did, None if eci_or_did.startswith("did:") else eci_or_did)

    # Messages between picos (event:send, ctx:query) are signed by the sending pico's
    # DID key when they leave its engine (messages.sign_request), so the host can check
    # who sent them: a family channel serves only its owner, on any engine.  Requests
    # from HTTP carry no sender (their ECI is their capability).

    def _signer(self, sender: str | None) -> Keypair | None:
        pico = self.engine.picos.get(sender) if sender else None
        return pico.keypair if pico is not None else None

    def _new_mid(self) -> str:
        """A message id no other message of this mesh has: this engine, its boot, a counter."""
        return f"{self.peer_id}/{self._boot}/{next(self._mid_counter)}"

    async def _send_from_pico(
        self, to: str, domain: str, type: str, attrs: dict[str, object], sender: str
    ) -> object:
        return await self.event(await self.target(to), domain, type, attrs, sender=sender)

    async def _query_from_pico(
        self, to: str, rid: str, name: str, args: dict[str, object], sender: str
    ) -> object:
        return await self.query(await self.target(to), rid, name, args, sender=sender)

    def _queue_send(
        self, to: str, domain: str, type: str, attrs: dict[str, object], sender: str
    ) -> None:
        """event:send to a pico of another engine: into the (sender, target) outbox, in order."""
        key = (sender, to)
        box = self._outboxes.get(key)
        if box is None:
            box = self._outboxes[key] = deque()
            assert self._nursery is not None
            self._nursery.start_soon(self._drain_outbox, key, box)
        if len(box) >= OUTBOX_LIMIT:
            self._reject("outbox-full", f"event:send {domain}:{type} from {sender} to {to}")
            return
        box.append(_Outgoing(domain, type, attrs, self._new_mid(), self._signer(sender)))

    async def _drain_outbox(self, key: tuple[str, str], box: deque[_Outgoing]) -> None:
        """Deliver one sender's event:sends to one target in order, each until it lands.

        A target that cannot be reached (its host is down, or cut off) keeps the rest
        waiting here, retried with backoff for as long as it takes; what was queued is
        delivered in order once the target is back.  An error from the target (a
        policy refused it, a rule failed) is logged and the next one goes.
        """
        sender, to = key
        try:
            while box:
                out = box[0]
                try:
                    target = await self.target(to)
                    request = EventRequest(target, out.domain, out.type, out.attrs, mid=out.mid)
                    await self._deliver(
                        request,
                        sender=sender,
                        signer=out.signer,
                        patience=math.inf,
                        attempts=math.inf,
                    )
                except PicoError as e:
                    log.warning("event:send %s:%s to %s failed: %s", out.domain, out.type, to, e)
                box.popleft()
        finally:
            del self._outboxes[key]

    async def event(
        self,
        target: Target,
        domain: str,
        type: str,
        attrs: dict[str, object],
        *,
        eid: str = "none",
        sender: str | None = None,
    ) -> object:
        """Run an event on any pico of the mesh; ``sender`` is the pico of this engine
        that sends it (event:send), None for HTTP.  Its domain and type are trimmed, and
        must not be blank (pico-engine's cleanEvent)."""
        domain, type = clean_event_names(domain, type)
        request = EventRequest(target, domain, type, attrs, eid)
        return await self._deliver(request, sender=sender, signer=self._signer(sender))

    async def query(
        self,
        target: Target,
        rid: str,
        name: str,
        args: dict[str, object],
        *,
        sender: str | None = None,
    ) -> object:
        rid, name = rid.strip(), name.strip()  # as pico-engine's cleanQuery
        if not rid:
            raise PicoError("missing query.rid")
        if not name:
            raise PicoError("missing query.name")
        request = QueryRequest(target, rid, name, args)
        return await self._deliver(request, sender=sender, signer=self._signer(sender))

    @staticmethod
    def _work_for(request: PicoRequest, sender: str | None) -> Work:
        """The Work item that runs ``request`` here; ``sender`` is checked already (ours, or
        the request's verified signer).  Its dedup key is the sender's plus the message id,
        so an unsigned message can never take a signed sender's id."""
        key = f"{sender or '-'}|{request.mid}" if request.mid else ""
        eci = request.target.eci or ""
        kept = request if request.mid else None
        if isinstance(request, EventRequest):
            event = krl.Event(request.domain, request.type, request.attrs, eid=request.eid)
            return Work("event", event=event, eci=eci, sender=sender, mid=key, request=kept)
        return Work(
            "query",
            eci=eci,
            rid=request.rid,
            name=request.name,
            args=request.args,
            sender=sender,
            request=kept,
        )

    async def _deliver(
        self,
        request: PicoRequest,
        *,
        sender: str | None = None,
        signer: Keypair | None = None,
        patience: float = DELIVERY_PATIENCE,
        attempts: float = MAX_ATTEMPTS,
    ) -> object:
        """Run ``request`` on its pico, here or at its host, retrying until ``patience``
        seconds have passed or ``attempts`` sends failed.

        A send that fails (timeout, lost connection, the host no longer has the pico,
        its inbox is full, a relay could not reach it) is sent again with the same
        message id, after looking the DID up again; the pico's dedup window makes
        an event that did arrive run once.  ``signer`` signs each send afresh.
        """
        did = request.target.did
        deadline = trio.current_time() + patience
        failures = 0
        why = "no attempt"
        mid = request.mid
        while True:
            if self.engine.hosts(did):
                if mid != request.mid:  # sent elsewhere first: the same id here
                    request = dataclasses.replace(request, mid=mid)
                try:
                    return await self.engine.submit(
                        did, self._work_for(request, sender), forwarded=request.forwarded
                    )
                except NotHosted:
                    pass  # it left while we were looking: route it like any remote pico
            if request.hops >= MAX_HOPS:
                raise Unreachable(f"gave up on {did} after {request.hops} forwards")
            record = await self.resolve(did, refresh=failures > 0)
            if record is None:
                raise PicoError(f"no engine is known to host {did}")
            if record.host == self.peer_id:
                if self.engine.hosts(did):
                    continue
                raise PicoError(f"{did} is recorded here but not hosted; its record is stale")
            if isinstance(request, EventRequest) and not mid:
                mid = self._new_mid()  # kept for retries (and for a pico that comes here)
            out = dataclasses.replace(request, mid=mid, hops=request.hops + 1)
            if signer is not None:
                out = messages.sign_request(out, signer, int(self.engine.clock() * 1000))
            moved = False
            try:
                data = await self._request_host(record, out)
            except NetError as e:
                why = f"host {record.host} of {did} did not answer: {e}"
                held = self.records.get(did)
                moved = held is not None and held.seq > record.seq
            else:
                reply = Reply.decode(data)
                if reply.record is not None:
                    held = self.records.get(did)
                    taken = self.consider(reply.record, source=f"reply from {record.host}")
                    moved = taken is not None and taken is not held
                if reply.error is None:
                    return reply.ok
                if reply.code not in RETRYABLE:
                    raise PicoError(reply.error)
                why = reply.error
            failures += 1
            self.retries += 1
            if moved:
                continue  # the reply named the new host (MOVED): go there now
            pause = min(BACKOFF_FIRST * 2 ** min(failures - 1, 16), BACKOFF_MAX)
            if failures >= attempts or trio.current_time() + pause > deadline:
                raise Unreachable(f"{why} (gave up after {failures} attempts)")
            log.info("retrying %s in %.2f s: %s", did, pause, why)
            await trio.sleep(pause)

    async def _request_host(self, record: LocationRecord, out: PicoRequest) -> bytes:
        """Send ``out`` to ``record``'s host; given up (NetError) as soon as a newer record
        arrives, e.g. a replica that took over from a host that stopped answering.  The
        message id keeps a request that did arrive from being applied twice.

        The request waits in ``_in_flight`` under its DID; ``consider`` cancels it when it
        takes a newer record (no watcher task per request: they cost a task spawn and a
        cancellation on every routed event)."""
        held = self.records.get(record.did)
        if held is not None and held.seq > record.seq:
            raise NetError(f"a newer record than seq {record.seq} is held; asking its host")
        waiting = (record.seq, trio.CancelScope())
        self._in_flight.setdefault(record.did, []).append(waiting)
        try:
            with waiting[1]:
                return await self.net.request(
                    record.host, MSG_PROTOCOL, out.encode(), timeout=REQUEST_TIMEOUT
                )
        finally:
            pending = self._in_flight.get(record.did)
            if pending is not None:
                pending.remove(waiting)
                if not pending:
                    del self._in_flight[record.did]
        raise NetError(f"a newer record than seq {record.seq} arrived; asking its host")

    async def _on_msg(self, peer: str, data: bytes) -> bytes:
        result: object
        try:
            request = messages.decode_msg_request(data)
            if isinstance(request, WhoisEci):
                did = self.engine.did_of_eci(request.eci) or self.eci_dids.get(request.eci)
                if did is None:
                    return Reply(error=f"ECI not found {request.eci}", code="unknown-eci").encode()
                return Reply(ok=did).encode()
            if isinstance(request, MoveCommand):
                result = await self.move(request.did, request.to, hops=request.hops)
                return Reply(ok=result).encode()
            try:
                sender = messages.check_signature(request, int(self.engine.clock() * 1000))
            except BadSignature as e:
                self._reject("message-bad-signature", f"{e} (from {peer}, for {request.target})")
                return Reply(error=f"refused: {e}", code="bad-signature").encode()
            # A relay passes a message on with few retries: the sender retries the whole way.
            result = await self._deliver(request, sender=sender, attempts=HOP_ATTEMPTS)
        except MessageError as e:
            return Reply(error=f"bad request: {e}", code="bad-request").encode()
        except PicoError as e:
            held = self.records.get(getattr(getattr(request, "target", None), "did", ""))
            return Reply(error=str(e), code=e.code, record=held.raw if held else None).encode()
        did = request.target.did
        held = self.records.get(did)
        # A forwarded reply carries the newer record so the caller can fix its routing.
        attach = held.raw if held and held.host != peer and not self.engine.hosts(did) else None
        return Reply(ok=result, record=attach).encode()

    # -- creating picos ------------------------------------------------------------------

    async def create_pico(self, sources: list[str], *, urls: tuple[str, ...] = ()) -> Pico:
        if self.draining:
            raise PicoError("this engine is draining: it takes no new picos")
        pico = self.engine.create_pico(sources, urls=urls)
        await self._publish_new_pico(pico)
        return pico

    async def _publish_new_pico(self, pico: Pico) -> None:
        raw = self._sign_record(pico.keypair, seq=0, prev=None)
        record = self.consider(raw, source="self")
        assert record is not None
        await self._publish(record)

    # -- moving: source side ------------------------------------------------------------

    async def move(self, did: str, to: str, *, hops: int = 0) -> dict[str, object]:
        """Move ``did`` to engine ``to``; run from any engine (it is sent to the host)."""
        if not self.engine.hosts(did):
            if hops >= MAX_HOPS:
                raise PicoError(f"gave up moving {did} after {hops} forwards")
            record = await self.resolve(did, refresh=True)
            if record is None or record.host == self.peer_id:
                raise PicoError(f"no engine is known to host {did}")
            try:
                data = await self.net.request(
                    record.host,
                    MSG_PROTOCOL,
                    MoveCommand(did, to, hops + 1).encode(),
                    timeout=MOVE_TIMEOUT,
                )
            except NetError as e:
                raise PicoError(f"host {record.host} of {did} did not answer: {e}") from e
            reply = Reply.decode(data)
            if reply.error is not None:
                raise PicoError(reply.error)
            assert isinstance(reply.ok, dict)
            return reply.ok
        if to == self.peer_id:
            raise PicoError(f"{did} is already hosted by {to}")
        if PRECOPY:
            await self._precopy(did, to)
        try:
            result = await self.engine.submit(
                did, Work("move", run=lambda pico: self._move_out(pico, to))
            )
        finally:
            self._precopied.pop(did, None)
            if did not in self._move_targets:
                self.move_progress.pop(did, None)
        assert isinstance(result, dict)
        return result

    async def _precopy(self, did: str, to: str) -> None:
        """Have ``to`` copy the pico's blocks while it still serves (best effort).

        The move that follows pauses the pico only while ``to`` fetches what changed
        since (the manifest then leaves out everything under the blocks copied here) and
        verifies that.  A copy that fails is logged; the move then carries everything.
        """
        pico = self.engine.picos.get(did)
        if pico is None or did in self._move_targets or did in self._precopy_grants:
            return  # gone, or a move of it is under way already
        grant: list[Any] = [to, pico.head, frozenset()]
        self._precopy_grants[did] = grant
        try:
            data = await self.net.request(
                to, MOVE_PROTOCOL, MovePrefetch(did, pico.head).encode(), timeout=MOVE_TIMEOUT
            )
            reply = Reply.decode(data)
            if reply.error is not None:
                log.info("%s did not copy %s ahead of its move: %s", to, did, reply.error)
            elif grant[2]:
                self._precopied[did] = (to, grant[1], grant[2])
        except (NetError, MessageError) as e:
            log.info("copying %s to %s ahead of its move failed: %s", did, to, e)
        finally:
            self._precopy_grants.pop(did, None)
            if did not in self._precopied:
                self.move_progress.pop(did, None)

    async def _move_out(self, pico: Pico, to: str) -> _Handoff:
        paused = trio.current_time()  # the worker runs this: the pico serves nothing now
        held = self.records.get(pico.did)
        if held is None:
            raise PicoError(f"no location record for {pico.did}")
        self._move_targets[pico.did] = to
        self._move_blocks[pico.did] = (pico.head, frozenset())
        committed = False
        try:
            propose = MovePropose(pico.did, pico.head, pico.keypair.seed, held.raw)
            for attempt in range(MOVE_ATTEMPTS):
                try:
                    data = await self.net.request(
                        to, MOVE_PROTOCOL, propose.encode(), timeout=MOVE_TIMEOUT
                    )
                except NetError as e:
                    # The target may have committed and then lost its reply: ask what it holds.
                    new = await self._committed_record(pico.did, to, held)
                    if new is not None:
                        break
                    if attempt + 1 == MOVE_ATTEMPTS:
                        raise PicoError(f"{to} did not answer: {e}") from e
                    # Not taken (a dial or stream that failed): propose again.  A target
                    # still busy with the first proposal refuses a second one.
                    log.info("proposing %s to %s again: %s", pico.did, to, e)
                    await trio.sleep(0.25 * 2**attempt)
                    continue
                reply = Reply.decode(data)
                if reply.error is not None:
                    raise PicoError(f"{to} refused: {reply.error}")
                if not isinstance(reply.ok, bytes):
                    raise PicoError(f"{to} answered without a location record")
                new = location.parse_record(reply.ok)
                if not _succeeds(new, held, to):
                    raise PicoError(f"{to} signed a record that does not follow ours")
                break
            assert new is not None  # each pass above breaks with a record or raises
            # Still marked as our move, so taking the new record is not mistaken for
            # someone else taking the pico (which would make us stand down).
            self.consider(new.raw, source=f"move to {to}")
            committed = True
        finally:
            del self._move_targets[pico.did]
            self._move_blocks.pop(pico.did, None)
            progress = self.move_progress.pop(pico.did, None)
            taken = self.records.get(pico.did)
            if not committed and taken is not None and taken.host != self.peer_id:
                # A record naming another host arrived while the move was open (a push
                # from the target that took it, although we never got its reply).
                assert self._nursery is not None
                self._nursery.start_soon(self._stand_down, pico.did)
        for eci in pico.channels:
            self.eci_dids[eci] = pico.did
        paused_ms = round((trio.current_time() - paused) * 1000, 1)
        log.info("moved %s to %s (record seq %d), paused %.1f ms", pico.did, to, new.seq, paused_ms)
        return _Handoff(
            self,
            pico.did,
            to,
            {
                "did": pico.did,
                "host": to,
                "seq": new.seq,
                "head": str(pico.head),
                **({"blocks": progress[1]} if progress else {}),  # copied and moved
                # from the quiesce until the new host held the pico and we its record
                "paused_ms": paused_ms,
            },
        )

    async def _committed_record(
        self, did: str, to: str, held: LocationRecord
    ) -> LocationRecord | None:
        """The record by which ``to`` took ``did`` over from ``held``, if it did."""
        try:
            data = await self.net.request(to, LOC_PROTOCOL, messages.encode_loc_request(did))
            for raw in messages.decode_records(data):
                record = location.parse_record(raw)
                if _succeeds(record, held, to):
                    return record
        except (NetError, MessageError, InvalidRecord) as e:
            log.warning("could not learn whether %s took %s: %s", to, did, e)
        return None

    async def _stand_down(self, did: str) -> None:
        """Another engine holds a newer record for a pico we host: hand it over, do not serve it."""
        record = self.records[did]
        log.error(
            "%s is hosted by %s since record seq %d; standing down", did, record.host, record.seq
        )

        async def hand_over(pico: Pico) -> _Handoff:
            if self.replicas is not None:  # heads no replica took: kept as a fork, not adopted
                self.replicas.standing_down(pico)
            return _Handoff(
                self, did, record.host, {"did": did, "host": record.host, "seq": record.seq}
            )

        try:
            await self.engine.submit(did, Work("move", run=hand_over))
        except PicoError as e:
            log.warning("standing down %s: %s", did, e)

    async def _on_blocks(self, peer: str, data: bytes) -> bytes:
        request = messages.decode_blocks_request(data)
        store = self.engine.store
        copy = self._precopy_grants.get(request.did)
        if self._move_targets.get(request.did) == peer:
            head, entitled = self._move_blocks[request.did]
            # what the target copied ahead of the move (Mesh._precopy), and says it still
            # holds (a target that restarted or forgot it asks for everything), it need
            # not be sent
            precopied = self._precopied.get(request.did)
            known = None
            if (
                precopied is not None
                and precopied[0] == peer
                and isinstance(request, ManifestRequest)
                and request.since == precopied[1]
            ):
                known = precopied[2]
        elif copy is not None and copy[0] == peer:
            head, entitled, known = copy[1], copy[2], None
        else:
            raise PermissionError(f"{peer} may not fetch blocks of {request.did}")
        if isinstance(request, ManifestRequest):
            if request.root != head:
                raise PermissionError(f"{peer} may fetch the blocks of {head}, not {request.root}")
            # A history truncated by gc --keep-history moves from its oldest kept head on;
            # after a pre-copy, links into the blocks copied are not followed either (the
            # target has everything under them), so the manifest is what changed since.
            absent: set[CID] = set(known or ())

            def get(cid: CID) -> Block | None:
                return None if cid in absent else store.get_block(cid)

            if head in absent:  # nothing changed since the copy
                cids = [head]
            else:
                gap = chain_gap(get, head)
                if gap is not None:
                    absent.add(gap[1])
                cids = [block.cid for block in walk(store, head, absent=absent)]
            if len(cids) > MAX_MANIFEST:
                raise PicoError(f"{len(cids)} blocks is more than a move can carry yet")
            # The progress bar (GET /api/moves) counts the blocks of the copy and the move.
            if copy is not None and copy[0] == peer and self._move_targets.get(request.did) != peer:
                copy[2] = frozenset(cids)
                self.move_progress[request.did] = [0, len(cids)]
            else:
                self._move_blocks[request.did] = (head, frozenset(cids))
                before = self.move_progress.get(request.did) if known is not None else None
                served, total = before if before is not None else (0, 0)
                added = sum(1 for cid in cids if known is None or cid not in known)
                self.move_progress[request.did] = [served, total + added]
            return messages.encode_manifest(cids)
        blocks: list[bytes | None] = []
        size = 0
        for cid in request.want:
            if size >= BLOCKS_REPLY_BUDGET:
                break  # the requester asks again for the rest
            raw = store.get(cid) if cid in entitled else None  # only the moving pico's blocks
            blocks.append(raw)
            size += len(raw or b"")
        if (progress := self.move_progress.get(request.did)) is not None:
            progress[0] += sum(raw is not None for raw in blocks)
        return messages.encode_blocks(blocks)

    # -- moving: target side ------------------------------------------------------------

    async def _on_move(self, peer: str, data: bytes) -> bytes:
        try:
            request = messages.decode_move_request(data)
            if isinstance(request, MoveDrained):
                self.engine.drained(request.did)
                return Reply(ok=True).encode()
            if isinstance(request, MovePrefetch):
                return Reply(ok=await self._prefetch(peer, request)).encode()
            if request.did in self._incoming:
                raise PicoError(f"a move of {request.did} here is already under way")
            self._incoming.add(request.did)
            try:
                return Reply(ok=await self._move_in(peer, request)).encode()
            finally:
                self._incoming.discard(request.did)
        except (MessageError, PicoError, InvalidRecord, ValueError) as e:
            log.warning("refused a move from %s: %s", peer, e)
            return Reply(error=str(e), code="move-refused").encode()

    async def _move_in(self, peer: str, request: MovePropose) -> bytes:
        did = request.did
        if self.draining:
            raise PicoError("this engine is draining: it takes no new picos")
        if self.engine.hosts(did):
            raise PicoError(f"{did} is already hosted here")
        keypair = Keypair.from_seed(request.seed)
        if keypair.did != did:
            raise PicoError("the key sent does not belong to the DID")
        old = location.parse_record(request.record)
        if old.did != did or old.host != peer:
            raise PicoError(f"the record sent does not say {peer} hosts {did}")
        held = self.consider(old.raw, source=f"move from {peer}")
        if held is None or held.raw != old.raw:
            raise PicoError(f"a newer record for {did} exists (seq {held.seq if held else '?'})")
        try:
            heads = await self._fetch(peer, did, request.head, self._prefetched.get(did))
        finally:
            self._prefetched.pop(did, None)
        log.info("fetched %s from %s: %d new heads verified", did, peer, len(heads))
        raw = self._sign_record(keypair, seq=old.seq + 1, prev=old)
        record = self.consider(raw, source="self")
        if record is None or record.raw != raw:  # check-and-set lost
            raise PicoError(f"a competing record for {did} won; move aborted")
        self.engine.adopt(keypair, request.head)
        assert self._nursery is not None
        self._nursery.start_soon(self._publish, record)
        return raw

    async def _prefetch(self, peer: str, request: MovePrefetch) -> bool:
        """Copy a pico's blocks ahead of its move from ``peer`` (Mesh._precopy), verified as
        a move verifies them, and remember what was copied for the move."""
        did = request.did
        if self.draining:
            raise PicoError("this engine is draining: it takes no new picos")
        if self.engine.hosts(did) or did in self._incoming:
            raise PicoError(f"{did} is hosted here or moving here already")
        record = self.records.get(did)
        if record is None or record.host != peer:
            raise PicoError(f"{peer} is not the host of {did} as far as we know")
        if did in self._prefetching:
            raise PicoError(f"a copy of {did} here is already under way")
        self._prefetched.pop(did, None)
        self._prefetching.add(did)
        try:
            heads, closure = await self._fetch_verified(peer, did, request.head, None)
        finally:
            self._prefetching.discard(did)
        self._prefetched[did] = (request.head, heads[-1].seq, closure)

        async def forget() -> None:
            await trio.sleep(PRECOPY_KEEP)
            if (held := self._prefetched.get(did)) is not None and held[0] == request.head:
                del self._prefetched[did]

        assert self._nursery is not None
        self._nursery.start_soon(forget)
        return True

    async def _fetch(
        self, peer: str, did: str, head: CID, known: tuple[CID, int, frozenset[CID]] | None = None
    ) -> list[Head]:
        """Fetch every block reachable from ``head`` that we lack, verifying each; the
        heads verified (those after ``known``'s head, when a pre-copy gave one)."""
        return (await self._fetch_verified(peer, did, head, known))[0]

    async def _fetch_verified(
        self, peer: str, did: str, head: CID, known: tuple[CID, int, frozenset[CID]] | None
    ) -> tuple[list[Head], frozenset[CID]]:
        """Fetch every block reachable from ``head`` that we lack, verifying each; the new
        heads verified, and every block reachable from ``head``.

        The source's manifest says which blocks to ask for; it is not trusted.  Each
        block must match its CID, and at the end a local walk from the head must find
        every reachable block and a head chain signed by ``did`` from genesis.  With
        ``known`` (a pre-copy's head, its seq, and every block reachable from it, all here
        and verified) the chain check stops at that head, and the walk at those blocks.
        """
        store = self.engine.store
        since = known[0] if known is not None else None
        manifest = messages.decode_manifest(
            await self.net.request(
                peer,
                BLOCKS_PROTOCOL,
                ManifestRequest(did, head, since).encode(),
                timeout=MOVE_TIMEOUT,
            )
        )
        missing = [cid for cid in dict.fromkeys(manifest) if not store.has(cid)]
        fetched: dict[CID, Block] = {}
        while missing:
            batch = missing[:MAX_WANT]
            data = await self.net.request(
                peer, BLOCKS_PROTOCOL, WantRequest(did, batch).encode(), timeout=REQUEST_TIMEOUT
            )
            answers = messages.decode_blocks(data)
            if not answers or len(answers) > len(batch):
                raise PicoError(f"{peer} answered {len(answers)} blocks for {len(batch)} wanted")
            blocks = []
            for cid, raw in zip(batch, answers, strict=False):
                if raw is None:
                    raise PicoError(f"{peer} does not have block {cid}")
                blocks.append(Block.decode(cid, raw))  # raises if the bytes do not match
            store.put_many(blocks)
            fetched.update((b.cid, b) for b in blocks)
            missing = missing[len(answers) :]

        def get(cid: CID) -> Block | None:  # blocks verified above are not decoded again
            return fetched.get(cid) or store.get_block(cid)

        # Every head verifies back to genesis, or to the oldest head a gc --keep-history
        # kept on the source: then that head's `prev` is the one block allowed to be absent.
        # After a pre-copy, back to the head copied then (verified then, down to genesis).
        known_head, known_seq, closure = known if known is not None else (None, -1, frozenset())
        if head == known_head:
            return [], closure

        def chain_get(cid: CID) -> Block | None:
            return None if cid == known_head else get(cid)

        heads, gap = verify_chain_tail(chain_get, head)
        if gap is not None and gap == known_head and heads[0].seq != known_seq + 1:
            raise PicoError(f"head {heads[0].cid} (seq {heads[0].seq}) follows seq {known_seq}")
        seen, stack = {head, *([gap] if gap else []), *closure}, [head]
        while stack:
            block = get(cid := stack.pop())
            if block is None:
                raise PicoError(f"{peer}'s manifest left out block {cid} (reachable from {head})")
            for link in block.links():
                if link not in seen:
                    seen.add(link)
                    stack.append(link)
        if gap is not None and gap != known_head:
            log.info("%s moves with a truncated history: heads from seq %d", did, heads[0].seq)
        if heads[-1].pico != did:
            raise PicoError(f"head {head} is signed for {heads[-1].pico}, not {did}")
        if gap is not None and gap != known_head:
            seen.discard(gap)  # the missing prev of a truncated history is not here
        return heads, frozenset(seen)


def _succeeds(new: LocationRecord, held: LocationRecord, host: str) -> bool:
    """Is ``new`` the record by which ``host`` took the pico over from ``held``?"""
    return (
        new.did == held.did
        and new.host == host
        and new.prev == held.hash
        and new.seq == held.seq + 1
    )


class _RecordPush:
    """Records waiting to be pushed to one peer (newest per DID), and the wake-up of the
    task that sends them (Mesh._run_push)."""

    def __init__(self) -> None:
        self.pending: dict[str, bytes] = {}
        self.wake = trio.Event()


class _Handoff:
    """The old host's side of a committed move: forward the queue, then say drained."""

    def __init__(self, mesh: Mesh, did: str, to: str, result: dict[str, object]) -> None:
        self.mesh, self.did, self.to, self.result = mesh, did, to, result
        self.forwarded = 0

    async def forward(self, work: Work) -> None:
        """Send one queued item on to the new host, as it came (with its message id and
        signature), or, if it came from this engine, signed by its sending pico if that
        is still here; a new message id lets the new host apply it once."""
        self.forwarded += 1
        request = work.request
        sender = request.sender if isinstance(request, (EventRequest, QueryRequest)) else None
        signer = None
        try:
            if not isinstance(request, (EventRequest, QueryRequest)):
                target = Target(self.did, work.eci or None)
                if work.kind == "event":
                    assert work.event is not None
                    ev = work.event
                    request = EventRequest(target, ev.domain, ev.type, dict(ev.attrs), ev.eid)
                elif work.kind == "query":
                    request = QueryRequest(target, work.rid, work.name, dict(work.args))
                else:
                    raise PicoError(f"{self.did} moved to {self.to} before this {work.kind} ran")
                sender, signer = work.sender, self.mesh._signer(work.sender)
            request = dataclasses.replace(request, hops=0, forwarded=True)
            result = await self.mesh._deliver(request, sender=sender, signer=signer)
        except PicoError as e:
            work.finish(error=e)
        else:
            work.finish(result=result)

    async def finish(self) -> None:
        log.info("%s: forwarded %d queued requests to %s", self.did, self.forwarded, self.to)
        try:
            await self.mesh.net.request(self.to, MOVE_PROTOCOL, MoveDrained(self.did).encode())
        except NetError as e:
            log.warning("could not tell %s that %s is drained: %s", self.to, self.did, e)
