//! The corpus: utterances with a class, a speaker and a session; opening one from a spec string; the
//! corpus-level policy for undecodable audio; the run-directory check.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::DataError;
use crate::{iemocap, manifest};

/// The four classes of the paper (§2.1), in the model's logit order: the class order of the IEMOCAP
/// reader and of the synthetic corpus, and of any manifest whose labels are a subset of them.
pub const FOUR_CLASSES: [&str; 4] = duet_model::config::DEFAULT_CLASSES;

/// One labelled recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utterance {
    /// Unique within the corpus (IEMOCAP: `Ses01F_impro01_F000`).
    pub id: String,
    /// The audio file (absolute, or relative to the working directory as given).
    pub path: PathBuf,
    /// Index into [`Corpus::classes`].
    pub label: usize,
    /// The speaker (IEMOCAP: `Ses01F` / `Ses01M`, from the utterance id's last part).
    pub speaker: String,
    /// The session = the unit of leave-one-session-out folds (IEMOCAP: `Ses01` .. `Ses05`).
    pub session: String,
    /// The name of the corpus it comes from (set by [`open_corpora`]; empty for a reader's output).
    #[serde(default)]
    pub corpus: String,
}

/// A labelled corpus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corpus {
    /// Short name (`iemocap`, the manifest's file stem, `synthetic`).
    pub name: String,
    /// Where it came from, e.g. `iemocap:/data/IEMOCAP` or `manifest:/data/x.csv`.
    pub source: String,
    /// Class names; [`Utterance::label`] indexes this.
    pub classes: Vec<String>,
    /// The utterances, in a deterministic order (IEMOCAP: sessions, then label files, then lines).
    pub utterances: Vec<Utterance>,
}

impl Corpus {
    /// Utterances per class, in [`Corpus::classes`] order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for u in &self.utterances {
            counts[u.label] += 1;
        }
        counts
    }

    /// Per corpus (in order of first appearance): its name and its utterances per class, in
    /// [`Corpus::classes`] order. Names and counts only, no paths: what a model's provenance states.
    pub fn corpora(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        for u in &self.utterances {
            let name = if u.corpus.is_empty() {
                &self.name
            } else {
                &u.corpus
            };
            let i = match out.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    out.push((name.clone(), vec![0; self.classes.len()]));
                    out.len() - 1
                }
            };
            out[i].1[u.label] += 1;
        }
        out
    }

    /// One line naming the corpora with their counts, e.g. `ravdess 720 (angry 160, happy 160, ...)`.
    pub fn corpora_summary(&self) -> String {
        self.corpora()
            .iter()
            .map(|(name, counts)| {
                let per: Vec<String> = self
                    .classes
                    .iter()
                    .zip(counts)
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect();
                format!(
                    "{name} {} ({})",
                    counts.iter().sum::<usize>(),
                    per.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The distinct sessions in natural order (`Ses2` before `Ses10`).
    pub fn sessions(&self) -> Vec<String> {
        sorted_natural(self.utterances.iter().map(|u| u.session.as_str()))
    }

    /// The distinct speakers in natural order.
    pub fn speakers(&self) -> Vec<String> {
        sorted_natural(self.utterances.iter().map(|u| u.speaker.as_str()))
    }

    /// The index of a class by name.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }

    /// Counts per session and class, per class, per speaker, as JSON:
    /// `{"name", "source", "n_utterances", "classes", "class_counts": {class: n},
    ///   "sessions": {session: {class: n, ..., "total": n, "speakers": [..]}}, "n_speakers"}`.
    pub fn statistics(&self) -> serde_json::Value {
        let counts = self.class_counts();
        let class_counts: serde_json::Map<String, serde_json::Value> = self
            .classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| (c.clone(), json!(n)))
            .collect();
        let mut sessions = serde_json::Map::new();
        for s in self.sessions() {
            let mut per = vec![0usize; self.classes.len()];
            let mut speakers = BTreeSet::new();
            for u in self.utterances.iter().filter(|u| u.session == s) {
                per[u.label] += 1;
                speakers.insert(u.speaker.as_str());
            }
            let mut m: serde_json::Map<String, serde_json::Value> = self
                .classes
                .iter()
                .zip(&per)
                .map(|(c, n)| (c.clone(), json!(n)))
                .collect();
            m.insert("total".into(), json!(per.iter().sum::<usize>()));
            m.insert(
                "speakers".into(),
                json!(sorted_natural(speakers.into_iter())),
            );
            sessions.insert(s, serde_json::Value::Object(m));
        }
        json!({
            "name": self.name,
            "source": self.source,
            "n_utterances": self.utterances.len(),
            "classes": self.classes,
            "class_counts": class_counts,
            "sessions": sessions,
            "n_speakers": self.speakers().len(),
        })
    }

    /// A per-session / per-class table for people (plain text, aligned columns).
    pub fn statistics_table(&self) -> String {
        let mut rows = vec![{
            let mut h = vec!["session".to_string()];
            h.extend(self.classes.iter().cloned());
            h.push("total".into());
            h
        }];
        let mut totals = vec![0usize; self.classes.len()];
        for s in self.sessions() {
            let mut per = vec![0usize; self.classes.len()];
            for u in self.utterances.iter().filter(|u| u.session == s) {
                per[u.label] += 1;
                totals[u.label] += 1;
            }
            let mut r = vec![s];
            r.extend(per.iter().map(|n| n.to_string()));
            r.push(per.iter().sum::<usize>().to_string());
            rows.push(r);
        }
        let mut r = vec!["all".to_string()];
        r.extend(totals.iter().map(|n| n.to_string()));
        r.push(totals.iter().sum::<usize>().to_string());
        rows.push(r);
        format_table(&rows)
    }

    /// Checks the corpus is usable for training: at least one utterance, every class has one, labels in
    /// range, ids unique. Every reader calls it; call it again after removing utterances.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.utterances.is_empty() {
            return Err(DataError::EmptyCorpus(self.source.clone()));
        }
        if let Some(u) = self
            .utterances
            .iter()
            .find(|u| u.label >= self.classes.len())
        {
            return Err(DataError::Corpus(format!(
                "utterance {} has label index {} but the corpus has {} classes",
                u.id,
                u.label,
                self.classes.len()
            )));
        }
        let counts = self.class_counts();
        if let Some(k) = counts.iter().position(|&n| n == 0) {
            return Err(DataError::EmptyClass {
                corpus: self.source.clone(),
                class: self.classes[k].clone(),
                classes: self
                    .classes
                    .iter()
                    .zip(&counts)
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut seen = BTreeSet::new();
        for u in &self.utterances {
            if !seen.insert(u.id.as_str()) {
                return Err(DataError::Corpus(format!(
                    "{}: utterance id {} appears twice",
                    self.source, u.id
                )));
            }
        }
        Ok(())
    }

    /// The corpus without the utterances whose index is in `drop` (indices into `self.utterances`).
    /// Indices of the result are renumbered; compute folds after removing.
    pub fn without(&self, drop: &[usize]) -> Corpus {
        let drop: BTreeSet<usize> = drop.iter().copied().collect();
        Corpus {
            utterances: self
                .utterances
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, u)| u.clone())
                .collect(),
            ..self.clone()
        }
    }

    /// Runs `check` on every utterance (in parallel) and applies the `--on-bad-audio` policy: under
    /// [`OnBadAudio::Fail`] the first failing utterance (in corpus order) is a [`DataError::BadAudio`];
    /// under [`OnBadAudio::Skip`] failing utterances are left out, listed in the report, and the
    /// remaining corpus is validated again (a class may have lost its last utterance).
    ///
    /// `check` is typically the training loop's decoder, or [`probe_wav`] for a header check.
    pub fn check_audio<F, E>(
        &self,
        policy: OnBadAudio,
        check: F,
    ) -> Result<(Corpus, BadAudioReport), DataError>
    where
        F: Fn(&Utterance) -> Result<(), E> + Sync,
        E: fmt::Display,
    {
        let tracker = BadAudioTracker::new(policy);
        let failures: Vec<(usize, String)> = self
            .utterances
            .par_iter()
            .enumerate()
            .filter_map(|(i, u)| check(u).err().map(|e| (i, e.to_string())))
            .collect();
        for (i, reason) in &failures {
            tracker.record(i.to_owned(), &self.utterances[*i], reason)?;
        }
        let report = tracker.into_report(self.utterances.len());
        let kept = self.without(&report.skipped.iter().map(|s| s.index).collect::<Vec<_>>());
        kept.validate()?;
        Ok((kept, report))
    }
}

/// Opens a corpus from a spec: `iemocap:DIR` (the release's own layout, checked against the complete
/// release's counts: see [`iemocap::read`]) or `manifest:FILE` (CSV or JSONL, see [`manifest`];
/// `manifest:DIR` reads `DIR/manifest.csv` or `DIR/manifest.jsonl`, e.g. a `duet synth-corpus` folder).
/// `label_map` (the `--label-map` syntax of [`manifest::LabelMap::parse`]) applies to manifests; for
/// IEMOCAP the 4-class selection is fixed and a label map is an error.
pub fn open_corpus(spec: &str, label_map: Option<&str>) -> Result<Corpus, DataError> {
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| DataError::CorpusSpec(spec.to_string()))?;
    if rest.is_empty() {
        return Err(DataError::CorpusSpec(spec.to_string()));
    }
    match kind {
        "iemocap" => {
            if label_map.is_some() {
                return Err(DataError::LabelMap(
                    "--label-map applies to manifest corpora; IEMOCAP uses the fixed 4-class selection (excited merged into happy)".into(),
                ));
            }
            iemocap::read(Path::new(rest))
        }
        "manifest" => {
            let map = label_map.map(manifest::LabelMap::parse).transpose()?;
            let mut path = PathBuf::from(rest);
            if path.is_dir() {
                // A corpus folder (e.g. from `duet synth-corpus`): its manifest.csv or manifest.jsonl.
                path = ["manifest.csv", "manifest.jsonl"]
                    .iter()
                    .map(|n| path.join(n))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        DataError::io(
                            &path,
                            std::io::Error::other(
                                "a folder without manifest.csv or manifest.jsonl",
                            ),
                        )
                    })?;
            }
            manifest::read(&path, map.as_ref())
        }
        _ => Err(DataError::CorpusSpec(spec.to_string())),
    }
}

/// Opens one or more corpora (specs as [`open_corpus`]) as one corpus. Each utterance keeps its
/// corpus name; with several corpora the ids, speakers and sessions are prefixed by the corpus name
/// (`ravdess/Actor01`), so they cannot collide, and the classes are the union of the corpora's
/// ([`class_order`]). Names are the readers' (`iemocap`, a manifest's stem or folder name, made unique
/// by a suffix `-2`, `-3`).
pub fn open_corpora(specs: &[String], label_map: Option<&str>) -> Result<Corpus, DataError> {
    if specs.is_empty() {
        return Err(DataError::CorpusSpec(String::new()));
    }
    let mut parts = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut c = open_corpus(spec, label_map)?;
        let base = c.name.clone();
        let mut k = 1;
        while parts.iter().any(|p: &Corpus| p.name == c.name) {
            k += 1;
            c.name = format!("{base}-{k}");
        }
        for u in &mut c.utterances {
            u.corpus = c.name.clone();
        }
        parts.push(c);
    }
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one corpus"));
    }
    let classes = class_order(
        parts
            .iter()
            .flat_map(|c| c.classes.iter().map(String::as_str)),
    );
    let mut utterances = Vec::new();
    for c in &parts {
        for u in &c.utterances {
            let label = &c.classes[u.label];
            let prefix = |s: &str| {
                if s.is_empty() {
                    String::new()
                } else {
                    format!("{}/{s}", c.name)
                }
            };
            utterances.push(Utterance {
                id: format!("{}/{}", c.name, u.id),
                path: u.path.clone(),
                label: classes
                    .iter()
                    .position(|x| x == label)
                    .expect("in the union"),
                speaker: prefix(&u.speaker),
                session: prefix(&u.session),
                corpus: c.name.clone(),
            });
        }
    }
    let corpus = Corpus {
        name: parts
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        source: parts
            .iter()
            .map(|c| c.source.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        classes,
        utterances,
    };
    corpus.validate()?;
    Ok(corpus)
}

/// What to do with an utterance whose audio cannot be decoded (`--on-bad-audio skip|fail`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadAudio {
    /// Leave it out and count it in the report.
    Skip,
    /// Stop with an error naming the utterance and the file (the default).
    #[default]
    Fail,
}

impl FromStr for OnBadAudio {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "skip" => Ok(OnBadAudio::Skip),
            "fail" => Ok(OnBadAudio::Fail),
            _ => Err(DataError::BadAudioPolicy(s.to_string())),
        }
    }
}

impl fmt::Display for OnBadAudio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnBadAudio::Skip => "skip",
            OnBadAudio::Fail => "fail",
        })
    }
}

/// One utterance left out under [`OnBadAudio::Skip`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedAudio {
    /// Index into the corpus it was checked in.
    pub index: usize,
    /// The utterance id.
    pub id: String,
    /// Its audio file.
    pub path: PathBuf,
    /// The decoder's message.
    pub reason: String,
}

/// The `--on-bad-audio` outcome, for the run report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadAudioReport {
    /// The policy applied.
    pub policy: OnBadAudio,
    /// Utterances checked.
    pub checked: usize,
    /// Utterances left out, in corpus order.
    pub skipped: Vec<SkippedAudio>,
}

/// Collects decode failures from a training loop that decodes on its own (possibly from several
/// threads): call [`BadAudioTracker::record`] for each failure; it returns the error under
/// [`OnBadAudio::Fail`] and remembers the utterance under [`OnBadAudio::Skip`].
#[derive(Debug)]
pub struct BadAudioTracker {
    policy: OnBadAudio,
    skipped: Mutex<Vec<SkippedAudio>>,
}

impl BadAudioTracker {
    /// A tracker applying `policy`.
    pub fn new(policy: OnBadAudio) -> Self {
        BadAudioTracker {
            policy,
            skipped: Mutex::new(Vec::new()),
        }
    }

    /// Records that utterance `index` could not be decoded.
    pub fn record(
        &self,
        index: usize,
        utterance: &Utterance,
        reason: &dyn fmt::Display,
    ) -> Result<(), DataError> {
        match self.policy {
            OnBadAudio::Fail => Err(DataError::BadAudio {
                id: utterance.id.clone(),
                path: utterance.path.clone(),
                reason: reason.to_string(),
            }),
            OnBadAudio::Skip => {
                self.skipped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(SkippedAudio {
                        index,
                        id: utterance.id.clone(),
                        path: utterance.path.clone(),
                        reason: reason.to_string(),
                    });
                Ok(())
            }
        }
    }

    /// The report, skipped utterances in index order.
    pub fn into_report(self, checked: usize) -> BadAudioReport {
        let mut skipped = self.skipped.into_inner().unwrap_or_else(|p| p.into_inner());
        skipped.sort_by_key(|s| s.index);
        BadAudioReport {
            policy: self.policy,
            checked,
            skipped,
        }
    }
}

/// A cheap audio check for [`Corpus::check_audio`]: opens the file and parses its WAV header with
/// duet-dsp's reader (format, rate, channels, a `data` chunk), without decoding the samples.
pub fn probe_wav(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader =
        duet_dsp::WavReader::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    if reader.format().n_frames() == Some(0) {
        return Err("the WAV file has no samples".into());
    }
    Ok(())
}

/// Creates `dir` (and its parents) if needed and checks that a file can be written in it, so a run
/// fails at its start, not after hours of training. Errors name the directory and the OS reason.
pub fn ensure_writable_dir(dir: &Path) -> Result<(), DataError> {
    let unwritable = |source| DataError::Unwritable {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(unwritable(std::io::Error::other(
            "it exists and is not a directory",
        )));
    }
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    let probe = dir.join(format!(".duet-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"duet").map_err(unwritable)?;
    std::fs::remove_file(&probe).map_err(unwritable)?;
    Ok(())
}

/// Compares strings with digit runs as numbers (`Ses2` < `Ses10`), then bytewise.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = trim_zeros(dx);
                let ty = trim_zeros(dy);
                let o = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

pub(crate) fn sorted_natural<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = items.collect();
    let mut v: Vec<String> = set.into_iter().map(str::to_string).collect();
    v.sort_by(|a, b| natural_cmp(a, b));
    v
}

pub(crate) fn format_table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|j| {
            rows.iter()
                .filter_map(|r| r.get(j))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(j, c)| {
                if j == 0 {
                    format!("{c:<w$}", w = widths[j])
                } else {
                    format!("{c:>w$}", w = widths[j])
                }
            })
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

/// The class list for a set of labels: [`FOUR_CLASSES`] order when every label is one of them
/// (a subset keeps that relative order), otherwise sorted.
pub fn class_order<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = labels.into_iter().collect();
    if set.iter().all(|l| FOUR_CLASSES.contains(l)) {
        FOUR_CLASSES
            .iter()
            .filter(|c| set.contains(*c))
            .map(|c| c.to_string())
            .collect()
    } else {
        set.into_iter().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_model::rng::SplitMix64;

    #[test]
    fn natural_order() {
        let mut v = vec!["Ses10", "Ses2", "Ses01", "a", "Ses1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["Ses01", "Ses1", "Ses2", "Ses10", "a"]);
    }

    #[test]
    fn class_order_rules() {
        assert_eq!(
            class_order(["sad", "angry", "neutral"]),
            ["angry", "neutral", "sad"]
        );
        assert_eq!(
            class_order(["sad", "fear", "angry"]),
            ["angry", "fear", "sad"]
        );
    }

    #[test]
    fn rng_is_uniformish() {
        let mut r = SplitMix64::derive(&[7]);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[r.below(4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
