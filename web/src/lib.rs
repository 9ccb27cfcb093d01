//! duet-web: the JavaScript-facing API of the page (wasm-bindgen). It only moves bytes in and results
//! out; every computation lives in duet-dsp and duet-model, shared with `duet predict` and `train`.
//!
//! - [`api`]: the functions JavaScript calls (`initBackend`, `loadModel`, `analyzeWav`, `analyzePcm`,
//!   `warmUp`, `smokeTest`) and the error values they throw.
//! - [`model`]: the loaded model (predictor + feature plan), its description for the model card, and
//!   the analysis of one signal (whole utterance + timeline), the same path as `duet predict`.
//!
//! The page calls these from a Web Worker (`www/worker.js`), one call at a time.

pub mod api;
pub mod model;

pub use api::*;
