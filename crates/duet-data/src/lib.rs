//! duet-data: corpora (IEMOCAP reader, manifests, the synthetic acted-prosody corpus), folds and
//! protocols, and metrics (WA / UA / F1 / confusion). Native only; no model, no tensors — the
//! trainer that uses them is `duet-train`.
//!
//! - [`corpus`]: [`Corpus`] / [`Utterance`], [`open_corpus`] (`iemocap:DIR` | `manifest:FILE`), the
//!   `--on-bad-audio skip|fail` policy ([`OnBadAudio`], [`BadAudioTracker`], [`Corpus::check_audio`]),
//!   [`ensure_writable_dir`] for run directories.
//! - [`iemocap`]: the release's own layout, checked against its 5531-utterance 4-class selection.
//! - [`manifest`]: CSV / JSONL manifests (EmoBox field names accepted) and the `--label-map` syntax.
//! - [`synth`]: `duet synth-corpus`, four classes by prosody from espeak-ng / flite / sox voices.
//! - [`protocol`]: `loso`, `random5`, `holdout:SESSION` folds with validation from the training part.
//! - [`metrics`]: WA, UA, macro-F1, per-class scores, confusion matrix, mean ± std over folds.
//! - [`error`]: [`DataError`], whose messages name the file, line, utterance or tool.

#![warn(missing_docs)]

pub mod corpus;
pub mod error;
pub mod iemocap;
pub mod manifest;
pub mod metrics;
pub mod protocol;
pub mod synth;

pub use corpus::{
    BadAudioReport, BadAudioTracker, Corpus, FOUR_CLASSES, OnBadAudio, SkippedAudio, Utterance,
    ensure_writable_dir, open_corpora, open_corpus, probe_wav,
};
pub use error::DataError;
pub use protocol::{Fold, Protocol, folds};
