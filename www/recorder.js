// The microphone: getUserMedia into an AudioWorklet (recorder-worklet.js) that hands back mono
// Float32 blocks. The AudioContext and its worklet module are made when the page loads, so that
// recording fetches nothing; the context only runs while recording.

const MAX_SECONDS = 600;

export function describeMicError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone permission was denied. Allow the microphone for this page in your browser's site settings to record — or drop an audio file instead.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one and try again — or drop an audio file instead.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be opened (another application may be using it). Try again — or drop an audio file instead.";
    case "NoMediaDevices":
      return "This browser gives no access to a microphone here (the page must be served over https or from localhost).";
    default:
      return `The microphone could not be started: ${err && err.message ? err.message : err}`;
  }
}

export class Recorder {
  constructor(workletUrl) {
    this.workletUrl = workletUrl;
    this.ctx = null;
    this.recording = false;
    this.reset();
  }

  reset() {
    this.chunks = [];
    this.length = 0;
    this.rms = 0;
    this.peak = 0;
    this.peakHold = 0;
    this.peakAt = 0;
  }

  get sampleRate() {
    return this.ctx ? this.ctx.sampleRate : 48000;
  }

  async prepare() {
    if (typeof AudioWorkletNode === "undefined") throw new Error("this browser has no AudioWorklet");
    // Created suspended: it starts on the Record press (a user gesture).
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule(this.workletUrl);
    if (this.ctx.state === "running") await this.ctx.suspend();
  }

  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw Object.assign(new Error("no mediaDevices"), { name: "NoMediaDevices" });
    }
    if (!this.ctx) await this.prepare();
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    await this.ctx.resume();
    this.reset();
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "duet-recorder", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit",
      channelInterpretation: "speakers",
    });
    this.flushed = null;
    this.node.port.onmessage = ({ data }) => {
      if (data.flushed) {
        if (this.flushed) this.flushed();
        return;
      }
      if (!this.recording) return;
      this.chunks.push(data.samples);
      this.length += data.samples.length;
      this.rms = data.rms;
      this.peak = data.peak;
      const now = performance.now();
      if (data.peak >= this.peakHold || now - this.peakAt > 1200) {
        this.peakHold = data.peak;
        this.peakAt = now;
      }
      if (this.length > MAX_SECONDS * this.sampleRate && this.onLimit) this.onLimit();
    };
    this.source.connect(this.node);
    // The node's output is silence; connecting it keeps the graph pulling it.
    this.node.connect(this.ctx.destination);
    this.recording = true;
    this.startedAt = performance.now();
    const track = this.stream.getAudioTracks()[0];
    if (track) track.addEventListener("ended", () => this.onEnded && this.onEnded());
  }

  elapsed() {
    return this.recording ? (performance.now() - this.startedAt) / 1000 : this.length / this.sampleRate;
  }

  level() {
    return { rms: this.rms, peak: this.peak, peakHold: this.peakHold };
  }

  /** The last `n` samples (fewer at the start) and the sample index where they end. */
  tail(n) {
    const take = Math.min(n, this.length);
    const out = new Float32Array(take);
    let filled = 0;
    for (let i = this.chunks.length - 1; i >= 0 && filled < take; i--) {
      const c = this.chunks[i];
      const k = Math.min(c.length, take - filled);
      out.set(c.subarray(c.length - k), take - filled - k);
      filled += k;
    }
    return { samples: out, end: this.length };
  }

  /** Stops and returns the whole take: {samples, sampleRate, duration}. */
  async stop() {
    if (this.node) {
      const done = new Promise((resolve) => {
        this.flushed = resolve;
        setTimeout(resolve, 300);
      });
      this.node.port.postMessage("stop");
      await done;
    }
    this.recording = false;
    if (this.source) this.source.disconnect();
    if (this.node) this.node.disconnect();
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.source = this.node = this.stream = null;
    if (this.ctx && this.ctx.state === "running") await this.ctx.suspend();
    const samples = new Float32Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      samples.set(c, o);
      o += c.length;
    }
    this.chunks = [];
    return { samples, sampleRate: this.sampleRate, duration: this.length / this.sampleRate };
  }
}
