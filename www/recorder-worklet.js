// The microphone's AudioWorklet: receives the input already down-mixed to mono by the browser
// (channelCount 1, "explicit"), and posts blocks of Float32 samples with their peak and RMS level
// (for the meter) to the page. No other processing: the page hands the samples to the wasm.
const BLOCK = 2048;

class DuetRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK);
    this.filled = 0;
    this.active = true;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.flush();
        this.port.postMessage({ flushed: true });
      } else if (event.data === "stop") {
        this.flush();
        this.active = false;
        this.port.postMessage({ flushed: true });
      }
    };
  }

  flush() {
    if (this.filled === 0) return;
    const samples = this.block.slice(0, this.filled);
    let peak = 0;
    let sum = 0;
    for (let i = 0; i < samples.length; i++) {
      const v = samples[i];
      const a = v < 0 ? -v : v;
      if (a > peak) peak = a;
      sum += v * v;
    }
    this.port.postMessage({ samples, peak, rms: Math.sqrt(sum / samples.length) }, [samples.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && this.active) {
      let i = 0;
      while (i < channel.length) {
        const n = Math.min(channel.length - i, BLOCK - this.filled);
        this.block.set(channel.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === BLOCK) this.flush();
      }
    }
    return this.active;
  }
}

registerProcessor("duet-recorder", DuetRecorder);
