//! `duet`: predict, features, info, init-model, synth-corpus, eval. A thin shell over the libraries;
//! each subcommand lives in `duet_cli::cmd`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duet_cli::cmd;

/// Speech emotion recognition (angry, happy, neutral, sad) with the paper's dual-level
/// MLSTM + MDS-LSTM model. Everything runs locally.
#[derive(Parser)]
#[command(name = "duet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute the paper's features (MFCC + two mel spectrograms) of a WAV file as .npy arrays.
    Features(cmd::features::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Features(args) => cmd::features::run(args),
    };
    duet_cli::exit_code(result)
}
