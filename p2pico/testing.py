"""Run real ``p2pico node`` processes on loopback (for tests, benchmarks and demos), like trio.testing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

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
    home: Path, *, bootstrap: list[str] | None = None, log_dir: Path | None = None
) -> NodeProcess:
    """Start ``p2pico node`` and block until it prints its ready line (no polling)."""
    cmd = [sys.executable, "-m", "p2pico", "--home", str(home), "node"]
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


def cli(*args: str, node: NodeProcess | None = None, check: bool = True) -> Any:
    """Run the ``p2pico`` CLI against a node and parse its JSON output."""
    cmd = [sys.executable, "-m", "p2pico"]
    if node is not None:
        cmd += ["--node", node.url]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(
            f"p2pico {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}"
        )
    out = done.stdout.strip()
    try:
        return json.loads(out)
    except ValueError:
        return out
