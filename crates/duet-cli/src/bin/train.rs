//! `train`: train the paper's models with honest cross-validation and export the weights file the
//! page and `duet predict` load. A thin shell over `duet_train::train`.
use std::process::ExitCode;

use clap::Parser;

/// Train a Duet model on IEMOCAP or any corpus with a manifest, evaluate it with cross-validation
/// (speaker-independent leave-one-session-out by default) and export RUN_DIR/model.safetensors with a
/// report (report.json, report.md, confusion.svg, curves.svg).
///
/// Examples:
///   train --corpus iemocap:/data/IEMOCAP_full_release --model dual --out runs/dual
///   train --corpus manifest:synth/manifest.csv --epochs 10 --out runs/synth
///   train --resume runs/dual            (continue after Ctrl-C or a crash)
#[derive(Parser)]
#[command(name = "train", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    args: duet_cli::train_cmd::Args,
}

fn main() -> ExitCode {
    duet_dsp::tune_allocator();
    let cli = Cli::parse();
    match duet_cli::train_cmd::run(cli.args) {
        Ok(code) => code,
        Err(e) => duet_cli::exit_code(Err(e)),
    }
}
