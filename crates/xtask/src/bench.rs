//! `cargo xtask bench [dsp|model|gpu|train|web|all]`: Duet's figures side by side with its peers, run in
//! the same invocation (machines are noisy: we claim ratios measured together, not absolute times),
//! printed as one table; `all` also writes it to docs/benchmarks.md with the machine and the date (one
//! part alone would replace the whole table with its few rows).
//!
//! Peers: librosa + openSMILE (features), PyTorch eager on the same safetensors weights
//! (tests/reference/torch_model.py), real time (the page). Each figure is the median of >= 5 runs
//! after a warm-up, with its min-max spread. Both sides use the same number of threads (1).

use std::path::{Path, PathBuf};

use crate::setup;
use crate::util::{Result, cargo, cmd, output, root, step};

struct Row {
    figure: String,
    duet: String,
    peer: String,
    ratio: String,
}

fn json_of(out: &str) -> Result<serde_json::Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("no JSON line in the benchmark output:\n{out}"))?;
    serde_json::from_str(line).map_err(|e| format!("bad benchmark JSON ({e}): {line}"))
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// `median (min–max, n=N)` of a benchmark's JSON result (`median_s`, `runs_s`).
fn spread(v: &serde_json::Value) -> String {
    spread_of(f(v, "median_s"), &v["runs_s"])
}

/// `median (min–max, n=N)` with the runs (seconds) from a JSON array.
fn spread_of(median: f64, runs: &serde_json::Value) -> String {
    let runs: Vec<f64> = runs
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    let min = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}–{}, n={})", ms(median), ms(min), ms(max), runs.len())
}

fn ms(s: f64) -> String {
    if !s.is_finite() {
        "—".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

/// Builds the release examples the Duet side runs.
fn build_examples() -> Result<(PathBuf, PathBuf)> {
    crate::util::run(cargo().args([
        "build",
        "--release",
        "-p",
        "duet-dsp",
        "--example",
        "bench_dsp",
    ]))?;
    crate::util::run(cargo().args([
        "build",
        "--release",
        "-p",
        "duet-train",
        "--example",
        "bench_model",
    ]))?;
    crate::util::run(cargo().args(["build", "--release", "-p", "duet-cli", "--bin", "duet"]))?;
    let ex = root().join("target/release/examples");
    Ok((ex.join("bench_dsp"), ex.join("bench_model")))
}

/// 60 s of speech: the committed speech fixtures concatenated (sox) until a minute is reached.
fn speech_60s() -> Result<PathBuf> {
    let out = root().join("target/bench/speech_60s.wav");
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().expect("has a parent")).map_err(|e| e.to_string())?;
    let dir = root().join("tests/fixtures/dsp");
    let parts = ["speech_a.wav", "speech_b.wav"];
    let mut c = cmd("sox");
    for _ in 0..12 {
        for p in parts {
            c.arg(dir.join(p));
        }
    }
    c.arg(&out).args(["trim", "0", "60"]);
    crate::util::run(&mut c)?;
    Ok(out)
}

fn threads_env(c: &mut std::process::Command, n: usize) -> &mut std::process::Command {
    let n = n.to_string();
    for k in [
        "RAYON_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    ] {
        c.env(k, &n);
    }
    c
}

fn bench_dsp(python: &Path, bench_dsp: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let wav = speech_60s()?;
    let duet = json_of(&output(threads_env(cmd(bench_dsp).arg(&wav), 1))?)?;
    let peer = json_of(&output(threads_env(
        cmd(python)
            .arg(root().join("tests/reference/bench_dsp.py"))
            .arg(&wav),
        1,
    ))?)?;
    rows.push(Row {
        figure: "features of 60 s of speech (MFCC + both mels), 1 thread".into(),
        duet: format!(
            "{} = {:.0}x real time",
            spread(&duet),
            f(&duet, "x_realtime")
        ),
        peer: format!(
            "librosa + openSMILE: {} = {:.0}x real time",
            spread(&peer),
            f(&peer, "x_realtime")
        ),
        ratio: format!(
            "{:.1}x faster (goal ≥ 20x)",
            f(&peer, "median_s") / f(&duet, "median_s")
        ),
    });
    Ok(())
}

fn model_file() -> Result<PathBuf> {
    let m = root().join("target/bench/dual-paper.safetensors");
    if !m.is_file() {
        crate::util::run(
            cmd(root().join("target/release/duet"))
                .args(["init-model", "--kind", "dual", "--seed", "1", "--out"])
                .arg(&m),
        )?;
    }
    Ok(m)
}

/// `bench_model --mode forward` of a 4 s utterance at `batch`, one thread, plus `extra` arguments.
fn forward_json(bench_model: &Path, batch: usize, extra: &[&str]) -> Result<serde_json::Value> {
    let b = batch.to_string();
    let mut c = cmd(bench_model);
    c.args(["--mode", "forward", "--batch", &b, "--seconds", "4"])
        .args(extra);
    json_of(&output(threads_env(&mut c, 1))?)
}

fn bench_forward(
    python: &Path,
    bench_model: &Path,
    batch: usize,
    rows: &mut Vec<Row>,
) -> Result<f64> {
    let model = model_file()?;
    let b = batch.to_string();
    let duet = forward_json(bench_model, batch, &[])?;
    let peer = torch_bench(python, &model, &["--bench-forward", "--batch", &b])?;
    let steps = forward_json(bench_model, batch, &["--recurrence", "steps"])?;
    rows.push(Row {
        figure: format!(
            "`dual` forward, batch {batch}, CPU: fused recurrences vs the step loop they replaced"
        ),
        duet: spread(&duet),
        peer: format!("step loop {}", spread(&steps)),
        ratio: format!(
            "{:.2}x faster",
            f(&steps, "median_s") / f(&duet, "median_s")
        ),
    });
    rows.push(Row {
        figure: format!("`dual` forward, 4 s utterance, batch {batch}, CPU, 1 thread"),
        duet: spread(&duet),
        peer: format!("PyTorch {}", spread(&peer)),
        ratio: format!(
            "{:.2}x PyTorch's time (goal ≤ 1x)",
            f(&duet, "median_s") / f(&peer, "median_s")
        ),
    });
    Ok(f(&duet, "median_s"))
}

/// Native wgpu (a GPU, or lavapipe where there is none): `dual` forward with the fused recurrences,
/// with the step loop they replaced, and on the CPU backend, in one run. Fewer runs than the CPU
/// rows: on lavapipe one step-loop forward takes seconds. A batch the adapter cannot hold (lavapipe
/// refuses the 235 MB CNN activation of batch 32) gets a row saying so.
fn bench_gpu(bench_model: &Path, rows: &mut Vec<Row>) -> Result<()> {
    for batch in [1usize, 8, 32] {
        if let Err(e) = bench_gpu_batch(bench_model, batch, rows) {
            let why = e
                .lines()
                .find(|l| l.contains("allocate"))
                .unwrap_or("failed");
            rows.push(Row {
                figure: format!("`dual` forward, 4 s utterance, batch {batch}, native wgpu"),
                duet: format!("not measured: {}", why.trim()),
                peer: "—".into(),
                ratio: "—".into(),
            });
        }
    }
    Ok(())
}

fn bench_gpu_batch(bench_model: &Path, batch: usize, rows: &mut Vec<Row>) -> Result<()> {
    let run = |backend: &str, recurrence: &str| {
        forward_json(
            bench_model,
            batch,
            &[
                "--backend",
                backend,
                "--recurrence",
                recurrence,
                "--runs",
                "3",
                "--warmup",
                "1",
            ],
        )
    };
    let fused = run("wgpu", "fused")?;
    let steps = run("wgpu", "steps")?;
    let cpu = run("cpu", "fused")?;
    let adapter = fused["impl"].as_str().unwrap_or("wgpu").to_string();
    let dispatches = |v: &serde_json::Value| v["dispatches"].as_u64().unwrap_or(0);
    rows.push(Row {
        figure: format!(
            "`dual` forward, 4 s utterance, batch {batch}, native wgpu: {adapter}; kernel dispatches per forward: fused {}, step loop {}",
            dispatches(&fused),
            dispatches(&steps)
        ),
        duet: spread(&fused),
        peer: format!(
            "step loop on wgpu {}; CPU backend {}",
            spread(&steps),
            spread(&cpu)
        ),
        ratio: format!(
            "{:.1}x faster than the step loop; {:.2}x the CPU's time",
            f(&steps, "median_s") / f(&fused, "median_s"),
            f(&fused, "median_s") / f(&cpu, "median_s")
        ),
    });
    Ok(())
}

fn bench_train(python: &Path, bench_model: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let model = model_file()?;
    // `recurrence`: `fused` (what ships) or `steps` (burn differentiating the LSTM's and the
    // DS-LSTM's step loops, what the fused ops' backward replaced).
    let train = |recurrence: &str| -> Result<serde_json::Value> {
        json_of(&output(threads_env(
            cmd(bench_model).args([
                "--mode",
                "train",
                "--batch",
                "32",
                "--seconds",
                "4",
                "--runs",
                "5",
                "--warmup",
                "1",
                "--recurrence",
                recurrence,
            ]),
            1,
        ))?)
    };
    let duet = train("fused")?;
    let steps = train("steps")?;
    let peer = torch_bench(
        python,
        &model,
        &[
            "--bench-train",
            "--batch",
            "32",
            "--runs",
            "5",
            "--warmup",
            "1",
        ],
    )?;
    rows.push(Row {
        figure: "training step (fwd + bwd + Adam), `dual`, batch 32 of 4 s, CPU, 1 thread".into(),
        duet: format!(
            "{} = {:.1} utt/s",
            spread(&duet),
            32.0 / f(&duet, "median_s")
        ),
        peer: format!(
            "PyTorch {} = {:.1} utt/s",
            spread(&peer),
            32.0 / f(&peer, "median_s")
        ),
        ratio: format!(
            "{:.2}x PyTorch's time (goal ≤ 1x)",
            f(&duet, "median_s") / f(&peer, "median_s")
        ),
    });
    rows.push(Row {
        figure:
            "the same training step with the recurrences' step loops (before their fused backward)"
                .into(),
        duet: format!("{} (fused: {})", spread(&steps), spread(&duet)),
        peer: String::new(),
        ratio: format!(
            "fused {:.2}x faster",
            f(&steps, "median_s") / f(&duet, "median_s")
        ),
    });
    rows.push(Row {
        figure: "peak memory of that training step (process RSS)".into(),
        duet: format!("{:.0} MB", f(&duet, "peak_rss_mb")),
        peer: format!("PyTorch {:.0} MB", f(&peer, "peak_rss_mb")),
        ratio: format!("{:.2}x", f(&duet, "peak_rss_mb") / f(&peer, "peak_rss_mb")),
    });
    Ok(())
}

fn bench_flops(bench_model: &Path, forward32_s: f64, rows: &mut Vec<Row>) -> Result<()> {
    let peak = json_of(&output(threads_env(
        cmd(bench_model).args(["--mode", "sgemm"]),
        1,
    ))?)?;
    let flops = json_of(&output(cmd(bench_model).args([
        "--mode",
        "flops",
        "--batch",
        "32",
        "--seconds",
        "4",
    ]))?)?;
    let reached = f(&flops, "flops") / forward32_s;
    rows.push(Row {
        figure: "FLOP/s of the `dual` forward (batch 32) vs the machine's single-thread SGEMM peak"
            .into(),
        duet: format!(
            "{:.2} GFLOP/s ({:.2} GFLOP per batch)",
            reached / 1e9,
            f(&flops, "flops") / 1e9
        ),
        peer: format!("SGEMM 1024³: {:.1} GFLOP/s", f(&peak, "gflops")),
        ratio: format!(
            "{:.0} % of peak",
            100.0 * reached / (f(&peak, "gflops") * 1e9)
        ),
    });
    Ok(())
}

fn bench_web(rows: &mut Vec<Row>) -> Result<()> {
    let script = root().join("tests/e2e/bench_web.mjs");
    if !script.is_file() {
        return Err("tests/e2e/bench_web.mjs is missing".into());
    }
    setup::ensure_apt_packages()?;
    setup::ensure_node_packages()?;
    let bindgen = setup::ensure_page_tools()?;
    let dist = setup::build_page(&bindgen)?.dist;
    let server = crate::serve::Server::start(dist.clone())?;
    let out = output(
        cmd("node")
            .arg(&script)
            .env("DUET_URL", &server.url)
            .env("DUET_DIST", &dist)
            .env("DUET_ROOT", root())
            .env(
                "CHROMIUM",
                crate::util::which("chromium").unwrap_or_else(|| "/usr/bin/chromium".into()),
            ),
    )?;
    drop(server);
    let v = json_of(&out)?;
    let audio = v["audio_s"].as_f64().unwrap_or(5.0);
    for (backend, label) in [("cpu", "CPU fallback"), ("webgpu", "WebGPU")] {
        let d = &v["drop_to_probs_s"][backend];
        let med = d["median"].as_f64().unwrap_or(f64::NAN);
        rows.push(Row {
            figure: format!(
                "page: drop-to-probabilities, {audio:.0} s WAV, {label} (headless Chromium)"
            ),
            duet: spread_of(med, &d["runs"]),
            peer: "real time".into(),
            ratio: format!(
                "{:.1}x real time{}",
                audio / med,
                if backend == "cpu" {
                    " (goal ≥ 100x)"
                } else {
                    ""
                }
            ),
        });
    }
    let mb = |k: &str| v[k].as_f64().unwrap_or(f64::NAN) / 1e6;
    rows.push(Row {
        figure: "page: wasm size raw / gzip, model size, time to ready (WebGPU / CPU)".into(),
        duet: format!(
            "{:.2} MB / {:.2} MB gzip; model {:.2} MB; ready {} / {}",
            mb("wasm_bytes"),
            mb("wasm_gzip_bytes"),
            mb("model_bytes"),
            ms(v["time_to_ready_s"]["webgpu"].as_f64().unwrap_or(f64::NAN)),
            ms(v["time_to_ready_s"]["cpu"].as_f64().unwrap_or(f64::NAN))
        ),
        peer: "goals: wasm ≤ 3 MB gzip, model ≤ 5 MB".into(),
        ratio: format!(
            "{:.2}x / {:.2}x of the goals",
            mb("wasm_gzip_bytes") / 3.0,
            mb("model_bytes") / 5.0
        ),
    });
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores, {mem}")
}

fn today() -> String {
    output(cmd("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn run(args: &[String]) -> Result<()> {
    let what = args.first().map(String::as_str).unwrap_or("all");
    let all = what == "all";
    if !["dsp", "model", "gpu", "train", "web", "all"].contains(&what) {
        return Err(format!(
            "bench: unknown part `{what}` (dsp, model, gpu, train, web, all)"
        ));
    }
    let python = step(
        "install the peers (Python venv: librosa, opensmile, torch)",
        || {
            setup::ensure_apt_packages()?;
            setup::ensure_venv(&["tests/reference/requirements-bench.txt"])
        },
    )?;
    let (bench_dsp_bin, bench_model_bin) =
        step("build the Duet benchmarks (release)", build_examples)?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut record = |name: &str, r: Result<()>| {
        if let Err(e) = r {
            eprintln!("bench {name}: {e}");
            failures.push(format!("{name}: {e}"));
        }
    };
    if all || what == "dsp" {
        let r = step("bench dsp", || {
            bench_dsp(&python, &bench_dsp_bin, &mut rows)
        });
        record("dsp", r);
    }
    if all || what == "model" {
        let r = step("bench model", || {
            bench_forward(&python, &bench_model_bin, 1, &mut rows)?;
            let t32 = bench_forward(&python, &bench_model_bin, 32, &mut rows)?;
            bench_flops(&bench_model_bin, t32, &mut rows)
        });
        record("model", r);
    }
    if all || what == "gpu" {
        let r = step("bench gpu (native wgpu)", || {
            bench_gpu(&bench_model_bin, &mut rows)
        });
        record("gpu", r);
    }
    if all || what == "train" {
        let r = step("bench train", || {
            bench_train(&python, &bench_model_bin, &mut rows)
        });
        record("train", r);
    }
    if all || what == "web" {
        let r = step("bench web", || bench_web(&mut rows));
        record("web", r);
    }
    let mut table = String::from("| figure | Duet | peer | ratio |\n|---|---|---|---|\n");
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.figure, r.duet, r.peer, r.ratio
        ));
    }
    let gpu_note = "GPU rows (native wgpu): this machine has no GPU; the page's WebGPU row runs on Chromium's \
                    software adapter (SwiftShader). Figures on an NVIDIA H100 beside PyTorch CUDA, and the \
                    wgpu-vs-CPU agreement of every model, are in [gpu.md](gpu.md) \
                    (`tests/reference/gpu_check.sh`).\n\nWhere a figure misses its goal, and why: \
                    [performance.md](performance.md).";
    println!("\n{table}\n{gpu_note}");
    let doc = format!(
        "# Benchmarks\n\nMeasured by `cargo xtask bench {what}` on {}, {}.\n\nEvery figure is the median of at \
         least 5 runs after a warm-up (min–max in parentheses); Duet and its peer run in the same invocation \
         with the same thread count (1), so the ratios hold even when the machine's speed drifts. The \
         PyTorch side is `tests/reference/torch_model.py`, loading the same safetensors weights.\n\n{table}\n{gpu_note}\n{}",
        machine(),
        today(),
        if failures.is_empty() {
            String::new()
        } else {
            format!("\nNot measured this time: {}\n", failures.join("; "))
        }
    );
    if all {
        let path = root().join("docs/benchmarks.md");
        std::fs::write(&path, doc).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    } else {
        println!("(docs/benchmarks.md is rewritten by `cargo xtask bench all` only)");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} benchmark part(s) failed", failures.len()))
    }
}

/// The PyTorch peer (`tests/reference/torch_model.py`) on `model`, one thread, 4 s of runs, with
/// `args` saying what to time; its JSON line.
fn torch_bench(python: &Path, model: &Path, args: &[&str]) -> Result<serde_json::Value> {
    json_of(&output(threads_env(
        cmd(python)
            .arg(root().join("tests/reference/torch_model.py"))
            .arg("--model")
            .arg(model)
            .args(args)
            .args(["--seconds", "4", "--threads", "1"]),
        1,
    ))?)
}
