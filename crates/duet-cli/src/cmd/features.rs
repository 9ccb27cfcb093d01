//! `duet features FILE --out DIR [--preset paper|authors]`: the paper's features of one WAV file as numpy
//! arrays — `mfcc.npy` [frames, 39] f32 (openSMILE MFCC12_E_D_A column order) and one `mel_<nfft>.npy`
//! [n_mels, frames] f32 per spectrogram (power mel, before resize and log).

use std::path::PathBuf;

use anyhow::Context;
use duet_dsp::{FeatureConfig, FeaturePlan, Preset, features_from_file, npy};

/// Arguments of `duet features`.
#[derive(clap::Args)]
pub struct Args {
    /// The audio file (WAV: PCM 8/16/24/32-bit or float 32/64-bit, RIFF or RF64, any rate and channels).
    pub file: PathBuf,
    /// Output directory for mfcc.npy and mel_<nfft>.npy (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Spectrogram sizes: `paper` (256 and 512-point STFTs) or `authors` (512 and 1024).
    #[arg(long, default_value = "paper", value_parser = crate::cmd::parse_preset)]
    pub preset: Preset,
}

/// Runs `duet features`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = FeatureConfig::for_preset(args.preset);
    let mut plan = FeaturePlan::new(&config);
    let f = features_from_file(&args.file, &mut plan)
        .with_context(|| format!("{}", args.file.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let mut written = Vec::new();
    let path = args.out.join("mfcc.npy");
    npy::write_f32(
        &path,
        &[f.mfcc.n_frames, duet_dsp::Mfcc::N_FEATURES],
        &f.mfcc.data,
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    written.push(format!(
        "{} [{}, {}]",
        path.display(),
        f.mfcc.n_frames,
        duet_dsp::Mfcc::N_FEATURES
    ));
    for (cfg, mel) in [(&config.narrow, &f.mel_narrow), (&config.wide, &f.mel_wide)] {
        let path = args.out.join(format!("mel_{}.npy", cfg.n_fft));
        npy::write_f32(&path, &[mel.n_mels, mel.n_frames], &mel.data)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(format!(
            "{} [{}, {}]",
            path.display(),
            mel.n_mels,
            mel.n_frames
        ));
    }
    eprintln!(
        "{}: {:.3} s, preset {}; wrote {}",
        args.file.display(),
        f.duration_s,
        args.preset,
        written.join(", ")
    );
    Ok(())
}
