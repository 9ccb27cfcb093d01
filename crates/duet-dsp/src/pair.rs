//! Two real frames per complex FFT: z = a + i·b, Z = FFT(z), then for k = 0..=N/2
//! A[k] = (Z[k] + conj Z[N-k]) / 2 and B[k] = (Z[k] - conj Z[N-k]) / 2i, so
//! |A[k]|² = ((Zr[k] + Zr[N-k])² + (Zi[k] - Zi[N-k])²) / 4 and
//! |B[k]|² = ((Zr[k] - Zr[N-k])² + (Zi[k] + Zi[N-k])²) / 4.
//! Half the transforms of one real FFT per frame and no twiddle post-processing.

use std::ops::{Add, Mul, Sub};
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftNum, FftPlanner};

/// A complex FFT of size N holding up to two real frames.
pub(crate) struct PairFft<T: FftNum> {
    fft: Arc<dyn Fft<T>>,
    /// Frame a in the real parts, frame b in the imaginary parts.
    pub buf: Vec<Complex<T>>,
    scratch: Vec<Complex<T>>,
    /// Whether frame a is loaded and waits for its partner.
    pub pending: bool,
}

impl<T: FftNum + Add<Output = T> + Sub<Output = T> + Mul<Output = T>> PairFft<T> {
    pub fn new(n: usize, planner: &mut FftPlanner<T>) -> Self {
        let fft = planner.plan_fft_forward(n);
        let scratch = vec![Complex::new(T::zero(), T::zero()); fft.get_inplace_scratch_len()];
        PairFft {
            buf: vec![Complex::new(T::zero(), T::zero()); n],
            scratch,
            fft,
            pending: false,
        }
    }

    /// Transforms the loaded pair and writes both frames' power spectra into a bin-major batch
    /// buffer: `out[k * stride + col] = |A[k]|²`, `out[k * stride + col + 1] = |B[k]|²`, k = 0..=N/2.
    pub fn powers_into(&mut self, out: &mut [T], stride: usize, col: usize) {
        self.fft
            .process_with_scratch(&mut self.buf, &mut self.scratch);
        let n = self.buf.len();
        let half = n / 2;
        let quarter = T::from_f64(0.25).expect("0.25 is representable");
        let z = &self.buf;
        // k = 0 and k = N/2 pair with themselves.
        for k in [0, half] {
            let zk = z[k];
            out[k * stride + col] = zk.re * zk.re;
            out[k * stride + col + 1] = zk.im * zk.im;
        }
        // k = 1 .. N/2 - 1 pairs with N - k: walk the upper half backwards.
        let (lo, hi) = (&z[1..half], &z[half + 1..]);
        let rows = out[stride..half * stride].chunks_exact_mut(stride);
        for ((row, zk), zn) in rows.zip(lo).zip(hi.iter().rev()) {
            let (sr, di) = (zk.re + zn.re, zk.im - zn.im);
            let (dr, si) = (zk.re - zn.re, zk.im + zn.im);
            row[col] = (sr * sr + di * di) * quarter;
            row[col + 1] = (dr * dr + si * si) * quarter;
        }
        self.pending = false;
    }
}
