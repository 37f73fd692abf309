// The mesh map: engines as regions, picos as boxes inside their host, parent/child lines
// and dashed subscription lines, drawn on one canvas so thousands of picos stay fluid.
//
// Zoom decides the detail (semantic zoom): labelled boxes when a box is wide enough to
// read, plain boxes below that, and when a box would be smaller than a few pixels each
// engine's picos are drawn as clusters (one shaded tile per block of picos, with counts).
// Lines are drawn when the boxes are large enough to tell them apart, and always for the
// selected pico.  Picos of one family are laid out next to each other.

import { picoLabel, shortId } from "./store.js";

const CELL_W = 136, CELL_H = 42, BOX_W = 124, BOX_H = 32;
const PAD = 20, HEADER = 50, GAP = 70, MIN_W = 300, MIN_H = 150;
const COLORS = {
  region: "#f5f7fa", regionSelf: "#eef6ff", regionStroke: "#c5ced8", regionDrop: "#d8f0dd",
  regionDown: "#fbeaea", box: "#ffffff", boxStroke: "#7d8b99", text: "#1f2933", muted: "#6b7785",
  family: "#8896a5", sub: "#8e44ad", match: "#f39c12", selected: "#1c6ed5", partial: "#e4e7eb",
  cluster: "28, 110, 213",
};

export class MeshMap {
  constructor(canvas, store, { onSelect, onMove, onMetrics }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.store = store;
    this.onSelect = onSelect;
    this.onMove = onMove;
    this.onMetrics = onMetrics || (() => {});
    this.view = { s: 1, x: 0, y: 0 };
    this.regions = []; // {peer, x, y, w, h, cols, dids}
    this.pos = new Map(); // did -> {x, y, region}
    this.matches = new Set();
    this.selected = null;
    this.hover = null;
    this.drag = null;
    this.dirtyLayout = true;
    this.fitted = false;
    this.frame = 0;
    this.metrics = { layoutMs: 0, drawMs: 0, firstRenderMs: null, applyMs: [], picosDrawn: 0 };
    this._bind();
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
    this.resize();
  }

  // -- layout -----------------------------------------------------------------------

  invalidate() {
    this.dirtyLayout = true;
    this.request();
  }

  layout() {
    const t0 = performance.now();
    const byHost = new Map();
    const peers = [...this.store.engines.keys()].sort((a, b) =>
      (b === this.store.self) - (a === this.store.self) || (a < b ? -1 : a > b ? 1 : 0));
    for (const peer of peers) byHost.set(peer, []);
    for (const p of this.store.picos.values()) {
      if (!byHost.has(p.host)) byHost.set(p.host, []);
      byHost.get(p.host).push(p);
    }
    const regions = [];
    for (const [peer, picos] of byHost) {
      const dids = familyOrder(picos);
      const n = dids.length;
      const cols = Math.max(2, Math.ceil(Math.sqrt((n * CELL_H) / CELL_W) * 1.2));
      const rows = Math.max(1, Math.ceil(n / cols));
      regions.push({
        peer, dids, cols,
        w: Math.max(MIN_W, cols * CELL_W + 2 * PAD),
        h: Math.max(MIN_H, HEADER + rows * CELL_H + 2 * PAD),
      });
    }
    const ecols = regions.length <= 4 ? regions.length : Math.ceil(Math.sqrt(regions.length));
    let y = 0;
    for (let i = 0; i < regions.length; i += ecols) {
      const row = regions.slice(i, i + ecols);
      const rowH = Math.max(...row.map((r) => r.h));
      let x = 0;
      for (const r of row) {
        r.x = x; r.y = y; r.h = rowH;
        x += r.w + GAP;
      }
      y += rowH + GAP;
    }
    const pos = new Map();
    for (const r of regions) {
      r.dids.forEach((did, i) => {
        const col = i % r.cols, row = Math.floor(i / r.cols);
        pos.set(did, { x: r.x + PAD + col * CELL_W, y: r.y + HEADER + PAD + row * CELL_H, region: r });
      });
    }
    this.regions = regions;
    this.pos = pos;
    this.dirtyLayout = false;
    this.metrics.layoutMs = performance.now() - t0;
    if ((!this.fitted || !this.userMoved) && regions.length) {
      this.fit();
      this.fitted = true;
    }
  }

  bounds() {
    let w = 0, h = 0;
    for (const r of this.regions) { w = Math.max(w, r.x + r.w); h = Math.max(h, r.y + r.h); }
    return { w, h };
  }

  fit() {
    this.userMoved = false;
    const { w, h } = this.bounds();
    if (!w || !h) return;
    const s = Math.min(this.cssW / (w + 40), this.cssH / (h + 40), 1.5);
    this.view = { s, x: (this.cssW - w * s) / 2, y: Math.max(10, (this.cssH - h * s) / 2) };
    this.request();
  }

  focus(did, scale = 1) {
    if (this.dirtyLayout) this.layout();
    const p = this.pos.get(did);
    if (!p) return;
    const s = Math.max(this.view.s, scale);
    this.userMoved = true;
    this.view = { s, x: this.cssW / 2 - (p.x + BOX_W / 2) * s, y: this.cssH / 2 - (p.y + BOX_H / 2) * s };
    this.request();
  }

  zoom(factor, cx = this.cssW / 2, cy = this.cssH / 2) {
    this.userMoved = true;
    const s = Math.min(4, Math.max(0.01, this.view.s * factor));
    const k = s / this.view.s;
    this.view = { s, x: cx - (cx - this.view.x) * k, y: cy - (cy - this.view.y) * k };
    this.request();
  }

  // -- drawing ----------------------------------------------------------------------

  resize() {
    const box = this.canvas.parentElement.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.cssW = Math.max(100, box.width);
    this.cssH = Math.max(100, box.height);
    this.canvas.width = Math.round(this.cssW * dpr);
    this.canvas.height = Math.round(this.cssH * dpr);
    this.canvas.style.width = `${this.cssW}px`;
    this.canvas.style.height = `${this.cssH}px`;
    this.dpr = dpr;
    if (!this.fitted) this.dirtyLayout = true;
    else if (!this.userMoved) this.fit(); // keep the whole mesh in view until the user pans or zooms
    this.request();
  }

  request() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    const t0 = performance.now();
    if (this.dirtyLayout) this.layout();
    const { ctx, view } = this;
    const s = view.s;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, this.cssW, this.cssH);
    ctx.setTransform(this.dpr * s, 0, 0, this.dpr * s, this.dpr * view.x, this.dpr * view.y);
    const vx0 = -view.x / s, vy0 = -view.y / s, vx1 = vx0 + this.cssW / s, vy1 = vy0 + this.cssH / s;
    const visible = (x, y, w, h) => x + w >= vx0 && x <= vx1 && y + h >= vy0 && y <= vy1;
    const cellPx = CELL_W * s;
    const dropPeer = this.drag && this.drag.active ? this.regionAt(this.drag.x, this.drag.y)?.peer : null;

    for (const r of this.regions) {
      if (!visible(r.x, r.y, r.w, r.h)) continue;
      const engine = this.store.engines.get(r.peer) || {};
      ctx.fillStyle = r.peer === dropPeer && dropPeer !== this.drag.host ? COLORS.regionDrop
        : engine.reachable === false ? COLORS.regionDown
        : r.peer === this.store.self ? COLORS.regionSelf : COLORS.region;
      ctx.strokeStyle = COLORS.regionStroke;
      ctx.lineWidth = 1.5 / s;
      roundRect(ctx, r.x, r.y, r.w, r.h, 12);
      ctx.fill();
      ctx.stroke();
      const title = `engine ${shortId(r.peer, 8)}`;
      const count = `${r.dids.length} pico${r.dids.length === 1 ? "" : "s"}`
        + (r.peer === this.store.self ? " · this node" : "")
        + (engine.reachable === false ? " · unreachable" : "");
      if (cellPx >= 25) {
        ctx.fillStyle = COLORS.text;
        ctx.font = "600 15px system-ui, sans-serif";
        ctx.fillText(title, r.x + PAD, r.y + 24);
        ctx.fillStyle = engine.reachable === false ? "#b3261e" : COLORS.muted;
        ctx.font = "13px system-ui, sans-serif";
        ctx.fillText(count, r.x + PAD, r.y + 42);
      }
    }

    let drawn = 0;
    if (cellPx >= 6) {
      const showText = cellPx >= 60;
      ctx.font = "12px system-ui, sans-serif";
      for (const r of this.regions) {
        if (!visible(r.x, r.y, r.w, r.h)) continue;
        for (const did of r.dids) {
          const p = this.pos.get(did);
          if (!visible(p.x, p.y, BOX_W, BOX_H)) continue;
          const pico = this.store.picos.get(did);
          if (this.drag && this.drag.active && this.drag.did === did) ctx.globalAlpha = 0.35;
          ctx.fillStyle = pico.partial ? COLORS.partial : COLORS.box;
          ctx.strokeStyle = COLORS.boxStroke;
          ctx.lineWidth = 1 / s;
          if (pico.moving) ctx.setLineDash([4 / s, 3 / s]);
          roundRect(ctx, p.x, p.y, BOX_W, BOX_H, 5);
          ctx.fill();
          ctx.stroke();
          ctx.setLineDash([]);
          if (showText) {
            ctx.fillStyle = COLORS.text;
            ctx.fillText(clip(picoLabel(pico), 15), p.x + 7, p.y + 14);
            ctx.fillStyle = COLORS.muted;
            const meta = pico.partial ? "record only" : `seq ${pico.seq} · ${(pico.rids || []).length} rs`;
            ctx.fillText(meta, p.x + 7, p.y + 27);
          }
          ctx.globalAlpha = 1;
          drawn++;
        }
      }
    } else {
      this.drawClusters(cellPx, visible);
    }
    this.drawLines(cellPx, visible);
    this.drawMarks(cellPx);
    if (this.drag && this.drag.active) this.drawGhost();
    if (this.hover && !this.drag) this.drawTooltip();
    this.metrics.picosDrawn = drawn;
    this.metrics.drawMs = performance.now() - t0;
    const now = performance.now();
    if (this.metrics.firstRenderMs === null && this.store.stats.snapshotAt !== null) {
      this.metrics.firstRenderMs = now; // since navigation start
      this.metrics.snapshotPicos = this.store.picos.size;
      this.metrics.firstFrameMs = { layout: this.metrics.layoutMs, draw: now - t0 };
    }
    if (this.store.stats.lastApplyStart !== null) {
      this.metrics.applyMs.push(now - this.store.stats.lastApplyStart);
      if (this.metrics.applyMs.length > 500) this.metrics.applyMs.shift();
      this.store.stats.lastApplyStart = null;
    }
    this.onMetrics(this.metrics);
  }

  drawClusters(cellPx, visible) {
    const { ctx } = this;
    const s = this.view.s;
    const block = Math.max(2, Math.ceil(6 / cellPx)); // cells per tile side
    for (const r of this.regions) {
      if (!visible(r.x, r.y, r.w, r.h)) continue;
      const tiles = new Map();
      r.dids.forEach((did, i) => {
        const col = Math.floor((i % r.cols) / block), row = Math.floor(Math.floor(i / r.cols) / block);
        const key = row * 100000 + col;
        tiles.set(key, (tiles.get(key) || 0) + 1);
      });
      const full = block * block;
      for (const [key, n] of tiles) {
        const row = Math.floor(key / 100000), col = key % 100000;
        ctx.fillStyle = `rgba(${COLORS.cluster}, ${0.25 + 0.6 * (n / full)})`;
        ctx.fillRect(r.x + PAD + col * block * CELL_W, r.y + HEADER + PAD + row * block * CELL_H,
          block * CELL_W - 8 / s, block * CELL_H - 8 / s);
      }
      ctx.fillStyle = COLORS.text;
      ctx.font = `600 ${14 / s}px system-ui, sans-serif`;
      ctx.fillText(`${shortId(r.peer, 6)} · ${r.dids.length}`, r.x + 4 / s, r.y - 6 / s);
    }
  }

  drawLines(cellPx, visible) {
    const { ctx } = this;
    const s = this.view.s;
    const lines = [];
    const all = cellPx >= 20;
    const sel = this.selected || (this.hover && this.hover.did);
    for (const p of this.store.picos.values()) {
      if (p.parent && (all || p.did === sel || p.parent === sel)) lines.push([p.parent, p.did, false]);
    }
    for (const [a, b] of this.subEdges()) {
      if (all || a === sel || b === sel) lines.push([a, b, true]);
    }
    ctx.lineWidth = Math.max(1.2 / s, 1);
    for (const [a, b, dashed] of lines) {
      const pa = this.pos.get(a), pb = this.pos.get(b);
      if (!pa || !pb) continue;
      const ax = pa.x + BOX_W / 2, ay = pa.y + BOX_H / 2, bx = pb.x + BOX_W / 2, by = pb.y + BOX_H / 2;
      if (!visible(Math.min(ax, bx), Math.min(ay, by), Math.abs(ax - bx) + 1, Math.abs(ay - by) + 1)) continue;
      // From edge to edge of the two boxes, with an arrowhead at the child.
      const dx = bx - ax, dy = by - ay;
      const edge = (sign) => Math.min(Math.abs((BOX_W / 2 + 2) / (dx || 1e-9)), Math.abs((BOX_H / 2 + 2) / (dy || 1e-9))) * sign;
      const t0 = edge(1), t1 = 1 - edge(1);
      if (t1 <= t0) continue;
      const x0 = ax + dx * t0, y0 = ay + dy * t0, x1 = ax + dx * t1, y1 = ay + dy * t1;
      ctx.strokeStyle = ctx.fillStyle = dashed ? COLORS.sub : COLORS.family;
      ctx.setLineDash(dashed ? [6 / s, 4 / s] : []);
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(x1, y1);
      ctx.stroke();
      if (!dashed) {
        const len = Math.hypot(dx, dy), ux = dx / len, uy = dy / len, k = Math.max(7, 7 / s);
        ctx.setLineDash([]);
        ctx.beginPath();
        ctx.moveTo(x1, y1);
        ctx.lineTo(x1 - ux * k - uy * k * 0.5, y1 - uy * k + ux * k * 0.5);
        ctx.lineTo(x1 - ux * k + uy * k * 0.5, y1 - uy * k - ux * k * 0.5);
        ctx.fill();
      }
    }
    ctx.setLineDash([]);
  }

  subEdges() {
    if (this._subVersion !== this.store.version) {
      this._subEdges = this.store.subscriptionEdges();
      this._subVersion = this.store.version;
    }
    return this._subEdges;
  }

  drawMarks(cellPx) {
    const { ctx } = this;
    const s = this.view.s;
    const mark = (did, color, width) => {
      const p = this.pos.get(did);
      if (!p) return;
      ctx.strokeStyle = color;
      ctx.lineWidth = width / s;
      if (cellPx < 6) {
        ctx.beginPath();
        ctx.arc(p.x + BOX_W / 2, p.y + BOX_H / 2, 5 / s, 0, 2 * Math.PI);
        ctx.stroke();
      } else {
        roundRect(ctx, p.x - 3 / s, p.y - 3 / s, BOX_W + 6 / s, BOX_H + 6 / s, 7);
        ctx.stroke();
      }
    };
    for (const did of this.matches) mark(did, COLORS.match, 2.5);
    if (this.selected) mark(this.selected, COLORS.selected, 3);
  }

  drawGhost() {
    const { ctx, drag } = this;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const w = BOX_W * Math.max(0.6, Math.min(1, this.view.s)), h = BOX_H * Math.max(0.6, Math.min(1, this.view.s));
    ctx.globalAlpha = 0.9;
    ctx.fillStyle = "#fff";
    ctx.strokeStyle = COLORS.selected;
    ctx.lineWidth = 2;
    roundRect(ctx, drag.x - w / 2, drag.y - h / 2, w, h, 5);
    ctx.fill();
    ctx.stroke();
    ctx.fillStyle = COLORS.text;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(clip(picoLabel(this.store.picos.get(drag.did) || { did: drag.did }), 14), drag.x - w / 2 + 6, drag.y + 4);
    ctx.globalAlpha = 1;
  }

  drawTooltip() {
    const pico = this.store.picos.get(this.hover.did);
    if (!pico) return;
    const { ctx } = this;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const lines = [pico.name || "", pico.did, `host ${shortId(pico.host, 10)}${pico.partial ? " · record only" : ` · seq ${pico.seq}`}`].filter(Boolean);
    ctx.font = "12px ui-monospace, monospace";
    const w = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 16;
    const h = lines.length * 16 + 10;
    const x = Math.min(this.hover.x + 14, this.cssW - w - 4), y = Math.min(this.hover.y + 14, this.cssH - h - 4);
    ctx.fillStyle = "rgba(31,41,51,0.92)";
    roundRect(ctx, x, y, w, h, 6);
    ctx.fill();
    ctx.fillStyle = "#fff";
    lines.forEach((l, i) => ctx.fillText(l, x + 8, y + 18 + i * 16));
  }

  // -- hit testing and input ----------------------------------------------------------

  toWorld(x, y) {
    return { x: (x - this.view.x) / this.view.s, y: (y - this.view.y) / this.view.s };
  }

  regionAt(x, y) {
    const w = this.toWorld(x, y);
    return this.regions.find((r) => w.x >= r.x && w.x <= r.x + r.w && w.y >= r.y && w.y <= r.y + r.h) || null;
  }

  picoAt(x, y) {
    const r = this.regionAt(x, y);
    if (!r) return null;
    const w = this.toWorld(x, y);
    const lx = w.x - r.x - PAD, ly = w.y - r.y - HEADER - PAD;
    if (lx < 0 || ly < 0) return null;
    const col = Math.floor(lx / CELL_W), row = Math.floor(ly / CELL_H);
    if (col >= r.cols) return null;
    const slack = this.view.s * CELL_W < 6 ? CELL_W : BOX_W; // clusters: the whole cell
    if (lx - col * CELL_W > slack || ly - row * CELL_H > (slack === CELL_W ? CELL_H : BOX_H)) return null;
    return r.dids[row * r.cols + col] || null;
  }

  /** Where a pico's box is, in CSS pixels of the page (for tests and tooltips). */
  boxOf(did) {
    if (this.dirtyLayout) this.layout();
    const p = this.pos.get(did);
    if (!p) return null;
    const rect = this.canvas.getBoundingClientRect();
    const s = this.view.s;
    return {
      x: rect.left + this.view.x + p.x * s, y: rect.top + this.view.y + p.y * s,
      w: BOX_W * s, h: BOX_H * s,
      cx: rect.left + this.view.x + (p.x + BOX_W / 2) * s, cy: rect.top + this.view.y + (p.y + BOX_H / 2) * s,
    };
  }

  /** The centre of an engine's region, in CSS pixels of the page. */
  regionCenter(peer) {
    if (this.dirtyLayout) this.layout();
    const r = this.regions.find((x) => x.peer === peer);
    if (!r) return null;
    const rect = this.canvas.getBoundingClientRect();
    const s = this.view.s;
    return { x: rect.left + this.view.x + (r.x + r.w / 2) * s, y: rect.top + this.view.y + (r.y + r.h - PAD) * s - 4 };
  }

  _bind() {
    const c = this.canvas;
    const local = (e) => {
      const rect = c.getBoundingClientRect();
      return { x: e.clientX - rect.left, y: e.clientY - rect.top };
    };
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const { x, y } = local(e);
      this.zoom(Math.pow(1.0015, -e.deltaY), x, y);
    }, { passive: false });
    c.addEventListener("pointerdown", (e) => {
      const { x, y } = local(e);
      const did = this.picoAt(x, y);
      c.setPointerCapture(e.pointerId);
      const pico = did && this.store.picos.get(did);
      this.drag = did
        ? { kind: "pico", did, host: pico.host, x0: x, y0: y, x, y, active: false }
        : { kind: "pan", x0: x, y0: y, vx: this.view.x, vy: this.view.y, x, y, active: false };
    });
    c.addEventListener("pointermove", (e) => {
      const { x, y } = local(e);
      if (!this.drag) {
        const did = this.picoAt(x, y);
        const was = this.hover && this.hover.did;
        this.hover = did ? { did, x, y } : null;
        c.style.cursor = did ? "pointer" : "grab";
        if (did || was) this.request();
        return;
      }
      const d = this.drag;
      d.x = x; d.y = y;
      if (!d.active && Math.hypot(x - d.x0, y - d.y0) > 5) d.active = true;
      if (!d.active) return;
      if (d.kind === "pan") {
        this.userMoved = true;
        this.view = { ...this.view, x: d.vx + x - d.x0, y: d.vy + y - d.y0 };
        c.style.cursor = "grabbing";
      }
      this.request();
    });
    c.addEventListener("pointerup", (e) => {
      const d = this.drag;
      this.drag = null;
      if (!d) return;
      const { x, y } = local(e);
      if (d.kind === "pico" && d.active) {
        const region = this.regionAt(x, y);
        if (region && region.peer !== d.host) this.onMove(d.did, region.peer);
      } else if (!d.active) {
        const did = this.picoAt(x, y);
        if (did) this.onSelect(did);
      }
      this.request();
    });
    c.addEventListener("pointerleave", () => {
      if (this.hover) { this.hover = null; this.request(); }
    });
  }

  setMatches(dids) {
    this.matches = new Set(dids);
    this.request();
  }

  select(did) {
    this.selected = did;
    this.request();
  }
}

// Roots first (a pico whose parent is not on the same engine is a root here), each
// followed by its descendants, so a family sits together.
function familyOrder(picos) {
  const here = new Map(picos.map((p) => [p.did, p]));
  const kids = new Map();
  const roots = [];
  for (const p of picos) {
    if (p.parent && here.has(p.parent)) {
      if (!kids.has(p.parent)) kids.set(p.parent, []);
      kids.get(p.parent).push(p.did);
    } else roots.push(p.did);
  }
  roots.sort();
  const out = [];
  const seen = new Set();
  const stack = roots.reverse();
  while (stack.length) {
    const did = stack.pop();
    if (seen.has(did)) continue;
    seen.add(did);
    out.push(did);
    const k = (kids.get(did) || []).slice().sort().reverse();
    stack.push(...k);
  }
  for (const p of picos) if (!seen.has(p.did)) out.push(p.did); // a cycle: should not happen
  return out;
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.roundRect(x, y, w, h, r);
}

function clip(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}
