//! openSMILE `MFCC12_E_D_A` (paper section 2.2; docs/reference.md §2), step by step:
//! 25 ms frames every 10 ms (a partial last frame is dropped) → log energy of the raw frame →
//! per-frame pre-emphasis → symmetric Hamming window → 512-point FFT → power → 26 HTK-mel triangles
//! (× 32767²) → ln(max(·, 1)) → DCT-II (orthonormal scale) of coefficients 1..12 → sinusoidal lifter →
//! deltas and accelerations (window 2) with openSMILE's edge behaviour.

use std::f64::consts::PI;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::config::MfccConfig;
use crate::pair::{BATCH, PairFft, quarter_weight};

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
                weights: w[start..end]
                    .iter()
                    .map(|&v| quarter_weight(v) as f32)
                    .collect(),
            }
        })
        .collect()
}

/// Per-frame MFCC state: FFT plan, window, filterbank, DCT table and scratch, made once.
///
/// The spectrum path runs in f32 like openSMILE itself (its data memory is float32); frame energy, logs
/// and the DCT are f64. Frames go through the FFT in pairs (`pair.rs`) and their band energies, logs and
/// cepstra are computed for `BATCH` frames at once.
pub(crate) struct MfccAnalyzer {
    pub cfg: MfccConfig,
    window: Vec<f32>,
    pair: PairFft<f32>,
    /// Power spectra of the batch, `power[k][t]`.
    power: Vec<[f32; BATCH]>,
    /// The first frame of a pair, pre-emphasised and windowed, waiting for its partner.
    tmp: Vec<f32>,
    /// Log energy of each frame in the batch.
    log_e: [f64; BATCH],
    in_batch: usize,
    bands: Vec<Band>,
    /// Log band energies of the batch, `log_bands[b][t]`.
    log_bands: Vec<[f64; BATCH]>,
    /// `dct[(i-1) * n_bands + j]` = lifter_i · sqrt(2/n_bands) · cos(π i (j + 0.5) / n_bands).
    dct: Vec<f64>,
    /// Cepstra of the batch, `ceps[i-1][t]`.
    ceps: Vec<[f64; BATCH]>,
    /// Static coefficients so far, `[t][n_ceps + 1]` (mfcc1..n, logE).
    pub base: Vec<f32>,
    /// With level normalisation: the floor and the DCT wait for the utterance's gain
    /// ([`Self::apply_gain`]), so that a quiet recording's near-silent frames are floored after the
    /// gain, exactly as if its samples had been scaled.
    pub defer_floor: bool,
    /// Unfloored log band energies and log energy of each frame so far, `[t][n_bands + 1]`
    /// (only with `defer_floor`).
    raw: Vec<f32>,
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
            tmp: vec![0.0; n],
            power: vec![[0.0; BATCH]; cfg.n_fft / 2 + 1],
            log_e: [0.0; BATCH],
            in_batch: 0,
            bands: htk_filterbank(sr as f64, cfg),
            log_bands: vec![[0.0; BATCH]; nb],
            dct,
            ceps: vec![[0.0; BATCH]; cfg.n_ceps],
            base: Vec::new(),
            defer_floor: false,
            raw: Vec::new(),
        }
    }

    /// Reserves room for `frames` more frames.
    pub fn reserve(&mut self, frames: usize) {
        self.base.reserve(frames * (self.cfg.n_ceps + 1));
        if self.defer_floor {
            self.raw.reserve(frames * (self.cfg.n_bands + 1));
        }
    }

    /// Forgets everything of the previous input.
    pub fn reset(&mut self) {
        self.base.clear();
        self.raw.clear();
        self.in_batch = 0;
        self.pair.pending = false;
    }

    /// One 25 ms frame (`frame_length` samples): log energy, pre-emphasis and window into the pair
    /// buffer; every second frame runs the FFT.
    #[inline(always)]
    pub fn process_frame(&mut self, x: &[f32]) {
        let cfg = &self.cfg;
        let n = cfg.frame_length;
        let x = &x[..n];
        // Log energy of the raw frame (not pre-emphasised, not windowed).
        let energy: f64 = crate::simd::sum_sq_f64(x) * cfg.energy_scale;
        let slot = self.in_batch + self.pair.pending as usize;
        let floor = if self.defer_floor {
            f64::MIN_POSITIVE
        } else {
            cfg.log_floor
        };
        self.log_e[slot] = energy.max(floor).ln();
        // Pre-emphasis inside the frame and window, contiguous (vectorises). The first frame of a
        // pair waits in `tmp`; the second is computed straight into the pair buffer beside it, whole
        // complex values at a time (two half-width passes cost twice as much).
        let k = cfg.preemphasis;
        let w = &self.window[..n];
        if !self.pair.pending {
            let tmp = &mut self.tmp[..n];
            tmp[0] = (1.0 - k) * x[0] * w[0];
            for (((t, w), &cur), &prev) in tmp[1..]
                .iter_mut()
                .zip(&w[1..])
                .zip(&x[1..])
                .zip(&x[..n - 1])
            {
                *t = (cur - k * prev) * w;
            }
            self.pair.pending = true;
            return;
        }
        let (head, pad) = self.pair.buf.split_at_mut(n);
        head[0] = Complex::new(self.tmp[0], (1.0 - k) * x[0] * w[0]);
        for ((((c, &a), w), &cur), &prev) in head[1..]
            .iter_mut()
            .zip(&self.tmp[1..n])
            .zip(&w[1..])
            .zip(&x[1..])
            .zip(&x[..n - 1])
        {
            *c = Complex::new(a, (cur - k * prev) * w);
        }
        // The FFT runs in place: the padding to n_fft is cleared each time.
        pad.fill(Complex::new(0.0, 0.0));
        self.pair.powers_into(&mut self.power, self.in_batch);
        self.in_batch += 2;
        if self.in_batch == BATCH {
            self.cepstra();
        }
    }

    /// Finishes the input: a frame waiting for its partner and a partial batch.
    pub fn flush(&mut self) {
        let lone = self.tmp[..self.cfg.frame_length].iter().copied();
        self.pair
            .flush_lone(lone, &mut self.power, &mut self.in_batch);
        self.cepstra();
    }

    /// Mel bands → ln → DCT for the batch; appends its frames to `base`.
    #[inline(always)]
    fn cepstra(&mut self) {
        let t_n = self.in_batch;
        if t_n == 0 {
            return;
        }
        let cfg = &self.cfg;
        let scale = cfg.energy_scale as f32;
        // Deferred: floored only at the smallest normal float (ln ≈ -87), far below any gain's reach.
        let floor = if self.defer_floor {
            f32::MIN_POSITIVE
        } else {
            cfg.log_floor as f32
        };
        for (lb, band) in self.log_bands.iter_mut().zip(&self.bands) {
            let mut acc = [0f32; BATCH];
            let p = &self.power[band.start..band.start + band.weights.len()];
            for (pk, &w) in p.iter().zip(&band.weights) {
                for (a, &v) in acc.iter_mut().zip(pk) {
                    *a += v * w;
                }
            }
            for (l, &e) in lb.iter_mut().zip(&acc) {
                *l = ln_pos((e * scale).max(floor));
            }
        }
        if self.defer_floor {
            for t in 0..t_n {
                self.raw
                    .extend(self.log_bands.iter().map(|lb| lb[t] as f32));
                self.raw.push(self.log_e[t] as f32);
            }
            self.in_batch = 0;
            return;
        }
        for (c, row) in self.ceps.iter_mut().zip(self.dct.chunks_exact(cfg.n_bands)) {
            let mut acc = [0f64; BATCH];
            for (lb, &w) in self.log_bands.iter().zip(row) {
                for (a, &l) in acc.iter_mut().zip(lb) {
                    *a += w * l;
                }
            }
            *c = acc;
        }
        for t in 0..t_n {
            for c in &self.ceps {
                self.base.push(c[t] as f32);
            }
            self.base.push(self.log_e[t] as f32);
        }
        self.in_batch = 0;
    }

    /// The unfloored log energy of each frame so far (with `defer_floor`; empty without).
    pub fn raw_log_energies(&self) -> impl Iterator<Item = f32> + '_ {
        self.raw
            .chunks_exact(self.cfg.n_bands + 1)
            .map(|f| f[self.cfg.n_bands])
    }

    /// With `defer_floor`: adds `log_gain` (`ln g²`) to every frame's log band energies and log
    /// energy, then floors (`ln max(·, log_floor)`) and takes the DCT, as [`Self::cepstra`] does for
    /// samples scaled by `g`.
    pub fn apply_gain(&mut self, log_gain: f64) {
        let cfg = &self.cfg;
        let nb = cfg.n_bands;
        let floor = cfg.log_floor.ln();
        let mut lb = vec![0f64; nb];
        for frame in self.raw.chunks_exact(nb + 1) {
            for (l, &r) in lb.iter_mut().zip(frame) {
                *l = (r as f64 + log_gain).max(floor);
            }
            for row in self.dct.chunks_exact(nb) {
                let c: f64 = row.iter().zip(&lb).map(|(w, l)| w * l).sum();
                self.base.push(c as f32);
            }
            self.base
                .push((frame[nb] as f64 + log_gain).max(floor) as f32);
        }
        self.raw.clear();
    }

    /// Adds deltas and accelerations; returns `[T][39]` and resets for the next input.
    pub fn take(&mut self) -> Mfcc {
        if !self.raw.is_empty() {
            self.apply_gain(0.0);
        }
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
/// openSMILE's: one extra row `tail` and then zeros (docs/reference.md §2).
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
    // Rows t-w .. t+w all inside: no edge handling.
    let inner = w..t_len.saturating_sub(w);
    for t in 0..t_len {
        acc.iter_mut().for_each(|a| *a = 0.0);
        if inner.contains(&t) {
            for k in 1..=w {
                let hi = &data[(t + k) * width + src..(t + k) * width + src + d];
                let lo = &data[(t - k) * width + src..(t - k) * width + src + d];
                for ((a, &h), &l) in acc.iter_mut().zip(hi).zip(lo) {
                    *a += k as f64 * (h as f64 - l as f64);
                }
            }
        } else {
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
        }
        let out = &mut data[t * width + src + d..t * width + src + 2 * d];
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = (a / norm) as f32;
        }
    }
}

/// Natural log of a positive, finite f32, in f64, accurate to ~1e-10 (better than `f32::ln`) and
/// written so a loop over it vectorises: x = m·2^e with m in [√½, √2), ln m = 2·atanh(s),
/// s = (m-1)/(m+1), |s| < 0.172, by its odd series to s¹¹.
#[inline(always)]
fn ln_pos(x: f32) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000) as f64;
    let big = m > std::f64::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i32;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let poly = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0)))));
    e as f64 * std::f64::consts::LN_2 + 2.0 * s * poly
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

#[cfg(test)]
mod tests {
    use super::ln_pos;

    #[test]
    fn ln_pos_matches_f64_ln() {
        let mut x = 1.0f32;
        while x < 3.0e38 {
            // Around 1, √2 (the range switch) and 2.
            for f in [1.0f32, 1.000_1, 1.0 + 0.414_2, 1.0 + 0.414_3, 1.999_9] {
                let v = x * f;
                if !v.is_finite() {
                    continue;
                }
                let want = (v as f64).ln();
                assert!(
                    (ln_pos(v) - want).abs() < 1e-9,
                    "ln({v}) = {} vs {want}",
                    ln_pos(v)
                );
            }
            x *= 1.37;
        }
    }
}
