"""The mesh explorer: the data behind the web UI served at ``/`` (p2pico/ui).

Neighbours: p2pico.mesh (location records, routing, moves), p2pico.engine (the
picos hosted here), protocols.messages (the ``/p2pico/explore/1.0.0`` codec),
p2pico.http (mounts ``routes()``), p2pico.node (starts ``serve``).

The browser talks to ONE node; that node gathers the mesh over libp2p:

* Every engine answers ``summary`` requests with its hosted picos as small map
  summaries (parent, children, rulesets, name, established subscriptions).  With
  the epoch and version of its previous answer a requester gets only what
  changed since, and the host holds the request (a long poll) until something
  does.  Local changes are found by comparing each hosted pico's head with the
  last one seen, on a short tick.
* ``about``, ``history`` and ``manage`` (install / uninstall a ruleset, create /
  delete a child) are routed to the pico's host by its location record.  A
  ``manage`` runs on the host as a "manage" Work item, between the pico's
  transactions, and commits like an event whose cause is ``p2pico:<action>``.
* ``GET /api/mesh/events`` streams server-sent events: first a full ``mesh``
  snapshot, then ``pico`` / ``gone`` / ``record`` / ``engine`` / ``move``
  deltas.  While a stream is open the node long-polls every engine of the mesh.

HTTP routes (JSON):

    GET    /                              the explorer page
    GET    /ui/...                        its static files (p2pico/ui)
    GET    /api/mesh                      {"self", "engines", "picos"} of the whole mesh
    GET    /api/mesh/events               the same, then deltas (text/event-stream)
    POST   /api/mesh/move                 {"did", "to"} → {"id"}; progress as "move" events
    GET    /api/picos/:did/about          the pico page's data, from its host
    GET    /api/picos/:did/history        ?limit=N: the verified head chain, from its host
    POST   /api/picos/:did/rulesets       {"source" | "url", "config"} → {"rid"}
    DELETE /api/picos/:did/rulesets/:rid  → {"rid"}
    POST   /api/picos/:did/children       {"rulesets": [source or url]} → {"did", "eci"}
    DELETE /api/picos/:did/children/:kid  → {"did"}
    POST   /api/krl/check                 {"source"} → {"rid"} or 400 {"error", "line", "column"}

A KRL syntax or compile error is answered 400 with its ``line`` and ``column``
(compiled on this node before anything is sent to the host).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

import krl
from p2pico import history as hist
from p2pico.engine import (
    NotHosted,
    Pico,
    PicoError,
    Transaction,
    Work,
    new_txn_id,
)
from p2pico.mesh import Mesh
from p2pico.net import NetError
from protocols.location import LocationRecord
from protocols.messages import (
    EXPLORE_PROTOCOL,
    MAX_HOPS,
    AboutRequest,
    HistoryRequest,
    ManageRequest,
    MessageError,
    Reply,
    SummaryReply,
    SummaryRequest,
    decode_explore_request,
)

log = logging.getLogger("p2pico.explorer")

UI_DIR = Path(__file__).resolve().parent / "ui"
# A watcher's long poll: the host holds it this long when nothing changes.
WATCH_WAIT_MS = 15_000
# After a failed poll a watcher waits this long before asking that engine again.
WATCH_RETRY = 2.0
REQUEST_TIMEOUT = 30.0
# Departures remembered for deltas; a requester further behind gets a full summary.
MAX_GONE = 10_000
# Log lines kept per pico (KRL `log` statements and engine warnings naming the pico).
LOG_LINES = 200
# An entity variable larger than this (as JSON) is shown as a preview on the pico page.
MAX_VALUE_JSON = 32 * 1024
# The largest KRL source the explorer installs, and fetches from an http(s) URL.
MAX_SOURCE = 1024 * 1024
SSE_KEEPALIVE = 15.0
SUBSCRIPTION_RID = "io.picolabs.subscription"
# Where a pico's display name may live (pico-engine's UI ruleset, then wrangler's).
NAME_RIDS = ("io.picolabs.pico-engine-ui", "io.picolabs.wrangler")
DID_RE = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]+")


class ExplorerError(Exception):
    def __init__(self, message: str, status: int = 400, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


# -- what the map and the pico page show of a pico ---------------------------------------


def _established(ent: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    subs = ent.get(SUBSCRIPTION_RID, {}).get("established")
    return [s for s in subs if isinstance(s, dict)] if isinstance(subs, list) else []


def summarize(pico: Pico) -> dict[str, object]:
    """A pico as the map draws it: small, so thousands fit in one reply."""
    name = None
    for rid in NAME_RIDS:
        value = pico.ent.get(rid, {}).get("name")
        if isinstance(value, str):
            name = value
            break
    out: dict[str, object] = {
        "did": pico.did,
        "seq": pico.seq,
        "rids": [rs.rid for rs in pico.rulesets],
    }
    if name is not None:
        out["name"] = name
    if pico.parent:
        out["parent"] = pico.parent["did"]
    if pico.children:
        out["children"] = [kid["did"] for kid in pico.children]
    subs = [
        [str(s.get("Rx", "")), str(s.get("Tx", ""))]
        for s in _established(pico.ent)
        if isinstance(s.get("Rx"), str) and isinstance(s.get("Tx"), str)
    ]
    if subs:
        out["subs"] = subs
    return out


def _preview(value: object) -> object:
    text = json.dumps(value, default=str)
    if len(text) <= MAX_VALUE_JSON:
        return value
    return {"truncated": True, "json_bytes": len(text), "preview": text[:2000]}


def krl_check(source: str) -> str:
    """Compile KRL; the rid, or ExplorerError with the error's line and column."""
    if len(source) > MAX_SOURCE:
        raise ExplorerError(f"the source is {len(source)} characters; the limit is {MAX_SOURCE}")
    try:
        return krl.compile_ruleset(source, filename="explorer").rid
    except (krl.KrlSyntaxError, krl.KrlCompileError) as e:
        raise ExplorerError(
            str(e), 400, line=e.line, column=e.column, detail=e.message, kind=type(e).__name__
        ) from None


# -- per-pico log lines --------------------------------------------------------------------


class PicoLogs(logging.Handler):
    """Keeps the log lines that name a hosted pico: KRL `log` statements (the engine writes
    them as ``[<last 8 of the DID>] rid level: message``) and warnings with its DID."""

    def __init__(self, hosted: Callable[[], Iterable[str]]) -> None:
        super().__init__(logging.INFO)
        self._hosted = hosted
        self.lines: dict[str, deque[dict[str, object]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is logging's problem, not ours
            return
        dids = set(DID_RE.findall(message))
        if message.startswith("[") and "]" in message[:12]:
            tail = message[1 : message.index("]")]
            dids.update(d for d in self._hosted() if d.endswith(tail))
        for did in dids:
            lines = self.lines.setdefault(did, deque(maxlen=LOG_LINES))
            lines.append(
                {
                    "ts": int(record.created * 1000),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "message": message,
                }
            )


# -- the mesh as the node the browser talks to sees it --------------------------------------


@dataclass
class EngineView:
    peer: str
    epoch: str | None = None
    version: int = 0
    picos: dict[str, dict[str, object]] = field(default_factory=dict)
    reachable: bool | None = None  # None: not asked yet
    error: str | None = None


class Explorer:
    def __init__(self, mesh: Mesh, http_info: Callable[[], dict[str, object]] | None = None):
        self.mesh = mesh
        self.engine = mesh.engine
        self.http_info = http_info or (lambda: {})
        # -- what this engine reports to others ---------------------------------------
        self.epoch = secrets.token_hex(6)
        self.version = 0
        self._seen: dict[str, tuple[int, str]] = {}  # did -> (seq, head) last reported
        self._changed_at: dict[str, int] = {}  # did -> version it last changed at
        self._gone: dict[str, tuple[int, bool]] = {}  # did -> (version, deleted?)
        self._gone_floor = 0  # deltas since a version below this are not complete
        self._local_change = trio.Event()
        # picos that committed, arrived or left since the last scan (Engine.change_listeners)
        self._dirty: set[str] = set()
        self._dirty_event = trio.Event()
        # summary requests held until something changes; the scanner runs only for them
        # (every other reader scans what is dirty itself), so a node nobody watches
        # spends nothing per commit on the explorer
        self._waiting = 0
        self._waiter_came = trio.Event()
        # -- what this node knows of the mesh --------------------------------------------
        self.views: dict[str, EngineView] = {}
        self.deleted: set[str] = set()
        self._subscribers: list[trio.MemorySendChannel[tuple[str, object]]] = []
        self._watching: set[str] = set()
        self._view_change = trio.Event()
        self._move_ids = itertools.count(1)
        self.logs = PicoLogs(lambda: self.engine.picos.keys())
        self._nursery: trio.Nursery | None = None

    @property
    def peer_id(self) -> str:
        return self.mesh.peer_id

    # -- lifetime -----------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        logger = logging.getLogger("p2pico")
        logger.addHandler(self.logs)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.engine.change_listeners.append(self._on_change)
                self._scan()
                self.mesh.net.set_handler(EXPLORE_PROTOCOL, self._on_explore)
                self.mesh.record_listeners.append(self._on_record)
                task_status.started()
                while True:  # woken by commits, arrivals and departures, not by a timer
                    await self._dirty_event.wait()
                    if not self._waiting:
                        self._waiter_came = trio.Event()  # not one that came and went before
                        await self._waiter_came.wait()
                    self._scan_dirty()
        finally:
            logger.removeHandler(self.logs)
            if self._on_change in self.engine.change_listeners:
                self.engine.change_listeners.remove(self._on_change)
            if self._on_record in self.mesh.record_listeners:
                self.mesh.record_listeners.remove(self._on_record)

    # -- this engine's own picos ------------------------------------------------------------

    def _on_change(self, did: str) -> None:
        """A hosted pico committed, arrived or left (called by the engine, on the trio thread)."""
        self._dirty.add(did)
        self._dirty_event.set()

    def _scan_dirty(self) -> bool:
        """Report the picos the engine said changed since the last scan (only those)."""
        dirty, self._dirty = self._dirty, set()
        if self._dirty_event.is_set():  # else the scanner still waits on it: keep it
            self._dirty_event = trio.Event()
        return self._scan(dirty)

    def _scan(self, dids: Iterable[str] | None = None) -> bool:
        """Compare the hosted picos (or only ``dids``) with what was last reported; bump
        the version on a change."""
        picos = self.engine.picos
        if dids is None:
            self._dirty.clear()  # a full scan covers them
            candidates: Iterable[str] = [*picos, *(did for did in self._seen if did not in picos)]
        else:
            candidates = dids
        changed: list[str] = []
        left: list[str] = []
        for did in candidates:
            pico = picos.get(did)
            if pico is None:
                if did in self._seen:
                    left.append(did)
            elif self._seen.get(did) != (pico.seq, str(pico.head)):
                changed.append(did)
        if not changed and not left:
            return False
        self.version += 1
        for did in changed:
            pico = picos[did]
            self._seen[did] = (pico.seq, str(pico.head))
            self._changed_at[did] = self.version
            self._gone.pop(did, None)
        for did in left:
            del self._seen[did]
            self._changed_at.pop(did, None)
            record = self.mesh.records.get(did)
            moved = record is not None and record.host != self.peer_id
            self._gone[did] = (self.version, not moved)
        while len(self._gone) > MAX_GONE:
            oldest = next(iter(self._gone))
            self._gone_floor = max(self._gone_floor, self._gone.pop(oldest)[0])
        self._local_change.set()
        self._local_change = trio.Event()
        return True

    def local_summary(self, epoch: str | None, since: int) -> SummaryReply:
        self._scan_dirty()  # what changed since the scanner last ran is in this answer
        full = epoch != self.epoch or since < self._gone_floor or since > self.version
        picos = [
            summarize(pico)
            for did, pico in self.engine.picos.items()
            if full or self._changed_at.get(did, 0) > since
        ]
        moved: list[str] = []
        deleted: list[str] = []
        if not full:
            for did, (version, was_deleted) in self._gone.items():
                if version > since:
                    (deleted if was_deleted else moved).append(did)
        return SummaryReply(self.epoch, self.version, full, picos, moved, deleted)

    async def _answer_summary(self, request: SummaryRequest) -> SummaryReply:
        reply = self.local_summary(request.epoch, request.version)
        if reply.full or reply.picos or reply.moved or reply.deleted or not request.wait_ms:
            return reply
        self._waiting += 1
        self._waiter_came.set()
        try:
            with trio.move_on_after(request.wait_ms / 1000):
                await self._local_change.wait()
        finally:
            self._waiting -= 1
        return self.local_summary(request.epoch, request.version)

    def about_local(self, did: str) -> dict[str, object]:
        pico = self.engine.picos.get(did)
        if pico is None:
            raise NotHosted(f"pico {did} is not hosted here")
        view = Transaction(pico, "", "", read_only=True)
        subs = pico.ent.get(SUBSCRIPTION_RID)
        record = self.mesh.records.get(did)
        return {
            "did": did,
            "host": self.peer_id,
            "head": str(pico.head),
            "seq": pico.seq,
            "record": {"seq": record.seq, "host": record.host} if record else None,
            "eci": pico.eci,
            "parent": pico.parent,
            "children": pico.children,
            "rulesets": view.rulesets(),
            "channels": self.engine.channels_of(did),
            "entities": {
                rid: {name: _preview(value) for name, value in sorted(vars.items())}
                for rid, vars in pico.ent.items()
            },
            "subscriptions": None
            if subs is None
            else {k: _preview(subs.get(k, [])) for k in ("established", "inbound", "outbound")},
            "schedule": self.engine.schedule_of(did),
            "logs": list(self.logs.lines.get(did, ())),
        }

    def history_local(self, did: str, limit: int) -> dict[str, object]:
        if not self.engine.hosts(did):
            raise NotHosted(f"pico {did} is not hosted here")
        current = hist.current_head(self.engine, did)
        if current is None:
            raise NotHosted(f"no history of {did} here")
        out = hist.log(self.engine, did, current)
        heads = out.get("heads")
        if isinstance(heads, list) and len(heads) > limit:
            out["heads"] = heads[:limit]
            out["more"] = len(heads) - limit
        return out

    async def manage_local(self, did: str, action: str, args: dict[str, object]) -> object:
        def run(pico: Pico, clock: Callable[[], float]) -> object:
            return self._manage(pico, clock, action, args)

        return await self.engine.submit(did, Work("manage", manage=run))

    def _manage(
        self, pico: Pico, clock: Callable[[], float], action: str, args: dict[str, object]
    ) -> object:
        """One operator change, committed like an event whose cause is p2pico:<action>."""
        txn = Transaction(pico, "", new_txn_id(), clock=clock)
        txn.engine = self.engine
        result: dict[str, object]
        attrs: dict[str, object] = {}
        if action == "install":
            source, url, config = args.get("source"), args.get("url"), args.get("config") or {}
            if not isinstance(config, dict):
                raise PicoError("'config' must be a map")
            what = source if isinstance(source, str) else url
            if not isinstance(what, str):
                raise PicoError("install needs 'source' (KRL) or 'url'")
            rid = txn.install(what, config)
            if isinstance(source, str) and isinstance(url, str):  # fetched by the explorer
                txn.info_writes[rid] = {"url": url, "config": dict(config)}
            result = attrs = {"rid": rid}
        elif action == "uninstall":
            gone = args.get("rid")
            if not isinstance(gone, str) or not any(rs.rid == gone for rs in pico.rulesets):
                raise PicoError(f"{pico.did} has no ruleset {gone!r} installed")
            txn.uninstall(gone)
            result = attrs = {"rid": gone}
        elif action == "new-child":
            rulesets = args.get("rulesets") or []
            eci = txn.new_pico(rulesets)
            result = {"did": txn.new_picos[-1].keypair.did, "eci": eci}
            attrs = {"did": result["did"]}
        elif action == "del-child":
            kid = next((k for k in pico.children if k["did"] == args.get("did")), None)
            if kid is None:
                raise PicoError(f"{args.get('did')!r} is not a child of {pico.did}")
            txn.del_pico(kid["eci"])
            result = attrs = {"did": kid["did"]}
        else:
            raise PicoError(f"unknown action {action!r}")
        event = krl.Event("p2pico", action.replace("-", "_"), attrs, eid=txn.txn_id)
        self.engine._apply(pico, event, txn)
        self._scan_dirty()
        return result

    # -- the protocol ----------------------------------------------------------------------------

    async def _on_explore(self, peer: str, data: bytes) -> bytes:
        try:
            request = decode_explore_request(data)
            if isinstance(request, SummaryRequest):
                return (await self._answer_summary(request)).encode()
            result = await self._routed(request)
            return Reply(ok=result).encode()
        except MessageError as e:
            return Reply(error=f"bad request: {e}", code="bad-request").encode()
        except PicoError as e:
            return Reply(error=str(e), code=e.code).encode()
        except (krl.KrlError, ExplorerError) as e:
            return Reply(error=str(e), code="error").encode()

    async def _routed(self, request: AboutRequest | HistoryRequest | ManageRequest) -> object:
        """Run a pico request here if the pico is hosted here, else on its host."""
        did = request.did
        for attempt in range(3):
            if self.engine.hosts(did):
                try:
                    if isinstance(request, AboutRequest):
                        return self.about_local(did)
                    if isinstance(request, HistoryRequest):
                        return self.history_local(did, request.limit)
                    return await self.manage_local(did, request.action, request.args)
                except NotHosted:
                    pass  # it left while we looked: ask its new host
            if request.hops >= MAX_HOPS:
                raise PicoError(f"gave up on {did} after {request.hops} forwards")
            record = await self.mesh.resolve(did, refresh=attempt > 0)
            if record is None:
                raise ExplorerError(f"no engine is known to host {did}", 404)
            if record.host == self.peer_id:
                if self.engine.hosts(did):
                    continue
                raise ExplorerError(f"pico {did} is not hosted anywhere now (deleted?)", 404)
            forward = type(request)(**{**_fields(request), "hops": request.hops + 1})
            try:
                data = await self.mesh.net.request(
                    record.host, EXPLORE_PROTOCOL, forward.encode(), timeout=REQUEST_TIMEOUT
                )
            except NetError as e:
                raise ExplorerError(f"host {record.host} of {did} did not answer: {e}", 502) from e
            reply = Reply.decode(data)
            if reply.error is None:
                return reply.ok
            if reply.code != "not-hosted":
                raise PicoError(reply.error)
        raise ExplorerError(f"could not reach the host of {did}", 502)

    # -- the mesh view (for /api/mesh and its event stream) ---------------------------------------

    def _engine_peers(self) -> list[str]:
        peers = {self.peer_id}
        peers.update(r.host for r in self.mesh.records.values())
        peers.update(self.mesh.net.connected_peers())
        peers.update(self.views)
        return sorted(peers, key=lambda p: (p != self.peer_id, p))

    def _view(self, peer: str) -> EngineView:
        view = self.views.get(peer)
        if view is None:
            view = self.views[peer] = EngineView(peer)
        return view

    async def _poll(self, peer: str, wait_ms: int) -> SummaryReply:
        view = self._view(peer)
        if peer == self.peer_id:
            return await self._answer_summary(SummaryRequest(view.epoch, view.version, wait_ms))
        request = SummaryRequest(view.epoch, view.version, wait_ms)
        data = await self.mesh.net.request(
            peer, EXPLORE_PROTOCOL, request.encode(), timeout=wait_ms / 1000 + REQUEST_TIMEOUT
        )
        try:
            return SummaryReply.decode(data)
        except MessageError:
            reply = Reply.decode(data)  # an error reply
            raise ExplorerError(f"{peer}: {reply.error}", 502) from None

    def _apply_summary(self, peer: str, reply: SummaryReply) -> None:
        view = self._view(peer)
        was_reachable = view.reachable
        view.reachable, view.error = True, None
        if reply.full:
            for did in view.picos.keys() - {str(p["did"]) for p in reply.picos}:
                self._publish("gone", {"did": did, "host": peer, "deleted": False})
            view.picos = {}
        for pico in reply.picos:
            did = str(pico["did"])
            view.picos[did] = pico
            self.deleted.discard(did)
            for other in self.views.values():  # it moved here: no longer where it was
                if other is not view:
                    other.picos.pop(did, None)
            self._publish("pico", {**pico, "host": peer})
        for did in reply.moved:
            view.picos.pop(did, None)
            self._publish("gone", {"did": did, "host": peer, "deleted": False})
        for did in reply.deleted:
            view.picos.pop(did, None)
            self.deleted.add(did)
            self._publish("gone", {"did": did, "host": peer, "deleted": True})
        view.epoch, view.version = reply.epoch, reply.version
        if was_reachable is not True:
            self._publish("engine", self._engine_json(peer))
        self._view_change.set()
        self._view_change = trio.Event()

    def _unreachable(self, peer: str, error: str) -> None:
        view = self._view(peer)
        changed = view.reachable is not False
        view.reachable, view.error = False, error
        if changed:
            self._publish("engine", self._engine_json(peer))

    async def refresh(self, timeout: float = 30.0) -> None:
        """Ask every engine for a full summary now (for GET /api/mesh)."""

        async def one(peer: str) -> None:
            view = self._view(peer)
            view.epoch = None  # a full answer
            try:
                with trio.fail_after(timeout):
                    self._apply_summary(peer, await self._poll(peer, 0))
            except (NetError, MessageError, ExplorerError, trio.TooSlowError) as e:
                self._unreachable(peer, str(e) or type(e).__name__)

        async with trio.open_nursery() as nursery:
            for peer in self._engine_peers():
                nursery.start_soon(one, peer)

    def _engine_json(self, peer: str) -> dict[str, object]:
        view = self.views.get(peer) or EngineView(peer)
        addrs: list[str] = []
        if peer == self.peer_id:
            addrs = self.mesh.net.multiaddrs()
        else:
            for record in self.mesh.records.values():
                if record.host == peer and record.addrs:
                    addrs = list(record.addrs)
                    break
        out: dict[str, object] = {
            "peer": peer,
            "self": peer == self.peer_id,
            "addrs": addrs,
            "connected": peer == self.peer_id or peer in self.mesh.net.connected_peers(),
            "reachable": view.reachable,
            "error": view.error,
        }
        if peer == self.peer_id:
            out["http"] = self.http_info().get("http")
        return out

    def snapshot(self) -> dict[str, object]:
        picos: list[dict[str, object]] = []
        placed: set[str] = set()
        for peer, view in self.views.items():
            for did, pico in view.picos.items():
                if did not in placed:
                    placed.add(did)
                    picos.append({**pico, "host": peer})
        for did, record in self.mesh.records.items():  # known only by their records
            if did not in placed and did not in self.deleted:
                picos.append({"did": did, "host": record.host, "partial": True})
        return {
            "self": self.peer_id,
            "engines": [self._engine_json(p) for p in self._engine_peers()],
            "picos": picos,
        }

    # -- live updates ---------------------------------------------------------------------------

    def _publish(self, kind: str, data: object) -> None:
        for channel in list(self._subscribers):
            try:
                channel.send_nowait((kind, data))
            except trio.WouldBlock:  # a stalled browser: drop it, it reconnects
                self._subscribers.remove(channel)
                channel.close()
            except trio.BrokenResourceError:
                self._subscribers.remove(channel)

    def _on_record(self, new: LocationRecord, old: LocationRecord | None) -> None:
        try:  # called inside Mesh.consider: never let the explorer break record handling
            self._record_changed(new, old)
        except Exception:
            log.exception("explorer: handling the record of %s failed", new.did)

    def _record_changed(self, new: LocationRecord, old: LocationRecord | None) -> None:
        if old is not None and old.host == new.host and old.seq == new.seq:
            return
        if old is None or old.host != new.host:
            self._publish(
                "record",
                {
                    "did": new.did,
                    "host": new.host,
                    "seq": new.seq,
                    "from": old.host if old else None,
                },
            )
        self._ensure_watchers()

    def _ensure_watchers(self) -> None:
        if not self._subscribers or self._nursery is None:
            return
        for peer in self._engine_peers():
            if peer not in self._watching:
                self._watching.add(peer)
                if peer not in self.views:
                    self._publish("engine", self._engine_json(peer))
                self._nursery.start_soon(self._watch, peer)

    async def _watch(self, peer: str) -> None:
        """Long-poll one engine while any browser listens."""
        try:
            while self._subscribers:
                try:
                    reply = await self._poll(peer, WATCH_WAIT_MS)
                except Exception as e:  # an engine that fails must not stop the node
                    if not isinstance(e, NetError | MessageError | ExplorerError):
                        log.exception("explorer: polling %s failed", peer)
                    self._unreachable(peer, str(e) or type(e).__name__)
                    await trio.sleep(WATCH_RETRY)
                    continue
                self._apply_summary(peer, reply)
        finally:
            self._watching.discard(peer)

    async def events(self) -> AsyncIterator[bytes]:
        """The SSE stream: a snapshot, then every change."""
        send, receive = trio.open_memory_channel[tuple[str, object]](10_000)
        try:
            await self.refresh()
            # Subscribed only now, with no await before the snapshot is taken: nothing
            # falls between the two, and the refresh's own changes are not sent twice.
            self._subscribers.append(send)
            yield _sse("mesh", self.snapshot())
            self._ensure_watchers()
            while True:
                with trio.move_on_after(SSE_KEEPALIVE):
                    try:
                        kind, data = await receive.receive()
                    except trio.EndOfChannel:
                        return
                    yield _sse(kind, data)
                    continue
                yield b": keepalive\n\n"
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()

    # -- moves with progress ------------------------------------------------------------------------

    def start_move(self, did: str, to: str) -> int:
        assert self._nursery is not None
        move_id = next(self._move_ids)
        self._nursery.start_soon(self._move, move_id, did, to)
        return move_id

    async def _move(self, move_id: int, did: str, to: str) -> None:
        started = time.monotonic()
        record = self.mesh.records.get(did)

        def progress(stage: str, **more: object) -> None:
            elapsed = int((time.monotonic() - started) * 1000)
            self._publish(
                "move", {"id": move_id, "did": did, "to": to, "stage": stage, "ms": elapsed, **more}
            )

        progress("asked", **{"from": record.host if record else None})
        try:
            result = await self.mesh.move(did, to)
        except Exception as e:  # reported on the page; never fatal for the node
            if not isinstance(e, PicoError):
                log.exception("explorer: moving %s to %s failed", did, to)
            progress("failed", error=str(e) or type(e).__name__)
            return
        progress("committed", seq=result.get("seq"), head=result.get("head"))
        with trio.move_on_after(REQUEST_TIMEOUT):
            while did not in self._view(to).picos:
                if to == self.peer_id:
                    self._apply_summary(
                        to, self.local_summary(self._view(to).epoch, self._view(to).version)
                    )
                    if did in self._view(to).picos:
                        break
                await self._view_change.wait()
            progress("serving")
            return
        progress("committed-unconfirmed", note=f"{to} has not listed {did} yet")

    # -- HTTP ----------------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        def guarded(
            fn: Callable[[Request], Awaitable[Response]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def run(request: Request) -> Response:
                try:
                    return await fn(request)
                except ExplorerError as e:
                    return JSONResponse({"error": str(e), **e.extra}, status_code=e.status)
                except (PicoError, krl.KrlError) as e:
                    return JSONResponse({"error": str(e)}, status_code=409)

            return run

        async def body(request: Request) -> dict[str, Any]:
            raw = await request.body()
            if len(raw) > 2 * MAX_SOURCE:
                raise ExplorerError(
                    f"request body is {len(raw)} bytes; the limit is {2 * MAX_SOURCE}", 413
                )
            if not raw:
                return {}
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ExplorerError(f"body is not valid JSON: {e}") from e
            if not isinstance(value, dict):
                raise ExplorerError("body must be a JSON object")
            return value

        async def index(request: Request) -> Response:
            return FileResponse(UI_DIR / "index.html", headers={"cache-control": "no-cache"})

        async def mesh_json(request: Request) -> Response:
            await self.refresh()
            return JSONResponse(self.snapshot())

        async def mesh_events(request: Request) -> Response:
            return StreamingResponse(
                self.events(),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )

        async def mesh_move(request: Request) -> Response:
            args = await body(request)
            did, to = args.get("did"), args.get("to")
            if not isinstance(did, str) or not isinstance(to, str):
                raise ExplorerError("'did' and 'to' (an engine's peer id) are required")
            return JSONResponse({"id": self.start_move(did, to)})

        async def about(request: Request) -> Response:
            return JSONResponse(await self._routed(AboutRequest(request.path_params["did"])))

        async def history(request: Request) -> Response:
            try:
                limit = int(request.query_params.get("limit", "200"))
            except ValueError as e:
                raise ExplorerError(f"'limit' must be an integer: {e}") from e
            if limit < 1:
                raise ExplorerError("'limit' must be at least 1")
            return JSONResponse(
                await self._routed(HistoryRequest(request.path_params["did"], limit))
            )

        async def manage(did: str, action: str, args: dict[str, object]) -> Response:
            return JSONResponse(await self._routed(ManageRequest(did, action, args)))

        async def install(request: Request) -> Response:
            args = await body(request)
            source, url, config = args.get("source"), args.get("url"), args.get("config") or {}
            if not isinstance(config, dict):
                raise ExplorerError("'config' must be a JSON object")
            if isinstance(url, str) and url.split(":", 1)[0].lower() in ("http", "https"):
                source = await _fetch_source(url)  # the host needs no http client
            if isinstance(source, str):
                await trio.to_thread.run_sync(krl_check, source)
            elif not isinstance(url, str):
                raise ExplorerError(
                    "give 'source' (KRL) or 'url' (file:// on the host, or http(s))"
                )
            wire: dict[str, object] = {"config": config}
            if isinstance(source, str):
                wire["source"] = source
            if isinstance(url, str):
                wire["url"] = url
            return await manage(request.path_params["did"], "install", wire)

        async def uninstall(request: Request) -> Response:
            p = request.path_params
            return await manage(p["did"], "uninstall", {"rid": p["rid"]})

        async def new_child(request: Request) -> Response:
            args = await body(request)
            rulesets = args.get("rulesets") or []
            if not isinstance(rulesets, list) or not all(isinstance(r, str) for r in rulesets):
                raise ExplorerError("'rulesets' must be a list of KRL sources or URLs")
            for source in rulesets:
                if source.lstrip().startswith("ruleset"):
                    await trio.to_thread.run_sync(krl_check, source)
            return await manage(request.path_params["did"], "new-child", {"rulesets": rulesets})

        async def del_child(request: Request) -> Response:
            p = request.path_params
            return await manage(p["did"], "del-child", {"did": p["kid"]})

        async def check(request: Request) -> Response:
            source = (await body(request)).get("source")
            if not isinstance(source, str):
                raise ExplorerError("'source' (KRL text) is required")
            return JSONResponse({"rid": await trio.to_thread.run_sync(krl_check, source)})

        def route(
            path: str, fn: Callable[[Request], Awaitable[Response]], methods: list[str]
        ) -> Route:
            return Route(path, guarded(fn), methods=methods)

        return [
            route("/", index, ["GET"]),
            Mount("/ui", StaticFiles(directory=UI_DIR), name="ui"),
            route("/api/mesh", mesh_json, ["GET"]),
            route("/api/mesh/events", mesh_events, ["GET"]),
            route("/api/mesh/move", mesh_move, ["POST"]),
            route("/api/picos/{did}/about", about, ["GET"]),
            route("/api/picos/{did}/history", history, ["GET"]),
            route("/api/picos/{did}/rulesets", install, ["POST"]),
            route("/api/picos/{did}/rulesets/{rid}", uninstall, ["DELETE"]),
            route("/api/picos/{did}/children", new_child, ["POST"]),
            route("/api/picos/{did}/children/{kid}", del_child, ["DELETE"]),
            route("/api/krl/check", check, ["POST"]),
        ]


def _fields(request: AboutRequest | HistoryRequest | ManageRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__slots__}


def _sse(kind: str, data: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, default=_json_default)}\n\n".encode()


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    return str(value)


async def _fetch_source(url: str) -> str:
    """KRL from an http(s) URL, fetched by this node for a pico hosted anywhere."""
    try:
        async with (
            httpx.AsyncClient(timeout=10.0, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise ExplorerError(f"{url} answered HTTP {response.status_code}", 502)
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_SOURCE:
                    raise ExplorerError(f"{url} is over {MAX_SOURCE} bytes", 413)
        return data.decode("utf-8")
    except httpx.HTTPError as e:
        raise ExplorerError(f"cannot fetch {url}: {e}", 502) from e
    except UnicodeDecodeError as e:
        raise ExplorerError(f"{url} is not UTF-8 text: {e}", 502) from e
