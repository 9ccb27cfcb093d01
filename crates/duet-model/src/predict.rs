//! `Predictor`: weights bytes + a device -> class probabilities. The page, `duet predict` and `duet
//! eval` all go through it.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use duet_dsp::{FeaturePlan, Features};
use serde::Serialize;

use crate::config::{Branch, ModelConfig};
use crate::error::ModelError;
use crate::input::{ModelInput, Prepared, prepare};
use crate::model::{DuetModel, ModelOutput};
use crate::nn::Mode;
use crate::weights;

/// The result for one utterance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Fused class probabilities, in [`ModelConfig::classes`] order.
    pub probabilities: Vec<f32>,
    /// Each branch's own probabilities.
    pub branches: Vec<(Branch, Vec<f32>)>,
    /// Fused logits (before the softmax), for checks against reference implementations.
    pub logits: Vec<f32>,
    /// The most probable class.
    pub label: String,
    /// The top probability is below the model's [`crate::Calibration::uncertain_below`].
    pub uncertain: bool,
    /// How far the recording's speech stands above its noise floor, in dB
    /// ([`duet_dsp::speech_to_noise_db`]); `None` when too short to tell.
    pub speech_to_noise_db: Option<f32>,
    /// The estimate is under the model's threshold ([`crate::ModelConfig::noisy_below_db`]): the
    /// recording is noisier than the model keeps its answers through.
    pub noisy: bool,
}

/// The one check of a forward's output before anyone sees it (the page, `duet predict`, `duet eval`
/// and `train`'s evaluation): every value of `data` (rows of `row_len`) must be finite, else a
/// [`ModelError::NonFinite`] naming the backend and the row.
pub fn check_finite(
    data: &[f32],
    row_len: usize,
    what: &'static str,
    device: &Device,
) -> Result<(), ModelError> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(k) => Err(ModelError::NonFinite {
            backend: crate::backend::kind_of(device),
            what,
            index: k / row_len.max(1),
        }),
    }
}

/// A loaded model ready to classify features.
pub struct Predictor {
    model: DuetModel,
    device: Device,
}

impl Predictor {
    /// Loads a weights file's bytes onto `device`.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self, ModelError> {
        Ok(Self::from_model(weights::load(bytes, device)?, device))
    }

    /// A predictor of `model` (on `device`); on a GPU its batch norms are folded into the convs
    /// once here rather than on every forward (the CPU path folds them into its own products).
    pub fn from_model(mut model: DuetModel, device: &Device) -> Self {
        if crate::backend::kind_of(device) != "cpu" {
            model.fold_for_inference();
        }
        Predictor {
            model,
            device: device.clone(),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    /// The model.
    pub fn model(&self) -> &DuetModel {
        &self.model
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A feature plan for this model's front end (make once, reuse for every utterance).
    pub fn feature_plan(&self) -> FeaturePlan {
        FeaturePlan::new(&self.model.config.features)
    }

    fn forward(&self, items: &[&Prepared]) -> (Tensor<2>, usize) {
        let input = ModelInput::batch(items, &self.model.config, &self.device);
        let out: ModelOutput = self.model.forward(&input, Mode::Infer);
        // One tensor [B, C·(1 + branches)] so the results come back in a single read (one GPU
        // readback on the page).
        // Temperature scaling of the fused output only (what people are shown); the branches' and
        // the logits stay raw for the reference checks.
        let t = self.model.config.temperature();
        let mut parts = vec![softmax(out.logits.clone().div_scalar(t), 1)];
        parts.extend(out.branches.iter().map(|(_, l)| softmax(l.clone(), 1)));
        parts.push(out.logits);
        let n = parts.len();
        (Tensor::cat(parts, 1), n)
    }

    fn unpack(
        &self,
        data: Vec<f32>,
        items: &[&Prepared],
        n: usize,
    ) -> Result<Vec<Prediction>, ModelError> {
        let c = self.model.config.n_classes();
        check_finite(&data, n * c, "output", &self.device)?;
        let branches = self.model.config.branches();
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let row = &data[i * n * c..(i + 1) * n * c];
                let probabilities = row[..c].to_vec();
                let logits = row[(n - 1) * c..n * c].to_vec();
                let branches = branches
                    .iter()
                    .enumerate()
                    .map(|(k, br)| (*br, row[(k + 1) * c..(k + 2) * c].to_vec()))
                    .collect();
                self.labelled(probabilities, branches, logits, item.speech_to_noise_db)
            })
            .collect())
    }

    /// A prediction with its label and uncertainty, from its probabilities.
    fn labelled(
        &self,
        probabilities: Vec<f32>,
        branches: Vec<(Branch, Vec<f32>)>,
        logits: Vec<f32>,
        speech_to_noise_db: Option<f32>,
    ) -> Prediction {
        let best = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, _)| k)
            .unwrap_or(0);
        let uncertain = self
            .model
            .config
            .calibration
            .as_ref()
            .is_some_and(|c| (probabilities[best] as f64) < c.uncertain_below);
        Prediction {
            uncertain,
            speech_to_noise_db,
            noisy: duet_dsp::is_noisy_below(speech_to_noise_db, self.model.config.noisy_below_db()),
            logits,
            label: self.model.config.classes[best].clone(),
            branches,
            probabilities,
        }
    }

    /// The mean of several predictions of this model (a long recording's windows): fused and branch
    /// probabilities averaged, the logits their logarithms (so that a softmax of them gives the mean
    /// back), label and uncertainty from the mean, the noise estimate the windows' median. None for
    /// no predictions.
    pub fn mean_of(&self, predictions: &[Prediction]) -> Option<Prediction> {
        let first = predictions.first()?;
        let scale = 1.0 / predictions.len() as f32;
        let mean = |pick: &dyn Fn(&Prediction) -> &[f32]| -> Vec<f32> {
            let mut sum = vec![0.0f32; pick(first).len()];
            for p in predictions {
                for (s, v) in sum.iter_mut().zip(pick(p)) {
                    *s += v;
                }
            }
            sum.iter().map(|s| s * scale).collect()
        };
        let probabilities = mean(&|p| &p.probabilities);
        let branches = first
            .branches
            .iter()
            .enumerate()
            .map(|(k, (b, _))| (*b, mean(&|p| &p.branches[k].1)))
            .collect();
        let logits = probabilities
            .iter()
            .map(|p| p.max(f32::MIN_POSITIVE).ln())
            .collect();
        // The windows' median: a noisy stretch in a long quiet recording does not make it noisy.
        let mut snr: Vec<f32> = predictions
            .iter()
            .filter_map(|p| p.speech_to_noise_db)
            .collect();
        snr.sort_unstable_by(f32::total_cmp);
        let speech_to_noise_db = snr.get(snr.len() / 2).copied();
        Some(self.labelled(probabilities, branches, logits, speech_to_noise_db))
    }

    /// Resizes/logs the features for this model.
    pub fn prepare(&self, features: &Features) -> Result<Prepared, ModelError> {
        prepare(features, &self.model.config)
    }

    /// Classifies a batch of prepared utterances (native; blocks on the device).
    #[cfg(not(target_family = "wasm"))]
    pub fn predict_prepared(&self, items: &[&Prepared]) -> Result<Vec<Prediction>, ModelError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (t, n) = self.forward(items);
        let data = t
            .try_into_data()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
        self.unpack(data, items, n)
    }

    /// Classifies one utterance's features (native).
    #[cfg(not(target_family = "wasm"))]
    pub fn predict(&self, features: &Features) -> Result<Prediction, ModelError> {
        let p = self.prepare(features)?;
        Ok(self.predict_prepared(&[&p])?.remove(0))
    }

    /// Classifies a batch without blocking (the browser: WebGPU reads back asynchronously).
    pub async fn predict_prepared_async(
        &self,
        items: &[&Prepared],
    ) -> Result<Vec<Prediction>, ModelError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (t, n) = self.forward(items);
        let data = t
            .into_data_async()
            .await
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
        self.unpack(data, items, n)
    }

    /// Classifies one utterance's features without blocking.
    pub async fn predict_async(&self, features: &Features) -> Result<Prediction, ModelError> {
        let p = self.prepare(features)?;
        Ok(self.predict_prepared_async(&[&p]).await?.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelKind;
    use burn::module::Param;

    #[test]
    fn check_finite_names_the_backend_and_the_row() {
        let cpu = crate::backend::cpu_device();
        assert!(check_finite(&[0.1, 0.9, 0.5, 0.5], 2, "output", &cpu).is_ok());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = check_finite(&[0.1, 0.9, 0.5, bad], 2, "output", &cpu).unwrap_err();
            assert!(
                matches!(
                    e,
                    ModelError::NonFinite {
                        backend: "cpu",
                        index: 1,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("cpu backend"), "{e}");
        }
    }

    /// A model whose forward overflows gives an error on every backend here, never a prediction:
    /// LSTM biases of 3e38 saturate every gate (h → tanh(t) → 1), and head weights of 3e38 then
    /// sum to +inf in every logit, so the softmax is NaN.
    #[test]
    fn an_overflowing_forward_is_an_error_not_a_prediction() {
        for device in crate::backend::available_devices() {
            let config = ModelConfig::new(ModelKind::Base1, duet_dsp::Preset::Authors);
            let mut model = crate::weights::init(config, 5, &device).unwrap();
            let mfcc = model.mfcc.as_mut().unwrap();
            let huge = |dims: [usize; 1]| Param::from_tensor(Tensor::full(dims, 3e38, &device));
            for layer in &mut mfcc.lstm.layers {
                layer.bias_ih = huge(layer.bias_ih.dims());
                layer.bias_hh = huge(layer.bias_hh.dims());
            }
            let dims = mfcc.head.weight.dims();
            mfcc.head.weight = Param::from_tensor(Tensor::full(dims, 3e38, &device));
            let predictor = Predictor::from_model(model, &device);
            let samples: Vec<f32> = (0..16_000).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
            let features = predictor.feature_plan().compute(&samples).unwrap();
            let backend = crate::backend::kind_of(&device);
            match predictor.predict(&features) {
                Err(ModelError::NonFinite { backend: b, .. }) => assert_eq!(b, backend),
                other => panic!("{backend}: expected a non-finite error, got {other:?}"),
            }
        }
    }

    /// A recording is marked noisy under the model's own threshold when its file states one, and
    /// under duet_dsp::NOISY_BELOW_DB otherwise.
    #[test]
    fn noisy_follows_the_models_threshold() {
        let device = crate::backend::cpu_device();
        // A 2 s tone with its harmonics, rising and falling, over white noise.
        let mut seed = 7u32;
        let samples: Vec<f32> = (0..32_000)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1 << 24) as f32 - 0.5;
                let t = i as f32 / 16_000.0;
                let voice: f32 = (1..=8)
                    .map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32)
                    .sum();
                0.1 * voice * (0.6 + 0.4 * (2.0 * std::f32::consts::PI * 3.0 * t).sin())
                    + 0.005 * noise
            })
            .collect();
        let config = ModelConfig::new(ModelKind::Base2, duet_dsp::Preset::Authors);
        let with_threshold = |db: Option<f32>| {
            let mut model = crate::weights::init(config.clone(), 3, &device).unwrap();
            model.config.calibration = db.map(|db| crate::Calibration {
                temperature: 1.0,
                uncertain_below: crate::Calibration::UNCERTAIN_BELOW,
                noisy_below_db: Some(db),
            });
            Predictor::from_model(model, &device)
        };
        let features = with_threshold(None)
            .feature_plan()
            .compute(&samples)
            .unwrap();
        let p = with_threshold(None).predict(&features).unwrap();
        let db = p.speech_to_noise_db.unwrap();
        assert_eq!(p.noisy, db < duet_dsp::NOISY_BELOW_DB, "default, {db} dB");
        for (threshold, noisy) in [(db - 1.0, false), (db + 1.0, true)] {
            let p = with_threshold(Some(threshold)).predict(&features).unwrap();
            assert_eq!(p.speech_to_noise_db, Some(db));
            assert_eq!(p.noisy, noisy, "{db} dB against the model's {threshold} dB");
        }
    }
}
