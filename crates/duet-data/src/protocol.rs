//! Evaluation protocols: which utterances train, validate and test in each fold.
//!
//! - **`loso`** — leave one session out: one fold per session (natural order), the session is the test
//!   set. On IEMOCAP a session is two speakers, so the folds are speaker-independent.
//! - **`random5`** — the paper's 5-fold cross-validation over utterances (docs/reference.md §1: the authors'
//!   split is random and speaker-DEPENDENT): utterances are shuffled with the seed within each class
//!   and dealt round-robin into 5 folds (stratified by class); fold k tests on part k.
//! - **`holdout:SESSION`** — one fold testing on the named session (`holdout` alone: the last session).
//! - **`speakers:K`** — K folds of disjoint speaker groups, for corpora without sessions (RAVDESS:
//!   one actor per speaker): the speakers in natural order are dealt round-robin into K groups
//!   (`ravdess_01`, `_06`, `_11`, `_16` in group 1 of 5 — both sexes in every group on RAVDESS,
//!   whose odd actors are male), fold k tests on group k. Independent of the seed.
//! - **`cross-corpus`** — one fold per corpus of a several-corpus run: test on that corpus, train and
//!   validate on the others.
//!
//! `speakers:K` and `cross-corpus` are leave-one-session-out over a derived session (the speaker
//! group, the corpus), so validation, the checks and the reports are those of `loso`.
//!
//! **Validation** (model selection, early stopping) always comes from the training part; the test part
//! influences nothing.
//! - `loso` and `holdout`: whole speakers held out from the training sessions (speaker-disjoint from
//!   train), at least [`VALID_FRACTION`] of the training part. Speakers are taken in a fixed rotation:
//!   sessions starting with the one after the test session (cyclically), and within a session the
//!   speakers in natural order rotated by the fold number, so each fold validates on different
//!   speakers. On IEMOCAP that is normally one speaker (about 12% of the training part; a second joins
//!   only if the first is under 10%): test Ses01 -> validate on Ses02F, test Ses02 -> Ses03M, test
//!   Ses03 -> Ses04F, test Ses04 -> Ses05M, test Ses05 -> Ses01F; train on the other seven speakers.
//!   The choice does not depend on the seed. Where speakers are unknown (a manifest without a speaker
//!   column) sessions take their place; where the training part has a single speaker and session, the
//!   validation part falls back to a seeded class-stratified random [`VALID_FRACTION`] (noted in
//!   [`Fold::description`]).
//! - `random5`: a seeded class-stratified random [`VALID_FRACTION`] of the training part (speaker
//!   dependent, like the protocol itself).
//!
//! [`folds`] checks what it returns ([`check_folds`]): train / valid / test disjoint, every class in
//! train, and for `loso` / `holdout` no test session in train or valid; for `loso` every utterance is
//! tested exactly once. A fold whose test speakers also occur in training (possible only in a
//! manifest whose sessions share speakers) carries a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::corpus::{Corpus, natural_cmp};
use crate::error::DataError;
use duet_model::rng::SplitMix64;

/// The smallest share of the training part held out for validation.
pub const VALID_FRACTION: f64 = 0.10;

/// Folds of `random5`.
pub const RANDOM_FOLDS: usize = 5;

/// An evaluation protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// One fold per session, testing on it.
    Loso,
    /// Stratified random 5-fold over utterances (the paper's, speaker-dependent).
    Random5,
    /// One fold testing on the named session; an empty name means the last session.
    Holdout(String),
    /// K folds of disjoint speaker groups (dealt round-robin in natural speaker order).
    Speakers(usize),
    /// One fold per corpus: test on it, train on the others.
    CrossCorpus,
}

impl Protocol {
    /// Parses `loso`, `random5`, `holdout` or `holdout:SESSION`.
    pub fn parse(s: &str) -> Result<Protocol, DataError> {
        match s.trim() {
            "loso" => Ok(Protocol::Loso),
            "random5" => Ok(Protocol::Random5),
            "holdout" => Ok(Protocol::Holdout(String::new())),
            "cross-corpus" => Ok(Protocol::CrossCorpus),
            other => {
                if let Some(sess) = other.strip_prefix("holdout:")
                    && !sess.trim().is_empty()
                {
                    return Ok(Protocol::Holdout(sess.trim().to_string()));
                }
                match other
                    .strip_prefix("speakers:")
                    .map(|k| k.trim().parse::<usize>())
                {
                    Some(Ok(k)) if k >= 2 => Ok(Protocol::Speakers(k)),
                    _ => Err(DataError::ProtocolSpec(s.to_string())),
                }
            }
        }
    }
}

impl FromStr for Protocol {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        Protocol::parse(s)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Loso => f.write_str("loso"),
            Protocol::Random5 => f.write_str("random5"),
            Protocol::Holdout(s) if s.is_empty() => f.write_str("holdout"),
            Protocol::Holdout(s) => write!(f, "holdout:{s}"),
            Protocol::Speakers(k) => write!(f, "speakers:{k}"),
            Protocol::CrossCorpus => f.write_str("cross-corpus"),
        }
    }
}

/// One fold: indices into `corpus.utterances`, each list sorted ascending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    /// `Ses01` (loso / holdout: the test session) or `fold1` .. `fold5` (random5).
    pub name: String,
    /// Training utterances.
    pub train: Vec<usize>,
    /// Validation utterances (from the training sessions).
    pub valid: Vec<usize>,
    /// Test utterances.
    pub test: Vec<usize>,
    /// The test sessions (loso / holdout), empty for random5.
    pub test_sessions: Vec<String>,
    /// The speakers (or sessions) held out for validation; empty when validation is random.
    pub valid_speakers: Vec<String>,
    /// One line for people: sizes and how validation was chosen.
    pub description: String,
    /// Things a reader of the results should know (e.g. test speakers that also occur in training).
    pub warnings: Vec<String>,
}

/// The folds of `protocol` on `corpus`; `seed` drives the random parts (random5, and the random
/// validation fallback). Checked with [`check_folds`] before they are returned.
pub fn folds(corpus: &Corpus, protocol: &Protocol, seed: u64) -> Result<Vec<Fold>, DataError> {
    let err = |message: String| DataError::Protocol {
        protocol: protocol.to_string(),
        message,
    };
    if corpus.utterances.is_empty() {
        return Err(err("the corpus has no utterances".into()));
    }
    let sessions = corpus.sessions();
    let out = match protocol {
        Protocol::Loso => {
            if sessions.len() < 2 {
                return Err(err(format!(
                    "leave-one-session-out needs at least 2 sessions; {} has {} ({}); use random5, or give the manifest a session (or speaker) column",
                    corpus.source,
                    sessions.len(),
                    sessions.join(", ")
                )));
            }
            (0..sessions.len())
                .map(|i| session_fold(corpus, &sessions, i, i, seed))
                .collect::<Vec<_>>()
        }
        Protocol::Holdout(name) => {
            if sessions.len() < 2 {
                return Err(err(format!(
                    "a held-out session needs at least 2 sessions; {} has {}",
                    corpus.source,
                    sessions.len()
                )));
            }
            let i = if name.is_empty() {
                sessions.len() - 1
            } else {
                sessions.iter().position(|s| s == name).ok_or_else(|| {
                    err(format!(
                        "no session '{name}' in {} (sessions: {})",
                        corpus.source,
                        sessions.join(", ")
                    ))
                })?
            };
            vec![session_fold(corpus, &sessions, i, i, seed)]
        }
        Protocol::Random5 => random_folds(corpus, seed)?,
        Protocol::Speakers(_) | Protocol::CrossCorpus => {
            let derived = derived_sessions(corpus, protocol).map_err(err)?;
            let mut out = folds(&derived, &Protocol::Loso, seed)?;
            for f in &mut out {
                let test: BTreeSet<&str> = f
                    .test
                    .iter()
                    .map(|&i| corpus.utterances[i].speaker.as_str())
                    .collect();
                f.description = format!(
                    "{}; test speakers {}",
                    f.description,
                    test.into_iter().collect::<Vec<_>>().join(" ")
                );
            }
            // Checked on the derived sessions (what keeps speakers or corpora apart).
            check_folds(&derived, &Protocol::Loso, &out)?;
            return Ok(out);
        }
    };
    check_folds(corpus, protocol, &out)?;
    Ok(out)
}

/// `corpus` with each utterance's session replaced by its speaker group (`speakers:K`: `group1` ..
/// `groupK`) or its corpus (`cross-corpus`), so that leave-one-session-out gives the protocol's folds.
fn derived_sessions(corpus: &Corpus, protocol: &Protocol) -> Result<Corpus, String> {
    let mut derived = corpus.clone();
    match protocol {
        Protocol::Speakers(k) => {
            let speakers = corpus.speakers();
            if speakers.iter().any(|s| s.is_empty()) || speakers.len() < *k {
                return Err(format!(
                    "{} folds of speakers need at least {k} known speakers; {} has {} ({}); give the manifest a speaker column or use fewer folds",
                    k,
                    corpus.source,
                    speakers.iter().filter(|s| !s.is_empty()).count(),
                    speakers.join(", ")
                ));
            }
            let group: BTreeMap<&str, usize> = speakers
                .iter()
                .enumerate()
                .map(|(i, s)| (s.as_str(), i % k))
                .collect();
            for u in &mut derived.utterances {
                // Zero-padded so that natural order is group order.
                u.session = format!("group{}", group[u.speaker.as_str()] + 1);
            }
        }
        Protocol::CrossCorpus => {
            let corpora: BTreeSet<&str> = corpus
                .utterances
                .iter()
                .map(|u| u.corpus.as_str())
                .collect();
            if corpora.len() < 2 {
                return Err(format!(
                    "cross-corpus needs at least 2 corpora (--corpus A --corpus B); {} is one",
                    corpus.source
                ));
            }
            for u in &mut derived.utterances {
                u.session = u.corpus.clone();
            }
        }
        _ => {}
    }
    Ok(derived)
}

/// The validation grouping key of an utterance: its speaker, or its session when the speaker is unknown.
fn group_of(corpus: &Corpus, i: usize) -> &str {
    let u = &corpus.utterances[i];
    if u.speaker.is_empty() {
        &u.session
    } else {
        &u.speaker
    }
}

fn session_fold(
    corpus: &Corpus,
    sessions: &[String],
    test_i: usize,
    fold_i: usize,
    seed: u64,
) -> Fold {
    let test_session = &sessions[test_i];
    let (test, pool): (Vec<usize>, Vec<usize>) =
        (0..corpus.utterances.len()).partition(|&i| corpus.utterances[i].session == *test_session);

    // Groups of the training part, by session.
    let mut by_session: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for &i in &pool {
        by_session
            .entry(corpus.utterances[i].session.as_str())
            .or_default()
            .insert(group_of(corpus, i));
    }
    let mut group_size: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in &pool {
        *group_size.entry(group_of(corpus, i)).or_default() += 1;
    }
    let n = sessions.len();
    let mut order: Vec<&str> = Vec::new();
    for k in 1..n {
        let s = sessions[(test_i + k) % n].as_str();
        if let Some(groups) = by_session.get(s) {
            let mut g: Vec<&str> = groups.iter().copied().collect();
            g.sort_by(|a, b| natural_cmp(a, b));
            let r = fold_i % g.len();
            g.rotate_left(r);
            for x in g {
                if !order.contains(&x) {
                    order.push(x);
                }
            }
        }
    }

    let target = (VALID_FRACTION * pool.len() as f64).ceil() as usize;
    let mut chosen: Vec<&str> = Vec::new();
    let mut got = 0;
    if order.len() >= 2 {
        for g in &order[..order.len() - 1] {
            if got >= target.max(1) {
                break;
            }
            chosen.push(g);
            got += group_size[g];
        }
    }
    let (train, valid, description);
    let valid_speakers: Vec<String>;
    if chosen.is_empty() {
        let (t, v) = stratified_split(corpus, &pool, VALID_FRACTION, seed ^ fold_i as u64);
        train = t;
        valid = v;
        valid_speakers = Vec::new();
        description = format!(
            "test {test_session} ({} utt.); train {} utt.; valid {} utt. drawn at random (seed {seed}) from the training part, which has a single speaker — validation is speaker-dependent",
            test.len(),
            train.len(),
            valid.len()
        );
    } else {
        let set: BTreeSet<&str> = chosen.iter().copied().collect();
        let (v, t): (Vec<usize>, Vec<usize>) = pool
            .iter()
            .partition(|&&i| set.contains(group_of(corpus, i)));
        train = t;
        valid = v;
        valid_speakers = chosen.iter().map(|s| s.to_string()).collect();
        description = format!(
            "test {test_session} ({} utt.); valid {} ({} utt., speaker-disjoint from train); train {} utt.",
            test.len(),
            valid_speakers.join(" + "),
            valid.len(),
            train.len()
        );
    }
    let test_speakers: BTreeSet<&str> = test
        .iter()
        .map(|&i| corpus.utterances[i].speaker.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    let shared: BTreeSet<&str> = train
        .iter()
        .chain(&valid)
        .map(|&i| corpus.utterances[i].speaker.as_str())
        .filter(|s| test_speakers.contains(s))
        .collect();
    let warnings = if shared.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "speaker(s) {} of test session {test_session} also occur in other sessions: this fold is not speaker-independent",
            shared.into_iter().collect::<Vec<_>>().join(", ")
        )]
    };
    Fold {
        name: test_session.clone(),
        train,
        valid,
        test,
        test_sessions: vec![test_session.clone()],
        valid_speakers,
        description,
        warnings,
    }
}

/// Splits `pool` into (rest, held) with `fraction` of each class held (rounded, at least one per
/// class that has two or more), seeded. Both sorted.
fn stratified_split(
    corpus: &Corpus,
    pool: &[usize],
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix64::derive(&[seed, 0x5EED_0001]);
    let mut held = Vec::new();
    let mut rest = Vec::new();
    for c in 0..corpus.classes.len() {
        let mut idx: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&i| corpus.utterances[i].label == c)
            .collect();
        rng.shuffle(&mut idx);
        let k = if idx.len() >= 2 {
            ((fraction * idx.len() as f64).round() as usize).clamp(1, idx.len() - 1)
        } else {
            0
        };
        held.extend_from_slice(&idx[..k]);
        rest.extend_from_slice(&idx[k..]);
    }
    held.sort_unstable();
    rest.sort_unstable();
    (rest, held)
}

fn random_folds(corpus: &Corpus, seed: u64) -> Result<Vec<Fold>, DataError> {
    let n = corpus.utterances.len();
    if n < RANDOM_FOLDS {
        return Err(DataError::Protocol {
            protocol: "random5".into(),
            message: format!("{} has {n} utterances, fewer than 5 folds", corpus.source),
        });
    }
    let mut rng = SplitMix64::derive(&[seed, 0x5EED_0005]);
    let mut part = vec![0usize; n];
    let mut deal = 0usize;
    for c in 0..corpus.classes.len() {
        let mut idx: Vec<usize> = (0..n)
            .filter(|&i| corpus.utterances[i].label == c)
            .collect();
        rng.shuffle(&mut idx);
        for i in idx {
            part[i] = deal % RANDOM_FOLDS;
            deal += 1;
        }
    }
    Ok((0..RANDOM_FOLDS)
        .map(|k| {
            let (test, pool): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| part[i] == k);
            let (train, valid) =
                stratified_split(corpus, &pool, VALID_FRACTION, seed.wrapping_add(k as u64 + 1));
            Fold {
                name: format!("fold{}", k + 1),
                description: format!(
                    "random stratified fold {} of 5 (seed {seed}): test {} utt.; valid {} utt. drawn at random from the rest; train {} utt. (speaker-dependent)",
                    k + 1,
                    test.len(),
                    valid.len(),
                    train.len()
                ),
                train,
                valid,
                test,
                test_sessions: Vec::new(),
                valid_speakers: Vec::new(),
                warnings: Vec::new(),
            }
        })
        .collect())
}

/// Checks folds for `protocol` on `corpus` (see the module documentation); the error names the fold.
pub fn check_folds(corpus: &Corpus, protocol: &Protocol, folds: &[Fold]) -> Result<(), DataError> {
    let n = corpus.utterances.len();
    let err = |fold: &str, message: String| DataError::Protocol {
        protocol: protocol.to_string(),
        message: format!("fold {fold}: {message}"),
    };
    let mut tested = vec![0usize; n];
    for f in folds {
        let mut owner = vec![None::<&str>; n];
        for (part, idx) in [("train", &f.train), ("valid", &f.valid), ("test", &f.test)] {
            for &i in idx {
                if i >= n {
                    return Err(err(
                        &f.name,
                        format!("{part} index {i} is out of range ({n} utterances)"),
                    ));
                }
                if let Some(other) = owner[i] {
                    return Err(err(
                        &f.name,
                        format!(
                            "utterance {} is in both {other} and {part}",
                            corpus.utterances[i].id
                        ),
                    ));
                }
                owner[i] = Some(part);
            }
        }
        if f.test.is_empty() {
            return Err(err(&f.name, "empty test part".into()));
        }
        let mut in_train = vec![false; corpus.classes.len()];
        for &i in &f.train {
            in_train[corpus.utterances[i].label] = true;
        }
        if let Some(c) = in_train.iter().position(|&x| !x) {
            return Err(err(
                &f.name,
                format!(
                    "the training part has no '{}' utterance (its only examples are in the test or validation part)",
                    corpus.classes[c]
                ),
            ));
        }
        if !matches!(protocol, Protocol::Random5) {
            let test_sessions: BTreeSet<&str> = f
                .test
                .iter()
                .map(|&i| corpus.utterances[i].session.as_str())
                .collect();
            if let Some(&i) = f
                .train
                .iter()
                .chain(&f.valid)
                .find(|&&i| test_sessions.contains(corpus.utterances[i].session.as_str()))
            {
                return Err(err(
                    &f.name,
                    format!(
                        "utterance {} of test session {} is in train or valid",
                        corpus.utterances[i].id, corpus.utterances[i].session
                    ),
                ));
            }
            if !f.valid_speakers.is_empty() {
                let vs: BTreeSet<&str> = f.valid.iter().map(|&i| group_of(corpus, i)).collect();
                if let Some(&i) = f.train.iter().find(|&&i| vs.contains(group_of(corpus, i))) {
                    return Err(err(
                        &f.name,
                        format!("speaker {} is in both train and valid", group_of(corpus, i)),
                    ));
                }
            }
        }
        for &i in &f.test {
            tested[i] += 1;
        }
    }
    if matches!(protocol, Protocol::Loso | Protocol::Random5)
        && let Some(i) = tested.iter().position(|&t| t != 1)
    {
        return Err(DataError::Protocol {
            protocol: protocol.to_string(),
            message: format!(
                "utterance {} is tested {} times (every utterance must be tested once)",
                corpus.utterances[i].id, tested[i]
            ),
        });
    }
    Ok(())
}
