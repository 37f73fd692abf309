"""Scheduled events: jobs kept in a pico's state, and the service that fires them.

Neighbours: p2pico.engine (stores jobs through the transaction overlay, fires a
job as one transaction), p2pico.node (starts ``serve`` after the engine).

Theory of operation
-------------------
A job is part of the pico's state: the map ``schedule`` in the state root's
``meta`` (absent when there are no jobs, so picos without jobs keep their
CIDs), job id -> record::

    {"rid", "eci", "event": {"domain", "type", "attrs"}, "time": T}            # at
    {"rid", "eci", "event": {...}, "timespec": "*/5 * * * *", "next": T}       # repeat

``T`` is epoch seconds (UTC).  A job is written by `schedule … at|repeat` in
the transaction's overlay, like an entity variable, so a rule error drops it,
and it persists and moves with the pico because the state DAG does.

Firing.  ``serve`` sleeps until the earliest due job of the picos hosted here
(or until the engine says a schedule changed), then for each pico with due
jobs submits them one at a time, earliest first, through the engine's inbox
(``Engine.fire``).  The firing transaction removes an ``at`` job, or moves a
``repeat`` job's ``next`` to the first cron time after now, *in the same
commit* as the event's effects.  So a crash before the commit fires the job
again after restart and nothing of the first attempt was kept; a crash after
it never fires it twice.  If the event's rules fail, the job is still consumed
(a commit with only that change), as on pico-engine where a failed scheduled
event is only logged: otherwise a failing ``at`` job would fire forever.

Missed jobs.  Jobs that fell due while the node was down (or while the pico was
on the way here in a move) fire once when the scheduler sees them: an ``at``
job once, a ``repeat`` job once however many of its times were missed, then
at its next time after now.  Replaying every missed tick of a ``* * * * *`` job
after a day offline would flood the pico with 1,440 stale events; not firing
it at all would silently skip work a rule expects (a periodic clean-up).

Clocks.  Job times are wall-clock epoch seconds; ``Engine.clock`` (default
``time.time``) says what time it is.  ``serve`` sleeps on trio's clock for
``due - engine.clock()`` seconds, at most ``MAX_SLEEP``, so a wall clock that
steps (NTP, suspend) is noticed within a minute.  Tests run the engine with
``clock=lambda: EPOCH + trio.current_time()`` under trio's MockClock, which
makes both clocks one.

Cron.  5 fields ``minute hour day-of-month month day-of-week`` or 6 with a
leading ``second`` (node-schedule accepts both, catalog §3.12).  Each field is a
list of ``*``, ``N``, ``A-B``, each with an optional ``/STEP`` (``N/STEP`` runs
from N to the field's maximum); months and weekdays also take English
three-letter names (``jan``, ``mon``); weekday 0 and 7 are Sunday; ``?`` is
``*`` in the two day fields.  As in Vixie cron, when both day fields are
restricted a day matches either of them.  Everything is UTC.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from p2pico.engine import Engine

log = logging.getLogger("p2pico.scheduler")

# The wall clock is read again at least this often while the scheduler sleeps.
MAX_SLEEP = 60.0
# A job still due right after it was fired (its commit failed) is retried this much later.
RETRY_AFTER = 30.0
# A pico whose inbox is full gets its due jobs this much later.
BUSY_RETRY = 1.0
# A cron expression with no time in this many years never fires (e.g. "0 0 30 2 *").
HORIZON_YEARS = 9

Job = dict[str, object]


class CronError(ValueError):
    """A timespec that is not a valid cron expression; the text names the field."""


# -- cron -------------------------------------------------------------------------------

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()  # names[i] means lo + i
    any_ok: bool = False  # '?' allowed


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31, any_ok=True)
_MONTH = _Field("month", 1, 12, tuple(_MONTHS))
_DOW = _Field("day-of-week", 0, 7, tuple(_DAYS), any_ok=True)


@dataclass(frozen=True, slots=True)
class Cron:
    spec: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    has_seconds: bool

    def _day_matches(self, d: datetime.datetime) -> bool:
        in_dom = d.day in self.days
        in_dow = (d.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_dom or in_dow
        return in_dom and in_dow

    def next_after(self, t: float) -> float | None:
        """The first time strictly after epoch second ``t`` that matches, or None if none soon."""
        step = 1 if self.has_seconds else 60
        start = (math.floor(t) // step) * step + step
        d = datetime.datetime.fromtimestamp(start, datetime.UTC)
        last_year = d.year + HORIZON_YEARS
        while d.year <= last_year:
            if d.month not in self.months:
                d = (d.replace(day=1, hour=0, minute=0, second=0) + _MONTH_LATER).replace(day=1)
            elif not self._day_matches(d):
                d = d.replace(hour=0, minute=0, second=0) + datetime.timedelta(days=1)
            elif d.hour not in self.hours:
                d = d.replace(minute=0, second=0) + datetime.timedelta(hours=1)
            elif d.minute not in self.minutes:
                d = d.replace(second=0) + datetime.timedelta(minutes=1)
            elif d.second not in self.seconds:
                d += datetime.timedelta(seconds=1)
            else:
                return d.timestamp()
        return None


_MONTH_LATER = datetime.timedelta(days=32)  # from the 1st, always lands in the next month


@functools.lru_cache(maxsize=256)
def parse_cron(spec: str) -> Cron:
    """Parse a 5- or 6-field cron timespec; CronError names the field that is wrong."""
    if not isinstance(spec, str):
        raise CronError(f"a cron timespec must be a string, not {type(spec).__name__}")
    parts = spec.split()
    if len(parts) == 5:
        parts = ["0", *parts]
        has_seconds = False
    elif len(parts) == 6:
        has_seconds = True
    else:
        raise CronError(
            f"cron timespec {spec!r} has {len(parts)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 (a second field first)"
        )
    fields = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)
    values = [_parse_field(spec, f, text) for f, text in zip(fields, parts, strict=True)]
    weekdays = frozenset(0 if v == 7 else v for v in values[5])
    cron = Cron(
        spec=spec,
        seconds=values[0],
        minutes=values[1],
        hours=values[2],
        days=values[3],
        months=values[4],
        weekdays=weekdays,
        days_restricted=parts[3] not in ("*", "?"),
        weekdays_restricted=parts[5] not in ("*", "?"),
        has_seconds=has_seconds,
    )
    return cron


def _parse_field(spec: str, field: _Field, text: str) -> frozenset[int]:
    def bad(reason: str) -> CronError:
        return CronError(f"cron timespec {spec!r}: {field.name} field {text!r}: {reason}")

    def number(s: str) -> int:
        low = s.lower()
        if low in field.names:
            return field.lo + field.names.index(low)
        if not s.isdigit():
            raise bad(f"{s!r} is not a number" + (" or a name" if field.names else ""))
        n = int(s)
        if not field.lo <= n <= field.hi:
            raise bad(f"{n} is out of range {field.lo}-{field.hi}")
        return n

    out: set[int] = set()
    for item in text.split(","):
        if not item:
            raise bad("empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise bad(f"step {step_text!r} must be a whole number of at least 1")
            step = int(step_text)
        if base == "*" or (base == "?" and field.any_ok):
            lo, hi = field.lo, field.hi
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = number(a), number(b)
            if lo > hi:
                raise bad(f"range {base!r} runs backwards")
        else:
            lo = number(base)
            hi = field.hi if slash else lo
        out.update(range(lo, hi + 1, step))
    return frozenset(out)


# -- job records ----------------------------------------------------------------------------


def new_job_id() -> str:
    return "s" + secrets.token_hex(10)


def new_job(
    *,
    rid: str,
    eci: str,
    domain: str,
    type: str,
    attrs: Mapping[str, object],
    at: float | None,
    timespec: str | None,
    now: float,
) -> Job:
    """The record `schedule … at|repeat` stores; CronError/ValueError for a bad time."""
    event = {"domain": domain, "type": type, "attrs": dict(attrs)}
    if (at is None) == (timespec is None):
        raise ValueError("a scheduled event needs exactly one of 'at' and 'repeat'")
    if at is not None:
        if not math.isfinite(at):
            raise ValueError(f"cannot schedule an event at {at}")
        return {"rid": rid, "eci": eci, "event": event, "time": at}
    assert timespec is not None
    nxt = parse_cron(timespec).next_after(now)
    if nxt is None:
        raise CronError(f"cron timespec {timespec!r} matches no time in {HORIZON_YEARS} years")
    return {"rid": rid, "eci": eci, "event": event, "timespec": timespec, "next": _num(nxt)}


def _num(t: float) -> float | int:
    return int(t) if t == int(t) else t


def due(job: Mapping[str, object]) -> float:
    """When the job fires next (epoch seconds)."""
    value = job["time"] if "time" in job else job["next"]
    assert isinstance(value, (int, float))
    return float(value)


def after_fire(job: Job, now: float) -> Job | None:
    """The job once it fired at ``now``: None for an ``at`` job, else the next cron time."""
    if "timespec" not in job:
        return None
    timespec = job["timespec"]
    assert isinstance(timespec, str)
    nxt = parse_cron(timespec).next_after(now)
    return None if nxt is None else {**job, "next": _num(nxt)}


def public(job_id: str, job: Mapping[str, object]) -> dict[str, object]:
    """The job as ``Context.schedule_list`` shows it to KRL."""
    out: dict[str, object] = {
        "id": job_id,
        "rid": job["rid"],
        "eci": job.get("eci"),
        "event": job["event"],
    }
    if "time" in job:
        out["time"] = job["time"]
    else:
        out["timespec"] = job["timespec"]
    return out


def check_jobs(value: object) -> dict[str, Job]:
    """Validate the ``schedule`` map read from a state root; ValueError names the bad job."""
    if not isinstance(value, dict):
        raise ValueError(f"meta.schedule must be a map, not {type(value).__name__}")
    jobs: dict[str, Job] = {}
    for job_id, job in value.items():
        where = f"scheduled job {job_id!r}"
        if not isinstance(job, dict):
            raise ValueError(f"{where}: expected a map, got {type(job).__name__}")
        event = job.get("event")
        if not (
            isinstance(job.get("rid"), str)
            and isinstance(job.get("eci"), str)
            and isinstance(event, dict)
            and isinstance(event.get("domain"), str)
            and isinstance(event.get("type"), str)
            and isinstance(event.get("attrs"), dict)
        ):
            raise ValueError(f"{where}: needs rid, eci and event {{domain, type, attrs}}")
        if "time" in job:
            if not isinstance(job["time"], (int, float)):
                raise ValueError(f"{where}: 'time' must be a number")
        elif isinstance(job.get("timespec"), str) and isinstance(job.get("next"), (int, float)):
            try:
                parse_cron(str(job["timespec"]))
            except CronError as e:
                raise ValueError(f"{where}: {e}") from None
        else:
            raise ValueError(f"{where}: needs 'time', or 'timespec' and 'next'")
        jobs[job_id] = dict(job)
    return jobs


# -- the service ------------------------------------------------------------------------------


async def serve(engine: Engine, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Fire due jobs of the picos hosted by ``engine`` until cancelled."""
    from p2pico.engine import Busy, NotHosted, PicoError  # engine imports this module

    firing: set[str] = set()  # picos whose due jobs a task is submitting now
    hold: dict[tuple[str, str], tuple[float, float]] = {}  # (did, job) -> (due, not before)

    def next_job(did: str, now: float) -> tuple[float, str] | None:
        """The earliest job of ``did`` that may fire, with the time it may fire."""
        pico = engine.picos.get(did)
        if pico is None:
            return None
        best: tuple[float, str] | None = None
        for job_id, job in pico.schedule.items():
            when = due(job)
            held = hold.get((did, job_id))
            if held is not None:
                if held[0] == when:
                    when = max(when, held[1])
                else:
                    del hold[(did, job_id)]
            if best is None or (when, job_id) < best:
                best = (when, job_id)
        return best

    async def fire_due(did: str) -> None:
        try:
            while True:
                now = engine.clock()
                nxt = next_job(did, now)
                if nxt is None or nxt[0] > now:
                    return
                job_id = nxt[1]
                before = due(engine.picos[did].schedule[job_id])
                try:
                    await engine.fire(did, job_id)
                except NotHosted:
                    return  # it moved away; its new host fires its jobs
                except Busy:
                    hold[(did, job_id)] = (before, now + BUSY_RETRY)
                    continue
                except PicoError as e:  # its rules failed; the job was consumed all the same
                    log.warning("%s: scheduled job %s failed: %s", did, job_id, e)
                pico = engine.picos.get(did)
                job = pico.schedule.get(job_id) if pico is not None else None
                if job is not None and due(job) == before:
                    log.error("%s: job %s is still due after firing; retrying later", did, job_id)
                    hold[(did, job_id)] = (before, engine.clock() + RETRY_AFTER)
        finally:
            firing.discard(did)
            engine.schedule_changed()

    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            wake = engine.watch_schedule()
            now = engine.clock()
            soonest = math.inf
            for did in list(engine.picos):
                if did in firing:
                    continue
                nxt = next_job(did, now)
                if nxt is None:
                    continue
                if nxt[0] <= now:
                    firing.add(did)
                    nursery.start_soon(fire_due, did)
                else:
                    soonest = min(soonest, nxt[0])
            for key in [k for k in hold if k[0] not in engine.picos]:
                del hold[key]
            with trio.move_on_after(min(soonest - now, MAX_SLEEP)):
                await wake.wait()
