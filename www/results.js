// The results list: one row per analysed file or recording, with its probabilities, its timeline
// and its segments; the legend of the model's classes.
import { $, el, pct, seconds, announce } from "./dom.js";
import { state } from "./state.js";
import { TimelineView, classColour, hasStyledColour } from "./timeline.js";

/** Gives `node` class `c`'s colour (`--c`): the style sheet's for the four emotions, an extra hue
 * for a class of a user's model that the sheet does not know. */
export function tint(node, c) {
  node.classList.add(`c-${c}`);
  if (!hasStyledColour(c)) node.style.setProperty("--c", classColour(c, Math.max(0, state.classes.indexOf(c))));
  return node;
}

/** The legend above the results: the loaded model's classes, in its order. */
export function renderLegend(classes) {
  $("legend").replaceChildren(...classes.map((c) =>
    tint(el("li", {}, el("span", { class: "swatch", "aria-hidden": "true" }), c), c)));
}

export function probabilitiesOf(classes, values) {
  return Object.fromEntries(classes.map((c, i) => [c, values[i]]));
}

export function barList(classes, probabilities, label) {
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

export function segmentTable(classes, segments) {
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

export function newRow(name) {
  $("results-empty").hidden = true;
  const row = el("li", { class: "result", "data-state": "pending" },
    el("div", { class: "result-head" },
      el("h3", { class: "result-name", text: name }),
      el("span", { class: "result-meta", text: "analysing…" })),
    el("div", { class: "result-body" }, el("div", { class: "spinner", "aria-hidden": "true" })));
  $("results").prepend(row);
  return row;
}

export function fillRow(row, name, a, ms) {
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
  if (a.noisy) {
    const limit = state.model ? state.model.noisyBelowDb : 30;
    top.append(" ", el("span", {
      class: "uncertain noisy",
      text: "noisy",
      title: `The speech stands only ${Math.round(a.speechToNoiseDb)} dB above the recording's noise floor (under ${limit} dB). Below that, this model's answers are unreliable: record in a quiet room, close to the microphone.`,
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
    noisy: Boolean(a.noisy),
    speechToNoiseDb: a.speechToNoiseDb == null ? null : a.speechToNoiseDb,
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
  announce(`${name}: ${a.label}${a.uncertain ? " (uncertain)" : ""}${a.noisy ? " (noisy recording)" : ""}, ${Math.round(a.probabilities[classes.indexOf(a.label)] * 100)} percent. Others: ${others} percent.`);
}

export function summariseTimeline(segments) {
  const runs = [];
  for (const s of segments) {
    const last = runs[runs.length - 1];
    if (last && last.label === s.label) last.end = s.endS;
    else runs.push({ label: s.label, start: s.startS, end: s.endS });
  }
  return runs.slice(0, 12).map((r) => `${r.label} ${r.start.toFixed(0)}–${r.end.toFixed(0)} s`).join(", ");
}

export function failRow(row, message) {
  row.dataset.state = "error";
  row.querySelector(".result-meta").textContent = "could not analyse";
  row.querySelector(".result-body").replaceWith(el("div", { class: "result-body" }, el("p", { class: "result-error", text: message })));
}

export function updateResultActions() {
  const any = state.results.length > 0;
  $("export-csv").disabled = !any;
  $("export-json").disabled = !any;
  $("clear").disabled = $("results").children.length === 0;
}

export const timelines = new Set();
