//! Small process, path and timing helpers shared by the xtask commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub type Result<T> = std::result::Result<T, String>;

/// The workspace root (two levels above this crate's manifest).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask lives in crates/xtask")
        .to_path_buf()
}

/// A command rooted at the workspace root. The toolchain is the one running xtask: rustup's proxy
/// passes RUSTUP_TOOLCHAIN to its children, so every cargo and rustc below (also those cargo runs
/// for registry crates, outside this tree) resolves to it and one target directory never mixes
/// two compilers.
pub fn cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.current_dir(root());
    // Every toolchain piece is installed explicitly by the step that needs it (setup.rs); a child
    // must never pass because rustup fetched something by itself.
    c.env("RUSTUP_AUTO_INSTALL", "0");
    c
}

/// The cargo that runs xtask (`$CARGO`), so children use the same toolchain.
pub fn cargo() -> Command {
    cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Lints while compiling: clippy-driver (rustc plus clippy's lints) as the compiler of the
/// workspace's own crates, as `cargo clippy` does, but in a build that also produces the binaries.
/// One compile then gives both clippy's verdict and the test binaries / the page, where separate
/// `cargo clippy` runs would type-check every dependency a second time (9 of CI's minutes).
/// clippy-driver lints only the packages named on the command line (`--workspace`, `-p`); lints
/// stay warnings, which [`lint_failures`] turns into a failed check (`-D warnings` would stop the
/// build and with it the tests). Dependencies are compiled as by plain rustc.
pub fn with_clippy(c: &mut Command) -> &mut Command {
    c.env("RUSTC_WORKSPACE_WRAPPER", "clippy-driver")
        .env_remove("CLIPPY_ARGS")
}

/// Cargo's per-crate warning summaries (`warning: `duet-model` (lib) generated 2 warnings`) in a
/// build's output: each is a crate that clippy (or rustc) found fault with.
pub fn lint_failures(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with("warning: `") && l.contains(" generated "))
        .map(|l| l.trim_start_matches("warning: ").to_string())
        .collect()
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command, inheriting stdio; an error names the command and its exit status.
pub fn run(c: &mut Command) -> Result<()> {
    let status = c
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(c)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(c)))
    }
}

/// Runs a command and returns its stdout (stderr inherited); fails on a non-zero exit.
pub fn output(c: &mut Command) -> Result<String> {
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(c)))?;
    if !out.status.success() {
        return Err(format!("`{}` failed ({})", describe(c), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, echoing its combined output live while also capturing it (for counting test
/// results). Returns (success, captured output).
pub fn run_tee(c: &mut Command) -> Result<(bool, String)> {
    use std::io::{BufRead, BufReader};
    let desc = describe(c);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{desc}`: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut captured = String::new();
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            eprintln!("{line}");
            captured.push_str(&line);
            captured.push('\n');
        }
        captured
    });
    let mut captured = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(|l| l.ok())
    {
        println!("{line}");
        captured.push_str(&line);
        captured.push('\n');
    }
    captured.push_str(&err_thread.join().unwrap_or_default());
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{desc}`: {e}"))?;
    Ok((status.success(), captured))
}

/// Whether `program` is found on PATH (or is a path that exists).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

thread_local! {
    static TIMES: std::cell::RefCell<Vec<(String, f64, bool)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Times a named step and prints its duration, so CI logs show where the minutes go.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    step_judged(name, f, |_| true)
}

/// Like [`step`], for steps whose `Ok` value can still be a failure (a test runner's exit status).
pub fn step_judged<T>(
    name: &str,
    f: impl FnOnce() -> Result<T>,
    passed: impl Fn(&T) -> bool,
) -> Result<T> {
    println!("\n==> {name}");
    let t = Instant::now();
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    let ok = matches!(&r, Ok(v) if passed(v));
    match &r {
        Err(e) => println!("<== {name}: FAILED in {}: {e}", fmt_duration(secs)),
        Ok(_) if ok => println!("<== {name}: ok in {}", fmt_duration(secs)),
        Ok(_) => println!("<== {name}: FAILED in {}", fmt_duration(secs)),
    }
    TIMES.with(|t| t.borrow_mut().push((name.to_string(), secs, ok)));
    r
}

/// The steps run so far with their durations (for the closing summary).
pub fn step_times() -> Vec<(String, f64, bool)> {
    TIMES.with(|t| t.borrow().clone())
}

pub fn fmt_duration(secs: f64) -> String {
    if secs >= 60.0 {
        format!("{}m{:04.1}s", (secs / 60.0).floor() as u64, secs % 60.0)
    } else {
        format!("{secs:.1}s")
    }
}
