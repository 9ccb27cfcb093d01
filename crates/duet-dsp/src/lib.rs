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
pub mod noise;
pub mod npy;
mod pair;
pub mod plan;
mod resample;
pub mod simd;
pub mod trim;
pub mod wav;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub use config::{FeatureConfig, MAX_BANDS, MAX_DELTA_WINDOW, MelConfig, MfccConfig, Preset};
pub use error::DspError;
pub use level::LevelNorm;
pub use mel::{Mel, hz_to_mel_slaney, mel_to_hz_slaney};
pub use mfcc::{Mfcc, hz_to_mel_htk};
pub use noise::{NOISY_BELOW_DB, is_noisy, is_noisy_below, speech_to_noise_db};
pub use plan::{FeaturePlan, FeatureStream, Features};
pub use resample::{StreamResampler, resample};
pub use trim::SilenceTrim;
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
    let samples = if audio.sample_rate == SAMPLE_RATE && !audio.samples.is_empty() {
        // Already at 16 kHz: no second copy (a 2-hour file's samples are 460 MB).
        audio.samples
    } else {
        to_16k(&audio.samples, audio.sample_rate)?
    };
    Ok(Audio16k {
        samples,
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

/// A WAV file (or WAV bytes) read, mixed down and resampled to 16 kHz block by block: memory is a
/// few blocks whatever the recording's length. What [`features_from_file`] and a long recording's
/// timeline read (`duet predict` from a file, the page from the bytes it holds). Errors name the
/// file.
pub struct SampleStream<R: std::io::Read = BufReader<File>> {
    path: std::path::PathBuf,
    reader: WavReader<R>,
    resampler: StreamResampler,
    file_len: u64,
    block: Vec<f32>,
    frames_read: u64,
    finished: bool,
}

impl SampleStream {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, DspError> {
        Self::open_with(path, None)
    }

    /// [`SampleStream::open`], reusing `resampler` when its rates fit (its FFT plans are costly to
    /// make for every short file).
    fn open_with(path: &Path, resampler: Option<StreamResampler>) -> Result<Self, DspError> {
        let file = File::open(path).map_err(|source| DspError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = WavReader::new(BufReader::with_capacity(1 << 12, file))
            .map_err(|e| with_path(path, e))?;
        SampleStream::new(path.to_path_buf(), reader, file_len, resampler)
    }
}

impl<'a> SampleStream<std::io::Cursor<&'a [u8]>> {
    /// A stream over WAV bytes in memory.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, DspError> {
        SampleStream::from_reader(std::io::Cursor::new(bytes), bytes.len() as u64)
    }
}

impl<R: std::io::Read> SampleStream<R> {
    /// A stream over a WAV file of `len` bytes read through `reader` (the page's files, read a
    /// block at a time from the browser's file handle). `len` bounds what the header may claim.
    pub fn from_reader(reader: R, len: u64) -> Result<Self, DspError> {
        let reader = WavReader::new(reader)?;
        SampleStream::new(std::path::PathBuf::new(), reader, len, None)
    }

    fn new(
        path: std::path::PathBuf,
        reader: WavReader<R>,
        file_len: u64,
        resampler: Option<StreamResampler>,
    ) -> Result<Self, DspError> {
        let rate = reader.format().sample_rate;
        let resampler = match resampler {
            Some(mut r) if r.rates() == (rate, SAMPLE_RATE) => {
                r.reset();
                r
            }
            _ => StreamResampler::new(rate, SAMPLE_RATE)?,
        };
        Ok(SampleStream {
            path,
            reader,
            resampler,
            file_len,
            block: Vec::with_capacity(FILE_BLOCK_FRAMES),
            frames_read: 0,
            finished: false,
        })
    }

    /// The header's description of the audio (rate, channels, sample format).
    pub fn format(&self) -> &wav::WavFormat {
        self.reader.format()
    }

    /// The number of 16 kHz samples the header promises, when that is believable (its data are not
    /// longer than the file).
    pub fn expected_samples(&self) -> Option<u64> {
        let format = self.reader.format();
        let bytes = format.data_bytes?;
        let frames = bytes.min(self.file_len) / format.block_align() as u64;
        Some(self.resampler.output_len(frames))
    }

    /// Replaces `out`'s contents with the next 16 kHz samples; false once the file is done (`out`
    /// then holds the resampler's last samples, possibly none). A file without samples is
    /// [`DspError::NoSamples`].
    pub fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, DspError> {
        out.clear();
        self.next_into(&mut |s: &[f32]| {
            out.extend_from_slice(s);
            Ok(())
        })
    }

    /// Hands the next 16 kHz samples to `sink` as the resampler produces them (one or more
    /// slices, no copy in between); false once the file is done. Errors as
    /// [`SampleStream::next_block`].
    pub fn next_into(
        &mut self,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<bool, DspError> {
        if self.finished {
            return Ok(false);
        }
        self.block.clear();
        let n = self
            .reader
            .read_mono(&mut self.block, FILE_BLOCK_FRAMES)
            .map_err(|e| with_path(&self.path, e))?;
        if n > 0 {
            self.frames_read += n as u64;
            self.resampler.push(&self.block, sink)?;
            return Ok(true);
        }
        self.finished = true;
        if self.frames_read == 0 {
            return Err(DspError::NoSamples);
        }
        self.resampler.finish(sink)?;
        Ok(false)
    }
}

/// `e` with the file's path when it is an I/O error.
fn with_path(path: &Path, e: DspError) -> DspError {
    match e {
        DspError::Io { source, .. } => DspError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}

/// Features of a WAV file, streaming ([`SampleStream`]): memory is the features plus a few blocks
/// whatever the file's length. Errors name the file.
pub fn features_from_file(path: &Path, plan: &mut FeaturePlan) -> Result<Features, DspError> {
    let mut samples = SampleStream::open_with(path, plan.resampler.take())?;
    let result = stream_features(&mut samples, plan);
    plan.resampler = Some(samples.resampler);
    result
}

fn stream_features(
    samples: &mut SampleStream,
    plan: &mut FeaturePlan,
) -> Result<Features, DspError> {
    let mut stream = plan.stream();
    // Reserve the features' memory once when the header's length is believable.
    if let Some(n) = samples.expected_samples() {
        stream.reserve(n);
    }
    // Straight from the resampler into the analysis: a copy of every sample in between (a block
    // Vec) cost 3-5 % of the features' time.
    while samples.next_into(&mut |s: &[f32]| stream.push(s))? {}
    stream.finish()
}

/// Keeps freed memory in the process (glibc: no trimming, no mmap for large blocks). Training
/// allocates and frees tensors of tens of MB at every step, and the features of a minute of audio
/// are 4 MB; returning such blocks to the OS and faulting fresh pages back in each time cost a third
/// of a CPU training step here, and about 15 % of the front end's time on file after file. Call once
/// at start-up (`duet`, `train` and the benchmarks do); elsewhere (wasm32, other C libraries) it
/// does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
