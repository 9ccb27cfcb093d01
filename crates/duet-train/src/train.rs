#![allow(missing_docs)] // Field names follow the paper and the report schema; the module doc explains them.
//! Training with honest cross-validation (issue: corpora, protocols and `train`).
//!
//! For each fold of the protocol: resize targets from the training part only (paper §2.2: the median
//! frame count), a fresh model, Adam (paper §3.1), one epoch after another; after each epoch the model
//! is evaluated on the fold's validation part (chosen from the training sessions) and the test part;
//! the epoch is SELECTED on validation UA — the test part influences nothing — unless
//! `select_on_test` reproduces the authors' habit (and the report marks it optimistic). Then a final
//! model is trained on all data for the median selected number of epochs and exported.
//!
//! Checkpoints are written after every epoch and when interrupted (between batches); resuming
//! restores the model, its batch-norm statistics, Adam's moments, the position in the epoch and the
//! history, and the per-epoch shuffles derive from (seed, fold, epoch), so on the CPU an interrupted
//! and resumed run ends with exactly the weights of an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::TensorData;
use duet_dsp::{Features, Preset};
use duet_model::Mode;
use duet_model::config::{MfccStandardisation, UtteranceMean};
use duet_model::input::{ModelInput, Prepared, model_features, prepare};
use duet_model::rng::SplitMix64;
use duet_model::weights::{self, Precision};
use duet_model::{DuetModel, ModelConfig, ModelKind, store::FileSource};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::adam::{Adam, AdamConfig};
use crate::cache::FeatureCache;
use duet_data::DataError;
use duet_data::corpus::{BadAudioReport, Corpus, OnBadAudio};
use duet_data::metrics::{self, Metrics};
use duet_data::protocol::{self, Fold, Protocol};

/// Everything that determines a training run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    pub kind: ModelKind,
    pub preset: Preset,
    pub protocol: Protocol,
    /// Epochs per fold.
    pub epochs: usize,
    pub batch: usize,
    /// Adam learning rate (paper §3.1: 1e-4).
    pub lr: f64,
    /// Multiply the learning rate by `lr_gamma` at these epochs (1-based; the authors' code: 10,
    /// 20, 30 with 0.5). Empty: constant (the paper).
    pub lr_milestones: Vec<usize>,
    pub lr_gamma: f64,
    pub seed: u64,
    /// Pick the best epoch on the test fold (the authors' code; optimistic, marked in the report).
    pub select_on_test: bool,
    pub on_bad_audio: OnBadAudio,
    /// Hidden units (paper §3.1: 200); smaller for quick experiments.
    pub hidden: usize,
    /// Train the final model on all data after cross-validation.
    pub final_model: bool,
    /// Only the first N folds (quick experiments; the report says so).
    pub max_folds: Option<usize>,
    /// Write model.safetensors with f16 matrices (half the size; probabilities move < 1e-3).
    #[serde(default)]
    pub f16: bool,
    /// Level normalisation of every utterance's features (duet_dsp::level); `None` in the paper.
    #[serde(default)]
    pub level: Option<duet_dsp::LevelNorm>,
    /// Notes copied into the model file's provenance (e.g. the weights' license).
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
    /// Augmented copies of each training utterance (crate::augment); 0: none.
    #[serde(default)]
    pub augment: usize,
    /// Mask frames and bands of each training utterance in every batch (crate::masking).
    #[serde(default)]
    pub spec_augment: bool,
    /// Standardise the MFCC frames with the training part's statistics (stored in the model file;
    /// duet_model::config::MfccStandardisation). Off in the paper.
    #[serde(default)]
    pub mfcc_standardise: bool,
    /// Report and export the mean of the weights after each of the last N epochs (batch-norm
    /// statistics included) instead of the epoch chosen on validation; 0: choose an epoch.
    #[serde(default)]
    pub average_last: usize,
    /// The model file's noisy threshold in dB (duet_model::Calibration::noisy_below_db); `None`:
    /// not stored (the default of duet_dsp::NOISY_BELOW_DB applies).
    #[serde(default)]
    pub noisy_below_db: Option<f32>,
    /// Adam's decoupled weight decay λ (crate::adam::AdamConfig::weight_decay); 0 in the paper.
    #[serde(default)]
    pub weight_decay: f64,
    /// Which inputs lose their mean over each utterance (stored in the model file;
    /// duet_model::config::UtteranceMean); `None` in the paper.
    #[serde(default)]
    pub utterance_mean: Option<UtteranceMean>,
    /// Silence cut from both ends of each utterance (stored in the model file).
    pub silence_trim: Option<duet_dsp::SilenceTrim>,
    /// Weigh each class's loss by N / (C · n_c) over the fold's training part (C the classes
    /// present), so that every class counts alike whatever its share (RAVDESS with calm merged:
    /// neutral 240, the others 160).
    #[serde(default)]
    pub balance_classes: bool,
}

impl TrainOptions {
    pub fn new(kind: ModelKind, preset: Preset) -> Self {
        TrainOptions {
            kind,
            preset,
            protocol: Protocol::Loso,
            epochs: 50,
            batch: 32,
            lr: 1e-4,
            lr_milestones: Vec::new(),
            lr_gamma: 0.5,
            seed: 0,
            select_on_test: false,
            on_bad_audio: OnBadAudio::Fail,
            hidden: 200,
            final_model: true,
            max_folds: None,
            f16: false,
            level: None,
            notes: BTreeMap::new(),
            augment: 0,
            spec_augment: false,
            mfcc_standardise: false,
            average_last: 0,
            noisy_below_db: None,
            weight_decay: 0.0,
            utterance_mean: None,
            silence_trim: None,
            balance_classes: false,
        }
    }

    /// The optimizer's settings: PyTorch's Adam defaults with this run's weight decay.
    fn adam_config(&self) -> AdamConfig {
        AdamConfig {
            weight_decay: self.weight_decay,
            ..AdamConfig::default()
        }
    }

    /// The feature front end of this run: the preset's, with the run's level normalisation.
    pub fn feature_config(&self) -> duet_dsp::FeatureConfig {
        let mut f = duet_dsp::FeatureConfig::for_preset(self.preset);
        f.level = self.level;
        f
    }

    /// The 0-based epoch from which the weights are averaged in a stage of `epochs` epochs, when
    /// they are.
    fn average_from(&self, epochs: usize) -> Option<usize> {
        (self.average_last > 0).then(|| epochs.saturating_sub(self.average_last))
    }

    fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self
            .lr_milestones
            .iter()
            .filter(|&&m| epoch + 1 > m)
            .count();
        self.lr * self.lr_gamma.powi(passed as i32)
    }
}

/// Metrics of one epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    /// NaN where the stage has no such part (the final model has neither), which JSON writes as
    /// null: read back as NaN, so that a checkpoint taken in the final stage resumes.
    #[serde(deserialize_with = "null_as_nan")]
    pub valid_wa: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub valid_ua: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub test_wa: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub test_ua: f64,
    pub seconds: f64,
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The outcome of one fold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldResult {
    pub name: String,
    pub description: String,
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    /// 1-based epoch whose model is reported.
    pub best_epoch: usize,
    /// "validation UA" or "test UA (optimistic)".
    pub selected_on: String,
    /// Test metrics of the selected epoch.
    pub metrics: Metrics,
    pub history: Vec<EpochRecord>,
    pub resize: duet_model::config::ResizeConfig,
    pub warnings: Vec<String>,
    pub seconds: f64,
    /// Temperature fitted on the validation part, and the test part's calibration error before
    /// and after it (`None` in runs from before calibration).
    #[serde(default)]
    pub calibration: Option<FoldCalibration>,
}

/// A fold's temperature scaling (fitted on validation) and its effect on the test part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FoldCalibration {
    /// The temperature minimising the validation NLL (1 when the fold has no validation part).
    pub temperature: f64,
    /// Expected calibration error (10 bins) of the test part at T = 1.
    pub ece_before: f64,
    /// The same at the fitted temperature.
    pub ece_after: f64,
}

/// Where a run stands: written with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    options: TrainOptions,
    /// Index of the fold in progress; `folds.len()` = the final model.
    fold: usize,
    /// 0-based epoch in progress.
    epoch: usize,
    /// Next batch of that epoch.
    batch: usize,
    /// Running sum and count of the epoch's training loss.
    loss_sum: f64,
    loss_count: usize,
    adam_step: u64,
    history: Vec<EpochRecord>,
    best_epoch: usize,
    /// -inf before the fold's first evaluation, which JSON writes as null.
    #[serde(deserialize_with = "null_as_neg_infinity")]
    best_score: f64,
    done: Vec<FoldResult>,
    fold_started: f64,
    elapsed_before: f64,
}

fn null_as_neg_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

/// Callbacks for progress display (the CLI draws bars; tests stay quiet).
pub trait Observer: Sync {
    fn features(&self, _done: usize, _total: usize) {}
    fn epoch_start(&self, _fold: &str, _epoch: usize, _epochs: usize, _batches: usize) {}
    fn batch(&self, _loss: f64) {}
    fn epoch_end(&self, _fold: &str, _record: &EpochRecord) {}
    fn message(&self, _text: &str) {}
}

/// An observer that shows nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// The outcome of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub folds: Vec<FoldResult>,
    pub summary: metrics::Summary,
    /// Epochs the final model was trained for (median of the folds' selected epochs).
    pub final_epochs: Option<usize>,
    pub final_resize: Option<duet_model::config::ResizeConfig>,
    pub model_path: Option<PathBuf>,
    pub bad_audio: BadAudioReport,
    pub interrupted: bool,
    pub seconds: f64,
    pub feature_seconds: f64,
    pub features_cached: bool,
    pub device: String,
}

/// How a run ended.
pub enum Outcome {
    Finished(Box<RunResult>),
    /// Stopped by the interrupt flag; a checkpoint was written.
    Interrupted {
        checkpoint: PathBuf,
    },
}

/// The run directory's files.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }
    /// A fold's selected model, kept for evaluating it on its own held-out speakers. A fold is
    /// named after its test session, which a manifest may spell with any characters: only
    /// letters, digits, `.`, `-` and `_` reach the file name.
    pub fn fold_model(&self, fold: &str) -> PathBuf {
        let safe: String = fold
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root
            .join("folds")
            .join(format!("{}.safetensors", safe.trim_start_matches('.')))
    }
    /// The feature cache of `config`: the recordings (`copy` 0) or augmented copy `copy`.
    fn features(&self, config: &duet_dsp::FeatureConfig, copy: usize) -> PathBuf {
        let level = if config.level.is_some() { "-level" } else { "" };
        let augmented = if copy > 0 {
            format!("-augmented{copy}")
        } else {
            String::new()
        };
        self.root.join(format!(
            "cache/features-{}{level}{augmented}.bin",
            config.preset.name()
        ))
    }
}

/// The trainer's view of one fold: which utterances, with what resize targets.
struct FoldData<'a> {
    name: String,
    config: ModelConfig,
    prepared: Vec<Option<Prepared>>,
    train: Vec<usize>,
    valid: Vec<usize>,
    test: Vec<usize>,
    corpus: &'a Corpus,
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]).div_ceil(2)
    }
}

/// The model configuration for a fold: resize targets from the training utterances only (paper
/// §2.2: the median frame count per spectrogram); the authors' preset uses their fixed targets.
pub fn fold_config(
    options: &TrainOptions,
    features: &[Option<Features>],
    train: &[usize],
) -> ModelConfig {
    let mut config = ModelConfig::new(options.kind, options.preset);
    config.hidden = options.hidden;
    config.features = options.feature_config();
    config.silence_trim = options.silence_trim;
    // What the model will see of each training utterance (its silence cut, where it is).
    let seen: Vec<Option<std::borrow::Cow<Features>>> = features
        .iter()
        .map(|f| f.as_ref().map(|f| model_features(f, &config)))
        .collect();
    let features = &seen;
    if options.preset == Preset::Paper {
        let frames = |wide: bool| {
            median(
                train
                    .iter()
                    .filter_map(|&i| features[i].as_ref())
                    .map(|f| {
                        if wide {
                            f.mel_wide.n_frames
                        } else {
                            f.mel_narrow.n_frames
                        }
                    })
                    .collect(),
            )
        };
        let (n, w) = (frames(false), frames(true));
        // The CNN needs some frames; very short corpora keep a floor (documented in the report).
        config.resize.narrow_frames = n.max(32);
        config.resize.wide_frames = w.max(16);
    }
    config.utterance_mean = options.utterance_mean;
    if options.mfcc_standardise {
        // The training utterances' frames only, as for the resize targets: nothing of the
        // validation or test speakers shapes the model. Centred first where the model centres
        // them, so that the statistics are those of the frames it will see.
        let d = config.mfcc_dim;
        let centre = options.utterance_mean.is_some_and(UtteranceMean::mfcc);
        let utterances: Vec<std::borrow::Cow<[f32]>> = train
            .iter()
            .filter_map(|&i| features[i].as_ref())
            .map(|f| {
                if centre {
                    let mut frames = f.mfcc.data.clone();
                    UtteranceMean::centre_columns(&mut frames, d);
                    frames.into()
                } else {
                    f.mfcc.data.as_slice().into()
                }
            })
            .collect();
        let frames = utterances.iter().flat_map(|u| u.chunks_exact(d));
        config.mfcc_standardisation = MfccStandardisation::fit(frames, d);
    }
    config
}

fn prepare_all(
    features: &[Option<Features>],
    config: &ModelConfig,
) -> Result<Vec<Option<Prepared>>, DataError> {
    features
        .par_iter()
        .map(|f| match f {
            Some(f) => prepare(f, config)
                .map(Some)
                .map_err(|e| DataError::Training(e.to_string())),
            None => Ok(None),
        })
        .collect()
}

/// Batches of `indices` for one epoch: shuffled by (seed, fold, epoch), grouped by MFCC length so
/// padding stays small (chunks of 8 batches sorted by length), batch order shuffled again.
fn epoch_batches(
    indices: &[usize],
    prepared: &[Option<Prepared>],
    batch: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| prepared[i].is_some())
        .collect();
    rng.shuffle(&mut order);
    let len = |i: &usize| prepared[*i].as_ref().map(|p| p.mfcc_frames).unwrap_or(0);
    let mut batches = Vec::new();
    for chunk in order.chunks(batch * 8) {
        let mut c = chunk.to_vec();
        c.sort_by_key(len);
        batches.extend(c.chunks(batch).map(|b| b.to_vec()));
    }
    rng.shuffle(&mut batches);
    // Batch norm needs two examples: a lone last example joins the previous batch.
    if batches.len() > 1 && batches.last().is_some_and(|b| b.len() == 1) {
        let last = batches.pop().unwrap_or_default();
        if let Some(prev) = batches.last_mut() {
            prev.extend(last);
        }
    }
    batches
}

/// One-hot targets, each row scaled by its class's weight (all 1 when `class_weights` is empty):
/// the cross-entropy of docs/weights.md §6 then weighs each utterance by its class's weight.
fn one_hot(labels: &[usize], classes: usize, class_weights: &[f32], device: &Device) -> Tensor<2> {
    let mut data = vec![0.0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        data[i * classes + l] = class_weights.get(l).copied().unwrap_or(1.0);
    }
    Tensor::from_data(TensorData::new(data, [labels.len(), classes]), device)
}

/// Class weights N / (C · n_c) over `labels`, C the classes present (an absent one gets 0: it has
/// no loss to weigh): the mean weight over the utterances is 1, so the loss keeps its scale.
pub fn balanced_class_weights(labels: impl Iterator<Item = usize>, classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    let mut n = 0usize;
    for l in labels {
        counts[l] += 1;
        n += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count();
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f32 / (present * c) as f32
            }
        })
        .collect()
}

/// One optimisation step on one batch: the training-mode forward (batch statistics; running
/// statistics updated with the configuration's momentum), the fused loss of docs/weights.md §6,
/// backward, one Adam update at learning rate `lr`. Returns the updated model and the batch's loss
/// (before the update; the caller decides what a non-finite one means). `device`: an autodiff one.
/// `class_weights`: each class's weight in the loss ([`balanced_class_weights`]); empty: all 1.
pub fn train_step(
    model: DuetModel,
    adam: &mut Adam,
    batch: &[&Prepared],
    labels: &[usize],
    class_weights: &[f32],
    lr: f64,
    device: &Device,
) -> Result<(DuetModel, f64), DataError> {
    let config = &model.config;
    let input = ModelInput::batch(batch, config, device);
    let out = model.forward(
        &input,
        Mode::Train {
            momentum: config.bn_momentum,
        },
    );
    let loss = out.loss(
        config,
        one_hot(labels, config.n_classes(), class_weights, device),
    );
    let grads = loss.backward();
    let loss_value: f64 = loss
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .map_err(|e| DataError::Training(format!("reading the loss: {e:?}")))?[0];
    Ok((adam.step(model, &grads, lr), loss_value))
}

/// The first of a row's maxima, as burn's argmax.
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (k, v)| if *v > row[best] { k } else { best })
}

/// Fused logits of `indices` (inference mode, batches of 64), checked finite.
pub fn logits_of(
    model: &DuetModel,
    prepared: &[Option<Prepared>],
    indices: &[usize],
    device: &Device,
) -> Result<Vec<Vec<f32>>, DataError> {
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(64) {
        let refs: Vec<&Prepared> = chunk.iter().filter_map(|&i| prepared[i].as_ref()).collect();
        if refs.is_empty() {
            continue;
        }
        let input = ModelInput::batch(&refs, &model.config, device);
        let logits = model.forward(&input, Mode::Infer).logits;
        let classes = logits.dims()[1];
        let data = logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| DataError::Training(format!("reading predictions: {e:?}")))?;
        duet_model::predict::check_finite(&data, classes, "logit", device)
            .map_err(|e| DataError::Training(e.to_string()))?;
        out.extend(data.chunks(classes).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// The true labels and the logits of those of `indices` that have features.
fn scored(
    model: &DuetModel,
    data: &FoldData<'_>,
    indices: &[usize],
    device: &Device,
) -> Result<(Vec<usize>, Vec<Vec<f32>>), DataError> {
    let kept: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| data.prepared[i].is_some())
        .collect();
    let truth = kept
        .iter()
        .map(|&i| data.corpus.utterances[i].label)
        .collect();
    Ok((truth, logits_of(model, &data.prepared, &kept, device)?))
}

fn metrics_of(data: &FoldData<'_>, truth: &[usize], logits: &[Vec<f32>]) -> Metrics {
    let pred: Vec<usize> = logits.iter().map(|row| argmax(row)).collect();
    metrics::compute(truth, &pred, data.corpus.classes.len())
}

fn evaluate(
    model: &DuetModel,
    data: &FoldData<'_>,
    indices: &[usize],
    device: &Device,
) -> Result<Metrics, DataError> {
    let (truth, logits) = scored(model, data, indices, device)?;
    Ok(metrics_of(data, &truth, &logits))
}

/// The selected model's test metrics, and its temperature fitted on the validation part with the
/// test part's ECE before and after it (one forward per part).
fn test_fold(
    model: &DuetModel,
    data: &FoldData<'_>,
    device: &Device,
) -> Result<(Metrics, FoldCalibration), DataError> {
    let (valid_truth, valid_logits) = scored(model, data, &data.valid, device)?;
    let temperature = metrics::fit_temperature(&valid_logits, &valid_truth);
    let (truth, logits) = scored(model, data, &data.test, device)?;
    let ece_at = |t: f64| {
        let probs: Vec<Vec<f32>> = logits.iter().map(|z| metrics::softmax_t(z, t)).collect();
        metrics::ece(&probs, &truth, 10)
    };
    let calibration = FoldCalibration {
        temperature,
        ece_before: ece_at(1.0),
        ece_after: ece_at(temperature),
    };
    Ok((metrics_of(data, &truth, &logits), calibration))
}

/// What the folds' calibration adds up to.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationSummary {
    /// The final model's temperature: the median of the folds' (each fitted on its validation
    /// part; the final model, trained on everything, has no held-out data of its own).
    pub temperature: f64,
    /// Mean over folds of the test parts' ECE at T = 1 and at the fold's temperature.
    pub ece_before_mean: f64,
    pub ece_after_mean: f64,
}

/// The summary of the folds' calibration; `None` when no fold was calibrated.
pub fn calibration_summary(folds: &[FoldResult]) -> Option<CalibrationSummary> {
    let cal: Vec<&FoldCalibration> = folds
        .iter()
        .filter_map(|f| f.calibration.as_ref())
        .collect();
    if cal.is_empty() {
        return None;
    }
    let mut t: Vec<f64> = cal.iter().map(|c| c.temperature).collect();
    t.sort_by(f64::total_cmp);
    let n = t.len();
    let mean = |f: fn(&FoldCalibration) -> f64| cal.iter().map(|c| f(c)).sum::<f64>() / n as f64;
    Some(CalibrationSummary {
        temperature: if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        },
        ece_before_mean: mean(|c| c.ece_before),
        ece_after_mean: mean(|c| c.ece_after),
    })
}

/// The state as a checkpoint stores it: the fold's time so far includes this process's part, so a
/// resumed fold reports the time of all its parts.
/// The features of a run: every utterance's, then each augmented copy's (copy c of utterance i is
/// feature index c·n + i, training only), from the run's cache or computed once.
struct RunFeatures {
    features: Vec<Option<Features>>,
    bad_audio: BadAudioReport,
    /// Whether the plain features came from the cache.
    cached: bool,
    seconds: f64,
}

fn run_features(
    corpus: &Corpus,
    options: &TrainOptions,
    run_dir: &RunDir,
    observer: &dyn Observer,
) -> Result<RunFeatures, DataError> {
    // Once per corpus and preset, shared by every fold and epoch.
    let feature_config = options.feature_config();
    let t_feat = Instant::now();
    let (cache, cached) = FeatureCache::load_or_compute(
        &run_dir.features(&feature_config, 0),
        corpus,
        &feature_config,
        options.on_bad_audio,
        &|d, t| observer.features(d, t),
    )?;
    let augment = crate::augment::Augment {
        copies: options.augment,
        seed: options.seed,
    };
    let mut copies = Vec::with_capacity(options.augment);
    for copy in 1..=options.augment {
        observer.message(&format!(
            "augmented copy {copy} of {}: gain, noise, speed and reverb",
            options.augment
        ));
        copies.push(FeatureCache::load_or_compute_augmented(
            &run_dir.features(&feature_config, copy),
            corpus,
            &feature_config,
            &cache,
            &augment,
            copy,
            &|d, t| observer.features(d, t),
        )?);
    }
    let FeatureCache {
        mut features,
        bad_audio,
    } = cache;
    features.extend(copies.into_iter().flatten());
    if !bad_audio.skipped.is_empty() {
        observer.message(&format!(
            "skipped {} of {} utterances whose audio could not be decoded (--on-bad-audio skip)",
            bad_audio.skipped.len(),
            corpus.utterances.len()
        ));
    }
    Ok(RunFeatures {
        features,
        bad_audio,
        cached,
        seconds: t_feat.elapsed().as_secs_f64(),
    })
}

/// The seed of fold (or final stage) `fold`'s initial weights.
fn fold_seed(options: &TrainOptions, fold: usize) -> u64 {
    options.seed.wrapping_mul(1000).wrapping_add(fold as u64)
}

/// Whether a fold's epoch is selected on its test part (`--select-on-test`, or no validation part).
fn selects_on_test(options: &TrainOptions, data: &FoldData<'_>) -> bool {
    options.select_on_test || data.valid.is_empty()
}

/// The final model's record: corpora and counts (not paths: the file travels to other machines),
/// protocol, cross-validation figures and the recipe.
fn final_provenance(
    corpus: &Corpus,
    options: &TrainOptions,
    state: &RunState,
    epochs: usize,
) -> duet_model::config::Provenance {
    let mut prov = duet_model::config::Provenance {
        corpus: Some(corpus.corpora_summary()),
        protocol: Some(format!(
            "{}{}",
            options.protocol,
            if options.select_on_test {
                " (epochs selected on the test folds: optimistic)"
            } else {
                ""
            }
        )),
        ..Default::default()
    };
    let summary = cv_summary(state);
    prov.metrics.insert("cv_wa_mean".into(), summary.wa.mean);
    prov.metrics.insert("cv_wa_std".into(), summary.wa.std);
    prov.metrics.insert("cv_ua_mean".into(), summary.ua.mean);
    prov.metrics.insert("cv_ua_std".into(), summary.ua.std);
    prov.metrics
        .insert("cv_macro_f1_mean".into(), summary.macro_f1.mean);
    prov.notes
        .insert("folds".into(), state.done.len().to_string());
    if let Some(c) = calibration_summary(&state.done) {
        prov.metrics
            .insert("cv_ece_before_mean".into(), c.ece_before_mean);
        prov.metrics
            .insert("cv_ece_after_mean".into(), c.ece_after_mean);
    }
    recipe_notes(options, epochs, &mut prov);
    prov
}

/// A fold's model's record: the corpora, the fold (its test speakers) and its own test figures.
fn fold_provenance(
    corpus: &Corpus,
    options: &TrainOptions,
    fold: &FoldResult,
    epochs: usize,
) -> duet_model::config::Provenance {
    let mut prov = duet_model::config::Provenance {
        corpus: Some(corpus.corpora_summary()),
        protocol: Some(format!(
            "{}, fold {} only: {}",
            options.protocol, fold.name, fold.description
        )),
        ..Default::default()
    };
    prov.metrics.insert("test_wa".into(), fold.metrics.wa);
    prov.metrics.insert("test_ua".into(), fold.metrics.ua);
    prov.metrics
        .insert("test_macro_f1".into(), fold.metrics.macro_f1);
    if let Some(c) = &fold.calibration {
        prov.metrics.insert("test_ece_before".into(), c.ece_before);
        prov.metrics.insert("test_ece_after".into(), c.ece_after);
    }
    recipe_notes(options, epochs, &mut prov);
    prov
}

/// The training recipe's notes, shared by the final model's and the folds' records.
fn recipe_notes(options: &TrainOptions, epochs: usize, prov: &mut duet_model::config::Provenance) {
    prov.notes.insert("epochs".into(), epochs.to_string());
    prov.notes.insert("seed".into(), options.seed.to_string());
    prov.notes.insert("lr".into(), options.lr.to_string());
    prov.notes.insert("batch".into(), options.batch.to_string());
    prov.notes.insert(
        "trainer".into(),
        format!("duet train {}", env!("CARGO_PKG_VERSION")),
    );
    if let Some(level) = &options.level {
        prov.notes.insert(
            "level".into(),
            format!(
                "{} dBFS at the {}th percentile frame",
                level.target_dbfs,
                level.percentile * 100.0
            ),
        );
    }
    if options.average_last > 0 {
        prov.notes.insert(
            "weight_averaging".into(),
            format!(
                "the mean of the weights after each of the last {} epochs",
                options.average_last
            ),
        );
    }
    if options.mfcc_standardise {
        prov.notes.insert(
            "mfcc_standardisation".into(),
            "MFCC frames standardised with the training utterances' statistics".into(),
        );
    }
    if let Some(t) = options.silence_trim {
        prov.notes.insert("silence_trim".into(), t.describe());
    }
    if let Some(u) = options.utterance_mean {
        prov.notes.insert(
            "utterance_mean".into(),
            format!("each utterance's mean subtracted from its {}", u.describe()),
        );
    }
    if options.balance_classes {
        prov.notes.insert(
            "balance_classes".into(),
            "each class's loss weighed by N / (C · n_c) over the training part".into(),
        );
    }
    if options.weight_decay != 0.0 {
        prov.notes.insert(
            "weight_decay".into(),
            format!(
                "{} (decoupled, weight matrices and kernels)",
                options.weight_decay
            ),
        );
    }
    if options.spec_augment {
        prov.notes.insert(
            "spec_augment".into(),
            "time and mel-band masks on the training features".into(),
        );
    }
    if options.augment > 0 {
        prov.notes.insert(
            "augmentation".into(),
            format!(
                "{} copies per utterance: gain, noise, speed, reverb",
                options.augment
            ),
        );
    }
    prov.notes
        .extend(options.notes.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// Writes the final model: its provenance, the folds' median calibration temperature, and the file
/// written atomically in the precision asked for.
fn export_final(
    model: &DuetModel,
    corpus: &Corpus,
    options: &TrainOptions,
    state: &RunState,
    epochs: usize,
    run_dir: &RunDir,
) -> Result<(), DataError> {
    let temperature = calibration_summary(&state.done).map(|c| c.temperature);
    let prov = final_provenance(corpus, options, state, epochs);
    export(model, temperature, prov, options, &run_dir.model())
}

/// Writes `model` with its calibration temperature and provenance to `path` (atomically, in the
/// precision asked for).
fn export(
    model: &DuetModel,
    temperature: Option<f64>,
    provenance: duet_model::config::Provenance,
    options: &TrainOptions,
    path: &Path,
) -> Result<(), DataError> {
    let mut m = model.valid();
    // A noisy threshold needs the calibration block; without folds to fit it the temperature is 1.
    let temperature = temperature.or(options.noisy_below_db.map(|_| 1.0));
    m.config.calibration = temperature.map(|temperature| duet_model::Calibration {
        temperature,
        uncertain_below: duet_model::Calibration::UNCERTAIN_BELOW,
        noisy_below_db: options.noisy_below_db,
    });
    m.config.provenance = Some(provenance);
    let precision = if options.f16 {
        Precision::F16
    } else {
        Precision::F32
    };
    let bytes = weights::save(&m, precision).map_err(|e| DataError::Training(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    weights::write_atomic(path, &bytes).map_err(|e| DataError::io(path, e))
}

/// The running mean of the weights after the `n`-th averaged epoch, `mean + (w − mean) / n` for
/// every tensor (batch-norm statistics included), as f32 weights bytes.
fn running_mean(
    mean: Option<&[u8]>,
    model: &DuetModel,
    n: usize,
    device: &Device,
) -> Result<Vec<u8>, DataError> {
    let err = |e: duet_model::ModelError| DataError::Training(e.to_string());
    let now = weights::save(model, Precision::F32).map_err(err)?;
    let Some(mean) = mean.filter(|_| n > 1) else {
        return Ok(now);
    };
    let mut acc = weights::read(mean).map_err(err)?;
    let w = weights::read(&now).map_err(err)?;
    for (name, (_, data)) in acc.tensors.iter_mut() {
        let (_, x) = w.tensors.get(name).ok_or_else(|| {
            DataError::Training(format!("weight averaging: tensor {name} is missing"))
        })?;
        for (m, &x) in data.iter_mut().zip(x) {
            *m += (x - *m) / n as f32;
        }
    }
    let mean =
        DuetModel::build(acc.config, &mut FileSource::new(acc.tensors), device).map_err(err)?;
    weights::save(&mean, Precision::F32).map_err(err)
}

/// Mean and spread over the folds done so far.
fn cv_summary(state: &RunState) -> metrics::Summary {
    let folds: Vec<_> = state.done.iter().map(|f| f.metrics.clone()).collect();
    metrics::summarize(&folds)
}

fn with_fold_time(state: &RunState, fold_t: &Instant) -> RunState {
    RunState {
        fold_started: state.fold_started + fold_t.elapsed().as_secs_f64(),
        ..state.clone()
    }
}

fn save_checkpoint(
    dir: &Path,
    state: &RunState,
    model: &DuetModel,
    adam: &Adam,
    best: Option<&[u8]>,
) -> Result<(), DataError> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let model_bytes =
        weights::save(model, Precision::F32).map_err(|e| DataError::Training(e.to_string()))?;
    std::fs::write(tmp.join("model.safetensors"), model_bytes)
        .map_err(|e| DataError::io(&tmp, e))?;
    if let Some(b) = best {
        std::fs::write(tmp.join("best.safetensors"), b).map_err(|e| DataError::io(&tmp, e))?;
    }
    let adam_tensors = adam.export().map_err(DataError::Training)?;
    let mut bytes = Vec::new();
    // Optimizer moments: a small safetensors file of flat f32 tensors.
    let flat: Vec<(String, Vec<u8>, Vec<usize>)> = adam_tensors
        .into_iter()
        .map(|(n, d)| {
            let len = d.len();
            (
                n,
                d.into_iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![len],
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = flat
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, s.clone(), b)
                    .expect("shape matches data"),
            )
        })
        .collect();
    if !views.is_empty() {
        bytes =
            safetensors::serialize(views, None).map_err(|e| DataError::Training(e.to_string()))?;
    }
    std::fs::write(tmp.join("adam.safetensors"), bytes).map_err(|e| DataError::io(&tmp, e))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| DataError::Training(e.to_string()))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| DataError::io(&tmp, e))?;
    // Swap directories so a crash leaves either the old or the new checkpoint, never a mix.
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| DataError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| DataError::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

struct Checkpoint {
    state: RunState,
    model: Vec<u8>,
    adam: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    best: Option<Vec<u8>>,
}

fn load_checkpoint(dir: &Path) -> Result<Checkpoint, DataError> {
    let dir = if dir.join("state.json").is_file() {
        dir.to_path_buf()
    } else {
        // Interrupted while swapping: the previous checkpoint is complete.
        dir.with_extension("old")
    };
    let read =
        |name: &str| std::fs::read(dir.join(name)).map_err(|e| DataError::io(dir.join(name), e));
    let state: RunState = serde_json::from_slice(&read("state.json")?)
        .map_err(|e| DataError::Training(format!("{}: {e}", dir.join("state.json").display())))?;
    let model = read("model.safetensors")?;
    let best = std::fs::read(dir.join("best.safetensors")).ok();
    let adam_bytes = read("adam.safetensors")?;
    let mut adam = BTreeMap::new();
    if !adam_bytes.is_empty() {
        let st = safetensors::SafeTensors::deserialize(&adam_bytes).map_err(|e| {
            DataError::Training(format!("{}: {e}", dir.join("adam.safetensors").display()))
        })?;
        for (name, view) in st.iter() {
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            adam.insert(name.to_string(), (view.shape().to_vec(), data));
        }
    }
    Ok(Checkpoint {
        state,
        model,
        adam,
        best,
    })
}

/// Whether `dir` holds a checkpoint to resume from.
pub fn has_checkpoint(run: &RunDir) -> bool {
    let c = run.checkpoint();
    c.join("state.json").is_file() || c.with_extension("old").join("state.json").is_file()
}

/// The options a checkpoint was started with.
pub fn checkpoint_options(run: &RunDir) -> Result<TrainOptions, DataError> {
    Ok(load_checkpoint(&run.checkpoint())?.state.options)
}

/// Runs (or resumes) a training run. `device` is the plain device; training uses its autodiff form.
#[allow(clippy::too_many_arguments)]
pub fn run(
    corpus: &Corpus,
    options: &TrainOptions,
    run_dir: &RunDir,
    device: &Device,
    device_name: &str,
    resume: bool,
    stop: &AtomicBool,
    observer: &dyn Observer,
) -> Result<Outcome, DataError> {
    let started = Instant::now();
    let checkpoint = if resume {
        Some(load_checkpoint(&run_dir.checkpoint())?)
    } else {
        None
    };
    if let Some(c) = &checkpoint
        && &c.state.options != options
    {
        return Err(DataError::Training(format!(
            "--resume: the checkpoint in {} was made with different options ({:?}); rerun with the same options",
            run_dir.checkpoint().display(),
            c.state.options
        )));
    }
    let RunFeatures {
        features,
        bad_audio,
        cached,
        seconds: feature_seconds,
    } = run_features(corpus, options, run_dir, observer)?;
    let n_utt = corpus.utterances.len();
    let with_copies = |train: &[usize]| -> Vec<usize> {
        let mut v = train.to_vec();
        for c in 1..=options.augment {
            v.extend(train.iter().map(|&i| c * n_utt + i));
        }
        v
    };
    let mut folds: Vec<Fold> = protocol::folds(corpus, &options.protocol, options.seed)?;
    if let Some(n) = options.max_folds {
        folds.truncate(n.max(1));
    }

    let ad_device = device.clone().autodiff();
    let mut state = match &checkpoint {
        Some(c) => c.state.clone(),
        None => RunState {
            options: options.clone(),
            fold: 0,
            epoch: 0,
            batch: 0,
            loss_sum: 0.0,
            loss_count: 0,
            adam_step: 0,
            history: Vec::new(),
            best_epoch: 0,
            best_score: f64::NEG_INFINITY,
            done: Vec::new(),
            fold_started: 0.0,
            elapsed_before: 0.0,
        },
    };
    let mut resumed = checkpoint;

    let n_stages = folds.len() + usize::from(options.final_model);
    while state.fold < n_stages {
        let is_final = state.fold == folds.len();
        let fold_t = Instant::now();
        // The run's state (with Adam's step and the fold's time so far), the model, the optimizer
        // and the best epoch's weights, written so that `--resume` continues from here.
        let checkpoint = |state: &mut RunState,
                          model: &DuetModel,
                          adam: &Adam,
                          best: Option<&[u8]>|
         -> Result<(), DataError> {
            state.adam_step = adam.step;
            save_checkpoint(
                &run_dir.checkpoint(),
                &with_fold_time(state, &fold_t),
                model,
                adam,
                best,
            )
        };
        // The fold's utterances; the final model trains on everything for the selected epochs.
        let (name, train, valid, test, description, warnings) = if is_final {
            let all: Vec<usize> = (0..corpus.utterances.len()).collect();
            (
                "final".to_string(),
                all,
                Vec::new(),
                Vec::new(),
                "all utterances".to_string(),
                Vec::new(),
            )
        } else {
            let f = &folds[state.fold];
            (
                f.name.clone(),
                f.train.clone(),
                f.valid.clone(),
                f.test.clone(),
                f.description.clone(),
                f.warnings.clone(),
            )
        };
        let epochs = if is_final {
            median(state.done.iter().map(|f| f.best_epoch).collect()).max(1)
        } else {
            options.epochs
        };
        let config = fold_config(options, &features, &train);
        let n_train = train.len();
        let data = FoldData {
            name: name.clone(),
            prepared: prepare_all(&features, &config)?,
            config: config.clone(),
            train: with_copies(&train),
            valid,
            test,
            corpus,
        };
        // Model and optimizer: fresh, or from the checkpoint.
        let (mut model, mut adam, mut best_bytes) = match resumed.take() {
            Some(c) => {
                let file =
                    weights::read(&c.model).map_err(|e| DataError::Training(e.to_string()))?;
                let model =
                    DuetModel::build(file.config, &mut FileSource::new(file.tensors), &ad_device)
                        .map_err(|e| DataError::Training(e.to_string()))?;
                let adam = Adam::import(
                    options.adam_config(),
                    c.state.adam_step,
                    &c.adam,
                    &model,
                    device,
                )
                .map_err(|e| {
                    DataError::Training(format!(
                        "{}: {e}",
                        run_dir.checkpoint().join("adam.safetensors").display()
                    ))
                })?;
                (model, adam, c.best)
            }
            None => {
                let model = weights::init(
                    data.config.clone(),
                    fold_seed(options, state.fold),
                    &ad_device,
                )
                .map_err(|e| DataError::Training(e.to_string()))?;
                (model, Adam::new(options.adam_config()), None)
            }
        };
        if state.epoch == 0 && state.batch == 0 {
            state.fold_started = 0.0;
        }
        let class_weights = if options.balance_classes {
            balanced_class_weights(
                data.train
                    .iter()
                    .filter(|&&i| data.prepared[i].is_some())
                    .map(|&i| corpus.utterances[i % n_utt].label),
                data.config.n_classes(),
            )
        } else {
            Vec::new()
        };
        while state.epoch < epochs {
            let epoch_t = Instant::now();
            let batches = epoch_batches(
                &data.train,
                &data.prepared,
                options.batch,
                options.seed
                    ^ ((state.fold as u64) << 32)
                    ^ (state.epoch as u64).wrapping_mul(0x9E37_79B9),
            );
            if batches.is_empty() {
                return Err(DataError::Training(format!(
                    "fold {}: no training utterance",
                    data.name
                )));
            }
            observer.epoch_start(&data.name, state.epoch + 1, epochs, batches.len());
            let lr = options.lr_at(state.epoch);
            while state.batch < batches.len() {
                if stop.load(Ordering::SeqCst) {
                    state.elapsed_before += started.elapsed().as_secs_f64();
                    checkpoint(&mut state, &model, &adam, best_bytes.as_deref())?;
                    return Ok(Outcome::Interrupted {
                        checkpoint: run_dir.checkpoint(),
                    });
                }
                let b = &batches[state.batch];
                let mut refs: Vec<&Prepared> = b
                    .iter()
                    .filter_map(|&i| data.prepared[i].as_ref())
                    .collect();
                let masked: Vec<Prepared>;
                if options.spec_augment {
                    let (n1, _) = data.config.spectrogram_shape(false);
                    let (n2, _) = data.config.spectrogram_shape(true);
                    masked = refs
                        .iter()
                        .enumerate()
                        .map(|(k, p)| {
                            let mut rng = crate::masking::rng(
                                options.seed,
                                state.fold,
                                state.epoch,
                                state.batch,
                                k,
                            );
                            crate::masking::mask(p, data.config.mfcc_dim, n1, n2, &mut rng)
                        })
                        .collect();
                    refs = masked.iter().collect();
                }
                let labels: Vec<usize> = b
                    .iter()
                    .map(|&i| corpus.utterances[i % n_utt].label)
                    .collect();
                let (stepped, loss_value) = train_step(
                    model,
                    &mut adam,
                    &refs,
                    &labels,
                    &class_weights,
                    lr,
                    &ad_device,
                )?;
                model = stepped;
                if !loss_value.is_finite() {
                    return Err(DataError::Training(format!(
                        "fold {}, epoch {}, batch {}: the loss is {loss_value}; try a smaller --lr",
                        data.name,
                        state.epoch + 1,
                        state.batch + 1
                    )));
                }
                state.loss_sum += loss_value;
                state.loss_count += 1;
                state.batch += 1;
                observer.batch(loss_value);
            }
            // End of epoch: evaluate (inference mode, plain device).
            let eval_model = model.valid();
            let (valid_m, test_m) = if is_final {
                (None, None)
            } else {
                (
                    if data.valid.is_empty() {
                        None
                    } else {
                        Some(evaluate(&eval_model, &data, &data.valid, device)?)
                    },
                    Some(evaluate(&eval_model, &data, &data.test, device)?),
                )
            };
            let record = EpochRecord {
                epoch: state.epoch + 1,
                train_loss: state.loss_sum / state.loss_count.max(1) as f64,
                valid_wa: valid_m.as_ref().map(|m| m.wa).unwrap_or(f64::NAN),
                valid_ua: valid_m.as_ref().map(|m| m.ua).unwrap_or(f64::NAN),
                test_wa: test_m.as_ref().map(|m| m.wa).unwrap_or(f64::NAN),
                test_ua: test_m.as_ref().map(|m| m.ua).unwrap_or(f64::NAN),
                seconds: epoch_t.elapsed().as_secs_f64(),
            };
            observer.epoch_end(&data.name, &record);
            if let Some(from) = options.average_from(epochs) {
                // The stage's model is the running mean of the weights; it is kept, like a chosen
                // epoch's, as f32 bytes in the checkpoint, so a resumed run averages the same values.
                if state.epoch >= from {
                    best_bytes = Some(running_mean(
                        best_bytes.as_deref(),
                        &eval_model,
                        state.epoch - from + 1,
                        device,
                    )?);
                    state.best_epoch = record.epoch;
                }
            } else if !is_final {
                let score = if selects_on_test(options, &data) {
                    record.test_ua
                } else {
                    record.valid_ua
                };
                // Ties keep the earlier epoch.
                if score > state.best_score {
                    state.best_score = score;
                    state.best_epoch = record.epoch;
                    best_bytes = Some(
                        weights::save(&eval_model, Precision::F32)
                            .map_err(|e| DataError::Training(e.to_string()))?,
                    );
                }
            }
            state.history.push(record);
            state.epoch += 1;
            state.batch = 0;
            state.loss_sum = 0.0;
            state.loss_count = 0;
            checkpoint(&mut state, &model, &adam, best_bytes.as_deref())?;
        }
        if is_final {
            match best_bytes.as_deref() {
                Some(mean) => {
                    let mean = weights::load(mean, device)
                        .map_err(|e| DataError::Training(e.to_string()))?;
                    export_final(&mean, corpus, options, &state, epochs, run_dir)?
                }
                None => export_final(&model, corpus, options, &state, epochs, run_dir)?,
            }
        } else {
            // The fold's result: the selected epoch's model on the test part.
            let best = best_bytes.take().ok_or_else(|| {
                DataError::Training(format!("fold {}: no epoch was evaluated", data.name))
            })?;
            let best_model =
                weights::load(&best, device).map_err(|e| DataError::Training(e.to_string()))?;
            let (m, calibration) = test_fold(&best_model, &data, device)?;
            observer.message(&format!(
                "{}: temperature {:.2} (validation); test ECE {:.3} -> {:.3}",
                data.name, calibration.temperature, calibration.ece_before, calibration.ece_after
            ));
            state.done.push(FoldResult {
                calibration: Some(calibration),
                name: data.name.clone(),
                description,
                train: n_train,
                valid: data.valid.len(),
                test: data.test.len(),
                best_epoch: state.best_epoch,
                selected_on: if let Some(from) = options.average_from(epochs) {
                    format!("mean of the weights of epochs {}-{epochs}", from + 1)
                } else if selects_on_test(options, &data) {
                    "test UA (optimistic: the test fold chose the epoch)".into()
                } else {
                    "validation UA (from the training sessions)".into()
                },
                metrics: m,
                history: std::mem::take(&mut state.history),
                resize: data.config.resize,
                warnings,
                seconds: state.fold_started + fold_t.elapsed().as_secs_f64(),
            });
            // Kept so that the fold's model can be measured again on its own held-out speakers.
            let done = state.done.last().expect("just pushed");
            export(
                &best_model,
                done.calibration.as_ref().map(|c| c.temperature),
                fold_provenance(corpus, options, done, epochs),
                options,
                &run_dir.fold_model(&done.name),
            )?;
        }
        state.fold += 1;
        state.epoch = 0;
        state.batch = 0;
        state.best_epoch = 0;
        state.best_score = f64::NEG_INFINITY;
        state.history.clear();
        if state.fold < n_stages {
            // Between folds: a checkpoint with a fresh model so a resume starts the next fold.
            let next_final = state.fold == folds.len();
            let next_train: Vec<usize> = if next_final {
                (0..corpus.utterances.len()).collect()
            } else {
                folds[state.fold].train.clone()
            };
            let cfg = fold_config(options, &features, &next_train);
            let fresh = weights::init(cfg, fold_seed(options, state.fold), &ad_device)
                .map_err(|e| DataError::Training(e.to_string()))?;
            state.adam_step = 0;
            save_checkpoint(
                &run_dir.checkpoint(),
                &state,
                &fresh,
                &Adam::new(options.adam_config()),
                None,
            )?;
        }
    }

    let summary = cv_summary(&state);
    let final_epochs = options
        .final_model
        .then(|| median(state.done.iter().map(|f| f.best_epoch).collect()).max(1));
    let final_resize = options.final_model.then(|| {
        let all: Vec<usize> = (0..corpus.utterances.len()).collect();
        fold_config(options, &features, &all).resize
    });
    Ok(Outcome::Finished(Box::new(RunResult {
        folds: state.done,
        summary,
        final_epochs,
        final_resize,
        model_path: options.final_model.then(|| run_dir.model()),
        bad_audio,
        interrupted: false,
        seconds: state.elapsed_before + started.elapsed().as_secs_f64(),
        feature_seconds,
        features_cached: cached,
        device: device_name.to_string(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The final stage's epochs have no validation or test figures (NaN, written as null): a
    /// checkpoint holding them reads back, so a run interrupted there resumes.
    #[test]
    fn an_epoch_without_held_out_figures_survives_a_checkpoint() {
        let record = EpochRecord {
            epoch: 3,
            train_loss: 0.5,
            valid_wa: f64::NAN,
            valid_ua: f64::NAN,
            test_wa: f64::NAN,
            test_ua: 0.25,
            seconds: 1.0,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"valid_wa\":null"), "{json}");
        let back: EpochRecord = serde_json::from_str(&json).unwrap();
        assert!(back.valid_wa.is_nan() && back.valid_ua.is_nan() && back.test_wa.is_nan());
        assert_eq!((back.epoch, back.test_ua, back.train_loss), (3, 0.25, 0.5));
    }

    #[test]
    fn median_rounds_up_between_two() {
        assert_eq!(median(vec![3, 1, 2]), 2);
        assert_eq!(median(vec![4, 1, 2, 3]), 3);
        assert_eq!(median(vec![]), 0);
    }

    /// The running mean over three models equals their element-wise mean, every tensor (batch-norm
    /// statistics included).
    #[test]
    fn running_mean_is_the_mean_of_the_weights() {
        let device = duet_model::backend::cpu_device();
        let mut config = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        config.hidden = 8;
        let models: Vec<DuetModel> = (0..3)
            .map(|seed| weights::init(config.clone(), seed, &device).unwrap())
            .collect();
        let tensors = |bytes: &[u8]| weights::read(bytes).unwrap().tensors;
        let mut mean = None;
        for (i, m) in models.iter().enumerate() {
            mean = Some(running_mean(mean.as_deref(), m, i + 1, &device).unwrap());
        }
        let got = tensors(&mean.unwrap());
        let each: Vec<_> = models
            .iter()
            .map(|m| tensors(&weights::save(m, Precision::F32).unwrap()))
            .collect();
        assert_eq!(got.len(), each[0].len());
        let mut differ = 0;
        for (name, (shape, data)) in &got {
            assert_eq!(shape, &each[0][name].0, "{name}");
            for (j, &v) in data.iter().enumerate() {
                let want = each.iter().map(|t| t[name].1[j]).sum::<f32>() / 3.0;
                assert!(
                    (v - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{name}[{j}]: {v} vs {want}"
                );
                differ += usize::from(each[0][name].1[j] != each[1][name].1[j]);
            }
        }
        assert!(
            differ > 1000,
            "the three models should differ ({differ} values do)"
        );
    }

    /// Balanced weights: N / (C · n_c) with C the classes present, so the utterances' mean weight
    /// is 1 and each class's weights sum to N / C; an absent class gets 0; the weighted one-hot rows
    /// carry them.
    #[test]
    fn balanced_class_weights_count_every_class_alike() {
        let labels = [0usize, 0, 0, 1, 2, 2];
        let w = balanced_class_weights(labels.iter().copied(), 4);
        assert_eq!(w, vec![6.0 / 9.0, 2.0, 1.0, 0.0]);
        let mean: f32 = labels.iter().map(|&l| w[l]).sum::<f32>() / labels.len() as f32;
        assert!((mean - 1.0).abs() < 1e-6, "{mean}");
        let t = one_hot(&[1, 0], 4, &w, &Default::default());
        let v = t.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(v, vec![0.0, 2.0, 0.0, 0.0, 6.0 / 9.0, 0.0, 0.0, 0.0]);
    }

    /// Decoupled weight decay as PyTorch's `AdamW` applies it: from the same weights and batch, the
    /// step with λ differs from plain Adam's by exactly −lr·λ·w₀ in every weight matrix and kernel,
    /// and not at all in biases and batch-norm parameters (which are not decayed).
    #[test]
    fn weight_decay_shrinks_the_matrices_by_lr_lambda_of_themselves() {
        let device = duet_model::backend::cpu_device();
        let ad = device.clone().autodiff();
        let mut config = ModelConfig::new(ModelKind::Dual, Preset::Paper);
        config.hidden = 8;
        let mut rng = duet_model::rng::SplitMix64::new(5);
        let batch: Vec<Prepared> = (0..2)
            .map(|_| Prepared::random(&config, 8_000, &mut rng))
            .collect();
        let batch: Vec<&Prepared> = batch.iter().collect();
        let (lr, lambda) = (0.01, 0.5);
        let tensors = |model: &DuetModel| {
            weights::read(&weights::save(model, Precision::F32).unwrap())
                .unwrap()
                .tensors
        };
        let stepped = |weight_decay: f64| {
            let model = weights::init(config.clone(), 3, &ad).unwrap();
            let mut adam = Adam::new(AdamConfig {
                weight_decay,
                ..AdamConfig::default()
            });
            let (model, _) = train_step(model, &mut adam, &batch, &[0, 2], &[], lr, &ad).unwrap();
            tensors(&model)
        };
        let start = tensors(&weights::init(config.clone(), 3, &device).unwrap());
        let (plain, decayed) = (stepped(0.0), stepped(lambda));
        let (mut matrices, mut others) = (0, 0);
        for (name, (shape, w0)) in &start {
            // Running statistics (some of them [steps, units]) are not trained, so not decayed.
            let decays = shape.len() >= 2 && !name.contains(".running_");
            for (j, &w) in w0.iter().enumerate() {
                let (p, d) = (plain[name].1[j], decayed[name].1[j]);
                let want = if decays {
                    p - (lr * lambda) as f32 * w
                } else {
                    p
                };
                assert!(
                    (d - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{name}{shape:?}[{j}]: {d} with decay, {p} without, from {w}"
                );
            }
            if decays {
                matrices += 1;
            } else {
                others += 1;
            }
        }
        assert!(
            matrices > 10 && others > 10,
            "{matrices} matrices, {others} others"
        );
    }

    #[test]
    fn lr_schedule_halves_at_milestones() {
        let mut o = TrainOptions::new(ModelKind::Dual, Preset::Paper);
        o.lr = 1e-3;
        o.lr_milestones = vec![10, 20];
        assert_eq!(o.lr_at(0), 1e-3);
        assert_eq!(o.lr_at(9), 1e-3);
        assert_eq!(o.lr_at(10), 5e-4);
        assert_eq!(o.lr_at(25), 2.5e-4);
    }
}
