//! The one deterministic generator of the workspace (SplitMix64): weight initialisation, folds,
//! synthetic corpora, augmentation and the per-epoch shuffles. The same seed gives the same stream on
//! every platform, backend and crate version, independent of burn's own generator.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from one seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A generator for a sub-stream named by `parts` (e.g. seed, voice, sentence, class), so that
    /// adding a stream does not shift any other.
    pub fn derive(parts: &[u64]) -> Self {
        let mut h = 0x243F_6A88_85A3_08D3u64;
        for &p in parts {
            h = SplitMix64(h ^ p).next_u64();
        }
        SplitMix64(h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in [0, n), without modulo bias (Lemire's multiply-shift).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// `n` values uniform in [-bound, bound).
    pub fn uniform_vec(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n).map(|_| self.range(-bound, bound) as f32).collect()
    }

    /// An independent stream for one tensor, so adding a tensor does not shift every other one.
    pub fn fork(&mut self, name: &str) -> SplitMix64 {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        SplitMix64::new(self.next_u64() ^ h)
    }
}
