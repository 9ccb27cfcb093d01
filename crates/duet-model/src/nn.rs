//! The building blocks of docs/weights.md §3-4, written for speed on every backend: input
//! projections of all time steps in one matmul before each recurrence, fused recurrent gates (one
//! matmul per step), no per-step `slice_assign` (step outputs are stacked once at the end).

use burn::module::{Module, Param, RunningState};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

use crate::error::ModelError;
use crate::store::{Builder, Init};

/// Whether batch norms use running statistics (inference) or batch statistics (training, and
/// calibration with momentum 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Inference: running statistics.
    Infer,
    /// Training: batch statistics; running ones updated with `momentum` (docs/weights.md §3).
    Train {
        /// Weight of the batch's statistics in the running ones.
        momentum: f64,
    },
}

/// Where f32's `tanh` is already ±1: for |x| ≥ 9.02, 1 − tanh|x| ≈ 2e^(−2|x|) is below half an
/// ulp of 1 (2^−25), so the rounded result is exactly ±1.
pub const TANH_SATURATION: f64 = 10.0;

/// `tanh`, finite for every finite input on every backend (docs/weights.md §4.5).
///
/// Why: burn's wgpu backend emits the shader language's `tanh`, which browsers' WebGPU
/// implementations may evaluate as (e^2x − 1)/(e^2x + 1); on Chromium's SwiftShader adapter it
/// is NaN for |x| > 88.7, where e^2x overflows (docs/weights.md §4.5). Trained weights drive the
/// cell states on real speech past that. Clamping to [`TANH_SATURATION`] first changes no
/// correctly rounded f32 result (and no gradient: 1 − tanh² is 0 there too).
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clamp(-TANH_SATURATION, TANH_SATURATION).tanh()
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
        tensors: &mut Builder<'_>,
        prefix: &str,
        n: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        Ok(BatchNorm {
            weight: tensors.param(format!("{prefix}.weight"), [n], Init::Const(1.0))?,
            bias: tensors.param(format!("{prefix}.bias"), [n], Init::Const(0.0))?,
            running_mean: tensors.state(format!("{prefix}.running_mean"), [n], Init::Const(0.0))?,
            running_var: tensors.state(format!("{prefix}.running_var"), [n], Init::Const(1.0))?,
            eps,
        })
    }

    /// Number of normalised channels.
    pub fn channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Batch norm with statistics `mean`, `var` as the per-channel affine `x · scale + shift`.
    fn affine(&self, mean: Tensor<1>, var: Tensor<1>) -> (Tensor<1>, Tensor<1>) {
        let scale = self.weight.val() / (var + self.eps).sqrt();
        let shift = self.bias.val() - mean * scale.clone();
        (scale, shift)
    }

    /// Inference-mode batch norm of `x + offset` as `x · scale + shift` (per channel), to fold
    /// into the preceding linear map.
    pub fn infer_affine(&self, offset: Option<Tensor<1>>) -> (Tensor<1>, Tensor<1>) {
        let mut mean = self.running_mean.value_sync();
        if let Some(o) = offset {
            mean = mean - o;
        }
        self.affine(mean, self.running_var.value_sync())
    }

    /// `x`: [N, C], normalised per column C (the rows are the batch, and time or space).
    ///
    /// The statistics are computed as matrix products (`1ᵀx / N`, then `1ᵀ(x − mean)² / N`) rather than with
    /// burn's `batch_norm_train`, which transposes the whole activation twice: column sums on the
    /// GEMM path are several times faster on the CPU, and autodiff derives the same gradient.
    /// `offset` is a per-column constant already contained in `x`'s definition but not added to it
    /// (a conv bias before a batch norm): in training it cancels out, in inference it shifts the mean.
    pub fn forward_rows(&self, x: Tensor<2>, mode: Mode, offset: Option<Tensor<1>>) -> Tensor<2> {
        self.forward_rows_masked(x, mode, offset, None)
    }

    /// [`Self::forward_rows`] where only some rows are data: with `valid` = (t, v), the rows r
    /// with r mod t < v (a conv output's valid columns). The statistics come from the data rows
    /// only; every row is normalised (the others are padding the caller drops).
    ///
    /// In training the statistics and the normalisation are backend operations with a backward
    /// of their own (`crate::cnn`, `CnnOps::batch_norm_rows`): composed from tensor operations,
    /// autodiff wrote about ten tensors the size of `x` in the backward, and `x` is the largest
    /// activation of the model (the first conv's output).
    pub fn forward_rows_masked(
        &self,
        x: Tensor<2>,
        mode: Mode,
        offset: Option<Tensor<1>>,
        valid: Option<(usize, usize)>,
    ) -> Tensor<2> {
        let c = x.dims()[1];
        let Mode::Train { momentum } = mode else {
            let (scale, shift) = self.infer_affine(offset);
            return x * scale.reshape([1, c]) + shift.reshape([1, c]);
        };
        let (t, v) = valid.unwrap_or((1, 1));
        let stats = self.train_stats(x.clone(), momentum, offset, (t, v));
        crate::cnn::batch_norm_rows(
            x,
            stats,
            [self.weight.val(), self.bias.val()],
            self.eps,
            [t, v],
        )
    }

    /// Training's statistics [2, C] (mean, biased variance) of `x` [N, C] over its data rows
    /// (r mod t < v for `valid` = (t, v)), with the running estimates updated from them.
    pub fn train_stats(
        &self,
        x: Tensor<2>,
        momentum: f64,
        offset: Option<Tensor<1>>,
        (t, v): (usize, usize),
    ) -> Tensor<2> {
        let [rows, c] = x.dims();
        let n = crate::cnn::data_rows(rows, t, v);
        let stats = crate::cnn::batch_norm_stats(x, t, v);
        let mean = stats.clone().slice([0..1, 0..c]).reshape([c]);
        let var = stats.clone().slice([1..2, 0..c]).reshape([c]);
        // PyTorch's convention: the running variance is the unbiased estimate.
        let unbiased = if n > 1 {
            n as f64 / (n - 1) as f64
        } else {
            1.0
        };
        let batch_mean = match &offset {
            Some(o) => mean + o.clone().detach(),
            None => mean,
        };
        let m = self.running_mean.value_sync().mul_scalar(1.0 - momentum)
            + batch_mean.mul_scalar(momentum);
        let v_run = self.running_var.value_sync().mul_scalar(1.0 - momentum)
            + var.mul_scalar(momentum * unbiased);
        self.running_mean.update(m.detach());
        self.running_var.update(v_run.detach());
        stats
    }
}

/// Mean and biased variance of each column of `x` [N, C], as [1, C] rows (GEMM column sums).
pub fn row_stats(x: &Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let (mean, _, var) = centred_row_stats(x.clone(), uniform_rows(x.dims()[0], &x.device()));
    (mean, var)
}

/// Row weights [1, n], each 1/n.
fn uniform_rows(n: usize, device: &Device) -> Tensor<2> {
    Tensor::<2>::ones([1, n], device).div_scalar(n as f64)
}

/// Weighted mean [1, C], deviations `x − mean` [N, C] and variance [1, C] of the columns of `x`
/// [N, C] with row weights `w` [1, N] summing to 1.
///
/// Two passes (the mean, then the mean square deviation from it) rather than `E[x²] − E[x]²`: the
/// CNNs' inputs are log-mel images in dB, whose columns sit far from zero (|mean| ≈ 70·std), and
/// in f32 the one-pass form cancels away about 3e-4 of the variance there.
fn centred_row_stats(x: Tensor<2>, w: Tensor<2>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let mean = w.clone().matmul(x.clone());
    let dev = x - mean.clone();
    let var = w.matmul(dev.clone() * dev.clone());
    (mean, dev, var)
}

/// `x [N, in] · W[out, in]ᵀ + bias` for a 3-D input `[B, T, in]`, as one product over all B·T
/// rows (`crate::recurrence::input_projection`).
fn project(x: Tensor<3>, w_t: Tensor<2>, bias: Tensor<1>) -> Tensor<3> {
    let [b, t, i] = x.dims();
    let out = w_t.dims()[1];
    crate::recurrence::input_projection(x.reshape([b * t, i]), w_t, bias).reshape([b, t, out])
}

/// `x [B, T, F]` as T tensors `[B, F]`, split by recursive halving. Why not `chunk(T, 1)`: the
/// backward of a slice writes into a zero tensor the size of its source, so T slices of one
/// sequence cost O(T²·B·F) in training (it was most of an epoch); halving costs O(log T·B·T·F).
pub fn split_steps(x: Tensor<3>) -> Vec<Tensor<2>> {
    fn rec(x: Tensor<3>, out: &mut Vec<Tensor<2>>) {
        let [b, t, f] = x.dims();
        if t == 1 {
            out.push(x.reshape([b, f]));
        } else {
            let half = t / 2;
            rec(x.clone().narrow(1, 0, half), out);
            rec(x.narrow(1, half, t - half), out);
        }
    }
    let mut out = Vec::with_capacity(x.dims()[1]);
    if x.dims()[1] > 0 {
        rec(x, &mut out);
    }
    out
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
        tensors: &mut Builder<'_>,
        prefix: &str,
        input: usize,
        hidden: usize,
    ) -> Result<Self, ModelError> {
        // PyTorch's LSTM init: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
        let b = 1.0 / (hidden as f64).sqrt();
        let h4 = 4 * hidden;
        Ok(LstmLayer {
            weight_ih: tensors.param(
                format!("{prefix}.weight_ih"),
                [h4, input],
                Init::Uniform(b),
            )?,
            weight_hh: tensors.param(
                format!("{prefix}.weight_hh"),
                [h4, hidden],
                Init::Uniform(b),
            )?,
            bias_ih: tensors.param(format!("{prefix}.bias_ih"), [h4], Init::Uniform(b))?,
            bias_hh: tensors.param(format!("{prefix}.bias_hh"), [h4], Init::Uniform(b))?,
        })
    }

    /// `x`: [B, T, in] -> h: [B, T, H], zero initial state.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let bias = self.bias_ih.val() + self.bias_hh.val();
        let pre = project(x, self.weight_ih.val().transpose(), bias);
        crate::recurrence::lstm_recurrence(pre, self.weight_hh.val().transpose())
    }
}

/// A stack of LSTM layers (`<prefix>.l{k}`).
#[derive(Module, Debug)]
pub struct Lstm {
    pub layers: Vec<LstmLayer>,
}

impl Lstm {
    pub fn build(
        tensors: &mut Builder<'_>,
        prefix: &str,
        input: usize,
        hidden: usize,
        layers: usize,
    ) -> Result<Self, ModelError> {
        let layers = (0..layers)
            .map(|k| {
                let i = if k == 0 { input } else { hidden };
                LstmLayer::build(tensors, &format!("{prefix}.l{k}"), i, hidden)
            })
            .collect::<Result<_, _>>()?;
        Ok(Lstm { layers })
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
    /// The convs with their batch norms folded in, made once for GPU inference by
    /// [`CnnBlock::fold_for_inference`] (folding on every forward was a third of the dispatches).
    #[module(skip)]
    pub folded: Option<FoldedConvs>,
}

/// Conv weights and biases with the following inference batch norm folded in.
#[derive(Debug, Clone)]
pub struct FoldedConvs {
    w0: Tensor<4>,
    b0: Tensor<1>,
    w1: Tensor<4>,
    b1: Tensor<1>,
}

impl CnnBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        tensors: &mut Builder<'_>,
        prefix: &str,
        channels: [usize; 2],
        kernel: [usize; 2],
        padding: [usize; 2],
        pool: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        let [kf, kt] = kernel;
        // PyTorch's conv init bound: 1/sqrt(fan_in).
        let b0 = 1.0 / ((kf * kt) as f64).sqrt();
        let b1 = 1.0 / ((channels[0] * kf * kt) as f64).sqrt();
        Ok(CnnBlock {
            conv0_weight: tensors.param(
                format!("{prefix}.conv0.weight"),
                [channels[0], 1, kf, kt],
                Init::Uniform(b0),
            )?,
            conv0_bias: tensors.param(
                format!("{prefix}.conv0.bias"),
                [channels[0]],
                Init::Uniform(b0),
            )?,
            bn0: BatchNorm::build(tensors, &format!("{prefix}.bn0"), channels[0], eps)?,
            conv1_weight: tensors.param(
                format!("{prefix}.conv1.weight"),
                [channels[1], channels[0], kf, kt],
                Init::Uniform(b1),
            )?,
            conv1_bias: tensors.param(
                format!("{prefix}.conv1.bias"),
                [channels[1]],
                Init::Uniform(b1),
            )?,
            bn1: BatchNorm::build(tensors, &format!("{prefix}.bn1"), channels[1], eps)?,
            padding,
            pool,
            folded: None,
        })
    }

    /// `image`: [B, 1, F, T] (log mel, frequency x time) -> sequence [B, T', C·F'] (channel-major).
    ///
    /// Computed channels-last ([B, F, T, C]) with matrix products — the same cross-correlation as
    /// `conv2d`, but on the GEMM path of every backend (burn's own conv and max-pool took 1.8x as
    /// long for a training step of this block on the CPU) and with memory that stays bounded at
    /// batch 32. Each conv output keeps the input's full width
    /// T: the columns past the valid T' are padding that the batch-norm statistics weigh 0 and the
    /// pooling never reads (see [`conv_rows`]).
    pub fn forward(&self, image: Tensor<4>, mode: Mode) -> Tensor<3> {
        if mode == Mode::Infer && crate::backend::kind_of(&image.device()) != "cpu" {
            return self.forward_gpu_infer(image);
        }
        let [b, _, f, t] = image.dims();
        let x = pad_channels_last(image.reshape([b, f, t, 1]), self.padding);
        // conv -> BN -> ReLU -> max-pool (paper §3.1). Pooling runs before the ReLU (they commute:
        // ReLU is monotonic) so the ReLU touches a quarter of the values.
        let a = match mode {
            // Inference (on the CPU: `forward_gpu_infer` serves the GPU): BN is a fixed
            // per-channel affine, its scale folded into the conv's kernel and its shift added
            // after the pooling (max(a + s) = max(a) + s), all in one operation that never writes
            // the conv output, the model's largest activation (`crate::cnn::conv_pool_relu`).
            Mode::Infer => {
                let (scale, shift) = self.bn0.infer_affine(Some(self.conv0_bias.val()));
                let [cout, _, kf, kt] = self.conv0_weight.dims();
                let w = self.conv0_weight.val() * scale.reshape([cout, 1, 1, 1]);
                let [b, f, t, _] = x.dims();
                crate::cnn::conv_pool_relu(
                    x.reshape([b, f * t, 1]),
                    w.permute([2, 3, 1, 0]),
                    shift,
                    [t, f + 1 - kf, t + 1 - kt, self.pool],
                )
            }
            Mode::Train { .. } => {
                let a = conv_rows(x, self.conv0_weight.val());
                relu(bn_pool_padded(
                    &self.bn0,
                    a,
                    mode,
                    self.conv0_bias.val(),
                    self.pool,
                ))
            }
        };
        let x = pad_channels_last(a, self.padding);
        let a = conv_rows(x, self.conv1_weight.val());
        let a = relu(bn_pool_padded(
            &self.bn1,
            a,
            mode,
            self.conv1_bias.val(),
            self.pool,
        ));
        let [b, f, t, c] = a.dims();
        a.permute([0, 2, 3, 1]).reshape([b, t, c * f])
    }
}

impl CnnBlock {
    /// Inference on a GPU: burn's own `conv2d` and `max_pool2d` (a few dispatches each), with each
    /// batch norm folded into its conv. The channels-last per-offset products of [`conv_rows`] are
    /// shaped for the CPU, where they are faster; on a GPU they are 16 dispatches per conv. Both
    /// are checked against each other (`cnn_block_matches_burn_conv2d_and_max_pool2d_in_both_modes`).
    fn forward_gpu_infer(&self, image: Tensor<4>) -> Tensor<3> {
        let opts = ConvOptions::new([1, 1], self.padding, [1, 1], 1);
        let pool = MaxPoolOptions::new([self.pool, self.pool]);
        let FoldedConvs { w0, b0, w1, b1 } = match &self.folded {
            Some(f) => f.clone(),
            None => self.folded_convs(),
        };
        let y = relu(max_pool2d(
            conv2d(image, w0, Some(b0), opts.clone()),
            pool.clone(),
        ));
        let y = relu(max_pool2d(conv2d(y, w1, Some(b1), opts), pool));
        let [b, c, f, t] = y.dims();
        y.permute([0, 3, 1, 2]).reshape([b, t, c * f])
    }

    fn folded_convs(&self) -> FoldedConvs {
        let folded = |bn: &BatchNorm, w: Tensor<4>, bias: Tensor<1>| {
            let (scale, shift) = bn.infer_affine(Some(bias));
            (w * scale.reshape([bn.channels(), 1, 1, 1]), shift)
        };
        let (w0, b0) = folded(&self.bn0, self.conv0_weight.val(), self.conv0_bias.val());
        let (w1, b1) = folded(&self.bn1, self.conv1_weight.val(), self.conv1_bias.val());
        FoldedConvs { w0, b0, w1, b1 }
    }

    /// Folds the batch norms into the convs once, for a block that will only run inference on a
    /// GPU from now on (a [`crate::Predictor`]'s). Training the block afterwards would leave the
    /// folded copy stale: [`CnnBlock::forward`] in [`Mode::Train`] ignores it, but inference
    /// would not, so only inference-only owners call this.
    pub fn fold_for_inference(&mut self) {
        self.folded = Some(self.folded_convs());
    }
}

/// A channels-last conv output [B, F', T, C] whose columns `valid..T` are padding.
struct Padded {
    x: Tensor<4>,
    valid: usize,
}

/// Cross-correlation of channels-last `x` [B, F, T, Cin] (already zero-padded) with `w` [Cout,
/// Cin, kf, kt] (PyTorch layout), stride 1 -> [B, F', T, Cout] of which the first T' = T - kt + 1
/// columns are valid.
///
/// Seen as [B, F·T, Cin] rows, the input of offset (i, j) for output (f, t) is row (f + i)·T + t + j:
/// for every output row at once, one contiguous run of rows starting at i·T + j — a strided view
/// the GEMM reads in place. Copying each shifted window (im2col) instead moved kf·kt times the
/// input through memory and was 30 % of the forward. The runs span whole rows, so each output
/// row also gets kt - 1 garbage columns, which stay in place as padding (no copy to drop them).
fn conv_rows(x: Tensor<4>, w: Tensor<4>) -> Padded {
    let [cout, cin, kf, kt] = w.dims();
    let [b, f, t, _] = x.dims();
    let (fo, to) = (f + 1 - kf, t + 1 - kt);
    let device = x.device();
    let out = if cin == 1 && crate::backend::kind_of(&device) == "cpu" {
        // One input channel on the CPU: the offset products gather the kf·kt input values of a
        // tile of output rows and multiply in cache (`crate::cnn`), where the patch matrix below
        // is written and read whole and burn's product zero-fills its output first. The input
        // (one channel: small) is extended by kt - 1 zeros so that the output has every row.
        let rows = x.reshape([b, f * t, 1]);
        let rows = Tensor::cat(vec![rows, Tensor::zeros([b, kt - 1, 1], &device)], 1);
        crate::cnn::offset_products(rows, w.permute([2, 3, 1, 0]), t, fo * t)
            .reshape([b, fo, t, cout])
    } else if cin == 1 {
        // One input channel: gather the kf·kt runs as rows of a [B, kf·kt, F'·T] patch matrix
        // (contiguous copies, one input-sized each) and multiply once with a useful depth, instead
        // of kf·kt rank-1 products. The input is first extended by kt - 1 zeros so that every run
        // covers all F'·T output positions.
        let rows = x.reshape([b, 1, f * t]);
        let rows = Tensor::cat(vec![rows, Tensor::zeros([b, 1, kt - 1], &device)], 2);
        let runs: Vec<Tensor<3>> = (0..kf)
            .flat_map(|i| (0..kt).map(move |j| (i, j)))
            .map(|(i, j)| rows.clone().narrow(2, i * t + j, fo * t))
            .collect();
        let w = w.reshape([cout, kf * kt]).transpose();
        let k = runs.len();
        let patches = Tensor::cat(runs, 1); // [B, K, F'·T]
        patches
            .swap_dims(1, 2)
            .matmul(w.reshape([1, k, cout]))
            .reshape([b, fo, t, cout])
    } else {
        // One [rows, Cin] x [Cin, Cout] product per kernel offset on a view of the rows,
        // accumulated (`crate::cnn`, which also gives it a backward without a zero tensor per
        // view). The runs stop at the last valid output column; the missing kt - 1 rows are
        // appended after (the output is a fraction of the input's size here).
        let len = fo * t - (kt - 1);
        let rows = x.reshape([b, f * t, cin]);
        let acc = crate::cnn::offset_products(rows, w.permute([2, 3, 1, 0]), t, len);
        Tensor::cat(vec![acc, Tensor::zeros([b, kt - 1, cout], &device)], 1)
            .reshape([b, fo, t, cout])
    };
    Padded { x: out, valid: to }
}

/// Zero padding of the frequency and time axes of a channels-last tensor.
fn pad_channels_last(x: Tensor<4>, [pf, pt]: [usize; 2]) -> Tensor<4> {
    if pf == 0 && pt == 0 {
        return x;
    }
    let [b, f, t, c] = x.dims();
    let device = x.device();
    let mut x = x;
    if pf > 0 {
        let z = Tensor::<4>::zeros([b, pf, t, c], &device);
        x = Tensor::cat(vec![z.clone(), x, z], 1);
    }
    if pt > 0 {
        let z = Tensor::<4>::zeros([b, f + 2 * pf, pt, c], &device);
        x = Tensor::cat(vec![z.clone(), x, z], 2);
    }
    x
}

/// Batch norm over the channel (last) axis of a padded conv output whose conv bias is `bias`;
/// training statistics over the valid columns only.
fn bn_padded(bn: &BatchNorm, p: Padded, mode: Mode, bias: Tensor<1>) -> Padded {
    let dims = p.x.dims();
    let [b, f, t, c] = dims;
    let x = bn
        .forward_rows_masked(
            p.x.reshape([b * f * t, c]),
            mode,
            Some(bias),
            Some((t, p.valid)),
        )
        .reshape(dims);
    Padded { x, valid: p.valid }
}

/// [`bn_padded`], then [`max_pool_padded`]. In training one backend operation
/// (`crate::cnn::batch_norm_pool`): as the normalisation is monotonic in x, the pooling picks
/// each window's extreme of the conv output before it is normalised, so the normalised image, as
/// large as the conv output, is neither written nor kept for the backward, and the batch norm's
/// column sums in the backward run over the pooled windows alone.
fn bn_pool_padded(bn: &BatchNorm, p: Padded, mode: Mode, bias: Tensor<1>, k: usize) -> Tensor<4> {
    let Mode::Train { momentum } = mode else {
        return max_pool_padded(bn_padded(bn, p, mode, bias), k);
    };
    let [b, f, t, c] = p.x.dims();
    let rows = p.x.clone().reshape([b * f * t, c]);
    let stats = bn.train_stats(rows, momentum, Some(bias), (t, p.valid));
    let affine = [bn.weight.val(), bn.bias.val()];
    crate::cnn::batch_norm_pool(p.x, stats, affine, bn.eps, p.valid, k)
}

/// Max pooling `k x k` with stride `k` (floor: trailing rows/columns dropped) over the valid
/// columns (`crate::cnn::max_pool_valid`: the running maximum of the k² strided views, with a
/// backward that sends each window's gradient to its maximum, the first on ties).
fn max_pool_padded(p: Padded, k: usize) -> Tensor<4> {
    crate::cnn::max_pool_valid(p.x, p.valid, k)
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
        tensors: &mut Builder<'_>,
        prefix: &str,
        steps: usize,
        n: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        Ok(Rbn {
            weight: tensors.param(format!("{prefix}.weight"), [n], Init::Const(0.1))?,
            bias: tensors.param(format!("{prefix}.bias"), [n], Init::Const(0.0))?,
            running_mean: tensors.state(
                format!("{prefix}.running_mean"),
                [steps, n],
                Init::Const(0.0),
            )?,
            running_var: tensors.state(
                format!("{prefix}.running_var"),
                [steps, n],
                Init::Const(1.0),
            )?,
            eps,
        })
    }

    /// Inference: the per-step statistics as `(scale, shift)` rows [S, 4H], so each step costs one
    /// multiply-add (a step beyond the stored ones uses the last row).
    fn affine_table(&self) -> (Tensor<2>, Tensor<2>) {
        let mean = self.running_mean.value_sync();
        let var = self.running_var.value_sync();
        let n = mean.dims()[1];
        let scale = self.weight.val().reshape([1, n]) / (var + self.eps).sqrt();
        let shift = self.bias.val().reshape([1, n]) - mean * scale.clone();
        (scale, shift)
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
        tensors: &mut Builder<'_>,
        prefix: &str,
        x: usize,
        y: usize,
        hidden: usize,
        steps: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        let h = hidden;
        // nn.Linear's init bound 1/sqrt(fan_in) for each of the three linear maps.
        let bg = 1.0 / ((x + y + h) as f64).sqrt();
        let bt = 1.0 / ((x + h) as f64).sqrt();
        let bf = 1.0 / ((y + h) as f64).sqrt();
        Ok(DsLstmLayer {
            gates_weight: tensors.param(
                format!("{prefix}.gates.weight"),
                [4 * h, x + y + h],
                Init::Uniform(bg),
            )?,
            gates_bias: tensors.param(
                format!("{prefix}.gates.bias"),
                [4 * h],
                Init::Uniform(bg),
            )?,
            cand_t_weight: tensors.param(
                format!("{prefix}.cand_t.weight"),
                [h, x + h],
                Init::Uniform(bt),
            )?,
            cand_t_bias: tensors.param(format!("{prefix}.cand_t.bias"), [h], Init::Uniform(bt))?,
            cand_f_weight: tensors.param(
                format!("{prefix}.cand_f.weight"),
                [h, y + h],
                Init::Uniform(bf),
            )?,
            cand_f_bias: tensors.param(format!("{prefix}.cand_f.bias"), [h], Init::Uniform(bf))?,
            rbn: Rbn::build(tensors, &format!("{prefix}.rbn"), steps, 4 * h, eps)?,
            out_bn: BatchNorm::build(tensors, &format!("{prefix}.out_bn"), h, eps)?,
            dims: [x, y, h],
        })
    }

    /// `x`: [B, T, X], `y`: [B, T, Y] -> (raw h [B, T, H], BN output [B, T, H]).
    pub fn forward(&self, x: Tensor<3>, y: Tensor<3>, mode: Mode) -> Tensor<3> {
        let [xd, yd, hd] = self.dims;
        let [b, t, _] = x.dims();
        let gw = self.gates_weight.val();
        let tw = self.cand_t_weight.val();
        let fw = self.cand_f_weight.val();
        // Input projections of every step at once: [x, y] for the gates, x for C~T, y for C~F.
        let xy = Tensor::cat(vec![x.clone(), y.clone()], 2);
        let pre_g = project(
            xy,
            gw.clone().narrow(1, 0, xd + yd).transpose(),
            self.gates_bias.val(),
        );
        let pre_t = project(
            x,
            tw.clone().narrow(1, 0, xd).transpose(),
            self.cand_t_bias.val(),
        );
        let pre_f = project(
            y,
            fw.clone().narrow(1, 0, yd).transpose(),
            self.cand_f_bias.val(),
        );
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
        let hs: Tensor<3> = match mode {
            Mode::Infer => {
                let (scale, shift) = self.rbn.affine_table();
                crate::recurrence::ds_lstm_recurrence(pre, w_h, scale, shift)
            }
            Mode::Train { momentum } => {
                let (hs, stats) = self.train_recurrence(pre, w_h);
                self.update_rbn_stats(stats, b, momentum);
                hs
            }
        };
        // The layer's output: BatchNorm1d over H, statistics over batch and time.
        self.out_bn
            .forward_rows(hs.reshape([b * t, hd]), mode, None)
            .reshape([b, t, hd])
    }

    /// The training recurrence: each step's gates normalised by that step's batch statistics
    /// (recurrent batch norm, paper §2.3.4). `pre` [B, T, 6H], `w_h` [H, 6H] → (h [B, T, H], the
    /// per-step means and biased variances of the gates [2, T, 4H], for the running statistics).
    /// `crate::ds_lstm_train`: on the CPU with training built in one operation with its own
    /// backward, elsewhere the step loop.
    fn train_recurrence(&self, pre: Tensor<3>, w_h: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
        let (gamma, beta, eps) = (self.rbn.weight.val(), self.rbn.bias.val(), self.rbn.eps);
        crate::ds_lstm_train::ds_lstm_train(pre, w_h, gamma, beta, eps)
    }

    /// Running statistics per step: rows `0..min(T, S)` move towards this batch's step statistics
    /// `stats` [2, T, 4H] (means and biased variances; the running variance takes the unbiased
    /// estimate over the batch, PyTorch's convention).
    fn update_rbn_stats(&self, stats: Tensor<3>, b: usize, momentum: f64) {
        let rm = self.rbn.running_mean.value_sync();
        let rv = self.rbn.running_var.value_sync();
        let [s, n] = rm.dims();
        let [_, t, _] = stats.dims();
        let k = t.min(s);
        if k == 0 {
            return;
        }
        let unbiased = if b > 1 {
            b as f64 / (b - 1) as f64
        } else {
            1.0
        };
        let stats = stats.detach().narrow(1, 0, k);
        let bm: Tensor<2> = stats.clone().narrow(0, 0, 1).reshape([k, n]);
        let bv: Tensor<2> = stats.narrow(0, 1, 1).reshape([k, n]).mul_scalar(unbiased);
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
        tensors: &mut Builder<'_>,
        prefix: &str,
        input: usize,
        classes: usize,
    ) -> Result<Self, ModelError> {
        let b = 1.0 / (input as f64).sqrt();
        Ok(Head {
            weight: tensors.param(
                format!("{prefix}.weight"),
                [classes, input],
                Init::Uniform(b),
            )?,
            bias: tensors.param(format!("{prefix}.bias"), [classes], Init::Uniform(b))?,
        })
    }

    pub fn forward(&self, p: Tensor<2>) -> Tensor<2> {
        let c = self.bias.dims()[0];
        p.matmul(self.weight.val().transpose()) + self.bias.val().reshape([1, c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, ModelKind};
    use burn::tensor::Distribution;
    use duet_dsp::Preset;

    /// conv -> BN -> max-pool -> ReLU, twice, with burn's own `conv2d` and `max_pool2d` in NCHW
    /// layout: an independent path to [`CnnBlock::forward`]. Train mode normalises with the
    /// batch's biased statistics and returns each BN's batch mean and variance.
    fn reference(cnn: &CnnBlock, image: Tensor<4>, train: bool) -> (Tensor<3>, Vec<Tensor<1>>) {
        let opts = ConvOptions::new([1, 1], cnn.padding, [1, 1], 1);
        let mut stats = Vec::new();
        let mut bn = |x: Tensor<4>, bn: &BatchNorm| {
            let c = bn.channels();
            let (mean, var) = if train {
                let rows = x.clone().permute([0, 2, 3, 1]).reshape([-1, c as i32]);
                let mean = rows.clone().mean_dim(0);
                let var = (rows - mean.clone()).powi_scalar(2).mean_dim(0);
                stats.push(mean.clone().reshape([c]));
                stats.push(var.clone().reshape([c]));
                (mean.reshape([c]), var.reshape([c]))
            } else {
                (bn.running_mean.value_sync(), bn.running_var.value_sync())
            };
            let scale = bn.weight.val() / (var + bn.eps).sqrt();
            let shift = bn.bias.val() - mean * scale.clone();
            x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
        };
        let pool = MaxPoolOptions::new([cnn.pool, cnn.pool]);
        let y = conv2d(
            image,
            cnn.conv0_weight.val(),
            Some(cnn.conv0_bias.val()),
            opts.clone(),
        );
        let y = relu(max_pool2d(bn(y, &cnn.bn0), pool.clone()));
        let y = conv2d(y, cnn.conv1_weight.val(), Some(cnn.conv1_bias.val()), opts);
        let y = relu(max_pool2d(bn(y, &cnn.bn1), pool));
        let [b, c, f, t] = y.dims();
        (y.permute([0, 3, 1, 2]).reshape([b, t, c * f]), stats)
    }

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar()
    }

    /// On every backend here (CPU; wgpu where an adapter exists), [`tanh`] is finite and within
    /// 1e-6 of f64's tanh at the extremes, and on the CPU bit for bit the plain f32 tanh.
    #[test]
    fn tanh_is_finite_and_exact_on_extreme_inputs() {
        let xs: [f32; 18] = [
            0.0, 1e-40, -1e-40, 1e-7, 0.5, -3.0, 9.5, 10.0, -10.0, 11.0, 88.0, 89.0, 100.0, -100.0,
            1e4, -1e4, 3e38, -3e38,
        ];
        for device in crate::backend::available_devices() {
            let backend = crate::backend::kind_of(&device);
            let y: Vec<f32> = tanh(Tensor::<1>::from_floats(xs, &device))
                .into_data()
                .try_to_vec()
                .unwrap();
            for (x, y) in xs.iter().zip(&y) {
                assert!(y.is_finite(), "{backend}: tanh({x}) = {y}");
                let want = (*x as f64).tanh();
                assert!(
                    (*y as f64 - want).abs() <= 1e-6,
                    "{backend}: tanh({x}) = {y}, not {want}"
                );
                if backend == "cpu" {
                    assert_eq!(y.to_bits(), x.tanh().to_bits(), "cpu: tanh({x})");
                }
            }
        }
    }

    #[test]
    fn cnn_block_matches_burn_conv2d_and_max_pool2d_in_both_modes() {
        let device = crate::backend::cpu_device();
        for preset in [Preset::Paper, Preset::Authors] {
            let config = ModelConfig::new(ModelKind::Base2, preset);
            let model = crate::weights::init(config, 3, &device).unwrap();
            let cnn = model.narrow.unwrap().cnn;
            // Odd sizes: the pooling floors, and the conv's padding columns (see `conv_rows`)
            // must not reach the output or the training statistics.
            let image =
                Tensor::<4>::random([3, 1, 21, 27], Distribution::Normal(-40.0, 12.0), &device);

            let (want, _) = reference(&cnn, image.clone(), false);
            let got = cnn.forward(image.clone(), Mode::Infer);
            assert!(max_diff(got, want.clone()) < 1e-4, "{preset:?} inference");
            // The GPU's formulation (burn's conv2d with each batch norm folded in), here on the CPU.
            let got = cnn.forward_gpu_infer(image.clone());
            assert!(max_diff(got, want) < 1e-4, "{preset:?} inference, GPU path");

            let (want, stats) = reference(&cnn, image.clone(), true);
            let got = cnn.forward(image, Mode::Train { momentum: 1.0 });
            assert!(max_diff(got, want) < 1e-4, "{preset:?} training");
            // Momentum 1: the running statistics are the batch's (variance unbiased).
            for (k, bn) in [&cnn.bn0, &cnn.bn1].into_iter().enumerate() {
                let m = max_diff(bn.running_mean.value_sync(), stats[2 * k].clone());
                assert!(m < 1e-3, "{preset:?} bn{k} running mean off by {m}");
                let v = bn.running_var.value_sync() / stats[2 * k + 1].clone();
                let n = v.clone().min().into_scalar::<f32>();
                let x = v.max().into_scalar::<f32>();
                assert!(
                    n > 1.0 && x < 1.1,
                    "{preset:?} bn{k} unbiased/biased var in {n}..{x}"
                );
            }
        }
    }
}
