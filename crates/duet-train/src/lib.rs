//! duet-train: the trainer `train` runs. Native only.
//!
//! One job: turn a [`duet_data::Corpus`] and a protocol's folds into cross-validated figures and a
//! weights file (docs/weights.md) the page and `duet predict` load.
//!
//! - [`train`]: [`train::run`] — per fold a fresh model, Adam (paper §3.1), one epoch after another,
//!   the epoch selected on validation data, checkpoints after every epoch and on Ctrl-C, resumable
//!   bit for bit on the CPU; then the final model on all data. [`TrainOptions`] determines a run.
//! - [`adam`]: the optimizer and its exportable moments (checkpoints).
//! - [`augment`]: seeded gain, noise, speed and reverb copies of the training audio (`--augment N`).
//! - [`masking`]: time and mel-band masks on the training features (`--spec-augment`).
//! - [`cache`]: [`FeatureCache`], features computed once per corpus and feature configuration.
//! - [`report`]: `report.json`, `report.md` and the learning-curve SVG of a run.
//!
//! Errors are [`duet_data::DataError`]s naming the file, fold, epoch or batch.

#![warn(missing_docs)]

pub mod adam;
pub mod augment;
pub mod cache;
pub mod masking;
pub mod report;
pub mod train;

pub use cache::FeatureCache;
pub use train::{Observer, Outcome, RunDir, TrainOptions};
