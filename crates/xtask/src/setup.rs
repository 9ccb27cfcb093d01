//! Installing what a fresh machine lacks: the wasm32 target, trunk, wasm-bindgen-cli (at the exact
//! version in Cargo.lock), Debian packages (Chromium, its driver, the speech synthesisers), the Python
//! venv for reference checks and the e2e test's Node packages. Each check is cheap when the tool is
//! already there; a tool that cannot be installed is an error, never a silent skip.

use std::path::{Path, PathBuf};

use crate::util::{self, Result, cargo, cmd, output, root, run, which};

/// The trunk version the page is built with (needs rustc >= 1.96.1, pinned in rust-toolchain.toml).
pub const TRUNK_VERSION: &str = "0.22.1";

/// Debian packages the tests need, with the binary that proves each is installed.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
    ("espeak-ng", "espeak-ng"),
    ("flite", "flite"),
    ("sox", "sox"),
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

pub fn ensure_wasm_target() -> Result<()> {
    let installed = output(cmd("rustup").args(["target", "list", "--installed"]))?;
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(());
    }
    println!("installing the wasm32-unknown-unknown target (rustup)");
    run(cmd("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// trunk at [`TRUNK_VERSION`]; returns its path.
pub fn ensure_trunk() -> Result<PathBuf> {
    if let Some(p) = tool("trunk")
        && tool_version(&p).is_some_and(|v| v.ends_with(TRUNK_VERSION))
    {
        return Ok(p);
    }
    println!("installing trunk {TRUNK_VERSION} (cargo install --locked; ~10 min on 2 cores)");
    run(cargo().args(["install", "trunk", "--version", TRUNK_VERSION, "--locked"]))?;
    tool("trunk")
        .ok_or_else(|| "trunk was installed but is not on PATH or in $CARGO_HOME/bin".into())
}

/// wasm-bindgen-cli at the version of the wasm-bindgen crate in Cargo.lock; returns its path.
pub fn ensure_wasm_bindgen() -> Result<PathBuf> {
    let want = locked_wasm_bindgen_version()?;
    if let Some(p) = tool("wasm-bindgen")
        && tool_version(&p).is_some_and(|v| v.split_whitespace().nth(1) == Some(want.as_str()))
    {
        return Ok(p);
    }
    println!(
        "installing wasm-bindgen-cli {want} (must equal the wasm-bindgen crate in Cargo.lock)"
    );
    // Without --locked: the CLI's own lock file pins a crate version the registry no longer serves.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want]))?;
    tool("wasm-bindgen").ok_or_else(|| "wasm-bindgen was installed but cannot be found".into())
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
                    apt-get install chromium chromium-driver espeak-ng flite sox"
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
    println!("installing Debian packages: {}", missing.join(" "));
    apt_get(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    apt_get(&args)?;
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
    if !python.is_file() {
        let py =
            which("python3").ok_or("python3 is not installed (needed for reference checks)")?;
        println!("creating the Python venv target/venv");
        run(cmd(py).args(["-m", "venv"]).arg(&venv))?;
    }
    println!("installing Python packages: {}", files.join(", "));
    run(cmd(&python).args(["-m", "pip", "install", "-q", "--upgrade", "pip"]))?;
    let mut pip = cmd(&python);
    pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]);
    for f in &files {
        pip.arg("-r").arg(root().join(f));
    }
    run(&mut pip)?;
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
    println!("installing the e2e tests' Node packages (npm ci)");
    run(cmd(npm)
        .current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund"])
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"))?;
    std::fs::write(&stamp, lock).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

/// Everything the page build needs.
pub fn ensure_page_tools() -> Result<(PathBuf, PathBuf)> {
    ensure_wasm_target()?;
    let bindgen = ensure_wasm_bindgen()?;
    let trunk = ensure_trunk()?;
    Ok((trunk, bindgen))
}

/// Builds the page in release into `dist/` with trunk (offline: trunk must not download tools; it
/// uses the wasm-bindgen we installed).
pub fn build_page(trunk: &Path, bindgen: &Path) -> Result<PathBuf> {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = bindgen.parent() {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).map_err(|e| format!("PATH: {e}"))?;
    }
    util::run(
        cmd(trunk)
            .args(["build", "--release", "--offline"])
            .env("PATH", path)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("NO_COLOR"),
    )?;
    let dist = root().join("dist");
    if !dist.join("index.html").is_file() {
        return Err("trunk finished but dist/index.html is missing".into());
    }
    Ok(dist)
}
