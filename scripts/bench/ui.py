"""The mesh explorer with 5,000 picos across 5 engines; prints JSON, then a table.

Five real ``p2pico node`` processes on loopback (B…E bootstrap from A), 1,000 picos
each (every fifth one a child of another, so the map has family lines), and the
explorer page opened on A in headless Chromium (p2pico.browser):

1. time to first render: from navigation start to the first frame that draws the
   whole mesh (the page's own ``performance.now()``), over a few page loads; with the
   size of the snapshot it streamed;
2. one full redraw at "fit" (clusters) and zoomed in (labelled boxes);
3. an update: a pico created on engine E (through E's HTTP API) until the page has
   drawn it: end to end (includes E noticing the new head, up to 0.2 s, and the long
   poll from A to E), and in the page alone (SSE message in → frame drawn);
4. a move (drag-free: POST /api/mesh/move) until the page shows the pico on its
   new engine;
5. a burst of 200 pico creations while the page is open: frames over 50 ms.

Same-run peer: the same 5,000 picos drawn by the straightforward approach, one
absolutely placed DOM element per pico (a row of engine columns), in the same
browser: time to lay out and paint them, and to add one.

    .venv/bin/python scripts/bench/ui.py [--per-engine N] [--engines N]

Needs Debian's chromium and ``cd ui && npm ci``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from p2pico import browser as br  # noqa: E402
from p2pico.testing import NodeProcess, start_node  # noqa: E402

COUNTER = (ROOT / "rulesets" / "counter.krl").read_text()
# No keep-alive: a loaded node closes idle connections (hypercorn's 5 s keep-alive
# timeout), and a request racing that close is reset.
NO_REUSE = httpx.Limits(max_keepalive_connections=0)


def client(node: NodeProcess) -> httpx.Client:
    return httpx.Client(base_url=node.url, timeout=120, limits=NO_REUSE)


async def populate(node: NodeProcess, count: int) -> list[str]:
    """``count`` picos on ``node``: four roots for every child."""
    dids: list[str] = []
    async with httpx.AsyncClient(base_url=node.url, timeout=120, limits=NO_REUSE) as client:

        async def make(i: int) -> None:
            for attempt in range(3):
                try:
                    if i % 5 == 4 and dids:
                        parent = dids[(i * 7) % len(dids)]
                        r = await client.post(
                            f"/api/picos/{parent}/children", json={"rulesets": []}
                        )
                    else:
                        r = await client.post("/api/picos", json={"rulesets": [COUNTER]})
                    break
                except httpx.TransportError:  # a loaded node dropped the connection; the
                    if attempt == 2:  # totals come from the nodes' own lists, so a
                        raise  # pico made twice does not skew the figures
            r.raise_for_status()
            dids.append(r.json()["did"])

        for start in range(0, count, 8):
            async with trio.open_nursery() as nursery:
                for i in range(start, min(start + 8, count)):
                    nursery.start_soon(make, i)
    return dids


def ms(x: float) -> float:
    return round(x, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", type=int, default=5)
    ap.add_argument("--per-engine", type=int, default=1000)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--updates", type=int, default=10)
    args = ap.parse_args()
    why = br.missing()
    if why:
        sys.exit(f"cannot run: {why}")
    base = Path(tempfile.mkdtemp(prefix="p2pico-bench-ui-"))
    nodes: list[NodeProcess] = []
    try:
        nodes.append(start_node(base / "n0", log_dir=base))
        for i in range(1, args.engines):
            nodes.append(start_node(base / f"n{i}", bootstrap=[nodes[0].multiaddr], log_dir=base))
        t0 = time.monotonic()

        async def fill() -> None:
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(populate, node, args.per_engine)

        trio.run(fill)
        made = time.monotonic() - t0
        a = nodes[0]
        hosted = 0
        for node in nodes:  # every engine's own list (it also hosts its root pico)
            with client(node) as c:
                hosted += len(c.get("/api/picos").json())
        with client(a) as c:
            for _ in range(30):  # the nodes are still gossiping records just after the burst
                mesh = c.get("/api/mesh").json()
                total = len([p for p in mesh["picos"] if not p.get("partial")])
                if total >= hosted:
                    break
            else:
                sys.exit(f"node A's /api/mesh shows {total} of {hosted} picos: {mesh['engines']}")
        snapshot_bytes = len(json.dumps(mesh))
        print(f"{total} picos on {len(nodes)} engines, created in {made:.1f} s", file=sys.stderr)

        with br.open_browser(width=1400, height=860) as page:
            loads, frames = [], []  # from navigation; the first frame alone (layout + draw)
            for i in range(args.loads):
                page.goto(f"{a.url}/?load={i}")
                m = page.wait_for(
                    f"window.__explorer.metrics && window.__explorer.metrics.firstRenderMs !== null"
                    f" && window.__explorer.store.picos.size >= {total}"
                    " && window.__explorer.metrics",
                    timeout=60,
                )
                loads.append(m["firstRenderMs"])
                frames.append(m["firstFrameMs"]["draw"])
            picos_drawn_at_first = m["snapshotPicos"]

            def redraw() -> float:
                return float(
                    page.eval(
                        "(() => { const m = window.__explorer.map; let t = [];"
                        " for (let i = 0; i < 20; i++) { m.draw(); t.push(m.metrics.drawMs); }"
                        " t.sort((a, b) => a - b); return t[10]; })()"
                    )
                )

            page.eval("window.__explorer.map.fit()")
            draw_fit = redraw()
            page.screenshot(ROOT / "test-artifacts" / "ui" / f"bench-{total}-picos.png")
            page.eval(
                "(() => { const m = window.__explorer.map; const r = m.regions[0];"
                " m.focus(r.dids[0], 1); })()"
            )
            draw_zoomed = redraw()
            page.eval("window.__explorer.map.fit()")

            # -- updates: a new pico on the last engine, until the page drew it -----------
            end_to_end, in_page = [], []
            last = nodes[-1]
            with client(last) as c:
                for _ in range(args.updates):
                    page.eval("window.__explorer.metrics.applyMs.length = 0")
                    t = time.monotonic()
                    did = c.post("/api/picos", json={"rulesets": [COUNTER]}).json()["did"]
                    page.wait_for(
                        # laid out and drawn in the same frame (MeshMap.draw)
                        f"window.__explorer.map.pos.has({json.dumps(did)})",
                        timeout=30,
                    )
                    end_to_end.append((time.monotonic() - t) * 1000)
                    applied = page.eval("window.__explorer.metrics.applyMs.slice()")
                    if applied:
                        in_page.append(max(applied))

            # -- a move, until the page shows the pico on its new engine --------------------
            moves = []
            with client(a) as c:
                for i in range(3):
                    did = page.eval(
                        f"window.__explorer.map.regions.find(r => r.peer === {json.dumps(nodes[1].peer_id)}).dids[{i}]"
                    )
                    t = time.monotonic()
                    c.post("/api/mesh/move", json={"did": did, "to": nodes[2].peer_id})
                    page.wait_for(
                        f"window.__explorer.map.regions.find(r => r.peer === {json.dumps(nodes[2].peer_id)})"
                        f".dids.includes({json.dumps(did)})",
                        timeout=60,
                    )
                    moves.append((time.monotonic() - t) * 1000)

            # -- a burst of creations: does the page keep up without long frames? ---------
            page.eval(
                "(() => { window.__long = []; new PerformanceObserver(l => {"
                " for (const e of l.getEntries()) window.__long.push(e.duration); })"
                ".observe({type: 'longtask', buffered: false}); })()"
            )
            before = page.eval("window.__explorer.store.picos.size")
            burst = 200
            t = time.monotonic()

            async def burst_create() -> None:
                async with trio.open_nursery() as nursery:
                    for node in nodes:
                        nursery.start_soon(populate, node, burst // len(nodes))

            trio.run(burst_create)
            page.wait_for(f"window.__explorer.store.picos.size >= {before + burst}", timeout=60)
            burst_seconds = time.monotonic() - t
            long_tasks = page.eval("window.__long.slice()")

            # -- the same-run peer: one DOM element per pico -----------------------------------
            dom = page.eval(
                """(async () => {
                  const engines = new Map();
                  for (const p of window.__explorer.store.picos.values()) {
                    if (!engines.has(p.host)) engines.set(p.host, []);
                    engines.get(p.host).push(p);
                  }
                  const frame = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
                  const root = document.createElement('div');
                  root.style.cssText = 'position:fixed;inset:0;overflow:auto;background:#fff;z-index:99';
                  const t0 = performance.now();
                  let col = 0;
                  for (const [host, picos] of engines) {
                    const region = document.createElement('div');
                    region.style.cssText = `position:absolute;left:${col * 560}px;top:0;width:540px;border:1px solid #ccc`;
                    region.style.height = `${Math.ceil(picos.length / 4) * 42 + 50}px`;
                    region.textContent = host;
                    picos.forEach((p, i) => {
                      const box = document.createElement('div');
                      box.style.cssText = `position:absolute;left:${(i % 4) * 134 + 6}px;top:${Math.floor(i / 4) * 42 + 40}px;width:124px;height:32px;border:1px solid #789;font:12px sans-serif`;
                      box.textContent = (p.name || p.did.slice(-8)) + ' seq ' + p.seq;
                      region.appendChild(box);
                    });
                    root.appendChild(region);
                    col++;
                  }
                  document.body.appendChild(root);
                  root.offsetHeight;
                  await frame();
                  const first = performance.now() - t0;
                  const region = root.firstChild;
                  const t1 = performance.now();
                  const box = document.createElement('div');
                  box.style.cssText = 'position:absolute;left:6px;top:0;width:124px;height:32px';
                  box.textContent = 'new pico';
                  region.insertBefore(box, region.children[1]);
                  root.offsetHeight;
                  await frame();
                  const update = performance.now() - t1;
                  const elements = root.querySelectorAll('*').length;
                  root.remove();
                  return {first, update, elements};
                })()"""
            )
            version = page.version

        result = {
            "engines": len(nodes),
            "picos": total,
            "picos_in_first_render": picos_drawn_at_first,
            "snapshot_bytes": snapshot_bytes,
            "chromium": version,
            "first_render_ms": {
                "median": ms(statistics.median(loads)),
                "runs": [ms(x) for x in loads],
                "first_frame_median": ms(statistics.median(frames)),
            },
            "redraw_ms": {"fit_clusters": ms(draw_fit), "zoomed_boxes": ms(draw_zoomed)},
            "update_new_pico_ms": {
                "end_to_end_p50": ms(statistics.median(end_to_end)),
                "end_to_end_max": ms(max(end_to_end)),
                "in_page_p50": ms(statistics.median(in_page)) if in_page else None,
                "in_page_max": ms(max(in_page)) if in_page else None,
            },
            "move_seen_on_page_ms": {
                "p50": ms(statistics.median(moves)),
                "max": ms(max(moves)),
            },
            "burst": {
                "picos": burst,
                "seconds": round(burst_seconds, 2),
                "long_tasks": len(long_tasks),
                "longest_ms": ms(max(long_tasks)) if long_tasks else 0,
            },
            "peer_dom_per_pico": {
                "first_render_ms": ms(dom["first"]),
                "update_ms": ms(dom["update"]),
                "elements": dom["elements"],
            },
        }
    except BaseException:
        print(f"failed; the nodes' logs are in {base}", file=sys.stderr)
        for node in nodes:
            node.stop()
        raise
    for node in nodes:
        node.stop()
    shutil.rmtree(base, ignore_errors=True)

    print(json.dumps(result, indent=2))
    print()
    rows = [
        (
            "time to first render (median, from navigation)",
            result["first_render_ms"]["median"],
            None,
        ),
        (
            "render the snapshot from data (layout + draw)",
            result["first_render_ms"]["first_frame_median"],
            result["peer_dom_per_pico"]["first_render_ms"],
        ),
        (
            "apply one new pico, in the page",
            result["update_new_pico_ms"]["in_page_p50"],
            result["peer_dom_per_pico"]["update_ms"],
        ),
        (
            "new pico on engine E until drawn, end to end",
            result["update_new_pico_ms"]["end_to_end_p50"],
            None,
        ),
        ("move until drawn on the new engine", result["move_seen_on_page_ms"]["p50"], None),
        ("full redraw, fit (clusters)", result["redraw_ms"]["fit_clusters"], None),
        ("full redraw, zoomed in (boxes)", result["redraw_ms"]["zoomed_boxes"], None),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{result['picos']} picos on {result['engines']} engines; ms, p50")
    print(f"{'case':<{width}} {'explorer':>10} {'DOM/pico':>10}")
    for name, ours, peer in rows:
        print(
            f"{name:<{width}} {ours if ours is not None else '-':>10} {peer if peer is not None else '-':>10}"
        )
    b = result["burst"]
    print(
        f"burst of {b['picos']} creations in {b['seconds']} s: {b['long_tasks']} tasks over 50 ms"
        f" (longest {b['longest_ms']} ms)"
    )


if __name__ == "__main__":
    main()
