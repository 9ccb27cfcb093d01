// The page starts its engine on WebGPU when the browser offers it, and on the CPU otherwise; either
// way the self-test passes, the bundled model is loaded and described, and the page is locked to
// its own origin by its Content-Security-Policy. Offered both, it times them and keeps the faster.
import { test } from "node:test";
import assert from "node:assert/strict";
import { launch, openReady, URL as PAGE_URL } from "./lib.mjs";

async function modelCard(page) {
  return {
    name: await page.$eval("#model-name", (e) => e.textContent),
    badge: await page.$eval("#model-badge", (e) => e.textContent),
    facts: await page.$eval("#model-facts", (e) => e.innerText),
    note: await page.$eval("#model-note", (e) => e.innerText),
  };
}

test("offered WebGPU, the page times both backends on the same clip and keeps the faster", async () => {
  const b = await launch({ webgpu: true });
  try {
    const backend = await openReady(b.page);
    const speed = await b.page.$eval("#speed", (e) => e.textContent);
    console.log(`backend: ${backend.label} (${backend.adapter}); speed: ${speed}`);
    const m = speed.match(/^4 s clip: WebGPU (\d+) ms( ✓)? · CPU (\d+) ms( ✓)?$/);
    assert.ok(m, speed);
    const [webgpuMs, cpuMs] = [Number(m[1]), Number(m[3])];
    const chosen = webgpuMs <= cpuMs ? "webgpu" : "cpu";
    assert.equal(backend.kind, chosen);
    assert.equal(Boolean(m[2]), chosen === "webgpu");
    assert.equal(Boolean(m[4]), chosen === "cpu");
    if (chosen === "cpu") {
      const why = await b.page.$eval("#fallback-reason", (e) => e.textContent);
      assert.match(why, /faster than WebGPU/);
    }
    const selftest = await b.page.evaluate(() => document.getElementById("selftest").innerText);
    assert.match(selftest, /^ok/);
    assert.deepEqual(b.consoleErrors, []);
  } finally {
    await b.close();
  }
});

test("with ?backend=webgpu the page runs on WebGPU, names the adapter, and its self-test passes", async () => {
  const b = await launch({ webgpu: true });
  try {
    const backend = await openReady(b.page, "?backend=webgpu");
    assert.match(await b.page.$eval("#speed", (e) => e.textContent), /not compared/);
    console.log(`backend: ${backend.label} (${backend.adapter})`);
    assert.equal(backend.kind, "webgpu");
    assert.equal(backend.label, "WebGPU");
    // The adapter's own name from the browser (wgpu's is empty in browsers).
    assert.ok(backend.adapter.length > 0);
    assert.doesNotMatch(backend.adapter, /BrowserWebGpu/);
    const selftest = await b.page.evaluate(() => document.getElementById("selftest").innerText);
    assert.match(selftest, /^ok/);
    const card = await modelCard(b.page);
    assert.match(card.name, /demo/i);
    assert.match(card.facts, /angry, happy, neutral, sad/);
    // The bundled model is trained on real speech and its card says so, with what it is not and the
    // weights' license (RAVDESS's), and the cross-validation figures.
    assert.equal(card.badge, "demo");
    assert.match(card.note, /real speech/);
    assert.match(card.note, /not for judging people/i);
    assert.match(card.note, /CC BY-NC-SA 4\.0/);
    assert.match(card.facts, /ravdess 720/);
    assert.match(card.facts, /cv ua mean/);
    assert.match(card.facts, /license/);
    assert.match(card.note, /train --corpus/);
    assert.deepEqual(b.consoleErrors, []);
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
    // The CSP allows only this origin (and wasm compilation): a request to another origin — the
    // same server under the name `localhost`, which answers without a CSP — is refused by the
    // policy itself, which the browser reports as a violation of connect-src.
    const csp = await b.page.$eval('meta[http-equiv="Content-Security-Policy"]', (m) => m.content);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /connect-src 'self'/);
    const other = new URL(PAGE_URL);
    other.hostname = other.hostname === "localhost" ? "127.0.0.1" : "localhost";
    const violation = await b.page.evaluate(async (target) => {
      const seen = new Promise((resolve) =>
        document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective), { once: true }),
      );
      const sent = await fetch(target, { mode: "no-cors" }).then(() => "sent", () => "refused");
      const directive = await Promise.race([seen, new Promise((r) => setTimeout(() => r(null), 2000))]);
      return { sent, directive };
    }, other.href);
    assert.deepEqual(violation, { sent: "refused", directive: "connect-src" });
    // The server sends the same policy as a header (one source: index.html's meta element).
    const header = await b.page.evaluate(async () => (await fetch("/")).headers.get("content-security-policy"));
    assert.equal(header, csp);
    assert.equal(b.consoleErrors.filter((e) => !/Content Security Policy/.test(e)).length, 0);
  } finally {
    await b.close();
  }
});
