//! Feature configuration: every number the paper (section 2.2) or its references fix, by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::level::LevelNorm;

use crate::{DspError, SAMPLE_RATE};

/// The most filterbank bands a configuration may ask for, mel or MFCC. The paper's are 26 (MFCC) and
/// 64 / 128 (mel, section 2.2); the filterbank is computed band by band over every FFT bin, so a
/// model file claiming millions of bands would hang the front end and exhaust memory.
pub const MAX_BANDS: usize = 1024;

/// The widest delta regression window W a configuration may ask for (openSMILE's MFCC12_E_D_A uses 2,
/// paper section 2.2); each frame's deltas sum over 2W + 1 frames.
pub const MAX_DELTA_WINDOW: usize = 64;

/// Which set of spectrogram sizes to use (docs/reference.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The paper, section 2.2: S1 = 256-point STFT, hop 128, 64 mel bands; S2 = 512, hop 256, 128 bands.
    #[default]
    Paper,
    /// The authors' published code: S1 = 512 / 256 / 128 bands; S2 = 1024 / 512 / 256 bands.
    Authors,
}

impl Preset {
    /// The lowercase name used on the command line and in serialized configs.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Authors => "authors",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = DspError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "paper" => Ok(Preset::Paper),
            "authors" => Ok(Preset::Authors),
            other => Err(DspError::InvalidConfig(format!(
                "unknown feature preset {other:?}; expected \"paper\" or \"authors\""
            ))),
        }
    }
}

/// openSMILE `MFCC12_E_D_A` parameters (paper section 2.2; docs/reference.md §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MfccConfig {
    /// Frame length in samples: 25 ms at 16 kHz (paper section 2.2, "25 ms frames").
    pub frame_length: usize,
    /// Frame step in samples: 10 ms at 16 kHz (openSMILE MFCC12_E_D_A, paper section 2.2).
    pub frame_step: usize,
    /// FFT size; the windowed frame is zero-padded at the end to this length (openSMILE cTransformFFT).
    pub n_fft: usize,
    /// Per-frame pre-emphasis coefficient k: y[0] = (1-k)·x[0], y[n] = x[n] - k·x[n-1].
    pub preemphasis: f32,
    /// Number of triangular HTK-mel bands (26 in MFCC12_E_D_A).
    pub n_bands: usize,
    /// Lowest edge of the mel filterbank, Hz.
    pub fmin: f32,
    /// Highest edge of the mel filterbank, Hz.
    pub fmax: f32,
    /// Number of cepstral coefficients after c0 (MFCC 1..=12; "MFCC12").
    pub n_ceps: usize,
    /// Cepstral liftering parameter L: weight 1 + (L/2)·sin(π·i/L).
    pub cep_lifter: f32,
    /// Scale applied to band energies and frame energy (HTK's 16-bit range: 32767²).
    pub energy_scale: f64,
    /// Floor applied before the natural log of band energies and frame energy.
    pub log_floor: f64,
    /// Half-width W of the delta regression window: d_t = Σ k(c_{t+k} - c_{t-k}) / (2 Σ k²) ("_D", "_A").
    pub delta_window: usize,
}

impl MfccConfig {
    /// openSMILE's MFCC12_E_D_A at 16 kHz (paper section 2.2).
    pub fn opensmile_mfcc12_e_d_a() -> Self {
        MfccConfig {
            frame_length: 400,
            frame_step: 160,
            n_fft: 512,
            preemphasis: 0.97,
            n_bands: 26,
            fmin: 0.0,
            fmax: 8000.0,
            n_ceps: 12,
            cep_lifter: 22.0,
            energy_scale: 32767.0 * 32767.0,
            log_floor: 1.0,
            delta_window: 2,
        }
    }

    /// Number of complete frames in `n_samples` samples (a partial last frame is dropped).
    pub fn n_frames(&self, n_samples: usize) -> usize {
        if n_samples < self.frame_length {
            0
        } else {
            1 + (n_samples - self.frame_length) / self.frame_step
        }
    }

    /// Number of values per frame: (n_ceps + log energy) × (static, delta, acceleration) = 39.
    pub fn n_features(&self) -> usize {
        3 * (self.n_ceps + 1)
    }
}

/// One librosa `melspectrogram` (paper section 2.2: "hop length and number of mel channels are 50% and 25%
/// of the number of FFT points"). Periodic Hann window of `n_fft`, centred frames with zero padding of
/// `n_fft / 2`, power 2, Slaney mel scale with Slaney area normalisation (librosa's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MelConfig {
    /// STFT size and window length in samples (paper section 2.2: 256 for S1, 512 for S2).
    pub n_fft: usize,
    /// Hop in samples (paper section 2.2: 50% of `n_fft`).
    pub hop_length: usize,
    /// Number of mel bands (paper section 2.2: 25% of `n_fft`).
    pub n_mels: usize,
    /// Lowest mel edge, Hz (librosa default 0).
    pub fmin: f32,
    /// Highest mel edge, Hz (librosa default sr / 2 = 8 kHz).
    pub fmax: f32,
}

impl MelConfig {
    /// The paper's rule (section 2.2): hop = n_fft/2, n_mels = n_fft/4, 0 Hz to 8 kHz.
    pub fn from_n_fft(n_fft: usize) -> Self {
        MelConfig {
            n_fft,
            hop_length: n_fft / 2,
            n_mels: n_fft / 4,
            fmin: 0.0,
            fmax: SAMPLE_RATE as f32 / 2.0,
        }
    }

    /// Number of frames librosa produces for `n_samples` samples with center=True: 1 + floor(n / hop).
    pub fn n_frames(&self, n_samples: usize) -> usize {
        1 + n_samples / self.hop_length
    }
}

/// Everything the front end needs; stored with a trained model so the page computes the same features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// Which preset these numbers come from.
    pub preset: Preset,
    /// Analysis sample rate in Hz (paper section 2.1: IEMOCAP at 16 kHz). Everything is resampled to it.
    pub sample_rate: u32,
    /// openSMILE MFCC12_E_D_A (paper section 2.2).
    pub mfcc: MfccConfig,
    /// The narrow-window spectrogram S1 (paper section 2.2).
    pub narrow: MelConfig,
    /// The wide-window spectrogram S2 (paper section 2.2).
    pub wide: MelConfig,
    /// Floor of the log mel spectrogram, `10·log10(max(S, log_floor))` (paper section 2.2 "followed by a
    /// logarithmic transformation"; 1e-10 is librosa's `amin`, keeps digital silence finite).
    pub log_floor: f32,
    /// Level normalisation of the utterance ([`LevelNorm`]); `None` (absent from the file) in both
    /// presets: the paper does not normalise (section 2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LevelNorm>,
}

impl FeatureConfig {
    /// The paper's preset (section 2.2): S1 = 256/128/64, S2 = 512/256/128.
    pub fn paper() -> Self {
        FeatureConfig {
            preset: Preset::Paper,
            sample_rate: SAMPLE_RATE,
            mfcc: MfccConfig::opensmile_mfcc12_e_d_a(),
            narrow: MelConfig::from_n_fft(256),
            wide: MelConfig::from_n_fft(512),
            log_floor: 1e-10,
            level: None,
        }
    }

    /// The authors' code: S1 = 512/256/128, S2 = 1024/512/256.
    pub fn authors() -> Self {
        FeatureConfig {
            preset: Preset::Authors,
            narrow: MelConfig::from_n_fft(512),
            wide: MelConfig::from_n_fft(1024),
            ..Self::paper()
        }
    }

    /// The config of a preset.
    pub fn for_preset(p: Preset) -> Self {
        match p {
            Preset::Paper => Self::paper(),
            Preset::Authors => Self::authors(),
        }
    }

    /// The shortest input (samples at `sample_rate`) that gives at least one frame of every feature: the
    /// longest analysis window (MFCC frame, S1 window, S2 window).
    pub fn min_samples(&self) -> usize {
        self.mfcc
            .frame_length
            .max(self.narrow.n_fft)
            .max(self.wide.n_fft)
    }

    /// [`Self::min_samples`] in seconds.
    pub fn min_duration_s(&self) -> f32 {
        self.min_samples() as f32 / self.sample_rate as f32
    }

    /// Checks that the numbers are usable (a config read from a weights file may be anything).
    pub fn validate(&self) -> Result<(), DspError> {
        let bad = |m: String| Err(DspError::InvalidConfig(m));
        if self.sample_rate != SAMPLE_RATE {
            return bad(format!(
                "sample_rate is {} Hz; Duet's features are defined at {SAMPLE_RATE} Hz",
                self.sample_rate
            ));
        }
        if let Some(level) = &self.level {
            level.validate().map_err(DspError::InvalidConfig)?;
        }
        let nyquist = self.sample_rate as f32 / 2.0;
        let m = &self.mfcc;
        if m.frame_length < 2 || m.frame_step == 0 || m.n_fft < m.frame_length || m.n_fft > 1 << 16
        {
            return bad(format!(
                "mfcc: frame_length {} / frame_step {} / n_fft {} are inconsistent (need 2 <= frame_length <= n_fft <= 65536, step >= 1)",
                m.frame_length, m.frame_step, m.n_fft
            ));
        }
        if m.n_bands < 2
            || m.n_bands > MAX_BANDS
            || m.n_ceps == 0
            || m.n_ceps >= m.n_bands
            || m.delta_window == 0
            || m.delta_window > MAX_DELTA_WINDOW
        {
            return bad(format!(
                "mfcc: n_bands {} / n_ceps {} / delta_window {} are inconsistent (need 0 < n_ceps < n_bands <= {MAX_BANDS}, 1 <= delta_window <= {MAX_DELTA_WINDOW})",
                m.n_bands, m.n_ceps, m.delta_window
            ));
        }
        if !(m.fmin >= 0.0 && m.fmin < m.fmax && m.fmax <= nyquist) {
            return bad(format!(
                "mfcc: band edges {} .. {} Hz are not within 0 .. {nyquist} Hz",
                m.fmin, m.fmax
            ));
        }
        if !(m.energy_scale > 0.0 && m.log_floor > 0.0 && m.preemphasis.is_finite()) {
            return bad("mfcc: energy_scale and log_floor must be > 0".into());
        }
        for (name, c) in [("narrow", &self.narrow), ("wide", &self.wide)] {
            if c.n_fft < 2
                || c.n_fft % 2 != 0
                || c.n_fft > 1 << 16
                || c.hop_length == 0
                || c.n_mels == 0
                || c.n_mels > MAX_BANDS
            {
                return bad(format!(
                    "{name}: n_fft {} (must be even, 2..=65536), hop_length {}, n_mels {} (1..={MAX_BANDS}) are not usable",
                    c.n_fft, c.hop_length, c.n_mels
                ));
            }
            if !(c.fmin >= 0.0 && c.fmin < c.fmax && c.fmax <= nyquist) {
                return bad(format!(
                    "{name}: mel edges {} .. {} Hz are not within 0 .. {nyquist} Hz",
                    c.fmin, c.fmax
                ));
            }
        }
        if !(self.log_floor > 0.0 && self.log_floor.is_finite()) {
            return bad(format!(
                "log_floor {} must be a positive number",
                self.log_floor
            ));
        }
        Ok(())
    }
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self::paper()
    }
}
