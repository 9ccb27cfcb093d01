// `node tests/e2e/huge_input.mjs` (with DUET_URL, DUET_DIST, DUET_BIN set, as for the e2e tests):
// what the page does with huge but honest input, on the CPU fallback, printed as JSON on stdout:
//   long:  one long recording (DUET_HUGE_WAV, else a 2-hour one made from the test fixtures) picked
//          at once: seconds to its result, the worker's wasm memory after it (a wasm memory never
//          shrinks: that is its peak), and the page's main-thread long tasks meanwhile;
//   many:  300 short files (the fixtures' clips under 300 names) picked at once: seconds to the
//          first and the last result, wasm memory, long tasks.
// A long task is the browser's measure of a blocked UI thread (over 50 ms without yielding).
// DUET_HUGE_ONLY=long or many runs one of them. Not a test: it takes minutes. Progress goes to stderr.
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { launch, openReady, fixtures, waitResults } from "./lib.mjs";

const MB = 1e6;
const log = (...a) => console.error("[huge input]", ...a);
const fx = fixtures();

function longWav() {
  if (process.env.DUET_HUGE_WAV) return process.env.DUET_HUGE_WAV;
  const out = path.join(fx.dir, "speech-2h.wav");
  // long-6min.wav is 336 s: 22 of them are 2 h 3 min.
  execFileSync("sox", [...Array(22).fill(fx.sixMinutes), out]);
  return out;
}

async function watchLongTasks(page) {
  await page.evaluate(() => {
    window.__longTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push(e.duration);
    }).observe({ type: "longtask" });
  });
}

async function longTasks(page) {
  const d = await page.evaluate(() => window.__longTasks);
  return { count: d.length, max_ms: d.length ? Math.round(Math.max(...d)) : 0, total_ms: Math.round(d.reduce((a, b) => a + b, 0)) };
}

async function run(scenario) {
  const b = await launch({ webgpu: false });
  try {
    await openReady(b.page);
    const memory = () => b.page.evaluate(() => window.duet.wasmMemoryBytes());
    const before = await memory();
    await watchLongTasks(b.page);
    const t0 = Date.now();
    const info = await scenario(b.page);
    const results = await waitResults(b.page, info.n, 3_600_000);
    const total = (Date.now() - t0) / 1000;
    const firstMs = Math.min(...results.map((r) => r.ms));
    return {
      ...info.describe,
      results: results.length,
      seconds_to_first: Math.round(firstMs) / 1000,
      seconds_to_last: total,
      wasm_mb_before: Math.round(before / MB),
      wasm_mb_after: Math.round((await memory()) / MB),
      long_tasks: await longTasks(b.page),
      errors: (await b.page.evaluate(() => document.getElementById("errors").innerText)).trim(),
    };
  } finally {
    await b.close();
  }
}

const only = process.env.DUET_HUGE_ONLY;
let long = null;
if (only !== "many") {
  const wav = longWav();
  const size = fs.statSync(wav).size;
  log(`long: ${wav} (${(size / MB).toFixed(0)} MB)`);
  long = await run(async (page) => {
    await page.setInputFiles("#file-input", [wav]);
    return { n: 1, describe: { file: path.basename(wav), file_mb: Math.round(size / MB) } };
  });
  log(JSON.stringify(long));
}

const clips = [...fx.drop, ...fx.real];
const dir = path.join(fx.dir, "many");
fs.mkdirSync(dir, { recursive: true });
const many = [];
for (let i = 0; i < 300; i++) {
  const f = path.join(dir, `clip-${String(i).padStart(3, "0")}.wav`);
  fs.copyFileSync(clips[i % clips.length], f);
  many.push(f);
}
log("many: 300 files");
const manyResult = only === "long" ? null : await run(async (page) => {
  await page.setInputFiles("#file-input", many);
  return { n: 300, describe: { files: 300, total_mb: Math.round(many.reduce((s, f) => s + fs.statSync(f).size, 0) / MB) } };
});
log(JSON.stringify(manyResult));
console.log(JSON.stringify({ long, many: manyResult }, null, 2));
