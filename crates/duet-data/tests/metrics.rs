//! Metrics against confusion matrices and scores worked out by hand (the same definitions as
//! scikit-learn's accuracy_score, balanced_accuracy_score and f1_score(average="macro")).

use duet_data::metrics::{self, compute, mean_std};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn four_class_example() {
    let truth = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3];
    let pred = [0, 1, 0, 1, 1, 2, 0, 2, 3, 3];
    let m = compute(&truth, &pred, 4);
    assert_eq!(
        m.confusion,
        vec![
            vec![2, 1, 0, 0],
            vec![0, 2, 0, 0],
            vec![1, 0, 2, 1],
            vec![0, 0, 0, 1],
        ]
    );
    assert_eq!(m.n, 10);
    assert!(close(m.wa, 0.7));
    // recalls 2/3, 1, 1/2, 1
    assert!(close(m.ua, (2.0 / 3.0 + 1.0 + 0.5 + 1.0) / 4.0));
    // precisions 2/3, 2/3, 1, 1/2; F1 2/3, 4/5, 2/3, 2/3
    let p: Vec<f64> = m.per_class.iter().map(|c| c.precision).collect();
    let r: Vec<f64> = m.per_class.iter().map(|c| c.recall).collect();
    let f: Vec<f64> = m.per_class.iter().map(|c| c.f1).collect();
    for (got, want) in p.iter().zip([2.0 / 3.0, 2.0 / 3.0, 1.0, 0.5]) {
        assert!(close(*got, want), "{p:?}");
    }
    for (got, want) in r.iter().zip([2.0 / 3.0, 1.0, 0.5, 1.0]) {
        assert!(close(*got, want), "{r:?}");
    }
    for (got, want) in f.iter().zip([2.0 / 3.0, 0.8, 2.0 / 3.0, 2.0 / 3.0]) {
        assert!(close(*got, want), "{f:?}");
    }
    assert!(close(m.macro_f1, 0.7));
    assert_eq!(
        m.per_class.iter().map(|c| c.support).collect::<Vec<_>>(),
        [3, 2, 4, 1]
    );
    assert_eq!(
        m.per_class.iter().map(|c| c.predicted).collect::<Vec<_>>(),
        [3, 3, 2, 2]
    );
}

#[test]
fn absent_classes() {
    // Class 2 is predicted but never true; class 3 is neither.
    let m = compute(&[0, 0, 1, 1], &[0, 2, 1, 1], 4);
    assert!(close(m.wa, 0.75));
    assert!(close(m.ua, (0.5 + 1.0) / 2.0)); // recall over classes with support only
    assert_eq!(m.per_class[2].precision, 0.0);
    assert_eq!(m.per_class[2].f1, 0.0);
    // F1: class 0 = 2/3, class 1 = 1, class 2 = 0 (predicted, never right); class 3 left out.
    assert!(close(m.macro_f1, (2.0 / 3.0 + 1.0 + 0.0) / 3.0));
    // All wrong, all one class (collapse).
    let m = compute(&[0, 1, 2, 3], &[1, 1, 1, 1], 4);
    assert!(close(m.wa, 0.25));
    assert!(close(m.ua, 0.25));
    assert!(close(m.macro_f1, (2.0 * 0.25 * 1.0 / 1.25) / 4.0));
    // Empty input.
    let m = compute(&[], &[], 4);
    assert_eq!((m.n, m.wa, m.ua, m.macro_f1), (0, 0.0, 0.0, 0.0));
}

#[test]
fn folds_mean_std_and_pooling() {
    assert_eq!(mean_std(&[]), (0.0, 0.0));
    assert_eq!(mean_std(&[0.4]), (0.4, 0.0));
    let (m, s) = mean_std(&[0.6, 0.8]);
    assert!(close(m, 0.7) && close(s, 0.1));
    let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
    assert!(close(m, 5.0) && close(s, 2.0));

    let a = compute(&[0, 1, 1], &[0, 1, 0], 2); // wa 2/3
    let b = compute(&[0, 0, 1, 1], &[0, 0, 1, 1], 2); // wa 1
    let s = metrics::summarize(&[a.clone(), b.clone()]);
    assert_eq!(s.folds, 2);
    assert!(close(s.wa.mean, (2.0 / 3.0 + 1.0) / 2.0));
    assert!(close(s.wa.std, (1.0 - 2.0 / 3.0) / 2.0));
    assert_eq!(s.pooled.confusion, vec![vec![3, 0], vec![1, 3]]);
    assert!(close(s.pooled.wa, 6.0 / 7.0));
    assert!(close(s.pooled.ua, (1.0 + 0.75) / 2.0));
    let json = serde_json::to_value(&s).unwrap();
    assert!(json["pooled"]["confusion"].is_array());
    assert!(json["ua"]["std"].is_number());
}

#[test]
fn expected_calibration_error_by_hand() {
    use duet_data::metrics::ece;
    // Bin (0.5, 0.6]: two rows at 0.55, one right -> |0.5 - 0.55| = 0.05, weight 2/4.
    // Bin (0.9, 1.0]: two rows at 0.95, both right -> |1 - 0.95| = 0.05, weight 2/4.
    let probs = vec![
        vec![0.55, 0.45],
        vec![0.45, 0.55],
        vec![0.95, 0.05],
        vec![0.05, 0.95],
    ];
    let truth = [0, 0, 0, 1];
    // f32 probabilities: within 1e-6.
    let e = ece(&probs, &truth, 10);
    assert!((e - 0.05).abs() < 1e-6, "{e}");
    // Confident and always wrong: ECE = confidence.
    assert!((ece(&[vec![0.9, 0.1]], &[1], 10) - 0.9).abs() < 1e-6);
    assert_eq!(ece(&[], &[], 10), 0.0);
}

#[test]
fn temperature_scaling_recovers_the_temperature_of_the_labels() {
    use duet_data::metrics::{ece, fit_temperature, nll, softmax_t};
    // Labels drawn from softmax(z / 2.5): the maximum-likelihood temperature is near 2.5.
    let mut state = 0x1234_5678_u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut logits, mut truth) = (Vec::new(), Vec::new());
    for _ in 0..4000 {
        let z: Vec<f32> = (0..4).map(|_| (8.0 * uniform() - 4.0) as f32).collect();
        let p = softmax_t(&z, 2.5);
        let r = uniform() as f32;
        let mut acc = 0.0;
        let label = p.iter().position(|&q| {
            acc += q;
            r < acc
        });
        truth.push(label.unwrap_or(3));
        logits.push(z);
    }
    let t = fit_temperature(&logits, &truth);
    assert!((t - 2.5).abs() < 0.25, "fitted T = {t}");
    assert!(nll(&logits, &truth, t) <= nll(&logits, &truth, t * 1.05));
    assert!(nll(&logits, &truth, t) <= nll(&logits, &truth, t / 1.05));
    // Calibrated probabilities have a small ECE; the raw ones (T = 1, overconfident) a larger one.
    let cal: Vec<Vec<f32>> = logits.iter().map(|z| softmax_t(z, t)).collect();
    let raw: Vec<Vec<f32>> = logits.iter().map(|z| softmax_t(z, 1.0)).collect();
    assert!(ece(&cal, &truth, 10) < 0.03, "{}", ece(&cal, &truth, 10));
    assert!(ece(&raw, &truth, 10) > 0.1, "{}", ece(&raw, &truth, 10));
}
