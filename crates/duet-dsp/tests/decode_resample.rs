//! Decoding against libsndfile (soundfile) and resampling against soxr (librosa's default), on the
//! committed fixtures; plus band-limiting checks on synthetic tones.

mod common;

use common::*;
use duet_dsp::{
    FeatureConfig, FeaturePlan, SAMPLE_RATE, StreamResampler, decode_wav, features_from_file,
    load_audio_16k, resample,
};

/// Every WAV form libsndfile writes that Duet claims to read: decoded mono must equal libsndfile's
/// samples averaged over channels.
#[test]
fn decodes_every_wav_form_like_libsndfile() {
    let forms = [
        ("pcm_u8", 1, 16_000),
        ("pcm16", 1, 16_000),
        ("pcm24", 2, 22_050),
        ("pcm32", 1, 16_000),
        ("float32", 2, 16_000),
        ("float64", 1, 16_000),
        ("extensible_3ch", 3, 16_000),
        ("rf64", 2, 16_000),
        ("rf64_float", 1, 16_000),
    ];
    for (form, channels, rate) in forms {
        let a = decode_wav(&read_bytes(&format!("decode.{form}.wav")))
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        let (_, want) = read_npy(&format!("decode.{form}.npy"));
        assert_eq!(a.channels, channels, "{form}");
        assert_eq!(a.sample_rate, rate, "{form}");
        assert_eq!(a.samples.len(), want.len(), "{form}");
        let worst = a
            .samples
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-7, "{form}: worst sample difference {worst:e}");
    }
}

fn tone(rate: u32, hz: f64, amp: f64, seconds: f64) -> Vec<f32> {
    let n = (rate as f64 * seconds) as usize;
    (0..n)
        .map(|i| (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as f32)
        .collect()
}

/// Amplitude of the `hz` component of `x` (least squares on sin/cos, edges skipped).
fn amplitude(x: &[f32], rate: u32, hz: f64) -> f64 {
    let skip = x.len() / 10;
    let (mut s, mut c, mut n) = (0.0, 0.0, 0.0);
    for (i, &v) in x.iter().enumerate().skip(skip).take(x.len() - 2 * skip) {
        let ph = 2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64;
        s += v as f64 * ph.sin();
        c += v as f64 * ph.cos();
        n += 1.0;
    }
    2.0 * (s * s + c * c).sqrt() / n
}

fn rms(x: &[f32]) -> f64 {
    let skip = x.len() / 10;
    let y = &x[skip..x.len() - skip];
    (y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

/// SNR in dB of `ours` against `reference` over their common length.
fn snr_db(ours: &[f32], reference: &[f32]) -> f64 {
    let n = ours.len().min(reference.len());
    let sig: f64 = reference[..n].iter().map(|&v| (v as f64).powi(2)).sum();
    let noise: f64 = ours[..n]
        .iter()
        .zip(&reference[..n])
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    10.0 * (sig / noise).log10()
}

/// Band-limited, not interpolated: a 1 kHz tone passes unchanged (±0.01 dB) and in phase; tones above
/// the new Nyquist (which linear interpolation folds back at nearly full level) are removed to below
/// -90 dB. Checked for the common input rates, and for rates whose ratio to 16 kHz does not reduce
/// (66 667, 96 001 and 700 639 Hz), which the sinc engine takes.
#[test]
fn resampler_is_band_limited() {
    for rate in [
        8_000u32, 22_050, 32_000, 44_100, 48_000, 96_000, 66_667, 96_001, 700_639,
    ] {
        let x = tone(rate, 1000.0, 0.5, 1.0);
        let y = resample(&x, rate, SAMPLE_RATE).unwrap();
        assert_eq!(
            y.len() as u64,
            (x.len() as u64 * 16_000).div_ceil(rate as u64),
            "{rate}"
        );
        let a = amplitude(&y, SAMPLE_RATE, 1000.0);
        let gain_db = 20.0 * (a / 0.5).log10();
        assert!(
            gain_db.abs() < 0.01,
            "{rate} Hz: 1 kHz gain {gain_db:.4} dB"
        );
        // Time alignment: the output equals the ideal 1 kHz sine at 16 kHz.
        let ideal = tone(SAMPLE_RATE, 1000.0, 0.5, 1.0);
        let mid = y.len() / 2;
        let err = (y[mid - 100..mid + 100].iter())
            .zip(&ideal[mid - 100..mid + 100])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            err < 1e-3,
            "{rate} Hz: 1 kHz tone misaligned/distorted by {err:e}"
        );
        if rate > 2 * 9_000 {
            let hi = tone(rate, 9_000.0_f64.max(rate as f64 * 0.3), 0.5, 1.0);
            let y = resample(&hi, rate, SAMPLE_RATE).unwrap();
            let level_db = 20.0 * (rms(&y) / (0.5 / 2f64.sqrt())).log10();
            assert!(
                level_db < -90.0,
                "{rate} Hz: out-of-band tone left at {level_db:.1} dB"
            );
        }
    }
}

/// Streaming in odd-sized blocks gives the same samples as one call.
#[test]
fn streaming_resampler_matches_one_shot() {
    let x = tone(44_100, 440.0, 0.3, 0.7);
    let whole = resample(&x, 44_100, 16_000).unwrap();
    let mut r = StreamResampler::new(44_100, 16_000).unwrap();
    let mut out = Vec::new();
    let mut sink = |s: &[f32]| {
        out.extend_from_slice(s);
        Ok(())
    };
    for block in x.chunks(1_234) {
        r.push(block, &mut sink).unwrap();
    }
    r.finish(&mut sink).unwrap();
    assert_eq!(out, whole);
}

/// The 44.1 kHz stereo fixture. Resamplers legitimately differ (rubato's FFT filter vs soxr's HQ
/// polyphase filter: different transition bands just below 8 kHz and different ripple), so the Rust
/// pipeline is checked in two parts: (1) features on the SAME 16 kHz input (librosa's load + soxr,
/// quantised to 16 bits) — see `stereo_44k_on_soxr_16k_input_matches_librosa_and_opensmile` in
/// reference.rs, tolerances as for every file; (2) here: rubato's 16 kHz signal against soxr's, and the
/// full file → features pipeline against the fixtures with tolerances that allow for the resampler
/// difference: the waveforms must agree to better than 40 dB SNR (measured 53.8 dB), the MFCC on frames within 50 dB
/// of the loudest to a MEAN absolute difference of 0.1 (static) and 0.05 (delta, accel) — single
/// coefficients differ more because rubato keeps the 7.3-7.95 kHz band that soxr's HQ filter rolls off,
/// and the top HTK band's log energy feeds every cepstral coefficient — and the mel bins
/// within 30 dB of the maximum below 6 kHz to 0.1 dB (measured 0.018 dB) (the 10 kHz tone on the right channel must be gone,
/// or the 6 kHz region would show its alias).
#[test]
fn stereo_44k_file_pipeline_close_to_librosa_soxr() {
    let ours = load_audio_16k(&read_bytes("stereo_44k.wav")).unwrap();
    let soxr = decode_wav(&read_bytes("stereo_44k.soxr16k.wav"))
        .unwrap()
        .samples;
    assert!(
        (ours.len() as i64 - soxr.len() as i64).abs() <= 1,
        "{} vs {}",
        ours.len(),
        soxr.len()
    );
    let snr = snr_db(&ours, &soxr);
    eprintln!("rubato vs soxr on stereo_44k: SNR {snr:.1} dB");
    assert!(snr > 40.0, "rubato vs soxr SNR {snr:.1} dB");

    let mut plan = FeaturePlan::new(&FeatureConfig::paper());
    let path = fixtures().join("stereo_44k.wav");
    let f = features_from_file(&path, &mut plan).unwrap();
    // MFCC on frames within 50 dB of the loudest (logE is a natural log of energy): in quieter frames
    // the two resamplers' different noise floors (and soxr's 16-bit rounding to exact zeros) dominate.
    let (_, want) = read_npy("stereo_44k.soxr16k.mfcc.npy");
    assert_eq!(want.len(), f.mfcc.n_frames * 39);
    let max_log_e = (0..f.mfcc.n_frames)
        .map(|t| want[t * 39 + 12])
        .fold(f32::MIN, f32::max);
    let mut worst = [0f64; 3];
    let mut sum = [0f64; 3];
    let mut n = 0usize;
    for t in (0..f.mfcc.n_frames).filter(|&t| want[t * 39 + 12] > max_log_e - 5.0 * 10f32.ln()) {
        n += 1;
        for j in 0..39 {
            let e = (f.mfcc.at(t, j) as f64 - want[t * 39 + j] as f64).abs();
            worst[j / 13] = worst[j / 13].max(e);
            sum[j / 13] += e / 13.0;
        }
    }
    let mean = sum.map(|s| s / n as f64);
    eprintln!(
        "stereo_44k full pipeline MFCC over {n} loud frames: mean abs err static/delta/accel {mean:.3?}, worst {worst:.3?}"
    );
    assert!(
        mean[0] < 0.1 && mean[1] < 0.05 && mean[2] < 0.05,
        "MFCC mean differences {mean:?}"
    );
    for mel in [&f.mel_narrow, &f.mel_wide] {
        let n_fft = mel.n_mels * 4;
        let (_, want) = read_npy(&format!("stereo_44k.soxr16k.mel_{n_fft}.npy"));
        let max = want.iter().cloned().fold(0f32, f32::max);
        let bands_below_6k = (0..mel.n_mels)
            .filter(|&m| {
                let top = duet_dsp::mel_to_hz_slaney(
                    duet_dsp::hz_to_mel_slaney(8000.0) * (m + 2) as f64 / (mel.n_mels + 1) as f64,
                );
                top < 6000.0
            })
            .count();
        let mut worst_db = 0f64;
        for m in 0..bands_below_6k {
            for t in 0..mel.n_frames.min(want.len() / mel.n_mels) {
                let b = want[m * mel.n_frames + t];
                if b >= max * 1e-3 {
                    let d = 10.0 * (mel.at(m, t) as f64 / b as f64).log10();
                    worst_db = worst_db.max(d.abs());
                }
            }
        }
        eprintln!("stereo_44k full pipeline mel_{n_fft}: worst {worst_db:.3} dB below 6 kHz");
        assert!(worst_db < 0.1, "mel_{n_fft}: {worst_db:.3} dB");
    }
}

/// The sinc engine (rates the FFT plan cannot take) against soxr too, on the same 44.1 kHz fixture and
/// with the same bound as the FFT engine: the two resamplers' waveforms within 40 dB SNR (their
/// transition bands just below 8 kHz differ); and streamed in odd blocks it gives the one-shot output.
#[test]
fn sinc_engine_close_to_soxr_and_streams() {
    let audio = decode_wav(&read_bytes("stereo_44k.wav")).unwrap();
    let run = |blocks: usize| {
        let mut r = StreamResampler::new_sinc(audio.sample_rate, SAMPLE_RATE).unwrap();
        let mut out = Vec::new();
        let mut sink = |s: &[f32]| {
            out.extend_from_slice(s);
            Ok(())
        };
        for block in audio.samples.chunks(blocks) {
            r.push(block, &mut sink).unwrap();
        }
        r.finish(&mut sink).unwrap();
        out
    };
    let ours = run(audio.samples.len());
    assert_eq!(
        ours.len() as u64,
        (audio.samples.len() as u64 * 16_000).div_ceil(audio.sample_rate as u64)
    );
    assert_eq!(run(1_234), ours, "streamed in 1 234-sample blocks");
    let soxr = decode_wav(&read_bytes("stereo_44k.soxr16k.wav"))
        .unwrap()
        .samples;
    let snr = snr_db(&ours, &soxr);
    eprintln!("sinc engine vs soxr on stereo_44k: SNR {snr:.1} dB");
    assert!(snr > 40.0, "sinc engine vs soxr SNR {snr:.1} dB");
}

/// A plan reuses its resampler across files of the same rate (reset between files): the second and
/// third passes over the 44.1 kHz file, with a 16 kHz file in between, equal a fresh plan's.
#[test]
fn resampler_reuse_across_files_is_stateless() {
    let p44 = fixtures().join("stereo_44k.wav");
    let p16 = fixtures().join("chirp.wav");
    let fresh = features_from_file(&p44, &mut FeaturePlan::new(&FeatureConfig::paper())).unwrap();
    let mut plan = FeaturePlan::new(&FeatureConfig::paper());
    assert_eq!(features_from_file(&p44, &mut plan).unwrap(), fresh);
    assert_eq!(features_from_file(&p44, &mut plan).unwrap(), fresh);
    features_from_file(&p16, &mut plan).unwrap();
    assert_eq!(features_from_file(&p44, &mut plan).unwrap(), fresh);
}
