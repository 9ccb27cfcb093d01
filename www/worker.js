// The compute worker: loads the wasm (duet-web) and runs every computation off the main thread.
import init, * as duet from "../duet-web.js";

let ready = null;

async function start(preferGpu) {
  await init();
  const backend = await duet.initBackend(preferGpu);
  // The first run pays shader compilation; its result proves the backend computes correctly.
  const smoke = await duet.smokeTest();
  return { backend, smoke };
}

self.onmessage = async (event) => {
  const { id, type, payload } = event.data;
  try {
    let result;
    switch (type) {
      case "init":
        ready = ready || start(payload.preferGpu);
        result = await ready;
        break;
      default:
        throw new Error(`unknown request ${type}`);
    }
    self.postMessage({ id, ok: true, result });
  } catch (err) {
    self.postMessage({ id, ok: false, error: String(err && err.message ? err.message : err) });
  }
};
