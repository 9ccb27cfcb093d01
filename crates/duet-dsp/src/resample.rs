//! Band-limited resampling to 16 kHz, no linear interpolation of samples anywhere.
//!
//! Two engines, one behaviour. Rates whose ratio to 16 kHz reduces to small numbers (every usual
//! rate) go through rubato's synchronous FFT resampler (an FFT-domain anti-aliasing filter with a
//! Blackman-Harris window). Its block is a multiple of the reduced ratio's numerator, so a rate that
//! shares almost no factor with 16 kHz (700 639 Hz: a 1.4-million-sample block, 150 MB of plans) goes
//! instead through a windowed-sinc resampler that evaluates each output sample at its exact rational
//! position in the input, with a Kaiser-windowed kernel tabulated once (after an integer decimation
//! by the FFT engine when the ratio is large): its memory follows its filters (a quarter of a
//! megabyte of table, the decimator's block and the filter's span of input), not the ratio.
//!
//! The output has `ceil(n_in · to / from)` samples (librosa's `resample` length) and is time-aligned with
//! the input: rubato's fixed delay (half an output block) is trimmed at the start and flushed at the
//! end; the sinc engine's kernel is centred on each output sample's instant.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use crate::DspError;
use crate::wav::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

/// Smallest output block wanted per FFT: longer blocks put the anti-aliasing cut-off closer to Nyquist.
const MIN_BLOCK_OUT: usize = 2048;

/// Longest input block the FFT engine may plan (its plans and buffers take about 100 bytes per input
/// sample of the block, so at most about 13 MB). The usual rates stay below (44.1 kHz: 6 174;
/// 192 kHz: 24 576; 768 kHz: 98 304); rates beyond it go to the sinc engine.
const MAX_FFT_BLOCK_IN: usize = 1 << 17;

/// The sinc engine's kernel half-width in samples of the lower rate: 256 taps at that rate, whatever
/// the ratio, so the transition band is equally narrow (about 400 Hz at 16 kHz).
const SINC_HALF_TAPS: usize = 128;

/// Kernel table points per sample of the lower rate; linear interpolation between them errs by about
/// 1e-6 of the kernel, below the window's -100 dB stop band.
const SINC_OVERSAMPLE: usize = 512;

/// Cut-off (-6 dB) as a fraction of the lower rate: 0.47, i.e. 7.52 kHz at 16 kHz, so the kernel's
/// transition band (±200 Hz) ends below the output's Nyquist frequency.
const SINC_CUTOFF: f64 = 0.47;

/// Kaiser window shape for about 100 dB stop-band attenuation (β = 0.1102 (A − 8.7)).
const SINC_KAISER_BETA: f64 = 10.06;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn check_rate(rate: u32) -> Result<(), DspError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(DspError::BadSampleRate {
            rate,
            min: MIN_SAMPLE_RATE,
            max: MAX_SAMPLE_RATE,
        })
    }
}

/// A resampler fed block by block; memory is a few FFT blocks, or the sinc filter's span, whatever
/// the input length.
pub struct StreamResampler {
    engine: Engine,
    from: u32,
    to: u32,
    n_in: u64,
    n_out: u64,
}

enum Engine {
    Same,
    Fft(Box<FftBlocks>),
    Sinc(Box<SincChain>),
}

/// The FFT engine's input block for `from` → `to` Hz; `None` where it would exceed
/// [`MAX_FFT_BLOCK_IN`] (the sinc engine's rates).
fn fft_block(from: u32, to: u32) -> Option<usize> {
    let g = gcd(from as u64, to as u64) as usize;
    let (min_in, min_out) = (from as usize / g, to as usize / g);
    // Both FFT sizes even: with an odd input block rubato's delay is not a whole number of
    // output samples, which would shift the output by a fraction of a sample.
    let mut blocks = MIN_BLOCK_OUT.div_ceil(min_out).max(1);
    if (blocks * min_in) % 2 == 1 || (blocks * min_out) % 2 == 1 {
        blocks += 1;
    }
    (blocks * min_in <= MAX_FFT_BLOCK_IN).then_some(blocks * min_in)
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz (identity when they are equal).
    pub fn new(from: u32, to: u32) -> Result<Self, DspError> {
        Self::with_engine(from, to, |from, to| {
            Ok(if from == to {
                Engine::Same
            } else if let Some(block_in) = fft_block(from, to) {
                Engine::Fft(Box::new(FftBlocks::new(from, to, block_in)?))
            } else {
                Engine::Sinc(Box::new(SincChain::new(from, to, true)?))
            })
        })
    }

    /// The sinc engine alone whatever the rates (the FFT engine's rates too, no decimation first),
    /// to compare the two.
    #[doc(hidden)]
    pub fn new_sinc(from: u32, to: u32) -> Result<Self, DspError> {
        Self::with_engine(from, to, |from, to| {
            Ok(Engine::Sinc(Box::new(SincChain::new(from, to, false)?)))
        })
    }

    fn with_engine(
        from: u32,
        to: u32,
        engine: impl FnOnce(u32, u32) -> Result<Engine, DspError>,
    ) -> Result<Self, DspError> {
        check_rate(from)?;
        check_rate(to)?;
        Ok(StreamResampler {
            engine: engine(from, to)?,
            from,
            to,
            n_in: 0,
            n_out: 0,
        })
    }

    /// The (input, output) rates.
    pub fn rates(&self) -> (u32, u32) {
        (self.from, self.to)
    }

    /// Forgets all input, ready for a new stream at the same rates (keeps the FFT plans).
    pub fn reset(&mut self) {
        match &mut self.engine {
            Engine::Same => {}
            Engine::Fft(f) => f.reset(),
            Engine::Sinc(s) => s.reset(),
        }
        self.n_in = 0;
        self.n_out = 0;
    }

    /// Number of output samples for `n_in` input samples: ceil(n_in · to / from).
    pub fn output_len(&self, n_in: u64) -> u64 {
        ((n_in as u128 * self.to as u128).div_ceil(self.from as u128)) as u64
    }

    /// Feeds input samples; `sink` receives resampled samples as they become available.
    pub fn push(
        &mut self,
        input: &[f32],
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        if !matches!(self.engine, Engine::Same) {
            crate::plan::check_samples(input, self.n_in)?;
        }
        self.n_in += input.len() as u64;
        match &mut self.engine {
            Engine::Same => {
                self.n_out += input.len() as u64;
                sink(input)
            }
            Engine::Fft(f) => f.push(input, &mut self.n_out, sink),
            Engine::Sinc(s) => s.push(input, &mut self.n_out, sink),
        }
    }

    /// Flushes the resampler's delay line; afterwards exactly `output_len(total input)` samples have
    /// gone to `sink`.
    pub fn finish(
        &mut self,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        let target = self.output_len(self.n_in);
        match &mut self.engine {
            Engine::Same => Ok(()),
            Engine::Fft(f) => f.finish(target, &mut self.n_out, sink),
            Engine::Sinc(s) => s.finish(self.n_in, target, &mut self.n_out, sink),
        }
    }
}

/// rubato's FFT resampler fed whole blocks, its delay trimmed.
struct FftBlocks {
    fft: Fft<f32>,
    chunk_in: usize,
    in_buf: Vec<f32>,
    in_len: usize,
    out_buf: Vec<f32>,
    delay_left: usize,
}

impl FftBlocks {
    fn new(from: u32, to: u32, block_in: usize) -> Result<Self, DspError> {
        let fft = Fft::<f32>::new_custom(
            from as usize,
            to as usize,
            block_in,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .map_err(|e| DspError::Resample(e.to_string()))?;
        let chunk_in = fft.input_frames_next();
        Ok(FftBlocks {
            chunk_in,
            in_buf: vec![0.0; chunk_in],
            in_len: 0,
            out_buf: vec![0.0; fft.output_frames_max()],
            delay_left: fft.output_delay(),
            fft,
        })
    }

    fn reset(&mut self) {
        self.fft.reset();
        self.delay_left = self.fft.output_delay();
        self.in_len = 0;
    }

    fn push(
        &mut self,
        input: &[f32],
        n_out: &mut u64,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.chunk_in - self.in_len).min(rest.len());
            self.in_buf[self.in_len..self.in_len + take].copy_from_slice(&rest[..take]);
            self.in_len += take;
            rest = &rest[take..];
            if self.in_len == self.chunk_in {
                self.process_block(None, n_out, sink)?;
            }
        }
        Ok(())
    }

    fn finish(
        &mut self,
        target: u64,
        n_out: &mut u64,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        let mut guard = 0;
        while *n_out < target {
            // Zero-pad the pending input to a full block and run it (the zeros flush the delay).
            self.in_buf[self.in_len..].fill(0.0);
            self.in_len = self.chunk_in;
            self.process_block(Some(target), n_out, sink)?;
            guard += 1;
            if guard > 64 {
                return Err(DspError::Resample(
                    "the resampler did not flush its delay".into(),
                ));
            }
        }
        Ok(())
    }

    fn process_block(
        &mut self,
        limit: Option<u64>,
        n_out: &mut u64,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        let input = InterleavedSlice::new(&self.in_buf[..], 1, self.chunk_in)
            .map_err(|e| DspError::Resample(e.to_string()))?;
        let cap = self.out_buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, cap)
            .map_err(|e| DspError::Resample(e.to_string()))?;
        let (_, n) = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| DspError::Resample(e.to_string()))?;
        self.in_len = 0;
        let skip = self.delay_left.min(n);
        self.delay_left -= skip;
        let mut produced = &self.out_buf[skip..n];
        if let Some(limit) = limit {
            let room = limit.saturating_sub(*n_out) as usize;
            produced = &produced[..produced.len().min(room)];
        }
        if produced.is_empty() {
            return Ok(());
        }
        *n_out += produced.len() as u64;
        sink(produced)
    }
}

/// The sinc engine, after an integer decimation by the FFT engine when the ratio is large: the
/// kernel spans 256 samples of the lower rate, so at 700 639 Hz alone it would weigh 11 000 input
/// samples per output sample. Decimating first by D = ⌊from / (2 · to)⌋ (rubato's FFT resampler at
/// the ratio D : 1, whose transition band lies at from / 2D ≥ to, so what it lets alias lands above
/// the output band, where the sinc stage removes it) leaves the sinc stage a ratio of 2 to 3.
struct SincChain {
    decimate: Option<FftBlocks>,
    /// Decimation factor (1 without it).
    factor: u64,
    n_mid: u64,
    mid: Vec<f32>,
    sinc: SincStream,
}

impl SincChain {
    fn new(from: u32, to: u32, decimate: bool) -> Result<Self, DspError> {
        let factor = if decimate {
            (from / (2 * to)).max(1)
        } else {
            1
        };
        let fft = if factor > 1 {
            // At most 24 : 1 (768 kHz), whose block (49 152) the FFT engine always takes.
            let block = fft_block(factor, 1).ok_or_else(|| {
                DspError::Resample(format!("no FFT block for decimating by {factor}"))
            })?;
            Some(FftBlocks::new(factor, 1, block)?)
        } else {
            None
        };
        Ok(SincChain {
            decimate: fft,
            factor: factor as u64,
            n_mid: 0,
            mid: Vec::new(),
            // The intermediate rate is from / factor: the sinc stage's ratio, kept whole, is
            // from : to · factor.
            sinc: SincStream::new(from as u64, to as u64 * factor as u64),
        })
    }

    fn reset(&mut self) {
        if let Some(f) = self.decimate.as_mut() {
            f.reset();
        }
        self.n_mid = 0;
        self.mid.clear();
        self.sinc.reset();
    }

    fn push(
        &mut self,
        input: &[f32],
        n_out: &mut u64,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        let Some(fft) = self.decimate.as_mut() else {
            return self.sinc.push(input, None, n_out, sink);
        };
        let mid = &mut self.mid;
        mid.clear();
        fft.push(input, &mut self.n_mid, &mut |s| {
            mid.extend_from_slice(s);
            Ok(())
        })?;
        self.sinc.push(mid, None, n_out, sink)
    }

    fn finish(
        &mut self,
        n_in: u64,
        target: u64,
        n_out: &mut u64,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        self.mid.clear();
        if let Some(fft) = self.decimate.as_mut() {
            let mid = &mut self.mid;
            fft.finish(n_in.div_ceil(self.factor), &mut self.n_mid, &mut |s| {
                mid.extend_from_slice(s);
                Ok(())
            })?;
        }
        self.sinc.push(&self.mid, Some(target), n_out, sink)
    }
}

/// Zeroth-order modified Bessel function of the first kind (its power series), for the Kaiser window.
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, q) = (1.0, 1.0, x * x / 4.0);
    for k in 1..200 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// Windowed-sinc resampling at any ratio: output sample k lies at input instant k · from / to (kept
/// as an exact fraction), and is the sum of the input samples within the kernel's span weighted by
/// the kernel at their distance.
struct SincStream {
    from: u64,
    to: u64,
    /// min(1, to / from): the kernel is drawn in samples of the lower rate.
    scale: f64,
    /// Kernel half-width in input samples.
    half_in: u64,
    /// The kernel at |u| = m / SINC_OVERSAMPLE samples of the lower rate, m = 0..=SINC_HALF_TAPS · SINC_OVERSAMPLE (+1 guard).
    table: Vec<f32>,
    /// Input samples from absolute index `base` on.
    hist: Vec<f32>,
    base: u64,
}

impl SincStream {
    fn new(from: u64, to: u64) -> Self {
        let scale = (to as f64 / from as f64).min(1.0);
        let half = SINC_HALF_TAPS as f64;
        let n = SINC_HALF_TAPS * SINC_OVERSAMPLE;
        let norm = bessel_i0(SINC_KAISER_BETA);
        let table = (0..=n + 1)
            .map(|m| {
                let u = m as f64 / SINC_OVERSAMPLE as f64;
                if u >= half {
                    return 0.0;
                }
                let x = std::f64::consts::PI * 2.0 * SINC_CUTOFF * u;
                let sinc = if m == 0 { 1.0 } else { x.sin() / x };
                let r = u / half;
                let window = bessel_i0(SINC_KAISER_BETA * (1.0 - r * r).sqrt()) / norm;
                (2.0 * SINC_CUTOFF * sinc * window) as f32
            })
            .collect();
        SincStream {
            from,
            to,
            scale,
            half_in: (half / scale).ceil() as u64,
            table,
            hist: Vec::new(),
            base: 0,
        }
    }

    fn reset(&mut self) {
        self.hist.clear();
        self.base = 0;
    }

    /// The kernel at `d` input samples from the output instant.
    #[inline]
    fn kernel(&self, d: f64) -> f32 {
        let pos = d.abs() * self.scale * SINC_OVERSAMPLE as f64;
        let m = pos as usize;
        if m + 1 >= self.table.len() {
            return 0.0;
        }
        let f = (pos - m as f64) as f32;
        self.table[m] + f * (self.table[m + 1] - self.table[m])
    }

    /// Appends `input` and emits every output sample whose span of input is complete; with
    /// `finish = Some(target)` the input is over (zeros after it) and outputs run up to `target`.
    fn push(
        &mut self,
        input: &[f32],
        finish: Option<u64>,
        n_out: &mut u64,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        // Fed in pieces so the history stays near the kernel's span plus one piece.
        let piece = (4 * self.half_in as usize).max(4096);
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let take = rest.len().min(piece);
            self.hist.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let last = rest.is_empty();
            let end = self.base + self.hist.len() as u64;
            out.clear();
            loop {
                let k = *n_out + out.len() as u64;
                if finish.is_some_and(|target| k >= target) {
                    break;
                }
                let num = k as u128 * self.from as u128;
                let centre = (num / self.to as u128) as u64;
                if finish.is_none() || !last {
                    // Not at the end: wait for the whole span.
                    if centre + self.half_in >= end {
                        break;
                    }
                }
                let frac = (num % self.to as u128) as f64 / self.to as f64;
                let lo = centre.saturating_sub(self.half_in).max(self.base);
                let hi = (centre + self.half_in + 1).min(end);
                let mut acc = 0f64;
                for j in lo..hi {
                    let d = (centre as f64 - j as f64) + frac;
                    acc += (self.hist[(j - self.base) as usize] * self.kernel(d)) as f64;
                }
                out.push((acc * self.scale) as f32);
            }
            if !out.is_empty() {
                *n_out += out.len() as u64;
                sink(&out)?;
            }
            // Drop the input no later output needs.
            let next_centre = ((*n_out as u128 * self.from as u128) / self.to as u128) as u64;
            let keep_from = next_centre.saturating_sub(self.half_in).max(self.base);
            let drop = ((keep_from - self.base) as usize).min(self.hist.len());
            self.hist.drain(..drop);
            self.base += drop as u64;
            if last {
                return Ok(());
            }
        }
    }
}

/// Resamples a whole mono signal from `from_rate` to `to_rate` Hz (band-limited; identity when equal).
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Result<Vec<f32>, DspError> {
    let mut r = StreamResampler::new(from_rate, to_rate)?;
    let mut out = Vec::with_capacity(r.output_len(samples.len() as u64) as usize);
    let mut sink = |s: &[f32]| {
        out.extend_from_slice(s);
        Ok(())
    };
    r.push(samples, &mut sink)?;
    r.finish(&mut sink)?;
    Ok(out)
}
