//! The LSTM and DS-LSTM recurrences as one operation per layer (docs/weights.md §4.1, §4.4), so
//! that a GPU runs each as one dispatch instead of several per time step, and the CPU runs it without
//! a tensor per step.
//!
//! [`lstm_recurrence`] and [`ds_lstm_recurrence`] (inference) are the entry points. They take the
//! input projections of all steps (biases included) and the transposed recurrent weights (and the
//! DS-LSTM its recurrent batch norm as a per-step table), and return every step's hidden state:
//!
//! - **GPU** (wgpu: WebGPU in the page, Vulkan/Metal natively): one cubecl kernel for both cells,
//!   one workgroup per sequence, each invocation owning hidden units (all the pre-activations of
//!   each), the cell state and the previous hidden state in workgroup memory, one barrier per step.
//! - **CPU** (flex): per step one matrix product into a preallocated buffer, then one pass over the
//!   gates.
//! - **Training** (an autodiff input): the LSTM runs the same fused op, with its own backward
//!   ([`lstm_backward`]: one product rebuilds every step's pre-activations, a backward-through-time
//!   op — one kernel on the GPU, one product per step on the CPU — gives their gradient, one more
//!   product the recurrent weights'). The DS-LSTM trains through its own operation
//!   (`crate::ds_lstm_train`: its recurrent batch norm uses each step's batch statistics there).
//! - [`input_projection`]: the input projections of every step, bias included, as one product; on
//!   the CPU into a buffer that starts as the bias rows, where burn's product zero-fills its output
//!   and copies it once more and the bias was a pass of its own.
//! - [`lstm_recurrence_steps`] / [`ds_lstm_recurrence_steps`], the step loops of tensor operations
//!   whose gradient burn derives, are the reference the fused paths (and the LSTM's backward) are
//!   tested against.
//!
//! The backend extension is burn 0.22.1's `#[backend_extension]`: the trait is implemented for each
//! backend and the macro generates the routing of a dispatch tensor to the right implementation.

// The LSTM backward (`lstm_backward` and its per-backend kernels) serves training only.
#![cfg_attr(not(feature = "train"), allow(dead_code))]

use burn::backend::TensorMetadata;
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::sigmoid;

use crate::nn::{TANH_SATURATION, split_steps, tanh};

/// The fused recurrences, implemented by each backend (see the module documentation).
#[backend_extension(
    Cube,
    Flex,
    Fusion: cfg(not(target_family = "wasm")),
    Autodiff: cfg(feature = "train")
)]
pub trait RecurrenceOps: Backend {
    /// `pre` [B, T, 4H] (gates `i, f, g, o`, both biases added), `w_hh_t` [H, 4H] → h [B, T, H],
    /// from a zero initial state.
    #[fusion(dtype = pre, shape = output_shape(pre, w_hh_t))]
    fn lstm_recurrence(pre: FloatTensor<Self>, w_hh_t: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The DS-LSTM in inference: `pre` [B, T, 6H] (the input parts of gates `f, iT, iF, o` and of
    /// the candidates `C~T, C~F`, biases added), `w_h_t` [H, 6H], and the recurrent batch norm as
    /// per-step `scale`, `shift` [S, 4H] (a step t ≥ S uses row S − 1) → h [B, T, H].
    #[fusion(dtype = pre, shape = output_shape(pre, w_h_t))]
    fn ds_lstm_recurrence(
        pre: FloatTensor<Self>,
        w_h_t: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `x` [N, I] · `w_t` [I, O] + `bias` [O] → [N, O]: a recurrence's input projections of every
    /// step at once (N = B·T rows). On the CPU one product into a buffer that starts as the bias
    /// rows; burn's product zero-fills its output and copies it once more, and the bias was a
    /// pass of its own. Under autodiff with a tracked input it is that composition, whose parts
    /// have their backward.
    #[fusion(default)]
    fn input_projection(
        x: FloatTensor<Self>,
        w_t: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        input_projection_of::<Self>(x, w_t, bias)
    }

    /// The LSTM's backward through time: `z` [B, T, 4H] every step's full pre-activations (`pre`
    /// plus h_{t−1}·W), `w_hh_t` [H, 4H], `grad` [B, T, H] the loss's gradient with respect to
    /// every h → the gradient with respect to `z` [B, T, 4H] (which is also `pre`'s; the recurrent
    /// weights' is one product of it with the hidden states, see [`lstm_backward`]).
    #[fusion(dtype = z, shape = z)]
    fn lstm_recurrence_backward(
        z: FloatTensor<Self>,
        w_hh_t: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The default body of [`RecurrenceOps::input_projection`]: the product, then the bias added.
fn input_projection_of<B: Backend>(
    x: FloatTensor<B>,
    w_t: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let o = w_t.shape().dims::<2>()[1];
    B::float_add(
        B::float_matmul(x, w_t),
        B::float_reshape(bias, Shape::new([1, o])),
    )
}

/// [`RecurrenceOps::input_projection`] on tensors: `x` [N, I], `w_t` [I, O], `bias` [O] → [N, O].
pub fn input_projection(x: Tensor<2>, w_t: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    let out = <burn::backend::Dispatch as RecurrenceOps>::input_projection(
        x.into_dispatch(),
        w_t.into_dispatch(),
        bias.into_dispatch(),
    );
    Tensor::from_dispatch(out)
}

/// The shape of the recurrences' output: [B, T, H] (H from the recurrent weights' rows), for
/// fusion (native builds only).
#[cfg(not(target_family = "wasm"))]
fn output_shape(pre: &burn::tensor::Shape, w_t: &burn::tensor::Shape) -> burn::tensor::Shape {
    burn::tensor::Shape::new([pre[0], pre[1], w_t[0]])
}

static STEP_LOOP_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every recurrence of this process run as the step loop (`true`) or fused where it
/// applies (`false`, the default): how the benchmarks measure the fused op against what it
/// replaced, in one run.
pub fn set_step_loop_only(step_loop_only: bool) {
    STEP_LOOP_ONLY.store(step_loop_only, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_step_loop_only`] asked for the step loops.
pub(crate) fn step_loop_only() -> bool {
    STEP_LOOP_ONLY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the fused implementations apply: f32, a non-empty input, and a hidden size whose state
/// fits the GPU kernels' workgroup memory (the same rule on every backend, so results do not depend
/// on it). An input on an autodiff device (training) takes the fused path only where it has a
/// backward (`differentiable`: the LSTM, in builds with training) and the backward kernel's state
/// fits too; otherwise burn differentiates the step loop.
fn fused(pre: &Tensor<3>, w_t: &Tensor<2>, differentiable: bool) -> bool {
    let [b, t, _] = pre.dims();
    let training = pre.is_autodiff() || w_t.is_autodiff();
    let hd = w_t.dims()[0];
    !step_loop_only()
        && (!training
            || (differentiable && cfg!(feature = "train") && hd <= gpu::MAX_HIDDEN_BACKWARD))
        && pre.dtype() == DType::F32
        && b > 0
        && t > 0
        && hd <= gpu::MAX_HIDDEN
}

/// Every step's hidden state of an LSTM layer with zero initial state: `pre` [B, T, 4H] holds the
/// input projections and both biases (gates `i, f, g, o`, docs/weights.md §4.1), `w_hh_t` [H, 4H]
/// the transposed recurrent weights. Returns h [B, T, H].
///
/// Runs fused on the CPU and GPU backends, in inference and in training (where its backward is
/// [`RecurrenceOps::lstm_recurrence_backward`]); as [`lstm_recurrence_steps`] for a dtype other
/// than f32 or a hidden size past the kernels' limits.
pub fn lstm_recurrence(pre: Tensor<3>, w_hh_t: Tensor<2>) -> Tensor<3> {
    if !fused(&pre, &w_hh_t, true) {
        return lstm_recurrence_steps(pre, w_hh_t);
    }
    let h4 = pre.dims()[2];
    debug_assert_eq!(w_hh_t.dims(), [h4 / 4, h4]);
    let out = <burn::backend::Dispatch as RecurrenceOps>::lstm_recurrence(
        pre.into_dispatch(),
        w_hh_t.into_dispatch(),
    );
    Tensor::from_dispatch(out)
}

/// [`lstm_recurrence`] as a loop of tensor operations over the steps: the training path (burn derives
/// its gradient) and the reference for the fused implementations.
pub fn lstm_recurrence_steps(pre: Tensor<3>, w_hh_t: Tensor<2>) -> Tensor<3> {
    let [b, t, h4] = pre.dims();
    let hd = h4 / 4;
    let device = pre.device();
    if t == 0 {
        return Tensor::zeros([b, 0, hd], &device);
    }
    let mut h = Tensor::<2>::zeros([b, hd], &device);
    let mut c = Tensor::<2>::zeros([b, hd], &device);
    let mut outs = Vec::with_capacity(t);
    for step in split_steps(pre) {
        let z = step + h.matmul(w_hh_t.clone());
        let s = sigmoid(z.clone());
        let i = s.clone().narrow(1, 0, hd);
        let f = s.clone().narrow(1, hd, hd);
        let o = s.narrow(1, 3 * hd, hd);
        let g = tanh(z.narrow(1, 2 * hd, hd));
        c = f * c + i * g;
        h = o * tanh(c.clone());
        outs.push(h.clone());
    }
    Tensor::stack(outs, 1)
}

/// Every step's hidden state of a DS-LSTM layer in inference (paper §2.3.4, equations (1)-(8);
/// docs/weights.md §4.4), zero initial state. `pre` [B, T, 6H]: the input parts and biases of the
/// gates `f, iT, iF, o` and the candidates `C~T, C~F`; `w_h_t` [H, 6H]: their recurrent parts;
/// `scale`, `shift` [S, 4H]: the recurrent batch norm of step t (row min(t, S − 1)) as an affine
/// map of the sigmoid gates. Returns h [B, T, H].
pub fn ds_lstm_recurrence(
    pre: Tensor<3>,
    w_h_t: Tensor<2>,
    scale: Tensor<2>,
    shift: Tensor<2>,
) -> Tensor<3> {
    if !fused(&pre, &w_h_t, false) {
        return ds_lstm_recurrence_steps(pre, w_h_t, scale, shift);
    }
    let out = <burn::backend::Dispatch as RecurrenceOps>::ds_lstm_recurrence(
        pre.into_dispatch(),
        w_h_t.into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
    );
    Tensor::from_dispatch(out)
}

/// [`ds_lstm_recurrence`] as a loop of tensor operations: the fallback and the fused paths'
/// reference.
pub fn ds_lstm_recurrence_steps(
    pre: Tensor<3>,
    w_h_t: Tensor<2>,
    scale: Tensor<2>,
    shift: Tensor<2>,
) -> Tensor<3> {
    let [b, t, h6] = pre.dims();
    let hd = h6 / 6;
    let device = pre.device();
    if t == 0 {
        return Tensor::zeros([b, 0, hd], &device);
    }
    let rows = scale.dims()[0];
    let scales = scale.chunk(rows, 0);
    let shifts = shift.chunk(rows, 0);
    let mut h = Tensor::<2>::zeros([b, hd], &device);
    let mut c = Tensor::<2>::zeros([b, hd], &device);
    let mut outs = Vec::with_capacity(t);
    for (step, p) in split_steps(pre).into_iter().enumerate() {
        let z = p + h.matmul(w_h_t.clone());
        let r = step.min(rows - 1);
        let g = sigmoid(z.clone().narrow(1, 0, 4 * hd)) * scales[r].clone() + shifts[r].clone();
        (c, h) = ds_lstm_cell(z, g, c);
        outs.push(h.clone());
    }
    Tensor::stack(outs, 1)
}

/// Equations (5)-(8) of paper §2.3.4 for one step: `z` [B, 6H] the pre-activations, `g` [B, 4H] the
/// normalised gates `f, iT, iF, o`, `c` the previous cell state → (c, h).
pub fn ds_lstm_cell(z: Tensor<2>, g: Tensor<2>, c: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let hd = c.dims()[1];
    let f = g.clone().narrow(1, 0, hd);
    let i_t = g.clone().narrow(1, hd, hd);
    let i_f = g.clone().narrow(1, 2 * hd, hd);
    let o = g.narrow(1, 3 * hd, hd);
    let ct = tanh(z.clone().narrow(1, 4 * hd, hd));
    let cf = tanh(z.narrow(1, 5 * hd, hd));
    let c = f * c + i_t * ct + i_f * cf;
    let h = o * tanh(c.clone());
    (c, h)
}

/// e^x without libm, accurate to about 2 ulp over the clamped range, and branch-free so that loops
/// over slices vectorise (SSE2 natively, simd128 in the page's wasm build).
///
/// x is clamped to [−87, 88], where e^x stays a normal f32; x = n·ln 2 + r with n rounded to the
/// nearest integer (|r| ≤ ln 2 / 2), ln 2 split in two parts so that r is exact (Cody and Waite);
/// e^r by its Taylor series to r⁷ (the remainder, r⁸/8! < 2·10⁻⁹, is below f32's resolution);
/// 2ⁿ built in the exponent bits.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let exponent = (shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32;
    p * f32::from_bits(exponent << 23)
}

/// The logistic function 1 / (1 + e^(−x)), finite for every finite input, within 1e-6 of the exact
/// value (tested): [`exp_f32`] is clamped, so e^(−x) never overflows.
#[inline(always)]
pub(crate) fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh` clamped as [`crate::nn::tanh`], within 1e-6 of the exact value (tested): with
/// e = e^(−2|x|) ∈ (0, 1], tanh|x| = (1 − e) / (1 + e), the sign copied from x.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let s = TANH_SATURATION as f32;
    let e = exp_f32(-2.0 * x.abs().clamp(0.0, s));
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// The gradients of [`lstm_recurrence`] with respect to `pre` and `w_hh_t`, given its output `h`
/// [B, T, H] and the gradient `grad` of the loss with respect to `h`. The full pre-activations are
/// rebuilt with one product over all steps ([`rebuild_pre_activations`]), the sequential part runs
/// as [`RecurrenceOps::lstm_recurrence_backward`], and the recurrent weights' gradient is one more
/// product over all steps ([`recurrent_weight_grad`]).
#[cfg(feature = "train")]
pub fn lstm_backward<B: RecurrenceOps>(
    pre: FloatTensor<B>,
    w_hh_t: FloatTensor<B>,
    h: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (z, h_prev) = rebuild_pre_activations::<B>(pre, w_hh_t.clone(), h);
    let dz = B::lstm_recurrence_backward(z, w_hh_t.clone(), grad);
    let dw = recurrent_weight_grad::<B>(&dz, h_prev, w_hh_t);
    (dz, dw)
}

/// A recurrence's full pre-activations z_t = pre_t + h_{t−1}·W (h_{−1} = 0) from `pre` [B, T, K],
/// `w_t` [H, K] and every step's output `h` [B, T, H], as one product over all steps; with the
/// previous states h_{t−1} of steps 1.. as rows [B·(T − 1), H] (`None` for one step), which the
/// recurrent weights' gradient needs.
#[cfg(feature = "train")]
pub(crate) fn rebuild_pre_activations<B: Backend>(
    pre: FloatTensor<B>,
    w_t: FloatTensor<B>,
    h: FloatTensor<B>,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    use burn::backend::Slice;
    let [b, t, k] = pre.shape().dims::<3>();
    let hd = w_t.shape().dims::<2>()[0];
    if t < 2 {
        return (pre, None);
    }
    let h_prev = B::float_reshape(
        B::float_slice(
            h,
            &[Slice::from(0..b), Slice::from(0..t - 1), Slice::from(0..hd)],
        ),
        burn::tensor::Shape::new([b * (t - 1), hd]),
    );
    let first = B::float_slice(
        pre.clone(),
        &[Slice::from(0..b), Slice::from(0..1), Slice::from(0..k)],
    );
    let rest = B::float_slice(
        pre,
        &[Slice::from(0..b), Slice::from(1..t), Slice::from(0..k)],
    );
    let rec = B::float_reshape(
        B::float_matmul(h_prev.clone(), w_t),
        burn::tensor::Shape::new([b, t - 1, k]),
    );
    (
        B::float_cat(vec![first, B::float_add(rest, rec)], 1),
        Some(h_prev),
    )
}

/// The recurrent weights' gradient Σ_t h_{t−1}ᵀ·dz_t [H, K] as one product over steps 1.., from
/// the pre-activations' gradient `dz` [B, T, K] and the previous states of
/// [`rebuild_pre_activations`]; zero for one step (h_{−1} = 0: the weights have no influence).
#[cfg(feature = "train")]
pub(crate) fn recurrent_weight_grad<B: Backend>(
    dz: &FloatTensor<B>,
    h_prev: Option<FloatTensor<B>>,
    w_t: FloatTensor<B>,
) -> FloatTensor<B> {
    use burn::backend::Slice;
    let Some(h_prev) = h_prev else {
        return B::float_mul_scalar(w_t, 0f32.into());
    };
    let [b, t, k] = dz.shape().dims::<3>();
    let dz_rest = B::float_slice(
        dz.clone(),
        &[Slice::from(0..b), Slice::from(1..t), Slice::from(0..k)],
    );
    B::float_matmul(
        B::float_transpose(h_prev),
        B::float_reshape(dz_rest, burn::tensor::Shape::new([b * (t - 1), k])),
    )
}

/// Training through the fused LSTM: burn's autodiff wrapper records [`lstm_backward`] as the
/// operation's backward.
#[cfg(feature = "train")]
mod autodiff {
    use super::{RecurrenceOps, lstm_backward};
    use burn::backend::Backend;
    use burn::backend::autodiff::{
        Autodiff,
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    };
    use burn::backend::tensor::FloatTensor;

    #[derive(Debug)]
    struct LstmRecurrenceBackward;

    /// The operations differentiated elsewhere: reached only if an input were tracked, which the
    /// entry points rule out (an unnoticed zero gradient would be worse than the message).
    #[derive(Debug)]
    struct NoBackward(&'static str);

    impl<B: Backend, const N: usize> Backward<B, N> for NoBackward {
        type State = ();

        fn backward(self, _: Ops<(), N>, _: &mut Gradients, _: &mut Checkpointer) {
            panic!(
                "{} has no backward: it is not meant to be differentiated",
                self.0
            );
        }
    }

    impl<B: Backend + RecurrenceOps> Backward<B, 2> for LstmRecurrenceBackward {
        /// `pre`, `w_hh_t` and the output h.
        type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_pre, node_w] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (pre, w, h) = ops.state;
            let (d_pre, d_w) = lstm_backward::<B>(pre, w, h, grad);
            if let Some(node) = node_pre {
                grads.register::<B>(node.id, d_pre);
            }
            if let Some(node) = node_w {
                grads.register::<B>(node.id, d_w);
            }
        }
    }

    impl<B: Backend + RecurrenceOps, C: CheckpointStrategy> RecurrenceOps for Autodiff<B, C> {
        fn lstm_recurrence(pre: FloatTensor<Self>, w_hh_t: FloatTensor<Self>) -> FloatTensor<Self> {
            match LstmRecurrenceBackward
                .prepare::<C>([pre.node(), w_hh_t.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (pre, w) = (pre.primitive().clone(), w_hh_t.primitive().clone());
                    let h = B::lstm_recurrence(pre.clone(), w.clone());
                    prep.finish((pre, w, h.clone()), h)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::lstm_recurrence(
                    pre.into_primitive(),
                    w_hh_t.into_primitive(),
                )),
            }
        }

        /// Without a backward: [`super::ds_lstm_recurrence`] sends autodiff inputs to its step
        /// loop, so this runs for untracked inputs only.
        fn ds_lstm_recurrence(
            pre: FloatTensor<Self>,
            w_h_t: FloatTensor<Self>,
            scale: FloatTensor<Self>,
            shift: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            NoBackward("the fused DS-LSTM")
                .prepare::<C>([pre.node(), w_h_t.node(), scale.node(), shift.node()])
                .compute_bound()
                .stateless(B::ds_lstm_recurrence(
                    pre.into_primitive(),
                    w_h_t.into_primitive(),
                    scale.into_primitive(),
                    shift.into_primitive(),
                ))
        }

        /// The inner backend's operation where nothing is tracked (inference); otherwise the
        /// composition, whose parts have their backward.
        fn input_projection(
            x: FloatTensor<Self>,
            w_t: FloatTensor<Self>,
            bias: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            if x.is_tracked() || w_t.is_tracked() || bias.is_tracked() {
                return super::input_projection_of::<Self>(x, w_t, bias);
            }
            <FloatTensor<Self>>::new(B::input_projection(
                x.into_primitive(),
                w_t.into_primitive(),
                bias.into_primitive(),
            ))
        }

        /// Without a backward (no second derivatives are taken).
        fn lstm_recurrence_backward(
            z: FloatTensor<Self>,
            w_hh_t: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            NoBackward("the LSTM's backward")
                .prepare::<C>([z.node(), w_hh_t.node(), grad.node()])
                .compute_bound()
                .stateless(B::lstm_recurrence_backward(
                    z.into_primitive(),
                    w_hh_t.into_primitive(),
                    grad.into_primitive(),
                ))
        }
    }
}

pub(crate) mod cpu {
    use super::{RecurrenceOps, TensorMetadata, sigmoid_f32, tanh_f32};
    use burn::tensor::{DType, TensorData};
    use burn_flex::{Flex, FlexTensor};
    use duet_dsp::simd::Isa;

    impl RecurrenceOps for Flex {
        fn lstm_recurrence(pre: FlexTensor, w_hh_t: FlexTensor) -> FlexTensor {
            run(Cell::Lstm, pre, w_hh_t)
        }

        fn input_projection(x: FlexTensor, w_t: FlexTensor, bias: FlexTensor) -> FlexTensor {
            if [&x, &w_t, &bias].iter().any(|t| t.dtype() != DType::F32) {
                return super::input_projection_of::<Flex>(x, w_t, bias);
            }
            let [n, i] = x.shape().dims::<2>();
            let o = w_t.shape().dims::<2>()[1];
            let (x, w_t, bias) = (contiguous(x), contiguous(w_t), contiguous(bias));
            let bias = bias.storage::<f32>();
            let mut out = Vec::with_capacity(n * o);
            for _ in 0..n {
                out.extend_from_slice(bias);
            }
            product(
                (n, o, i),
                (&mut out, o),
                (x.storage::<f32>(), 0, i),
                (w_t.storage::<f32>(), 1, o),
                true,
            );
            FlexTensor::from_data(TensorData::new(out, [n, o]))
        }

        fn ds_lstm_recurrence(
            pre: FlexTensor,
            w_h_t: FlexTensor,
            scale: FlexTensor,
            shift: FlexTensor,
        ) -> FlexTensor {
            let rows = scale.shape().dims::<2>()[0];
            let (scale, shift) = (contiguous(scale), contiguous(shift));
            let cell = Cell::Ds {
                scale: scale.storage::<f32>(),
                shift: shift.storage::<f32>(),
                rows,
            };
            run(cell, pre, w_h_t)
        }

        fn lstm_recurrence_backward(
            z: FlexTensor,
            w_hh_t: FlexTensor,
            grad: FlexTensor,
        ) -> FlexTensor {
            let [b, t, width] = z.shape().dims::<3>();
            let hd = width / 4;
            let (z, w, grad) = (contiguous(z), contiguous(w_hh_t), contiguous(grad));
            let mut dz = vec![0f32; b * t * width];
            lstm_backward_cpu(
                z.storage::<f32>(),
                w.storage::<f32>(),
                grad.storage::<f32>(),
                &mut dz,
                b,
                t,
                hd,
            );
            FlexTensor::from_data(TensorData::new(dz, [b, t, width]))
        }
    }

    /// dst[m, n] += lhs[m, k] · rhs[k, n] for strided matrices read in place, no allocation: `dst`
    /// with row stride `dst_rs`, `lhs` from `offset` with row stride `lhs_rs`, `rhs` with
    /// column stride `rhs_cs` (along n) and row stride `rhs_rs` (along k); all columns of `dst` and
    /// `lhs` contiguous. Panics if a matrix does not lie inside its slice.
    pub(crate) fn add_product(
        dims: (usize, usize, usize),
        dst: (&mut [f32], usize),
        lhs: (&[f32], usize, usize),
        rhs: (&[f32], usize, usize),
    ) {
        product(dims, dst, lhs, rhs, true);
    }

    /// dst[m, n] += lhsᵀ[m, k] · rhs[k, n], where `lhs` holds the transposed matrix row-major from
    /// `offset` ([k, m], row stride `lhs_rs` ≥ m), read in place; otherwise as [`add_product`].
    pub(crate) fn product_t(
        dims: (usize, usize, usize),
        dst: (&mut [f32], usize),
        (lhs, offset, lhs_rs): (&[f32], usize, usize),
        rhs: (&[f32], usize, usize),
    ) {
        gemm_f32(dims, dst, (lhs, offset, 1, lhs_rs), rhs, true);
    }

    /// [`add_product`] with `accumulate` false: dst[m, n] = lhs[m, k] · rhs[k, n] (what `dst` held
    /// is neither read nor kept).
    pub(crate) fn product(
        dims: (usize, usize, usize),
        dst: (&mut [f32], usize),
        (lhs, offset, lhs_rs): (&[f32], usize, usize),
        rhs: (&[f32], usize, usize),
        accumulate: bool,
    ) {
        gemm_f32(dims, dst, (lhs, offset, lhs_rs, 1), rhs, accumulate);
    }

    /// dst[m, n] (+)= lhs[m, k] · rhs[k, n] on strided matrices in slices: `lhs` from `offset` with
    /// row stride `lhs_rs` (along m) and column stride `lhs_cs` (along k), the others as in
    /// [`add_product`]. Panics if a matrix does not lie inside its slice.
    fn gemm_f32(
        (m, n, k): (usize, usize, usize),
        (dst, dst_rs): (&mut [f32], usize),
        (lhs, offset, lhs_rs, lhs_cs): (&[f32], usize, usize, usize),
        (rhs, rhs_cs, rhs_rs): (&[f32], usize, usize),
        accumulate: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                for row in 0..m {
                    dst[row * dst_rs..row * dst_rs + n].fill(0.0);
                }
            }
            return;
        }
        assert!(
            (m - 1) * dst_rs + n <= dst.len(),
            "gemm_f32: dst out of bounds"
        );
        assert!(
            offset + (m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len(),
            "gemm_f32: lhs out of bounds"
        );
        assert!(
            (n - 1) * rhs_cs + (k - 1) * rhs_rs < rhs.len(),
            "gemm_f32: rhs out of bounds"
        );
        // SAFETY: the asserts keep every element read or written inside its slice, and `dst` is a
        // unique borrow, so it aliases neither operand.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                dst_rs as isize,
                accumulate,
                lhs.as_ptr().add(offset),
                lhs_cs as isize,
                lhs_rs as isize,
                rhs.as_ptr(),
                rhs_cs as isize,
                rhs_rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    /// The derivative of [`tanh_f32`] at `x`, given y = tanh_f32(x): 1 − y² inside the clamp, 0
    /// outside (where the clamp holds it constant).
    #[inline(always)]
    pub(crate) fn tanh_grad_f32(x: f32, y: f32) -> f32 {
        if x.abs() <= crate::nn::TANH_SATURATION as f32 {
            1.0 - y * y
        } else {
            0.0
        }
    }

    /// `fn NAME(ARGS) => BODY` defines NAME to run BODY (an `#[inline(always)]` function of the
    /// same arguments) compiled for AVX-512, for AVX2 with FMA and for the baseline, whichever is
    /// the widest the CPU has ([`Isa::detect`]).
    macro_rules! by_isa {
        ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
            $(#[$meta])*
            $vis fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match Isa::detect() {
                    // SAFETY: `Isa::detect` chose these only where the CPU has every feature
                    // they are compiled for.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512($($arg),*) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2($($arg),*) },
                    _ => $body($($arg),*),
                }
            }
        };
    }
    // For `crate::ds_lstm_train`, which builds with training only.
    #[cfg(feature = "train")]
    pub(crate) use by_isa;

    by_isa! {
        /// [`RecurrenceOps::lstm_recurrence_backward`] on f32 slices: `z` [B, T, 4H], `w` [H, 4H],
        /// `grad` [B, T, H] → `dz` [B, T, 4H] (written). The cell states are rebuilt first (a pass
        /// of gate arithmetic, no products); then from the last step back, per step one product
        /// dz_{t+1}·Wᵀ for the recurrent part of dh_t and one pass over the gates.
        ///
        /// Compiled for AVX-512, for AVX2 and for the baseline; the widest the CPU has runs (the
        /// gate functions are arithmetic that vectorises, four lanes wide on SSE2, sixteen on
        /// AVX-512).
        pub(super) fn lstm_backward_cpu(
            z: &[f32],
            w: &[f32],
            grad: &[f32],
            dz: &mut [f32],
            b: usize,
            t: usize,
            hd: usize,
        ) => lstm_backward_body
    }

    /// The body of [`lstm_backward_cpu`], inlined into each compilation.
    #[inline(always)]
    fn lstm_backward_body(
        z: &[f32],
        w: &[f32],
        grad: &[f32],
        dz: &mut [f32],
        b: usize,
        t: usize,
        hd: usize,
    ) {
        let width = 4 * hd;
        assert_eq!(z.len(), b * t * width);
        assert_eq!(w.len(), hd * width);
        assert_eq!(grad.len(), b * t * hd);
        assert_eq!(dz.len(), z.len());
        // The gate loops run over slices cut to H first, so that the bounds checks leave the loop.
        let zeros = vec![0f32; hd];
        fn quarters(row: &[f32], hd: usize) -> [&[f32]; 4] {
            let (i, rest) = row.split_at(hd);
            let (f, rest) = rest.split_at(hd);
            let (g, o) = rest.split_at(hd);
            [i, f, g, &o[..hd]]
        }
        let mut cells = vec![0f32; b * t * hd];
        for s in 0..b {
            for step in 0..t {
                let [zi, zf, zg, _] = quarters(&z[(s * t + step) * width..][..width], hd);
                let at = (s * t + step) * hd;
                let (done, rest) = cells.split_at_mut(at);
                let prev = if step > 0 {
                    &done[at - hd..]
                } else {
                    &zeros[..]
                };
                let (prev, cur) = (&prev[..hd], &mut rest[..hd]);
                for j in 0..hd {
                    cur[j] = sigmoid_f32(zf[j]) * prev[j] + sigmoid_f32(zi[j]) * tanh_f32(zg[j]);
                }
            }
        }
        // dh_t, then the cell's gradient carried to the step before (dc_t · f_t).
        let mut dh = vec![0f32; b * hd];
        let mut carry = vec![0f32; b * hd];
        for step in (0..t).rev() {
            step_output_grad(&mut dh, grad, dz, w, step, [b, t, hd]);
            for s in 0..b {
                let r = (s * t + step) * width;
                let [zi, zf, zg, zo] = quarters(&z[r..r + width], hd);
                let (dzi, rest) = dz[r..r + width].split_at_mut(hd);
                let (dzf, rest) = rest.split_at_mut(hd);
                let (dzg, dzo) = rest.split_at_mut(hd);
                let at = (s * t + step) * hd;
                let c_now = &cells[at..at + hd];
                let c_prev = if step > 0 {
                    &cells[at - hd..at]
                } else {
                    &zeros[..]
                };
                let dh = &dh[s * hd..(s + 1) * hd];
                let carry = &mut carry[s * hd..(s + 1) * hd];
                lstm_gates_backward(
                    [zi, zf, zg, zo],
                    [c_now, c_prev],
                    dh,
                    carry,
                    dzi,
                    dzf,
                    dzg,
                    dzo,
                );
            }
        }
    }

    /// The pre-activations of step `step` of a forward recurrence: `z` [B, K] = its rows of `pre`
    /// [B, T, K] plus, after the first step, h_{t−1}[B, H] · W[H, K], with h_{t−1} read in place
    /// from the outputs `h` [B, T, H] written so far (row stride T·H). Copied into a compact
    /// buffer first: the step's product writing into `pre` itself (rows T·K apart) measured no
    /// faster (docs/performance.md).
    #[inline(always)]
    pub(crate) fn step_pre_activations(
        z: &mut [f32],
        pre: &[f32],
        h: &[f32],
        w: &[f32],
        step: usize,
        [b, t, hd]: [usize; 3],
    ) {
        let width = z.len() / b.max(1);
        for s in 0..b {
            let row = (s * t + step) * width;
            z[s * width..(s + 1) * width].copy_from_slice(&pre[row..row + width]);
        }
        if step > 0 && hd > 0 {
            add_product(
                (b, width, hd),
                (z, width),
                (h, (step - 1) * hd, t * hd),
                (w, 1, width),
            );
        }
    }

    /// The start of step `step` of a backward through time: `dh` [B, H] = the loss's gradient
    /// with respect to h_t (from `grad` [B, T, H]) plus, before the last step, the recurrent part
    /// dz_{t+1}[B, K] · Wᵀ[K, H], with `dz` [B, T, K] read in place (row stride T·K) and Wᵀ as
    /// `w` [H, K] with its strides swapped.
    #[inline(always)]
    pub(crate) fn step_output_grad(
        dh: &mut [f32],
        grad: &[f32],
        dz: &[f32],
        w: &[f32],
        step: usize,
        [b, t, hd]: [usize; 3],
    ) {
        for s in 0..b {
            dh[s * hd..(s + 1) * hd].copy_from_slice(&grad[(s * t + step) * hd..][..hd]);
        }
        if step + 1 < t && hd > 0 {
            let width = w.len() / hd;
            add_product(
                (b, hd, width),
                (dh, hd),
                (dz, (step + 1) * width, t * width),
                (w, width, 1),
            );
        }
    }

    /// One row of the LSTM backward's gate pass (H units): the cell's gradient `carry` (dc_{t+1}
    /// · f_{t+1} in, dc_t · f_t out) and the pre-activations' gradients `dz*`, from the
    /// pre-activations `z` = [i, f, g, o], the cells `c` = [c_t, c_{t−1}] and dh_t.
    ///
    /// A function of its own so that each output is a distinct `&mut` argument (which stays
    /// known when it is inlined): written through slices of one buffer inside the caller, LLVM
    /// could not prove the outputs apart and kept the loop scalar (`perf annotate`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn lstm_gates_backward(
        [zi, zf, zg, zo]: [&[f32]; 4],
        [c_now, c_prev]: [&[f32]; 2],
        dh: &[f32],
        carry: &mut [f32],
        dzi: &mut [f32],
        dzf: &mut [f32],
        dzg: &mut [f32],
        dzo: &mut [f32],
    ) {
        let hd = carry.len();
        let (zi, zf, zg, zo) = (&zi[..hd], &zf[..hd], &zg[..hd], &zo[..hd]);
        let (c_now, c_prev, dh) = (&c_now[..hd], &c_prev[..hd], &dh[..hd]);
        let (dzi, dzf, dzg, dzo) = (
            &mut dzi[..hd],
            &mut dzf[..hd],
            &mut dzg[..hd],
            &mut dzo[..hd],
        );
        for j in 0..hd {
            let (i, f, g, o) = (
                sigmoid_f32(zi[j]),
                sigmoid_f32(zf[j]),
                tanh_f32(zg[j]),
                sigmoid_f32(zo[j]),
            );
            let c = c_now[j];
            let tc = tanh_f32(c);
            let dc = dh[j] * o * tanh_grad_f32(c, tc) + carry[j];
            carry[j] = dc * f;
            dzi[j] = dc * g * i * (1.0 - i);
            dzf[j] = dc * c_prev[j] * f * (1.0 - f);
            dzg[j] = dc * i * tanh_grad_f32(zg[j], g);
            dzo[j] = dh[j] * tc * o * (1.0 - o);
        }
    }

    /// Which cell's gate pass follows each step's matrix product.
    #[derive(Clone, Copy)]
    pub(super) enum Cell<'a> {
        /// Gates `i, f, g, o` (docs/weights.md §4.1).
        Lstm,
        /// Gates `f, iT, iF, o`, candidates `C~T, C~F`, recurrent batch norm rows `scale`, `shift`
        /// [rows, 4H] (paper §2.3.4).
        Ds {
            scale: &'a [f32],
            shift: &'a [f32],
            rows: usize,
        },
    }

    impl Cell<'_> {
        /// Pre-activations per hidden unit: 4 for the LSTM, 6 for the DS-LSTM.
        fn blocks(&self) -> usize {
            match self {
                Cell::Lstm => 4,
                Cell::Ds { .. } => 6,
            }
        }
    }

    fn run(cell: Cell, pre: FlexTensor, w_t: FlexTensor) -> FlexTensor {
        let [b, t, width] = pre.shape().dims::<3>();
        let hd = width / cell.blocks();
        let pre = contiguous(pre);
        let w = contiguous(w_t);
        let mut out = vec![0f32; b * t * hd];
        recurrence_cpu(
            cell,
            pre.storage::<f32>(),
            w.storage::<f32>(),
            &mut out,
            b,
            t,
            hd,
        );
        FlexTensor::from_data(TensorData::new(out, [b, t, hd]))
    }

    /// `x` itself when its storage is already row-major from the start, else a row-major copy:
    /// what the CPU kernels that read raw storage need.
    pub(crate) fn contiguous(x: FlexTensor) -> FlexTensor {
        if x.is_contiguous() && x.layout().start_offset() == 0 {
            x
        } else {
            x.to_contiguous()
        }
    }

    by_isa! {
        /// The recurrence on f32 slices: `pre` [B, T, kH], `w` [H, kH] (k = [`Cell::blocks`]),
        /// `out` [B, T, H] (written).
        ///
        /// Compiled for AVX-512, for AVX2 and for the baseline, as [`lstm_backward_cpu`].
        pub(super) fn recurrence_cpu(
            cell: Cell,
            pre: &[f32],
            w: &[f32],
            out: &mut [f32],
            b: usize,
            t: usize,
            hd: usize,
        ) => recurrence_body
    }

    /// The body of [`recurrence_cpu`], inlined into each compilation.
    #[inline(always)]
    fn recurrence_body(
        cell: Cell,
        pre: &[f32],
        w: &[f32],
        out: &mut [f32],
        b: usize,
        t: usize,
        hd: usize,
    ) {
        let width = cell.blocks() * hd;
        assert_eq!(pre.len(), b * t * width);
        assert_eq!(w.len(), hd * width);
        assert_eq!(out.len(), b * t * hd);
        if let Cell::Ds { scale, shift, rows } = cell {
            assert!(rows > 0 && scale.len() == rows * 4 * hd && shift.len() == scale.len());
        }
        let mut z = vec![0f32; b * width];
        let mut c = vec![0f32; b * hd];
        for step in 0..t {
            step_pre_activations(&mut z, pre, out, w, step, [b, t, hd]);
            for s in 0..b {
                let zs = &z[s * width..(s + 1) * width];
                let cs = &mut c[s * hd..(s + 1) * hd];
                let o0 = (s * t + step) * hd;
                let hs = &mut out[o0..o0 + hd];
                // Every operand sliced to exactly H elements, so that the loops run without
                // bounds checks and vectorise.
                let block = |k: usize| &zs[k * hd..][..hd];
                match cell {
                    Cell::Lstm => {
                        let (zi, zf, zg, zo) = (block(0), block(1), block(2), block(3));
                        for j in 0..hd {
                            let c =
                                sigmoid_f32(zf[j]) * cs[j] + sigmoid_f32(zi[j]) * tanh_f32(zg[j]);
                            cs[j] = c;
                            hs[j] = sigmoid_f32(zo[j]) * tanh_f32(c);
                        }
                    }
                    Cell::Ds { scale, shift, rows } => {
                        let r = step.min(rows - 1) * 4 * hd;
                        let table =
                            |k: usize| (&scale[r + k * hd..][..hd], &shift[r + k * hd..][..hd]);
                        let (zf, zit, zif, zo) = (block(0), block(1), block(2), block(3));
                        let (zct, zcf) = (block(4), block(5));
                        let ((af, bf), (ait, bit)) = (table(0), table(1));
                        let ((aif, bif), (ao, bo)) = (table(2), table(3));
                        for j in 0..hd {
                            let f = sigmoid_f32(zf[j]) * af[j] + bf[j];
                            let i_t = sigmoid_f32(zit[j]) * ait[j] + bit[j];
                            let i_f = sigmoid_f32(zif[j]) * aif[j] + bif[j];
                            let o = sigmoid_f32(zo[j]) * ao[j] + bo[j];
                            let c = f * cs[j] + i_t * tanh_f32(zct[j]) + i_f * tanh_f32(zcf[j]);
                            cs[j] = c;
                            hs[j] = o * tanh_f32(c);
                        }
                    }
                }
            }
        }
    }
}

mod gpu {
    use super::{RecurrenceOps, TensorMetadata};
    use burn_cubecl::CubeBackend;
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::ops::numeric::empty_device_dtype;
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::prelude::*;

    /// Steps of the dot products written out per loop iteration.
    const UNROLL: usize = 8;

    /// The widest workgroup WebGPU guarantees (`maxComputeInvocationsPerWorkgroup` = 256).
    const MAX_WORKGROUP: usize = 256;

    /// Workgroup memory holds two copies of h and one of c: 3·H f32, within WebGPU's guaranteed
    /// 16 KiB (`maxComputeWorkgroupStorageSize`) for H ≤ 1365.
    pub(super) const MAX_HIDDEN: usize = 16384 / (3 * 4);

    /// The backward kernel's workgroup memory: two copies of dz (4·H each) and the carried cell
    /// gradient (H), 9·H f32 within 16 KiB: H ≤ 455.
    pub(super) const MAX_HIDDEN_BACKWARD: usize = 16384 / (9 * 4);

    /// Terms of the backward's dot products (4·H long) written out per loop iteration: 400 steps
    /// of H = 200 stay near 20 000 loop iterations, inside lavapipe's limit.
    const UNROLL_BACKWARD: usize = 16;

    #[cube]
    fn sigmoid_cube<F: Float>(x: F) -> F {
        let e = F::exp(F::new(0.0f32) - F::abs(x));
        let one = F::new(1.0f32);
        if x >= F::new(0.0f32) {
            one / (one + e)
        } else {
            e / (one + e)
        }
    }

    #[cube]
    fn tanh_cube<F: Float>(x: F, saturation: F) -> F {
        F::tanh(F::clamp(x, F::new(0.0f32) - saturation, saturation))
    }

    /// Both cells in one kernel, `ds` chosen at compile time. One workgroup per sequence
    /// (`CUBE_POS_X` = batch index); invocation `u` owns hidden units u, u + dim, …, each with all
    /// of its pre-activations (LSTM: gates `i, f, g, o`; DS-LSTM: gates `f, iT, iF, o` and
    /// candidates `C~T, C~F`, the gates normalised by row min(t, rows − 1) of `scale`, `shift`);
    /// `state` = [h (even steps) | h (odd steps) | c], each `capacity` long. Loop bounds are
    /// kernel arguments (uniform) and the barrier is outside the unit loop, as WGSL's uniformity
    /// rules require.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    fn recurrence_kernel<F: Float>(
        pre: &Tensor<F>,
        w: &Tensor<F>,
        scale: &Tensor<F>,
        shift: &Tensor<F>,
        out: &mut Tensor<F>,
        steps: u32,
        hidden: u32,
        rows: u32,
        #[comptime] capacity: u32,
        #[comptime] ds: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let blocks = comptime![if ds { 6usize } else { 4usize }];
        let seq = CUBE_POS_X as usize;
        let dim = CUBE_DIM_X as usize;
        let t_len = steps as usize;
        let hd = hidden as usize;
        let width = blocks * hd;
        let last = rows as usize - 1;
        let cap = capacity as usize;
        let saturation = F::new(10.0f32);
        let mut state = Shared::new_slice(3 * cap);
        let mut j = UNIT_POS_X as usize;
        while j < hd {
            state[j] = F::new(0.0f32);
            state[2 * cap + j] = F::new(0.0f32);
            j += dim;
        }
        sync_cube();
        for t in 0..t_len {
            let read = (t % 2) * cap;
            let write = cap - read;
            let row = (seq * t_len + t) * width;
            let mut j = UNIT_POS_X as usize;
            while j < hd {
                let mut z = Array::<F>::new(blocks);
                #[unroll]
                for g in 0..blocks {
                    z[g] = pre[row + g * hd + j];
                }
                // h_{t−1} · W in runs of UNROLL: fewer loop iterations (Mesa's lavapipe ends a loop
                // after 65535 iterations counted over the whole invocation, which a plain loop over
                // k reaches at T·H ≈ 65536).
                let mut k = 0;
                while k + UNROLL <= hd {
                    #[unroll]
                    for u in 0..UNROLL {
                        let hk = state[read + k + u];
                        let wk = (k + u) * width + j;
                        #[unroll]
                        for g in 0..blocks {
                            z[g] += hk * w[wk + g * hd];
                        }
                    }
                    k += UNROLL;
                }
                while k < hd {
                    let hk = state[read + k];
                    let wk = k * width + j;
                    #[unroll]
                    for g in 0..blocks {
                        z[g] += hk * w[wk + g * hd];
                    }
                    k += 1;
                }
                let c_prev = state[2 * cap + j];
                let (c, o) = if comptime![ds] {
                    let bn = (if t < last { t } else { last }) * 4 * hd;
                    let f = sigmoid_cube::<F>(z[0]) * scale[bn + j] + shift[bn + j];
                    let it = sigmoid_cube::<F>(z[1]) * scale[bn + hd + j] + shift[bn + hd + j];
                    let i_f =
                        sigmoid_cube::<F>(z[2]) * scale[bn + 2 * hd + j] + shift[bn + 2 * hd + j];
                    let o =
                        sigmoid_cube::<F>(z[3]) * scale[bn + 3 * hd + j] + shift[bn + 3 * hd + j];
                    let c = f * c_prev
                        + it * tanh_cube::<F>(z[4], saturation)
                        + i_f * tanh_cube::<F>(z[5], saturation);
                    (c, o)
                } else {
                    let c = sigmoid_cube::<F>(z[1]) * c_prev
                        + sigmoid_cube::<F>(z[0]) * tanh_cube::<F>(z[2], saturation);
                    (c, sigmoid_cube::<F>(z[3]))
                };
                state[2 * cap + j] = c;
                let h = o * tanh_cube::<F>(c, saturation);
                state[write + j] = h;
                out[(seq * t_len + t) * hd + j] = h;
                j += dim;
            }
            sync_cube();
        }
    }

    /// d/dx of [`tanh_cube`] at `x`, given y = tanh_cube(x): 1 − y² inside the clamp, 0 outside.
    #[cube]
    fn tanh_grad_cube<F: Float>(x: F, y: F, saturation: F) -> F {
        if F::abs(x) <= saturation {
            F::new(1.0f32) - y * y
        } else {
            F::new(0.0f32)
        }
    }

    /// The LSTM's backward through time, one workgroup per sequence, invocation `u` owning hidden
    /// units u, u + dim, …: first the cell states of every step from `z` (into `cells`, no
    /// barrier: each unit's own), then from the last step back dh_t = grad_t + W_j·dz_{t+1} and
    /// the gate derivatives. `state` = [dz (even passes) | dz (odd passes) | dc_{t+1}·f_{t+1}],
    /// 4·`capacity`, 4·`capacity` and `capacity` long; one barrier per step, outside the unit
    /// loop.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    fn lstm_backward_kernel<F: Float>(
        z: &Tensor<F>,
        w: &Tensor<F>,
        grad: &Tensor<F>,
        cells: &mut Tensor<F>,
        dz: &mut Tensor<F>,
        steps: u32,
        hidden: u32,
        #[comptime] capacity: u32,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = CUBE_POS_X as usize;
        let dim = CUBE_DIM_X as usize;
        let t_len = steps as usize;
        let hd = hidden as usize;
        let width = 4 * hd;
        let cap = capacity as usize;
        let carry = 8 * cap;
        let saturation = F::new(10.0f32);
        let one = F::new(1.0f32);
        let mut state = Shared::new_slice(9 * cap);
        let mut j = UNIT_POS_X as usize;
        while j < hd {
            let mut c = F::new(0.0f32);
            for t in 0..t_len {
                let row = (seq * t_len + t) * width;
                c = sigmoid_cube::<F>(z[row + hd + j]) * c
                    + sigmoid_cube::<F>(z[row + j])
                        * tanh_cube::<F>(z[row + 2 * hd + j], saturation);
                cells[(seq * t_len + t) * hd + j] = c;
            }
            state[carry + j] = F::new(0.0f32);
            j += dim;
        }
        sync_cube();
        for pass in 0..t_len {
            let t = t_len - 1 - pass;
            let read = (pass % 2) * 4 * cap;
            let write = 4 * cap - read;
            let row = (seq * t_len + t) * width;
            let mut j = UNIT_POS_X as usize;
            while j < hd {
                let mut dh = grad[(seq * t_len + t) * hd + j];
                if pass > 0 {
                    // W_j · dz_{t+1}: row j of W [H, 4H] against the previous pass's dz.
                    let wr = j * width;
                    let mut acc = F::new(0.0f32);
                    let mut m = 0;
                    while m + UNROLL_BACKWARD <= width {
                        #[unroll]
                        for u in 0..UNROLL_BACKWARD {
                            acc += w[wr + m + u] * state[read + m + u];
                        }
                        m += UNROLL_BACKWARD;
                    }
                    while m < width {
                        acc += w[wr + m] * state[read + m];
                        m += 1;
                    }
                    dh += acc;
                }
                let i = sigmoid_cube::<F>(z[row + j]);
                let f = sigmoid_cube::<F>(z[row + hd + j]);
                let zg = z[row + 2 * hd + j];
                let g = tanh_cube::<F>(zg, saturation);
                let o = sigmoid_cube::<F>(z[row + 3 * hd + j]);
                let c = cells[(seq * t_len + t) * hd + j];
                let c_prev = if t > 0 {
                    cells[(seq * t_len + t - 1) * hd + j]
                } else {
                    F::new(0.0f32)
                };
                let tc = tanh_cube::<F>(c, saturation);
                let dc = dh * o * tanh_grad_cube::<F>(c, tc, saturation) + state[carry + j];
                state[carry + j] = dc * f;
                let d_i = dc * g * i * (one - i);
                let d_f = dc * c_prev * f * (one - f);
                let d_g = dc * i * tanh_grad_cube::<F>(zg, g, saturation);
                let d_o = dh * tc * o * (one - o);
                state[write + j] = d_i;
                state[write + hd + j] = d_f;
                state[write + 2 * hd + j] = d_g;
                state[write + 3 * hd + j] = d_o;
                dz[row + j] = d_i;
                dz[row + hd + j] = d_f;
                dz[row + 2 * hd + j] = d_g;
                dz[row + 3 * hd + j] = d_o;
                j += dim;
            }
            sync_cube();
        }
    }

    impl RecurrenceOps for CubeBackend {
        fn lstm_recurrence(pre: CubeTensor, w_hh_t: CubeTensor) -> CubeTensor {
            launch(pre, w_hh_t, None)
        }

        fn ds_lstm_recurrence(
            pre: CubeTensor,
            w_h_t: CubeTensor,
            scale: CubeTensor,
            shift: CubeTensor,
        ) -> CubeTensor {
            launch(pre, w_h_t, Some((scale, shift)))
        }

        fn lstm_recurrence_backward(
            z: CubeTensor,
            w_hh_t: CubeTensor,
            grad: CubeTensor,
        ) -> CubeTensor {
            let (z, w, grad) = (
                into_contiguous(z),
                into_contiguous(w_hh_t),
                into_contiguous(grad),
            );
            let [b, t, width] = z.shape().dims::<3>();
            let hd = width / 4;
            assert!(
                hd <= MAX_HIDDEN_BACKWARD,
                "lstm_recurrence_backward: hidden size {hd} exceeds the GPU kernel's {MAX_HIDDEN_BACKWARD}"
            );
            let client = z.client.clone();
            let cells = empty_like(&z, [b, t, hd]);
            let dz = empty_like(&z, [b, t, width]);
            let dtype = burn::backend::cubecl::dtype_to_storage_type(z.dtype);
            lstm_backward_kernel::launch(
                &client,
                CubeCount::Static(b as u32, 1, 1),
                workgroup(&z, hd),
                z.into_tensor_arg(),
                w.into_tensor_arg(),
                grad.into_tensor_arg(),
                cells.into_tensor_arg(),
                dz.clone().into_tensor_arg(),
                t as u32,
                hd as u32,
                hd.max(1) as u32,
                dtype,
            );
            dz
        }
    }

    /// The workgroup of both kernels: one invocation per hidden unit, at most 256 (WebGPU's
    /// guarantee) or what `x`'s device allows.
    fn workgroup(x: &CubeTensor, hidden: usize) -> CubeDim {
        let hw_max = x.client.properties().hardware.max_cube_dim.0 as usize;
        CubeDim::new_1d(hidden.clamp(1, MAX_WORKGROUP.min(hw_max)) as u32)
    }

    /// An uninitialised tensor of `shape` on `x`'s device, of its dtype (every element is written).
    fn empty_like(x: &CubeTensor, shape: [usize; 3]) -> CubeTensor {
        empty_device_dtype(
            x.client.clone(),
            x.device.clone(),
            burn::tensor::Shape::new(shape),
            x.dtype,
        )
    }

    /// One launch of [`recurrence_kernel`]: the DS-LSTM when its batch-norm table is given, else the
    /// LSTM (which reads no table: the recurrent weights stand in for the two unused bindings).
    fn launch(
        pre: CubeTensor,
        w_t: CubeTensor,
        table: Option<(CubeTensor, CubeTensor)>,
    ) -> CubeTensor {
        let ds = table.is_some();
        let pre = into_contiguous(pre);
        let w = into_contiguous(w_t);
        let (scale, shift) = match table {
            Some((scale, shift)) => (into_contiguous(scale), into_contiguous(shift)),
            None => (w.clone(), w.clone()),
        };
        let rows = if ds { scale.shape().dims::<2>()[0] } else { 1 };
        assert!(rows > 0, "ds_lstm_recurrence: an empty batch-norm table");
        let [b, t, width] = pre.shape().dims::<3>();
        let hd = width / if ds { 6 } else { 4 };
        assert!(
            hd <= MAX_HIDDEN,
            "recurrence: hidden size {hd} exceeds the GPU kernel's {MAX_HIDDEN}"
        );
        let client = pre.client.clone();
        let out = empty_like(&pre, [b, t, hd]);
        let dtype = burn::backend::cubecl::dtype_to_storage_type(pre.dtype);
        recurrence_kernel::launch(
            &client,
            CubeCount::Static(b as u32, 1, 1),
            workgroup(&pre, hd),
            pre.into_tensor_arg(),
            w.into_tensor_arg(),
            scale.into_tensor_arg(),
            shift.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            t as u32,
            hd as u32,
            rows as u32,
            hd.max(1) as u32,
            ds,
            dtype,
        );
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The CPU gate pass's sigmoid and tanh against f64's, every 1/1024 over [−100, 100] and at
    /// the edges of their ranges: within 1e-6 (absolute), NaN stays NaN.
    #[test]
    fn gate_functions_are_accurate_to_1e_6() {
        let exact_sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let exact_tanh = |x: f64| x.clamp(-TANH_SATURATION, TANH_SATURATION).tanh();
        let grid = (-102_400..=102_400).map(|i| i as f32 / 1024.0);
        let edges = [
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e-7,
            -1e-7,
            9.02,
            -9.02,
            10.0,
            -10.0,
            86.9,
            -86.9,
            87.5,
            -87.5,
            88.7,
            -88.7,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
        ];
        let (mut worst_sigmoid, mut worst_tanh) = (0f64, 0f64);
        for x in grid.chain(edges) {
            let s = sigmoid_f32(x);
            let t = tanh_f32(x);
            assert!(
                s.is_finite() && t.is_finite(),
                "x = {x}: sigmoid {s}, tanh {t}"
            );
            worst_sigmoid = worst_sigmoid.max((s as f64 - exact_sigmoid(x as f64)).abs());
            worst_tanh = worst_tanh.max((t as f64 - exact_tanh(x as f64)).abs());
        }
        assert!(worst_sigmoid <= 1e-6, "sigmoid off by {worst_sigmoid:e}");
        assert!(worst_tanh <= 1e-6, "tanh off by {worst_tanh:e}");
        assert!(sigmoid_f32(f32::NAN).is_nan() && tanh_f32(f32::NAN).is_nan());
        // Odd and saturating exactly, as the clamped tanh of the other paths.
        assert_eq!(tanh_f32(-0.75), -tanh_f32(0.75));
        assert_eq!((tanh_f32(10.0), tanh_f32(-50.0)), (1.0, -1.0));
    }

    /// A tensor of `shape` with normal entries of standard deviation `scale` (also the DS-LSTM
    /// training op's tests' inputs).
    pub(crate) fn random<const D: usize>(
        shape: [usize; D],
        scale: f64,
        rng: &mut SplitMix64,
        device: &Device,
    ) -> Tensor<D> {
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| (rng.normal() * scale) as f32)
            .collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// Within 1e-5, or 1e-5 per unit of `scale` for the saturated shape: pre-activations of ±100
    /// carry f32 rounding of 1e-5 whatever the order of the sums, and the two paths sum in
    /// different orders on the GPU.
    fn check(fused: Tensor<3>, steps: Tensor<3>, scale: f64, what: &str) {
        assert_eq!(fused.dims(), steps.dims(), "{what}");
        let finite: bool = fused.clone().is_finite().all().into_scalar::<bool>();
        assert!(finite, "{what}: not finite");
        let d: f32 = (fused - steps).abs().max().into_scalar();
        println!("{what}: max |fused − steps| = {d:.2e}");
        assert!(f64::from(d) < 1e-5 * scale.max(1.0), "{what}: {d}");
    }

    /// (batch, steps, hidden, scale of the pre-activations): one step, odd sizes, more units than
    /// a workgroup has invocations (300), the paper's H = 200 over ~400 steps (past lavapipe's loop
    /// limit without the unrolling), and saturated gates (pre-activations up to ±60, cell states
    /// past tanh's saturation).
    const SHAPES: [(usize, usize, usize, f64); 7] = [
        (1, 1, 5, 1.0),
        (3, 2, 7, 1.0),
        (9, 57, 33, 0.5),
        (2, 57, 300, 0.3),
        (1, 400, 200, 0.3),
        (9, 400, 200, 0.3),
        (3, 20, 16, 20.0),
    ];

    /// [`input_projection`] equals the product plus the bias written with tensor operations, on
    /// every backend, with a transposed (strided) weight as the layers pass it, and under
    /// autodiff both untracked (the inner backend's operation) and tracked (the composition):
    /// within 1e-5 of the largest value.
    #[test]
    fn input_projection_matches_the_product_plus_bias() {
        let mut rng = SplitMix64::new(11);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            for (n, i, o) in [(1, 1, 1), (7, 39, 800), (250, 240, 1200), (33, 5, 3)] {
                let x = random([n, i], 1.0, &mut rng, &device);
                let w = random([o, i], 0.3, &mut rng, &device);
                let bias = random([o], 1.0, &mut rng, &device);
                let reference = x.clone().matmul(w.clone().transpose()) + bias.clone().unsqueeze();
                let scale: f32 = reference.clone().abs().max().into_scalar();
                let close = |own: Tensor<2>, what: &str| {
                    assert_eq!(own.dims(), [n, o], "{what}");
                    let d: f32 = (own - reference.clone()).abs().max().into_scalar();
                    println!("{what}: max diff {d:.2e} (largest {scale:.2e})");
                    assert!(d <= 1e-5 * scale.max(1.0), "{what}: {d}");
                };
                let what = format!("{kind} {n}x{i} -> {o}");
                close(
                    input_projection(x.clone(), w.clone().transpose(), bias.clone()),
                    &what,
                );
                #[cfg(feature = "train")]
                for tracked in [false, true] {
                    let ad = device.clone().autodiff();
                    let x = Tensor::<2>::from_data(x.to_data(), &ad);
                    let x = if tracked { x.require_grad() } else { x };
                    let w = Tensor::<2>::from_data(w.to_data(), &ad);
                    let bias = Tensor::<1>::from_data(bias.to_data(), &ad);
                    let own = input_projection(x, w.transpose(), bias);
                    let own = Tensor::<2>::from_data(own.to_data(), &device);
                    close(own, &format!("{what} autodiff, tracked {tracked}"));
                }
            }
        }
    }

    /// The fused LSTM equals the step loop on every backend this machine has: the CPU, and wgpu
    /// where there is an adapter (lavapipe in CI).
    #[test]
    fn fused_lstm_matches_the_step_loop() {
        let mut rng = SplitMix64::new(7);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            for (b, t, hd, scale) in SHAPES {
                let pre = random([b, t, 4 * hd], scale, &mut rng, &device);
                let w = random([hd, 4 * hd], scale / (hd as f64).sqrt(), &mut rng, &device);
                let fused = lstm_recurrence(pre.clone(), w.clone());
                let what = format!("lstm {kind} b={b} t={t} h={hd}");
                check(fused, lstm_recurrence_steps(pre, w), scale, &what);
            }
        }
    }

    /// The fused DS-LSTM equals the step loop, with a batch-norm table shorter than the sequence
    /// (later steps use its last row), as long, and longer.
    #[test]
    fn fused_ds_lstm_matches_the_step_loop() {
        let mut rng = SplitMix64::new(8);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            for (b, t, hd, scale) in SHAPES {
                for rows in [1.max(t / 3), t, t + 5] {
                    let pre = random([b, t, 6 * hd], scale, &mut rng, &device);
                    let w = random([hd, 6 * hd], scale / (hd as f64).sqrt(), &mut rng, &device);
                    let bn_scale =
                        (random([rows, 4 * hd], 0.5, &mut rng, &device).abs() + 0.5).clamp_max(1.0);
                    let bn_shift = random([rows, 4 * hd], 0.3, &mut rng, &device);
                    let fused = ds_lstm_recurrence(
                        pre.clone(),
                        w.clone(),
                        bn_scale.clone(),
                        bn_shift.clone(),
                    );
                    let steps = ds_lstm_recurrence_steps(pre, w, bn_scale, bn_shift);
                    let what = format!("ds-lstm {kind} b={b} t={t} h={hd} rows={rows}");
                    check(fused, steps, scale, &what);
                }
            }
        }
    }

    /// (batch, steps, hidden) of the gradient checks: one step (no recurrent gradient), two, odd
    /// sizes, more units than a workgroup has invocations, and the paper's H = 200 over 400 steps.
    #[cfg(feature = "train")]
    const GRAD_SHAPES: [(usize, usize, usize); 6] = [
        (1, 1, 5),
        (3, 2, 7),
        (9, 57, 33),
        (3, 57, 300),
        (1, 400, 200),
        (9, 400, 200),
    ];

    /// Training through the fused LSTM gives the gradients burn derives for the step loop, with
    /// respect to the input projections and the recurrent weights, on the CPU and on wgpu
    /// (lavapipe in CI): within 1e-5 of the largest gradient (at least 1e-5 absolute). The loss
    /// weighs every hidden state by a random factor, so every step's gradient matters.
    #[cfg(feature = "train")]
    #[test]
    fn fused_lstm_gradients_match_the_step_loop() {
        let mut rng = SplitMix64::new(10);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            let device = device.autodiff();
            for (b, t, hd) in GRAD_SHAPES {
                let pre = random([b, t, 4 * hd], 0.5, &mut rng, &device);
                let w = random([hd, 4 * hd], 0.5 / (hd as f64).sqrt(), &mut rng, &device);
                let weights = random([b, t, hd], 1.0, &mut rng, &device);
                let grads = |fused: bool| {
                    let (pre, w) = (pre.clone().require_grad(), w.clone().require_grad());
                    let h = if fused {
                        lstm_recurrence(pre.clone(), w.clone())
                    } else {
                        lstm_recurrence_steps(pre.clone(), w.clone())
                    };
                    let g = (h * weights.clone()).sum().backward();
                    let d_pre = pre.grad(&g).expect("a gradient for pre");
                    let d_w = w.grad(&g).expect("a gradient for the recurrent weights");
                    (d_pre, d_w)
                };
                let ((fp, fw), (sp, sw)) = (grads(true), grads(false));
                for (what, a, r) in [
                    ("pre", fp.flatten::<1>(0, 2), sp.flatten::<1>(0, 2)),
                    ("w", fw.flatten::<1>(0, 1), sw.flatten::<1>(0, 1)),
                ] {
                    let scale: f32 = r.clone().abs().max().into_scalar();
                    let d: f32 = (a - r).abs().max().into_scalar();
                    println!(
                        "lstm grad {what} {kind} b={b} t={t} h={hd}: max |fused − steps| = {d:.2e} (largest {scale:.2e})"
                    );
                    assert!(
                        d.is_finite() && d <= 1e-5 * scale.max(1.0),
                        "{what} {kind} b={b} t={t} h={hd}: {d}"
                    );
                }
            }
        }
    }

    /// On an autodiff device the DS-LSTM takes its step loop (burn differentiates it) and the LSTM
    /// its fused op with its own backward: both give the recurrent weights a gradient.
    #[cfg(feature = "train")]
    #[test]
    fn autodiff_inputs_take_the_differentiable_path() {
        let device = crate::backend::cpu_device().autodiff();
        let mut rng = SplitMix64::new(9);
        let pre = random([2, 5, 12], 1.0, &mut rng, &device).require_grad();
        let w = random([3, 12], 0.5, &mut rng, &device).require_grad();
        let grads = lstm_recurrence(pre.clone(), w.clone()).sum().backward();
        let g = w
            .grad(&grads)
            .expect("a gradient for the recurrent weights");
        let g_abs: f32 = g.abs().sum().into_scalar();
        assert!(g_abs > 0.0);
        let pre = random([2, 5, 18], 1.0, &mut rng, &device).require_grad();
        let w = random([3, 18], 0.5, &mut rng, &device).require_grad();
        let table = Tensor::<2>::ones([2, 12], &device);
        let out = ds_lstm_recurrence(pre, w.clone(), table.clone(), table.zeros_like());
        let grads = out.sum().backward();
        assert!(w.grad(&grads).is_some());
    }
}
