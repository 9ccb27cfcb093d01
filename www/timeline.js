// Emotion timelines on a canvas: stacked class probabilities over time. A static one for a long file
// (its segments, fitted to the width) and a live one that scrolls smoothly while recording.

const CLASS_VARS = { angry: "--angry", happy: "--happy", neutral: "--neutral", sad: "--sad" };
const EXTRA = ["#b48cff", "#4fd1a5", "#ff9f6b", "#e879c6"];

/** Whether the style sheet has a colour of its own for class `name` (`.c-<name>`). */
export function hasStyledColour(name) {
  return Object.hasOwn(CLASS_VARS, name);
}

/** The colour of a class, from the style sheet (dark/light aware); other classes get extra hues. */
export function classColour(name, index = 0) {
  const v = CLASS_VARS[name];
  const css = v && getComputedStyle(document.documentElement).getPropertyValue(v).trim();
  return css || EXTRA[index % EXTRA.length];
}

const LIVE_SPAN_S = 20;

export class TimelineView {
  constructor(canvas, classes) {
    this.canvas = canvas;
    this.classes = classes;
    this.points = []; // {t, probs}
    this.mode = "live";
    this.now = 0;
    this.duration = 0;
    this.frame = 0;
    this.resize();
  }

  setClasses(classes) {
    this.classes = classes;
    this.colours = null;
    this.draw();
  }

  reset() {
    this.points = [];
    this.now = 0;
    this.draw();
  }

  /** A long file's segments: each window's probabilities drawn at its centre. */
  setStatic(segments, duration) {
    this.mode = "static";
    this.duration = duration;
    this.points = segments.map((s) => ({ t: (s.startS + s.endS) / 2, probs: s.probabilities }));
    this.draw();
  }

  /** Live: a new analysis of the window ending at `t` seconds. */
  push(t, probs) {
    this.points.push({ t, probs });
    this.schedule();
  }

  /** Live: the recording's clock; the view scrolls so that `t` is at the right edge. */
  setNow(t) {
    this.now = t;
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.colours = null;
    this.draw();
  }

  /** Linear interpolation of the probabilities at time t (held flat beyond the ends). */
  at(t) {
    const p = this.points;
    if (!p.length) return null;
    if (t <= p[0].t) return this.mode === "static" || t >= p[0].t - 0.5 ? p[0].probs : null;
    if (t >= p[p.length - 1].t) return p[p.length - 1].probs;
    let lo = 0;
    let hi = p.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (p[mid].t <= t) lo = mid;
      else hi = mid;
    }
    const a = p[lo];
    const b = p[hi];
    const f = (t - a.t) / (b.t - a.t || 1);
    return a.probs.map((v, i) => v + (b.probs[i] - v) * f);
  }

  draw() {
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    const w = canvas.width;
    const h = canvas.height;
    const dpr = window.devicePixelRatio || 1;
    const styles = getComputedStyle(document.documentElement);
    if (!this.colours) this.colours = this.classes.map((c, i) => classColour(c, i));
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = styles.getPropertyValue("--track").trim() || "#222";
    ctx.fillRect(0, 0, w, h);

    let t0;
    let t1;
    if (this.mode === "static") {
      t0 = 0;
      t1 = Math.max(this.duration, 1e-3);
    } else {
      t1 = Math.max(this.now, LIVE_SPAN_S);
      t0 = t1 - LIVE_SPAN_S;
    }
    const step = Math.max(1, Math.round(2 * dpr));
    const xLast = this.mode === "live" && this.points.length ? ((this.points[this.points.length - 1].t - t0) / (t1 - t0)) * w : w;
    for (let x = 0; x < w; x += step) {
      if (x > xLast) break;
      const probs = this.at(t0 + ((x + step / 2) / w) * (t1 - t0));
      if (!probs) continue;
      let y = h;
      for (let i = 0; i < probs.length; i++) {
        const hh = probs[i] * h;
        ctx.fillStyle = this.colours[i];
        ctx.fillRect(x, y - hh, step, hh + 0.5);
        y -= hh;
      }
    }

    // Grid: a line every 5 s (every 1 s for short files) with its time.
    const span = t1 - t0;
    const every = span > 60 ? 10 : span > 8 ? 5 : 1;
    ctx.strokeStyle = styles.getPropertyValue("--grid").trim() || "rgba(255,255,255,0.25)";
    ctx.fillStyle = styles.getPropertyValue("--fg").trim() || "#fff";
    ctx.lineWidth = 1;
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    for (let s = Math.ceil(Math.max(t0, 0) / every) * every; s <= t1; s += every) {
      const x = Math.round(((s - t0) / span) * w) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
      ctx.stroke();
      ctx.fillText(`${s}s`, x + 3 * dpr, 3 * dpr);
    }
    if (this.mode === "live" && !this.points.length) {
      ctx.textBaseline = "middle";
      ctx.textAlign = "center";
      ctx.fillText(this.now > 0 ? "listening…" : "press Record to see emotions over time", w / 2, h / 2);
      ctx.textAlign = "start";
    }
  }
}
