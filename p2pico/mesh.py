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
import logging
import random
from collections.abc import Callable
from typing import Any

import trio

import krl
from dag.block import Block
from dag.cid import CID
from dag.did import Keypair
from dag.head import Head, verify_chain
from dag.store import walk
from p2pico.engine import Engine, NotHosted, Pico, PicoError, Work
from p2pico.home import Home
from p2pico.net import Net, NetError
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
    EventRequest,
    ManifestRequest,
    MessageError,
    MoveCommand,
    MoveDrained,
    MovePropose,
    QueryRequest,
    Reply,
    Target,
    WantRequest,
    WhoisEci,
)

log = logging.getLogger("p2pico.mesh")

# A host re-signs its picos' records this often; records are valid for 24 h.
REPUBLISH_INTERVAL = 12 * 3600
# Every this often, a full record sync with one connected peer repairs anything
# gossip dropped (gossipsub delivery is best effort: libp2p-probe.md P3, P5).
ANTI_ENTROPY_INTERVAL = 60.0
# How long catch-up waits for a new peer to join the record topic before syncing.
TOPIC_JOIN_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
MOVE_TIMEOUT = 120.0


class Mesh:
    def __init__(self, engine: Engine, net: Net, home: Home) -> None:
        self.engine = engine
        self.net = net
        self.home = home
        self.engine_key: Keypair = home.engine_key
        self.records: dict[str, LocationRecord] = {}
        self.eci_dids: dict[str, str] = {}
        # did -> peer allowed to fetch that pico's blocks (the target of an open move)
        self._move_targets: dict[str, str] = {}
        # picos being moved here: their blocks are not reachable from any root yet
        self._incoming: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self.equivocations: list[tuple[LocationRecord, LocationRecord]] = []
        self._records_changed = trio.Event()
        # event:send and ctx:query from KRL reach any pico of the mesh
        engine.send_hook = self._send_from_pico
        engine.query_hook = self._query_from_pico
        engine.on_new_pico = self._publish_new_pico  # ctx:newPico children

    @property
    def peer_id(self) -> str:
        return self.net.peer_id

    def moves_open(self) -> bool:
        """Is a move into or out of this engine under way (its blocks may be unrooted)?"""
        return bool(self._move_targets or self._incoming)

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

    def consider(self, raw: bytes, *, source: str, persist: bool = True) -> LocationRecord | None:
        """Keep ``raw`` if it is valid and newer than what we hold; return the record we now hold."""
        try:
            new = location.parse_record(raw)
        except InvalidRecord as e:
            log.warning("rejected location record from %s: %s", source, e)
            return None
        held = self.records.get(new.did)
        if held is not None:
            verdict = location.compare(new, held)
            if verdict in ("same", "older"):
                return held
            if verdict == "equivocation":
                log.error("equivocation for %s at seq %d (from %s)", new.did, new.seq, source)
                self.equivocations.append((held, new))
                new = location.pick_equivocation(held, new)
                if new is held:
                    return held
        self.records[new.did] = new
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
        self._records_changed.set()
        self._records_changed = trio.Event()
        return new

    async def wait_for_record(self, did: str, *, after_seq: int) -> LocationRecord:
        """Wait until we hold a record for ``did`` newer than ``after_seq`` (no look-ups)."""
        while (held := self.records.get(did)) is None or held.seq <= after_seq:
            await self._records_changed.wait()
        return held

    async def _publish(self, record: LocationRecord) -> None:
        try:
            await self.net.publish(LOC_TOPIC, record.raw)
        except Exception as e:  # gossip is best effort; sync and look-ups repair misses
            log.warning("publishing the record of %s failed: %s", record.did, e)

    async def _republish(self, did: str) -> None:
        pico = self.engine.picos.get(did)
        held = self.records.get(did)
        if pico is None or (held is not None and held.host != self.peer_id):
            return  # gone, or another engine took it over and we are standing down
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
        self.consider(data, source=f"gossip via {from_peer}")

    async def _catch_up(self, peer: str) -> None:
        """Sync every record a newly connected peer holds, once it has joined the record topic.

        In that order, nothing falls between the two: what the peer published before
        it joined comes in the sync, and what it publishes after comes by gossip.
        """
        try:
            await self.net.wait_for_topic_peer(peer, LOC_TOPIC, timeout=TOPIC_JOIN_TIMEOUT)
        except NetError as e:
            log.info("%s did not join %s: %s; syncing anyway", peer, LOC_TOPIC, e)
        await self._sync_with(peer)

    async def _sync_with(self, peer: str) -> None:
        try:
            data = await self.net.request(peer, LOC_PROTOCOL, messages.encode_loc_request(None))
            for raw in messages.decode_records(data):
                self.consider(raw, source=f"sync with {peer}")
        except (NetError, MessageError) as e:
            log.info("record sync with %s failed: %s", peer, e)

    async def _on_loc(self, peer: str, data: bytes) -> bytes:
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
        """A DID or ECI as a routable target; an ECI stays in it for the host's channel check."""
        did = await self.did_of(eci_or_did)
        return Target(did, None if eci_or_did.startswith("did:") else eci_or_did)

    # The sending pico is passed on only to a pico hosted here, so it may use a
    # family channel it owns; a request to another engine carries no sender, so family
    # channels are refused across engines (that engine could not check the claim).

    async def _send_from_pico(
        self, to: str, domain: str, type: str, attrs: dict[str, object], sender: str
    ) -> object:
        return await self.event(await self.target(to), domain, type, attrs, sender=sender)

    async def _query_from_pico(
        self, to: str, rid: str, name: str, args: dict[str, object], sender: str
    ) -> object:
        return await self.query(await self.target(to), rid, name, args, sender=sender)

    async def event(
        self,
        target: Target,
        domain: str,
        type: str,
        attrs: dict[str, object],
        *,
        eid: str = "none",
        hops: int = 0,
        forwarded: bool = False,
        sender: str | None = None,
    ) -> object:
        request = EventRequest(target, domain, type, attrs, eid, hops, forwarded)
        return await self._deliver(
            target.did,
            lambda: Work(
                "event",
                event=krl.Event(domain, type, attrs, eid=eid),
                eci=target.eci or "",
                sender=sender,
            ),
            request,
            hops,
            forwarded,
        )

    async def query(
        self,
        target: Target,
        rid: str,
        name: str,
        args: dict[str, object],
        *,
        hops: int = 0,
        forwarded: bool = False,
        sender: str | None = None,
    ) -> object:
        request = QueryRequest(target, rid, name, args, hops, forwarded)
        return await self._deliver(
            target.did,
            lambda: Work(
                "query", eci=target.eci or "", rid=rid, name=name, args=args, sender=sender
            ),
            request,
            hops,
            forwarded,
        )

    async def _deliver(
        self,
        did: str,
        make_work: Callable[[], Work],
        request: EventRequest | QueryRequest,
        hops: int,
        forwarded: bool,
    ) -> object:
        for attempt in range(3):
            if self.engine.hosts(did):
                try:
                    return await self.engine.submit(did, make_work(), forwarded=forwarded)
                except NotHosted:
                    pass  # it left while we were looking: route it like any remote pico
            if hops >= MAX_HOPS:
                raise PicoError(f"gave up on {did} after {hops} forwards")
            record = await self.resolve(did, refresh=attempt > 0)
            if record is None:
                raise PicoError(f"no engine is known to host {did}")
            if record.host == self.peer_id:
                if self.engine.hosts(did):
                    continue
                raise PicoError(f"{did} is recorded here but not hosted; its record is stale")
            forward = dataclasses.replace(request, hops=hops + 1)
            try:
                data = await self.net.request(
                    record.host, MSG_PROTOCOL, forward.encode(), timeout=REQUEST_TIMEOUT
                )
            except NetError as e:
                raise PicoError(f"host {record.host} of {did} did not answer: {e}") from e
            reply = Reply.decode(data)
            if reply.record is not None:
                self.consider(reply.record, source=f"reply from {record.host}")
            if reply.error is None:
                return reply.ok
            if reply.code != "not-hosted":
                raise PicoError(reply.error)
        raise PicoError(f"could not reach the host of {did}")

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
            if isinstance(request, EventRequest):
                result = await self.event(
                    request.target,
                    request.domain,
                    request.type,
                    request.attrs,
                    eid=request.eid,
                    hops=request.hops,
                    forwarded=request.forwarded,
                )
            else:
                result = await self.query(
                    request.target,
                    request.rid,
                    request.name,
                    request.args,
                    hops=request.hops,
                    forwarded=request.forwarded,
                )
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

    async def create_pico(self, sources: list[str]) -> Pico:
        pico = self.engine.create_pico(sources)
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
        result = await self.engine.submit(
            did, Work("move", run=lambda pico: self._move_out(pico, to))
        )
        assert isinstance(result, dict)
        return result

    async def _move_out(self, pico: Pico, to: str) -> _Handoff:
        held = self.records.get(pico.did)
        if held is None:
            raise PicoError(f"no location record for {pico.did}")
        self._move_targets[pico.did] = to
        try:
            propose = MovePropose(pico.did, pico.head, pico.keypair.seed, held.raw)
            try:
                data = await self.net.request(
                    to, MOVE_PROTOCOL, propose.encode(), timeout=MOVE_TIMEOUT
                )
            except NetError as e:
                # The target may have committed and then lost its reply: ask what it holds.
                new = await self._committed_record(pico.did, to, held)
                if new is None:
                    raise PicoError(f"{to} did not answer: {e}") from e
            else:
                reply = Reply.decode(data)
                if reply.error is not None:
                    raise PicoError(f"{to} refused: {reply.error}")
                if not isinstance(reply.ok, bytes):
                    raise PicoError(f"{to} answered without a location record")
                new = location.parse_record(reply.ok)
                if not _succeeds(new, held, to):
                    raise PicoError(f"{to} signed a record that does not follow ours")
            # Still marked as our move, so taking the new record is not mistaken for
            # someone else taking the pico (which would make us stand down).
            self.consider(new.raw, source=f"move to {to}")
        finally:
            del self._move_targets[pico.did]
        for eci in pico.channels:
            self.eci_dids[eci] = pico.did
        log.info("moved %s to %s (record seq %d)", pico.did, to, new.seq)
        return _Handoff(
            self,
            pico.did,
            to,
            {"did": pico.did, "host": to, "seq": new.seq, "head": str(pico.head)},
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
            return _Handoff(
                self, did, record.host, {"did": did, "host": record.host, "seq": record.seq}
            )

        try:
            await self.engine.submit(did, Work("move", run=hand_over))
        except PicoError as e:
            log.warning("standing down %s: %s", did, e)

    async def _on_blocks(self, peer: str, data: bytes) -> bytes:
        request = messages.decode_blocks_request(data)
        if self._move_targets.get(request.did) != peer:
            raise PermissionError(f"{peer} may not fetch blocks of {request.did}")
        store = self.engine.store
        if isinstance(request, ManifestRequest):
            cids = [block.cid for block in walk(store, request.root)]
            if len(cids) > MAX_MANIFEST:
                raise PicoError(f"{len(cids)} blocks is more than a move can carry yet")
            return messages.encode_manifest(cids)
        blocks: list[bytes | None] = []
        size = 0
        for cid in request.want:
            if size >= BLOCKS_REPLY_BUDGET:
                break  # the requester asks again for the rest
            raw = store.get(cid)
            blocks.append(raw)
            size += len(raw or b"")
        return messages.encode_blocks(blocks)

    # -- moving: target side ------------------------------------------------------------

    async def _on_move(self, peer: str, data: bytes) -> bytes:
        try:
            request = messages.decode_move_request(data)
            if isinstance(request, MoveDrained):
                self.engine.drained(request.did)
                return Reply(ok=True).encode()
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
        heads = await self._fetch(peer, did, request.head)
        log.info("fetched %s from %s: %d heads verified", did, peer, len(heads))
        raw = self._sign_record(keypair, seq=old.seq + 1, prev=old)
        record = self.consider(raw, source="self")
        if record is None or record.raw != raw:  # check-and-set lost
            raise PicoError(f"a competing record for {did} won; move aborted")
        self.engine.adopt(keypair, request.head)
        assert self._nursery is not None
        self._nursery.start_soon(self._publish, record)
        return raw

    async def _fetch(self, peer: str, did: str, head: CID) -> list[Head]:
        """Fetch every block reachable from ``head`` that we lack, verifying each.

        The source's manifest says which blocks to ask for; it is not trusted.  Each
        block must match its CID, and at the end a local walk from the head must find
        every reachable block and a head chain signed by ``did`` from genesis.
        """
        store = self.engine.store
        manifest = messages.decode_manifest(
            await self.net.request(
                peer, BLOCKS_PROTOCOL, ManifestRequest(did, head).encode(), timeout=MOVE_TIMEOUT
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

        seen, stack = {head}, [head]
        while stack:
            block = get(cid := stack.pop())
            if block is None:
                raise PicoError(f"{peer}'s manifest left out block {cid} (reachable from {head})")
            for link in block.links():
                if link not in seen:
                    seen.add(link)
                    stack.append(link)
        heads = verify_chain(get, head)
        if heads[-1].pico != did:
            raise PicoError(f"head {head} is signed for {heads[-1].pico}, not {did}")
        return heads


def _succeeds(new: LocationRecord, held: LocationRecord, host: str) -> bool:
    """Is ``new`` the record by which ``host`` took the pico over from ``held``?"""
    return (
        new.did == held.did
        and new.host == host
        and new.prev == held.hash
        and new.seq == held.seq + 1
    )


class _Handoff:
    """The old host's side of a committed move: forward the queue, then say drained."""

    def __init__(self, mesh: Mesh, did: str, to: str, result: dict[str, object]) -> None:
        self.mesh, self.did, self.to, self.result = mesh, did, to, result
        self.forwarded = 0

    async def forward(self, work: Work) -> None:
        self.forwarded += 1
        target = Target(self.did, work.eci or None)
        try:
            if work.kind == "event":
                assert work.event is not None
                ev = work.event
                result = await self.mesh.event(
                    target, ev.domain, ev.type, dict(ev.attrs), eid=ev.eid, hops=1, forwarded=True
                )
            elif work.kind == "query":
                result = await self.mesh.query(
                    target, work.rid, work.name, dict(work.args), hops=1, forwarded=True
                )
            else:
                raise PicoError(f"{self.did} moved to {self.to} before this {work.kind} ran")
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
