"""Bitswap 1.2.0 over p2pico.net: serve blocks from a block store, fetch blocks from a peer.

Neighbours: protocols.bitswap (the sans-I/O codec, ``answer`` and ``FetchSession`` this module
drives), p2pico.net (frame streams: ``set_stream_handler`` / ``open_stream``), dag.store (the
blocks we serve), dag.block (verification of the blocks we receive).

Theory of operation
-------------------
Bitswap is message-based, not request/response (ipfs/specs ``src/bitswap-protocol.md``).
A client C opens a stream to the server S and writes wantlist messages on it; S answers on a
stream **S opens to C** and C reads the answers there. So both roles share one inbound
handler: every message arriving on an inbound ``/ipfs/bitswap/1.2.0`` stream may carry wants
(we answer them on our outbound stream) and blocks or presences (they settle our fetches).
An inbound stream is read until the peer closes it, since newer Kubo keeps one stream open
for later wants (shared/research/ipld.md §4). We do the same: our messages to a peer, wants
and answers alike, go one at a time on one outbound stream, opened on first use and kept
(a new stream costs 3-5 ms in py-libp2p, shared/research/libp2p-probe.md) while it is busy:
one idle for ``KEEP_IDLE`` seconds is closed before the next message, since Helia resets an
inbound stream after 10 s without a message and a message arriving as it does is lost
silently. A kept stream that fails is replaced; a message whose new stream fails too goes
on another, ``SEND_ATTEMPTS`` new streams in all. A peer too busy to read (its yamux window
shut) is waited for until the send's deadline (p2pico.net lifts py-libp2p's 5 s limit).

Serving: ``Bitswap.may_serve(peer_id, cid)`` decides, per block, whether a peer gets it.
By default nothing is served to anyone. ``allow(peer_id, roots=...)`` lets a peer fetch every
block reachable from ``roots`` (the set is computed from the store at that moment); ``allow``
without roots lets it fetch anything in the store; ``revoke`` takes it back. A caller with a
different rule passes ``may_serve=`` to the constructor instead. A block we will not give is
answered exactly like one we do not have: a DONT_HAVE if the peer asked for one, else
nothing. Wants we cannot serve are not remembered; a peer that wants them later asks again.

Fetching: ``fetch(peer_id, cids)`` sends one wantlist (want-block, send-dont-have) and waits
until every CID has arrived or been refused, or the timeout passes. Each block's CID is
recomputed from its payload prefix and bytes, and only CIDs we asked for are taken; each
is then checked again and strictly decoded with ``Block.decode``, and a block that fails is
dropped and logged. Blocks from other peers, or that we did not ask for, are ignored. Every
want of the fetch is cancelled at its end, the answered ones too (Helia keeps an answered
want, and would ignore the same want from a later fetch).

Whole DAGs: ``fetch_dag(peer_id, root)`` walks links from ``root`` breadth-first, asks for
the blocks the store lacks in batches of ``FETCH_BATCH`` (one wantlist each), verifies and
stores each batch, and follows the links of every block, fetched or already held. It
reports what it could not get instead of raising, so a caller sees a partial DAG as such.

Sharing: ``share(peer_id, name, root)`` is ``allow`` kept per name, a snapshot: the blocks
``root`` reaches when shared; re-sharing one name refreshes only that root. ``grant(peer_id,
did)`` is what the node's operator gets (``p2pico share``): a grant that follows the pico.
Whenever the peer asks, it may have every block reachable from the pico's *current* head
(``heads(did)``, set by ``follow_heads``: the hosted pico's head, else the newest imported
one), so new commits are served without sharing again. The reachable set is kept per DID and
extended from the new head when the head moves (a walk that stops at blocks already in the
set: O(new blocks)). ``load_grants`` / ``on_grants`` tie grants to a table that outlives the
process (p2pico.home's ``grants``), so a restarted node serves what it served before.
``revoke`` drops every grant of a peer, snapshots and following grants.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import base58
import trio

from dag.block import Block
from dag.cid import CID
from dag.store import BlockStore, get_with_links
from p2pico.net import FrameStream, Net, NetError
from protocols import bitswap
from protocols.bitswap import BitswapError, FetchSession, Message

__all__ = [
    "FETCH_BATCH",
    "FETCH_TIMEOUT",
    "PROTOCOL_ID",
    "Bitswap",
    "DagFetch",
    "MayServe",
    "is_peer_id",
]

logger = logging.getLogger(__name__)

PROTOCOL_ID: Final = bitswap.PROTOCOL_ID
# Default wait for a fetch: the whole exchange, from dialling to the last block.
FETCH_TIMEOUT: Final = 30.0
# Opening the reply stream and writing all replies to one message. A peer that cannot take
# 4 MiB in this long is too slow to serve; its wants are dropped and it may ask again.
REPLY_TIMEOUT: Final = 20.0
# Sending cancels after a fetch is best effort and must not hold the caller up.
CANCEL_TIMEOUT: Final = 2.0
# Our stream to a peer is kept for the next message only while it was written to in the last
# KEEP_IDLE seconds; an older one is closed and the message goes on a new stream. Helia
# resets an inbound Bitswap stream that has brought no message for 10 s, and a message that
# reaches it as it does is dropped with no error on our side (the write had already
# returned), so a kept stream must never come near that age.
KEEP_IDLE: Final = 5.0
# Fresh streams a message is written on before it is given up (a failed kept stream does not
# count): a peer may reset a stream it had no time to read, and answers on the next.
SEND_ATTEMPTS: Final = 3
# CIDs per wantlist when fetching a whole DAG: well under MAX_WANTLIST_ENTRIES, and a batch of
# 256 KiB blocks (our largest) still arrives in a few seconds on a slow link.
FETCH_BATCH: Final = 512

MayServe = Callable[[str, CID], bool]
# The current head of a pico (by DID) on this node, or None when it has none.
Heads = Callable[[str], CID | None]


def is_peer_id(text: str) -> bool:
    """Whether ``text`` is a base58btc libp2p peer id (an identity or sha2-256 multihash)."""
    try:
        raw = base58.b58decode(text)
    except ValueError:
        return False
    if len(raw) < 3 or raw[0] not in (0x00, 0x12):
        return False
    return raw[1] == len(raw) - 2 and (raw[0] == 0x00 or raw[1] == 32)


@dataclass
class DagFetch:
    """What ``fetch_dag`` did: the blocks the DAG has, those fetched, and those not obtained."""

    root: CID
    blocks: int = 0  # blocks of the DAG now in the store (fetched or held before)
    fetched: int = 0  # of those, fetched now
    bytes: int = 0  # bytes fetched now
    batches: int = 0  # wantlists sent
    seconds: float = 0.0
    missing: list[CID] = field(default_factory=list)  # refused, unanswered or invalid

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "complete": self.complete,
            "blocks": self.blocks,
            "fetched": self.fetched,
            "bytes": self.bytes,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "missing": [str(cid) for cid in self.missing[:20]],
            "missing_count": len(self.missing),
        }


class _Fetch:
    """One ``fetch`` in progress: its session, the verified blocks, and a wake-up event."""

    def __init__(self, cids: Iterable[CID]) -> None:
        self.session = FetchSession(cids)
        self.blocks: dict[CID, Block] = {}
        self.changed = trio.Event()


class _Outbox:
    """Our sending side to one peer: the stream kept open for our messages, and the lock
    that lets one task at a time write a message on it."""

    def __init__(self) -> None:
        self.stream: FrameStream | None = None
        self.lock = trio.Lock()
        self.written = 0.0  # trio time of the last write that completed on `stream`


class Bitswap:
    """Serve and fetch blocks over ``/ipfs/bitswap/1.2.0``; see the module docstring.

    Create it with the Net and the block store to serve from, then call ``start`` once.
    """

    def __init__(self, net: Net, store: BlockStore, *, may_serve: MayServe | None = None) -> None:
        self.net = net
        self.store = store
        self._rule = may_serve
        # peer id -> the CIDs it may fetch, or None for everything in the store
        self._allowed: dict[str, frozenset[CID] | None] = {}
        # peer id -> grant name -> root (see ``share``)
        self._shares: dict[str, dict[str, CID]] = {}
        # peer id -> DIDs it may follow (see ``grant``), and per DID the head the reachable
        # set was last extended to, with the set
        self._grants: dict[str, dict[str, None]] = {}
        self._reach: dict[str, tuple[CID, set[CID]]] = {}
        self._heads: Heads = lambda did: None
        # Called with (peer, did) when a grant is made, and (peer, None) when a peer's
        # grants are revoked: p2pico.http persists them in the node's home.
        self.on_grants: Callable[[str, str | None], None] | None = None
        self._fetches: dict[str, list[_Fetch]] = {}
        self._outboxes: dict[str, _Outbox] = {}
        self.streams_opened = 0  # outbound streams opened (a kept one serves many messages)
        self.streams_retired = 0  # kept streams closed for idling KEEP_IDLE seconds
        # Blocks that arrived for a CID we wanted but failed verification or decoding.
        self.blocks_rejected = 0
        # fetch_dag calls under way: their blocks are stored before any root reaches them,
        # so a garbage collection must wait (p2pico.http refuses gc meanwhile).
        self.dag_fetches_open = 0

    def start(self) -> None:
        """Register the protocol handler; from now on peers can ask us and answer us."""
        self.net.set_stream_handler(PROTOCOL_ID, self._on_stream)
        self.net.on_peer_disconnected(self._peer_gone)

    def _peer_gone(self, peer_id: str) -> None:
        # Its connection closed, and our kept stream with it: forget the stream (a writer
        # holding the outbox's lock fails on it and finishes on a stream of its own).
        self._outboxes.pop(peer_id, None)

    # --- entitlement ---

    def allow(self, peer_id: str, roots: Iterable[CID] | None = None) -> None:
        """Let ``peer_id`` fetch the blocks reachable from ``roots`` (all blocks if None).

        Reachability is computed now, from what the store holds; blocks missing from the
        store end that branch of the walk. Replaces any earlier grant for the peer.
        """
        self._allowed[peer_id] = None if roots is None else frozenset(self._reachable(roots))

    def revoke(self, peer_id: str) -> None:
        """Serve ``peer_id`` nothing from now on (a no-op if it had no grant)."""
        self._allowed.pop(peer_id, None)
        self._shares.pop(peer_id, None)
        if self._grants.pop(peer_id, None) is not None and self.on_grants is not None:
            self.on_grants(peer_id, None)

    def follow_heads(self, heads: Heads) -> None:
        """Where following grants find a pico's current head (``grant``)."""
        self._heads = heads

    def grant(self, peer_id: str, did: str) -> int:
        """Let ``peer_id`` fetch the pico ``did``'s blocks, now and after later commits.

        Returns how many blocks its current head reaches (0 when the node has none yet).
        """
        self._grants.setdefault(peer_id, {})[did] = None
        if self.on_grants is not None:
            self.on_grants(peer_id, did)
        return len(self._reachable_from_head(did))

    def load_grants(self, grants: Iterable[tuple[str, str]]) -> None:
        """Restore following grants kept by the node (no ``on_grants`` call)."""
        for peer_id, did in grants:
            self._grants.setdefault(peer_id, {})[did] = None

    def _reachable_from_head(self, did: str) -> set[CID]:
        head = self._heads(did)
        if head is None:
            return set()
        known = self._reach.get(did)
        if known is not None and known[0] == head:
            return known[1]
        # the old set is closed under links: the walk stops where it begins
        seen = self._reachable([head], known[1] if known is not None else set())
        self._reach[did] = (head, seen)
        return seen

    def share(self, peer_id: str, name: str, root: CID) -> int:
        """Add (or refresh) the grant ``name`` of ``peer_id``: the blocks ``root`` reaches now.

        The peer may then fetch what any of its named grants reach. Returns how many blocks
        it may fetch in all.
        """
        shares = self._shares.setdefault(peer_id, {})
        shares[name] = root
        self.allow(peer_id, roots=list(shares.values()))
        allowed = self._allowed[peer_id]
        assert allowed is not None
        return len(allowed)

    def shares(self) -> dict[str, dict[str, str]]:
        """Every grant: peer id -> name (a DID for following grants) -> its root CID now."""
        out = {
            peer: {name: str(root) for name, root in grants.items()}
            for peer, grants in self._shares.items()
        }
        for peer, dids in self._grants.items():
            for did in dids:
                head = self._heads(did)
                out.setdefault(peer, {})[did] = str(head) if head is not None else ""
        return out

    def may_serve(self, peer_id: str, cid: CID) -> bool:
        """Whether ``peer_id`` may have the block ``cid`` (if we hold it)."""
        if self._rule is not None:
            return self._rule(peer_id, cid)
        if peer_id in self._allowed:
            allowed = self._allowed[peer_id]
            if allowed is None or cid in allowed:
                return True
        return any(cid in self._reachable_from_head(did) for did in self._grants.get(peer_id, ()))

    def _reachable(self, roots: Iterable[CID], seen: set[CID] | None = None) -> set[CID]:
        """`seen` (or a new set) with every block `roots` reach in the store added; links
        into `seen` are not followed."""
        seen = set() if seen is None else seen
        stack = list(roots)
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            got = get_with_links(self.store, cid)
            if got is not None:
                stack.extend(got[1])
        return seen

    # --- fetching ---

    async def fetch(
        self, peer_id: str, cids: Iterable[CID], *, timeout: float = FETCH_TIMEOUT
    ) -> dict[CID, Block]:
        """Ask ``peer_id`` for ``cids`` and return the verified blocks it sent.

        A CID is missing from the result when the peer said DONT_HAVE, sent bytes that do
        not verify, or had not answered within ``timeout`` seconds. The blocks are not
        stored; that is the caller's choice.

        Raises:
            ValueError: more than ``protocols.bitswap.MAX_WANTLIST_ENTRIES`` CIDs.
            NetError: the wantlist could not be sent (unreachable peer, no Bitswap, …).
        """
        fetch = _Fetch(cids)
        if fetch.session.done:
            return {}
        fetches = self._fetches.setdefault(peer_id, [])
        fetches.append(fetch)  # before sending: the answer may beat us back
        try:
            with trio.move_on_after(timeout):
                await self._send(peer_id, [fetch.session.request()], timeout=timeout)
                while not fetch.session.done:
                    await fetch.changed.wait()
                    fetch.changed = trio.Event()
            with trio.move_on_after(CANCEL_TIMEOUT):
                try:
                    await self._send(peer_id, [fetch.session.cancel()], timeout=CANCEL_TIMEOUT)
                except NetError as error:
                    logger.debug("bitswap: cancel to %s not sent: %s", peer_id, error)
        finally:
            fetches.remove(fetch)
            if not fetches:
                del self._fetches[peer_id]
        return fetch.blocks

    async def fetch_dag(
        self,
        peer_id: str,
        root: CID,
        *,
        batch: int = FETCH_BATCH,
        timeout: float = FETCH_TIMEOUT,
    ) -> DagFetch:
        """Fetch every block ``root`` reaches that the store lacks from ``peer_id``; store them.

        Breadth-first: each round asks for up to ``batch`` missing CIDs in one wantlist
        (``timeout`` seconds per round), stores the verified blocks in one ``put_many``, and
        queues their links. Blocks already in the store are not fetched, but their links are
        followed. A block the peer does not give is listed in ``missing`` and its sub-DAG is
        not explored; the walk goes on with the rest.

        Raises:
            NetError: a wantlist could not be sent (unreachable peer, no Bitswap, …).
        """
        self.dag_fetches_open += 1
        try:
            return await self._fetch_dag(peer_id, root, batch=batch, timeout=timeout)
        finally:
            self.dag_fetches_open -= 1

    async def _fetch_dag(self, peer_id: str, root: CID, *, batch: int, timeout: float) -> DagFetch:
        started = time.perf_counter()
        result = DagFetch(root)
        seen = {root}
        frontier = [root]
        while frontier:
            take, frontier = frontier[:batch], frontier[batch:]
            found: list[Block] = []
            wanted: list[CID] = []
            held = self.store.get_many(take)  # the round's blocks the store has, read at once
            for cid in take:
                data = held.get(cid)
                if data is None:
                    wanted.append(cid)
                else:
                    found.append(Block.decode(cid, data))
            if wanted:
                result.batches += 1
                got = await self.fetch(peer_id, wanted, timeout=timeout)
                if got:
                    self.store.put_many(got.values())
                result.fetched += len(got)
                result.bytes += sum(len(block.data) for block in got.values())
                result.missing += [cid for cid in wanted if cid not in got]
                found += got.values()
            result.blocks += len(found)
            for block in found:
                for link in block.links():
                    if link not in seen:
                        seen.add(link)
                        frontier.append(link)
        result.seconds = time.perf_counter() - started
        return result

    async def _send(self, peer_id: str, messages: list[Message], *, timeout: float) -> None:
        """Write `messages` on our stream to `peer_id`, opened on first use and kept while
        it was written to in the last ``KEEP_IDLE`` seconds (an older one is closed).

        A kept stream the peer has closed or reset fails on write; the messages then go
        once more on a new stream, and on up to ``SEND_ATTEMPTS`` new streams in all if
        those fail too (a message sent twice is harmless: wants and blocks are
        idempotent). A stream we gave up on mid-write (an error, a timeout) is reset and
        forgotten, since the peer may hold part of a frame. A peer's outbox is kept while it
        has a stream: it goes when a send fails and when the peer's connection closes.
        """
        outbox = self._outboxes.get(peer_id)
        if outbox is None:  # (setdefault would build an _Outbox and its lock every message)
            outbox = self._outboxes[peer_id] = _Outbox()
        frames = [bitswap.encode(message) for message in messages]
        async with outbox.lock:
            try:
                await self._write(peer_id, outbox, frames, timeout)
            except BaseException:
                if self._outboxes.get(peer_id) is outbox:  # e.g. a peer we could not reach
                    del self._outboxes[peer_id]
                raise
            if self._outboxes.get(peer_id) is not outbox and outbox.stream is not None:
                # the peer's connection closed while we waited or wrote, and the outbox was
                # forgotten: its stream is closed, not kept
                stream, outbox.stream = outbox.stream, None
                await stream.close()

    async def _write(
        self, peer_id: str, outbox: _Outbox, frames: list[bytes], timeout: float
    ) -> None:
        fresh = 0  # new streams tried
        while True:
            stream = outbox.stream
            if stream is not None and trio.current_time() - outbox.written > KEEP_IDLE:
                outbox.stream = None  # too near the peer's idle reset: closed, not reused
                self.streams_retired += 1
                await stream.close()
                stream = None
            kept = stream
            if stream is None:
                stream = await self.net.open_stream(peer_id, PROTOCOL_ID, timeout=timeout)
                outbox.stream = stream
                self.streams_opened += 1
                fresh += 1
            try:
                for frame in frames:
                    await stream.send_frame(frame)
                outbox.written = trio.current_time()
                return
            except BaseException as error:
                outbox.stream = None
                await stream.reset()
                if not isinstance(error, NetError) or (kept is None and fresh >= SEND_ATTEMPTS):
                    raise
                logger.debug(
                    "bitswap: stream to %s failed, writing on a new one: %s", peer_id, error
                )

    # --- the inbound stream: wants to answer, answers to our wants ---

    async def _on_stream(self, peer_id: str, stream: FrameStream) -> None:
        while True:
            try:
                frame = await stream.receive_frame()
            except NetError as error:
                logger.info("bitswap: stream from %s failed: %s", peer_id, error)
                await stream.reset()
                return
            if frame is None:
                return
            try:
                message = bitswap.decode(frame)
            except BitswapError as error:
                logger.info("bitswap: bad message from %s, resetting: %s", peer_id, error)
                await stream.reset()
                return
            if message.payload or message.presences:
                self._settle(peer_id, message)
            if message.entries:
                await self._answer(peer_id, message)

    def _settle(self, peer_id: str, message: Message) -> None:
        for fetch in self._fetches.get(peer_id, ()):
            for cid, data in fetch.session.receive(message):
                try:
                    fetch.blocks[cid] = Block.decode(cid, data)
                except ValueError as error:  # BlockError, DagCborError, CIDError
                    fetch.session.reject(cid)
                    self.blocks_rejected += 1
                    logger.warning("bitswap: rejected block %s from %s: %s", cid, peer_id, error)
            fetch.changed.set()

    async def _answer(self, peer_id: str, message: Message) -> None:
        # the blocks this peer may have, read from the store at once
        servable = self.store.get_many(
            {e.cid for e in message.entries if not e.cancel and self.may_serve(peer_id, e.cid)}
        )
        replies, missing = bitswap.answer(message, servable.get)
        if missing:
            logger.debug("bitswap: %s wanted %d block(s) we do not serve", peer_id, len(missing))
        if not replies:
            return
        with trio.move_on_after(REPLY_TIMEOUT) as scope:
            try:
                await self._send(peer_id, replies, timeout=REPLY_TIMEOUT)
            except NetError as error:
                logger.info("bitswap: reply to %s not delivered: %s", peer_id, error)
        if scope.cancelled_caught:
            logger.info("bitswap: reply to %s timed out after %s s", peer_id, REPLY_TIMEOUT)
