//! Where a model's tensors come from and go to. Each tensor's name (docs/weights.md), shape and
//! initialisation are written once, in its module's `build`: the module asks a [`Builder`] for it,
//! the builder takes its data from a [`ParamSource`] (a random initialiser for `duet init-model`, or a
//! weights file) and records the name under the parameter's id in [`TensorNames`]. Export, and the
//! trainer's optimizer state, walk the built module tree (burn's [`ModuleVisitor`]) and look each
//! tensor's name up there, so loading, saving and the optimizer cannot disagree about a name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamId, RunningState};
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
    /// Random initialisation for `seed`.
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
    /// The tensors of a file ([`crate::weights::read`]).
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

/// The documented name of every stored tensor of a built model, by parameter id (ids survive
/// cloning, optimizer updates and running-statistic updates).
#[derive(Debug, Clone, Default)]
pub struct TensorNames(Arc<HashMap<ParamId, String>>);

impl TensorNames {
    /// The name of the parameter or running statistic with `id`.
    pub fn get(&self, id: &ParamId) -> Option<&str> {
        self.0.get(id).map(String::as_str)
    }
}

/// Builds a model's tensors on a device from a [`ParamSource`], recording their names.
pub struct Builder<'a> {
    src: &'a mut dyn ParamSource,
    device: &'a Device,
    names: HashMap<ParamId, String>,
}

impl<'a> Builder<'a> {
    /// Tensors from `src`, on `device`.
    pub fn new(src: &'a mut dyn ParamSource, device: &'a Device) -> Self {
        Builder {
            src,
            device,
            names: HashMap::new(),
        }
    }

    fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Tensor<D>, ModelError> {
        let data = self.src.take(name, &shape, init)?;
        Ok(Tensor::from_data(TensorData::new(data, shape), self.device))
    }

    fn name(&mut self, id: ParamId, name: String) -> Result<(), ModelError> {
        if self.names.values().any(|n| *n == name) {
            return Err(ModelError::Backend(format!(
                "two tensors are both called `{name}`"
            )));
        }
        self.names.insert(id, name);
        Ok(())
    }

    /// A trained parameter called `name`.
    pub fn param<const D: usize>(
        &mut self,
        name: String,
        shape: [usize; D],
        init: Init,
    ) -> Result<Param<Tensor<D>>, ModelError> {
        let p = Param::from_tensor(self.tensor(&name, shape, init)?);
        self.name(p.id, name)?;
        Ok(p)
    }

    /// A running statistic called `name` (stored in the file, not trained).
    pub fn state<const D: usize>(
        &mut self,
        name: String,
        shape: [usize; D],
        init: Init,
    ) -> Result<RunningState<Tensor<D>>, ModelError> {
        let id = ParamId::new();
        let s = RunningState::with_id(id, self.tensor(&name, shape, init)?);
        self.name(id, name)?;
        Ok(s)
    }

    /// The names recorded.
    pub fn finish(self) -> TensorNames {
        TensorNames(Arc::new(self.names))
    }
}

/// The number of elements of every named tensor of `module`, by name.
pub fn sizes<M: Module>(module: &M, names: &TensorNames) -> BTreeMap<String, usize> {
    struct Visit<'a> {
        names: &'a TensorNames,
        sizes: BTreeMap<String, usize>,
    }
    impl ModuleVisitor for Visit<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(name) = self.names.get(&param.id) {
                let n = param.val().dims().iter().product();
                self.sizes.insert(name.to_string(), n);
            }
        }
    }
    let mut visit = Visit {
        names,
        sizes: BTreeMap::new(),
    };
    module.visit(&mut visit);
    visit.sizes
}

/// Every stored tensor of `module` under its name, in the module tree's order. Running statistics
/// are synchronised first (burn keeps a training step's last update aside until then).
pub fn export<M: Module>(
    module: &M,
    names: &TensorNames,
    sink: &mut Sink,
) -> Result<(), ModelError> {
    struct Visit<'a> {
        names: &'a TensorNames,
        sink: &'a mut Sink,
        result: Result<(), ModelError>,
    }
    impl ModuleVisitor for Visit<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.result.is_err() {
                return;
            }
            self.result = match self.names.get(&param.id) {
                Some(name) => self.sink.push(name.to_string(), param.val()),
                None => Err(ModelError::Backend(format!(
                    "a tensor of shape {:?} has no name (built outside `Builder`)",
                    param.val().dims()
                ))),
            };
        }
    }
    let mut visit = Visit {
        names,
        sink,
        result: Ok(()),
    };
    module.valid().visit(&mut visit);
    visit.result
}

/// A named tensor on its way to a file.
pub struct Exported {
    /// The tensor's documented name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: Vec<f32>,
}

/// Collects tensors for export (native: reads tensors synchronously).
#[derive(Default)]
pub struct Sink {
    /// The tensors, in the module tree's order.
    pub tensors: Vec<Exported>,
}

impl Sink {
    /// Reads `t` from its device and adds it as `name`.
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
