//! duet-web: the JavaScript-facing API of the page (wasm-bindgen). It only moves bytes in and results
//! out; every computation lives in duet-dsp and duet-model, shared with `duet predict` and `train`.
//!
//! - [`api`]: the [`Engine`] JavaScript holds (`Engine.create`, `backend`, `smokeTest`, `loadModel`,
//!   `analyzeFile`, `analyzePcm`, `warmUp`): it owns its device and model; and the error values its
//!   methods throw.
//! - [`model`]: the loaded model (predictor + feature plan), its description for the model card, and
//!   the analysis of one signal (whole utterance + timeline), the same path as `duet predict`.
//!
//! The page calls these from a Web Worker (`www/worker.js`), one call at a time.

pub mod api;
pub mod model;

pub use api::*;
