// The pico page: everything about one pico, fetched from its host through this node.

import { h } from "preact";
import { useEffect, useState } from "preact/hooks";
import htm from "htm";
import { api, picoLabel, shortId } from "./store.js";
import { navigate, requestMove } from "./actions.js";
import { KrlEditor } from "./editor.js";

const html = htm.bind(h);
const TABS = ["about", "rulesets", "channels", "subscriptions", "entities", "history", "log", "testing"];

export function PicoPage({ did, tab, store }) {
  const [about, setAbout] = useState(null);
  const [error, setError] = useState(null);
  const [reload, setReload] = useState(0);
  const summary = store.picos.get(did);
  const seq = summary && summary.seq;
  const host = summary && summary.host;
  useEffect(() => {
    let live = true;
    api.get(`/api/picos/${encodeURIComponent(did)}/about`)
      .then((a) => { if (live) { setAbout(a); setError(null); } })
      .catch((e) => { if (live) setError(e.message); });
    return () => { live = false; };
  }, [did, seq, host, reload]);
  const refresh = () => setReload((n) => n + 1);
  return html`
    <section class="page" data-testid="pico-page" data-did=${did}>
      <div class="page-head">
        <h2 title=${did}>${picoLabel(summary || { did })}</h2>
        <button class="close" title="close" onClick=${() => navigate(null)}>×</button>
      </div>
      <nav class="tabs">${TABS.map((t) => html`
        <a href=${`#/pico/${encodeURIComponent(did)}/${t}`} class=${t === tab ? "on" : ""} data-tab=${t}>${t}</a>`)}
      </nav>
      ${error && html`<div class="error" data-testid="page-error">${error}</div>`}
      ${!about && !error && html`<p class="muted">Asking the pico's host…</p>`}
      ${about && html`<div class="tab-body" data-testid=${`tab-${tab}`}>
        ${tab === "about" && html`<${About} a=${about} store=${store} refresh=${refresh} />`}
        ${tab === "rulesets" && html`<${Rulesets} a=${about} refresh=${refresh} />`}
        ${tab === "channels" && html`<${Channels} a=${about} />`}
        ${tab === "subscriptions" && html`<${Subscriptions} a=${about} />`}
        ${tab === "entities" && html`<${Entities} a=${about} />`}
        ${tab === "history" && html`<${History} did=${did} seq=${about.seq} />`}
        ${tab === "log" && html`<${Log} a=${about} refresh=${refresh} />`}
        ${tab === "testing" && html`<${Testing} a=${about} refresh=${refresh} />`}
      </div>`}
    </section>`;
}

function PicoLink({ did, store }) {
  const p = store && store.picos.get(did);
  return html`<a href=${`#/pico/${encodeURIComponent(did)}/about`} title=${did}>${p ? picoLabel(p) : shortId(did, 10)}</a>`;
}

function Field({ label, children }) {
  return html`<div class="field"><span class="label">${label}</span><span class="value">${children}</span></div>`;
}

function About({ a, store, refresh }) {
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState(null);
  const [to, setTo] = useState("");
  const engines = [...store.engines.keys()].filter((p) => p !== a.host);
  const newChild = async () => {
    setBusy(true);
    setMsg(null);
    try {
      const child = await api.send("POST", `/api/picos/${encodeURIComponent(a.did)}/children`, { rulesets: [] });
      setMsg({ ok: `created child ${shortId(child.did, 10)}`, did: child.did });
      refresh();
    } catch (e) {
      setMsg({ error: e.message });
    } finally {
      setBusy(false);
    }
  };
  const delChild = async (kid) => {
    try {
      await api.send("DELETE", `/api/picos/${encodeURIComponent(a.did)}/children/${encodeURIComponent(kid)}`);
      refresh();
    } catch (e) {
      setMsg({ error: e.message });
    }
  };
  const chosen = engines.includes(to) ? to : engines[0] || "";
  const move = async () => {
    const target = chosen;
    if (!target) return;
    try {
      await requestMove(a.did, target);
    } catch (e) {
      setMsg({ error: e.message });
    }
  };
  return html`
    <${Field} label="DID"><code data-testid="about-did">${a.did}</code></${Field}>
    <${Field} label="host engine"><code data-testid="about-host">${a.host}</code></${Field}>
    <${Field} label="channel"><code>${a.eci || "—"}</code></${Field}>
    <${Field} label="head"><code data-testid="about-head">${a.head}</code></${Field}>
    <${Field} label="seq"><span data-testid="about-seq">${a.seq}</span></${Field}>
    <${Field} label="location record">${a.record ? `seq ${a.record.seq}` : "—"}</${Field}>
    <${Field} label="parent">${a.parent ? html`<${PicoLink} did=${a.parent.did} store=${store} />` : "— (a root pico)"}</${Field}>
    <${Field} label="children">
      ${a.children.length === 0 ? "none" : html`<ul class="kids" data-testid="children">${a.children.map((k) => html`
        <li key=${k.did}><${PicoLink} did=${k.did} store=${store} />
          <button class="small" title="delete this child and its descendants" onClick=${() => delChild(k.did)}>delete</button></li>`)}</ul>`}
    </${Field}>
    <div class="actions">
      <button data-testid="new-child" disabled=${busy} onClick=${newChild}>New child pico</button>
      <span class="move-form">
        <select data-testid="move-to" value=${chosen} onChange=${(e) => setTo(e.target.value)}>
          ${engines.map((p) => html`<option value=${p}>${shortId(p, 10)}</option>`)}
        </select>
        <button data-testid="move" disabled=${!engines.length} onClick=${move}>Move to engine</button>
      </span>
    </div>
    ${msg && html`<div class=${msg.error ? "error" : "ok"} data-testid="about-msg">${msg.error || msg.ok}</div>`}`;
}

function Rulesets({ a, refresh }) {
  const [mode, setMode] = useState("editor");
  const [source, setSource] = useState(DEFAULT_KRL);
  const [url, setUrl] = useState("");
  const [result, setResult] = useState(null);
  const [shown, setShown] = useState(null);
  const install = async (body) => {
    setResult(null);
    try {
      const r = await api.send("POST", `/api/picos/${encodeURIComponent(a.did)}/rulesets`, body);
      setResult({ ok: `installed ${r.rid}` });
      refresh();
    } catch (e) {
      const b = e.body || {};
      setResult({ error: b.detail || e.message, line: b.line, column: b.column, full: e.message });
    }
  };
  const check = async () => {
    setResult(null);
    try {
      const r = await api.send("POST", "/api/krl/check", { source });
      setResult({ ok: `compiles: ruleset ${r.rid}` });
    } catch (e) {
      const b = e.body || {};
      setResult({ error: b.detail || e.message, line: b.line, column: b.column, full: e.message });
    }
  };
  const onFile = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const text = await file.text();
    setSource(text);
    setMode("editor"); // an error is then shown at its line in the editor
    await install({ source: text });
  };
  const uninstall = async (rid) => {
    try {
      await api.send("DELETE", `/api/picos/${encodeURIComponent(a.did)}/rulesets/${encodeURIComponent(rid)}`);
      refresh();
    } catch (e) {
      setResult({ error: e.message });
    }
  };
  return html`
    <table class="grid" data-testid="rulesets">
      <thead><tr><th>rid</th><th>from</th><th>hash</th><th></th></tr></thead>
      <tbody>${a.rulesets.map((r) => html`
        <tr key=${r.rid} data-rid=${r.rid}>
          <td><b>${r.rid}</b>${r.meta.krlMeta && r.meta.krlMeta.name ? html` <span class="muted">${r.meta.krlMeta.name}</span>` : ""}</td>
          <td class="muted">${r.url || "source"}</td>
          <td><code>${r.meta.hash.slice(0, 10)}</code></td>
          <td>
            <button class="small" onClick=${() => setShown(shown === r.rid ? null : r.rid)}>${shown === r.rid ? "hide" : "source"}</button>
            <button class="small" onClick=${() => uninstall(r.rid)}>uninstall</button>
          </td>
        </tr>`)}</tbody>
    </table>
    ${shown && html`<pre class="source">${(a.rulesets.find((r) => r.rid === shown) || { meta: { krl: "" } }).meta.krl}</pre>`}
    <h3>Install a ruleset</h3>
    <div class="modes">
      ${["editor", "url", "file"].map((m) => html`<label key=${m}><input type="radio" name="mode" checked=${mode === m} onChange=${() => setMode(m)} data-mode=${m} /> ${m}</label>`)}
    </div>
    ${mode === "editor" && html`
      <${KrlEditor} value=${source} onInput=${(v) => { setSource(v); if (result && result.line) setResult(null); }}
        error=${result && result.line ? result : null} />
      <div class="actions">
        <button onClick=${check} data-testid="krl-check">Check</button>
        <button class="primary" onClick=${() => install({ source })} data-testid="krl-install">Install</button>
      </div>`}
    ${mode === "url" && html`
      <div class="actions">
        <input type="text" class="wide" placeholder="file:///… (in the host's ruleset folders) or https://…"
          value=${url} onInput=${(e) => setUrl(e.target.value)} data-testid="install-url" />
        <button class="primary" onClick=${() => install({ url })}>Install</button>
      </div>`}
    ${mode === "file" && html`
      <div class="actions"><input type="file" accept=".krl,text/plain" onChange=${onFile} data-testid="install-file" /></div>`}
    ${result && html`<div class=${result.error ? "error" : "ok"} data-testid="install-result">
      ${result.error ? (result.line ? `line ${result.line}, column ${result.column}: ${result.error}` : result.error) : result.ok}</div>`}`;
}

const DEFAULT_KRL = `ruleset hello.world {
  meta {
    shares hello
  }
  global {
    hello = function(name) {
      "Hello, " + (name || "world")
    }
  }
  rule greet {
    select when hello greet
    send_directive("greeting", {"text": hello(event:attrs{"name"})})
    fired {
      ent:greeted := ent:greeted.defaultsTo(0) + 1
    }
  }
}
`;

function Policy({ p }) {
  if (!p) return "—";
  const rules = (xs) => xs.map((r) => Object.values(r).join(":")).join(", ") || "none";
  return html`<span>allow ${rules(p.allow)}; deny ${rules(p.deny)}</span>`;
}

function Channels({ a }) {
  return html`
    <table class="grid" data-testid="channels">
      <thead><tr><th>id</th><th>tags</th><th>event policy</th><th>query policy</th><th>family</th></tr></thead>
      <tbody>${a.channels.map((c) => html`
        <tr key=${c.id}><td><code title=${c.id}>${shortId(c.id, 12)}</code></td><td>${c.tags.join(", ")}</td>
          <td><${Policy} p=${c.eventPolicy} /></td><td><${Policy} p=${c.queryPolicy} /></td>
          <td>${c.familyChannelPicoID ? shortId(c.familyChannelPicoID, 8) : ""}</td></tr>`)}
      </tbody>
    </table>`;
}

function Subscriptions({ a }) {
  if (!a.subscriptions) {
    return html`<p class="muted">io.picolabs.subscription is not installed on this pico.</p>`;
  }
  return html`${["established", "inbound", "outbound"].map((k) => html`
    <h3 key=${k}>${k}</h3>
    ${(a.subscriptions[k] || []).length === 0 ? html`<p class="muted">none</p>`
      : html`<pre class="json">${JSON.stringify(a.subscriptions[k], null, 2)}</pre>`}`)}`;
}

function Entities({ a }) {
  const rids = Object.keys(a.entities);
  if (!rids.length) return html`<p class="muted">No rulesets, so no entity variables.</p>`;
  return html`${rids.map((rid) => html`
    <h3 key=${rid}>${rid}</h3>
    ${Object.keys(a.entities[rid]).length === 0 ? html`<p class="muted">no entity variables</p>`
      : html`<table class="grid" data-testid=${`ent-${rid}`}>${Object.entries(a.entities[rid]).map(([k, v]) => html`
          <tr key=${k}><td><code>ent:${k}</code></td><td><pre class="json">${JSON.stringify(v, null, 2)}</pre></td></tr>`)}</table>`}`)}`;
}

function History({ did, seq }) {
  const [log, setLog] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    api.get(`/api/picos/${encodeURIComponent(did)}/history?limit=300`).then(setLog, (e) => setError(e.message));
  }, [did, seq]);
  if (error) return html`<div class="error">${error}</div>`;
  if (!log) return html`<p class="muted">Verifying the chain on the host…</p>`;
  return html`
    <p class=${log.verified ? "ok" : "error"} data-testid="history-verified">
      ${log.verified ? `Every head's signature verified back to ${log.truncated ? `seq ${log.truncated.seq} (history truncated)` : "genesis"}.` : `Does not verify: ${log.error}`}
    </p>
    ${log.fork && html`<div class="error">Fork at seq ${log.fork.seq}: ${log.fork.heads.join(" vs ")}</div>`}
    <table class="grid" data-testid="history">
      <thead><tr><th>seq</th><th>head</th><th>time</th><th>cause</th></tr></thead>
      <tbody>${(log.heads || []).map((hd) => html`
        <tr key=${hd.cid}><td>${hd.seq}</td><td><code title=${hd.cid}>${shortId(hd.cid, 10)}</code></td>
          <td>${new Date(hd.ts).toISOString().replace("T", " ").slice(0, 23)}</td>
          <td>${hd.cause ? html`<b>${hd.cause.domain}:${hd.cause.type}</b> <span class="muted">${hd.cause.eid || ""}</span>` : html`<span class="muted">genesis</span>`}</td></tr>`)}
      </tbody>
    </table>
    ${log.more ? html`<p class="muted">${log.more} older heads not shown.</p>` : ""}`;
}

function Log({ a, refresh }) {
  return html`
    <div class="actions"><button onClick=${refresh}>Refresh</button>
      <span class="muted">KRL log statements and engine messages naming this pico, kept by its host (last 200).</span></div>
    ${a.logs.length === 0 ? html`<p class="muted" data-testid="log-empty">Nothing logged yet.</p>`
      : html`<table class="grid log" data-testid="log">${a.logs.slice().reverse().map((l, i) => html`
        <tr key=${i} class=${`lvl-${l.level}`}><td>${new Date(l.ts).toISOString().slice(11, 23)}</td><td>${l.level}</td><td>${l.message}</td></tr>`)}</table>`}`;
}

function Testing({ a, refresh }) {
  const [domain, setDomain] = useState("");
  const [type, setType] = useState("");
  const [attrs, setAttrs] = useState("{}");
  const [rid, setRid] = useState(a.rulesets[0] ? a.rulesets[0].rid : "");
  const [fn, setFn] = useState("");
  const [args, setArgs] = useState("{}");
  const [out, setOut] = useState(null);
  const [testing, setTesting] = useState({});
  useEffect(() => {
    // Each ruleset's __testing (pico-engine's convention), when it shares one.
    let live = true;
    Promise.all(a.rulesets.map((r) =>
      fetch(`/sky/cloud/${encodeURIComponent(a.did)}/${encodeURIComponent(r.rid)}/__testing`)
        .then((x) => x.json()).then((t) => [r.rid, t && !t.error ? t : null], () => [r.rid, null])))
      .then((pairs) => { if (live) setTesting(Object.fromEntries(pairs)); });
    return () => { live = false; };
  }, [a.did, a.rulesets.length]);
  const parse = (text) => {
    const v = JSON.parse(text || "{}");
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("attributes must be a JSON object");
    return v;
  };
  const send = async () => {
    try {
      const body = parse(attrs);
      const r = await fetch(`/sky/event/${encodeURIComponent(a.did)}/explorer/${encodeURIComponent(domain)}/${encodeURIComponent(type)}`,
        { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      setOut({ kind: "event", value: await r.json() });
      refresh();
    } catch (e) {
      setOut({ kind: "event", value: { error: e.message } });
    }
  };
  const query = async () => {
    try {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(parse(args))) qs.set(k, typeof v === "string" ? v : JSON.stringify(v));
      const r = await fetch(`/sky/cloud/${encodeURIComponent(a.did)}/${encodeURIComponent(rid)}/${encodeURIComponent(fn)}?${qs}`);
      const text = await r.text();
      setOut({ kind: "query", value: text ? JSON.parse(text) : null });
    } catch (e) {
      setOut({ kind: "query", value: { error: e.message } });
    }
  };
  return html`
    ${Object.entries(testing).filter(([, t]) => t).map(([r, t]) => html`
      <div class="testing" key=${r}><b>${r}</b>
        ${(t.events || []).map((ev) => html`<button class="small" onClick=${() => { setDomain(ev.domain); setType(ev.type || ev.name); setAttrs(JSON.stringify(Object.fromEntries((ev.attrs || []).map((k) => [k, ""])))); }}>${ev.domain}:${ev.type || ev.name}</button>`)}
        ${(t.queries || []).map((q) => html`<button class="small" onClick=${() => { setRid(r); setFn(q.name); setArgs(JSON.stringify(Object.fromEntries((q.args || []).map((k) => [k, ""])))); }}>${q.name}()</button>`)}
      </div>`)}
    <h3>Send an event</h3>
    <div class="form">
      <input placeholder="domain" value=${domain} onInput=${(e) => setDomain(e.target.value)} data-testid="event-domain" />
      <input placeholder="type" value=${type} onInput=${(e) => setType(e.target.value)} data-testid="event-type" />
      <input class="wide" placeholder='attributes, e.g. {"by": 2}' value=${attrs} onInput=${(e) => setAttrs(e.target.value)} data-testid="event-attrs" />
      <button class="primary" onClick=${send} data-testid="event-send" disabled=${!domain || !type}>Send</button>
    </div>
    <h3>Run a query</h3>
    <div class="form">
      <select value=${rid} onChange=${(e) => setRid(e.target.value)} data-testid="query-rid">
        ${a.rulesets.map((r) => html`<option value=${r.rid}>${r.rid}</option>`)}
      </select>
      <input placeholder="function" value=${fn} onInput=${(e) => setFn(e.target.value)} data-testid="query-name" />
      <input class="wide" placeholder="arguments (JSON object)" value=${args} onInput=${(e) => setArgs(e.target.value)} data-testid="query-args" />
      <button class="primary" onClick=${query} data-testid="query-run" disabled=${!rid || !fn}>Query</button>
    </div>
    ${out && html`<h3>${out.kind === "event" ? "Response" : "Result"}</h3>
      <pre class="json" data-testid="testing-output">${JSON.stringify(out.value, null, 2)}</pre>`}`;
}
