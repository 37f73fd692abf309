"""The shared KRL cases (tests/krl/cases/*.json), driven over pico-engine's HTTP API.

By default each case runs in process: a fresh in-process mesh and HTTP app (as tests/test_http.py),
a new pico with the case's rulesets from ``POST /api/picos``, then ``/sky/event`` and
``/sky/cloud`` exactly as an external client would call them.

With ``KRL_CASES_URL`` set (for example ``http://127.0.0.1:3000``), the same cases drive that
engine over real HTTP instead; ``KRL_CASES_ENGINE`` picks how picos are made (``auto``,
``p2pico`` or ``pico-engine``). See tests/krl/cases/README.md.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from cases_runner import Case, Engine, P2picoEngine, detect_engine, load_cases, run_case

from p2pico.http import build_app
from p2pico.testing import FakeNet, start_mesh

REMOTE_URL = os.environ.get("KRL_CASES_URL")
REMOTE_FLAVOUR = os.environ.get("KRL_CASES_ENGINE", "auto")
# Against a remote engine we only know whether it is p2pico once connected; in process it is.
CASES = load_cases()


def _param(case: Case) -> object:
    marks = []
    if case.xfail is not None and REMOTE_URL is None:
        marks.append(pytest.mark.xfail(strict=True, reason=case.xfail))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.fixture
async def http_engine(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
    if REMOTE_URL is not None:
        async with httpx.AsyncClient(base_url=REMOTE_URL, timeout=60) as client:
            yield client, await detect_engine(client, REMOTE_FLAVOUR)
        return
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        mesh = await start_mesh(nursery, tmp_path / "node", world)
        app = build_app(mesh, lambda: {"peer_id": mesh.peer_id})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p2pico.test") as client:
            # Steps with a "time" set the engine's clock (the reference's useEventInputTime).
            def set_time(ms: int) -> None:
                mesh.engine.clock = lambda: ms / 1000

            yield client, P2picoEngine(client, set_time)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
async def test_case(case: Case, http_engine: tuple[httpx.AsyncClient, Engine]) -> None:
    client, engine = http_engine
    if case.p2pico_differs is not None and case.p2pico is None and engine.is_p2pico:
        pytest.skip(f"p2pico differs on purpose: {case.p2pico_differs}")
    if case.needs_time and engine.set_time is None:
        pytest.skip("the case gives event times, which this engine's HTTP API cannot take")
    if case.xfail is not None and REMOTE_URL is not None and engine.is_p2pico:
        pytest.xfail(case.xfail)  # a known p2pico bug, also on a real p2pico node
    problems = await run_case(client, engine, case)
    assert not problems, "\n".join(problems)


def test_the_cases_cover_enough() -> None:
    """A floor, so a broken loader or an emptied file does not pass quietly."""
    steps = sum(len(c.steps) or 1 for c in CASES)
    assert len(CASES) >= 100
    assert steps >= 500
