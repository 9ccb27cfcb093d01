//! One module per `duet` subcommand, plus option parsers they share.

pub mod eval;
pub mod features;
pub mod info;
pub mod init_model;
pub mod predict;
pub mod synth_corpus;

use std::path::Path;

use anyhow::Context;
use duet_dsp::Preset;

/// The page's default model (www/models/demo.safetensors), built into the binary so that `duet
/// predict`, `eval` and `info` work without `--model`.
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../../../../www/models/demo.safetensors");

/// What `--model` names: a file, or the bundled model when omitted. Returns the bytes and a name
/// for messages.
pub fn model_bytes(
    model: Option<&Path>,
) -> anyhow::Result<(std::borrow::Cow<'static, [u8]>, String)> {
    match model {
        Some(p) => Ok((
            std::fs::read(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .into(),
            p.display().to_string(),
        )),
        None => Ok((
            BUNDLED_MODEL.into(),
            "the bundled model (www/models/demo.safetensors)".into(),
        )),
    }
}

/// The model `--model` names (or the bundled one) loaded on `backend`'s device, with its name for
/// messages. A GPU asked for but missing is said on stderr: the CPU then runs it.
pub fn load_predictor(
    model: Option<&Path>,
    backend: Backend,
) -> anyhow::Result<(duet_model::Predictor, String)> {
    let (bytes, name) = model_bytes(model)?;
    let (device, info) = backend.device();
    if let Some(reason) = &info.fallback_reason {
        eprintln!("note: using the CPU: {reason}");
    }
    let predictor =
        duet_model::Predictor::from_bytes(&bytes, &device).with_context(|| name.clone())?;
    Ok((predictor, name))
}

/// Parses `fail` / `skip` (`--on-bad-audio`).
pub fn parse_bad_audio(s: &str) -> Result<duet_data::OnBadAudio, String> {
    s.parse::<duet_data::OnBadAudio>()
        .map_err(|e| e.to_string())
}

/// Parses `paper` / `authors`.
pub fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse::<Preset>().map_err(|e| e.to_string())
}

/// Where to compute (`run.json` stores it as `auto`, `wgpu` or `cpu`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A GPU through wgpu when there is one, else the CPU.
    Auto,
    /// A GPU through wgpu (falls back to the CPU, with a note, when no adapter exists). Its
    /// kernels are tuned on first use, about 15 s per process: worth it for training, not for a few
    /// files (the CPU takes ~40 ms per 4 s clip).
    Wgpu,
    /// The pure-Rust CPU backend.
    Cpu,
}

impl Backend {
    pub fn device(self) -> (duet_model::Device, duet_model::backend::BackendInfo) {
        duet_model::backend::init_native(self != Backend::Cpu)
    }
}
