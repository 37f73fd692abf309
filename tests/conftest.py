"""Fixtures shared by the tests at this level."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from p2pico.http import build_app
from p2pico.mesh import Mesh
from p2pico.testing import FakeNet, start_mesh


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Mesh]]:
    """A node in this process (FakeNet mesh), driven through its HTTP API."""
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        mesh = await start_mesh(nursery, tmp_path / "a", world)
        app = build_app(mesh, lambda: {"peer_id": mesh.peer_id})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p2pico.test") as client:
            yield client, mesh
        nursery.cancel_scope.cancel()
