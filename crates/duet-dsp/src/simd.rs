//! Small reductions written with independent accumulators so the compiler can vectorise them (a plain
//! sequential float sum cannot be reordered, so it stays scalar).

/// Σ a·b over equal-length slices.
#[inline]
pub(crate) fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Σ a·b over equal-length f32 slices.
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Σ x² of f32 samples, accumulated in f64.
#[inline]
pub(crate) fn sum_sq_f64(x: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let c = x.chunks_exact(4);
    let r = c.remainder();
    for v in c {
        for k in 0..4 {
            let y = v[k] as f64;
            acc[k] += y * y;
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
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
