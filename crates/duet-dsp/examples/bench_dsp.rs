//! Times Duet's whole front end — decode + resample + MFCC + both mel spectrograms — on one thread.
//!
//! `cargo run --release -p duet-dsp --example bench_dsp -- [--preset paper|authors] [--runs N] [--no-malloc-tune] FILES...`
//!
//! One warm-up pass, then N (default 7, at least 5) timed passes over all files; prints one JSON line:
//! `{"tool": "duet", "preset": ..., "files": N, "audio_s": total seconds, "runs_s": [...], "median_s": ...,
//! "x_realtime": audio_s / median_s}`. The peer is tests/reference/bench_dsp.py (same JSON shape).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use duet_dsp::{FeatureConfig, FeaturePlan, Preset, features_from_file};

fn main() -> ExitCode {
    // As `duet` and `train` run (`--no-malloc-tune`: glibc's defaults, for comparison).
    if !std::env::args().any(|a| a == "--no-malloc-tune") {
        duet_dsp::tune_allocator();
    }
    let mut preset = Preset::Paper;
    let mut runs = 7usize;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--preset" => match args.next().map(|p| p.parse::<Preset>()) {
                Some(Ok(p)) => preset = p,
                _ => return usage("--preset needs paper or authors"),
            },
            "--runs" => match args.next().and_then(|r| r.parse().ok()) {
                Some(r) if r >= 1 => runs = r,
                _ => return usage("--runs needs a positive number"),
            },
            "--no-malloc-tune" => {}
            _ => files.push(a.into()),
        }
    }
    if files.is_empty() {
        return usage("no files given");
    }
    let mut plan = FeaturePlan::new(&FeatureConfig::for_preset(preset));
    // Warm-up (also measures the audio length and checks every file).
    let mut audio_s = 0f64;
    for f in &files {
        match features_from_file(f, &mut plan) {
            Ok(feat) => audio_s += feat.duration_s as f64,
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                return ExitCode::from(1);
            }
        }
    }
    let mut times = Vec::with_capacity(runs);
    let mut sink = 0usize;
    for _ in 0..runs {
        let t0 = Instant::now();
        for f in &files {
            let feat = features_from_file(f, &mut plan).expect("checked in the warm-up");
            sink += feat.mfcc.n_frames + feat.mel_narrow.n_frames + feat.mel_wide.n_frames;
        }
        times.push(t0.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let runs_s: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
    println!(
        "{{\"tool\": \"duet\", \"preset\": \"{preset}\", \"files\": {}, \"audio_s\": {audio_s:.3}, \"runs_s\": [{}], \"median_s\": {median:.6}, \"x_realtime\": {:.1}}}",
        files.len(),
        runs_s.join(", "),
        audio_s / median
    );
    ExitCode::SUCCESS
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "error: {msg}\nusage: bench_dsp [--preset paper|authors] [--runs N] [--no-malloc-tune] FILES..."
    );
    ExitCode::from(2)
}
