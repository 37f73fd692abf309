"""The engine in process: transactions, budgets, and a runaway rule that must not stall the node."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

import krl
from dag.block import Block
from p2pico.engine import MAX_INBOX, Busy, Engine, PicoError, Work
from p2pico.home import Home

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
RUNAWAY = """ruleset runaway {
  global { spin = function(n) { n > 0 => spin(n - 1) + spin(n - 1) | 1 } }
  rule forever { select when spin now  pre { x = spin(40) } }
}"""


def event(domain: str, type: str, **attrs: object) -> Work:
    return Work("event", event=krl.Event(domain, type, attrs))


async def test_a_runaway_rule_does_not_stall_other_picos(tmp_path: Path) -> None:
    engine = Engine(Home(tmp_path), txn_seconds=2.0)
    finished: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        runaway = engine.create_pico([RUNAWAY])
        counter = engine.create_pico([COUNTER])

        runaway_done = trio.Event()
        # The signal that the runaway's transaction is in its worker thread: its evaluation
        # was called there (its first, inline attempt ran out of its slice on the trio
        # thread; run_sync_soon wakes trio from the worker thread).
        started = trio.Event()
        token = trio.lowlevel.current_trio_token()
        evaluate = engine._evaluate_event

        def watched(pico: Any, *args: Any, **kwargs: Any) -> Any:
            if pico.did == runaway.did and not kwargs.get("inline"):
                token.run_sync_soon(started.set)
            return evaluate(pico, *args, **kwargs)

        engine._evaluate_event = watched  # type: ignore[method-assign]

        async def spin() -> None:
            try:
                await engine.submit(runaway.did, event("spin", "now"))
            except PicoError as e:
                finished.append(f"runaway: {e}")
            runaway_done.set()

        nursery.start_soon(spin)
        await started.wait()  # the runaway is now evaluating
        for _ in range(10):
            await engine.submit(counter.did, event("counter", "inc"))
        finished.append("counter: 10 events")
        await runaway_done.wait()
        nursery.cancel_scope.cancel()
    # The other pico was served while the runaway ran, and the runaway hit its budget
    # (in its worker thread: its first, inline attempt ran out of the slice).
    assert engine.fallbacks == 1
    assert finished[0] == "counter: 10 events"
    assert re.match(r"^runaway: (time|step) budget of .* exceeded in rule forever", finished[1])


async def test_a_full_inbox_is_refused_not_buffered(tmp_path: Path) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([COUNTER])
        for _ in range(MAX_INBOX):  # queued at once: its worker has not run yet
            engine.enqueue(pico.did, event("counter", "inc"))
        assert pico.inbox is not None
        assert pico.inbox.statistics().current_buffer_used == MAX_INBOX
        with pytest.raises(Busy) as refused:
            await engine.submit(pico.did, event("counter", "inc"))
        assert str(refused.value) == f"pico {pico.did} has 1000 requests waiting; try again later"
        nursery.cancel_scope.cancel()


async def test_a_pico_that_cannot_load_does_not_keep_the_others_down(tmp_path: Path) -> None:
    home = Home(tmp_path)
    engine = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        good = engine.create_pico([COUNTER])
        broken = engine.create_pico([COUNTER])
        await engine.submit(good.did, event("counter", "inc"))
        nursery.cancel_scope.cancel()
    # The broken pico's head now points at a block the store does not have.
    home.set_head(broken.did, Block.encode({"not": "a head"}).cid)

    restarted = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.serve)
        assert restarted.hosts(good.did)
        assert not restarted.hosts(broken.did)
        assert restarted.unloadable[broken.did].startswith("PicoError: head block bafyrei")
        count = Work("query", rid="io.p2pico.counter", name="count")
        assert await restarted.submit(good.did, count) == 1
        nursery.cancel_scope.cancel()


PAIR = """ruleset pair {
  meta { shares fired }
  global { fired = function() { ent:fired.defaultsTo(0) } }
  rule both { select when door opened and door closed
    fired { ent:fired := fired() + 1 } }
}"""


async def test_rule_state_is_committed_and_survives_a_restart(tmp_path: Path) -> None:
    home = Home(tmp_path)
    engine = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([PAIR])
        seq = pico.seq
        await engine.submit(pico.did, event("door", "opened"))
        assert pico.seq == seq + 1  # half of `and` is state: it is committed
        assert pico.rule_states["pair"]["both"] is not None
        nursery.cancel_scope.cancel()

    restarted = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.serve)
        await restarted.submit(pico.did, event("door", "closed"))
        fired = Work("query", rid="pair", name="fired")
        assert await restarted.submit(pico.did, fired) == 1
        assert restarted.picos[pico.did].rule_states.get("pair", {}).get("both") is None
        nursery.cancel_scope.cancel()


async def test_error_error_stops_the_transaction_but_keeps_what_it_wrote(tmp_path: Path) -> None:
    src = """ruleset guard {
      meta { shares seen }
      global { seen = function() { ent:seen.defaultsTo([]) } }
      rule check { select when t go
        fired { ent:seen := seen().append("check"); error error "bad input" } }
      rule after { select when t go  fired { ent:seen := seen().append("after") } }
      rule on_error { select when system error
        fired { ent:seen := seen().append("error:" + event:attr("data")) } }
    }"""
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([src])
        await engine.submit(pico.did, event("t", "go"))
        seen = await engine.submit(pico.did, Work("query", rid="guard", name="seen"))
        # `after` never ran; the system:error event reached the ruleset's handler.
        assert seen == ["check", "error:bad input"]
        nursery.cancel_scope.cancel()
