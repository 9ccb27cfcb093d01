// Recordings over 5 minutes dropped on the page: progress while they run, then the mean of their
// windows, as `duet predict` gives it, with the worker reading the file a block at a time (its
// memory does not grow with the recording); a file the browser would have to decode whole and
// cannot hold is refused before it is read.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { launch, openReady, fixtures, predictCli, waitResults, assertSameProbabilities, errorText } from "./lib.mjs";

const MB = 1e6;

test("recordings over 5 minutes are the mean of their windows, as duet predict says; a 501 MB file in another format is refused unread", async () => {
  const fx = fixtures();
  const files = [fx.sixMinutes, fx.elevenMinutes];
  const cli = predictCli(files);
  const b = await launch({ webgpu: false });
  try {
    await openReady(b.page);
    const memory = () => b.page.evaluate(() => window.duet.wasmMemoryBytes());
    // A wasm memory never shrinks: its size after an analysis is the peak so far.
    const peaks = [await memory()];
    for (const [i, file] of files.entries()) {
      const name = path.basename(file);
      assert.match(cli[name].summary, /^mean of \d+ windows$/);
      await b.page.setInputFiles("#file-input", [file]);
      // Progress while it runs: the share of windows done.
      await b.page.waitForFunction(() =>
        /^analysing… \d+% \(\d+ of \d+ windows\)$/.test(document.querySelector("#results .result .result-meta").textContent),
      );
      const r = (await waitResults(b.page, i + 1)).find((x) => x.name === name);
      assertSameProbabilities(assert, r, cli[name]);
      const meta = await b.page.$eval(`#results .result[data-label] .result-meta`, (e) => e.textContent);
      assert.ok(meta.includes(cli[name].summary), `the row says how the answer was reached: ${meta}`);
      assert.equal(r.timeline.length, Number(cli[name].summary.split(" ")[2]), "every window on the timeline");
      peaks.push(await memory());
      console.log(`${name}: ${(fs.statSync(file).size / MB).toFixed(1)} MB file, wasm memory ${(peaks.at(-1) / MB).toFixed(1)} MB`);
    }
    // Both files are read from disk a block at a time and their windows go a batch at a time, so
    // the 11-minute file, twice the 6-minute one, needs no more memory than it did (with the file's
    // bytes held in the worker it grew by 59 MB, 24.7 -> 168.8 -> 227.7 MB).
    console.log(`wasm memory ${peaks.map((p) => (p / MB).toFixed(1)).join(" -> ")} MB`);
    assert.ok(
      peaks[2] - peaks[1] <= 4 * MB,
      `wasm memory ${peaks.map((p) => (p / MB).toFixed(1)).join(" -> ")} MB`,
    );

    // Not a WAV and too large to decode in the browser: refused with a message before it is read
    // (past its first bytes, which say its format; a sparse file: nothing on disk).
    const huge = path.join(fx.dir, "huge.wav");
    fs.writeFileSync(huge, "");
    fs.truncateSync(huge, 501 * MB);
    await b.page.setInputFiles("#file-input", [huge]);
    await b.page.waitForFunction(() => document.querySelector('#results .result[data-state="error"]'));
    assert.match(await errorText(b.page), /huge\.wav: too large for the page — 501\.0 MB; it reads files up to 500\.0 MB unless they are WAV/);
    assert.equal(await memory(), peaks[2], "nothing was read into the worker");

    // A model file is held whole: one over 500 MB is refused before it is read, the model stays.
    const hugeModel = path.join(fx.dir, "huge.safetensors");
    fs.writeFileSync(hugeModel, "");
    fs.truncateSync(hugeModel, 501 * MB);
    await b.page.setInputFiles("#file-input", [hugeModel]);
    await b.page.waitForFunction(() => /huge\.safetensors/.test(document.getElementById("errors").innerText));
    assert.match(await errorText(b.page), /huge\.safetensors: too large for a model file \(501\.0 MB; the page reads models up to 500\.0 MB\)\. The previous model stays in use\./);
    assert.equal(await memory(), peaks[2], "nothing was read into the worker");
  } finally {
    await b.close();
  }
});
