//! What the reference checks share: the repository root, the reference Python, running a command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// What [`measured`] saw of a child process.
pub struct Measured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory in MB.
    pub peak_mb: u64,
}

/// Runs `cmd` and returns its exit code (minus the signal's number if one ended it), its output and
/// its peak RSS — from the kernel's accounting of that one child (wait4), so other tests' processes
/// do not count. That figure is at least this test process's own peak so far (the child is spawned
/// sharing this process's memory, and Linux records its high-water mark at exec): a test that
/// compares peaks must not hold large buffers itself.
pub fn measured(cmd: &mut Command) -> Measured {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a command");
    // stderr on its own thread, so that neither pipe can fill up and stall the child.
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr_pipe, &mut s).unwrap();
        s
    });
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let stderr = stderr.join().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it for the child `pid`, which is ours
    // and not yet reaped (std's Child is never waited on after this).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Measured {
        code,
        stdout,
        stderr,
        // ru_maxrss is in kilobytes on Linux.
        peak_mb: usage.ru_maxrss as u64 / 1024,
    }
}
