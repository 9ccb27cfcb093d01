// Shared helpers for the browser end-to-end tests: launch Debian's Chromium through playwright-core
// (no browser download), collect console errors and every network request the page makes.
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const URL = process.env.DUET_URL;
export const ROOT = process.env.DUET_ROOT || path.resolve(import.meta.dirname, "../..");
export const DUET_BIN = process.env.DUET_BIN || path.join(ROOT, "target/debug/duet");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

if (!URL) {
  throw new Error("DUET_URL is not set: run the e2e tests through `cargo xtask test`");
}

const BASE_ARGS = [
  "--no-sandbox",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

/**
 * Launches headless Chromium. `webgpu: true` enables WebGPU (SwiftShader's software adapter on a
 * machine without a GPU); `webgpu: false` leaves it off, so the page must fall back to the CPU.
 * `fakeMic`: a WAV file that stands in for the microphone.
 */
export async function launch({ webgpu, fakeMic } = {}) {
  const args = [...BASE_ARGS];
  if (webgpu) {
    args.push("--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=swiftshader", "--use-webgpu-adapter=swiftshader");
  } else {
    args.push("--disable-webgpu", "--disable-features=WebGPU");
  }
  if (fakeMic) {
    args.push(
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${fakeMic}`,
    );
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "duet-e2e-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1100, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  const requests = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => consoleErrors.push(`pageerror: ${err.message}`));
  context.on("request", (req) => requests.push({ url: req.url(), time: Date.now() }));
  const close = async () => {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, consoleErrors, requests, close };
}

/** Opens the page and waits until it is ready (or failed); returns the backend it reports. */
export async function openReady(page, query = "") {
  await page.goto(URL + query);
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, {
    timeout: 120_000,
  });
  const state = await page.evaluate(() => document.body.dataset.state);
  const errors = await page.evaluate(() => document.getElementById("errors").innerText);
  if (state !== "ready") throw new Error(`page reached state ${state}: ${errors}`);
  return page.evaluate(() => ({
    kind: document.body.dataset.backend,
    label: document.getElementById("backend").innerText,
    adapter: document.getElementById("adapter").innerText,
  }));
}
