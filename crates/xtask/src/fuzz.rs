//! `cargo xtask fuzz [TARGET...] [--runs N] [--seconds S]`: libFuzzer (cargo-fuzz) on every parser
//! that takes bytes from outside — WAV bytes to features (the page's and `duet predict`'s paths),
//! weights files to a `Predictor`, corpus manifests, IEMOCAP label files. The targets' bodies are
//! `fuzz/src/lib.rs`.
//!
//! Installs what it lacks (a nightly toolchain: libFuzzer's instrumentation needs it; cargo-fuzz),
//! seeds each target's corpus (`target/fuzz/corpus/TARGET`) from the committed fixtures, and runs the
//! targets one after another. A finding (panic, timeout, out-of-memory, an allocation over the
//! limit) is saved under `target/fuzz/artifacts/TARGET/` and fails the command: copy it to
//! `fuzz/regressions/TARGET/` once fixed, where `cargo test` replays it from then on.

use std::path::{Path, PathBuf};

use crate::setup;
use crate::util::{Result, cmd, root, run_tee, step};

/// The fuzz targets with the committed files that seed each one.
pub const TARGETS: &[(&str, &[&str])] = &[
    ("wav", &["tests/fixtures/dsp", "tests/fixtures/ravdess"]),
    ("weights", &["fuzz/seeds/weights"]),
    (
        "manifest",
        &["tests/fixtures/ravdess/manifest.csv", "fuzz/seeds/manifest"],
    ),
    ("iemocap_labels", &["fuzz/seeds/iemocap_labels"]),
];

/// The largest input the fuzzer makes (bytes). Seeds above it are cut to it, which is itself a
/// useful case for the WAV reader (a data chunk that claims more than the file holds).
const MAX_LEN: &str = "65536";

/// Per-input limits: a hang is an input that takes longer than this (seconds) ...
const TIMEOUT_S: &str = "20";
/// ... and no single allocation may exceed this (MB): inputs are at most [`MAX_LEN`] bytes, and what
/// they may allocate is bounded by the model's and the front end's own size (the paper's `dual` at
/// 200 hidden units is about 20 MB of weights).
const MALLOC_LIMIT_MB: &str = "512";

const USAGE: &str = "\
usage: cargo xtask fuzz [TARGET...] [--runs N] [--seconds S]

Fuzzes the parsers that read bytes from outside with libFuzzer (cargo-fuzz, nightly toolchain;
both installed when missing). Targets: wav, weights, manifest, iemocap_labels (default: all).
  --runs N      inputs per target (default 100000)
  --seconds S   stop each target after S seconds, whichever comes first (default: no limit)
A finding is saved under target/fuzz/artifacts/TARGET/ and makes the command fail; once fixed,
copy it to fuzz/regressions/TARGET/ so that `cargo test` replays it.";

/// What a bounded run does.
pub struct Limits {
    pub runs: u64,
    pub seconds: Option<u64>,
}

/// How the targets are built. Both are optimised with debug assertions and overflow checks, and use
/// 16 codegen units (cargo-fuzz's default of one makes burn's crates take half an hour on 2 cores).
#[derive(Clone, Copy)]
pub enum Build {
    /// With AddressSanitizer (cargo-fuzz's default): what `cargo xtask fuzz` runs.
    Sanitized,
    /// Without a sanitizer, about half the compile time: the short pass of `cargo xtask test`. The
    /// code under test is safe Rust but for a few audited kernels; overflow checks stay on.
    Quick,
}

impl Build {
    fn flags(self) -> [&'static str; 4] {
        let sanitizer = match self {
            Build::Sanitized => "address",
            Build::Quick => "none",
        };
        ["--codegen-units", "16", "--sanitizer", sanitizer]
    }

    fn dir(self) -> PathBuf {
        root().join(match self {
            Build::Sanitized => "target/fuzz/build",
            Build::Quick => "target/fuzz/build-quick",
        })
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let mut targets: Vec<String> = Vec::new();
    let mut limits = Limits {
        runs: 100_000,
        seconds: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |what: &str| -> Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("fuzz: {what} needs a whole number\n\n{USAGE}"))
        };
        match a.as_str() {
            "--runs" => limits.runs = number("--runs")?,
            "--seconds" => limits.seconds = Some(number("--seconds")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            t if TARGETS.iter().any(|(name, _)| *name == t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "fuzz: unknown target or option `{other}`\n\n{USAGE}"
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    }
    let cargo_fuzz = step(
        "install what is missing (nightly, cargo-fuzz)",
        ensure_tools,
    )?;
    step(
        "build the fuzz targets (nightly, libFuzzer, AddressSanitizer)",
        || build(&cargo_fuzz, Build::Sanitized),
    )?;
    let mut failed = Vec::new();
    for t in &targets {
        let r = step(&format!("fuzz {t}"), || {
            fuzz(&cargo_fuzz, Build::Sanitized, t, &limits)
        });
        match r {
            Ok(runs) => println!("fuzz {t}: {runs} runs, no finding"),
            Err(e) => failed.push(format!("{t}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

/// The nightly toolchain and cargo-fuzz; returns cargo-fuzz's path.
pub fn ensure_tools() -> Result<PathBuf> {
    setup::ensure_toolchain(
        "nightly",
        "cargo-fuzz builds with libFuzzer's instrumentation",
    )?;
    setup::ensure_cargo_tool(
        "cargo-fuzz",
        "cargo install --locked, a few minutes; it runs the fuzz targets",
    )
}

/// `cargo fuzz SUBCOMMAND` with `how`'s flags and target directory, on the nightly toolchain, with
/// nothing of the stable toolchain that runs xtask leaking into it (`build` and `run` must agree on
/// the flags, or `run` rebuilds everything).
fn cargo_fuzz(cargo_fuzz: &Path, subcommand: &str, how: Build) -> std::process::Command {
    let mut c = cmd("rustup");
    c.args(["run", "nightly"])
        .arg(cargo_fuzz)
        .args(["fuzz", subcommand])
        .args(how.flags())
        .arg("--target-dir")
        .arg(how.dir())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    c
}

/// Builds every target in one cargo invocation (they share their dependencies).
pub fn build(cargo_fuzz_path: &Path, how: Build) -> Result<()> {
    let (ok, _) = run_tee(&mut cargo_fuzz(cargo_fuzz_path, "build", how))?;
    if ok {
        Ok(())
    } else {
        Err("building the fuzz targets failed".into())
    }
}

/// Copies the committed seeds of `target` into its working corpus (the fuzzer adds what it finds
/// there; the committed files are never written).
fn seed(target: &str) -> Result<PathBuf> {
    let corpus = root().join("target/fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("creating {}: {e}", corpus.display()))?;
    let sources = TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, s)| *s)
        .unwrap_or_default();
    let wanted = |p: &Path| match target {
        "wav" => p.extension().is_some_and(|e| e == "wav"),
        _ => true,
    };
    for s in sources {
        let src = root().join(s);
        let files: Vec<PathBuf> = if src.is_dir() {
            std::fs::read_dir(&src)
                .map_err(|e| format!("reading {}: {e}", src.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        } else {
            vec![src]
        };
        for f in files.into_iter().filter(|f| wanted(f)) {
            let name = f.file_name().unwrap_or_default();
            let dst = corpus.join(format!("seed-{}", name.to_string_lossy()));
            if !dst.exists() {
                std::fs::copy(&f, &dst)
                    .map_err(|e| format!("copying {} to {}: {e}", f.display(), dst.display()))?;
            }
        }
    }
    Ok(corpus)
}

/// Runs one target within `limits`; returns the number of inputs run.
pub fn fuzz(cargo_fuzz_path: &Path, how: Build, target: &str, limits: &Limits) -> Result<u64> {
    let corpus = seed(target)?;
    let artifacts = root().join("target/fuzz/artifacts").join(target);
    std::fs::create_dir_all(&artifacts)
        .map_err(|e| format!("creating {}: {e}", artifacts.display()))?;
    let mut c = cargo_fuzz(cargo_fuzz_path, "run", how);
    c.arg(target)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-runs={}", limits.runs))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-timeout={TIMEOUT_S}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    if let Some(s) = limits.seconds {
        c.arg(format!("-max_total_time={s}"));
    }
    let (ok, out) = run_tee(&mut c)?;
    let runs = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("stat::number_of_executed_units:"))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or(0);
    if ok {
        Ok(runs)
    } else {
        Err(format!(
            "a finding after {runs} runs: the input is in {} (replay: copy it to fuzz/regressions/{target}/ and run cargo test -p duet-cli --test fuzz_regressions)",
            artifacts.display()
        ))
    }
}
