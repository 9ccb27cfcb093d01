//! The loaded model and the analysis of one 16 kHz signal. No JavaScript types here: this module is
//! plain Rust (tested natively), `api` converts to and from JS values.

use std::collections::BTreeMap;
use std::rc::Rc;

use duet_dsp::{DspError, FeaturePlan, SAMPLE_RATE};
use duet_model::config::Provenance;
use duet_model::input::Prepared;
use duet_model::timeline::{self, TimelineConfig};
use duet_model::{Device, ModelError, Prediction, Predictor};
use serde::Serialize;

/// Signals longer than this (seconds) also get a timeline of segments.
pub const TIMELINE_MIN_S: f32 = 8.0;

/// What the model card shows: the file's configuration and provenance.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// `dual`, `base1`...
    pub kind: String,
    /// The paper's Table 1 name.
    pub kind_description: String,
    /// `paper` or `authors`.
    pub preset: String,
    /// Class names in output order.
    pub classes: Vec<String>,
    /// Trainable parameters (running statistics excluded).
    pub parameters: usize,
    /// `F16` or `F32` (the weights' storage type).
    pub dtype: String,
    /// Size of the file in bytes.
    pub bytes: usize,
    /// Shortest audio the front end accepts, in seconds.
    pub min_duration_s: f32,
    /// Whether the file says how it was trained (a model from `duet init-model` does not).
    pub trained: bool,
    /// Training corpus, protocol, cross-validation metrics and notes, as written by `train`.
    pub provenance: Option<Provenance>,
    /// The temperature of the probabilities shown and the uncertainty threshold (`None`: T = 1).
    pub calibration: Option<duet_model::Calibration>,
    /// The level the front end normalises each recording to, in dBFS (`None`: not normalised).
    pub level_dbfs: Option<f32>,
    /// A recording whose speech stands less than this many dB above its noise floor is marked noisy.
    pub noisy_below_db: f32,
}

/// Class probabilities of one stretch of audio.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scores {
    /// In [`ModelInfo::classes`] order.
    pub probabilities: Vec<f32>,
    /// The most probable class.
    pub label: String,
    /// The top probability is under the model card's threshold.
    pub uncertain: bool,
    /// How far the speech stands above the noise floor, in dB (`None`: too short to tell).
    pub speech_to_noise_db: Option<f32>,
    /// Under [`ModelInfo::noisy_below_db`]: the answer is not to be trusted.
    pub noisy: bool,
}

impl From<&Prediction> for Scores {
    fn from(p: &Prediction) -> Self {
        Scores {
            probabilities: p.probabilities.clone(),
            label: p.label.clone(),
            uncertain: p.uncertain,
            speech_to_noise_db: p.speech_to_noise_db,
            noisy: p.noisy,
        }
    }
}

/// One window of a timeline.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineSegment {
    pub start_s: f32,
    pub end_s: f32,
    #[serde(flatten)]
    pub scores: Scores,
}

/// The result for one recording or file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Duration of the audio in seconds (at 16 kHz, as `duet predict` reports it).
    pub duration_s: f32,
    /// The source's sample rate and channel count (before the mix-down and resampling).
    pub sample_rate: u32,
    pub channels: u16,
    pub classes: Vec<String>,
    /// The whole utterance.
    #[serde(flatten)]
    pub scores: Scores,
    /// Each branch's own probabilities.
    pub branches: BTreeMap<String, Vec<f32>>,
    /// Fused logits.
    pub logits: Vec<f32>,
    /// Segments, for audio longer than the timeline threshold (or when asked).
    pub timeline: Option<Vec<TimelineSegment>>,
    /// For audio longer than `duet_model::timeline::WHOLE_MAX_S`: the number of windows whose mean
    /// is the whole's answer (as `duet predict` gives it); None when the whole was classified in
    /// one call.
    pub mean_of_windows: Option<usize>,
}

/// Why an analysis failed, by who can fix it.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The audio: undecodable, too short, NaN... (the user's file).
    #[error("{0}")]
    Audio(#[from] DspError),
    /// The model or the backend.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// The recording would not fit in the page's memory (see [`check_wav_fits`]).
    #[error(
        "this recording would need {need_gb:.1} GB of memory in the page, which has {max_gb:.1} GB for \
         one analysis; `duet predict` reads recordings of any length from disk"
    )]
    TooLarge { need_gb: f64, max_gb: f64 },
}

impl AnalysisError {
    /// `audio`, `too-short`, `unsupported-wav` (a WAV codec duet-dsp does not read: the page tries
    /// the browser's decoder), `model`, `backend`, `non-finite` (the backend computed NaN or ±inf:
    /// the worker retries on the CPU) or `too-large`: the page words its message by this.
    pub fn kind(&self) -> &'static str {
        match self {
            AnalysisError::Audio(DspError::TooShort { .. }) => "too-short",
            AnalysisError::Audio(
                DspError::UnsupportedCodec { .. } | DspError::UnsupportedSampleFormat(_),
            ) => "unsupported-wav",
            AnalysisError::Audio(_) => "audio",
            AnalysisError::Model(ModelError::Dsp(DspError::TooShort { .. })) => "too-short",
            AnalysisError::Model(ModelError::Dsp(_) | ModelError::Input(_)) => "audio",
            AnalysisError::Model(ModelError::Backend(_)) => "backend",
            AnalysisError::Model(ModelError::NonFinite { .. }) => "non-finite",
            AnalysisError::Model(_) => "model",
            AnalysisError::TooLarge { .. } => "too-large",
        }
    }
}

/// Most memory one analysis may hold in the page: the wasm32 address space is 4 GB, and the model,
/// the page's other buffers and the allocator's slack need the rest.
pub const MAX_ANALYSIS_BYTES: u64 = 3_000_000_000;

/// Refuses, from its header alone and before any decoding, a WAV whose analysis would not fit in
/// [`MAX_ANALYSIS_BYTES`]: at its peak the page holds the file, its samples mixed down as floats at
/// the file's rate and again at 16 kHz (a 16-bit 16 kHz file: 3 times its size; 8-bit at 8 kHz: 13
/// times). `head`: the file's first bytes (its header chunks); `file_len`: its length. A header
/// that cannot be read is left to the decoder, which names the problem.
pub fn check_wav_fits(head: &[u8], file_len: u64) -> Result<(), AnalysisError> {
    fits(wav_memory_needed(head, file_len))
}

/// The peak memory of a WAV's analysis (see [`check_wav_fits`]) from the file's first bytes and its
/// length; None when the header cannot be read.
fn wav_memory_needed(head: &[u8], file_len: u64) -> Option<u128> {
    let reader = duet_dsp::WavReader::new(std::io::Cursor::new(head)).ok()?;
    let format = reader.format();
    let data = format.data_bytes.unwrap_or(u64::MAX).min(file_len);
    let frames = (data / format.block_align().max(1) as u64) as u128;
    let at_16k = (frames * SAMPLE_RATE as u128).div_ceil(format.sample_rate.max(1) as u128);
    Some(file_len as u128 + 4 * frames + 4 * at_16k)
}

fn fits(need: Option<u128>) -> Result<(), AnalysisError> {
    match need {
        Some(need) if need > MAX_ANALYSIS_BYTES as u128 => Err(AnalysisError::TooLarge {
            need_gb: need as f64 / 1e9,
            max_gb: MAX_ANALYSIS_BYTES as f64 / 1e9,
        }),
        _ => Ok(()),
    }
}

/// A model loaded on a device, with its front end planned once.
pub struct Loaded {
    /// Shared so that an analysis can await the device without borrowing the model.
    pub predictor: Rc<Predictor>,
    pub plan: FeaturePlan,
    pub info: ModelInfo,
}

/// Reads the model card of a weights file without building the model (cheap).
pub fn describe(bytes: &[u8]) -> Result<ModelInfo, ModelError> {
    let config = duet_model::weights::read_config(bytes)?;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::Format(e.to_string()))?;
    // The storage precision is the dtype holding most bytes: an f16 file keeps its vectors in f32.
    let mut bytes_by_dtype = std::collections::BTreeMap::<String, usize>::new();
    let mut shapes = Vec::new();
    for (name, view) in st.tensors() {
        *bytes_by_dtype
            .entry(format!("{:?}", view.dtype()))
            .or_default() += view.data().len();
        shapes.push((name, view.shape().to_vec()));
    }
    let dtype = bytes_by_dtype
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d)
        .unwrap_or_default();
    let parameters = duet_model::weights::parameter_counts(
        shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())),
    )
    .values()
    .sum();
    let trained = config
        .provenance
        .as_ref()
        .is_some_and(|p| p.corpus.is_some() || !p.metrics.is_empty());
    Ok(ModelInfo {
        kind: config.kind.name().into(),
        kind_description: config.kind.description().into(),
        preset: config.preset.name().into(),
        classes: config.classes.clone(),
        parameters,
        dtype,
        bytes: bytes.len(),
        min_duration_s: config.features.min_duration_s(),
        trained,
        provenance: config.provenance.clone(),
        calibration: config.calibration.clone(),
        level_dbfs: config.features.level.map(|l| l.target_dbfs),
        noisy_below_db: config.noisy_below_db(),
    })
}

impl Loaded {
    /// Builds the model of `bytes` on `device`.
    pub fn new(bytes: &[u8], device: &Device) -> Result<Loaded, ModelError> {
        let info = describe(bytes)?;
        let predictor = Rc::new(Predictor::from_bytes(bytes, device)?);
        let plan = FeaturePlan::try_new(&predictor.config().features)?;
        Ok(Loaded {
            predictor,
            plan,
            info,
        })
    }
}

/// A signal's analysis as planned: the whole utterance's features when it is classified in one call
/// (up to [`timeline::WHOLE_MAX_S`]), and the timeline's windows to classify, if any (their features
/// are computed a batch at a time, [`timeline::WindowBatches`]).
pub struct Job {
    pub duration_s: f32,
    pub sample_rate: u32,
    pub channels: u16,
    pub whole: Option<Prepared>,
    pub windows: Option<TimelineConfig>,
}

/// Mixes planar channels (`channels` blocks of equal length, one after the other) to mono by
/// averaging, as duet-dsp's WAV decoder does.
pub fn mix_planar(planar: &[f32], channels: usize) -> Vec<f32> {
    let channels = channels.max(1);
    let n = planar.len() / channels;
    if channels == 1 {
        return planar[..n].to_vec();
    }
    let scale = 1.0 / channels as f32;
    (0..n)
        .map(|i| (0..channels).map(|c| planar[c * n + i]).sum::<f32>() * scale)
        .collect()
}

impl Loaded {
    /// Features of the whole signal (unless it is longer than [`timeline::WHOLE_MAX_S`]: then its
    /// answer is the mean of its windows') and the windows to classify: those of `timeline`, or of
    /// the default timeline for a long signal.
    pub fn prepare(
        &mut self,
        samples_16k: &[f32],
        sample_rate: u32,
        channels: u16,
        timeline: Option<&TimelineConfig>,
    ) -> Result<Job, AnalysisError> {
        let rate = self.plan.config().sample_rate;
        let whole = if timeline::classified_whole(samples_16k.len() as u64, rate) {
            let features = self.plan.compute(samples_16k)?;
            Some(self.predictor.prepare(&features)?)
        } else {
            None
        };
        let windows = match (timeline, &whole) {
            (Some(cfg), _) => Some(*cfg),
            (None, None) => Some(TimelineConfig::default()),
            (None, Some(_)) => None,
        };
        Ok(Job {
            duration_s: samples_16k.len() as f32 / rate as f32,
            sample_rate,
            channels,
            whole,
            windows,
        })
    }

    /// Assembles the result of a job: the whole utterance's prediction (or the mean of its
    /// windows') and, when `show_timeline`, its segments.
    pub fn finish(
        &self,
        job: &Job,
        whole: Prediction,
        segments: Vec<timeline::Segment>,
        show_timeline: bool,
    ) -> Analysis {
        let config = self.predictor.config();
        Analysis {
            duration_s: job.duration_s,
            sample_rate: job.sample_rate,
            channels: job.channels,
            mean_of_windows: job.whole.is_none().then_some(segments.len()),
            classes: config.classes.clone(),
            scores: Scores::from(&whole),
            branches: whole
                .branches
                .iter()
                .map(|(b, p)| (b.name().to_string(), p.clone()))
                .collect(),
            logits: whole.logits.clone(),
            timeline: show_timeline.then(|| {
                segments
                    .iter()
                    .map(|s| TimelineSegment {
                        start_s: s.start_s,
                        end_s: s.end_s,
                        scores: Scores::from(&s.prediction),
                    })
                    .collect()
            }),
        }
    }
}

/// Whether a signal of `samples_16k` samples gets a timeline.
pub fn wants_timeline(n_samples_16k: usize) -> bool {
    n_samples_16k as f32 / SAMPLE_RATE as f32 > TIMELINE_MIN_S
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV header claiming `frames` frames of 8-bit mono at `rate`.
    fn wav_header(rate: u32, frames: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36u32.saturating_add(frames)).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&frames.to_le_bytes());
        b
    }

    #[test]
    fn a_wav_too_large_for_the_page_is_refused_from_its_header() {
        let mb = 1_000_000u32;
        // 240 MB of 8-bit 8 kHz: 240 MB + 960 MB + 1.92 GB of floats = 3.1 GB.
        let need = wav_memory_needed(&wav_header(8_000, 240 * mb), 44 + 240 * mb as u64);
        let e = fits(need).unwrap_err();
        assert_eq!(e.kind(), "too-large");
        assert!(e.to_string().contains("3.1 GB"), "{e}");
        // The same length at 16 kHz: 240 MB + 960 MB + 960 MB = 2.2 GB, fits.
        let need = wav_memory_needed(&wav_header(16_000, 240 * mb), 44 + 240 * mb as u64);
        assert!(fits(need).is_ok());
        // A header claiming more than the file holds counts what is there.
        let short = wav_header(8_000, 4_000 * mb);
        assert!(check_wav_fits(&short, short.len() as u64).is_ok());
        // Not a WAV header: left to the decoder.
        assert!(check_wav_fits(b"not a wav", 1 << 40).is_ok());
    }

    #[test]
    fn mixes_planar_channels() {
        assert_eq!(mix_planar(&[1.0, 2.0, 3.0, 5.0], 2), vec![2.0, 3.5]);
        assert_eq!(mix_planar(&[1.0, 2.0], 1), vec![1.0, 2.0]);
    }

    #[test]
    fn describes_an_untrained_model() {
        let device = duet_model::backend::cpu_device();
        let config =
            duet_model::ModelConfig::new(duet_model::ModelKind::Base1, duet_dsp::Preset::Authors);
        let model = duet_model::weights::init(config, 1, &device).unwrap();
        let bytes = duet_model::weights::save(&model, duet_model::weights::Precision::F16).unwrap();
        let info = describe(&bytes).unwrap();
        assert_eq!(info.kind, "base1");
        assert!(!info.trained);
        assert_eq!(info.dtype, "F16");
        assert!(info.parameters > 0);
        let err = describe(&bytes[..bytes.len() / 2]);
        assert!(err.is_err());
    }

    #[test]
    fn too_short_audio_is_its_own_kind() {
        let device = duet_model::backend::cpu_device();
        let config =
            duet_model::ModelConfig::new(duet_model::ModelKind::Base1, duet_dsp::Preset::Authors);
        let model = duet_model::weights::init(config, 1, &device).unwrap();
        let bytes = duet_model::weights::save(&model, duet_model::weights::Precision::F32).unwrap();
        let mut loaded = Loaded::new(&bytes, &device).unwrap();
        let e = loaded.prepare(&[0.0; 160], 16_000, 1, None).err().unwrap();
        assert_eq!(e.kind(), "too-short");
        assert!(e.to_string().contains("at least"), "{e}");
    }

    /// A WAV whose codec duet-dsp does not read (IMA ADPCM, format tag 0x0011) has its own kind,
    /// so the page hands it to the browser's decoder instead of matching message text.
    #[test]
    fn an_unsupported_wav_codec_is_its_own_kind() {
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36u32 + 8).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&0x0011u16.to_le_bytes()); // IMA ADPCM
        wav.extend_from_slice(&1u16.to_le_bytes()); // channels
        wav.extend_from_slice(&16_000u32.to_le_bytes());
        wav.extend_from_slice(&8_000u32.to_le_bytes());
        wav.extend_from_slice(&256u16.to_le_bytes());
        wav.extend_from_slice(&4u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&8u32.to_le_bytes());
        wav.extend_from_slice(&[0; 8]);
        let e = AnalysisError::from(duet_dsp::decode_wav_16k(&wav).unwrap_err());
        assert_eq!(e.kind(), "unsupported-wav", "{e}");
    }
}
