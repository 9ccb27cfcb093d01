//! `train`: train the paper's models with honest cross-validation and export the weights file.
use clap::Parser;

/// Train a Duet model on IEMOCAP or a manifest corpus and export model.safetensors.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
