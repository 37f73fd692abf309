// Same-run peer for scripts/bench/engine.py: Pico Labs' pico-engine-core, in
// process, running the counter ruleset, on its in-memory store (memdown) and on
// LevelDB on disk (leveldown, the store the pico-engine server uses).
//
//     node --expose-gc scripts/bench/peer/pico_engine_bench.mjs rulesets/counter.krl \
//         [--events N] [--queries N] [--clients C] [--picos P,Q,...]
//
// Prints one JSON object with:
//   events_1 / events_C    counter:inc through eventWait, 1 sender on one pico, then
//                          C senders at once, each on its own pico
//   queries_1 / queries_C  the count query, likewise
//   leveldown              the same four on a LevelDB store in a fresh temporary folder
//   create                 time to create P picos (newPico + install + a channel), per count
//   memory                 heap and RSS growth per idle pico after creating them (after gc)

import { performance } from "node:perf_hooks";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { makeKrlLogger } from "krl-stdlib";
import leveldown from "leveldown";
import memdown from "memdown";
import { PicoEngineCore, RulesetRegistryLoaderMem } from "pico-engine-core";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const VERSION = require("pico-engine-core/package.json").version;

const round = (x, digits) => Number(x.toFixed(digits));

function percentile(samples, p) {
  const ordered = [...samples].sort((a, b) => a - b);
  const i = Math.round((p / 100) * (ordered.length - 1));
  return ordered[Math.min(ordered.length - 1, i)];
}

function parseArgs(argv) {
  const args = { events: 2000, queries: 2000, clients: 16, picos: [1000] };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--events") args.events = Number.parseInt(argv[++i], 10);
    else if (a === "--queries") args.queries = Number.parseInt(argv[++i], 10);
    else if (a === "--clients") args.clients = Number.parseInt(argv[++i], 10);
    else if (a === "--picos") args.picos = argv[++i].split(",").map((s) => Number.parseInt(s, 10));
    else rest.push(a);
  }
  if (rest.length !== 1) throw new Error("usage: pico_engine_bench.mjs RULESET.krl [options]");
  args.krl = rest[0];
  return args;
}

async function startCore(krlPath, store = memdown()) {
  const source = readFileSync(krlPath, "utf8");
  const url = pathToFileURL(path.resolve(krlPath)).href;
  const core = new PicoEngineCore({
    leveldown: store,
    rsRegLoader: RulesetRegistryLoaderMem(async (u) => {
      if (u !== url) throw new Error(`unknown ruleset url ${u}`);
      return source;
    }),
    log: makeKrlLogger(() => {}),
    getPicoLogs: async () => [],
  });
  await core.start();
  const { ruleset, rid } = await core.rsRegistry.flush(url);
  const pf = core.picoFramework;
  async function newCounterPico() {
    const pico = pf.getPico(await pf.rootPico.newPico());
    await pico.install(ruleset, { url, config: {} });
    return (await pico.newChannel({ tags: ["bench"] })).id;
  }
  return { core, rid, newCounterPico };
}

// n operations split over the ecis, one sender per eci, all at once.
async function drive(ecis, n, op) {
  const latencies = [];
  const per = Math.ceil(n / ecis.length);
  const start = performance.now();
  await Promise.all(
    ecis.map(async (eci) => {
      for (let i = 0; i < per; i++) {
        const t0 = performance.now();
        await op(eci);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const wall = (performance.now() - start) / 1000;
  return {
    ops: latencies.length,
    per_s: round(latencies.length / wall, 1),
    p50_ms: round(percentile(latencies, 50), 3),
    p99_ms: round(percentile(latencies, 99), 3),
  };
}

function usage() {
  globalThis.gc?.();
  globalThis.gc?.();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

// events_1, events_C, queries_1, queries_C on a core over this store.
async function throughput(args, store) {
  const { core, rid, newCounterPico } = await startCore(args.krl, store);
  const inc = (eci) =>
    core.eventWait({ eci, domain: "counter", name: "inc", data: { attrs: { by: 1 } }, time: 0 });
  const count = (eci) => core.query({ eci, rid, name: "count", args: {} });
  const one = [await newCounterPico()];
  const many = [];
  for (let i = 0; i < args.clients; i++) many.push(await newCounterPico());
  const out = {};
  await drive(one, 100, inc); // warm-up
  out.events_1 = await drive(one, args.events, inc);
  out.events_C = await drive(many, args.events, inc);
  out.queries_1 = await drive(one, args.queries, count);
  out.queries_C = await drive(many, args.queries, count);
  const expected = 100 + args.events;
  const got = await count(one[0]);
  if (got !== expected) throw new Error(`count is ${got}, expected ${expected}`);
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const out = { name: `pico-engine-core ${VERSION} (Node ${process.versions.node}, memdown)` };
  Object.assign(out, await throughput(args, memdown()));
  out.clients = args.clients;
  const dir = mkdtempSync(path.join(os.tmpdir(), "pico-engine-bench-"));
  try {
    out.leveldown = await throughput(args, leveldown(dir));
    out.leveldown.name = `pico-engine-core ${VERSION} (Node ${process.versions.node}, leveldown)`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  out.create = [];
  out.memory = [];
  for (const p of args.picos) {
    const { newCounterPico } = await startCore(args.krl);
    const before = usage();
    const t0 = performance.now();
    for (let i = 0; i < p; i++) await newCounterPico();
    const seconds = (performance.now() - t0) / 1000;
    const after = usage();
    out.create.push({ picos: p, seconds: round(seconds, 3), picos_per_s: round(p / seconds, 1) });
    out.memory.push({
      picos: p,
      heap_bytes_per_pico: Math.round((after.heap - before.heap) / p),
      rss_bytes_per_pico: Math.round((after.rss - before.rss) / p),
    });
  }
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
