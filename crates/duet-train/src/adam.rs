#![allow(missing_docs)] // Field names follow the paper and the report schema; the module doc explains them.
//! Adam (Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; paper §3.1: "An
//! Adam optimizer is used"), with PyTorch's defaults, and optionally decoupled weight decay (AdamW:
//! Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, as PyTorch's `AdamW`
//! applies it: each weight shrinks by lr·λ of itself before the Adam update). The paper uses none.
//!
//! Written here rather than taken from burn-optim so that its state is plain tensors addressed by the
//! parameter's documented name (docs/weights.md, the model's [`TensorNames`]) — saved in checkpoints
//! and restored exactly, so an interrupted and resumed run ends with the same weights as an
//! uninterrupted one.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::TensorData;
use duet_model::DuetModel;
use duet_model::store::TensorNames;

/// Adam hyper-parameters (PyTorch defaults: β1 0.9, β2 0.999, ε 1e-8, no weight decay).
#[derive(Debug, Clone, Copy)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay λ of the weight matrices and kernels (tensors of two or more
    /// dimensions); biases and batch-norm parameters are not decayed. 0: plain Adam.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments per parameter position, and the step count.
#[derive(Debug, Default)]
pub struct Adam {
    pub config: AdamConfig,
    /// Steps taken (for the bias correction).
    pub step: u64,
    /// Flattened (m, v) per parameter, by the parameter's name.
    pub moments: BTreeMap<String, (Tensor<1>, Tensor<1>)>,
}

struct StepMapper<'a> {
    grads: &'a Gradients,
    adam: &'a mut Adam,
    names: &'a TensorNames,
    lr: f64,
}

impl ModuleMapper for StepMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = tensor.grad(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        // Every tensor of a built DuetModel has a name; one without would be a bug in the build.
        let name = self
            .names
            .get(&id)
            .expect("every trained tensor is named by DuetModel::build")
            .to_string();
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let c = self.adam.config;
        let g = grad.reshape([n]);
        let (m, v) = match self.adam.moments.remove(&name) {
            Some((m, v)) => (m, v),
            None => {
                let device = g.device();
                (Tensor::zeros([n], &device), Tensor::zeros([n], &device))
            }
        };
        let m = m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
        let v = v.mul_scalar(c.beta2) + g.powi_scalar(2).mul_scalar(1.0 - c.beta2);
        let t = self.adam.step as i32;
        let m_hat = m.clone().div_scalar(1.0 - c.beta1.powi(t));
        let v_hat = v.clone().div_scalar(1.0 - c.beta2.powi(t));
        let update = (m_hat / (v_hat.sqrt() + c.eps)).mul_scalar(self.lr);
        let mut old = tensor.inner().reshape([n]);
        if c.weight_decay != 0.0 && D >= 2 {
            old = old.mul_scalar(1.0 - self.lr * c.weight_decay);
        }
        let new = old - update;
        let mut new = Tensor::from_inner(new.reshape(dims));
        if require_grad {
            new = new.require_grad();
        }
        self.adam.moments.insert(name, (m, v));
        Param::from_mapped_value(id, new, mapper)
    }
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, model: DuetModel, grads: &Gradients, lr: f64) -> DuetModel {
        self.step += 1;
        let names = model.tensor_names().clone();
        let mut mapper = StepMapper {
            grads,
            adam: self,
            names: &names,
            lr,
        };
        model.map(&mut mapper)
    }

    /// The state as named flat tensors (`m.<tensor>`, `v.<tensor>`) for a checkpoint. A moment
    /// that cannot be read back from the device is an error (a checkpoint without it would resume
    /// differently).
    pub fn export(&self) -> Result<Vec<(String, Vec<f32>)>, String> {
        let mut out = Vec::new();
        for (tensor, (m, v)) in &self.moments {
            for (moment, t) in [("m", m), ("v", v)] {
                let data = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| format!("reading Adam's {moment}.{tensor}: {e:?}"))?;
                out.push((format!("{moment}.{tensor}"), data));
            }
        }
        Ok(out)
    }

    /// Restores a state written by [`Adam::export`] for `model`: every moment must belong to one of
    /// its tensors and have that tensor's size.
    pub fn import(
        config: AdamConfig,
        step: u64,
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        model: &DuetModel,
        device: &Device,
    ) -> Result<Self, String> {
        let sizes = model.tensor_sizes();
        let mut moments = BTreeMap::new();
        for (name, (_, m)) in tensors {
            if let Some(tensor) = name.strip_prefix("v.") {
                if !tensors.contains_key(&format!("m.{tensor}")) {
                    return Err(format!("optimizer state has v.{tensor} but no m.{tensor}"));
                }
                continue;
            }
            let tensor = name
                .strip_prefix("m.")
                .ok_or_else(|| format!("optimizer tensor `{name}` is neither m.* nor v.*"))?;
            let (_, v) = tensors
                .get(&format!("v.{tensor}"))
                .ok_or_else(|| format!("optimizer state has m.{tensor} but no v.{tensor}"))?;
            let size = *sizes.get(tensor).ok_or_else(|| {
                format!("optimizer state for `{tensor}`, which the model does not have")
            })?;
            if m.len() != size || v.len() != size {
                return Err(format!(
                    "optimizer state for `{tensor}` has {} and {} values, the tensor {size}",
                    m.len(),
                    v.len()
                ));
            }
            let t = |d: &Vec<f32>| {
                Tensor::<1>::from_data(TensorData::new(d.clone(), [d.len()]), device)
            };
            moments.insert(tensor.to_string(), (t(m), t(v)));
        }
        Ok(Adam {
            config,
            step,
            moments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_dsp::Preset;
    use duet_model::{ModelConfig, ModelKind, weights};

    /// A checkpoint's optimizer state is checked against the model it resumes: a moment for a
    /// tensor the model lacks, of the wrong size, or without its partner is refused by name.
    #[test]
    fn import_refuses_moments_that_do_not_fit_the_model() {
        let device = duet_model::backend::cpu_device();
        let model = weights::init(
            ModelConfig::new(ModelKind::Base1, Preset::Paper),
            1,
            &device,
        )
        .unwrap();
        let sizes = model.tensor_sizes();
        let n = sizes["mfcc.head.bias"];
        let state = |entries: &[(&str, usize)]| -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
            entries
                .iter()
                .map(|(name, len)| (name.to_string(), (vec![*len], vec![0.5; *len])))
                .collect()
        };
        let import = |s| Adam::import(AdamConfig::default(), 3, &s, &model, &device);
        let ok = import(state(&[("m.mfcc.head.bias", n), ("v.mfcc.head.bias", n)])).unwrap();
        assert_eq!(ok.moments.len(), 1);
        assert_eq!(ok.step, 3);
        let err = |s| import(s).err().unwrap();
        assert!(
            err(state(&[("m.ds.head.bias", 4), ("v.ds.head.bias", 4)]))
                .contains("`ds.head.bias`, which the model does not have")
        );
        assert!(
            err(state(&[
                ("m.mfcc.head.bias", n + 1),
                ("v.mfcc.head.bias", n + 1)
            ]))
            .contains("has 5 and 5 values, the tensor 4")
        );
        assert!(err(state(&[("m.mfcc.head.bias", n)])).contains("no v.mfcc.head.bias"));
        assert!(err(state(&[("v.mfcc.head.bias", n)])).contains("no m.mfcc.head.bias"));
        assert!(err(state(&[("x.mfcc.head.bias", n)])).contains("neither m.* nor v.*"));
    }
}
