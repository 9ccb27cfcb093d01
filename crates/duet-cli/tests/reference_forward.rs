//! The model against an independent implementation: `tests/reference/forward_numpy.py` (numpy, float64,
//! written from docs/weights.md and the paper without reading the Rust) reads the file `duet
//! init-model` wrote and the features `duet features` wrote; its probabilities must equal those
//! `duet predict --json` prints, for every kind of paper Table 1 and both presets.
//!
//! Needs Python with numpy + safetensors: `DUET_PYTHON`, else `target/venv/bin/python` (both set up by
//! `cargo xtask test`). Without one the test fails and says how to get it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{DUET, python, root, run};

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/dsp").join(name)
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Runs one kind/preset through both implementations; returns the worst probability difference.
fn check(kind: &str, preset: &str, tmp: &Path) -> f64 {
    let model = tmp.join(format!("{kind}-{preset}.safetensors"));
    run(Command::new(DUET)
        .args([
            "init-model",
            "--kind",
            kind,
            "--preset",
            preset,
            "--seed",
            "7",
            "--out",
        ])
        .arg(&model));
    let wavs = [fixture("speech_a.wav"), fixture("speech_b.wav")];
    let mut dirs = Vec::new();
    for w in &wavs {
        let d = tmp.join(format!(
            "{preset}-{}",
            w.file_stem().unwrap().to_string_lossy()
        ));
        if !d.join("mfcc.npy").is_file() {
            run(Command::new(DUET)
                .arg("features")
                .arg(w)
                .arg("--out")
                .arg(&d)
                .args(["--preset", preset]));
        }
        dirs.push(d);
    }
    let ours = run(Command::new(DUET)
        .args(["predict", "--json", "--model"])
        .arg(&model)
        .args(&wavs));
    let theirs = run(Command::new(python())
        .arg(root().join("tests/reference/forward_numpy.py"))
        .arg("--model")
        .arg(&model)
        .args(&dirs));
    let mut worst = 0.0f64;
    for (o, t) in ours.lines().zip(theirs.lines()) {
        let o: serde_json::Value = serde_json::from_str(o).unwrap();
        let t: serde_json::Value = serde_json::from_str(t).unwrap();
        let classes = ["angry", "happy", "neutral", "sad"];
        let op: Vec<f64> = classes
            .iter()
            .map(|c| o["probabilities"][c].as_f64().unwrap())
            .collect();
        let d = max_diff(&op, &floats(&t["probabilities"]));
        worst = worst.max(d);
        let dl = max_diff(&floats(&o["logits"]), &floats(&t["logits"]));
        assert!(
            dl < 1e-4,
            "{kind}/{preset}: logits differ by {dl}\n ours {o}\n numpy {t}"
        );
        for (branch, probs) in t["branches"].as_object().unwrap() {
            let db = max_diff(&floats(&o["branches"][branch]), &floats(probs));
            assert!(
                db < 1e-4,
                "{kind}/{preset}: branch {branch} differs by {db}"
            );
        }
    }
    assert_eq!(ours.lines().count(), wavs.len());
    assert_eq!(theirs.lines().count(), wavs.len());
    assert!(
        worst < 1e-4,
        "{kind}/{preset}: probabilities differ by {worst}"
    );
    worst
}

#[test]
fn every_kind_and_preset_matches_the_numpy_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for preset in ["paper", "authors"] {
        for kind in [
            "base1", "base2", "base3", "base4", "base5", "base6", "ds-lstm", "dual",
        ] {
            let d = check(kind, preset, tmp.path());
            report.push(format!("{kind}/{preset}: {d:.2e}"));
        }
    }
    println!("worst |p_duet - p_numpy| per kind: {}", report.join(", "));
}

#[test]
fn parameter_counts_match_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("dual.safetensors");
    run(Command::new(DUET)
        .args([
            "init-model",
            "--kind",
            "dual",
            "--preset",
            "authors",
            "--out",
        ])
        .arg(&model));
    let info: serde_json::Value = serde_json::from_str(&run(Command::new(DUET)
        .args(["info", "--json"])
        .arg(&model)))
    .unwrap();
    // docs/reference.md §1: the authors' code's dual model has 3,732,296 parameters.
    assert_eq!(info["total_parameters"], 3_732_296);
    let d = tmp.path().join("f");
    run(Command::new(DUET)
        .arg("features")
        .arg(fixture("speech_a.wav"))
        .arg("--out")
        .arg(&d)
        .args(["--preset", "authors"]));
    let out = run(Command::new(python())
        .arg(root().join("tests/reference/forward_numpy.py"))
        .arg("--model")
        .arg(&model)
        .arg("--param-counts")
        .arg(&d));
    let counts: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let total: u64 = counts["param_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 3_732_296, "{counts}");
}

#[test]
fn f16_weights_stay_within_1e3_of_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let m32 = tmp.path().join("m32.safetensors");
    let m16 = tmp.path().join("m16.safetensors");
    for (m, extra) in [(&m32, None), (&m16, Some("--f16"))] {
        let mut c = Command::new(DUET);
        c.args(["init-model", "--kind", "dual", "--seed", "3", "--out"])
            .arg(m);
        if let Some(e) = extra {
            c.arg(e);
        }
        run(&mut c);
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&m16) * 10 < size(&m32) * 6,
        "f16 file is not about half the size"
    );
    let wav = fixture("speech_a.wav");
    let p32 = run(Command::new(DUET)
        .args(["predict", "--json", "--model"])
        .arg(&m32)
        .arg(&wav));
    let p16 = run(Command::new(DUET)
        .args(["predict", "--json", "--model"])
        .arg(&m16)
        .arg(&wav));
    let a: serde_json::Value = serde_json::from_str(&p32).unwrap();
    let b: serde_json::Value = serde_json::from_str(&p16).unwrap();
    for c in ["angry", "happy", "neutral", "sad"] {
        let d = (a["probabilities"][c].as_f64().unwrap() - b["probabilities"][c].as_f64().unwrap())
            .abs();
        assert!(d < 1e-3, "{c}: f16 moved the probability by {d}");
    }
}
