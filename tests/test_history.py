"""Export, import and log (p2pico/history.py) through the HTTP API, two engines in process.

A hosts a counter pico; B is a separate engine on its own network that only ever
sees the pico's history through CARs.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from dag.block import Block
from dag.car import read_car, write_car
from dag.cid import CID
from dag.head import sign_head, verify_head
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.testing import start_mesh

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
SAMPLE_CAR = (
    Path(__file__).resolve().parents[1].parent / "shared/fixtures/ipld/car/p2pico-sample-state.car"
).read_bytes()


@dataclass
class Node:
    client: httpx.AsyncClient
    mesh: Mesh

    async def events(self, target: str, n: int) -> None:
        for _ in range(n):
            r = await self.client.post(f"/sky/event/{target}/none/counter/inc")
            assert "error" not in r.json(), r.text

    async def export(self, did: str) -> bytes:
        r = await self.client.get(f"/api/picos/{did}/car")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/vnd.ipld.car; version=1"
        return r.content

    async def import_(self, car: bytes, status: int = 200) -> dict[str, object]:
        r = await self.client.post("/api/import", content=car)
        assert r.status_code == status, r.text
        reply: dict[str, object] = r.json()
        return reply

    async def log(self, did: str) -> dict[str, object]:
        r = await self.client.get(f"/api/picos/{did}/log")
        assert r.status_code == 200, r.text
        out: dict[str, object] = r.json()
        return out


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    async with trio.open_nursery() as nursery:
        made = []
        for name in ("a", "b"):
            mesh = await start_mesh(nursery, tmp_path / name, {})  # separate networks
            app = build_app(mesh, lambda mesh=mesh: {"peer_id": mesh.peer_id})
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url=f"http://{name}.test")
            made.append(Node(client, mesh))
        yield made[0], made[1]
        for node in made:
            await node.client.aclose()
        nursery.cancel_scope.cancel()


async def new_counter(node: Node, events: int) -> str:
    r = await node.client.post("/api/picos", json={"rulesets": [COUNTER]})
    did: str = r.json()["did"]
    await node.events(did, events)
    return did


def car(root: CID, blocks: list[Block]) -> bytes:
    out = io.BytesIO()
    write_car(out, [root], blocks)
    return out.getvalue()


def blocks_of(data: bytes) -> tuple[list[CID], list[Block]]:
    roots, blocks = read_car(io.BytesIO(data))
    return roots, list(blocks)


async def test_export_import_and_log_agree(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    did = await new_counter(a, 3)
    pico = a.mesh.engine.picos[did]
    exported = await a.export(did)
    roots, blocks = blocks_of(exported)
    assert roots == [pico.head]
    assert len(blocks) == len({blk.cid for blk in blocks})

    log_a = await a.log(did)
    assert log_a["verified"] is True
    heads = log_a["heads"]
    assert isinstance(heads, list)
    assert [h["seq"] for h in heads] == [3, 2, 1, 0]
    assert heads[0]["cid"] == str(pico.head)
    assert heads[-1]["cause"] is None
    assert {h["cause"]["domain"] + ":" + h["cause"]["type"] for h in heads[:-1]} == {"counter:inc"}
    assert all(isinstance(h["cause"]["eid"], str) for h in heads[:-1])
    assert "fork" not in log_a

    reply = await b.import_(exported)
    assert reply == {
        "root": str(pico.head),
        "did": did,
        "seq": 3,
        "blocks": len(blocks),
        "new": len(blocks),
    }
    assert await b.log(did) == log_a
    assert not b.mesh.engine.picos  # imported, not hosted
    assert (await b.client.get(f"/sky/cloud/{did}/io.p2pico.counter/count")).json()["error"]
    # Importing twice changes nothing; B exports the very same bytes.
    assert (await b.import_(exported))["new"] == 0
    assert await b.export(did) == exported

    # A delta CAR (only what B lacks) extends B's copy.
    await a.events(did, 2)
    have = {blk.cid for blk in blocks}
    delta = [blk for blk in blocks_of(await a.export(did))[1] if blk.cid not in have]
    reply = await b.import_(car(pico.head, delta))
    assert (reply["seq"], reply["new"]) == (5, len(delta))
    assert "fork" not in reply
    assert await b.log(did) == await a.log(did)


async def test_bad_cars_are_refused_with_the_reason(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    did = await new_counter(a, 2)
    exported = await a.export(did)
    _roots, blocks = blocks_of(exported)
    pico = a.mesh.engine.picos[did]
    prefix = "import refused: "

    corrupt = bytearray(exported)
    corrupt[-1] ^= 1  # the last byte of the last block
    reply = await b.import_(bytes(corrupt), 400)
    assert reply["error"].startswith(prefix + "CAR byte ")  # type: ignore[union-attr]
    assert "block does not match its CID" in reply["error"]  # type: ignore[operator]

    reply = await b.import_(exported[:-5], 400)
    assert "truncated section" in reply["error"]  # type: ignore[operator]

    newest = verify_head(blocks[0])  # walk order: the head first
    # The head without its history or state: not a truncated export, which holds the
    # state of each head it keeps, so --accept-truncated is not offered.
    reply = await b.import_(car(pico.head, blocks[:1]), 400)
    assert reply["error"] == (
        f"{prefix}the CAR is incomplete (cut short?): missing head block {newest.prev} "
        f"(seq 1), and block {newest.state} is missing: neither in the CAR nor on this node"
    )

    reply = await b.import_(SAMPLE_CAR, 400)  # the probe's sample starts at seq 1, not genesis
    assert "exactly the genesis head (seq 0) has no prev (seq 1)" in reply["error"]  # type: ignore[operator]

    stray = Block.encode({"not": "reachable"})
    reply = await b.import_(car(pico.head, [*blocks, stray]), 400)
    assert (
        reply["error"]
        == f"{prefix}1 blocks are not reachable from the root {pico.head}, e.g. {stray.cid}"
    )

    without_state = [blk for blk in blocks if blk.cid != newest.state]
    reply = await b.import_(car(pico.head, without_state), 400)
    assert reply["error"] == (
        f"{prefix}block {newest.state} is missing: neither in the CAR nor on this node"
    )

    out = io.BytesIO()
    write_car(out, [pico.head, pico.head], blocks)
    reply = await b.import_(out.getvalue(), 400)
    assert reply["error"] == prefix + "a pico CAR has one root (its newest head); this one has 2"

    assert len(b.mesh.engine.store) == 0  # nothing of any of this was kept
    r = await b.client.get(f"/api/picos/{did}/log")
    assert r.status_code == 404


async def test_forks_are_recorded_and_reported_never_merged(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    did = await new_counter(a, 2)
    pico = a.mesh.engine.picos[did]
    await b.import_(await a.export(did))
    heads = {h["seq"]: h for h in (await a.log(did))["heads"]}  # type: ignore[union-attr]
    h1, h2 = CID.parse(heads[1]["cid"]), CID.parse(heads[2]["cid"])
    state2 = CID.parse(heads[2]["state"])

    # The key holder signs a second seq 2: same key, same prev, a different head.
    forged = sign_head(pico.keypair, seq=2, prev=h1, state=state2, ts=heads[2]["ts"] + 1)
    reply = await b.import_(car(forged.cid, [forged]))
    fork = {"seq": 2, "heads": [str(h2), str(forged.cid)]}
    assert (reply["seq"], reply["fork"]) == (2, fork)
    log_b = await b.log(did)
    assert log_b["verified"] is True
    assert log_b["heads"][0]["cid"] == str(h2)  # type: ignore[index]  # not replaced
    assert log_b["fork"] == fork

    # The host learns of it the same way; its pico keeps going on its own chain.
    assert (await a.import_(car(forged.cid, [forged])))["fork"] == fork
    await a.events(did, 2)
    log_a = await a.log(did)
    assert [h["seq"] for h in log_a["heads"]][:1] == [4]  # type: ignore[union-attr]
    assert log_a["fork"] == fork

    # A longer forged branch (diverging at seq 1) does not win by being longer.
    state1 = CID.parse(heads[1]["state"])
    branch = [sign_head(pico.keypair, seq=1, prev=CID.parse(heads[0]["cid"]), state=state1, ts=7)]
    for seq in range(2, 7):
        branch.append(sign_head(pico.keypair, seq=seq, prev=branch[-1].cid, state=state1, ts=7))
    reply = await b.import_(car(branch[-1].cid, branch))
    assert reply["fork"] == {"seq": 1, "heads": [str(h1), str(branch[0].cid)]}
    # B still follows A's chain: a genuine update from A is no fork.
    reply = await b.import_(await a.export(did))
    assert (reply["seq"], "fork" in reply) == (4, False)
    log_b = await b.log(did)
    assert log_b["heads"][0]["seq"] == 4  # type: ignore[index]
    assert log_b["fork"] == {"seq": 1, "heads": [str(h1), str(branch[0].cid)]}


async def test_a_fork_that_arises_after_an_import_is_reported(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    did = await new_counter(a, 2)
    pico = a.mesh.engine.picos[did]
    heads = {h["seq"]: h for h in (await a.log(did))["heads"]}  # type: ignore[union-attr]
    h2 = CID.parse(heads[2]["cid"])
    # A former host that kept the key signs a seq 3 on the host's head: imported, it extends
    # what the host holds, so it is no fork yet, and the host's head stays its own.
    theirs = sign_head(pico.keypair, seq=3, prev=h2, state=CID.parse(heads[2]["state"]), ts=9)
    reply = await a.import_(car(theirs.cid, [theirs]))
    assert (reply["seq"], "fork" in reply) == (3, False)
    assert "fork" not in await a.log(did)
    assert pico.head == h2
    # Then the host commits its own seq 3: two signed heads of one seq, a fork in every log.
    await a.events(did, 1)
    ours = pico.head
    fork = {"seq": 3, "heads": [str(ours), str(theirs.cid)]}
    assert (await a.log(did))["fork"] == fork
    # Imported again, the reply says so and the head is flagged from now on.
    assert (await a.import_(car(theirs.cid, [theirs])))["fork"] == fork
    [flag] = [h.fork for h in a.mesh.engine.home.imported_heads(did) if h.cid == theirs.cid]
    assert flag is True
    await a.events(did, 1)
    log_a = await a.log(did)
    assert (log_a["heads"][0]["seq"], log_a["fork"]) == (4, fork)  # type: ignore[index]
