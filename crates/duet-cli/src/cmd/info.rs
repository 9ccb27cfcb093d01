//! `duet info M.safetensors`: a model's configuration, provenance and parameter counts per module.

use std::path::PathBuf;

use anyhow::Context;
use duet_model::weights;

/// Arguments of `duet info`.
#[derive(clap::Args)]
pub struct Args {
    /// A weights file (model.safetensors); the bundled model when omitted.
    pub model: Option<PathBuf>,
    /// Print the configuration as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (bytes, name) = crate::cmd::model_bytes(args.model.as_deref())?;
    let file = weights::read(&bytes).with_context(|| name.clone())?;
    let c = &file.config;
    let counts = weights::parameter_counts(
        file.tensors
            .iter()
            .map(|(n, (s, _))| (n.as_str(), s.as_slice())),
    );
    let total: usize = counts.values().sum();
    if args.json {
        let v = serde_json::json!({"config": c, "parameters": counts, "total_parameters": total});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{name}");
    println!("  kind        {} — {}", c.kind, c.kind.description());
    println!("  preset      {}", c.preset.name());
    println!("  classes     {}", c.classes.join(", "));
    println!(
        "  features    MFCC {} per 10 ms frame; S1 {}-point STFT, hop {}, {} mels; S2 {}-point, hop {}, {} mels",
        c.mfcc_dim,
        c.features.narrow.n_fft,
        c.features.narrow.hop_length,
        c.features.narrow.n_mels,
        c.features.wide.n_fft,
        c.features.wide.hop_length,
        c.features.wide.n_mels
    );
    println!(
        "  resize      S1 -> {} frames, S2 -> {} frames (nearest neighbour, then 10·log10)",
        c.resize.narrow_frames, c.resize.wide_frames
    );
    println!(
        "  network     hidden {}, {} layers, CNN channels {:?}, alignment {:?}",
        c.hidden, c.layers, c.cnn.channels, c.alignment
    );
    let fusion: Vec<String> = c
        .branch_weights
        .iter()
        .map(|(b, w)| format!("{b} {w}"))
        .collect();
    println!("  fusion      {}", fusion.join(", "));
    if let Some(level) = &c.features.level {
        println!(
            "  level       normalised to {} dBFS (the {}th-percentile frame) before the features",
            level.target_dbfs,
            level.percentile * 100.0
        );
    }
    if let Some(t) = &c.silence_trim {
        println!("  trimmed     {}", t.describe());
    }
    if let Some(u) = c.utterance_mean {
        println!(
            "  centred     each utterance's mean subtracted from its {}",
            u.describe()
        );
    }
    match &c.calibration {
        Some(cal) => println!(
            "  calibrated  temperature {:.3}; a result under {:.0} % is shown as uncertain",
            cal.temperature,
            100.0 * cal.uncertain_below
        ),
        None => println!("  calibrated  no (temperature 1)"),
    }
    println!(
        "  noisy       a recording whose speech stands less than {} dB above its noise floor{}",
        c.noisy_below_db(),
        if c.calibration
            .as_ref()
            .is_some_and(|k| k.noisy_below_db.is_some())
        {
            ""
        } else {
            " (the default)"
        }
    );
    match &c.provenance {
        Some(p) => {
            if let Some(corpus) = &p.corpus {
                println!("  trained on  {corpus}");
            }
            if let Some(protocol) = &p.protocol {
                println!("  protocol    {protocol}");
            }
            for (k, v) in &p.metrics {
                println!("  metric      {k} = {v:.4}");
            }
            for (k, v) in &p.notes {
                println!("  note        {k}: {v}");
            }
        }
        None => println!("  provenance  none (not trained by `train`: random initialisation)"),
    }
    println!("  parameters  {total} (running statistics not counted)");
    for (m, n) in &counts {
        println!("    {m:<24} {n:>10}");
    }
    Ok(())
}
