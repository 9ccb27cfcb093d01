// The engine and model cards: which backend runs the model, how fast, and what the model is
// (kind, classes, training corpus, cross-validation figures, license, what it is not).
import { $, el, bytesText } from "./dom.js";
import { state } from "./state.js";
import { renderLegend } from "./results.js";

export function backendLabel(b) {
  return b.kind === "webgpu" ? "WebGPU" : b.kind === "wgpu" ? "GPU" : "CPU";
}

export function renderBackend(b) {
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
export function renderSpeed(speed) {
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

/** Fills the model card for `info` (the worker's description); `customModel` is the user's own
 * model file ({name}) or null for the bundled one. */
export function renderModel(info, customModel) {
  state.model = info;
  state.classes = info.classes;
  renderLegend(info.classes);
  const custom = Boolean(customModel);
  const prov = info.provenance || {};
  $("model-name").textContent = custom ? customModel.name : "Bundled model (demo.safetensors)";
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
  if (info.noisyBelowDb != null) {
    facts.push(["Noise", `a recording whose speech stands less than ${info.noisyBelowDb} dB above its noise floor is marked noisy: below that, this model's answers are unreliable (measured on copies with added noise)`]);
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
