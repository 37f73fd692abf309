"""First benchmarks of the walking skeleton; prints JSON, then a table.

1. counter events/s in process: Engine.submit on one pico, no network, no HTTP
   (KRL select + run, the overlay, a state commit and a signed head per event);
2. counter events/s through HTTP: POST /sky/event to the node hosting the pico;
3. the same events sent to node B for a pico hosted on node A: the DID-addressed
   round trip B → A → B over libp2p, p50/p99, beside the local HTTP figure from
   the same run, so the mesh hop's cost is the difference;
4. moving that pico from A to B (POST /api/move until the move committed): B
   fetches and verifies every block of its history, which by then has one head
   per event;
5. the same-run peer: Pico Labs' pico-engine-core 1.3.0 in process under Node,
   with its in-memory store (memdown), running the same counter ruleset
   (scripts/bench/peer/pico_engine_counter.mjs), beside case 1. It is skipped,
   with a line saying how to install it, unless `node` is on PATH and
   `npm ci --prefix scripts/bench/peer` has been run.

    .venv/bin/python scripts/bench/skeleton.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]
COUNTER = (ROOT / "rulesets" / "counter.krl").read_text()
RID = "io.p2pico.counter"
PEER = ROOT / "scripts" / "bench" / "peer"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, latencies: list[float], wall: float) -> dict[str, object]:
    return {
        "name": name,
        "events": len(latencies),
        "events_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


def bench_in_process(n: int) -> dict[str, object]:
    import krl
    from p2pico.engine import Engine, Work
    from p2pico.home import Home

    async def run() -> dict[str, object]:
        with tempfile.TemporaryDirectory() as tmp:
            home = Home(Path(tmp))
            engine = Engine(home)
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)
                pico = engine.create_pico([COUNTER])
                latencies = []
                start = time.perf_counter()
                for _ in range(n):
                    t0 = time.perf_counter()
                    event = krl.Event("counter", "inc", {"by": 1})
                    await engine.submit(pico.did, Work("event", event=event, eci=pico.eci))
                    latencies.append(time.perf_counter() - t0)
                wall = time.perf_counter() - start
                nursery.cancel_scope.cancel()
            home.close()
            return summary("in-process (Engine.submit)", latencies, wall)

    return trio.run(run)


def bench_pico_engine(n: int) -> dict[str, object] | None:
    """The same counter events through pico-engine-core's in-process API.

    Returns None, having said why, when Node or the npm packages are missing.
    """
    node = shutil.which("node")
    if node is None or not (PEER / "node_modules" / "pico-engine-core").is_dir():
        why = "node is not on PATH; with Node" if node is None else "not installed"
        print(
            f"peer pico-engine-core skipped ({why}): npm ci --prefix scripts/bench/peer",
            file=sys.stderr,
        )
        return None
    harness = PEER / "pico_engine_counter.mjs"
    done = subprocess.run(
        [node, str(harness), str(ROOT / "rulesets" / "counter.krl"), str(n)],
        cwd=PEER,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"pico-engine-core harness failed:\n{done.stderr}")
    row: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def bench_http(url: str, target: str, n: int, name: str) -> dict[str, object]:
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(20):  # warm-up: connections, caches, record look-ups
            client.post(f"/sky/event/{target}/none/counter/inc", json={"by": 1}).raise_for_status()
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.post(f"/sky/event/{target}/none/counter/inc", json={"by": 1})
            latencies.append(time.perf_counter() - t0)
            body = r.json()
            if "error" in body:
                raise SystemExit(f"{name}: {body['error']}")
        wall = time.perf_counter() - start
    return summary(name, latencies, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()

    from p2pico.testing import start_node

    results = [bench_in_process(args.events)]
    peer = bench_pico_engine(args.events)
    if peer is not None:
        results.append(peer)
    move: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        a = start_node(Path(tmp) / "a")
        b = start_node(Path(tmp) / "b", bootstrap=[a.multiaddr])
        try:
            with a.client() as c:
                made = c.post("/api/picos", json={"rulesets": [COUNTER]}).json()
            did = made["did"]
            results.append(bench_http(a.url, did, args.events, "HTTP to the host (A)"))
            results.append(bench_http(b.url, did, args.events, "HTTP to B, DID-routed to A"))
            with a.client() as c:
                heads = c.get(f"/api/picos/{did}/log").json()["heads"]
                t0 = time.perf_counter()
                moved = c.post("/api/move", json={"did": did, "to": b.peer_id}).json()
                move_s = time.perf_counter() - t0
            if moved.get("host") != b.peer_id:
                raise SystemExit(f"move failed: {moved}")
            move = {
                "name": "move A→B",
                "heads": len(heads),
                "seconds": round(move_s, 3),
                "heads_per_s": round(len(heads) / move_s, 1),
            }
        finally:
            b.stop()
            a.stop()

    print(
        json.dumps(
            {
                "benchmark": "skeleton",
                "python": sys.version.split()[0],
                "results": results,
                "move": move,
            },
            indent=2,
        )
    )
    print()
    width = max(32, *(len(str(r["name"])) for r in results))
    print(f"{'case':<{width}} {'events/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for r in results:
        print(f"{r['name']:<{width}} {r['events_per_s']:>10} {r['p50_ms']:>9} {r['p99_ms']:>9}")
    ours = results[0]
    if peer is not None:
        ratio = float(ours["events_per_s"]) / float(peer["events_per_s"])  # type: ignore[arg-type]
        print(
            f"\nin process, p2pico does {ratio:.2f}x the events/s of {peer['name']}"
            f" ({ours['events_per_s']} vs {peer['events_per_s']})"
        )
    local, routed = results[-2], results[-1]
    hop = float(routed["p50_ms"]) - float(local["p50_ms"])  # type: ignore[arg-type]
    print(f"\nthe B→A→B mesh hop adds {hop:.2f} ms at p50")
    print(f"moving the pico with {move['heads']} heads of history took {move['seconds']} s")


if __name__ == "__main__":
    main()
