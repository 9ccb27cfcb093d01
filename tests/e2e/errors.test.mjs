// Bad input is reported in the page (role=alert), never only in the console, and the page keeps
// working: a non-audio file, a 10 ms clip, a truncated model file, a refused microphone. Then a
// model of the user's own is loaded from a file and used. The request log shows the page's own
// assets (the worker's wasm and model included) while it loads, and nothing afterwards.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  launch, openReady, fixtures, predictCli, dropFiles, waitResults, errorText,
  assertSameProbabilities, requestsAfter, DEMO_MODEL,
} from "./lib.mjs";

test("errors are shown in the page and the page still analyses a good file afterwards", async () => {
  const fx = fixtures();
  const b = await launch({ webgpu: false });
  try {
    await openReady(b.page);
    const readyAt = Date.now();
    // The log does see the worker's requests: the wasm and the bundled model were fetched at load.
    const loaded = b.requests.map((r) => r.url);
    assert.ok(loaded.some((u) => u.endsWith("/duet-web_bg.wasm")), "the wasm fetch is logged");
    assert.ok(loaded.some((u) => u.endsWith("/www/models/demo.safetensors")), "the model fetch is logged");

    // 1. Not audio at all.
    await dropFiles(b.page, [fx.notAudio]);
    await waitResults(b.page, 1);
    let errors = await errorText(b.page);
    assert.match(errors, /notes\.txt: not audio Duet can read/);
    assert.equal(await b.page.$eval("#results .result", (e) => e.dataset.state), "error");

    // 2. Too short: the message says the minimum.
    await dropFiles(b.page, [fx.clip10ms]);
    await waitResults(b.page, 2);
    errors = await errorText(b.page);
    assert.match(errors, /clip-10ms\.wav: too short to analyse — audio is 0\.010 s long; .* needs at least 0\.\d+ s/);

    // 3. A truncated model file: an error, and the demo model stays in use.
    await dropFiles(b.page, [fx.truncatedModel]);
    await b.page.waitForFunction(() => /truncated\.safetensors: not a usable model file/.test(document.getElementById("errors").innerText));
    assert.match(await b.page.$eval("#model-name", (e) => e.textContent), /demo/i);

    // 4. The microphone refused (no permission is granted to this browser): said in the page.
    await b.page.click("#record");
    await b.page.waitForFunction(() => /microphone/i.test(document.getElementById("errors").innerText));
    assert.equal(await b.page.$eval("#record .record-label", (e) => e.textContent), "Record");
    errors = await errorText(b.page);
    assert.match(errors, /Microphone permission was denied|No microphone was found|microphone could not/);

    // 5. The errors sit in an alert region, announced to screen readers.
    assert.equal(await b.page.getAttribute("#errors", "role"), "alert");

    // And the page still works: a good file, as duet predict says.
    const good = fx.drop[0];
    await dropFiles(b.page, [good]);
    const results = await waitResults(b.page, 3);
    assert.equal(results.length, 1);
    assertSameProbabilities(assert, results[0], predictCli([good])["happy-16k-mono.wav"]);
    const announced = await b.page.$eval("#announcer", (e) => e.textContent);
    assert.match(announced, /happy-16k-mono\.wav: (angry|happy|neutral|sad), \d+ percent/);

    // A model of one's own: its card shows the file's kind and classes; results follow it.
    await b.page.setInputFiles("#model-input", [fx.customModel]);
    await b.page.waitForFunction(() => /my-base1\.safetensors/.test(document.getElementById("model-name").textContent));
    const card = await b.page.$eval("#model-facts", (e) => e.innerText);
    assert.match(card, /base1/);
    assert.match(card, /angry, happy, neutral, sad/);
    assert.equal(await b.page.$eval("#model-badge", (e) => e.textContent), "untrained");
    await dropFiles(b.page, [good]);
    const after = await waitResults(b.page, 4);
    assertSameProbabilities(assert, after.at(-1), predictCli([good], fx.customModel)["happy-16k-mono.wav"]);
    // A model whose classes the style sheet does not know: the legend lists them in the model's
    // order, and each gets a colour of its own in the legend and the bars.
    const renamed = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "duet-classes-")), "renamed.safetensors");
    fs.writeFileSync(renamed, withConfig((c) => { c.classes = ["anger", "joy", "calm", "sadness"]; }));
    await b.page.setInputFiles("#model-input", [renamed]);
    await b.page.waitForFunction(() => /renamed\.safetensors/.test(document.getElementById("model-name").textContent));
    assert.deepEqual(await b.page.$$eval("#legend li", (ls) => ls.map((l) => l.textContent)), ["anger", "joy", "calm", "sadness"]);
    await dropFiles(b.page, [good]);
    await waitResults(b.page, 5);
    const colours = await b.page.$$eval("#results > li:first-child .bar, #results > li:last-child .bar", (bars) =>
      bars.map((e) => [e.dataset.class, getComputedStyle(e).getPropertyValue("--c").trim()]));
    const last = Object.fromEntries(colours.filter(([c]) => ["anger", "joy", "calm", "sadness"].includes(c)));
    assert.equal(Object.keys(last).length, 4, JSON.stringify(colours));
    assert.equal(new Set(Object.values(last)).size, 4, `four distinct colours: ${JSON.stringify(last)}`);
    assert.ok(Object.values(last).every((v) => v !== ""), JSON.stringify(last));

    // Back to the bundled model without a request.
    await b.page.click("#model-reset");
    await b.page.waitForFunction(() => /demo/i.test(document.getElementById("model-name").textContent));
    assert.deepEqual(await b.page.$$eval("#legend li", (ls) => ls.map((l) => l.textContent)), ["angry", "happy", "neutral", "sad"]);

    assert.deepEqual(requestsAfter(b.requests, readyAt), []);
  } finally {
    await b.close();
  }
});

/** The bundled model with its `duet.config` edited by `edit`, as safetensors bytes. */
function withConfig(edit) {
  const model = fs.readFileSync(DEMO_MODEL);
  const n = Number(model.readBigUInt64LE(0));
  const header = JSON.parse(model.subarray(8, 8 + n).toString("utf8"));
  const config = JSON.parse(header.__metadata__["duet.config"]);
  edit(config);
  header.__metadata__["duet.config"] = JSON.stringify(config);
  const h = Buffer.from(JSON.stringify(header), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, model.subarray(8 + n)]);
}

/** A PCM WAV header claiming `dataBytes` of samples, followed by `frames` frames of silence. */
function wavHeader({ channels, bits, rate, dataBytes, frames }) {
  const block = (bits / 8) * channels;
  const h = Buffer.alloc(44);
  h.write("RIFF", 0);
  h.writeUInt32LE((36 + dataBytes) >>> 0, 4);
  h.write("WAVEfmt ", 8);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(channels, 22);
  h.writeUInt32LE(rate >>> 0, 24);
  h.writeUInt32LE((rate * block) >>> 0, 28);
  h.writeUInt16LE(block, 32);
  h.writeUInt16LE(bits, 34);
  h.write("data", 36);
  h.writeUInt32LE(dataBytes >>> 0, 40);
  return Buffer.concat([h, Buffer.alloc(frames * block)]);
}

// The hostile files of docs/robustness.md dropped on the page: model files whose numbers would take
// gigabytes or hang the front end, WAV headers that claim 4 GB, 65535 channels, 4 GHz. Each gives an
// error in the page naming the file, the bundled model stays, and a good file afterwards still
// analyses as `duet predict` says.
test("hostile model and audio files are refused in the page, which keeps working", async () => {
  const fx = fixtures();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "duet-hostile-"));
  const write = (name, bytes) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, bytes);
    return p;
  };
  const header63 = Buffer.from(fs.readFileSync(DEMO_MODEL));
  header63.writeBigUInt64LE(1n << 63n, 0);
  const models = [
    [write("resize_1e9.safetensors", withConfig((c) => { c.resize.narrow_frames = 1e9; })), /resize\.narrow_frames/],
    [write("bands_1e7.safetensors", withConfig((c) => { c.features.mfcc.n_bands = 1e7; })), /n_bands 10000000/],
    [write("header_2_pow_63.safetensors", header63), /header too large/],
  ];
  const wavs = [
    [write("data_4gb.wav", wavHeader({ channels: 1, bits: 16, rate: 16000, dataBytes: 0xfffffff0, frames: 16000 })), /declares 4294967280 bytes/],
    [write("channels_65535.wav", wavHeader({ channels: 65535, bits: 8, rate: 16000, dataBytes: 65535 * 100, frames: 100 })), /audio is 0\.006 s long/],
    [write("rate_4ghz.wav", wavHeader({ channels: 1, bits: 16, rate: 4e9, dataBytes: 2000, frames: 1000 })), /unsupported sample rate 4000000000 Hz/],
  ];
  const b = await launch({ webgpu: false });
  try {
    await openReady(b.page);
    // The worker's memory (a wasm memory never shrinks: its size is the peak) before and after.
    const memory = () => b.page.evaluate(() => window.duet.wasmMemoryBytes());
    const atStart = await memory();
    for (const [file, detail] of models) {
      const name = path.basename(file);
      await dropFiles(b.page, [file]);
      await b.page.waitForFunction((name) => document.getElementById("errors").innerText.includes(`${name}: not a usable model file`), name);
      assert.match(await errorText(b.page), detail);
      assert.match(await b.page.$eval("#model-name", (e) => e.textContent), /demo/i);
    }
    let n = 0;
    for (const [file, detail] of wavs) {
      const name = path.basename(file);
      await dropFiles(b.page, [file]);
      await waitResults(b.page, ++n);
      // The newest row is first: this file's, in the error state.
      const row = await b.page.$eval("#results .result", (e) => [e.querySelector(".result-name").textContent, e.dataset.state]);
      assert.deepEqual(row, [name, "error"]);
      const errors = await errorText(b.page);
      assert.ok(errors.includes(`${name}: `), `${name} is named in ${errors}`);
      assert.match(errors, detail);
    }
    // Headers claiming 10^9 frames, 10^7 bands, 2^63 bytes or 4 GB of samples: none is believed.
    const peak = await memory();
    console.log(`wasm memory ${(atStart / 1e6).toFixed(1)} -> ${(peak / 1e6).toFixed(1)} MB over the hostile files`);
    assert.ok(peak - atStart <= 16e6, `the worker's memory grew by ${((peak - atStart) / 1e6).toFixed(1)} MB`);
    const good = fx.drop[0];
    await dropFiles(b.page, [good]);
    const results = await waitResults(b.page, ++n);
    assertSameProbabilities(assert, results.at(-1), predictCli([good])["happy-16k-mono.wav"]);
  } finally {
    await b.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
