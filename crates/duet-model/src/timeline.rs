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
    /// First sample.
    pub start: usize,
    /// One past the last sample.
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
    let (window, hop) = window_hop(sample_rate, config);
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

/// A window's length and the hop between windows, in samples at `rate` (at least one each).
fn window_hop(rate: u32, config: &TimelineConfig) -> (usize, usize) {
    let samples = |s: f32| ((s as f64 * rate as f64).round() as usize).max(1);
    (samples(config.window_s), samples(config.hop_s))
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
        let (window, hop) = window_hop(rate, config);
        Windower {
            window,
            hop,
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
    /// already emitted, or the whole signal when it is shorter than a window. Calling it again
    /// emits nothing.
    pub fn finish<E>(
        &mut self,
        mut emit: impl FnMut(Span, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
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
        emit(last, &self.buf[last.start - self.buf_start..])?;
        self.last = Some(last);
        Ok(())
    }
}

/// The timeline of a signal that arrives in pieces: its windows ([`Windower`]) prepared as they
/// complete (CPU) and handed to the model a batch at a time, so memory is one batch's features and
/// the segments whatever the signal's length. The one driver of `duet predict`'s long files, the
/// page's analyses (which await each batch) and [`timeline`].
pub struct WindowBatches {
    windower: Windower,
    rate: u32,
    batch: usize,
    ended: bool,
    ready: Vec<(Span, Prepared)>,
    segments: Vec<Segment>,
}

impl WindowBatches {
    /// The windows of `config` over samples at `rate`, `config.batch` per model call.
    pub fn new(rate: u32, config: &TimelineConfig) -> Self {
        WindowBatches {
            windower: Windower::new(rate, config),
            rate,
            batch: config.batch.max(1),
            ended: false,
            ready: Vec::new(),
            segments: Vec::new(),
        }
    }

    /// Appends `samples` and prepares the features of every window now complete.
    pub fn push(
        &mut self,
        predictor: &Predictor,
        plan: &mut FeaturePlan,
        samples: &[f32],
    ) -> Result<(), ModelError> {
        let ready = &mut self.ready;
        self.windower.push(samples, |span, w| {
            ready.push((span, prepare_window(predictor, plan, w)?));
            Ok(())
        })
    }

    /// Ends the signal: prepares its last window; every batch is then ready.
    pub fn end(&mut self, predictor: &Predictor, plan: &mut FeaturePlan) -> Result<(), ModelError> {
        let ready = &mut self.ready;
        self.windower.finish(|span, w| {
            ready.push((span, prepare_window(predictor, plan, w)?));
            Ok::<(), ModelError>(())
        })?;
        self.ended = true;
        Ok(())
    }

    /// Samples pushed so far.
    pub fn samples_seen(&self) -> usize {
        self.windower.samples_seen()
    }

    /// How many samples to push at a time so that each push completes about one batch of windows
    /// (a batch's hops): then one batch's features are all that is held between model calls.
    pub fn piece_len(&self) -> usize {
        self.windower.hop * self.batch
    }

    /// Segments classified so far, in time order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The next batch to classify: a full one, or after [`WindowBatches::end`] what is left.
    fn take_batch(&mut self) -> Option<Vec<(Span, Prepared)>> {
        let n = if self.ready.len() >= self.batch {
            self.batch
        } else if self.ended && !self.ready.is_empty() {
            self.ready.len()
        } else {
            return None;
        };
        Some(self.ready.drain(..n).collect())
    }

    fn classified(&mut self, batch: &[(Span, Prepared)], predictions: Vec<Prediction>) {
        let rate = self.rate;
        self.segments.extend(
            batch
                .iter()
                .zip(predictions)
                .map(move |((span, _), prediction)| Segment {
                    start_s: span.start as f32 / rate as f32,
                    end_s: span.end as f32 / rate as f32,
                    prediction,
                }),
        );
    }

    /// Classifies every batch that is ready (native; blocks on the device).
    #[cfg(not(target_family = "wasm"))]
    pub fn classify(&mut self, predictor: &Predictor) -> Result<(), ModelError> {
        while let Some(batch) = self.take_batch() {
            let predictions = predictor.predict_prepared(&inputs(&batch))?;
            self.classified(&batch, predictions);
        }
        Ok(())
    }

    /// Classifies every batch that is ready without blocking (the page), calling `after_batch`
    /// with the number of segments classified so far after each.
    pub async fn classify_async(
        &mut self,
        predictor: &Predictor,
        mut after_batch: impl FnMut(usize),
    ) -> Result<(), ModelError> {
        while let Some(batch) = self.take_batch() {
            let predictions = predictor.predict_prepared_async(&inputs(&batch)).await?;
            self.classified(&batch, predictions);
            after_batch(self.segments.len());
        }
        Ok(())
    }

    /// All segments, in time order.
    pub fn finish(self) -> Vec<Segment> {
        self.segments
    }
}

/// The overall answer of a signal too long for one call ([`WHOLE_MAX_S`]): the mean of its
/// windows' probabilities ([`Predictor::mean_of`]).
pub fn mean_of_windows(
    predictor: &Predictor,
    segments: &[Segment],
) -> Result<Prediction, ModelError> {
    let predictions: Vec<Prediction> = segments.iter().map(|s| s.prediction.clone()).collect();
    predictor
        .mean_of(&predictions)
        .ok_or_else(|| ModelError::Input("a long recording without windows".into()))
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

/// The timeline of `samples_16k` (native; blocks on the device), a batch of windows at a time
/// ([`WindowBatches`]).
#[cfg(not(target_family = "wasm"))]
pub fn timeline(
    predictor: &Predictor,
    plan: &mut FeaturePlan,
    samples_16k: &[f32],
    config: &TimelineConfig,
) -> Result<Vec<Segment>, ModelError> {
    let mut windows = WindowBatches::new(plan.config().sample_rate, config);
    for piece in samples_16k.chunks(windows.piece_len()) {
        windows.push(predictor, plan, piece)?;
        windows.classify(predictor)?;
    }
    windows.end(predictor, plan)?;
    windows.classify(predictor)?;
    Ok(windows.finish())
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
