"""Inline evaluation (on the trio thread, within a slice) and group commits across picos."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import krl
from dag.head import verify_head
from dag.state import read_state
from p2pico import engine as engine_module
from p2pico.engine import Engine, PicoError, Work
from p2pico.home import Home

COUNTER = (Path(__file__).resolve().parents[1] / "rulesets" / "counter.krl").read_text()
RID = "io.p2pico.counter"

# One event whose rule logs, raises, sends, schedules and writes, and in between does more
# KRL steps than the inline slice allows (but far fewer than the full budget).
HEAVY = """ruleset heavy {
  meta { shares n }
  global { n = function() { ent:n.defaultsTo(0) } }
  rule work {
    select when heavy work
    pre {
      n = ent:n.defaultsTo(0) + 1
      noted = n.klog("work")
      total = 1.range(STEPS).map(function(x) { x + 1 }).length()
    }
    every {
      event:send({"eci": event:attr("to"), "domain": "counter", "type": "inc"})
      send_directive("done", {"n": n, "total": total})
    }
    fired {
      ent:n := n;
      raise heavy event "raised";
      schedule heavy event "later" at time:add(time:now(), {"hours": 1})
    }
  }
  rule seen { select when heavy raised  fired { ent:raised := ent:raised.defaultsTo(0) + 1 } }
}"""
STEPS = 3 * engine_module.INLINE_MAX_STEPS


def inc(eci: str = "") -> Work:
    return Work("event", event=krl.Event("counter", "inc", {"by": 1}), eci=eci)


def count(eci: str) -> Work:
    return Work("query", eci=eci, rid=RID, name="count")


async def test_a_rule_past_the_inline_slice_runs_again_in_a_thread_and_leaves_one_trace(
    tmp_path: Path,
) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        heavy = engine.create_pico([HEAVY.replace("STEPS", str(STEPS))])
        counter = engine.create_pico([COUNTER])
        handled = engine.handled
        work = Work("event", event=krl.Event("heavy", "work", {"to": counter.eci}))
        result: Any = await engine.submit(heavy.did, work)
        # The inline attempt ran out of its slice and was dropped; the thread finished it.
        assert engine.fallbacks == 1
        assert result["directives"][0]["options"] == {"n": 1, "total": STEPS}
        # Exactly one of each trace: state, rule state of the raised event, log entry,
        # scheduled job, sent event; one commit.
        assert heavy.ent["heavy"] == {"n": 1, "raised": 1}
        assert heavy.seq == 1
        work_logs = [e for _, e in heavy.logs or () if e["level"] == "klog"]
        assert [e["msg"] for e in work_logs] == ["work 1"]
        assert [job["event"] for job in heavy.schedule.values()] == [
            {"domain": "heavy", "type": "later", "attrs": {}}
        ]
        await engine.wait_handled(handled + 1)  # the heavy event and the counter:inc it sent
        assert await engine.submit(counter.did, count(counter.eci)) == 1
        state = read_state(engine.store, heavy.state_root)  # type: ignore[arg-type]
        assert state.rulesets[0].ent == {"n": 1, "raised": 1}
        # The same event now goes straight to a thread: no second inline attempt.
        again = krl.Event("heavy", "work", {"to": counter.eci})
        await engine.submit(heavy.did, Work("event", event=again))
        assert engine.fallbacks == 1
        assert heavy.ent["heavy"]["n"] == 2
        # Other events of the pico still run inline (queries too).
        assert await engine.submit(heavy.did, Work("query", rid="heavy", name="n")) == 2
        assert engine.fallbacks == 1
        nursery.cancel_scope.cancel()


async def test_the_same_rule_fails_alike_inline_and_in_a_thread(tmp_path: Path) -> None:
    failing = """ruleset failing {
      rule boom { select when t boom  pre { x = "a".klog("before")  f = 5  y = f() } fired { ent:x := y } }
    }"""
    outcomes = []
    for inline in (True, False):
        engine = Engine(Home(tmp_path / str(inline)))
        engine.inline = inline
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            pico = engine.create_pico([failing])
            with pytest.raises(PicoError) as err:
                await engine.submit(pico.did, Work("event", event=krl.Event("t", "boom", {})))
            logs = [e["msg"] for _, e in pico.logs or ()]
            outcomes.append((str(err.value), logs[0], len(logs), pico.seq, pico.ent))
            assert engine.fallbacks == 0
            nursery.cancel_scope.cancel()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] == 'before "a"'


def is_head(block: Any) -> bool:
    try:
        verify_head(block)
    except Exception:
        return False
    return True


class FailingGroups:
    """The engine's block store, whose next group commit fails (as a COMMIT may)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fail_next = False
        self.groups: list[int] = []  # the signed heads written by each group

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_many(self, blocks: Any) -> None:
        blocks = list(blocks)
        if self.groups:
            self.groups[-1] += sum(1 for b in blocks if is_head(b))
        self.inner.put_many(blocks)

    @contextmanager
    def group(self) -> Iterator[None]:
        self.groups.append(0)
        with self.inner.group():
            yield
            if self.fail_next:
                self.fail_next = False
                raise sqlite3.OperationalError("disk I/O error")


async def test_events_of_one_round_share_a_group_commit(tmp_path: Path) -> None:
    engine = Engine(Home(tmp_path))
    store = FailingGroups(engine.store)
    engine.store = store  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        picos = [engine.create_pico([COUNTER]) for _ in range(8)]
        async with trio.open_nursery() as senders:
            for pico in picos:
                senders.start_soon(engine.submit, pico.did, inc(pico.eci))
        # eight commits, fewer SQLite transactions (each pico's worker joined the round's)
        assert sum(store.groups) == 8
        assert len(store.groups) == engine.groups < 8
        assert engine.grouped_commits == 8
        heads = {hosted.did: hosted.head for hosted in engine.home.hosted()}
        for pico in picos:
            assert pico.ent[RID] == {"count": 1}
            assert heads[pico.did] == pico.head
        nursery.cancel_scope.cancel()


async def test_a_failed_group_commit_fails_each_event_and_changes_no_pico(tmp_path: Path) -> None:
    home = Home(tmp_path)
    engine = Engine(home)
    store = FailingGroups(engine.store)
    engine.store = store  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        a, b = engine.create_pico([COUNTER]), engine.create_pico([COUNTER])
        await engine.submit(a.did, inc(a.eci))
        await engine.submit(b.did, count(b.eci))  # both workers are up: same path, same round
        before = {p.did: (p.head, p.seq, p.state_root, dict(p.ent[RID])) for p in (a, b)}
        store.fail_next = True
        errors: dict[str, str] = {}

        async def send(pico: Any) -> None:
            with pytest.raises(PicoError) as err:
                await engine.submit(pico.did, inc(pico.eci))
            errors[pico.did] = str(err.value)

        async with trio.open_nursery() as senders:
            for pico in (a, b):
                senders.start_soon(send, pico)
        assert store.groups[-1] == 2  # both were in the group that failed
        assert errors == {p.did: "commit failed: OperationalError: disk I/O error" for p in (a, b)}
        for pico in (a, b):
            # nothing changed, in memory or in the store: the pico's state is its head's
            assert (pico.head, pico.seq, pico.state_root, pico.ent[RID]) == before[pico.did]
            assert store.get(pico.head) is not None
            state = read_state(store, pico.state_root)  # type: ignore[arg-type]
            assert dict(state.rulesets[0].ent) == pico.ent[RID]
        # the failure is in each pico's log, and the next events commit normally
        assert any("disk I/O error" in e["msg"] for _, e in a.logs or ())
        for pico in (a, b):
            await engine.submit(pico.did, inc(pico.eci))
        assert await engine.submit(a.did, count(a.eci)) == 2
        assert await engine.submit(b.did, count(b.eci)) == 1
        nursery.cancel_scope.cancel()
    # and after a restart the picos are where the last good commits left them
    restarted = Engine(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.serve)
        assert await restarted.submit(a.did, count(a.eci)) == 2
        assert await restarted.submit(b.did, count(b.eci)) == 1
        nursery.cancel_scope.cancel()


ASKER = """ruleset asker {
  rule go {
    select when a go
    pre { noted = "asking".klog("go") }
    ctx:eventQuery(event:attrs{"eci"}, "counter", "inc", {"by": 5}, "io.p2pico.counter",
                   "count", {}) setting(r)
    always { ent:result := r }
  }
}"""


async def test_what_needs_a_thread_falls_back_before_it_starts(tmp_path: Path) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        asker = engine.create_pico([ASKER])
        counter = engine.create_pico([COUNTER])
        go = Work("event", event=krl.Event("a", "go", {"eci": counter.eci}))
        await engine.submit(asker.did, go)
        # ctx:eventQuery cannot run on the trio thread: the inline attempt stopped there,
        # before the other pico saw anything, and the thread ran the rule once.
        assert engine.fallbacks == 1
        assert asker.ent["asker"] == {"result": 5}
        assert counter.ent[RID] == {"count": 5}
        assert [e["msg"] for _, e in asker.logs or ()] == ['go "asking"']
        nursery.cancel_scope.cancel()
