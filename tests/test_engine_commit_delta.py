"""Engine._prepare_commit and _write_commit through dag.state deltas: the same state CIDs
as a full encoding, and a commit that fails leaves the pico's entity variables as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import krl
from dag.head import verify_head
from dag.state import read_state, write_state
from dag.store import MemoryBlockStore
from p2pico.engine import Engine, PicoError, Work
from p2pico.home import Home

NOTES = """ruleset notes {
  rule put { select when notes put
    fired { ent:notes := (ent:notes || {}).put(event:attrs{"k"}, event:attrs{"v"}) } }
  rule tag { select when notes tag  fired { ent:tag := event:attrs{"v"} } }
  rule drop { select when notes drop  fired { clear ent:tag } }
}"""


def event(type: str, **attrs: object) -> Work:
    return Work("event", event=krl.Event("notes", type, attrs))


async def test_delta_commits_match_a_full_encoding_and_survive_a_failed_commit(
    tmp_path: Path,
) -> None:
    engine = Engine(Home(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        pico = engine.create_pico([NOTES])

        def state_root() -> object:
            head = engine.store.get_block(pico.head)
            assert head is not None
            return verify_head(head).state

        for i in range(5):
            await engine.submit(pico.did, event("put", k=f"n{i}", v=i))
        await engine.submit(pico.did, event("tag", v="first"))
        await engine.submit(pico.did, event("drop"))
        await engine.submit(pico.did, event("tag", v="second"))
        root = state_root()
        assert root == pico.state_root
        # the state the deltas built is the one encoding it whole gives
        state = read_state(engine.store, root)  # type: ignore[arg-type]
        assert write_state(MemoryBlockStore(), state) == root
        assert state.rulesets[0].ent == {"notes": {f"n{i}": i for i in range(5)}, "tag": "second"}

        # a value too large for a block fails the commit: nothing of it is kept
        seq = pico.seq
        with pytest.raises(PicoError, match="bytes encoded; a block may hold"):
            await engine.submit(pico.did, event("tag", v="x" * 300_000))
        assert (pico.seq, pico.ent["notes"]["tag"]) == (seq, "second")
        assert state_root() == root

        # and the next commit (its delta's memo was used up by the failed one) is right
        await engine.submit(pico.did, event("tag", v="third"))
        state = read_state(engine.store, state_root())  # type: ignore[arg-type]
        assert state.rulesets[0].ent["tag"] == "third"
        assert write_state(MemoryBlockStore(), state) == state_root()
        nursery.cancel_scope.cancel()
