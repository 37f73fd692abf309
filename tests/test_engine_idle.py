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
