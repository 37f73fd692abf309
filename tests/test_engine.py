"""The engine in process: transactions, budgets, and a runaway rule that must not stall the node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

import krl
from dag.block import Block
from p2pico.engine import Busy, Engine, PicoError, Work
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

        async def spin() -> None:
            try:
                await engine.submit(runaway.did, event("spin", "now"))
            except PicoError as e:
                finished.append(f"runaway: {e}")
            runaway_done.set()

        nursery.start_soon(spin)
        await trio.testing.wait_all_tasks_blocked()  # the runaway is now in its worker thread
        for _ in range(10):
            await engine.submit(counter.did, event("counter", "inc"))
        finished.append("counter: 10 events")
        await runaway_done.wait()
        nursery.cancel_scope.cancel()
    # The other pico was served while the runaway ran, and the runaway hit its budget.
    assert finished[0] == "counter: 10 events"
    assert re.match(r"^runaway: (time|step) budget of .* exceeded in rule forever", finished[1])


async def test_a_full_inbox_is_refused_not_buffered(tmp_path: Path) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([COUNTER])
        assert pico.inbox is not None
        for _ in range(pico.inbox.statistics().max_buffer_size):
            pico.inbox.send_nowait(event("counter", "inc"))
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
