//! The building blocks of docs/weights.md §3-4, written for speed on every backend: input
//! projections of all time steps in one matmul before each recurrence, fused recurrent gates (one
//! matmul per step), no per-step `slice_assign` (step outputs are stacked once at the end).

use burn::module::{Module, Param, RunningState};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::{batch_norm, batch_norm_train, conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

use crate::error::ModelError;
use crate::store::{Init, ParamSource, Sink, tensor};

/// Whether batch norms use running statistics (inference) or batch statistics (training, and
/// calibration with momentum 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Infer,
    Train { momentum: f64 },
}

fn param<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t)
}

/// Batch normalisation over axis 1 with running statistics (docs/weights.md §3).
#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl BatchNorm {
    pub fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        n: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Ok(BatchNorm {
            weight: param(tensor(
                src,
                &format!("{prefix}.weight"),
                [n],
                Init::Const(1.0),
                device,
            )?),
            bias: param(tensor(
                src,
                &format!("{prefix}.bias"),
                [n],
                Init::Const(0.0),
                device,
            )?),
            running_mean: RunningState::new(tensor(
                src,
                &format!("{prefix}.running_mean"),
                [n],
                Init::Const(0.0),
                device,
            )?),
            running_var: RunningState::new(tensor(
                src,
                &format!("{prefix}.running_var"),
                [n],
                Init::Const(1.0),
                device,
            )?),
            eps,
        })
    }

    pub fn export(&self, prefix: &str, sink: &mut Sink) -> Result<(), ModelError> {
        sink.push(format!("{prefix}.weight"), self.weight.val())?;
        sink.push(format!("{prefix}.bias"), self.bias.val())?;
        sink.push(format!("{prefix}.running_mean"), self.running_mean.value_sync())?;
        sink.push(format!("{prefix}.running_var"), self.running_var.value_sync())
    }

    /// `x`: [B, C, ...] normalised per channel C.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, mode: Mode) -> Tensor<D> {
        match mode {
            Mode::Infer => batch_norm(
                x,
                self.weight.val(),
                self.bias.val(),
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
                self.eps,
            ),
            Mode::Train { momentum } => {
                let r = batch_norm_train(x, self.weight.val(), self.bias.val(), self.eps);
                let m = self.running_mean.value_sync().mul_scalar(1.0 - momentum)
                    + r.mean.detach().mul_scalar(momentum);
                let v = self.running_var.value_sync().mul_scalar(1.0 - momentum)
                    + r.variance.detach().mul_scalar(momentum);
                self.running_mean.update(m.detach());
                self.running_var.update(v.detach());
                r.output
            }
        }
    }
}

/// `x [N, in] · W[out, in]ᵀ` for a 3-D input `[B, T, in]`, as one matmul over all B·T rows.
fn project(x: Tensor<3>, w_t: Tensor<2>) -> Tensor<3> {
    let [b, t, i] = x.dims();
    let out = w_t.dims()[1];
    x.reshape([b * t, i]).matmul(w_t).reshape([b, t, out])
}

/// One standard LSTM layer, PyTorch layout, gates `i, f, g, o` (docs/weights.md §4.1).
#[derive(Module, Debug)]
pub struct LstmLayer {
    pub weight_ih: Param<Tensor<2>>,
    pub weight_hh: Param<Tensor<2>>,
    pub bias_ih: Param<Tensor<1>>,
    pub bias_hh: Param<Tensor<1>>,
}

impl LstmLayer {
    pub fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        input: usize,
        hidden: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        // PyTorch's LSTM init: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
        let b = 1.0 / (hidden as f64).sqrt();
        let h4 = 4 * hidden;
        Ok(LstmLayer {
            weight_ih: param(tensor(
                src,
                &format!("{prefix}.weight_ih"),
                [h4, input],
                Init::Uniform(b),
                device,
            )?),
            weight_hh: param(tensor(
                src,
                &format!("{prefix}.weight_hh"),
                [h4, hidden],
                Init::Uniform(b),
                device,
            )?),
            bias_ih: param(tensor(
                src,
                &format!("{prefix}.bias_ih"),
                [h4],
                Init::Uniform(b),
                device,
            )?),
            bias_hh: param(tensor(
                src,
                &format!("{prefix}.bias_hh"),
                [h4],
                Init::Uniform(b),
                device,
            )?),
        })
    }

    pub fn export(&self, prefix: &str, sink: &mut Sink) -> Result<(), ModelError> {
        sink.push(format!("{prefix}.weight_ih"), self.weight_ih.val())?;
        sink.push(format!("{prefix}.weight_hh"), self.weight_hh.val())?;
        sink.push(format!("{prefix}.bias_ih"), self.bias_ih.val())?;
        sink.push(format!("{prefix}.bias_hh"), self.bias_hh.val())
    }

    /// `x`: [B, T, in] -> h: [B, T, H], zero initial state.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let h4 = self.weight_hh.dims()[0];
        let hd = h4 / 4;
        let device = x.device();
        let bias = (self.bias_ih.val() + self.bias_hh.val()).reshape([1, 1, h4]);
        let pre = project(x, self.weight_ih.val().transpose()) + bias;
        let w_hh_t = self.weight_hh.val().transpose();
        let mut h = Tensor::<2>::zeros([b, hd], &device);
        let mut c = Tensor::<2>::zeros([b, hd], &device);
        let mut outs = Vec::with_capacity(t);
        for step in pre.chunk(t, 1) {
            let z = step.reshape([b, h4]) + h.matmul(w_hh_t.clone());
            let s = sigmoid(z.clone());
            let i = s.clone().narrow(1, 0, hd);
            let f = s.clone().narrow(1, hd, hd);
            let o = s.narrow(1, 3 * hd, hd);
            let g = z.narrow(1, 2 * hd, hd).tanh();
            c = f * c + i * g;
            h = o * c.clone().tanh();
            outs.push(h.clone());
        }
        Tensor::stack(outs, 1)
    }
}

/// A stack of LSTM layers (`<prefix>.l{k}`).
#[derive(Module, Debug)]
pub struct Lstm {
    pub layers: Vec<LstmLayer>,
}

impl Lstm {
    pub fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        input: usize,
        hidden: usize,
        layers: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let layers = (0..layers)
            .map(|k| {
                let i = if k == 0 { input } else { hidden };
                LstmLayer::build(src, &format!("{prefix}.l{k}"), i, hidden, device)
            })
            .collect::<Result<_, _>>()?;
        Ok(Lstm { layers })
    }

    pub fn export(&self, prefix: &str, sink: &mut Sink) -> Result<(), ModelError> {
        for (k, l) in self.layers.iter().enumerate() {
            l.export(&format!("{prefix}.l{k}"), sink)?;
        }
        Ok(())
    }

    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for l in &self.layers {
            x = l.forward(x);
        }
        x
    }
}

/// The two-stage CNN of paper §2.3.3 / §3.1 (docs/weights.md §4.2).
#[derive(Module, Debug)]
pub struct CnnBlock {
    pub conv0_weight: Param<Tensor<4>>,
    pub conv0_bias: Param<Tensor<1>>,
    pub bn0: BatchNorm,
    pub conv1_weight: Param<Tensor<4>>,
    pub conv1_bias: Param<Tensor<1>>,
    pub bn1: BatchNorm,
    #[module(skip)]
    pub padding: [usize; 2],
    #[module(skip)]
    pub pool: usize,
}

impl CnnBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        channels: [usize; 2],
        kernel: [usize; 2],
        padding: [usize; 2],
        pool: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let [kf, kt] = kernel;
        // PyTorch's conv init bound: 1/sqrt(fan_in).
        let b0 = 1.0 / ((kf * kt) as f64).sqrt();
        let b1 = 1.0 / ((channels[0] * kf * kt) as f64).sqrt();
        Ok(CnnBlock {
            conv0_weight: param(tensor(
                src,
                &format!("{prefix}.conv0.weight"),
                [channels[0], 1, kf, kt],
                Init::Uniform(b0),
                device,
            )?),
            conv0_bias: param(tensor(
                src,
                &format!("{prefix}.conv0.bias"),
                [channels[0]],
                Init::Uniform(b0),
                device,
            )?),
            bn0: BatchNorm::build(src, &format!("{prefix}.bn0"), channels[0], eps, device)?,
            conv1_weight: param(tensor(
                src,
                &format!("{prefix}.conv1.weight"),
                [channels[1], channels[0], kf, kt],
                Init::Uniform(b1),
                device,
            )?),
            conv1_bias: param(tensor(
                src,
                &format!("{prefix}.conv1.bias"),
                [channels[1]],
                Init::Uniform(b1),
                device,
            )?),
            bn1: BatchNorm::build(src, &format!("{prefix}.bn1"), channels[1], eps, device)?,
            padding,
            pool,
        })
    }

    pub fn export(&self, prefix: &str, sink: &mut Sink) -> Result<(), ModelError> {
        sink.push(format!("{prefix}.conv0.weight"), self.conv0_weight.val())?;
        sink.push(format!("{prefix}.conv0.bias"), self.conv0_bias.val())?;
        self.bn0.export(&format!("{prefix}.bn0"), sink)?;
        sink.push(format!("{prefix}.conv1.weight"), self.conv1_weight.val())?;
        sink.push(format!("{prefix}.conv1.bias"), self.conv1_bias.val())?;
        self.bn1.export(&format!("{prefix}.bn1"), sink)
    }

    /// `image`: [B, 1, F, T] (log mel, frequency x time) -> sequence [B, T', C·F'] (channel-major).
    pub fn forward(&self, image: Tensor<4>, mode: Mode) -> Tensor<3> {
        let conv = ConvOptions::new([1, 1], self.padding, [1, 1], 1);
        let pool = MaxPoolOptions::new([self.pool, self.pool]);
        let a = conv2d(
            image,
            self.conv0_weight.val(),
            Some(self.conv0_bias.val()),
            conv.clone(),
        );
        let a = max_pool2d(relu(self.bn0.forward(a, mode)), pool.clone());
        let a = conv2d(
            a,
            self.conv1_weight.val(),
            Some(self.conv1_bias.val()),
            conv,
        );
        let a = max_pool2d(relu(self.bn1.forward(a, mode)), pool);
        let [b, c, f, t] = a.dims();
        a.permute([0, 3, 1, 2]).reshape([b, t, c * f])
    }
}

/// Recurrent batch normalisation (paper §2.3.4, Cooijmans et al.): statistics per time step,
/// affine shared across steps, weight initialised to 0.1 and bias to 0 (paper §3.1).
#[derive(Module, Debug)]
pub struct Rbn {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    /// [S, 4H]: one row per time step.
    pub running_mean: RunningState<Tensor<2>>,
    pub running_var: RunningState<Tensor<2>>,
    #[module(skip)]
    pub eps: f64,
}

impl Rbn {
    pub fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        steps: usize,
        n: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Ok(Rbn {
            weight: param(tensor(
                src,
                &format!("{prefix}.weight"),
                [n],
                Init::Const(0.1),
                device,
            )?),
            bias: param(tensor(
                src,
                &format!("{prefix}.bias"),
                [n],
                Init::Const(0.0),
                device,
            )?),
            running_mean: RunningState::new(tensor(
                src,
                &format!("{prefix}.running_mean"),
                [steps, n],
                Init::Const(0.0),
                device,
            )?),
            running_var: RunningState::new(tensor(
                src,
                &format!("{prefix}.running_var"),
                [steps, n],
                Init::Const(1.0),
                device,
            )?),
            eps,
        })
    }

    pub fn export(&self, prefix: &str, sink: &mut Sink) -> Result<(), ModelError> {
        sink.push(format!("{prefix}.weight"), self.weight.val())?;
        sink.push(format!("{prefix}.bias"), self.bias.val())?;
        sink.push(format!("{prefix}.running_mean"), self.running_mean.value_sync())?;
        sink.push(format!("{prefix}.running_var"), self.running_var.value_sync())
    }

    /// Inference: per-step `(scale, shift)` rows so each step costs one multiply-add. A step beyond
    /// the stored ones uses the last row.
    fn affine_per_step(&self, steps: usize) -> Vec<(Tensor<2>, Tensor<2>)> {
        let mean = self.running_mean.value_sync();
        let var = self.running_var.value_sync();
        let [s, n] = mean.dims();
        let scale = self.weight.val().reshape([1, n]) / (var + self.eps).sqrt();
        let shift = self.bias.val().reshape([1, n]) - mean * scale.clone();
        let scales = scale.chunk(s, 0);
        let shifts = shift.chunk(s, 0);
        (0..steps)
            .map(|t| {
                let i = t.min(s - 1);
                (scales[i].clone(), shifts[i].clone())
            })
            .collect()
    }
}

/// One DS-LSTM layer, equations (1)-(8) of paper §2.3.4 (docs/weights.md §4.4).
#[derive(Module, Debug)]
pub struct DsLstmLayer {
    /// [4H, X + Y + H], row blocks f, iT, iF, o; input order [x, y, h].
    pub gates_weight: Param<Tensor<2>>,
    pub gates_bias: Param<Tensor<1>>,
    /// [H, X + H], input order [x, h] (eq. 5).
    pub cand_t_weight: Param<Tensor<2>>,
    pub cand_t_bias: Param<Tensor<1>>,
    /// [H, Y + H], input order [y, h] (eq. 6).
    pub cand_f_weight: Param<Tensor<2>>,
    pub cand_f_bias: Param<Tensor<1>>,
    pub rbn: Rbn,
    pub out_bn: BatchNorm,
    #[module(skip)]
    pub dims: [usize; 3],
}

impl DsLstmLayer {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        x: usize,
        y: usize,
        hidden: usize,
        steps: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let h = hidden;
        // nn.Linear's init bound 1/sqrt(fan_in) for each of the three linear maps.
        let bg = 1.0 / ((x + y + h) as f64).sqrt();
        let bt = 1.0 / ((x + h) as f64).sqrt();
        let bf = 1.0 / ((y + h) as f64).sqrt();
        Ok(DsLstmLayer {
            gates_weight: param(tensor(
                src,
                &format!("{prefix}.gates.weight"),
                [4 * h, x + y + h],
                Init::Uniform(bg),
                device,
            )?),
            gates_bias: param(tensor(
                src,
                &format!("{prefix}.gates.bias"),
                [4 * h],
                Init::Uniform(bg),
                device,
            )?),
            cand_t_weight: param(tensor(
                src,
                &format!("{prefix}.cand_t.weight"),
                [h, x + h],
                Init::Uniform(bt),
                device,
            )?),
            cand_t_bias: param(tensor(
                src,
                &format!("{prefix}.cand_t.bias"),
                [h],
                Init::Uniform(bt),
                device,
            )?),
            cand_f_weight: param(tensor(
                src,
                &format!("{prefix}.cand_f.weight"),
                [h, y + h],
                Init::Uniform(bf),
                device,
            )?),
            cand_f_bias: param(tensor(
                src,
                &format!("{prefix}.cand_f.bias"),
                [h],
                Init::Uniform(bf),
                device,
            )?),
            rbn: Rbn::build(src, &format!("{prefix}.rbn"), steps, 4 * h, eps, device)?,
            out_bn: BatchNorm::build(src, &format!("{prefix}.out_bn"), h, eps, device)?,
            dims: [x, y, h],
        })
    }

    pub fn export(&self, prefix: &str, sink: &mut Sink) -> Result<(), ModelError> {
        sink.push(format!("{prefix}.gates.weight"), self.gates_weight.val())?;
        sink.push(format!("{prefix}.gates.bias"), self.gates_bias.val())?;
        sink.push(format!("{prefix}.cand_t.weight"), self.cand_t_weight.val())?;
        sink.push(format!("{prefix}.cand_t.bias"), self.cand_t_bias.val())?;
        sink.push(format!("{prefix}.cand_f.weight"), self.cand_f_weight.val())?;
        sink.push(format!("{prefix}.cand_f.bias"), self.cand_f_bias.val())?;
        self.rbn.export(&format!("{prefix}.rbn"), sink)?;
        self.out_bn.export(&format!("{prefix}.out_bn"), sink)
    }

    /// `x`: [B, T, X], `y`: [B, T, Y] -> (raw h [B, T, H], BN output [B, T, H]).
    pub fn forward(&self, x: Tensor<3>, y: Tensor<3>, mode: Mode) -> Tensor<3> {
        let [xd, yd, hd] = self.dims;
        let [b, t, _] = x.dims();
        let device = x.device();
        let gw = self.gates_weight.val();
        let tw = self.cand_t_weight.val();
        let fw = self.cand_f_weight.val();
        // Input projections of every step at once: [x, y] for the gates, x for C~T, y for C~F.
        let xy = Tensor::cat(vec![x.clone(), y.clone()], 2);
        let pre_g = project(xy, gw.clone().narrow(1, 0, xd + yd).transpose())
            + self.gates_bias.val().reshape([1, 1, 4 * hd]);
        let pre_t = project(x, tw.clone().narrow(1, 0, xd).transpose())
            + self.cand_t_bias.val().reshape([1, 1, hd]);
        let pre_f = project(y, fw.clone().narrow(1, 0, yd).transpose())
            + self.cand_f_bias.val().reshape([1, 1, hd]);
        let pre = Tensor::cat(vec![pre_g, pre_t, pre_f], 2); // [B, T, 6H]
        // The recurrent parts of all six maps in one [H, 6H] matrix: one matmul per step.
        let w_h = Tensor::cat(
            vec![
                gw.narrow(1, xd + yd, hd),
                tw.narrow(1, xd, hd),
                fw.narrow(1, yd, hd),
            ],
            0,
        )
        .transpose();
        let affine = match mode {
            Mode::Infer => Some(self.rbn.affine_per_step(t)),
            Mode::Train { .. } => None,
        };
        let mut stats = Vec::new();
        let mut h = Tensor::<2>::zeros([b, hd], &device);
        let mut c = Tensor::<2>::zeros([b, hd], &device);
        let mut outs = Vec::with_capacity(t);
        for (step, p) in pre.chunk(t, 1).into_iter().enumerate() {
            let z = p.reshape([b, 6 * hd]) + h.matmul(w_h.clone());
            // (1)-(4): sigmoid, then recurrent batch norm.
            let g = sigmoid(z.clone().narrow(1, 0, 4 * hd));
            let g = match &affine {
                Some(a) => g * a[step].0.clone() + a[step].1.clone(),
                None => {
                    let r = batch_norm_train(
                        g,
                        self.rbn.weight.val(),
                        self.rbn.bias.val(),
                        self.rbn.eps,
                    );
                    stats.push((r.mean.detach(), r.variance.detach()));
                    r.output
                }
            };
            let f = g.clone().narrow(1, 0, hd);
            let i_t = g.clone().narrow(1, hd, hd);
            let i_f = g.clone().narrow(1, 2 * hd, hd);
            let o = g.narrow(1, 3 * hd, hd);
            // (5), (6): candidates from [x, h] and [y, h].
            let ct = z.clone().narrow(1, 4 * hd, hd).tanh();
            let cf = z.narrow(1, 5 * hd, hd).tanh();
            // (7), (8).
            c = f * c + i_t * ct + i_f * cf;
            h = o * c.clone().tanh();
            outs.push(h.clone());
        }
        if let Mode::Train { momentum } = mode {
            self.update_rbn_stats(stats, momentum);
        }
        let hs: Tensor<3> = Tensor::stack(outs, 1); // [B, T, H]
        // The layer's output: BatchNorm1d over H, statistics over batch and time.
        self.out_bn
            .forward(hs.swap_dims(1, 2), mode)
            .swap_dims(1, 2)
    }

    /// Running statistics per step: rows `0..min(T, S)` move towards this batch's step statistics.
    fn update_rbn_stats(&self, stats: Vec<(Tensor<1>, Tensor<1>)>, momentum: f64) {
        let rm = self.rbn.running_mean.value_sync();
        let rv = self.rbn.running_var.value_sync();
        let [s, n] = rm.dims();
        let k = stats.len().min(s);
        if k == 0 {
            return;
        }
        let (means, vars): (Vec<_>, Vec<_>) = stats.into_iter().take(k).unzip();
        let bm: Tensor<2> = Tensor::stack(means, 0);
        let bv: Tensor<2> = Tensor::stack(vars, 0);
        let upd = |run: Tensor<2>, batch: Tensor<2>| {
            let head =
                run.clone().narrow(0, 0, k).mul_scalar(1.0 - momentum) + batch.mul_scalar(momentum);
            if k < s {
                Tensor::cat(vec![head, run.narrow(0, k, s - k)], 0)
            } else {
                head
            }
            .reshape([s, n])
            .detach()
        };
        self.rbn.running_mean.update(upd(rm, bm));
        self.rbn.running_var.update(upd(rv, bv));
    }
}

/// A branch's classifier: `logits = W·p + b` (docs/weights.md §5).
#[derive(Module, Debug)]
pub struct Head {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
}

impl Head {
    pub fn build(
        src: &mut dyn ParamSource,
        prefix: &str,
        input: usize,
        classes: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let b = 1.0 / (input as f64).sqrt();
        Ok(Head {
            weight: param(tensor(
                src,
                &format!("{prefix}.weight"),
                [classes, input],
                Init::Uniform(b),
                device,
            )?),
            bias: param(tensor(
                src,
                &format!("{prefix}.bias"),
                [classes],
                Init::Uniform(b),
                device,
            )?),
        })
    }

    pub fn export(&self, prefix: &str, sink: &mut Sink) -> Result<(), ModelError> {
        sink.push(format!("{prefix}.weight"), self.weight.val())?;
        sink.push(format!("{prefix}.bias"), self.bias.val())
    }

    pub fn forward(&self, p: Tensor<2>) -> Tensor<2> {
        let c = self.bias.dims()[0];
        p.matmul(self.weight.val().transpose()) + self.bias.val().reshape([1, c])
    }
}
