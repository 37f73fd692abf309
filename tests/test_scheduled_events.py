"""Scheduled events end to end in process: engine, scheduler and mesh on trio's MockClock.

The engine's wall clock is ``EPOCH + trio.current_time()``, so jobs fall due on
the mock clock and the tests never wait in real time.  MockClock's autojump
would also jump while a transaction runs in its worker thread (trio counts a
task waiting for a thread as blocked), so the ``clock`` fixture turns autojump
off while a thread runs: time only moves when the whole node is idle.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import krl
from p2pico.engine import Engine, PicoError, Transaction, Work
from p2pico.home import Home
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.scheduler import serve as serve_scheduler
from p2pico.testing import FakeNet
from protocols.messages import Target

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z


def wall() -> float:
    return EPOCH + trio.current_time()


@pytest.fixture
def clock(autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> Any:
    real = trio.to_thread.run_sync
    busy = 0

    async def run_sync(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal busy
        busy += 1
        autojump_clock.autojump_threshold = math.inf
        try:
            return await real(fn, *args, **kwargs)
        finally:
            busy -= 1
            if not busy:
                autojump_clock.autojump_threshold = 0

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)
    return autojump_clock


TIMER = """ruleset timer {
  meta { shares fired, job }
  global {
    fired = function() { ent:fired.defaultsTo([]) }
    job = function() { ent:job }
  }
  rule later { select when timer later
    fired {
      schedule ev event "t" at time:add(time:now(), {"seconds": 5}) attributes {"n": event:attr("n")} setting(job);
      ent:job := job{"id"}
    }
  }
  rule every5 { select when timer every
    fired { schedule ev event "t" repeat "*/5 * * * *" attributes {"n": "cron"} setting(job); ent:job := job{"id"} }
  }
  rule tick { select when ev t
    fired { ent:fired := fired().append({"at": time:now(), "n": event:attr("n"), "eid": event:eid}) }
  }
}"""

# The same, with a rule that removes every job of the ruleset: `schedule:list`/`remove`.
STOPPABLE = (
    TIMER.removesuffix("}")
    + """  rule stop { select when timer stop
    foreach schedule:list() setting(job)
    schedule:remove(job{"id"})
  }
}"""
)

# schedule:list and schedule:remove see only the calling ruleset's jobs (catalog §3.12)
OTHER = """ruleset other {
  meta { shares seen }
  global { seen = function() { ent:seen } }
  rule stop { select when timer stop
    foreach schedule:list() setting(job)
    schedule:remove(job{"id"})
  }
  rule count { select when timer stop  always { ent:seen := schedule:list().length() } }
}"""

try:
    krl.compile_ruleset(OTHER)
    NO_SCHEDULE_MODULE = ""
except krl.KrlError as e:  # krl's `schedule:` module is landing separately
    NO_SCHEDULE_MODULE = f"krl has no schedule:list/remove yet: {e}"

FAILS = """ruleset fails {
  rule boom { select when timer later  pre { x = event:attr("boom") => 5(1) | 0 } }
}"""


def event(domain: str, type: str, **attrs: object) -> Work:
    return Work("event", event=krl.Event(domain, type, attrs))


def at(seconds: float) -> str:
    """time:now() after ``seconds`` of mock time."""
    moment = datetime.datetime.fromtimestamp(EPOCH + seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def fired(engine: Engine, did: str) -> list[dict[str, object]]:
    result = await engine.submit(did, Work("query", rid="timer", name="fired"))
    assert isinstance(result, list)
    return result


async def start_engine(nursery: trio.Nursery, home: Path | Home) -> Engine:
    engine = Engine(home if isinstance(home, Home) else Home(home), clock=wall)
    await nursery.start(engine.serve)
    await nursery.start(serve_scheduler, engine)
    return engine


async def test_an_at_job_fires_once_at_its_time(tmp_path: Path, clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([TIMER])
        await trio.sleep(10)
        await engine.submit(pico.did, event("timer", "later", n=1))
        job = await engine.submit(pico.did, Work("query", rid="timer", name="job"))
        assert engine.schedule_of(pico.did) == [
            {
                "id": job,
                "rid": "timer",
                "event": {"domain": "ev", "type": "t", "attrs": {"n": 1}},
                "time": EPOCH + 15.0,
                "eci": "",  # the event that scheduled it came on no channel
                "next": EPOCH + 15.0,
            }
        ]
        await trio.sleep(4.9)
        assert await fired(engine, pico.did) == []
        await trio.sleep(100)
        assert await fired(engine, pico.did) == [{"at": at(15), "n": 1, "eid": job}]
        assert pico.schedule == {}  # removed in the transaction that fired it
        nursery.cancel_scope.cancel()


async def test_two_at_jobs_both_fire_in_due_order(tmp_path: Path, clock: Any) -> None:
    """Reference bug 1 (catalog §3.12): the timer was not re-armed after the first job."""
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([TIMER])
        await engine.submit(pico.did, event("timer", "later", n=1))
        await trio.sleep(1)
        await engine.submit(pico.did, event("timer", "later", n=2))
        await trio.sleep(60)
        assert [(f["at"], f["n"]) for f in await fired(engine, pico.did)] == [
            (at(5), 1),
            (at(6), 2),
        ]
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(bool(NO_SCHEDULE_MODULE), reason=NO_SCHEDULE_MODULE)
async def test_a_repeat_job_fires_on_schedule_until_removed(tmp_path: Path, clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([OTHER, STOPPABLE])
        await engine.submit(pico.did, event("timer", "every"))
        # EPOCH is 22:13:20; */5 fires at 22:15, 22:20, 22:25 …
        await trio.sleep(100 + 600 + 1)  # just after 22:25:00
        times = [f["at"] for f in await fired(engine, pico.did)]
        assert times == [at(100), at(400), at(700)]
        assert [j["next"] for j in engine.schedule_of(pico.did)] == [EPOCH + 1000]

        await engine.submit(pico.did, event("timer", "stop"))
        assert await engine.submit(pico.did, Work("query", rid="other", name="seen")) == 0
        assert engine.schedule_of(pico.did) == []
        await trio.sleep(3600)
        assert len(await fired(engine, pico.did)) == 3
        nursery.cancel_scope.cancel()


async def test_a_rule_error_rolls_back_the_job_it_scheduled(tmp_path: Path, clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([TIMER, FAILS])
        seq = pico.seq
        with pytest.raises(PicoError, match="not a function"):
            await engine.submit(pico.did, event("timer", "later", n=1, boom=True))
        assert pico.schedule == {}
        assert pico.seq == seq
        await trio.sleep(60)
        assert await fired(engine, pico.did) == []
        nursery.cancel_scope.cancel()


async def test_a_job_whose_event_fails_is_consumed_not_retried(tmp_path: Path, clock: Any) -> None:
    crash = """ruleset crash {
      rule arm { select when timer arm  fired { schedule ev event "boom" at time:now() } }
      rule boom { select when ev boom  pre { x = 5(1) } }
    }"""
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([crash])
        await engine.submit(pico.did, event("timer", "arm"))
        seq = pico.seq
        await trio.sleep(60)
        assert pico.schedule == {}
        assert pico.seq == seq + 1  # one commit: the job's removal, nothing the rule wrote
        nursery.cancel_scope.cancel()


async def test_jobs_survive_a_restart_and_missed_ones_fire_once(tmp_path: Path, clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([TIMER])
        await engine.submit(pico.did, event("timer", "later", n=1))
        await engine.submit(pico.did, event("timer", "every"))
        jobs = engine.schedule_of(pico.did)
        assert len(jobs) == 2
        nursery.cancel_scope.cancel()  # the node stops before either job is due

    await trio.sleep(3600)  # down for an hour: the at job and 12 cron ticks are missed

    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        await trio.sleep(1)
        got = await fired(engine, pico.did)
        # each missed job fires once, when the node is back (in due order)
        assert [(f["n"], f["at"]) for f in got] == [(1, at(3600)), ("cron", at(3600))]
        # the cron job goes on from now (23:13:20 → 23:15), not from the missed times
        assert [j["next"] for j in engine.schedule_of(pico.did)] == [EPOCH + 3600 + 100]
        await trio.sleep(100)
        assert len(await fired(engine, pico.did)) == 3
        nursery.cancel_scope.cancel()


async def start_node(nursery: trio.Nursery, home: Path, world: dict[str, FakeNet]) -> Mesh:
    """p2pico.testing.start_mesh, with the mock wall clock and the scheduler."""
    h = Home(home)
    engine = await start_engine(nursery, h)
    mesh = Mesh(engine, FakeNet(h.engine_key.peer_id, world), h)  # type: ignore[arg-type]
    await nursery.start(mesh.serve)
    return mesh


async def test_a_job_scheduled_on_a_fires_on_b_after_a_move(tmp_path: Path, clock: Any) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, tmp_path / "a", world)
        b = await start_node(nursery, tmp_path / "b", world)
        pico = await a.create_pico([TIMER])
        await a.event(Target(pico.did), "timer", "later", {"n": "at"})
        await a.event(Target(pico.did), "timer", "every", {})
        await a.move(pico.did, b.peer_id)
        assert not a.engine.hosts(pico.did)
        assert [j["rid"] for j in b.engine.schedule_of(pico.did)] == ["timer", "timer"]
        head_on_a = a.engine.store.get_block(pico.head)  # A keeps the blocks, not the pico
        assert head_on_a is not None

        await trio.sleep(100 + 300 + 1)  # the at job (+5 s) and two cron ticks
        got = await b.query(Target(pico.did), "timer", "fired", {})
        assert [f["n"] for f in got] == ["at", "cron", "cron"]
        assert [f["at"] for f in got] == [at(5), at(100), at(400)]
        # A fired nothing: it no longer hosts the pico, and B's history has each fire once.
        assert not a.engine.hosts(pico.did)
        assert b.engine.picos[pico.did].seq == 2 + 3  # genesis 0, 2 events, 3 fires
        nursery.cancel_scope.cancel()


async def test_the_schedule_route_lists_a_picos_jobs(tmp_path: Path, clock: Any) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        mesh = await start_node(nursery, tmp_path / "a", world)
        app = build_app(mesh, lambda: {"peer_id": mesh.peer_id})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p2pico.test") as client:
            pico = await mesh.create_pico([TIMER])
            await mesh.event(Target(pico.did), "timer", "every", {})
            r = await client.get(f"/api/picos/{pico.did}/schedule")
            assert r.status_code == 200
            [job] = r.json()
            assert job["timespec"] == "*/5 * * * *"
            assert job["next"] == EPOCH + 100
            assert set(job) == {"id", "rid", "event", "timespec", "eci", "next"}
            r = await client.get("/api/picos/did:key:z6MkNobody/schedule")
            assert r.status_code == 404
            assert r.json() == {"error": "pico did:key:z6MkNobody is not hosted here"}
        nursery.cancel_scope.cancel()


class _Handoff:
    """A committed move as the engine's worker sees it, without a mesh."""

    result = "moved"

    def __init__(self) -> None:
        self.forwarded: list[Work] = []

    async def forward(self, work: Work) -> None:
        self.forwarded.append(work)
        work.finish(result="forwarded")

    async def finish(self) -> None:
        pass


async def test_a_fire_queued_behind_a_move_is_left_to_the_new_host(
    tmp_path: Path, clock: Any
) -> None:
    """The job moves in the state; the old host must neither run nor forward its fire."""
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([TIMER])
        await engine.submit(pico.did, event("timer", "later", n=1))  # due at +5 s
        gate, handoff = trio.Event(), _Handoff()

        async def run(moving: Any) -> _Handoff:
            await gate.wait()
            return handoff

        async def move() -> None:
            assert await engine.submit(pico.did, Work("move", run=run)) == "moved"

        nursery.start_soon(move)
        await trio.sleep(10)  # the job fell due while the move held the pico
        assert pico.inbox is not None
        assert pico.inbox.statistics().current_buffer_used == 1  # the scheduler's fire
        gate.set()
        await trio.sleep(1)
        assert handoff.forwarded == []  # not forwarded as a plain event
        assert not engine.hosts(pico.did)
        assert list(pico.schedule) != []  # still in the state the new host adopted
        nursery.cancel_scope.cancel()


async def test_the_transaction_lists_and_removes_jobs_in_its_overlay(
    tmp_path: Path, clock: Any
) -> None:
    """krl's `schedule:list`/`remove` through Context, without krl: the shapes and the overlay."""
    async with trio.open_nursery() as nursery:
        engine = await start_engine(nursery, tmp_path)
        pico = engine.create_pico([TIMER])
        await engine.submit(pico.did, event("timer", "later", n=1))
        await engine.submit(pico.did, event("timer", "every"))
        [at_id, cron_id] = list(pico.schedule)
        txn = Transaction(pico, pico.eci, "t1", clock=wall)
        txn.rid = "timer"
        assert txn.schedule_list() == [
            {
                "id": at_id,
                "rid": "timer",
                "eci": "",  # submitted to the DID, through no channel
                "event": {"domain": "ev", "type": "t", "attrs": {"n": 1}},
                "time": EPOCH + 5.0,
            },
            {
                "id": cron_id,
                "rid": "timer",
                "eci": "",  # submitted to the DID, through no channel
                "event": {"domain": "ev", "type": "t", "attrs": {"n": "cron"}},
                "timespec": "*/5 * * * *",
            },
        ]
        assert txn.schedule_remove(at_id) is True
        assert txn.schedule_remove(at_id) is False
        assert txn.schedule_remove("s-nope") is False
        assert [j["id"] for j in txn.schedule_list()] == [cron_id]
        assert list(pico.schedule) == [at_id, cron_id]  # nothing committed yet
        new_id = txn.schedule_event("a", "b", {}, EPOCH + 1.0, None, None)
        assert [j["id"] for j in txn.schedule_list()] == [cron_id, new_id]
        with pytest.raises(krl.KrlRuntimeError, match="minute field '61'"):
            txn.schedule_event("a", "b", {}, None, "61 * * * *", None)

        query = Transaction(pico, pico.eci, "t2", read_only=True)
        assert len(query.schedule_list()) == 2
        with pytest.raises(krl.KrlRuntimeError, match="a query cannot remove"):
            query.schedule_remove(cron_id)
        with pytest.raises(krl.KrlRuntimeError, match="a query cannot schedule"):
            query.schedule_event("a", "b", {}, EPOCH, None, None)
        nursery.cancel_scope.cancel()
