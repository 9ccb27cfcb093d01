//! The two mel spectrograms (paper section 2.2), computed as `librosa.feature.melspectrogram` does with its
//! defaults (REFERENCE.md section 3): periodic Hann window of `n_fft`, frames centred with `n_fft / 2`
//! zeros of padding on both sides, |STFT|², Slaney mel scale with Slaney area normalisation.
//! Then the paper's nearest-neighbour resize along time and the log.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::config::MelConfig;

/// A power mel spectrogram, row-major `[n_mels][n_frames]` (librosa's layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Mel {
    /// Number of mel bands (rows).
    pub n_mels: usize,
    /// Number of frames (columns).
    pub n_frames: usize,
    /// `data[m * n_frames + t]`.
    pub data: Vec<f32>,
}

impl Mel {
    /// Value of band `m` at frame `t`.
    pub fn at(&self, m: usize, t: usize) -> f32 {
        self.data[m * self.n_frames + t]
    }

    /// Nearest-neighbour resize along time (paper section 2.2) to `target_frames` columns: output frame
    /// `i` takes input frame `min(floor(i · n_in / n_out), n_in - 1)`, PyTorch's
    /// `F.interpolate(mode="nearest")` convention (computed in exact integer arithmetic). An empty
    /// spectrogram or a zero target gives an empty result.
    pub fn resize_time_nearest(&self, target_frames: usize) -> Mel {
        let n_in = self.n_frames;
        if n_in == 0 || target_frames == 0 {
            return Mel {
                n_mels: self.n_mels,
                n_frames: if n_in == 0 { 0 } else { target_frames },
                data: Vec::new(),
            };
        }
        let src: Vec<usize> = (0..target_frames)
            .map(|i| ((i as u128 * n_in as u128 / target_frames as u128) as usize).min(n_in - 1))
            .collect();
        let mut data = Vec::with_capacity(self.n_mels * target_frames);
        for row in self.data.chunks_exact(n_in) {
            data.extend(src.iter().map(|&j| row[j]));
        }
        Mel {
            n_mels: self.n_mels,
            n_frames: target_frames,
            data,
        }
    }

    /// `10 · log10(max(x, floor))` elementwise (librosa's `power_to_db` with `ref = 1`, `amin = floor`,
    /// no `top_db`). A non-positive or non-finite `floor` is replaced by 1e-10 so the result stays finite.
    pub fn to_log(&self, floor: f32) -> Mel {
        let floor = if floor > 0.0 && floor.is_finite() {
            floor
        } else {
            1e-10
        };
        Mel {
            n_mels: self.n_mels,
            n_frames: self.n_frames,
            data: self
                .data
                .iter()
                .map(|&x| 10.0 * x.max(floor).log10())
                .collect(),
        }
    }
}

/// Slaney's mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, logarithmic above.
pub fn hz_to_mel_slaney(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

/// Inverse of [`hz_to_mel_slaney`].
pub fn mel_to_hz_slaney(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// One triangular filter stored sparsely: weights for bins `start .. start + weights.len()`.
#[derive(Clone, Debug)]
pub(crate) struct SparseFilter {
    pub start: usize,
    pub weights: Vec<f64>,
}

/// librosa's `filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")`, including its final
/// cast to float32 (the weights are rounded to f32 and then used in f64).
pub(crate) fn slaney_filterbank(sr: f64, cfg: &MelConfig) -> Vec<SparseFilter> {
    let n_bins = cfg.n_fft / 2 + 1;
    // numpy.fft.rfftfreq(n_fft, 1/sr): k * (1 / (n_fft * (1/sr))).
    let val = 1.0 / (cfg.n_fft as f64 * (1.0 / sr));
    let fft_freqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * val).collect();
    let (mlo, mhi) = (
        hz_to_mel_slaney(cfg.fmin as f64),
        hz_to_mel_slaney(cfg.fmax as f64),
    );
    let n_pts = cfg.n_mels + 2;
    let mel_f: Vec<f64> = (0..n_pts)
        .map(|i| {
            // numpy.linspace: start + i * step, with the last point exactly `stop`.
            let m = if i == n_pts - 1 {
                mhi
            } else {
                mlo + i as f64 * ((mhi - mlo) / (n_pts - 1) as f64)
            };
            mel_to_hz_slaney(m)
        })
        .collect();
    (0..cfg.n_mels)
        .map(|i| {
            let fdiff_lo = mel_f[i + 1] - mel_f[i];
            let fdiff_hi = mel_f[i + 2] - mel_f[i + 1];
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            let w: Vec<f64> = fft_freqs
                .iter()
                .map(|&f| {
                    let lower = -(mel_f[i] - f) / fdiff_lo;
                    let upper = (mel_f[i + 2] - f) / fdiff_hi;
                    // librosa stores the triangle in a float32 array, then scales it in place.
                    let tri = 0f64.max(lower.min(upper)) as f32;
                    (tri as f64 * enorm) as f32 as f64
                })
                .collect();
            let start = w.iter().position(|&v| v != 0.0).unwrap_or(0);
            let end = w.iter().rposition(|&v| v != 0.0).map_or(start, |e| e + 1);
            SparseFilter {
                start,
                weights: w[start..end].to_vec(),
            }
        })
        .collect()
}

/// Per-spectrogram state: FFT plan, window, filterbank and scratch, all made once.
pub(crate) struct MelAnalyzer {
    pub cfg: MelConfig,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    power: Vec<f64>,
    filters: Vec<SparseFilter>,
    /// Frames computed so far, frame-major `[t][n_mels]` (transposed at the end).
    pub out: Vec<f32>,
}

impl MelAnalyzer {
    pub fn new(sr: u32, cfg: &MelConfig, planner: &mut RealFftPlanner<f64>) -> Self {
        let n = cfg.n_fft;
        let fft = planner.plan_fft_forward(n);
        // Periodic Hann (scipy.signal.get_window("hann", n, fftbins=True)).
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
            .collect();
        MelAnalyzer {
            cfg: cfg.clone(),
            window,
            frame: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            power: vec![0.0; n / 2 + 1],
            filters: slaney_filterbank(sr as f64, cfg),
            fft,
            out: Vec::new(),
        }
    }

    /// Window, FFT, |X|², mel: appends one frame of `n_mels` values to `out`. `frame` has `n_fft` samples.
    pub fn process_frame(&mut self, frame: &[f32]) {
        for ((d, &x), &w) in self.frame.iter_mut().zip(frame).zip(&self.window) {
            *d = x as f64 * w;
        }
        self.fft
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
            .expect("buffer sizes come from the plan");
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        for f in &self.filters {
            let p = &self.power[f.start..f.start + f.weights.len()];
            let s: f64 = p.iter().zip(&f.weights).map(|(a, b)| a * b).sum();
            self.out.push(s as f32);
        }
    }

    /// Takes the computed frames as a `[n_mels][n_frames]` spectrogram and resets for the next input.
    pub fn take(&mut self) -> Mel {
        let n_mels = self.cfg.n_mels;
        let n_frames = self.out.len() / n_mels;
        let mut data = vec![0f32; n_mels * n_frames];
        for (t, col) in self.out.chunks_exact(n_mels).enumerate() {
            for (m, &v) in col.iter().enumerate() {
                data[m * n_frames + t] = v;
            }
        }
        self.out.clear();
        Mel {
            n_mels,
            n_frames,
            data,
        }
    }
}
