//! Long recordings through `duet predict`: a file over `timeline::WHOLE_MAX_S` is classified in
//! windows as it is read, its answer is the mean of the windows', and its peak memory does not grow
//! with its length.

use std::path::{Path, PathBuf};
use std::process::Command;

use duet_model::timeline::WHOLE_MAX_S;
use serde_json::Value;

use crate::common::{DUET, measured, root};

/// Real speech (the eight committed RAVDESS clips, 28.6 s together) repeated until the file is at
/// least `seconds` long, as 16 kHz 16-bit mono. Written a block at a time: the child's peak RSS
/// that `measured` reads includes this process's own peak (Linux records the spawning process's
/// high-water mark at the child's exec), so a whole recording held here would show as the child's.
fn speech_wav(path: &Path, seconds: f32) {
    use std::io::Write;
    let mut clips: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/ravdess"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    clips.sort();
    let speech: Vec<f32> = clips
        .iter()
        .flat_map(|p| {
            duet_dsp::decode_wav_16k(&std::fs::read(p).unwrap())
                .unwrap()
                .samples
        })
        .collect();
    let n = (seconds * 16_000.0) as usize;
    // The header of an n-sample file (wav_bytes of no samples, its two lengths set), then the samples.
    let mut header = duet_data::synth::wav_bytes(&[]);
    let data_len = (n * 2) as u32;
    header[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    header[40..44].copy_from_slice(&data_len.to_le_bytes());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(&header).unwrap();
    let mut cycle = speech.iter().copied().cycle().take(n);
    loop {
        let block: Vec<f32> = cycle.by_ref().take(16_000).collect();
        if block.is_empty() {
            break;
        }
        out.write_all(&duet_data::synth::wav_bytes(&block)[44..])
            .unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn a_long_file_is_the_mean_of_its_windows_and_a_short_one_is_whole() {
    // Each test its own directory: they run at the same time.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let short = dir.join("short.wav");
    let long = dir.join("long.wav");
    speech_wav(&short, 40.0);
    speech_wav(&long, WHOLE_MAX_S + 20.0);
    let m = measured(
        Command::new(DUET)
            .args(["predict", "--json", "--timeline"])
            .arg(&short)
            .arg(&long),
    );
    assert_eq!(m.code, 0, "{}", m.stderr);
    let lines: Vec<Value> = m
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["summary"], "whole file");
    assert!(lines[0]["timeline"].as_array().unwrap().len() > 20);

    let r = &lines[1];
    let duration = r["duration_s"].as_f64().unwrap();
    assert!(
        (duration - (WHOLE_MAX_S as f64 + 20.0)).abs() < 0.01,
        "{duration}"
    );
    let windows = r["timeline"].as_array().unwrap();
    assert_eq!(
        r["summary"],
        format!("mean of {} windows", windows.len()).as_str()
    );
    // 3 s windows every 1.5 s, the last ending at the end.
    assert_eq!(windows[0]["start_s"].as_f64().unwrap(), 0.0);
    assert!((windows.last().unwrap()["end_s"].as_f64().unwrap() - duration).abs() < 1e-3);
    assert_eq!(windows.len(), ((duration - 3.0) / 1.5).ceil() as usize + 1);
    let classes: Vec<&String> = r["probabilities"].as_object().unwrap().keys().collect();
    let mut best = ("", -1.0);
    for c in classes {
        let mean = windows
            .iter()
            .map(|w| w["probabilities"][c].as_f64().unwrap())
            .sum::<f64>()
            / windows.len() as f64;
        let p = r["probabilities"][c].as_f64().unwrap();
        assert!(
            (mean - p).abs() < 1e-5,
            "{c}: {p} vs the windows' mean {mean}"
        );
        if p > best.1 {
            best = (c, p);
        }
    }
    assert_eq!(r["label"], best.0);
}

#[test]
fn peak_memory_does_not_grow_with_the_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut peaks = Vec::new();
    for minutes in [6.0f32, 18.0] {
        let file = dir.join(format!("{minutes}min.wav"));
        speech_wav(&file, minutes * 60.0);
        let m = measured(Command::new(DUET).arg("predict").arg(&file));
        assert_eq!(m.code, 0, "{}", m.stderr);
        assert!(m.stdout.contains("(mean of "), "{}", m.stdout);
        println!("{minutes} min: peak RSS {} MB", m.peak_mb);
        peaks.push(m.peak_mb);
        std::fs::remove_file(file).ok();
    }
    // One call over the whole file grew by about 20 MB per minute (2.6 GB for 2 h); windows read as
    // the file is read leave only allocator noise.
    assert!(
        peaks[1] <= peaks[0] + 32,
        "6 min: {} MB, 18 min: {} MB",
        peaks[0],
        peaks[1]
    );
}
