"""First benchmarks of the walking skeleton; prints JSON, then a table.

1. counter events/s in process: Engine.submit on one pico, no network, no HTTP
   (KRL select + run, the overlay, a state commit and a signed head per event);
2. counter events/s through HTTP: POST /sky/event to the node hosting the pico;
3. the same events sent to node B for a pico hosted on node A: the DID-addressed
   round trip B → A → B over libp2p, p50/p99, beside the local HTTP figure from
   the same run, so the mesh hop's cost is the difference;
4. moving that pico from A to B (POST /api/move until the move committed): B
   fetches and verifies every block of its history, which by then has one head
   per event.

    .venv/bin/python scripts/bench/skeleton.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]
COUNTER = (ROOT / "rulesets" / "counter.krl").read_text()
RID = "io.p2pico.counter"


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
                heads = c.get(f"/api/picos/{did}/history").json()["heads"]
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
    print(f"{'case':<32} {'events/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for r in results:
        print(f"{r['name']:<32} {r['events_per_s']:>10} {r['p50_ms']:>9} {r['p99_ms']:>9}")
    local, routed = results[1], results[2]
    hop = float(routed["p50_ms"]) - float(local["p50_ms"])  # type: ignore[arg-type]
    print(f"\nthe B→A→B mesh hop adds {hop:.2f} ms at p50")
    print(f"moving the pico with {move['heads']} heads of history took {move['seconds']} s")


if __name__ == "__main__":
    main()
