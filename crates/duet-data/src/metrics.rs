//! Classification metrics: WA, UA, macro-F1, per-class precision / recall / F1, the confusion matrix,
//! and mean ± standard deviation over folds.
//!
//! Definitions (docs/reference.md §1, the same as scikit-learn's):
//! - **WA** (weighted accuracy) = correct / all utterances (`accuracy_score`).
//! - **UA** (unweighted accuracy) = mean over classes of recall (`balanced_accuracy_score`). Classes
//!   with no true utterance in the set have no recall and are left out of the mean.
//! - **macro-F1** = mean over classes of F1 (`f1_score(average="macro")`), over the classes that occur
//!   in the truth or in the predictions; a class with a true utterance but no correct prediction has
//!   F1 0.
//! - per class: precision = TP / predicted (0 when nothing was predicted as it), recall = TP / support
//!   (0 when there is no support), F1 = 2PR / (P + R) (0 when P + R = 0).
//! - `confusion[t][p]` counts utterances of true class `t` predicted as `p`.
//! - [`mean_std`]: the population standard deviation (numpy's default `ddof=0`) over folds.
//! - [`ece`]: expected calibration error with equal-width confidence bins (Guo et al., "On
//!   Calibration of Modern Neural Networks", ICML 2017): Σ_b (n_b / n) · |accuracy_b − confidence_b|
//!   over bins of the top probability, bin b = (b/B, (b+1)/B] (the first also holds 0).
//! - [`softmax_t`] and [`fit_temperature`]: temperature scaling (the same paper): probabilities
//!   softmax(z / T), T chosen to minimise the negative log-likelihood on held-out (validation) data.

use serde::{Deserialize, Serialize};

/// One class's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// TP / predicted as this class.
    pub precision: f64,
    /// TP / true utterances of this class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// True utterances of this class.
    pub support: usize,
    /// Utterances predicted as this class.
    pub predicted: usize,
}

/// Scores of one prediction set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Accuracy over all utterances.
    pub wa: f64,
    /// Mean per-class recall over the classes present in the truth.
    pub ua: f64,
    /// Mean per-class F1 over the classes present in the truth or the predictions.
    pub macro_f1: f64,
    /// Per class, in class-index order.
    pub per_class: Vec<ClassMetrics>,
    /// `[true][pred]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Utterances scored.
    pub n: usize,
}

/// Scores `pred` against `truth` (class indices below `n_classes`).
///
/// # Panics
/// If the slices differ in length or hold an index `>= n_classes` (a programming error, not input).
pub fn compute(truth: &[usize], pred: &[usize], n_classes: usize) -> Metrics {
    assert_eq!(
        truth.len(),
        pred.len(),
        "metrics::compute: {} truths but {} predictions",
        truth.len(),
        pred.len()
    );
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    for (&t, &p) in truth.iter().zip(pred) {
        assert!(
            t < n_classes && p < n_classes,
            "metrics::compute: class index out of range (truth {t}, pred {p}, {n_classes} classes)"
        );
        confusion[t][p] += 1;
    }
    from_confusion(confusion)
}

/// Scores from a confusion matrix (`[true][pred]`, square).
pub fn from_confusion(confusion: Vec<Vec<usize>>) -> Metrics {
    let k = confusion.len();
    let n: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = confusion.iter().map(|r| r[c]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                precision,
                recall,
                f1,
                support,
                predicted,
            }
        })
        .collect();
    let recalls: Vec<f64> = per_class
        .iter()
        .filter(|c| c.support > 0)
        .map(|c| c.recall)
        .collect();
    let f1s: Vec<f64> = per_class
        .iter()
        .filter(|c| c.support > 0 || c.predicted > 0)
        .map(|c| c.f1)
        .collect();
    Metrics {
        wa: ratio(correct, n),
        ua: mean(&recalls),
        macro_f1: mean(&f1s),
        per_class,
        confusion,
        n,
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Mean and population standard deviation (`ddof = 0`); `(0, 0)` for no values, std 0 for one.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let m = mean(values);
    let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64;
    (m, var.sqrt())
}

/// Mean ± std of one score over folds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// Mean over folds.
    pub mean: f64,
    /// Population standard deviation over folds.
    pub std: f64,
}

impl MeanStd {
    /// From per-fold values.
    pub fn of(values: &[f64]) -> Self {
        let (mean, std) = mean_std(values);
        MeanStd { mean, std }
    }
}

/// Scores over folds: mean ± std of each fold's WA / UA / macro-F1 / per-class F1, and the metrics of
/// all folds' predictions pooled (the summed confusion matrix).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Folds summarised.
    pub folds: usize,
    /// WA over folds.
    pub wa: MeanStd,
    /// UA over folds.
    pub ua: MeanStd,
    /// Macro-F1 over folds.
    pub macro_f1: MeanStd,
    /// Per-class F1 over folds.
    pub per_class_f1: Vec<MeanStd>,
    /// Metrics of the pooled predictions of all folds.
    pub pooled: Metrics,
}

/// Summarises per-fold metrics (all with the same number of classes).
///
/// # Panics
/// If `folds` is empty or the folds disagree on the number of classes.
pub fn summarize(folds: &[Metrics]) -> Summary {
    assert!(!folds.is_empty(), "metrics::summarize: no folds");
    let k = folds[0].confusion.len();
    assert!(
        folds.iter().all(|m| m.confusion.len() == k),
        "metrics::summarize: folds with different class counts"
    );
    let pick = |f: &dyn Fn(&Metrics) -> f64| MeanStd::of(&folds.iter().map(f).collect::<Vec<_>>());
    let mut pooled = vec![vec![0usize; k]; k];
    for m in folds {
        for (i, row) in m.confusion.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                pooled[i][j] += v;
            }
        }
    }
    Summary {
        folds: folds.len(),
        wa: pick(&|m| m.wa),
        ua: pick(&|m| m.ua),
        macro_f1: pick(&|m| m.macro_f1),
        per_class_f1: (0..k).map(|c| pick(&|m| m.per_class[c].f1)).collect(),
        pooled: from_confusion(pooled),
    }
}

/// Expected calibration error of `probs` (rows of class probabilities) against `truth`, `bins` bins.
/// 0 for an empty set.
pub fn ece(probs: &[Vec<f32>], truth: &[usize], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut n = vec![0usize; bins];
    let mut correct = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    for (row, &t) in probs.iter().zip(truth) {
        let (best, p) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |b, (k, &v)| if v > b.1 { (k, v) } else { b },
            );
        let b = ((p as f64 * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        n[b] += 1;
        conf[b] += p as f64;
        correct[b] += usize::from(best == t);
    }
    let total: usize = n.iter().sum();
    if total == 0 {
        return 0.0;
    }
    (0..bins)
        .filter(|&b| n[b] > 0)
        .map(|b| {
            (n[b] as f64 / total as f64)
                * (correct[b] as f64 / n[b] as f64 - conf[b] / n[b] as f64).abs()
        })
        .sum()
}

/// softmax(logits / temperature) of one row.
pub fn softmax_t(logits: &[f32], temperature: f64) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&z| ((z as f64 - m) / temperature).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// Mean negative log-likelihood of `truth` under softmax(logits / temperature).
pub fn nll(logits: &[Vec<f32>], truth: &[usize], temperature: f64) -> f64 {
    if logits.is_empty() {
        return 0.0;
    }
    let total: f64 = logits
        .iter()
        .zip(truth)
        .map(|(row, &t)| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m * (1.0 / temperature)
                + row
                    .iter()
                    .map(|&z| ((z as f64 - m) / temperature).exp())
                    .sum::<f64>()
                    .ln();
            lse - row[t] as f64 / temperature
        })
        .sum();
    total / logits.len() as f64
}

/// Smallest and largest temperature [`fit_temperature`] considers.
pub const TEMPERATURE_RANGE: (f64, f64) = (0.05, 20.0);

/// The temperature minimising [`nll`] on (`logits`, `truth`): golden-section search over ln T in
/// [`TEMPERATURE_RANGE`] (the NLL is unimodal in T for fixed logits). 1 for an empty set.
pub fn fit_temperature(logits: &[Vec<f32>], truth: &[usize]) -> f64 {
    if logits.is_empty() {
        return 1.0;
    }
    let f = |x: f64| nll(logits, truth, x.exp());
    let (mut a, mut b) = (TEMPERATURE_RANGE.0.ln(), TEMPERATURE_RANGE.1.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}
