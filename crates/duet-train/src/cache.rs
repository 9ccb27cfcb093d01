#![allow(missing_docs)] // Field names follow the paper and the report schema; the module doc explains them.
//! The feature cache: every utterance's features computed once per corpus and preset, in parallel
//! (rayon, one `FeaturePlan` per thread), kept in memory for all folds and epochs, and stored on disk
//! so a resumed or repeated run does not decode the corpus again.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use duet_dsp::{FeatureConfig, FeaturePlan, Features, Mel, Mfcc, features_from_file};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use duet_data::DataError;
use duet_data::corpus::{BadAudioReport, BadAudioTracker, Corpus, OnBadAudio, Utterance};

use crate::augment::Augment;

/// Features of every utterance of a corpus (`None`: skipped under `--on-bad-audio skip`).
pub struct FeatureCache {
    pub features: Vec<Option<Features>>,
    pub bad_audio: BadAudioReport,
}

/// What a cache file was computed from; a mismatch means recompute.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct CacheKey {
    features: FeatureConfig,
    /// For a cache of augmented copies: the augmentation's seed and the copy (1-based).
    #[serde(default)]
    augment: Option<(u64, usize)>,
    /// (path, size, mtime seconds) per utterance.
    files: Vec<(String, u64, u64)>,
}

fn key(corpus: &Corpus, config: &FeatureConfig) -> CacheKey {
    let files = corpus
        .utterances
        .iter()
        .map(|u| {
            let meta = std::fs::metadata(&u.path).ok();
            let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (u.path.display().to_string(), size, mtime)
        })
        .collect();
    CacheKey {
        features: config.clone(),
        augment: None,
        files,
    }
}

impl FeatureCache {
    /// Computes the features of every utterance (parallel), reporting `progress(done, total)`.
    pub fn compute(
        corpus: &Corpus,
        config: &FeatureConfig,
        policy: OnBadAudio,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<FeatureCache, DataError> {
        let tracker = BadAudioTracker::new(policy);
        let features =
            each_utterance(
                corpus,
                config,
                progress,
                |plan, i, u| match features_from_file(&u.path, plan) {
                    Ok(f) => Ok(Some(f)),
                    Err(e) => tracker.record(i, u, &e).map(|_| None),
                },
            )?;
        Ok(FeatureCache {
            features,
            bad_audio: tracker.into_report(corpus.utterances.len()),
        })
    }

    /// Features of copy `copy` (1-based) of every utterance under `augment` (parallel), through the
    /// cache file `path`; utterances whose original was skipped (`skip`) are skipped here too.
    pub fn load_or_compute_augmented(
        path: &Path,
        corpus: &Corpus,
        config: &FeatureConfig,
        original: &FeatureCache,
        augment: &Augment,
        copy: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<Option<Features>>, DataError> {
        let mut k = key(corpus, config);
        // A copy depends on the seed and its number, not on how many copies the run makes.
        k.augment = Some((augment.seed, copy));
        if let Ok(Some(cache)) = read(path, &k) {
            return Ok(cache.features);
        }
        let features = each_utterance(corpus, config, progress, |plan, i, u| {
            if original.features[i].is_none() {
                return Ok(None);
            }
            let bytes = std::fs::read(&u.path).map_err(|e| DataError::io(&u.path, e))?;
            let samples = duet_dsp::load_audio_16k(&bytes)
                .map_err(|e| DataError::Training(format!("{}: {e}", u.path.display())))?;
            plan.compute(&augment.apply(&samples, i, copy))
                .map(Some)
                .map_err(|e| {
                    DataError::Training(format!(
                        "{} (augmented copy {copy}): {e}",
                        u.path.display()
                    ))
                })
        })?;
        let cache = FeatureCache {
            features,
            bad_audio: original.bad_audio.clone(),
        };
        write(path, &k, &cache).map_err(|e| DataError::io(path, e))?;
        Ok(cache.features)
    }

    /// Loads `path` if it was computed from this corpus and config, else computes and stores it.
    pub fn load_or_compute(
        path: &Path,
        corpus: &Corpus,
        config: &FeatureConfig,
        policy: OnBadAudio,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(FeatureCache, bool), DataError> {
        let k = key(corpus, config);
        if let Ok(Some(mut cache)) = read(path, &k)
            && (policy == OnBadAudio::Skip || cache.bad_audio.skipped.is_empty())
        {
            // The report states the policy this run was given, not the cache's.
            cache.bad_audio.policy = policy;
            return Ok((cache, true));
        }
        let cache = Self::compute(corpus, config, policy, progress)?;
        write(path, &k, &cache).map_err(|e| DataError::io(path, e))?;
        Ok((cache, false))
    }
}

/// `f(plan, index, utterance)` for every utterance in parallel (one `FeaturePlan` per thread),
/// reporting `progress(done, total)`.
fn each_utterance(
    corpus: &Corpus,
    config: &FeatureConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
    f: impl Fn(&mut FeaturePlan, usize, &Utterance) -> Result<Option<Features>, DataError> + Sync,
) -> Result<Vec<Option<Features>>, DataError> {
    let total = corpus.utterances.len();
    let done = AtomicUsize::new(0);
    corpus
        .utterances
        .par_iter()
        .enumerate()
        .map_init(
            || FeaturePlan::new(config),
            |plan, (i, u)| {
                let r = f(plan, i, u);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                r
            },
        )
        .collect()
}

/// Cache file: a JSON header line (key + skipped list), then per utterance a flag byte and, when
/// present, three u32 frame counts and the f32 arrays (little endian).
fn write(path: &Path, key: &CacheKey, cache: &FeatureCache) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let header = serde_json::json!({"key": key, "skipped": cache.bad_audio.skipped.iter().map(|s| (s.index, &s.id, s.path.display().to_string(), &s.reason)).collect::<Vec<_>>()});
    buf.extend(serde_json::to_vec(&header)?);
    buf.push(b'\n');
    for f in &cache.features {
        match f {
            None => buf.push(0),
            Some(f) => {
                buf.push(1);
                for n in [
                    f.mfcc.n_frames,
                    f.mel_narrow.n_mels,
                    f.mel_narrow.n_frames,
                    f.mel_wide.n_mels,
                    f.mel_wide.n_frames,
                ] {
                    buf.extend((n as u32).to_le_bytes());
                }
                buf.extend(f.duration_s.to_le_bytes());
                for v in f
                    .mfcc
                    .data
                    .iter()
                    .chain(&f.mel_narrow.data)
                    .chain(&f.mel_wide.data)
                {
                    buf.extend(v.to_le_bytes());
                }
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    duet_model::weights::write_atomic(path, &buf)
}

fn read(path: &Path, key: &CacheKey) -> std::io::Result<Option<FeatureCache>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let header: serde_json::Value = serde_json::from_slice(&bytes[..nl])?;
    let stored: CacheKey = match serde_json::from_value(header["key"].clone()) {
        Ok(k) => k,
        Err(_) => return Ok(None),
    };
    if &stored != key {
        return Ok(None);
    }
    let mut r = &bytes[nl + 1..];
    let u32v = |r: &mut &[u8]| -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    };
    let mut features = Vec::with_capacity(key.files.len());
    for _ in 0..key.files.len() {
        let mut flag = [0u8; 1];
        r.read_exact(&mut flag)?;
        if flag[0] == 0 {
            features.push(None);
            continue;
        }
        let mut dims = [0usize; 5];
        for d in &mut dims {
            *d = u32v(&mut r)? as usize;
        }
        let duration_s = f32::from_bits(u32v(&mut r)?);
        let floats = |n: usize, r: &mut &[u8]| -> std::io::Result<Vec<f32>> {
            // A damaged file must not ask for more memory than it holds.
            if n.saturating_mul(4) > r.len() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut b = vec![0u8; n * 4];
            r.read_exact(&mut b)?;
            Ok(b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let mfcc = floats(dims[0] * Mfcc::N_FEATURES, &mut r)?;
        let narrow = floats(dims[1] * dims[2], &mut r)?;
        let wide = floats(dims[3] * dims[4], &mut r)?;
        features.push(Some(Features {
            mfcc: Mfcc {
                n_frames: dims[0],
                data: mfcc,
            },
            mel_narrow: Mel {
                n_mels: dims[1],
                n_frames: dims[2],
                data: narrow,
            },
            mel_wide: Mel {
                n_mels: dims[3],
                n_frames: dims[4],
                data: wide,
            },
            duration_s,
        }));
    }
    let skipped_info: Vec<(usize, String, String, String)> =
        serde_json::from_value(header["skipped"].clone()).unwrap_or_default();
    Ok(Some(FeatureCache {
        features,
        bad_audio: BadAudioReport {
            policy: OnBadAudio::Skip,
            checked: key.files.len(),
            skipped: skipped_info
                .into_iter()
                .map(
                    |(index, id, path, reason)| duet_data::corpus::SkippedAudio {
                        index,
                        id,
                        path: path.into(),
                        reason,
                    },
                )
                .collect(),
        },
    }))
}
