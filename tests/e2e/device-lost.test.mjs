// Losing the GPU device mid-session (the browser's own GPUDevice.destroy()) moves the page to the
// CPU backend, says so, and later analyses still match duet predict. A non-finite result on WebGPU
// is never shown: the input is analysed again on the CPU, and a model that overflows there too
// gives an error, not a result.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  launch, openReady, fixtures, predictCli, dropFiles, waitResults, assertSameProbabilities, errorText,
} from "./lib.mjs";

test("a lost GPU device falls back to the CPU and the page says so", async () => {
  const fx = fixtures();
  const good = fx.drop[0];
  const b = await launch({ webgpu: true });
  try {
    const backend = await openReady(b.page, "?backend=webgpu");
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

test("a non-finite result on WebGPU is retried on the CPU, and never shown", async () => {
  const fx = fixtures();
  const good = fx.drop[0];
  const b = await launch({ webgpu: true });
  try {
    assert.equal((await openReady(b.page, "?backend=webgpu")).kind, "webgpu");
    // A model whose logits overflow (its head's weights are 3e38): NaN on every backend.
    await b.page.setInputFiles("#model-input", [fx.overflowModel]);
    await b.page.waitForFunction(() => /overflow\.safetensors/.test(document.getElementById("model-name").textContent));
    await dropFiles(b.page, [good]);
    await waitResults(b.page, 1);
    // Tried on WebGPU, then on the CPU (which the page now keeps), then reported as an error.
    assert.equal(await b.page.$eval("#results .result", (e) => e.dataset.state), "error");
    assert.match(await errorText(b.page), /happy-16k-mono\.wav: no result — the cpu backend computed a non-finite output/);
    assert.match(await b.page.$eval("#notices", (e) => e.innerText), /WebGPU computed non-finite probabilities.*on the CPU/);
    assert.equal(await b.page.evaluate(() => document.body.dataset.backend), "cpu");
    const shown = await b.page.evaluate(() => window.duet.state.results.filter((r) => r.probabilities));
    assert.deepEqual(shown, []);
    // The bundled model again: results as duet predict's, on the CPU for the rest of the session.
    await b.page.click("#model-reset");
    await b.page.waitForFunction(() => /demo/i.test(document.getElementById("model-name").textContent));
    await dropFiles(b.page, [good]);
    const results = await waitResults(b.page, 2);
    const last = results.at(-1);
    assert.equal(last.backend, "cpu");
    assertSameProbabilities(assert, last, predictCli([good])["happy-16k-mono.wav"]);
  } finally {
    await b.close();
  }
});
