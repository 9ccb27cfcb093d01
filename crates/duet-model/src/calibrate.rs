//! Batch-norm statistics for models that were not trained (`duet init-model`).
//!
//! A freshly initialised model has running means 0 and variances 1, which on log-mel inputs (tens of
//! dB) saturates every unit, so a test through such a model checks little. Here the statistics are
//! first measured on a batch of synthetic voiced sounds (one forward with batch statistics), then
//! perturbed at random — so every statistic differs from the batch's and from its neighbours', and a
//! reader that ignored or misplaced one would be caught.

use burn::prelude::*;
use duet_dsp::FeaturePlan;

use crate::error::ModelError;
use crate::input::{ModelInput, Prepared, prepare};
use crate::model::DuetModel;
use crate::nn::Mode;
use crate::rng::SplitMix64;
use crate::store::{FileSource, Sink};

/// A speech-like test signal: a harmonic source with a gliding pitch, syllable-rate amplitude
/// modulation, short pauses and a little noise.
pub fn synthetic_voice(seconds: f32, f0: f32, rate_hz: f32, seed: u64) -> Vec<f32> {
    let sr = duet_dsp::SAMPLE_RATE as f32;
    let n = (seconds * sr) as usize;
    let mut rng = SplitMix64::new(seed);
    let mut phase = 0.0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / sr;
            let f = f0 * (1.0 + 0.15 * (std::f32::consts::TAU * 0.7 * t).sin());
            phase += std::f32::consts::TAU * f / sr;
            let voiced: f32 = (1..12).map(|k| (phase * k as f32).sin() / k as f32).sum();
            let syllable = (std::f32::consts::PI * rate_hz * t).sin().abs();
            let pause = if (t * 0.8).fract() > 0.85 { 0.02 } else { 1.0 };
            0.2 * voiced * syllable * pause + 0.003 * rng.normal() as f32
        })
        .collect()
}

/// Measures the model's batch-norm statistics on synthetic voices, then perturbs every statistic
/// and batch-norm affine parameter at random (deterministic for `seed`).
pub fn randomize_statistics(
    model: DuetModel,
    seed: u64,
    device: &Device,
) -> Result<DuetModel, ModelError> {
    let config = model.config.clone();
    let mut plan = FeaturePlan::new(&config.features);
    let seconds = config.resize.wide_frames as f32 * config.features.wide.hop_length as f32
        / duet_dsp::SAMPLE_RATE as f32;
    let prepared: Vec<Prepared> = [(110.0, 3.0), (180.0, 4.5), (240.0, 5.5), (140.0, 2.5)]
        .iter()
        .enumerate()
        .map(|(i, &(f0, rate))| {
            let audio = synthetic_voice(seconds.max(1.0), f0, rate, seed.wrapping_add(i as u64));
            prepare(&plan.compute(&audio)?, &config)
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let input = ModelInput::batch(&refs, &config, device);
    // Momentum 1: the running statistics become this batch's.
    let _ = model.forward(&input, Mode::Train { momentum: 1.0 });

    let mut sink = Sink::default();
    model.export(&mut sink)?;
    let mut rng = SplitMix64::new(seed ^ 0x5EED_B00B);
    let mut tensors = std::collections::BTreeMap::new();
    let var_names: std::collections::HashSet<String> = sink
        .tensors
        .iter()
        .filter(|t| t.name.ends_with(".running_var"))
        .map(|t| t.name.clone())
        .collect();
    let vars: std::collections::HashMap<String, Vec<f32>> = sink
        .tensors
        .iter()
        .filter(|t| var_names.contains(&t.name))
        .map(|t| {
            (
                t.name.trim_end_matches(".running_var").to_string(),
                t.data.clone(),
            )
        })
        .collect();
    for t in sink.tensors {
        let mut data = t.data;
        let prefix = t
            .name
            .rsplit_once('.')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        let is_bn = vars.contains_key(&prefix);
        if t.name.ends_with(".running_var") {
            for v in &mut data {
                *v = v.max(1e-4) * rng.range(0.6, 1.6) as f32;
            }
        } else if t.name.ends_with(".running_mean") {
            let var = &vars[&prefix];
            for (v, s2) in data.iter_mut().zip(var.iter().cycle()) {
                *v += 0.3 * s2.max(1e-4).sqrt() * rng.normal() as f32;
            }
        } else if is_bn && t.name.ends_with(".weight") {
            for v in &mut data {
                *v *= rng.range(0.7, 1.3) as f32;
            }
        } else if is_bn && t.name.ends_with(".bias") {
            for v in &mut data {
                *v += rng.range(-0.1, 0.1) as f32;
            }
        }
        tensors.insert(t.name, (t.shape, data));
    }
    DuetModel::build(config, &mut FileSource::new(tensors), device)
}
