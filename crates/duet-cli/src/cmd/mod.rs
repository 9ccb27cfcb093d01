//! One module per `duet` subcommand, plus option parsers they share.

pub mod eval;
pub mod features;
pub mod info;
pub mod init_model;
pub mod predict;
pub mod synth_corpus;

use duet_dsp::Preset;

/// Parses `paper` / `authors`.
pub fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse::<Preset>().map_err(|e| e.to_string())
}

/// Where to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
