//! Fold assignment: disjoint parts, one LOSO fold per session with the test session nowhere else,
//! speaker-disjoint validation from the training sessions, seeded random 5-fold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use duet_data::protocol::{VALID_FRACTION, check_folds};
use duet_data::{Corpus, DataError, Fold, Protocol, Utterance, folds};

/// `sessions` sessions of `speakers` speakers each; `per` utterances per speaker and class, except
/// that the last speaker of each session has `per + 1` (so sizes are not all equal).
fn corpus(sessions: usize, speakers: usize, per: usize) -> Corpus {
    let classes: Vec<String> = ["angry", "happy", "neutral", "sad"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut utterances = Vec::new();
    for s in 0..sessions {
        for p in 0..speakers {
            let n = if p + 1 == speakers { per + 1 } else { per };
            for c in 0..4 {
                for k in 0..n {
                    let speaker = format!("S{}{}", s + 1, (b'A' + p as u8) as char);
                    utterances.push(Utterance {
                        corpus: String::new(),
                        id: format!("{speaker}_{c}_{k}"),
                        path: PathBuf::from(format!("/x/{speaker}_{c}_{k}.wav")),
                        label: c,
                        speaker,
                        session: format!("Ses{}", s + 1),
                    });
                }
            }
        }
    }
    Corpus {
        name: "t".into(),
        source: "test".into(),
        classes,
        utterances,
    }
}

fn sessions_of<'a>(c: &'a Corpus, idx: &[usize]) -> BTreeSet<&'a str> {
    idx.iter()
        .map(|&i| c.utterances[i].session.as_str())
        .collect()
}
fn speakers_of<'a>(c: &'a Corpus, idx: &[usize]) -> BTreeSet<&'a str> {
    idx.iter()
        .map(|&i| c.utterances[i].speaker.as_str())
        .collect()
}

fn assert_partition(c: &Corpus, f: &Fold, all: bool) {
    let mut seen = BTreeSet::new();
    for &i in f.train.iter().chain(&f.valid).chain(&f.test) {
        assert!(i < c.utterances.len());
        assert!(seen.insert(i), "fold {}: {i} twice", f.name);
    }
    if all {
        assert_eq!(
            seen.len(),
            c.utterances.len(),
            "fold {} leaves utterances out",
            f.name
        );
    }
    for part in [&f.train, &f.valid, &f.test] {
        assert!(part.windows(2).all(|w| w[0] < w[1]), "unsorted");
    }
}

#[test]
fn loso_one_fold_per_session_test_session_nowhere_else() {
    // Sessions numbered past 9, to check the natural order too.
    let c = corpus(11, 2, 5);
    let fs = folds(&c, &Protocol::parse("loso").unwrap(), 1).unwrap();
    assert_eq!(fs.len(), 11);
    let names: Vec<&str> = fs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names[..3], ["Ses1", "Ses2", "Ses3"]);
    assert_eq!(names[10], "Ses11");
    let mut tested = vec![0; c.utterances.len()];
    for (k, f) in fs.iter().enumerate() {
        assert_partition(&c, f, true);
        let ts = sessions_of(&c, &f.test);
        assert_eq!(ts.len(), 1);
        assert_eq!(*ts.iter().next().unwrap(), f.name);
        assert_eq!(f.test_sessions, std::slice::from_ref(&f.name));
        assert!(!sessions_of(&c, &f.train).contains(f.name.as_str()));
        assert!(!sessions_of(&c, &f.valid).contains(f.name.as_str()));
        // Every utterance of the test session is in test.
        let n_test_session = c.utterances.iter().filter(|u| u.session == f.name).count();
        assert_eq!(f.test.len(), n_test_session);
        // Validation: whole speakers, not in train, at least VALID_FRACTION of the training part,
        // from the session after the test session.
        let vs = speakers_of(&c, &f.valid);
        assert!(!vs.is_empty());
        assert!(vs.is_disjoint(&speakers_of(&c, &f.train)));
        let pool = (f.train.len() + f.valid.len()) as f64;
        assert!(f.valid.len() as f64 >= VALID_FRACTION * pool);
        // One speaker (20 or 24 utterances) is below 10% of 440: the session's other one joins.
        assert_eq!(f.valid_speakers.len(), 2, "{}", f.description);
        let next = format!("Ses{}", (k + 1) % 11 + 1);
        assert_eq!(sessions_of(&c, &f.valid), BTreeSet::from([next.as_str()]));
        for &i in &f.test {
            tested[i] += 1;
        }
        assert!(f.warnings.is_empty());
    }
    assert!(tested.iter().all(|&t| t == 1));
    // Validation speakers rotate: not always the first speaker of a session.
    let firsts: BTreeSet<char> = fs
        .iter()
        .map(|f| f.valid_speakers[0].chars().last().unwrap())
        .collect();
    assert_eq!(firsts.len(), 2);
    // Independent of the seed.
    assert_eq!(fs, folds(&c, &Protocol::Loso, 99).unwrap());
}

#[test]
fn iemocap_shaped_loso_validates_on_one_speaker() {
    let c = corpus(5, 2, 60);
    let fs = folds(&c, &Protocol::Loso, 0).unwrap();
    let v: Vec<&str> = fs.iter().map(|f| f.valid_speakers[0].as_str()).collect();
    assert_eq!(v, ["S2A", "S3B", "S4A", "S5B", "S1A"]);
    for f in &fs {
        assert_eq!(f.valid_speakers.len(), 1);
        let pool = (f.train.len() + f.valid.len()) as f64;
        let share = f.valid.len() as f64 / pool;
        assert!((0.1..0.15).contains(&share), "{share}");
    }
}

#[test]
fn small_speakers_take_more_than_one() {
    // 10 speakers per session: one speaker is ~2.5% of the training part, so several are held out.
    let c = corpus(5, 10, 3);
    for f in folds(&c, &Protocol::Loso, 0).unwrap() {
        let pool = (f.train.len() + f.valid.len()) as f64;
        assert!(f.valid.len() as f64 >= VALID_FRACTION * pool);
        assert!(f.valid_speakers.len() >= 4, "{}", f.description);
        assert!(speakers_of(&c, &f.valid).is_disjoint(&speakers_of(&c, &f.train)));
    }
}

#[test]
fn single_speaker_training_part_falls_back_to_random_validation() {
    let c = corpus(2, 1, 10);
    let fs = folds(&c, &Protocol::Loso, 3).unwrap();
    assert_eq!(fs.len(), 2);
    for f in &fs {
        assert_partition(&c, f, true);
        assert!(f.valid_speakers.is_empty());
        assert!(!f.valid.is_empty());
        assert!(
            f.description.contains("speaker-dependent"),
            "{}",
            f.description
        );
        assert!(!sessions_of(&c, &f.valid).contains(f.name.as_str()));
    }
}

#[test]
fn random5_is_stratified_and_seeded() {
    let c = corpus(3, 2, 7); // 4 classes x (3 x (7 + 8)) = 180 utterances
    let a = folds(&c, &Protocol::Random5, 42).unwrap();
    let b = folds(&c, &Protocol::Random5, 42).unwrap();
    let other = folds(&c, &Protocol::parse("random5").unwrap(), 43).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, other);
    assert_eq!(a.len(), 5);
    let mut tested = vec![0; c.utterances.len()];
    for f in &a {
        assert_partition(&c, f, true);
        // Stratified: each class 45 utterances -> 9 per fold.
        let mut per_class = [0; 4];
        for &i in &f.test {
            per_class[c.utterances[i].label] += 1;
            tested[i] += 1;
        }
        assert_eq!(per_class, [9; 4], "{}", f.name);
        // Validation: ~10% of the rest, stratified too.
        assert_eq!(f.valid.len(), 4 * 4); // round(0.1 * 36) = 4 per class
        assert!(f.test_sessions.is_empty());
    }
    assert!(tested.iter().all(|&t| t == 1));
    // Random: a fold's test part spans sessions and is not a contiguous block.
    assert!(sessions_of(&c, &a[0].test).len() > 1);
}

#[test]
fn holdout() {
    let c = corpus(5, 2, 4);
    let fs = folds(&c, &Protocol::parse("holdout:Ses3").unwrap(), 0).unwrap();
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].name, "Ses3");
    assert_eq!(sessions_of(&c, &fs[0].test), BTreeSet::from(["Ses3"]));
    assert_partition(&c, &fs[0], true);
    let last = folds(&c, &Protocol::parse("holdout").unwrap(), 0).unwrap();
    assert_eq!(last[0].name, "Ses5");
    match folds(&c, &Protocol::Holdout("Ses9".into()), 0) {
        Err(e @ DataError::Protocol { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("no session 'Ses9'") && m.contains("Ses1, Ses2, Ses3, Ses4, Ses5"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Protocol::parse("holdout:Ses05").unwrap().to_string(),
        "holdout:Ses05"
    );
    for bad in ["", "LOSO", "holdout:", "random10", "kfold"] {
        assert!(
            matches!(Protocol::parse(bad), Err(DataError::ProtocolSpec(_))),
            "{bad}"
        );
    }
}

#[test]
fn impossible_protocols_are_errors() {
    let one = corpus(1, 2, 3);
    let e = folds(&one, &Protocol::Loso, 0).unwrap_err().to_string();
    assert!(e.contains("at least 2 sessions"), "{e}");
    // A class recorded in one session only: the fold testing that session cannot train it.
    let mut c = corpus(3, 2, 3);
    for u in c.utterances.iter_mut() {
        if u.label == 3 && u.session != "Ses2" {
            u.label = 2;
        }
    }
    let e = folds(&c, &Protocol::Loso, 0).unwrap_err().to_string();
    assert!(
        e.contains("fold Ses2") && e.contains("no 'sad' utterance"),
        "{e}"
    );
}

#[test]
fn check_folds_catches_leaks_and_overlaps() {
    let c = corpus(3, 2, 2);
    let good = folds(&c, &Protocol::Loso, 0).unwrap();
    check_folds(&c, &Protocol::Loso, &good).unwrap();

    let mut leak = good.clone();
    let moved = leak[0].test.pop().unwrap();
    leak[0].train.push(moved);
    let e = check_folds(&c, &Protocol::Loso, &leak)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("of test session Ses1 is in train or valid"),
        "{e}"
    );

    let mut overlap = good.clone();
    let t = overlap[1].train[0];
    overlap[1].valid.push(t);
    let e = check_folds(&c, &Protocol::Loso, &overlap)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is in both train and valid"), "{e}");

    let mut shared = good.clone();
    let v0 = shared[2].valid[0];
    let spk = c.utterances[v0].speaker.clone();
    let same_speaker = (0..c.utterances.len())
        .find(|&i| c.utterances[i].speaker == spk && i != v0)
        .unwrap();
    shared[2].valid.retain(|&i| i != same_speaker);
    shared[2].train.push(same_speaker);
    let e = check_folds(&c, &Protocol::Loso, &shared)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("speaker {spk} is in both train and valid")),
        "{e}"
    );

    let mut untested = good;
    untested[0].test.pop();
    let e = check_folds(&c, &Protocol::Loso, &untested)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tested 0 times"), "{e}");
}

#[test]
fn sessions_sharing_a_speaker_warn() {
    let mut c = corpus(3, 2, 2);
    for u in c.utterances.iter_mut() {
        if u.speaker == "S3A" {
            u.speaker = "S1A".into();
        }
    }
    let fs = folds(&c, &Protocol::Loso, 0).unwrap();
    let warned: BTreeMap<&str, usize> = fs
        .iter()
        .map(|f| (f.name.as_str(), f.warnings.len()))
        .collect();
    assert_eq!(warned["Ses1"], 1);
    assert_eq!(warned["Ses3"], 1);
    assert_eq!(warned["Ses2"], 0);
}

#[test]
fn manifest_without_speakers_uses_sessions_as_groups() {
    let mut c = corpus(4, 2, 3);
    for u in c.utterances.iter_mut() {
        u.speaker.clear();
    }
    for f in folds(&c, &Protocol::Loso, 0).unwrap() {
        assert_eq!(f.valid_speakers.len(), 1);
        assert_eq!(sessions_of(&c, &f.valid).len(), 1);
        assert!(sessions_of(&c, &f.valid).is_disjoint(&sessions_of(&c, &f.train)));
    }
}

/// A RAVDESS-like corpus: `speakers` actors, one session for all (no sessions in the manifest).
fn actors(speakers: usize, per: usize) -> Corpus {
    let mut c = corpus(1, speakers, per);
    for u in &mut c.utterances {
        u.session = String::new();
    }
    c
}

#[test]
fn speaker_group_folds_are_disjoint_round_robin_groups() {
    let c = actors(10, 2);
    let f = folds(&c, &Protocol::Speakers(5), 0).unwrap();
    assert_eq!(f.len(), 5);
    let mut tested = vec![0; c.utterances.len()];
    let speakers = c.speakers();
    for (k, fold) in f.iter().enumerate() {
        assert_partition(&c, fold, true);
        let test = speakers_of(&c, &fold.test);
        // Natural order dealt round-robin: group k holds speakers k and k + 5.
        let want: BTreeSet<&str> = [speakers[k].as_str(), speakers[k + 5].as_str()].into();
        assert_eq!(test, want, "fold {}", fold.name);
        let rest = speakers_of(&c, &fold.train);
        assert!(
            test.is_disjoint(&rest),
            "fold {}: a test speaker trains",
            fold.name
        );
        let valid = speakers_of(&c, &fold.valid);
        assert!(!valid.is_empty() && valid.is_disjoint(&rest) && valid.is_disjoint(&test));
        assert!(
            fold.description.contains(speakers[k].as_str()),
            "{}",
            fold.description
        );
        for &i in &fold.test {
            tested[i] += 1;
        }
    }
    assert!(
        tested.iter().all(|&t| t == 1),
        "every utterance tested once"
    );
    // The seed does not move speakers between groups.
    assert_eq!(
        f.iter().map(|x| x.test.clone()).collect::<Vec<_>>(),
        folds(&c, &Protocol::Speakers(5), 9)
            .unwrap()
            .iter()
            .map(|x| x.test.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        Protocol::parse("speakers:5").unwrap(),
        Protocol::Speakers(5)
    );
    assert_eq!(Protocol::Speakers(5).to_string(), "speakers:5");
    assert!(Protocol::parse("speakers:1").is_err());
    assert!(Protocol::parse("speakers:x").is_err());
    // More groups than speakers: an error naming the count.
    let e = folds(&actors(3, 1), &Protocol::Speakers(5), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 5") && e.contains("has 3"), "{e}");
}

#[test]
fn cross_corpus_tests_each_corpus_on_a_model_of_the_others() {
    let mut c = actors(6, 1);
    for u in &mut c.utterances {
        let first = u.speaker.as_str() < "S1D";
        u.corpus = if first { "a".into() } else { "b".into() };
    }
    let f = folds(&c, &Protocol::CrossCorpus, 0).unwrap();
    assert_eq!(f.len(), 2);
    for fold in &f {
        let test: BTreeSet<&str> = fold
            .test
            .iter()
            .map(|&i| c.utterances[i].corpus.as_str())
            .collect();
        let train: BTreeSet<&str> = fold
            .train
            .iter()
            .chain(&fold.valid)
            .map(|&i| c.utterances[i].corpus.as_str())
            .collect();
        assert_eq!(test.len(), 1);
        assert!(test.is_disjoint(&train), "fold {}", fold.name);
        assert_eq!(fold.name, *test.iter().next().unwrap());
    }
    let e = folds(&actors(6, 1), &Protocol::CrossCorpus, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2 corpora"), "{e}");
}
