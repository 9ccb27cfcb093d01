// The compute engine as the page sees it: the worker (worker.js, which runs the wasm), its requests
// and replies, progress messages, and the worker's replacement when its wasm instance traps.

export class Engine {
  /** `onBackendChange(msg)`: the worker moved to another backend (or was restarted);
   * `onFatal(message)`: something the page can only report. */
  constructor(onBackendChange, onFatal) {
    this.onFatal = onFatal;
    this.worker = null;
    this.pending = new Map();
    this.nextId = 1;
    this.onBackendChange = onBackendChange;
    this.choice = { preferGpu: true, measure: true };
    this.customModel = null; // {name, bytes}
  }

  spawn() {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    worker.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === "backend") {
        this.onBackendChange(msg);
        return;
      }
      if (msg.type === "progress") {
        const p = this.pending.get(msg.id);
        if (p && p.onProgress) p.onProgress(msg.done, msg.total);
        return;
      }
      if (msg.type === "backend-failed") {
        this.onFatal(`The GPU was lost and the CPU fallback failed: ${msg.error.message}. Reload the page.`);
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(Object.assign(new Error(msg.error.message), msg.error));
    };
    worker.onerror = (event) => {
      event.preventDefault();
      const err = Object.assign(new Error(`the compute worker failed: ${event.message || "could not start"}`), {
        kind: "internal",
        fatal: true,
      });
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker = worker;
  }

  /** Options: `transfer`, buffers moved to the worker instead of copied (detached here
   * afterwards); `onProgress(done, total)`, how far a long request is. */
  send(type, payload, { transfer = [], onProgress = null } = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
      this.worker.postMessage({ id, type, payload }, transfer);
    });
  }

  /** `choice`: {preferGpu, measure} — measure: time both backends and keep the faster. */
  async start(choice) {
    this.choice = choice;
    if (this.worker) this.worker.terminate();
    this.spawn();
    return this.send("init", {
      ...choice,
      modelBytes: this.customModel ? this.customModel.bytes : null,
    });
  }

  /** A request; if the wasm instance trapped, a fresh worker takes over and the request runs again.
   * Options as for send(), and `again`: when buffers were moved (they are gone), makes the payload
   * anew for the retry: async () => ({payload, transfer}). */
  async call(type, payload, options = {}) {
    try {
      return await this.send(type, payload, options);
    } catch (err) {
      if (!err.fatal) throw err;
      const init = await this.start(this.choice);
      this.onBackendChange({ backend: init.backend, model: init.model, warmupMs: init.warmupMs, restarted: true });
      if (options.transfer && options.transfer.length) {
        if (!options.again) throw err;
        const fresh = await options.again();
        return this.send(type, fresh.payload, { ...options, transfer: fresh.transfer });
      }
      return this.send(type, payload, options);
    }
  }
}
