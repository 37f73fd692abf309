// Reference engine for scripts/bench/krl.py: Pico Labs' pico-engine-core (as
// pinned in package.json) in process, with its in-memory store (memdown).
//
//     node scripts/bench/peer/krl_eval.mjs RULESET.krl CASES_JSON
//
// Registers the ruleset unchanged, installs it on a child pico of the root
// pico (start_core.mjs), then for each
// case {name, args, repeat} runs `repeat` queries of the shared function
// `name` through PicoEngineCore.query, one after another. Prints one JSON
// object: {engine, cases: [{name, args, result, runs, best_ms, median_ms}]}.

import { performance } from "node:perf_hooks";

import { VERSION, startCoreWithRuleset } from "./start_core.mjs";

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x) => Number(x.toFixed(4));

async function main() {
  const [krlPath, casesJson] = process.argv.slice(2);
  if (!krlPath || !casesJson) throw new Error("usage: krl_eval.mjs RULESET.krl CASES_JSON");
  const cases = JSON.parse(casesJson);
  const { core, rid, eci } = await startCoreWithRuleset(krlPath);

  const out = [];
  for (const { name, args, repeat } of cases) {
    const times = [];
    let result = null;
    for (let i = 0; i < repeat; i++) {
      const t0 = performance.now();
      result = await core.query({ eci, rid, name, args });
      times.push(performance.now() - t0);
    }
    out.push({
      name,
      args,
      result,
      runs: repeat,
      best_ms: round(Math.min(...times)),
      median_ms: round(median(times)),
    });
  }
  console.log(
    JSON.stringify({
      engine: `pico-engine-core ${VERSION} in process (Node ${process.versions.node})`,
      cases: out,
    }),
  );
}

main().catch((error) => {
  console.error(error?.stack ?? String(error));
  process.exit(1);
});
