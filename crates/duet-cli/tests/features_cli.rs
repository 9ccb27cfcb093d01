//! `duet features` through the real binary: arrays on good input, exit code 1-2 and a clear message on
//! every kind of bad input, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use duet_dsp::npy;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dsp")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("duet-cli-features-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn duet(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "duet panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn run_on(file: &Path, out: &Path, preset: &str) -> (i32, String) {
    duet(&[
        "features",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--preset",
        preset,
    ])
}

#[test]
fn writes_mfcc_and_two_mels() {
    let out = tmp("ok");
    let (code, err) = run_on(&fixtures().join("speech_a.wav"), &out, "paper");
    assert_eq!(code, 0, "{err}");
    let (s, _) = npy::read_f32(&out.join("mfcc.npy")).unwrap();
    assert_eq!(s, vec![298, 39]);
    assert_eq!(
        npy::read_f32(&out.join("mel_256.npy")).unwrap().0,
        vec![64, 376]
    );
    assert_eq!(
        npy::read_f32(&out.join("mel_512.npy")).unwrap().0,
        vec![128, 188]
    );
    // Same numbers as the library (which the reference tests compare with librosa/openSMILE).
    let want = npy::read_f32(&fixtures().join("speech_a.mel_256.npy"))
        .unwrap()
        .1;
    let got = npy::read_f32(&out.join("mel_256.npy")).unwrap().1;
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / b.max(1e-6))
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "{worst}");
    let (code, err) = run_on(&fixtures().join("stereo_44k.wav"), &out, "authors");
    assert_eq!(code, 0, "{err}");
    assert_eq!(npy::read_f32(&out.join("mel_1024.npy")).unwrap().0[0], 256);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_input_exits_1_or_2_with_a_clear_message() {
    let dir = tmp("bad");
    let good = std::fs::read(fixtures().join("speech_a.wav")).unwrap();
    let mut zero_ch = good.clone();
    zero_ch[22] = 0;
    zero_ch[23] = 0;
    let mut rate0 = good.clone();
    rate0[24..28].copy_from_slice(&0u32.to_le_bytes());
    let mut mp3 = good.clone();
    mp3[20..22].copy_from_slice(&0x55u16.to_le_bytes());
    let mut short = good[..44].to_vec();
    short[40..44].copy_from_slice(&320u32.to_le_bytes());
    short.extend_from_slice(&good[44..364]);
    let mut nan = good[..44].to_vec();
    nan[20..22].copy_from_slice(&3u16.to_le_bytes()); // float
    nan[32..34].copy_from_slice(&4u16.to_le_bytes()); // block align
    nan[34..36].copy_from_slice(&32u16.to_le_bytes());
    nan[40..44].copy_from_slice(&(4 * 1000u32).to_le_bytes());
    for i in 0..1000 {
        let v = if i == 500 { f32::NAN } else { 0.0 };
        nan.extend_from_slice(&v.to_le_bytes());
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty"),
        ("header_only", good[..36].to_vec(), "no audio"),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "truncated WAV file",
        ),
        ("text", b"just some text".to_vec(), "not a WAV file"),
        ("codec", mp3, "unsupported WAV codec"),
        ("zero_channels", zero_ch, "0 channels"),
        ("rate", rate0, "unsupported sample rate 0 Hz"),
        ("nan", nan, "sample 500 of channel 0 is NaN"),
        ("short", short, "needs at least 0.032 s"),
    ];
    for (name, bytes, expect) in cases {
        let p = dir.join(format!("{name}.wav"));
        std::fs::write(&p, bytes).unwrap();
        let (code, err) = run_on(&p, &dir.join("out"), "paper");
        assert!(code == 1 || code == 2, "{name}: exit {code}: {err}");
        assert!(
            err.contains(expect),
            "{name}: expected {expect:?} in {err:?}"
        );
        assert!(
            err.contains(&format!("{name}.wav")),
            "{name}: message should name the file: {err}"
        );
    }
    let (code, err) = run_on(&dir.join("missing.wav"), &dir.join("out"), "paper");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.wav"), "{err}");
    let (code, err) = run_on(&fixtures().join("chirp.wav"), &dir.join("out"), "huge");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("huge"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
