//! Two real frames per complex FFT: z = a + i·b, Z = FFT(z), then for k = 0..=N/2
//! A[k] = (Z[k] + conj Z[N-k]) / 2 and B[k] = (Z[k] - conj Z[N-k]) / 2i, so
//! |A[k]|² = ((Zr[k] + Zr[N-k])² + (Zi[k] - Zi[N-k])²) / 4 and
//! |B[k]|² = ((Zr[k] - Zr[N-k])² + (Zi[k] + Zi[N-k])²) / 4.
//! The spectra are written ×4 (k = 1..N/2-1) or ×1 (k = 0, N/2, which pair with themselves); callers fold
//! the exact factor 1/4 into their filterbank weights (see [`quarter_weight`]).
//! Half the transforms of one real FFT per frame and no twiddle post-processing.

use std::ops::{Add, Mul, Sub};
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftNum, FftPlanner};

/// Frames per batch of band sums (even: frames enter the FFT in pairs). 16 keeps a batch of power
/// spectra in L1 for the spectrogram sizes used here.
pub(crate) const BATCH: usize = 16;

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
    /// buffer: `out[k][col] = |A[k]|²`, `out[k][col + 1] = |B[k]|²`, k = 0..=N/2.
    #[inline(always)]
    pub fn powers_into(&mut self, out: &mut [[T; BATCH]], col: usize) {
        self.fft
            .process_with_scratch(&mut self.buf, &mut self.scratch);
        let n = self.buf.len();
        let half = n / 2;
        let z = &self.buf;
        // k = 0 and k = N/2 pair with themselves.
        for k in [0, half] {
            let zk = z[k];
            // Stored ×4 like the other bins, so one weight scale fits all.
            let four = T::from_f64(4.0).expect("4 is representable");
            out[k][col] = zk.re * zk.re * four;
            out[k][col + 1] = zk.im * zk.im * four;
        }
        // k = 1 .. N/2 - 1 pairs with N - k: walk the upper half backwards.
        let (lo, hi) = (&z[1..half], &z[half + 1..]);
        // Each bin's two powers are stored as one pair: stored separately, the loop vectorises
        // across bins with scattered single stores.
        debug_assert!(col.is_multiple_of(2), "pairs start at even columns");
        let pair = col / 2;
        for ((row, zk), zn) in out[1..half].iter_mut().zip(lo).zip(hi.iter().rev()) {
            let (sr, di) = (zk.re + zn.re, zk.im - zn.im);
            let (dr, si) = (zk.re - zn.re, zk.im + zn.im);
            row.as_chunks_mut::<2>().0[pair] = [sr * sr + di * di, dr * dr + si * si];
        }
        self.pending = false;
    }

    /// At the end of the input: a frame waiting for its partner is transformed alone. `lone` yields
    /// its (windowed) samples: they become the real parts, the imaginary parts and the padding to the
    /// FFT size are zero (a zero partner). Its power spectrum goes into column `*col` of `out`, and
    /// `*col` advances past it. Nothing happens when no frame waits.
    pub fn flush_lone(
        &mut self,
        lone: impl Iterator<Item = T>,
        out: &mut [[T; BATCH]],
        col: &mut usize,
    ) {
        if !self.pending {
            return;
        }
        let zero = Complex::new(T::zero(), T::zero());
        self.buf.fill(zero);
        for (c, a) in self.buf.iter_mut().zip(lone) {
            c.re = a;
        }
        self.powers_into(out, *col);
        *col += 1;
    }
}

/// A filterbank weight scaled for spectra written by [`PairFft::powers_into`] (×4): `w / 4`, exact in
/// binary floating point, so the band sums equal those of the true power spectra.
pub(crate) fn quarter_weight(w: f64) -> f64 {
    w * 0.25
}
