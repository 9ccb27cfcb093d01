//! Times the model on a native backend (CPU by default, `--backend wgpu` for a GPU): forward at
//! batch N, or a training step (forward + backward + Adam) — the Duet side of `cargo xtask bench model|train`, the same shapes as
//! `tests/reference/torch_model.py --bench-forward|--bench-train`.
//!
//! cargo run --release -p duet-train --example bench_model -- --mode forward --batch 1 --seconds 4
//! (`--recurrence steps` times the step loop in place of the fused recurrences)
//! Prints one JSON line: {"median_s", "runs_s", "peak_rss_mb", ...}.

use std::time::Instant;

use duet_dsp::Preset;
use duet_model::Mode;
use duet_model::input::{ModelInput, Prepared};
use duet_model::rng::SplitMix64;
use duet_model::{DuetModel, ModelConfig, ModelKind, weights};
use duet_train::adam::{Adam, AdamConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    if !std::env::args().any(|a| a == "--no-malloc-tune") {
        duet_dsp::tune_allocator();
    }
    let args: Vec<String> = std::env::args().collect();
    let mode: String = arg(&args, "--mode", "forward".to_string());
    let batch: usize = arg(&args, "--batch", 1);
    let seconds: f64 = arg(&args, "--seconds", 4.0);
    let runs: usize = arg(&args, "--runs", 7);
    let warmup: usize = arg(&args, "--warmup", 2);
    let kind: ModelKind = arg(&args, "--kind", "dual".to_string())
        .parse()
        .expect("kind");
    let preset: Preset = arg(&args, "--preset", "paper".to_string())
        .parse()
        .expect("preset");
    let config = ModelConfig::new(kind, preset);
    let backend: String = arg(&args, "--backend", "cpu".to_string());
    // `--recurrence steps`: the step loop the fused recurrences replaced, for before/after figures.
    let recurrence: String = arg(&args, "--recurrence", "fused".to_string());
    match recurrence.as_str() {
        "fused" => {}
        "steps" => duet_model::set_step_loop_only(true),
        other => panic!("--recurrence fused|steps, not {other}"),
    }
    let (device, info) = match backend.as_str() {
        "cpu" => duet_model::backend::init_native(false),
        "wgpu" => duet_model::backend::init_native(true),
        other => panic!("--backend cpu|wgpu, not {other}"),
    };
    if backend == "wgpu" && info.kind != "wgpu" {
        // A GPU figure measured on the CPU would be a wrong figure: refuse instead.
        eprintln!(
            "no GPU: {}",
            info.fallback_reason.as_deref().unwrap_or("unknown")
        );
        std::process::exit(2);
    }

    // Random inputs of the shapes an S-second utterance gives.
    let mut rng = SplitMix64::new(1);
    let samples = (seconds * 16000.0) as usize;
    let frames = 1 + samples.saturating_sub(400) / 160;
    let items: Vec<Prepared> = (0..batch)
        .map(|_| Prepared::random(&config, samples, &mut rng))
        .collect();
    let refs: Vec<&Prepared> = items.iter().collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % config.n_classes()).collect();

    let mut times = Vec::new();
    // Kernel launches of one forward or training step (0 on the CPU backend).
    let dispatches: usize;
    match mode.as_str() {
        "forward" => {
            // Loaded as the page and `duet predict` load it (on a GPU, batch norms folded once).
            let predictor = duet_model::Predictor::from_model(
                weights::init(config.clone(), 0, &device).expect("model"),
                &device,
            );
            let model = predictor.model();
            let forward = || {
                let input = ModelInput::batch(&refs, &config, &device);
                let p = model.forward(&input, Mode::Infer).probabilities();
                let _ = p.into_data();
            };
            for i in 0..warmup + runs {
                let t = Instant::now();
                forward();
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            // Counted on a run of its own, after the timed ones (observing costs a little).
            dispatches = duet_model::backend::count_dispatches(forward).1;
        }
        "train" => {
            let ad = device.clone().autodiff();
            let mut model = weights::init(config.clone(), 0, &ad).expect("model");
            let mut adam = Adam::new(AdamConfig::default());
            // The trainer's own step (forward, fused loss, backward, Adam), input building included.
            let mut train_step = |model: DuetModel| -> DuetModel {
                duet_train::train::train_step(model, &mut adam, &refs, &labels, &[], 1e-4, &ad)
                    .expect("training step")
                    .0
            };
            for i in 0..warmup + runs {
                let t = Instant::now();
                model = train_step(model);
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            dispatches = duet_model::backend::count_dispatches(|| train_step(model)).1;
        }
        "sgemm" => {
            // The machine's single-thread matmul peak on this backend: 1024³ f32.
            let n = 1024;
            let a = burn::tensor::Tensor::<2>::ones([n, n], &device);
            let b = burn::tensor::Tensor::<2>::ones([n, n], &device);
            for i in 0..warmup + runs {
                let t = Instant::now();
                let _ = a.clone().matmul(b.clone()).into_data();
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            let mut s = times.clone();
            s.sort_by(f64::total_cmp);
            let gflops = 2.0 * (n * n * n) as f64 / s[s.len() / 2] / 1e9;
            println!(
                "{}",
                serde_json::json!({"mode": "sgemm", "n": n, "runs_s": times, "median_s": s[s.len() / 2], "gflops": gflops})
            );
            return;
        }
        "flops" => {
            println!(
                "{}",
                serde_json::json!({"mode": "flops", "batch": batch, "seconds": seconds, "flops": 2.0 * forward_macs(&config, frames) as f64 * batch as f64})
            );
            return;
        }
        other => panic!("--mode forward|train|sgemm|flops, not {other}"),
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("duet (burn, {})", info.adapter),
            "mode": mode, "kind": kind.name(), "preset": preset.name(), "batch": batch, "seconds": seconds,
            "median_s": median, "runs_s": times, "peak_rss_mb": peak_rss_mb(),
            "dispatches": dispatches,
        })
    );
}

/// Multiply-accumulates of one utterance's forward pass (matrix products and convolutions; the
/// element-wise work is not counted), for the FLOP/s figure.
fn forward_macs(c: &ModelConfig, mfcc_frames: usize) -> u64 {
    let h = c.hidden as u64;
    let lstm = |input: u64, steps: u64| -> u64 {
        (0..c.layers as u64)
            .map(|k| steps * 4 * h * (if k == 0 { input } else { h } + h))
            .sum()
    };
    let cnn = |wide: bool| -> (u64, u64) {
        let (n_mels, frames) = c.spectrogram_shape(wide);
        let (k, p) = if wide {
            (c.cnn.kernel_wide, c.cnn.padding_wide)
        } else {
            (c.cnn.kernel_narrow, c.cnn.padding_narrow)
        };
        let conv = |n: usize, k: usize, p: usize| n + 2 * p + 1 - k;
        let (f0, t0) = (conv(n_mels, k[0], p[0]), conv(frames, k[1], p[1]));
        let (f1, t1) = (
            conv(f0 / c.cnn.pool, k[0], p[0]),
            conv(t0 / c.cnn.pool, k[1], p[1]),
        );
        let kk = (k[0] * k[1]) as u64;
        let macs = (f0 * t0) as u64 * c.cnn.channels[0] as u64 * kk
            + (f1 * t1) as u64 * c.cnn.channels[1] as u64 * kk * c.cnn.channels[0] as u64;
        (macs, (t1 / c.cnn.pool) as u64)
    };
    let mut total = 0;
    for b in c.branches() {
        total += match b {
            duet_model::Branch::Mfcc => lstm(c.mfcc_dim as u64, mfcc_frames as u64),
            duet_model::Branch::Narrow | duet_model::Branch::Wide => {
                let wide = b == duet_model::Branch::Wide;
                let (m, t) = cnn(wide);
                m + lstm(c.seq_dim(wide) as u64, t)
            }
            duet_model::Branch::Ds => {
                let (m1, _) = cnn(false);
                let (m2, _) = cnn(true);
                let t = c.aligned_steps() as u64;
                let y = c.seq_dim(true) as u64;
                let layers: u64 = (0..c.layers as u64)
                    .map(|k| {
                        let x = if k == 0 { c.seq_dim(false) as u64 } else { h };
                        t * (4 * h * (x + y + h) + h * (x + h) + h * (y + h))
                    })
                    .sum();
                m1 + m2 + layers
            }
        };
    }
    total
}
