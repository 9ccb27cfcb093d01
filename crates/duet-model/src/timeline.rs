//! The timeline of a long recording: the 16 kHz signal cut into overlapping windows, each window
//! classified on its own. The page draws it for long files and for its live mode; `duet predict`
//! can use the same code.
//!
//! Every window has the same length (the last one ends at the signal's end, so it may overlap its
//! neighbour more than the hop), which lets the windows go through the model as one batch without
//! padding; a signal shorter than one window is a single segment covering all of it.

use duet_dsp::FeaturePlan;
use serde::Serialize;

use crate::error::ModelError;
use crate::input::Prepared;
use crate::predict::{Prediction, Predictor};

/// How a signal is cut into segments.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelineConfig {
    /// Length of each window in seconds (3 s: about an IEMOCAP utterance's length, paper §2.1).
    pub window_s: f32,
    /// Distance between the starts of consecutive windows in seconds.
    pub hop_s: f32,
    /// Windows classified per model call (one GPU dispatch and one read-back per batch).
    pub batch: usize,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            window_s: 3.0,
            hop_s: 1.5,
            batch: 8,
        }
    }
}

/// A segment of the signal, in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// One classified segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Start of the window in seconds.
    pub start_s: f32,
    /// End of the window in seconds.
    pub end_s: f32,
    /// The window's prediction.
    pub prediction: Prediction,
}

/// The windows of a signal of `n_samples` at `sample_rate` (see the module docs). Empty for an
/// empty signal; a hop or window of zero samples is treated as one sample.
pub fn spans(n_samples: usize, sample_rate: u32, config: &TimelineConfig) -> Vec<Span> {
    let rate = sample_rate as f64;
    let window = ((config.window_s as f64 * rate).round() as usize).max(1);
    let hop = ((config.hop_s as f64 * rate).round() as usize).max(1);
    if n_samples == 0 {
        return Vec::new();
    }
    if n_samples <= window {
        return vec![Span {
            start: 0,
            end: n_samples,
        }];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start + window < n_samples {
        out.push(Span {
            start,
            end: start + window,
        });
        start += hop;
    }
    // The last window ends at the signal's end.
    let last = Span {
        start: n_samples - window,
        end: n_samples,
    };
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

/// Longest signal classified in one model call, in seconds (5 min). One call's memory grows with
/// the signal (its features and every step of each recurrence: about 1.3 GB per hour on the CPU); a
/// longer signal's overall answer is the mean of its timeline's windows
/// ([`Predictor::mean_of`]), classified a batch at a time, so memory stays that of one batch
/// whatever the length.
pub const WHOLE_MAX_S: f32 = 300.0;

/// Whether a signal of `n_samples` at `rate` is classified in one call (else: the mean of its
/// windows, see [`WHOLE_MAX_S`]).
pub fn classified_whole(n_samples: u64, rate: u32) -> bool {
    n_samples as f64 <= WHOLE_MAX_S as f64 * rate as f64
}

/// Cuts a signal that arrives in pieces (a file read block by block) into the windows of
/// [`spans`], holding only about one window of samples.
pub struct Windower {
    window: usize,
    hop: usize,
    /// Samples from `buf_start` (absolute index) to `seen`.
    buf: Vec<f32>,
    buf_start: usize,
    seen: usize,
    /// Start of the next window.
    next: usize,
    last: Option<Span>,
}

impl Windower {
    /// Windows of `config` for samples at `rate`.
    pub fn new(rate: u32, config: &TimelineConfig) -> Self {
        let rate = rate as f64;
        Windower {
            window: ((config.window_s as f64 * rate).round() as usize).max(1),
            hop: ((config.hop_s as f64 * rate).round() as usize).max(1),
            buf: Vec::new(),
            buf_start: 0,
            seen: 0,
            next: 0,
            last: None,
        }
    }

    /// Samples seen so far.
    pub fn samples_seen(&self) -> usize {
        self.seen
    }

    /// Appends `samples`; `emit` gets every window that is now complete (a window is emitted once a
    /// sample after it has arrived: the last one ends at the signal's end, which only
    /// [`Windower::finish`] knows).
    pub fn push<E>(
        &mut self,
        samples: &[f32],
        mut emit: impl FnMut(Span, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.buf.extend_from_slice(samples);
        self.seen += samples.len();
        while self.next + self.window < self.seen {
            let span = Span {
                start: self.next,
                end: self.next + self.window,
            };
            emit(
                span,
                &self.buf[span.start - self.buf_start..span.end - self.buf_start],
            )?;
            self.last = Some(span);
            self.next += self.hop;
        }
        // Keep what the next window and the end-aligned last one need.
        let keep = self.next.min(self.seen.saturating_sub(self.window));
        if keep - self.buf_start > self.window.max(self.buf.len() / 2) {
            self.buf.drain(..keep - self.buf_start);
            self.buf_start = keep;
        }
        Ok(())
    }

    /// Ends the signal: `emit` gets the last window (ending at the signal's end) unless it was
    /// already emitted, or the whole signal when it is shorter than a window.
    pub fn finish<E>(self, mut emit: impl FnMut(Span, &[f32]) -> Result<(), E>) -> Result<(), E> {
        let n = self.seen;
        if n == 0 {
            return Ok(());
        }
        let last = Span {
            start: n.saturating_sub(self.window),
            end: n,
        };
        if self.last == Some(last) {
            return Ok(());
        }
        emit(last, &self.buf[last.start - self.buf_start..])
    }
}

/// Classifies windows as they come, a batch at a time (native): memory is one batch's features
/// and the segments, whatever the signal's length.
#[cfg(not(target_family = "wasm"))]
pub struct Streamed<'a> {
    predictor: &'a Predictor,
    rate: u32,
    batch: usize,
    pending: Vec<(Span, Prepared)>,
    segments: Vec<Segment>,
}

#[cfg(not(target_family = "wasm"))]
impl<'a> Streamed<'a> {
    /// Windows of samples at `rate`, classified `batch` at a time.
    pub fn new(predictor: &'a Predictor, rate: u32, batch: usize) -> Self {
        Streamed {
            predictor,
            rate,
            batch: batch.max(1),
            pending: Vec::new(),
            segments: Vec::new(),
        }
    }

    /// Computes the features of one window (`samples`, at `span`) and classifies the batch once it
    /// is full.
    pub fn add(
        &mut self,
        plan: &mut FeaturePlan,
        span: Span,
        samples: &[f32],
    ) -> Result<(), ModelError> {
        self.pending
            .push((span, prepare_window(self.predictor, plan, samples)?));
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    /// Segments classified so far.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    fn flush(&mut self) -> Result<(), ModelError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let predictions = self.predictor.predict_prepared(&inputs(&self.pending))?;
        let pending = std::mem::take(&mut self.pending);
        self.segments
            .extend(segments(self.rate, &pending, predictions));
        Ok(())
    }

    /// Classifies what is left; all segments in time order.
    pub fn finish(mut self) -> Result<Vec<Segment>, ModelError> {
        self.flush()?;
        Ok(self.segments)
    }
}

/// Computes and prepares the features of the windows `spans` of `samples_16k` (CPU work, no
/// device): a batch of the timeline at a time (the page), so that a long signal's windows never
/// all sit in memory at once.
pub fn prepare(
    predictor: &Predictor,
    plan: &mut FeaturePlan,
    samples_16k: &[f32],
    spans: &[Span],
) -> Result<Vec<(Span, Prepared)>, ModelError> {
    spans
        .iter()
        .map(|&span| {
            Ok((
                span,
                prepare_window(predictor, plan, &samples_16k[span.start..span.end])?,
            ))
        })
        .collect()
}

/// Computes and prepares the features of one window's samples.
pub fn prepare_window(
    predictor: &Predictor,
    plan: &mut FeaturePlan,
    window: &[f32],
) -> Result<Prepared, ModelError> {
    predictor.prepare(&plan.compute(window)?)
}

/// The model inputs of a batch of windows.
fn inputs(chunk: &[(Span, Prepared)]) -> Vec<&Prepared> {
    chunk.iter().map(|(_, p)| p).collect()
}

/// The segments of a batch of windows (samples at `rate`) with their predictions.
fn segments(
    rate: u32,
    chunk: &[(Span, Prepared)],
    predictions: Vec<Prediction>,
) -> impl Iterator<Item = Segment> + '_ {
    chunk
        .iter()
        .zip(predictions)
        .map(move |((span, _), prediction)| Segment {
            start_s: span.start as f32 / rate as f32,
            end_s: span.end as f32 / rate as f32,
            prediction,
        })
}

/// Classifies prepared windows (from [`prepare`]) in batches of `batch`, one device call and
/// read-back each, without blocking (the page: [`prepare`] needs the feature plan, this only the
/// shared predictor, so no borrow of the plan is held across the awaits). `rate`: the samples' rate, for the times.
pub async fn predict_async(
    predictor: &Predictor,
    windows: &[(Span, Prepared)],
    rate: u32,
    batch: usize,
) -> Result<Vec<Segment>, ModelError> {
    let mut out = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(batch.max(1)) {
        let predictions = predictor.predict_prepared_async(&inputs(chunk)).await?;
        out.extend(segments(rate, chunk, predictions));
    }
    Ok(out)
}

/// The timeline of `samples_16k` (native; blocks on the device), a batch of windows at a time
/// ([`Windower`], [`Streamed`]).
#[cfg(not(target_family = "wasm"))]
pub fn timeline(
    predictor: &Predictor,
    plan: &mut FeaturePlan,
    samples_16k: &[f32],
    config: &TimelineConfig,
) -> Result<Vec<Segment>, ModelError> {
    let rate = plan.config().sample_rate;
    let mut windower = Windower::new(rate, config);
    let mut streamed = Streamed::new(predictor, rate, config.batch);
    windower.push(samples_16k, |span, w| streamed.add(plan, span, w))?;
    windower.finish(|span, w| streamed.add(plan, span, w))?;
    streamed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(window_s: f32, hop_s: f32) -> TimelineConfig {
        TimelineConfig {
            window_s,
            hop_s,
            batch: 4,
        }
    }

    #[test]
    fn short_signal_is_one_segment() {
        assert_eq!(
            spans(100, 100, &cfg(3.0, 1.0)),
            vec![Span { start: 0, end: 100 }]
        );
        assert_eq!(
            spans(300, 100, &cfg(3.0, 1.0)),
            vec![Span { start: 0, end: 300 }]
        );
        assert!(spans(0, 100, &cfg(3.0, 1.0)).is_empty());
    }

    #[test]
    fn windows_cover_the_signal_and_end_at_its_end() {
        // 10 s at 100 Hz, 3 s windows every 1.5 s: starts 0, 1.5, ..., 6.0, then 7.0 (end-aligned).
        let s = spans(1000, 100, &cfg(3.0, 1.5));
        let starts: Vec<usize> = s.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0, 150, 300, 450, 600, 700]);
        assert!(s.iter().all(|s| s.end - s.start == 300));
        assert_eq!(s.last().unwrap().end, 1000);
        // An exact fit adds no duplicate window.
        let s = spans(900, 100, &cfg(3.0, 1.5));
        let starts: Vec<usize> = s.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0, 150, 300, 450, 600]);
    }

    #[test]
    fn windower_emits_the_spans_in_any_chunking() {
        let mut rng = crate::rng::SplitMix64::new(7);
        for &(n, window_s, hop_s) in &[
            (0usize, 3.0f32, 1.5f32),
            (5, 3.0, 1.5),
            (300, 3.0, 1.0),
            (301, 3.0, 1.0),
            (1000, 3.0, 1.5),
            (900, 3.0, 1.5),
            (1234, 2.0, 0.7),
            (5000, 3.0, 4.0),
            (777, 0.5, 0.5),
        ] {
            let config = cfg(window_s, hop_s);
            let signal: Vec<f32> = (0..n).map(|i| i as f32).collect();
            for _ in 0..20 {
                let mut windower = Windower::new(100, &config);
                let mut got: Vec<Span> = Vec::new();
                let mut check = |span: Span, w: &[f32]| -> Result<(), ()> {
                    assert_eq!(w, &signal[span.start..span.end]);
                    got.push(span);
                    Ok(())
                };
                let mut at = 0;
                while at < n {
                    let len = (1 + (rng.next_u64() % 400) as usize).min(n - at);
                    windower.push(&signal[at..at + len], &mut check).unwrap();
                    at += len;
                }
                windower.finish(&mut check).unwrap();
                assert_eq!(
                    got,
                    spans(n, 100, &config),
                    "n {n}, window {window_s}, hop {hop_s}"
                );
            }
        }
    }

    #[test]
    fn timeline_matches_single_predictions() {
        use crate::config::{ModelConfig, ModelKind};
        let device = crate::backend::cpu_device();
        let config = ModelConfig::new(ModelKind::Dual, duet_dsp::Preset::Authors);
        let model = crate::weights::init(config, 3, &device).unwrap();
        let predictor = Predictor::from_model(model, &device);
        let mut plan = predictor.feature_plan();
        // 7 s of a chirp with a slow amplitude change, 16 kHz.
        let n = 7 * 16_000;
        let samples: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                0.3 * (1.0 + (0.7 * t).sin())
                    * (2.0 * std::f32::consts::PI * (150.0 + 40.0 * t) * t).sin()
            })
            .collect();
        let cfg = TimelineConfig {
            window_s: 3.0,
            hop_s: 1.5,
            batch: 3,
        };
        let tl = timeline(&predictor, &mut plan, &samples, &cfg).unwrap();
        assert_eq!(tl.len(), 4);
        assert_eq!(tl.last().unwrap().end_s, 7.0);
        for seg in &tl {
            let a = (seg.start_s * 16_000.0).round() as usize;
            let b = (seg.end_s * 16_000.0).round() as usize;
            let f = plan.compute(&samples[a..b]).unwrap();
            let single = predictor.predict(&f).unwrap();
            for (x, y) in single
                .probabilities
                .iter()
                .zip(&seg.prediction.probabilities)
            {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        }
    }
}
