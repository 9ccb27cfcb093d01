//! Hostile files through `duet predict`, as a user would run it: each is refused with exit 1 and a
//! message naming the file and what is wrong with it, without a panic, and with a peak memory that
//! the file's size justifies (the headers claim up to 100 GB). docs/robustness.md lists them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{DUET, measured, root};

/// Peak resident memory allowed to `duet predict` on a hostile file: its own code, the bundled
/// model and one short clip take about 30 MB; a header believed would take gigabytes.
const PEAK_RSS_LIMIT_MB: u64 = 100;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("duet-hostile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `duet predict ARGS`; returns (exit code, stderr, peak RSS in MB).
fn predict(args: &[&Path]) -> (i32, String, u64) {
    let m = measured(Command::new(DUET).arg("predict").args(args));
    (m.code, m.stderr, m.peak_mb)
}

/// `duet predict ARGS` refuses `file`: exit 1, no panic, the file and `expect` in the message, a
/// peak memory under [`PEAK_RSS_LIMIT_MB`].
fn refused(args: &[&Path], file: &Path, expect: &str) {
    let name = file.file_name().unwrap().to_string_lossy();
    let (code, err, peak) = predict(args);
    println!("{name}: exit {code}, peak {peak} MB: {}", err.trim());
    assert_eq!(code, 1, "{name}: exit {code}: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert!(
        err.contains(&*name),
        "{name}: the message should name the file: {err}"
    );
    assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
    assert!(peak < PEAK_RSS_LIMIT_MB, "{name}: peak RSS {peak} MB");
}

/// The bundled model split into its safetensors header and data.
fn valid_model() -> (Value, Vec<u8>) {
    let bytes = std::fs::read(root().join("www/models/demo.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// The valid model with its `duet.config` edited.
fn with_config(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (mut header, data) = valid_model();
    let meta = &mut header["__metadata__"]["duet.config"];
    let mut config: Value = serde_json::from_str(meta.as_str().unwrap()).unwrap();
    edit(&mut config);
    *meta = Value::String(config.to_string());
    safetensors(&header, &data)
}

/// The valid model with one tensor's entry in the header edited.
fn with_tensor(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let (mut header, data) = valid_model();
    edit(header.as_object_mut().unwrap());
    safetensors(&header, &data)
}

/// A PCM WAV header with the given fields and `frames` frames of silence after it.
fn wav(channels: u16, bits: u16, rate: u32, data_bytes: u32, frames: usize) -> Vec<u8> {
    let block = (bits / 8) as u32 * channels as u32;
    let mut w = b"RIFF".to_vec();
    w.extend(36u32.wrapping_add(data_bytes).to_le_bytes());
    w.extend(b"WAVEfmt ");
    w.extend(16u32.to_le_bytes());
    w.extend(1u16.to_le_bytes());
    w.extend(channels.to_le_bytes());
    w.extend(rate.to_le_bytes());
    w.extend(rate.wrapping_mul(block).to_le_bytes());
    w.extend((block as u16).to_le_bytes());
    w.extend(bits.to_le_bytes());
    w.extend(b"data");
    w.extend(data_bytes.to_le_bytes());
    w.resize(w.len() + frames * block as usize, 0);
    w
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn hostile_files_are_refused_with_a_clear_message_and_bounded_memory() {
    let dir = tmp("predict");
    let clip = root().join("tests/fixtures/ravdess/03-01-05-01-01-01-01.wav");
    let (_, data) = valid_model();
    let first_tensor = |h: &mut serde_json::Map<String, Value>| {
        h.iter_mut()
            .find(|(k, _)| *k != "__metadata__")
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // (file name, bytes, what the message must say)
    let models: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "tensor_100gb",
            with_tensor(|h| {
                h.insert(
                    "huge".into(),
                    serde_json::json!({"dtype": "F32", "shape": [100000, 250000],
                                       "data_offsets": [0u64, 100_000_000_000u64]}),
                );
            }),
            "invalid offset for tensor `huge`",
        ),
        (
            "offsets_past_end",
            with_tensor(|h| {
                let mut t = first_tensor(h);
                t["data_offsets"][1] = Value::from(data.len() as u64 + 4096);
                let name = h.keys().find(|k| *k != "__metadata__").unwrap().clone();
                h.insert(name, t);
            }),
            "invalid shape, data type, or offset",
        ),
        (
            "header_2_pow_63",
            {
                let mut b = safetensors(&valid_model().0, &data);
                b[..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
                b
            },
            "header too large",
        ),
        (
            "nested_config",
            with_tensor(|h| {
                h["__metadata__"]["duet.config"] = Value::String(nested(100_000));
            }),
            "`duet.config`: not valid JSON: recursion limit",
        ),
        (
            "nested_header",
            {
                let (header, data) = valid_model();
                let mut h = serde_json::to_string(&header).unwrap();
                h.insert_str(1, &format!("\"deep\": {},", nested(100_000)));
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend(h.as_bytes());
                b.extend(&data);
                b
            },
            "invalid JSON in header: recursion limit",
        ),
        (
            "hidden_1e9",
            with_config(|c| c["hidden"] = Value::from(1_000_000_000u64)),
            "the config requires [4000000000, 39]",
        ),
        (
            "resize_1e9",
            with_config(|c| c["resize"]["narrow_frames"] = Value::from(1_000_000_000u64)),
            "field `resize.narrow_frames`: 1000000000 frames",
        ),
        (
            "mel_bands_1e7",
            with_config(|c| c["features"]["narrow"]["n_mels"] = Value::from(10_000_000u64)),
            "n_mels 10000000",
        ),
        (
            "mfcc_bands_1e7",
            with_config(|c| c["features"]["mfcc"]["n_bands"] = Value::from(10_000_000u64)),
            "n_bands 10000000",
        ),
        (
            "rate_8k_features",
            with_config(|c| c["features"]["sample_rate"] = Value::from(8000)),
            "sample_rate is 8000 Hz",
        ),
    ];
    for (name, bytes, expect) in &models {
        let model = dir.join(format!("{name}.safetensors"));
        std::fs::write(&model, bytes).unwrap();
        refused(&[Path::new("--model"), &model, &clip], &model, expect);
    }
    let clips: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "data_4gb",
            wav(1, 16, 16_000, 0xFFFF_FFF0, 16_000),
            "declares 4294967280 bytes",
        ),
        // 8-bit samples: the only width at which 65535 channels fit WAV's 16-bit block size. Duet
        // mixes any channel count down; 100 frames are then too short to analyse.
        (
            "channels_65535",
            wav(65_535, 8, 16_000, 65_535 * 100, 100),
            "audio is 0.006 s long",
        ),
        (
            "rate_1hz",
            wav(1, 16, 1, 2000, 1000),
            "unsupported sample rate 1 Hz",
        ),
        (
            "rate_4ghz",
            wav(1, 16, 4_000_000_000, 2000, 1000),
            "unsupported sample rate 4000000000 Hz",
        ),
    ];
    for (name, bytes, expect) in &clips {
        let file = dir.join(format!("{name}.wav"));
        std::fs::write(&file, bytes).unwrap();
        refused(&[&file], &file, expect);
    }
    std::fs::remove_dir_all(&dir).ok();
}
