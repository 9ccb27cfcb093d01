// Bad input is reported in the page (role=alert), never only in the console, and the page keeps
// working: a non-audio file, a 10 ms clip, a truncated model file, a refused microphone. Then a
// model of the user's own is loaded from a file and used. The request log shows the page's own
// assets (the worker's wasm and model included) while it loads, and nothing afterwards.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  launch, openReady, fixtures, predictCli, dropFiles, waitResults, errorText,
  assertSameProbabilities, requestsAfter,
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
    // Back to the bundled model without a request.
    await b.page.click("#model-reset");
    await b.page.waitForFunction(() => /demo/i.test(document.getElementById("model-name").textContent));

    assert.deepEqual(requestsAfter(b.requests, readyAt), []);
  } finally {
    await b.close();
  }
});
