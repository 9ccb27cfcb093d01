//! Errors of duet-model: each names the tensor, field or file part at fault.

/// Everything that can go wrong building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The bytes are not a safetensors file (truncated, corrupt, not safetensors at all).
    #[error("not a valid weights file: {0}")]
    Format(String),
    /// The file has no `duet.config` metadata or it is not valid JSON for a ModelConfig.
    #[error("weights file metadata `duet.config`: {0}")]
    Metadata(String),
    /// A configuration field is invalid.
    #[error("model config field `{field}`: {message}")]
    Config {
        /// The field's name (dotted for nested fields).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("tensor `{name}` is missing from the weights file (expected shape {expected:?})")]
    MissingTensor {
        /// The tensor's documented name (docs/weights.md).
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape for the configuration.
    #[error("tensor `{name}` has shape {found:?}, the config requires {expected:?}")]
    Shape {
        /// The tensor's documented name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype other than F32/F16, or holds NaN/Inf.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file has tensors the configuration does not use (a file from another kind).
    #[error("the weights file has tensors the `{kind}` model does not use: {names}")]
    UnexpectedTensors {
        /// The model kind the configuration names.
        kind: String,
        /// The unused tensors' names, comma-separated.
        names: String,
    },
    /// The features do not fit the model (wrong preset, too short...).
    #[error("input: {0}")]
    Input(String),
    /// Feature extraction failed.
    #[error(transparent)]
    Dsp(#[from] duet_dsp::DspError),
    /// A backend failed to return data.
    #[error("backend: {0}")]
    Backend(String),
    /// The forward produced NaN or ±∞ (a backend's arithmetic, or weights that overflow): never
    /// shown as a result.
    #[error(
        "the {backend} backend computed a non-finite {what} (NaN or ±inf) for input {index} of the \
         batch; the result is withheld"
    )]
    NonFinite {
        /// `cpu`, `wgpu` or `webgpu` ([`crate::backend::kind_of`]).
        backend: &'static str,
        /// Which output: `output` (a Predictor's probabilities and logits) or `logit`.
        what: &'static str,
        /// The batch row.
        index: usize,
    },
}
