// The page starts its engine on WebGPU when the browser offers it, and on the CPU otherwise.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { launch, openReady, ROOT } from "./lib.mjs";

test("with WebGPU the page runs on WebGPU and its self-test passes", async () => {
  const b = await launch({ webgpu: true });
  try {
    const backend = await openReady(b.page);
    console.log(`backend: ${backend.label} (${backend.adapter})`);
    assert.equal(backend.kind, "webgpu");
    assert.equal(backend.label, "WebGPU");
    assert.ok(backend.adapter.length > 0);
    const selftest = await b.page.evaluate(() => document.getElementById("selftest").innerText);
    assert.match(selftest, /^ok/);
    assert.deepEqual(b.consoleErrors, []);
    await b.page.screenshot({ path: path.join(ROOT, "docs/screenshot.png"), fullPage: true });
  } finally {
    await b.close();
  }
});

test("without WebGPU the page falls back to the CPU and its self-test passes", async () => {
  const b = await launch({ webgpu: false });
  try {
    const backend = await openReady(b.page);
    console.log(`backend: ${backend.label} (${backend.adapter})`);
    assert.equal(backend.kind, "cpu");
    assert.equal(backend.label, "CPU");
    const selftest = await b.page.evaluate(() => document.getElementById("selftest").innerText);
    assert.match(selftest, /^ok/);
    assert.deepEqual(b.consoleErrors, []);
  } finally {
    await b.close();
  }
});
