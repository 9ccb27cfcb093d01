//! Installing what a fresh machine lacks, each by the step that needs it: the wasm32 target and the
//! rustfmt/clippy components (rustup, for the toolchain cargo runs with), wasm-bindgen-cli (at the
//! exact version in Cargo.lock), Debian packages (Chromium, its driver, the speech synthesisers), the
//! Python venv for reference checks and the e2e test's Node packages. Each check is cheap when the
//! tool is already there; a tool that cannot be installed is an error, never a silent skip. Every
//! install prints one line saying what and why, and how long it took.
//!
//! The workspace builds with whatever toolchain runs `cargo xtask` (the machine's default stable;
//! the minimum is `rust-version` in Cargo.toml), so a machine whose rustup does not install
//! toolchains by itself (`RUSTUP_AUTO_INSTALL=0`) works as it is. Only the fuzz targets need a
//! second toolchain (nightly), which [`ensure_toolchain`] installs explicitly when it is missing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::util::{Result, cargo, cmd, fmt_duration, output, root, run, which};

/// Runs one install with a line saying what and why before it and its duration after it.
fn installing(what: &str, why: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("installing {what} ({why})");
    let t = Instant::now();
    let r = f();
    let took = fmt_duration(t.elapsed().as_secs_f64());
    match &r {
        Ok(()) => println!("installed {what} in {took}"),
        Err(e) => println!("installing {what} FAILED after {took}: {e}"),
    }
    r
}
/// Debian packages the tests need, with the binary (or file) that proves each is installed.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
    ("espeak-ng", "espeak-ng"),
    ("flite", "flite"),
    ("sox", "sox"),
    // Mesa's software Vulkan driver (lavapipe): native wgpu gets an adapter without a GPU, so the
    // backend tests run on wgpu as well as on the CPU.
    (
        "mesa-vulkan-drivers",
        "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
    ),
];

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
        .join("bin")
}

/// Finds a cargo-installed tool on PATH or in `$CARGO_HOME/bin`.
pub fn tool(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        let p = cargo_bin_dir().join(name);
        p.is_file().then_some(p)
    })
}

fn tool_version(path: &Path) -> Option<String> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `wasm-bindgen` crate version recorded in Cargo.lock: the CLI must match it exactly.
pub fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_string());
        }
    }
    Err("Cargo.lock has no wasm-bindgen package".into())
}

/// The active toolchain's name, as rustup reports it (for messages).
fn active_toolchain() -> String {
    output(cmd("rustup").args(["show", "active-toolchain"]))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "the active toolchain".into())
}

/// The wasm32 target of the toolchain cargo runs with (the page is compiled for it).
pub fn ensure_wasm_target() -> Result<()> {
    if which("rustup").is_none() {
        // Without rustup the toolchain is what it is; cargo's own error names a missing target.
        return Ok(());
    }
    let installed = output(cmd("rustup").args(["target", "list", "--installed"]))?;
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(());
    }
    installing(
        &format!(
            "the wasm32-unknown-unknown target for {}",
            active_toolchain()
        ),
        "rustup; the page is Rust compiled to WebAssembly",
        || run(cmd("rustup").args(["target", "add", "wasm32-unknown-unknown"])),
    )
}

/// rustup components the checks use (`cargo fmt`, `cargo clippy`), added where the toolchain has a
/// minimal profile without them.
pub fn ensure_components(components: &[&str]) -> Result<()> {
    if which("rustup").is_none() {
        return Ok(());
    }
    let installed = output(cmd("rustup").args(["component", "list", "--installed"]))?;
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .any(|l| l.trim().starts_with(&format!("{c}-")))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    installing(
        &format!(
            "rustup components {} for {}",
            missing.join(", "),
            active_toolchain()
        ),
        "cargo fmt and cargo clippy check the code",
        || run(cmd("rustup").args(["component", "add"]).args(&missing)),
    )
}

/// wasm-bindgen-cli at the version of the wasm-bindgen crate in Cargo.lock; returns its path.
pub fn ensure_wasm_bindgen() -> Result<PathBuf> {
    let want = locked_wasm_bindgen_version()?;
    if let Some(p) = tool("wasm-bindgen")
        && tool_version(&p).is_some_and(|v| v.split_whitespace().nth(1) == Some(want.as_str()))
    {
        return Ok(p);
    }
    installing(
        &format!("wasm-bindgen-cli {want}"),
        "cargo install, a few minutes; it writes the page's JS glue and must equal the \
         wasm-bindgen crate in Cargo.lock",
        // Without --locked: the CLI's own lock file pins a crate version the registry no longer
        // serves.
        || run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want])),
    )?;
    tool("wasm-bindgen").ok_or_else(|| "wasm-bindgen was installed but cannot be found".into())
}

/// A second rustup toolchain (`nightly` for the fuzz targets), installed with the minimal profile
/// when missing. The workspace itself never needs it.
pub fn ensure_toolchain(name: &str, why: &str) -> Result<()> {
    if which("rustup").is_none() {
        return Err(format!(
            "rustup is not installed: the {name} toolchain ({why}) cannot be installed"
        ));
    }
    let installed = output(cmd("rustup").args(["toolchain", "list"]))?;
    if installed.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|t| t.starts_with(&format!("{name}-")))
    }) {
        return Ok(());
    }
    installing(
        &format!("the {name} toolchain"),
        &format!("rustup; {why}"),
        || run(cmd("rustup").args(["toolchain", "install", name, "--profile", "minimal"])),
    )
}

/// A cargo subcommand or tool from crates.io (`cargo install --locked`); returns its path.
pub fn ensure_cargo_tool(name: &str, why: &str) -> Result<PathBuf> {
    if let Some(p) = tool(name) {
        return Ok(p);
    }
    installing(name, why, || {
        run(cargo().args(["install", "--locked", name]))
    })?;
    tool(name).ok_or_else(|| format!("{name} was installed but cannot be found"))
}

fn apt_get(args: &[&str]) -> Result<()> {
    let is_root = output(cmd("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false);
    let mut c = if is_root {
        cmd("apt-get")
    } else if which("sudo").is_some() {
        let mut c = cmd("sudo");
        c.arg("apt-get");
        c
    } else {
        return Err(
            "apt-get needs root and sudo is not available; install as root: \
                    apt-get install chromium chromium-driver espeak-ng flite sox mesa-vulkan-drivers"
                .into(),
        );
    };
    c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    run(&mut c)
}

/// Debian packages in [`APT_PACKAGES`] that are missing, installed with apt-get.
pub fn ensure_apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, bin)| which(bin).is_none())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if which("apt-get").is_none() {
        return Err(format!(
            "missing {} and apt-get is not available: install them with your package manager",
            missing.join(", ")
        ));
    }
    installing(
        &format!("Debian packages {}", missing.join(" ")),
        "apt-get; Chromium runs the page's tests, espeak-ng/flite/sox make test speech, \
         lavapipe gives wgpu a software GPU",
        || {
            apt_get(&["update", "-qq"])?;
            let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
            args.extend(&missing);
            apt_get(&args)
        },
    )?;
    for (pkg, bin) in APT_PACKAGES {
        if which(bin).is_none() {
            return Err(format!(
                "apt-get installed {pkg} but `{bin}` is still not on PATH"
            ));
        }
    }
    Ok(())
}

/// The Python venv for reference checks and benchmarks (`target/venv`), from
/// `tests/reference/requirements.txt` (+ `extra` requirement files, e.g. torch for benchmarks).
/// Reinstalls only when the requirement files change. Returns the venv's python.
pub fn ensure_venv(extra: &[&str]) -> Result<PathBuf> {
    let venv = root().join("target/venv");
    let python = venv.join("bin/python");
    let mut files = vec!["tests/reference/requirements.txt"];
    files.extend(extra);
    let mut stamp_text = String::new();
    for f in &files {
        stamp_text.push_str(
            &std::fs::read_to_string(root().join(f)).map_err(|e| format!("reading {f}: {e}"))?,
        );
    }
    let stamp = venv.join(format!("duet-stamp-{}", files.len()));
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&stamp_text) {
        return Ok(python);
    }
    installing(
        &format!("the Python venv target/venv from {}", files.join(", ")),
        "pip; librosa, openSMILE and numpy are the independent references the tests compare with",
        || {
            if !python.is_file() {
                let py = which("python3")
                    .ok_or("python3 is not installed (needed for reference checks)")?;
                run(cmd(py).args(["-m", "venv"]).arg(&venv))?;
            }
            run(cmd(&python).args(["-m", "pip", "install", "-q", "--upgrade", "pip"]))?;
            let mut pip = cmd(&python);
            pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]);
            for f in &files {
                pip.arg("-r").arg(root().join(f));
            }
            run(&mut pip)
        },
    )?;
    std::fs::write(&stamp, stamp_text).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    Ok(python)
}

/// Node packages of the browser end-to-end tests (`tests/e2e`, playwright-core driving Debian's
/// Chromium; no browser download).
pub fn ensure_node_packages() -> Result<()> {
    let dir = root().join("tests/e2e");
    let stamp = dir.join("node_modules/.duet-stamp");
    let lock = std::fs::read_to_string(dir.join("package-lock.json"))
        .map_err(|e| format!("reading tests/e2e/package-lock.json: {e}"))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(&lock) {
        return Ok(());
    }
    let npm = which("npm").ok_or("npm is not installed (Node 20 is needed for the e2e tests)")?;
    installing(
        "the e2e tests' Node packages (tests/e2e)",
        "npm ci; playwright-core drives Debian's Chromium, no browser download",
        || {
            run(cmd(npm)
                .current_dir(&dir)
                .args(["ci", "--no-audit", "--no-fund"])
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"))
        },
    )?;
    std::fs::write(&stamp, lock).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

/// Everything the page build needs; returns the wasm-bindgen CLI.
pub fn ensure_page_tools() -> Result<PathBuf> {
    ensure_wasm_target()?;
    // The build lints as it compiles (clippy-driver).
    ensure_components(&["clippy"])?;
    ensure_wasm_bindgen()
}

/// The wasm the page's crate compiles to (profile `wasm-release`, Cargo.toml).
fn page_wasm() -> PathBuf {
    root().join("target/wasm32-unknown-unknown/wasm-release/duet_web.wasm")
}

/// Builds the page into `dist/`, linting it on the way ([`crate::util::with_clippy`]): `web/`
/// compiled to wasm32 (profile `wasm-release`), its JS glue
/// from wasm-bindgen (`dist/duet-web.js`, `dist/duet-web_bg.wasm`, which www/worker.js imports),
/// `index.html` and a copy of `www/`. Steps whose inputs did not change are skipped, so a second
/// build of an unchanged tree takes seconds.
pub fn build_page(bindgen: &Path) -> Result<Page> {
    // duet-model and duet-dsp are named too so that clippy lints them for wasm32 (it lints only the
    // packages on the command line); they are built for duet-web either way.
    let (ok, out) = crate::util::run_tee(crate::util::with_clippy(cargo().args([
        "build",
        "--quiet",
        "-p",
        "duet-web",
        "-p",
        "duet-model",
        "-p",
        "duet-dsp",
        "--lib",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-release",
    ])))?;
    if !ok {
        return Err("compiling the page's wasm (web/) failed".into());
    }
    let lints = crate::util::lint_failures(&out);
    let wasm = page_wasm();
    let dist = root().join("dist");
    std::fs::create_dir_all(&dist).map_err(|e| format!("creating {}: {e}", dist.display()))?;
    // wasm-bindgen again only when the wasm or the CLI changed (it takes seconds on 13 MB).
    let stamp_path = dist.join(".duet-bindgen-stamp");
    let stamp = format!(
        "{}\n{}\n{:?}",
        bindgen.display(),
        tool_version(bindgen).unwrap_or_default(),
        std::fs::metadata(&wasm)
            .and_then(|m| Ok((m.len(), m.modified()?)))
            .map_err(|e| format!("{}: {e}", wasm.display()))?
    );
    let glue = ["duet-web.js", "duet-web_bg.wasm"];
    let fresh = std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
        && glue.iter().all(|f| dist.join(f).is_file());
    if !fresh {
        run(cmd(bindgen)
            .args([
                "--target",
                "web",
                "--no-typescript",
                "--out-name",
                "duet-web",
                "--out-dir",
            ])
            .arg(&dist)
            .arg(&wasm))?;
        std::fs::write(&stamp_path, stamp)
            .map_err(|e| format!("writing {}: {e}", stamp_path.display()))?;
    }
    copy_file(&root().join("index.html"), &dist.join("index.html"))?;
    let www = dist.join("www");
    if www.exists() {
        std::fs::remove_dir_all(&www).map_err(|e| format!("removing {}: {e}", www.display()))?;
    }
    copy_dir(&root().join("www"), &www)?;
    Ok(Page { dist, lints })
}

/// A built page.
pub struct Page {
    /// `dist/`, ready to serve.
    pub dist: PathBuf,
    /// clippy's (or rustc's) warnings about the wasm32 build of duet-web, duet-model, duet-dsp.
    pub lints: Vec<String>,
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            copy_file(&src, &dst)?;
        }
    }
    Ok(())
}
