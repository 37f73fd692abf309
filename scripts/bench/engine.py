"""Engine benchmark (issue 4): the counter ruleset on p2pico and on pico-engine-core.

Prints JSON, then a table. Cases, each for p2pico and (where it has one) for the
same-run peer, Pico Labs' pico-engine-core 1.3.0 in process under Node
(scripts/bench/peer/pico_engine_bench.mjs), twice: on its in-memory store (memdown,
nothing durable: the headline ratio) and on LevelDB on disk (leveldown, the store the
pico-engine server uses). p2pico always makes a signed, durable commit per event.

1. events/s and queries/s in process: 1 client on one pico, then C clients at
   once, each on its own pico (p2pico: ``Engine.submit``; the peer: ``eventWait``
   and ``query``);
2. for p2pico, the same through HTTP (``POST /sky/event``, ``GET /sky/cloud``) to a
   real ``p2pico node`` process at 1 and C concurrent clients (a thread each, one
   keep-alive connection each, with http_server.py's raw-socket client), with the node
   process's CPU per request;
3. time to create 1,000 picos with the counter installed;
4. memory per idle pico after creating P picos (RSS growth of a fresh process,
   divided by P; the peer also gives V8's heap growth);
5. the floor: what each event costs below Python (its Ed25519 signature and its blocks'
   SQLite writes, timed alone at 1 and C commits a transaction), beside the CPU per event
   that the events goal (3x the peer) allows.

    .venv/bin/python scripts/bench/engine.py [--events N] [--clients C] [--picos 1000,100000]

The peer is skipped, with a line saying how to install it, unless `node` is on
PATH and `npm ci --prefix scripts/bench/peer` has been run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COUNTER_PATH = ROOT / "rulesets" / "counter.krl"
COUNTER = COUNTER_PATH.read_text()
RID = "io.p2pico.counter"
PEER = ROOT / "scripts" / "bench" / "peer"
# Run as a script, this folder comes first on sys.path, and its krl.py (the KRL
# benchmark) would shadow the krl package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
sys.path.insert(0, str(ROOT))


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(latencies: list[float], wall: float) -> dict[str, float]:
    return {
        "ops": len(latencies),
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize()


def _sibling(name: str) -> Any:
    """A module of this folder (which is off sys.path, above), loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"p2pico_bench_{name}", HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- p2pico in process ------------------------------------------------------------------


def bench_in_process(events: int, queries: int, clients: int) -> dict[str, object]:
    import krl
    from p2pico.engine import Engine, Work

    async def drive(
        engine: Engine, dids: list[str], n: int, make: Callable[[str], Work]
    ) -> dict[str, float]:
        latencies: list[float] = []
        per = -(-n // len(dids))

        async def sender(did: str) -> None:
            for _ in range(per):
                t0 = time.perf_counter()
                work = make(did)
                await engine.submit(did, work)
                if work.error is not None:
                    raise SystemExit(f"p2pico: {work.error}")
                latencies.append(time.perf_counter() - t0)

        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for did in dids:
                nursery.start_soon(sender, did)
        out = row(latencies, time.perf_counter() - start)
        # the process's CPU per operation (one trio thread does the work): steadier than
        # ops/s on a machine other jobs keep busy
        out["cpu_us_per_op"] = round((time.process_time() - cpu) / len(latencies) * 1e6, 1)
        return out

    async def run() -> dict[str, object]:
        from p2pico.home import Home

        with tempfile.TemporaryDirectory() as tmp:
            home = Home(Path(tmp))
            engine = Engine(home)
            out: dict[str, object] = {"name": "p2pico in process (Engine.submit)"}
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)
                picos = [engine.create_pico([COUNTER]) for _ in range(clients + 1)]
                ecis = {p.did: p.eci for p in picos}
                one, many = [picos[0].did], [p.did for p in picos[1:]]

                def inc(did: str) -> Work:
                    event = krl.Event("counter", "inc", {"by": 1})
                    return Work("event", event=event, eci=ecis[did])

                def count(did: str) -> Work:
                    return Work("query", eci=ecis[did], rid=RID, name="count")

                await drive(engine, one, 100, inc)  # warm-up
                out["events_1"] = await drive(engine, one, events, inc)
                out["events_C"] = await drive(engine, many, events, inc)
                out["queries_1"] = await drive(engine, one, queries, count)
                out["queries_C"] = await drive(engine, many, queries, count)
                done = Work("query", eci=ecis[one[0]], rid=RID, name="count")
                got = await engine.submit(one[0], done)
                if got != 100 + events:
                    raise SystemExit(f"p2pico: count is {got}, expected {100 + events}")
                nursery.cancel_scope.cancel()
            home.close()
            return out

    return trio.run(run)


# -- p2pico over HTTP -------------------------------------------------------------------


def bench_http(events: int, queries: int, clients: int) -> dict[str, object]:
    """The same cases through HTTP to a real ``p2pico node``, with http_server.py's lean
    raw-socket keep-alive client (a thread per client): with httpx, the client was most of
    the cost. Also the node's CPU per request, from /proc."""
    hs = _sibling("http_server")  # scripts/bench/http_server.py

    from p2pico.testing import start_node

    def drive(*args: Any) -> dict[str, float]:
        """http_server.drive(node, dids, n, make, check), as this bench's row."""
        run = hs.drive(*args)
        latencies = cast(list[float], run["latencies"])
        out = row(latencies, cast(float, run["wall"]))
        out["node_cpu_us_per_op"] = round(cast(float, run["cpu"]) / len(latencies) * 1e6, 1)
        return out

    out: dict[str, object] = {
        "name": "p2pico node over HTTP (/sky/event, /sky/cloud; raw-socket keep-alive clients)"
    }
    with tempfile.TemporaryDirectory() as tmp:
        node = start_node(Path(tmp) / "a")
        try:
            with node.client() as c:
                dids = [
                    c.post("/api/picos", json={"rulesets": [COUNTER]}).json()["did"]
                    for _ in range(clients + 1)
                ]
            one, many = dids[:1], dids[1:]
            event, query = hs.event_request, hs.query_request
            drive(node, one, 100, event, hs.check_event)  # warm-up
            out["events_1"] = drive(node, one, events, event, hs.check_event)
            out["events_C"] = drive(node, many, events, event, hs.check_event)
            out["queries_1"] = drive(node, one, queries, query, hs.check_query)
            out["queries_C"] = drive(node, many, queries, query, hs.check_query)
        finally:
            node.stop()
    return out


# -- the floor: what each event costs below Python ---------------------------------------

# The blocks one counter event commits (engine: ruleset state, state root, cause, signed
# head), by size in bytes, as p2pico writes them now.
COMMIT_BLOCKS = (80, 202, 56, 318)


def bench_floor(clients: int, events: int = 16_000) -> dict[str, object]:
    """The native work every p2pico event does, with no Python around it (floor.py): its
    Ed25519 signature and its blocks' SQLite writes, `clients` commits a transaction. The
    events/s of one core that did only this bounds the engine on one thread."""
    floor = _sibling("floor")
    sign = floor.sign_us()
    sqlite = floor.sqlite_us(COMMIT_BLOCKS, clients, events)
    total = sign + sqlite
    return {
        "what": "per event: Ed25519 sign + SQLite writes of its blocks, no Python around them",
        "commit_blocks_bytes": list(COMMIT_BLOCKS),
        "group": clients,
        "sign_us": round(sign, 1),
        "sqlite_us": round(sqlite, 1),
        "floor_us": round(total, 1),
        "max_events_per_s_one_core": round(1e6 / total),
    }


# -- creating picos and memory (a fresh process per count) ------------------------------

CHILD = """
import gc, json, sys, tempfile, time, trio
from pathlib import Path
sys.path.insert(0, {root!r})
from p2pico.engine import Engine
from p2pico.home import Home

def rss_bytes():
    import resource
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

n = int(sys.argv[1])
source = Path({counter!r}).read_text()

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        engine = Engine(home)
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            engine.create_pico([source])  # warm-up: imports, caches, the first compile
            gc.collect()
            before = rss_bytes()
            t0 = time.perf_counter()
            for _ in range(n):
                engine.create_pico([source])
            seconds = time.perf_counter() - t0
            gc.collect()
            after = rss_bytes()
            print(json.dumps({{"picos": n, "seconds": round(seconds, 3),
                              "picos_per_s": round(n / seconds, 1),
                              "rss_bytes_per_pico": round((after - before) / n)}}))
            nursery.cancel_scope.cancel()
        home.close()

trio.run(main)
"""


def bench_create(counts: list[int]) -> list[dict[str, object]]:
    out = []
    script = CHILD.format(root=str(ROOT), counter=str(COUNTER_PATH))
    for n in counts:
        done = subprocess.run(
            [sys.executable, "-c", script, str(n)],
            capture_output=True,
            text=True,
            timeout=3600,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise SystemExit(f"creating {n} picos failed:\n{done.stderr[-3000:]}")
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


# -- the peer ---------------------------------------------------------------------------


def bench_peer(events: int, queries: int, clients: int, picos: list[int]) -> dict | None:  # type: ignore[type-arg]
    node = shutil.which("node")
    if node is None or not (PEER / "node_modules" / "pico-engine-core").is_dir():
        why = "node is not on PATH; with Node" if node is None else "not installed"
        print(
            f"peer pico-engine-core skipped ({why}): npm ci --prefix scripts/bench/peer",
            file=sys.stderr,
        )
        return None
    cmd = [node, "--expose-gc", str(PEER / "pico_engine_bench.mjs"), str(COUNTER_PATH)]
    cmd += ["--events", str(events), "--queries", str(queries), "--clients", str(clients)]
    cmd += ["--picos", ",".join(map(str, picos))]
    done = subprocess.run(cmd, cwd=PEER, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"pico-engine-core harness failed:\n{done.stderr[-3000:]}")
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[type-arg]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--picos", default="1000,100000", help="comma-separated pico counts")
    parser.add_argument(
        "--peer-picos", default="1000,10000", help="pico counts for the peer's create/memory"
    )
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    counts = [int(x) for x in args.picos.split(",") if x]
    peer_counts = [int(x) for x in args.peer_picos.split(",") if x]

    gc.collect()
    ours = bench_in_process(args.events, args.queries, args.clients)
    http = None if args.skip_http else bench_http(args.events, args.queries, args.clients)
    create = bench_create(counts)
    peer = bench_peer(args.events, args.queries, args.clients, peer_counts)
    floor = {"1": bench_floor(1), str(args.clients): bench_floor(args.clients)}

    keys = ("events_1", "events_C", "queries_1", "queries_C")
    ratios: dict[str, float] = {}
    ratios_leveldown: dict[str, float] = {}
    peer_leveldown = None if peer is None else peer.get("leveldown")
    if peer is not None:
        for key in keys:
            ratios[key] = round(ours[key]["per_s"] / peer[key]["per_s"], 2)  # type: ignore[index]
    if peer_leveldown is not None:
        for key in keys:
            theirs = peer_leveldown[key]["per_s"]
            ratios_leveldown[key] = round(ours[key]["per_s"] / theirs, 2)  # type: ignore[index]
    result = {
        "benchmark": "engine",
        "python": sys.version.split()[0],
        "clients": args.clients,
        "p2pico": ours,
        "p2pico_http": http,
        "p2pico_create": create,
        "peer": peer,
        "ratios_p2pico_over_peer": ratios,
        "ratios_p2pico_over_peer_leveldown": ratios_leveldown,
        "floor": floor,
        "goals": {"events_ratio": 3.0, "bytes_per_idle_pico": 5000},
    }
    print(json.dumps(result, indent=2))
    print()
    c = args.clients
    print(
        "ratio: p2pico in process over pico-engine-core on memdown (the headline) and on leveldown"
    )
    print(
        f"{'case':<46} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'memdown':>8} {'leveldown':>9}"
        f" {'CPU µs/op':>9}"
    )
    labels = {
        "events_1": "events, 1 client",
        "events_C": f"events, {c} clients",
        "queries_1": "queries, 1 client",
        "queries_C": f"queries, {c} clients",
    }
    sources = [
        ("p2pico in process", ours),
        ("p2pico HTTP", http),
        ("pico-engine-core memdown", peer),
        ("pico-engine-core leveldown", peer_leveldown),
    ]
    for key, label in labels.items():
        for who, data in sources:
            if data is None:
                continue
            r = data[key]
            mine = who == "p2pico in process"
            ratio = ratios.get(key, "") if mine else ""
            ratio_ld = ratios_leveldown.get(key, "") if mine else ""
            cpu = r.get("cpu_us_per_op", r.get("node_cpu_us_per_op", ""))
            print(
                f"{who + ', ' + label:<46} {r['per_s']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8}"
                f" {ratio!s:>8} {ratio_ld!s:>9} {cpu!s:>9}"
            )
    print("(CPU µs/op: this process's CPU in process, the node process's CPU over HTTP)")
    print()
    print("the floor: each event's Ed25519 signature and its blocks' SQLite writes, no Python")
    for key, clients in (("events_1", "1"), ("events_C", str(c))):
        f = floor[clients]
        line = (
            f"  {clients:>2} client(s): sign {f['sign_us']} + SQLite {f['sqlite_us']}"
            f" = {f['floor_us']} µs/event, at most {f['max_events_per_s_one_core']:,}/s on one"
            f" core; p2pico uses {ours[key]['cpu_us_per_op']} µs"  # type: ignore[index]
        )
        if peer is not None:
            goal = 3 * peer[key]["per_s"]
            line += (
                f"; 3x the peer is {goal:,.0f}/s: {1e6 / goal:.0f} µs/event, of which"
                f" {1e6 / goal - f['floor_us']:.0f} µs are left for what runs in Python"
            )
        print(line)
    print()
    print(f"{'create / memory':<46} {'picos':>9} {'seconds':>8} {'B/pico':>8}")
    for r in create:
        print(f"{'p2pico':<46} {r['picos']:>9} {r['seconds']:>8} {r['rss_bytes_per_pico']:>8}")
    if peer is not None:
        for cr, mem in zip(peer["create"], peer["memory"], strict=True):
            print(
                f"{'pico-engine-core (RSS; heap ' + str(mem['heap_bytes_per_pico']) + ')':<46}"
                f" {cr['picos']:>9} {cr['seconds']:>8} {mem['rss_bytes_per_pico']:>8}"
            )


if __name__ == "__main__":
    main()
