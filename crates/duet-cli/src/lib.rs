//! duet-cli: thin command-line shells (`duet`, `train`) over duet-dsp, duet-model and duet-data.
//! Each subcommand is a module of [`cmd`] with an `Args` (clap) and a `run`.

use std::process::ExitCode;

pub mod cmd;
pub mod train_cmd;

/// Prints an error chain the way people read it (`error: outer: inner`) and maps it to exit code 1.
/// Usage errors are clap's (exit code 2).
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
