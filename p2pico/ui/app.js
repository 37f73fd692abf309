// The mesh explorer: the map on the left, the selected pico's page on the right.
// Routes live in the URL hash: #/pico/<did>/<tab>.

import { h, render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";
import { picoLabel, shortId, store } from "./store.js";
import { MeshMap } from "./map.js";
import { PicoPage } from "./pico.js";
import { navigate, parseHash, requestMove } from "./actions.js";

const html = htm.bind(h);
window.__explorer = { store, map: null, metrics: null };

function useStore() {
  const [, setVersion] = useState(0);
  useEffect(() => store.listen(() => setVersion(store.version)), []);
  return store;
}

function MapView({ selected }) {
  const holder = useRef(null);
  const [confirm, setConfirm] = useState(null);
  useEffect(() => {
    const map = new MeshMap(holder.current.querySelector("canvas"), store, {
      onSelect: (did) => navigate(did, parseHash().tab),
      onMove: (did, to) => setConfirm({ did, to }),
      onMetrics: (m) => { window.__explorer.metrics = m; },
    });
    window.__explorer.map = map;
    const off = store.listen((kind) => {
      if (kind === "connection" || kind === "move") return;
      map.invalidate();
    });
    return off;
  }, []);
  useEffect(() => {
    const map = window.__explorer.map;
    if (map) map.select(selected);
  }, [selected]);
  const map = window.__explorer.map;
  return html`
    <div class="map" ref=${holder}>
      <canvas aria-label="mesh map" data-testid="map"></canvas>
      <div class="map-tools">
        <button title="zoom in" onClick=${() => map && map.zoom(1.4)}>+</button>
        <button title="zoom out" onClick=${() => map && map.zoom(1 / 1.4)}>−</button>
        <button title="fit the whole mesh" onClick=${() => map && map.fit()}>fit</button>
      </div>
      <div class="legend">
        <span><i class="l-family"></i>parent → child</span>
        <span><i class="l-sub"></i>subscription</span>
        <span>drag a pico onto another engine to move it</span>
      </div>
      ${confirm && html`
        <div class="confirm" role="dialog" data-testid="move-confirm">
          <p>Move <b>${picoLabel(store.picos.get(confirm.did) || confirm)}</b> to engine <b>${shortId(confirm.to, 10)}</b>?</p>
          <button class="primary" data-testid="move-confirm-yes" onClick=${() => { requestMove(confirm.did, confirm.to); setConfirm(null); }}>Move</button>
          <button onClick=${() => setConfirm(null)}>Cancel</button>
        </div>`}
    </div>`;
}

function Search() {
  const [q, setQ] = useState("");
  const s = useStore();
  const results = useMemo(() => {
    const needle = q.trim().toLowerCase();
    if (!needle) return [];
    const out = [];
    for (const p of s.picos.values()) {
      const hay = `${p.did} ${p.name || ""} ${(p.rids || []).join(" ")} ${p.host}`.toLowerCase();
      if (hay.includes(needle)) out.push(p);
    }
    return out;
  }, [q, s.version]);
  useEffect(() => {
    const map = window.__explorer.map;
    if (map) map.setMatches(results.map((p) => p.did));
  }, [results]);
  const go = (p) => { window.__explorer.map.focus(p.did, 0.8); navigate(p.did); };
  return html`
    <div class="search">
      <input type="search" placeholder="Search DID, name, ruleset, engine…" value=${q}
        data-testid="search" onInput=${(e) => setQ(e.target.value)}
        onKeyDown=${(e) => { if (e.key === "Enter" && results[0]) go(results[0]); }} />
      ${q && html`<div class="results" data-testid="search-results">
        <div class="muted">${results.length} match${results.length === 1 ? "" : "es"}</div>
        ${results.slice(0, 50).map((p) => html`
          <button class="result" key=${p.did} onClick=${() => go(p)} data-did=${p.did}>
            <b>${picoLabel(p)}</b> <span class="muted">on ${shortId(p.host, 6)}</span>
          </button>`)}
      </div>`}
    </div>`;
}

function Moves() {
  const s = useStore();
  const moves = [...s.moves.values()].slice(-4);
  if (!moves.length) return null;
  return html`<div class="moves">${moves.map((m) => html`
    <div class=${`move stage-${m.stage}`} key=${m.id} data-testid="move-progress" data-stage=${m.stage}>
      <b>Move ${picoLabel(s.picos.get(m.did) || m)}</b> → ${shortId(m.to, 6)}:
      <span class="steps">
        ${["asked", "committed", "serving"].map((st) => html`<span class=${stageDone(m.stage, st) ? "done" : ""}>${st}</span>`)}
      </span>
      ${m.stage === "failed" ? html`<div class="error">${m.error}</div>` : html` <span class="muted">${m.ms} ms</span>`}
    </div>`)}</div>`;
}

function stageDone(stage, step) {
  const order = ["requested", "asked", "committed", "committed-unconfirmed", "serving"];
  return order.indexOf(stage) >= order.indexOf(step);
}

function App() {
  const s = useStore();
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const on = () => setRoute(parseHash());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const engines = [...s.engines.values()];
  return html`
    <header>
      <h1>p2pico <span>mesh explorer</span></h1>
      <${Search} />
      <div class="stats" data-testid="stats">
        <span class=${s.connected ? "live" : "offline"}>${s.connected ? "live" : "offline"}</span>
        <span data-testid="engine-count">${engines.length} engines</span>
        <span data-testid="pico-count">${s.picos.size} picos</span>
        <span class="muted" title=${s.self || ""}>this node ${shortId(s.self, 8)}</span>
      </div>
    </header>
    <main class=${route.did ? "with-page" : ""}>
      <${MapView} selected=${route.did} />
      ${route.did && html`<${PicoPage} key=${route.did} did=${route.did} tab=${route.tab} store=${s} />`}
    </main>
    <${Moves} />`;
}

store.connect();
const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
