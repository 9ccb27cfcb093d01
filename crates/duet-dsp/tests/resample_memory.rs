//! What the resampler allocates for a rate that shares no factor with 16 kHz: its own binary, so a
//! counting allocator sees only this test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use duet_dsp::{SAMPLE_RATE, resample};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        NOW.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// A tenth of a second at 700 639 Hz (a prime ratio to 16 kHz: an FFT plan would need a block of
/// 1.4 million samples, about 150 MB) is resampled within 8 MB of heap, its input included; 44.1 kHz,
/// for scale, stays within the same bound.
#[test]
fn irreducible_rates_resample_in_bounded_memory() {
    for rate in [700_639u32, 44_100] {
        let x: Vec<f32> = (0..rate as usize / 10)
            .map(|i| (i as f32 * 0.001).sin() * 0.3)
            .collect();
        let before = NOW.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let y = resample(&x, rate, SAMPLE_RATE).unwrap();
        let peak = PEAK.load(Ordering::SeqCst) - before;
        eprintln!("{rate} Hz: peak heap {:.1} MB", peak as f64 / 1e6);
        assert_eq!(
            y.len() as u64,
            (x.len() as u64 * 16_000).div_ceil(rate as u64)
        );
        assert!(
            peak < 8_000_000,
            "{rate} Hz: the resampler took {:.1} MB of heap",
            peak as f64 / 1e6
        );
    }
}
