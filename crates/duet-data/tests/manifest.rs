//! Manifests: CSV / JSONL, EmoBox names, label maps, and every kind of bad manifest.

use crate::common;

use std::fs;
use std::path::Path;

use duet_data::manifest::{self, LabelMap, ManifestOptions};
use duet_data::{DataError, open_corpus};

/// Creates `names` as tiny WAVs under `dir`.
fn wavs(dir: &Path, names: &[&str]) {
    for n in names {
        common::write(&dir.join(n), &common::tiny_wav(32));
    }
}

#[test]
fn csv_with_sessions_relative_paths_and_four_class_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    wavs(
        d,
        &["audio/a.wav", "audio/b.wav", "audio/c.wav", "audio/d.wav"],
    );
    let abs = d.join("audio/d.wav");
    common::write(
        &d.join("lists/m.csv"),
        format!(
            "path,label,speaker,session,extra\n\
             ../audio/a.wav,sad,spk1,s1,x\n\
             ../audio/b.wav,neutral,spk1,s1,y\n\
             \"../audio/c.wav\", angry ,spk2,s2,z\n\
             {},sad,spk2,s2,w\n",
            abs.display()
        )
        .as_bytes(),
    );
    let c = manifest::read(&d.join("lists/m.csv"), None).unwrap();
    // A subset of the four classes keeps the model's order (no happy here).
    assert_eq!(c.classes, ["angry", "neutral", "sad"]);
    assert_eq!(c.utterances.len(), 4);
    assert_eq!(c.utterances[0].path, d.join("lists/../audio/a.wav"));
    assert!(c.utterances[0].path.is_file());
    assert_eq!(c.utterances[3].path, abs);
    assert_eq!(c.classes[c.utterances[2].label], "angry");
    assert_eq!(c.utterances[2].speaker, "spk2");
    assert_eq!(c.sessions(), ["s1", "s2"]);
    assert_eq!(c.utterances[0].id, "../audio/a.wav"); // no id column: the path as written
    assert_eq!(c.class_counts(), vec![1, 1, 2]);
    assert_eq!(c.name, "m");
    assert!(c.source.starts_with("manifest:"));

    // Through the spec string, and written back out: the same corpus.
    let c2 = open_corpus(
        &format!("manifest:{}", d.join("lists/m.csv").display()),
        None,
    )
    .unwrap();
    assert_eq!(c2, c);
    let out = d.join("copy/out.csv");
    manifest::write_csv(&out, &c).unwrap();
    let back = manifest::read(&out, None).unwrap();
    assert_eq!(back.classes, c.classes);
    for (a, b) in back.utterances.iter().zip(&c.utterances) {
        assert_eq!(
            (&a.id, a.label, &a.speaker, &a.session),
            (&b.id, b.label, &b.speaker, &b.session)
        );
        assert_eq!(
            fs::canonicalize(&a.path).unwrap(),
            fs::canonicalize(&b.path).unwrap()
        );
    }
}

#[test]
fn labels_outside_the_four_are_sorted_and_fold_column_is_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    wavs(d, &["1.wav", "2.wav", "3.wav"]);
    common::write(
        &d.join("m.tsv"),
        b"ID\tFile\tEmotion\tSpk\tFold\nu1\t1.wav\tsad\tA\t1\nu2\t2.wav\tfear\tB\t2\nu3\t3.wav\tangry\tB\t10\n",
    );
    let (c, report) = manifest::read_with(&d.join("m.tsv"), &ManifestOptions::default()).unwrap();
    assert_eq!(c.classes, ["angry", "fear", "sad"]);
    assert_eq!(c.utterances[0].id, "u1");
    assert_eq!(c.sessions(), ["1", "2", "10"]); // natural order
    assert_eq!(report.format, "tsv");
    assert_eq!(report.columns["session"], "Fold");
}

#[test]
fn emobox_jsonl_and_label_map() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    wavs(
        d,
        &[
            "w/1.wav", "w/2.wav", "w/3.wav", "w/4.wav", "w/5.wav", "w/6.wav",
        ],
    );
    // EmoBox's fields: key, wav, emo (+ sample_rate, length, channel); no speaker.
    let lines = [
        ("Ses01F_impro01_F000", "w/1.wav", "neu"),
        ("Ses01F_impro01_M000", "w/2.wav", "exc"),
        ("Ses01F_impro01_F001", "w/3.wav", "hap"),
        ("Ses01F_impro01_M001", "w/4.wav", "fru"),
        ("Ses01F_impro01_F002", "w/5.wav", "ang"),
        ("Ses01F_impro01_M002", "w/6.wav", "sad"),
    ];
    let mut text = String::from("\u{feff}");
    for (k, w, e) in lines {
        text.push_str(&format!(
            "{{\"key\": \"{k}\", \"dataset\": \"iemocap\", \"wav\": \"{w}\", \"type\": \"raw\", \"sample_rate\": 16000, \"length\": 2.3, \"task\": \"category\", \"emo\": \"{e}\", \"channel\": 1}}\n\n"
        ));
    }
    common::write(&d.join("iemocap.jsonl"), text.as_bytes());
    let path = d.join("iemocap.jsonl");

    // Without a map: the raw codes, sorted.
    let c = manifest::read(&path, None).unwrap();
    assert_eq!(c.classes, ["ang", "exc", "fru", "hap", "neu", "sad"]);
    assert_eq!(c.utterances[1].id, "Ses01F_impro01_M000");
    assert_eq!(c.utterances[1].speaker, "");
    assert_eq!(c.sessions(), ["all"]);

    let read_mapped = |map: &str| {
        let map = LabelMap::parse(map).unwrap();
        manifest::read_with(
            &path,
            &ManifestOptions {
                label_map: Some(&map),
                classes: None,
            },
        )
        .unwrap()
    };

    // Merge, rename and drop.
    let (c, report) = read_mapped("exc=happy,hap=happy,fru=,neu=neutral,ang=angry");
    assert_eq!(c.classes, ["angry", "happy", "neutral", "sad"]);
    assert_eq!(c.class_counts(), vec![1, 2, 1, 1]);
    assert_eq!(c.utterances.len(), 5);
    assert!(c.utterances.iter().all(|u| u.id != "Ses01F_impro01_M001"));
    assert_eq!(report.dropped["fru"], 1);
    assert_eq!(report.format, "jsonl");
    assert!(report.unused_map_entries.is_empty());

    // `*=` drops everything not named; a map entry that never matches is reported.
    let (c, report) = read_mapped("neu=neutral,sad=sad,fea=fear,*=");
    assert_eq!(c.classes, ["neutral", "sad"]);
    assert_eq!(report.unused_map_entries, ["fea"]);
    assert_eq!(report.dropped.values().sum::<usize>(), 4);

    // Via the spec string with the map as text.
    let c = open_corpus(
        &format!("manifest:{}", path.display()),
        Some("exc=happy,hap=happy,fru=,neu=neutral,ang=angry"),
    )
    .unwrap();
    assert_eq!(c.utterances.len(), 5);
    assert!(matches!(
        open_corpus(&format!("manifest:{}", path.display()), Some("exc")),
        Err(DataError::LabelMap(_))
    ));

    // Fixed classes: a label outside them is an error naming file:line, and so is an empty class.
    let four: Vec<String> = ["angry", "happy", "neutral", "sad"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let map = LabelMap::parse("exc=happy,hap=happy,neu=neutral,ang=angry").unwrap();
    match manifest::read_with(
        &path,
        &ManifestOptions {
            label_map: Some(&map),
            classes: Some(&four),
        },
    ) {
        Err(DataError::UnknownLabel {
            file,
            line,
            label,
            known,
        }) => {
            assert_eq!(file, path);
            assert_eq!(line, 7); // the 4th object; blank lines count
            assert_eq!(label, "fru");
            assert!(known.contains("--label-map"), "{known}");
        }
        other => panic!("expected an unknown-label error, got {other:?}"),
    }
    let map = LabelMap::parse("exc=,hap=,fru=,neu=neutral,ang=angry").unwrap();
    match manifest::read_with(
        &path,
        &ManifestOptions {
            label_map: Some(&map),
            classes: Some(&four),
        },
    ) {
        Err(e @ DataError::EmptyClass { .. }) => {
            assert!(
                e.to_string().contains("class 'happy' has no utterances"),
                "{e}"
            );
        }
        other => panic!("expected an empty-class error, got {other:?}"),
    }
    // Everything dropped.
    assert!(matches!(
        manifest::read(&path, Some(&LabelMap::parse("*=").unwrap())),
        Err(DataError::EmptyCorpus(_))
    ));
}

fn err_of(d: &Path, name: &str, text: &str) -> DataError {
    let p = d.join(name);
    common::write(&p, text.as_bytes());
    manifest::read(&p, None).unwrap_err()
}

#[test]
fn bad_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    wavs(d, &["a.wav", "b.wav"]);

    // Missing required column.
    match err_of(d, "nolabel.csv", "path,speaker\na.wav,s\n") {
        DataError::MissingColumn {
            column,
            accepted,
            found,
            ..
        } => {
            assert_eq!(column, "label");
            assert_eq!(accepted, "label, emo, emotion");
            assert_eq!(found, "path,speaker");
        }
        other => panic!("{other:?}"),
    }
    match err_of(
        d,
        "nopath.jsonl",
        "{\"emo\": \"sad\", \"speaker\": \"x\"}\n",
    ) {
        DataError::MissingColumn { column, .. } => assert_eq!(column, "path"),
        other => panic!("{other:?}"),
    }
    // A later JSONL line without the field: file:line.
    let e = err_of(
        d,
        "later.jsonl",
        "{\"wav\": \"a.wav\", \"emo\": \"sad\"}\n{\"wav\": \"b.wav\"}\n",
    );
    assert!(
        e.to_string()
            .ends_with("later.jsonl:2: no label field (accepted names: label, emo, emotion)"),
        "{e}"
    );
    // Bad JSON, not an object.
    let e = err_of(
        d,
        "bad.jsonl",
        "{\"wav\": \"a.wav\", \"emo\": \"sad\"}\n{\"wav\": \"b.wav\", \n",
    );
    assert!(e.to_string().contains("bad.jsonl:2: not valid JSON"), "{e}");
    let e = err_of(d, "arr.jsonl", "[1, 2]\n");
    assert!(
        e.to_string()
            .contains("arr.jsonl:1: expected one JSON object"),
        "{e}"
    );
    // A CSV row with the wrong number of fields.
    let e = err_of(d, "ragged.csv", "path,label\na.wav,sad\nb.wav,sad,extra\n");
    assert!(e.to_string().contains("ragged.csv:3: not valid CSV"), "{e}");
    // Empty label, empty path.
    let e = err_of(d, "empty.csv", "path,label\na.wav,sad\nb.wav,\n");
    assert!(
        e.to_string()
            .ends_with("empty.csv:3: empty label for b.wav"),
        "{e}"
    );
    let e = err_of(d, "nopath.csv", "path,label\n,sad\n");
    assert!(
        e.to_string().ends_with("nopath.csv:2: empty audio path"),
        "{e}"
    );
    // Duplicate ids.
    let e = err_of(d, "dup.csv", "id,path,label\nx,a.wav,sad\nx,b.wav,angry\n");
    assert!(
        e.to_string()
            .ends_with("dup.csv:3: utterance id 'x' already used at line 2"),
        "{e}"
    );
    // Missing audio: every missing file with its line, resolved against the manifest's folder.
    match err_of(
        d,
        "missing.csv",
        "path,label\na.wav,sad\nnope.wav,sad\nsub/gone.wav,angry\n",
    ) {
        DataError::MissingAudio { problems, .. } => {
            assert_eq!(
                problems,
                [
                    format!("line 3: {}", d.join("nope.wav").display()),
                    format!("line 4: {}", d.join("sub/gone.wav").display())
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // No file at all.
    assert!(matches!(
        manifest::read(&d.join("absent.csv"), None),
        Err(DataError::Io { .. })
    ));
    // Header only.
    assert!(matches!(
        err_of(d, "hdr.csv", "path,label\n"),
        DataError::EmptyCorpus(_)
    ));
}
