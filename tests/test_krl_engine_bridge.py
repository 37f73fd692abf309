"""KRL calls that reach beyond one ruleset, through the engine and the mesh:
event:send, ctx:query and use module."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pico.engine import PicoError
from p2pico.testing import FakeNet, start_mesh
from protocols.messages import Target

SENDER = """ruleset sender {
  meta { shares asked }
  global { asked = function(to) { ctx:query(to, "counter", "total") } }
  rule go { select when ping go
    event:send({"did": event:attr("to"), "domain": "ping", "type": "pong"})
  }
  rule go_then_fail { select when ping fail
    pre { bad = "x".as("Nope") }
    event:send({"did": event:attr("to"), "domain": "ping", "type": "pong"})
  }
  rule self_query { select when ping self  pre { x = ctx:query(meta:picoId, "sender", "asked") } }
}"""

COUNTER = """ruleset counter {
  meta { shares total }
  global { total = function() { ent:total.defaultsTo(0) } }
  rule pong { select when ping pong  fired { ent:total := total() + 1 } }
}"""

LIBRARY = """ruleset library {
  meta { configure using greeting = "hello"  provides greet }
  global { greet = function(name) { greeting + ", " + name } }
}"""

USER = """ruleset user {
  meta { use module library alias lib with greeting = "hi"  shares hello }
  global { hello = function(name) { lib:greet(name) } }
}"""


async def test_event_send_and_ctx_query_reach_a_pico_on_another_engine(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        sender = await a.create_pico([SENDER])
        counter = await b.create_pico([COUNTER])

        handled = b.engine.handled
        for _ in range(3):
            await a.event(Target(sender.did), "ping", "go", {"to": counter.did})
        # event:send is fire and forget: wait until B has handled the three events (KRL
        # runs in a worker thread, so wait_all_tasks_blocked cannot tell when they are done)
        with trio.fail_after(30):
            await b.engine.wait_handled(handled + 2)
        assert await b.query(Target(counter.did), "counter", "total", {}) == 3

        # A failed transaction sends nothing.
        with pytest.raises(PicoError, match="Nope"):
            await a.event(Target(sender.did), "ping", "fail", {"to": counter.did})
        await trio.testing.wait_all_tasks_blocked()
        assert await b.query(Target(counter.did), "counter", "total", {}) == 3

        # ctx:query runs the other pico's shared function, on B, from a query on A.
        assert await a.query(Target(sender.did), "sender", "asked", {"to": counter.eci}) == 3

        with pytest.raises(PicoError, match="a pico cannot query itself during a transaction"):
            await a.event(Target(sender.did), "ping", "self", {})
        nursery.cancel_scope.cancel()


async def test_use_module_with_configuration(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        pico = await a.create_pico([LIBRARY, USER])
        assert await a.query(Target(pico.did), "user", "hello", {"name": "ada"}) == "hi, ada"
        nursery.cancel_scope.cancel()
