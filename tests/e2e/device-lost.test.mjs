// Losing the GPU device mid-session (the browser's own GPUDevice.destroy()) moves the page to the
// CPU backend, says so, and later analyses still match duet predict.
import { test } from "node:test";
import assert from "node:assert/strict";
import { launch, openReady, fixtures, predictCli, dropFiles, waitResults, assertSameProbabilities } from "./lib.mjs";

test("a lost GPU device falls back to the CPU and the page says so", async () => {
  const fx = fixtures();
  const good = fx.drop[0];
  const b = await launch({ webgpu: true });
  try {
    const backend = await openReady(b.page);
    assert.equal(backend.kind, "webgpu");
    assert.equal(await b.page.evaluate(() => window.duet.loseGpuDevice()), true);
    await b.page.waitForFunction(() => document.body.dataset.backend === "cpu", null, { timeout: 120_000 });
    assert.equal(await b.page.$eval("#backend", (e) => e.textContent), "CPU");
    assert.match(await b.page.$eval("#notices", (e) => e.innerText), /GPU device was lost .*moved to the CPU/);
    await dropFiles(b.page, [good]);
    const results = await waitResults(b.page, 1);
    assert.equal(results[0].backend, "cpu");
    assertSameProbabilities(assert, results[0], predictCli([good])["happy-16k-mono.wav"]);
  } finally {
    await b.close();
  }
});
