//! Level normalisation of an utterance: the same features whatever the microphone's gain.
//!
//! A studio recording and a laptop microphone differ by tens of dB in level, and in acted corpora the
//! level tracks the label (RAVDESS: the quiet files are nearly all sad or neutral), so a model can
//! learn loudness instead of emotion. With [`LevelNorm`] in the [`FeatureConfig`](crate::FeatureConfig)
//! the features are those of the utterance scaled so that its active level — the `percentile`
//! of its frame energies — sits at `target_dbfs`.
//!
//! It needs no second pass over the samples, so streaming analysis stays one pass: the gain `g` is
//! known once the utterance's frame energies are, and scaling the samples by `g` would multiply every
//! power spectrum by `g²`. The power mel spectrograms are multiplied by `g²` when the utterance ends
//! (their floor comes later, in the model's input); the MFCC front end keeps each frame's log band
//! energies unfloored until then, adds `ln g²`, and only then applies openSMILE's floor
//! (ln max(·, 1) on 16-bit-scaled energies, docs/reference.md §2) and the DCT. So the features equal
//! those of the scaled samples, near-silent frames included; what no gain can undo is the noise of
//! a quiet recording itself (16-bit quantisation, the microphone's hiss), which is amplified with it.
//!
//! Off (`None`) in the `paper` and `authors` presets: the paper does not normalise (section 2.2).

use serde::{Deserialize, Serialize};

use crate::config::MfccConfig;
use crate::plan::Features;

/// The largest gain applied, in dB either way: beyond it the input is silence or clipping, and
/// amplifying noise by more would only invent a level. 60 dB: a calm RAVDESS utterance sits at
/// about -42 dBFS (its 90th-percentile frame), the same recorded 20 dB quieter needs 42 dB to
/// reach -20 dBFS, and a 16-bit recording's own floor (-96 dBFS) stays far below the range.
pub const MAX_GAIN_DB: f32 = 60.0;

/// Level normalisation parameters (a named field of the feature configuration, stored in the model
/// file so that `duet predict`, the page and `train` normalise alike).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelNorm {
    /// Target RMS of a frame at the active level, in dB relative to full scale.
    pub target_dbfs: f32,
    /// Which frame energy is the active level (0.9: louder than 90 % of the frames, so pauses and
    /// the length of silence around the speech do not move it).
    pub percentile: f32,
}

impl LevelNorm {
    /// -20 dBFS at the 90th percentile: typical of speech recorded with headroom.
    pub fn speech() -> Self {
        LevelNorm {
            target_dbfs: -20.0,
            percentile: 0.9,
        }
    }

    /// Checks the numbers (a config read from a weights file may be anything).
    pub fn validate(&self) -> Result<(), String> {
        if !(-80.0..=0.0).contains(&self.target_dbfs) {
            return Err(format!(
                "level.target_dbfs is {}; it must be within -80..0 dBFS",
                self.target_dbfs
            ));
        }
        if !(self.percentile > 0.0 && self.percentile <= 1.0) {
            return Err(format!(
                "level.percentile is {}; it must be within (0, 1]",
                self.percentile
            ));
        }
        Ok(())
    }

    /// The active level: the `percentile` of the frames' log energies (ln of the openSMILE-scaled
    /// frame energy, the MFCC front end's logE), `None` without frames.
    pub fn active_log_energy(&self, log_energies: impl IntoIterator<Item = f32>) -> Option<f64> {
        let mut e: Vec<f32> = log_energies.into_iter().collect();
        if e.is_empty() {
            return None;
        }
        e.sort_by(f32::total_cmp);
        let k = ((self.percentile as f64 * e.len() as f64).ceil() as usize).clamp(1, e.len()) - 1;
        Some(e[k] as f64)
    }

    /// The gain (in the natural log of power: `ln g²`) that brings an utterance with these frame log
    /// energies to the target.
    pub fn log_power_gain(
        &self,
        log_energies: impl IntoIterator<Item = f32>,
        mfcc: &MfccConfig,
    ) -> f64 {
        let Some(level) = self.active_log_energy(log_energies) else {
            return 0.0;
        };
        // The log energy of a frame whose RMS is target_dbfs (mfcc.rs: energy_scale · Σx²).
        let target = (mfcc.energy_scale
            * mfcc.frame_length as f64
            * 10f64.powf(self.target_dbfs as f64 / 10.0))
        .ln();
        let max = (MAX_GAIN_DB as f64 / 10.0) * std::f64::consts::LN_10;
        (target - level).clamp(-max, max)
    }
}

/// Multiplies the power mel spectrograms by `g²` = `e^log_gain` (their floor comes later, in the
/// model's input, so this is exact); the MFCC front end applies the same gain before its floor
/// (`MfccAnalyzer::apply_gain`).
pub(crate) fn scale_mels(features: &mut Features, log_gain: f64) {
    let g = log_gain.exp() as f32;
    for v in features
        .mel_narrow
        .data
        .iter_mut()
        .chain(features.mel_wide.data.iter_mut())
    {
        *v *= g;
    }
}
