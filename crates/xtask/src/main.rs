//! `cargo xtask`: the project's two front doors and their helpers.
//!
//! - `cargo xtask serve [--port N]`: install what is missing, build the page in release, serve it.
//! - `cargo xtask test`: install what is missing, then every check CI relies on, ending with one
//!   `N passed, N failed` line.
//! - `cargo xtask bench [dsp|model|gpu|train|web|all]`: figures side by side with the peers.
//! - `cargo xtask demo-model`: retrain the page's bundled demo model.
//! - `cargo xtask fuzz [TARGET...] [--runs N]`: libFuzzer on the parsers of outside bytes.
//!
//! Std and serde_json only, so it compiles in seconds on a fresh machine before anything else is
//! installed.

mod bench;
mod demo;
mod fuzz;
mod serve;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  serve [--port N] [--no-build]   build the page (release) and serve it on http://127.0.0.1:N (default 8080)
  test [--no-install]             install what is missing, run fmt, clippy (native + wasm32), cargo test,
                                  build the page and run the browser end-to-end tests; ends with
                                  'N passed, N failed'
  bench [dsp|model|gpu|train|web|all] measure Duet against its peers (librosa + openSMILE, PyTorch, real time)
                                  and rewrite docs/benchmarks.md
  demo-model --corpus manifest:P  retrain the bundled model on your copy of RAVDESS (www/models/; --help)
  fuzz [TARGET...] [--runs N]     fuzz the parsers of outside bytes (WAV, weights, manifests, IEMOCAP
                                  labels) with libFuzzer; installs nightly and cargo-fuzz (--help)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "serve" => serve::run(rest),
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "demo-model" => demo::run(rest),
        "fuzz" => fuzz::run(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(1)
        }
    }
}
