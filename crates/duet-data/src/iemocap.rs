//! IEMOCAP read from the release's own layout (docs/reference.md §4), with no preparation step.
//!
//! - Label lines come from `Session{1..5}/dialog/EmoEvaluation/*.txt` (top level only: the
//!   `Categorical/`, `Attribute/`, `Self-evaluation/` folders hold per-annotator files). A label line
//!   is a line starting with `[`: `[START - END]<TAB>UTTERANCE_ID<TAB>CODE<TAB>[V, A, D]`. Every
//!   other line (the `%` header, blank lines, annotator lines like `C-E2:<TAB>Neutral;<TAB>()` and
//!   `A-E3:<TAB>val 3; act 2; dom 2;<TAB>()`) is not a label line. A line starting with `[` that does
//!   not have that format is an error naming `file:line`.
//! - Audio is `Session{n}/sentences/wav/<dialog>/<utterance>.wav`, `<dialog>` being the id without its
//!   last 5 characters.
//! - Classes ([`crate::FOUR_CLASSES`] order): `ang` -> angry, `hap` and `exc` -> happy, `neu` ->
//!   neutral, `sad` -> sad. `fru sur fea dis oth xxx` are excluded (counted in the report); any other
//!   code is an error naming `file:line`.
//! - Files and folders whose names start with `.` (macOS `._*` AppleDouble files, `.DS_Store`) are
//!   ignored everywhere.
//! - Session = fold: `Session3` -> session `Ses03`; speaker = session + the gender letter of the
//!   utterance id's last part (`Ses01F_impro01_M003` -> `Ses01M`), one female and one male per session.
//!
//! Checks. [`read_with_report`] fails on any layout problem, listing every one with its path: a WAV
//! named by a selected label line that does not exist, a WAV that no label line names ("unexpected",
//! with a note when its dialog has no label file), a duplicate utterance id, a session without its
//! `EmoEvaluation` folder. [`read`] (what `iemocap:DIR` uses) also requires the complete release:
//! exactly [`EXPECTED_TOTAL`] utterances with [`EXPECTED_COUNTS`] per session and class
//! ([`check_counts`]), else the error is the table of found / expected counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::corpus::{Corpus, FOUR_CLASSES, Utterance, format_table, natural_cmp};
use crate::error::DataError;

/// The standard 4-class selection of the complete release (docs/reference.md §4).
pub const EXPECTED_TOTAL: usize = 5531;

/// Utterances per session and class of the complete release, classes in [`FOUR_CLASSES`] order
/// (angry, happy + excited, neutral, sad) (docs/reference.md §4).
pub const EXPECTED_COUNTS: [(&str, [usize; 4]); 5] = [
    ("Ses01", [229, 278, 384, 194]),
    ("Ses02", [137, 327, 362, 197]),
    ("Ses03", [240, 286, 320, 305]),
    ("Ses04", [327, 303, 258, 143]),
    ("Ses05", [170, 442, 384, 245]),
];

/// Every emotion code of the release's label lines.
pub const LABEL_CODES: [&str; 11] = [
    "neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx",
];

/// The class index ([`FOUR_CLASSES`] order) of a code, `None` for the excluded codes and unknown ones.
pub fn class_of_code(code: &str) -> Option<usize> {
    match code {
        "ang" => Some(0),
        "hap" | "exc" => Some(1),
        "neu" => Some(2),
        "sad" => Some(3),
        _ => None,
    }
}

/// What the reader found, for the run report and for [`check_counts`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IemocapReport {
    /// The release directory.
    pub root: PathBuf,
    /// Sessions found (`Ses01` ..), natural order.
    pub sessions: Vec<String>,
    /// Label files read.
    pub label_files: usize,
    /// Label lines read (all codes).
    pub label_lines: usize,
    /// Utterances in the 4-class selection.
    pub selected: usize,
    /// Selected utterances per session, classes in [`FOUR_CLASSES`] order.
    pub per_session: BTreeMap<String, [usize; 4]>,
    /// Utterances per code (all codes, before the selection).
    pub per_code: BTreeMap<String, usize>,
    /// Files ignored: names starting with `.`, non-`.txt` files among the label files, non-`.wav` files
    /// among the audio (paths relative to the root).
    pub ignored_files: Vec<PathBuf>,
    /// WAVs missing for EXCLUDED utterances (not an error: they are not used).
    pub missing_unused: Vec<PathBuf>,
}

/// Reads the release at `dir` and requires the complete release's counts ([`check_counts`]).
pub fn read(dir: &Path) -> Result<Corpus, DataError> {
    let (corpus, report) = read_with_report(dir)?;
    check_counts(&report)?;
    Ok(corpus)
}

struct LabelLine {
    id: String,
    code: String,
    file: PathBuf,
    line: usize,
}

/// Reads the release at `dir`, failing on any layout problem but not on counts (a partial release,
/// e.g. only some sessions, reads). Returns the corpus and what was found.
pub fn read_with_report(dir: &Path) -> Result<(Corpus, IemocapReport), DataError> {
    let meta = fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::other(
                "not a directory (expected the IEMOCAP release folder with Session1..Session5)",
            ),
        ));
    }
    let root = dir.to_path_buf();
    let rel = |p: &Path| -> PathBuf { p.strip_prefix(&root).unwrap_or(p).to_path_buf() };

    // Session folders.
    let mut sessions: Vec<(u32, String, PathBuf)> = Vec::new();
    for entry in list_dir(dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        if let Some(n) = name
            .strip_prefix("Session")
            .and_then(|d| d.parse::<u32>().ok())
        {
            sessions.push((n, format!("Ses{n:02}"), entry.path()));
        }
    }
    sessions.sort();
    if sessions.is_empty() {
        let mut problem = format!(
            "no Session1 .. Session5 folders in {} (expected the release's top folder, the one holding Session1/dialog/EmoEvaluation)",
            dir.display()
        );
        if let Some(inner) = list_dir(dir)?
            .into_iter()
            .map(|e| e.path())
            .find(|p| p.join("Session1").is_dir())
        {
            problem.push_str(&format!("; did you mean {}?", inner.display()));
        }
        return Err(DataError::IemocapLayout {
            root,
            problems: vec![problem],
        });
    }

    let mut report = IemocapReport {
        root: root.clone(),
        sessions: sessions.iter().map(|s| s.1.clone()).collect(),
        ..Default::default()
    };
    let mut problems = Vec::new();
    let mut utterances = Vec::new();

    for (_, session, sdir) in &sessions {
        // Label lines.
        let edir = sdir.join("dialog").join("EmoEvaluation");
        let mut lines: Vec<LabelLine> = Vec::new();
        let mut label_dialogs = BTreeSet::new();
        if !edir.is_dir() {
            problems.push(format!(
                "{}: missing (the label files of {session})",
                rel(&edir).display()
            ));
        } else {
            let mut files = Vec::new();
            for entry in list_dir(&edir)? {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    continue;
                }
                if name.starts_with('.') || !name.ends_with(".txt") {
                    report.ignored_files.push(rel(&path));
                    continue;
                }
                files.push(path);
            }
            files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
            for f in files {
                if let Some(stem) = f.file_stem() {
                    label_dialogs.insert(stem.to_string_lossy().into_owned());
                }
                report.label_files += 1;
                parse_label_file(&f, session, &mut lines)?;
            }
        }

        // The audio actually present: sentences/wav/<dialog>/<file>.wav.
        let wdir = sdir.join("sentences").join("wav");
        let mut present: BTreeSet<PathBuf> = BTreeSet::new();
        if wdir.is_dir() {
            for d in list_dir(&wdir)? {
                let dname = d.file_name().to_string_lossy().into_owned();
                if dname.starts_with('.') {
                    report.ignored_files.push(rel(&d.path()));
                    continue;
                }
                if !d.path().is_dir() {
                    if dname.ends_with(".wav") {
                        problems.push(format!(
                            "{}: unexpected (a WAV directly under sentences/wav; audio lives in sentences/wav/<dialog>/)",
                            rel(&d.path()).display()
                        ));
                    } else {
                        report.ignored_files.push(rel(&d.path()));
                    }
                    continue;
                }
                for f in list_dir(&d.path())? {
                    let fname = f.file_name().to_string_lossy().into_owned();
                    if fname.starts_with('.') || !fname.ends_with(".wav") || f.path().is_dir() {
                        report.ignored_files.push(rel(&f.path()));
                        continue;
                    }
                    present.insert(f.path());
                }
            }
        } else if !lines.is_empty() {
            problems.push(format!(
                "{}: missing (the audio of {session})",
                rel(&wdir).display()
            ));
        }

        // Match label lines to audio.
        let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
        let mut named: BTreeSet<PathBuf> = BTreeSet::new();
        for l in lines {
            report.label_lines += 1;
            if let Some((f0, l0)) = seen.get(&l.id) {
                problems.push(format!(
                    "{}:{}: utterance {} is labelled twice (first at {}:{})",
                    rel(&l.file).display(),
                    l.line,
                    l.id,
                    rel(f0).display(),
                    l0
                ));
                continue;
            }
            seen.insert(l.id.clone(), (l.file.clone(), l.line));
            *report.per_code.entry(l.code.clone()).or_default() += 1;
            let dialog = &l.id[..l.id.len() - 5];
            let wav = wdir.join(dialog).join(format!("{}.wav", l.id));
            named.insert(wav.clone());
            let class = class_of_code(&l.code);
            if !present.contains(&wav) {
                if class.is_some() {
                    problems.push(format!(
                        "{}: missing (labelled '{}' at {}:{})",
                        rel(&wav).display(),
                        l.code,
                        rel(&l.file).display(),
                        l.line
                    ));
                } else {
                    report.missing_unused.push(rel(&wav));
                }
                continue;
            }
            if let Some(label) = class {
                let gender = &l.id[l.id.len() - 4..l.id.len() - 3];
                utterances.push(Utterance {
                    corpus: String::new(),
                    speaker: format!("{session}{gender}"),
                    session: session.clone(),
                    label,
                    path: wav,
                    id: l.id,
                });
                report.selected += 1;
                report.per_session.entry(session.clone()).or_default()[label] += 1;
            }
        }
        for wav in present.difference(&named) {
            let dialog = wav
                .parent()
                .and_then(Path::file_name)
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            let note = if label_dialogs.contains(&dialog) {
                String::new()
            } else {
                format!(
                    "; there is no label file {dialog}.txt in {}",
                    rel(&edir).display()
                )
            };
            problems.push(format!(
                "{}: unexpected (no label line names it{note})",
                rel(wav).display()
            ));
        }
    }

    if !problems.is_empty() {
        return Err(DataError::IemocapLayout { root, problems });
    }
    let corpus = Corpus {
        name: "iemocap".into(),
        source: format!("iemocap:{}", dir.display()),
        classes: FOUR_CLASSES.iter().map(|c| c.to_string()).collect(),
        utterances,
    };
    corpus.validate()?;
    Ok((corpus, report))
}

fn list_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, DataError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        v.push(e.map_err(|e| DataError::io(dir, e))?);
    }
    Ok(v)
}

/// Parses the label lines of one file (see the module doc for the format).
fn parse_label_file(file: &Path, session: &str, out: &mut Vec<LabelLine>) -> Result<(), DataError> {
    let bytes = fs::read(file).map_err(|e| DataError::io(file, e))?;
    let text = String::from_utf8_lossy(&bytes);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if !line.starts_with('[') {
            continue;
        }
        let n = i + 1;
        let bad = |message: String| DataError::LabelLine {
            file: file.to_path_buf(),
            line: n,
            message,
            text: line.to_string(),
        };
        let fields: Vec<&str> = line
            .split('\t')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        if fields.len() != 4 {
            return Err(bad(format!(
                "expected 4 tab-separated fields `[START - END]  ID  CODE  [V, A, D]`, found {}",
                fields.len()
            )));
        }
        parse_times(fields[0]).map_err(&bad)?;
        let id = fields[1];
        check_id(id, session).map_err(&bad)?;
        let code = fields[2];
        if !LABEL_CODES.contains(&code) {
            return Err(DataError::UnknownLabel {
                file: file.to_path_buf(),
                line: n,
                label: code.to_string(),
                known: LABEL_CODES.join(" "),
            });
        }
        parse_vad(fields[3]).map_err(&bad)?;
        out.push(LabelLine {
            id: id.to_string(),
            code: code.to_string(),
            file: file.to_path_buf(),
            line: n,
        });
    }
    Ok(())
}

fn parse_times(f: &str) -> Result<(f64, f64), String> {
    let inner = f
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("the time field {f:?} is not `[START - END]`"))?;
    let (a, b) = inner
        .split_once(" - ")
        .ok_or_else(|| format!("the time field {f:?} is not `[START - END]`"))?;
    let parse = |s: &str| -> Result<f64, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("the time {s:?} in {f:?} is not a number of seconds"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if b < a {
        return Err(format!("the time field {f:?} ends before it starts"));
    }
    Ok((a, b))
}

fn parse_vad(f: &str) -> Result<(), String> {
    let inner = f
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("the dimension field {f:?} is not `[V, A, D]`"))?;
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    if parts.len() != 3 || parts.iter().any(|p| p.parse::<f64>().is_err()) {
        return Err(format!(
            "the dimension field {f:?} is not three numbers `[V, A, D]`"
        ));
    }
    Ok(())
}

/// An utterance id: `Ses{nn}…_{F|M}ddd`, its session prefix that of the folder it is in.
fn check_id(id: &str, session: &str) -> Result<(), String> {
    let b = id.as_bytes();
    let ok_shape = id.is_ascii()
        && b.len() > 10
        && b[b.len() - 5] == b'_'
        && matches!(b[b.len() - 4], b'F' | b'M')
        && !id.contains(['/', '\\']);
    if !ok_shape {
        return Err(format!(
            "the utterance id {id:?} is not of the form Ses01F_impro01_F000"
        ));
    }
    if !id.starts_with(session) {
        return Err(format!(
            "the utterance id {id:?} belongs to another session than this folder's ({session})"
        ));
    }
    Ok(())
}

/// Checks the report's counts against the complete release ([`EXPECTED_COUNTS`], [`EXPECTED_TOTAL`]).
/// The error carries a found / expected table with the differing cells marked `*`.
pub fn check_counts(report: &IemocapReport) -> Result<(), DataError> {
    let matches = report.selected == EXPECTED_TOTAL
        && report.per_session.len() == EXPECTED_COUNTS.len()
        && EXPECTED_COUNTS
            .iter()
            .all(|(s, c)| report.per_session.get(*s) == Some(c));
    if matches {
        return Ok(());
    }
    Err(DataError::IemocapCounts {
        root: report.root.clone(),
        found: report.selected,
        expected: EXPECTED_TOTAL,
        table: count_table(report),
    })
}

/// Found / expected per session and class (and totals), `*` marking a difference.
pub fn count_table(report: &IemocapReport) -> String {
    let cell = |found: usize, expected: usize| {
        format!(
            "{found}/{expected}{}",
            if found == expected { " " } else { "*" }
        )
    };
    let mut rows = vec![{
        let mut h = vec!["session".to_string()];
        h.extend(FOUR_CLASSES.iter().map(|c| c.to_string()));
        h.push("total".into());
        h
    }];
    let mut sessions: BTreeSet<&str> = EXPECTED_COUNTS.iter().map(|(s, _)| *s).collect();
    sessions.extend(report.per_session.keys().map(String::as_str));
    let mut tf = [0usize; 4];
    let mut te = [0usize; 4];
    for s in sessions {
        let found = report.per_session.get(s).copied().unwrap_or_default();
        let expected = EXPECTED_COUNTS
            .iter()
            .find(|(e, _)| *e == s)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        let mut r = vec![if report.sessions.iter().any(|x| x == s) {
            s.to_string()
        } else {
            format!("{s} (no folder)")
        }];
        for k in 0..4 {
            r.push(cell(found[k], expected[k]));
            tf[k] += found[k];
            te[k] += expected[k];
        }
        r.push(cell(found.iter().sum(), expected.iter().sum()));
        rows.push(r);
    }
    let mut r = vec!["all".to_string()];
    for k in 0..4 {
        r.push(cell(tf[k], te[k]));
    }
    r.push(cell(tf.iter().sum(), te.iter().sum()));
    rows.push(r);
    format_table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_table_adds_up() {
        let total: usize = EXPECTED_COUNTS.iter().flat_map(|(_, c)| c.iter()).sum();
        assert_eq!(total, EXPECTED_TOTAL);
        let per_class: Vec<usize> = (0..4)
            .map(|k| EXPECTED_COUNTS.iter().map(|(_, c)| c[k]).sum())
            .collect();
        // docs/reference.md §4: neutral 1708, happy+excited 1636, angry 1103, sad 1084.
        assert_eq!(per_class, [1103, 1636, 1708, 1084]);
    }

    #[test]
    fn ids() {
        assert!(check_id("Ses01F_impro01_F000", "Ses01").is_ok());
        assert!(check_id("Ses01F_script01_1_M012", "Ses01").is_ok());
        assert!(check_id("Ses02F_impro01_F000", "Ses01").is_err());
        assert!(check_id("Ses01F_impro01_X000", "Ses01").is_err());
        assert!(check_id("Ses01", "Ses01").is_err());
    }
}
