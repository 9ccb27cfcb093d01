// Dropped and picked WAV files give the probabilities `duet predict --json` gives for the same files
// and model — on WebGPU and on the CPU fallback — and nothing is sent anywhere.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  launch, openReady, fixtures, predictCli, dropFiles, waitResults, assertSameProbabilities,
  requestsAfter, ROOT,
} from "./lib.mjs";

test("real recordings dropped on WebGPU: finite, and the same probabilities as duet predict", async () => {
  // Real speech (RAVDESS, tests/fixtures/ravdess): it drove the bundled model's cell states to where
  // the shader language's tanh is NaN on this adapter. Two of the three (a male and a female actor):
  // each takes over a minute on the software adapter; the CPU test below drops all three.
  const fx = fixtures();
  const real = fx.real.slice(0, 2);
  const cli = predictCli(real);
  const b = await launch({ webgpu: true });
  try {
    const backend = await openReady(b.page, "?backend=webgpu");
    const readyAt = Date.now();
    assert.equal(backend.kind, "webgpu");
    assert.equal(backend.label, "WebGPU");
    await dropFiles(b.page, real);
    const results = await waitResults(b.page, 2);
    assert.equal(results.length, 2);
    for (const r of results) {
      // Still on WebGPU: no result fell back to the CPU.
      assert.equal(r.backend, "webgpu");
      for (const [c, p] of Object.entries(r.probabilities)) {
        assert.ok(Number.isFinite(p), `${r.name}: ${c} is ${p}`);
      }
      assertSameProbabilities(assert, r, cli[r.name]);
      console.log(`${r.name}: ${r.label} (${JSON.stringify(r.probabilities)}) in ${Math.round(r.ms)} ms`);
    }
    // Each row shows every class by name with its percentage, the top one marked in text.
    const rows = await b.page.$$eval("#results .result", (els) =>
      els.map((e) => ({
        name: e.querySelector(".result-name").textContent,
        bars: [...e.querySelectorAll(".bar")].map((bar) => bar.textContent),
        top: e.querySelector(".bar.top .bar-name").textContent,
      })),
    );
    for (const row of rows) {
      assert.equal(row.bars.length, 4);
      for (const c of ["angry", "happy", "neutral", "sad"]) assert.ok(row.bars.some((t) => t.startsWith(c)));
      assert.match(row.top, /\(top\)/);
    }
    assert.deepEqual(requestsAfter(b.requests, readyAt), []);
    assert.deepEqual(b.consoleErrors, []);
  } finally {
    await b.close();
  }
});

test("without WebGPU: picked files match duet predict, FLAC decodes, long files get a timeline, export works", async () => {
  const fx = fixtures();
  const cli = predictCli([...fx.drop, fx.long, ...fx.real, fx.noisyReal]);
  const b = await launch({ webgpu: false });
  try {
    const backend = await openReady(b.page);
    const readyAt = Date.now();
    assert.equal(backend.kind, "cpu");
    assert.equal(backend.label, "CPU");
    // The file picker (keyboard users' way in).
    await b.page.setInputFiles("#file-input", fx.drop);
    let results = await waitResults(b.page, 3);
    for (const r of results) {
      assert.equal(r.backend, "cpu");
      assertSameProbabilities(assert, r, cli[r.name]);
    }
    // Real recordings, on the CPU too, and one under noise: marked noisy, as duet predict marks it.
    const real = [...fx.real, fx.noisyReal];
    await b.page.setInputFiles("#file-input", real);
    results = await waitResults(b.page, 3 + real.length);
    for (const r of results.slice(3)) {
      assert.equal(r.backend, "cpu");
      assertSameProbabilities(assert, r, cli[r.name]);
      assert.equal(r.noisy, cli[r.name].noisy, r.name);
      assert.ok(Math.abs(r.speechToNoiseDb - cli[r.name].speech_to_noise_db) < 0.01, r.name);
    }
    assert.equal(cli["noisy-real.wav"].noisy, true);
    assert.deepEqual(results.slice(3).filter((r) => r.noisy).map((r) => r.name), ["noisy-real.wav"]);
    // A badge on every result marked noisy and on no other (the synthetic clips have a noise floor
    // of their own, so some of them may carry one too).
    const badges = await b.page.$$eval("#results .result .noisy", (els) => els.map((e) => e.closest(".result").querySelector(".result-name").textContent));
    assert.deepEqual(badges.sort(), results.filter((r) => r.noisy).map((r) => r.name).sort());
    // FLAC goes through the browser's decoder at its own rate, then the same wasm path: the same
    // samples as the WAV it was made from. The same bytes named .wav first go to the worker's WAV
    // decoder (the page's fast path for that name), which refuses them; the page then decides by
    // the first bytes and decodes them as FLAC all the same.
    const misnamed = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "duet-misnamed-")), "flac-bytes.wav");
    fs.copyFileSync(fx.flac, misnamed);
    await b.page.setInputFiles("#file-input", [fx.flac, misnamed]);
    results = await waitResults(b.page, 5 + real.length);
    for (const name of ["happy.flac", "flac-bytes.wav"]) {
      const r = results.find((x) => x.name === name);
      assert.ok(r && r.probabilities, `${name}: ${JSON.stringify(r)}`);
      assertSameProbabilities(assert, { ...r, name }, cli["happy-16k-mono.wav"]);
    }

    // A 12 s file: whole-file probabilities as duet predict, plus a timeline of 3 s windows.
    await b.page.setInputFiles("#file-input", [fx.long]);
    results = await waitResults(b.page, 6 + real.length);
    const long = results.find((r) => r.name === "long-12s.wav");
    assertSameProbabilities(assert, long, cli["long-12s.wav"]);
    assert.ok(long.timeline && long.timeline.length >= 5, "a timeline of segments");
    assert.equal(long.timeline[0].startS, 0);
    assert.ok(Math.abs(long.timeline.at(-1).endS - long.durationS) < 1e-3);
    const canvas = await b.page.$$eval("#results .result-timeline canvas", (c) => c.length);
    assert.equal(canvas, 1);
    // The segment table's rows are made when it is opened.
    assert.equal(await b.page.$$eval("#results .segments tbody tr", (r) => r.length), 0);
    await b.page.click("#results .segments summary");
    await b.page.waitForFunction(
      (n) => document.querySelectorAll("#results .segments tbody tr").length === n,
      long.timeline.length,
    );

    // Exports: CSV and JSON carry the same numbers.
    const [csvDl] = await Promise.all([b.page.waitForEvent("download"), b.page.click("#export-csv")]);
    const csv = fs.readFileSync(await csvDl.path(), "utf8").trim().split("\n");
    assert.equal(csv[0], "file,duration_s,angry,happy,neutral,sad,label,backend");
    assert.equal(csv.length, 1 + results.length);
    const [jsonDl] = await Promise.all([b.page.waitForEvent("download"), b.page.click("#export-json")]);
    const doc = JSON.parse(fs.readFileSync(await jsonDl.path(), "utf8"));
    assert.equal(doc.results.length, results.length);
    const jl = doc.results.find((r) => r.file === "long-12s.wav");
    assert.deepEqual(jl.probabilities, long.probabilities);
    assert.equal(jl.timeline.length, long.timeline.length);

    assert.deepEqual(requestsAfter(b.requests, readyAt), []);
    assert.deepEqual(b.consoleErrors, []);
    // The README's picture (results, with a timeline), only when asked for:
    // DUET_SCREENSHOT=docs/screenshot.png cargo xtask test
    if (process.env.DUET_SCREENSHOT) {
      await b.page.evaluate(() => window.scrollTo(0, 0));
      await b.page.screenshot({ path: path.resolve(ROOT, process.env.DUET_SCREENSHOT), fullPage: true });
    }
  } finally {
    await b.close();
  }
});
