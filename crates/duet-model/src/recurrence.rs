//! The LSTM recurrence as one operation per layer (docs/weights.md §4.1), so that a GPU runs it as one
//! dispatch instead of several per time step, and the CPU runs it without a tensor per step.
//!
//! [`lstm_recurrence`] is the only entry point. It takes the input projections of all steps (biases
//! included) and the transposed recurrent weights, and returns every step's hidden state:
//!
//! - **GPU** (wgpu: WebGPU in the page, Vulkan/Metal natively): a cubecl kernel, one workgroup per
//!   sequence, each invocation owning hidden units (all four gates of each), the cell state and the
//!   previous hidden state in workgroup memory, one barrier per step.
//! - **CPU** (flex): per step one matrix product into a preallocated buffer, then one pass over the
//!   gates.
//! - **Training** (an autodiff device): [`lstm_recurrence_steps`], the step loop of tensor operations,
//!   whose gradient burn derives. It is also the reference the fused paths are tested against.
//!
//! The backend extension is burn 0.22.1's `#[backend_extension]`: the trait is implemented for each
//! backend and the macro generates the routing of a dispatch tensor to the right implementation.

use burn::backend::TensorMetadata;
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::sigmoid;

use crate::nn::{TANH_SATURATION, split_steps, tanh};

/// The fused LSTM recurrence, implemented by each backend (see the module documentation).
#[backend_extension(Cube, Flex, Fusion: cfg(not(target_family = "wasm")))]
pub trait RecurrenceOps: Backend {
    /// `pre` [B, T, 4H] (gates `i, f, g, o`, both biases added), `w_hh_t` [H, 4H] → h [B, T, H],
    /// from a zero initial state.
    #[fusion(dtype = pre, shape = lstm_output_shape(pre, w_hh_t))]
    fn lstm_recurrence(pre: FloatTensor<Self>, w_hh_t: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The shape of [`RecurrenceOps::lstm_recurrence`]'s output: [B, T, H].
fn lstm_output_shape(
    pre: &burn::tensor::Shape,
    w_hh_t: &burn::tensor::Shape,
) -> burn::tensor::Shape {
    burn::tensor::Shape::new([pre[0], pre[1], w_hh_t[0]])
}

/// Every step's hidden state of an LSTM layer with zero initial state: `pre` [B, T, 4H] holds the
/// input projections and both biases (gates `i, f, g, o`, docs/weights.md §4.1), `w_hh_t` [H, 4H]
/// the transposed recurrent weights. Returns h [B, T, H].
///
/// Runs fused on the CPU and GPU backends in inference, and as [`lstm_recurrence_steps`] on an
/// autodiff device (training) or for a dtype other than f32.
pub fn lstm_recurrence(pre: Tensor<3>, w_hh_t: Tensor<2>) -> Tensor<3> {
    let [b, t, h4] = pre.dims();
    let device = pre.device();
    let fused = device.clone().without_autodiff() == device && pre.dtype() == DType::F32;
    if !fused || b == 0 || t == 0 {
        return lstm_recurrence_steps(pre, w_hh_t);
    }
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
            let [b, t, h4] = pre.shape().dims::<3>();
            let hd = h4 / 4;
            let pre = contiguous(pre);
            let w = contiguous(w_hh_t);
            let mut out = vec![0f32; b * t * hd];
            lstm_cpu(pre.storage::<f32>(), w.storage::<f32>(), &mut out, b, t, hd);
            FlexTensor::from_data(TensorData::new(out, [b, t, hd]))
        }
    }

    fn contiguous(x: FlexTensor) -> FlexTensor {
        if x.is_contiguous() && x.layout().start_offset() == 0 {
            x
        } else {
            x.to_contiguous()
        }
    }

    /// The recurrence on f32 slices: `pre` [B, T, 4H], `w` [H, 4H], `out` [B, T, H] (written).
    pub(super) fn lstm_cpu(pre: &[f32], w: &[f32], out: &mut [f32], b: usize, t: usize, hd: usize) {
        let h4 = 4 * hd;
        assert_eq!(pre.len(), b * t * h4);
        assert_eq!(w.len(), hd * h4);
        assert_eq!(out.len(), b * t * hd);
        let mut z = vec![0f32; b * h4];
        let mut c = vec![0f32; b * hd];
        for step in 0..t {
            for s in 0..b {
                let row = (s * t + step) * h4;
                z[s * h4..(s + 1) * h4].copy_from_slice(&pre[row..row + h4]);
            }
            if step > 0 && hd > 0 {
                // z[B, 4H] += h_{t−1}[B, H] · W[H, 4H]; h_{t−1} is read in place from `out`
                // (row stride T·H).
                // SAFETY: the three matrices lie inside their slices with the strides given: `z` is
                // B×4H (row stride 4H), `out` from (step−1)·H holds B rows of H with stride T·H (the
                // last row ends at ((B−1)·T + step)·H ≤ B·T·H), `w` is H×4H. `z` does not alias them.
                unsafe {
                    gemm::gemm(
                        b,
                        h4,
                        hd,
                        z.as_mut_ptr(),
                        1,
                        h4 as isize,
                        true,
                        out.as_ptr().add((step - 1) * hd),
                        1,
                        (t * hd) as isize,
                        w.as_ptr(),
                        1,
                        h4 as isize,
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
                let zs = &z[s * h4..(s + 1) * h4];
                let cs = &mut c[s * hd..(s + 1) * hd];
                let o0 = (s * t + step) * hd;
                let hs = &mut out[o0..o0 + hd];
                for j in 0..hd {
                    let i = sigmoid_f32(zs[j]);
                    let f = sigmoid_f32(zs[hd + j]);
                    let g = tanh_f32(zs[2 * hd + j]);
                    let o = sigmoid_f32(zs[3 * hd + j]);
                    cs[j] = f * cs[j] + i * g;
                    hs[j] = o * tanh_f32(cs[j]);
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

    /// One workgroup per sequence (`CUBE_POS_X` = batch index); invocation `u` owns hidden units
    /// u, u + dim, …; `state` = [h (even steps) | h (odd steps) | c], each `capacity` long. Loop
    /// bounds are kernel arguments (uniform), and the barrier is outside the unit loop, as WGSL's
    /// uniformity rules require.
    #[cube(launch)]
    fn lstm_kernel<F: Float>(
        pre: &Tensor<F>,
        w: &Tensor<F>,
        out: &mut Tensor<F>,
        steps: u32,
        hidden: u32,
        #[comptime] capacity: u32,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = CUBE_POS_X as usize;
        let dim = CUBE_DIM_X as usize;
        let t_len = steps as usize;
        let hd = hidden as usize;
        let h4 = 4 * hd;
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
            let row = (seq * t_len + t) * h4;
            let mut j = UNIT_POS_X as usize;
            while j < hd {
                let mut zi = pre[row + j];
                let mut zf = pre[row + hd + j];
                let mut zg = pre[row + 2 * hd + j];
                let mut zo = pre[row + 3 * hd + j];
                // h_{t−1} · W in runs of UNROLL: fewer loop iterations (Mesa's lavapipe ends a loop
                // after 65535 iterations counted over the whole invocation, which a plain loop over
                // k reaches at T·H ≈ 65536).
                let mut k = 0;
                while k + UNROLL <= hd {
                    #[unroll]
                    for u in 0..UNROLL {
                        let hk = state[read + k + u];
                        let wk = (k + u) * h4 + j;
                        zi += hk * w[wk];
                        zf += hk * w[wk + hd];
                        zg += hk * w[wk + 2 * hd];
                        zo += hk * w[wk + 3 * hd];
                    }
                    k += UNROLL;
                }
                while k < hd {
                    let hk = state[read + k];
                    let wk = k * h4 + j;
                    zi += hk * w[wk];
                    zf += hk * w[wk + hd];
                    zg += hk * w[wk + 2 * hd];
                    zo += hk * w[wk + 3 * hd];
                    k += 1;
                }
                let c = sigmoid_cube::<F>(zf) * state[2 * cap + j]
                    + sigmoid_cube::<F>(zi) * tanh_cube::<F>(zg, saturation);
                state[2 * cap + j] = c;
                let h = sigmoid_cube::<F>(zo) * tanh_cube::<F>(c, saturation);
                state[write + j] = h;
                out[(seq * t_len + t) * hd + j] = h;
                j += dim;
            }
            sync_cube();
        }
    }

    impl RecurrenceOps for CubeBackend {
        fn lstm_recurrence(pre: CubeTensor, w_hh_t: CubeTensor) -> CubeTensor {
            let pre = into_contiguous(pre);
            let w = into_contiguous(w_hh_t);
            let [b, t, h4] = pre.shape().dims::<3>();
            let hd = h4 / 4;
            assert!(
                hd <= MAX_HIDDEN,
                "lstm_recurrence: hidden size {hd} exceeds the GPU kernel's {MAX_HIDDEN}"
            );
            let client = pre.client.clone();
            let dtype = pre.dtype;
            let out = empty_device_dtype(
                client.clone(),
                pre.device.clone(),
                burn::tensor::Shape::new([b, t, hd]),
                dtype,
            );
            let hw_max = client.properties().hardware.max_cube_dim.0 as usize;
            let dim = hd.clamp(1, MAX_WORKGROUP.min(hw_max));
            lstm_kernel::launch(
                &client,
                CubeCount::Static(b as u32, 1, 1),
                CubeDim::new_1d(dim as u32),
                pre.into_tensor_arg(),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                t as u32,
                hd as u32,
                hd.max(1) as u32,
                burn::backend::cubecl::dtype_to_storage_type(dtype),
            );
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn random(shape: &[usize], scale: f64, rng: &mut SplitMix64, device: &Device) -> Vec<f32> {
        let _ = device;
        (0..shape.iter().product::<usize>())
            .map(|_| (rng.normal() * scale) as f32)
            .collect()
    }

    fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// The fused recurrence equals the step loop on every backend this machine has (the CPU, and
    /// wgpu where there is an adapter, lavapipe included), over batch sizes, lengths and hidden sizes
    /// that exercise one step, odd sizes, more units than a workgroup's invocations, and saturated
    /// gates (pre-activations up to ±60, cell states past tanh's saturation).
    #[test]
    fn fused_lstm_matches_the_step_loop() {
        let mut rng = SplitMix64::new(7);
        for device in crate::backend::available_devices() {
            for &(b, t, hd, scale) in &[
                (1, 1, 5, 1.0),
                (3, 2, 7, 1.0),
                (9, 57, 33, 0.5),
                (2, 57, 300, 0.3),
                (1, 400, 200, 0.3),
                (9, 400, 200, 0.3),
                (3, 20, 16, 20.0),
            ] {
                let pre = random(&[b, t, 4 * hd], scale, &mut rng, &device);
                let w = random(&[hd, 4 * hd], scale / (hd as f64).sqrt(), &mut rng, &device);
                let pre = Tensor::<3>::from_data(TensorData::new(pre, [b, t, 4 * hd]), &device);
                let w = Tensor::<2>::from_data(TensorData::new(w, [hd, 4 * hd]), &device);
                let fused = lstm_recurrence(pre.clone(), w.clone());
                assert_eq!(fused.dims(), [b, t, hd]);
                let steps = lstm_recurrence_steps(pre, w);
                let d = max_diff(fused.clone(), steps);
                println!(
                    "{} b={b} t={t} h={hd}: max |fused − steps| = {d:.2e}",
                    crate::backend::kind_of(&device)
                );
                assert!(d < 1e-5, "b={b} t={t} h={hd}: {d}");
                let finite: bool = fused.is_finite().all().into_scalar::<bool>();
                assert!(finite);
            }
        }
    }
}
