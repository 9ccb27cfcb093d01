//! Every kind of bad input answers with a typed error that names the problem; nothing panics.
//! Includes proptests over arbitrary bytes and mutated WAV headers.

mod common;

use duet_dsp::{DspError, FeatureConfig, FeaturePlan, decode_wav, load_audio_16k};
use proptest::prelude::*;

/// A WAV file: RIFF header, `fmt ` chunk (16 bytes), `data` chunk declaring `declared` bytes (or the
/// real length), then `data`.
fn wav(
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data: &[u8],
    declared: Option<u32>,
) -> Vec<u8> {
    let block = (channels as u32 * (bits as u32).div_ceil(8)) as u16;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&rate.wrapping_mul(block as u32).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&declared.unwrap_or(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn pcm16(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn speechlike(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| ((i as f64 * 0.05).sin() * 8000.0 + (i as f64 * 0.71).sin() * 3000.0) as i16)
        .collect()
}

fn features_of(bytes: &[u8]) -> Result<(), DspError> {
    let x = load_audio_16k(bytes)?;
    FeaturePlan::new(&FeatureConfig::paper()).compute(&x)?;
    Ok(())
}

fn msg(r: Result<impl std::fmt::Debug, DspError>) -> (DspError, String) {
    let e = r.expect_err("must be an error");
    let m = e.to_string();
    (e, m)
}

#[test]
fn empty_file() {
    let (e, m) = msg(decode_wav(&[]));
    assert!(matches!(e, DspError::Empty), "{e:?}");
    assert!(m.contains("empty"), "{m}");
}

#[test]
fn header_only() {
    // RIFF/WAVE and a fmt chunk, no data chunk.
    let full = wav(1, 1, 16_000, 16, &[], None);
    let (e, m) = msg(decode_wav(&full[..36]));
    assert!(matches!(e, DspError::HeaderOnly(_)), "{e:?}");
    assert!(m.contains("no audio") && m.contains("\"data\""), "{m}");
    // Only the 12-byte RIFF header.
    let (e, m) = msg(decode_wav(&full[..12]));
    assert!(matches!(e, DspError::HeaderOnly(_)), "{e:?}");
    assert!(m.contains("\"fmt \""), "{m}");
    // Cut inside the RIFF header.
    let (e, _) = msg(decode_wav(&full[..7]));
    assert!(matches!(e, DspError::HeaderOnly(_)), "{e:?}");
    // A data chunk that is there but empty.
    let (e, m) = msg(decode_wav(&full));
    assert!(matches!(e, DspError::NoSamples), "{e:?}");
    assert!(m.contains("no samples"), "{m}");
}

#[test]
fn truncated_data_chunk() {
    let data = pcm16(&speechlike(16_000));
    let declared = data.len() as u32;
    let full = wav(1, 1, 16_000, 16, &data, Some(declared));
    let cut = &full[..full.len() - 10_000];
    let (e, m) = msg(decode_wav(cut));
    assert!(matches!(e, DspError::Truncated(_)), "{e:?}");
    assert!(
        m.contains("declares 32000 bytes") && m.contains("ends after 22000"),
        "{m}"
    );
    // Half a sample frame at the end of a stream of unknown length.
    let mut open = wav(1, 2, 16_000, 16, &pcm16(&speechlike(2_000)), Some(u32::MAX));
    open.push(7);
    let (e, m) = msg(decode_wav(&open));
    assert!(matches!(e, DspError::Truncated(_)), "{e:?}");
    assert!(m.contains("middle of sample frame 1000"), "{m}");
    // Through the file path too.
    let dir = std::env::temp_dir().join(format!("duet-dsp-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cut.wav");
    std::fs::write(&p, cut).unwrap();
    let mut plan = FeaturePlan::new(&FeatureConfig::paper());
    let e = duet_dsp::features_from_file(&p, &mut plan).unwrap_err();
    assert!(matches!(e, DspError::Truncated(_)), "{e:?}");
    let e = duet_dsp::features_from_file(&dir.join("missing.wav"), &mut plan).unwrap_err();
    assert!(e.to_string().contains("missing.wav"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_wav_bytes() {
    let (e, m) = msg(decode_wav(b"hello, this is plain text and not audio"));
    assert!(matches!(e, DspError::NotWav(_)), "{e:?}");
    assert!(m.contains("\"hell\""), "{m}");
    let (_, m) = msg(decode_wav(b"fLaC\x00\x00\x00\x22 and so on"));
    assert!(m.contains("FLAC"), "{m}");
    let (_, m) = msg(decode_wav(b"ID3\x04\x00\x00\x00\x00\x00\x00"));
    assert!(m.contains("MP3"), "{m}");
    let (_, m) = msg(decode_wav(b"OggS\x00\x02\x00\x00\x00\x00"));
    assert!(m.contains("Ogg"), "{m}");
    let (e, m) = msg(decode_wav(b"RIFF\x10\x00\x00\x00AVI LIST"));
    assert!(matches!(e, DspError::NotWav(_)), "{e:?}");
    assert!(m.contains("AVI"), "{m}");
}

#[test]
fn unsupported_codec() {
    let (e, m) = msg(decode_wav(&wav(0x55, 1, 16_000, 0, &[1, 2, 3, 4], None)));
    assert!(
        matches!(e, DspError::UnsupportedCodec { tag: 0x55, .. }),
        "{e:?}"
    );
    assert!(m.contains("0x0055") && m.contains("MPEG layer 3"), "{m}");
    let (_, m) = msg(decode_wav(&wav(7, 1, 8_000, 8, &[1, 2, 3, 4], None)));
    assert!(m.contains("mu-law"), "{m}");
    let (e, m) = msg(decode_wav(&wav(3, 1, 16_000, 16, &[0; 64], None)));
    assert!(matches!(e, DspError::UnsupportedSampleFormat(_)), "{e:?}");
    assert!(m.contains("16-bit IEEE float"), "{m}");
    let (_, m) = msg(decode_wav(&wav(1, 1, 16_000, 48, &[0; 60], None)));
    assert!(m.contains("48-bit integer PCM"), "{m}");
}

#[test]
fn zero_channels() {
    let (e, m) = msg(decode_wav(&wav(1, 0, 16_000, 16, &[0; 64], None)));
    assert!(matches!(e, DspError::ZeroChannels), "{e:?}");
    assert!(m.contains("0 channels"), "{m}");
}

#[test]
fn absurd_sample_rates() {
    for rate in [0u32, 1, 999, 768_001, 4_000_000_000] {
        let (e, m) = msg(decode_wav(&wav(1, 1, rate, 16, &[0; 64], None)));
        assert!(matches!(e, DspError::BadSampleRate { .. }), "{rate}: {e:?}");
        assert!(m.contains(&format!("{rate} Hz")), "{m}");
    }
    let (e, _) = msg(duet_dsp::resample(&[0.0; 10], 16_000, 0));
    assert!(
        matches!(e, DspError::BadSampleRate { rate: 0, .. }),
        "{e:?}"
    );
}

/// NaN/Inf policy: rejected, with the sample and channel named; never cleaned.
#[test]
fn nan_and_inf_samples_are_rejected() {
    let mut s = vec![0.1f32; 2 * 4000];
    s[2 * 1234] = f32::NAN; // frame 1234, channel 0
    let bytes: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (e, m) = msg(decode_wav(&wav(3, 2, 16_000, 32, &bytes, None)));
    assert!(
        matches!(
            e,
            DspError::NonFinite {
                index: 1234,
                channel: 0,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        m,
        "sample 1234 of channel 0 is NaN; audio with NaN or infinite samples is rejected"
    );
    let mut d = vec![0.1f64; 3000];
    d[2999] = f64::NEG_INFINITY;
    let bytes: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (_, m) = msg(decode_wav(&wav(3, 1, 16_000, 64, &bytes, None)));
    assert!(m.starts_with("sample 2999 of channel 0 is -inf"), "{m}");
    // In-memory samples handed to the plan.
    let mut x = vec![0.0f32; 16_000];
    x[777] = f32::INFINITY;
    let (e, m) = msg(FeaturePlan::new(&FeatureConfig::paper()).compute(&x));
    assert!(matches!(e, DspError::NonFinite { index: 777, .. }), "{e:?}");
    assert!(m.contains("+inf"), "{m}");
    // Finite but absurd (a corrupt float file).
    x[777] = 3.0e20;
    let (e, m) = msg(FeaturePlan::new(&FeatureConfig::paper()).compute(&x));
    assert!(
        matches!(e, DspError::OutOfRange { index: 777, .. }),
        "{e:?}"
    );
    assert!(m.contains("3e20"), "{m}");
}

#[test]
fn shorter_than_the_longest_window() {
    let x = vec![0.01f32; 160]; // 0.010 s
    let (e, m) = msg(FeaturePlan::new(&FeatureConfig::paper()).compute(&x));
    assert!(
        matches!(
            e,
            DspError::TooShort {
                min_samples: 512,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        m,
        "audio is 0.010 s long; the paper preset needs at least 0.032 s (its longest analysis window, 512 samples at 16 kHz)"
    );
    let (_, m) = msg(FeaturePlan::new(&FeatureConfig::authors()).compute(&vec![0.0; 800]));
    assert!(
        m.contains("0.050 s")
            && m.contains("authors preset needs at least 0.064 s")
            && m.contains("1024 samples"),
        "{m}"
    );
    // Exactly the minimum works, and gives one MFCC frame and 1 + n/hop mel frames.
    let f = FeaturePlan::new(&FeatureConfig::paper())
        .compute(&vec![0.0; 512])
        .unwrap();
    assert_eq!(
        (f.mfcc.n_frames, f.mel_narrow.n_frames, f.mel_wide.n_frames),
        (1, 5, 3)
    );
    // Digital silence stays finite after the log.
    assert!(f.mel_narrow.to_log(1e-10).data.iter().all(|v| *v == -100.0));
    assert!(f.mfcc.data.iter().all(|v| v.is_finite()));
    // A short file (at 8 kHz: the message speaks of the 16 kHz duration).
    let short = wav(1, 1, 8_000, 16, &pcm16(&speechlike(200)), None);
    let (e, m) = msg(features_of(&short));
    assert!(matches!(e, DspError::TooShort { .. }), "{e:?}");
    assert!(m.contains("audio is 0.025 s long"), "{m}");
}

/// A valid 16-bit file of 0.05 s at 16 kHz used as the seed for header mutations.
fn seed_wav() -> Vec<u8> {
    wav(1, 1, 16_000, 16, &pcm16(&speechlike(800)), None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes through decode + resample + features: an error or features, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = features_of(&bytes);
    }

    /// Arbitrary bytes after a valid RIFF/WAVE magic, so the chunk parser is exercised.
    #[test]
    fn arbitrary_chunks_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut bytes = b"RIFF\xff\xff\xff\xffWAVE".to_vec();
        bytes.extend_from_slice(&tail);
        let _ = features_of(&bytes);
    }

    /// A valid WAV with up to 8 header bytes overwritten and an arbitrary length cut.
    #[test]
    fn mutated_headers_never_panic(
        edits in proptest::collection::vec((0usize..48, any::<u8>()), 1..8),
        cut in 0usize..1700,
    ) {
        let mut bytes = seed_wav();
        for (i, b) in edits {
            bytes[i] = b;
        }
        bytes.truncate(bytes.len().min(cut.max(1)));
        let _ = features_of(&bytes);
    }
}
