// The compute worker: loads the wasm (duet-web) and runs every computation off the main thread, one
// request at a time. Messages in: {id, type, payload}; out: {id, ok, result | error} and unsolicited
// {type: "backend", ...} when the GPU is lost and the worker moves to the CPU.
import init, * as duet from "../duet-web.js";

const MODEL_URL = new URL("./models/demo.safetensors", import.meta.url);

let started = false;
let engine = null; // duet.Engine: the backend and the model loaded on it
let backend = null; // {kind, adapter, fallbackReason?}
let modelBytes = null; // the current model's file, kept to reload it on the CPU after a GPU loss
let demoBytes = null; // the bundled model, fetched once
const gpu = { adapterName: "", device: null, lost: null };
let wasmMemory = null; // the wasm instance's linear memory: it only grows, so its size is the peak

// wgpu asks the browser for an adapter and a device through these two methods: wrap them to learn
// the adapter's real name (wgpu's adapter info has none in browsers) and to hear of device loss.
function watchWebGpu() {
  if (typeof GPU === "undefined" || typeof GPUAdapter === "undefined") return;
  const requestAdapter = GPU.prototype.requestAdapter;
  GPU.prototype.requestAdapter = async function (...args) {
    const adapter = await requestAdapter.apply(this, args);
    if (adapter) gpu.adapterName = describeAdapter(adapter);
    return adapter;
  };
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await requestDevice.apply(this, args);
    gpu.device = device;
    gpu.lost = null;
    device.lost.then((info) => {
      // A device we dropped ourselves (after moving to the CPU) is not news.
      if (gpu.device !== device) return;
      gpu.lost = info.message || info.reason || "unknown reason";
      // Move to the CPU now, between requests, so the page says so at once.
      queue = queue.then(() => (gpu.lost ? moveToCpu(gpu.lost) : null)).catch(reportMoveFailure);
    });
    return device;
  };
}

function describeAdapter(adapter) {
  const info = adapter.info || {};
  const parts = [info.description, [info.vendor, info.architecture].filter(Boolean).join(" ")];
  const name = parts.find((p) => p && p.trim()) || "WebGPU adapter";
  return info.isFallbackAdapter ? `${name} (software fallback adapter)` : name;
}

async function fetchDemoModel() {
  const response = await fetch(MODEL_URL);
  if (!response.ok) throw new Error(`the bundled model ${MODEL_URL.pathname} answered ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

// Replaces the engine (a new backend), freeing the old one's device memory and model.
function useEngine(next) {
  if (engine) engine.free();
  engine = next;
  backend = engine.backend();
}

async function loadModel(bytes) {
  const info = engine.loadModel(bytes);
  modelBytes = bytes;
  const warmupMs = await engine.warmUp();
  return { info, warmupMs };
}

// The clip the page times each backend on when it chooses between them: one analysis window.
const SPEED_CLIP_S = 4;

// With WebGPU up and warm, times one analysis on it and on the CPU and keeps the faster engine: a
// small recurrent model on a weak or software GPU can be slower than the CPU.
async function keepFaster(bytes) {
  const webgpuMs = await engine.timeForward(SPEED_CLIP_S);
  const cpu = await duet.Engine.create(false);
  let cpuMs;
  try {
    cpu.loadModel(bytes);
    await cpu.warmUp();
    cpuMs = await cpu.timeForward(SPEED_CLIP_S);
  } catch (err) {
    cpu.free();
    throw err;
  }
  const speed = { clipS: SPEED_CLIP_S, webgpuMs, cpuMs, chosen: webgpuMs <= cpuMs ? "webgpu" : "cpu" };
  if (speed.chosen === "webgpu") {
    cpu.free();
  } else {
    const adapter = backend.adapter;
    gpu.device = null; // dropped on purpose: its loss is not news
    useEngine(cpu);
    backend.fallbackReason =
      `the CPU analysed a ${SPEED_CLIP_S} s clip faster than WebGPU on ${adapter} ` +
      `(${Math.round(cpuMs)} ms against ${Math.round(webgpuMs)} ms); add ?backend=webgpu to the address to use the GPU anyway`;
  }
  return speed;
}

async function start({ preferGpu, measure, modelBytes: custom }) {
  const t0 = performance.now();
  if (!started) {
    watchWebGpu();
    wasmMemory = (await init()).memory;
    started = true;
  }
  const tWasm = performance.now();
  useEngine(await duet.Engine.create(preferGpu));
  if (backend.kind === "webgpu" && gpu.adapterName) backend.adapter = gpu.adapterName;
  const smoke = await engine.smokeTest();
  const tBackend = performance.now();
  if (!demoBytes && !custom) demoBytes = await fetchDemoModel();
  const bytes = custom ? new Uint8Array(custom) : demoBytes;
  const { info, warmupMs } = await loadModel(bytes);
  const speed = measure && backend.kind === "webgpu" ? await keepFaster(bytes) : null;
  return {
    backend,
    smoke,
    speed,
    model: info,
    custom: Boolean(custom),
    warmupMs,
    timings: { wasmMs: tWasm - t0, backendMs: tBackend - tWasm, totalMs: performance.now() - t0 },
  };
}

// After a GPU loss, or a GPU result that was not finite: the same wasm instance moves to the CPU
// backend for the rest of the session and reloads the model. `why`: "lost" or "non-finite".
async function moveToCpu(reason, why = "lost") {
  gpu.device = null;
  gpu.lost = null;
  useEngine(await duet.Engine.create(false));
  backend.fallbackReason =
    why === "lost" ? `the GPU device was lost (${reason})` : `WebGPU computed ${reason}`;
  const { info, warmupMs } = await loadModel(modelBytes);
  self.postMessage({ type: "backend", backend, model: info, warmupMs, reason, why });
}

function reportMoveFailure(err) {
  self.postMessage({ type: "backend-failed", error: errorOf(err) });
}

const handlers = {
  init: (p) => start(p),
  loadModel: async (p) => {
    if (p.demo && !demoBytes) demoBytes = await fetchDemoModel();
    const bytes = p.demo ? demoBytes : new Uint8Array(p.bytes);
    const { info, warmupMs } = await loadModel(bytes);
    return { model: info, warmupMs };
  },
  // A File (a handle: nothing is copied to post it) read by the wasm a block at a time.
  analyzeFile: (p, progress) => engine.analyzeFile(p.file, p.timeline, p.windowS, p.hopS, progress),
  analyzePcm: (p, progress) =>
    engine.analyzePcm(p.planar, p.channels, p.sampleRate, p.timeline, p.windowS, p.hopS, progress),
  // The wasm heap's size in bytes: a linear memory never shrinks, so this is the worker's peak.
  wasmMemoryBytes: async () => (wasmMemory ? wasmMemory.buffer.byteLength : 0),
  // For tests: lose the GPU device on purpose (the browser's own destroy()).
  loseGpuDevice: async () => {
    if (!gpu.device) return false;
    gpu.device.destroy();
    return true;
  },
};

/** `progress(done, total)`: how far a long request is (a timeline's windows). */
async function handle(type, payload, progress) {
  const handler = handlers[type];
  if (!handler) throw new Error(`unknown request ${type}`);
  const run = (p) => handler(p, progress);
  const lostBefore = () => backend && backend.kind === "webgpu" && gpu.lost;
  if (lostBefore()) await moveToCpu(gpu.lost);
  try {
    return await run(payload);
  } catch (err) {
    // A request that failed because the GPU went away is retried once on the CPU.
    await new Promise((r) => setTimeout(r, 0));
    if (type !== "init" && lostBefore()) {
      await moveToCpu(gpu.lost);
      return run(payload);
    }
    // A non-finite result from the GPU is never shown: the same input again on the CPU, which
    // then stays the backend (a second failure there is the model's, reported as an error).
    if (err && err.kind === "non-finite" && backend && backend.kind === "webgpu") {
      await moveToCpu("non-finite probabilities (NaN or ±inf)", "non-finite");
      return run(payload);
    }
    throw err;
  }
}

function errorOf(err) {
  return {
    message: String(err && err.message ? err.message : err),
    kind: (err && err.kind) || "internal",
    // A trap (a Rust panic) leaves the wasm instance unusable: the page starts a new worker.
    fatal: err instanceof WebAssembly.RuntimeError,
  };
}

let queue = Promise.resolve();
self.onmessage = (event) => {
  const { id, type, payload } = event.data;
  queue = queue.then(async () => {
    try {
      const progress = (done, total) => self.postMessage({ type: "progress", id, done, total });
      const result = await handle(type, payload || {}, progress);
      self.postMessage({ id, ok: true, result });
    } catch (err) {
      self.postMessage({ id, ok: false, error: errorOf(err) });
    }
  });
};
