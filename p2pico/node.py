"""``p2pico node``: one engine as a peer of the mesh, with its HTTP API.

Neighbours: p2pico.cli (parses the command line), p2pico.net, p2pico.engine,
p2pico.scheduler, p2pico.mesh, p2pico.bitswap and p2pico.http (the services started here, in this order, each
with ``nursery.start`` so the next one starts only when the previous is ready).
"""

from __future__ import annotations

import json
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from p2pico.bitswap import Bitswap
from p2pico.engine import Engine
from p2pico.home import Home
from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.net import serve_net
from p2pico.scheduler import serve as serve_scheduler

log = logging.getLogger("p2pico.node")


@dataclass
class NodeConfig:
    home: Path
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    http: str = "127.0.0.1:0"
    bootstrap: list[str] = field(default_factory=list)


async def serve_node(config: NodeConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node until cancelled; ``task_status.started`` gets the node.json contents."""
    home = Home(config.home)
    try:
        async with trio.open_nursery() as nursery:
            net = await nursery.start(
                serve_net, home.engine_key.seed, config.listen, config.bootstrap
            )
            engine = Engine(home)
            await nursery.start(engine.serve)
            await nursery.start(serve_scheduler, engine)
            mesh = Mesh(engine, net, home)
            await nursery.start(mesh.serve)
            # Bitswap serves from the block store, but nothing to anyone until the operator
            # shares a pico with a peer (POST /api/bitswap/allow, `p2pico share`).
            bitswap = Bitswap(net, engine.store)
            bitswap.start()
            info: dict[str, object] = {"peer_id": net.peer_id, "multiaddrs": net.multiaddrs()}
            app = build_app(mesh, lambda: info, bitswap)
            hc = HypercornConfig()
            hc.bind = [config.http]
            hc.accesslog = None
            hc.errorlog = logging.getLogger("hypercorn.error")
            binds = await nursery.start(hypercorn_serve, app, hc)
            info["http"] = binds[0]
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
