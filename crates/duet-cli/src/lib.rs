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
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// `outer: inner: …`, skipping a cause whose text its wrapper already ends with (errors that print
/// their source in their own message, as `DataError::Io` does, would otherwise say it twice).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !msg.is_empty() && msg.ends_with(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::from(duet_data::DataError::io("/x/manifest.csv", io))
            .context("corpus manifest:/x/manifest.csv");
        assert_eq!(
            error_chain(&e),
            "corpus manifest:/x/manifest.csv: /x/manifest.csv: No such file or directory"
        );
        // Causes that do not repeat are all kept, outermost first.
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_chain(&e), "outer: middle: inner");
    }
}
