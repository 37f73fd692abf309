"""The mesh explorer's data (p2pico.explorer) between in-process engines, and its codec.

Two Meshes on a FakeNet: what one engine reports of its picos (full and delta
summaries), pico requests routed to the host, and operator changes run there.
The browser side is tests/test_ui_browser.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pico.engine import PicoError
from p2pico.explorer import Explorer, ExplorerError, krl_check, summarize
from p2pico.mesh import Mesh
from p2pico.testing import FakeNet, start_mesh
from protocols.messages import (
    AboutRequest,
    HistoryRequest,
    ManageRequest,
    MessageError,
    SummaryReply,
    SummaryRequest,
    Target,
    decode_explore_request,
)

ROOT = Path(__file__).resolve().parents[1]
COUNTER = (ROOT / "rulesets" / "counter.krl").read_text()


async def explorer_on(nursery: trio.Nursery, mesh: Mesh) -> Explorer:
    explorer = Explorer(mesh)
    await nursery.start(explorer.serve)
    return explorer


def test_explore_messages_round_trip_and_refuse_bad_fields() -> None:
    for request in (
        SummaryRequest("e1", 7, 15_000),
        SummaryRequest(),
        AboutRequest("did:key:z6Mkx", 1),
        HistoryRequest("did:key:z6Mkx", 50),
        ManageRequest("did:key:z6Mkx", "install", {"source": "ruleset a {}"}, 2),
    ):
        assert decode_explore_request(request.encode()) == request
    reply = SummaryReply("e1", 3, False, [{"did": "did:key:z6Mkx", "seq": 2}], ["d1"], ["d2"])
    assert SummaryReply.decode(reply.encode()) == reply

    from dag import cbor

    with pytest.raises(MessageError, match="unknown op 'bogus'"):
        decode_explore_request(cbor.encode({"op": "bogus"}))
    with pytest.raises(MessageError, match="field 'action' must be one of"):
        decode_explore_request(cbor.encode({"op": "manage", "did": "d", "action": "rm -rf"}))
    with pytest.raises(MessageError, match="field 'wait' must be 0 to 30000 ms"):
        decode_explore_request(cbor.encode({"op": "summary", "wait": 10**9}))
    with pytest.raises(MessageError, match="'picos' entry 0 must be a map with a string 'did'"):
        SummaryReply.decode(
            cbor.encode(
                {
                    "epoch": "e",
                    "version": 1,
                    "full": True,
                    "picos": [{}],
                    "moved": [],
                    "deleted": [],
                }
            )
        )


def test_krl_check_gives_line_and_column() -> None:
    assert krl_check("ruleset ok { }") == "ok"
    with pytest.raises(ExplorerError) as caught:
        krl_check("ruleset bad {\n  global {\n    x = (1 +\n  }\n}")
    assert caught.value.status == 400
    assert caught.value.extra["line"] == 4
    assert caught.value.extra["kind"] == "KrlSyntaxError"


async def test_summaries_are_full_then_deltas(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        ea, eb = await explorer_on(nursery, a), await explorer_on(nursery, b)
        one = await a.create_pico([COUNTER])
        two = await a.create_pico([COUNTER])

        # B sees both of A's picos, by asking A over the network
        await eb.refresh()
        snap: Any = eb.snapshot()
        hosts = {p["did"]: p["host"] for p in snap["picos"]}
        assert hosts[one.did] == a.peer_id
        assert hosts[two.did] == a.peer_id
        assert {e["peer"] for e in snap["engines"]} == {a.peer_id, b.peer_id}
        view = eb.views[a.peer_id]

        # a child made through B runs on A; the delta since B's view names only the two changed
        made = await eb._routed(ManageRequest(one.did, "new-child", {"rulesets": []}))
        assert isinstance(made, dict)
        child = made["did"]
        assert a.engine.hosts(child)
        delta = ea.local_summary(view.epoch, view.version)
        assert not delta.full
        assert sorted(str(p["did"]) for p in delta.picos) == sorted([one.did, child])
        by_did = {p["did"]: p for p in delta.picos}
        assert by_did[child]["parent"] == one.did
        assert by_did[one.did]["children"] == [child]
        assert by_did[one.did]["seq"] == 1

        # nothing changed since: a long poll (50 ms) answers empty, not full
        now = ea.local_summary(None, 0)
        waited = await ea._answer_summary(SummaryRequest(now.epoch, now.version, 50))
        assert (waited.full, waited.picos, waited.moved, waited.deleted) == (False, [], [], [])

        # deleting the child is reported as deleted; a stale epoch gets a full answer
        await eb._routed(ManageRequest(one.did, "del-child", {"did": child}))
        after = ea.local_summary(now.epoch, now.version)
        assert after.deleted == [child]
        assert ea.local_summary("another-epoch", now.version).full
        nursery.cancel_scope.cancel()


async def test_pico_requests_are_answered_by_the_host(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        await explorer_on(nursery, a)
        eb = await explorer_on(nursery, b)
        pico = await a.create_pico([COUNTER])

        about = await eb._routed(AboutRequest(pico.did))
        assert isinstance(about, dict)
        assert about["host"] == a.peer_id
        assert about["seq"] == 0
        assert [r["rid"] for r in about["rulesets"]] == ["io.p2pico.counter"]

        source = 'ruleset hello.ui { rule r { select when hello greet send_directive("hi") } }'
        assert await eb._routed(ManageRequest(pico.did, "install", {"source": source})) == {
            "rid": "hello.ui"
        }
        assert [rs.rid for rs in a.engine.picos[pico.did].rulesets] == [
            "io.p2pico.counter",
            "hello.ui",
        ]
        history = await eb._routed(HistoryRequest(pico.did, 1))
        assert isinstance(history, dict)
        assert history["verified"] is True
        assert [h["cause"]["type"] for h in history["heads"]] == ["install"]
        assert history["more"] == 1

        with pytest.raises(PicoError, match="has no ruleset 'nope' installed"):
            await eb._routed(ManageRequest(pico.did, "uninstall", {"rid": "nope"}))
        await eb._routed(ManageRequest(pico.did, "uninstall", {"rid": "hello.ui"}))
        assert [rs.rid for rs in a.engine.picos[pico.did].rulesets] == ["io.p2pico.counter"]

        # after a move the same request finds the new host
        await a.move(pico.did, b.peer_id)
        about = await eb._routed(AboutRequest(pico.did))
        assert isinstance(about, dict)
        assert about["host"] == b.peer_id
        nursery.cancel_scope.cancel()


async def test_a_pico_that_moved_away_is_reported_as_moved(tmp_path: Path) -> None:
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        ea = await explorer_on(nursery, a)
        pico = await a.create_pico([COUNTER])
        before = ea.local_summary(None, 0)
        assert [p["did"] for p in before.picos] == [pico.did]
        await a.move(pico.did, b.peer_id)
        after = ea.local_summary(before.epoch, before.version)
        assert after.moved == [pico.did]
        assert after.deleted == []
        nursery.cancel_scope.cancel()


async def test_commits_arrivals_and_departures_wake_the_explorer_without_a_timer(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # trio's MockClock never moves here: anything that took a timer (a scan interval,
    # the long poll's 15 s) would hang, so every answer below was woken by the engine.
    world: dict[str, FakeNet] = {}
    async with trio.open_nursery() as nursery:
        a = await start_mesh(nursery, tmp_path / "a", world)
        b = await start_mesh(nursery, tmp_path / "b", world)
        ea = await explorer_on(nursery, a)
        pico = await a.create_pico([COUNTER])
        start = trio.current_time()

        async def held(
            after: SummaryReply, change: Callable[[], Awaitable[object]]
        ) -> SummaryReply:
            """A long poll from ``after`` on, held until ``change`` runs; its answer."""
            answers: list[SummaryReply] = []

            async def poll() -> None:
                request = SummaryRequest(after.epoch, after.version, 15_000)
                answers.append(await ea._answer_summary(request))

            async with trio.open_nursery() as inner:
                inner.start_soon(poll)
                await trio.testing.wait_all_tasks_blocked()
                assert answers == []  # nothing changed yet: the request is held
                await change()
            return answers[0]

        before = ea.local_summary(None, 0)
        version = ea.version
        reply = await held(before, lambda: a.event(Target(pico.did), "counter", "inc", {}))
        assert [(p["did"], p["seq"]) for p in reply.picos] == [(pico.did, 1)]
        assert ea.version == version + 1  # one commit, one new version

        # with no request held, a commit costs the explorer nothing until someone asks:
        # the next summary scans it
        await a.event(Target(pico.did), "counter", "inc", {})
        await trio.testing.wait_all_tasks_blocked()
        assert ea.version == version + 1
        later = ea.local_summary(before.epoch, version + 1)
        assert [(p["did"], p["seq"]) for p in later.picos] == [(pico.did, 2)]
        assert ea.version == version + 2

        # a pico that arrives (made here) and one that leaves (moved away)
        now = ea.local_summary(before.epoch, before.version)
        made: list[str] = []

        async def create() -> None:
            made.append((await a.create_pico([COUNTER])).did)

        reply = await held(now, create)
        assert [p["did"] for p in reply.picos] == made
        now = ea.local_summary(before.epoch, ea.version)
        reply = await held(now, lambda: a.move(pico.did, b.peer_id))
        assert (reply.moved, reply.deleted) == ([pico.did], [])
        assert trio.current_time() == start  # no timer fired in all of it
        nursery.cancel_scope.cancel()


def test_summary_shows_name_family_and_established_subscriptions(tmp_path: Path) -> None:
    from dag.cid import CID
    from dag.did import Keypair
    from p2pico.engine import Pico

    pico = Pico(
        did="did:key:z6Mkp",
        keypair=Keypair.generate(),
        rulesets=[],
        ent={
            "io.picolabs.pico-engine-ui": {"name": "Thermostat"},
            "io.picolabs.subscription": {
                "established": [{"Id": "s1", "Rx": "rx1", "Tx": "tx1"}, {"Id": "bad"}]
            },
        },
        channels={},
        head=CID.of(b"x"),
        seq=4,
        parent={"eci": "e", "did": "did:key:z6Mkparent"},
        children=[{"eci": "k", "did": "did:key:z6Mkkid"}],
    )
    assert summarize(pico) == {
        "did": "did:key:z6Mkp",
        "seq": 4,
        "rids": [],
        "name": "Thermostat",
        "parent": "did:key:z6Mkparent",
        "children": ["did:key:z6Mkkid"],
        "subs": [["rx1", "tx1"]],
    }
