//! The model `duet` carries (the page's default, www/models/demo.safetensors) on real speech: used
//! when `--model` is omitted, calibrated, with its card (corpora, figures, license), and its
//! probabilities are softmax(logits / T).

use std::path::PathBuf;
use std::process::Command;

fn ravdess() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/ravdess")
}

fn duet(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "duet {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn predict_without_model_uses_the_calibrated_bundled_model() {
    let info: serde_json::Value = serde_json::from_str(&duet(&["info", "--json"])).unwrap();
    let config = &info["config"];
    let t = config["calibration"]["temperature"]
        .as_f64()
        .expect("the bundled model is calibrated");
    let threshold = config["calibration"]["uncertain_below"].as_f64().unwrap();
    let file = ravdess().join("03-01-05-01-01-01-01.wav");
    let out = duet(&["predict", "--json", file.to_str().unwrap()]);
    let p: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let logits: Vec<f64> = p["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // Temperature scaling, recomputed here from the logits.
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|z| ((z - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    let classes = config["classes"].as_array().unwrap();
    let mut top = 0.0f64;
    for (c, v) in classes.iter().zip(&e) {
        let shown = p["probabilities"][c.as_str().unwrap()].as_f64().unwrap();
        assert!((shown - v / s).abs() < 1e-4, "{c}: {shown} vs {}", v / s);
        top = top.max(shown);
    }
    assert_eq!(p["uncertain"].as_bool().unwrap(), top < threshold);
}

#[test]
fn the_card_names_corpora_figures_and_the_weights_license() {
    let text = duet(&["info"]);
    for want in [
        "ravdess 720",
        "speakers:5",
        "cv_ua_mean",
        "CC BY-NC-SA 4.0",
        "Livingstone",
        "calibrated  temperature",
        "-20 dBFS",
    ] {
        assert!(text.contains(want), "`duet info` lacks {want}:\n{text}");
    }
    // Names and counts, not the training machine's paths.
    let info: serde_json::Value = serde_json::from_str(&duet(&["info", "--json"])).unwrap();
    let corpus = info["config"]["provenance"]["corpus"].as_str().unwrap();
    assert!(!corpus.contains('/'), "{corpus}");
}

#[test]
fn eval_on_real_speech_runs_and_the_model_has_learned_it() {
    // These eight clips were among its training data (tests/fixtures/ravdess/README.md): this checks
    // it learned real speech at all (the synthetic-trained model scored chance on RAVDESS), not how it
    // does on unseen voices.
    let spec = format!("manifest:{}", ravdess().join("manifest.csv").display());
    let out = duet(&["eval", "--json", "--corpus", &spec]);
    let e: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(e["metrics"]["n"], 8);
    let ua = e["metrics"]["ua"].as_f64().unwrap();
    assert!(ua >= 0.5, "UA {ua} on clips it was trained on");
    assert!(e["ece"].as_f64().unwrap().is_finite());
}
