// Recordings over 5 minutes dropped on the page: progress while they run, then the mean of their
// windows, as `duet predict` gives it, with the worker's memory growing with the samples it must
// hold, not with the analysis; a file too large for the page is refused before it is read.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { launch, openReady, fixtures, predictCli, waitResults, assertSameProbabilities, errorText } from "./lib.mjs";

const MB = 1e6;

test("recordings over 5 minutes are the mean of their windows, as duet predict says; a file over 500 MB is refused unread", async () => {
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
    // The 11-minute file is held as its bytes and read from them a block at a time; its windows go a
    // batch at a time, as the 6-minute one's did, so the memory grows by at most 3 times the file
    // (allocator slack included). One call over the whole recording grew with its length.
    const size = fs.statSync(fx.elevenMinutes).size;
    assert.ok(
      peaks[2] - peaks[1] <= 3 * size + 32 * MB,
      `wasm memory ${peaks.map((p) => (p / MB).toFixed(1)).join(" -> ")} MB`,
    );

    // Too large: refused with a message before a byte is read (a sparse file: nothing on disk).
    const huge = path.join(fx.dir, "huge.wav");
    fs.writeFileSync(huge, "");
    fs.truncateSync(huge, 501 * MB);
    await b.page.setInputFiles("#file-input", [huge]);
    await b.page.waitForFunction(() => document.querySelector('#results .result[data-state="error"]'));
    assert.match(await errorText(b.page), /huge\.wav: too large for the page \(501\.0 MB; it reads files up to 500\.0 MB/);
    assert.equal(await memory(), peaks[2], "nothing was read into the worker");
  } finally {
    await b.close();
  }
});
