// The mesh as this page knows it: one snapshot from /api/mesh/events, then deltas.
// Views subscribe with store.listen(fn); fn(kind, data) runs after each change.

export const api = {
  async get(path) {
    const r = await fetch(path);
    return answer(r);
  },
  async send(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return answer(r);
  },
};

async function answer(r) {
  const text = await r.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch { value = { error: text }; }
  if (!r.ok || (value && typeof value === "object" && !Array.isArray(value) && "error" in value && r.status >= 400)) {
    const err = new Error((value && value.error) || `HTTP ${r.status}`);
    err.status = r.status;
    err.body = value;
    throw err;
  }
  return value;
}

export class MeshStore {
  constructor() {
    this.self = null;
    this.engines = new Map(); // peer -> {peer, self, addrs, connected, reachable, error, http}
    this.picos = new Map(); // did -> {did, host, seq, rids, name, parent, children, subs, partial}
    this.moves = new Map(); // move id -> latest progress
    this.listeners = new Set();
    this.connected = false;
    this.version = 0; // bumped on every change (views redraw when it moves)
    this.stats = { snapshotAt: null, events: 0, lastApplyStart: null };
  }

  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(kind, data) {
    this.version += 1;
    for (const fn of this.listeners) fn(kind, data);
  }

  connect() {
    const source = new EventSource("/api/mesh/events");
    this.source = source;
    const on = (kind, fn) => source.addEventListener(kind, (e) => {
      this.stats.lastApplyStart = performance.now();
      this.stats.events += 1;
      const data = JSON.parse(e.data);
      fn(data);
      this.emit(kind, data);
    });
    on("mesh", (m) => this.loadSnapshot(m));
    on("pico", (p) => this.upsert(p));
    on("gone", (g) => this.gone(g));
    on("record", (r) => this.record(r));
    on("engine", (e) => this.engines.set(e.peer, { ...this.engines.get(e.peer), ...e }));
    on("move", (m) => this.moves.set(m.id, m));
    source.onopen = () => { this.connected = true; this.emit("connection", true); };
    source.onerror = () => { this.connected = false; this.emit("connection", false); };
  }

  loadSnapshot(m) {
    this.self = m.self;
    this.engines = new Map(m.engines.map((e) => [e.peer, e]));
    this.picos = new Map(m.picos.map((p) => [p.did, p]));
    this.stats.snapshotAt = performance.now();
  }

  upsert(p) {
    this.picos.set(p.did, p); // a full summary from its host replaces what we had
    if (!this.engines.has(p.host)) this.engines.set(p.host, { peer: p.host, reachable: true });
  }

  gone(g) {
    const p = this.picos.get(g.did);
    if (!p) return;
    if (g.deleted) this.picos.delete(g.did);
    else if (p.host === g.host) p.moving = true; // left its host; the new one reports it
  }

  record(r) {
    const p = this.picos.get(r.did);
    if (p) {
      p.host = r.host;
      p.moving = false;
    } else {
      this.picos.set(r.did, { did: r.did, host: r.host, partial: true });
    }
    if (!this.engines.has(r.host)) this.engines.set(r.host, { peer: r.host });
  }

  // Every pico that lists `did` among its subscriptions' Tx, by Rx channel owner.
  subscriptionEdges() {
    const owner = new Map();
    for (const p of this.picos.values()) for (const [rx] of p.subs || []) owner.set(rx, p.did);
    const edges = [];
    const seen = new Set();
    for (const p of this.picos.values()) {
      for (const [, tx] of p.subs || []) {
        const other = owner.get(tx);
        if (!other) continue;
        const key = p.did < other ? `${p.did} ${other}` : `${other} ${p.did}`;
        if (seen.has(key)) continue;
        seen.add(key);
        edges.push([p.did, other]);
      }
    }
    return edges;
  }
}

export const store = new MeshStore();

export function shortId(id, n = 6) {
  if (!id) return "";
  return id.length > n + 1 ? "…" + id.slice(-n) : id;
}

export function picoLabel(p) {
  return p.name || shortId(p.did, 8);
}
