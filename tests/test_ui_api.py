"""The node's root pico and pico-engine's UI API (catalog §3.15, §4, §5.4).

Every request is the one pico-engine's browser UI makes (packages/pico-engine-ui/src):
``GET /api/ui-context``; ``GET /c/<eci>/query/io.picolabs.pico-engine-ui/{box,pico,…}``;
``POST /c/<eci>/event/engine_ui/<name>/query/io.picolabs.pico-engine-ui/{box,pico}`` with a
JSON body; ``GET /c/<eci>/event-wait/engine_ui/del?eci=…``.

In process, the shipped rulesets folder is replaced by one the test fills, so the root
pico's upgrades can be watched and the UI ruleset runs without wrangler.  The last test
is issue 4's "Must show 2": two real nodes, the root pico on A, every call through B.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from p2pico import builtin
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.testing import FakeNet, NodeProcess, start_mesh, start_node

REPO_RULESETS = Path(__file__).resolve().parents[1] / "rulesets"
UI = "io.picolabs.pico-engine-ui"
ALLOW_ALL = {
    "eventPolicy": {"allow": [{"domain": "*", "name": "*"}], "deny": []},
    "queryPolicy": {"allow": [{"rid": "*", "name": "*"}], "deny": []},
}
GREETER = """ruleset greeter {
  meta { shares greeting, greeted }
  global {
    greeting = function(name) { "Hello, " + name + "!" }
    greeted = function() { ent:greeted.defaultsTo([]) }
  }
  rule greet {
    select when greet hello name re#(.+)# setting(name)
    send_directive("greeting", {"text": greeting(name)})
    fired {
      ent:greeted := greeted().append(name);
      log info "greeted " + name
    }
  }
}
"""
NOTES = """ruleset notes {
  meta { shares all }
  global { all = function() { ent:notes.defaultsTo({}) } }
  rule add {
    select when notes add
    fired { ent:notes{[event:attrs{"key"}]} := event:attrs{"value"} }
  }
}
"""


class UiClient:
    """pico-engine's browser UI, reduced to the HTTP calls it makes."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _json(self, r: httpx.Response) -> Any:
        assert r.status_code == 200, (r.status_code, r.text)
        body = json.loads(r.text) if r.text else None
        assert not (isinstance(body, dict) and "error" in body), body
        return body

    async def context(self) -> dict[str, Any]:
        context: dict[str, Any] = await self._json(await self.client.get("/api/ui-context"))
        return context

    async def query(self, eci: str, name: str) -> Any:  # apiGet
        return await self._json(await self.client.get(f"/c/{eci}/query/{UI}/{name}"))

    async def act(self, eci: str, event: str, then: str, /, **attrs: Any) -> Any:  # apiPost
        r = await self.client.post(
            f"/c/{eci}/event/engine_ui/{event}/query/{UI}/{then}",
            content=json.dumps(attrs),
            headers={"content-type": "application/json; charset=utf-8"},
        )
        return await self._json(r)

    async def delete(self, parent_eci: str, child_eci: str) -> Any:  # delPico
        r = await self.client.get(f"/c/{parent_eci}/event-wait/engine_ui/del?eci={child_eci}")
        return await self._json(r)


def channel(pico: dict[str, Any], *tags: str) -> dict[str, Any]:
    [found] = [c for c in pico["channels"] if sorted(c["tags"]) == sorted(tags)]
    return found


def ruleset(pico: dict[str, Any], rid: str) -> dict[str, Any]:
    [found] = [r for r in pico["rulesets"] if r["rid"] == rid]
    return found


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shipped-rulesets folder holding only the UI ruleset (more are added by tests)."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    shutil.copy(REPO_RULESETS / f"{UI}.krl", folder / f"{UI}.krl")
    monkeypatch.setattr(builtin, "RULESETS_DIR", folder)
    return folder


@asynccontextmanager
async def running(home: Path) -> AsyncIterator[tuple[UiClient, Mesh]]:
    """A node in this process with its root pico, started as ``p2pico node`` starts it."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        mesh = await start_mesh(nursery, home, world, root=True)
        app = build_app(mesh, lambda: {"peer_id": mesh.peer_id})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p2pico.test") as client:
            yield UiClient(client), mesh
        nursery.cancel_scope.cancel()
    mesh.home.close()


async def test_the_root_pico_is_made_once_and_upgraded_at_every_start(
    tmp_path: Path, shipped: Path
) -> None:
    home = tmp_path / "node"
    async with running(home) as (ui, mesh):
        context = await ui.context()
        assert set(context) == {"version", "eci"}
        root_did = mesh.engine.root_did
        assert root_did is not None
        assert mesh.home.root_did() == root_did
        assert root_did in mesh.records  # a pico of the mesh, with a location record
        pico = await ui.query(context["eci"], "pico")
        assert [r["rid"] for r in pico["rulesets"]] == [UI]
        assert ruleset(pico, UI)["url"] == (shipped / f"{UI}.krl").as_uri()
        # no allow-all p2pico channel: only the UI channel, besides the self channel
        assert sorted(sorted(c["tags"]) for c in pico["channels"]) == [
            ["engine", "ui"],
            ["self", "system"],
        ]
        await ui.act(context["eci"], "box", "box", name="Alpha", x=7)
        listed = (await ui.client.get("/api/picos")).json()
        assert [p for p in listed if p.get("root")] == [
            {
                "did": root_did,
                "eci": context["eci"],
                "seq": mesh.engine.picos[root_did].seq,
                "head": str(mesh.engine.picos[root_did].head),
                "root": True,
            }
        ]

    # A ruleset lands in the shipped folder, one changes, one does not compile.
    (shipped / "io.picolabs.pds.krl").write_text(
        'ruleset io.picolabs.pds {\n  meta { shares v }\n  global { v = function() { "pds" } }\n}\n'
    )
    (shipped / "io.picolabs.subscription.krl").write_text("ruleset io.picolabs.subscription {")
    ui_source = (shipped / f"{UI}.krl").read_text()
    (shipped / f"{UI}.krl").write_text(ui_source + "// a newer version\n")
    async with running(home) as (ui, mesh):
        assert mesh.engine.root_did == root_did  # the same root pico
        again = await ui.context()
        assert again["eci"] == context["eci"]
        pico = await ui.query(again["eci"], "pico")
        assert [r["rid"] for r in pico["rulesets"]] == [UI, "io.picolabs.pds"]
        assert ruleset(pico, UI)["meta"]["krl"].endswith("// a newer version\n")
        box = await ui.query(again["eci"], "box")
        assert (box["name"], box["x"]) == ("Alpha", 7)  # its entity variables stayed
        seq = mesh.engine.picos[root_did].seq

    # Nothing changed: a start commits nothing to the root pico.
    async with running(home) as (ui, mesh):
        await ui.query(context["eci"], "box")  # runs after engine:started, which is queued first
        assert mesh.engine.picos[root_did].seq == seq


async def test_the_root_pico_does_not_move(tmp_path: Path, shipped: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world, root=True)
        b = await start_mesh(nursery, tmp_path / "b", world, root=True)
        root = a.engine.root_did
        assert root is not None
        assert b.engine.root_did not in (None, root)  # each node has its own
        app = build_app(b, lambda: {"peer_id": b.peer_id})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as client:
            r = await client.post("/api/move", json={"did": root, "to": b.peer_id})
        assert r.json() == {"error": f"{root} is the root pico of this node; it does not move"}
        assert a.engine.hosts(root)
        assert not b.engine.hosts(root)
        nursery.cancel_scope.cancel()


async def test_every_ui_event_and_query_without_wrangler(tmp_path: Path, shipped: Path) -> None:
    home = tmp_path / "node"
    (home / "rulesets").mkdir(parents=True)
    greeter_file = home / "rulesets" / "greeter.krl"
    greeter_file.write_text(GREETER)
    async with running(home) as (ui, mesh):
        root_ui = (await ui.context())["eci"]
        assert await ui.query(root_ui, "name") == "Pico"
        assert await ui.query(root_ui, "logs") == []

        root_box = await ui.act(root_ui, "new", "box", name="Kid", backgroundColor="#00ff00")
        [kid_ui] = root_box["children"]
        kid = await ui.query(kid_ui, "box")
        assert kid == {
            "eci": kid_ui,
            "parent": root_ui,
            "children": [],
            "name": "Kid",
            "backgroundColor": "#00ff00",
            "x": 100,
            "y": 100,
            "width": 100,
            "height": 100,
        }
        # the child's UI ruleset came from the same URL as the root's
        kid_pico = await ui.query(kid_ui, "pico")
        assert ruleset(kid_pico, UI)["url"] == (shipped / f"{UI}.krl").as_uri()
        assert kid_pico["parent"] == root_ui

        moved = await ui.act(kid_ui, "box", "box", x=250, y="40", width=120, backgroundColor="red")
        assert (moved["x"], moved["y"], moved["width"], moved["height"]) == (250, 40, 120, 100)
        assert moved["backgroundColor"] == "#00ff00"  # not a #rrggbb colour: kept

        # install from a file:// URL in <home>/rulesets, then from source
        kid_pico = await ui.act(kid_ui, "install", "pico", url=greeter_file.as_uri(), config={})
        assert ruleset(kid_pico, "greeter")["url"] == greeter_file.as_uri()
        kid_pico = await ui.act(kid_ui, "install", "pico", url=NOTES, config='{"k": 1}')
        assert ruleset(kid_pico, "notes")["url"] is None
        assert ruleset(kid_pico, "notes")["config"] == {"k": 1}
        assert [r["rid"] for r in kid_pico["rulesets"]] == [UI, "greeter", "notes"]

        # a channel that allows everything; then use it
        kid_pico = await ui.act(kid_ui, "new_channel", "pico", tags=["test"], **ALLOW_ALL)
        test_eci = channel(kid_pico, "test")["id"]
        r_greet = await ui.client.post(
            f"/sky/event/{test_eci}/none/greet/hello", json={"name": "Ada"}
        )
        assert r_greet.json()["directives"][0]["options"] == {"text": "Hello, Ada!"}
        r = await ui.client.get(f"/c/{test_eci}/query/greeter/greeted")
        assert r.json() == ["Ada"]
        [episode] = await ui.query(kid_ui, "logs")  # the Logging tab: one per transaction
        assert episode["txnId"] == r_greet.json()["eid"]
        assert episode["header"] == "greeter greeted Ada"
        [line] = episode["entries"]
        assert line.endswith("Z [INFO] greeted Ada")

        # flush: read the URL again; the entity variables stay
        greeter_file.write_text(GREETER.replace('"Hello, "', '"Hi, "'))
        await ui.act(kid_ui, "flush", "pico", url=greeter_file.as_uri())
        r = await ui.client.post(f"/sky/event/{test_eci}/none/greet/hello", json={"name": "Bo"})
        assert r.json()["directives"][0]["options"] == {"text": "Hi, Bo!"}
        assert (await ui.client.get(f"/c/{test_eci}/query/greeter/greeted")).json() == [
            "Ada",
            "Bo",
        ]

        kid_pico = await ui.act(kid_ui, "uninstall", "pico", rid="notes")
        assert [r["rid"] for r in kid_pico["rulesets"]] == [UI, "greeter"]
        kid_pico = await ui.act(kid_ui, "del_channel", "pico", eci=test_eci)
        assert [c for c in kid_pico["channels"] if "test" in c["tags"]] == []

        await ui.act(kid_ui, "testing_eci", "box", eci="c-testing")
        assert await ui.query(kid_ui, "testingECI") == "c-testing"

        # the UI channel takes only the UI's events
        r = await ui.client.post(f"/c/{kid_ui}/event-wait/greet/hello", json={"name": "x"})
        assert r.json() == {"error": "Not allowed by channel policy"}
        r = await ui.client.get(f"/c/{kid_ui}/query/greeter/greeted")
        assert r.json() == {"error": "Not allowed by channel policy"}

        # a grandchild; deleting the child deletes both
        [grandkid_ui] = (await ui.act(kid_ui, "new", "box", name="Grandkid"))["children"]
        kid_did = mesh.engine.did_of_eci(kid_ui)
        grandkid_did = mesh.engine.did_of_eci(grandkid_ui)
        assert kid_did is not None
        assert grandkid_did is not None
        assert (await ui.query(grandkid_ui, "box"))["parent"] == kid_ui
        await ui.delete(root_ui, kid_ui)
        assert (await ui.query(root_ui, "box"))["children"] == []
        assert not mesh.engine.hosts(kid_did)
        assert not mesh.engine.hosts(grandkid_did)


async def test_children_report_their_ui_eci_so_the_parent_stops_asking(
    tmp_path: Path, shipped: Path
) -> None:
    async with running(tmp_path / "node") as (ui, mesh):
        root_ui = (await ui.context())["eci"]
        [kid_ui] = (await ui.act(root_ui, "new", "box", name="Kid"))["children"]
        await ui.query(root_ui, "box")  # after the child's report, which was queued first
        root = mesh.engine.picos[mesh.engine.root_did or ""]
        [family_eci] = [kid["eci"] for kid in root.children]
        assert root.ent[UI]["child_ui_ecis"] == {family_eci: kid_ui}
        assert root.ent[UI].get("new_children", {}) == {}


@pytest.mark.slow
async def test_must_show_2_the_ui_api_through_a_node_that_does_not_host_the_pico(
    tmp_path: Path,
) -> None:
    """Issue 4, Must show 2: A hosts the root pico; B is only a door into the mesh."""
    started: list[NodeProcess] = []
    try:
        a = await trio.to_thread.run_sync(lambda: start_node(tmp_path / "a", log_dir=tmp_path))
        started.append(a)
        b = await trio.to_thread.run_sync(
            lambda: start_node(tmp_path / "b", bootstrap=[a.multiaddr], log_dir=tmp_path)
        )
        started.append(b)
        (tmp_path / "a" / "rulesets").mkdir(exist_ok=True)
        greeter_file = tmp_path / "a" / "rulesets" / "greeter.krl"  # in the host's home
        greeter_file.write_text(GREETER)

        async with httpx.AsyncClient(base_url=a.url, timeout=60) as client_a:
            context = (await client_a.get("/api/ui-context")).json()
            [root_did] = [
                p["did"] for p in (await client_a.get("/api/picos")).json() if "root" in p
            ]
        assert context["eci"].startswith("c")
        root_ui = context["eci"]

        async with httpx.AsyncClient(base_url=b.url, timeout=60) as client_b:
            ui = UiClient(client_b)
            assert root_did not in [p["did"] for p in (await client_b.get("/api/picos")).json()]
            root_box = await ui.query(root_ui, "box")
            assert (root_box["eci"], root_box["children"], root_box["parent"]) == (
                root_ui,
                [],
                None,
            )

            # create a child
            root_box = await ui.act(root_ui, "new", "box", name="Child", backgroundColor="#ff8800")
            [child_ui] = root_box["children"]
            child_box = await ui.query(child_ui, "box")
            assert (child_box["name"], child_box["backgroundColor"], child_box["parent"]) == (
                "Child",
                "#ff8800",
                root_ui,
            )
            root_pico = await ui.query(root_ui, "pico")
            assert root_pico["children"] == [child_ui]

            # install a ruleset by file:// URL, and one from source
            child = await ui.act(child_ui, "install", "pico", url=greeter_file.as_uri(), config={})
            assert ruleset(child, "greeter")["url"] == greeter_file.as_uri()
            child = await ui.act(child_ui, "install", "pico", url=NOTES, config={})
            assert ruleset(child, "notes")["meta"]["krl"] == NOTES
            rids = [r["rid"] for r in child["rulesets"]]
            assert rids[0] == UI
            assert {"greeter", "notes"} <= set(rids)

            # a channel that allows everything
            child = await ui.act(child_ui, "new_channel", "pico", tags=["anything"], **ALLOW_ALL)
            open_channel = channel(child, "anything")
            assert (open_channel["eventPolicy"], open_channel["queryPolicy"]) == (
                ALLOW_ALL["eventPolicy"],
                ALLOW_ALL["queryPolicy"],
            )
            eci = open_channel["id"]

            # send the child an event on that channel, then query it
            r = await client_b.post(f"/sky/event/{eci}/none/greet/hello", json={"name": "Ada"})
            assert r.json()["directives"][0]["options"] == {"text": "Hello, Ada!"}
            r = await client_b.post(f"/c/{eci}/event-wait/notes/add", json={"key": "k", "value": 1})
            assert "error" not in r.json(), r.json()
            assert (await client_b.get(f"/c/{eci}/query/greeter/greeted")).json() == ["Ada"]
            assert (await client_b.get(f"/c/{eci}/query/notes/all")).json() == {"k": 1}

            # the boxes and details agree at the end
            child_pico = await ui.query(child_ui, "pico")
            assert child_pico["eci"] == child_ui
            assert child_pico["parent"] == root_ui
            assert eci in [c["id"] for c in child_pico["channels"]]
            assert (await ui.query(root_ui, "box"))["children"] == [child_ui]

        # all of it ran on A, the host: B hosts neither the root pico nor the child
        async with httpx.AsyncClient(base_url=a.url, timeout=60) as client_a:
            hosted_a = [p["did"] for p in (await client_a.get("/api/picos")).json()]
            root_host = (await client_a.get(f"/api/resolve/{root_did}")).json()["host"]
        async with httpx.AsyncClient(base_url=b.url, timeout=60) as client_b:
            hosted_b = [p for p in (await client_b.get("/api/picos")).json() if "root" not in p]
        assert root_did in hosted_a
        assert len(hosted_a) == 2  # the root pico and its child
        assert root_host == a.peer_id
        assert hosted_b == []
    finally:
        for node in started:
            await trio.to_thread.run_sync(node.stop)
