"""The computer closet on two real engines (issue 7, "Must show" 2).

``scripts/demo/closet.py`` steps a simulated closet on a fake clock, 30 simulated
seconds a step, for an hour; after each step it waits until the closet pico has taken
both sensors' readings and every fan pico is in the state the closet asked for (a
condition, not a time). Halfway through, the "rack" sensor pico moves to the other engine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "demo"))

import closet

pytestmark = pytest.mark.slow


def test_the_closet_stays_under_the_threshold_with_a_sensor_moved_halfway(
    tmp_path: Path,
) -> None:
    # without control the model overheats: the fans are what keeps it under
    assert closet.uncontrolled_max() > closet.THRESHOLD + 5
    with closet.two_engines(tmp_path) as (a, b):
        run = closet.Run(a, b, log=lambda line: None)
        try:
            run.setup()
            report = run.hour()
        finally:
            run.close()
    steps = closet.HOUR // closet.STEP + 1
    assert report["steps"] == steps == len(run.trace)
    temps = [p["temperature"] for p in run.trace]
    assert max(temps) < closet.THRESHOLD, max(temps)
    # the fans were switched by the closet pico, both ways, and both fans ran
    assert report["fan_switches"] >= 2
    assert {p["fans"] for p in run.trace} >= {0, 1, 2}
    # the rack sensor's pico now lives on B, and the closet took every reading of the
    # hour, before and after the move (one decision per reading)
    assert report["hosts"]["rack"] == "B"
    assert report["moved"]["decisions_before"] == 2 * (closet.HOUR // 2 // closet.STEP)
    assert report["decisions"] == 2 * steps
    status = run.trace[-1]
    assert status["t"] == closet.HOUR
    # the busy half hour needed both fans, and the closet ran them after the move too
    after = [p for p in run.trace if p["t"] > closet.HOUR // 2]
    assert any(p["fans"] == 2 for p in after)
    assert any(p["fans"] < 2 for p in after)
