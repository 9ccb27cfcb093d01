//! `cargo xtask test`: the one command that runs every check on a fresh machine.
//!
//! Steps (each timed): install what is missing; `cargo fmt --check`; the test build, linted by
//! clippy as it compiles (native, all targets); `cargo test --workspace`; the Python reference
//! scripts' self-tests; the page build, linted the same way (wasm32, `wasm-release`, then
//! wasm-bindgen); the browser end-to-end tests in headless Chromium (WebGPU and CPU fallback); a
//! short bounded pass of each fuzz target (nightly, libFuzzer).
//! Every step runs even when an earlier one failed (unless it depends on it), and the last line is
//! `N passed, N failed` over all tests and checks.

use std::path::PathBuf;

use crate::fuzz;
use crate::serve::Server;
use crate::setup;
use crate::util::{
    Result, cargo, cmd, fmt_duration, lint_failures, root, run_tee, step, step_judged, with_clippy,
};

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(name.to_string());
        }
    }

    /// Adds a test runner's own counts; a runner that failed without reporting a failed test (a
    /// compile error, a crash) counts as one failure.
    fn runner(&mut self, name: &str, ok: bool, counts: (usize, usize)) {
        self.passed += counts.0;
        self.failed += counts.1;
        if counts.1 > 0 {
            self.failures.push(format!("{name}: {} failed", counts.1));
        } else if !ok {
            self.failed += 1;
            self.failures.push(format!("{name}: the runner failed"));
        } else if counts.0 == 0 {
            self.failed += 1;
            self.failures.push(format!("{name}: no test ran"));
        }
    }
}

/// Sums libtest's `test result: ok. N passed; M failed; ...` lines.
fn cargo_counts(out: &str) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    for line in out.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split([';', '.']) {
            let mut w = part.split_whitespace();
            if let (Some(n), Some(kind)) = (w.next(), w.next()) {
                match (n.parse::<usize>(), kind) {
                    (Ok(n), "passed") => passed += n,
                    (Ok(n), "failed") => failed += n,
                    _ => {}
                }
            }
        }
    }
    (passed, failed)
}

/// Node's test runner summary (`ℹ pass N` with the spec reporter, `# pass N` with TAP).
fn node_counts(out: &str) -> (usize, usize) {
    let grab = |key: &str| {
        out.lines()
            .filter_map(|l| {
                let l = l.trim().trim_start_matches(['ℹ', '#']).trim();
                l.strip_prefix(key)?.trim().parse::<usize>().ok()
            })
            .next_back()
            .unwrap_or(0)
    };
    (grab("pass "), grab("fail "))
}

/// pytest's last line: `=== 12 passed, 1 skipped in 3.1s ===` (`12 passed, 1 skipped in 3.1s` with -q).
fn pytest_counts(out: &str) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    if let Some(line) = out.lines().rev().find(|l| {
        // `-q` prints the summary without the `===` frame.
        l.contains(" in ")
            && ["passed", "failed", "error", "skipped"]
                .iter()
                .any(|w| l.contains(w))
    }) {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        for pair in words.windows(2) {
            if let Ok(n) = pair[0].parse::<usize>() {
                match pair[1] {
                    "passed" => passed += n,
                    "failed" | "error" | "errors" => failed += n,
                    _ => {}
                }
            }
        }
    }
    (passed, failed)
}

pub fn run(args: &[String]) -> Result<()> {
    let mut install = true;
    for a in args {
        match a.as_str() {
            "--no-install" => install = false,
            other => {
                return Err(format!(
                    "test: unknown option `{other}` (options: --no-install)"
                ));
            }
        }
    }
    let started = std::time::Instant::now();
    let mut tally = Tally::default();

    let (bindgen, python) = if install {
        step("install what is missing", || {
            setup::ensure_components(&["rustfmt", "clippy"])?;
            setup::ensure_apt_packages()?;
            let bindgen = setup::ensure_page_tools()?;
            // torch: the training-mode reference (tests/reference/torch_model.py --train-steps).
            let python = setup::ensure_venv(&["tests/reference/requirements-bench.txt"])?;
            setup::ensure_node_packages()?;
            Ok((bindgen, python))
        })?
    } else {
        let bindgen =
            setup::tool("wasm-bindgen").ok_or("--no-install: wasm-bindgen is not installed")?;
        (bindgen, root().join("target/venv/bin/python"))
    };

    let ok = step("cargo fmt --check", || {
        crate::util::run(cargo().args(["fmt", "--all", "--", "--check"]))
    })
    .is_ok();
    tally.check("cargo fmt --check", ok);

    let ok = step("eslint (www/, tests/e2e/)", || {
        crate::util::run(
            cmd(root().join("tests/e2e/node_modules/.bin/eslint"))
                .current_dir(root())
                .args([
                    "--max-warnings",
                    "0",
                    "-c",
                    "tests/e2e/eslint.config.js",
                    "www",
                    "tests/e2e",
                ]),
        )
    })
    .is_ok();
    tally.check("eslint (www/, tests/e2e/)", ok);

    // One compile for clippy and the tests: clippy-driver compiles the workspace's crates for
    // `cargo test` (util::with_clippy), so no dependency is type-checked twice.
    let test_cmd = |extra: &[&str]| {
        let mut c = cargo();
        c.args(["test", "--workspace"])
            .args(extra)
            .env("DUET_PYTHON", &python);
        with_clippy(&mut c);
        c
    };
    let built = step_judged(
        "build the tests, linting them (cargo test --no-run, clippy-driver, all targets)",
        || run_tee(&mut test_cmd(&["--no-run"])),
        |(ok, _)| *ok,
    );
    let lints = match &built {
        Ok((true, out)) => lint_failures(out),
        Ok((false, _)) => vec!["the build failed".to_string()],
        Err(e) => vec![e.clone()],
    };
    for l in &lints {
        println!("clippy (native): {l}");
    }
    tally.check(
        "clippy native (all targets, warnings denied)",
        lints.is_empty(),
    );

    let r = step_judged(
        "cargo test --workspace",
        || run_tee(&mut test_cmd(&["--no-fail-fast"])),
        |(ok, _)| *ok,
    );
    match r {
        Ok((ok, out)) => tally.runner("cargo test", ok, cargo_counts(&out)),
        Err(e) => tally.runner(&format!("cargo test: {e}"), false, (0, 0)),
    }

    let r = step_judged(
        "Python reference self-tests (pytest tests/reference)",
        || run_tee(cmd(&python).args(["-m", "pytest", "-q", "tests/reference"])),
        |(ok, _)| *ok,
    );
    match r {
        Ok((ok, out)) => tally.runner("pytest", ok, pytest_counts(&out)),
        Err(e) => tally.runner(&format!("pytest: {e}"), false, (0, 0)),
    }

    let page = step(
        "build the page, linting it (wasm32, wasm-release, clippy-driver; wasm-bindgen)",
        || setup::build_page(&bindgen),
    );
    match page {
        Ok(setup::Page { dist, lints }) => {
            for l in &lints {
                println!("clippy (wasm32): {l}");
            }
            tally.check(
                "clippy wasm32 (web, duet-model, duet-dsp)",
                lints.is_empty(),
            );
            let r = step_judged(
                "browser end-to-end tests (headless Chromium)",
                || e2e(dist, &mut test_cmd(&["--no-run"])),
                |(ok, _)| *ok,
            );
            match r {
                Ok((ok, out)) => tally.runner("e2e", ok, node_counts(&out)),
                Err(e) => tally.runner(&format!("e2e: {e}"), false, (0, 0)),
            }
        }
        Err(_) => {
            tally.check("clippy wasm32 (web, duet-model, duet-dsp)", false);
            tally.check("page build", false);
        }
    }

    fuzz_pass(install, &mut tally);

    println!("\nstep times:");
    for (name, secs, ok) in crate::util::step_times() {
        println!(
            "  {:>9}  {}{name}",
            fmt_duration(secs),
            if ok { "" } else { "FAILED " }
        );
    }
    println!(
        "total time {}",
        fmt_duration(started.elapsed().as_secs_f64())
    );
    for f in &tally.failures {
        println!("FAILED: {f}");
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 {
        return Err(format!("{} failed", tally.failed));
    }
    Ok(())
}

/// Inputs per fuzz target in the test run, and the seconds each may take at most: a short bounded
/// pass that catches a parser made fragile since the last long run (`cargo xtask fuzz`, outside CI).
const FUZZ_RUNS: u64 = 20_000;
const FUZZ_SECONDS: u64 = 15;

/// Builds the fuzz targets (nightly, libFuzzer) and runs each briefly; one check per target.
fn fuzz_pass(install: bool, tally: &mut Tally) {
    let tools = if install {
        step(
            "install the fuzzing tools (nightly, cargo-fuzz)",
            fuzz::ensure_tools,
        )
    } else {
        setup::tool("cargo-fuzz").ok_or_else(|| "--no-install: cargo-fuzz is not installed".into())
    };
    let built = tools.and_then(|t| {
        step(
            "build the fuzz targets (nightly, libFuzzer, no sanitizer)",
            || fuzz::build(&t, fuzz::Build::Quick),
        )
        .map(|()| t)
    });
    let limits = fuzz::Limits {
        runs: FUZZ_RUNS,
        seconds: Some(FUZZ_SECONDS),
    };
    for (target, _) in fuzz::TARGETS {
        let name = format!("fuzz {target} (at most {FUZZ_RUNS} inputs / {FUZZ_SECONDS} s)");
        let ok = match &built {
            Ok(t) => step(&name, || fuzz::fuzz(t, fuzz::Build::Quick, target, &limits))
                .map(|runs| println!("fuzz {target}: {runs} inputs, no finding"))
                .is_ok(),
            Err(_) => false,
        };
        tally.check(&name, ok);
    }
}

fn duet_bin() -> PathBuf {
    root().join("target/debug/duet")
}

/// Runs `tests/e2e/*.test.mjs` with Node's test runner against the built page served in-process.
/// `build`: the test step's own build command, so that making sure the CLI exists is a no-op after
/// it (`cargo build -p duet-cli` unifies features differently and rebuilt the whole burn stack: 10
/// min of CI).
fn e2e(dist: PathBuf, build: &mut std::process::Command) -> Result<(bool, String)> {
    // The tests compare the page with `duet predict`.
    crate::util::run(build)?;
    let server = Server::start(dist.clone())?;
    println!("page served at {}", server.url);
    let chromium = crate::util::which("chromium")
        .or_else(|| crate::util::which("chromium-browser"))
        .ok_or("chromium is not installed")?;
    let node = crate::util::which("node").ok_or("node is not installed")?;
    let result = run_tee(
        cmd(node)
            .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
            .arg(root().join("tests/e2e"))
            .env("DUET_URL", &server.url)
            .env("DUET_DIST", &dist)
            .env("DUET_BIN", duet_bin())
            .env("DUET_ROOT", root())
            .env("CHROMIUM", chromium),
    );
    drop(server);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cargo_results() {
        let out = "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
                   finished in 0.01s\ntest result: FAILED. 2 passed; 3 failed; 0 ignored";
        assert_eq!(cargo_counts(out), (7, 3));
    }

    #[test]
    fn counts_node_results() {
        let out = "ℹ tests 4\nℹ suites 0\nℹ pass 3\nℹ fail 1\nℹ cancelled 0\n";
        assert_eq!(node_counts(out), (3, 1));
        assert_eq!(node_counts("# pass 2\n# fail 0\n"), (2, 0));
    }

    #[test]
    fn counts_pytest_results() {
        let out = "....\n========= 4 passed, 1 skipped in 0.52s =========";
        assert_eq!(pytest_counts(out), (4, 0));
        let out = "== 1 failed, 3 passed, 2 errors in 1.0s ==";
        assert_eq!(pytest_counts(out), (3, 3));
        // `pytest -q`, as the test step runs it (CI printed this and counted nothing).
        let out = ".............ssssss\n13 passed, 6 skipped in 0.67s\n";
        assert_eq!(pytest_counts(out), (13, 0));
    }
}
