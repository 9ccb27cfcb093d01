// ESLint for the project's JavaScript: the page (www/) and these browser tests. Run by
// `cargo xtask test` (from the repository root: tests/e2e/node_modules/.bin/eslint -c THIS_FILE).
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "no-unused-vars": ["error", { argsIgnorePattern: "^_", caughtErrors: "none" }],
      eqeqeq: ["error", "always", { null: "ignore" }],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
  { files: ["www/**/*.js"], languageOptions: { sourceType: "module", globals: globals.browser } },
  { files: ["www/worker.js"], languageOptions: { globals: { ...globals.worker } } },
  {
    files: ["www/recorder-worklet.js"],
    languageOptions: {
      sourceType: "script",
      globals: { ...globals.audioWorklet, AudioWorkletProcessor: "readonly", registerProcessor: "readonly", sampleRate: "readonly" },
    },
  },
  { files: ["tests/e2e/**/*.{js,mjs}"], languageOptions: { sourceType: "module", globals: globals.node } },
  // page.evaluate callbacks run in the browser.
  { files: ["tests/e2e/**/*.mjs"], languageOptions: { globals: { ...globals.browser, ...globals.node } } },
  { ignores: ["**/node_modules/**", "dist/**", "target/**"] },
];
