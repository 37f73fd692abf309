"""Engine.gc, POST /api/gc, `p2pico gc` and the log of a truncated history (dag/gc.py)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from dag.block import Block
from p2pico import cli
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.testing import FakeNet, start_mesh
from protocols.messages import BLOCKS_PROTOCOL, Target

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Mesh]]:
    async with trio.open_nursery() as nursery:
        mesh = await start_mesh(nursery, tmp_path / "a", {})
        app = build_app(mesh, lambda: {"peer_id": mesh.peer_id})
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a")
        yield client, mesh
        await client.aclose()
        nursery.cancel_scope.cancel()


async def counter(client: httpx.AsyncClient, events: int) -> str:
    did: str = (await client.post("/api/picos", json={"rulesets": [COUNTER]})).json()["did"]
    for _ in range(events):
        assert "error" not in (await client.post(f"/sky/event/{did}/none/counter/inc")).json()
    return did


async def test_gc_keeps_history_by_default_and_truncates_on_request(
    node: tuple[httpx.AsyncClient, Mesh],
) -> None:
    client, mesh = node
    did = await counter(client, 5)
    store = mesh.engine.store
    orphan = Block.raw(b"nobody links to me")
    store.put(orphan)

    r = await client.post("/api/gc", json={})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["deleted"] == 1
    assert report["bytes_freed"] == len(orphan.data)
    assert report["truncated"] == {}
    log = (await client.get(f"/api/picos/{did}/log")).json()
    assert log["verified"] is True
    assert "truncated" not in log
    assert [h["seq"] for h in log["heads"]] == [5, 4, 3, 2, 1, 0]

    before = len(store)
    report = (await client.post("/api/gc", json={"keep_history": 2})).json()
    assert report["deleted"] > 0
    assert report["kept"] == before - report["deleted"] == len(store)
    assert report["truncated"] == {str(mesh.engine.picos[did].head): 3}
    log = (await client.get(f"/api/picos/{did}/log")).json()
    assert log["verified"] is True
    assert [h["seq"] for h in log["heads"]] == [5, 4, 3]
    assert log["truncated"]["seq"] == 3
    assert log["note"].startswith("history truncated at seq 3")

    # the pico still works, and its new heads link onto the kept ones
    for _ in range(2):
        await client.post(f"/sky/event/{did}/none/counter/inc")
    log = (await client.get(f"/api/picos/{did}/log")).json()
    assert [h["seq"] for h in log["heads"]] == [7, 6, 5, 4, 3]


async def test_gc_keeps_imported_heads(node: tuple[httpx.AsyncClient, Mesh]) -> None:
    client, mesh = node
    did = await counter(client, 2)
    car = (await client.get(f"/api/picos/{did}/car")).content
    # a second node's view: a hosted pico moved away leaves only the imported head as a root
    mesh.engine.home.save_imported_head(did, mesh.engine.picos[did].head, 2, fork=False)
    mesh.engine.home.forget_pico(did)
    del mesh.engine.picos[did]
    report = mesh.engine.gc(None)
    assert report.deleted == 0
    assert (await client.get(f"/api/picos/{did}/car")).content == car


async def test_gc_refuses_bad_keep_history(node: tuple[httpx.AsyncClient, Mesh]) -> None:
    client, _ = node
    for bad in (-1, "3", 1.5, True):
        r = await client.post("/api/gc", json={"keep_history": bad})
        assert r.status_code == 400, bad
        assert "keep_history" in r.json()["error"]


def test_cli_gc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, str, object]] = []

    def fake_call(
        args: argparse.Namespace, method: str, path: str, body: object = None, **kw: Any
    ) -> Any:
        calls.append((method, path, body))
        return {"kept": 1, "deleted": 2, "bytes_freed": 3, "truncated": {}, "missing": 0}

    monkeypatch.setattr(cli, "_call", fake_call)
    assert cli.main(["gc", "--keep-history", "4", "--node", "http://x"]) == 0
    assert cli.main(["gc"]) == 0
    assert calls == [
        ("POST", "/api/gc", {"keep_history": 4}),
        ("POST", "/api/gc", {"keep_history": None}),
    ]
    assert '"deleted": 2' in capsys.readouterr().out


async def test_gc_waits_for_moves_to_finish(tmp_path: Path) -> None:
    """Blocks fetched for a move are not reachable from any root until it commits."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        pico = await a.create_pico([COUNTER])
        gate = trio.Event()
        serve_blocks = world[a.peer_id].handlers[BLOCKS_PROTOCOL]

        async def held_open(peer: str, data: bytes) -> bytes:
            await gate.wait()
            return await serve_blocks(peer, data)

        world[a.peer_id].handlers[BLOCKS_PROTOCOL] = held_open
        app = build_app(b, lambda: {})
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://b"
        ) as client:
            nursery.start_soon(a.move, pico.did, b.peer_id)
            await trio.testing.wait_all_tasks_blocked()
            r = await client.post("/api/gc", json={})
            assert (r.status_code, r.json()) == (
                409,
                {"error": "a move is under way; run gc once it is done"},
            )
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert b.engine.hosts(pico.did)
            r = await client.post("/api/gc", json={})
            assert r.status_code == 200
        assert await b.query(Target(pico.did), "io.p2pico.counter", "count", {}) == 0
        nursery.cancel_scope.cancel()
