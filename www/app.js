// The page's UI. All computation happens in a Web Worker (worker.js) so the page never freezes.
const $ = (id) => document.getElementById(id);

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
let nextId = 1;
const pending = new Map();
worker.onmessage = (event) => {
  const { id, ok, result, error } = event.data;
  const p = pending.get(id);
  if (!p) return;
  pending.delete(id);
  ok ? p.resolve(result) : p.reject(new Error(error));
};
worker.onerror = (event) => showError(`The compute worker failed: ${event.message}`);

function call(type, payload = {}) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, type, payload });
  });
}

function showError(message) {
  const p = document.createElement("p");
  p.textContent = message;
  $("errors").append(p);
}

function announce(message) {
  $("announcer").textContent = message;
}

async function main() {
  // ?backend=cpu forces the CPU backend (for comparisons and for browsers with a broken GPU).
  const params = new URLSearchParams(location.search);
  const preferGpu = params.get("backend") !== "cpu";
  try {
    const { backend, smoke } = await call("init", { preferGpu });
    $("backend").textContent = backend.kind === "webgpu" ? "WebGPU" : "CPU";
    $("adapter").textContent = backend.adapter;
    if (backend.fallback_reason) {
      $("fallback-reason").hidden = false;
      $("fallback-reason").textContent = `WebGPU unavailable, using the CPU: ${backend.fallback_reason}`;
    }
    $("selftest").textContent = smoke === 480 ? `ok (4x4 matmul sum = ${smoke})` : `WRONG: ${smoke} (expected 480)`;
    document.body.dataset.backend = backend.kind;
    document.body.dataset.state = smoke === 480 ? "ready" : "error";
    announce(`Ready on ${$("backend").textContent}.`);
  } catch (err) {
    document.body.dataset.state = "error";
    showError(`Could not start the engine: ${err.message}`);
  }
}

main();
