"""KRL benchmarks: p2pico's parser and evaluator beside Pico Labs' in the same run.

1. parse time of a KRL corpus (the public one of scripts/krl_corpus/, rebuilt
   with rebuild.py, given as CORPUS_DIR) and of this repository's
   ``rulesets/*.krl``: ``krl.parse_ruleset`` vs npm ``krl-parser`` under Node
   (scripts/bench/peer/krl_parse.mjs). Two figures per set: the first
   parse of each file (``cold``: what loading a ruleset once costs, Node's JIT
   not yet warm) and the best of ``--repeat`` parses of each file (``warm``);
   each is the per-file times summed, and files/s;
2. evaluation speed of CPU-heavy KRL functions (scripts/bench/peer/
   cpu_heavy.krl: fib(20) by naive recursion, map/filter/reduce over 10,000
   numbers, building and splitting a 10,000-number string): ``Ruleset.query``
   of ``krl.compile_ruleset`` with an in-memory fake Context vs
   ``PicoEngineCore.query`` of pico-engine-core in process under Node
   (scripts/bench/peer/krl_eval.mjs), best and median of ``--runs``
   queries each; both engines must return the same value.

Ratios are p2pico / reference time, so below 1 means p2pico is faster.

    npm ci --prefix scripts/bench/peer
    .venv/bin/python scripts/bench/krl.py [CORPUS_DIR] [--repeat R] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import krl  # noqa: E402

PEER = ROOT / "scripts" / "bench" / "peer"
CPU_RULESET = PEER / "cpu_heavy.krl"
EVAL_CASES = [("fib", {"n": 20}), ("mapFilterReduce", {"n": 10000}), ("stringBuild", {"n": 10000})]


class BenchContext:
    """The least a query of pure functions needs: nothing it calls is reached."""

    pico_id = "bench"
    eci = "bench"

    def __getattr__(self, name: str) -> object:
        raise krl.KrlRuntimeError(f"the benchmark context has no {name}")


def node(*args: str) -> dict[str, object]:
    if not (PEER / "node_modules" / "pico-engine-core").is_dir():
        raise SystemExit(f"the reference is not installed: npm ci --prefix {PEER}")
    out = subprocess.run(["node", *args], check=True, capture_output=True, text=True).stdout
    answer: dict[str, object] = json.loads(out)
    return answer


def ours_parse_times(sources: list[str], repeat: int) -> tuple[list[float], list[float], int]:
    """Per file: first parse time, best of `repeat` (ms); and how many parsed."""
    cold, warm, accepted = [], [], 0
    for source in sources:
        times = []
        ok = True
        for _ in range(repeat):
            t0 = time.perf_counter()
            try:
                krl.parse_ruleset(source)
            except krl.KrlError:
                ok = False
            times.append((time.perf_counter() - t0) * 1000)
        cold.append(times[0])
        warm.append(min(times))
        accepted += ok
    return cold, warm, accepted


def reference_parse_times(files: list[Path], repeat: int) -> tuple[list[float], list[float], int]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("".join(f"{p}\n" for p in files))
    try:
        # A fresh process for the cold pass, so its JIT starts cold as ours does.
        first = node(str(PEER / "krl_parse.mjs"), listing.name, "1")
        best = node(str(PEER / "krl_parse.mjs"), listing.name, str(repeat))
    finally:
        Path(listing.name).unlink()
    first_results = first["results"]
    best_results = best["results"]
    assert isinstance(first_results, list)
    assert isinstance(best_results, list)
    cold = [float(r["ms"]) for r in first_results]
    warm = [float(r["ms"]) for r in best_results]
    return cold, warm, sum(bool(r["ok"]) for r in best_results)


def bench_parse(name: str, files: list[Path], repeat: int) -> dict[str, object]:
    sources = [p.read_bytes().decode("utf-8", errors="replace") for p in files]
    ours_cold, ours_warm, ours_ok = ours_parse_times(sources, repeat)
    ref_cold, ref_warm, ref_ok = reference_parse_times(files, repeat)
    row: dict[str, object] = {
        "set": name,
        "files": len(files),
        "bytes": sum(len(s.encode()) for s in sources),
        "accepted": {"p2pico": ours_ok, "reference": ref_ok},
    }
    for label, ours, ref in (("cold", ours_cold, ref_cold), ("warm", ours_warm, ref_warm)):
        ours_ms, ref_ms = sum(ours), sum(ref)
        row[label] = {
            "p2pico_ms": round(ours_ms, 2),
            "reference_ms": round(ref_ms, 2),
            "p2pico_files_per_s": round(len(files) / ours_ms * 1000, 1),
            "reference_files_per_s": round(len(files) / ref_ms * 1000, 1),
            "ratio": round(ours_ms / ref_ms, 2),
        }
    return row


def bench_eval(runs: int) -> tuple[list[dict[str, object]], str]:
    ruleset = krl.compile_ruleset(CPU_RULESET.read_text())
    ctx = BenchContext()
    ours: dict[str, tuple[object, list[float]]] = {}
    for name, args in EVAL_CASES:
        times = []
        result: object = None
        for _ in range(runs):
            budget = krl.Budget(max_steps=100_000_000, max_seconds=600)
            t0 = time.perf_counter()
            result = ruleset.query(name, args, ctx, budget)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t0) * 1000)
        ours[name] = (result, times)
    cases = json.dumps([{"name": n, "args": a, "repeat": runs} for n, a in EVAL_CASES])
    reference = node(str(PEER / "krl_eval.mjs"), str(CPU_RULESET), cases)
    ref_cases = reference["cases"]
    assert isinstance(ref_cases, list)
    rows = []
    for (name, args), ref in zip(EVAL_CASES, ref_cases, strict=True):
        assert isinstance(ref, Mapping)
        result, times = ours[name]
        if result != ref["result"]:
            raise SystemExit(f"{name}: p2pico gave {result!r}, the reference {ref['result']!r}")
        best, med = min(times), statistics.median(times)
        rows.append(
            {
                "function": f"{name}({', '.join(str(v) for v in args.values())})",
                "result": result,
                "runs": runs,
                "p2pico_best_ms": round(best, 3),
                "p2pico_median_ms": round(med, 3),
                "reference_best_ms": ref["best_ms"],
                "reference_median_ms": ref["median_ms"],
                "ratio_best": round(best / float(ref["best_ms"]), 2),
                "ratio_median": round(med / float(ref["median_ms"]), 2),
            }
        )
    return rows, str(reference["engine"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus_dir", type=Path, nargs="?", help="see scripts/krl_corpus/")
    parser.add_argument("--repeat", type=int, default=5, help="parses of each file (warm: best)")
    parser.add_argument("--runs", type=int, default=10, help="queries of each function")
    args = parser.parse_args()

    sets = []
    if args.corpus_dir is not None:
        sets.append(("corpus", sorted(p for p in args.corpus_dir.rglob("*.krl") if p.is_file())))
    sets.append(("rulesets/*.krl", sorted((ROOT / "rulesets").glob("*.krl"))))
    parse_rows = [bench_parse(name, files, args.repeat) for name, files in sets]
    eval_rows, engine = bench_eval(args.runs)

    report = {
        "p2pico": f"krl (Python {sys.version.split()[0]})",
        "reference_parser": "krl-parser 1.3.0 (Node)",
        "reference_engine": engine,
        "parse": parse_rows,
        "eval": eval_rows,
    }
    print(json.dumps(report, indent=2))

    print(
        f"\nparse (per-file times summed; ratio = p2pico / reference; warm = best of {args.repeat})"
    )
    print(f"{'set':<16} {'files':>5} {'pass':<5} {'p2pico ms':>10} {'ref ms':>9} {'p2pico f/s':>11} {'ref f/s':>9} {'ratio':>6}")  # fmt: skip
    for row in parse_rows:
        for label in ("cold", "warm"):
            fig = row[label]
            assert isinstance(fig, dict)
            print(
                f"{row['set']:<16} {row['files']:>5} {label:<5} {fig['p2pico_ms']:>10} "
                f"{fig['reference_ms']:>9} {fig['p2pico_files_per_s']:>11} "
                f"{fig['reference_files_per_s']:>9} {fig['ratio']:>6}"
            )
    print(f"\nevaluation (one query each, {args.runs} runs; ratio = p2pico / reference)")
    print(f"{'function':<24} {'p2pico best':>11} {'ref best':>9} {'ratio':>6} {'p2pico med':>11} {'ref med':>8} {'ratio':>6}")  # fmt: skip
    for r in eval_rows:
        print(
            f"{r['function']:<24} {r['p2pico_best_ms']:>11} {r['reference_best_ms']:>9} "
            f"{r['ratio_best']:>6} {r['p2pico_median_ms']:>11} {r['reference_median_ms']:>8} "
            f"{r['ratio_median']:>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
