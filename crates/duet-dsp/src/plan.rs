//! `FeaturePlan`: everything expensive made once (FFT plans, windows, filterbanks, DCT table), and a
//! streaming computation that keeps only a window's worth of samples.

use rustfft::FftPlanner;

use crate::DspError;
use crate::config::FeatureConfig;
use crate::mel::{Mel, MelAnalyzer};
use crate::mfcc::{Mfcc, MfccAnalyzer};
use crate::simd::Isa;

/// Largest accepted sample magnitude (+80 dB over full scale); anything beyond is a corrupt float file.
pub const MAX_ABS_SAMPLE: f32 = 1.0e4;

/// Rejects NaN, infinite and beyond-[`MAX_ABS_SAMPLE`] samples with an error naming the first
/// (`first` is the index of `block[0]` in its stream). The feature stream checks what it is fed,
/// and the resampler what it is fed before its FFTs, which overflow on finite values near f32's
/// limit (and then panic inside rubato).
pub(crate) fn check_samples(block: &[f32], first: u64) -> Result<(), DspError> {
    if crate::simd::all_within(block, MAX_ABS_SAMPLE) {
        return Ok(());
    }
    for (i, &v) in block.iter().enumerate() {
        if !v.is_finite() || v.abs() > MAX_ABS_SAMPLE {
            let index = first + i as u64;
            return Err(if v.is_nan() {
                DspError::NonFinite {
                    index,
                    channel: 0,
                    kind: "NaN",
                }
            } else if v.is_infinite() {
                DspError::NonFinite {
                    index,
                    channel: 0,
                    kind: if v > 0.0 { "+inf" } else { "-inf" },
                }
            } else {
                DspError::OutOfRange {
                    index,
                    value: v,
                    limit: MAX_ABS_SAMPLE,
                }
            });
        }
    }
    Ok(())
}

/// Samples appended to the window buffer per step; bounds the buffer whatever a caller pushes at once.
const PUSH_BLOCK: usize = 1 << 15;

/// The paper's three feature streams of one utterance (section 2.2).
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// openSMILE MFCC12_E_D_A, `[T][39]`.
    pub mfcc: Mfcc,
    /// S1: narrow window, better time resolution (power mel, before resize and log).
    pub mel_narrow: Mel,
    /// S2: wide window, better frequency resolution (power mel, before resize and log).
    pub mel_wide: Mel,
    /// Length of the 16 kHz input in seconds.
    pub duration_s: f32,
}

/// The front end, planned once and reused for every utterance (not `Sync`: one per thread).
pub struct FeaturePlan {
    config: FeatureConfig,
    mfcc: MfccAnalyzer,
    narrow: MelAnalyzer,
    wide: MelAnalyzer,
    /// Frame assembly scratch (longest window).
    frame: Vec<f32>,
    /// The last file's resampler, reused when the next file has the same rate (its FFT plans are
    /// costly to make for every short file).
    pub(crate) resampler: Option<crate::StreamResampler>,
    /// The vector extension the frame loop runs with (detected once).
    isa: Isa,
}

impl FeaturePlan {
    /// Plans `config`. Panics if the config is invalid; use [`FeaturePlan::try_new`] for configs read
    /// from files. The presets are always valid.
    pub fn new(config: &FeatureConfig) -> Self {
        match Self::try_new(config) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Plans `config` after [`FeatureConfig::validate`].
    pub fn try_new(config: &FeatureConfig) -> Result<Self, DspError> {
        config.validate()?;
        let mut planner = FftPlanner::<f64>::new();
        let mut planner32 = FftPlanner::<f32>::new();
        let sr = config.sample_rate;
        let mut mfcc = MfccAnalyzer::new(sr, &config.mfcc, &mut planner32);
        mfcc.defer_floor = config.level.is_some();
        Ok(FeaturePlan {
            mfcc,
            narrow: MelAnalyzer::new(sr, &config.narrow, &mut planner),
            wide: MelAnalyzer::new(sr, &config.wide, &mut planner),
            frame: vec![0.0; config.min_samples()],
            resampler: None,
            isa: Isa::detect(),
            config: config.clone(),
        })
    }

    /// The planned configuration.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// Features of a whole 16 kHz mono signal held in memory.
    pub fn compute(&mut self, samples_16k: &[f32]) -> Result<Features, DspError> {
        let mut s = self.stream();
        s.reserve(samples_16k.len() as u64);
        s.push(samples_16k)?;
        s.finish()
    }

    /// Starts a streaming computation: [`FeatureStream::push`] 16 kHz samples in blocks of any size,
    /// then [`FeatureStream::finish`]. Memory is the features plus about one block of samples.
    pub fn stream(&mut self) -> FeatureStream<'_> {
        self.mfcc.reset();
        self.narrow.reset();
        self.wide.reset();
        FeatureStream {
            plan: self,
            buf: Vec::with_capacity(PUSH_BLOCK + 4096),
            buf_start: 0,
            total: 0,
            mfcc_next: 0,
            narrow_next: 0,
            wide_next: 0,
        }
    }
}

/// A feature computation in progress (see [`FeaturePlan::stream`]).
pub struct FeatureStream<'a> {
    plan: &'a mut FeaturePlan,
    /// Samples from absolute index `buf_start` to `total`.
    buf: Vec<f32>,
    buf_start: u64,
    total: u64,
    mfcc_next: u64,
    narrow_next: u64,
    wide_next: u64,
}

impl FeatureStream<'_> {
    /// Reserves room for the features of `n_samples` more samples (an allocation up front instead of
    /// repeated growth when the length is known, e.g. from a WAV header).
    pub fn reserve(&mut self, n_samples: u64) {
        let n = usize::try_from(n_samples).unwrap_or(usize::MAX);
        let cfg = &self.plan.config;
        let (m, a, b) = (
            cfg.mfcc.n_frames(n),
            cfg.narrow.n_frames(n),
            cfg.wide.n_frames(n),
        );
        self.plan.mfcc.reserve(m);
        self.plan.narrow.reserve(a);
        self.plan.wide.reserve(b);
    }

    /// Number of samples pushed so far.
    pub fn samples_seen(&self) -> u64 {
        self.total
    }

    /// Feeds 16 kHz mono samples. NaN/Inf (and magnitudes beyond [`MAX_ABS_SAMPLE`]) are rejected with
    /// an error naming the sample.
    pub fn push(&mut self, samples: &[f32]) -> Result<(), DspError> {
        for block in samples.chunks(PUSH_BLOCK) {
            check_samples(block, self.total)?;
            self.buf.extend_from_slice(block);
            self.total += block.len() as u64;
            self.run(false);
        }
        Ok(())
    }

    /// Ends the input and returns the features. Errors if the input is shorter than the longest
    /// analysis window ([`FeatureConfig::min_samples`]).
    pub fn finish(mut self) -> Result<Features, DspError> {
        let cfg = &self.plan.config;
        if self.total < cfg.min_samples() as u64 {
            return Err(DspError::TooShort {
                duration_s: self.total as f32 / cfg.sample_rate as f32,
                preset: cfg.preset.name().to_string(),
                min_duration_s: cfg.min_duration_s(),
                min_samples: cfg.min_samples(),
            });
        }
        self.run(true);
        self.plan.mfcc.flush();
        self.plan.narrow.flush();
        self.plan.wide.flush();
        let duration_s = (self.total as f64 / self.plan.config.sample_rate as f64) as f32;
        let plan = &mut *self.plan;
        let log_gain = plan.config.level.map(|level| {
            let s = level.log_power_gain(plan.mfcc.raw_log_energies(), &plan.config.mfcc);
            plan.mfcc.apply_gain(s);
            s
        });
        let mut features = Features {
            mfcc: self.plan.mfcc.take(),
            mel_narrow: self.plan.narrow.take(),
            mel_wide: self.plan.wide.take(),
            duration_s,
        };
        if let Some(s) = log_gain {
            crate::level::scale_mels(&mut features, s);
        }
        Ok(features)
    }

    /// Computes every frame the samples so far allow (all remaining ones when `last`), then drops
    /// samples no frame needs any more.
    ///
    /// On x86-64 the frame loop is compiled three times, for AVX-512, for AVX2 with FMA and for the
    /// baseline, and the widest the CPU has runs: the windowing, power spectra, band sums and cepstra
    /// are all inlined into it, so they vectorise four or eight wide instead of two. Rust never
    /// reorders or fuses float operations, so all three give the same bits.
    fn run(&mut self, last: bool) {
        match self.plan.isa {
            // SAFETY: `Isa::detect` chose these only where the CPU has every feature they are
            // compiled for.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.run_avx512(last) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.run_avx2(last) },
            _ => self.run_frames(last),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    fn run_avx512(&mut self, last: bool) {
        self.run_frames(last)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&mut self, last: bool) {
        self.run_frames(last)
    }

    /// The frame loop of [`Self::run`].
    #[inline(always)]
    fn run_frames(&mut self, last: bool) {
        let plan = &mut *self.plan;
        // MFCC: frame t covers [t·step, t·step + len); a partial last frame is dropped.
        let (len, step) = (
            plan.config.mfcc.frame_length as u64,
            plan.config.mfcc.frame_step as u64,
        );
        while self.mfcc_next * step + len <= self.total {
            let s = (self.mfcc_next * step - self.buf_start) as usize;
            plan.mfcc.process_frame(&self.buf[s..s + len as usize]);
            self.mfcc_next += 1;
        }
        // Mel: frame j covers [j·hop - n/2, j·hop + n/2) of the zero-padded signal; 1 + total/hop frames.
        for (an, next) in [
            (&mut plan.narrow, &mut self.narrow_next),
            (&mut plan.wide, &mut self.wide_next),
        ] {
            let (n, hop) = (an.cfg.n_fft as u64, an.cfg.hop_length as u64);
            let half = n / 2;
            let n_total = 1 + self.total / hop;
            loop {
                let j = *next;
                let center = j * hop;
                let ready = if last {
                    j < n_total
                } else {
                    center + half <= self.total
                };
                if !ready {
                    break;
                }
                if center >= half && center + half <= self.total {
                    let s = (center - half - self.buf_start) as usize;
                    an.process_frame(&self.buf[s..s + n as usize]);
                } else {
                    let frame = &mut plan.frame[..n as usize];
                    for (i, f) in frame.iter_mut().enumerate() {
                        let abs = center as i64 + i as i64 - half as i64;
                        *f = if abs < 0 || abs as u64 >= self.total {
                            0.0
                        } else {
                            self.buf[(abs as u64 - self.buf_start) as usize]
                        };
                    }
                    an.process_frame(frame);
                }
                *next += 1;
            }
        }
        // Keep from the earliest sample a future frame can touch.
        let keep_from = [
            self.mfcc_next * step,
            (self.narrow_next * plan.narrow.cfg.hop_length as u64)
                .saturating_sub(plan.narrow.cfg.n_fft as u64 / 2),
            (self.wide_next * plan.wide.cfg.hop_length as u64)
                .saturating_sub(plan.wide.cfg.n_fft as u64 / 2),
        ]
        .into_iter()
        .min()
        .unwrap_or(0)
        .min(self.total);
        let drop = (keep_from.max(self.buf_start) - self.buf_start) as usize;
        if drop >= PUSH_BLOCK / 2 || (last && drop > 0) {
            self.buf.drain(..drop);
            self.buf_start += drop as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LevelNorm;
    use crate::config::Preset;

    /// A chirp with a tone and a noise floor: every bin and band gets energy.
    fn signal(n: usize) -> Vec<f32> {
        let mut seed = 1u32;
        (0..n)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1 << 24) as f32 - 0.5;
                let t = i as f32 / 16_000.0;
                0.3 * (2.0 * std::f32::consts::PI * (100.0 + 900.0 * t) * t).sin()
                    + 0.1 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                    + 1e-3 * noise
            })
            .collect()
    }

    /// Every compilation of the frame loop this CPU can run gives the same bits as the baseline
    /// (the SIMD paths must not reorder or fuse the float operations).
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let x = signal(16_000 * 3 + 123);
        for preset in [Preset::Paper, Preset::Authors] {
            for level in [None, Some(LevelNorm::speech())] {
                let mut config = FeatureConfig::for_preset(preset);
                config.level = level;
                let mut plan = FeaturePlan::new(&config);
                let detected = plan.isa;
                plan.isa = Isa::Baseline;
                let want = plan.compute(&x).unwrap();
                for isa in [Isa::Avx2, Isa::Avx512] {
                    let usable =
                        matches!((detected, isa), (Isa::Avx512, _) | (Isa::Avx2, Isa::Avx2));
                    if !usable {
                        continue;
                    }
                    plan.isa = isa;
                    let got = plan.compute(&x).unwrap();
                    let bits = |f: &Features| -> Vec<u32> {
                        f.mfcc
                            .data
                            .iter()
                            .chain(&f.mel_narrow.data)
                            .chain(&f.mel_wide.data)
                            .map(|v| v.to_bits())
                            .collect()
                    };
                    assert!(
                        bits(&got) == bits(&want),
                        "{isa:?} differs from the baseline ({preset}, level {level:?})"
                    );
                }
            }
        }
    }
}
