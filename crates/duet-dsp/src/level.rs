//! Level normalisation of an utterance: the same features whatever the microphone's gain.
//!
//! A studio recording and a laptop microphone differ by tens of dB in level, and in acted corpora the
//! level tracks the label (RAVDESS: the quiet files are nearly all sad or neutral), so a model can
//! learn loudness instead of emotion. With [`LevelNorm`] in the [`FeatureConfig`](crate::FeatureConfig)
//! the features are those of the utterance scaled so that its active level — the `percentile`
//! of its frame energies — sits at `target_dbfs`.
//!
//! It is applied to the finished features, not to the samples, so that streaming analysis needs no
//! second pass: a gain `g` multiplies every power mel value by `g²`, adds `ln g²` to the MFCC log
//! energy and leaves MFCC 1..12 and all deltas unchanged (a constant offset of the log mel bands has
//! no DCT coefficient 1..12). Exact for the mels (their floor is applied later, in the model's
//! input); not for the frames the MFCC front end has already clamped at its floor (openSMILE's
//! ln max(·, 1) on 16-bit-scaled energies, docs/reference.md §2): the near-silent pauses of a quiet
//! recording stay as clamped, so a copy 20 dB quieter still gives somewhat different MFCC frames.
//!
//! Off (`None`) in the `paper` and `authors` presets: the paper does not normalise (section 2.2).

use serde::{Deserialize, Serialize};

use crate::config::MfccConfig;
use crate::plan::Features;

/// The largest gain applied, in dB either way: beyond it the input is silence or clipping, and
/// amplifying noise by more would only invent a level.
pub const MAX_GAIN_DB: f32 = 40.0;

/// Index of log energy in an MFCC12_E_D_A frame (after mfcc1..12).
const LOG_E: usize = 12;

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

    /// The active level of `features`: the `percentile` of the frames' log energy (ln of the
    /// openSMILE-scaled frame energy), `None` without frames.
    pub fn active_log_energy(&self, features: &Features) -> Option<f64> {
        let m = &features.mfcc;
        let mut e: Vec<f32> = (0..m.n_frames).map(|t| m.at(t, LOG_E)).collect();
        if e.is_empty() {
            return None;
        }
        e.sort_by(f32::total_cmp);
        let k = ((self.percentile as f64 * e.len() as f64).ceil() as usize).clamp(1, e.len()) - 1;
        Some(e[k] as f64)
    }

    /// The gain (in the natural log of power: `ln g²`) that brings `features` to the target.
    pub fn log_power_gain(&self, features: &Features, mfcc: &MfccConfig) -> f64 {
        let Some(level) = self.active_log_energy(features) else {
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

    /// Scales `features` to the target level (see the module documentation).
    pub fn apply(&self, features: &mut Features, mfcc: &MfccConfig) {
        let s = self.log_power_gain(features, mfcc);
        if s == 0.0 {
            return;
        }
        let floor = mfcc.log_floor.ln();
        let n = crate::Mfcc::N_FEATURES;
        for row in features.mfcc.data.chunks_exact_mut(n) {
            row[LOG_E] = ((row[LOG_E] as f64 + s).max(floor)) as f32;
        }
        let g = s.exp() as f32;
        for v in features
            .mel_narrow
            .data
            .iter_mut()
            .chain(features.mel_wide.data.iter_mut())
        {
            *v *= g;
        }
    }
}
