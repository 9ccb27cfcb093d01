//! `duet init-model --kind K --preset P --seed S --out M.safetensors`: a randomly initialised model.

use std::path::PathBuf;

use anyhow::Context;
use duet_dsp::Preset;
use duet_model::weights::{self, Precision};
use duet_model::{ModelConfig, ModelKind};

/// Arguments of `duet init-model`.
#[derive(clap::Args)]
pub struct Args {
    /// Model kind (paper Table 1): base1 base2 base3 base4 base5 base6 ds-lstm dual.
    #[arg(long, default_value = "dual", value_parser = parse_kind)]
    pub kind: ModelKind,
    /// `paper` (the paper's sizes) or `authors` (the authors' code).
    #[arg(long, default_value = "paper", value_parser = crate::cmd::parse_preset)]
    pub preset: Preset,
    /// Seed of the initialisation (the same seed gives the same file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Spectrogram resize targets NARROW,WIDE in frames (default: the preset's, ~3.7 s).
    #[arg(long, value_parser = parse_pair)]
    pub resize: Option<(usize, usize)>,
    /// Keep batch-norm statistics at their neutral values (mean 0, variance 1) instead of
    /// randomising them.
    #[arg(long)]
    pub plain_statistics: bool,
    /// Store weights as f16 (half the size).
    #[arg(long)]
    pub f16: bool,
    /// Output weights file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn parse_kind(s: &str) -> Result<ModelKind, String> {
    s.parse::<ModelKind>().map_err(|e| e.to_string())
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected NARROW,WIDE frame counts, got `{s}`"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{v}` is not a frame count"))
    };
    Ok((p(a)?, p(b)?))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ModelConfig::new(args.kind, args.preset);
    if let Some((n, w)) = args.resize {
        config.resize.narrow_frames = n;
        config.resize.wide_frames = w;
    }
    let device = duet_model::backend::cpu_device();
    let model = weights::init(config, args.seed, &device).context("building the model")?;
    let model = if args.plain_statistics {
        model
    } else {
        duet_model::calibrate::randomize_statistics(model, args.seed, &device)
            .context("randomising batch-norm statistics")?
    };
    let precision = if args.f16 {
        Precision::F16
    } else {
        Precision::F32
    };
    let bytes = weights::save(&model, precision)?;
    weights::write_atomic(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({}, preset {}, seed {}, {:.1} MB)",
        args.out.display(),
        args.kind,
        args.preset,
        args.seed,
        bytes.len() as f64 / 1e6
    );
    Ok(())
}
