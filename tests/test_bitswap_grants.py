"""Operator Bitswap grants follow the pico's new commits and survive a node restart.

The grant logic (p2pico.bitswap ``grant`` / ``may_serve``) is driven through the node's HTTP
API and its home; the wire is tested in tests/net/test_net_bitswap.py and, with Helia, in
tests/test_bitswap_helia.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from dag.block import Block
from dag.store import walk
from p2pico.bitswap import Bitswap
from p2pico.http import build_app
from p2pico.testing import FakeNet, start_mesh

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
PEER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
OTHER_PEER = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"


async def test_a_grant_follows_new_commits_and_survives_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "a"
    async with trio.open_nursery() as nursery:
        mesh = await start_mesh(nursery, home, {})
        bitswap = Bitswap(FakeNet("unused", {}), mesh.engine.store)  # type: ignore[arg-type]
        app = build_app(mesh, lambda: {}, bitswap)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://a"
        ) as client:
            pico = await mesh.create_pico([COUNTER])
            other = await mesh.create_pico([COUNTER])
            assert not bitswap.may_serve(PEER, pico.head)  # nothing by default

            r = await client.post("/api/bitswap/allow", json={"peer": PEER, "did": pico.did})
            assert r.status_code == 200, r.text
            first = {b.cid for b in walk(mesh.engine.store, pico.head)}
            assert r.json()["blocks"] == len(first)
            assert all(bitswap.may_serve(PEER, cid) for cid in first)
            assert not bitswap.may_serve(PEER, other.head)  # another pico
            assert not bitswap.may_serve(OTHER_PEER, pico.head)  # another peer

            # a new commit is served without sharing again
            r = await client.post(f"/sky/event/{pico.did}/none/counter/inc")
            assert "error" not in r.json()
            new_head = mesh.engine.picos[pico.did].head
            new_blocks = {b.cid for b in walk(mesh.engine.store, new_head)} - first
            assert len(new_blocks) == 4  # head, state root, ruleset block, cause
            assert all(bitswap.may_serve(PEER, cid) for cid in new_blocks)
            assert (await client.get("/api/bitswap")).json() == {
                "shares": {PEER: {pico.did: str(new_head)}}
            }
        nursery.cancel_scope.cancel()
    mesh.home.close()

    async with trio.open_nursery() as nursery:  # the same home: a restarted node
        mesh = await start_mesh(nursery, home, {})
        bitswap = Bitswap(FakeNet("unused", {}), mesh.engine.store)  # type: ignore[arg-type]
        app = build_app(mesh, lambda: {}, bitswap)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://a"
        ) as client:
            assert all(bitswap.may_serve(PEER, cid) for cid in first | new_blocks)
            assert not bitswap.may_serve(PEER, other.head)
            stray = Block.raw(b"in the store, reached by no granted head")
            mesh.engine.store.put(stray)
            assert not bitswap.may_serve(PEER, stray.cid)

            r = await client.post("/api/bitswap/revoke", json={"peer": PEER})
            assert r.json() == {"peer": PEER, "revoked": True}
            assert not bitswap.may_serve(PEER, new_head)
            assert mesh.home.grants() == []
        nursery.cancel_scope.cancel()
    mesh.home.close()
