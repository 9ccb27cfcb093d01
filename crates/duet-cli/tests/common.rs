//! What the reference checks share: the repository root, the reference Python, running a command.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const DUET: &str = env!("CARGO_BIN_EXE_duet");

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `DUET_PYTHON`, else `target/venv/bin/python` (created by `cargo xtask test` with numpy,
/// safetensors, librosa, openSMILE and torch).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DUET_PYTHON") {
        return PathBuf::from(p);
    }
    let p = root().join("target/venv/bin/python");
    assert!(
        p.is_file(),
        "no Python for the reference checks: run `cargo xtask test` (it creates target/venv), or set \
         DUET_PYTHON to a python with tests/reference/requirements*.txt installed"
    );
    p
}

/// Runs `cmd`, which must succeed; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("starting a command");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}
