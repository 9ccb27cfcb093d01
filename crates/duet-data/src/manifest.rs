//! Manifests: any corpus as a CSV (or TSV) or JSONL file listing its utterances.
//!
//! # Format
//!
//! One utterance per CSV row (header line required) or per JSONL line (one JSON object; blank lines
//! skipped). The format is chosen by the extension (`.csv`, `.tsv`, `.jsonl` / `.ndjson` / `.json`),
//! otherwise by the first character (`{` = JSONL). Column / field names, case-insensitive, first
//! match in this order wins:
//!
//! | role | names | required | |
//! |---|---|---|---|
//! | audio path | `path`, `wav`, `file`, `audio` | yes | relative paths are resolved against the manifest's directory; every file must exist |
//! | label | `label`, `emo`, `emotion` | yes | mapped by the label map, then the class |
//! | speaker | `speaker`, `spk`, `speaker_id` | no | empty if absent |
//! | session | `session`, `fold` | no | if absent: the speaker; if that is absent too: `all` (one session) |
//! | id | `id`, `key`, `utt`, `utt_id` | no | if absent: the path as written; ids must be unique |
//!
//! Other columns (EmoBox's `sample_rate`, `length`, `channel`, ...) are ignored, so EmoBox's JSONL
//! files (`key`, `wav`, `emo`) read as they are. JSON values may be strings or numbers.
//!
//! # Label map (`--label-map`)
//!
//! `FROM=TO,FROM=TO,...`, applied to the manifest's label before anything else:
//! - `exc=happy` renames `exc` to `happy`; several entries with one `TO` merge labels
//!   (`exc=happy,hap=happy`);
//! - `fru=` (nothing after `=`) drops every utterance labelled `fru`;
//! - `*=` drops every label not named in the map, `*=other` renames all of them to `other`; without
//!   `*`, labels not named pass through unchanged;
//! - labels are case-sensitive; spaces around names are trimmed; empty entries (`a=b,,`) are ignored;
//!   a `FROM` named twice, an entry without `=`, an empty `FROM` and a `TO` that is `*` are errors.
//!
//! Example, IEMOCAP's 4 classes from raw codes: `neu=neutral,hap=happy,exc=happy,ang=angry,sad=sad,*=`.
//!
//! # Classes
//!
//! The sorted set of labels after mapping, except that a subset of angry/happy/neutral/sad keeps the
//! model's order ([`crate::corpus::class_order`]). With [`ManifestOptions::classes`] the class list is
//! fixed and a label outside it is an error naming `file:line`. A class without utterances (possible
//! only with fixed classes) is an error, as is an empty corpus after dropping.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::corpus::{Corpus, Utterance, class_order};
use crate::error::DataError;

/// Accepted names of the audio-path column.
pub const PATH_NAMES: [&str; 4] = ["path", "wav", "file", "audio"];
/// Accepted names of the label column.
pub const LABEL_NAMES: [&str; 3] = ["label", "emo", "emotion"];
/// Accepted names of the speaker column.
pub const SPEAKER_NAMES: [&str; 3] = ["speaker", "spk", "speaker_id"];
/// Accepted names of the session column.
pub const SESSION_NAMES: [&str; 2] = ["session", "fold"];
/// Accepted names of the id column.
pub const ID_NAMES: [&str; 4] = ["id", "key", "utt", "utt_id"];

/// A parsed `--label-map` (syntax in the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelMap {
    /// `FROM -> Some(TO)` renames, `FROM -> None` drops.
    entries: Vec<(String, Option<String>)>,
    /// The `*` entry: `None` = pass unnamed labels through; `Some(None)` = drop them;
    /// `Some(Some(TO))` = rename them.
    rest: Option<Option<String>>,
}

impl LabelMap {
    /// Parses `FROM=TO,FROM=,*=`.
    pub fn parse(spec: &str) -> Result<LabelMap, DataError> {
        let mut map = LabelMap::default();
        for entry in spec.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (from, to) = entry.split_once('=').ok_or_else(|| {
                DataError::LabelMap(format!(
                    "entry '{entry}' has no '=' (write FROM=TO to rename, FROM= to drop)"
                ))
            })?;
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() {
                return Err(DataError::LabelMap(format!(
                    "entry '{entry}' has nothing before '='"
                )));
            }
            if to.contains('=') || to == "*" {
                return Err(DataError::LabelMap(format!(
                    "entry '{entry}': the new name may not be '*' or contain '='"
                )));
            }
            let to = (!to.is_empty()).then(|| to.to_string());
            if from == "*" {
                if map.rest.is_some() {
                    return Err(DataError::LabelMap("'*' is mapped twice".into()));
                }
                map.rest = Some(to);
                continue;
            }
            if map.entries.iter().any(|(f, _)| f == from) {
                return Err(DataError::LabelMap(format!("'{from}' is mapped twice")));
            }
            map.entries.push((from.to_string(), to));
        }
        Ok(map)
    }

    /// The class name for a raw label, `None` when the label is dropped.
    pub fn apply(&self, label: &str) -> Option<String> {
        match self.entries.iter().find(|(f, _)| f == label) {
            Some((_, to)) => to.clone(),
            None => match &self.rest {
                None => Some(label.to_string()),
                Some(to) => to.clone(),
            },
        }
    }

    /// The `FROM` names of the explicit entries.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(f, _)| f.as_str())
    }
}

/// Options of [`read_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ManifestOptions<'a> {
    /// The `--label-map`.
    pub label_map: Option<&'a LabelMap>,
    /// Fixed class list (e.g. a model's classes): labels outside it are errors, classes keep this order.
    pub classes: Option<&'a [String]>,
}

/// What the manifest reader saw, beyond the corpus.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ManifestReport {
    /// `csv`, `tsv` or `jsonl`.
    pub format: String,
    /// Rows / objects read.
    pub rows: usize,
    /// Utterances dropped by the label map, per raw label.
    pub dropped: BTreeMap<String, usize>,
    /// Label-map entries whose `FROM` never occurred (likely typos).
    pub unused_map_entries: Vec<String>,
    /// The column used for each role (`path`, `label`, `speaker`, `session`, `id`).
    pub columns: BTreeMap<String, String>,
}

/// Reads a manifest with an optional label map (classes from the labels).
pub fn read(path: &Path, label_map: Option<&LabelMap>) -> Result<Corpus, DataError> {
    read_with(
        path,
        &ManifestOptions {
            label_map,
            classes: None,
        },
    )
    .map(|(c, _)| c)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv(u8),
    Jsonl,
}

/// One row before mapping: (line, fields by role).
struct Row {
    line: usize,
    path: String,
    label: String,
    speaker: Option<String>,
    session: Option<String>,
    id: Option<String>,
}

/// Reads a manifest (see the module documentation), returning the corpus and a report.
pub fn read_with(
    path: &Path,
    options: &ManifestOptions,
) -> Result<(Corpus, ManifestReport), DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::Manifest {
        file: path.to_path_buf(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        message: "not UTF-8 text".into(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let format = match ext.as_str() {
        "csv" => Format::Csv(b','),
        "tsv" => Format::Csv(b'\t'),
        "jsonl" | "ndjson" | "json" => Format::Jsonl,
        _ if text.trim_start().starts_with('{') => Format::Jsonl,
        _ => Format::Csv(b','),
    };
    let mut report = ManifestReport {
        format: match format {
            Format::Csv(b'\t') => "tsv",
            Format::Csv(_) => "csv",
            Format::Jsonl => "jsonl",
        }
        .into(),
        ..Default::default()
    };
    let rows = match format {
        Format::Csv(delim) => read_csv_rows(path, text, delim, &mut report)?,
        Format::Jsonl => read_jsonl_rows(path, text, &mut report)?,
    };
    report.rows = rows.len();
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    build(path, &base, rows, options, report)
}

fn find_column(names: &[String], accepted: &[&str]) -> Option<usize> {
    accepted
        .iter()
        .find_map(|a| names.iter().position(|n| n.trim().eq_ignore_ascii_case(a)))
}

fn read_csv_rows(
    path: &Path,
    text: &str,
    delim: u8,
    report: &mut ManifestReport,
) -> Result<Vec<Row>, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let csv_err = |e: csv::Error| {
        let line = e.position().map(|p| p.line() as usize).unwrap_or(1);
        DataError::Manifest {
            file: path.to_path_buf(),
            line,
            message: format!("not valid CSV: {e}"),
        }
    };
    let headers: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_string)
        .collect();
    let found = headers.join(",");
    let missing = |column, accepted: &[&str]| DataError::MissingColumn {
        file: path.to_path_buf(),
        column,
        accepted: accepted.join(", "),
        found: found.clone(),
    };
    let ip = find_column(&headers, &PATH_NAMES).ok_or_else(|| missing("path", &PATH_NAMES))?;
    let il = find_column(&headers, &LABEL_NAMES).ok_or_else(|| missing("label", &LABEL_NAMES))?;
    let is = find_column(&headers, &SPEAKER_NAMES);
    let ise = find_column(&headers, &SESSION_NAMES);
    let ii = find_column(&headers, &ID_NAMES);
    for (role, col) in [
        ("path", Some(ip)),
        ("label", Some(il)),
        ("speaker", is),
        ("session", ise),
        ("id", ii),
    ] {
        if let Some(c) = col {
            report.columns.insert(role.into(), headers[c].clone());
        }
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let get = |i: usize| record.get(i).unwrap_or("").to_string();
        if record.iter().all(str::is_empty) {
            continue;
        }
        rows.push(Row {
            line,
            path: get(ip),
            label: get(il),
            speaker: is.map(get),
            session: ise.map(get),
            id: ii.map(get),
        });
    }
    Ok(rows)
}

fn read_jsonl_rows(
    path: &Path,
    text: &str,
    report: &mut ManifestReport,
) -> Result<Vec<Row>, DataError> {
    let mut rows = Vec::new();
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DataError::Manifest {
            file: path.to_path_buf(),
            line: n,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("expected one JSON object per line".into()))?;
        let keys: Vec<String> = obj.keys().cloned().collect();
        let field = |accepted: &[&str]| -> Result<Option<(String, String)>, DataError> {
            let Some(k) = find_column(&keys, accepted) else {
                return Ok(None);
            };
            let key = &keys[k];
            let v = match &obj[key] {
                serde_json::Value::String(s) => s.trim().to_string(),
                serde_json::Value::Number(x) => x.to_string(),
                serde_json::Value::Null => String::new(),
                other => {
                    return Err(bad(format!(
                        "field '{key}' must be a string or a number, found {other}"
                    )));
                }
            };
            Ok(Some((key.clone(), v)))
        };
        let required = |column, accepted: &[&str]| -> Result<(String, String), DataError> {
            field(accepted)?.ok_or_else(|| {
                if first {
                    DataError::MissingColumn {
                        file: path.to_path_buf(),
                        column,
                        accepted: accepted.join(", "),
                        found: keys.join(","),
                    }
                } else {
                    bad(format!(
                        "no {column} field (accepted names: {})",
                        accepted.join(", ")
                    ))
                }
            })
        };
        let p = required("path", &PATH_NAMES)?;
        let l = required("label", &LABEL_NAMES)?;
        let s = field(&SPEAKER_NAMES)?;
        let se = field(&SESSION_NAMES)?;
        let id = field(&ID_NAMES)?;
        if first {
            for (role, f) in [
                ("path", Some(&p)),
                ("label", Some(&l)),
                ("speaker", s.as_ref()),
                ("session", se.as_ref()),
                ("id", id.as_ref()),
            ] {
                if let Some((k, _)) = f {
                    report.columns.insert(role.into(), k.clone());
                }
            }
        }
        first = false;
        rows.push(Row {
            line: n,
            path: p.1,
            label: l.1,
            speaker: s.map(|x| x.1),
            session: se.map(|x| x.1),
            id: id.map(|x| x.1),
        });
    }
    if rows.is_empty() {
        return Err(DataError::EmptyCorpus(format!(
            "manifest:{}",
            path.display()
        )));
    }
    Ok(rows)
}

fn build(
    file: &Path,
    base: &Path,
    rows: Vec<Row>,
    options: &ManifestOptions,
    mut report: ManifestReport,
) -> Result<(Corpus, ManifestReport), DataError> {
    let source = format!("manifest:{}", file.display());
    let bad = |line: usize, message: String| DataError::Manifest {
        file: file.to_path_buf(),
        line,
        message,
    };
    // Map labels, drop, collect.
    let mut kept: Vec<(Row, String)> = Vec::new();
    let mut seen_raw: HashMap<String, usize> = HashMap::new();
    for row in rows {
        if row.path.is_empty() {
            return Err(bad(row.line, "empty audio path".into()));
        }
        if row.label.is_empty() {
            return Err(bad(row.line, format!("empty label for {}", row.path)));
        }
        *seen_raw.entry(row.label.clone()).or_default() += 1;
        let mapped = match options.label_map {
            Some(m) => m.apply(&row.label),
            None => Some(row.label.clone()),
        };
        match mapped {
            Some(class) => kept.push((row, class)),
            None => *report.dropped.entry(row.label.clone()).or_default() += 1,
        }
    }
    if let Some(m) = options.label_map {
        report.unused_map_entries = m
            .sources()
            .filter(|s| !seen_raw.contains_key(*s))
            .map(str::to_string)
            .collect();
    }
    if kept.is_empty() {
        return Err(DataError::EmptyCorpus(format!(
            "{source} (every utterance was dropped by the label map; dropped: {:?})",
            report.dropped
        )));
    }
    let classes: Vec<String> = match options.classes {
        Some(c) => c.to_vec(),
        None => class_order(kept.iter().map(|(_, c)| c.as_str())),
    };
    let mut utterances = Vec::with_capacity(kept.len());
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut missing = Vec::new();
    for (row, class) in kept {
        let label =
            classes
                .iter()
                .position(|c| *c == class)
                .ok_or_else(|| DataError::UnknownLabel {
                    file: file.to_path_buf(),
                    line: row.line,
                    label: if class == row.label {
                        class.clone()
                    } else {
                        format!("{class}' (mapped from '{}", row.label)
                    },
                    known: format!(
                        "{}; map or drop it with --label-map, e.g. {}=",
                        classes.join(", "),
                        row.label
                    ),
                })?;
        let id = row
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| row.path.clone());
        if let Some(prev) = ids.insert(id.clone(), row.line) {
            return Err(bad(
                row.line,
                format!("utterance id '{id}' already used at line {prev}"),
            ));
        }
        let p = PathBuf::from(&row.path);
        let resolved = if p.is_absolute() { p } else { base.join(p) };
        if !resolved.is_file() {
            missing.push(format!("line {}: {}", row.line, resolved.display()));
        }
        let speaker = row.speaker.unwrap_or_default();
        let session = row
            .session
            .filter(|s| !s.is_empty())
            .or_else(|| (!speaker.is_empty()).then(|| speaker.clone()))
            .unwrap_or_else(|| "all".to_string());
        utterances.push(Utterance {
            corpus: String::new(),
            id,
            path: resolved,
            label,
            speaker,
            session,
        });
    }
    if !missing.is_empty() {
        return Err(DataError::MissingAudio {
            manifest: file.to_path_buf(),
            problems: missing,
        });
    }
    let corpus = Corpus {
        name: manifest_name(file),
        source,
        classes,
        utterances,
    };
    corpus.validate()?;
    Ok((corpus, report))
}

/// A manifest's corpus name: its file stem, or its folder's name when the file is just `manifest.*`
/// (`data/ravdess/manifest.csv` is `ravdess`).
fn manifest_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem.is_empty() || stem == "manifest" {
        let dir = std::fs::canonicalize(file).ok().and_then(|f| {
            f.parent()?
                .file_name()
                .map(|d| d.to_string_lossy().into_owned())
        });
        if let Some(d) = dir.filter(|d| !d.is_empty()) {
            return d;
        }
    }
    if stem.is_empty() {
        "manifest".into()
    } else {
        stem
    }
}

/// Writes `corpus` as a CSV manifest `id,path,label,speaker,session` (labels as class names). Paths
/// under the manifest's directory are written relative to it, so the folder can be moved; others
/// are written as they are.
pub fn write_csv(path: &Path, corpus: &Corpus) -> Result<(), DataError> {
    let base = path.parent().unwrap_or(Path::new(""));
    if !base.as_os_str().is_empty() {
        fs::create_dir_all(base).map_err(|e| DataError::io(base, e))?;
    }
    let mut out = String::from("id,path,label,speaker,session\n");
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    for u in &corpus.utterances {
        let p = u.path.strip_prefix(base).unwrap_or(&u.path);
        let p = p.to_string_lossy().replace('\\', "/");
        w.write_record([
            u.id.as_str(),
            p.as_str(),
            corpus.classes[u.label].as_str(),
            u.speaker.as_str(),
            u.session.as_str(),
        ])
        .map_err(|e| DataError::io(path, std::io::Error::other(e)))?;
    }
    let body = w
        .into_inner()
        .map_err(|e| DataError::io(path, std::io::Error::other(e.to_string())))?;
    out.push_str(&String::from_utf8_lossy(&body));
    fs::write(path, out).map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_map_syntax() {
        let m = LabelMap::parse(" exc = happy, fru= ,hap=happy,,").unwrap();
        assert_eq!(m.apply("exc").as_deref(), Some("happy"));
        assert_eq!(m.apply("hap").as_deref(), Some("happy"));
        assert_eq!(m.apply("fru"), None);
        assert_eq!(m.apply("sad").as_deref(), Some("sad"));
        let m = LabelMap::parse("neu=neutral,*=").unwrap();
        assert_eq!(m.apply("neu").as_deref(), Some("neutral"));
        assert_eq!(m.apply("sad"), None);
        let m = LabelMap::parse("neu=neutral,*=other").unwrap();
        assert_eq!(m.apply("xyz").as_deref(), Some("other"));
        for bad in ["exc", "=happy", "a=b,a=c", "*=,*=x", "a=*", "a=b=c"] {
            assert!(
                matches!(LabelMap::parse(bad), Err(DataError::LabelMap(_))),
                "{bad}"
            );
        }
    }
}
