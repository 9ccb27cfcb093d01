//! The one error type of the crate: every way audio can be unusable, by name.

use std::path::PathBuf;

/// Why audio could not be turned into features. Messages name the problem and, where there is one,
/// the position in the file.
#[derive(Debug, thiserror::Error)]
pub enum DspError {
    /// Zero bytes of input.
    #[error("the input is empty (0 bytes); expected a WAV file")]
    Empty,
    /// The bytes are not a RIFF/RF64 WAVE file.
    #[error("not a WAV file: {0}")]
    NotWav(String),
    /// A WAV header that ends before (or without) a `data` chunk.
    #[error("WAV file has a header but no audio: {0}")]
    HeaderOnly(String),
    /// The file ends in the middle of a chunk or a sample.
    #[error("truncated WAV file: {0}")]
    Truncated(String),
    /// A `fmt ` chunk whose numbers contradict each other.
    #[error("malformed WAV header: {0}")]
    BadHeader(String),
    /// A WAV codec other than integer PCM or IEEE float.
    #[error(
        "unsupported WAV codec: format tag 0x{tag:04X} ({name}); Duet reads integer PCM (8/16/24/32-bit) and IEEE float (32/64-bit) WAV"
    )]
    UnsupportedCodec {
        /// The `wFormatTag` (or the sub-format of WAVE_FORMAT_EXTENSIBLE).
        tag: u16,
        /// Its common name.
        name: &'static str,
    },
    /// PCM or float with a sample width Duet does not read.
    #[error("unsupported WAV sample format: {0}")]
    UnsupportedSampleFormat(String),
    /// The header says the audio has no channels.
    #[error("WAV header declares 0 channels")]
    ZeroChannels,
    /// A sample rate outside what any real recording uses.
    #[error("unsupported sample rate {rate} Hz; Duet accepts {min} to {max} Hz")]
    BadSampleRate {
        /// The declared rate.
        rate: u32,
        /// Lowest accepted rate.
        min: u32,
        /// Highest accepted rate.
        max: u32,
    },
    /// A NaN or infinite sample (rejected, never cleaned; see the crate docs).
    #[error(
        "sample {index} of channel {channel} is {kind}; audio with NaN or infinite samples is rejected"
    )]
    NonFinite {
        /// Frame index (0-based) within the file or buffer.
        index: u64,
        /// Channel (0-based).
        channel: u16,
        /// "NaN", "+inf" or "-inf".
        kind: &'static str,
    },
    /// A finite sample so far outside [-1, 1] that the file must be corrupt (float WAV only).
    #[error(
        "sample {index} is {value:e}, beyond ±{limit} (full scale is ±1); the audio is corrupt or not audio"
    )]
    OutOfRange {
        /// Sample index (0-based, mono 16 kHz stream or decoded file).
        index: u64,
        /// The value.
        value: f32,
        /// The accepted magnitude.
        limit: f32,
    },
    /// The data chunk holds no samples.
    #[error("the WAV data chunk holds no samples")]
    NoSamples,
    /// Audio shorter than the longest analysis window.
    #[error(
        "audio is {duration_s:.3} s long; the {preset} preset needs at least {min_duration_s:.3} s (its longest analysis window, {min_samples} samples at 16 kHz)"
    )]
    TooShort {
        /// Duration of the audio at 16 kHz.
        duration_s: f32,
        /// The preset name.
        preset: String,
        /// Minimum duration in seconds.
        min_duration_s: f32,
        /// Minimum number of samples at 16 kHz.
        min_samples: usize,
    },
    /// A configuration that cannot be computed.
    #[error("invalid feature configuration: {0}")]
    InvalidConfig(String),
    /// The resampler refused the job.
    #[error("resampling failed: {0}")]
    Resample(String),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
