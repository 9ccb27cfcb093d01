//! duet-tests: cross-crate tests, checks against independent references (librosa, openSMILE, a numpy
//! forward written from the paper's equations) and helpers for the browser end-to-end tests.
