//! The IEMOCAP reader on trees built here in the release's layout: a tiny one with every kind of line
//! and stray file, and a full-size one with docs/reference.md §4's counts, then broken one way at a time.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use duet_data::iemocap;
use duet_data::{DataError, open_corpus};

/// A label file in the release's format: a `%` header, then per utterance a blank line, the label
/// line and annotator lines (categorical `C-…` and attribute `A-…`).
fn label_file(utts: &[(&str, &str)]) -> String {
    let mut s = String::from("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n");
    for (k, (id, code)) in utts.iter().enumerate() {
        let t0 = 6.2901 + 3.0 * k as f64;
        s.push_str(&format!(
            "\n[{t0:.4} - {:.4}]\t{id}\t{code}\t[2.5000, 2.5000, 2.5000]\n",
            t0 + 1.9456
        ));
        s.push_str(
            "C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\tFrustration;\t()\nC-F1:\tNeutral;\t(curious)\n",
        );
        s.push_str(
            "A-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 2; act 1; dom  3;\t(mildly aggravated)\n",
        );
    }
    s
}

fn session_dir(root: &Path, n: usize) -> PathBuf {
    root.join(format!("Session{n}"))
}

fn wav_path(root: &Path, n: usize, id: &str) -> PathBuf {
    session_dir(root, n)
        .join("sentences/wav")
        .join(&id[..id.len() - 5])
        .join(format!("{id}.wav"))
}

/// Writes a dialog: its label file and one WAV per utterance.
fn dialog(root: &Path, n: usize, name: &str, utts: &[(&str, &str)]) {
    let lf = session_dir(root, n).join(format!("dialog/EmoEvaluation/{name}.txt"));
    common::write(&lf, label_file(utts).as_bytes());
    for (id, _) in utts {
        common::write(&wav_path(root, n, id), &common::tiny_wav(80));
    }
}

fn tiny_tree(root: &Path) {
    dialog(
        root,
        1,
        "Ses01F_impro01",
        &[
            ("Ses01F_impro01_F000", "neu"),
            ("Ses01F_impro01_M000", "exc"),
            ("Ses01F_impro01_F001", "xxx"),
            ("Ses01F_impro01_M001", "ang"),
        ],
    );
    dialog(
        root,
        1,
        "Ses01F_script01_1",
        &[
            ("Ses01F_script01_1_F000", "sad"),
            ("Ses01F_script01_1_M000", "fru"),
            ("Ses01F_script01_1_F001", "hap"),
            ("Ses01F_script01_1_M001", "sur"),
        ],
    );
    dialog(
        root,
        2,
        "Ses02M_impro03",
        &[
            ("Ses02M_impro03_F000", "ang"),
            ("Ses02M_impro03_M000", "neu"),
            ("Ses02M_impro03_F001", "sad"),
            ("Ses02M_impro03_M001", "hap"),
            ("Ses02M_impro03_M002", "exc"),
        ],
    );
    let e1 = root.join("Session1/dialog/EmoEvaluation");
    // macOS AppleDouble companions and other dot files, with label-looking content that must be ignored.
    common::write(
        &e1.join("._Ses01F_impro01.txt"),
        b"\x00\x05\x16\x07[1.0 - 2.0]\tSes01F_impro01_F009\tneu\t[1, 1, 1]\n",
    );
    common::write(&e1.join(".DS_Store"), b"\x00\x00\x00\x01Bud1");
    // Per-annotator folders of the release: not label files.
    common::write(
        &e1.join("Categorical/Ses01F_impro01_e2_cat.txt"),
        b"Ses01F_impro01_F000 :Neutral state; ()\n",
    );
    common::write(
        &root.join("Session1/sentences/wav/Ses01F_impro01/._Ses01F_impro01_F000.wav"),
        b"\x00\x05\x16\x07 not audio",
    );
    common::write(&root.join("Session2/sentences/wav/.DS_Store"), b"junk");
    common::write(&root.join("._Session3"), b"junk");
}

#[test]
fn tiny_tree_reads_with_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    tiny_tree(dir.path());
    let (corpus, report) = iemocap::read_with_report(dir.path()).unwrap();
    assert_eq!(corpus.classes, ["angry", "happy", "neutral", "sad"]);
    // Ses01: ang M001; exc M000 + hap F001 -> happy; neu F000; sad F000 (script). xxx, fru, sur excluded.
    assert_eq!(report.per_session["Ses01"], [1, 2, 1, 1]);
    assert_eq!(report.per_session["Ses02"], [1, 2, 1, 1]);
    assert_eq!(corpus.utterances.len(), 10);
    assert_eq!(corpus.class_counts(), vec![2, 4, 2, 2]);
    assert_eq!(report.label_files, 3);
    assert_eq!(report.label_lines, 13);
    assert_eq!(report.per_code["xxx"], 1);
    assert_eq!(report.per_code["fru"], 1);
    assert_eq!(report.per_code["sur"], 1);
    assert_eq!(corpus.sessions(), ["Ses01", "Ses02"]);
    assert_eq!(corpus.speakers(), ["Ses01F", "Ses01M", "Ses02F", "Ses02M"]);
    let by_id = |id: &str| corpus.utterances.iter().find(|u| u.id == id).unwrap();
    let u = by_id("Ses01F_impro01_M000");
    assert_eq!(corpus.classes[u.label], "happy"); // exc merged into happy
    assert_eq!(u.speaker, "Ses01M"); // the speaker is the id's last part, not the dialog's F
    assert_eq!(u.session, "Ses01");
    assert_eq!(
        u.path,
        dir.path()
            .join("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav")
    );
    assert!(u.path.is_file());
    for excluded in [
        "Ses01F_impro01_F001",
        "Ses01F_script01_1_M000",
        "Ses01F_script01_1_M001",
    ] {
        assert!(corpus.utterances.iter().all(|u| u.id != excluded));
    }
    // The dot files were seen and ignored.
    assert!(
        report
            .ignored_files
            .iter()
            .any(|p| p.ends_with("._Ses01F_impro01.txt"))
    );
    assert!(
        report
            .ignored_files
            .iter()
            .any(|p| p.ends_with("._Ses01F_impro01_F000.wav"))
    );
    let stats = corpus.statistics();
    assert_eq!(stats["sessions"]["Ses02"]["happy"], 2);
    assert_eq!(stats["sessions"]["Ses02"]["total"], 5);
    assert_eq!(stats["n_utterances"], 10);

    // The strict reader (what `iemocap:DIR` uses) wants the complete release.
    match iemocap::read(dir.path()) {
        Err(DataError::IemocapCounts {
            found,
            expected,
            table,
            ..
        }) => {
            assert_eq!((found, expected), (10, 5531));
            assert!(table.contains("Ses03 (no folder)"), "{table}");
            assert!(table.contains("1/229*"), "{table}");
        }
        other => panic!("expected a count error, got {other:?}"),
    }
    assert!(matches!(
        open_corpus(&format!("iemocap:{}", dir.path().display()), None),
        Err(DataError::IemocapCounts { .. })
    ));
}

/// docs/reference.md §4, written out here independently of the crate's table:
/// per session angry / happy+excited / neutral / sad.
const RELEASE: [[usize; 4]; 5] = [
    [229, 278, 384, 194],
    [137, 327, 362, 197],
    [240, 286, 320, 305],
    [327, 303, 258, 143],
    [170, 442, 384, 245],
];

/// Builds a tree with exactly the release's 4-class counts (happy split between `hap` and `exc`),
/// plus excluded lines (`fru`, `xxx`, `sur`, `oth`) with their WAVs, spread over dialogs whose
/// utterances alternate female / male speakers. Returns (label file, 1-based line, id) of every
/// selected utterance.
fn full_tree(root: &Path) -> Vec<(PathBuf, usize, String)> {
    let mut selected = Vec::new();
    let empty_wav = common::tiny_wav(16);
    for (s, counts) in RELEASE.iter().enumerate() {
        let n = s + 1;
        let mut codes: Vec<&str> = Vec::new();
        for (k, &c) in counts.iter().enumerate() {
            for i in 0..c {
                codes.push(match k {
                    0 => "ang",
                    1 if i % 3 == 0 => "exc",
                    1 => "hap",
                    2 => "neu",
                    _ => "sad",
                });
            }
        }
        for i in 0..(200 + 10 * n) {
            codes.push(["fru", "xxx", "sur", "oth"][i % 4]);
        }
        // Interleave deterministically so dialogs mix classes.
        let len = codes.len();
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by_key(|&i| (i * 7919) % len);
        let per_dialog = 40;
        for (d, chunk) in order.chunks(per_dialog).enumerate() {
            let g = if d % 2 == 0 { 'F' } else { 'M' };
            let name = if d % 3 == 0 {
                format!("Ses{n:02}{g}_script{:02}_{}", d / 3 + 1, d % 2 + 1)
            } else {
                format!("Ses{n:02}{g}_impro{:02}", d + 1)
            };
            let utts: Vec<(String, &str)> = chunk
                .iter()
                .enumerate()
                .map(|(j, &i)| {
                    let sg = if j % 2 == 0 { 'F' } else { 'M' };
                    (format!("{name}_{sg}{:03}", j / 2), codes[i])
                })
                .collect();
            let refs: Vec<(&str, &str)> = utts.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            let lf = session_dir(root, n).join(format!("dialog/EmoEvaluation/{name}.txt"));
            common::write(&lf, label_file(&refs).as_bytes());
            for (j, (id, code)) in refs.iter().enumerate() {
                common::write(&wav_path(root, n, id), &empty_wav);
                if ["ang", "hap", "exc", "neu", "sad"].contains(code) {
                    // Line numbers of label_file: header 1, then 7 lines per utterance, the label
                    // line being the 2nd of them.
                    selected.push((lf.clone(), 3 + 7 * j, id.to_string()));
                }
            }
        }
        common::write(
            &session_dir(root, n).join(format!("dialog/EmoEvaluation/._Ses{n:02}F_impro01.txt")),
            b"\x00\x05\x16\x07 AppleDouble",
        );
    }
    selected
}

fn layout_problems(r: Result<duet_data::Corpus, DataError>) -> (Vec<String>, String) {
    match r {
        Err(e @ DataError::IemocapLayout { .. }) => {
            let msg = e.to_string();
            let DataError::IemocapLayout { problems, .. } = e else {
                unreachable!()
            };
            (problems, msg)
        }
        other => panic!("expected a layout error, got {other:?}"),
    }
}

#[test]
fn full_size_release_and_what_breaks_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let selected = full_tree(root);
    assert_eq!(selected.len(), 5531);

    let (corpus, report) = iemocap::read_with_report(root).unwrap();
    assert_eq!(corpus.utterances.len(), 5531);
    assert_eq!(report.selected, 5531);
    for (s, counts) in RELEASE.iter().enumerate() {
        assert_eq!(&report.per_session[&format!("Ses{:02}", s + 1)], counts);
    }
    assert_eq!(corpus.class_counts(), vec![1103, 1636, 1708, 1084]);
    assert_eq!(corpus.speakers().len(), 10);
    iemocap::check_counts(&report).unwrap();
    let corpus = iemocap::read(root).unwrap();
    assert_eq!(corpus.utterances.len(), 5531);
    let stats = corpus.statistics();
    assert_eq!(stats["sessions"]["Ses05"]["happy"], 442);
    assert_eq!(stats["sessions"]["Ses03"]["total"], 1151);
    let via_spec = open_corpus(&format!("iemocap:{}", root.display()), None).unwrap();
    assert_eq!(via_spec.utterances.len(), 5531);

    // 1. A deleted WAV: the error names that file and the label line naming it.
    let (lf, line, id) = &selected[1234];
    let wav = corpus
        .utterances
        .iter()
        .find(|u| &u.id == id)
        .unwrap()
        .path
        .clone();
    let bytes = fs::read(&wav).unwrap();
    fs::remove_file(&wav).unwrap();
    let (problems, msg) = layout_problems(iemocap::read(root));
    assert_eq!(problems.len(), 1, "{msg}");
    let rel_wav = wav.strip_prefix(root).unwrap().display().to_string();
    let rel_lf = lf.strip_prefix(root).unwrap().display().to_string();
    assert!(
        problems[0].starts_with(&format!("{rel_wav}: missing")),
        "{msg}"
    );
    assert!(problems[0].contains(&format!("{rel_lf}:{line}")), "{msg}");
    fs::write(&wav, &bytes).unwrap();
    assert_eq!(iemocap::read(root).unwrap().utterances.len(), 5531);

    // 2. An unexpected WAV (no label line names it), in a labelled dialog and in an unknown one.
    let dialog_dir = wav.parent().unwrap();
    let extra = dialog_dir.join(format!(
        "{}_F999.wav",
        dialog_dir.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&extra, &bytes).unwrap();
    let stray = root.join("Session4/sentences/wav/Ses04F_impro99/Ses04F_impro99_M000.wav");
    common::write(&stray, &bytes);
    let (problems, msg) = layout_problems(iemocap::read(root));
    assert_eq!(problems.len(), 2, "{msg}");
    let rel_extra = extra.strip_prefix(root).unwrap().display().to_string();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("{rel_extra}: unexpected"))),
        "{msg}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with(
            "Session4/sentences/wav/Ses04F_impro99/Ses04F_impro99_M000.wav: unexpected"
        ) && p.contains("no label file Ses04F_impro99.txt")),
        "{msg}"
    );
    fs::remove_file(&extra).unwrap();
    fs::remove_dir_all(stray.parent().unwrap()).unwrap();
    iemocap::read(root).unwrap();

    // 3. A corrupted label line: file:line.
    let (lf, line, _) = &selected[4321];
    let original = fs::read_to_string(lf).unwrap();
    let mut lines: Vec<String> = original.lines().map(str::to_string).collect();
    lines[line - 1] = lines[line - 1].replace(" - ", " to ");
    fs::write(lf, lines.join("\n") + "\n").unwrap();
    match iemocap::read(root) {
        Err(e @ DataError::LabelLine { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{}:{line}: malformed label line", lf.display())),
                "{msg}"
            );
        }
        other => panic!("expected a label-line error, got {other:?}"),
    }
    // A label line that lost its tab separators.
    lines[line - 1] = original.lines().nth(line - 1).unwrap().replace('\t', " ");
    fs::write(lf, lines.join("\n") + "\n").unwrap();
    let err = iemocap::read(root).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:{line}: malformed label line", lf.display())),
        "{err}"
    );

    // 4. An unknown emotion code: file:line and the code.
    lines[line - 1] = original.lines().nth(line - 1).unwrap().to_string();
    let code_line = &lines[line - 1];
    let code = code_line.split('\t').nth(2).unwrap().to_string();
    lines[line - 1] = code_line.replace(&format!("\t{code}\t"), "\tjoy\t");
    fs::write(lf, lines.join("\n") + "\n").unwrap();
    match iemocap::read(root) {
        Err(DataError::UnknownLabel {
            file,
            line: l,
            label,
            ..
        }) => {
            assert_eq!((&file, l, label.as_str()), (lf, *line, "joy"));
        }
        other => panic!("expected an unknown-label error, got {other:?}"),
    }

    // 5. A selected utterance relabelled `fru`: well-formed, but not the complete release.
    lines[line - 1] = original
        .lines()
        .nth(line - 1)
        .unwrap()
        .replace(&format!("\t{code}\t"), "\tfru\t");
    fs::write(lf, lines.join("\n") + "\n").unwrap();
    let (c, report) = iemocap::read_with_report(root).unwrap();
    assert_eq!(c.utterances.len(), 5530);
    match iemocap::read(root) {
        Err(DataError::IemocapCounts { found, table, .. }) => {
            assert_eq!(found, 5530);
            assert_eq!(table.matches('*').count(), 4, "{table}"); // cell, row, column, total
        }
        other => panic!("expected a count error, got {other:?}"),
    }
    drop(report);
    fs::write(lf, original).unwrap();
    iemocap::read(root).unwrap();

    // 6. A whole session gone.
    fs::rename(root.join("Session2"), root.join("Old2")).unwrap();
    let err = iemocap::read(root).unwrap_err().to_string();
    assert!(err.contains("Ses02 (no folder)"), "{err}");
    assert!(err.contains("4508 utterances"), "{err}");
}

#[test]
fn duplicate_label_and_missing_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tiny_tree(root);
    // The same utterance labelled in a second file.
    common::write(
        &root.join("Session2/dialog/EmoEvaluation/Ses02M_impro03_copy.txt"),
        label_file(&[("Ses02M_impro03_F000", "ang")]).as_bytes(),
    );
    let (problems, msg) = layout_problems(iemocap::read_with_report(root).map(|r| r.0));
    assert_eq!(problems.len(), 1, "{msg}");
    assert!(problems[0].contains("Ses02M_impro03_copy.txt:3: utterance Ses02M_impro03_F000 is labelled twice (first at Session2/dialog/EmoEvaluation/Ses02M_impro03.txt:3)"), "{msg}");

    // An id from another session in a session's file.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tiny_tree(root);
    let f = root.join("Session2/dialog/EmoEvaluation/Ses02M_impro03.txt");
    let text = fs::read_to_string(&f)
        .unwrap()
        .replace("Ses02M_impro03_M001", "Ses01M_impro03_M001");
    fs::write(&f, text).unwrap();
    let err = iemocap::read_with_report(root).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:", f.display())), "{err}");
    assert!(err.contains("another session"), "{err}");

    // Not the release's top folder.
    let err = iemocap::read_with_report(&root.join("Session1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no Session1 .. Session5 folders"), "{err}");
    let parent = tempfile::tempdir().unwrap();
    fs::create_dir_all(parent.path().join("IEMOCAP_full_release/Session1")).unwrap();
    let err = iemocap::read(parent.path()).unwrap_err().to_string();
    assert!(err.contains("did you mean"), "{err}");
    assert!(iemocap::read(&root.join("nope")).is_err());

    // A class with no utterance in a partial tree.
    let dir = tempfile::tempdir().unwrap();
    dialog(
        dir.path(),
        1,
        "Ses01F_impro01",
        &[
            ("Ses01F_impro01_F000", "neu"),
            ("Ses01F_impro01_M000", "ang"),
        ],
    );
    match iemocap::read_with_report(dir.path()) {
        Err(DataError::EmptyClass { class, .. }) => assert_eq!(class, "happy"),
        other => panic!("expected an empty-class error, got {other:?}"),
    }

    // A label map makes no sense for IEMOCAP.
    assert!(matches!(
        open_corpus(&format!("iemocap:{}", root.display()), Some("exc=happy")),
        Err(DataError::LabelMap(_))
    ));
    assert!(matches!(
        open_corpus("iemocap:", None),
        Err(DataError::CorpusSpec(_))
    ));
    assert!(matches!(
        open_corpus("librispeech:/x", None),
        Err(DataError::CorpusSpec(_))
    ));
}
