//! The fuzz targets' bodies: each takes bytes from outside and sends them down the path a user's
//! file takes — a WAV dropped on the page or given to `duet predict`, a weights file, a corpus
//! manifest, an IEMOCAP label file. A panic, a hang or an allocation the input does not justify is
//! a finding; an error is the right answer.
//!
//! The same functions replay the saved findings in the workspace's regression test
//! (`crates/duet-cli/tests/fuzz_regressions.rs` includes this file), so a finding stays fixed on the
//! stable toolchain, without libFuzzer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use duet_dsp::{FeatureConfig, FeaturePlan, LevelNorm, decode_wav_16k, features_from_file};
use duet_model::Predictor;

/// The page's path (bytes in memory: decode, resample, features) and `duet predict`'s (the same bytes
/// as a file, streamed block by block) on the bundled model's front end (the paper's features with
/// level normalisation). Both must accept the same files and give the same number of frames.
pub fn wav(data: &[u8]) {
    thread_local! {
        static PLAN: std::cell::RefCell<FeaturePlan> = std::cell::RefCell::new(FeaturePlan::new(
            &FeatureConfig { level: Some(LevelNorm::speech()), ..FeatureConfig::paper() },
        ));
    }
    PLAN.with_borrow_mut(|plan| {
        let in_memory = decode_wav_16k(data).and_then(|a| plan.compute(&a.samples));
        let scratch = Scratch::new();
        let file = scratch.write("in.wav", data);
        let streamed = features_from_file(&file, plan);
        match (&in_memory, &streamed) {
            (Ok(a), Ok(b)) => assert_eq!(
                (a.mfcc.n_frames, a.mel_narrow.n_frames, a.mel_wide.n_frames),
                (b.mfcc.n_frames, b.mel_narrow.n_frames, b.mel_wide.n_frames),
                "the page and duet predict analyse this file to different lengths"
            ),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "the page and duet predict disagree on this file: in memory {:?}, streamed {:?}",
                in_memory.as_ref().err(),
                streamed.as_ref().err()
            ),
        }
    });
}

/// A weights file as `duet predict` and the page load it; one that loads must also analyse a short
/// clip (a model whose numbers load but cannot run is a finding too).
pub fn weights(data: &[u8]) {
    let device = duet_model::backend::cpu_device();
    let Ok(predictor) = Predictor::from_bytes(data, &device) else {
        return;
    };
    let mut plan = predictor.feature_plan();
    // One second of a 220 Hz tone with its harmonics: enough frames for every preset's resize.
    let clip: Vec<f32> = (0..16_000)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            (1..4)
                .map(|k| (std::f32::consts::TAU * 220.0 * k as f32 * t).sin() / (4 * k) as f32)
                .sum()
        })
        .collect();
    if let Ok(features) = plan.compute(&clip) {
        let _ = predictor.predict(&features);
    }
}

/// A corpus manifest as `train --corpus manifest:FILE` reads it, under each name that picks a format
/// (CSV, TSV, JSONL by extension; sniffed without one), with and without a label map. One audio file
/// exists beside it so that rows naming `a.wav` get past the existence check.
pub fn manifest(data: &[u8]) {
    let scratch = Scratch::new();
    scratch.write("a.wav", b"");
    let map =
        duet_data::manifest::LabelMap::parse("calm=neutral,surprised=").expect("a valid label map");
    for name in ["m.csv", "m.tsv", "m.jsonl", "manifest"] {
        let file = scratch.write(name, data);
        let _ = duet_data::manifest::read(&file, None);
        let _ = duet_data::manifest::read(&file, Some(&map));
    }
}

/// An IEMOCAP label file (`Session1/dialog/EmoEvaluation/*.txt`) in a release tree that otherwise
/// holds two of its dialog's utterances, as `train --corpus iemocap:DIR` reads it.
pub fn iemocap_labels(data: &[u8]) {
    let scratch = Scratch::new();
    scratch.write("Session1/dialog/EmoEvaluation/Ses01F_impro01.txt", data);
    for utt in ["Ses01F_impro01_F000", "Ses01F_impro01_M000"] {
        scratch.write(
            &format!("Session1/sentences/wav/Ses01F_impro01/{utt}.wav"),
            b"",
        );
    }
    let _ = duet_data::iemocap::read_with_report(&scratch.dir);
}

/// A fresh directory for one input, removed afterwards (the fuzzer runs millions of inputs; the
/// regression test runs them on several threads).
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "duet-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch { dir }
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating a scratch directory");
        }
        std::fs::write(&path, bytes).expect("writing a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets by name, for replaying saved inputs.
pub const TARGETS: &[(&str, Target)] = &[
    ("wav", wav),
    ("weights", weights),
    ("manifest", manifest),
    ("iemocap_labels", iemocap_labels),
];

/// Where a target's saved findings live (`fuzz/regressions/<target>/`), given the repository root.
pub fn regressions_dir(root: &Path, target: &str) -> PathBuf {
    root.join("fuzz/regressions").join(target)
}
