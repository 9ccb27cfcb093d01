//! Small reductions written with independent accumulators so the compiler can vectorise them (a plain
//! sequential float sum cannot be reordered, so it stays scalar).

/// Σ x² of f32 samples, accumulated in f64.
#[inline(always)]
pub(crate) fn sum_sq_f64(x: &[f32]) -> f64 {
    // Eight lanes: one AVX-512 register, or two AVX2 ones (the frame loop is compiled for both).
    let mut acc = [0f64; 8];
    let (c, r) = x.as_chunks::<8>();
    for v in c {
        for k in 0..8 {
            let y = v[k] as f64;
            acc[k] += y * y;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for &v in r {
        s += (v as f64) * (v as f64);
    }
    s
}

/// Whether every sample is finite and within ±`limit` (no early exit, so it vectorises).
#[inline]
pub(crate) fn all_within(x: &[f32], limit: f32) -> bool {
    // NaN fails `<=`, so it counts as out of range.
    x.iter().fold(true, |ok, v| ok & (v.abs() <= limit))
}
