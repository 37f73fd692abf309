"""``p2pico krl check FILE...``: one JSON object per file, exit 1 if any fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def krl_check(*files: str) -> tuple[int, list[dict[str, object]]]:
    done = subprocess.run(
        [sys.executable, "-m", "p2pico", "krl", "check", *files],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_every_shipped_ruleset_checks_ok() -> None:
    files = sorted(str(p) for p in (ROOT / "rulesets").rglob("*.krl"))
    code, results = krl_check(*files)
    assert code == 0, [r for r in results if not r["ok"]]
    assert [r["file"] for r in results] == files
    assert all(
        r == {"file": r["file"], "ok": True, "error": None, "line": None, "col": None}
        for r in results
    )


def test_syntax_compile_and_read_errors_name_the_place(tmp_path: Path) -> None:
    good = tmp_path / "good.krl"
    good.write_text("ruleset good { global { x = 1 } }")
    syntax = tmp_path / "syntax.krl"
    syntax.write_text("ruleset bad {\n  global {\n    x = 1 +\n  }\n}\n")
    undefined = tmp_path / "undefined.krl"
    undefined.write_text("ruleset u { global { y = nope } }")
    code, results = krl_check(str(good), str(syntax), str(undefined), str(tmp_path / "none.krl"))
    assert code == 1
    assert results[0] == {"file": str(good), "ok": True, "error": None, "line": None, "col": None}
    assert results[1] == {
        "file": str(syntax),
        "ok": False,
        "error": "expected an expression, found '}'",
        "line": 4,
        "col": 3,
    }
    assert results[2] == {
        "file": str(undefined),
        "ok": False,
        "error": "undefined name 'nope'",
        "line": 1,
        "col": 26,
    }
    assert results[3]["ok"] is False
    assert results[3]["line"] is None
    assert "cannot read" in str(results[3]["error"])


def test_a_reader_gone_away_ends_the_command_without_a_traceback() -> None:
    # `p2pico … | head`: stdout is a pipe whose reader has closed it before the first write
    r, w = os.pipe()
    os.close(r)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "p2pico", "krl", "check", str(ROOT / "rulesets/counter.krl")],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        os.close(w)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""
