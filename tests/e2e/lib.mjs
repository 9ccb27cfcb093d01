// Shared helpers for the browser end-to-end tests: launch Debian's Chromium through playwright-core
// (no browser download), collect console errors and every network request the page makes.
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const URL = process.env.DUET_URL;
export const ROOT = process.env.DUET_ROOT || path.resolve(import.meta.dirname, "../..");
export const DUET_BIN = process.env.DUET_BIN || path.join(ROOT, "target/debug/duet");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

if (!URL) {
  throw new Error("DUET_URL is not set: run the e2e tests through `cargo xtask test`");
}

const BASE_ARGS = [
  "--no-sandbox",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

/**
 * Launches headless Chromium. `webgpu: true` enables WebGPU (SwiftShader's software adapter on a
 * machine without a GPU); `webgpu: false` leaves it off, so the page must fall back to the CPU.
 * `fakeMic`: a WAV file that stands in for the microphone.
 */
export async function launch({ webgpu, fakeMic } = {}) {
  const args = [...BASE_ARGS];
  if (webgpu) {
    args.push("--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=swiftshader", "--use-webgpu-adapter=swiftshader");
  } else {
    args.push("--disable-webgpu", "--disable-features=WebGPU");
  }
  if (fakeMic) {
    args.push(
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${fakeMic}`,
    );
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "duet-e2e-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1100, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  const requests = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => consoleErrors.push(`pageerror: ${err.message}`));
  context.on("request", (req) => requests.push({ url: req.url(), time: Date.now() }));
  const close = async () => {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, consoleErrors, requests, close };
}

/** Opens the page and waits until it is ready (or failed); returns the backend it reports. */
export async function openReady(page, query = "") {
  await page.goto(URL + query);
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, {
    timeout: 120_000,
  });
  const state = await page.evaluate(() => document.body.dataset.state);
  const errors = await page.evaluate(() => document.getElementById("errors").innerText);
  if (state !== "ready") throw new Error(`page reached state ${state}: ${errors}`);
  return page.evaluate(() => ({
    kind: document.body.dataset.backend,
    label: document.getElementById("backend").innerText,
    adapter: document.getElementById("adapter").innerText,
  }));
}

// ------------------------------------------------------------------------------------------------
// Fixtures, made fresh for each run from the project's own tools (nothing large is committed
// but three real recordings): speech from `duet synth-corpus`, converted by sox to other rates, channel counts and sample
// formats so that the page's decoder and resampler (duet-dsp in wasm) are exercised.

import { execFileSync } from "node:child_process";

export const DEMO_MODEL = path.join(ROOT, "www/models/demo.safetensors");
/** Real recordings (RAVDESS, CC BY-NC-SA 4.0: tests/fixtures/ravdess/README.md). */
export const REAL_SPEECH = ["03-01-05-01-01-01-01.wav", "03-01-04-01-02-01-08.wav", "03-01-03-02-01-01-13.wav"].map(
  (f) => path.join(ROOT, "tests/fixtures/ravdess", f),
);
let cached = null;

function sox(...args) {
  execFileSync("sox", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** Paths of the test files (made once per process). */
export function fixtures() {
  if (cached) return cached;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "duet-fixtures-"));
  const corpus = path.join(dir, "corpus");
  execFileSync(DUET_BIN, ["synth-corpus", "--out", corpus, "--voices", "1", "--sentences", "1", "--seed", "7", "--threads", "1"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const wavs = {};
  for (const line of fs.readFileSync(path.join(corpus, "manifest.csv"), "utf8").trim().split("\n").slice(1)) {
    const [, rel, label] = line.split(",");
    wavs[label] = path.join(corpus, rel);
  }
  const f = (name) => path.join(dir, name);
  // Three short clips (about a second: WebGPU in headless Chromium is a software rasteriser here).
  sox(wavs.happy, f("happy-16k-mono.wav"), "trim", "0.2", "1.0");
  sox(wavs.sad, "-r", "44100", "-c", "2", f("sad-44k-stereo.wav"), "trim", "0.2", "1.1");
  sox(wavs.angry, "-r", "48000", "-b", "24", f("angry-48k-24bit.wav"), "trim", "0.2", "1.2");
  sox(wavs.happy, f("happy.flac"), "trim", "0.2", "1.0");
  // A long file (over 8 s: shown with a timeline) and the fake microphone's input.
  sox(wavs.angry, wavs.happy, wavs.neutral, wavs.sad, f("long-12s.wav"));
  sox(wavs.neutral, wavs.angry, wavs.happy, wavs.sad, "-b", "16", f("mic.wav"));
  // Over 5 minutes (the long file 28 times, 5.6 min): classified as the mean of its windows.
  sox(...Array(28).fill(f("long-12s.wav")), f("long-6min.wav"));
  sox(f("long-6min.wav"), f("long-6min.wav"), f("long-11min.wav"));
  // A 5 s clip for the benchmark.
  sox(wavs.angry, wavs.happy, f("speech-5s.wav"), "trim", "0", "5");
  // A real recording under white noise about 3 dB louder than its speech (mean power over the
  // clip): marked noisy (the bundled model, trained with noise, keeps its answers to about 5 dB SNR).
  sox("-n", "-r", "16000", "-c", "1", "-b", "16", f("white.wav"), "synth", "5", "whitenoise");
  sox("-m", REAL_SPEECH[0], "-v", "0.1", f("white.wav"), "-b", "16", f("noisy-real.wav"), "trim", "0", "3.5");
  // Things that must fail with a message.
  sox(wavs.neutral, f("clip-10ms.wav"), "trim", "0", "0.01");
  fs.writeFileSync(f("notes.txt"), "These are notes, not audio.\n".repeat(50));
  const model = fs.readFileSync(DEMO_MODEL);
  fs.writeFileSync(f("truncated.safetensors"), model.subarray(0, Math.floor(model.length / 3)));
  execFileSync(DUET_BIN, ["init-model", "--kind", "base1", "--preset", "authors", "--seed", "5", "--out", f("my-base1.safetensors")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  // A test-only model whose forward overflows on every backend: LSTM biases of 3e38 saturate every
  // gate (h -> 1), head weights of 3e38 then sum to +inf in every logit: the softmax is NaN.
  fs.writeFileSync(
    f("overflow.safetensors"),
    withTensorsFilled(fs.readFileSync(f("my-base1.safetensors")), /^mfcc\.(lstm\.l\d+\.bias_(ih|hh)|head\.weight)$/, 3e38),
  );
  cached = {
    dir,
    overflowModel: f("overflow.safetensors"),
    drop: [f("happy-16k-mono.wav"), f("sad-44k-stereo.wav"), f("angry-48k-24bit.wav")],
    real: REAL_SPEECH,
    noisyReal: f("noisy-real.wav"),
    flac: f("happy.flac"),
    long: f("long-12s.wav"),
    sixMinutes: f("long-6min.wav"),
    elevenMinutes: f("long-11min.wav"),
    mic: f("mic.wav"),
    five: f("speech-5s.wav"),
    clip10ms: f("clip-10ms.wav"),
    notAudio: f("notes.txt"),
    truncatedModel: f("truncated.safetensors"),
    customModel: f("my-base1.safetensors"),
  };
  return cached;
}

/** A copy of safetensors `bytes` with every F32 tensor whose name matches `pattern` set to `value`. */
function withTensorsFilled(bytes, pattern, value) {
  const out = Buffer.from(bytes);
  const headerLen = Number(out.readBigUInt64LE(0));
  const header = JSON.parse(out.subarray(8, 8 + headerLen).toString("utf8"));
  const names = Object.keys(header).filter((n) => pattern.test(n));
  if (names.length === 0) throw new Error(`no tensor matches ${pattern}`);
  for (const name of names) {
    const t = header[name];
    if (t.dtype !== "F32") throw new Error(`${name}: ${t.dtype}, not F32`);
    const [a, b] = t.data_offsets;
    for (let o = 8 + headerLen + a; o < 8 + headerLen + b; o += 4) out.writeFloatLE(value, o);
  }
  return out;
}

/** `duet predict --json` on `files`: {basename: {probabilities, label, duration_s}}. */
export function predictCli(files, model = DEMO_MODEL) {
  const out = execFileSync(DUET_BIN, ["predict", "--json", "--model", model, ...files], { encoding: "utf8" });
  const byName = {};
  for (const line of out.trim().split("\n")) {
    const r = JSON.parse(line);
    byName[path.basename(r.file)] = r;
  }
  return byName;
}

/** Drops files on the drop zone the way a person does: a real DataTransfer with File objects. */
export async function dropFiles(page, files) {
  const payload = files.map((p) => ({ name: path.basename(p), data: fs.readFileSync(p).toString("base64") }));
  const dt = await page.evaluateHandle((items) => {
    const dt = new DataTransfer();
    for (const { name, data } of items) {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], name));
    }
    return dt;
  }, payload);
  await page.dispatchEvent("#dropzone", "dragenter", { dataTransfer: dt });
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: dt });
}

/** Waits until `n` result rows exist and none is still being analysed; returns the page's results. */
export async function waitResults(page, n, timeout = 600_000) {
  await page.waitForFunction(
    (n) =>
      document.querySelectorAll("#results .result").length >= n &&
      document.querySelectorAll('#results .result[data-state="pending"]').length === 0,
    n,
    { timeout, polling: 250 },
  );
  return page.evaluate(() => window.duet.state.results);
}

/** The text of the page's error region. */
export function errorText(page) {
  return page.evaluate(() => document.getElementById("errors").innerText);
}

/** Asserts every class probability of the page's result equals the CLI's within `tol`. */
export function assertSameProbabilities(assert, pageResult, cliResult, tol = 1e-3) {
  for (const [c, p] of Object.entries(cliResult.probabilities)) {
    const q = pageResult.probabilities[c];
    assert.ok(
      Math.abs(p - q) <= tol,
      `${pageResult.name}: ${c} is ${q} in the page, ${p} from duet predict (tolerance ${tol})`,
    );
  }
  assert.equal(pageResult.label, cliResult.label, `${pageResult.name}: top class`);
  assert.ok(Math.abs(pageResult.durationS - cliResult.duration_s) < 1e-3, `${pageResult.name}: duration`);
}

/** Network requests made after `since` (ms since epoch), blob:/data: URLs aside. */
export function requestsAfter(requests, since) {
  return requests.filter((r) => r.time > since && !/^(blob|data):/.test(r.url));
}
