// Audio and model file formats, recognised from their first bytes, and the browser's decoder for
// the audio formats Duet's own WAV decoder (in the wasm) does not read.

export function isWav(b) {
  const tag = (o) => String.fromCharCode(b[o], b[o + 1], b[o + 2], b[o + 3]);
  return b.length >= 12 && (tag(0) === "RIFF" || tag(0) === "RF64" || tag(0) === "RIFX") && tag(8) === "WAVE";
}

export function isSafetensors(name, b) {
  if (/\.safetensors$/i.test(name)) return true;
  // 8-byte little-endian header length, then the JSON header.
  return b.length > 9 && b[8] === 0x7b && b[3] === 0 && b[4] === 0 && b[5] === 0 && b[6] === 0 && b[7] === 0;
}

// The file's own sample rate where its header says it cheaply, so the browser's decoder does not
// resample (the resampling to 16 kHz is duet-dsp's, in the wasm). Otherwise 48 kHz.
export function sniffRate(b) {
  const ascii = (o, n) => String.fromCharCode(...b.subarray(o, o + n));
  if (b.length > 22 && ascii(0, 4) === "fLaC") return (b[18] << 12) | (b[19] << 4) | (b[20] >> 4);
  if (b.length > 64 && ascii(0, 4) === "OggS") {
    const head = ascii(28, 8);
    if (head.startsWith("\x01vorbis")) return b[40] | (b[41] << 8) | (b[42] << 16) | (b[43] << 24);
    if (head === "OpusHead") return 48000;
  }
  let o = 0;
  if (b.length > 10 && ascii(0, 3) === "ID3") o = 10 + ((b[6] << 21) | (b[7] << 14) | (b[8] << 7) | b[9]);
  for (let i = o; i < Math.min(b.length - 4, o + 4096); i++) {
    if (b[i] === 0xff && (b[i + 1] & 0xe0) === 0xe0) {
      const version = (b[i + 1] >> 3) & 3; // 3: MPEG1, 2: MPEG2, 0: MPEG2.5
      const idx = (b[i + 2] >> 2) & 3;
      const base = [44100, 48000, 32000][idx];
      if (!base || version === 1) break;
      return version === 3 ? base : version === 2 ? base / 2 : base / 4;
    }
  }
  return 0;
}

export async function decodeInBrowser(buffer) {
  const rate = sniffRate(new Uint8Array(buffer)) || 48000;
  const ctx = new OfflineAudioContext(1, 1, rate >= 3000 && rate <= 768000 ? rate : 48000);
  const audio = await ctx.decodeAudioData(buffer.slice(0));
  const n = audio.length;
  const planar = new Float32Array(n * audio.numberOfChannels);
  for (let c = 0; c < audio.numberOfChannels; c++) planar.set(audio.getChannelData(c), c * n);
  return { planar, channels: audio.numberOfChannels, sampleRate: audio.sampleRate };
}
