//! Corpus-level behaviour: the `--on-bad-audio` policy, statistics, run-directory checks, specs.

use crate::common;

use std::fs;

use duet_data::corpus::{BadAudioTracker, OnBadAudio, natural_cmp};
use duet_data::{DataError, ensure_writable_dir, manifest, probe_wav};

#[test]
fn bad_audio_skip_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in ["a", "b", "c", "d", "e"] {
        common::write(&d.join(format!("{n}.wav")), &common::tiny_wav(64));
    }
    common::write(&d.join("broken.wav"), b"RIFF\x10\x00\x00\x00WAVEjunk");
    common::write(&d.join("text.wav"), b"this is not audio at all");
    common::write(
        &d.join("m.csv"),
        b"path,label,speaker\na.wav,sad,x\nbroken.wav,sad,x\nb.wav,angry,y\ntext.wav,neutral,y\nc.wav,neutral,y\nd.wav,happy,x\ne.wav,happy,y\n",
    );
    let c = manifest::read(&d.join("m.csv"), None).unwrap();
    assert_eq!(c.utterances.len(), 7);

    // fail: the first bad utterance in corpus order, named with its file.
    match c.check_audio(OnBadAudio::Fail, |u| probe_wav(&u.path)) {
        Err(e @ DataError::BadAudio { .. }) => {
            let m = e.to_string();
            assert!(m.starts_with("utterance broken.wav: cannot decode"), "{m}");
            assert!(
                m.contains(&d.join("broken.wav").display().to_string()),
                "{m}"
            );
            assert!(m.contains("--on-bad-audio skip"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // skip: both left out, counted, the rest renumbered.
    let (kept, report) = c
        .check_audio(OnBadAudio::Skip, |u| probe_wav(&u.path))
        .unwrap();
    assert_eq!(kept.utterances.len(), 5);
    assert_eq!(report.checked, 7);
    assert_eq!(report.policy, OnBadAudio::Skip);
    let skipped: Vec<(usize, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.index, s.id.as_str()))
        .collect();
    assert_eq!(skipped, [(1, "broken.wav"), (3, "text.wav")]);
    assert!(report.skipped.iter().all(|s| !s.reason.is_empty()));
    assert!(
        kept.utterances
            .iter()
            .all(|u| u.id != "broken.wav" && u.id != "text.wav")
    );
    assert_eq!(kept.classes, c.classes);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["policy"], "skip");
    assert_eq!(json["skipped"][1]["id"], "text.wav");

    // Skipping the only example of a class leaves a class without utterances: an error.
    fs::write(d.join("b.wav"), b"garbage").unwrap();
    match c.check_audio(OnBadAudio::Skip, |u| probe_wav(&u.path)) {
        Err(DataError::EmptyClass { class, .. }) => assert_eq!(class, "angry"),
        other => panic!("{other:?}"),
    }

    // The tracker for a training loop that decodes by itself.
    let t = BadAudioTracker::new(OnBadAudio::Skip);
    t.record(4, &c.utterances[4], &"bad header").unwrap();
    t.record(2, &c.utterances[2], &"truncated").unwrap();
    let r = t.into_report(7);
    assert_eq!(
        r.skipped.iter().map(|s| s.index).collect::<Vec<_>>(),
        [2, 4]
    );
    let t = BadAudioTracker::new(OnBadAudio::Fail);
    let e = t.record(2, &c.utterances[2], &"truncated").unwrap_err();
    assert!(
        e.to_string().contains("utterance b.wav: cannot decode")
            && e.to_string().contains("truncated"),
        "{e}"
    );

    assert_eq!("skip".parse::<OnBadAudio>().unwrap(), OnBadAudio::Skip);
    assert_eq!("fail".parse::<OnBadAudio>().unwrap(), OnBadAudio::Fail);
    assert!(matches!(
        "ignore".parse::<OnBadAudio>(),
        Err(DataError::BadAudioPolicy(_))
    ));
    assert_eq!(OnBadAudio::default(), OnBadAudio::Fail);
}

#[test]
fn run_directory_checks() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("runs/a/b");
    ensure_writable_dir(&nested).unwrap();
    assert!(nested.is_dir());
    assert_eq!(
        fs::read_dir(&nested).unwrap().count(),
        0,
        "the probe file is removed"
    );

    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let e = ensure_writable_dir(&file).unwrap_err();
    assert!(matches!(e, DataError::Unwritable { .. }));
    assert!(
        e.to_string()
            .starts_with(&format!("cannot write to directory {}", file.display())),
        "{e}"
    );
    let e = ensure_writable_dir(&file.join("below")).unwrap_err();
    assert!(e.to_string().contains("below"), "{e}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permissions; only check where they apply.
        let enforced = fs::write(ro.join("probe"), "x").is_err();
        let r = ensure_writable_dir(&ro);
        if enforced {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("ermission denied"), "{e}");
        } else {
            let _ = fs::remove_file(ro.join("probe"));
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn statistics_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in 0..6 {
        common::write(&d.join(format!("{n}.wav")), &common::tiny_wav(8));
    }
    common::write(
        &d.join("m.csv"),
        b"path,label,speaker,session\n0.wav,sad,a,S2\n1.wav,happy,a,S2\n2.wav,happy,b,S10\n3.wav,angry,b,S10\n4.wav,neutral,c,S10\n5.wav,sad,c,S10\n",
    );
    let c = manifest::read(&d.join("m.csv"), None).unwrap();
    assert_eq!(c.sessions(), ["S2", "S10"]);
    let s = c.statistics();
    assert_eq!(s["class_counts"]["happy"], 2);
    assert_eq!(s["sessions"]["S10"]["total"], 4);
    assert_eq!(
        s["sessions"]["S10"]["speakers"],
        serde_json::json!(["b", "c"])
    );
    assert_eq!(s["sessions"]["S2"]["angry"], 0);
    assert_eq!(s["n_speakers"], 3);
    let t = c.statistics_table();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[1]
            .split_whitespace()
            .eq(["S2", "0", "1", "0", "1", "2"]),
        "{t}"
    );
    assert!(
        lines[3]
            .split_whitespace()
            .eq(["all", "1", "2", "1", "2", "6"]),
        "{t}"
    );
    assert_eq!(natural_cmp("S2", "S10"), std::cmp::Ordering::Less);
}

#[test]
fn several_corpora_keep_their_names_and_speakers_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |dir: &str, rows: &[(&str, &str, &str)]| {
        let d = tmp.path().join(dir);
        let mut csv = String::from("path,label,speaker\n");
        for (f, label, speaker) in rows {
            common::write(&d.join(f), &common::tiny_wav(64));
            csv.push_str(&format!("{f},{label},{speaker}\n"));
        }
        common::write(&d.join("manifest.csv"), csv.as_bytes());
        format!("manifest:{}", d.join("manifest.csv").display())
    };
    // The same speaker id in both corpora: two people.
    let a = make(
        "ravdess",
        &[("1.wav", "angry", "s1"), ("2.wav", "sad", "s2")],
    );
    let b = make("other", &[("1.wav", "happy", "s1"), ("2.wav", "sad", "s1")]);
    let c = duet_data::open_corpora(&[a.clone(), b], None).unwrap();
    assert_eq!(c.name, "ravdess+other");
    assert_eq!(c.classes, ["angry", "happy", "sad"]);
    assert_eq!(c.speakers(), ["other/s1", "ravdess/s1", "ravdess/s2"]);
    assert_eq!(
        c.corpora(),
        vec![
            ("ravdess".to_string(), vec![1, 0, 1]),
            ("other".to_string(), vec![0, 1, 1])
        ]
    );
    assert_eq!(
        c.corpora_summary(),
        "ravdess 2 (angry 1, happy 0, sad 1); other 2 (angry 0, happy 1, sad 1)"
    );
    assert!(
        !c.corpora_summary().contains('/'),
        "no paths in what a model file states"
    );
    // Labels follow the union: the happy utterance of `other` has the union's happy index.
    let first_of_other = c.utterances.iter().find(|u| u.corpus == "other").unwrap();
    assert!(
        first_of_other.id.starts_with("other/"),
        "{}",
        first_of_other.id
    );
    assert_eq!(c.classes[first_of_other.label], "happy");
    // The same corpus twice gets a distinct name; one corpus alone keeps its ids.
    let twice = duet_data::open_corpora(&[a.clone(), a.clone()], None).unwrap();
    assert_eq!(twice.name, "ravdess+ravdess-2");
    let one = duet_data::open_corpora(&[a], None).unwrap();
    assert_eq!(one.speakers(), ["s1", "s2"]);
    assert!(one.utterances.iter().all(|u| u.corpus == "ravdess"));
}
