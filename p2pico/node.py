"""``p2pico node``: one engine as a peer of the mesh, with its HTTP API.

Neighbours: p2pico.cli (parses the command line), p2pico.net, p2pico.engine,
p2pico.scheduler, p2pico.mesh, p2pico.root, p2pico.bitswap, p2pico.explorer and p2pico.http (the services started here, in this order, each
with ``nursery.start`` so the next one starts only when the previous is ready).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from p2pico import httpd
from p2pico.bitswap import Bitswap
from p2pico.engine import Engine
from p2pico.explorer import Explorer
from p2pico.home import Home, lock_home
from p2pico.http import build_app
from p2pico.krlhttp import KrlHttp
from p2pico.mdns import serve_mdns
from p2pico.mesh import Mesh
from p2pico.net import serve_net
from p2pico.replicas import DEFAULT_LEASE, Replicas
from p2pico.root import start_root
from p2pico.scheduler import serve as serve_scheduler

log = logging.getLogger("p2pico.node")


@dataclass
class NodeConfig:
    home: Path
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    http: str = "127.0.0.1:0"
    bootstrap: list[str] = field(default_factory=list)
    # KRL's http: may reach loopback, private and link-local addresses (p2pico.krlhttp)
    krl_http_allow_private: bool = False
    # replicas take a pico over after this many seconds without news from its host
    replica_lease: float = DEFAULT_LEASE
    # find peers on the local network by mDNS (p2pico.mdns) and connect to them
    mdns: bool = False


async def _serve_hypercorn(app: Any, bind: str, *, task_status: Any) -> None:
    hc = HypercornConfig()
    hc.bind = [bind]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    await hypercorn_serve(app, hc, task_status=task_status)


def _http_server() -> Any:
    """Our HTTP/1.1 server (p2pico.httpd), or hypercorn with ``P2PICO_HTTP=hypercorn``."""
    choice = os.environ.get("P2PICO_HTTP", "") or "p2pico"
    if choice == "p2pico":
        return httpd.serve
    if choice == "hypercorn":
        return _serve_hypercorn
    raise ValueError(f"P2PICO_HTTP={choice!r}: expected 'p2pico' (the default) or 'hypercorn'")


async def serve_node(config: NodeConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node until cancelled; ``task_status.started`` gets the node.json contents.

    A home that cannot be served (held by another node, a file that is not a database, one
    written by a newer p2pico) raises p2pico.home.HomeError before anything starts."""
    with lock_home(config.home):
        await _serve_home(config, task_status)


async def _serve_home(config: NodeConfig, task_status: Any) -> None:
    home = Home(config.home)
    try:
        async with trio.open_nursery() as nursery:
            net = await nursery.start(
                serve_net, home.engine_key.seed, config.listen, config.bootstrap
            )
            engine = Engine(home, krl_http=KrlHttp(allow_private=config.krl_http_allow_private))
            await nursery.start(engine.serve)
            await nursery.start(serve_scheduler, engine)
            mesh = Mesh(engine, net, home)
            # Replicas before the mesh: a replicated pico's records go through them.
            await nursery.start(Replicas(mesh, lease=config.replica_lease).serve)
            await nursery.start(mesh.serve)
            if config.mdns:  # after the mesh: a peer found is caught up with at once
                await nursery.start(serve_mdns, net)
            # The root pico (made on the first start, its rulesets upgraded on every
            # start, engine_ui:setup sent): what /api/ui-context names (p2pico.root).
            await start_root(engine)
            # Bitswap serves from the block store, but nothing to anyone until the operator
            # shares a pico with a peer (POST /api/bitswap/allow, `p2pico share`).
            bitswap = Bitswap(net, engine.store)
            bitswap.start()
            info: dict[str, object] = {"peer_id": net.peer_id, "multiaddrs": net.multiaddrs()}
            explorer = Explorer(mesh, lambda: info)  # the web UI's view of the mesh
            await nursery.start(explorer.serve)
            app = build_app(mesh, lambda: info, bitswap, explorer)
            binds = await nursery.start(_http_server(), app, config.http)
            info["http"] = binds[0]
            engine.set_http_url(binds[0])  # meta:host; and KRL's http: may not call it
            home.write_node_json(info)
            log.info("node ready: %s", info)
            # One JSON line on stdout: scripts and tests wait for it instead of polling.
            print(json.dumps({"ready": info}), flush=True)
            task_status.started(info)
    finally:
        home.remove_node_json()
        home.close()


async def run_until_signal(config: NodeConfig) -> None:
    """``p2pico node``: serve until SIGINT or SIGTERM, then shut down cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_node, config)
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
