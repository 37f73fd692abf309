// Same-run peer for scripts/bench/skeleton.py: Pico Labs' pico-engine-core,
// in process, with its in-memory store (memdown).
//
//     node scripts/bench/peer/pico_engine_counter.mjs rulesets/counter.krl [N]
//
// Registers the given KRL source unchanged, creates a child pico of the root pico, installs
// the ruleset on it, then sends N counter:inc {by: 1} events one
// after another through PicoEngineCore.eventWait (each awaited until its
// rules have run and its state is written), checks that the count query
// returns N, and prints one JSON line with the fields skeleton.py uses.

import { performance } from "node:perf_hooks";

import { VERSION, startCoreWithRuleset } from "./start_core.mjs";

function percentile(samples, p) {
  const ordered = [...samples].sort((a, b) => a - b);
  const i = Math.round((p / 100) * (ordered.length - 1));
  return ordered[Math.min(ordered.length - 1, i)];
}

const round = (x, digits) => Number(x.toFixed(digits));

async function main() {
  const [krlPath, nArg] = process.argv.slice(2);
  if (!krlPath) {
    throw new Error("usage: pico_engine_counter.mjs RULESET.krl [N]");
  }
  const n = Number.parseInt(nArg ?? "1000", 10);
  if (!(n > 0)) {
    throw new Error(`N must be a positive integer, got ${nArg}`);
  }
  // The ruleset runs unchanged: the same file p2pico's benchmark uses.
  const { core, rid, eci } = await startCoreWithRuleset(krlPath);

  const latencies = [];
  let last = null;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    last = await core.eventWait({
      eci,
      domain: "counter",
      name: "inc",
      data: { attrs: { by: 1 } },
      time: 0,
    });
    latencies.push(performance.now() - t0);
  }
  const wall = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);

  const count = await core.query({ eci, rid, name: "count", args: {} });
  if (count !== n) {
    throw new Error(`count query returned ${JSON.stringify(count)}, expected ${n}`);
  }
  const directive = last?.directives?.[0];
  if (directive?.name !== "count" || directive?.options?.count !== n) {
    throw new Error(`last event answered ${JSON.stringify(last)}`);
  }

  const mean = latencies.reduce((a, b) => a + b, 0) / latencies.length;
  console.log(
    JSON.stringify({
      name: `pico-engine-core ${VERSION} in process (Node ${process.versions.node}, memdown)`,
      events: n,
      events_per_s: round(n / wall, 1),
      p50_ms: round(percentile(latencies, 50), 3),
      p99_ms: round(percentile(latencies, 99), 3),
      mean_ms: round(mean, 3),
      // CPU time of the whole process per event: pico-framework's queue
      // starts each transaction with setTimeout(..., 0), which Node clamps to
      // 1 ms, so one awaited event at a time is mostly waiting, not working.
      cpu_ms_per_event: round((cpu.user + cpu.system) / 1000 / n, 3),
    }),
  );
}

main().catch((error) => {
  console.error(error?.stack ?? String(error));
  process.exit(1);
});
