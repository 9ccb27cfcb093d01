//! Training-time augmentation: what differs between a studio and a laptop microphone, applied to
//! the 16 kHz samples before the one feature path (duet-dsp) that the page and `duet predict` use.
//!
//! Each augmented copy of an utterance draws, from a generator seeded by (run seed, utterance,
//! copy) — so a copy is the same in every fold, run and resume:
//! - **speed perturbation** (probability 0.5): ×0.9 .. ×1.1 by resampling, which moves tempo and pitch
//!   together (Ko et al., "Audio augmentation for speech recognition", Interspeech 2015);
//! - **room reverb** (probability 0.5): a Schroeder reverberator (four feedback combs at 29.7, 37.1,
//!   41.1 and 43.7 ms, then all-passes at 5 and 1.7 ms with gain 0.7), RT60 0.2 .. 0.7 s, wet share
//!   0.15 .. 0.45;
//! - **additive noise** (probability 0.7): white or brown noise at an SNR of 5 .. 30 dB against the
//!   utterance's RMS;
//! - **gain**: -12 .. +6 dB, then clipped to ±1 like a converter would.

use duet_model::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// How many augmented copies of each training utterance, and the generator's seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Copies per training utterance (besides the original).
    pub copies: usize,
    /// Seed of the perturbations (the run's seed).
    pub seed: u64,
}

impl Augment {
    /// The generator of copy `copy` (1-based) of utterance `index`.
    fn rng(&self, index: usize, copy: usize) -> SplitMix64 {
        SplitMix64::new(
            self.seed
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                .wrapping_add((index as u64) << 20)
                .wrapping_add(copy as u64),
        )
    }

    /// Copy `copy` (1-based) of utterance `index`'s 16 kHz samples.
    pub fn apply(&self, samples: &[f32], index: usize, copy: usize) -> Vec<f32> {
        let mut rng = self.rng(index, copy);
        let mut x = samples.to_vec();
        if rng.next_f64() < 0.5 {
            let factor = rng.range(0.9, 1.1);
            // Samples taken as recorded at 16 kHz · factor and resampled to 16 kHz: factor > 1 is
            // shorter and higher.
            let from = (duet_dsp::SAMPLE_RATE as f64 * factor).round() as u32;
            if let Ok(y) = duet_dsp::resample(&x, from, duet_dsp::SAMPLE_RATE)
                && y.len() > 1024
            {
                x = y;
            }
        }
        if rng.next_f64() < 0.5 {
            let rt60 = rng.range(0.2, 0.7) as f32;
            let wet = rng.range(0.15, 0.45) as f32;
            x = reverb(&x, rt60, wet);
        }
        if rng.next_f64() < 0.7 {
            let snr_db = rng.range(5.0, 30.0) as f32;
            let brown = rng.next_f64() < 0.5;
            add_noise(&mut x, snr_db, brown, &mut rng);
        }
        let gain = 10f32.powf(rng.range(-12.0, 6.0) as f32 / 20.0);
        for v in &mut x {
            *v = (*v * gain).clamp(-1.0, 1.0);
        }
        x
    }
}

fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    ((x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()) as f32
}

/// Schroeder's reverberator (see the module documentation); `wet` of the output is reverberant.
pub fn reverb(x: &[f32], rt60_s: f32, wet: f32) -> Vec<f32> {
    let sr = duet_dsp::SAMPLE_RATE as f32;
    let mut acc = vec![0f32; x.len()];
    for d_ms in [29.7f32, 37.1, 41.1, 43.7] {
        let d = (d_ms * 1e-3 * sr) as usize;
        // Decays by 60 dB in rt60 seconds.
        let g = 10f32.powf(-3.0 * d as f32 / (sr * rt60_s));
        let mut y = vec![0f32; x.len()];
        for n in 0..x.len() {
            y[n] = x[n] + if n >= d { g * y[n - d] } else { 0.0 };
            acc[n] += 0.25 * y[n];
        }
    }
    for d_ms in [5.0f32, 1.7] {
        let d = (d_ms * 1e-3 * sr) as usize;
        let g = 0.7f32;
        let input = acc.clone();
        for n in 0..input.len() {
            let delayed_in = if n >= d { input[n - d] } else { 0.0 };
            let delayed_out = if n >= d { acc[n - d] } else { 0.0 };
            acc[n] = -g * input[n] + delayed_in + g * delayed_out;
        }
    }
    // Keep the dry signal's level.
    let (rx, ry) = (rms(x), rms(&acc));
    let scale = if ry > 0.0 { rx / ry } else { 0.0 };
    x.iter()
        .zip(&acc)
        .map(|(d, r)| (1.0 - wet) * d + wet * scale * r)
        .collect()
}

/// Adds white or brown (integrated, then high-passed) noise at `snr_db` below the signal's RMS.
pub fn add_noise(x: &mut [f32], snr_db: f32, brown: bool, rng: &mut SplitMix64) {
    let mut noise: Vec<f32> = (0..x.len()).map(|_| rng.normal() as f32).collect();
    if brown {
        let mut s = 0f32;
        for v in &mut noise {
            // Leaky integration: a -6 dB/octave spectrum without a drifting DC.
            s = 0.98 * s + 0.1 * *v;
            *v = s;
        }
    }
    let (rs, rn) = (rms(x), rms(&noise));
    if rs == 0.0 || rn == 0.0 {
        return;
    }
    let k = rs / rn * 10f32.powf(-snr_db / 20.0);
    for (v, n) in x.iter_mut().zip(&noise) {
        *v += k * n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (i as f32 * 2.0 * std::f32::consts::PI * 220.0 / 16000.0).sin())
            .collect()
    }

    #[test]
    fn copies_are_deterministic_and_differ() {
        let a = Augment { copies: 2, seed: 7 };
        let x = tone(16000);
        assert_eq!(a.apply(&x, 3, 1), a.apply(&x, 3, 1));
        assert_ne!(a.apply(&x, 3, 1), a.apply(&x, 3, 2));
        assert_ne!(a.apply(&x, 3, 1), a.apply(&x, 4, 1));
        for c in 1..=8 {
            let y = a.apply(&x, 0, c);
            assert!(y.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
            assert!(y.len() > 13000 && y.len() < 19000, "{}", y.len());
        }
    }

    #[test]
    fn noise_is_at_the_asked_snr() {
        let mut x = tone(32000);
        let clean = x.clone();
        add_noise(&mut x, 10.0, false, &mut SplitMix64::new(1));
        let noise: Vec<f32> = x.iter().zip(&clean).map(|(a, b)| a - b).collect();
        let snr = 20.0 * (rms(&clean) / rms(&noise)).log10();
        assert!((snr - 10.0).abs() < 0.01, "{snr}");
    }

    #[test]
    fn reverb_has_a_decaying_tail() {
        // An impulse: the reverberant tail carries energy well after it, and less later.
        let mut x = vec![0f32; 16000];
        x[0] = 1.0;
        let y = reverb(&x, 0.5, 1.0);
        let energy = |r: std::ops::Range<usize>| y[r].iter().map(|v| v * v).sum::<f32>();
        let (early, late) = (energy(800..2400), energy(8000..9600));
        assert!(
            early > 0.0 && late > 0.0 && late < early / 10.0,
            "{early} {late}"
        );
    }
}
