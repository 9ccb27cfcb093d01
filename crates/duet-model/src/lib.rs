//! duet-model: the paper's models (section 2.3, Table 1) as burn modules, the weights file and the
//! `Predictor` that turns features into class probabilities. Native and wasm32; one forward for both.
//!
//! Public API:
//! - [`config`]: `ModelConfig` — kind, preset, sizes, resize targets, classes, provenance.
//! - [`model`]: `DuetModel`, the branches and their fusion (docs/weights.md §5-6); built from a
//!   [`store`] source (random init or a file), which names every tensor once.
//! - [`input`]: features -> model input tensors.
//! - [`weights`]: the safetensors weights file.
//! - [`predict`](crate::predict): `Predictor`; [`timeline`]: windows of a long recording.
//! - [`calibrate`]: a model with realistic batch-norm statistics for tests and `duet init-model`.
//! - [`backend`]: WebGPU / wgpu / CPU device choice; [`rng`]: the one random generator.
//!
//! Inside: `nn` (LSTM, CNN block, recurrent batch norm, DS-LSTM layer; docs/weights.md §3-4) and
//! `recurrence` (the LSTM and DS-LSTM recurrences as one fused operation per layer: a GPU kernel,
//! a CPU loop; the LSTM's backward), `ds_lstm_train` (the DS-LSTM's training recurrence, with
//! batch statistics, as one CPU operation with its own backward) and `cnn` (the CNN's
//! kernel-offset products and max pooling as operations with a backward that writes no zero
//! tensor per view).

#![warn(missing_docs)]

pub mod backend;
pub mod calibrate;
mod cnn;
pub mod config;
mod ds_lstm_train;
pub mod error;
pub mod input;
pub mod model;
mod nn;
pub mod predict;
mod recurrence;
pub mod rng;
pub mod store;
pub mod timeline;
pub mod weights;

pub use burn::prelude::Device;
pub use config::{Branch, Calibration, ModelConfig, ModelKind};
pub use error::ModelError;
pub use model::DuetModel;
pub use nn::Mode;
pub use predict::{Prediction, Predictor};
pub use recurrence::set_step_loop_only;
