//! How far a recording's speech stands above its noise floor: a warning, not a correction.
//!
//! A model trained on studio-quiet speech (RAVDESS) answers noisy recordings badly, and not at
//! random: through white noise at 20 dB SNR the model bundled until 2026-12-06 called 130 of 144
//! clips "sad" (docs/training-experiments.md, "Through other channels"). One trained with noise
//! holds out further but fails too, lower down. The page and `duet predict` therefore say when a
//! recording is noisy instead of showing a confident answer as if it were not.
//!
//! The estimate needs no pause in the speech. In each mel band of the wide spectrogram S2 the
//! speech is sparse — a band is loud in some frames and near its floor in others, even in
//! continuous speech — while stationary noise keeps every frame of the band near its own level. So
//! the spread between a band's loud frames (its 90th percentile, in dB) and its quiet ones (its
//! 10th) is large for clean speech and shrinks towards the noise's own spread as the noise rises;
//! the estimate is the median of that spread over the bands. Measured on every third RAVDESS clip
//! (240) and on copies with white noise added at an SNR against the clip's mean power, the estimate's
//! median was 47.9 dB clean, 32.0 at 35 dB SNR, 27.5 at 30 and 22.9 at 25; 18.1 at 20 on the 144
//! clips of four actors (docs/training-experiments.md, "Marking noisy recordings").

use crate::mel::Mel;

/// A recording whose [`speech_to_noise_db`] is under this is marked noisy. Where the bundled
/// model's answers start to fail: with white noise at 30 dB SNR it kept 67.5 % of its answers on
/// clips it was trained on (100 % clean), and this marks 198 of those 240 copies, 3 of the 240
/// clean clips and 16 of them cut to their speech (no silence left around it). The default for
/// a model file that states no threshold of its own; one trained with noise keeps its answers
/// further down and states a lower one.
pub const NOISY_BELOW_DB: f32 = 30.0;

/// Fewer frames than this give no estimate: ten frames of S2 (0.16 s in the `paper` preset) are too
/// few for a 10th percentile to mean anything.
pub const MIN_FRAMES: usize = 10;

/// The quantiles of a band's frames (in dB) whose difference is the band's spread.
const QUIET: f64 = 0.1;
const LOUD: f64 = 0.9;

/// Power below this (1e-10, -100 dB: under a 16-bit recording's own quantisation floor) counts as
/// this, so that digital silence is a finite floor rather than minus infinity.
const FLOOR: f32 = 1e-10;

/// The median over mel bands of the spread, in dB, between each band's 90th and 10th percentile
/// frame power, from a power mel spectrogram (the wide one, S2). `None` with fewer than
/// [`MIN_FRAMES`] frames or no band. A uniform gain (level normalisation) does not change it.
pub fn speech_to_noise_db(mel: &Mel) -> Option<f32> {
    if mel.n_frames < MIN_FRAMES || mel.n_mels == 0 {
        return None;
    }
    let mut band = vec![0f32; mel.n_frames];
    let mut spreads: Vec<f64> = Vec::with_capacity(mel.n_mels);
    for row in mel.data.chunks_exact(mel.n_frames).take(mel.n_mels) {
        for (b, &v) in band.iter_mut().zip(row) {
            // `max` also maps a NaN (the front end never makes one) to the floor.
            *b = v.max(FLOOR);
        }
        spreads.push(quantile_db(&mut band, LOUD) - quantile_db(&mut band, QUIET));
    }
    spreads.sort_unstable_by(f64::total_cmp);
    Some(quantile(&spreads, 0.5) as f32)
}

/// Whether a [`speech_to_noise_db`] estimate means the recording is noisy, at [`NOISY_BELOW_DB`].
pub fn is_noisy(speech_to_noise_db: Option<f32>) -> bool {
    is_noisy_below(speech_to_noise_db, NOISY_BELOW_DB)
}

/// Whether a [`speech_to_noise_db`] estimate is under `threshold` dB (a model's own threshold).
pub fn is_noisy_below(speech_to_noise_db: Option<f32>, threshold: f32) -> bool {
    speech_to_noise_db.is_some_and(|d| d < threshold)
}

/// The `q` quantile, in dB, of positive powers: [`quantile`] of their dB values sorted. dB is
/// increasing in the power, so the two neighbours it interpolates between are the same order
/// statistics of the powers; only those two are found (a selection, reordering `powers`, instead of
/// a sort) and converted (two logarithms instead of one per frame). The page and `duet predict`
/// run this for every recording.
fn quantile_db(powers: &mut [f32], q: f64) -> f64 {
    let h = (powers.len() - 1) as f64 * q;
    let (i, frac) = (h.floor() as usize, h - h.floor());
    let (_, lo, above) = powers.select_nth_unstable_by(i, f32::total_cmp);
    let lo = *lo;
    let hi = above.iter().copied().min_by(f32::total_cmp).unwrap_or(lo);
    let db = |p: f32| 10.0 * f64::from(p).log10();
    db(lo) + frac * (db(hi) - db(lo))
}

/// The `q` quantile of sorted values, interpolating linearly between neighbours (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (i, frac) = (h.floor() as usize, h - h.floor());
    let hi = sorted[(i + 1).min(sorted.len() - 1)];
    sorted[i] + frac * (hi - sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeatureConfig, FeaturePlan};

    /// A deterministic stand-in for speech: syllables of a harmonic tone (a 140 Hz voice with its
    /// first 30 harmonics) whose pitch glides, 180 ms on and 70 ms of a weaker tail, with no pause.
    fn voiced(seconds: f32) -> Vec<f32> {
        let n = (seconds * 16_000.0) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let syllable = (t / 0.25).fract();
                let env = if syllable < 0.72 { 1.0 } else { 0.03 };
                let f0 = 140.0 * (1.0 + 0.15 * (2.0 * std::f32::consts::PI * 0.7 * t).sin());
                let s: f32 = (1..=30)
                    .map(|k| (2.0 * std::f32::consts::PI * f0 * k as f32 * t).sin() / k as f32)
                    .sum();
                0.1 * env * s
            })
            .collect()
    }

    /// Gaussian white noise from a fixed seed (xorshift + Box-Muller).
    fn white(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.max(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (next(), next());
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect()
    }

    fn at_snr(speech: &[f32], snr_db: f32) -> Vec<f32> {
        let noise = white(speech.len(), 7);
        let p = speech.iter().map(|v| v * v).sum::<f32>() / speech.len() as f32;
        let pn = noise.iter().map(|v| v * v).sum::<f32>() / noise.len() as f32;
        let g = (p / 10f32.powf(snr_db / 10.0) / pn).sqrt();
        speech.iter().zip(&noise).map(|(s, e)| s + g * e).collect()
    }

    fn estimate(samples: &[f32], config: &FeatureConfig) -> f32 {
        let f = FeaturePlan::new(config).compute(samples).unwrap();
        speech_to_noise_db(&f.mel_wide).unwrap()
    }

    #[test]
    fn falls_as_noise_rises_and_flags_twenty_db() {
        let speech = voiced(3.0);
        let config = FeatureConfig::paper();
        let clean = estimate(&speech, &config);
        let at = |snr| estimate(&at_snr(&speech, snr), &config);
        let (s40, s30, s20, s10) = (at(40.0), at(30.0), at(20.0), at(10.0));
        assert!(
            clean > s40 && s40 > s30 && s30 > s20 && s20 > s10,
            "{clean} {s40} {s30} {s20} {s10}"
        );
        assert!(
            !is_noisy(Some(clean)),
            "clean speech estimated at {clean} dB"
        );
        assert!(is_noisy(Some(s20)), "20 dB SNR estimated at {s20} dB");
    }

    #[test]
    fn a_gain_does_not_change_it_and_short_input_gives_none() {
        let speech = at_snr(&voiced(2.0), 30.0);
        let config = FeatureConfig::paper();
        let quiet: Vec<f32> = speech.iter().map(|v| v * 0.01).collect();
        let (a, b) = (estimate(&speech, &config), estimate(&quiet, &config));
        assert!((a - b).abs() < 0.01, "{a} vs {b}");
        let f = FeaturePlan::new(&config).compute(&speech[..2048]).unwrap();
        assert!(f.mel_wide.n_frames < MIN_FRAMES);
        assert_eq!(speech_to_noise_db(&f.mel_wide), None);
        assert!(!is_noisy(None));
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile([1, 2, 3, 4, 10], [0.1, 0.5, 0.9]) = [1.4, 3.0, 7.6]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        for (q, want) in [(0.1, 1.4), (0.5, 3.0), (0.9, 7.6)] {
            assert!((quantile(&v, q) - want).abs() < 1e-6, "{q}");
        }
        assert_eq!(quantile(&[2.0, 4.0], 0.5), 3.0);
    }

    #[test]
    fn selected_quantiles_in_db_equal_those_of_the_sorted_db_values() {
        // Powers with ties, values at and under the floor, and lengths where the quantile falls on
        // an element and between two, against the definition: dB of every value, sorted.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [1usize, 2, 3, 10, 11, 311, 312] {
            let powers: Vec<f32> = (0..n)
                .map(|_| match next() % 5 {
                    0 => 0.0,
                    1 => 0.25,
                    _ => (next() % 1_000_000) as f32 * 1e-4,
                })
                .map(|v| v.max(FLOOR))
                .collect();
            let mut db: Vec<f64> = powers
                .iter()
                .map(|&p| 10.0 * f64::from(p).log10())
                .collect();
            db.sort_by(f64::total_cmp);
            for q in [0.0, QUIET, 0.5, LOUD, 1.0] {
                let want = quantile(&db, q);
                let got = quantile_db(&mut powers.clone(), q);
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "n {n} q {q}: {got} vs {want}"
                );
            }
        }
    }
}
