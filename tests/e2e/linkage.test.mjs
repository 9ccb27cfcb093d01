// The page's wasm must not be linked "command-style". cubecl registers its IR dialects with
// linker constructors (the `inventory` crate); when no export of a module calls them, wasm-ld
// prepends a call to them to every exported function, so each call from JavaScript into the
// module (an analysis's result object alone takes hundreds) ran every constructor again.
// `web/src/api.rs::start` calls them once. This reads the built wasm's code and checks that no
// single function is the first thing many exports call, which is what the prepended calls look
// like (before the fix: 12 of 27 exports; after: no callee begins more than one).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "./lib.mjs";

const DIST = process.env.DUET_DIST || path.join(ROOT, "dist");

/** A reader of the wasm binary format's unsigned LEB128 numbers and bytes. */
function reader(bytes, pos = 0) {
  return {
    get pos() { return pos; },
    set pos(p) { pos = p; },
    byte() { return bytes[pos++]; },
    u32() {
      let result = 0, shift = 0, b;
      do {
        b = bytes[pos++];
        result += (b & 0x7f) * 2 ** shift;
        shift += 7;
      } while (b & 0x80);
      return result;
    },
    skip(n) { pos += n; },
  };
}

/** Skips one value type (single-byte types; `ref null? ht` carries a heap type after it). */
function skipValType(r) {
  const t = r.byte();
  if (t === 0x63 || t === 0x64) {
    r.u32(); // heap type (s33; abstract heap types are one byte, indices are small)
  }
}

/**
 * For each exported function defined in the module: the function index its body calls first, or
 * null when the body does not begin with a call.
 */
export function firstCallsOfExports(bytes) {
  const r = reader(bytes, 8); // magic and version
  let importedFuncs = 0;
  const exported = [];
  let bodies = null;
  while (r.pos < bytes.length) {
    const id = r.byte();
    const size = r.u32();
    const end = r.pos + size;
    if (id === 2) {
      // Imports: module name, field name, kind, description.
      const n = r.u32();
      for (let i = 0; i < n; i++) {
        r.skip(r.u32());
        r.skip(r.u32());
        const kind = r.byte();
        if (kind === 0) {
          r.u32();
          importedFuncs++;
        } else if (kind === 1) {
          skipValType(r);
          const flags = r.byte();
          r.u32();
          if (flags & 1) r.u32();
        } else if (kind === 2) {
          const flags = r.byte();
          r.u32();
          if (flags & 1) r.u32();
        } else if (kind === 3) {
          skipValType(r);
          r.byte();
        } else if (kind === 4) {
          r.byte();
          r.u32();
        } else {
          throw new Error(`import kind ${kind} not understood`);
        }
      }
    } else if (id === 7) {
      const n = r.u32();
      for (let i = 0; i < n; i++) {
        r.skip(r.u32());
        const kind = r.byte();
        const index = r.u32();
        if (kind === 0) exported.push(index);
      }
    } else if (id === 10) {
      bodies = [];
      const n = r.u32();
      for (let i = 0; i < n; i++) {
        const len = r.u32();
        bodies.push(r.pos);
        r.skip(len);
      }
    }
    r.pos = end;
  }
  assert.ok(bodies, "the wasm has a code section");
  return exported
    .filter((f) => f >= importedFuncs)
    .map((f) => {
      const b = reader(bytes, bodies[f - importedFuncs]);
      const groups = b.u32();
      for (let i = 0; i < groups; i++) {
        b.u32();
        skipValType(b);
      }
      return b.byte() === 0x10 ? b.u32() : null;
    });
}

test("the page's wasm runs its constructors once, not at the top of every export", () => {
  const file = path.join(DIST, "duet-web_bg.wasm");
  const firsts = firstCallsOfExports(fs.readFileSync(file));
  assert.ok(firsts.length >= 20, `${file}: only ${firsts.length} exported functions found`);
  const counts = new Map();
  for (const f of firsts) {
    if (f !== null) counts.set(f, (counts.get(f) || 0) + 1);
  }
  const [callee, most] = [...counts].sort((a, b) => b[1] - a[1])[0] || [null, 0];
  console.log(`${firsts.length} exported functions; the commonest first call (function ${callee}) begins ${most}`);
  assert.ok(
    most <= Math.max(3, firsts.length / 4),
    `${most} of ${firsts.length} exported functions begin by calling function ${callee}: the linker ` +
      "prepends the constructors to every export (is `__wasm_call_ctors` still called from the start function?)",
  );
});
