//! Band-limited resampling to 16 kHz with rubato's synchronous FFT resampler (an FFT-domain anti-aliasing
//! filter with a Blackman-Harris window; no linear interpolation anywhere).
//!
//! The output has `ceil(n_in · to / from)` samples (librosa's `resample` length) and is time-aligned with
//! the input: rubato's fixed delay (half an output block) is trimmed at the start and flushed at the end.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use crate::DspError;
use crate::wav::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

/// Smallest output block wanted per FFT: longer blocks put the anti-aliasing cut-off closer to Nyquist.
const MIN_BLOCK_OUT: usize = 2048;

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

/// A resampler fed block by block; memory is a few FFT blocks whatever the input length.
pub struct StreamResampler {
    inner: Option<Fft<f32>>,
    from: u32,
    to: u32,
    chunk_in: usize,
    in_buf: Vec<f32>,
    in_len: usize,
    out_buf: Vec<f32>,
    delay_left: usize,
    n_in: u64,
    n_out: u64,
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz (identity when they are equal).
    pub fn new(from: u32, to: u32) -> Result<Self, DspError> {
        check_rate(from)?;
        check_rate(to)?;
        let mut s = StreamResampler {
            inner: None,
            from,
            to,
            chunk_in: 0,
            in_buf: Vec::new(),
            in_len: 0,
            out_buf: Vec::new(),
            delay_left: 0,
            n_in: 0,
            n_out: 0,
        };
        if from != to {
            let g = gcd(from as u64, to as u64) as usize;
            let (min_in, min_out) = (from as usize / g, to as usize / g);
            // Both FFT sizes even: with an odd input block rubato's delay is not a whole number of
            // output samples, which would shift the output by a fraction of a sample.
            let mut blocks = MIN_BLOCK_OUT.div_ceil(min_out).max(1);
            if (blocks * min_in) % 2 == 1 || (blocks * min_out) % 2 == 1 {
                blocks += 1;
            }
            let fft = Fft::<f32>::new_custom(
                from as usize,
                to as usize,
                blocks * min_in,
                1,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Both,
            )
            .map_err(|e| DspError::Resample(e.to_string()))?;
            s.chunk_in = fft.input_frames_next();
            s.in_buf = vec![0.0; s.chunk_in];
            s.out_buf = vec![0.0; fft.output_frames_max()];
            s.delay_left = fft.output_delay();
            s.inner = Some(fft);
        }
        Ok(s)
    }

    /// The (input, output) rates.
    pub fn rates(&self) -> (u32, u32) {
        (self.from, self.to)
    }

    /// Forgets all input, ready for a new stream at the same rates (keeps the FFT plans).
    pub fn reset(&mut self) {
        if let Some(fft) = self.inner.as_mut() {
            fft.reset();
            self.delay_left = fft.output_delay();
        }
        self.in_len = 0;
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
        if self.inner.is_some() {
            crate::plan::check_samples(input, self.n_in)?;
        }
        self.n_in += input.len() as u64;
        if self.inner.is_none() {
            self.n_out += input.len() as u64;
            return sink(input);
        }
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.chunk_in - self.in_len).min(rest.len());
            self.in_buf[self.in_len..self.in_len + take].copy_from_slice(&rest[..take]);
            self.in_len += take;
            rest = &rest[take..];
            if self.in_len == self.chunk_in {
                self.process_block(None, sink)?;
            }
        }
        Ok(())
    }

    /// Flushes the resampler's delay line; afterwards exactly `output_len(total input)` samples have
    /// gone to `sink`.
    pub fn finish(
        &mut self,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        if self.inner.is_none() {
            return Ok(());
        }
        let target = self.output_len(self.n_in);
        let mut guard = 0;
        while self.n_out < target {
            // Zero-pad the pending input to a full block and run it (the zeros flush the delay).
            self.in_buf[self.in_len..].fill(0.0);
            self.in_len = self.chunk_in;
            self.process_block(Some(target), sink)?;
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
        sink: &mut dyn FnMut(&[f32]) -> Result<(), DspError>,
    ) -> Result<(), DspError> {
        let fft = self.inner.as_mut().expect("resampler present");
        let input = InterleavedSlice::new(&self.in_buf[..], 1, self.chunk_in)
            .map_err(|e| DspError::Resample(e.to_string()))?;
        let cap = self.out_buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, cap)
            .map_err(|e| DspError::Resample(e.to_string()))?;
        let (_, n) = fft
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| DspError::Resample(e.to_string()))?;
        self.in_len = 0;
        let skip = self.delay_left.min(n);
        self.delay_left -= skip;
        let mut produced = &self.out_buf[skip..n];
        if let Some(limit) = limit {
            let room = limit.saturating_sub(self.n_out) as usize;
            produced = &produced[..produced.len().min(room)];
        }
        if produced.is_empty() {
            return Ok(());
        }
        self.n_out += produced.len() as u64;
        sink(produced)
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
