// The page's UI. Every computation (decoding WAV, resampling, features, the model) happens in the
// wasm inside a Web Worker (worker.js), so the page never freezes; this file only moves bytes and
// samples there and draws what comes back.
import { $, pct, clock, bytesText, showError, showNotice, announce } from "./dom.js";
import { state, FALLBACK_CLASSES } from "./state.js";
import { backendLabel, renderBackend, renderSpeed, renderModel } from "./card.js";
import { tint, newRow, fillRow, failRow, updateResultActions, timelines } from "./results.js";
import { TimelineView, classColour } from "./timeline.js";
import { Recorder, describeMicError } from "./recorder.js";
import { Engine } from "./engine.js";
import { isWav, isSafetensors, decodeInBrowser } from "./formats.js";
import { download, resultsCsv, resultsJson } from "./export.js";

const LIVE_WINDOW_S = 3;
const LIVE_EVERY_MS = 500;

const engine = new Engine(onBackendChange, (message) => showError(message));

/** The model card for `info`, with the user's own model file if one is loaded. */
const showModel = (info) => renderModel(info, engine.customModel);

function onBackendChange(msg) {
  renderBackend(msg.backend);
  if (msg.model) showModel(msg.model);
  if (msg.warmupMs !== undefined) $("warmup").textContent = `${Math.round(msg.warmupMs)} ms`;
  const text = msg.restarted
    ? `The engine stopped unexpectedly and was restarted on the ${backendLabel(msg.backend)}.`
    : msg.why === "non-finite"
      ? `WebGPU computed ${msg.reason} on this device; Duet analysed the input again on the CPU and stays there.`
      : `The GPU device was lost (${msg.reason}). Duet moved to the CPU and carries on.`;
  showNotice(text);
  announce(text);
}

// The largest model file the page reads: a model is held whole (the bundled one is far smaller).
const MAX_MODEL_BYTES = 500e6;

async function useModelFile(file) {
  const name = file.name;
  if (file.size > MAX_MODEL_BYTES) {
    // Refused before it is read.
    showError(`${name}: too large for a model file (${bytesText(file.size)}; the page reads models up to ${bytesText(MAX_MODEL_BYTES)}). The previous model stays in use.`);
    return;
  }
  const buffer = await file.arrayBuffer();
  const previous = engine.customModel;
  engine.customModel = { name, bytes: buffer };
  try {
    const { model } = await engine.call("loadModel", { bytes: buffer });
    showModel(model);
    announce(`Model ${name} loaded: ${model.kind}, classes ${model.classes.join(", ")}.`);
  } catch (err) {
    engine.customModel = previous;
    showError(`${name}: not a usable model file — ${err.message}. The previous model stays in use.`);
  }
}

async function resetModel() {
  engine.customModel = null;
  try {
    // The worker keeps the bundled model's bytes from its start: no request.
    const { model } = await engine.call("loadModel", { demo: true });
    showModel(model);
    announce("Back to the bundled demo model.");
  } catch (err) {
    showError(`Could not reload the demo model: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Files: WAV through duet-dsp in the wasm; anything else through the browser's decoder.

function explain(name, err) {
  switch (err.kind) {
    case "too-short":
      return `${name}: too short to analyse — ${err.message}.`;
    case "audio":
    case "unsupported-wav":
      return `${name}: the audio cannot be analysed — ${err.message}.`;
    case "undecodable":
      return `${name}: ${err.message}`;
    case "too-large":
      return `${name}: too large for the page — ${err.message}.`;
    case "non-finite":
      return `${name}: no result — ${err.message}. The model's numbers overflow on this input.`;
    default:
      return `${name}: analysis failed — ${err.message}.`;
  }
}

// The largest file the page decodes in the browser (formats other than WAV): the browser holds it
// and its decoded samples at once. A WAV is read by the worker from the file itself, a block at a
// time when it is over 5 minutes (any length then), whole when shorter (the worker refuses, from the
// header, one that would not fit in its memory).
const MAX_DECODED_BYTES = 500e6;

function tooLarge(file) {
  return Object.assign(
    new Error(`${bytesText(file.size)}; it reads files up to ${bytesText(MAX_DECODED_BYTES)} unless they are WAV, which it reads a block at a time. \`duet predict\` analyses any format at any length`),
    { kind: "too-large" });
}

/** A file's first bytes, which say its format. */
async function readHead(file) {
  return new Uint8Array(await file.slice(0, 64).arrayBuffer());
}

/**
 * `file` through the worker's own WAV decoder; null where the decoder refuses it for its format, so
 * that the caller tries another: a WAV codec duet-dsp does not read (ADPCM, A-law…), which the
 * browser may decode, and with `orNotWav` bytes that are not WAV at all (a file named .wav sent
 * before its first bytes were read). Any other failure is the file's answer.
 */
async function workerWav(file, onProgress, orNotWav = false) {
  try {
    return await engine.call("analyzeFile", { file }, { onProgress });
  } catch (err) {
    if (err.kind === "unsupported-wav") return null;
    if (orNotWav && err.kind === "audio" && !isWav(await readHead(file))) return null;
    throw err;
  }
}

/** `head`: the file's first bytes, which say its format. */
async function analyseFile(file, head, onProgress = null) {
  if (isWav(head)) {
    const a = await workerWav(file, onProgress);
    if (a !== null) return a;
  }
  if (file.size > MAX_DECODED_BYTES) throw tooLarge(file);
  let pcm;
  try {
    pcm = await decodeInBrowser(await file.arrayBuffer());
  } catch (err) {
    throw Object.assign(
      new Error(`not audio Duet can read: it is not a WAV file and this browser cannot decode it (${err.message || err.name}).`),
      { kind: "undecodable" });
  }
  return engine.call("analyzePcm", { planar: pcm.planar, channels: pcm.channels, sampleRate: pcm.sampleRate }, { onProgress });
}

let fileQueue = Promise.resolve();
function handleFiles(fileList) {
  const received = performance.now();
  const files = [...fileList];
  for (const file of files) {
    if (/\.safetensors$/i.test(file.name)) {
      fileQueue = fileQueue.then(async () => useModelFile(file));
      continue;
    }
    const row = newRow(file.name);
    updateResultActions();
    fileQueue = fileQueue.then(async () => {
      state.busy++;
      try {
        const meta = row.querySelector(".result-meta");
        const progress = (done, total) => {
          meta.textContent = `analysing… ${Math.floor((100 * done) / total)}% (${done} of ${total} windows)`;
        };
        // A file named .wav goes straight to the worker, which reads it anyway: reading its first
        // bytes here first costs a round trip to the browser's file store (8-12 ms measured in
        // headless Chromium, a sixth of a 5 s clip's analysis). Whatever the worker cannot read
        // as a WAV takes the path below, which decides by the first bytes.
        let a = /\.wave?$/i.test(file.name) ? await workerWav(file, progress, true) : null;
        if (a === null) {
          // The format from the first bytes; the rest is read by whoever decodes it.
          const head = await readHead(file);
          if (isSafetensors(file.name, head)) {
            row.remove();
            await useModelFile(file);
            return;
          }
          a = await analyseFile(file, head, progress);
        }
        fillRow(row, file.name, a, performance.now() - received);
      } catch (err) {
        const message = explain(file.name, err);
        failRow(row, message);
        showError(message);
      } finally {
        state.busy--;
        updateResultActions();
      }
    });
  }
  return fileQueue;
}

// ---------------------------------------------------------------------------------------------
// Export.

function exportCsv() {
  download("duet-results.csv", "text/csv", resultsCsv(state.classes, state.results));
}

function exportJson() {
  download("duet-results.json", "application/json", resultsJson(state.model, state.backend, state.results));
}

// ---------------------------------------------------------------------------------------------
// Recording, with the live timeline.

const live = new TimelineView($("live-canvas"), FALLBACK_CLASSES);
const recorder = new Recorder(new URL("./recorder-worklet.js", import.meta.url));
let recordingCount = 0;
let stopping = false;
recorder.onLimit = () => {
  showNotice("Recordings stop after 10 minutes; this one was analysed.");
  stopRecording();
};
recorder.onEnded = () => {
  if (!recorder.recording) return;
  showError("The microphone went away (unplugged or switched off); the recording so far is analysed.");
  stopRecording();
};
let liveTimer = null;
let liveBusy = false;
let meterFrame = 0;

function setRecordingUi(on) {
  const button = $("record");
  button.classList.toggle("recording", on);
  button.querySelector(".record-label").textContent = on ? "Stop" : "Record";
  document.body.dataset.recording = on ? "true" : "false";
  $("record-hint").textContent = on
    ? "Recording… press Stop (or R) to analyse the whole take."
    : "Press Record (or R) and speak; press again to stop.";
}

function drawMeter() {
  const level = recorder.level(); // {rms, peak} of the last block
  const db = (v) => Math.max(0, Math.min(1, (20 * Math.log10(v + 1e-9) + 60) / 60));
  $("meter-fill").style.transform = `scaleX(${db(level.rms).toFixed(3)})`;
  $("meter-peak").style.transform = `translateX(${(db(level.peakHold) * 100).toFixed(1)}%)`;
  $("meter").dataset.level = db(level.rms).toFixed(3);
  $("elapsed").textContent = clock(recorder.elapsed());
  live.setNow(recorder.elapsed());
  if (recorder.recording) meterFrame = requestAnimationFrame(drawMeter);
}

async function liveTick() {
  if (liveBusy || !recorder.recording) return;
  const rate = recorder.sampleRate;
  if (recorder.length < rate * 1.0) return;
  const { samples, end } = recorder.tail(Math.round(LIVE_WINDOW_S * rate));
  liveBusy = true;
  try {
    const a = await engine.call("analyzePcm", { planar: samples, channels: 1, sampleRate: rate, timeline: false });
    live.push(end / rate, a.probabilities);
    $("live-now").textContent = `now: ${a.label} ${pct(a.probabilities[a.classes.indexOf(a.label)])}${a.uncertain ? " (uncertain)" : ""}${a.noisy ? " (noisy)" : ""}`;
    const now = $("live-now");
    now.className = "live-now";
    now.style.removeProperty("--c");
    tint(now, a.label);
    document.body.dataset.livePoints = String(live.points.length);
  } catch (err) {
    if (err.kind !== "too-short") console.warn(`live analysis: ${err.message}`);
  } finally {
    liveBusy = false;
  }
}

async function startRecording() {
  try {
    await recorder.start();
  } catch (err) {
    showError(describeMicError(err));
    return;
  }
  live.setClasses(state.classes);
  live.reset();
  document.body.dataset.livePoints = "0";
  setRecordingUi(true);
  announce("Recording started.");
  meterFrame = requestAnimationFrame(drawMeter);
  liveTimer = setInterval(liveTick, LIVE_EVERY_MS);
}

async function stopRecording() {
  if (stopping || !recorder.recording) return;
  stopping = true;
  clearInterval(liveTimer);
  cancelAnimationFrame(meterFrame);
  const stopped = performance.now();
  const take = await recorder.stop();
  stopping = false;
  setRecordingUi(false);
  $("meter-fill").style.transform = "scaleX(0)";
  recordingCount++;
  const name = `Recording ${recordingCount}`;
  const row = newRow(name);
  updateResultActions();
  announce(`Recording stopped after ${take.duration.toFixed(1)} seconds; analysing.`);
  fileQueue = fileQueue.then(async () => {
    try {
      if (!take.samples.length) {
        throw Object.assign(new Error("the recording is empty: no sound reached the page from the microphone"), {
          kind: "undecodable",
        });
      }
      const a = await engine.call("analyzePcm", { planar: take.samples, channels: 1, sampleRate: take.sampleRate });
      fillRow(row, name, a, performance.now() - stopped);
    } catch (err) {
      const message = explain(name, err);
      failRow(row, message);
      showError(message);
    } finally {
      updateResultActions();
    }
  });
}

function toggleRecording() {
  if ($("record").disabled) return;
  if (recorder.recording) stopRecording();
  else startRecording();
}

// ---------------------------------------------------------------------------------------------
// Wiring.

function wire() {
  $("record").addEventListener("click", toggleRecording);
  // A single-key shortcut can be typed by accident (speech input, a stray key): it can be turned
  // off, and the choice is remembered.
  const shortcut = $("shortcut-r");
  shortcut.checked = localStorage.getItem("duet.shortcutR") !== "off";
  shortcut.addEventListener("change", () => localStorage.setItem("duet.shortcutR", shortcut.checked ? "on" : "off"));
  document.addEventListener("keydown", (e) => {
    if (e.key !== "r" && e.key !== "R") return;
    if (!shortcut.checked) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    // Not while typing: text fields and lists take the key. A focused checkbox or button does not
    // (the shortcut's own checkbox is focused right after it is turned on).
    const t = e.target;
    const typing = t && (t.isContentEditable || ["TEXTAREA", "SELECT"].includes(t.tagName) ||
      (t.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "reset", "file"].includes(t.type)));
    if (typing) return;
    e.preventDefault();
    toggleRecording();
  });

  $("pick-files").addEventListener("click", () => $("file-input").click());
  $("pick-model").addEventListener("click", () => $("model-input").click());
  $("file-input").addEventListener("change", (e) => {
    handleFiles(e.target.files);
    e.target.value = "";
  });
  $("model-input").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) fileQueue = fileQueue.then(async () => useModelFile(file));
  });
  $("model-reset").addEventListener("click", () => (fileQueue = fileQueue.then(resetModel)));

  // Dropping anywhere works; the drop zone lights up.
  const zone = $("dropzone");
  let depth = 0;
  window.addEventListener("dragenter", (e) => {
    e.preventDefault();
    depth++;
    zone.classList.add("over");
  });
  window.addEventListener("dragleave", () => {
    if (--depth <= 0) {
      depth = 0;
      zone.classList.remove("over");
    }
  });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("over");
    if (document.body.dataset.state !== "ready") {
      showError("The engine is still starting; drop the files again in a moment.");
      return;
    }
    if (e.dataTransfer && e.dataTransfer.files.length) handleFiles(e.dataTransfer.files);
  });

  $("export-csv").addEventListener("click", exportCsv);
  $("export-json").addEventListener("click", exportJson);
  $("clear").addEventListener("click", () => {
    $("results").replaceChildren();
    state.results = [];
    timelines.clear();
    $("results-empty").hidden = false;
    updateResultActions();
    announce("Results cleared.");
  });

  new ResizeObserver(() => {
    live.resize();
    for (const t of timelines) t.resize();
  }).observe(document.body);
  matchMedia("(prefers-color-scheme: light)").addEventListener("change", () => {
    live.resize();
    for (const t of timelines) t.resize();
  });
}

// The hooks tests and the benchmark use (harmless for people).
window.duet = {
  state,
  handleFiles,
  loseGpuDevice: () => engine.call("loseGpuDevice", {}),
  wasmMemoryBytes: () => engine.call("wasmMemoryBytes", {}),
  colour: classColour,
};

async function main() {
  wire();
  // By default the page times WebGPU and the CPU and keeps the faster; ?backend=cpu forces the CPU
  // (for comparisons and for browsers with a broken GPU), ?backend=webgpu forces the GPU.
  const forced = new URLSearchParams(location.search).get("backend");
  const choice = { preferGpu: forced !== "cpu", measure: forced !== "cpu" && forced !== "webgpu" };
  // The microphone's worklet module loads now, with the page, so recording later fetches nothing.
  const recorderReady = recorder.prepare().catch((err) => {
    console.warn(`audio input unavailable: ${err.message}`);
    return err;
  });
  try {
    const init = await engine.start(choice);
    renderBackend(init.backend);
    renderSpeed(init.speed);
    const ok = init.smoke === 480;
    $("selftest").textContent = ok ? `ok (4×4 matmul = ${init.smoke})` : `WRONG: ${init.smoke} (expected 480)`;
    $("warmup").textContent = `${Math.round(init.warmupMs)} ms`;
    showModel(init.model);
    live.setClasses(init.model.classes);
    const recErr = await recorderReady;
    if (recErr instanceof Error) $("record-hint").textContent = `Recording is unavailable here: ${recErr.message}`;
    else $("record").disabled = false;
    // Since navigation start: page load, wasm compilation, backend, model, warm-up.
    const readyMs = performance.now();
    window.duet.readyMs = readyMs;
    $("ready-time").textContent = `${(readyMs / 1000).toFixed(2)} s`;
    document.body.dataset.state = ok ? "ready" : "error";
    if (!ok) showError("The compute backend gave a wrong self-test result; results would be wrong.");
    announce(`Duet is ready on the ${backendLabel(init.backend)}.`);
  } catch (err) {
    document.body.dataset.state = "error";
    $("engine-summary").textContent = "Engine failed to start";
    showError(`Could not start the engine: ${err.message}`);
  }
}

main();
