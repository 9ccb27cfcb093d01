//! `duet predict FILE... --model M [--json] [--backend cpu|wgpu]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use duet_dsp::features_from_file;
use duet_model::Predictor;

use crate::cmd::Backend;

/// Arguments of `duet predict`.
#[derive(clap::Args)]
pub struct Args {
    /// Audio files (WAV).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The weights file (model.safetensors exported by `train`, or from `duet init-model`); the
    /// bundled model (the page's default, trained on RAVDESS) when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (bytes, model_name) = crate::cmd::model_bytes(args.model.as_deref())?;
    let (device, info) = args.backend.device();
    if let Some(reason) = &info.fallback_reason {
        eprintln!("note: using the CPU: {reason}");
    }
    let predictor = Predictor::from_bytes(&bytes, &device).with_context(|| model_name.clone())?;
    let uncertain_below = predictor
        .config()
        .calibration
        .as_ref()
        .map(|c| c.uncertain_below);
    let classes = predictor.config().classes.clone();
    let mut plan = predictor.feature_plan();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        write!(out, "{:<40} {:>8}", "file", "dur (s)")?;
        for c in &classes {
            write!(out, " {c:>8}")?;
        }
        writeln!(out, "  label")?;
    }
    let mut failures = 0;
    for file in &args.files {
        let result = features_from_file(file, &mut plan)
            .map_err(anyhow::Error::from)
            .and_then(|f| Ok((f.duration_s, predictor.predict(&f)?)));
        let (duration, p) = match result {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: {}", file.display(), crate::error_chain(&e));
                continue;
            }
        };
        if args.json {
            let probs: serde_json::Map<String, serde_json::Value> = classes
                .iter()
                .zip(&p.probabilities)
                .map(|(c, v)| (c.clone(), serde_json::json!(v)))
                .collect();
            let branches: serde_json::Map<String, serde_json::Value> = p
                .branches
                .iter()
                .map(|(b, v)| (b.name().to_string(), serde_json::json!(v)))
                .collect();
            let line = serde_json::json!({
                "file": file.display().to_string(),
                "duration_s": duration,
                "probabilities": probs,
                "label": p.label,
                "uncertain": p.uncertain,
                "branches": branches,
                "logits": p.logits,
            });
            writeln!(out, "{line}")?;
        } else {
            let name = file.display().to_string();
            write!(out, "{name:<40} {duration:>8.2}")?;
            for v in &p.probabilities {
                write!(out, " {:>7.1}%", v * 100.0)?;
            }
            writeln!(
                out,
                "  {}{}",
                p.label,
                if p.uncertain { " (uncertain)" } else { "" }
            )?;
        }
    }
    if !args.json
        && let Some(t) = uncertain_below
    {
        writeln!(
            out,
            "(uncertain: the top probability is under {:.0} %, the model card's threshold)",
            100.0 * t
        )?;
    }
    if failures > 0 {
        anyhow::bail!(
            "{failures} of {} files could not be analysed",
            args.files.len()
        );
    }
    Ok(())
}
