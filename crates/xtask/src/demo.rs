//! `cargo xtask demo-model`: retrain the page's bundled demo model on the synthetic corpus.
//!
//! The recipe is fixed here so that anyone reproduces `www/models/demo.safetensors`: render the
//! synthetic acted-prosody corpus (`duet synth-corpus`), cross-validate `dual` on it leave-one-
//! voice-group-out (the CV metrics go into the file's metadata and the page's model card), train the
//! final model on all of it, store it in half precision, and copy it into `www/models/`.

use std::path::PathBuf;

use crate::setup;
use crate::util::{self, Result, cargo, cmd, root};

/// The recipe. Hidden size 64 keeps the file small (the page downloads it) and training within
/// minutes on a laptop CPU; the paper's 200 units would be 9x the parameters for a synthetic corpus.
const VOICES: &str = "12";
const SENTENCES: &str = "10";
const CORPUS_SEED: &str = "11";
const TRAIN_ARGS: &[&str] = &[
    "--model",
    "dual",
    "--preset",
    "paper",
    "--protocol",
    "loso",
    "--epochs",
    "8",
    "--batch",
    "16",
    "--lr",
    "2e-3",
    "--hidden",
    "64",
    "--seed",
    "1",
    "--f16",
];

pub fn run(args: &[String]) -> Result<()> {
    let mut work = root().join("target/demo-model");
    // Two of the voice-group folds: held-out metrics for the model card at a third of the cost.
    let mut folds: Option<String> = Some("2".into());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--work" => work = PathBuf::from(it.next().ok_or("--work needs a directory")?),
            "--max-folds" => folds = Some(it.next().ok_or("--max-folds needs a number")?.clone()),
            "--all-folds" => folds = None,
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask demo-model [--work DIR] [--max-folds N (default 2) | --all-folds]\n\n\
                     Renders the synthetic corpus ({VOICES} voices x {SENTENCES} sentences x 4 classes, \
                     seed {CORPUS_SEED}), trains `train {}` and copies the model to \
                     www/models/demo.safetensors. Work files go to DIR (default target/demo-model).",
                    TRAIN_ARGS.join(" ")
                );
                return Ok(());
            }
            other => return Err(format!("demo-model: unknown option `{other}`")),
        }
    }
    setup::ensure_apt_packages()?;
    util::step("build duet and train (release)", || {
        util::run(cargo().args(["build", "--release", "-p", "duet-cli", "--bins"]))
    })?;
    let bin = root().join("target/release");
    let corpus = work.join("corpus");
    if !corpus.join("manifest.csv").is_file() {
        util::step("render the synthetic corpus", || {
            util::run(
                cmd(bin.join("duet"))
                    .args(["synth-corpus", "--out"])
                    .arg(&corpus)
                    .args([
                        "--voices",
                        VOICES,
                        "--sentences",
                        SENTENCES,
                        "--seed",
                        CORPUS_SEED,
                    ]),
            )
        })?;
    }
    let run_dir = work.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .map_err(|e| format!("cannot remove {}: {e}", run_dir.display()))?;
    }
    util::step("train (cross-validation, then the final model)", || {
        let mut c = cmd(bin.join("train"));
        c.arg("--corpus")
            .arg(format!(
                "manifest:{}",
                corpus.join("manifest.csv").display()
            ))
            .args(TRAIN_ARGS)
            .args(["--backend", "cpu", "--out"])
            .arg(&run_dir);
        if let Some(n) = &folds {
            c.args(["--max-folds", n]);
        }
        util::run(&mut c)
    })?;
    let dest = root().join("www/models/demo.safetensors");
    std::fs::copy(run_dir.join("model.safetensors"), &dest)
        .map_err(|e| format!("cannot copy the model to {}: {e}", dest.display()))?;
    util::run(cmd(bin.join("duet")).arg("info").arg(&dest))?;
    println!(
        "demo model written to {} (report: {})",
        dest.display(),
        run_dir.join("report.md").display()
    );
    Ok(())
}
