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
//! - **Training** (an autodiff input): [`lstm_recurrence_steps`] / [`ds_lstm_recurrence_steps`], the
//!   step loops of tensor operations, whose gradient burn derives. They are also the reference the
//!   fused paths are tested against.
//!
//! The backend extension is burn 0.22.1's `#[backend_extension]`: the trait is implemented for each
//! backend and the macro generates the routing of a dispatch tensor to the right implementation.

use burn::backend::TensorMetadata;
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::sigmoid;

use crate::nn::{TANH_SATURATION, split_steps, tanh};

/// The fused recurrences, implemented by each backend (see the module documentation).
#[backend_extension(Cube, Flex, Fusion: cfg(not(target_family = "wasm")))]
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

/// Whether the fused implementations apply: no input on an autodiff device (training
/// differentiates the step loop), f32, a non-empty input, and a hidden size whose state fits the
/// GPU kernel's workgroup memory (the same rule on every backend, so results do not depend on it).
fn fused(pre: &Tensor<3>, w_t: &Tensor<2>) -> bool {
    let [b, t, _] = pre.dims();
    !STEP_LOOP_ONLY.load(std::sync::atomic::Ordering::Relaxed)
        && !pre.is_autodiff()
        && !w_t.is_autodiff()
        && pre.dtype() == DType::F32
        && b > 0
        && t > 0
        && w_t.dims()[0] <= gpu::MAX_HIDDEN
}

/// Every step's hidden state of an LSTM layer with zero initial state: `pre` [B, T, 4H] holds the
/// input projections and both biases (gates `i, f, g, o`, docs/weights.md §4.1), `w_hh_t` [H, 4H]
/// the transposed recurrent weights. Returns h [B, T, H].
///
/// Runs fused on the CPU and GPU backends in inference, and as [`lstm_recurrence_steps`] on an
/// autodiff device (training) or for a dtype other than f32.
pub fn lstm_recurrence(pre: Tensor<3>, w_hh_t: Tensor<2>) -> Tensor<3> {
    if !fused(&pre, &w_hh_t) {
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
    if !fused(&pre, &w_h_t) {
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

/// The logistic function without overflow for any finite input: e^(−|x|) ≤ 1 always.
#[inline]
fn sigmoid_f32(x: f32) -> f32 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// `tanh` clamped as [`crate::nn::tanh`] (the same results; finite on every backend).
#[inline]
fn tanh_f32(x: f32) -> f32 {
    let s = TANH_SATURATION as f32;
    x.clamp(-s, s).tanh()
}

mod cpu {
    use super::{RecurrenceOps, TensorMetadata, sigmoid_f32, tanh_f32};
    use burn::tensor::TensorData;
    use burn_flex::{Flex, FlexTensor};

    impl RecurrenceOps for Flex {
        fn lstm_recurrence(pre: FlexTensor, w_hh_t: FlexTensor) -> FlexTensor {
            run(Cell::Lstm, pre, w_hh_t)
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

    fn contiguous(x: FlexTensor) -> FlexTensor {
        if x.is_contiguous() && x.layout().start_offset() == 0 {
            x
        } else {
            x.to_contiguous()
        }
    }

    /// The recurrence on f32 slices: `pre` [B, T, kH], `w` [H, kH] (k = [`Cell::blocks`]), `out`
    /// [B, T, H] (written).
    pub(super) fn recurrence_cpu(
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
            for s in 0..b {
                let row = (s * t + step) * width;
                z[s * width..(s + 1) * width].copy_from_slice(&pre[row..row + width]);
            }
            if step > 0 && hd > 0 {
                // z[B, kH] += h_{t−1}[B, H] · W[H, kH]; h_{t−1} is read in place from `out`
                // (row stride T·H).
                // SAFETY: the three matrices lie inside their slices with the strides given: `z` is
                // B×kH (row stride kH), `out` from (step−1)·H holds B rows of H with stride T·H (the
                // last row ends at ((B−1)·T + step)·H ≤ B·T·H), `w` is H×kH. `z` does not alias them.
                unsafe {
                    gemm::gemm(
                        b,
                        width,
                        hd,
                        z.as_mut_ptr(),
                        1,
                        width as isize,
                        true,
                        out.as_ptr().add((step - 1) * hd),
                        1,
                        (t * hd) as isize,
                        w.as_ptr(),
                        1,
                        width as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            for s in 0..b {
                let zs = &z[s * width..(s + 1) * width];
                let cs = &mut c[s * hd..(s + 1) * hd];
                let o0 = (s * t + step) * hd;
                let hs = &mut out[o0..o0 + hd];
                match cell {
                    Cell::Lstm => {
                        for j in 0..hd {
                            let i = sigmoid_f32(zs[j]);
                            let f = sigmoid_f32(zs[hd + j]);
                            let g = tanh_f32(zs[2 * hd + j]);
                            let o = sigmoid_f32(zs[3 * hd + j]);
                            cs[j] = f * cs[j] + i * g;
                            hs[j] = o * tanh_f32(cs[j]);
                        }
                    }
                    Cell::Ds { scale, shift, rows } => {
                        let r = step.min(rows - 1) * 4 * hd;
                        let gate = |k: usize| sigmoid_f32(zs[k]) * scale[r + k] + shift[r + k];
                        for j in 0..hd {
                            let f = gate(j);
                            let i_t = gate(hd + j);
                            let i_f = gate(2 * hd + j);
                            let o = gate(3 * hd + j);
                            let ct = tanh_f32(zs[4 * hd + j]);
                            let cf = tanh_f32(zs[5 * hd + j]);
                            cs[j] = f * cs[j] + i_t * ct + i_f * cf;
                            hs[j] = o * tanh_f32(cs[j]);
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

    #[cube]
    fn sigmoid_cube<F: Float>(x: F) -> F {
        let e = F::exp(F::new(0.0) - F::abs(x));
        let one = F::new(1.0);
        if x >= F::new(0.0) {
            one / (one + e)
        } else {
            e / (one + e)
        }
    }

    #[cube]
    fn tanh_cube<F: Float>(x: F, saturation: F) -> F {
        F::tanh(F::clamp(x, F::new(0.0) - saturation, saturation))
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
        let saturation = F::new(10.0);
        let mut state = Shared::new_slice(3 * cap);
        let mut j = UNIT_POS_X as usize;
        while j < hd {
            state[j] = F::new(0.0);
            state[2 * cap + j] = F::new(0.0);
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
        let hw_max = client.properties().hardware.max_cube_dim.0 as usize;
        let dim = hd.clamp(1, MAX_WORKGROUP.min(hw_max));
        let out = empty_device_dtype(
            client.clone(),
            pre.device.clone(),
            burn::tensor::Shape::new([b, t, hd]),
            pre.dtype,
        );
        let dtype = burn::backend::cubecl::dtype_to_storage_type(pre.dtype);
        recurrence_kernel::launch(
            &client,
            CubeCount::Static(b as u32, 1, 1),
            CubeDim::new_1d(dim as u32),
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
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn random<const D: usize>(
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

    /// On an autodiff device (training) both entry points take the step loop, so gradients flow.
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
