"""The engine: picos hosted on this node, each running one transaction at a time.

Neighbours: krl (compiles and runs rulesets), dag (state blocks and signed heads),
p2pico.home (keys and head pointers on disk), p2pico.mesh (routes what is not
hosted here and drives moves).

Theory of operation
-------------------
Every hosted pico has an inbox (a bounded trio memory channel) and one worker
task.  Events and queries are Work items put in the inbox; the worker takes
them in arrival order, so a pico never runs two transactions at once.

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

Time.  ``Engine.clock`` (epoch seconds, default ``time.time``) is the engine's
wall clock: `time:now`, event times, head timestamps and job times all come
from it.  A transaction reads it once, on the trio thread, when it starts, and
sees that one instant throughout (every `time:now()` in it is the same, as its
event's time is).  So a clock that only works on the trio thread, such as
``EPOCH + trio.current_time()`` under trio's MockClock, works, and a
transaction's result does not depend on how long its worker thread took.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

import krl
from dag.block import Block
from dag.cid import CID
from dag.did import Keypair
from dag.head import sign_head, verify_head
from dag.state import PicoState, RulesetState, read_state, state_blocks
from p2pico import scheduler as sched
from p2pico.home import Home

log = logging.getLogger("p2pico.engine")

# Items waiting for one pico beyond this are refused (backpressure), not buffered forever.
MAX_INBOX = 1000
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


class PicoError(Exception):
    """A request a pico could not serve; the text is shown to the caller as is."""

    code = "error"


class NotHosted(PicoError):
    code = "not-hosted"


class Busy(PicoError):
    code = "busy"


_CLEARED = object()

QueryHook = Callable[[str, str, str, dict[str, object]], Awaitable[object]]


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
    kind: str  # "event" | "query" | "move"
    run: Callable[[Pico], Awaitable[Handoff]] | None = None  # for "move"
    event: krl.Event | None = None
    eci: str = ""
    rid: str = ""
    name: str = ""
    args: Mapping[str, object] = field(default_factory=dict)
    job: str = ""  # for an "event": the scheduled job it fires (p2pico.scheduler)
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
    inbox: trio.MemorySendChannel[Work] | None = None
    forwarded: trio.MemorySendChannel[Work] | None = None

    @property
    def eci(self) -> str:
        """The pico's first channel, the one `p2pico pico new` hands out."""
        return next(iter(self.channels))


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
        self.sends: list[tuple[str, str, str, dict[str, object]]] = []
        self.engine: Engine | None = None  # set by the engine for module and query look-ups
        self.directives: list[dict[str, object]] = []
        self.raised: list[tuple[krl.Event, str | None]] = []
        self.rid = ""
        self.rule_name = ""

    def ent_get(self, rid: str, name: str) -> object:
        value = self.writes.get((rid, name), None)
        if (rid, name) in self.writes:
            return None if value is _CLEARED else value
        return self.pico.ent.get(rid, {}).get(name)

    def ent_set(self, rid: str, name: str, value: object) -> None:
        if self.read_only:
            raise krl.KrlRuntimeError("a query cannot change entity variables")
        self.writes[(rid, name)] = value

    def ent_clear(self, rid: str, name: str) -> None:
        if self.read_only:
            raise krl.KrlRuntimeError("a query cannot change entity variables")
        self.writes[(rid, name)] = _CLEARED

    def rule_state_get(self, rid: str, rule: str) -> object:
        if (rid, rule) in self.rule_writes:
            return self.rule_writes[(rid, rule)]
        return self.pico.rule_states.get(rid, {}).get(rule)

    def rule_state_set(self, rid: str, rule: str, state: object) -> None:
        if self.read_only:
            raise krl.KrlRuntimeError("a query cannot change rule state")
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
        if self.read_only:
            raise krl.KrlRuntimeError("a query cannot schedule events")
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
        for rs in self.pico.rulesets:
            if rs.rid == rid:
                return rs.compiled
        raise krl.KrlRuntimeError(f"Module not found: {rid}")

    def send_event(self, target: str, domain: str, type: str, attrs: Mapping[str, object]) -> None:
        if self.read_only:
            raise krl.KrlRuntimeError("a query cannot send events")
        self.sends.append((target, domain, type, dict(attrs)))

    def query_pico(self, target: str, rid: str, name: str, args: Mapping[str, object]) -> object:
        if target in (self.pico.did, *self.pico.channels):
            raise krl.KrlRuntimeError(
                "a pico cannot query itself during a transaction; call the function directly"
            )
        if self.engine is None or self.engine.query_hook is None:
            raise krl.KrlRuntimeError("ctx:query needs an engine on a mesh")
        hook = self.engine.query_hook
        try:
            with_timeout = _with_timeout(QUERY_TIMEOUT, hook, target, rid, name, dict(args))
            return trio.from_thread.run(with_timeout)
        except (PicoError, trio.TooSlowError) as e:
            reason = str(e) or f"no answer within {QUERY_TIMEOUT:g} s"
            raise krl.KrlRuntimeError(f"query {rid}/{name} on {target} failed: {reason}") from None

    def schedule_view(self) -> dict[str, sched.Job]:
        """Every job of the pico as this transaction sees it, in the order they were made."""
        jobs = dict(self.pico.schedule)
        for job_id, job in self.schedule_writes.items():
            if job is None:
                jobs.pop(job_id, None)
            else:
                jobs[job_id] = job
        return jobs

    def schedule_list(self) -> list[dict[str, object]]:
        """Every job of the pico, ``{"id", "rid", "event", "time" | "timespec"}``.

        krl keeps those of the calling ruleset (and removes only their ids).
        """
        return [sched.public(job_id, job) for job_id, job in self.schedule_view().items()]

    def schedule_remove(self, job_id: str) -> bool:
        """Remove one job, in this transaction's overlay; False if there is no such job."""
        if self.read_only:
            raise krl.KrlRuntimeError("a query cannot remove scheduled events")
        if job_id not in self.schedule_view():
            return False
        self.schedule_writes[job_id] = None
        return True

    def raise_event(
        self, domain: str, type: str, attrs: Mapping[str, object], for_rid: str | None
    ) -> None:
        if self.read_only:
            raise krl.KrlRuntimeError("a query cannot raise events")
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
        log.info("[%s] %s %s: %s", self.pico.did[-8:], self.rid, level, message)


def new_eci() -> str:
    return "c" + secrets.token_hex(12)


def new_txn_id() -> str:
    return "t" + secrets.token_hex(8)


class Engine:
    """Hosts picos.  Pico workers run in the nursery given to ``serve``."""

    def __init__(
        self,
        home: Home,
        *,
        txn_seconds: float = TXN_MAX_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.txn_seconds = txn_seconds
        self.clock = clock  # epoch seconds; see "Time" above
        self.store = home.blocks
        self.picos: dict[str, Pico] = {}
        self._eci_index: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None
        # picos hosted here that could not be loaded at start, with the reason
        self.unloadable: dict[str, str] = {}
        # set when a hosted pico's jobs may have changed (p2pico.scheduler waits on it)
        self._schedule_event = trio.Event()
        # Set by p2pico.mesh: deliver an event:send, and run a ctx:query, anywhere in
        # the mesh (target is a DID or an ECI).  Without them only local picos are reached.
        self.send_hook: Callable[[str, str, str, dict[str, object]], Awaitable[object]] | None = (
            None
        )
        self.query_hook: QueryHook | None = None

    # -- lifetime ----------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
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
            await trio.sleep_forever()

    def _load(self, did: str, keypair: Keypair, head_cid: CID) -> Pico:
        head_block = self.store.get_block(head_cid)
        if head_block is None:
            raise PicoError(f"head block {head_cid} of {did} is missing from the block store")
        head = verify_head(head_block)
        state = read_state(self.store, head.state)
        return self._pico_from_state(keypair, state, head_cid, head.seq)

    @staticmethod
    def _pico_from_state(keypair: Keypair, state: PicoState, head: CID, seq: int) -> Pico:
        rulesets = [
            InstalledRuleset(rs.rid, rs.source, krl.compile_ruleset(rs.source, filename=rs.rid))
            for rs in state.rulesets
        ]
        return Pico(
            did=state.did,
            keypair=keypair,
            rulesets=rulesets,
            ent={rs.rid: dict(rs.ent) for rs in state.rulesets},
            rule_states={rs.rid: dict(rs.rules) for rs in state.rulesets if rs.rules},
            schedule=sched.check_jobs(state.meta.get("schedule", {})),
            channels={eci: dict(ch) for eci, ch in state.channels.items()},
            head=head,
            seq=seq,
        )

    def _attach(self, pico: Pico, *, draining: bool = False) -> None:
        assert self._nursery is not None, "engine is not serving"
        send, recv = trio.open_memory_channel[Work](MAX_INBOX)
        pico.inbox = send
        fwd_recv = None
        if draining:
            pico.forwarded, fwd_recv = trio.open_memory_channel[Work](MAX_INBOX)
        self.picos[pico.did] = pico
        for eci in pico.channels:
            self._eci_index[eci] = pico.did
        self._nursery.start_soon(self._worker, pico, recv, fwd_recv)
        self.schedule_changed()

    def _detach(self, pico: Pico) -> None:
        """After a committed move: new submits no longer find the pico here."""
        del self.picos[pico.did]
        for eci in pico.channels:
            self._eci_index.pop(eci, None)
        assert pico.inbox is not None
        pico.inbox.close()
        self.home.forget_pico(pico.did)
        self.schedule_changed()

    # -- scheduled events (p2pico.scheduler) --------------------------------------------

    def watch_schedule(self) -> trio.Event:
        """An event set when the next change to any hosted pico's jobs happens."""
        if self._schedule_event.is_set():
            self._schedule_event = trio.Event()
        return self._schedule_event

    def schedule_changed(self) -> None:
        self._schedule_event.set()

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

    def create_pico(self, sources: list[str]) -> Pico:
        """A new pico with these rulesets installed; its genesis head is seq 0."""
        compiled = [krl.compile_ruleset(src) for src in sources]
        rids = [c.rid for c in compiled]
        if len(set(rids)) != len(rids):
            raise PicoError(f"the same ruleset is given twice: {rids}")
        keypair = Keypair.generate()
        channel = {"tags": ["p2pico"], "family": False}
        pico = Pico(
            did=keypair.did,
            keypair=keypair,
            rulesets=[
                InstalledRuleset(c.rid, s, c) for c, s in zip(compiled, sources, strict=True)
            ],
            ent={c.rid: {} for c in compiled},
            channels={new_eci(): channel},
            head=CID.of(b""),  # replaced by the genesis commit below
            seq=-1,
        )
        self._commit(pico, pico.ent, pico.rule_states, cause=None)
        self.home.save_pico(pico.did, keypair, pico.head)
        self._attach(pico)
        return pico

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
        pico = self.picos.get(did)
        if pico is None:
            raise NotHosted(f"pico {did} is not hosted here")
        lane = pico.forwarded if forwarded and pico.forwarded is not None else pico.inbox
        assert lane is not None
        try:
            lane.send_nowait(work)
        except trio.WouldBlock:
            raise Busy(f"pico {did} has {MAX_INBOX} requests waiting; try again later") from None
        except trio.ClosedResourceError:
            raise NotHosted(f"pico {did} is leaving this engine") from None
        await work.done.wait()
        if work.error is not None:
            raise work.error
        return work.result

    # -- the worker ------------------------------------------------------------------

    async def _worker(
        self,
        pico: Pico,
        inbox: trio.MemoryReceiveChannel[Work],
        forwarded: trio.MemoryReceiveChannel[Work] | None,
    ) -> None:
        if forwarded is not None:
            with trio.move_on_after(DRAIN_TIMEOUT) as scope:
                async for work in forwarded:
                    await self._run(pico, work)
            if scope.cancelled_caught:
                log.warning("%s: old host never said drained; serving direct traffic", pico.did)
                self.drained(pico.did)
        async for work in inbox:
            if work.kind != "move":
                await self._run(pico, work)
                continue
            assert work.run is not None
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

    async def _run(self, pico: Pico, work: Work) -> None:
        try:
            # KRL runs in a worker thread, so a rule spending its whole budget slows the
            # node down (the GIL) but never stops it: HTTP, libp2p and other picos go on.
            # State is committed here, on the trio thread, which owns the SQLite stores.
            clock = self._txn_clock()
            if work.kind == "event":
                assert work.event is not None
                event = work.event
                fired: tuple[str, sched.Job | None] | None = None
                if work.job:
                    job = pico.schedule.get(work.job)
                    if job is None:  # removed since the scheduler saw it
                        work.finish(result={"eid": work.job, "directives": []})
                        return
                    fired = (work.job, sched.after_fire(job, clock()))
                    event = krl.Event(event.domain, event.type, event.attrs, event.eid, clock())
                try:
                    txn = await trio.to_thread.run_sync(
                        self._evaluate_event, pico, event, work.eci, clock, fired
                    )
                except (PicoError, krl.KrlError):
                    if fired is not None:  # the job fired even though its rules failed
                        self._consume_job(pico, event, fired)
                    raise
                result: object = self._apply(pico, event, txn)
            elif work.kind == "query":
                result = await trio.to_thread.run_sync(
                    self._run_query, pico, work.eci, work.rid, work.name, work.args, clock
                )
            else:
                raise PicoError(f"unknown work kind {work.kind!r}")
        except (PicoError, krl.KrlError) as e:
            work.finish(error=e if isinstance(e, PicoError) else PicoError(str(e)))
        except Exception as e:  # a bug of ours: report it, keep the pico serving
            log.exception("%s: internal error", pico.did)
            work.finish(error=PicoError(f"internal error: {type(e).__name__}: {e}"))
        else:
            work.finish(result=result)

    def _check_channel(self, pico: Pico, eci: str) -> None:
        if eci and eci not in pico.channels:
            raise PicoError(f"ECI not found {eci}")

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
    ) -> Transaction:
        """Run every scheduled (ruleset, event) pair; the writes stay in the transaction.

        ``fired`` is (job id, the job after it fired or None) when a scheduled job fires.
        """
        self._check_channel(pico, eci)
        txn = Transaction(pico, eci, new_txn_id(), clock=clock)
        txn.engine = self
        if fired is not None:
            txn.schedule_writes[fired[0]] = fired[1]
        budget = krl.Budget(max_steps=TXN_MAX_STEPS, max_seconds=self.txn_seconds, clock=clock)
        schedule: deque[tuple[InstalledRuleset, krl.Event]] = deque(
            (rs, event) for rs in pico.rulesets
        )
        steps = 0
        while schedule:
            steps += 1
            if steps > MAX_SCHEDULE_STEPS:
                raise PicoError(f"more than {MAX_SCHEDULE_STEPS} raised events in one transaction")
            rs, ev = schedule.popleft()
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
                        (r, raised) for r in pico.rulesets if for_rid is None or r.rid == for_rid
                    )
                txn.raised.clear()
                if outcome.last or outcome.halted:
                    break
        return txn

    def _apply(self, pico: Pico, event: krl.Event, txn: Transaction) -> dict[str, object]:
        """Commit what a transaction wrote, if anything; return the event's response."""
        if txn.writes or txn.rule_writes or txn.schedule_writes:
            ent = {rid: dict(vars) for rid, vars in pico.ent.items()}
            for (rid, name), value in txn.writes.items():
                if value is _CLEARED:
                    ent.setdefault(rid, {}).pop(name, None)
                else:
                    ent.setdefault(rid, {})[name] = value
            rules = {rid: dict(states) for rid, states in pico.rule_states.items()}
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
            self._commit(pico, ent, rules, cause, schedule)
            self.home.set_head(pico.did, pico.head)
        for send in txn.sends:  # fire and forget, and only what a committed transaction sent
            assert self._nursery is not None
            self._nursery.start_soon(self._send, *send)
        return {"eid": txn.txn_id, "directives": txn.directives}

    async def _send(self, target: str, domain: str, type: str, attrs: dict[str, object]) -> None:
        """Deliver one event:send; failures are logged, as the sender gets no answer."""
        try:
            if self.send_hook is not None:
                await self.send_hook(target, domain, type, attrs)
                return
            did = target if target in self.picos else self._eci_index.get(target)
            if did is None:
                raise NotHosted(f"{target} is not a pico of this engine")
            eci = "" if target == did else target
            await self.submit(did, Work("event", event=krl.Event(domain, type, attrs), eci=eci))
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
        self._commit(pico, pico.ent, pico.rule_states, cause, schedule)
        self.home.set_head(pico.did, pico.head)

    def _run_query(
        self,
        pico: Pico,
        eci: str,
        rid: str,
        name: str,
        args: Mapping[str, object],
        clock: Callable[[], float] = time.time,
    ) -> object:
        self._check_channel(pico, eci)
        for rs in pico.rulesets:
            if rs.rid == rid:
                txn = Transaction(pico, eci, new_txn_id(), read_only=True, clock=clock)
                txn.engine = self
                txn.rid = rid
                budget = krl.Budget(
                    max_steps=TXN_MAX_STEPS, max_seconds=self.txn_seconds, clock=clock
                )
                return rs.compiled.query(name, args, txn, budget)
        raise PicoError(f"Pico doesn't have {rid} installed.")

    # -- committing state ---------------------------------------------------------------

    def state_of(
        self,
        pico: Pico,
        ent: Mapping[str, Mapping[str, object]],
        rules: Mapping[str, Mapping[str, object]],
        schedule: Mapping[str, sched.Job] | None = None,
    ) -> PicoState:
        jobs = pico.schedule if schedule is None else schedule
        return PicoState(
            did=pico.did,
            rulesets=tuple(
                RulesetState(
                    rs.rid,
                    rs.source,
                    dict(ent.get(rs.rid, {})),
                    dict(rules.get(rs.rid, {})),
                )
                for rs in pico.rulesets
            ),
            channels=pico.channels,
            # absent when empty, so picos without jobs keep their CIDs
            meta={"schedule": {k: dict(v) for k, v in jobs.items()}} if jobs else {},
        )

    def _commit(
        self,
        pico: Pico,
        ent: dict[str, dict[str, object]],
        rules: dict[str, dict[str, object]],
        cause: Mapping[str, object] | None,
        schedule: dict[str, sched.Job] | None = None,
    ) -> None:
        """Write the new state and a signed head; only then does the pico see it.

        All blocks of a commit go to the store in one transaction; blocks it already
        holds (unchanged sub-trees, the ruleset sources) are skipped by the store.
        """
        jobs = pico.schedule if schedule is None else schedule
        root, blocks = state_blocks(self.state_of(pico, ent, rules, jobs))
        cause_block = Block.encode(cause) if cause is not None else None
        head = sign_head(
            pico.keypair,
            seq=pico.seq + 1,
            prev=pico.head if pico.seq >= 0 else None,
            state=root.cid,
            ts=int(self.clock() * 1000),
            cause=cause_block.cid if cause_block else None,
        )
        self.store.put_many([*blocks, *([cause_block] if cause_block else []), head])
        pico.ent, pico.rule_states = ent, rules
        pico.head, pico.seq = head.cid, pico.seq + 1
        if jobs != pico.schedule:
            pico.schedule = jobs
            self.schedule_changed()
