//! duet-data's integration tests, one binary (each test binary links the whole burn stack: one
//! link instead of six).

mod common;

mod corpus;
mod iemocap;
mod manifest;
mod metrics;
mod protocol;
mod synth;
