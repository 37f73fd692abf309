"""A history truncated by `gc --keep-history` can still be exported, imported and moved.

Also: the move's block protocol serves the target only the blocks of the pico it moves.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import trio

from dag.block import Block
from dag.car import car_header, car_section, read_car
from dag.head import verify_head
from dag.sealed import new_key, seal
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.testing import FakeNet, start_mesh
from protocols import messages
from protocols.messages import BLOCKS_PROTOCOL, ManifestRequest, Target, WantRequest

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()


def client_of(mesh: Mesh, name: str) -> httpx.AsyncClient:
    app = build_app(mesh, lambda: {"peer_id": mesh.peer_id})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")


async def events(client: httpx.AsyncClient, did: str, n: int) -> None:
    for _ in range(n):
        assert "error" not in (await client.post(f"/sky/event/{did}/none/counter/inc")).json()


async def test_a_sealed_or_cut_car_is_refused_with_what_it_is(tmp_path: Path) -> None:
    """A sealed export posted without opening it is named as such, with the way to open
    it; a CAR that lost a head and state blocks (a file cut short) is not offered
    --accept-truncated, which could not import it."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        async with client_of(a, "a") as ca, client_of(b, "b") as cb:
            pico = await a.create_pico([COUNTER])
            await events(ca, pico.did, 3)
            exported = (await ca.get(f"/api/picos/{pico.did}/car")).content
            roots, blocks = read_car(io.BytesIO(exported))
            held = list(blocks)

            sealed = seal(new_key(), roots[0], held)
            car = car_header([sealed.root]) + b"".join(car_section(x) for x in sealed.blocks)
            r = await cb.post("/api/import", content=car)
            assert (r.status_code, r.json()) == (
                400,
                {
                    "error": "import refused: this CAR is a sealed export (p2pico export "
                    "--encrypt): open it with its key, p2pico import FILE --key FILE.key"
                },
            )

            heads, at = set(), verify_head(held[0])  # the root, written first
            while at.prev is not None:
                heads.add(at.prev)
                at = verify_head(next(x for x in held if x.cid == at.prev))
            k = next(k for k in range(1, len(held)) if held[-k].cid in heads)
            cut = exported[: len(exported) - sum(len(car_section(x)) for x in held[-k:])]
            r = await cb.post("/api/import", content=cut)
            error = r.json()["error"]
            assert r.status_code == 400
            assert error.startswith(
                "import refused: the CAR is incomplete (cut short?): missing head block "
            ), error
            assert "--accept-truncated" not in error
            r = await cb.post("/api/import?accept_truncated=1", content=cut)
            assert r.status_code == 400
            assert (await cb.post("/api/import", content=exported)).status_code == 200
            nursery.cancel_scope.cancel()


async def test_export_import_and_move_a_truncated_history(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        c = await start_mesh(nursery, tmp_path / "c", world)
        async with client_of(a, "a") as ca, client_of(b, "b") as cb, client_of(c, "c") as cc:
            pico = await a.create_pico([COUNTER])
            did = pico.did
            await events(ca, did, 6)
            assert (await ca.post("/api/gc", json={"keep_history": 2})).status_code == 200

            # export: from the oldest kept head (seq 4) on; its prev is the one block left out
            r = await ca.get(f"/api/picos/{did}/car")
            assert r.status_code == 200, r.text
            roots, blocks = read_car(io.BytesIO(r.content))
            held = list(blocks)
            assert roots == [pico.head]
            log_a = (await ca.get(f"/api/picos/{did}/log")).json()
            assert [h["seq"] for h in log_a["heads"]] == [6, 5, 4]

            # import: refused unless asked for, then accepted and said to be truncated
            r = await cb.post("/api/import", content=r.content)
            assert r.status_code == 400
            missing = log_a["truncated"]["missing"]
            assert r.json()["error"] == (
                f"import refused: the root's history does not verify: missing head block "
                f"{missing} (seq 3); the CAR holds the heads from seq 4 on (a truncated "
                "history: import it with --accept-truncated to verify only those)"
            )
            car = car_header(roots) + b"".join(car_section(x) for x in held)
            r = await cb.post("/api/import?accept_truncated=1", content=car)
            assert r.status_code == 200, r.text
            reply = r.json()
            assert (reply["seq"], reply["new"], reply["blocks"]) == (6, len(held), len(held))
            assert reply["truncated"] == {"seq": 4, "missing": missing}
            assert reply["note"].startswith("history truncated at seq 4")
            assert (await cb.get(f"/api/picos/{did}/log")).json() == log_a

            # a tail is still checked whole: the newest head alone lacks its state
            assert held[0].cid == pico.head  # walk order: the head first, then its links
            r = await cc.post(
                "/api/import?accept_truncated=1",
                content=car_header(roots) + car_section(held[0]),
            )
            assert r.status_code == 400
            assert r.json()["error"].endswith("is missing: neither in the CAR nor on this node")

            # move: the target verifies the kept heads and adopts the pico
            moved = await a.move(did, c.peer_id)
            assert moved["host"] == c.peer_id
            assert c.engine.hosts(did)
            assert await c.query(Target(did), "io.p2pico.counter", "count", {}) == 6
            await events(cc, did, 1)
            log_c = (await cc.get(f"/api/picos/{did}/log")).json()
            assert [h["seq"] for h in log_c["heads"]] == [7, 6, 5, 4]
            assert log_c["truncated"]["seq"] == 4
        nursery.cancel_scope.cancel()


async def test_a_move_target_gets_only_the_moving_picos_blocks(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        mover = await a.create_pico([COUNTER])
        other = await a.create_pico([COUNTER])
        other_head = a.engine.store.get_block(other.head)
        assert other_head is not None
        serve_blocks = world[a.peer_id].handlers[BLOCKS_PROTOCOL]
        probes: list[object] = []

        async def probing(peer: str, data: bytes) -> bytes:
            # what a curious target could ask under the move's DID
            for request in (
                ManifestRequest(mover.did, other.head),
                WantRequest(mover.did, [other.head]),
            ):
                try:
                    probes.append(await serve_blocks(peer, request.encode()))
                except PermissionError as e:
                    probes.append(str(e))
            return await serve_blocks(peer, data)

        world[a.peer_id].handlers[BLOCKS_PROTOCOL] = probing
        await a.move(mover.did, b.peer_id)
        assert b.engine.hosts(mover.did)
        assert probes[0] == f"{b.peer_id} may fetch the blocks of {mover.head}, not {other.head}"
        # before the manifest nothing is entitled; the other pico's head is never served
        assert messages.decode_blocks(probes[1]) == [None]  # type: ignore[arg-type]
        assert not b.engine.store.has(other.head)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("keep", [0, 1])
async def test_gc_then_export_keeps_a_verifiable_tail(tmp_path: Path, keep: int) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", {})
        async with client_of(a, "a") as ca:
            pico = await a.create_pico([COUNTER])
            await events(ca, pico.did, 3)
            await ca.post("/api/gc", json={"keep_history": keep})
            r = await ca.get(f"/api/picos/{pico.did}/car")
            _, blocks = read_car(io.BytesIO(r.content))
            heads = [
                x
                for x in blocks
                if isinstance(x.value, list) and len(x.value) == 2 and isinstance(x.value[0], bytes)
            ]
            assert len(heads) == keep + 1
            assert all(isinstance(x, Block) for x in heads)
        nursery.cancel_scope.cancel()
