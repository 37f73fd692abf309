"""What an idle pico costs: no worker task or inbox, and a compiled ruleset shared by all."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

import krl
from p2pico.engine import IDLE_SECONDS, Engine, Work
from p2pico.home import Home

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
# `me` depends on the pico, so the global frame is made per transaction: picos that
# share the compiled ruleset must each see their own.
WHO = """ruleset test.who {
  meta { shares who }
  global {
    me = meta:picoId
    who = function() { ent:who }
  }
  rule remember {
    select when test remember
    send_directive("me", {"me": me})
    fired { ent:who := me }
  }
}"""


def inc() -> Work:
    return Work("event", event=krl.Event("counter", "inc", {"by": 1}))


def count() -> Work:
    return Work("query", rid="io.p2pico.counter", name="count")


async def test_an_idle_pico_drops_its_worker_and_gets_one_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([COUNTER])
        assert pico.inbox is None  # created, never used: no worker yet
        await engine.submit(pico.did, inc())
        assert pico.inbox is not None
        await trio.sleep(IDLE_SECONDS / 2)
        assert pico.inbox is not None  # not idle for long enough yet
        await engine.submit(pico.did, inc())
        await trio.sleep(IDLE_SECONDS + 1)
        assert pico.inbox is None
        # Queued together across the idle boundary, served in order by a new worker.
        works = [inc(), inc(), count()]
        for work in works:
            engine.enqueue(pico.did, work)
        for work in works:
            await work.done.wait()
        counts = [d["options"]["count"] for w in works[:2] for d in w.result["directives"]]  # type: ignore[index]
        assert counts == [3, 4]
        assert works[2].result == 4
        nursery.cancel_scope.cancel()


async def test_picos_share_one_compiled_ruleset_and_keep_their_own_globals(
    tmp_path: Path,
) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        picos = [engine.create_pico([WHO]) for _ in range(8)]
        compiled = {id(p.rulesets[0].compiled) for p in picos}
        sources = {id(p.rulesets[0].source) for p in picos}
        assert len(compiled) == 1
        assert len(sources) == 1
        seen: dict[str, list[object]] = {p.did: [] for p in picos}

        async def remember(did: str) -> None:
            for _ in range(20):
                work = Work("event", event=krl.Event("test", "remember", {}))
                result = await engine.submit(did, work)
                assert isinstance(result, dict)
                seen[did] += [d["options"]["me"] for d in result["directives"]]

        async with trio.open_nursery() as clients:  # their transactions overlap in threads
            for p in picos:
                clients.start_soon(remember, p.did)
        for p in picos:
            assert seen[p.did] == [p.did] * 20
            query = Work("query", rid="test.who", name="who")
            assert await engine.submit(p.did, query) == p.did
        nursery.cancel_scope.cancel()


async def test_a_restarted_engine_shares_compiled_rulesets_too(tmp_path: Path) -> None:
    home = Home(tmp_path)
    engine = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        dids = [engine.create_pico([COUNTER]).did for _ in range(3)]
        await engine.submit(dids[0], inc())
        nursery.cancel_scope.cancel()
    again = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.serve)
        loaded = [again.picos[did] for did in dids]
        assert len({id(p.rulesets[0].compiled) for p in loaded}) == 1
        assert all(p.inbox is None for p in loaded)  # none has worked since the restart
        assert await again.submit(dids[0], count()) == 1
        assert await again.submit(dids[1], count()) == 0
        nursery.cancel_scope.cancel()
    home.close()


async def test_a_busy_worker_is_not_dropped_and_loses_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A worker busy for longer than IDLE_SECONDS keeps its inbox, and what was queued
    behind it runs; once idle, it is dropped in about IDLE_SECONDS."""
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([COUNTER])

        async def slow_move(_: object) -> object:
            await trio.sleep(3 * IDLE_SECONDS)  # busy well past the idle timeout
            raise RuntimeError("refused")  # the move fails: the pico stays and serves on

        move = Work("move", run=slow_move)
        engine.enqueue(pico.did, move)
        await trio.sleep(IDLE_SECONDS / 2)
        queued = [inc() for _ in range(3)]
        for work in queued:
            engine.enqueue(pico.did, work)
        await trio.sleep(2 * IDLE_SECONDS)  # the move still runs: nothing is dropped
        assert pico.inbox is not None
        assert pico.inbox.statistics().current_buffer_used == 3
        for work in queued:
            await work.done.wait()
        assert move.error is not None
        assert "refused" in str(move.error)
        assert [w.result["directives"][0]["options"]["count"] for w in queued] == [1, 2, 3]  # type: ignore[index]
        await trio.sleep(IDLE_SECONDS - 0.1)  # idle, but not for long enough yet
        assert pico.inbox is not None
        await trio.sleep(0.2)
        assert pico.inbox is None
        assert await engine.submit(pico.did, count()) == 3  # a new worker serves it
        nursery.cancel_scope.cancel()


async def test_idle_workers_of_many_picos_end_and_the_reaper_sleeps(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        picos = [engine.create_pico([COUNTER]) for _ in range(10)]
        for pico in picos:  # their last items at different times, within IDLE_SECONDS / 2
            await engine.submit(pico.did, inc())
            await trio.sleep(IDLE_SECONDS / 20)
        assert all(p.inbox is not None for p in picos)
        await trio.sleep(IDLE_SECONDS * 1.3)
        assert all(p.inbox is None for p in picos)
        await trio.testing.wait_all_tasks_blocked()
        assert engine._workers == {}  # every worker ended
        # ...and the reaper waits for the next worker with no deadline of its own
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")
        for pico in picos:
            assert await engine.submit(pico.did, count()) == 1
        nursery.cancel_scope.cancel()
