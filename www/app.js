// The page's UI. Every computation (decoding WAV, resampling, features, the model) happens in the
// wasm inside a Web Worker (worker.js), so the page never freezes; this file only moves bytes and
// samples there and draws what comes back.
import { TimelineView, classColour, hasStyledColour } from "./timeline.js";
import { Recorder, describeMicError } from "./recorder.js";
import { Engine } from "./engine.js";
import { isWav, isSafetensors, decodeInBrowser } from "./formats.js";
import { download, resultsCsv, resultsJson } from "./export.js";

const $ = (id) => document.getElementById(id);

const FALLBACK_CLASSES = ["angry", "happy", "neutral", "sad"];
const LIVE_WINDOW_S = 3;
const LIVE_EVERY_MS = 500;

// ---------------------------------------------------------------------------------------------
// Small helpers.

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "for") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const pct = (p) => `${(p * 100).toFixed(1)}%`;
const seconds = (s) => (s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${(s % 60).toFixed(0)} s`);
function clock(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}
function bytesText(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} kB`;
}

function showError(message) {
  const p = el("p", { text: message });
  const close = el("button", { class: "close", type: "button", "aria-label": "Dismiss this message", text: "×" });
  close.addEventListener("click", () => p.remove());
  p.append(close);
  $("errors").append(p);
  // Keep the last few only.
  while ($("errors").children.length > 4) $("errors").firstElementChild.remove();
}

function showNotice(message) {
  $("notices").replaceChildren(el("p", { text: message }));
}

function announce(message) {
  // Clearing first makes screen readers repeat an identical message.
  $("announcer").textContent = "";
  requestAnimationFrame(() => ($("announcer").textContent = message));
}

// ---------------------------------------------------------------------------------------------
// State shared by the panels.

const state = {
  classes: FALLBACK_CLASSES,
  model: null,
  backend: null,
  results: [], // {name, durationS, probabilities: {class: p}, label, timeline, backend, ms}
  busy: 0,
};

const engine = new Engine(onBackendChange, (message) => showError(message));

function backendLabel(b) {
  return b.kind === "webgpu" ? "WebGPU" : b.kind === "wgpu" ? "GPU" : "CPU";
}

function renderBackend(b) {
  state.backend = b;
  document.body.dataset.backend = b.kind;
  $("backend").textContent = backendLabel(b);
  $("adapter").textContent = b.adapter;
  $("engine-summary").textContent = `${backendLabel(b)} · ${b.adapter}`;
  if (b.fallbackReason) {
    $("fallback-reason").hidden = false;
    $("fallback-reason").textContent = `Not on the GPU: ${b.fallbackReason}.`;
  } else {
    $("fallback-reason").hidden = true;
  }
}

// The two backends' times on the same clip, when the page measured them to choose.
function renderSpeed(speed) {
  if (!speed) {
    $("speed").textContent = "not compared (backend chosen in the address)";
    return;
  }
  const mark = (kind) => (speed.chosen === kind ? " ✓" : "");
  $("speed").textContent =
    `${speed.clipS} s clip: WebGPU ${Math.round(speed.webgpuMs)} ms${mark("webgpu")} · ` +
    `CPU ${Math.round(speed.cpuMs)} ms${mark("cpu")}`;
  document.body.dataset.speedChosen = speed.chosen;
}

function onBackendChange(msg) {
  renderBackend(msg.backend);
  if (msg.model) renderModel(msg.model);
  if (msg.warmupMs !== undefined) $("warmup").textContent = `${Math.round(msg.warmupMs)} ms`;
  const text = msg.restarted
    ? `The engine stopped unexpectedly and was restarted on the ${backendLabel(msg.backend)}.`
    : msg.why === "non-finite"
      ? `WebGPU computed ${msg.reason} on this device; Duet analysed the input again on the CPU and stays there.`
      : `The GPU device was lost (${msg.reason}). Duet moved to the CPU and carries on.`;
  showNotice(text);
  announce(text);
}

// ---------------------------------------------------------------------------------------------
// The model card.

function renderModel(info) {
  state.model = info;
  state.classes = info.classes;
  renderLegend(info.classes);
  const custom = Boolean(engine.customModel);
  const prov = info.provenance || {};
  $("model-name").textContent = custom ? engine.customModel.name : "Bundled model (demo.safetensors)";
  const badge = $("model-badge");
  badge.textContent = !info.trained ? "untrained" : custom ? "your model" : "demo";
  badge.dataset.kind = !info.trained ? "untrained" : custom ? "custom" : "demo";

  const facts = [
    ["Kind", `${info.kind} — ${info.kindDescription}`],
    ["Classes", info.classes.join(", ")],
    ["Features", `${info.preset} preset, at least ${(info.minDurationS * 1000).toFixed(0)} ms of audio`],
    ["Weights", `${(info.parameters / 1e6).toFixed(2)} M parameters, ${info.dtype}, ${bytesText(info.bytes)}`],
    ["Training corpus", prov.corpus || (info.trained ? "not recorded" : "none — untrained")],
  ];
  if (prov.protocol) facts.push(["Protocol", prov.protocol]);
  if (info.levelDbfs != null) facts.push(["Level", `each recording normalised to ${info.levelDbfs} dBFS before the features`]);
  if (info.calibration) {
    facts.push(["Calibration", `temperature ${info.calibration.temperature.toFixed(2)} (fitted on validation speakers); results under ${Math.round(info.calibration.uncertain_below * 100)}% are marked uncertain`]);
  }
  const metrics = Object.entries(prov.metrics || {});
  if (metrics.length) {
    facts.push([
      "Cross-validation",
      metrics
        .map(([k, v]) => `${k.replace(/_/g, " ")} ${v <= 1 ? `${(v * 100).toFixed(1)}%` : v.toFixed(3)}`)
        .join(" · "),
    ]);
  }
  // The weights' license and the corpus citation first: users must see them.
  const first = ["license", "citation", "intended_use", "level", "augmentation"];
  const rank = (k) => (first.includes(k) ? first.indexOf(k) : first.length);
  const notes = Object.entries(prov.notes || {}).sort(([a], [b]) => rank(a) - rank(b));
  for (const [k, v] of notes.slice(0, 9)) facts.push([k.replace(/_/g, " "), v]);
  $("model-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));

  const note = $("model-note");
  const train = el("p", {},
    "To train a real model, run ",
    el("code", { text: "train --corpus iemocap:DIR --model dual --protocol loso --out runs/iemocap" }),
    " and drop ", el("code", { text: "runs/iemocap/model.safetensors" }), " here; ",
    el("code", { text: "cargo xtask demo-model" }), " rebuilds this demo.");
  if (!info.trained) {
    note.replaceChildren(
      el("p", { class: "warn" }, el("strong", { text: "Untrained: " }),
        "this model file has no training record, its weights are random, so its probabilities mean nothing yet."),
      train);
  } else if (!custom && /ravdess/i.test(prov.corpus || "")) {
    note.replaceChildren(
      el("p", {}, el("strong", { text: "Trained on real speech: " }),
        "20 North American actors of RAVDESS, two sentences acted in each emotion (speaker-independent " +
          "cross-validation above: the tested actors were never heard in training)."),
      el("p", { class: "warn" }, el("strong", { text: "What it is not: " }),
        "acted English speech and four classes only; spontaneous speech, other languages and other " +
          "emotions will be misjudged more often. Not for judging people at work, in education or anywhere " +
          "a decision about them follows."),
      el("p", {}, "Weights license: CC BY-NC-SA 4.0 (derived from RAVDESS: Livingstone & Russo 2018, " +
          "PLoS ONE 13(5): e0196391), separate from the code's license — not for commercial use."),
      train);
  } else if (!custom) {
    note.replaceChildren(
      el("p", { class: "warn" }, el("strong", { text: "A demo: " }),
        "this model was trained on synthetic speech (voices of speech synthesisers acting each emotion), " +
          "not on real people — expect it to misjudge real voices."),
      train);
  } else {
    note.replaceChildren(el("p", { text: "Your own model, read from your file on this device." }));
  }
  $("model-reset").hidden = !custom;
}

async function useModelFile(name, buffer) {
  const previous = engine.customModel;
  engine.customModel = { name, bytes: buffer };
  try {
    const { model } = await engine.call("loadModel", { bytes: buffer });
    renderModel(model);
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
    renderModel(model);
    announce("Back to the bundled demo model.");
  } catch (err) {
    showError(`Could not reload the demo model: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Results.

/** Gives `node` class `c`'s colour (`--c`): the style sheet's for the four emotions, an extra hue
 * for a class of a user's model that the sheet does not know. */
function tint(node, c) {
  node.classList.add(`c-${c}`);
  if (!hasStyledColour(c)) node.style.setProperty("--c", classColour(c, Math.max(0, state.classes.indexOf(c))));
  return node;
}

/** The legend above the results: the loaded model's classes, in its order. */
function renderLegend(classes) {
  $("legend").replaceChildren(...classes.map((c) =>
    tint(el("li", {}, el("span", { class: "swatch", "aria-hidden": "true" }), c), c)));
}

function probabilitiesOf(classes, values) {
  return Object.fromEntries(classes.map((c, i) => [c, values[i]]));
}

function barList(classes, probabilities, label) {
  return el("ul", { class: "bars" },
    classes.map((c, i) => {
      const fill = el("span", { class: "fill" });
      fill.style.width = `${(probabilities[i] * 100).toFixed(2)}%`;
      return tint(el("li", { class: `bar${c === label ? " top" : ""}`, "data-class": c },
        el("span", { class: "bar-name" }, c, c === label ? el("span", { class: "top-mark", text: " (top)" }) : null),
        el("span", { class: "track", "aria-hidden": "true" }, fill),
        el("span", { class: "bar-pct", text: pct(probabilities[i]) })), c);
    }));
}

// Rows are made when the table is first opened, a few hundred per frame: a 2-hour recording has
// 4800 windows, and building them at once blocked the page for most of a second.
const SEGMENT_ROWS_PER_FRAME = 300;

function segmentTable(classes, segments) {
  const tbody = el("tbody", {});
  const details = el("details", { class: "segments" },
    el("summary", { text: `Segments (${segments.length})` }),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: "from" }), el("th", { text: "to" }),
        classes.map((c) => el("th", { text: c })), el("th", { text: "top" }))),
      tbody));
  let made = 0;
  const more = () => {
    const end = Math.min(segments.length, made + SEGMENT_ROWS_PER_FRAME);
    tbody.append(...segments.slice(made, end).map((s) => el("tr", {},
      el("td", { text: `${s.startS.toFixed(1)} s` }), el("td", { text: `${s.endS.toFixed(1)} s` }),
      s.probabilities.map((p) => el("td", { text: pct(p) })), el("td", { text: s.label }))));
    made = end;
    if (made < segments.length) requestAnimationFrame(more);
  };
  details.addEventListener("toggle", () => {
    if (details.open && made === 0) more();
  });
  return details;
}

function newRow(name) {
  $("results-empty").hidden = true;
  const row = el("li", { class: "result", "data-state": "pending" },
    el("div", { class: "result-head" },
      el("h3", { class: "result-name", text: name }),
      el("span", { class: "result-meta", text: "analysing…" })),
    el("div", { class: "result-body" }, el("div", { class: "spinner", "aria-hidden": "true" })));
  $("results").prepend(row);
  return row;
}

function fillRow(row, name, a, ms) {
  const classes = a.classes;
  row.dataset.state = "done";
  row.dataset.label = a.label;
  const meta = [seconds(a.durationS), `${(a.sampleRate / 1000).toFixed(a.sampleRate % 1000 ? 1 : 0)} kHz`];
  if (a.channels > 1) meta.push(`${a.channels} ch`);
  // Over 5 min the overall answer is the mean of the timeline's windows (as in `duet predict`).
  if (a.meanOfWindows) meta.push(`mean of ${a.meanOfWindows} windows`);
  row.querySelector(".result-meta").textContent = meta.join(" · ");
  const top = tint(el("p", { class: "result-top" },
    el("span", { class: "swatch", "aria-hidden": "true" }),
    el("strong", { text: a.label }), ` ${pct(a.probabilities[classes.indexOf(a.label)])}`), a.label);
  if (a.uncertain) {
    const t = state.model && state.model.calibration;
    top.append(" ", el("span", {
      class: "uncertain",
      text: "uncertain",
      title: `The top probability is under ${t ? Math.round(t.uncertain_below * 100) : 50}%, the model card's threshold: no class stands out.`,
    }));
  }
  const body = el("div", { class: "result-body" }, top, barList(classes, a.probabilities, a.label));
  if (a.timeline && a.timeline.length) {
    const canvas = el("canvas", {
      class: "timeline-canvas", height: 90, role: "img",
      "aria-label": `Timeline of ${name}: ${a.timeline.length} segments; ${summariseTimeline(a.timeline)}`,
    });
    body.append(el("div", { class: "result-timeline" }, canvas), segmentTable(classes, a.timeline));
    const view = new TimelineView(canvas, classes);
    view.setStatic(a.timeline, a.durationS);
    timelines.add(view);
  }
  row.querySelector(".result-body").replaceWith(body);
  state.results.push({
    name,
    durationS: a.durationS,
    probabilities: probabilitiesOf(classes, a.probabilities),
    label: a.label,
    uncertain: Boolean(a.uncertain),
    timeline: a.timeline
      ? a.timeline.map((s) => ({ startS: s.startS, endS: s.endS, probabilities: probabilitiesOf(classes, s.probabilities), label: s.label }))
      : null,
    backend: state.backend ? state.backend.kind : null,
    ms,
  });
  updateResultActions();
  const others = classes
    .map((c, i) => [c, a.probabilities[i]])
    .filter(([c]) => c !== a.label)
    .map(([c, p]) => `${c} ${Math.round(p * 100)}`)
    .join(", ");
  announce(`${name}: ${a.label}${a.uncertain ? " (uncertain)" : ""}, ${Math.round(a.probabilities[classes.indexOf(a.label)] * 100)} percent. Others: ${others} percent.`);
}

function summariseTimeline(segments) {
  const runs = [];
  for (const s of segments) {
    const last = runs[runs.length - 1];
    if (last && last.label === s.label) last.end = s.endS;
    else runs.push({ label: s.label, start: s.startS, end: s.endS });
  }
  return runs.slice(0, 12).map((r) => `${r.label} ${r.start.toFixed(0)}–${r.end.toFixed(0)} s`).join(", ");
}

function failRow(row, message) {
  row.dataset.state = "error";
  row.querySelector(".result-meta").textContent = "could not analyse";
  row.querySelector(".result-body").replaceWith(el("div", { class: "result-body" }, el("p", { class: "result-error", text: message })));
}

function updateResultActions() {
  const any = state.results.length > 0;
  $("export-csv").disabled = !any;
  $("export-json").disabled = !any;
  $("clear").disabled = $("results").children.length === 0;
}

const timelines = new Set();

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

/** `read`: the file's bytes again (a WAV's buffer is moved to the worker, not copied: a 2-hour
 * recording is 230 MB, and copying it blocked the page). */
async function analyseBuffer(name, buffer, read, onProgress = null) {
  const bytes = new Uint8Array(buffer);
  if (isWav(bytes)) {
    try {
      const again = async () => {
        const b = await read();
        return { payload: { bytes: b }, transfer: [b] };
      };
      return await engine.call("analyzeWav", { bytes: buffer }, { transfer: [buffer], again, onProgress });
    } catch (err) {
      // A WAV codec duet-dsp does not read (ADPCM, A-law…) may still be one the browser decodes.
      if (err.kind !== "unsupported-wav") throw err;
      buffer = await read();
    }
  }
  let pcm;
  try {
    pcm = await decodeInBrowser(buffer);
  } catch (err) {
    throw Object.assign(
      new Error(`not audio Duet can read: it is not a WAV file and this browser cannot decode it (${err.message || err.name}).`),
      { kind: "undecodable" });
  }
  return engine.call("analyzePcm", { planar: pcm.planar, channels: pcm.channels, sampleRate: pcm.sampleRate }, { onProgress });
}

// The largest file the page reads: it is held twice (here and in the worker's wasm memory, 4 GB at
// most) during its analysis. A WAV over 5 minutes is then read from those bytes a block at a time;
// a shorter one, or another format, is decoded to floats first (the worker refuses, from the header,
// a WAV that would not fit). Longer recordings are for `duet predict`, which reads from disk.
const MAX_FILE_BYTES = 500e6;

let fileQueue = Promise.resolve();
function handleFiles(fileList) {
  const received = performance.now();
  const files = [...fileList];
  for (const file of files) {
    if (file.size > MAX_FILE_BYTES) {
      // Refused before anything is read.
      const message = `${file.name}: too large for the page (${bytesText(file.size)}; it reads files up to ${bytesText(MAX_FILE_BYTES)}, about 4 hours of 16 kHz 16-bit WAV). \`duet predict\` analyses longer recordings.`;
      failRow(newRow(file.name), message);
      showError(message);
      continue;
    }
    if (/\.safetensors$/i.test(file.name)) {
      fileQueue = fileQueue.then(async () => useModelFile(file.name, await file.arrayBuffer()));
      continue;
    }
    const row = newRow(file.name);
    updateResultActions();
    fileQueue = fileQueue.then(async () => {
      state.busy++;
      try {
        const buffer = await file.arrayBuffer();
        if (isSafetensors(file.name, new Uint8Array(buffer))) {
          row.remove();
          await useModelFile(file.name, buffer);
          return;
        }
        const meta = row.querySelector(".result-meta");
        const progress = (done, total) => {
          meta.textContent = `analysing… ${Math.floor((100 * done) / total)}% (${done} of ${total} windows)`;
        };
        const a = await analyseBuffer(file.name, buffer, () => file.arrayBuffer(), progress);
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
    $("live-now").textContent = `now: ${a.label} ${pct(a.probabilities[a.classes.indexOf(a.label)])}${a.uncertain ? " (uncertain)" : ""}`;
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
    const t = e.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
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
    if (file) fileQueue = fileQueue.then(async () => useModelFile(file.name, await file.arrayBuffer()));
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
    renderModel(init.model);
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
