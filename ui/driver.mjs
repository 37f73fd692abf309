// Drives headless Chromium (Debian's /usr/bin/chromium) with playwright-core for
// p2pico.browser: one JSON command per line on stdin, one JSON reply per line on stdout.
//   {"id", "op": "goto"|"eval"|"waitFor"|"click"|"fill"|"select"|"setFile"|"drag"|"move"|"screenshot"|"text"|"quit", ...}
//   → {"id", "ok": value} or {"id", "error": "..."}
import { createInterface } from "node:readline";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const executablePath = process.env.P2PICO_CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "p2pico-chromium-"));
// The flags keep Chromium off the network: the test machines have no outside access.
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: Number(process.env.P2PICO_VIEW_W || 1400), height: Number(process.env.P2PICO_VIEW_H || 860) },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const page = context.pages()[0] || await context.newPage();
const consoleLines = [];
page.on("console", (m) => { consoleLines.push(`${m.type()}: ${m.text()}`); if (consoleLines.length > 200) consoleLines.shift(); });
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

const ops = {
  goto: async ({ url }) => { await page.goto(url, { waitUntil: "load" }); return page.url(); },
  eval: async ({ expr }) => page.evaluate(expr),
  waitFor: async ({ expr, timeout = 30000 }) => (await page.waitForFunction(expr, null, { timeout, polling: "raf" })).jsonValue(),
  click: async ({ selector, timeout = 30000 }) => { await page.click(selector, { timeout }); return true; },
  fill: async ({ selector, value, timeout = 30000 }) => { await page.fill(selector, value, { timeout }); return true; },
  select: async ({ selector, value }) => page.selectOption(selector, value),
  setFile: async ({ selector, name, content }) => {
    await page.setInputFiles(selector, { name, mimeType: "text/plain", buffer: Buffer.from(content, "utf8") });
    return true;
  },
  text: async ({ selector, timeout = 30000 }) => page.innerText(selector, { timeout }),
  drag: async ({ from, to, steps = 12 }) => {
    await page.mouse.move(from[0], from[1]);
    await page.mouse.down();
    await page.mouse.move(to[0], to[1], { steps });
    await page.mouse.up();
    return true;
  },
  move: async ({ to }) => { await page.mouse.move(to[0], to[1]); return true; },
  clickAt: async ({ at }) => { await page.mouse.click(at[0], at[1]); return true; },
  screenshot: async ({ path, selector }) => {
    if (selector) await page.locator(selector).screenshot({ path });
    else await page.screenshot({ path });
    return path;
  },
  console: async () => consoleLines.slice(),
};

async function quit() {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
}

const out = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");
out({ ready: true, version: context.browser()?.version() ?? null });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let cmd;
  try { cmd = JSON.parse(line); } catch (e) { out({ error: `not JSON: ${e.message}` }); continue; }
  if (cmd.op === "quit") { out({ id: cmd.id, ok: true }); await quit(); }
  const fn = ops[cmd.op];
  if (!fn) { out({ id: cmd.id, error: `unknown op ${cmd.op}` }); continue; }
  try {
    out({ id: cmd.id, ok: (await fn(cmd)) ?? null });
  } catch (e) {
    out({ id: cmd.id, error: String(e && e.message || e), console: consoleLines.slice(-20) });
  }
}
await quit();
