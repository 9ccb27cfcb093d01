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
    /// Classify audio files: probabilities of each emotion (a table, or JSON lines with --json).
    Predict(cmd::predict::Args),
    /// Show a model file's configuration, provenance and parameter counts.
    Info(cmd::info::Args),
    /// Write a randomly initialised model (for tests and as a starting point).
    InitModel(cmd::init_model::Args),
    /// Evaluate a model on a corpus: WA, UA, macro-F1 and the confusion matrix.
    Eval(cmd::eval::Args),
    /// Render the synthetic acted-prosody corpus (espeak-ng, flite, sox) with a manifest.
    SynthCorpus(cmd::synth_corpus::Args),
}

fn main() -> ExitCode {
    duet_dsp::tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Features(args) => cmd::features::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Info(args) => cmd::info::run(args),
        Command::InitModel(args) => cmd::init_model::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::SynthCorpus(args) => cmd::synth_corpus::run(args),
    };
    duet_cli::exit_code(result)
}
