"""Several hosts on one machine, unprivileged: network namespaces joined by a bridge.

``Lab`` starts one holder process in a private user, network and mount namespace
(``unshare -rnm``: no privileges needed where user namespaces are allowed). Inside it,
each host is a named network namespace with one veth link to a bridge in the holder's
namespace, address ``10.77.0.N/24``. ``cut(name)`` takes the host's bridge port down, so
every packet to or from it is dropped (a partition: no reset, no error, as when a cable
or a router goes); ``heal(name)`` brings it back.

Nodes run inside their host's namespace (``nsenter``), listening for libp2p on its
address. Their HTTP API must stay reachable from the test whatever the partition does,
so the test makes each node's HTTP listener itself, on 127.0.0.1 of its own namespace,
and hands it over (``--http fd://N``): the node accepts on it from inside its namespace,
the test connects from outside, and no bridge link is involved.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from p2pico.testing import NodeProcess, start_node

SUBNET = "10.77.0"
BRIDGE = "p2br0"


def unavailable() -> str | None:
    """Why a Lab cannot run here, or None."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-rnm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make user and network namespaces here: {probe.stderr.strip()}"
    return None


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts: dict[str, str] = {}  # name -> address
        self.nodes: list[NodeProcess] = []
        self._listeners: list[socket.socket] = []
        # The holder: its namespaces live as long as it does (it waits on stdin).
        self.holder = subprocess.Popen(
            [
                "unshare",
                "-rnm",
                "sh",
                "-c",
                "mount -t tmpfs none /run && mkdir -p /run/netns && echo ready && exec cat",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.holder.kill()
            _, err = self.holder.communicate()
            raise RuntimeError(f"the namespace holder did not start: {line!r} {err}")
        self.ip("link", "add", BRIDGE, "type", "bridge")
        self.ip("link", "set", BRIDGE, "up")

    def _enter(self) -> list[str]:
        """A command prefix that runs in the holder's user, mount and network namespaces."""
        return ["nsenter", "-t", str(self.holder.pid), "-U", "-m", "-n", "--preserve-credentials"]

    def ip(self, *args: str) -> str:
        done = subprocess.run(
            [*self._enter(), "ip", *args], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def add_host(self, name: str) -> str:
        """A new namespace ``name`` on the bridge; its address."""
        address = f"{SUBNET}.{len(self.hosts) + 1}"
        port = f"v-{name}"
        self.ip("netns", "add", name)
        self.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
        self.ip("link", "set", port, "master", BRIDGE, "up")
        self.ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        self.ip("-n", name, "link", "set", "eth0", "up")
        self.ip("-n", name, "link", "set", "lo", "up")
        self.hosts[name] = address
        return address

    def cut(self, name: str) -> None:
        """Drop every packet to and from host ``name`` (its bridge port goes down)."""
        self.ip("link", "set", f"v-{name}", "down")

    def heal(self, name: str) -> None:
        self.ip("link", "set", f"v-{name}", "up")

    def start_node(
        self, name: str, home: Path, *, bootstrap: list[str] | None = None
    ) -> NodeProcess:
        """``p2pico node`` inside host ``name``'s namespace, its HTTP API reachable from here."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listeners.append(listener)
        # The second nsenter runs in the holder's mount namespace, where /run/netns is.
        prefix = [*self._enter(), "nsenter", f"--net=/run/netns/{name}", "--"]
        node = start_node(
            home,
            bootstrap=bootstrap,
            log_dir=self.tmp,
            args=[
                "--listen",
                f"/ip4/{self.hosts[name]}/tcp/0",
                "--http",
                f"fd://{listener.fileno()}",
            ],
            prefix=prefix,
            pass_fds=[listener.fileno()],
        )
        self.nodes.append(node)
        return node

    def logs(self) -> str:
        return "".join(f"== {p.name}\n{p.read_text()[-4000:]}" for p in self.tmp.glob("*.log"))

    def close(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.stop()
        for listener in self._listeners:
            listener.close()
        if self.holder.poll() is None:
            assert self.holder.stdin is not None
            self.holder.stdin.close()
            self.holder.wait(timeout=30)
