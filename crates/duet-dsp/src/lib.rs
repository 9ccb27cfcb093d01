//! duet-dsp: audio bytes to the paper's features (section 2.2).
//!
//! One responsibility: decode and resample audio to 16 kHz mono, then compute the openSMILE-compatible
//! MFCC12_E_D_A frames and the two librosa-compatible mel spectrograms. No burn; native and wasm32.
//!
//! ```text
//! WAV bytes ─ decode_wav ─▶ mono f32 at the file's rate ─ resample ─▶ 16 kHz ─ FeaturePlan ─▶ Features
//!                                                                     ├─ MFCC12_E_D_A [T][39]   (mfcc.rs)
//!                                                                     ├─ S1 power mel [64][T1]  (mel.rs)
//!                                                                     └─ S2 power mel [128][T2] (mel.rs)
//! Mel::resize_time_nearest(median frames) ─▶ Mel::to_log(1e-10) ─▶ the model
//! ```
//!
//! Numbers: every constant is a named field of [`FeatureConfig`] with the paper's section in its doc.
//! Samples are f32 in [-1, 1] at 16 kHz in both presets (docs/reference.md §1).
//!
//! Bad input: every problem is a [`DspError`] naming it; nothing panics on any byte string.
//! **NaN/Inf policy: rejected.** A NaN or infinite sample (float WAV, or a buffer handed to
//! [`FeaturePlan::compute`]) is an error naming the sample and channel, never cleaned; so is a finite
//! sample beyond ±[`plan::MAX_ABS_SAMPLE`] (a float file that far outside [-1, 1] is not audio).
//!
//! Speed: FFT plans, windows, filterbanks and the DCT table are made once in [`FeaturePlan`]; the
//! per-frame path allocates nothing; files are decoded, resampled and analysed block by block
//! ([`features_from_file`]), so memory grows with the features, not with copies of the samples.

#![warn(missing_docs)]

mod config;
mod error;
pub mod level;
mod mel;
mod mfcc;
pub mod npy;
mod pair;
pub mod plan;
mod resample;
mod simd;
pub mod wav;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub use config::{FeatureConfig, MAX_BANDS, MAX_DELTA_WINDOW, MelConfig, MfccConfig, Preset};
pub use error::DspError;
pub use level::LevelNorm;
pub use mel::{Mel, hz_to_mel_slaney, mel_to_hz_slaney};
pub use mfcc::{Mfcc, hz_to_mel_htk};
pub use plan::{FeaturePlan, FeatureStream, Features};
pub use resample::{StreamResampler, resample};
pub use wav::{DecodedAudio, WavReader, decode_wav};

/// The analysis sample rate (paper section 2.1: IEMOCAP is 16 kHz); every input is resampled to it.
pub const SAMPLE_RATE: u32 = 16_000;

/// Frames read from a file per block in [`features_from_file`] (reads of this size bypass the small
/// `BufReader`, which only serves the header).
const FILE_BLOCK_FRAMES: usize = 1 << 14;

/// A recording decoded to 16 kHz mono, with the rate and channel count it had.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio16k {
    /// Mono samples at [`SAMPLE_RATE`].
    pub samples: Vec<f32>,
    /// The source's sample rate in Hz.
    pub source_rate: u32,
    /// The source's channel count (mixed down by averaging).
    pub source_channels: u16,
}

/// Decodes WAV bytes, mixes to mono and resamples to 16 kHz (the samples `duet predict`, `train`
/// and the page analyse).
pub fn decode_wav_16k(bytes: &[u8]) -> Result<Audio16k, DspError> {
    let audio = decode_wav(bytes)?;
    Ok(Audio16k {
        samples: to_16k(&audio.samples, audio.sample_rate)?,
        source_rate: audio.sample_rate,
        source_channels: audio.channels,
    })
}

/// Mono samples at `rate` resampled to 16 kHz; no samples (before or after) is an error.
pub fn to_16k(mono: &[f32], rate: u32) -> Result<Vec<f32>, DspError> {
    if mono.is_empty() {
        return Err(DspError::NoSamples);
    }
    let out = resample(mono, rate, SAMPLE_RATE)?;
    if out.is_empty() {
        return Err(DspError::NoSamples);
    }
    Ok(out)
}

/// [`decode_wav_16k`]'s samples alone.
pub fn load_audio_16k(bytes: &[u8]) -> Result<Vec<f32>, DspError> {
    Ok(decode_wav_16k(bytes)?.samples)
}

/// Features of a WAV file, streaming: the file is read, mixed down, resampled and analysed in blocks, so
/// memory is the features plus a few blocks whatever the file's length. Errors name the file.
pub fn features_from_file(path: &Path, plan: &mut FeaturePlan) -> Result<Features, DspError> {
    let with_path = |e: DspError| match e {
        DspError::Io { source, .. } => DspError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    };
    let file = File::open(path).map_err(|source| DspError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = WavReader::new(BufReader::with_capacity(1 << 12, file)).map_err(with_path)?;
    let rate = reader.format().sample_rate;
    let mut resampler = match plan.resampler.take() {
        Some(mut r) if r.rates() == (rate, SAMPLE_RATE) => {
            r.reset();
            r
        }
        _ => StreamResampler::new(rate, SAMPLE_RATE)?,
    };
    let result = stream_file(&mut reader, &mut resampler, plan, file_len).map_err(with_path);
    plan.resampler = Some(resampler);
    result
}

fn stream_file<R: std::io::Read>(
    reader: &mut WavReader<R>,
    resampler: &mut StreamResampler,
    plan: &mut FeaturePlan,
    file_len: u64,
) -> Result<Features, DspError> {
    let mut stream = plan.stream();
    // Reserve the features' memory once when the header's length is believable (not beyond the file).
    if let Some(bytes) = reader.format().data_bytes {
        let frames = bytes.min(file_len) / reader.format().block_align() as u64;
        stream.reserve(resampler.output_len(frames));
    }
    let mut block = Vec::with_capacity(FILE_BLOCK_FRAMES);
    let mut any = false;
    {
        let mut sink = |s: &[f32]| stream.push(s);
        loop {
            block.clear();
            let n = reader.read_mono(&mut block, FILE_BLOCK_FRAMES)?;
            if n == 0 {
                break;
            }
            any = true;
            resampler.push(&block, &mut sink)?;
        }
        resampler.finish(&mut sink)?;
    }
    if !any {
        return Err(DspError::NoSamples);
    }
    stream.finish()
}
