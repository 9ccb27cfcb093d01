//! `ModelConfig`: everything that fixes a model's shape, stored as JSON in the weights file
//! (docs/weights.md §2). Every number the paper fixes is a named field citing its section.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use duet_dsp::{FeatureConfig, Preset};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Version of the weights format this code writes; readers refuse newer files.
pub const FORMAT_VERSION: u32 = 1;

/// The classes of the paper's 4-class IEMOCAP task (paper §2.1), in logit order.
pub const DEFAULT_CLASSES: [&str; 4] = ["angry", "happy", "neutral", "sad"];

/// The eight models of the paper's Table 1 (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelKind {
    /// Base 1: MLSTM, the LSTM over MFCC features (§2.3.2).
    #[serde(rename = "base1")]
    Base1,
    /// Base 2: CNN + LSTM over the narrow spectrogram S1.
    #[serde(rename = "base2")]
    Base2,
    /// Base 3: CNN + LSTM over the wide spectrogram S2.
    #[serde(rename = "base3")]
    Base3,
    /// Base 4: Base 2 + Base 3, logits averaged.
    #[serde(rename = "base4")]
    Base4,
    /// Base 5: Base 1 + Base 4.
    #[serde(rename = "base5")]
    Base5,
    /// Base 6: Base 1 + Base 2.
    #[serde(rename = "base6")]
    Base6,
    /// MDS-LSTM: CNNs on S1 and S2, alignment, DS-LSTM (§2.3.3-2.3.4).
    #[serde(rename = "ds-lstm")]
    DsLstm,
    /// The dual-level model MLSTM + MDS-LSTM (§2.3.1).
    #[serde(rename = "dual")]
    Dual,
}

impl ModelKind {
    /// Every kind, in paper Table 1's order.
    pub const ALL: [ModelKind; 8] = [
        ModelKind::Base1,
        ModelKind::Base2,
        ModelKind::Base3,
        ModelKind::Base4,
        ModelKind::Base5,
        ModelKind::Base6,
        ModelKind::DsLstm,
        ModelKind::Dual,
    ];

    /// The kind's name in files and on the command line (`dual`, `base1`...).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Base1 => "base1",
            ModelKind::Base2 => "base2",
            ModelKind::Base3 => "base3",
            ModelKind::Base4 => "base4",
            ModelKind::Base5 => "base5",
            ModelKind::Base6 => "base6",
            ModelKind::DsLstm => "ds-lstm",
            ModelKind::Dual => "dual",
        }
    }

    /// What the paper's Table 1 calls it.
    pub fn description(self) -> &'static str {
        match self {
            ModelKind::Base1 => "Base 1: MLSTM (LSTM on MFCC)",
            ModelKind::Base2 => "Base 2: CNN+LSTM on the narrow spectrogram",
            ModelKind::Base3 => "Base 3: CNN+LSTM on the wide spectrogram",
            ModelKind::Base4 => "Base 4: Base 2 + Base 3",
            ModelKind::Base5 => "Base 5: Base 1 + Base 4",
            ModelKind::Base6 => "Base 6: Base 1 + Base 2",
            ModelKind::DsLstm => "MDS-LSTM (CNNs + dual-sequence LSTM)",
            ModelKind::Dual => "MLSTM + MDS-LSTM (dual-level)",
        }
    }

    /// The branches and their fusion weights (docs/weights.md §6). Base 5's members are Base 1 and
    /// Base 4, whose own members are averaged: hence 0.5 / 0.25 / 0.25.
    pub fn branch_weights(self) -> Vec<(Branch, f32)> {
        use Branch::*;
        match self {
            ModelKind::Base1 => vec![(Mfcc, 1.0)],
            ModelKind::Base2 => vec![(Narrow, 1.0)],
            ModelKind::Base3 => vec![(Wide, 1.0)],
            ModelKind::Base4 => vec![(Narrow, 0.5), (Wide, 0.5)],
            ModelKind::Base5 => vec![(Mfcc, 0.5), (Narrow, 0.25), (Wide, 0.25)],
            ModelKind::Base6 => vec![(Mfcc, 0.5), (Narrow, 0.5)],
            ModelKind::DsLstm => vec![(Ds, 1.0)],
            ModelKind::Dual => vec![(Mfcc, 0.5), (Ds, 0.5)],
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ModelError::Config {
                field: "kind".into(),
                message: format!(
                    "unknown model kind `{s}` (known: {})",
                    ModelKind::ALL.map(|k| k.name()).join(", ")
                ),
            })
    }
}

/// A branch of a combined model: one network from features to logits (docs/weights.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    /// MLSTM: LSTM over the MFCC frames (§2.3.2).
    Mfcc,
    /// CNN + LSTM over S1 (Base 2).
    Narrow,
    /// CNN + LSTM over S2 (Base 3).
    Wide,
    /// MDS-LSTM (§2.3.3-2.3.4).
    Ds,
}

impl Branch {
    /// The branch's name in tensor names and reports (`mfcc`, `narrow`, `wide`, `ds`).
    pub fn name(self) -> &'static str {
        match self {
            Branch::Mfcc => "mfcc",
            Branch::Narrow => "narrow",
            Branch::Wide => "wide",
            Branch::Ds => "ds",
        }
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the narrow sequence (T1 ≈ 2·T2 steps) is brought to the wide one's length (§2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alignment {
    /// The paper: average adjacent pairs, x'_i = (x_2i + x_2i+1) / 2.
    Pairs,
    /// The authors' code: 3-frame windows with stride 2, x'_i = mean(x_2i .. x_2i+2).
    Triples,
}

/// The two-stage CNN applied to each spectrogram (§2.3.3, §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// Output channels of the two conv layers: 64 then 16 (§3.1).
    pub channels: [usize; 2],
    /// Conv kernel [freq, time] for S1: 4x4 in the paper (§3.1), (4, 2) in the authors' code.
    pub kernel_narrow: [usize; 2],
    /// Conv kernel [freq, time] for S2: 4x4 in the paper (§3.1), (2, 4) in the authors' code.
    pub kernel_wide: [usize; 2],
    /// Zero padding [freq, time] for S1: none in the paper (§3.1), (k - 1) // 2 in the code.
    pub padding_narrow: [usize; 2],
    /// Zero padding [freq, time] for S2.
    pub padding_wide: [usize; 2],
    /// Max-pool kernel and stride: 2x2 with stride 2 (§3.1).
    pub pool: usize,
}

/// The longest resize target a model file may ask for, in frames: the spectrograms are resized to it
/// before the CNN whatever the clip's length, so it sets the memory of every analysis (the CNN's
/// first activation is 64 channels x bands x frames). The paper's targets are the corpus medians,
/// a few hundred frames (460 / 230 for IEMOCAP's ~3.7 s, §2.2); 8192 narrow frames are 65 s at the
/// paper's 8 ms hop.
pub const MAX_RESIZE_FRAMES: usize = 8192;

/// Nearest-neighbour resize targets along time (§2.2): the training corpus's median frame counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeConfig {
    /// Frames of the narrow spectrogram S1 after resizing.
    pub narrow_frames: usize,
    /// Frames of the wide spectrogram S2 after resizing.
    pub wide_frames: usize,
}

/// Where a model came from: filled in by `train`, shown by `duet info` and the page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// e.g. "synthetic acted-prosody corpus (duet synth-corpus, 480 utterances)" or "IEMOCAP".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
    /// e.g. "loso".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Cross-validation metrics, e.g. {"wa_mean": 0.61, "ua_mean": 0.6, ...}.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Free-form notes (seed, epochs, date, git revision, tool version...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

/// Everything that fixes a model's architecture and inputs (docs/weights.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Which of paper Table 1's models this is.
    pub kind: ModelKind,
    /// The feature preset the model was built for (docs/reference.md).
    pub preset: Preset,
    /// Class names in logit order (§2.1: angry, happy, neutral, sad).
    pub classes: Vec<String>,
    /// MFCC frame size: 13 MFCC + deltas + accelerations = 39 (§2.2).
    pub mfcc_dim: usize,
    /// Hidden units of every LSTM / DS-LSTM layer: 200 (§3.1).
    pub hidden: usize,
    /// Stacked recurrent layers: 2, single-directional (§2.3.2, §3.1).
    pub layers: usize,
    /// The CNN blocks' sizes (paper §3.1).
    pub cnn: CnnConfig,
    /// How the narrow and wide sequences are brought to one length (docs/weights.md §4.3).
    pub alignment: Alignment,
    /// Batch-norm epsilon (PyTorch's default, used by the authors).
    pub bn_eps: f64,
    /// Batch-norm momentum for running statistics while training (PyTorch's default).
    #[serde(default = "default_momentum")]
    pub bn_momentum: f64,
    /// The spectrogram lengths the CNN branches resize to (docs/weights.md §2).
    pub resize: ResizeConfig,
    /// The feature front end (duet-dsp) the model was trained with.
    pub features: FeatureConfig,
    /// Fusion weight of each branch (docs/weights.md §6).
    pub branch_weights: BTreeMap<Branch, f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where the weights came from (corpora, counts, figures); absent for an untrained model.
    pub provenance: Option<Provenance>,
    /// Temperature scaling of the fused probabilities (docs/weights.md §2); `None`: T = 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Standardisation of the MFCC frames before the MLSTM ([`MfccStandardisation`]); `None`
    /// (absent from the file): the frames enter as they are, as in the paper (§2.3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfcc_standardisation: Option<MfccStandardisation>,
    /// Which inputs lose their mean over the utterance ([`UtteranceMean`]); `None` (absent from the
    /// file): none, as in the paper (§2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterance_mean: Option<UtteranceMean>,
    /// Silence cut from both ends of each utterance before the model sees it
    /// ([`duet_dsp::SilenceTrim`]); `None` (absent from the file): the whole recording, as in the
    /// paper (§2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_trim: Option<duet_dsp::SilenceTrim>,
}

/// Per-utterance mean normalisation (docs/weights.md §2): each MFCC value, or each mel band of both
/// log spectrograms, or both, has its mean over the utterance's frames subtracted before the model
/// sees it. What a microphone's response and a speaker's vocal tract add to every frame alike is a
/// constant offset of the log spectrum and of the cepstra, and a constant is what this removes; it
/// needs nothing but the one utterance, so the page applies it to a single clip. Not in the paper.
/// Applied before [`MfccStandardisation`], whose statistics are then those of the centred frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UtteranceMean {
    /// The MFCC frames only.
    Mfcc,
    /// The two log mel spectrograms only, band by band.
    Spectrograms,
    /// Both.
    Both,
}

impl UtteranceMean {
    /// The names `train --utterance-mean` takes, in the order of the variants.
    pub const NAMES: [&str; 3] = ["mfcc", "spectrograms", "both"];

    /// The variant called `name` (one of [`Self::NAMES`]).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "mfcc" => Some(Self::Mfcc),
            "spectrograms" => Some(Self::Spectrograms),
            "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// What is centred, in words: "MFCC frames", "spectrograms' mel bands" or both.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Mfcc => "MFCC frames",
            Self::Spectrograms => "spectrograms' mel bands",
            Self::Both => "MFCC frames and spectrograms' mel bands",
        }
    }

    /// Whether the MFCC frames are centred.
    pub fn mfcc(self) -> bool {
        matches!(self, Self::Mfcc | Self::Both)
    }

    /// Whether the spectrograms are centred.
    pub fn spectrograms(self) -> bool {
        matches!(self, Self::Spectrograms | Self::Both)
    }

    /// Subtracts from `rows` (row-major, `width` values per row) each column's mean: for MFCC frames
    /// (a row per frame) pass the frame size, the mean is taken over frames. The mean is
    /// accumulated in f64 so that long utterances lose nothing to rounding.
    pub fn centre_columns(rows: &mut [f32], width: usize) {
        let n = rows.len() / width.max(1);
        if n == 0 {
            return;
        }
        let mut sum = vec![0.0f64; width];
        for row in rows.chunks_exact(width) {
            for (s, &x) in sum.iter_mut().zip(row) {
                *s += x as f64;
            }
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / n as f64) as f32).collect();
        for row in rows.chunks_exact_mut(width) {
            for (x, m) in row.iter_mut().zip(&mean) {
                *x -= m;
            }
        }
    }

    /// Subtracts from each row of `rows` (row-major, `width` values per row) its own mean: for a
    /// spectrogram stored [n_mels, frames], each band's mean over time.
    pub fn centre_rows(rows: &mut [f32], width: usize) {
        for row in rows.chunks_exact_mut(width.max(1)) {
            let mean = (row.iter().map(|&x| x as f64).sum::<f64>() / row.len() as f64) as f32;
            for x in row {
                *x -= mean;
            }
        }
    }
}

/// Per-value standardisation of the MFCC frames, `(x − mean) / std`, with the statistics of the
/// training utterances' frames (docs/weights.md §2). Not in the paper, whose MFCC frames (§2.2) reach
/// the MLSTM as they are: their log energy and low cepstra are tens in size and saturate its gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfccStandardisation {
    /// Mean of each of the `mfcc_dim` values of a frame.
    pub mean: Vec<f32>,
    /// Standard deviation of each value, positive.
    pub std: Vec<f32>,
}

impl MfccStandardisation {
    /// The smallest standard deviation kept: a value that never varies (digital silence, a constant
    /// coefficient) is divided by this instead of by zero.
    pub const MIN_STD: f32 = 1e-3;

    /// Statistics of `frames` (each `dim` values long), accumulated in f64; `None` without a frame.
    pub fn fit<'a>(frames: impl IntoIterator<Item = &'a [f32]>, dim: usize) -> Option<Self> {
        let mut n = 0usize;
        let mut sum = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for frame in frames {
            for ((s, q), &x) in sum.iter_mut().zip(&mut sq).zip(frame) {
                *s += x as f64;
                *q += x as f64 * x as f64;
            }
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n as f64 - m * m).max(0.0).sqrt() as f32).max(Self::MIN_STD))
            .collect();
        Some(MfccStandardisation {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        })
    }

    /// Standardises `frames` (row-major, `mean.len()` values per frame) in place.
    pub fn apply(&self, frames: &mut [f32]) {
        for frame in frames.chunks_exact_mut(self.mean.len()) {
            for ((x, m), s) in frame.iter_mut().zip(&self.mean).zip(&self.std) {
                *x = (*x - m) / s;
            }
        }
    }
}

/// How the model's probabilities are calibrated and when a result is uncertain (docs/weights.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The fused probabilities are softmax(logits / temperature) (temperature scaling, fitted by
    /// `train` on validation data, never on a test fold).
    pub temperature: f64,
    /// A result whose top probability is below this is shown as uncertain (the model card states it).
    pub uncertain_below: f64,
    /// A recording whose speech stands less than this many dB above its noise floor
    /// ([`duet_dsp::speech_to_noise_db`]) is shown as noisy. Absent: [`duet_dsp::NOISY_BELOW_DB`],
    /// where a model trained on quiet speech fails; one trained with noise keeps its answers further
    /// down (`train --noisy-below`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noisy_below_db: Option<f32>,
}

impl Calibration {
    /// The threshold `train` writes: a top probability under 0.5 means the other classes together
    /// are at least as likely.
    pub const UNCERTAIN_BELOW: f64 = 0.5;
}

fn default_momentum() -> f64 {
    0.1
}

impl ModelConfig {
    /// The temperature of the fused probabilities (1 without calibration).
    pub fn temperature(&self) -> f64 {
        self.calibration.as_ref().map_or(1.0, |c| c.temperature)
    }

    /// Below how many dB of speech over the noise floor this model's answers are shown as noisy.
    pub fn noisy_below_db(&self) -> f32 {
        self.calibration
            .as_ref()
            .and_then(|c| c.noisy_below_db)
            .unwrap_or(duet_dsp::NOISY_BELOW_DB)
    }

    /// The configuration of `kind` under `preset` (docs/reference.md §1), with the default resize
    /// targets: the authors' fixed 230 / 120 frames, and for the paper preset the same duration
    /// (~3.7 s, IEMOCAP's median utterance) at its hops: 460 / 230.
    pub fn new(kind: ModelKind, preset: Preset) -> Self {
        let features = FeatureConfig::for_preset(preset);
        let (cnn, alignment, resize) = match preset {
            Preset::Paper => (
                CnnConfig {
                    channels: [64, 16],
                    kernel_narrow: [4, 4],
                    kernel_wide: [4, 4],
                    padding_narrow: [0, 0],
                    padding_wide: [0, 0],
                    pool: 2,
                },
                Alignment::Pairs,
                ResizeConfig {
                    narrow_frames: 460,
                    wide_frames: 230,
                },
            ),
            Preset::Authors => (
                CnnConfig {
                    channels: [64, 16],
                    kernel_narrow: [4, 2],
                    kernel_wide: [2, 4],
                    padding_narrow: [1, 0],
                    padding_wide: [0, 1],
                    pool: 2,
                },
                Alignment::Triples,
                ResizeConfig {
                    narrow_frames: 230,
                    wide_frames: 120,
                },
            ),
        };
        ModelConfig {
            format_version: FORMAT_VERSION,
            kind,
            preset,
            classes: DEFAULT_CLASSES.iter().map(|s| s.to_string()).collect(),
            mfcc_dim: features.mfcc.n_features(),
            hidden: 200,
            layers: 2,
            cnn,
            alignment,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            resize,
            features,
            branch_weights: kind.branch_weights().into_iter().collect(),
            provenance: None,
            calibration: None,
            mfcc_standardisation: None,
            utterance_mean: None,
            silence_trim: None,
        }
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.classes.len()
    }

    /// The branches of this model, in a fixed order.
    pub fn branches(&self) -> Vec<Branch> {
        self.branch_weights.keys().copied().collect()
    }

    /// Whether the model has branch `b`.
    pub fn has(&self, b: Branch) -> bool {
        self.branch_weights.contains_key(&b)
    }

    /// Shape after one conv + pool stage along one axis (docs/weights.md §4.2).
    fn stage(n: usize, k: usize, p: usize, pool: usize) -> Option<usize> {
        let conv = (n + 2 * p).checked_sub(k)? + 1;
        let pooled = conv / pool;
        (pooled > 0).then_some(pooled)
    }

    /// Output (frequency, time) of the CNN for a spectrogram of `n_mels` x `frames`.
    pub fn cnn_out(&self, wide: bool, n_mels: usize, frames: usize) -> Option<(usize, usize)> {
        let c = &self.cnn;
        let (k, p) = if wide {
            (c.kernel_wide, c.padding_wide)
        } else {
            (c.kernel_narrow, c.padding_narrow)
        };
        let mut f = n_mels;
        let mut t = frames;
        for _ in 0..2 {
            f = Self::stage(f, k[0], p[0], c.pool)?;
            t = Self::stage(t, k[1], p[1], c.pool)?;
        }
        Some((f, t))
    }

    /// Feature size of the narrow (`wide = false`) or wide CNN's sequence: channels x frequency.
    pub fn seq_dim(&self, wide: bool) -> usize {
        let (n_mels, frames) = self.spectrogram_shape(wide);
        self.cnn_out(wide, n_mels, frames)
            .map(|(f, _)| self.cnn.channels[1] * f)
            .unwrap_or(0)
    }

    /// (mels, frames) of the resized spectrogram.
    pub fn spectrogram_shape(&self, wide: bool) -> (usize, usize) {
        if wide {
            (self.features.wide.n_mels, self.resize.wide_frames)
        } else {
            (self.features.narrow.n_mels, self.resize.narrow_frames)
        }
    }

    /// Steps T3 of the DS-LSTM after alignment (docs/weights.md §4.3).
    pub fn aligned_steps(&self) -> usize {
        let (n1, f1) = self.spectrogram_shape(false);
        let (n2, f2) = self.spectrogram_shape(true);
        let (Some((_, t1)), Some((_, t2))) =
            (self.cnn_out(false, n1, f1), self.cnn_out(true, n2, f2))
        else {
            return 0;
        };
        let aligned = match self.alignment {
            Alignment::Pairs => t1 / 2,
            Alignment::Triples => (t1 / 2).saturating_sub(1),
        };
        aligned.min(t2)
    }

    /// Checks that the configuration describes a model that can be built and run.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &str, message: String| {
            Err(ModelError::Config {
                field: field.into(),
                message,
            })
        };
        if let Some(c) = &self.calibration {
            if !(c.temperature.is_finite() && (0.01..=100.0).contains(&c.temperature)) {
                return bad(
                    "calibration.temperature",
                    format!("{} is not a temperature in 0.01..100", c.temperature),
                );
            }
            if !(0.0..=1.0).contains(&c.uncertain_below) {
                return bad(
                    "calibration.uncertain_below",
                    format!("{} is not a probability", c.uncertain_below),
                );
            }
            if let Some(db) = c.noisy_below_db
                && !(0.0..=100.0).contains(&db)
            {
                return bad(
                    "calibration.noisy_below_db",
                    format!("{db} is not a threshold in 0..100 dB"),
                );
            }
        }
        if let Some(t) = &self.silence_trim
            && let Err(e) = t.validate()
        {
            return bad("silence_trim", e);
        }
        if let Some(z) = &self.mfcc_standardisation {
            if z.mean.len() != self.mfcc_dim || z.std.len() != self.mfcc_dim {
                return bad(
                    "mfcc_standardisation",
                    format!(
                        "has {} means and {} standard deviations for {} MFCC values per frame",
                        z.mean.len(),
                        z.std.len(),
                        self.mfcc_dim
                    ),
                );
            }
            if let Some(m) = z.mean.iter().find(|m| !m.is_finite()) {
                return bad(
                    "mfcc_standardisation.mean",
                    format!("{m} is not a finite mean"),
                );
            }
            if let Some(s) = z
                .std
                .iter()
                .find(|s| !(s.is_finite() && **s >= MfccStandardisation::MIN_STD))
            {
                return bad(
                    "mfcc_standardisation.std",
                    format!(
                        "{s} is not a standard deviation of at least {}",
                        MfccStandardisation::MIN_STD
                    ),
                );
            }
        }
        if self.format_version > FORMAT_VERSION {
            return bad(
                "format_version",
                format!(
                    "the file is format version {} but this Duet reads up to version {FORMAT_VERSION}: \
                     upgrade Duet",
                    self.format_version
                ),
            );
        }
        if self.classes.len() < 2 {
            return bad(
                "classes",
                format!("needs at least 2 classes, has {}", self.classes.len()),
            );
        }
        if self.hidden == 0 || self.layers == 0 {
            return bad("hidden", "hidden and layers must be positive".into());
        }
        if self.cnn.pool == 0 || self.cnn.channels.contains(&0) {
            return bad("cnn", "pool and channels must be positive".into());
        }
        // The front end is planned from these numbers for every analysis: checked here, at load,
        // so that a bad file is refused before anything is computed or allocated from them.
        if let Err(e) = self.features.validate() {
            return bad("features", e.to_string());
        }
        if self.mfcc_dim != self.features.mfcc.n_features() {
            return bad(
                "mfcc_dim",
                format!(
                    "{} does not match the feature config's {} MFCC values per frame",
                    self.mfcc_dim,
                    self.features.mfcc.n_features()
                ),
            );
        }
        if self.features.preset != self.preset {
            return bad(
                "features.preset",
                format!(
                    "the model's preset is `{}` but its feature config is `{}`",
                    self.preset.name(),
                    self.features.preset.name()
                ),
            );
        }
        let expected = self.kind.branch_weights();
        if self.branch_weights.len() != expected.len()
            || expected
                .iter()
                .any(|(b, _)| !self.branch_weights.contains_key(b))
        {
            return bad(
                "branch_weights",
                format!(
                    "kind `{}` has branches {:?}, the file lists {:?}",
                    self.kind,
                    expected.iter().map(|(b, _)| b.name()).collect::<Vec<_>>(),
                    self.branch_weights
                        .keys()
                        .map(|b| b.name())
                        .collect::<Vec<_>>()
                ),
            );
        }
        for (field, frames) in [
            ("resize.narrow_frames", self.resize.narrow_frames),
            ("resize.wide_frames", self.resize.wide_frames),
        ] {
            if frames > MAX_RESIZE_FRAMES {
                return bad(
                    field,
                    format!(
                        "{frames} frames is more than the {MAX_RESIZE_FRAMES} a model may resize to"
                    ),
                );
            }
        }
        for wide in [false, true] {
            let needed = match wide {
                false => self.has(Branch::Narrow) || self.has(Branch::Ds),
                true => self.has(Branch::Wide) || self.has(Branch::Ds),
            };
            let (n_mels, frames) = self.spectrogram_shape(wide);
            if needed && self.cnn_out(wide, n_mels, frames).is_none() {
                return bad(
                    if wide {
                        "resize.wide_frames"
                    } else {
                        "resize.narrow_frames"
                    },
                    format!("{n_mels} mels x {frames} frames is too small for the CNN"),
                );
            }
        }
        if self.has(Branch::Ds) && self.aligned_steps() == 0 {
            return bad(
                "resize",
                "the DS-LSTM would get 0 steps after alignment: resize targets too small".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_shapes_match_reference() {
        // docs/reference.md §1: x = 16·31 = 496, y = 16·63 = 1008.
        let c = ModelConfig::new(ModelKind::Dual, Preset::Authors);
        assert_eq!(c.seq_dim(false), 496);
        assert_eq!(c.seq_dim(true), 1008);
        c.validate().unwrap();
    }

    #[test]
    fn paper_shapes() {
        let c = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        assert_eq!(c.seq_dim(false), 16 * 13);
        assert_eq!(c.seq_dim(true), 16 * 29);
        // T1: 460 -> 457 -> 228 -> 225 -> 112; T2: 230 -> 227 -> 113 -> 110 -> 55; pairs: 56.
        assert_eq!(c.aligned_steps(), 55);
        c.validate().unwrap();
    }

    #[test]
    fn mfcc_standardisation_fits_applies_and_is_validated() {
        // Two values per frame: the first varies (mean 2, std 2), the second never does.
        let frames = [[0.0f32, 5.0], [4.0, 5.0], [0.0, 5.0], [4.0, 5.0]];
        let z = MfccStandardisation::fit(frames.iter().map(|f| &f[..]), 2).unwrap();
        assert_eq!(z.mean, vec![2.0, 5.0]);
        assert_eq!(z.std, vec![2.0, MfccStandardisation::MIN_STD]);
        let mut x = vec![6.0, 5.0, -2.0, 5.0];
        z.apply(&mut x);
        assert_eq!(x, vec![2.0, 0.0, -2.0, 0.0]);
        assert!(MfccStandardisation::fit(std::iter::empty(), 2).is_none());

        let mut c = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        let fit = |std: f32| MfccStandardisation {
            mean: vec![0.0; c.mfcc_dim],
            std: vec![std; c.mfcc_dim],
        };
        let with = |z: MfccStandardisation| ModelConfig {
            mfcc_standardisation: Some(z),
            ..c.clone()
        };
        with(fit(1.0)).validate().unwrap();
        for (z, field) in [
            (fit(0.0), "mfcc_standardisation.std"),
            (fit(f32::NAN), "mfcc_standardisation.std"),
            (
                MfccStandardisation {
                    mean: vec![f32::INFINITY; c.mfcc_dim],
                    std: vec![1.0; c.mfcc_dim],
                },
                "mfcc_standardisation.mean",
            ),
            (
                MfccStandardisation {
                    mean: vec![0.0; 3],
                    std: vec![1.0; 3],
                },
                "mfcc_standardisation",
            ),
        ] {
            match with(z).validate() {
                Err(ModelError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        // Files without the field (every model written before it) still read.
        c.mfcc_standardisation = None;
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("mfcc_standardisation"));
    }

    #[test]
    fn silence_trim_is_stored_and_validated() {
        let mut c = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        assert!(!serde_json::to_string(&c).unwrap().contains("silence_trim"));
        c.silence_trim = Some(duet_dsp::SilenceTrim::speech());
        let back: ModelConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.silence_trim, c.silence_trim);
        back.validate().unwrap();
        let speech = duet_dsp::SilenceTrim::speech();
        for (t, name) in [
            (
                duet_dsp::SilenceTrim {
                    below_db: f32::NAN,
                    ..speech
                },
                "below_db",
            ),
            (
                duet_dsp::SilenceTrim {
                    above_floor_db: -1.0,
                    ..speech
                },
                "above_floor_db",
            ),
            (
                duet_dsp::SilenceTrim {
                    margin_s: 1e9,
                    ..speech
                },
                "margin_s",
            ),
        ] {
            c.silence_trim = Some(t);
            match c.validate() {
                Err(ModelError::Config { field, message }) => {
                    assert_eq!(field, "silence_trim");
                    assert!(message.contains(name), "{message}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in ModelKind::ALL {
            assert_eq!(k.name().parse::<ModelKind>().unwrap(), k);
            let w: f32 = k.branch_weights().iter().map(|(_, w)| w).sum();
            assert!((w - 1.0).abs() < 1e-6);
        }
        assert!("base7".parse::<ModelKind>().is_err());
    }

    #[test]
    fn sizes_that_would_exhaust_memory_are_refused() {
        let mut c = ModelConfig::new(ModelKind::Base1, Preset::Paper);
        c.resize.narrow_frames = 1_000_000_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("resize.narrow_frames"), "{e}");
        let mut c = ModelConfig::new(ModelKind::Base1, Preset::Paper);
        c.features.narrow.n_mels = 10_000_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("n_mels 10000000"), "{e}");
        let mut c = ModelConfig::new(ModelKind::Base1, Preset::Paper);
        c.features.mfcc.delta_window = 1_000_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("delta_window"), "{e}");
        let mut c = ModelConfig::new(ModelKind::Base1, Preset::Paper);
        c.features.sample_rate = 8000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("features") && e.contains("8000 Hz"), "{e}");
        // The presets themselves stay valid at the limits' side.
        for preset in [Preset::Paper, Preset::Authors] {
            ModelConfig::new(ModelKind::Dual, preset)
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn newer_format_is_refused() {
        let mut c = ModelConfig::new(ModelKind::Base1, Preset::Paper);
        c.format_version = FORMAT_VERSION + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("format_version"), "{e}");
    }
}
