//! Shared helpers for the reference tests: fixture paths and error measures.
#![allow(dead_code)]

use std::path::PathBuf;

use duet_dsp::{Mel, Mfcc, npy};

/// tests/fixtures/dsp (made by tests/reference/make_fixtures.py; committed).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dsp")
}

pub fn read_bytes(name: &str) -> Vec<u8> {
    let p = fixtures().join(name);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tests/reference/make_fixtures.py)",
            p.display()
        )
    })
}

pub fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let p = fixtures().join(name);
    npy::read_f32(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Worst relative error of `ours` against librosa's mel `name` over the bins within `db` dB of the
/// reference spectrogram's maximum; also returns the number of bins compared.
pub fn mel_rel_err(ours: &Mel, name: &str, db: f64) -> (f64, usize) {
    let (shape, want) = read_npy(name);
    assert_eq!(
        shape,
        vec![ours.n_mels, ours.n_frames],
        "{name}: shape [n_mels, frames]"
    );
    let max = want.iter().cloned().fold(0f32, f32::max) as f64;
    let thresh = max * 10f64.powf(-db / 10.0);
    let mut worst = 0f64;
    let mut n = 0;
    for (&a, &b) in ours.data.iter().zip(&want) {
        if (b as f64) >= thresh && b > 0.0 {
            worst = worst.max((a as f64 - b as f64).abs() / b as f64);
            n += 1;
        }
    }
    (worst, n)
}

/// Column groups of MFCC12_E_D_A.
pub const GROUPS: [(&str, std::ops::Range<usize>); 6] = [
    ("mfcc", 0..12),
    ("logE", 12..13),
    ("delta", 13..25),
    ("delta logE", 25..26),
    ("accel", 26..38),
    ("accel logE", 38..39),
];

/// Worst absolute error per column group against openSMILE's `name`.
pub fn mfcc_abs_err(ours: &Mfcc, name: &str) -> [f64; 6] {
    let (shape, want) = read_npy(name);
    assert_eq!(shape, vec![ours.n_frames, 39], "{name}: shape [frames, 39]");
    let mut worst = [0f64; 6];
    for t in 0..ours.n_frames {
        for (g, (_, r)) in GROUPS.iter().enumerate() {
            for j in r.clone() {
                let e = (ours.at(t, j) as f64 - want[t * 39 + j] as f64).abs();
                worst[g] = worst[g].max(e);
            }
        }
    }
    worst
}
