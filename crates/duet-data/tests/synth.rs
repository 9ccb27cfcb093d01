//! The synthetic corpus: deterministic for a seed, speaker-disjoint sessions, 16 kHz mono 16-bit
//! output, class prosody in the intended direction, and clear errors for missing or failing tools.
//!
//! Rendering tests need espeak-ng, flite and sox (`apt-get install espeak-ng flite sox`); where they are
//! missing those tests say so on stderr and return (the tool-lookup tests run everywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use duet_data::synth::{self, Engine, SynthOptions, synth_corpus, voice_pool};
use duet_data::{DataError, manifest};

fn tools_available() -> bool {
    let ok = ["espeak-ng", "flite", "sox"]
        .iter()
        .all(|t| synth::find_tool(t, t, None).is_ok());
    if !ok {
        eprintln!(
            "SKIPPED: espeak-ng, flite or sox is not installed (apt-get install espeak-ng flite sox)"
        );
    }
    ok
}

fn small() -> SynthOptions {
    SynthOptions {
        voices: 2,
        sentences: 2,
        seed: 5,
        voices_per_session: 1,
        threads: 2,
        ..Default::default()
    }
}

fn rms_and_seconds(path: &Path) -> (f64, f64) {
    let bytes = fs::read(path).unwrap();
    // The header says PCM, 16 kHz, mono, 16 bits.
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 1, "PCM");
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 1, "mono");
    assert_eq!(
        u32::from_le_bytes(bytes[24..28].try_into().unwrap()),
        16_000
    );
    assert_eq!(u16::from_le_bytes([bytes[34], bytes[35]]), 16, "16-bit");
    let audio = duet_dsp::decode_wav(&bytes).unwrap();
    assert_eq!((audio.sample_rate, audio.channels), (16_000, 1));
    let s = &audio.samples;
    let rms = (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    (rms, s.len() as f64 / 16_000.0)
}

#[test]
fn small_corpus_is_deterministic_speaker_disjoint_and_prosodic() {
    if !tools_available() {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let calls = Mutex::new(Vec::new());
    let ma = synth_corpus(a.path(), &small(), |d, t| {
        calls.lock().unwrap().push((d, t))
    })
    .unwrap();
    let mb = synth_corpus(
        b.path(),
        &SynthOptions {
            threads: 1,
            ..small()
        },
        |_, _| {},
    )
    .unwrap();
    let mut calls = calls.into_inner().unwrap();
    calls.sort();
    assert_eq!(calls, (1..=16).map(|d| (d, 16)).collect::<Vec<_>>());

    // Same manifest, same audio bytes (whatever the thread count).
    assert_eq!(ma, a.path().join("manifest.csv"));
    assert_eq!(fs::read(&ma).unwrap(), fs::read(&mb).unwrap());
    let c = manifest::read(&ma, None).unwrap();
    assert_eq!(c.utterances.len(), 2 * 2 * 4);
    assert_eq!(c.classes, ["angry", "happy", "neutral", "sad"]);
    assert_eq!(c.class_counts(), vec![4, 4, 4, 4]);
    // `manifest:DIR` finds the folder's manifest.
    let via_dir =
        duet_data::open_corpus(&format!("manifest:{}", a.path().display()), None).unwrap();
    assert_eq!(via_dir, c);
    for u in &c.utterances {
        let rel = u.path.strip_prefix(a.path()).unwrap();
        assert_eq!(
            fs::read(&u.path).unwrap(),
            fs::read(b.path().join(rel)).unwrap(),
            "{} differs between two renders with one seed",
            u.id
        );
    }
    // No temporary files left behind.
    let names: BTreeSet<String> = fs::read_dir(a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["manifest.csv".into(), "synth.json".into(), "wav".into()])
    );

    // Sessions are speaker-disjoint; here one voice each, one espeak-ng and one flite.
    let mut speakers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in &c.utterances {
        speakers
            .entry(u.session.clone())
            .or_default()
            .insert(u.speaker.clone());
    }
    assert_eq!(speakers.len(), 2);
    let all: Vec<&String> = speakers.values().flatten().collect();
    assert_eq!(all.len(), all.iter().collect::<BTreeSet<_>>().len());
    assert!(all.iter().any(|s| s.contains("espeak")) && all.iter().any(|s| s.contains("flite")));
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(a.path().join("synth.json")).unwrap()).unwrap();
    assert_eq!(info["voices"].as_array().unwrap().len(), 2);
    assert_eq!(info["options"]["seed"], 5);

    // The class prosody goes the intended way within each voice: angry louder and faster than sad.
    for spk in all {
        let get = |class: &str| {
            let mut rms = 0.0;
            let mut secs = 0.0;
            for u in c
                .utterances
                .iter()
                .filter(|u| &u.speaker == spk && c.classes[u.label] == class)
            {
                let (r, s) = rms_and_seconds(&u.path);
                assert!(r > 1e-3, "{} is silent", u.id);
                assert!((0.5..10.0).contains(&s), "{} lasts {s} s", u.id);
                rms += r;
                secs += s;
            }
            (rms, secs)
        };
        let (angry, sad) = (get("angry"), get("sad"));
        assert!(
            angry.0 > 1.5 * sad.0,
            "{spk}: angry rms {} vs sad {}",
            angry.0,
            sad.0
        );
        assert!(
            sad.1 > angry.1,
            "{spk}: sad {} s vs angry {} s",
            sad.1,
            angry.1
        );
        get("happy");
        get("neutral");
    }

    // Another seed, other audio.
    let d = tempfile::tempdir().unwrap();
    synth_corpus(d.path(), &SynthOptions { seed: 6, ..small() }, |_, _| {}).unwrap();
    let differs = c.utterances.iter().any(|u| {
        let rel = u.path.strip_prefix(a.path()).unwrap();
        fs::read(&u.path).unwrap() != fs::read(d.path().join(rel)).unwrap()
    });
    assert!(differs);
}

#[test]
fn voices_are_distinct_and_sessions_speaker_disjoint() {
    for vps in [1, 2, 3, 5] {
        let opts = SynthOptions {
            voices: voice_pool().len(),
            voices_per_session: vps,
            ..Default::default()
        };
        let vs = synth::voices(&opts).unwrap();
        let bases: BTreeSet<(bool, &str)> = vs
            .iter()
            .map(|v| (v.base.engine == Engine::Flite, v.base.name))
            .collect();
        assert_eq!(bases.len(), vs.len(), "a base voice is used twice");
        let mut sess_of: BTreeMap<&str, &str> = BTreeMap::new();
        for v in &vs {
            assert!(sess_of.insert(&v.speaker, &v.session).is_none());
        }
        let sessions: BTreeSet<&str> = vs.iter().map(|v| v.session.as_str()).collect();
        assert_eq!(sessions.len(), vs.len().div_ceil(vps));
    }
    // Sessions of two voices pair a male and a female voice while both last, like IEMOCAP.
    let vs = synth::voices(&SynthOptions {
        voices: 10,
        ..Default::default()
    })
    .unwrap();
    for pair in vs.chunks(2) {
        assert_ne!(pair[0].base.gender, pair[1].base.gender);
        assert_eq!(pair[0].session, pair[1].session);
    }
    // Plans are a pure function of the options.
    let (_, p1) = synth::plan(&SynthOptions {
        voices: 3,
        sentences: 4,
        seed: 9,
        ..Default::default()
    })
    .unwrap();
    let (_, p2) = synth::plan(&SynthOptions {
        voices: 3,
        sentences: 4,
        seed: 9,
        ..Default::default()
    })
    .unwrap();
    let (_, p3) = synth::plan(&SynthOptions {
        voices: 3,
        sentences: 4,
        seed: 10,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(p1, p2);
    assert_ne!(p1, p3);
    assert_eq!(p1.len(), 3 * 4 * 4);
    assert!(
        synth::voices(&SynthOptions {
            voices: voice_pool().len() + 1,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        synth::voices(&SynthOptions {
            sentences: 0,
            ..Default::default()
        })
        .is_err()
    );
    // Sentences beyond the written ones are generated, and distinct.
    let s: BTreeSet<String> = (0..300).map(synth::sentence).collect();
    assert_eq!(s.len(), 300);
}

fn fake_tool(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, script).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn missing_tools_name_their_apt_package() {
    let out = tempfile::tempdir().unwrap();
    let render = |path: OsString, voices: usize| {
        synth_corpus(
            &out.path().join("c"),
            &SynthOptions {
                tool_path: Some(path),
                voices,
                ..small()
            },
            |_, _| {},
        )
        .unwrap_err()
    };
    // Nothing on the path.
    let e = render(OsString::new(), 2);
    assert!(
        matches!(
            e,
            DataError::MissingTool {
                tool: "espeak-ng",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("sudo apt-get install espeak-ng"),
        "{e}"
    );
    // espeak-ng there, flite not.
    let bin = tempfile::tempdir().unwrap();
    fake_tool(bin.path(), "espeak-ng", "#!/bin/sh\nexit 1\n");
    let e = render(bin.path().into(), 2);
    assert!(e.to_string().contains("flite not found"), "{e}");
    assert!(e.to_string().contains("sudo apt-get install flite"), "{e}");
    assert!(
        e.to_string().contains(&bin.path().display().to_string()),
        "{e}"
    );
    // One espeak-ng voice only: flite is not needed, sox is.
    let e = render(bin.path().into(), 1);
    assert!(
        e.to_string().contains("sox not found") && e.to_string().contains("apt-get install sox"),
        "{e}"
    );
    // A file that is not executable does not count.
    fs::write(bin.path().join("sox"), "").unwrap();
    let e = render(bin.path().into(), 1);
    assert!(e.to_string().contains("sox not found"), "{e}");
    assert!(
        !out.path().join("c").exists(),
        "nothing is written before the tools are found"
    );
}

#[test]
fn failing_tool_and_unwritable_output() {
    if !tools_available() {
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    fake_tool(
        bin.path(),
        "espeak-ng",
        "#!/bin/sh\necho 'boom: no voice' >&2\nexit 3\n",
    );
    let sox_dir = synth::find_tool("sox", "sox", None).unwrap();
    let path = std::env::join_paths([bin.path(), sox_dir.parent().unwrap()]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = synth_corpus(
        out.path(),
        &SynthOptions {
            tool_path: Some(path),
            voices: 1,
            ..small()
        },
        |_, _| {},
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, DataError::Tool { .. }), "{m}");
    assert!(
        m.contains("boom: no voice") && m.contains("v01-espeak-m3_"),
        "{m}"
    );
    assert!(
        fs::read_dir(out.path()).unwrap().next().is_none(),
        "temporary files are removed after a failure"
    );

    let file = out.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let e = synth_corpus(&file, &small(), |_, _| {}).unwrap_err();
    assert!(matches!(e, DataError::Unwritable { .. }), "{e:?}");
    assert!(e.to_string().contains("a-file"), "{e}");
}

/// Learnability on held-out voices with the simplest of models: per-utterance mean and standard
/// deviation of the 39 MFCC12_E_D_A values, z-scored on the training voices, nearest class centroid,
/// leave one session out. Chance is 25%. Slow-ish (renders 256 utterances): run with --ignored.
#[test]
#[ignore]
fn classes_are_learnable_from_prosody_on_held_out_voices() {
    if !tools_available() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        voices: 8,
        sentences: 8,
        seed: 11,
        ..Default::default()
    };
    let m = synth_corpus(out.path(), &opts, |_, _| {}).unwrap();
    let c = manifest::read(&m, None).unwrap();
    let config = duet_dsp::FeatureConfig::for_preset(duet_dsp::Preset::Paper);
    let mut plan = duet_dsp::FeaturePlan::new(&config);
    let x: Vec<Vec<f64>> = c
        .utterances
        .iter()
        .map(|u| {
            let f = duet_dsp::features_from_file(&u.path, &mut plan).unwrap();
            let t = f.mfcc.n_frames as f64;
            let mut v = Vec::new();
            for j in 0..39 {
                let col: Vec<f64> = (0..f.mfcc.n_frames)
                    .map(|i| f.mfcc.at(i, j) as f64)
                    .collect();
                let mean = col.iter().sum::<f64>() / t;
                let sd = (col.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / t).sqrt();
                v.push(mean);
                v.push(sd);
            }
            v.push(f.duration_s as f64);
            v
        })
        .collect();
    let folds = duet_data::folds(&c, &duet_data::Protocol::Loso, 0).unwrap();
    let mut truth = Vec::new();
    let mut pred = Vec::new();
    for f in &folds {
        let train: Vec<usize> = f.train.iter().chain(&f.valid).copied().collect();
        let d = x[0].len();
        let mu: Vec<f64> = (0..d)
            .map(|j| train.iter().map(|&i| x[i][j]).sum::<f64>() / train.len() as f64)
            .collect();
        let sd: Vec<f64> = (0..d)
            .map(|j| {
                (train
                    .iter()
                    .map(|&i| (x[i][j] - mu[j]).powi(2))
                    .sum::<f64>()
                    / train.len() as f64)
                    .sqrt()
                    .max(1e-9)
            })
            .collect();
        let z = |i: usize| -> Vec<f64> { (0..d).map(|j| (x[i][j] - mu[j]) / sd[j]).collect() };
        let mut cent = vec![vec![0.0; d]; 4];
        let mut n = [0usize; 4];
        for &i in &train {
            let l = c.utterances[i].label;
            for (a, b) in cent[l].iter_mut().zip(z(i)) {
                *a += b;
            }
            n[l] += 1;
        }
        for k in 0..4 {
            cent[k].iter_mut().for_each(|a| *a /= n[k] as f64);
        }
        for &i in &f.test {
            let zi = z(i);
            let best = (0..4)
                .min_by(|&a, &b| {
                    let da: f64 = cent[a].iter().zip(&zi).map(|(p, q)| (p - q).powi(2)).sum();
                    let db: f64 = cent[b].iter().zip(&zi).map(|(p, q)| (p - q).powi(2)).sum();
                    da.total_cmp(&db)
                })
                .unwrap();
            truth.push(c.utterances[i].label);
            pred.push(best);
        }
    }
    let m = duet_data::metrics::compute(&truth, &pred, 4);
    eprintln!(
        "nearest-centroid LOSO on the synthetic corpus: WA {:.3} UA {:.3}\n{:?}",
        m.wa, m.ua, m.confusion
    );
    assert!(
        m.ua > 0.45,
        "UA {:.3}: the classes are not learnable from these features",
        m.ua
    );
    assert!(m.ua < 0.98, "UA {:.3}: the task is trivial", m.ua);
}
