//! duet-cli's integration tests, one binary (each test binary links the whole burn stack).

mod bundled_model;
mod common;
mod features_cli;
mod fuzz_regressions;
mod hostile_input;
mod long_recordings;
mod reference_forward;
mod reference_training;
mod train_cli;
