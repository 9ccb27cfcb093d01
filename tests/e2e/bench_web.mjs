// `cargo xtask bench web` (or `node tests/e2e/bench_web.mjs` with DUET_URL, DUET_DIST, DUET_BIN set):
// the page's figures in headless Chromium, printed as one JSON object on stdout:
//   drop_to_probs_s: time from a 5 s WAV handed to the page (the file picker's change event) to its
//                    probabilities on screen, median of DUET_BENCH_RUNS (default 5) runs after one
//                    warm-up run, on WebGPU and on the CPU fallback;
//   time_to_ready_s: navigation start to "ready" (wasm compiled, backend up, model loaded, warm-up run);
//   wasm_bytes, wasm_gzip_bytes, model_bytes: what a visitor downloads.
// Progress goes to stderr. DUET_BENCH_BACKENDS=webgpu,cpu (default) picks the backends, and
// DUET_BENCH_RUNS_WEBGPU the WebGPU run count (where WebGPU is a software rasteriser, a 5 s clip takes
// minutes per run).
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { launch, openReady, fixtures, waitResults, ROOT } from "./lib.mjs";

const RUNS = Number(process.env.DUET_BENCH_RUNS || 5);
const DIST = process.env.DUET_DIST || path.join(ROOT, "dist");
const log = (...a) => console.error("[bench web]", ...a);

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const BACKENDS = (process.env.DUET_BENCH_BACKENDS || "webgpu,cpu").split(",");
const RUNS_WEBGPU = Number(process.env.DUET_BENCH_RUNS_WEBGPU || RUNS);

async function measure(webgpu, file) {
  const runs = webgpu ? RUNS_WEBGPU : RUNS;
  const b = await launch({ webgpu });
  try {
    const backend = await openReady(b.page, webgpu ? "?backend=webgpu" : "");
    const readyS = (await b.page.evaluate(() => window.duet.readyMs)) / 1000;
    log(`${backend.label} (${backend.adapter}): ready in ${readyS.toFixed(2)} s`);
    const times = [];
    for (let i = 0; i <= runs; i++) {
      await b.page.setInputFiles("#file-input", [file]);
      const results = await waitResults(b.page, i + 1, 3_600_000);
      const s = results.at(-1).ms / 1000;
      log(`${backend.label} run ${i}${i === 0 ? " (warm-up)" : ""}: ${s.toFixed(3)} s`);
      if (i > 0) times.push(s);
    }
    return { kind: backend.kind, adapter: backend.adapter, readyS, times };
  } finally {
    await b.close();
  }
}

const fx = fixtures();
const audioS = 5;
const skipped = { readyS: NaN, times: [NaN], kind: null, adapter: null };
const gpu = BACKENDS.includes("webgpu") ? await measure(true, fx.five) : skipped;
const cpu = BACKENDS.includes("cpu") ? await measure(false, fx.five) : skipped;
const wasm = fs.readFileSync(path.join(DIST, "duet-web_bg.wasm"));
const model = fs.statSync(path.join(DIST, "www/models/demo.safetensors")).size;
const round = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);
const out = {
  drop_to_probs_s: {
    webgpu: { median: round(median(gpu.times)), runs: gpu.times.map(round), backend: gpu.kind, adapter: gpu.adapter },
    cpu: { median: round(median(cpu.times)), runs: cpu.times.map(round), backend: cpu.kind, adapter: cpu.adapter },
  },
  audio_s: audioS,
  real_time_factor: { webgpu: round(audioS / median(gpu.times)), cpu: round(audioS / median(cpu.times)) },
  time_to_ready_s: { webgpu: round(gpu.readyS), cpu: round(cpu.readyS) },
  wasm_bytes: wasm.length,
  wasm_gzip_bytes: zlib.gzipSync(wasm, { level: 9 }).length,
  model_bytes: model,
};
console.log(JSON.stringify(out));
