//! Silence around the speech, cut from an utterance's features.
//!
//! A recording's length of silence before and after the speech says nothing of the emotion, but
//! the CNN branches resize every spectrogram to one frame count (paper §2.2) and the recurrences
//! average over every step, so the more silence, the less of the model's input is speech. RAVDESS
//! clips are about 45 % silence, a microphone recording as much as the person waited. With
//! [`SilenceTrim`] the features keep only the frames from the first to the last one loud enough to
//! be speech, plus a margin. Only the ends are cut: pauses inside the speech are part of it.
//!
//! A frame is loud enough when its power (the sum of the wide spectrogram's mel bands) is within
//! `below_db` of the utterance's loudest frame (not a percentile, which the length of the silence
//! would move) and `above_floor_db` above its noise floor (its 10th-percentile frame): the first
//! bound keeps a quiet studio recording's breaths out, the second a noisy recording's noise (but
//! never a frame within `below_db / 2` of the loudest). The span is found
//! on the wide spectrogram and cut from all three feature streams by time, so they stay aligned.

use serde::{Deserialize, Serialize};

use crate::config::FeatureConfig;
use crate::plan::Features;
use crate::{Mel, Mfcc};

/// How silence is cut from the ends of an utterance (stored with a model that was trained with it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SilenceTrim {
    /// A frame more than this many dB below the loudest frame is silence.
    pub below_db: f32,
    /// A frame less than this many dB above the noise floor (the 10th-percentile frame) is silence.
    pub above_floor_db: f32,
    /// Seconds kept on each side of the first and last loud frame (a soft onset or decay).
    pub margin_s: f32,
}

impl SilenceTrim {
    /// 30 dB below the loudest frame (a breath or a lip noise in a quiet room is not speech), 6 dB above the floor, 0.1 s of margin.
    pub fn speech() -> Self {
        SilenceTrim {
            below_db: 30.0,
            above_floor_db: 6.0,
            margin_s: 0.1,
        }
    }

    /// What is cut, in words (for `duet info` and a model's provenance).
    pub fn describe(&self) -> String {
        format!(
            "silence cut from both ends: frames {} dB below the loudest frame or within {} dB of the floor, {} s of margin",
            self.below_db, self.above_floor_db, self.margin_s
        )
    }

    /// Checks the numbers (a config read from a weights file may be anything).
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=120.0).contains(&self.below_db) {
            return Err(format!(
                "silence_trim.below_db is {}; it must be within 0..120 dB",
                self.below_db
            ));
        }
        if !(0.0..=60.0).contains(&self.above_floor_db) {
            return Err(format!(
                "silence_trim.above_floor_db is {}; it must be within 0..60 dB",
                self.above_floor_db
            ));
        }
        if !(0.0..=5.0).contains(&self.margin_s) {
            return Err(format!(
                "silence_trim.margin_s is {}; it must be within 0..5 s",
                self.margin_s
            ));
        }
        Ok(())
    }

    /// The speech's span in seconds (start, end) from the wide spectrogram's frame powers; `None`
    /// when the spectrogram has no frame. The loudest frame is always in it.
    pub fn speech_span(&self, features: &Features, config: &FeatureConfig) -> Option<(f64, f64)> {
        let mel = &features.mel_wide;
        if mel.n_frames == 0 {
            return None;
        }
        let power: Vec<f64> = (0..mel.n_frames)
            .map(|t| (0..mel.n_mels).map(|m| mel.at(m, t) as f64).sum::<f64>())
            .collect();
        let db = |p: f64| 10.0 * p.max(1e-20).log10();
        let mut sorted = power.clone();
        sorted.sort_by(f64::total_cmp);
        let quantile =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        let level = db(*sorted.last().expect("frames"));
        // The floor's bound never comes closer than half of `below_db` to the level: in a recording
        // that is all speech, the 10th-percentile frame is speech too, and its soft edges stay.
        let threshold = (level - self.below_db as f64)
            .max(db(quantile(0.1)) + self.above_floor_db as f64)
            .min(level - self.below_db as f64 / 2.0);
        let first = power.iter().position(|&p| db(p) >= threshold)?;
        let last = power.iter().rposition(|&p| db(p) >= threshold)?;
        // librosa's centred frames: frame t is centred on sample t·hop.
        let hop = config.wide.hop_length as f64 / config.sample_rate as f64;
        let margin = self.margin_s as f64;
        Some((first as f64 * hop - margin, last as f64 * hop + margin))
    }

    /// The features of the speech's span alone ([`Self::speech_span`]); the features unchanged when
    /// there is no frame. Every stream keeps at least one frame.
    pub fn apply(&self, features: &Features, config: &FeatureConfig) -> Features {
        let Some((start, end)) = self.speech_span(features, config) else {
            return features.clone();
        };
        let sr = config.sample_rate as f64;
        // The frames whose centre lies in [start, end]: first = ceil(start/step - offset),
        // last = floor(end/step - offset), clamped to the stream and to at least one frame.
        let range = |n: usize, step: f64, centre_offset: f64| {
            if n == 0 {
                return 0..0;
            }
            let a = ((start * sr - centre_offset) / step).ceil().max(0.0) as usize;
            let b = ((end * sr - centre_offset) / step).floor();
            let b = if b < 0.0 { 0 } else { (b as usize).min(n - 1) };
            let a = a.min(b);
            a..b + 1
        };
        let mfcc_step = config.mfcc.frame_step as f64;
        let mfcc_range = range(
            features.mfcc.n_frames,
            mfcc_step,
            config.mfcc.frame_length as f64 / 2.0,
        );
        let d = Mfcc::N_FEATURES;
        let mfcc = Mfcc {
            n_frames: mfcc_range.len(),
            data: features.mfcc.data[mfcc_range.start * d..mfcc_range.end * d].to_vec(),
        };
        let cut = |mel: &Mel, hop: usize| {
            let r = range(mel.n_frames, hop as f64, 0.0);
            let mut data = Vec::with_capacity(mel.n_mels * r.len());
            for m in 0..mel.n_mels {
                let row = &mel.data[m * mel.n_frames..(m + 1) * mel.n_frames];
                data.extend_from_slice(&row[r.clone()]);
            }
            Mel {
                n_mels: mel.n_mels,
                n_frames: r.len(),
                data,
            }
        };
        Features {
            mfcc,
            mel_narrow: cut(&features.mel_narrow, config.narrow.hop_length),
            mel_wide: cut(&features.mel_wide, config.wide.hop_length),
            duration_s: features.duration_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeaturePlan;

    /// 1 s of quiet noise, 1 s of a loud tone, 1 s of quiet noise.
    fn tone_in_silence(noise_amp: f32) -> Vec<f32> {
        let mut state = 12345u32;
        (0..48000)
            .map(|i| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                let noise = noise_amp * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5);
                let t = i as f32 / 16000.0;
                let tone = if (16000..32000).contains(&i) {
                    0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                } else {
                    0.0
                };
                tone + noise
            })
            .collect()
    }

    fn features(samples: &[f32]) -> (Features, FeatureConfig) {
        let config = FeatureConfig::paper();
        let mut plan = FeaturePlan::new(&config);
        (plan.compute(samples).unwrap(), config)
    }

    #[test]
    fn the_span_is_the_loud_part_plus_the_margin() {
        for noise in [0.0, 1e-4, 0.03] {
            let (f, c) = features(&tone_in_silence(noise));
            let (start, end) = SilenceTrim::speech().speech_span(&f, &c).unwrap();
            // The tone is at 1..2 s; the wide window (32 ms) smears its edges by half a window.
            assert!((start - 0.9).abs() < 0.04, "noise {noise}: start {start}");
            assert!((end - 2.1).abs() < 0.04, "noise {noise}: end {end}");
        }
    }

    #[test]
    fn every_stream_is_cut_to_the_same_time() {
        let (f, c) = features(&tone_in_silence(1e-4));
        let t = SilenceTrim::speech().apply(&f, &c);
        let seconds = |frames: usize, step: usize| frames as f64 * step as f64 / 16000.0;
        for (name, s) in [
            ("mfcc", seconds(t.mfcc.n_frames, c.mfcc.frame_step)),
            (
                "narrow",
                seconds(t.mel_narrow.n_frames, c.narrow.hop_length),
            ),
            ("wide", seconds(t.mel_wide.n_frames, c.wide.hop_length)),
        ] {
            assert!((s - 1.2).abs() < 0.04, "{name}: {s} s kept");
        }
        // The frames kept are the original ones, not resampled: the first kept frame of each
        // stream is the original frame whose centre is the first at or after the span's start.
        let (start, _) = SilenceTrim::speech().speech_span(&f, &c).unwrap();
        let first_mfcc = ((start * 16000.0 - 200.0) / 160.0).ceil() as usize;
        assert_eq!(t.mfcc.frame(0), f.mfcc.frame(first_mfcc));
        let first_wide = (start * 16000.0 / 256.0).ceil() as usize;
        for m in [0, 5, 127] {
            assert_eq!(t.mel_wide.at(m, 0), f.mel_wide.at(m, first_wide));
        }
    }

    #[test]
    fn a_recording_without_silence_is_kept_whole() {
        let samples: Vec<f32> = (0..32000)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 220.0 * i as f32 / 16000.0).sin())
            .collect();
        let (f, c) = features(&samples);
        let t = SilenceTrim::speech().apply(&f, &c);
        assert_eq!(t, f);
        // Digital silence: every frame is as loud as the loudest, nothing is cut.
        let (f, c) = features(&vec![0.0; 16000]);
        assert_eq!(SilenceTrim::speech().apply(&f, &c), f);
    }
}
