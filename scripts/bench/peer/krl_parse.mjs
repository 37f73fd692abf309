// Reference KRL parser (npm krl-parser, as pinned in package.json) over a
// list of files, for scripts/krl_corpus/parity.py and scripts/bench/krl.py.
//
//     node scripts/bench/peer/krl_parse.mjs LIST_FILE [REPEAT]
//
// LIST_FILE holds one path a line. All files are read first; then each is
// parsed REPEAT times (default 1) and the best time kept. A file is accepted
// when krl-parser returns a Ruleset (a source that is not a ruleset parses
// as a list of statements, which the engine would not register). Prints one
// JSON object: {parser, results: [{path, ok, error, ms}], total_ms}.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(import.meta.url);
const parseKRL = require("krl-parser");
const VERSION = require("krl-parser/package.json").version;

function parseOnce(src) {
  try {
    const tree = parseKRL(src);
    if (!tree || Array.isArray(tree) || tree.type !== "Ruleset") {
      return { ok: false, error: "not a ruleset" };
    }
    return { ok: true, error: null };
  } catch (error) {
    const message = String(error?.message ?? error).split("\n")[0];
    return { ok: false, error: message };
  }
}

function main() {
  const [listPath, repeatArg] = process.argv.slice(2);
  if (!listPath) throw new Error("usage: krl_parse.mjs LIST_FILE [REPEAT]");
  const repeat = Number.parseInt(repeatArg ?? "1", 10);
  const paths = readFileSync(listPath, "utf8").split("\n").filter((p) => p !== "");
  const sources = paths.map((p) => readFileSync(p, "utf8"));
  const results = [];
  let total = 0;
  for (let i = 0; i < paths.length; i++) {
    let best = Infinity;
    let outcome = null;
    for (let r = 0; r < repeat; r++) {
      const t0 = performance.now();
      outcome = parseOnce(sources[i]);
      best = Math.min(best, performance.now() - t0);
    }
    total += best;
    results.push({ path: paths[i], ...outcome, ms: Number(best.toFixed(4)) });
  }
  console.log(
    JSON.stringify({
      parser: `krl-parser ${VERSION} (Node ${process.versions.node})`,
      results,
      total_ms: Number(total.toFixed(3)),
    }),
  );
}

main();
