"""The engine: picos hosted on this node, each running one transaction at a time.

Neighbours: krl (compiles and runs rulesets), dag (state blocks and signed heads),
p2pico.home (keys and head pointers on disk), p2pico.mesh (routes what is not
hosted here and drives moves).

Theory of operation
-------------------
Every hosted pico with work has an inbox (a bounded trio memory channel) and one
worker task.  Events and queries are Work items put in the inbox; the worker takes
them in arrival order, so a pico never runs two transactions at once.  A pico idle
for IDLE_SECONDS has neither (``_reap_idle``, one task for the engine, closes the inbox
of a worker waiting that long, and the worker ends); the next item makes them again.
Picos that install the same ruleset source share one compiled krl.Ruleset
(``compile_ruleset``).  So an idle pico costs its Pico object: its maps, keys and
CIDs, a few KB.

An event is one transaction.  Entity-variable writes go to an overlay; when
every scheduled (ruleset, event) pair has run, the overlay is applied and the
new state is committed as blocks under a head signed by the pico's key.  If a
rule fails, the overlay is dropped: no partial writes, and the error goes back
to the caller.

A move is also a Work item, so it starts at an event boundary with the pico
quiesced.  If the move commits, the pico is detached from this engine and the
worker forwards whatever is still in its inbox to the new host, in order,
before it says "drained".  On the new host the pico starts with a second,
"forwarded" lane that is served first until that "drained" arrives, so items
that reached the old host first are also applied first.

Scheduled events (p2pico.scheduler) are jobs in the pico's state, written
through the same overlay as entity variables.  A job fires as an ordinary
event Work item tagged with its id; that transaction also removes the job (or
advances a repeat job) in the same commit.  Such items are not forwarded by a
move: the job moved with the state and the new host fires it.

Channels (p2pico.channels).  An event or query that names an ECI is checked
against that channel's policies, or its family owner, on the trio thread before
it runs; one addressed by DID is not (the owner path).  ``Work.sender`` is the
pico on this engine that sent it, the only one that may use a family channel it
owns.  ctx: actions (channels, rulesets, children) write to the transaction's
overlay; children are created just before, and deleted just after, the parent's
commit (see ``_apply``).

Inline evaluation.  An event or query is first evaluated on the trio thread, within a
slice of INLINE_MAX_STEPS KRL steps and INLINE_MAX_SECONDS (a krl.Budget, checked as
the full one is), which saves the two thread hand-offs and keeps the GIL with one
thread.  Evaluation leaves no trace before ``_apply``: writes, raised and sent events,
jobs, ctx: changes and directives stay in the Transaction, and its ctx:log entries are
kept by the pico only when evaluation ends (``Transaction.flush_logs``).  What cannot
run on the trio thread (ctx:query, ctx:eventQuery, http: requests, loading a ruleset
for ctx:install, ctx:newPico or ctx:flush) raises _Fallback before it starts, as does a
slice that runs out: the attempt is dropped, whole, and the same work runs again in a
worker thread with the full budget, the same transaction id and the same clock, as it
always did.  The pico then sends that event type (or query) to the thread directly.
So a runaway rule costs the trio thread one slice, then runs beside it.

Group commit.  A transaction's blocks and signed head are made on the trio thread
(``_prepare_commit``) and written with those of the other picos of the same scheduling
round in one SQLite transaction (``_group_commit``).  Only once that COMMIT succeeded
does a pico see its new state and head (``_finish_commit``), and is its event answered
and its event:sends dispatched; if it fails, every event of the group fails and no
pico of it changes.  Transactions that create or delete children commit alone.  The
members after the first are parked without a cancel scope (the leader wakes them), and a
group of one goes on without a second yield.

Time.  ``Engine.clock`` (epoch seconds, default ``time.time``) is the engine's
wall clock: `time:now`, event times, head timestamps and job times all come
from it.  A transaction reads it once, on the trio thread, when it starts, and
sees that one instant throughout (every `time:now()` in it is the same, as its
event's time is).  So a clock that only works on the trio thread, such as
``EPOCH + trio.current_time()`` under trio's MockClock, works, and a
transaction's result does not depend on how long its worker thread took.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import random
import secrets
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

import krl
from dag import cbor
from dag.block import Block
from dag.cid import CID
from dag.did import Keypair
from dag.gc import GcReport, collect
from dag.head import sign_head, verify_head
from dag.state import DELETED, Delta, Overlay, PicoState, RulesetState, read_state, state_blocks
from dag.store import BlockStore
from p2pico import builtin
from p2pico import channels as chan
from p2pico import scheduler as sched
from p2pico.home import Home
from p2pico.krlhttp import HttpFailure, KrlHttp

log = logging.getLogger("p2pico.engine")

# Items waiting for one pico beyond this are refused (backpressure), not buffered forever.
MAX_INBOX = 1000
# A pico's worker task and inbox exist only while it has work: after this long without
# any they are dropped (an idle pico costs its Pico object only), and the next item
# starts them again.
IDLE_SECONDS = 5.0
# Head pointers noted after group commits reach node.sqlite this long after the first of a
# batch (p2pico.home: a crash before then loses no commit; opening the home finds them).
HEADS_FLUSH_SECONDS = 1.0
# A pico moved here waits this long for its old host's "drained" before it serves
# direct traffic anyway (the old host may have died mid-drain).
DRAIN_TIMEOUT = 30.0
# (ruleset, event) steps in one transaction; stops raise loops that do little KRL work.
MAX_SCHEDULE_STEPS = 10_000
TXN_MAX_STEPS = 2_000_000
# ctx:query waits this long for the other pico (pico-engine's sendQuery waits 10 s);
# it also ends a query cycle (A queries B, which queries A) with an error.
QUERY_TIMEOUT = 10.0
TXN_MAX_SECONDS = 5.0
# A pico remembers the results of this many events that came with a message id (p2pico.mesh
# retries with the same id); a result encoded larger than DEDUP_RESULT_MAX is kept as its eid.
# The window is kept in blocks of DEDUP_BUCKET entries linked from the state's meta, so a
# commit rewrites one small block, not the whole window.
DEDUP_WINDOW = 64
DEDUP_RESULT_MAX = 4096
DEDUP_BUCKET = 8
# ctx:logs: a pico's log entries, kept in memory on its host (at most this many, this old)
LOG_ENTRIES = 1000
LOG_SECONDS = 12 * 3600
# An event or query is first evaluated on the trio thread within this slice of KRL steps
# and seconds (see "Inline evaluation"); past it, it runs again in a worker thread.
INLINE_MAX_STEPS = 20_000
INLINE_MAX_SECONDS = 0.004


class _Fallback(BaseException):  # not an error: a change of plan
    """An inline evaluation that must run again in a worker thread with the full budget.

    A BaseException, so no ``except Exception`` in KRL's runtime can swallow it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PicoError(Exception):
    """A request a pico could not serve; the text is shown to the caller as is."""

    code = "error"


class NotHosted(PicoError):
    code = "not-hosted"


class Busy(PicoError):
    code = "busy"


_CLEARED = object()

# (target, rid, name, args, sender DID): the sender may use its family channels
QueryHook = Callable[[str, str, str, dict[str, object], str], Awaitable[object]]
SendHook = Callable[[str, str, str, dict[str, object], str], Awaitable[object]]


def _with_timeout(seconds: float, hook: QueryHook, *args: Any) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        with trio.fail_after(seconds):
            return await hook(*args)

    return run


@dataclass
class InstalledRuleset:
    rid: str
    source: str
    compiled: krl.Ruleset


class Handoff(Protocol):
    """What a committed move leaves the old host's worker to do (p2pico.mesh implements it)."""

    @property
    def result(self) -> object:
        """What the move returns to whoever asked for it."""

    async def forward(self, work: Work) -> None:
        """Send one queued item to the new host and finish it with the reply."""

    async def finish(self) -> None:
        """Tell the new host that everything queued here has been forwarded."""


@dataclass
class Work:
    kind: str  # "event" | "query" | "move" | "manage"
    run: Callable[[Pico], Awaitable[Handoff]] | None = None  # for "move"
    # for "manage": an operator's change to the pico (p2pico.explorer), run on the trio
    # thread between the pico's transactions, given the pico and the transaction clock
    manage: Callable[[Pico, Callable[[], float]], object] | None = None
    event: krl.Event | None = None
    eci: str = ""
    rid: str = ""
    name: str = ""
    args: Mapping[str, object] = field(default_factory=dict)
    job: str = ""  # for an "event": the scheduled job it fires (p2pico.scheduler)
    # the pico on this engine that sent it (event:send, ctx:event, ctx:query): only it
    # may use a family channel it owns; None for HTTP and for other engines
    sender: str | None = None
    # for an "event": the id its transaction gets (the eid /c/:eci/event returns at once)
    txn_id: str = ""
    # for an "event" that came through the mesh: its dedup key (sender and message id,
    # p2pico.mesh).  The pico's dedup window answers a repeat with the first result, and
    # the event's commit records it, so a retried event is applied once (see "Dedup").
    mid: str = ""
    # the mesh request it came in (p2pico.mesh), passed on as it is if the pico moves
    # before it runs, so the new host can check its sender's signature
    request: object = None
    done: trio.Event = field(default_factory=trio.Event)
    result: object = None
    error: BaseException | None = None

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass
class Pico:
    did: str
    keypair: Keypair
    rulesets: list[InstalledRuleset]
    ent: dict[str, dict[str, object]]
    channels: dict[str, dict[str, object]]
    head: CID
    seq: int
    # rid -> rule -> state of the rule's stateful `select when` (krl keeps it JSON-like)
    rule_states: dict[str, dict[str, object]] = field(default_factory=dict)
    # job id -> scheduled job (p2pico.scheduler), in the order they were scheduled
    schedule: dict[str, sched.Job] = field(default_factory=dict)
    # family links (ctx:newPico), in the state's meta: the parent's {"eci" of the
    # system,parent channel on the parent, "did"}, and per child {"eci" of its
    # system,child channel, "did"}, in creation order
    parent: dict[str, str] | None = None
    children: list[dict[str, str]] = field(default_factory=list)
    # rid -> {"url", "config"} for rulesets installed by ctx:install (meta.rulesets)
    ruleset_info: dict[str, dict[str, object]] = field(default_factory=dict)
    deleted: bool = False  # by its parent's ctx:delPico
    # the dedup window: [key, result, DAG-CBOR of [key, result]] of (at least) the last
    # DEDUP_WINDOW events that came with a message id, oldest first; in the pico's state,
    # so it moves with the pico: meta.dedup links the blocks (dedup_buckets, with their
    # entry counts) that hold these entries as [key, result] lists of up to DEDUP_BUCKET,
    # oldest first.  A state written before buckets existed kept the whole list in meta
    # (DAG-CBOR bytes, or a plain list): dedup_buckets is empty until its next message.
    dedup: list[list[object]] = field(default_factory=list)
    dedup_buckets: list[tuple[Block, int]] = field(default_factory=list)
    dedup_inline: bytes | None = None  # such an old state's meta.dedup, as it was written
    # root of the committed state: the base of the next commit's dag.state.Delta
    state_root: CID | None = None
    # ctx:logs: (epoch seconds, entry), newest last; in memory on this host only, made
    # by the first entry (most picos never log)
    logs: deque[tuple[float, dict[str, object]]] | None = None
    # (kind, domain or rid, type or name) of the events and queries whose inline
    # evaluation fell back to a worker thread: they go there directly from then on
    threaded: set[tuple[str, str, str]] | None = None
    inbox: trio.MemorySendChannel[Work] | None = None
    forwarded: trio.MemorySendChannel[Work] | None = None

    @property
    def eci(self) -> str:
        """The channel `p2pico pico new` hands out: the first regular one tagged p2pico.

        (The state keeps channels in DAG-CBOR key order, not creation order.)  A pico
        without regular channels (a new child) gives "": reach it by its DID.
        """
        regular = [eci for eci, rec in self.channels.items() if not rec.get("family")]
        tagged = [eci for eci in regular if "p2pico" in chan.tags_of(self.channels[eci])]
        return (tagged or regular or [""])[0]


@dataclass
class NewChild:
    """A ctx:newPico of a transaction, created on this engine once the parent commits."""

    keypair: Keypair
    eci: str  # its system,child channel (on the child; only the parent may use it)
    parent_eci: str  # the system,parent channel (on the parent; only the child may use it)
    rulesets: list[InstalledRuleset]
    ruleset_info: dict[str, dict[str, object]]


class Transaction:
    """The krl.Context of one event or query: reads see the overlay, writes stay in it."""

    def __init__(
        self,
        pico: Pico,
        eci: str,
        txn_id: str,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pico = pico
        self.clock = clock
        self.pico_id = pico.did
        self.eci = eci
        self.txn_id = txn_id
        self.read_only = read_only
        self.writes: dict[tuple[str, str], object] = {}
        self.rule_writes: dict[tuple[str, str], object] = {}
        self.schedule_writes: dict[str, sched.Job | None] = {}  # None: removed
        # event:send calls, dispatched only once the transaction has committed
        self.sends: list[tuple[str, str, str, dict[str, object], str]] = []
        self.engine: Engine | None = None  # set by the engine for module and query look-ups
        # ctx: changes to the pico itself, applied only when the transaction commits
        self.channel_writes: dict[str, dict[str, object] | None] = {}  # None: deleted
        self.rulesets_view: list[InstalledRuleset] | None = None  # None: unchanged
        self.info_writes: dict[str, dict[str, object] | None] = {}  # ruleset_info changes
        self.dropped_rids: set[str] = set()  # uninstalled: their entity variables go
        self.children_view: list[dict[str, str]] | None = None  # None: unchanged
        self.new_picos: list[NewChild] = []  # created after the commit...
        self.deleted_picos: list[str] = []  # ...and deleted (DIDs), as event:send
        self.move_target: str | None = None  # ctx:move: where to, once it committed
        self.directives: list[dict[str, object]] = []
        self.raised: list[tuple[krl.Event, str | None]] = []
        self.rid = ""
        self.rule_name = ""
        # http: requests with autosend, sent once the transaction has committed
        self.http_sends: list[HttpSend] = []
        self.http_seconds = 0.0  # spent waiting on http: requests (bounded per transaction)
        # Evaluated on the trio thread (see "Inline evaluation"): what cannot run there,
        # or would leave a trace before the commit, raises _Fallback instead.
        self.inline = False
        # ctx:log entries (level, message, rid), kept by the pico once evaluation ends
        # (``flush_logs``), so an inline attempt that falls back leaves none
        self.pending_logs: list[tuple[str, str, str]] = []

    def ent_get(self, rid: str, name: str) -> object:
        value = self.writes.get((rid, name), None)
        if (rid, name) in self.writes:
            return None if value is _CLEARED else value
        if rid in self.dropped_rids:
            return None
        return self.pico.ent.get(rid, {}).get(name)

    def ent_set(self, rid: str, name: str, value: object) -> None:
        self._writable("change entity variables")
        self.writes[(rid, name)] = value

    def ent_clear(self, rid: str, name: str) -> None:
        self._writable("change entity variables")
        self.writes[(rid, name)] = _CLEARED

    def rule_state_get(self, rid: str, rule: str) -> object:
        if (rid, rule) in self.rule_writes:
            return self.rule_writes[(rid, rule)]
        if rid in self.dropped_rids:
            return None
        return self.pico.rule_states.get(rid, {}).get(rule)

    def rule_state_set(self, rid: str, rule: str, state: object) -> None:
        self._writable("change rule state")
        self.rule_writes[(rid, rule)] = state

    def schedule_event(
        self,
        domain: str,
        type: str,
        attrs: Mapping[str, object],
        at: float | None,
        timespec: str | None,
        setting_name: str | None,
    ) -> str:
        self._writable("schedule events")
        try:
            job = sched.new_job(
                rid=self.rid,
                eci=self.eci,
                domain=domain,
                type=type,
                attrs=attrs,
                at=at,
                timespec=timespec,
                now=self.clock(),
            )
        except ValueError as e:  # CronError names the field that is wrong
            raise krl.KrlRuntimeError(str(e)) from None
        job_id = sched.new_job_id()
        while job_id in self.pico.schedule or job_id in self.schedule_writes:
            job_id = sched.new_job_id()
        self.schedule_writes[job_id] = job
        return job_id

    def get_module(self, rid: str) -> krl.Ruleset:
        for rs in self.installed():
            if rs.rid == rid:
                return rs.compiled
        raise krl.KrlRuntimeError(f"Module not found: {rid}")

    def send_event(self, target: str, domain: str, type: str, attrs: Mapping[str, object]) -> None:
        self._writable("send events")
        self.sends.append((target, domain, type, dict(attrs), self.pico.did))

    def query_pico(self, target: str, rid: str, name: str, args: Mapping[str, object]) -> object:
        self._thread_only("ctx:query")
        if target in (self.pico.did, *self.pico.channels):
            raise krl.KrlRuntimeError(
                "a pico cannot query itself during a transaction; call the function directly"
            )
        if self.engine is None or self.engine.query_hook is None:
            raise krl.KrlRuntimeError("ctx:query needs an engine on a mesh")
        hook = self.engine.query_hook
        try:
            with_timeout = _with_timeout(
                QUERY_TIMEOUT, hook, target, rid, name, dict(args), self.pico.did
            )
            return trio.from_thread.run(with_timeout)
        except (PicoError, trio.TooSlowError) as e:
            reason = str(e) or f"no answer within {QUERY_TIMEOUT:g} s"
            raise krl.KrlRuntimeError(f"query {rid}/{name} on {target} failed: {reason}") from None

    def schedule_view(self) -> dict[str, sched.Job]:
        """Every job of the pico as this transaction sees it, in the order they were made."""
        return _overlaid(self.pico.schedule, self.schedule_writes)

    def schedule_list(self) -> list[dict[str, object]]:
        """Every job of the pico, ``{"id", "rid", "eci", "event", "time" | "timespec"}``.

        krl keeps those of the calling ruleset (and removes only their ids).
        """
        return [sched.public(job_id, job) for job_id, job in self.schedule_view().items()]

    def schedule_remove(self, job_id: str) -> bool:
        """Remove one job, in this transaction's overlay; False if there is no such job."""
        self._writable("remove scheduled events")
        if job_id not in self.schedule_view():
            return False
        self.schedule_writes[job_id] = None
        return True

    def raise_event(
        self, domain: str, type: str, attrs: Mapping[str, object], for_rid: str | None
    ) -> None:
        self._writable("raise events")
        event = krl.Event(domain, type, dict(attrs), eid=self.txn_id, time=self.clock())
        self.raised.append((event, for_rid))

    def send_directive(self, name: str, options: Mapping[str, object]) -> None:
        self.directives.append(
            {
                "type": "directive",
                "name": name,
                "options": dict(options),
                "meta": {"rid": self.rid, "rule_name": self.rule_name, "txnId": self.txn_id},
            }
        )

    def log(self, level: str, message: str) -> None:
        self.pending_logs.append((level, message, self.rid))

    def flush_logs(self) -> None:
        """Keep this transaction's log entries in the pico's log (evaluation has ended)."""
        for level, message, rid in self.pending_logs:
            log.info("[%s] %s %s: %s", self.pico.did[-8:], rid, level, message)
            add_log(self.pico, self.clock(), level, message, rid=rid, txn_id=self.txn_id)
        self.pending_logs.clear()

    def logs(self) -> list[dict[str, object]]:
        """`ctx:logs()`: this pico's entries of the last 12 hours, oldest first (this
        transaction's own so far included)."""
        now = self.clock()
        since = now - LOG_SECONDS
        out = [dict(entry) for at, entry in list(self.pico.logs or ()) if at >= since]
        for level, message, rid in self.pending_logs:
            out.append(log_entry(self.pico, now, level, message, rid=rid, txn_id=self.txn_id))
        return out[-LOG_ENTRIES:]

    def _thread_only(self, what: str) -> None:
        """``what`` blocks (network, files, other picos): not on the trio thread."""
        if self.inline:
            raise _Fallback(what)

    def base_url(self) -> str | None:
        return self.engine.base_url if self.engine is not None else None

    def flush(self, url: str) -> None:
        """`ctx:flush(url)`: read and compile the URL again.  Each pico keeps its rulesets'
        source in its state and ctx:install always reads the URL, so nothing else is cached
        to refresh: this only fails, as ctx:install would, if the URL does not load."""
        source, where = self._load(url)
        krl.compile_ruleset(source, filename=where or "ctx:flush")

    def event_query(
        self,
        target: str,
        domain: str,
        type: str,
        attrs: Mapping[str, object],
        rid: str,
        name: str,
        args: Mapping[str, object],
    ) -> object:
        """`ctx:eventQuery`: the event, then the query, on another pico; now, not after
        the commit (the result is needed), so a rule error does not take the event back."""
        self._writable("send events")
        self._thread_only("ctx:eventQuery")
        if target in (self.pico.did, *self.pico.channels):
            raise krl.KrlRuntimeError(
                "ctx:eventQuery: a pico cannot wait for its own event during a transaction"
            )
        engine = self.engine
        if engine is None:
            raise krl.KrlRuntimeError("ctx:eventQuery needs an engine")
        sender = self.pico.did

        async def run() -> object:
            with trio.fail_after(QUERY_TIMEOUT):
                return await engine.event_query(
                    target, domain, type, dict(attrs), rid, name, dict(args), sender
                )

        try:
            return trio.from_thread.run(run)
        except (PicoError, trio.TooSlowError) as e:
            reason = str(e) or f"no answer within {QUERY_TIMEOUT:g} s"
            raise krl.KrlRuntimeError(
                f"ctx:eventQuery {domain}:{type} then {rid}/{name} on {target} failed: {reason}"
            ) from None

    def http_request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        follow_redirects: bool,
    ) -> dict[str, object]:
        """An http: request, now, in this worker thread (see p2pico.krlhttp for the limits)."""
        what = f"http:{method.lower()}"
        self._thread_only(what)
        if self.engine is None:
            raise krl.KrlRuntimeError(f"{what} needs an engine")
        client = self.engine.krl_http
        left = client.txn_seconds - self.http_seconds
        if left <= 0:
            raise krl.KrlRuntimeError(
                f"{what}: this transaction already waited {client.txn_seconds:g} s on HTTP"
            )
        started = time.monotonic()
        try:
            return client.request(method, url, headers, body, follow_redirects, timeout=left)
        except HttpFailure as e:
            raise krl.KrlRuntimeError(f"{what}: {e}") from None
        finally:
            self.http_seconds += time.monotonic() - started

    def http_autosend(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        follow_redirects: bool,
        target: str,
        domain: str,
        type: str,
        attrs: Mapping[str, object],
    ) -> None:
        """An http: request with autosend: made after the commit, like event:send."""
        self._writable("send events")
        self.http_sends.append(
            HttpSend(
                method,
                url,
                tuple(headers),
                body,
                follow_redirects,
                target,
                domain,
                type,
                dict(attrs),
                self.pico.did,
            )
        )

    # -- ctx: the pico's channels, rulesets and children, through the overlay -------------

    def changed(self) -> bool:
        """Does committing this transaction change the pico's state?"""
        return bool(
            self.writes
            or self.rule_writes
            or self.schedule_writes
            or self.channel_writes
            or self.rulesets_view is not None
            or self.info_writes
            or self.dropped_rids
            or self.children_view is not None
        )

    def move_to(self, to: str) -> None:
        """`ctx:move(to)`: move this pico to engine ``to`` after the transaction commits."""
        self._writable("move the pico")
        if self.engine is None or self.engine.move_hook is None:
            raise krl.KrlRuntimeError("ctx:move: this engine is not part of a mesh")
        self.move_target = to

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise krl.KrlRuntimeError(f"a query cannot {what}")

    def channels_view(self) -> dict[str, dict[str, object]]:
        return _overlaid(self.pico.channels, self.channel_writes)

    def channels(self) -> list[dict[str, object]]:
        """`ctx:channels`: every channel, the self channel too, sorted by id."""
        views = [chan.view(self.pico.did, chan.self_record(self.pico.did))]
        views += [chan.view(eci, rec) for eci, rec in self.channels_view().items()]
        return sorted(views, key=lambda v: str(v["id"]))

    def new_channel(
        self, tags: object, event_policy: object, query_policy: object
    ) -> dict[str, object]:
        self._writable("create channels")
        try:
            record = chan.new_record(tags, event_policy, query_policy)
        except chan.ChannelError as e:
            raise krl.KrlRuntimeError(str(e)) from None
        eci = new_eci()
        self.channel_writes[eci] = record
        return chan.view(eci, record)

    def _channel(self, eci: str) -> dict[str, object]:
        record = self.channels_view().get(eci)
        if record is None:
            raise krl.KrlRuntimeError(f"ECI not found {eci}")
        return record

    def put_channel(
        self, eci: str, tags: object, event_policy: object, query_policy: object
    ) -> None:
        self._writable("change channels")
        if eci == self.pico.did:
            raise krl.KrlRuntimeError("Cannot edit the self channel.")
        try:
            record = chan.updated_record(self._channel(eci), tags, event_policy, query_policy)
        except chan.ChannelError as e:
            raise krl.KrlRuntimeError(str(e)) from None
        if record != self._channel(eci):  # an unchanged channel is no change to commit
            self.channel_writes[eci] = record

    def upsert_channel(self, tags: object, event_policy: object, query_policy: object) -> None:
        """Update the channel whose sorted tags equal these (cleaned), or make one."""
        self._writable("change channels")
        try:
            wanted = sorted(chan.clean_tags(tags))
        except chan.ChannelError as e:
            raise krl.KrlRuntimeError(str(e)) from None
        for eci, record in sorted(self.channels_view().items()):
            if sorted(chan.tags_of(record)) == wanted:
                self.put_channel(eci, wanted, event_policy, query_policy)
                return
        self.new_channel(wanted, event_policy, query_policy)

    def del_channel(self, eci: str) -> None:
        self._writable("delete channels")
        if eci == self.pico.did or self._channel(eci).get("family"):
            raise krl.KrlRuntimeError("Cannot delete family channels.")
        self.channel_writes[eci] = None

    def installed(self) -> list[InstalledRuleset]:
        return self.pico.rulesets if self.rulesets_view is None else self.rulesets_view

    def rulesets(self) -> list[dict[str, object]]:
        """`ctx:rulesets`: ``{rid, url, config, meta: {krl, krlMeta, hash}}`` per ruleset."""
        infos = {**self.pico.ruleset_info, **self.info_writes}
        out: list[dict[str, object]] = []
        for rs in self.installed():
            info = infos.get(rs.rid) or {}
            krl_meta = {
                k: rs.compiled.meta[k]
                for k in ("name", "description", "author", "version")
                if rs.compiled.meta.get(k) is not None
            }
            meta = {
                "krl": rs.source,
                "krlMeta": krl_meta,
                "hash": hashlib.sha256(rs.source.encode()).hexdigest(),
            }
            out.append(
                {
                    "rid": rs.rid,
                    "url": info.get("url"),
                    "config": info.get("config", {}),
                    "meta": meta,
                }
            )
        return out

    def _load(self, url_or_source: str) -> tuple[str, str | None]:
        self._thread_only("loading a ruleset")  # reads files, compiles
        assert self.engine is not None, "ctx:install needs an engine"
        try:
            return self.engine.load_ruleset(url_or_source)
        except PicoError as e:
            raise krl.KrlRuntimeError(str(e)) from None

    def install(self, url_or_source: str, config: Mapping[str, object]) -> str:
        """`ctx:install`: (re)install a ruleset; its entity variables are kept."""
        self._writable("install rulesets")
        source, url = self._load(url_or_source)
        compiled = compile_ruleset(source, filename=url or "ctx:install")
        rulesets = list(self.installed())
        new = InstalledRuleset(compiled.rid, compiled.source, compiled)
        at = next((i for i, rs in enumerate(rulesets) if rs.rid == compiled.rid), None)
        if at is None:
            rulesets.append(new)
        else:
            rulesets[at] = new
        missing = missing_module(rulesets, {compiled.rid})
        if missing is not None:
            raise krl.KrlRuntimeError(missing)
        self.rulesets_view = rulesets
        self.info_writes[compiled.rid] = {"url": url, "config": dict(config)}
        return compiled.rid

    def uninstall(self, rid: str) -> None:
        """`ctx:uninstall`: remove a ruleset with its entity variables, rule state and jobs."""
        self._writable("uninstall rulesets")
        rulesets = self.installed()
        users = [rs.rid for rs in rulesets if any(u.rid == rid for u in rs.compiled.uses.values())]
        if users:
            raise krl.KrlRuntimeError(
                f"Cannot uninstall {rid} because {' and '.join(users)} depends on it"
            )
        if not any(rs.rid == rid for rs in rulesets):
            return  # as the reference: nothing to do
        self.rulesets_view = [rs for rs in rulesets if rs.rid != rid]
        self.info_writes[rid] = None
        self.dropped_rids.add(rid)
        for key in [k for k in self.writes if k[0] == rid]:
            del self.writes[key]
        for key in [k for k in self.rule_writes if k[0] == rid]:
            del self.rule_writes[key]
        for job_id, job in self.schedule_view().items():
            if job["rid"] == rid:
                self.schedule_writes[job_id] = None

    def children(self) -> list[str]:
        """`ctx:children`: the family ECIs of the children (their system,child channels)."""
        kids = self.pico.children if self.children_view is None else self.children_view
        return [kid["eci"] for kid in kids]

    def parent(self) -> str | None:
        """`ctx:parent`: the ECI this pico uses to reach its parent (None for a root pico)."""
        return self.pico.parent["eci"] if self.pico.parent else None

    def new_pico(self, rulesets: object) -> str:
        """`ctx:newPico`: a child on this engine, made once this transaction commits."""
        self._writable("create picos")
        if rulesets is None:
            rulesets = []
        if not isinstance(rulesets, list):
            raise krl.KrlRuntimeError("ctx:newPico expects an array of {url, config}")
        installed: list[InstalledRuleset] = []
        infos: dict[str, dict[str, object]] = {}
        for item in rulesets:
            config: object = {}
            if isinstance(item, dict):
                url, config = item.get("url"), item.get("config") or {}
            else:
                url = item
            if not isinstance(url, str) or not isinstance(config, dict):
                raise krl.KrlRuntimeError("ctx:newPico expects an array of {url, config}")
            source, where = self._load(url)
            compiled = compile_ruleset(source, filename=where or "ctx:newPico")
            if any(rs.rid == compiled.rid for rs in installed):
                raise krl.KrlRuntimeError(f"ctx:newPico: {compiled.rid} is given twice")
            installed.append(InstalledRuleset(compiled.rid, compiled.source, compiled))
            if where is not None or config:
                infos[compiled.rid] = {"url": where, "config": config}
        missing = missing_module(installed)
        if missing is not None:
            raise krl.KrlRuntimeError(f"ctx:newPico: {missing}")
        child = NewChild(Keypair.generate(), new_eci(), new_eci(), installed, infos)
        self.channel_writes[child.parent_eci] = chan.family_record(
            ["system", "parent"], child.keypair.did
        )
        kids = list(self.pico.children if self.children_view is None else self.children_view)
        self.children_view = [*kids, {"eci": child.eci, "did": child.keypair.did}]
        self.new_picos.append(child)
        return child.eci

    def del_pico(self, eci: str) -> None:
        """`ctx:delPico`: delete a child (and its descendants) once this transaction commits."""
        self._writable("delete picos")
        kids = self.pico.children if self.children_view is None else self.children_view
        kid = next((k for k in kids if k["eci"] == eci), None)
        if kid is None:
            raise krl.KrlRuntimeError(f"delPico({eci}) - not found in children ECIs")
        self.children_view = [k for k in kids if k is not kid]
        for channel, record in self.channels_view().items():  # its system,parent channel here
            if record.get("family") and record.get("owner") == kid["did"]:
                self.channel_writes[channel] = None
        made_here = [n for n in self.new_picos if n.keypair.did == kid["did"]]
        if made_here:
            self.new_picos.remove(made_here[0])
        else:
            self.deleted_picos.append(kid["did"])


# One compiled krl.Ruleset per distinct (source, filename) in this process, shared by
# every pico that installs it (a compiled ruleset keeps no per-pico state); it goes
# away when no pico uses it.  Keyed by the source's SHA-256, so the key holds no text.
_compiled: weakref.WeakValueDictionary[tuple[bytes, str], krl.Ruleset] = (
    weakref.WeakValueDictionary()
)
_compiled_lock = threading.Lock()  # ctx:install compiles in worker threads


def compile_ruleset(source: str, *, filename: str = "<krl>") -> krl.Ruleset:
    """``krl.compile_ruleset``, once per distinct source and filename (see ``_compiled``).

    Its ``source`` is the text to keep (``InstalledRuleset.source``): one string for
    every pico that installed it.
    """
    key = (hashlib.sha256(source.encode()).digest(), filename)
    with _compiled_lock:
        hit = _compiled.get(key)
    if hit is not None:
        return hit
    compiled = krl.compile_ruleset(source, filename=filename)  # outside the lock: may be slow
    with _compiled_lock:
        return _compiled.setdefault(key, compiled)


K = TypeVar("K")
V = TypeVar("V")


def _overlaid(base: Mapping[K, V], writes: Mapping[K, V | None]) -> dict[K, V]:
    """``base`` as a transaction sees it: its writes over it, None deleting a key."""
    out = dict(base)
    for key, value in writes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def new_eci() -> str:
    return "c" + secrets.token_hex(12)


def missing_module(
    rulesets: Sequence[InstalledRuleset], new: Collection[str] | None = None
) -> str | None:
    """Why these rulesets cannot be installed together: the first ``use module`` whose
    ruleset is neither among them nor shipped with p2pico, or None.  Only the rulesets
    whose rids are in ``new`` are checked, when it is given (what is being installed).

    A pico finds its modules among its own rulesets when the using rule runs.  A shipped
    one may come later in the same flow (``wrangler:pico_created`` installs subscription
    after the rulesets a new wrangler pico was made with), as pico-engine's engine-wide
    registry allows.  The text starts as pico-engine's install error does."""
    rids = {rs.rid for rs in rulesets}
    for rs in rulesets:
        if new is not None and rs.rid not in new:
            continue
        for use in rs.compiled.uses.values():
            if use.rid not in rids and not builtin.shipped(use.rid):
                return (
                    f"Dependant module not loaded: {use.rid} ({rs.rid} uses it; install it "
                    "on the pico first)"
                )
    return None


# Transaction ids name, they do not guard: a PRNG seeded from the OS (0.4 µs) rather than
# secrets (1.8 µs, a getrandom call per id).
_txn_ids = random.Random(secrets.randbits(128))


def new_txn_id() -> str:
    return f"t{_txn_ids.getrandbits(64):016x}"


@dataclass(frozen=True)
class HttpSend:
    """An http: request with autosend: its response goes to ``target`` as an event."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    follow_redirects: bool
    target: str
    domain: str
    type: str
    attrs: dict[str, object]
    sender: str  # the DID of the pico that made it


def log_entry(
    pico: Pico,
    at: float,
    level: str,
    message: str,
    *,
    rid: str | None = None,
    txn_id: str | None = None,
) -> dict[str, object]:
    """One `ctx:logs` entry: ``{time, level, picoId, rid, txnId, msg}``."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return {
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "picoId": pico.did,
        "rid": rid or None,
        "txnId": txn_id or None,
        "msg": message,
    }


def add_log(
    pico: Pico,
    at: float,
    level: str,
    message: str,
    *,
    rid: str | None = None,
    txn_id: str | None = None,
) -> None:
    """Keep one `ctx:logs` entry for a pico: ``{time, level, picoId, rid, txnId, msg}``."""
    entry = log_entry(pico, at, level, message, rid=rid, txn_id=txn_id)
    if pico.logs is None:
        pico.logs = deque(maxlen=LOG_ENTRIES)
    pico.logs.append((at, entry))


def _family_meta(
    meta: Mapping[str, object],
) -> tuple[dict[str, str] | None, list[dict[str, str]], dict[str, dict[str, object]]]:
    """The parent link, children and ctx:install'ed ruleset info kept in a state's meta."""

    def link(value: object, where: str) -> dict[str, str]:
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("eci"), str)
            or not isinstance(value.get("did"), str)
        ):
            raise PicoError(f"state meta {where} must be a map with 'eci' and 'did'")
        return {"eci": value["eci"], "did": value["did"]}

    parent = meta.get("parent")
    kids = meta.get("children", [])
    infos = meta.get("rulesets", {})
    if not isinstance(kids, list) or not isinstance(infos, dict):
        raise PicoError("state meta 'children' must be a list and 'rulesets' a map")
    return (
        None if parent is None else link(parent, "'parent'"),
        [link(kid, "'children'") for kid in kids],
        {str(rid): dict(info) for rid, info in infos.items() if isinstance(info, dict)},
    )


def _dedup_entries(value: object) -> list[list[object]]:
    """The dedup window kept inline by a state from before its blocks: the DAG-CBOR bytes
    of its [key, result] list (a plain list in states made before; absent in states made
    before it existed).  Entries are [key, result, DAG-CBOR of result]."""
    if isinstance(value, bytes):
        try:
            value = cbor.decode(value)
        except cbor.DagCborError:
            return []
    if not isinstance(value, list):
        return []
    return [
        [e[0], e[1], cbor.encode(e[1])]
        for e in value
        if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
    ]


def _dedup_lookup(pico: Pico, key: str) -> object | None:
    for entry in reversed(pico.dedup):
        if entry[0] == key:
            return entry[1]
    return None


@dataclass(frozen=True, slots=True)
class _DedupWindow:
    """A pico's dedup window after a commit: its entries, the blocks holding them (with
    their entry counts), and the blocks that commit adds (one, but for the first commit
    of a window kept inline by an older state: all of them); the others are stored."""

    entries: list[list[object]]
    buckets: list[tuple[Block, int]]
    new: list[Block]


def _dedup_bucket(entries: Sequence[list[object]]) -> Block:
    """The block of these [key, result, DAG-CBOR of result] entries: the list of their
    [key, DAG-CBOR of result] (each result was encoded once, when it joined the window;
    bytes cost nothing to encode again, a result's maps do)."""
    return Block.encode([[e[0], e[2]] for e in entries])


def _dedup_add(pico: Pico, key: str, result: dict[str, object]) -> _DedupWindow:
    """The pico's window with ``key`` → ``result`` added, newest last.

    The entry joins the newest bucket, or starts one when that is full (or the window
    has no buckets yet: a state from before buckets has its entries re-bucketed once);
    the oldest buckets leave while the rest still hold DEDUP_WINDOW entries."""
    kept: object = result
    encoded = cbor.encode(result)
    if len(encoded) > DEDUP_RESULT_MAX:
        kept = {"eid": result["eid"], "directives": [], "note": "directives too large to keep"}
        encoded = cbor.encode(kept)
    entries = [*pico.dedup, [key, kept, encoded]]
    buckets = list(pico.dedup_buckets)
    new: list[Block] = []
    if sum(n for _, n in buckets) != len(pico.dedup):  # an old state's window: re-bucket
        old = pico.dedup[-(DEDUP_WINDOW - 1) :]
        entries = [*old, entries[-1]]
        chunks = [old[i : i + DEDUP_BUCKET] for i in range(0, len(old), DEDUP_BUCKET)]
        buckets = [(_dedup_bucket(chunk), len(chunk)) for chunk in chunks]
        new = [block for block, _ in buckets]
    if buckets and buckets[-1][1] < DEDUP_BUCKET:
        count = buckets.pop()[1] + 1
        if new:
            new.pop()
    else:
        count = 1
    newest = _dedup_bucket(entries[-count:])
    buckets.append((newest, count))
    new.append(newest)
    while len(entries) - buckets[0][1] >= DEDUP_WINDOW:
        entries = entries[buckets.pop(0)[1] :]
    return _DedupWindow(entries, buckets, new)


def _dedup_read(store: BlockStore, value: object, did: str) -> _DedupWindow | None:
    """The window a state's meta.dedup links (a list of bucket CIDs); None for a state
    that keeps it inline (``_dedup_entries``) or has none."""
    if not isinstance(value, list) or not value or not all(isinstance(c, CID) for c in value):
        return None
    entries: list[list[object]] = []
    buckets: list[tuple[Block, int]] = []
    for cid in value:
        block = store.get_block(cid)
        if block is None:
            raise PicoError(f"dedup block {cid} of {did} is missing from the block store")
        pairs = block.value
        if not isinstance(pairs, list) or not all(
            isinstance(e, list) and len(e) == 2 and type(e[0]) is str and type(e[1]) is bytes
            for e in pairs
        ):
            raise PicoError(f"dedup block {cid} of {did} is not a list of [key, result bytes]")
        try:
            entries += [[e[0], cbor.decode(e[1]), e[1]] for e in pairs]
        except cbor.DagCborError as e:
            raise PicoError(f"dedup block {cid} of {did} holds a bad result: {e}") from e
        buckets.append((block, len(pairs)))
    return _DedupWindow(entries, buckets, [])


@dataclass
class _Prepared:
    """A commit whose blocks and signed head are made but not yet written (or seen)."""

    pico: Pico
    written: list[Block]  # its head last
    ent: Mapping[str, Mapping[str, object]]
    rules: dict[str, dict[str, object]]
    jobs: dict[str, sched.Job]
    root: CID
    head: CID
    channels: dict[str, dict[str, object]] | None = None
    rulesets: list[InstalledRuleset] | None = None
    children: list[dict[str, str]] | None = None
    ruleset_info: dict[str, dict[str, object]] | None = None
    dedup: _DedupWindow | None = None
    error: BaseException | None = None  # its group failed, or making it visible did


def _refuse_abort(_: Callable[[], object]) -> trio.lowlevel.Abort:
    """A group member's wait is not cancellable: its commit is being written."""
    return trio.lowlevel.Abort.FAILED


class _Worker:
    """A pico's worker task, for ``Engine._reap_idle``: when it last began waiting."""

    __slots__ = ("idle_since", "pico")

    def __init__(self, pico: Pico) -> None:
        self.pico = pico
        self.idle_since = 0.0  # trio.current_time()


@dataclass
class _Group:
    """The commits of one scheduling round, written in one block-store transaction."""

    commits: list[_Prepared] = field(default_factory=list)
    # the tasks of the commits after the first, parked until the group is written
    # (``_group_commit``: the leader reschedules them; they cannot be cancelled meanwhile)
    waiting: list[trio.lowlevel.Task] = field(default_factory=list)


class Engine:
    """Hosts picos.  Pico workers run in the nursery given to ``serve``."""

    def __init__(
        self,
        home: Home,
        *,
        txn_seconds: float = TXN_MAX_SECONDS,
        clock: Callable[[], float] = time.time,
        krl_http: KrlHttp | None = None,
    ) -> None:
        self.home = home
        self.txn_seconds = txn_seconds
        self.clock = clock  # epoch seconds; see "Time" above
        self.store = home.blocks
        self.picos: dict[str, Pico] = {}
        self._eci_index: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None
        # id(pico) -> its worker, while it has one (see _reap_idle)
        self._workers: dict[int, _Worker] = {}
        self._worker_started = trio.Event()
        self._heads_noted = trio.Event()  # set when home has head pointers to write
        # picos hosted here that could not be loaded at start, with the reason
        self.unloadable: dict[str, str] = {}
        # set when a hosted pico's jobs may have changed (p2pico.scheduler waits on it)
        self._schedule_event = trio.Event()
        # Events (and scheduled jobs) handled here, successful or not, for tests and tools
        # that wait for a fire-and-forget event:send to land (GET /api/handled?after=N&wait=S).
        # Queries are not counted, so checking state does not move it.
        self.handled = 0
        self._handled_event = trio.Event()
        # Set by p2pico.mesh: deliver an event:send, and run a ctx:query, anywhere in
        # the mesh (target is a DID or an ECI).  Without them only local picos are reached.
        self.send_hook: SendHook | None = None
        self.query_hook: QueryHook | None = None
        # Set by p2pico.mesh: queue an event:send for a pico of another engine now, in the
        # order the sender sent it (the mesh's outbox delivers it, retrying until it lands).
        self.send_nowait: Callable[[str, str, str, dict[str, object], str], None] | None = None
        # Set by p2pico.mesh: a pico was created here by ctx:newPico (publish its record).
        self.on_new_pico: Callable[[Pico], Awaitable[None]] | None = None
        # ctx:install and ctx:newPico read file:// URLs only inside these folders.
        self.ruleset_dirs: list[Path] = [home.path / "rulesets", builtin.RULESETS_DIR]
        # KRL's http: module (its limits and address policy) and `meta:host`, the base URL
        # of the node's HTTP API (p2pico.node sets both with set_http_url once it is bound).
        self.krl_http = krl_http if krl_http is not None else KrlHttp()
        self.base_url: str | None = None
        # The node's root pico (p2pico.root sets it): it serves /api/ui-context and never moves.
        self.root_did: str | None = None
        # events answered from a pico's dedup window (a retry of one applied before)
        self.duplicates = 0
        # Evaluate on the trio thread first (see "Inline evaluation"); how many such
        # attempts were dropped and run again in a worker thread.
        self.inline = True
        self.fallbacks = 0
        # the group commit the picos of this scheduling round are joining (see _apply_grouped)
        self._group: _Group | None = None
        # group commits written, and the pico commits they held (for tests and tools)
        self.groups = 0
        self.grouped_commits = 0
        # Set by p2pico.replicas: told the blocks of every commit (its head last), and
        # awaited before an event or manage work is acknowledged (a replica holds it).
        self.on_commit: Callable[[Pico, list[Block]], None] | None = None
        self.replicate: Callable[[Pico], Awaitable[None]] | None = None
        # Told a pico's DID after each of its commits (once its new head is in place) and
        # when it starts or stops being hosted here (p2pico.explorer wakes on these).
        self.change_listeners: list[Callable[[str], None]] = []
        # Set by p2pico.mesh: move a pico to another engine (ctx:move, after the commit).
        self.move_hook: Callable[[str, str], Awaitable[object]] | None = None
        # Set by p2pico.replicas: the heads this node keeps as a replica (GC roots too).
        self.gc_roots: Callable[[], list[CID]] | None = None

    # -- lifetime ----------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reap_idle)
            nursery.start_soon(self._flush_heads)
            for hosted in self.home.hosted():
                try:
                    pico = self._load(hosted.did, hosted.keypair, hosted.head)
                except Exception as e:  # one broken pico must not keep the others down
                    log.error("engine: cannot load %s (its data is kept): %s", hosted.did, e)
                    self.unloadable[hosted.did] = f"{type(e).__name__}: {e}"
                    continue
                self._attach(pico)
            log.info("engine: %d picos recovered from %s", len(self.picos), self.home.path)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.krl_http.close()  # shutting down: a request still under way fails
                self._flush_heads_now()

    async def _flush_heads(self) -> None:
        """Write the head pointers noted after group commits, HEADS_FLUSH_SECONDS after
        the first one of a batch (one node.sqlite transaction for all of them)."""
        while True:
            await self._heads_noted.wait()
            await trio.sleep(HEADS_FLUSH_SECONDS)
            self._heads_noted = trio.Event()
            self._flush_heads_now()

    def _flush_heads_now(self) -> None:
        if not self.home.heads_pending:
            return
        try:
            self.home.flush_heads()
        except Exception as e:  # kept in memory (and in the blocks): the next flush retries
            log.error("writing %d head pointers failed: %s", self.home.heads_pending, e)

    def set_http_url(self, base_url: str) -> None:
        """The node's HTTP API is at ``base_url``: `meta:host`, and refused to http:."""
        self.base_url = base_url
        self.krl_http.policy.set_own_api(base_url)

    def _load(self, did: str, keypair: Keypair, head_cid: CID) -> Pico:
        head_block = self.store.get_block(head_cid)
        if head_block is None:
            raise PicoError(f"head block {head_cid} of {did} is missing from the block store")
        head = verify_head(head_block)
        state = read_state(self.store, head.state)
        pico = self._pico_from_state(keypair, state, head_cid, head.seq)
        pico.state_root = head.state
        window = _dedup_read(self.store, state.meta.get("dedup"), did)
        if window is not None:
            pico.dedup, pico.dedup_buckets = window.entries, window.buckets
        return pico

    @staticmethod
    def _pico_from_state(keypair: Keypair, state: PicoState, head: CID, seq: int) -> Pico:
        compiled = [compile_ruleset(rs.source, filename=rs.rid) for rs in state.rulesets]
        rulesets = [InstalledRuleset(c.rid, c.source, c) for c in compiled]
        parent, children, infos = _family_meta(state.meta)
        return Pico(
            parent=parent,
            children=children,
            ruleset_info=infos,
            did=state.did,
            keypair=keypair,
            rulesets=rulesets,
            ent={rs.rid: dict(rs.ent) for rs in state.rulesets},
            rule_states={rs.rid: dict(rs.rules) for rs in state.rulesets if rs.rules},
            schedule=sched.check_jobs(state.meta.get("schedule", {})),
            channels={eci: dict(ch) for eci, ch in state.channels.items()},
            head=head,
            seq=seq,
            dedup=(dedup := _dedup_entries(state.meta.get("dedup"))),
            dedup_inline=cbor.encode([e[:2] for e in dedup]) if dedup else None,
        )

    def _attach(self, pico: Pico, *, draining: bool = False) -> None:
        assert self._nursery is not None, "engine is not serving"
        self.picos[pico.did] = pico
        for eci in pico.channels:
            self._eci_index[eci] = pico.did
        if draining:  # its worker starts now: it waits for the old host's forwarded items
            send, recv = trio.open_memory_channel[Work](MAX_INBOX)
            pico.inbox = send
            pico.forwarded, fwd_recv = trio.open_memory_channel[Work](MAX_INBOX)
            self._nursery.start_soon(self._worker, pico, recv, fwd_recv)
        self.schedule_changed()
        self._changed(pico.did)

    def _inbox(self, pico: Pico) -> trio.MemorySendChannel[Work]:
        """The pico's inbox, made, with its worker, if the pico was idle (see IDLE_SECONDS)."""
        if pico.inbox is None:
            assert self._nursery is not None, "engine is not serving"
            send, recv = trio.open_memory_channel[Work](MAX_INBOX)
            try:
                self._nursery.start_soon(self._worker, pico, recv, None)
            except RuntimeError:  # "Nursery is closed to new arrivals": shutting down
                send.close()
                recv.close()
                raise PicoError("the engine is shutting down") from None
            pico.inbox = send
        return pico.inbox

    def _detach(self, pico: Pico) -> None:
        """After a committed move or a delete: new submits no longer find the pico here."""
        del self.picos[pico.did]
        for eci in pico.channels:
            self._eci_index.pop(eci, None)
        if pico.inbox is not None:  # else it is idle: no worker, nothing queued
            pico.inbox.close()
        self.home.forget_pico(pico.did)
        self.schedule_changed()
        self._changed(pico.did)

    # -- scheduled events (p2pico.scheduler) --------------------------------------------

    def watch_schedule(self) -> trio.Event:
        """An event set when the next change to any hosted pico's jobs happens."""
        if self._schedule_event.is_set():
            self._schedule_event = trio.Event()
        return self._schedule_event

    def schedule_changed(self) -> None:
        self._schedule_event.set()

    def _changed(self, did: str) -> None:
        for listener in self.change_listeners:
            listener(did)

    def schedule_of(self, did: str) -> list[dict[str, object]]:
        """A hosted pico's jobs for operators: as KRL sees them, plus ``eci`` and ``next``."""
        pico = self.picos.get(did)
        if pico is None:
            raise NotHosted(f"pico {did} is not hosted here")
        return [
            {**sched.public(job_id, job), "eci": job["eci"], "next": sched.due(job)}
            for job_id, job in pico.schedule.items()
        ]

    async def fire(self, did: str, job_id: str) -> object:
        """Run a due job's event on its pico, one transaction that also consumes the job."""
        pico = self.picos.get(did)
        if pico is None:
            raise NotHosted(f"pico {did} is not hosted here")
        job = pico.schedule.get(job_id)
        if job is None:
            return None
        ev = job["event"]
        assert isinstance(ev, dict)
        eci = job["eci"] if job["eci"] in pico.channels else ""
        event = krl.Event(ev["domain"], ev["type"], dict(ev["attrs"]), eid=job_id)
        return await self.submit(did, Work("event", event=event, eci=str(eci), job=job_id))

    # -- creating and adopting picos ------------------------------------------------

    def create_pico(
        self, sources: list[str], *, urls: tuple[str, ...] = (), first_channel: bool = True
    ) -> Pico:
        """A new pico with these rulesets installed; its genesis head is seq 0.

        ``urls`` (``file://``, read by ``load_ruleset``) are installed first and keep
        their URL in ``ctx:rulesets``, as ``ctx:install`` does (wrangler finds its
        sibling rulesets by it).  ``first_channel=False`` leaves out the allow-all
        ``p2pico`` channel (the node's root pico makes its own, p2pico.root).
        """
        loaded = [self.load_ruleset(url) for url in urls]
        infos: dict[str, dict[str, object]] = {}
        sources = [src for src, _ in loaded] + list(sources)
        compiled = [compile_ruleset(src) for src in sources]
        for c, (_, where) in zip(compiled, loaded, strict=False):
            infos[c.rid] = {"url": where, "config": {}}
        rids = [c.rid for c in compiled]
        if len(set(rids)) != len(rids):
            raise PicoError(f"the same ruleset is given twice: {rids}")
        installed = [InstalledRuleset(c.rid, c.source, c) for c in compiled]
        missing = missing_module(installed)
        if missing is not None:
            raise PicoError(missing)
        keypair = Keypair.generate()
        channel = {"tags": ["p2pico"], "family": False}
        pico = Pico(
            did=keypair.did,
            keypair=keypair,
            rulesets=installed,
            ent={c.rid: {} for c in compiled},
            channels={new_eci(): channel} if first_channel else {},
            head=CID.of(b""),  # replaced by the genesis commit below
            seq=-1,
            ruleset_info=infos,
        )
        self._write_commit(self._prepare_commit(pico, pico.ent, pico.rule_states, cause=None))
        self.home.save_pico(pico.did, keypair, pico.head)
        self._attach(pico)
        return pico

    def load_ruleset(self, url_or_source: str) -> tuple[str, str | None]:
        """KRL for ctx:install / ctx:newPico: (source, url), from a file:// URL or the source.

        A file:// URL must lie in one of ``ruleset_dirs`` (default ``<home>/rulesets`` and
        the shipped ``rulesets/``, p2pico.builtin):
        rulesets may come from peers, and must not read the node's other files.
        """
        text = url_or_source.strip()
        scheme = text.split(":", 1)[0].lower() if ":" in text[:10] else ""
        if scheme in ("http", "https"):
            raise PicoError(f"installing from {scheme} URLs is not supported yet: {text}")
        if scheme == "file":
            path = Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path)).resolve()
            if not any(path.is_relative_to(d.resolve()) for d in self.ruleset_dirs):
                folders = ", ".join(str(d) for d in self.ruleset_dirs)
                raise PicoError(f"{text} is outside this node's ruleset folders ({folders})")
            try:
                return path.read_text(encoding="utf-8"), path.as_uri()
            except (OSError, UnicodeDecodeError) as e:
                raise PicoError(f"cannot read {text}: {e}") from None
        if text.startswith("ruleset"):
            return url_or_source, None
        raise PicoError(f"expected a file:// URL or KRL source, not {text[:60]!r}")

    def _create_child(self, parent: Pico, new: NewChild) -> Pico:
        """Host a ctx:newPico child: its genesis head, then the node's tables, then its worker."""
        child = Pico(
            did=new.keypair.did,
            keypair=new.keypair,
            rulesets=new.rulesets,
            ent={rs.rid: {} for rs in new.rulesets},
            channels={new.eci: chan.family_record(["system", "child"], parent.did)},
            head=CID.of(b""),  # replaced by the genesis commit below
            seq=-1,
            parent={"eci": new.parent_eci, "did": parent.did},
            ruleset_info=new.ruleset_info,
        )
        self._write_commit(self._prepare_commit(child, child.ent, child.rule_states, cause=None))
        self.home.save_pico(child.did, child.keypair, child.head)
        self._attach(child)
        return child

    def _delete_tree(self, did: str) -> None:
        """ctx:delPico: stop hosting a pico and its descendants and forget their keys.

        Their blocks stay in the store (history, like a moved pico's); work already
        queued for them fails with "was deleted".
        """
        pico = self.picos.get(did)
        if pico is None:
            log.warning("ctx:delPico: %s is not hosted here; not deleted", did)
            return
        for kid in pico.children:
            self._delete_tree(kid["did"])
        pico.deleted = True
        self._detach(pico)

    def channels_of(self, did: str) -> list[dict[str, object]]:
        """A hosted pico's channels for operators, as ``ctx:channels`` shows them."""
        pico = self.picos.get(did)
        if pico is None:
            raise NotHosted(f"pico {did} is not hosted here")
        return Transaction(pico, "", "", read_only=True).channels()

    def adopt(self, keypair: Keypair, head_cid: CID) -> Pico:
        """Take over a pico whose blocks are already in our store (the target side of a move)."""
        pico = self._load(keypair.did, keypair, head_cid)
        self.home.save_pico(pico.did, keypair, head_cid)
        self._attach(pico, draining=True)
        return pico

    def drained(self, did: str) -> None:
        pico = self.picos.get(did)
        if pico is not None and pico.forwarded is not None:
            pico.forwarded.close()
            pico.forwarded = None

    # -- lookups ---------------------------------------------------------------------

    def hosts(self, did: str) -> bool:
        return did in self.picos

    def did_of_eci(self, eci: str) -> str | None:
        return self._eci_index.get(eci)

    # -- submitting work -----------------------------------------------------------

    async def submit(self, did: str, work: Work, *, forwarded: bool = False) -> object:
        """Queue work on a hosted pico and wait for its result; NotHosted if it is not here."""
        self.enqueue(did, work, forwarded=forwarded)
        await work.done.wait()
        if work.error is not None:
            raise work.error
        return work.result

    def enqueue(self, did: str, work: Work, *, forwarded: bool = False) -> None:
        """Put work in a hosted pico's inbox now (Busy if full, NotHosted if not here)."""
        pico = self.picos.get(did)
        if pico is None:
            raise NotHosted(f"pico {did} is not hosted here")
        if forwarded and pico.forwarded is not None:
            lane = pico.forwarded
        else:
            lane = self._inbox(pico)
        try:
            lane.send_nowait(work)
        except trio.WouldBlock:
            raise Busy(f"pico {did} has {MAX_INBOX} requests waiting; try again later") from None
        except trio.ClosedResourceError:
            raise NotHosted(f"pico {did} is leaving this engine") from None

    def queue_event(self, did: str, work: Work) -> str:
        """Queue an event without waiting for it (``/c/:eci/event``); its eid.

        The channel and its event policy are checked now, as pico-framework does before
        it queues, so an unknown ECI or a refused event is the caller's error; what the
        rules then do is only logged.  The eid is the id the transaction will have.
        """
        pico = self.picos.get(did)
        if pico is None:
            raise NotHosted(f"pico {did} is not hosted here")
        assert work.event is not None
        assert self._nursery is not None
        record = self._check_channel(pico, work.eci)
        if record is not None:
            try:
                chan.check_event(record, work.event.domain, work.event.type, work.sender)
            except chan.ChannelError as e:
                raise PicoError(str(e)) from None
        work.txn_id = work.txn_id or new_txn_id()
        self.enqueue(did, work)
        self._nursery.start_soon(self._log_queued_failure, work, work.eci or did)
        return work.txn_id

    async def _log_queued_failure(self, work: Work, target: str) -> None:
        await work.done.wait()
        if work.error is not None and work.event is not None:
            ev = work.event
            log.warning("event %s:%s on %s failed: %s", ev.domain, ev.type, target, work.error)

    async def install_rulesets(
        self, did: str, rulesets: Sequence[tuple[InstalledRuleset, str | None]]
    ) -> list[str]:
        """(Re)install compiled rulesets, with their URLs, on a hosted pico, in its queue.

        One commit for all of them, and none when nothing changed: a ruleset whose source
        and URL are those installed is left alone.  A new one is added after the others;
        a changed one is replaced in place and keeps its entity variables, rule state and
        config (as ``ctx:install``).  Returns the rids that changed.  The cause of the
        commit is ``engine:install``.  (p2pico.root upgrades the root pico with it.)
        """

        def install(pico: Pico, clock: Callable[[], float]) -> list[str]:
            current = list(pico.rulesets)
            infos = dict(pico.ruleset_info)
            changed: list[str] = []
            for new, url in rulesets:
                at = next((i for i, rs in enumerate(current) if rs.rid == new.rid), None)
                info = {"url": url, "config": (infos.get(new.rid) or {}).get("config", {})}
                if (
                    at is not None
                    and current[at].source == new.source
                    and (infos.get(new.rid) or {}).get("url") == url
                ):
                    continue
                if at is None:
                    current.append(new)
                else:
                    current[at] = new
                infos[new.rid] = info
                changed.append(new.rid)
            missing = missing_module(current, changed) if changed else None
            if missing is not None:
                raise PicoError(missing)
            if changed:
                cause = {"domain": "engine", "type": "install", "eid": "none", "txn": new_txn_id()}
                self._write_commit(
                    self._prepare_commit(
                        pico,
                        pico.ent,
                        pico.rule_states,
                        cause,
                        rulesets=current,
                        ruleset_info=infos,
                    )
                )
                self.home.set_head(pico.did, pico.head)
            return changed

        result = await self.submit(did, Work("manage", manage=install))
        assert isinstance(result, list)
        return result

    # -- the worker ------------------------------------------------------------------

    async def _worker(
        self,
        pico: Pico,
        inbox: trio.MemoryReceiveChannel[Work],
        forwarded: trio.MemoryReceiveChannel[Work] | None,
    ) -> None:
        worker = self._workers[id(pico)] = _Worker(pico)
        self._worker_started.set()
        try:
            await self._serve_inbox(pico, inbox, forwarded, worker)
        finally:
            if self._workers.get(id(pico)) is worker:  # not a later worker's entry
                del self._workers[id(pico)]

    async def _serve_inbox(
        self,
        pico: Pico,
        inbox: trio.MemoryReceiveChannel[Work],
        forwarded: trio.MemoryReceiveChannel[Work] | None,
        worker: _Worker,
    ) -> None:
        if forwarded is not None:
            with trio.move_on_after(DRAIN_TIMEOUT) as scope:
                async for early in forwarded:
                    if pico.deleted:
                        early.finish(error=PicoError(f"pico {pico.did} was deleted"))
                        continue
                    await self._run(pico, early)
            if scope.cancelled_caught:
                log.warning("%s: old host never said drained; serving direct traffic", pico.did)
                self.drained(pico.did)
        while (work := await self._next(worker, inbox)) is not None:
            if pico.deleted:  # by its parent: what was queued fails
                work.finish(error=PicoError(f"pico {pico.did} was deleted"))
                continue
            if work.kind != "move":
                await self._run(pico, work)
                continue
            assert work.run is not None
            if pico.did == self.root_did:  # p2pico.root: the node's own pico stays here
                work.finish(
                    error=PicoError(f"{pico.did} is the root pico of this node; it does not move")
                )
                continue
            try:
                handoff = await work.run(pico)
            except Exception as e:  # the move failed; the pico stays and keeps serving
                log.warning("%s: move failed: %s", pico.did, e)
                work.finish(error=PicoError(f"move failed: {e}"))
                continue
            self._detach(pico)
            work.finish(result=handoff.result)
            # The inbox is closed for sending now; what is left in it goes to the new host, in order.
            async for rest in inbox:
                if rest.job:  # the job moved with the state; the new host fires it
                    rest.finish(error=NotHosted(f"pico {pico.did} moved before job {rest.job}"))
                    continue
                await handoff.forward(rest)
            await handoff.finish()
            return

    @staticmethod
    async def _next(worker: _Worker, inbox: trio.MemoryReceiveChannel[Work]) -> Work | None:
        """The next item of the pico's inbox; None once it is closed: by ``_detach``, or
        by ``_reap_idle`` once the pico was idle for IDLE_SECONDS (then the worker ends,
        and the next ``enqueue`` starts another).  No timeout per item: a cancel scope
        with a deadline for every item cost about 6 % of an event's CPU."""
        worker.idle_since = trio.current_time()
        try:
            return await inbox.receive()
        except trio.EndOfChannel:
            return None

    async def _reap_idle(self) -> None:
        """End the workers of picos that waited for an item for IDLE_SECONDS.

        Runs on the trio thread, as ``enqueue`` does: a worker parked in its receive with
        nothing queued has its inbox closed and dropped (it ends; nothing is lost), so the
        next ``enqueue`` makes a new one.  It wakes when the first waiting worker reaches
        IDLE_SECONDS (or a quarter of that later, to look at a busy one again), so a
        worker ends IDLE_SECONDS after it began waiting.  Sleeps while no pico has one.
        """
        while True:
            if not self._workers:
                self._worker_started = trio.Event()
                await self._worker_started.wait()
                continue
            now = trio.current_time()
            soonest = now + IDLE_SECONDS
            for key, worker in list(self._workers.items()):
                pico, idle_since = worker.pico, worker.idle_since
                send = pico.inbox
                if send is None:
                    continue
                stats = send.statistics()
                if not stats.tasks_waiting_receive or stats.current_buffer_used:
                    soonest = min(soonest, now + IDLE_SECONDS / 4)  # busy
                elif idle_since + IDLE_SECONDS <= now:
                    del self._workers[key]
                    pico.inbox = None
                    send.close()  # its worker's receive ends (EndOfChannel)
                else:
                    soonest = min(soonest, idle_since + IDLE_SECONDS)
            if self._workers:
                await trio.sleep_until(soonest)

    async def _run(self, pico: Pico, work: Work) -> None:
        try:
            await self._run_work(pico, work)
        finally:
            if work.kind == "event":
                self._handled_one()

    def _handled_one(self) -> None:
        """Count a finished event (or job) and wake ``wait_handled`` (``GET /api/handled``)."""
        self.handled += 1
        woken, self._handled_event = self._handled_event, trio.Event()
        woken.set()

    async def wait_handled(self, after: int) -> int:
        """Wait until more than ``after`` events have been handled here; the count."""
        while self.handled <= after:
            await self._handled_event.wait()
        return self.handled

    async def _run_work(self, pico: Pico, work: Work) -> None:
        try:
            # KRL runs on the trio thread within a slice, else in a worker thread (see
            # "Inline evaluation"), so a rule spending its whole budget slows the node
            # down (the GIL) but never stops it: HTTP, libp2p and other picos go on.
            # State is committed here, on the trio thread, which owns the SQLite stores.
            clock = self._txn_clock()
            if work.kind == "event":
                assert work.event is not None
                event = work.event
                if not work.job:  # a job fires on its pico directly, as on pico-engine
                    record = self._check_channel(pico, work.eci)
                    if record is not None:
                        chan.check_event(record, event.domain, event.type, work.sender)
                if work.mid and (seen := _dedup_lookup(pico, work.mid)) is not None:
                    self.duplicates += 1
                    if self.replicate is not None:  # its first answer may not have gone out
                        await self.replicate(pico)
                    work.finish(result=seen)  # a retry of an event applied before
                    return
                fired: tuple[str, sched.Job | None] | None = None
                if work.job:
                    job = pico.schedule.get(work.job)
                    if job is None:  # removed since the scheduler saw it
                        work.finish(result={"eid": work.job, "directives": []})
                        return
                    fired = (work.job, sched.after_fire(job, clock()))
                    event = krl.Event(event.domain, event.type, event.attrs, event.eid, clock())
                elif not event.time:  # its time is when its transaction starts (`within`)
                    event = krl.Event(event.domain, event.type, event.attrs, event.eid, clock())
                txn_id = work.txn_id or new_txn_id()  # the same for a fallback's second run
                key = ("event", event.domain, event.type)
                try:
                    txn: Transaction | None = None
                    if self._inline_first(pico, key):
                        try:
                            txn = self._evaluate_event(
                                pico, event, work.eci, clock, fired, txn_id, inline=True
                            )
                        except _Fallback as fallback:
                            self._fell_back(pico, key, fallback)
                    if txn is None:
                        txn = await trio.to_thread.run_sync(
                            self._evaluate_event, pico, event, work.eci, clock, fired, txn_id
                        )
                except (PicoError, krl.KrlError):
                    if fired is not None:  # the job fired even though its rules failed
                        self._consume_job(pico, event, fired)
                    raise
                if txn.new_picos or txn.deleted_picos:  # rare: committed alone, at once
                    result: object = self._apply(pico, event, txn, work.mid)
                else:
                    result = await self._apply_grouped(pico, event, txn, work.mid)
                if self.replicate is not None:  # acknowledged once a replica holds it
                    await self.replicate(pico)
            elif work.kind == "query":
                record = self._check_channel(pico, work.eci)
                if record is not None:
                    chan.check_query(record, work.rid, work.name, work.sender)
                key = ("query", work.rid, work.name)
                args = (pico, work.eci, work.rid, work.name, work.args, clock)
                if self._inline_first(pico, key):
                    try:
                        result = self._run_query(*args, inline=True)
                    except _Fallback as fallback:
                        self._fell_back(pico, key, fallback)
                        result = await trio.to_thread.run_sync(self._run_query, *args)
                else:
                    result = await trio.to_thread.run_sync(self._run_query, *args)
            elif work.kind == "manage":
                assert work.manage is not None
                result = work.manage(pico, clock)
                if self.replicate is not None:
                    await self.replicate(pico)
            else:
                raise PicoError(f"unknown work kind {work.kind!r}")
        except (PicoError, krl.KrlError, chan.ChannelError) as e:
            if work.kind in ("event", "query"):  # ctx:logs shows what failed, and why
                what = f"{work.event.domain}:{work.event.type}" if work.event else work.name
                add_log(pico, self.clock(), "error", f"{work.kind} {what} failed: {e}")
            work.finish(error=e if isinstance(e, PicoError) else PicoError(str(e)))
        except Exception as e:  # a bug of ours: report it, keep the pico serving
            log.exception("%s: internal error", pico.did)
            work.finish(error=PicoError(f"internal error: {type(e).__name__}: {e}"))
        else:
            work.finish(result=result)

    def _inline_first(self, pico: Pico, key: tuple[str, str, str]) -> bool:
        return self.inline and (pico.threaded is None or key not in pico.threaded)

    def _fell_back(self, pico: Pico, key: tuple[str, str, str], fallback: _Fallback) -> None:
        """An inline attempt is dropped: its event or query goes to a thread from now on."""
        self.fallbacks += 1
        if pico.threaded is None:
            pico.threaded = set()
        pico.threaded.add(key)
        log.debug("%s: %s %s:%s runs in a thread (%s)", pico.did, *key, fallback.reason)

    def _check_channel(self, pico: Pico, eci: str) -> Mapping[str, object] | None:
        """The channel record an event or query names; None when it names the pico by DID.

        Addressing a pico by its DID is the owner path: no channel, no policy (the
        DID is also the id of its system,self channel, which only the pico may use).
        """
        if not eci:
            return None
        record = pico.channels.get(eci)
        if record is None:
            raise PicoError(f"ECI not found {eci}")
        return record

    def _txn_clock(self) -> Callable[[], float]:
        """The engine clock for one transaction, usable off the trio thread (see "Time")."""
        now = self.clock()
        return lambda: now

    def _evaluate_event(
        self,
        pico: Pico,
        event: krl.Event,
        eci: str,
        clock: Callable[[], float] = time.time,
        fired: tuple[str, sched.Job | None] | None = None,
        txn_id: str = "",
        *,
        inline: bool = False,
    ) -> Transaction:
        """Run every scheduled (ruleset, event) pair; the writes stay in the transaction.

        ``fired`` is (job id, the job after it fired or None) when a scheduled job fires;
        ``txn_id`` the transaction's id when the caller chose it (else a new one).
        ``inline``: on the trio thread, within the inline slice; _Fallback if it does not
        fit (see "Inline evaluation").
        """
        if eci and eci not in pico.channels:
            raise PicoError(f"ECI not found {eci}")
        txn = Transaction(pico, eci, txn_id or new_txn_id(), clock=clock)
        txn.engine = self
        txn.inline = inline
        if fired is not None:
            txn.schedule_writes[fired[0]] = fired[1]
        budget = self._budget(clock, inline)
        try:
            self._run_schedule(pico, event, txn, budget)
        except _Fallback:
            raise
        except krl.KrlBudgetExceeded:
            if inline:  # the slice (or the trio thread's stack) ran out, not the budget
                raise _Fallback("slice") from None
            txn.flush_logs()
            raise
        except BaseException:
            txn.flush_logs()
            raise
        txn.flush_logs()
        return txn

    def _budget(self, clock: Callable[[], float], inline: bool) -> krl.Budget:
        if inline:
            return krl.Budget(
                max_steps=INLINE_MAX_STEPS, max_seconds=INLINE_MAX_SECONDS, clock=clock
            )
        return krl.Budget(max_steps=TXN_MAX_STEPS, max_seconds=self.txn_seconds, clock=clock)

    def _run_schedule(
        self, pico: Pico, event: krl.Event, txn: Transaction, budget: krl.Budget
    ) -> None:
        schedule: deque[tuple[InstalledRuleset, krl.Event]] = deque(
            (rs, event) for rs in pico.rulesets
        )
        steps = 0
        while schedule:
            steps += 1
            if steps > MAX_SCHEDULE_STEPS:
                raise PicoError(f"more than {MAX_SCHEDULE_STEPS} raised events in one transaction")
            rs, ev = schedule.popleft()
            if txn.rulesets_view is not None and rs not in txn.rulesets_view:
                continue  # uninstalled (or reinstalled) by ctx: in this transaction
            txn.rid = rs.rid
            # Lazily: a rule's matcher runs only when reached, so a rule skipped by
            # `last` keeps its select-when state, as on pico-engine.
            for selection in rs.compiled.iter_select(ev, txn, budget):
                txn.rule_name = selection.rule.name
                outcome = rs.compiled.run(selection, ev, txn, budget)
                if outcome.halted:  # `error error`: only the system:error it raised goes on
                    schedule.clear()
                    del txn.raised[:-1]
                for raised, for_rid in txn.raised:
                    schedule.extend(
                        (r, raised) for r in txn.installed() if for_rid is None or r.rid == for_rid
                    )
                txn.raised.clear()
                if outcome.last or outcome.halted:
                    break

    def _apply(
        self, pico: Pico, event: krl.Event, txn: Transaction, mid: str = ""
    ) -> dict[str, object]:
        """Commit what a transaction wrote, if anything; return the event's response.

        Children made by ctx:newPico are created (genesis committed, hosted) just
        before the parent's commit, so a parent never lists a child that does not
        exist; if the parent's commit then fails they are deleted again.  Children
        removed by ctx:delPico are deleted after it, like event:send is sent.

        An event with a message id (``mid``) always commits: its result goes into the
        pico's dedup window in the same commit as its writes.
        """
        response: dict[str, object] = {"eid": txn.txn_id, "directives": txn.directives}
        if txn.changed() or mid:
            args, kwargs = self._commit_parts(pico, event, txn, mid, response)
            created = [self._create_child(pico, new) for new in txn.new_picos]
            try:
                self._write_commit(self._prepare_commit(*args, **kwargs))
            except BaseException:
                for child in created:
                    self._delete_tree(child.did)
                raise
            self.home.set_head(pico.did, pico.head)
            for did in txn.deleted_picos:
                self._delete_tree(did)
            for child in created:
                if self.on_new_pico is not None:
                    assert self._nursery is not None
                    self._nursery.start_soon(self.on_new_pico, child)
        self._after_commit(pico, txn)
        return response

    async def _apply_grouped(
        self, pico: Pico, event: krl.Event, txn: Transaction, mid: str = ""
    ) -> dict[str, object]:
        """``_apply`` for a transaction without ctx:newPico or ctx:delPico, its commit
        written with those of the other picos of this scheduling round (``_group_commit``).
        Nothing of it is seen, sent or answered before the group's COMMIT succeeded."""
        response: dict[str, object] = {"eid": txn.txn_id, "directives": txn.directives}
        if txn.changed() or mid:
            args, kwargs = self._commit_parts(pico, event, txn, mid, response)
            await self._group_commit(self._prepare_commit(*args, **kwargs))
        self._after_commit(pico, txn)
        return response

    def _commit_parts(
        self,
        pico: Pico,
        event: krl.Event,
        txn: Transaction,
        mid: str,
        response: dict[str, object],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of ``_commit`` for what a transaction wrote."""
        if pico.deleted:
            raise PicoError(f"pico {pico.did} was deleted")
        # The writes over the pico's maps, without copying them (O(writes), not
        # O(entries)); _commit applies them to the maps once the commit succeeded.
        writes: dict[str, dict[str, object]] = {}
        for (rid, name), value in txn.writes.items():
            writes.setdefault(rid, {})[name] = DELETED if value is _CLEARED else value
        ent: dict[str, Mapping[str, object]] = {
            rid: Overlay(vars, writes[rid]) if rid in writes else vars
            for rid, vars in pico.ent.items()
            if rid not in txn.dropped_rids
        }
        for rid in writes.keys() - ent.keys():
            ent[rid] = Overlay({}, writes[rid])
        # The pico's own rule states when none changed (never changed in place: a commit
        # that changes them makes new dicts), else copies with the changes.
        rules = pico.rule_states
        if txn.rule_writes or txn.dropped_rids:
            rules = {
                rid: dict(states)
                for rid, states in pico.rule_states.items()
                if rid not in txn.dropped_rids
            }
        for (rid, rule), state in txn.rule_writes.items():
            if state is None:
                rules.setdefault(rid, {}).pop(rule, None)
            else:
                rules.setdefault(rid, {})[rule] = state
        cause = {
            "domain": event.domain,
            "type": event.type,
            "eid": event.eid,
            "txn": txn.txn_id,
        }
        schedule = txn.schedule_view() if txn.schedule_writes else pico.schedule
        infos = None  # unchanged
        if txn.info_writes:
            merged = {**pico.ruleset_info, **txn.info_writes}
            infos = {k: v for k, v in merged.items() if v is not None}
        kwargs: dict[str, Any] = {
            "channels": txn.channels_view() if txn.channel_writes else None,
            "rulesets": txn.rulesets_view,
            "children": txn.children_view,
            "ruleset_info": infos,
            "changed": None if txn.dropped_rids else writes,
            "dedup": _dedup_add(pico, mid, response) if mid else None,
        }
        return (pico, ent, rules, cause, schedule), kwargs

    def _after_commit(self, pico: Pico, txn: Transaction) -> None:
        """What a committed transaction (or one that wrote nothing) sends and starts."""
        for send in txn.sends:  # fire and forget, and only what a committed transaction sent
            self._dispatch_send(*send)
        for request in txn.http_sends:  # http: autosend, likewise
            assert self._nursery is not None
            self._nursery.start_soon(self._http_autosend, request)
        if txn.move_target is not None:  # ctx:move: queued behind what is waiting now
            assert self._nursery is not None
            self._nursery.start_soon(self._move_later, pico, txn.move_target)

    async def _group_commit(self, prepared: _Prepared) -> None:
        """Write a prepared commit with the others of this scheduling round, then show it.

        The first commit of a round opens a group and yields once, so the picos that
        are runnable in this round add theirs; then every group member's blocks go to
        the store in one transaction (``SqliteBlockStore.group``: one COMMIT).  Only once
        that COMMIT succeeded does each pico see its new state and head.  If it fails,
        no pico of the group changes (in memory or in the store) and each of their
        events fails with the reason.
        """
        group = self._group
        if group is None:
            group = self._group = _Group([prepared])
            await trio.lowlevel.cancel_shielded_checkpoint()  # the round's other picos join
            self._group = None
            try:
                self._write_group(group)
            finally:  # the others must never wait forever (they cannot be cancelled)
                for task in group.waiting:
                    trio.lowlevel.reschedule(task)
            if group.waiting:
                # ...and goes on in the same round as they do, so the picos keep in step
                # and the next round's commits group again (alone, it just goes on)
                await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            group.commits.append(prepared)
            group.waiting.append(trio.lowlevel.current_task())
            # Parked without a cancel scope of its own (cheaper than a shielded
            # Event.wait): the leader never blocks after its yield, and always wakes it.
            await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        if prepared.error is not None:
            error = prepared.error
            if isinstance(error, PicoError):
                raise error
            raise PicoError(f"commit failed: {type(error).__name__}: {error}") from error

    def _write_group(self, group: _Group) -> None:
        self.groups += 1
        self.grouped_commits += len(group.commits)
        grouped = getattr(self.store, "group", None)
        try:
            with grouped() if grouped is not None else contextlib.nullcontext():
                # one put_many: the store binds many blocks to each INSERT
                self.store.put_many([b for prepared in group.commits for b in prepared.written])
        except Exception as e:  # nothing of the group was written; no pico changed
            log.error("group commit of %d picos failed: %s", len(group.commits), e)
            for prepared in group.commits:
                prepared.error = e
            return
        finished: list[_Prepared] = []
        for prepared in group.commits:
            try:
                self._finish_commit(prepared)
            except Exception as e:
                log.exception("%s: after its commit", prepared.pico.did)
                prepared.error = e
            else:
                finished.append(prepared)
        # the head pointers: in node.sqlite within HEADS_FLUSH_SECONDS (_flush_heads), and
        # found again in the blocks if the process dies before (p2pico.home)
        self.home.note_heads((p.pico.did, p.pico.head) for p in finished)
        if finished:
            self._heads_noted.set()

    async def _move_later(self, pico: Pico, to: str) -> None:
        assert self.move_hook is not None
        try:
            result = await self.move_hook(pico.did, to)
        except PicoError as e:
            add_log(pico, self.clock(), "error", f"ctx:move to {to} failed: {e}")
            log.warning("ctx:move of %s to %s failed: %s", pico.did, to, e)
        else:
            log.info("ctx:move of %s: %s", pico.did, result)

    def _dispatch_send(
        self, target: str, domain: str, type: str, attrs: dict[str, object], sender: str
    ) -> None:
        """A pico of this engine gets the event in its inbox now, before the sender's
        response goes out, so a request that follows sees its effect (FIFO, as on
        pico-engine, self-sends included); other picos get it through the mesh."""
        assert self._nursery is not None
        did = target if target in self.picos else self._eci_index.get(target)
        if did is None:
            if self.send_nowait is not None:
                self.send_nowait(target, domain, type, attrs, sender)
            else:
                self._nursery.start_soon(self._send, target, domain, type, attrs, sender)
            return
        eci = "" if target == did else target
        work = Work("event", event=krl.Event(domain, type, attrs), eci=eci, sender=sender)
        try:
            self.enqueue(did, work)
        except PicoError as e:
            log.warning("event:send %s:%s to %s failed: %s", domain, type, target, e)
            return
        self._nursery.start_soon(self._log_send_failure, work, target)

    async def _http_autosend(self, request: HttpSend) -> None:
        """Make an autosend request and send its response, over the event's attributes."""
        try:
            response = await trio.to_thread.run_sync(
                self.krl_http.request,
                request.method,
                request.url,
                request.headers,
                request.body,
                request.follow_redirects,
            )
        except HttpFailure as e:
            log.warning("http:%s autosend failed: %s", request.method.lower(), e)
            return
        attrs = {**request.attrs, **response}
        self._dispatch_send(request.target, request.domain, request.type, attrs, request.sender)

    async def event_query(
        self,
        target: str,
        domain: str,
        type: str,
        attrs: dict[str, object],
        rid: str,
        name: str,
        args: dict[str, object],
        sender: str,
    ) -> object:
        """`ctx:eventQuery`: run the event on ``target``, then the query there.

        For a pico of this engine both go in its inbox together, so nothing runs between
        them (pico-engine's one queue slot); elsewhere the query follows once the event's
        answer is back.  The event's failure is the caller's error.
        """
        did = target if target in self.picos else self._eci_index.get(target)
        if did is not None:
            eci = "" if target == did else target
            event = Work("event", event=krl.Event(domain, type, attrs), eci=eci, sender=sender)
            query = Work("query", eci=eci, rid=rid, name=name, args=args, sender=sender)
            self.enqueue(did, event)
            try:
                self.enqueue(did, query)
            except PicoError:
                await event.done.wait()
                raise
            for work in (event, query):
                await work.done.wait()
                if work.error is not None:
                    raise work.error
            return query.result
        if self.send_hook is None or self.query_hook is None:
            raise NotHosted(f"{target} is not a pico of this engine")
        await self.send_hook(target, domain, type, attrs, sender)
        return await self.query_hook(target, rid, name, args, sender)

    async def _log_send_failure(self, work: Work, target: str) -> None:
        await work.done.wait()
        if work.error is not None and work.event is not None:
            ev = work.event
            log.warning("event:send %s:%s to %s failed: %s", ev.domain, ev.type, target, work.error)

    async def _send(
        self, target: str, domain: str, type: str, attrs: dict[str, object], sender: str
    ) -> None:
        """Deliver one event:send; failures are logged, as the sender gets no answer."""
        try:
            if self.send_hook is not None:
                await self.send_hook(target, domain, type, attrs, sender)
                return
            did = target if target in self.picos else self._eci_index.get(target)
            if did is None:
                raise NotHosted(f"{target} is not a pico of this engine")
            eci = "" if target == did else target
            work = Work("event", event=krl.Event(domain, type, attrs), eci=eci, sender=sender)
            await self.submit(did, work)
        except PicoError as e:
            log.warning("event:send %s:%s to %s failed: %s", domain, type, target, e)

    def _consume_job(
        self, pico: Pico, event: krl.Event, fired: tuple[str, sched.Job | None]
    ) -> None:
        """Commit only the fired job's removal or next time (its rules failed)."""
        schedule = dict(pico.schedule)
        job_id, after = fired
        if after is None:
            schedule.pop(job_id, None)
        else:
            schedule[job_id] = after
        cause = {
            "domain": event.domain,
            "type": event.type,
            "eid": event.eid,
            "txn": new_txn_id(),
            "failed": True,  # the event's rules failed; only the job changed
        }
        self._write_commit(
            self._prepare_commit(pico, pico.ent, pico.rule_states, cause, schedule, changed={})
        )
        self.home.set_head(pico.did, pico.head)

    def _run_query(
        self,
        pico: Pico,
        eci: str,
        rid: str,
        name: str,
        args: Mapping[str, object],
        clock: Callable[[], float] = time.time,
        *,
        inline: bool = False,
    ) -> object:
        for rs in pico.rulesets:
            if rs.rid == rid:
                txn = Transaction(pico, eci, new_txn_id(), read_only=True, clock=clock)
                txn.engine = self
                txn.rid = rid
                txn.inline = inline
                try:
                    result = rs.compiled.query(name, args, txn, self._budget(clock, inline))
                except _Fallback:
                    raise
                except krl.KrlBudgetExceeded:
                    if inline:
                        raise _Fallback("slice") from None
                    txn.flush_logs()
                    raise
                except BaseException:
                    txn.flush_logs()
                    raise
                txn.flush_logs()
                return result
        raise PicoError(f"Pico doesn't have {rid} installed.")

    # -- committing state ---------------------------------------------------------------

    def state_of(
        self,
        pico: Pico,
        ent: Mapping[str, Mapping[str, object]],
        rules: Mapping[str, Mapping[str, object]],
        schedule: Mapping[str, sched.Job] | None = None,
        *,
        channels: Mapping[str, Mapping[str, object]] | None = None,
        rulesets: list[InstalledRuleset] | None = None,
        children: list[dict[str, str]] | None = None,
        ruleset_info: Mapping[str, Mapping[str, object]] | None = None,
        dedup: _DedupWindow | None = None,
    ) -> PicoState:
        """The pico's state with these parts (the pico's own where a part is None)."""
        window = pico.dedup if dedup is None else dedup.entries
        buckets = pico.dedup_buckets if dedup is None else dedup.buckets
        jobs = pico.schedule if schedule is None else schedule
        kids = pico.children if children is None else children
        infos = pico.ruleset_info if ruleset_info is None else ruleset_info
        # Each part of meta is absent when empty, so picos without jobs, family or
        # ctx:install'ed rulesets keep their CIDs.
        meta: dict[str, object] = {}
        if jobs:
            meta["schedule"] = {k: dict(v) for k, v in jobs.items()}
        if pico.parent:
            meta["parent"] = dict(pico.parent)
        if kids:
            meta["children"] = [dict(kid) for kid in kids]
        if infos:
            meta["rulesets"] = {rid: dict(info) for rid, info in infos.items()}
        if buckets:
            meta["dedup"] = [block.cid for block, _ in buckets]
        elif window:  # a state from before buckets, unchanged until its next message
            inline = pico.dedup_inline
            meta["dedup"] = inline if inline is not None else cbor.encode([e[:2] for e in window])
        return PicoState(
            did=pico.did,
            rulesets=tuple(
                RulesetState(
                    rs.rid,
                    rs.source,
                    ent.get(rs.rid, {}),  # not copied: a map may have a million entries
                    dict(rules.get(rs.rid, {})),
                )
                for rs in (pico.rulesets if rulesets is None else rulesets)
            ),
            channels=pico.channels if channels is None else channels,
            meta=meta,
        )

    def _write_commit(self, prepared: _Prepared) -> None:
        """Write one prepared commit (``_prepare_commit``) in its own store transaction,
        then show it to the pico; ``_group_commit`` writes several in one."""
        self.store.put_many(prepared.written)
        self._finish_commit(prepared)

    def _prepare_commit(
        self,
        pico: Pico,
        ent: Mapping[str, Mapping[str, object]],
        rules: dict[str, dict[str, object]],
        cause: Mapping[str, object] | None,
        schedule: dict[str, sched.Job] | None = None,
        *,
        channels: dict[str, dict[str, object]] | None = None,
        rulesets: list[InstalledRuleset] | None = None,
        children: list[dict[str, str]] | None = None,
        ruleset_info: dict[str, dict[str, object]] | None = None,
        changed: Mapping[str, Mapping[str, object]] | None = None,
        dedup: _DedupWindow | None = None,
    ) -> _Prepared:
        """The blocks and signed head of a commit, not yet written: the pico is unchanged
        until ``_finish_commit`` (after ``_write_commit`` or ``_group_commit``).

        Blocks the store already holds (unchanged sub-trees, the ruleset sources) are
        skipped by it.  A part given as None is the pico's current one.  ``changed``
        (rid -> the entity names written since the pico's committed state) lets dag.state
        encode only those (dag.state.Delta); None encodes the whole state.  An ``ent`` map
        that is a dag.state.Overlay over the pico's own is applied to it in place once
        the commit is written.
        """
        jobs = pico.schedule if schedule is None else schedule
        state = self.state_of(
            pico,
            ent,
            rules,
            jobs,
            channels=channels,
            rulesets=rulesets,
            children=children,
            ruleset_info=ruleset_info,
            dedup=dedup,
        )
        delta = None
        if changed is not None and pico.state_root is not None:
            delta = Delta(pico.state_root, changed, channels=channels is not None)
        root, blocks = state_blocks(state, self.store, delta=delta)
        cause_block = Block.encode(cause) if cause is not None else None
        head = sign_head(
            pico.keypair,
            seq=pico.seq + 1,
            prev=pico.head if pico.seq >= 0 else None,
            state=root.cid,
            ts=int(self.clock() * 1000),
            cause=cause_block.cid if cause_block else None,
        )
        extra = [cause_block] if cause_block else []
        if dedup is not None:
            extra += dedup.new  # the window's changed block
        written = [*blocks, *extra, head]
        return _Prepared(
            pico,
            written,
            ent,
            rules,
            jobs,
            root.cid,
            head.cid,
            channels=channels,
            rulesets=rulesets,
            children=children,
            ruleset_info=ruleset_info,
            dedup=dedup,
        )

    def _finish_commit(self, prepared: _Prepared) -> None:
        """The prepared commit's blocks are in the store: now the pico sees its new state."""
        pico, written, ent, rules, jobs = (
            prepared.pico,
            prepared.written,
            prepared.ent,
            prepared.rules,
            prepared.jobs,
        )
        rulesets, children, ruleset_info = (
            prepared.rulesets,
            prepared.children,
            prepared.ruleset_info,
        )
        channels, dedup = prepared.channels, prepared.dedup
        if self.on_commit is not None:
            self.on_commit(pico, written)
        pico.ent = {
            rid: v.apply() if isinstance(v, Overlay) else v if isinstance(v, dict) else dict(v)
            for rid, v in ent.items()
        }
        pico.rule_states = rules
        pico.state_root = prepared.root
        pico.head, pico.seq = prepared.head, pico.seq + 1
        if rulesets is not None:
            pico.rulesets = rulesets
        if children is not None:
            pico.children = children
        if ruleset_info is not None:
            pico.ruleset_info = ruleset_info
        if dedup is not None:
            pico.dedup, pico.dedup_buckets = dedup.entries, dedup.buckets
            pico.dedup_inline = None
        if channels is not None:
            hosted = self.picos.get(pico.did) is pico
            for eci in pico.channels.keys() - channels.keys():
                if hosted:
                    self._eci_index.pop(eci, None)
            pico.channels = channels
            if hosted:
                for eci in channels:
                    self._eci_index[eci] = pico.did
        if jobs != pico.schedule:
            pico.schedule = jobs
            self.schedule_changed()
        self._changed(pico.did)

    def gc(self, keep_history: int | None = None) -> GcReport:
        """Delete the blocks that no hosted pico and no imported head reaches (dag.gc).

        ``keep_history=None`` keeps every head chain whole; N keeps each root's head and
        its N previous heads (with their states), so older history is deleted and the
        log reports it as truncated (p2pico.history).  Runs on the trio thread, between
        transactions.
        """
        roots = {pico.head: None for pico in self.picos.values()}
        roots.update((hosted.head, None) for hosted in self.home.hosted())
        roots.update((head.cid, None) for _, head in self.home.all_imported_heads())
        if self.gc_roots is not None:
            roots.update((cid, None) for cid in self.gc_roots())
        return collect(self.store, list(roots), keep_history=keep_history)
