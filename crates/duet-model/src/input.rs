//! From duet-dsp's [`Features`] to the model's input tensors (docs/weights.md §1): the same code
//! for `train`, `duet predict` and the page.

use burn::prelude::*;
use burn::tensor::TensorData;
use duet_dsp::Features;

use crate::config::{ModelConfig, UtteranceMean};
use crate::error::ModelError;

/// One utterance ready for the model, on the CPU: MFCC frames as they are (or centred and
/// standardised, where the model says so: [`UtteranceMean`], [`crate::config::MfccStandardisation`])
/// and both spectrograms resized along time (nearest neighbour) and put on a log scale (paper §2.2),
/// each band centred where the model says so.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Row-major [mfcc_frames, mfcc_dim].
    pub mfcc: Vec<f32>,
    /// Valid MFCC frames (the rest of a batch's rows are padding).
    pub mfcc_frames: usize,
    /// Row-major [n_mels, narrow_frames], 10·log10 power.
    pub narrow: Vec<f32>,
    /// Row-major [n_mels, wide_frames], 10·log10 power.
    pub wide: Vec<f32>,
    /// How far the speech stands above the noise floor, in dB
    /// ([`duet_dsp::speech_to_noise_db`], from the spectrogram before resizing); `None` when too
    /// short to tell.
    pub speech_to_noise_db: Option<f32>,
}

impl Prepared {
    /// Random inputs of the shapes an utterance of `samples` at 16 kHz gives a model of `config`
    /// (MFCC ~ N(0, 1), spectrograms ~ N(−50, 15) dB): for benchmarks and backend comparisons.
    pub fn random(config: &ModelConfig, samples: usize, rng: &mut crate::rng::SplitMix64) -> Self {
        // 25 ms frames every 10 ms (paper §2.2).
        let frames = 1 + samples.saturating_sub(400) / 160;
        let (n1, f1) = config.spectrogram_shape(false);
        let (n2, f2) = config.spectrogram_shape(true);
        let mfcc = (0..frames * config.mfcc_dim)
            .map(|_| rng.normal() as f32)
            .collect();
        let mut db =
            |n: usize| -> Vec<f32> { (0..n).map(|_| -50.0 + 15.0 * rng.normal() as f32).collect() };
        let narrow = db(n1 * f1);
        let wide = db(n2 * f2);
        Prepared {
            mfcc,
            mfcc_frames: frames,
            narrow,
            wide,
            speech_to_noise_db: None,
        }
    }
}

/// The features the model reads: `features` with the silence at both ends cut where the model
/// says so ([`duet_dsp::SilenceTrim`]), else as they are. `train` takes its resize targets and MFCC
/// statistics from these, so that they describe what the model sees.
pub fn model_features<'a>(
    features: &'a Features,
    config: &ModelConfig,
) -> std::borrow::Cow<'a, Features> {
    match &config.silence_trim {
        Some(t) => std::borrow::Cow::Owned(t.apply(features, &config.features)),
        None => std::borrow::Cow::Borrowed(features),
    }
}

/// Resizes and logs the spectrograms of `features` for a model of `config`.
pub fn prepare(whole: &Features, config: &ModelConfig) -> Result<Prepared, ModelError> {
    let f = &config.features;
    let features = &*model_features(whole, config);
    if features.mfcc.n_frames == 0 {
        return Err(ModelError::Input(
            "no MFCC frame: the audio is too short".into(),
        ));
    }
    if features.mfcc.data.len() != features.mfcc.n_frames * config.mfcc_dim {
        return Err(ModelError::Input(format!(
            "MFCC has {} values for {} frames; the model expects {} per frame",
            features.mfcc.data.len(),
            features.mfcc.n_frames,
            config.mfcc_dim
        )));
    }
    for (name, mel, want) in [
        ("narrow", &features.mel_narrow, f.narrow.n_mels),
        ("wide", &features.mel_wide, f.wide.n_mels),
    ] {
        if mel.n_mels != want {
            return Err(ModelError::Input(format!(
                "the {name} spectrogram has {} mel bands but the model (preset `{}`) expects {want}: \
                 features computed with another preset?",
                mel.n_mels,
                config.preset.name()
            )));
        }
        if mel.n_frames == 0 {
            return Err(ModelError::Input(format!(
                "the {name} spectrogram has no frame"
            )));
        }
    }
    let mut narrow = features
        .mel_narrow
        .resize_time_nearest(config.resize.narrow_frames)
        .to_log(f.log_floor);
    let mut wide = features
        .mel_wide
        .resize_time_nearest(config.resize.wide_frames)
        .to_log(f.log_floor);
    let mut mfcc = features.mfcc.data.clone();
    if let Some(u) = config.utterance_mean {
        if u.mfcc() {
            UtteranceMean::centre_columns(&mut mfcc, config.mfcc_dim);
        }
        if u.spectrograms() {
            UtteranceMean::centre_rows(&mut narrow.data, narrow.n_frames);
            UtteranceMean::centre_rows(&mut wide.data, wide.n_frames);
        }
    }
    if let Some(z) = &config.mfcc_standardisation {
        z.apply(&mut mfcc);
    }
    Ok(Prepared {
        mfcc,
        mfcc_frames: features.mfcc.n_frames,
        narrow: narrow.data,
        wide: wide.data,
        // From the whole recording: its silence is where the noise floor shows.
        speech_to_noise_db: duet_dsp::speech_to_noise_db(&whole.mel_wide),
    })
}

/// A batch of utterances as tensors.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// [B, T_max, 39], zero-padded after each utterance's last frame.
    pub mfcc: Tensor<3>,
    /// [B, T_max, 1]: 1/len on valid frames, 0 on padding — a masked mean as one multiply-sum.
    pub mfcc_pool: Tensor<3>,
    /// [B, 1, n_mels, frames] log mel S1.
    pub mel_narrow: Tensor<4>,
    /// [B, 1, n_mels, frames] log mel S2.
    pub mel_wide: Tensor<4>,
}

impl ModelInput {
    /// One batch of prepared utterances of any lengths, padded and masked, on `device`.
    pub fn batch(items: &[&Prepared], config: &ModelConfig, device: &Device) -> ModelInput {
        let b = items.len();
        let d = config.mfcc_dim;
        let t_max = items
            .iter()
            .map(|p| p.mfcc_frames)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut mfcc = vec![0.0f32; b * t_max * d];
        let mut pool = vec![0.0f32; b * t_max];
        for (i, p) in items.iter().enumerate() {
            mfcc[i * t_max * d..i * t_max * d + p.mfcc.len()].copy_from_slice(&p.mfcc);
            let w = 1.0 / p.mfcc_frames.max(1) as f32;
            pool[i * t_max..i * t_max + p.mfcc_frames].fill(w);
        }
        let (n1, f1) = config.spectrogram_shape(false);
        let (n2, f2) = config.spectrogram_shape(true);
        let narrow: Vec<f32> = items
            .iter()
            .flat_map(|p| p.narrow.iter().copied())
            .collect();
        let wide: Vec<f32> = items.iter().flat_map(|p| p.wide.iter().copied()).collect();
        ModelInput {
            mfcc: Tensor::from_data(TensorData::new(mfcc, [b, t_max, d]), device),
            mfcc_pool: Tensor::from_data(TensorData::new(pool, [b, t_max, 1]), device),
            mel_narrow: Tensor::from_data(TensorData::new(narrow, [b, 1, n1, f1]), device),
            mel_wide: Tensor::from_data(TensorData::new(wide, [b, 1, n2, f2]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelKind;
    use crate::config::{MfccStandardisation, UtteranceMean};
    use duet_dsp::{FeatureConfig, FeaturePlan, Preset};

    /// The paper preset's features of 1.5 s of a synthetic voice.
    fn voice_features() -> Features {
        let audio = crate::calibrate::synthetic_voice(1.5, 150.0, 4.0, 7);
        FeaturePlan::new(&FeatureConfig::paper())
            .compute(&audio)
            .unwrap()
    }

    /// A model's MFCC standardisation reaches the prepared frames (the one path of `train`,
    /// `duet predict` and the page), and only the MFCC.
    #[test]
    fn prepare_standardises_the_mfcc_when_the_model_says_so() {
        let features = voice_features();
        let mut config = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        let plain = prepare(&features, &config).unwrap();
        let d = config.mfcc_dim;
        config.mfcc_standardisation =
            MfccStandardisation::fit(features.mfcc.data.chunks_exact(d), d);
        let z = prepare(&features, &config).unwrap();
        assert_eq!(
            (z.narrow == plain.narrow, z.wide == plain.wide),
            (true, true)
        );
        // With its own statistics every value's mean is 0 and every varying one's std 1.
        let frames = z.mfcc_frames as f64;
        for j in 0..d {
            let col = z.mfcc.iter().skip(j).step_by(d).map(|&x| x as f64);
            let mean = col.clone().sum::<f64>() / frames;
            let var = col.map(|x| (x - mean).powi(2)).sum::<f64>() / frames;
            assert!(mean.abs() < 1e-4, "value {j}: mean {mean}");
            assert!((var - 1.0).abs() < 1e-3, "value {j}: variance {var}");
        }
        assert_ne!(z.mfcc, plain.mfcc);
    }

    /// A model's per-utterance mean reaches the prepared inputs it names and no other: afterwards
    /// each centred MFCC value and spectrogram band averages 0 over the utterance, and adding a
    /// constant to a band's log power (a microphone's gain at that frequency) changes nothing.
    #[test]
    fn prepare_centres_what_the_model_names() {
        let features = voice_features();
        let mut config = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        let plain = prepare(&features, &config).unwrap();
        let d = config.mfcc_dim;
        // Value j of every frame (MFCC), and band b's run of frames (spectrogram).
        let mean = |x: &mut dyn Iterator<Item = &f32>| {
            let (sum, n) = x.fold((0.0f64, 0usize), |(s, n), &v| (s + v as f64, n + 1));
            sum / n as f64
        };
        for u in [
            UtteranceMean::Mfcc,
            UtteranceMean::Spectrograms,
            UtteranceMean::Both,
        ] {
            config.utterance_mean = Some(u);
            let c = prepare(&features, &config).unwrap();
            assert_eq!(c.mfcc == plain.mfcc, !u.mfcc(), "{u:?}: MFCC");
            assert_eq!(c.narrow == plain.narrow, !u.spectrograms(), "{u:?}: narrow");
            assert_eq!(c.wide == plain.wide, !u.spectrograms(), "{u:?}: wide");
            if u.mfcc() {
                for j in 0..d {
                    let m = mean(&mut c.mfcc.iter().skip(j).step_by(d));
                    assert!(m.abs() < 1e-4, "{u:?}: MFCC value {j} mean {m}");
                }
            }
            if u.spectrograms() {
                for (name, v, wide) in [("narrow", &c.narrow, false), ("wide", &c.wide, true)] {
                    let (bands, frames) = config.spectrogram_shape(wide);
                    for b in 0..bands {
                        let m = mean(&mut v[b * frames..(b + 1) * frames].iter());
                        assert!(m.abs() < 1e-3, "{u:?}: {name} band {b} mean {m}");
                    }
                }
            }
        }
        // A 6 dB boost of one narrow band (a tilted microphone) leaves the centred spectrogram as
        // it was, where the plain one moves by 6 dB.
        let mut tilted = features.clone();
        let n = tilted.mel_narrow.n_frames;
        for x in &mut tilted.mel_narrow.data[5 * n..6 * n] {
            *x *= 10f32.powf(0.6);
        }
        let a = prepare(&features, &config).unwrap();
        let b = prepare(&tilted, &config).unwrap();
        let diff = a
            .narrow
            .iter()
            .zip(&b.narrow)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "centred spectrogram moved by {diff} dB");
        config.utterance_mean = None;
        let a = prepare(&features, &config).unwrap();
        let b = prepare(&tilted, &config).unwrap();
        let frames = config.resize.narrow_frames;
        for (i, (x, y)) in a.narrow.iter().zip(&b.narrow).enumerate() {
            let want = if i / frames == 5 { 6.0 } else { 0.0 };
            assert!(
                (y - x - want).abs() < 1e-2,
                "plain value {i} moved by {}",
                y - x
            );
        }
    }

    /// A model's silence trim reaches the prepared inputs: the voice with a second of room noise
    /// before and after it prepares as the voice with 0.3 s does (about the same MFCC frames and
    /// resized spectrograms), where without the trim the silence is half the input; the
    /// speech-to-noise estimate still reads the whole recording.
    #[test]
    fn prepare_cuts_the_silence_when_the_model_says_so() {
        let voice = crate::calibrate::synthetic_voice(1.5, 150.0, 4.0, 7);
        // Room noise 60 dB under the voice, alone for `n` samples on each side.
        let padded = |n: usize| -> Vec<f32> {
            let mut rng = crate::rng::SplitMix64::new(3);
            let mut x: Vec<f32> = (0..n).map(|_| 1e-4 * rng.normal() as f32).collect();
            x.extend(voice.iter().map(|v| v + 1e-4 * rng.normal() as f32));
            x.extend((0..n).map(|_| 1e-4 * rng.normal() as f32));
            x
        };
        let (short, long) = (padded(4800), padded(16000));
        let mut plan = FeaturePlan::new(&FeatureConfig::paper());
        let (short_f, long_f) = (plan.compute(&short).unwrap(), plan.compute(&long).unwrap());
        let mut config = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        let plain = prepare(&long_f, &config).unwrap();
        config.silence_trim = Some(duet_dsp::SilenceTrim::speech());
        let a = prepare(&short_f, &config).unwrap();
        let b = prepare(&long_f, &config).unwrap();
        assert_eq!(plain.mfcc_frames, 1 + (long.len() - 400) / 160);
        assert!(
            b.mfcc_frames.abs_diff(a.mfcc_frames) <= 8 && b.mfcc_frames < plain.mfcc_frames * 2 / 3,
            "trimmed {} frames (0.3 s of room: {}, untrimmed {})",
            b.mfcc_frames,
            a.mfcc_frames,
            plain.mfcc_frames
        );
        assert_eq!(b.speech_to_noise_db, plain.speech_to_noise_db);
        // The resized spectrograms: the voice fills them however long the room around it.
        let mean_db = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let (ma, mb, mp) = (mean_db(&a.wide), mean_db(&b.wide), mean_db(&plain.wide));
        assert!(
            (ma - mb).abs() < 1.5 && (mp - mb).abs() > 10.0,
            "mean dB {ma}, {mb}, untrimmed {mp}"
        );
    }
}
