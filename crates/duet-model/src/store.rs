//! Where a model's tensors come from and go to. One code path names and shapes every tensor: the
//! modules ask a [`ParamSource`] for each tensor by its documented name (docs/weights.md), and the
//! source is either a random initialiser (`duet init-model`) or a weights file.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::ModelError;
use crate::rng::SplitMix64;

/// How a freshly initialised tensor is filled (PyTorch's defaults, paper §3.1 for the rbn).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// U(-b, b).
    Uniform(f64),
    /// Every element equal.
    Const(f32),
}

/// Supplies tensors by name and shape.
pub trait ParamSource {
    /// The data of tensor `name` with `shape` (row-major f32).
    fn take(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, ModelError>;
}

/// Random initialisation, deterministic for a seed; each tensor draws from its own stream.
pub struct RandomSource {
    rng: SplitMix64,
}

impl RandomSource {
    pub fn new(seed: u64) -> Self {
        RandomSource {
            rng: SplitMix64::new(seed),
        }
    }
}

impl ParamSource for RandomSource {
    fn take(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>, ModelError> {
        let n = shape.iter().product();
        Ok(match init {
            Init::Uniform(b) => self.rng.fork(name).uniform_vec(n, b),
            Init::Const(c) => vec![c; n],
        })
    }
}

/// Tensors read from a weights file (converted to f32), handed out once each.
pub struct FileSource {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl FileSource {
    pub fn new(tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Self {
        FileSource { tensors }
    }

    /// Names not taken by the model: a file of another kind, or a corrupt one.
    pub fn leftover(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}

impl ParamSource for FileSource {
    fn take(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Vec<f32>, ModelError> {
        let (found, data) = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.into(),
                expected: shape.to_vec(),
            })?;
        if found != shape {
            return Err(ModelError::Shape {
                name: name.into(),
                expected: shape.to_vec(),
                found,
            });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Tensor {
                name: name.into(),
                message: format!("element {i} is {} (weights must be finite)", data[i]),
            });
        }
        Ok(data)
    }
}

/// Helpers turning source data into tensors on a device.
pub fn tensor<const D: usize>(
    src: &mut dyn ParamSource,
    name: &str,
    shape: [usize; D],
    init: Init,
    device: &Device,
) -> Result<Tensor<D>, ModelError> {
    let data = src.take(name, &shape, init)?;
    Ok(Tensor::from_data(TensorData::new(data, shape), device))
}

/// A named tensor on its way to a file.
pub struct Exported {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Collects tensors for export (native: reads tensors synchronously).
#[derive(Default)]
pub struct Sink {
    pub tensors: Vec<Exported>,
}

impl Sink {
    pub fn push<const D: usize>(&mut self, name: String, t: Tensor<D>) -> Result<(), ModelError> {
        let shape = t.dims().to_vec();
        let data = t
            .try_into_data()
            .map_err(|e| ModelError::Backend(format!("reading `{name}`: {e:?}")))?
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Backend(format!("reading `{name}`: {e:?}")))?;
        self.tensors.push(Exported { name, shape, data });
        Ok(())
    }
}
