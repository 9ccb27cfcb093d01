//! `duet features FILE --out DIR [--preset paper|authors]`.

use std::path::PathBuf;

/// Arguments of `duet features`.
#[derive(clap::Args)]
pub struct Args {
    /// The audio file (WAV).
    pub file: PathBuf,
    /// Output directory for mfcc.npy and mel_<nfft>.npy.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `duet features`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("duet features: not implemented yet")
}
