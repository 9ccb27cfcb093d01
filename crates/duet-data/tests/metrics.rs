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
