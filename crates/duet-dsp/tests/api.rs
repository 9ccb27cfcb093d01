//! The public API's contracts: presets, streaming = in-memory, resize and log conventions, npy files.

mod common;

use common::*;
use duet_dsp::{FeatureConfig, FeaturePlan, Mel, Preset, decode_wav, features_from_file, npy};

#[test]
fn presets_hold_the_papers_numbers() {
    let p = FeatureConfig::paper();
    assert_eq!(
        (p.narrow.n_fft, p.narrow.hop_length, p.narrow.n_mels),
        (256, 128, 64)
    );
    assert_eq!(
        (p.wide.n_fft, p.wide.hop_length, p.wide.n_mels),
        (512, 256, 128)
    );
    assert_eq!(
        (p.mfcc.frame_length, p.mfcc.frame_step, p.mfcc.n_features()),
        (400, 160, 39)
    );
    assert_eq!((p.min_samples(), p.min_duration_s()), (512, 0.032));
    let a = FeatureConfig::authors();
    assert_eq!(
        (a.narrow.n_fft, a.narrow.hop_length, a.narrow.n_mels),
        (512, 256, 128)
    );
    assert_eq!(
        (a.wide.n_fft, a.wide.hop_length, a.wide.n_mels),
        (1024, 512, 256)
    );
    assert_eq!(a.min_samples(), 1024);
    assert_eq!(FeatureConfig::for_preset(Preset::Authors), a);
    assert_eq!("paper".parse::<Preset>().unwrap(), Preset::Paper);
    assert_eq!("Authors".parse::<Preset>().unwrap(), Preset::Authors);
    assert!(
        "both"
            .parse::<Preset>()
            .unwrap_err()
            .to_string()
            .contains("\"both\"")
    );
    assert_eq!(Preset::Authors.to_string(), "authors");
    assert_eq!(serde_json::to_string(&Preset::Paper).unwrap(), "\"paper\"");
    let json = serde_json::to_string(&a).unwrap();
    let back: FeatureConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    let mut bad = FeatureConfig::paper();
    bad.wide.hop_length = 0;
    assert!(FeaturePlan::try_new(&bad).is_err());
}

/// The file path (streamed in blocks, resampler identity at 16 kHz) gives exactly the in-memory result,
/// and pushing odd-sized blocks changes nothing.
#[test]
fn streaming_equals_in_memory() {
    let bytes = read_bytes("speech_a.wav");
    let x = decode_wav(&bytes).unwrap().samples;
    for cfg in [FeatureConfig::paper(), FeatureConfig::authors()] {
        let mut plan = FeaturePlan::new(&cfg);
        let whole = plan.compute(&x).unwrap();
        let from_file = features_from_file(&fixtures().join("speech_a.wav"), &mut plan).unwrap();
        assert_eq!(whole, from_file);
        // Unknown length (output grows as it goes) and an over-estimated length (rows compacted).
        let mut s = plan.stream();
        for block in x.chunks(997) {
            s.push(block).unwrap();
        }
        assert_eq!(s.finish().unwrap(), whole);
        let mut s = plan.stream();
        s.reserve(x.len() as u64 + 12_345);
        for block in x.chunks(4096) {
            s.push(block).unwrap();
        }
        assert_eq!(s.finish().unwrap(), whole);
        assert_eq!(whole.mfcc.n_frames, cfg.mfcc.n_frames(x.len()));
        assert_eq!(
            whole.mel_narrow.n_frames,
            1 + x.len() / cfg.narrow.hop_length
        );
        assert_eq!(whole.mel_wide.n_frames, 1 + x.len() / cfg.wide.hop_length);
        assert!((whole.duration_s - 3.0).abs() < 1e-6);
    }
}

/// A plan is reusable: the second utterance's features don't depend on the first.
#[test]
fn plan_reuse_is_stateless() {
    let a = decode_wav(&read_bytes("speech_a.wav")).unwrap().samples;
    let b = decode_wav(&read_bytes("chirp.wav")).unwrap().samples;
    let mut plan = FeaturePlan::new(&FeatureConfig::paper());
    let fb1 = plan.compute(&b).unwrap();
    plan.compute(&a).unwrap();
    let _ = plan.compute(&a[..100]); // an error half-way leaves nothing behind either
    assert_eq!(plan.compute(&b).unwrap(), fb1);
}

/// PyTorch `F.interpolate(mode="nearest")` indices, written out by hand:
/// 5 -> 3 frames takes 0, 1, 3; 5 -> 8 takes 0, 0, 1, 1, 2, 3, 3, 4; 4 -> 2 takes 0, 2.
#[test]
fn resize_is_pytorch_nearest() {
    let mel = Mel {
        n_mels: 2,
        n_frames: 5,
        data: vec![0., 1., 2., 3., 4., 10., 11., 12., 13., 14.],
    };
    assert_eq!(
        mel.resize_time_nearest(3).data,
        vec![0., 1., 3., 10., 11., 13.]
    );
    assert_eq!(
        mel.resize_time_nearest(8).data[..8],
        [0., 0., 1., 1., 2., 3., 3., 4.]
    );
    assert_eq!(mel.resize_time_nearest(5), mel);
    let m4 = Mel {
        n_mels: 1,
        n_frames: 4,
        data: vec![5., 6., 7., 8.],
    };
    assert_eq!(m4.resize_time_nearest(2).data, vec![5., 7.]);
    assert_eq!(mel.resize_time_nearest(0).data.len(), 0);
}

#[test]
fn log_has_a_floor() {
    let mel = Mel {
        n_mels: 1,
        n_frames: 4,
        data: vec![0.0, 1e-12, 1.0, 100.0],
    };
    assert_eq!(mel.to_log(1e-10).data, vec![-100.0, -100.0, 0.0, 20.0]);
    assert_eq!(FeatureConfig::paper().log_floor, 1e-10);
}

#[test]
fn npy_round_trip_and_numpy_header() {
    let dir = std::env::temp_dir().join(format!("duet-dsp-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("a.npy");
    let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
    npy::write_f32(&p, &[2, 3], &data).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
    assert_eq!(npy::read_f32(&p).unwrap(), (vec![2, 3], data));
    // A fixture written by numpy reads back with the right shape.
    let (shape, v) = read_npy("speech_a.mfcc.npy");
    assert_eq!(shape, vec![298, 39]);
    assert_eq!(v.len(), 298 * 39);
    assert!(npy::write_f32(&p, &[4], &[1.0]).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// Level normalisation: the features of a quiet and a loud copy of real speech agree (the point of
/// it), agree with those of the samples scaled to the target directly, and without it they differ.
#[test]
fn level_normalisation_removes_the_recording_gain() {
    let bytes = std::fs::read(fixtures().join("../ravdess/03-01-05-01-01-01-01.wav"))
        .expect("tests/fixtures/ravdess");
    let speech = duet_dsp::load_audio_16k(&bytes).expect("decodes");
    let scaled = |g: f32| speech.iter().map(|v| v * g).collect::<Vec<f32>>();
    let (quiet, loud) = (scaled(0.05), scaled(0.9));

    let mut off = FeaturePlan::new(&FeatureConfig::paper());
    let mut config = FeatureConfig::paper();
    config.level = Some(duet_dsp::LevelNorm::speech());
    let mut on = FeaturePlan::new(&config);

    let max_db = |a: &Mel, b: &Mel| {
        a.data
            .iter()
            .zip(&b.data)
            .filter(|(x, y)| x.max(**y) > 1e-3)
            .map(|(x, y)| (10.0 * (x.max(1e-10) / y.max(1e-10)).log10()).abs())
            .fold(0.0f32, f32::max)
    };
    let (q, l) = (on.compute(&quiet).unwrap(), on.compute(&loud).unwrap());
    assert!(
        max_db(&q.mel_wide, &l.mel_wide) < 0.01,
        "{}",
        max_db(&q.mel_wide, &l.mel_wide)
    );
    assert!(max_db(&q.mel_narrow, &l.mel_narrow) < 0.01);
    // The MFCC too, every frame (near-silent pauses included: the floor comes after the gain), and
    // the same as scaling the samples so that the active level is at the target.
    let max_abs = |a: &duet_dsp::Mfcc, b: &duet_dsp::Mfcc| {
        assert_eq!(a.n_frames, b.n_frames);
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(
        max_abs(&q.mfcc, &l.mfcc) < 2e-3,
        "{}",
        max_abs(&q.mfcc, &l.mfcc)
    );
    let level = duet_dsp::LevelNorm::speech();
    let plain = off.compute(&loud).unwrap();
    let log_e = (0..plain.mfcc.n_frames).map(|t| plain.mfcc.at(t, 12));
    let gain = (level.log_power_gain(log_e, &config.mfcc) / 2.0).exp() as f32;
    let direct = off
        .compute(&loud.iter().map(|v| v * gain).collect::<Vec<_>>())
        .unwrap();
    assert!(max_db(&direct.mel_wide, &l.mel_wide) < 0.01);
    assert!(
        max_abs(&direct.mfcc, &l.mfcc) < 2e-3,
        "{}",
        max_abs(&direct.mfcc, &l.mfcc)
    );
    // The quiet copy has frames the plain front end floors (this is what the check is about).
    let quiet_plain = off.compute(&quiet).unwrap();
    let floored = (0..quiet_plain.mfcc.n_frames)
        .filter(|&t| quiet_plain.mfcc.at(t, 12) <= 0.0)
        .count();
    assert!(floored > 0, "no floored frame in the quiet copy");
    // Without it, 25 dB apart.
    let (q0, l0) = (off.compute(&quiet).unwrap(), off.compute(&loud).unwrap());
    assert!(max_db(&q0.mel_wide, &l0.mel_wide) > 20.0);
    // A copy 45 dB below the loud one (a far laptop microphone) needs more than 40 dB of gain to
    // reach the target; within the gain limit, it too gives the loud one's features.
    let far = on.compute(&scaled(0.9 * 10f32.powf(-45.0 / 20.0))).unwrap();
    assert!(
        max_db(&far.mel_wide, &l.mel_wide) < 0.01,
        "{}",
        max_db(&far.mel_wide, &l.mel_wide)
    );
    assert!(
        max_abs(&far.mfcc, &l.mfcc) < 2e-3,
        "{}",
        max_abs(&far.mfcc, &l.mfcc)
    );
}

/// Silence trimming on real speech: each RAVDESS clip (about 40 % silence around the speech) loses
/// some of its frames but keeps its speech, and a second more of its room before and after
/// the clip (its own first quarter second, repeated) moves the span by that second (within 80 ms) and leaves about as many frames kept as before: the model
/// sees the same input however long the person waited.
#[test]
fn silence_trim_keeps_the_speech_of_real_recordings() {
    let config = FeatureConfig::paper();
    let mut plan = FeaturePlan::new(&config);
    let trim = duet_dsp::SilenceTrim::speech();
    let dir = fixtures().join("../ravdess");
    let mut clips = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures/ravdess") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wav") {
            continue;
        }
        let speech = duet_dsp::load_audio_16k(&std::fs::read(&path).unwrap()).unwrap();
        let f = plan.compute(&speech).unwrap();
        let (start, end) = trim.speech_span(&f, &config).expect("a span");
        let duration = speech.len() as f64 / 16000.0;
        let kept = (end - start) / duration;
        assert!(
            start > 0.1 && end < duration - 0.1 && kept > 0.3 && kept < 0.9,
            "{}: span {start:.2}..{end:.2} s of {duration:.2} s",
            path.display()
        );
        // One second more of the recording's own room on each side: its first 0.25 s, four times.
        let room: Vec<f32> = speech[..4000].iter().cycle().take(16000).copied().collect();
        let mut padded = room.clone();
        padded.extend_from_slice(&speech);
        padded.extend_from_slice(&room);
        let g = plan.compute(&padded).unwrap();
        let (s2, e2) = trim.speech_span(&g, &config).unwrap();
        assert!(
            (s2 - 1.0 - start).abs() < 0.08 && (e2 - 1.0 - end).abs() < 0.08,
            "{}: {start:.3}..{end:.3} s, padded {s2:.3}..{e2:.3} s",
            path.display()
        );
        let (a, b) = (trim.apply(&f, &config), trim.apply(&g, &config));
        // As many frames kept, to the spans' 80 ms and a frame's rounding: the added
        // second is not a whole number of hops, so every frame after it samples the speech at
        // another phase, and a soft onset or decay crosses the threshold a frame or few earlier or later.
        for (name, x, y, step) in [
            ("mfcc", a.mfcc.n_frames, b.mfcc.n_frames, 160),
            ("narrow", a.mel_narrow.n_frames, b.mel_narrow.n_frames, 128),
            ("wide", a.mel_wide.n_frames, b.mel_wide.n_frames, 256),
        ] {
            let seconds = x.abs_diff(y) as f64 * step as f64 / 16000.0;
            assert!(
                seconds <= 0.18,
                "{}: {name} {x} vs {y} frames",
                path.display()
            );
        }
        clips += 1;
    }
    assert_eq!(clips, 8);
}
