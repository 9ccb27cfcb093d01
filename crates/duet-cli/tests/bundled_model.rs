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
    // Studio recordings: none is taken for a noisy one.
    assert_eq!(e["noisy"], 0);
}

/// A 16-bit mono PCM WAV of `samples` at `rate`.
fn write_wav(path: &std::path::Path, rate: u32, samples: &[i16]) {
    let data = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + data as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 1 | (1 << 16), rate, rate * 2, 2 | (16 << 16)] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_noisy_recording_is_marked_noisy_and_a_clean_or_mildly_noisy_one_is_not() {
    let clean = ravdess().join("03-01-04-01-02-01-08.wav");
    let bytes = std::fs::read(&clean).unwrap();
    // The fixtures are 16 kHz 16-bit mono with a 44-byte header (tests/fixtures/ravdess/README.md).
    assert_eq!(&bytes[36..40], b"data");
    let x: Vec<f64> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
        .collect();
    // White noise at an SNR against the clip's mean power (a fixed LCG + Box-Muller).
    let mut s = 12345u64;
    let mut uniform = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let noise: Vec<f64> = (0..x.len())
        .map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos())
        .collect();
    let p = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let with_noise = |snr_db: f64| -> Vec<i16> {
        let g = (p / 10f64.powf(snr_db / 10.0)).sqrt();
        x.iter()
            .zip(&noise)
            .map(|(v, e)| (v + g * e).round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    };
    let dir = std::env::temp_dir().join(format!("duet-noisy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // At 20 dB SNR the model (trained with noise) keeps its answers: not marked. With the noise
    // louder than the speech (-5 dB) it does not: marked.
    let mild_path = dir.join("mild.wav");
    write_wav(&mild_path, 16_000, &with_noise(20.0));
    let noisy_path = dir.join("noisy.wav");
    write_wav(&noisy_path, 16_000, &with_noise(-5.0));

    let out = duet(&[
        "predict",
        "--json",
        clean.to_str().unwrap(),
        mild_path.to_str().unwrap(),
        noisy_path.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (a, m, b) = (&lines[0], &lines[1], &lines[2]);
    let db = |v: &serde_json::Value| v["speech_to_noise_db"].as_f64().unwrap();
    assert_eq!(a["noisy"], false, "{a}");
    assert_eq!(m["noisy"], false, "{m}");
    assert_eq!(b["noisy"], true, "{b}");
    assert!(db(a) > db(m) + 10.0, "{} vs {}", db(a), db(m));
    assert!(db(m) > db(b), "{} vs {}", db(m), db(b));
    // The threshold is the model file's own, measured for it (the default is 30 dB).
    let info: serde_json::Value = serde_json::from_str(&duet(&["info", "--json"])).unwrap();
    let threshold = info["config"]["calibration"]["noisy_below_db"]
        .as_f64()
        .expect("the bundled model states its noisy threshold");
    assert!(db(m) >= threshold && db(b) < threshold, "{threshold}");
    // The table marks it and says why.
    let table = duet(&["predict", noisy_path.to_str().unwrap()]);
    assert!(table.contains("(noisy)"), "{table}");
    assert!(table.contains("noise floor"), "{table}");
    std::fs::remove_dir_all(&dir).ok();
}
