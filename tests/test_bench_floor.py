"""scripts/bench/floor.py runs on its own (scripts/bench/dag.py beside it is not the dag package)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FLOOR = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "floor.py"


def test_floor_runs_on_its_own_and_prints_its_parts() -> None:
    out = subprocess.run(
        [sys.executable, str(FLOOR), "--blocks", "40,600", "--commits", "256", "--group", "16"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    row = json.loads(out[: out.index("\n}") + 2])
    assert row["block_sizes"] == [40, 600]
    assert row["group"] == 16
    parts = row["sign_us"], row["sha256_us"], row["sqlite_us"]
    assert all(part > 0 for part in parts)
    assert abs(row["floor_us"] - sum(parts)) < 0.02
    assert out.splitlines()[-1].split()[0] == "40,600"  # the table's row
