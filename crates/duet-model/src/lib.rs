//! duet-model: the paper's models (section 2.3, Table 1) as burn modules, the weights file and the
//! `Predictor` that turns features into class probabilities. Native and wasm32; one forward for both.
//!
//! - [`config`]: `ModelConfig` — kind, preset, sizes, resize targets, classes, provenance.
//! - [`nn`]: LSTM, CNN block, recurrent batch norm, DS-LSTM layer (docs/weights.md §3-4).
//! - [`recurrence`]: the LSTM and DS-LSTM recurrences as one fused operation per layer (a GPU
//!   kernel, a CPU loop; the step loop for training).
//! - [`model`]: the branches and their fusion (§5-6).
//! - [`input`]: features -> model input tensors.
//! - [`weights`]: the safetensors weights file.
//! - [`predict`](crate::predict): `Predictor`.
//! - [`backend`]: WebGPU / wgpu / CPU device choice.

pub mod backend;
pub mod calibrate;
pub mod config;
pub mod error;
pub mod input;
pub mod model;
pub mod nn;
pub mod predict;
pub mod recurrence;
pub mod rng;
pub mod store;
pub mod timeline;
pub mod weights;

pub use burn::prelude::Device;
pub use config::{Branch, Calibration, ModelConfig, ModelKind};
pub use error::ModelError;
pub use model::DuetModel;
pub use predict::{Prediction, Predictor};
