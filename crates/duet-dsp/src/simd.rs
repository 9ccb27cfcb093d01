//! Small reductions written with independent accumulators so the compiler can vectorise them (a plain
//! sequential float sum cannot be reordered, so it stays scalar), and the choice of vector extension
//! for the loops compiled more than once (the features' frame loop, the model's gate passes).

/// Which compilation of a loop compiled for several vector extensions runs: the widest the CPU
/// has. Rust never reorders or fuses float operations, so every compilation gives the same bits.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512 (F, VL, DQ, BW) and FMA.
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// Whatever the build targets (SSE2 on x86-64, simd128 or scalar in wasm).
    Baseline,
}

impl Isa {
    /// The widest extension this CPU has (detected once, then cached).
    pub fn detect() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f")
                    && has!("avx512vl")
                    && has!("avx512dq")
                    && has!("avx512bw")
                    && has!("fma")
                {
                    return Isa::Avx512;
                }
                if has!("avx2") && has!("fma") {
                    return Isa::Avx2;
                }
            }
            Isa::Baseline
        })
    }
}

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
