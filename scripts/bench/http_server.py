"""HTTP server benchmark: p2pico.httpd against hypercorn, on real nodes; JSON, then a table.

Two ``p2pico node`` processes run at once, one serving its API with our server
(p2pico.httpd, the default) and one with hypercorn (``P2PICO_HTTP=hypercorn``), each
with counter picos. Cases, each on both nodes, interleaved in rounds (the order of
the two servers alternates from round to round) so that the shared machine's load
falls on both alike:

- ``events_1`` / ``events_C``: ``POST /sky/event/<did>/none/counter/inc`` (a JSON body)
  from 1 client, then from C clients at once (each its own pico);
- ``queries_1`` / ``queries_C``: ``GET /sky/cloud/<did>/io.p2pico.counter/count``.

Each client is a thread with one keep-alive connection and a lean raw-socket HTTP/1.1
client (prebuilt request bytes, Content-Length responses), so the client is cheap next to
the node. Reported: requests/s, p50 and p99 latency, and the node's CPU per request
(utime + stime of the node process from /proc, over the case), with the load average.
The named peer is hypercorn; for scale, the Node.js pico-engine server's figures for
events on this machine (from the issue) are printed beside: 720/s with 1 client and
1,633/s with 16.

    .venv/bin/python scripts/bench/http_server.py [--requests N] [--rounds R] [--clients C]
"""

from __future__ import annotations

import sys
from pathlib import Path

# (Not named http.py: run as a script, this folder comes first on sys.path, and that
# name would shadow the standard library's http package for every script here.)
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from p2pico.testing import NodeProcess, start_node  # noqa: E402

COUNTER = (ROOT / "rulesets" / "counter.krl").read_text()
RID = "io.p2pico.counter"
SERVERS = ["hypercorn", "p2pico"]
# The Node.js pico-engine server on this machine, events over HTTP (the figures).
NODE_PICO_ENGINE = {"events_1": 720.0, "events_C": 1633.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def node_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class RawClient:
    """A keep-alive HTTP/1.1 connection; ``call`` sends prebuilt bytes, returns (status, body).

    It connects again when the server closed the connection after a response (hypercorn
    does after 1,000 requests on one connection: its keep_alive_max_requests)."""

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.reconnects = 0
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, request: bytes) -> tuple[int, bytes]:
        try:
            return self._call(request)
        except (ConnectionError, EOFError):
            if self.buf:
                raise
            self.sock.close()  # closed between two responses: connect again, once
            self.reconnects += 1
            self._connect()
            return self._call(request)

    def _call(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        head = buf[:end].lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"response without Content-Length: {head[:300]!r}")
        length = int(
            head[at + 17 : head.find(b"\r\n", at + 2) if head.find(b"\r\n", at + 2) > 0 else None]
        )
        total = end + 4 + length
        while len(buf) < total:
            buf += self._recv()
        self.buf = buf[total:]
        if b"\r\nconnection: close" in head:
            self.sock.close()
            self.reconnects += 1
            self._connect()
        return int(head[9:12]), buf[end + 4 : total]

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def event_request(did: str) -> bytes:
    body = b'{"by":1}'
    return (
        f"POST /sky/event/{did}/none/counter/inc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def query_request(did: str) -> bytes:
    return f"GET /sky/cloud/{did}/{RID}/count HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def check_event(status: int, body: bytes) -> None:
    if status != 200 or b'"directives"' not in body:
        raise RuntimeError(f"event: {status} {body[:300]!r}")


def check_query(status: int, body: bytes) -> None:
    if status != 200 or not body.isdigit():
        raise RuntimeError(f"query: {status} {body[:300]!r}")


def drive(
    node: NodeProcess,
    dids: list[str],
    n: int,
    make: Callable[[str], bytes],
    check: Callable[[int, bytes], None],
) -> dict[str, object]:
    """``n`` requests split over one thread per DID; latencies, wall time, node CPU."""
    host, port = node.url.removeprefix("http://").rsplit(":", 1)
    per = -(-n // len(dids))
    latencies: list[float] = []
    errors: list[str] = []
    reconnects: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(len(dids) + 1)

    def client(did: str) -> None:
        mine: list[float] = []
        request = make(did)
        conn = RawClient(host, int(port))
        try:
            ready.wait()
            for _ in range(per):
                t0 = time.perf_counter()
                status, body = conn.call(request)
                mine.append(time.perf_counter() - t0)
                check(status, body)
        except Exception as e:  # reported after the run
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)
                reconnects.append(conn.reconnects)

    threads = [threading.Thread(target=client, args=(d,)) for d in dids]
    for t in threads:
        t.start()
    ready.wait()  # every client connected
    cpu0, start = node_cpu(node.proc.pid), time.perf_counter()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, node_cpu(node.proc.pid) - cpu0
    if errors:
        raise SystemExit(f"{node.home.name} server at {node.url}: {errors[0]}; its log: {node.log}")
    return {
        "ops": len(latencies),
        "wall": wall,
        "cpu": cpu,
        "latencies": latencies,
        "reconnects": sum(reconnects),
    }


def summarize(runs: list[dict[str, object]]) -> dict[str, float]:
    latencies = [x for r in runs for x in r["latencies"]]  # type: ignore[attr-defined]
    ops = sum(int(r["ops"]) for r in runs)  # type: ignore[call-overload]
    wall = sum(float(r["wall"]) for r in runs)  # type: ignore[arg-type]
    cpu = sum(float(r["cpu"]) for r in runs)  # type: ignore[arg-type]
    return {
        "ops": ops,
        "per_s": round(ops / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 3),
        "node_cpu_us_per_req": round(cpu / ops * 1e6, 1),
        "reconnects": sum(int(r["reconnects"]) for r in runs),  # type: ignore[call-overload]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--log-dir", help="keep the nodes' logs here (default: discarded)")
    args = parser.parse_args()
    clients = args.clients

    cases: dict[str, tuple[Callable[[str], bytes], Callable[[int, bytes], None], bool]] = {
        "events_1": (event_request, check_event, False),
        "events_C": (event_request, check_event, True),
        "queries_1": (query_request, check_query, False),
        "queries_C": (query_request, check_query, True),
    }
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict[str, object]]]] = {
        s: {c: [] for c in cases} for s in SERVERS
    }
    with tempfile.TemporaryDirectory() as tmp:
        nodes: dict[str, NodeProcess] = {}
        dids: dict[str, list[str]] = {}
        saved = os.environ.get("P2PICO_HTTP")
        try:
            for server in SERVERS:
                os.environ["P2PICO_HTTP"] = server
                nodes[server] = start_node(Path(tmp) / server, log_dir=Path(args.log_dir or tmp))
            for server, node in nodes.items():
                with node.client() as c:
                    dids[server] = [
                        c.post("/api/picos", json={"rulesets": [COUNTER]}).json()["did"]
                        for _ in range(clients + 1)
                    ]
                drive(node, dids[server][:1], 200, event_request, check_event)  # warm-up
                drive(node, dids[server][:1], 200, query_request, check_query)
            for r in range(args.rounds):
                order = SERVERS if r % 2 == 0 else SERVERS[::-1]
                for case, (make, check, many) in cases.items():
                    for server in order:
                        targets = dids[server][1:] if many else dids[server][:1]
                        runs[server][case].append(
                            drive(nodes[server], targets, args.requests, make, check)
                        )
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for node in nodes.values():
                node.stop()
            if saved is None:
                os.environ.pop("P2PICO_HTTP", None)
            else:
                os.environ["P2PICO_HTTP"] = saved

    results = {s: {c: summarize(runs[s][c]) for c in cases} for s in SERVERS}
    report = {
        "name": "HTTP API server: p2pico.httpd vs hypercorn (peer), real nodes, interleaved",
        "clients": clients,
        "requests_per_case_and_round": args.requests,
        "rounds": args.rounds,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "results": results,
        "node_pico_engine_events_per_s": NODE_PICO_ENGINE,
        "ratio_p2pico_over_hypercorn": {
            c: {
                "per_s": round(results["p2pico"][c]["per_s"] / results["hypercorn"][c]["per_s"], 2),
                "node_cpu_per_req": round(
                    results["p2pico"][c]["node_cpu_us_per_req"]
                    / results["hypercorn"][c]["node_cpu_us_per_req"],
                    2,
                ),
            }
            for c in cases
        },
    }
    print(json.dumps(report, indent=2))
    print()
    print(f"load average before {load_before}, after {report['loadavg_after']}")
    header = f"{'case':<10} {'server':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'node CPU µs/req':>16} {'vs hypercorn':>13}"
    print(header)
    print("-" * len(header))
    for case in cases:
        label = case.replace("_C", f"_{clients}")
        for server in SERVERS:
            row = results[server][case]
            ratio = (
                ""
                if server == "hypercorn"
                else f"×{row['per_s'] / results['hypercorn'][case]['per_s']:.2f}"
            )
            print(
                f"{label:<10} {server:<10} {row['per_s']:>8.1f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
                f"{row['node_cpu_us_per_req']:>16.1f} {ratio:>13}"
            )
        if case in NODE_PICO_ENGINE:
            print(
                f"{label:<10} {'node p-e':<10} {NODE_PICO_ENGINE[case]:>8.1f}   (the issue's figure, not this run)"
            )


if __name__ == "__main__":
    main()
