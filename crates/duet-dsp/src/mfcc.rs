//! openSMILE `MFCC12_E_D_A` (paper section 2.2; REFERENCE.md section 2), step by step:
//! 25 ms frames every 10 ms (a partial last frame is dropped) → log energy of the raw frame →
//! per-frame pre-emphasis → symmetric Hamming window → 512-point FFT → power → 26 HTK-mel triangles
//! (× 32767²) → ln(max(·, 1)) → DCT-II (orthonormal scale) of coefficients 1..12 → sinusoidal lifter →
//! deltas and accelerations (window 2) with openSMILE's edge behaviour.

use std::f64::consts::PI;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::config::MfccConfig;
use crate::pair::PairFft;

/// MFCC frames, row-major `[n_frames][39]` in openSMILE's column order: mfcc1..12, logE,
/// delta mfcc1..12, delta logE, accel mfcc1..12, accel logE.
#[derive(Clone, Debug, PartialEq)]
pub struct Mfcc {
    /// Number of 10 ms frames.
    pub n_frames: usize,
    /// `data[t * 39 + j]`.
    pub data: Vec<f32>,
}

impl Mfcc {
    /// Values per frame (39).
    pub const N_FEATURES: usize = 39;

    /// Value `j` (0..39) of frame `t`.
    pub fn at(&self, t: usize, j: usize) -> f32 {
        self.data[t * Self::N_FEATURES + j]
    }

    /// Frame `t` (39 values).
    pub fn frame(&self, t: usize) -> &[f32] {
        &self.data[t * Self::N_FEATURES..(t + 1) * Self::N_FEATURES]
    }
}

/// The HTK mel scale, 1127 · ln(1 + f / 700).
pub fn hz_to_mel_htk(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// One HTK band as a sparse triangle over power-spectrum bins.
struct Band {
    start: usize,
    weights: Vec<f32>,
}

/// HTK-style filterbank: `n_bands` triangles with peak 1 on `n_bands + 2` equally spaced HTK-mel edges from
/// `fmin` to `fmax`, the weights linear in mel; the DC bin and bins at or above `fmax` are left out.
fn htk_filterbank(sr: f64, cfg: &MfccConfig) -> Vec<Band> {
    let n_bins = cfg.n_fft / 2 + 1;
    let (mlo, mhi) = (
        hz_to_mel_htk(cfg.fmin as f64),
        hz_to_mel_htk(cfg.fmax as f64),
    );
    let edge = |j: usize| mlo + j as f64 * (mhi - mlo) / (cfg.n_bands + 1) as f64;
    let bin_mel: Vec<Option<f64>> = (0..n_bins)
        .map(|k| {
            let f = k as f64 * sr / cfg.n_fft as f64;
            (k > 0 && f < cfg.fmax as f64 && f >= cfg.fmin as f64).then(|| hz_to_mel_htk(f))
        })
        .collect();
    (0..cfg.n_bands)
        .map(|b| {
            let (lo, ce, hi) = (edge(b), edge(b + 1), edge(b + 2));
            let w: Vec<f64> = bin_mel
                .iter()
                .map(|m| match *m {
                    Some(m) if m > lo && m <= ce => (m - lo) / (ce - lo),
                    Some(m) if m > ce && m < hi => (hi - m) / (hi - ce),
                    _ => 0.0,
                })
                .collect();
            let start = w.iter().position(|&v| v != 0.0).unwrap_or(0);
            let end = w.iter().rposition(|&v| v != 0.0).map_or(start, |e| e + 1);
            Band {
                start,
                weights: w[start..end].iter().map(|&v| v as f32).collect(),
            }
        })
        .collect()
}

/// Per-frame MFCC state: FFT plan, window, filterbank, DCT table and scratch, made once.
///
/// The per-frame path runs in f32 like openSMILE itself (its data memory is float32); the frame energy
/// and the DCT accumulate in f64. Frames go through the FFT in pairs (see `pair.rs`); call
/// [`MfccAnalyzer::flush`] before `take`.
pub(crate) struct MfccAnalyzer {
    pub cfg: MfccConfig,
    window: Vec<f32>,
    pair: PairFft<f32>,
    /// Log energy of the frame waiting in the pair buffer.
    pending_log_e: f64,
    power_a: Vec<f32>,
    power_b: Vec<f32>,
    bands: Vec<Band>,
    log_bands: Vec<f64>,
    /// `dct[(i-1) * n_bands + j]` = lifter_i · sqrt(2/n_bands) · cos(π i (j + 0.5) / n_bands).
    dct: Vec<f64>,
    /// Static coefficients so far, `[t][n_ceps + 1]` (mfcc1..n, logE).
    pub base: Vec<f32>,
}

impl MfccAnalyzer {
    pub fn new(sr: u32, cfg: &MfccConfig, planner: &mut FftPlanner<f32>) -> Self {
        let n = cfg.frame_length;
        // Symmetric Hamming: 0.54 - 0.46 cos(2π i / (N - 1)).
        let window = (0..n)
            .map(|i| (0.54 - 0.46 * (2.0 * PI * i as f64 / (n - 1) as f64).cos()) as f32)
            .collect();
        let nb = cfg.n_bands;
        let l = cfg.cep_lifter as f64;
        let mut dct = Vec::with_capacity(cfg.n_ceps * nb);
        for i in 1..=cfg.n_ceps {
            let lifter = if l > 0.0 {
                1.0 + l / 2.0 * (PI * i as f64 / l).sin()
            } else {
                1.0
            };
            for j in 0..nb {
                dct.push(
                    lifter
                        * (2.0 / nb as f64).sqrt()
                        * (PI * i as f64 * (j as f64 + 0.5) / nb as f64).cos(),
                );
            }
        }
        MfccAnalyzer {
            cfg: cfg.clone(),
            window,
            pair: PairFft::new(cfg.n_fft, planner),
            pending_log_e: 0.0,
            power_a: vec![0.0; cfg.n_fft / 2 + 1],
            power_b: vec![0.0; cfg.n_fft / 2 + 1],
            bands: htk_filterbank(sr as f64, cfg),
            log_bands: vec![0.0; nb],
            dct,
            base: Vec::new(),
        }
    }

    /// Reserves room for `frames` more frames.
    pub fn reserve(&mut self, frames: usize) {
        self.base.reserve(frames * (self.cfg.n_ceps + 1));
    }

    /// Drops a frame waiting for its partner (a new input starts).
    pub fn reset(&mut self) {
        self.base.clear();
        self.pair.pending = false;
    }

    /// One 25 ms frame (`frame_length` samples): log energy, pre-emphasis and window into the pair
    /// buffer; every second frame runs the FFT and appends both frames' mfcc1..12 and logE to `base`.
    pub fn process_frame(&mut self, x: &[f32]) {
        let cfg = &self.cfg;
        let n = cfg.frame_length;
        let x = &x[..n];
        // Log energy of the raw frame (not pre-emphasised, not windowed).
        let energy: f64 = crate::simd::sum_sq_f64(x) * cfg.energy_scale;
        let log_e = energy.max(cfg.log_floor).ln();
        // Pre-emphasis inside the frame, window; the buffer's tail stays zero (padding to n_fft).
        let k = cfg.preemphasis;
        let second = self.pair.pending;
        let buf = &mut self.pair.buf[..n];
        let w = &self.window[..n];
        let first = (1.0 - k) * x[0] * w[0];
        if second {
            buf[0].im = first;
            for ((c, w), p) in buf[1..].iter_mut().zip(&w[1..]).zip(x.windows(2)) {
                c.im = (p[1] - k * p[0]) * w;
            }
            let a_log_e = self.pending_log_e;
            self.pair.powers(&mut self.power_a, &mut self.power_b);
            self.emit(true, a_log_e);
            self.emit(false, log_e);
        } else {
            buf[0].re = first;
            for ((c, w), p) in buf[1..].iter_mut().zip(&w[1..]).zip(x.windows(2)) {
                c.re = (p[1] - k * p[0]) * w;
            }
            for c in self.pair.buf[n..].iter_mut() {
                *c = Complex::new(0.0, 0.0);
            }
            self.pending_log_e = log_e;
            self.pair.pending = true;
        }
    }

    /// Emits a frame still waiting for its partner.
    pub fn flush(&mut self) {
        if self.pair.pending {
            for c in self.pair.buf.iter_mut() {
                c.im = 0.0;
            }
            self.pair.powers(&mut self.power_a, &mut self.power_b);
            self.emit(true, self.pending_log_e);
        }
    }

    /// Mel bands → log → DCT of one frame's power spectrum (frame a or b of the pair).
    fn emit(&mut self, a: bool, log_e: f64) {
        let cfg = &self.cfg;
        let power = if a { &self.power_a } else { &self.power_b };
        let scale = cfg.energy_scale as f32;
        let floor = cfg.log_floor as f32;
        for (lb, band) in self.log_bands.iter_mut().zip(&self.bands) {
            let p = &power[band.start..band.start + band.weights.len()];
            let e: f32 = crate::simd::dot_f32(p, &band.weights) * scale;
            *lb = e.max(floor).ln() as f64;
        }
        for row in self.dct.chunks_exact(cfg.n_bands) {
            let c: f64 = crate::simd::dot_f64(row, &self.log_bands);
            self.base.push(c as f32);
        }
        self.base.push(log_e as f32);
    }

    /// Adds deltas and accelerations; returns `[T][39]` and resets for the next input.
    pub fn take(&mut self) -> Mfcc {
        let d = self.cfg.n_ceps + 1;
        let t_len = self.base.len() / d;
        let w = self.cfg.delta_window;
        let width = 3 * d;
        let mut data = vec![0f32; t_len * width];
        if t_len == 0 {
            self.base.clear();
            return Mfcc { n_frames: 0, data };
        }
        for (row, b) in data.chunks_exact_mut(width).zip(self.base.chunks_exact(d)) {
            row[..d].copy_from_slice(b);
        }
        let tail = virtual_delta_row(&self.base, t_len, d, w);
        self.base.clear();
        // Deltas of columns 0..d into d..2d (edges repeated), then accelerations of d..2d into 2d..3d
        // with openSMILE's tail row.
        deltas(&mut data, t_len, width, 0, d, w, None);
        deltas(&mut data, t_len, width, d, d, w, Some(&tail));
        Mfcc {
            n_frames: t_len,
            data,
        }
    }
}

/// Delta regression of columns `src .. src + d` of `[t][width]` rows into columns `src + d .. src + 2d`,
/// half-width `w`: Σ_k k·(c[t+k] - c[t-k]) / (2 Σ k²), computed in f64, edges repeating the first and
/// last row. With `tail` (the acceleration stage), rows past the end are not the repeated last row but
/// openSMILE's: one extra row `tail` and then zeros (REFERENCE.md section 2).
fn deltas(
    data: &mut [f32],
    t_len: usize,
    width: usize,
    src: usize,
    d: usize,
    w: usize,
    tail: Option<&[f64]>,
) {
    let norm: f64 = 2.0 * (1..=w).map(|k| (k * k) as f64).sum::<f64>();
    let mut acc = vec![0f64; d];
    for t in 0..t_len {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for k in 1..=w {
            let hi = t + k;
            let lo = t.saturating_sub(k);
            for (j, a) in acc.iter_mut().enumerate() {
                let h = if hi < t_len {
                    data[hi * width + src + j] as f64
                } else if let Some(tail) = tail {
                    if hi == t_len { tail[j] } else { 0.0 }
                } else {
                    data[(t_len - 1) * width + src + j] as f64
                };
                let l = data[lo * width + src + j] as f64;
                *a += k as f64 * (h - l);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            data[t * width + src + d + j] = (a / norm) as f32;
        }
    }
}

/// openSMILE's delta stage emits one row past the end of the input: the delta of a virtual frame `T`
/// computed with the base edge-repeated, Σ_k k·(c[T-1] - c[max(T-k, 0)]) / (2 Σ k²).
fn virtual_delta_row(base: &[f32], t_len: usize, d: usize, w: usize) -> Vec<f64> {
    let norm: f64 = 2.0 * (1..=w).map(|k| (k * k) as f64).sum::<f64>();
    (0..d)
        .map(|j| {
            let last = base[(t_len - 1) * d + j] as f64;
            let s: f64 = (1..=w)
                .map(|k| k as f64 * (last - base[t_len.saturating_sub(k) * d + j] as f64))
                .sum();
            s / norm
        })
        .collect()
}
