"""The computer closet: sensor, fan and closet picos on two p2pico engines keep a
simulated closet under a temperature threshold for an hour of simulated time.

    .venv/bin/python scripts/demo/closet.py [--png docs/closet-trace.png] [--workdir DIR]

Two real ``p2pico node`` processes on loopback, A and B.  On A: the closet pico
(``closet.controller``), sensor "rack" and fan "intake"; on B: sensor "door" and fan
"exhaust".  Sensors and fans subscribe to the closet.  This script is their hardware:
a small physical model of the closet (heat from the computers, loss through the walls,
more with each fan running) stepped on a fake clock, 30 simulated seconds a step.
Each step it sends each sensor pico a ``sensor:reading`` (as a driver reading a real
probe would), waits until the closet pico has taken both readings and every fan pico
is in the state the closet asked for, and reads the fans' states back into the model
(as a GPIO driver would).  Nothing waits on wall-clock time.  Halfway through, the
"rack" sensor pico moves from A to B; control goes on.

It prints a JSON summary and, with ``--png``, draws the temperature trace (SVG, made
into a PNG by headless Chromium).  ``tests/test_closet.py`` runs the same hour.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from openwest import NODES, Api, chromium, eventually, screenshot  # noqa: E402

from p2pico.testing import NodeProcess, start_node  # noqa: E402

RULESETS = ROOT / "rulesets" / "closet"
THRESHOLD = 30.0
AMBIENT = 22.0
STEP = 30  # simulated seconds between readings
HOUR = 3600


@dataclass
class Closet:
    """The physics: C dT/dt = P(t) - (h0 + fans * h_fan) (T - ambient)."""

    temperature: float = 24.0
    capacity: float = 600.0  # so the closet's time constant is 10 min with no fan
    walls: float = 1.0
    per_fan: float = 2.0

    @staticmethod
    def load(t: float) -> float:
        """Heat from the computers: busy (backups) from minute 20 to 40."""
        return 28.0 if 1200 <= t < 2400 else 16.0

    def step(self, t: float, fans_on: int, seconds: float) -> float:
        dt = 1.0
        for i in range(int(seconds / dt)):
            loss = (self.walls + fans_on * self.per_fan) * (self.temperature - AMBIENT)
            self.temperature += (self.load(t + i * dt) - loss) / self.capacity * dt
        return self.temperature


# Where each probe sits: the rack runs a little hotter than the closet, the door cooler.
SENSORS = {"rack": +0.3, "door": -0.2}
FANS = ["intake", "exhaust"]


@dataclass
class Run:
    a: NodeProcess
    b: NodeProcess
    log: Callable[[str], None] = print
    api: dict[str, Api] = field(default_factory=dict)
    picos: dict[str, str] = field(default_factory=dict)  # name -> DID
    trace: list[dict[str, Any]] = field(default_factory=list)

    def new_pico(self, node: NodeProcess, name: str, rid: str) -> str:
        api = self.api[node.url]
        r = api.http.post(
            "/api/picos",
            json={
                "wrangler": True,
                "name": name,
                "rulesets": [(RULESETS / f"{rid}.krl").read_text()],
            },
        )
        r.raise_for_status()
        self.picos[name] = r.json()["did"]
        return self.picos[name]

    def setup(self) -> None:
        self.api = {self.a.url: Api(self.a), self.b.url: Api(self.b)}
        a = self.api[self.a.url]
        closet = self.new_pico(self.a, "closet", "closet.controller")
        a.event(closet, "closet:threshold", degrees=str(THRESHOLD))
        well_known = a.query(closet, "io.picolabs.subscription", "wellKnown_Rx")["id"]
        placed = [
            (self.a, "rack", "closet.sensor", "sensor:join"),
            (self.b, "door", "closet.sensor", "sensor:join"),
            (self.a, "intake", "closet.fan", "fan:join"),
            (self.b, "exhaust", "closet.fan", "fan:join"),
        ]
        for node, name, rid, join in placed:
            did = self.new_pico(node, name, rid)
            self.api[node.url].event(did, join, wellKnown=well_known, name=name)
            # joining in this order fixes the fans' order in the closet
            joined = len(self.picos) - 1
            eventually(
                lambda joined=joined: self.joined() >= joined,
                f"{name} joining the closet",
            )

    def joined(self) -> int:
        status = self.status()
        return int(status["sensors"]) + int(status["fans"])

    def status(self) -> dict[str, Any]:
        return self.api[self.a.url].query(self.picos["closet"], "closet.controller", "status")  # type: ignore[no-any-return]

    def fans(self) -> list[bool]:
        api = self.api[self.a.url]  # any engine answers for any pico
        return [api.query(self.picos[f], "closet.fan", "state")["on"] for f in FANS]

    def move(self, name: str, to: NodeProcess) -> None:
        r = self.api[self.a.url].http.post(
            "/api/move", json={"did": self.picos[name], "to": to.peer_id}
        )
        r.raise_for_status()
        assert r.json()["host"] == to.peer_id, r.text

    def hour(self, move_at: int = HOUR // 2) -> dict[str, Any]:
        closet = Closet()
        api = self.api[self.a.url]
        fans_on = 0
        decisions_at_move = None
        started = time.monotonic()
        for t in range(0, HOUR + 1, STEP):
            if t == move_at:
                self.move("rack", self.b)
                decisions_at_move = self.status()["decisions"]
                self.log(f"t={t} s: moved the rack sensor's pico from A to B")
            temperature = closet.temperature if t == 0 else closet.step(t - STEP, fans_on, STEP)
            for name, offset in SENSORS.items():
                api.event(
                    self.picos[name],
                    "sensor:reading",
                    temperature=round(temperature + offset, 2),
                    time=t,
                )

            def settled(t: int = t) -> list[bool] | None:
                status = self.status()
                if any(status["readings"].get(s, {}).get("time") != t for s in SENSORS):
                    return None
                states = self.fans()
                want = [i < status["fans_on"] for i in range(len(FANS))]
                return states if states == want else None

            states = eventually(settled, f"the closet to take the readings of t={t}") or []
            fans_on = sum(states)
            self.trace.append(
                {"t": t, "temperature": round(temperature, 3), "fans": fans_on,
                 "readings": {s: round(temperature + o, 2) for s, o in SENSORS.items()}}
            )  # fmt: skip
        status = self.status()
        hosts = {
            name: ("B" if did in {p["did"] for p in self.api[self.b.url].http.get("/api/picos").json()} else "A")
            for name, did in self.picos.items()
        }  # fmt: skip
        temps = [p["temperature"] for p in self.trace]
        return {
            "threshold": THRESHOLD,
            "max_temperature": round(max(temps), 2),
            "min_temperature": round(min(temps), 2),
            "without_fans_would_reach": round(uncontrolled_max(), 2),
            "steps": len(self.trace),
            "fan_switches": sum(
                1
                for p, q in zip(self.trace, self.trace[1:], strict=False)
                if p["fans"] != q["fans"]
            ),
            "moved": {"pico": "rack", "at": move_at, "decisions_before": decisions_at_move},
            "decisions": status["decisions"],
            "hosts": hosts,
            "seconds": round(time.monotonic() - started, 1),
        }

    def close(self) -> None:
        for api in self.api.values():
            api.close()


def uncontrolled_max() -> float:
    closet = Closet()
    return max(closet.step(t, 0, STEP) for t in range(0, HOUR, STEP))


def trace_svg(
    trace: list[dict[str, Any]], move_at: int, width: int = 900, height: int = 420
) -> str:
    """The temperature trace: the closet's temperature, the threshold, fans running, the move."""
    left, right, top, bottom = 60, 20, 40, 50
    lo, hi = 20.0, 34.0

    def x(t: float) -> float:
        return left + (width - left - right) * t / HOUR

    def y(v: float) -> float:
        return top + (height - top - bottom) * (hi - v) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="24" font-size="17">Closet temperature, one simulated hour '
        "(picos on two engines)</text>",
    ]
    shades = {1: "#dbeafe", 2: "#93c5fd"}
    for p, q in itertools.pairwise(trace):
        if p["fans"]:
            parts.append(
                f'<rect x="{x(p["t"]):.1f}" y="{top}" width="{x(q["t"]) - x(p["t"]):.1f}" '
                f'height="{height - top - bottom}" fill="{shades[min(p["fans"], 2)]}"/>'
            )
    for v in range(int(lo), int(hi) + 1, 2):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v} °C</text>'
        )
    for m in range(0, 61, 10):
        parts.append(
            f'<text x="{x(m * 60):.1f}" y="{height - bottom + 18}" text-anchor="middle">{m} min</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{y(THRESHOLD):.1f}" y2="{y(THRESHOLD):.1f}" '
        'stroke="#dc2626" stroke-dasharray="6 4" stroke-width="2"/>'
        f'<text x="{width - right - 4}" y="{y(THRESHOLD) - 6:.1f}" text-anchor="end" '
        'fill="#dc2626">threshold</text>'
    )
    parts.append(
        f'<line x1="{x(move_at):.1f}" x2="{x(move_at):.1f}" y1="{top}" y2="{height - bottom}" '
        'stroke="#7a1f5c" stroke-width="2"/>'
        f'<text x="{x(move_at) + 6:.1f}" y="{top + 16}" fill="#7a1f5c">rack sensor pico moves A → B</text>'
    )
    points = " ".join(f"{x(p['t']):.1f},{y(p['temperature']):.1f}" for p in trace)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#111" stroke-width="2.5"/>')
    parts.append(
        f'<text x="{left}" y="{height - 10}">light blue: one fan on, blue: two fans on; '
        "busy computers from minute 20 to 40</text></svg>"
    )
    return "\n".join(parts)


@contextmanager
def two_engines(workdir: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        a = start_node(workdir / "a", log_dir=workdir)
        started.append(a)
        b = start_node(workdir / "b", bootstrap=[a.multiaddr], log_dir=workdir)
        started.append(b)
        NODES[:] = started
        yield a, b
    finally:
        NODES.clear()
        for node in reversed(started):
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--png", type=Path, help="draw the temperature trace to this PNG")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="closet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with two_engines(workdir) as (a, b):
        run = Run(a, b)
        try:
            run.setup()
            report = run.hour()
        finally:
            run.close()
    svg = workdir / "closet-trace.svg"
    svg.write_text(trace_svg(run.trace, HOUR // 2))
    if args.png and chromium():
        screenshot(svg.as_uri(), args.png.resolve(), size=(900, 420))
        report["png"] = str(args.png)
    report["svg"] = str(svg)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
