// Recording through Chromium's fake microphone (fed from a WAV of synthetic speech): the level
// meter moves, the live timeline draws while recording, and stopping shows probabilities.
import { test } from "node:test";
import assert from "node:assert/strict";
import { launch, openReady, fixtures, waitResults, requestsAfter } from "./lib.mjs";

test("recording: level meter, live timeline, probabilities on stop, nothing sent", async () => {
  const fx = fixtures();
  const b = await launch({ webgpu: false, fakeMic: fx.mic });
  try {
    await openReady(b.page);
    const readyAt = Date.now();
    // Keyboard: focus the button and press Enter.
    await b.page.focus("#record");
    await b.page.keyboard.press("Enter");
    await b.page.waitForFunction(() => document.body.dataset.recording === "true");
    assert.equal(await b.page.$eval("#record .record-label", (e) => e.textContent), "Stop");
    // The meter moves: sample its level for a while.
    let maxLevel = 0;
    const levels = new Set();
    for (let i = 0; i < 20; i++) {
      await b.page.waitForTimeout(150);
      const level = Number(await b.page.getAttribute("#meter", "data-level"));
      levels.add(level.toFixed(2));
      maxLevel = Math.max(maxLevel, level);
    }
    assert.ok(maxLevel > 0.2, `the meter rose (max ${maxLevel})`);
    assert.ok(levels.size > 3, "the meter moved");
    // The live timeline draws: several analyses, and coloured pixels on its canvas.
    await b.page.waitForFunction(() => Number(document.body.dataset.livePoints || 0) >= 3, null, { timeout: 60_000 });
    const painted = await b.page.$eval("#live-canvas", (c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      const colours = new Set();
      for (let i = 0; i < d.length; i += 4 * 7) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      return colours.size;
    });
    assert.ok(painted > 4, "the live timeline has colours on it");
    assert.match(await b.page.$eval("#live-now", (e) => e.textContent), /now: (angry|happy|neutral|sad) \d/);
    const elapsed = await b.page.$eval("#elapsed", (e) => e.textContent);
    assert.match(elapsed, /^0:0[2-9]\.\d$|^0:[1-5]\d\.\d$/);
    // With the single-key shortcut turned off, R does nothing; turned back on, R stops the take
    // (both with the shortcut's checkbox focused, as a keyboard user leaves it).
    await b.page.click("#shortcut-r");
    assert.equal(await b.page.evaluate(() => document.activeElement.id), "shortcut-r");
    await b.page.keyboard.press("r");
    await b.page.waitForTimeout(300);
    assert.equal(await b.page.evaluate(() => document.body.dataset.recording), "true", "R while turned off");
    assert.equal(await b.page.evaluate(() => localStorage.getItem("duet.shortcutR")), "off");
    await b.page.click("#shortcut-r");
    // Stop (the R key): the take is analysed and shown.
    await b.page.keyboard.press("r");
    const results = await waitResults(b.page, 1);
    assert.equal(results[0].name, "Recording 1");
    assert.ok(results[0].durationS > 2, `duration ${results[0].durationS}`);
    const sum = Object.values(results[0].probabilities).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4);
    assert.equal(await b.page.$eval("#record .record-label", (e) => e.textContent), "Record");
    assert.deepEqual(requestsAfter(b.requests, readyAt), []);
    assert.deepEqual(b.consoleErrors, []);
  } finally {
    await b.close();
  }
});
