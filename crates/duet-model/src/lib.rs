//! duet-model: the paper's models (section 2.3, Table 1) as burn modules, the weights file and the
//! `Predictor` that turns features into class probabilities. Native and wasm32; one forward for both.

pub mod backend;
