"""Driving the shipped wrangler, subscription and pds rulesets in one process.

``Node`` is one engine on a FakeNet mesh, driven through its HTTP API (as the
CLI and pico-engine's UI drive a node).  ``settle()`` waits, without sleeping,
until every event that picos sent each other (``event:send`` is fire and
forget) has been handled: no trio task can run, no KRL transaction is in its
worker thread, and no pico has work waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from p2pico.engine import Engine, Pico, Work
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.testing import FakeNet, start_mesh

WRANGLER = "io.picolabs.wrangler"
SUBSCRIPTION = "io.picolabs.subscription"
PDS = "io.picolabs.pds"

# Remembers the wrangler:* and pds:* events its pico saw, in order, with their
# attributes (but the HTTP request's _headers: only whether there were any) and the
# channel they came in on.
WITNESS = """ruleset io.p2pico.witness {
  meta { shares seen, seen_of }
  global {
    seen = function() { ent:seen.defaultsTo([]) }
    seen_of = function(type) { seen().filter(function(e) { e{"type"} == type }) }
  }
  rule note {
    select where event:domain == "wrangler" || event:domain == "pds"
    fired {
      ent:seen := seen().append({
        "domain": event:domain, "type": event:type, "eci": meta:eci,
        "attrs": event:attrs.delete("_headers"), "headers": event:attrs >< "_headers"
      })
    }
  }
}"""

# Counts ping:ping events, with the channel each came in on.
PINGED = """ruleset io.p2pico.pinged {
  meta { shares pings }
  global { pings = function() { ent:pings.defaultsTo([]) } }
  rule ping {
    select when ping ping
    fired { ent:pings := pings().append({"eci": meta:eci, "n": event:attr("n")}) }
  }
}"""


class Idle:
    """Knows when the engines it watches have nothing left to do."""

    def __init__(self, engines: list[Engine]) -> None:
        self.engines = engines
        self.running = 0
        self.finished = trio.Event()
        for engine in engines:
            self._watch(engine)

    def _watch(self, engine: Engine) -> None:
        run = engine._run

        async def counted(pico: Pico, work: Work) -> None:
            self.running += 1
            try:
                await run(pico, work)
            finally:
                self.running -= 1
                self.finished.set()
                self.finished = trio.Event()

        engine._run = counted  # type: ignore[method-assign]

    def waiting(self) -> int:
        total = 0
        for engine in self.engines:
            for pico in engine.picos.values():
                if pico.inbox is not None:
                    total += pico.inbox.statistics().current_buffer_used
        return total

    async def settle(self) -> None:
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if self.running == 0 and self.waiting() == 0:
                return
            if self.running:  # a transaction is in its worker thread
                await self.finished.wait()


class Node:
    """One engine on a FakeNet mesh and a client of its HTTP API."""

    def __init__(self, client: httpx.AsyncClient, mesh: Mesh, idle: Idle) -> None:
        self.client = client
        self.mesh = mesh
        self.engine = mesh.engine
        self.settle = idle.settle

    async def new_pico(self, *sources: str, wrangler: bool = True, name: str | None = None) -> str:
        """A pico made as `p2pico pico new [--wrangler]` makes it; its DID."""
        body: dict[str, Any] = {"rulesets": list(sources)}
        if wrangler:
            body["wrangler"] = True
        if name is not None:
            body["name"] = name
        r = await self.client.post("/api/picos", json=body)
        assert r.status_code == 200, r.text
        made = r.json()
        assert "error" not in made, made
        await self.settle()
        did: str = made["did"]
        return did

    async def event(self, target: str, kind: str, /, **attrs: Any) -> Any:
        """An event, by DID or ECI; the response (``{"eid", "directives"}`` or ``{"error"}``)."""
        domain, type_ = kind.split(":")
        r = await self.client.post(f"/sky/event/{target}/none/{domain}/{type_}", json=attrs)
        assert r.status_code == 200, r.text
        await self.settle()
        return r.json()

    async def ok(self, target: str, kind: str, /, **attrs: Any) -> Any:
        body = await self.event(target, kind, **attrs)
        assert "error" not in body, body
        return body

    async def query(self, target: str, rid: str, name: str, /, **args: Any) -> Any:
        r = await self.client.post(f"/sky/cloud/{target}/{rid}/{name}", json=args)
        assert r.status_code == 200, r.text
        return r.json() if r.content else None

    async def seen(self, did: str, type_: str) -> list[dict[str, Any]]:
        """The attributes of the events of this type the pico's witness ruleset saw."""
        events = await self.query(did, "io.p2pico.witness", "seen_of", type=type_)
        return [e["attrs"] for e in events]

    def channels(self, did: str) -> list[dict[str, Any]]:
        return self.engine.channels_of(did)

    def tagged(self, did: str, *tags: str) -> list[dict[str, Any]]:
        wanted = sorted(t.lower() for t in tags)
        return [c for c in self.channels(did) if sorted(c["tags"]) == wanted]


async def _serve(home: Path, world: dict[str, FakeNet], nursery: trio.Nursery) -> Mesh:
    return await start_mesh(nursery, home, world)


Starter = Callable[[str], Awaitable[Node]]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Starter]:
    """``await nodes("a")``: a node in this process; nodes started by one test share a mesh."""
    world: dict[str, FakeNet] = {}
    engines: list[Engine] = []
    idle = Idle([])
    async with trio.open_nursery() as nursery:
        clients: list[httpx.AsyncClient] = []

        async def start(name: str) -> Node:
            mesh = await _serve(tmp_path / name, world, nursery)
            engines.append(mesh.engine)
            idle.engines = engines
            idle._watch(mesh.engine)
            app = build_app(mesh, lambda: {"peer_id": mesh.peer_id})
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://p2pico.test"
            )
            clients.append(client)
            return Node(client, mesh, idle)

        yield start
        for client in clients:
            await client.aclose()
        nursery.cancel_scope.cancel()


@pytest.fixture
async def node(nodes: Starter) -> Node:
    return await nodes("a")
