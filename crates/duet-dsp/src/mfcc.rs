//! openSMILE `MFCC12_E_D_A` (paper section 2.2; REFERENCE.md section 2), step by step:
//! 25 ms frames every 10 ms (a partial last frame is dropped) → log energy of the raw frame →
//! per-frame pre-emphasis → symmetric Hamming window → 512-point FFT → power → 26 HTK-mel triangles
//! (× 32767²) → ln(max(·, 1)) → DCT-II (orthonormal scale) of coefficients 1..12 → sinusoidal lifter →
//! deltas and accelerations (window 2) with openSMILE's edge behaviour.

use std::f64::consts::PI;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::config::MfccConfig;

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
    weights: Vec<f64>,
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
                weights: w[start..end].to_vec(),
            }
        })
        .collect()
}

/// Per-frame MFCC state: FFT plan, window, filterbank, DCT table and scratch, made once.
pub(crate) struct MfccAnalyzer {
    pub cfg: MfccConfig,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    power: Vec<f64>,
    bands: Vec<Band>,
    log_bands: Vec<f64>,
    /// `dct[(i-1) * n_bands + j]` = lifter_i · sqrt(2/n_bands) · cos(π i (j + 0.5) / n_bands).
    dct: Vec<f64>,
    /// Static coefficients so far, `[t][n_ceps + 1]` (mfcc1..n, logE).
    pub base: Vec<f32>,
}

impl MfccAnalyzer {
    pub fn new(sr: u32, cfg: &MfccConfig, planner: &mut RealFftPlanner<f64>) -> Self {
        let n = cfg.frame_length;
        let fft = planner.plan_fft_forward(cfg.n_fft);
        // Symmetric Hamming: 0.54 - 0.46 cos(2π i / (N - 1)).
        let window = (0..n)
            .map(|i| 0.54 - 0.46 * (2.0 * PI * i as f64 / (n - 1) as f64).cos())
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
            frame: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            power: vec![0.0; cfg.n_fft / 2 + 1],
            bands: htk_filterbank(sr as f64, cfg),
            log_bands: vec![0.0; nb],
            dct,
            fft,
            base: Vec::new(),
        }
    }

    /// One 25 ms frame (`frame_length` samples): appends mfcc1..12 and logE to `base`.
    pub fn process_frame(&mut self, x: &[f32]) {
        let cfg = &self.cfg;
        let n = cfg.frame_length;
        debug_assert_eq!(x.len(), n);
        // Log energy of the raw frame (not pre-emphasised, not windowed).
        let energy: f64 =
            x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() * cfg.energy_scale;
        let log_e = energy.max(cfg.log_floor).ln();
        // Pre-emphasis inside the frame, window, zero padding to n_fft.
        let k = cfg.preemphasis as f64;
        self.frame[0] = (1.0 - k) * x[0] as f64 * self.window[0];
        for i in 1..n {
            self.frame[i] = (x[i] as f64 - k * x[i - 1] as f64) * self.window[i];
        }
        self.frame[n..].fill(0.0);
        self.fft
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
            .expect("buffer sizes come from the plan");
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        for (lb, band) in self.log_bands.iter_mut().zip(&self.bands) {
            let p = &self.power[band.start..band.start + band.weights.len()];
            let e: f64 =
                p.iter().zip(&band.weights).map(|(a, b)| a * b).sum::<f64>() * cfg.energy_scale;
            *lb = e.max(cfg.log_floor).ln();
        }
        for row in self.dct.chunks_exact(cfg.n_bands) {
            let c: f64 = row.iter().zip(&self.log_bands).map(|(a, b)| a * b).sum();
            self.base.push(c as f32);
        }
        self.base.push(log_e as f32);
    }

    /// Adds deltas and accelerations; returns `[T][39]` and resets for the next input.
    pub fn take(&mut self) -> Mfcc {
        let d = self.cfg.n_ceps + 1;
        let t_len = self.base.len() / d;
        let w = self.cfg.delta_window;
        let base: Vec<f64> = self.base.iter().map(|&v| v as f64).collect();
        self.base.clear();
        if t_len == 0 {
            return Mfcc {
                n_frames: 0,
                data: Vec::new(),
            };
        }
        let delta = deltas(&base, t_len, d, w, None);
        let tail = virtual_delta_row(&base, t_len, d, w);
        let accel = deltas(&delta, t_len, d, w, Some(&tail));
        let mut data = Vec::with_capacity(t_len * 3 * d);
        for t in 0..t_len {
            let r = t * d..(t + 1) * d;
            data.extend(base[r.clone()].iter().map(|&v| v as f32));
            data.extend(delta[r.clone()].iter().map(|&v| v as f32));
            data.extend(accel[r].iter().map(|&v| v as f32));
        }
        Mfcc {
            n_frames: t_len,
            data,
        }
    }
}

/// Delta regression over `[t][d]` rows with half-width `w`: Σ_k k·(c[t+k] - c[t-k]) / (2 Σ k²), edges
/// repeating the first and last row. With `tail` (the acceleration stage), rows past the end are not the
/// repeated last row but openSMILE's: one extra row `tail` and then zeros (REFERENCE.md section 2).
fn deltas(x: &[f64], t_len: usize, d: usize, w: usize, tail: Option<&[f64]>) -> Vec<f64> {
    let norm: f64 = 2.0 * (1..=w).map(|k| (k * k) as f64).sum::<f64>();
    let mut out = vec![0.0; t_len * d];
    let row = |t: isize, j: usize| -> f64 {
        if t < 0 {
            x[j]
        } else if (t as usize) < t_len {
            x[t as usize * d + j]
        } else if let Some(tail) = tail {
            if t as usize == t_len { tail[j] } else { 0.0 }
        } else {
            x[(t_len - 1) * d + j]
        }
    };
    for t in 0..t_len {
        for j in 0..d {
            let mut s = 0.0;
            for k in 1..=w {
                s += k as f64 * (row(t as isize + k as isize, j) - row(t as isize - k as isize, j));
            }
            out[t * d + j] = s / norm;
        }
    }
    out
}

/// openSMILE's delta stage emits one row past the end of the input: the delta of a virtual frame `T`
/// computed with the base edge-repeated, Σ_k k·(c[T-1] - c[max(T-k, 0)]) / (2 Σ k²).
fn virtual_delta_row(base: &[f64], t_len: usize, d: usize, w: usize) -> Vec<f64> {
    let norm: f64 = 2.0 * (1..=w).map(|k| (k * k) as f64).sum::<f64>();
    (0..d)
        .map(|j| {
            let last = base[(t_len - 1) * d + j];
            let s: f64 = (1..=w)
                .map(|k| k as f64 * (last - base[t_len.saturating_sub(k) * d + j]))
                .sum();
            s / norm
        })
        .collect()
}
