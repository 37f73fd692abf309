"""Fixtures for p2pico.net tests: real libp2p nodes on 127.0.0.1, all in this process."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio

from p2pico.net import Net, serve_net

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


StartNet = Callable[..., Awaitable[Net]]


@pytest.fixture
def start_net(nursery: trio.Nursery) -> StartNet:
    """Start a node in the test's nursery (fresh identity unless ``seed``); returns its Net."""

    async def start(
        seed: bytes | None = None,
        listen: Sequence[str] = LOOPBACK,
        bootstrap: Sequence[str] = (),
    ) -> Net:
        net: Net = await nursery.start(
            serve_net, seed if seed is not None else os.urandom(32), listen, bootstrap
        )
        return net

    return start


@pytest.fixture
async def net_a(start_net: StartNet) -> Net:
    return await start_net()


@pytest.fixture
async def net_b(start_net: StartNet) -> Net:
    return await start_net()


@pytest.fixture
async def pair(net_a: Net, net_b: Net) -> tuple[Net, Net]:
    """Two nodes, ``a`` having dialled ``b``."""
    await net_a.connect(net_b.multiaddrs()[0])
    return net_a, net_b
