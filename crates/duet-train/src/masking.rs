//! Feature masking during training (SpecAugment: Park et al., "SpecAugment: A Simple Data
//! Augmentation Method for Automatic Speech Recognition", Interspeech 2019): each time a training
//! utterance enters a batch, a stretch of its frames and a range of its mel bands are replaced by
//! the utterance's own mean, so the model cannot lean on any one moment or band of one speaker's
//! voice. Unlike the audio augmentation (crate::augment) it needs no second feature cache and costs
//! nothing per epoch but a copy of the batch's inputs.
//!
//! Per utterance and step, from a generator seeded by (run seed, fold, epoch, batch, position), so a
//! resumed run masks exactly as an uninterrupted one:
//! - the MFCC sequence (paper §2.2, 39 values per frame): one time mask of 0 .. 10 % of its valid
//!   frames, each coefficient set to its mean over the utterance (the deltas are coefficients like
//!   any other here; a frequency mask across them would mix unrelated rows, so there is none);
//! - each log mel spectrogram (S1 and S2 of paper §2.2, after the resize): one time mask of 0 .. 10 %
//!   of its columns, each band set to its mean over time, and one frequency mask of 0 .. 1/8 of its
//!   bands, set to the spectrogram's mean.
//!
//! Inference never masks: the page, `duet predict` and evaluation see the features unchanged.

use duet_model::input::Prepared;
use duet_model::rng::SplitMix64;

/// Largest time mask, as a share of the frames (SpecAugment's p = 0.1 would allow 10 %).
const TIME_SHARE: f64 = 0.10;
/// Largest frequency mask, as a share of the bands.
const FREQ_SHARE: f64 = 0.125;

/// The generator of the utterance at `position` of batch `batch` of `epoch` in `fold`.
pub fn rng(seed: u64, fold: usize, epoch: usize, batch: usize, position: usize) -> SplitMix64 {
    SplitMix64::derive(&[
        seed,
        0x5EC_A06,
        fold as u64,
        epoch as u64,
        batch as u64,
        position as u64,
    ])
}

/// A width in 0 ..= share·n and a start so that the stretch fits in n.
fn stretch(rng: &mut SplitMix64, n: usize, share: f64) -> (usize, usize) {
    let max = ((n as f64) * share).floor() as usize;
    let width = rng.below(max + 1).min(n);
    let start = rng.below(n - width + 1);
    (start, width)
}

/// A masked copy of `p` (`mfcc_dim` values per MFCC frame; spectrograms of `narrow_bands` and
/// `wide_bands` mel bands, row-major [band][frame]).
pub fn mask(
    p: &Prepared,
    mfcc_dim: usize,
    narrow_bands: usize,
    wide_bands: usize,
    rng: &mut SplitMix64,
) -> Prepared {
    let mut out = p.clone();
    let frames = p.mfcc_frames;
    if frames > 0 && mfcc_dim > 0 && p.mfcc.len() >= frames * mfcc_dim {
        let (start, width) = stretch(rng, frames, TIME_SHARE);
        for c in 0..mfcc_dim {
            let mean = (0..frames)
                .map(|t| p.mfcc[t * mfcc_dim + c] as f64)
                .sum::<f64>()
                / frames as f64;
            for t in start..start + width {
                out.mfcc[t * mfcc_dim + c] = mean as f32;
            }
        }
    }
    mask_spectrogram(&mut out.narrow, narrow_bands, rng);
    mask_spectrogram(&mut out.wide, wide_bands, rng);
    out
}

fn mask_spectrogram(s: &mut [f32], bands: usize, rng: &mut SplitMix64) {
    if bands == 0 || s.is_empty() || !s.len().is_multiple_of(bands) {
        return;
    }
    let frames = s.len() / bands;
    let (t0, tw) = stretch(rng, frames, TIME_SHARE);
    for b in 0..bands {
        let row = &mut s[b * frames..(b + 1) * frames];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / frames as f64;
        row[t0..t0 + tw].fill(mean as f32);
    }
    let mean = s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64;
    let (f0, fw) = stretch(rng, bands, FREQ_SHARE);
    s[f0 * frames..(f0 + fw) * frames].fill(mean as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Prepared {
        // 50 MFCC frames of 3 values; spectrograms of 16 bands × 40 and 8 bands × 20, every value
        // distinct so a masked one is recognisable.
        Prepared {
            mfcc: (0..150).map(|i| i as f32).collect(),
            mfcc_frames: 50,
            narrow: (0..640).map(|i| 1000.0 + i as f32).collect(),
            wide: (0..160).map(|i| 5000.0 + i as f32).collect(),
            speech_to_noise_db: None,
        }
    }

    #[test]
    fn masks_a_time_stretch_and_a_band_range_with_means_and_is_reproducible() {
        let p = example();
        let mut changed_mfcc = 0;
        let mut changed_narrow = 0;
        for step in 0..50 {
            let a = mask(&p, 3, 16, 8, &mut rng(1, 0, 0, step, 0));
            let b = mask(&p, 3, 16, 8, &mut rng(1, 0, 0, step, 0));
            assert_eq!(a.mfcc, b.mfcc, "same seed, same mask");
            assert_eq!(a.narrow, b.narrow);
            assert_eq!(a.wide, b.wide);
            // At most 10 % of the 50 MFCC frames, each masked value a coefficient's mean
            // (coefficient c over frames t: mean of 3t + c = 73.5 + c).
            let masked: Vec<usize> = (0..150).filter(|&i| a.mfcc[i] != p.mfcc[i]).collect();
            assert!(masked.len() <= 5 * 3, "{} MFCC values masked", masked.len());
            for &i in &masked {
                assert_eq!(a.mfcc[i], 73.5 + (i % 3) as f32);
            }
            changed_mfcc += masked.len();
            // At most 10 % of 40 columns (4 × 16 values) and 1/8 of 16 bands (2 × 40 values).
            let n = (0..640).filter(|&i| a.narrow[i] != p.narrow[i]).count();
            assert!(n <= 4 * 16 + 2 * 40, "{n} narrow values masked");
            changed_narrow += n;
            assert_eq!(a.mfcc_frames, p.mfcc_frames);
        }
        assert!(changed_mfcc > 0 && changed_narrow > 0, "some steps mask");
        assert!(
            (0..50).any(|s| mask(&p, 3, 16, 8, &mut rng(1, 0, 0, s, 0)).narrow
                != mask(&p, 3, 16, 8, &mut rng(2, 0, 0, s, 0)).narrow),
            "another seed masks elsewhere"
        );
    }
}
