"""The mesh at full strength: latency, throughput, moves and record convergence (issue 6).

Every case runs real ``p2pico node`` processes on 127.0.0.1 (p2pico.testing.start_node)
and drives them over their HTTP API, so every figure includes an HTTP round trip from
this process; the mesh's own cost is the difference to the same request sent straight
to the host, which each case measures in the same run. Prints JSON, then a table.

1. latency: counter events to a pico on A, sent to A (local) and to B (DID-routed
   B → A → B over libp2p), one at a time; p50/p99 of each end to end, and of the
   DID-routed leg itself: B's ``Server-Timing: routed;dur=…`` header, per request, from
   the moment its HTTP handler has the event until A's answer is back (A runs the event
   meanwhile), beside ``local;dur=…`` of the same event run on A.  CPU per event of each
   process from /proc: the hop's CPU is the routed run's (A + B) less the local run's
   (the same HTTP request and event, without the hop); B's share is its trio thread's
   CPU during the leg (``cpu;dur=…`` in the same header), A's the rest. Each row also
   gives this machine's speed just before and after the routed run (``reference_ms``:
   a fixed pure-Python loop, lower is faster), since a VM's speed moves with its host's
   load;
2. throughput: E engines, each hosting picos, S concurrent senders each sending to an
   engine that does not host its pico (every event takes one mesh hop), events/s and
   p50/p99; beside it, the same senders straight to the hosts;
3. moves: a pico holding 1 KB → 10 MB of entity state (1 KB entries, history dropped
   with ``gc --keep-history 0`` so the move carries the state only) moved A → B while a
   client keeps sending it events through A; move time, and the pause: the longest an
   event sent during the move waited (beside the p50 before the move), which bounds the
   time from the pico's quiesce to the first event answered on the new host; without
   pre-copy (``P2PICO_PRECOPY=0``: every block is fetched while the pico is paused) and
   with it (B copies the blocks first, the pause fetches what changed), in one run;
4. convergence: N engines (5, 10, 20) bootstrapped to the first; a pico is created on
   the last and the time until every engine holds its location record is measured
   (from the create request, so an upper bound; each engine is asked with a long poll,
   ``/api/records/:did?after=-1&wait=S``); then a burst of B creations and the time
   until every engine holds all B records, with how many were held at the deadline.

    .venv/bin/python scripts/bench/mesh.py [--quick] [--only echo,latency,throughput,move,converge]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from p2pico.testing import NodeProcess, start_node  # noqa: E402

COUNTER = (ROOT / "rulesets" / "counter.krl").read_text()

# Entity state of any size: a value may be at most one block (256 KiB), so the state is
# spread over SLOTS entity variables of up to SLOT_KIB each; blob:fill slot=N data=…
# sets ent:sN (one rule per slot, selected on the slot attribute).
SLOTS = 64
SLOT_KIB = 200
BLOB = (
    "ruleset bench.blob {\n"
    + "".join(
        f"  rule fill{i} {{ select when blob fill slot re#^{i}$# "
        f'fired {{ ent:s{i} := event:attr("data") }} }}\n'
        for i in range(SLOTS)
    )
    + '  rule ping { select when blob ping send_directive("pong", {"n": event:attr("n")}) }\n'
    + "}\n"
)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": ms(percentile(samples, 50)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(max(samples)),
        "mean_ms": ms(statistics.fmean(samples)),
    }


@contextmanager
def nodes(count: int, tmp: Path, *, star: bool = True) -> Iterator[list[NodeProcess]]:
    """``count`` nodes; all but the first bootstrap to the first."""
    started: list[NodeProcess] = []
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        first = start_node(tmp / "n0")
        started.append(first)
        for i in range(1, count):  # one by one: each waits for its ready line
            started.append(start_node(tmp / f"n{i}", bootstrap=[first.multiaddr]))
        yield started
    finally:
        for node in reversed(started):
            try:
                node.stop()
            except Exception as e:  # a stuck node must not hide the figures
                print(f"stopping {node.home.name}: {e}", file=sys.stderr)


async def new_pico(client: httpx.AsyncClient, *sources: str) -> dict[str, str]:
    r = await client.post("/api/picos", json={"rulesets": list(sources)})
    r.raise_for_status()
    made: dict[str, str] = r.json()
    return made


async def event(
    client: httpx.AsyncClient, target: str, domain: str, type: str, attrs: dict[str, object]
) -> float:
    return (await timed_event(client, target, domain, type, attrs))[0]


async def timed_event(
    client: httpx.AsyncClient, target: str, domain: str, type: str, attrs: dict[str, object]
) -> tuple[float, str, float, float]:
    """(seconds end to end, the node's leg "local" | "routed", its duration and the CPU of
    the node's trio thread meanwhile, in seconds), from its Server-Timing header."""
    t0 = time.perf_counter()
    r = await client.post(f"/sky/event/{target}/none/{domain}/{type}", json=attrs)
    elapsed = time.perf_counter() - t0
    body = r.json()
    if r.status_code != 200 or "error" in body:
        raise SystemExit(f"event {domain}:{type} to {target} failed: {r.status_code} {body}")
    timing = dict(
        (name.strip(), float(dur) / 1000)
        for name, _, dur in (
            metric.partition(";dur=")
            for metric in r.headers.get("server-timing", "?;dur=nan").split(",")
        )
    )
    leg = "routed" if "routed" in timing else "local" if "local" in timing else "?"
    return elapsed, leg, timing.get(leg, math.nan), timing.get("cpu", math.nan)


def client(node: NodeProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=node.url, timeout=120)


# -- 0. the bare request round trip -------------------------------------------------------


async def bench_echo(n: int) -> dict[str, object]:
    """Net.request round trips between two Nets in this process (no engine, no HTTP)."""
    from p2pico.net import serve_net

    async def echo(peer: str, data: bytes) -> bytes:
        return data

    rows: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        a = await nursery.start(serve_net, os.urandom(32), ["/ip4/127.0.0.1/tcp/0"])
        b = await nursery.start(serve_net, os.urandom(32), ["/ip4/127.0.0.1/tcp/0"])
        b.set_handler("/bench/echo/1", echo)
        await a.connect(b.multiaddrs()[0])
        for mode, persistent in (("one stream per request", False), ("persistent streams", True)):
            a.persistent_streams = persistent
            for _ in range(50):
                await a.request(b.peer_id, "/bench/echo/1", b"x" * 200)
            samples = []
            cpu0 = time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await a.request(b.peer_id, "/bench/echo/1", b"x" * 200)
                samples.append(time.perf_counter() - t0)
            cpu = time.process_time() - cpu0
            # 32 requests at once, to see what multiplexing one stream does to throughput
            t0 = time.perf_counter()
            async with trio.open_nursery() as burst:
                for _ in range(32):

                    async def many() -> None:
                        for _ in range(n // 32):
                            await a.request(b.peer_id, "/bench/echo/1", b"x" * 200)

                    burst.start_soon(many)
            wall = time.perf_counter() - t0
            rows[mode] = {
                **stats(samples),
                "cpu_ms_per_request": round(cpu / n * 1000, 3),
                "concurrent_32_per_s": round((n // 32) * 32 / wall, 1),
            }
        nursery.cancel_scope.cancel()
    return {"case": "Net.request echo, in one process", **rows}


def cpu_seconds(node: NodeProcess) -> float:
    """User + system CPU the node's process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reference_ms() -> float:
    """This machine's speed now: the best of three runs of a fixed pure-Python loop, in
    ms of this process's CPU. On a VM it moves with the host's load (115-170 ms seen
    here within a minute), and the latency rows move with it; the rows print it."""
    best = math.inf
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.process_time() - start)
    return round(best * 1000, 1)


# -- 1. latency ------------------------------------------------------------------------


async def bench_latency(a: NodeProcess, b: NodeProcess, n: int) -> dict[str, object]:
    reference: list[float] = []
    async with client(a) as ca, client(b) as cb:
        did = (await new_pico(ca, COUNTER))["did"]
        rows: dict[str, dict[str, object]] = {}
        thread_cpu: dict[str, float] = {}
        for name, c in (("local", ca), ("routed", cb)):
            for _ in range(50):  # warm-up: connections, record look-ups, caches
                await event(c, did, "counter", "inc", {"by": 1})
            if name == "routed":  # the nodes are idle now, as they are right after
                reference.append(reference_ms())
            a0, b0 = cpu_seconds(a), cpu_seconds(b)
            timed = [await timed_event(c, did, "counter", "inc", {"by": 1}) for _ in range(n)]
            cpu_a, cpu_b = cpu_seconds(a) - a0, cpu_seconds(b) - b0
            if name == "routed":
                reference.append(reference_ms())
            legs = {leg for _, leg, _, _ in timed}
            if legs != {name}:
                raise SystemExit(f"{name} events reported Server-Timing legs {legs}")
            thread_cpu[name] = statistics.fmean(t[3] for t in timed)
            # CPU does not depend on what else the machine runs, as wall time does
            rows[name] = {
                "events": n,
                **stats([t[0] for t in timed]),
                "leg": stats([t[2] for t in timed]),  # the node's Server-Timing
                "leg_thread_cpu_ms": ms(thread_cpu[name]),
                "cpu_ms_per_event": {
                    "a": round(cpu_a / n * 1000, 3),
                    "b": round(cpu_b / n * 1000, 3),
                },
            }
    local, routed = rows["local"], rows["routed"]
    lcpu, rcpu = local["cpu_ms_per_event"], routed["cpu_ms_per_event"]
    assert isinstance(lcpu, dict)
    assert isinstance(rcpu, dict)
    both = rcpu["a"] + rcpu["b"] - lcpu["a"] - lcpu["b"]
    # B's trio thread during the routed leg: the relay's own work for the hop (its HTTP
    # request before and after is not in it; its other threads do nothing for it)
    relay = thread_cpu["routed"] * 1000
    hop_leg = routed["leg"]
    assert isinstance(hop_leg, dict)
    return {
        "case": "latency A↔B (HTTP to B, DID-routed to A)",
        "local": local,
        "routed": routed,
        # the DID-routed leg per request, as B timed it (it includes A running the event)
        "hop_p50_ms": hop_leg["p50_ms"],
        "hop_p99_ms": hop_leg["p99_ms"],
        "hop_cpu_ms": {
            "both": round(both, 3),
            "b": round(relay, 3),  # the relay: send, wait, take the answer
            "a": round(both - relay, 3),  # the host: take the request, answer it
        },
        # the machine's speed just before and after the routed run (lower is faster)
        "reference_ms": reference,
    }


# -- 2. throughput ----------------------------------------------------------------------


async def bench_throughput(
    engines: list[NodeProcess], senders: int, per_sender: int
) -> dict[str, object]:
    clients = [client(e) for e in engines]
    try:
        # one pico per sender, hosted round-robin; sender i sends through the next engine
        picos = []
        for i in range(senders):
            host = i % len(engines)
            picos.append((host, (await new_pico(clients[host], COUNTER))["did"]))
        rows = {}
        for name, through in (
            ("to the host", lambda h: h),
            ("one hop", lambda h: (h + 1) % len(engines)),
        ):
            samples: list[float] = []

            async def send(host: int, did: str, through_index: int) -> None:
                c = clients[through_index]
                for _ in range(10):
                    await event(c, did, "counter", "inc", {"by": 1})  # warm-up

            async with trio.open_nursery() as nursery:
                for host, did in picos:
                    nursery.start_soon(send, host, did, through(host))

            async def run(did: str, through_index: int, samples: list[float]) -> None:
                c = clients[through_index]
                for _ in range(per_sender):
                    samples.append(await event(c, did, "counter", "inc", {"by": 1}))

            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for host, did in picos:
                    nursery.start_soon(run, did, through(host), samples)
            wall = time.perf_counter() - t0
            rows[name] = {
                "events": len(samples),
                "events_per_s": round(len(samples) / wall, 1),
                **stats(samples),
            }
    finally:
        for c in clients:
            await c.aclose()
    return {
        "case": f"throughput: {len(engines)} engines, {senders} senders",
        **rows,
    }


# -- 3. moves ---------------------------------------------------------------------------


async def fill(c: httpx.AsyncClient, did: str, kib: int) -> None:
    """Put ``kib`` KiB of incompressible text into the pico's entity variables."""
    slot = 0
    while kib > 0:
        size = min(SLOT_KIB, kib)
        data = os.urandom(size * 512).hex()  # size KiB of text
        await event(c, did, "blob", "fill", {"slot": str(slot), "data": data})
        kib -= size
        slot += 1


async def bench_move(a: NodeProcess, b: NodeProcess, kib: int) -> dict[str, object]:
    async with client(a) as ca:
        did = (await new_pico(ca, BLOB))["did"]
        await fill(ca, did, kib)
        r = await ca.post("/api/gc", json={"keep_history": 0})
        r.raise_for_status()
        before = [await event(ca, did, "blob", "ping", {"n": i}) for i in range(30)]
        during: list[tuple[float, float]] = []  # (sent at, latency)
        moving = True

        async def ping() -> None:
            # The pico's queue is paused for the move; each ping waits, so the longest wait
            # is the pause a correspondent sees.
            async with client(a) as c:
                i = 0
                while moving:
                    sent = time.perf_counter()
                    during.append((sent, await event(c, did, "blob", "ping", {"n": i})))
                    i += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping)
            await trio.sleep(0.05)
            t0 = time.perf_counter()
            r = await ca.post("/api/move", json={"did": did, "to": b.peer_id})
            move_s = time.perf_counter() - t0
            moving = False
        moved = r.json()
        if moved.get("host") != b.peer_id:
            raise SystemExit(f"move failed: {moved}")
    in_window = [lat for sent, lat in during if sent + lat >= t0 and sent <= t0 + move_s]
    return {
        "case": f"move {kib} KiB",
        "state_kib": kib,
        "move_ms": ms(move_s),
        "pause_ms": ms(max(in_window)) if in_window else None,
        # the source's own figure: from the quiesce until the new host held the pico
        "paused_ms": moved.get("paused_ms"),
        "pings_during": len(in_window),
        "ping_p50_before_ms": ms(percentile(before, 50)),
    }


# -- 4. convergence ---------------------------------------------------------------------


async def held_by_all(
    clients: list[httpx.AsyncClient], did: str, t0: float, wait: float
) -> list[float | None]:
    """Per engine, seconds from ``t0`` until it held ``did``'s record (None: not in time)."""
    seen: list[float | None] = [None] * len(clients)

    async def one(i: int) -> None:
        r = await clients[i].get(f"/api/records/{did}", params={"after": -1, "wait": wait})
        if r.status_code == 200:
            seen[i] = time.perf_counter() - t0

    async with trio.open_nursery() as nursery:
        for i in range(len(clients)):
            nursery.start_soon(one, i)
    return seen


async def bench_converge(
    engines: list[NodeProcess], records: int, burst: int, deadline: float
) -> dict[str, object]:
    clients = [httpx.AsyncClient(base_url=e.url, timeout=deadline + 30) for e in engines]
    origin = clients[-1]  # the last engine: as far from the hub as any
    try:
        await new_pico(origin, COUNTER)  # warm-up
        singles: list[float] = []
        after_reply: list[float] = []
        missing = 0
        for _ in range(records):
            t0 = time.perf_counter()
            did = (await new_pico(origin, COUNTER))["did"]
            replied = time.perf_counter() - t0
            seen = await held_by_all(clients, did, t0, deadline)
            if any(s is None for s in seen):
                missing += sum(s is None for s in seen)
            else:
                singles.append(max(s for s in seen if s is not None))
                after_reply.append(singles[-1] - replied)
        # the burst: `burst` creations from 4 concurrent clients on the origin
        dids: list[str] = []
        t0 = time.perf_counter()

        async def create(count: int) -> None:
            for _ in range(count):
                dids.append((await new_pico(origin, COUNTER))["did"])

        async with trio.open_nursery() as nursery:
            for k in range(4):
                nursery.start_soon(create, burst // 4 + (1 if k < burst % 4 else 0))
        created_s = time.perf_counter() - t0
        all_seen: list[float | None] = [None] * len(clients)
        held_at_deadline = [0] * len(clients)

        async def engine_all(i: int) -> None:
            # the whole list once, then a long poll for each record still missing
            with trio.move_on_after(deadline):
                r = await clients[i].get("/api/records")
                held = {row["did"] for row in r.json()} & set(dids)
                held_at_deadline[i] = len(held)
                for did in dids:
                    if did in held:
                        continue
                    r = await clients[i].get(
                        f"/api/records/{did}", params={"after": -1, "wait": deadline}
                    )
                    if r.status_code != 200:
                        return
                    held_at_deadline[i] += 1
                all_seen[i] = time.perf_counter() - t0

        async with trio.open_nursery() as nursery:
            for i in range(len(clients)):
                nursery.start_soon(engine_all, i)
    finally:
        for c in clients:
            await c.aclose()
    complete = [s for s in all_seen if s is not None]
    return {
        "case": f"convergence, {len(engines)} engines",
        "engines": len(engines),
        "single": {
            "records": len(singles),
            "missing": missing,
            **(stats(singles) if singles else {}),
            # from the create request's reply (the record exists by then): a lower bound
            "after_reply_p50_ms": ms(percentile(after_reply, 50)) if after_reply else None,
            "after_reply_p99_ms": ms(percentile(after_reply, 99)) if after_reply else None,
        },
        "burst": {
            "records": burst,
            "create_s": round(created_s, 3),
            "engines_complete": len(complete),
            "all_engines_all_records_s": round(max(complete), 3)
            if len(complete) == len(clients)
            else None,
            "after_last_create_s": round(max(complete) - created_s, 3)
            if len(complete) == len(clients)
            else None,
            "held_at_deadline_min": min(held_at_deadline),
            "deadline_s": deadline,
        },
    }


# -- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, smaller sizes")
    parser.add_argument("--only", default="echo,latency,throughput,move,converge")
    parser.add_argument("--sizes", default="", help="comma-separated engine counts for convergence")
    args = parser.parse_args()
    only = set(args.only.split(","))
    quick = args.quick
    results: list[dict[str, object]] = []

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            if "echo" in only:
                results.append(await bench_echo(300 if quick else 2000))
                print(json.dumps(results[-1]), file=sys.stderr)
            if "latency" in only:
                # before/after in one run: the one-shot path (P2PICO_RPC=0), then persistent
                for mode, env in (("one stream per request", "0"), ("persistent streams", "1")):
                    os.environ["P2PICO_RPC"] = env
                    with nodes(2, base / f"pair{env}") as (a, b):
                        row = await bench_latency(a, b, 200 if quick else 1000)
                    row["case"] = f"{row['case']}, {mode}"
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr)
                os.environ.pop("P2PICO_RPC")
            if "move" in only:
                # before/after in one run: without pre-copy (P2PICO_PRECOPY=0), then with it
                for mode, env in (("no pre-copy", "0"), ("pre-copy", "1")):
                    os.environ["P2PICO_PRECOPY"] = env
                    with nodes(2, base / f"pair-precopy{env}") as (a, b):
                        for node in (a, b):  # compile the ruleset on both: not a move's cost
                            async with client(node) as c:
                                await new_pico(c, BLOB)
                        for kib in (1, 100, 1024) if quick else (1, 100, 1024, 10240):
                            row = await bench_move(a, b, kib)
                            row["case"] = f"{row['case']}, {mode}"
                            results.append(row)
                            print(json.dumps(row), file=sys.stderr)
                            a, b = b, a  # alternate direction; the next pico is new
                os.environ.pop("P2PICO_PRECOPY")
            if "throughput" in only:
                with nodes(5, base / "five") as engines:
                    results.append(await bench_throughput(engines, 8, 50 if quick else 200))
                    print(json.dumps(results[-1]), file=sys.stderr)
            if "converge" in only:
                sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [5, 10, 20]
                for count in sizes:
                    with nodes(count, base / f"c{count}") as engines:
                        results.append(await bench_converge(engines, 5 if quick else 20, 200, 30.0))
                        print(json.dumps(results[-1]), file=sys.stderr)

    trio.run(run)
    print(
        json.dumps(
            {
                "benchmark": "mesh",
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
    )
    print()
    wire_cpu = None  # the persistent-stream echo's CPU per round trip, if it ran
    for r in results:
        case = str(r["case"])
        echo = r.get("persistent streams")
        if case.startswith("Net.request") and isinstance(echo, dict):
            wire_cpu = echo["cpu_ms_per_request"]
        if case.startswith("Net.request"):
            for mode in ("one stream per request", "persistent streams"):
                row = r[mode]
                assert isinstance(row, dict)
                print(
                    f"{case}, {mode}: p50 {row['p50_ms']} p99 {row['p99_ms']} ms, "
                    f"{row['cpu_ms_per_request']} ms CPU each; 32 at once: "
                    f"{row['concurrent_32_per_s']}/s"
                )
        elif case.startswith("latency"):
            loc, rou = r["local"], r["routed"]
            assert isinstance(loc, dict)
            assert isinstance(rou, dict)
            hop_cpu, reference = r["hop_cpu_ms"], r["reference_ms"]
            assert isinstance(hop_cpu, dict)
            assert isinstance(reference, list)
            print(
                f"{case}: local p50 {loc['p50_ms']} p99 {loc['p99_ms']} ms; routed p50 "
                f"{rou['p50_ms']} p99 {rou['p99_ms']} ms; DID-routed leg (B's Server-Timing) "
                f"p50 {r['hop_p50_ms']} ms (goal ≤ 2), p99 {r['hop_p99_ms']} ms (goal ≤ 10); "
                f"hop CPU {hop_cpu['both']} ms (relay B {hop_cpu['b']}, host A {hop_cpu['a']}); "
                f"machine reference loop {reference[0]} → {reference[1]} ms"
            )
            if "persistent" in case and wire_cpu is not None:
                # where py-libp2p binds: its own round trip, both ends, no p2pico code
                print(
                    f"  of the hop's CPU, py-libp2p's bare round trip (Noise + yamux, both "
                    f"ends; the echo above) is {wire_cpu} ms, "
                    f"{round(100 * wire_cpu / hop_cpu['both']) if hop_cpu['both'] > 0 else '?'} %"
                )
        elif case.startswith("throughput"):
            for k in ("to the host", "one hop"):
                row = r[k]
                assert isinstance(row, dict)
                print(
                    f"{case}, {k}: {row['events_per_s']} events/s, p50 {row['p50_ms']} p99 {row['p99_ms']} ms"
                )
        elif case.startswith("move"):
            print(
                f"{case}: move {r['move_ms']} ms, pause {r['pause_ms']} ms (source: paused "
                f"{r['paused_ms']} ms; ping p50 before {r['ping_p50_before_ms']} ms; goal for "
                f"1 MiB: ≤ 1000 / ≤ 100)"
            )
        else:
            single, burst = r["single"], r["burst"]
            assert isinstance(single, dict)
            assert isinstance(burst, dict)
            print(
                f"{case}: one record p50 {single.get('p50_ms')} p99 {single.get('p99_ms')} ms "
                f"from the create request, {single.get('after_reply_p50_ms')} / "
                f"{single.get('after_reply_p99_ms')} ms after its reply "
                f"({single['missing']} engine-records missing; goal p99 ≤ 1000 ms); burst of "
                f"{burst['records']}: all engines hold all after {burst['all_engines_all_records_s']} s, "
                f"{burst['after_last_create_s']} s after the last create "
                f"(created in {burst['create_s']} s; fewest held {burst['held_at_deadline_min']})"
            )


if __name__ == "__main__":
    main()
