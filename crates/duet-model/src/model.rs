//! The branches of paper Table 1 and their combination (docs/weights.md §5-6).

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

use crate::config::{Alignment, Branch, ModelConfig};
use crate::error::ModelError;
use crate::input::ModelInput;
use crate::nn::{CnnBlock, DsLstmLayer, Head, Lstm, Mode};
use crate::store::{Builder, ParamSource, Sink, TensorNames};

/// MLSTM (paper §2.3.2): a 2-layer LSTM over the MFCC frames, mean-pooled over valid frames.
#[derive(Module, Debug)]
pub struct MfccBranch {
    pub(crate) lstm: Lstm,
    pub(crate) head: Head,
}

impl MfccBranch {
    fn build(tensors: &mut Builder<'_>, c: &ModelConfig) -> Result<Self, ModelError> {
        Ok(MfccBranch {
            lstm: Lstm::build(tensors, "mfcc.lstm", c.mfcc_dim, c.hidden, c.layers)?,
            head: Head::build(tensors, "mfcc.head", c.hidden, c.n_classes())?,
        })
    }

    /// `mfcc`: [B, T, 39] zero-padded; `pool`: [B, T, 1] with 1/len on valid frames, 0 on padding.
    fn forward(&self, mfcc: Tensor<3>, pool: Tensor<3>) -> Tensor<2> {
        let h = self.lstm.forward(mfcc);
        let [b, _, hd] = h.dims();
        let pooled = (h * pool).sum_dim(1).reshape([b, hd]);
        self.head.forward(pooled)
    }
}

/// Base 2 / Base 3: CNN + LSTM over one spectrogram, mean-pooled over time.
#[derive(Module, Debug)]
pub struct CnnLstmBranch {
    pub(crate) cnn: CnnBlock,
    pub(crate) lstm: Lstm,
    pub(crate) head: Head,
    #[module(skip)]
    pub(crate) name: String,
}

impl CnnLstmBranch {
    fn build(tensors: &mut Builder<'_>, c: &ModelConfig, wide: bool) -> Result<Self, ModelError> {
        let name = if wide { "wide" } else { "narrow" };
        let (k, p) = if wide {
            (c.cnn.kernel_wide, c.cnn.padding_wide)
        } else {
            (c.cnn.kernel_narrow, c.cnn.padding_narrow)
        };
        Ok(CnnLstmBranch {
            cnn: CnnBlock::build(
                tensors,
                &format!("{name}.cnn"),
                c.cnn.channels,
                k,
                p,
                c.cnn.pool,
                c.bn_eps,
            )?,
            lstm: Lstm::build(
                tensors,
                &format!("{name}.lstm"),
                c.seq_dim(wide),
                c.hidden,
                c.layers,
            )?,
            head: Head::build(tensors, &format!("{name}.head"), c.hidden, c.n_classes())?,
            name: name.into(),
        })
    }

    fn forward(&self, image: Tensor<4>, mode: Mode) -> Tensor<2> {
        let seq = self.cnn.forward(image, mode);
        let h = self.lstm.forward(seq);
        let [b, _, hd] = h.dims();
        self.head.forward(h.mean_dim(1).reshape([b, hd]))
    }
}

/// MDS-LSTM (paper §2.3.3-2.3.4): CNNs on S1 and S2, alignment, DS-LSTM, mean pool, head.
#[derive(Module, Debug)]
pub struct DsBranch {
    pub(crate) cnn_narrow: CnnBlock,
    pub(crate) cnn_wide: CnnBlock,
    pub(crate) layers: Vec<DsLstmLayer>,
    pub(crate) head: Head,
    #[module(skip)]
    pub(crate) alignment: Alignment,
}

impl DsBranch {
    fn build(tensors: &mut Builder<'_>, c: &ModelConfig) -> Result<Self, ModelError> {
        let cc = &c.cnn;
        let steps = c.aligned_steps();
        let (xd, yd) = (c.seq_dim(false), c.seq_dim(true));
        let layers = (0..c.layers)
            .map(|k| {
                let x = if k == 0 { xd } else { c.hidden };
                DsLstmLayer::build(
                    tensors,
                    &format!("ds.dslstm.l{k}"),
                    x,
                    yd,
                    c.hidden,
                    steps,
                    c.bn_eps,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(DsBranch {
            cnn_narrow: CnnBlock::build(
                tensors,
                "ds.cnn_narrow",
                cc.channels,
                cc.kernel_narrow,
                cc.padding_narrow,
                cc.pool,
                c.bn_eps,
            )?,
            cnn_wide: CnnBlock::build(
                tensors,
                "ds.cnn_wide",
                cc.channels,
                cc.kernel_wide,
                cc.padding_wide,
                cc.pool,
                c.bn_eps,
            )?,
            layers,
            head: Head::build(tensors, "ds.head", c.hidden, c.n_classes())?,
            alignment: c.alignment,
        })
    }

    fn forward(&self, narrow: Tensor<4>, wide: Tensor<4>, mode: Mode) -> Tensor<2> {
        let x = self.cnn_narrow.forward(narrow, mode);
        let y = self.cnn_wide.forward(wide, mode);
        let (x, y) = align(x, y, self.alignment);
        let mut input = x;
        for l in &self.layers {
            // Layer k+1 reads BN(h) of layer k as x and the same aligned wide sequence as y.
            input = l.forward(input, y.clone(), mode);
        }
        let [b, _, hd] = input.dims();
        self.head.forward(input.mean_dim(1).reshape([b, hd]))
    }
}

/// Alignment of paper §2.3.3 (docs/weights.md §4.3): the narrow sequence X (T1 ≈ 2·T2 steps) is
/// averaged down, then both are truncated to the common length T3.
pub fn align(x: Tensor<3>, y: Tensor<3>, alignment: Alignment) -> (Tensor<3>, Tensor<3>) {
    let [b, t1, xd] = x.dims();
    let t2 = y.dims()[1];
    let half = t1 / 2;
    // [B, half, 2, X]: rows 2i and 2i+1 side by side.
    let paired = x.narrow(1, 0, 2 * half).reshape([b, half, 2, xd]);
    let x2 = match alignment {
        Alignment::Pairs => paired.mean_dim(2).reshape([b, half, xd]),
        Alignment::Triples => {
            let n = half.saturating_sub(1);
            let sums = paired
                .clone()
                .sum_dim(2)
                .reshape([b, half, xd])
                .narrow(1, 0, n);
            // x_{2i+2} is the even row of pair i+1.
            let next_even = paired.narrow(1, 1, n).narrow(2, 0, 1).reshape([b, n, xd]);
            (sums + next_even).div_scalar(3.0)
        }
    };
    let t3 = x2.dims()[1].min(t2);
    (x2.narrow(1, 0, t3), y.narrow(1, 0, t3))
}

/// A model of any kind of paper Table 1: the branches it has, fused by [`ModelConfig::branch_weights`].
#[derive(Module, Debug)]
pub struct DuetModel {
    pub(crate) mfcc: Option<MfccBranch>,
    pub(crate) narrow: Option<CnnLstmBranch>,
    pub(crate) wide: Option<CnnLstmBranch>,
    pub(crate) ds: Option<DsBranch>,
    #[module(skip)]
    /// The configuration the model was built from (stored in its file).
    pub config: ModelConfig,
    /// The name of every tensor, recorded by [`DuetModel::build`].
    #[module(skip)]
    names: TensorNames,
}

/// Logits of the fused model and of each branch.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// [B, C]: Σ_b w_b · logits_b.
    pub logits: Tensor<2>,
    /// Each branch's own logits [B, C], in [`ModelConfig::branches`] order.
    pub branches: Vec<(Branch, Tensor<2>)>,
}

impl ModelOutput {
    /// [B, C]: softmax of the fused logits.
    pub fn probabilities(&self) -> Tensor<2> {
        softmax(self.logits.clone(), 1)
    }

    /// Training loss: Σ_b w_b · CE(logits_b, label) (paper §2.3.1: the mean of the branches' losses).
    /// `targets`: [B, C] one-hot.
    pub fn loss(&self, config: &ModelConfig, targets: Tensor<2>) -> Tensor<1> {
        let mut total: Option<Tensor<1>> = None;
        for (b, logits) in &self.branches {
            let w = config.branch_weights[b] as f64;
            let ce = (log_softmax(logits.clone(), 1) * targets.clone())
                .sum_dim(1)
                .mean()
                .neg()
                .mul_scalar(w);
            total = Some(match total {
                Some(t) => t + ce,
                None => ce,
            });
        }
        total.expect("a model has at least one branch")
    }
}

impl DuetModel {
    /// Builds the model of `config`, every tensor drawn from `src` (random init or a file).
    pub fn build(
        config: ModelConfig,
        src: &mut dyn ParamSource,
        device: &Device,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        let c = &config;
        let mut tensors = Builder::new(src, device);
        let mfcc = c
            .has(Branch::Mfcc)
            .then(|| MfccBranch::build(&mut tensors, c))
            .transpose()?;
        let narrow = c
            .has(Branch::Narrow)
            .then(|| CnnLstmBranch::build(&mut tensors, c, false))
            .transpose()?;
        let wide = c
            .has(Branch::Wide)
            .then(|| CnnLstmBranch::build(&mut tensors, c, true))
            .transpose()?;
        let ds = c
            .has(Branch::Ds)
            .then(|| DsBranch::build(&mut tensors, c))
            .transpose()?;
        let names = tensors.finish();
        Ok(DuetModel {
            mfcc,
            narrow,
            wide,
            ds,
            config,
            names,
        })
    }

    /// Folds every CNN block's batch norms into its convs once ([`CnnBlock::fold_for_inference`]):
    /// for a model that only runs inference on a GPU from now on.
    pub fn fold_for_inference(&mut self) {
        let blocks = [
            self.narrow.as_mut().map(|b| &mut b.cnn),
            self.wide.as_mut().map(|b| &mut b.cnn),
        ];
        let ds = self
            .ds
            .as_mut()
            .map(|d| [&mut d.cnn_narrow, &mut d.cnn_wide]);
        for block in blocks.into_iter().flatten().chain(ds.into_iter().flatten()) {
            block.fold_for_inference();
        }
    }

    /// Every stored tensor under its documented name (docs/weights.md), in the module tree's order.
    pub fn export(&self, sink: &mut Sink) -> Result<(), ModelError> {
        crate::store::export(self, &self.names, sink)
    }

    /// The number of elements of every stored tensor, by name.
    pub fn tensor_sizes(&self) -> std::collections::BTreeMap<String, usize> {
        crate::store::sizes(self, &self.names)
    }

    /// The documented name of each parameter and running statistic, by parameter id.
    pub fn tensor_names(&self) -> &TensorNames {
        &self.names
    }

    /// The fused logits and each branch's for a batch, with batch norms in `mode`.
    pub fn forward(&self, input: &ModelInput, mode: Mode) -> ModelOutput {
        let mut branches = Vec::new();
        for b in self.config.branches() {
            let logits = match b {
                Branch::Mfcc => self
                    .mfcc
                    .as_ref()
                    .expect("built with the config")
                    .forward(input.mfcc.clone(), input.mfcc_pool.clone()),
                Branch::Narrow => self
                    .narrow
                    .as_ref()
                    .expect("built with the config")
                    .forward(input.mel_narrow.clone(), mode),
                Branch::Wide => self
                    .wide
                    .as_ref()
                    .expect("built with the config")
                    .forward(input.mel_wide.clone(), mode),
                Branch::Ds => self.ds.as_ref().expect("built with the config").forward(
                    input.mel_narrow.clone(),
                    input.mel_wide.clone(),
                    mode,
                ),
            };
            branches.push((b, logits));
        }
        let mut logits: Option<Tensor<2>> = None;
        for (b, l) in &branches {
            let wl = l.clone().mul_scalar(self.config.branch_weights[b] as f64);
            logits = Some(match logits {
                Some(acc) => acc + wl,
                None => wl,
            });
        }
        ModelOutput {
            logits: logits.expect("a model has at least one branch"),
            branches,
        }
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;
    use crate::input::Prepared;
    use crate::rng::SplitMix64;
    use duet_dsp::Preset;

    /// Names are written once, in the builders: every tensor the module tree holds is exported under
    /// its name, exactly the names a file of that kind holds (a saved model loads with nothing
    /// missing or left over), and a training forward's running statistics are what gets exported.
    #[test]
    fn every_tensor_is_exported_under_the_name_it_was_built_with() {
        use crate::store::Sink;
        let device = crate::backend::cpu_device();
        for preset in [Preset::Paper, Preset::Authors] {
            for kind in crate::ModelKind::ALL {
                let config = crate::ModelConfig::new(kind, preset);
                let model = crate::weights::init(config.clone(), 3, &device).unwrap();
                let mut visited = 0;
                model.visit(&mut CountFloats(&mut visited));
                let mut sink = Sink::default();
                model.export(&mut sink).unwrap();
                assert_eq!(sink.tensors.len(), visited, "{kind} {preset:?}");
                let names: std::collections::BTreeSet<&str> =
                    sink.tensors.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(names.len(), visited, "names are unique");
                assert_eq!(
                    names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    model.tensor_sizes().into_keys().collect::<Vec<_>>()
                );
                let bytes = crate::weights::save(&model, crate::weights::Precision::F32).unwrap();
                let again = crate::weights::load(&bytes, &device).unwrap();
                assert_eq!(
                    crate::weights::save(&again, crate::weights::Precision::F32).unwrap(),
                    bytes
                );
            }
        }
        // After a training forward (momentum 1) the exported running statistics are the batch's,
        // not the initial zeros and ones: burn keeps the last update aside until synchronised.
        let config = crate::ModelConfig::new(crate::ModelKind::Base2, Preset::Paper);
        let model = crate::weights::init(config.clone(), 3, &device).unwrap();
        let mut rng = SplitMix64::new(5);
        let items: Vec<Prepared> = (0..2)
            .map(|_| Prepared::random(&config, 19_200, &mut rng))
            .collect();
        let refs: Vec<&Prepared> = items.iter().collect();
        let input = crate::input::ModelInput::batch(&refs, &config, &device);
        let _ = model.forward(&input, Mode::Train { momentum: 1.0 });
        let mut sink = Sink::default();
        model.export(&mut sink).unwrap();
        let mean = sink
            .tensors
            .iter()
            .find(|t| t.name == "narrow.cnn.bn0.running_mean")
            .unwrap();
        assert!(mean.data.iter().any(|v| *v != 0.0), "{:?}", &mean.data[..4]);
    }

    struct CountFloats<'a>(&'a mut usize);
    impl burn::module::ModuleVisitor for CountFloats<'_> {
        fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<Tensor<D>>) {
            *self.0 += 1;
        }
    }

    /// Every kind and preset gives the same logits (fused and per branch) on wgpu — lavapipe in CI:
    /// the fused recurrence kernel and the GPU CNN path with its batch norms folded once — as on
    /// the CPU backend, within 1e-5, on random features of two 1.2 s utterances.
    #[test]
    fn every_model_agrees_between_the_cpu_and_wgpu() {
        let devices = crate::backend::available_devices();
        if devices.len() < 2 {
            println!("no wgpu adapter: nothing to compare");
            return;
        }
        let (cpu, gpu) = (&devices[0], &devices[1]);
        for preset in [Preset::Paper, Preset::Authors] {
            for kind in crate::ModelKind::ALL {
                let config = crate::ModelConfig::new(kind, preset);
                let mut rng = SplitMix64::new(11);
                let items: Vec<Prepared> = (0..2)
                    .map(|_| Prepared::random(&config, 19_200, &mut rng))
                    .collect();
                let refs: Vec<&Prepared> = items.iter().collect();
                // The fused logits and every branch's, as one list.
                let logits = |device: &Device| -> Vec<f32> {
                    let mut model = crate::weights::init(config.clone(), 7, device).unwrap();
                    // As a `Predictor` does on a GPU (the CPU path ignores the folded copy).
                    model.fold_for_inference();
                    let input = crate::input::ModelInput::batch(&refs, &config, device);
                    let out = model.forward(&input, Mode::Infer);
                    std::iter::once(out.logits)
                        .chain(out.branches.into_iter().map(|(_, l)| l))
                        .flat_map(|l| l.into_data().try_to_vec::<f32>().unwrap())
                        .collect()
                };
                let (a, b) = (logits(cpu), logits(gpu));
                assert_eq!(a.len(), b.len());
                let d = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                println!(
                    "{} {}: max |cpu − wgpu| = {d:.2e}",
                    kind.name(),
                    preset.name()
                );
                // Measured ≤ 1.1e-7 on lavapipe; leaving out the GPU path's second conv bias moves
                // them by 1.6e-4.
                assert!(d < 1e-5, "{} {}: {d}", kind.name(), preset.name());
            }
        }
    }
}
