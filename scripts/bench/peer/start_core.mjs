// Start Pico Labs' pico-engine-core (as pinned in package.json) in process, with
// its in-memory store (memdown), and put one KRL ruleset on a fresh child pico of
// the root pico. Shared by the benchmark harnesses in this folder.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";

import { makeKrlLogger } from "krl-stdlib";
import memdown from "memdown";
import { PicoEngineCore, RulesetRegistryLoaderMem } from "pico-engine-core";

const require = createRequire(import.meta.url);
export const VERSION = require("pico-engine-core/package.json").version;

// Returns {core, rid, eci}: the started engine, the ruleset's rid, and an
// allow-all channel (tag "bench") of the pico that has it installed.
export async function startCoreWithRuleset(krlPath) {
  // The ruleset runs unchanged, served from memory and compiled by krl-compiler.
  const source = readFileSync(krlPath, "utf8");
  const url = pathToFileURL(path.resolve(krlPath)).href;
  const core = new PicoEngineCore({
    leveldown: memdown(),
    rsRegLoader: RulesetRegistryLoaderMem(async (u) => {
      if (u !== url) throw new Error(`unknown ruleset url ${u}`);
      return source;
    }),
    // Log lines are formatted as usual and then dropped (the server would
    // append them to a file).
    log: makeKrlLogger(() => {}),
    getPicoLogs: async () => [],
  });
  await core.start();
  const pf = core.picoFramework;
  const { ruleset, rid } = await core.rsRegistry.flush(url);
  const pico = pf.getPico(await pf.rootPico.newPico());
  await pico.install(ruleset, { url, config: {} });
  const eci = (await pico.newChannel({ tags: ["bench"] })).id;
  return { core, rid, eci };
}
