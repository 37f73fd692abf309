// Copy the explorer's front-end libraries from node_modules (pinned by package-lock.json)
// into p2pico/ui/vendor, which the node serves as they are: no build step, no CDN.
// `node vendor.mjs --check` only compares, and exits 1 if a vendored file differs.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "p2pico", "ui", "vendor");
const files = {
  "preact.mjs": "preact/dist/preact.mjs",
  "hooks.mjs": "preact/hooks/dist/hooks.mjs",
  "htm.mjs": "htm/dist/htm.mjs",
  "preact.LICENSE": "preact/LICENSE",
  "htm.LICENSE": "htm/LICENSE",
};
const check = process.argv.includes("--check");
let stale = 0;
mkdirSync(out, { recursive: true });
for (const [name, from] of Object.entries(files)) {
  const want = readFileSync(join(here, "node_modules", from));
  const path = join(out, name);
  let have = null;
  try { have = readFileSync(path); } catch { /* not vendored yet */ }
  if (have !== null && Buffer.compare(have, want) === 0) continue;
  if (check) {
    console.error(`p2pico/ui/vendor/${name} differs from node_modules/${from}; run: node ui/vendor.mjs`);
    stale += 1;
  } else {
    writeFileSync(path, want);
    console.log(`vendored ${from} -> p2pico/ui/vendor/${name}`);
  }
}
process.exit(stale ? 1 : 0);
