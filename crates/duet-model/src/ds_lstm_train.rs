//! The DS-LSTM's training recurrence (paper §2.3.4, equations (1)-(8); docs/weights.md §4.4) as
//! one operation with its own backward on the CPU.
//!
//! In training the recurrent batch norm normalises each step's sigmoid gates with that step's
//! statistics over the batch, so the gates of one sequence depend on every other sequence's at the
//! same step. burn differentiates the step loop ([`ds_lstm_train_steps`]) as about thirty tensor
//! operations per step, each with its autodiff node, and its activations through scalar libm calls.
//! [`ds_lstm_train`] runs the same recurrence on the CPU backend with, per step, one matrix product
//! into a preallocated buffer and passes over the gates (the batch statistics included); its
//! backward ([`ds_lstm_train_grads`]) rebuilds every step's pre-activations with one product,
//! runs backward through time (per step one product for the recurrent part of dh and passes over
//! the gates, the batch norm's backward with batch statistics included) and gives the recurrent
//! weights' gradient as one more product over all steps.
//!
//! Other backends (wgpu) keep the step loop: only the CPU implements the operation.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
#[cfg(feature = "train")]
use burn::{
    backend::{Backend, TensorMetadata, backend_extension, tensor::FloatTensor},
    tensor::DType,
};

use crate::nn::split_steps;

/// The DS-LSTM's training recurrence and its backward through time, implemented by the CPU
/// backend (and routed through autodiff); see the module documentation.
#[cfg(feature = "train")]
#[backend_extension(Flex, Autodiff)]
pub trait DsLstmTrainOps: Backend {
    /// `pre` [B, T, 6H] (the input parts of gates `f, iT, iF, o` and of the candidates `C~T,
    /// C~F`, biases added), `w_h_t` [H, 6H], the recurrent batch norm's `gamma`, `beta` [4H] and
    /// `eps` → (h [B, T, H], the statistics [2, T, 4H]: each step's mean and biased variance of the
    /// sigmoid gates over the batch).
    fn ds_lstm_train(
        pre: FloatTensor<Self>,
        w_h_t: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The backward through time: `z` [B, T, 6H] every step's full pre-activations (`pre` plus
    /// h_{t−1}·W), `w_h_t`, `gamma`, `beta`, `eps` as above, `grad` [B, T, H] the loss's gradient
    /// with respect to every h → (the gradient with respect to `z` [B, T, 6H], which is also
    /// `pre`'s; those of `gamma` and `beta` as [2, 4H]).
    fn ds_lstm_train_backward(
        z: FloatTensor<Self>,
        w_h_t: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The DS-LSTM in training: `pre` [B, T, 6H], `w_h_t` [H, 6H], `gamma`, `beta` [4H] as in
/// [`DsLstmTrainOps::ds_lstm_train`] → (h [B, T, H], the per-step statistics [2, T, 4H], not
/// tracked). Fused on the CPU backend for f32 in builds with training; elsewhere (or with the
/// step loop asked for by [`crate::set_step_loop_only`]) the step loop, which gives the same
/// values and gradients.
pub fn ds_lstm_train(
    pre: Tensor<3>,
    w_h_t: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<3>, Tensor<3>) {
    #[cfg(not(feature = "train"))]
    return ds_lstm_train_steps(pre, w_h_t, gamma, beta, eps);
    #[cfg(feature = "train")]
    return ds_lstm_train_fused(pre, w_h_t, gamma, beta, eps);
}

/// [`ds_lstm_train`] in builds with training.
#[cfg(feature = "train")]
fn ds_lstm_train_fused(
    pre: Tensor<3>,
    w_h_t: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<3>, Tensor<3>) {
    let [b, t, _] = pre.dims();
    let fused = !crate::recurrence::step_loop_only()
        && crate::backend::kind_of(&pre.device()) == "cpu"
        && [pre.dtype(), w_h_t.dtype(), gamma.dtype(), beta.dtype()]
            .iter()
            .all(|d| *d == DType::F32)
        && b > 0
        && t > 0;
    if !fused {
        return ds_lstm_train_steps(pre, w_h_t, gamma, beta, eps);
    }
    let (h, stats) = <burn::backend::Dispatch as DsLstmTrainOps>::ds_lstm_train(
        pre.into_dispatch(),
        w_h_t.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps as f32,
    );
    (Tensor::from_dispatch(h), Tensor::from_dispatch(stats))
}

/// [`ds_lstm_train`] as a loop of tensor operations, whose gradient burn derives: the fallback
/// and the fused operation's reference.
pub fn ds_lstm_train_steps(
    pre: Tensor<3>,
    w_h_t: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<3>, Tensor<3>) {
    let [b, t, h6] = pre.dims();
    let hd = h6 / 6;
    let device = pre.device();
    if t == 0 {
        return (
            Tensor::zeros([b, 0, hd], &device),
            Tensor::zeros([2, 0, 4 * hd], &device),
        );
    }
    let gamma = gamma.reshape([1, 4 * hd]);
    let beta = beta.reshape([1, 4 * hd]);
    let mut h = Tensor::<2>::zeros([b, hd], &device);
    let mut c = Tensor::<2>::zeros([b, hd], &device);
    let (mut outs, mut means, mut vars) = (
        Vec::with_capacity(t),
        Vec::with_capacity(t),
        Vec::with_capacity(t),
    );
    for p in split_steps(pre) {
        let z = p + h.matmul(w_h_t.clone());
        // (1)-(4): sigmoid, then the recurrent batch norm with this step's statistics.
        let g = sigmoid(z.clone().narrow(1, 0, 4 * hd));
        let (mean, var) = crate::nn::row_stats(&g);
        means.push(mean.clone().detach());
        vars.push(var.clone().detach());
        let scale = gamma.clone() / (var + eps).sqrt();
        let shift = beta.clone() - mean * scale.clone();
        (c, h) = crate::recurrence::ds_lstm_cell(z, g * scale + shift, c);
        outs.push(h.clone());
    }
    let stats = Tensor::stack(vec![Tensor::cat(means, 0), Tensor::cat(vars, 0)], 0);
    (Tensor::stack(outs, 1), stats)
}

/// The gradients of [`ds_lstm_train`] with respect to `pre`, `w_h_t`, `gamma` and `beta`, given
/// its output `h` and the gradient `grad` of the loss with respect to `h`: the pre-activations
/// rebuilt with one product ([`crate::recurrence::rebuild_pre_activations`]), the sequential part
/// as [`DsLstmTrainOps::ds_lstm_train_backward`], the recurrent weights' gradient as one product.
#[cfg(feature = "train")]
#[allow(clippy::type_complexity)]
fn ds_lstm_train_grads<B: DsLstmTrainOps>(
    pre: FloatTensor<B>,
    w_h_t: FloatTensor<B>,
    [gamma, beta]: [FloatTensor<B>; 2],
    eps: f32,
    h: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
) {
    use burn::backend::Slice;
    let n = gamma.shape().dims::<1>()[0];
    let (z, h_prev) = crate::recurrence::rebuild_pre_activations::<B>(pre, w_h_t.clone(), h);
    let (dz, d_table) = B::ds_lstm_train_backward(z, w_h_t.clone(), gamma, beta, eps, grad);
    let dw = crate::recurrence::recurrent_weight_grad::<B>(&dz, h_prev, w_h_t);
    let row = |r: usize| {
        B::float_reshape(
            B::float_slice(d_table.clone(), &[Slice::from(r..r + 1), Slice::from(0..n)]),
            burn::tensor::Shape::new([n]),
        )
    };
    (dz, dw, row(0), row(1))
}

/// Training through the fused DS-LSTM: the autodiff wrapper records [`ds_lstm_train_grads`] as
/// the operation's backward; the statistics it returns are not tracked (they feed the running
/// statistics only).
#[cfg(feature = "train")]
mod autodiff {
    use super::{DsLstmTrainOps, ds_lstm_train_grads};
    use burn::backend::Backend;
    use burn::backend::autodiff::{
        Autodiff,
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    };
    use burn::backend::tensor::FloatTensor;

    #[derive(Debug)]
    struct DsLstmTrainBackward {
        eps: f32,
    }

    impl<B: Backend + DsLstmTrainOps> Backward<B, 4> for DsLstmTrainBackward {
        /// `pre`, `w_h_t`, `gamma`, `beta` and the output h.
        type State = (
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
        );

        fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
            let grad = grads.consume::<B>(&ops.node);
            let (pre, w, gamma, beta, h) = ops.state;
            let (d_pre, d_w, d_gamma, d_beta) =
                ds_lstm_train_grads::<B>(pre, w, [gamma, beta], self.eps, h, grad);
            for (node, d) in ops.parents.into_iter().zip([d_pre, d_w, d_gamma, d_beta]) {
                if let Some(node) = node {
                    grads.register::<B>(node.id, d);
                }
            }
        }
    }

    impl<B: Backend + DsLstmTrainOps, C: CheckpointStrategy> DsLstmTrainOps for Autodiff<B, C> {
        fn ds_lstm_train(
            pre: FloatTensor<Self>,
            w_h_t: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            eps: f32,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let op = DsLstmTrainBackward { eps }
                .prepare::<C>([pre.node(), w_h_t.node(), gamma.node(), beta.node()])
                .compute_bound()
                .stateful();
            match op {
                OpsKind::Tracked(prep) => {
                    let (pre, w) = (pre.primitive().clone(), w_h_t.primitive().clone());
                    let (gamma, beta) = (gamma.primitive().clone(), beta.primitive().clone());
                    let (h, stats) =
                        B::ds_lstm_train(pre.clone(), w.clone(), gamma.clone(), beta.clone(), eps);
                    let h = prep.finish((pre, w, gamma, beta, h.clone()), h);
                    (h, <FloatTensor<Self>>::new(stats))
                }
                OpsKind::UnTracked(prep) => {
                    let (h, stats) = B::ds_lstm_train(
                        pre.into_primitive(),
                        w_h_t.into_primitive(),
                        gamma.into_primitive(),
                        beta.into_primitive(),
                        eps,
                    );
                    (prep.finish(h), <FloatTensor<Self>>::new(stats))
                }
            }
        }

        /// Not tracked: no second derivatives are taken.
        fn ds_lstm_train_backward(
            z: FloatTensor<Self>,
            w_h_t: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            eps: f32,
            grad: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let (dz, d_table) = B::ds_lstm_train_backward(
                z.into_primitive(),
                w_h_t.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                eps,
                grad.into_primitive(),
            );
            (
                <FloatTensor<Self>>::new(dz),
                <FloatTensor<Self>>::new(d_table),
            )
        }
    }
}

#[cfg(feature = "train")]
mod cpu {
    use super::DsLstmTrainOps;
    use crate::recurrence::cpu::{
        by_isa, contiguous, step_output_grad, step_pre_activations, tanh_grad_f32,
    };
    use crate::recurrence::{sigmoid_f32, tanh_f32};
    use burn::backend::TensorMetadata;
    use burn::tensor::TensorData;
    use burn_flex::{Flex, FlexTensor};
    use duet_dsp::simd::Isa;

    impl DsLstmTrainOps for Flex {
        fn ds_lstm_train(
            pre: FlexTensor,
            w_h_t: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            eps: f32,
        ) -> (FlexTensor, FlexTensor) {
            let [b, t, width] = pre.shape().dims::<3>();
            let hd = width / 6;
            let [pre, w, gamma, beta] = [pre, w_h_t, gamma, beta].map(contiguous);
            let mut h = vec![0f32; b * t * hd];
            let mut stats = vec![0f32; 2 * t * 4 * hd];
            ds_train_cpu(
                pre.storage::<f32>(),
                w.storage::<f32>(),
                [gamma.storage::<f32>(), beta.storage::<f32>()],
                eps,
                &mut h,
                &mut stats,
                [b, t, hd],
            );
            (
                FlexTensor::from_data(TensorData::new(h, [b, t, hd])),
                FlexTensor::from_data(TensorData::new(stats, [2, t, 4 * hd])),
            )
        }

        fn ds_lstm_train_backward(
            z: FlexTensor,
            w_h_t: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            eps: f32,
            grad: FlexTensor,
        ) -> (FlexTensor, FlexTensor) {
            let [b, t, width] = z.shape().dims::<3>();
            let hd = width / 6;
            let [z, w, gamma, beta, grad] = [z, w_h_t, gamma, beta, grad].map(contiguous);
            let mut dz = vec![0f32; b * t * width];
            let mut d_table = vec![0f32; 2 * 4 * hd];
            ds_train_backward_cpu(
                z.storage::<f32>(),
                w.storage::<f32>(),
                [gamma.storage::<f32>(), beta.storage::<f32>()],
                eps,
                grad.storage::<f32>(),
                &mut dz,
                &mut d_table,
                [b, t, hd],
            );
            (
                FlexTensor::from_data(TensorData::new(dz, [b, t, width])),
                FlexTensor::from_data(TensorData::new(d_table, [2, 4 * hd])),
            )
        }
    }

    /// The batch's mean and biased variance of each column of the step's sigmoid gates `sig`
    /// [B, N] (two passes: the mean, then the mean square deviation from it, as
    /// `crate::nn::row_stats`), written to `mean`, `var` [N].
    #[inline(always)]
    fn column_stats(sig: &[f32], b: usize, mean: &mut [f32], var: &mut [f32]) {
        let n = mean.len();
        let var = &mut var[..n];
        mean.fill(0.0);
        var.fill(0.0);
        for s in 0..b {
            let row = &sig[s * n..][..n];
            for j in 0..n {
                mean[j] += row[j];
            }
        }
        let inv_b = 1.0 / b as f32;
        for m in mean.iter_mut() {
            *m *= inv_b;
        }
        for s in 0..b {
            let row = &sig[s * n..][..n];
            for j in 0..n {
                let d = row[j] - mean[j];
                var[j] += d * d;
            }
        }
        for v in var.iter_mut() {
            *v *= inv_b;
        }
    }

    by_isa! {
        /// [`DsLstmTrainOps::ds_lstm_train`] on f32 slices: `pre` [B, T, 6H], `w` [H, 6H],
        /// `[gamma, beta]` [4H] → `h` [B, T, H] and `stats` [2, T, 4H] (written). Per step one
        /// product h_{t−1}·W into the step's pre-activations, the sigmoid gates and their batch
        /// statistics, then the cell.
        fn ds_train_cpu(
            pre: &[f32],
            w: &[f32],
            table: [&[f32]; 2],
            eps: f32,
            h: &mut [f32],
            stats: &mut [f32],
            dims: [usize; 3],
        ) => ds_train_body
    }

    /// The body of [`ds_train_cpu`], inlined into each compilation.
    #[inline(always)]
    fn ds_train_body(
        pre: &[f32],
        w: &[f32],
        [gamma, beta]: [&[f32]; 2],
        eps: f32,
        h: &mut [f32],
        stats: &mut [f32],
        [b, t, hd]: [usize; 3],
    ) {
        let (width, n) = (6 * hd, 4 * hd);
        assert_eq!(pre.len(), b * t * width);
        assert_eq!(w.len(), hd * width);
        assert_eq!((gamma.len(), beta.len()), (n, n));
        assert_eq!(h.len(), b * t * hd);
        assert_eq!(stats.len(), 2 * t * n);
        let (gamma, beta) = (&gamma[..n], &beta[..n]);
        let (means, vars) = stats.split_at_mut(t * n);
        let mut z = vec![0f32; b * width];
        let mut sig = vec![0f32; b * n];
        let mut c = vec![0f32; b * hd];
        let (mut scale, mut shift) = (vec![0f32; n], vec![0f32; n]);
        for step in 0..t {
            step_pre_activations(&mut z, pre, h, w, step, [b, t, hd]);
            for s in 0..b {
                let (zs, gs) = (&z[s * width..][..n], &mut sig[s * n..][..n]);
                for j in 0..n {
                    gs[j] = sigmoid_f32(zs[j]);
                }
            }
            let (mean, var) = (&mut means[step * n..][..n], &mut vars[step * n..][..n]);
            column_stats(&sig, b, mean, var);
            // Each gate as an affine map of its sigmoid: gamma·(s − mean)/√(var + eps) + beta.
            for j in 0..n {
                scale[j] = gamma[j] / (var[j] + eps).sqrt();
                shift[j] = beta[j] - mean[j] * scale[j];
            }
            for s in 0..b {
                let zs = &z[s * width..][..width];
                let gs = &sig[s * n..][..n];
                let cs = &mut c[s * hd..][..hd];
                let o0 = (s * t + step) * hd;
                let hs = &mut h[o0..o0 + hd];
                let gate = |k: usize| {
                    (
                        &gs[k * hd..][..hd],
                        &scale[k * hd..][..hd],
                        &shift[k * hd..][..hd],
                    )
                };
                let ((sf, af, bf), (sit, ait, bit)) = (gate(0), gate(1));
                let ((sif, aif, bif), (so, ao, bo)) = (gate(2), gate(3));
                let (zct, zcf) = (&zs[4 * hd..][..hd], &zs[5 * hd..][..hd]);
                for j in 0..hd {
                    let f = sf[j] * af[j] + bf[j];
                    let i_t = sit[j] * ait[j] + bit[j];
                    let i_f = sif[j] * aif[j] + bif[j];
                    let o = so[j] * ao[j] + bo[j];
                    let c = f * cs[j] + i_t * tanh_f32(zct[j]) + i_f * tanh_f32(zcf[j]);
                    cs[j] = c;
                    hs[j] = o * tanh_f32(c);
                }
            }
        }
    }

    by_isa! {
        /// [`DsLstmTrainOps::ds_lstm_train_backward`] on f32 slices: `z` [B, T, 6H], `w`
        /// [H, 6H], `[gamma, beta]` [4H], `grad` [B, T, H] → `dz` [B, T, 6H] and `d_table`
        /// [2, 4H] (written). A forward pass without products rebuilds the normalised gates
        /// and the cell states; then from the last step back, per step one product
        /// dz_{t+1}·Wᵀ for the recurrent part of dh_t, the cell's backward, and the batch
        /// norm's backward over the batch.
        #[allow(clippy::too_many_arguments)]
        fn ds_train_backward_cpu(
            z: &[f32],
            w: &[f32],
            table: [&[f32]; 2],
            eps: f32,
            grad: &[f32],
            dz: &mut [f32],
            d_table: &mut [f32],
            dims: [usize; 3],
        ) => ds_train_backward_body
    }

    /// The body of [`ds_train_backward_cpu`], inlined into each compilation.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn ds_train_backward_body(
        z: &[f32],
        w: &[f32],
        [gamma, beta]: [&[f32]; 2],
        eps: f32,
        grad: &[f32],
        dz: &mut [f32],
        d_table: &mut [f32],
        [b, t, hd]: [usize; 3],
    ) {
        let (width, n) = (6 * hd, 4 * hd);
        assert_eq!(z.len(), b * t * width);
        assert_eq!(w.len(), hd * width);
        assert_eq!((gamma.len(), beta.len()), (n, n));
        assert_eq!(grad.len(), b * t * hd);
        assert_eq!(dz.len(), z.len());
        assert_eq!(d_table.len(), 2 * n);
        let (gamma, beta) = (&gamma[..n], &beta[..n]);
        // Rebuilt: x̂ (the standardised sigmoid gates) [B, T, 4H], 1/√(var + eps) [T, 4H] and the
        // cell states [B, T, H].
        let mut xhat = vec![0f32; b * t * n];
        let mut inv_std = vec![0f32; t * n];
        let mut cells = vec![0f32; b * t * hd];
        let zeros = vec![0f32; hd];
        let mut sig = vec![0f32; b * n];
        let (mut mean, mut var) = (vec![0f32; n], vec![0f32; n]);
        for step in 0..t {
            for s in 0..b {
                let (zs, gs) = (&z[(s * t + step) * width..][..n], &mut sig[s * n..][..n]);
                for j in 0..n {
                    gs[j] = sigmoid_f32(zs[j]);
                }
            }
            column_stats(&sig, b, &mut mean, &mut var);
            let inv = &mut inv_std[step * n..][..n];
            for j in 0..n {
                inv[j] = 1.0 / (var[j] + eps).sqrt();
            }
            for s in 0..b {
                let at = s * t + step;
                let (gs, xs) = (&sig[s * n..][..n], &mut xhat[at * n..][..n]);
                for j in 0..n {
                    xs[j] = (gs[j] - mean[j]) * inv[j];
                }
                let xs = &xhat[at * n..][..n];
                let zs = &z[at * width..][..width];
                let (done, rest) = cells.split_at_mut(at * hd);
                let prev = if step > 0 {
                    &done[(at - 1) * hd..][..hd]
                } else {
                    &zeros[..]
                };
                let cur = &mut rest[..hd];
                let (zct, zcf) = (&zs[4 * hd..][..hd], &zs[5 * hd..][..hd]);
                let norm =
                    |k: usize, j: usize| xs[k * hd + j] * gamma[k * hd + j] + beta[k * hd + j];
                for j in 0..hd {
                    cur[j] = norm(0, j) * prev[j]
                        + norm(1, j) * tanh_f32(zct[j])
                        + norm(2, j) * tanh_f32(zcf[j]);
                }
            }
        }
        let (d_gamma, d_beta) = d_table.split_at_mut(n);
        let d_gamma = &mut d_gamma[..n];
        d_gamma.fill(0.0);
        d_beta.fill(0.0);
        let mut dh = vec![0f32; b * hd];
        let mut carry = vec![0f32; b * hd];
        let (mut sum_dg, mut sum_dgx) = (vec![0f32; n], vec![0f32; n]);
        for step in (0..t).rev() {
            step_output_grad(&mut dh, grad, dz, w, step, [b, t, hd]);
            // The cell's backward: the candidates' pre-activation gradients, and the gradient
            // with respect to each normalised gate, kept in dz's gate part until the batch norm's
            // backward below turns it into the pre-activations'.
            for s in 0..b {
                let at = s * t + step;
                let xs = &xhat[at * n..][..n];
                let zs = &z[at * width..][..width];
                let c_now = &cells[at * hd..][..hd];
                let c_prev = if step > 0 {
                    &cells[(at - 1) * hd..][..hd]
                } else {
                    &zeros[..]
                };
                let (dgf, rest) = dz[at * width..][..width].split_at_mut(hd);
                let (dgit, rest) = rest.split_at_mut(hd);
                let (dgif, rest) = rest.split_at_mut(hd);
                let (dgo, rest) = rest.split_at_mut(hd);
                let (dzct, dzcf) = rest.split_at_mut(hd);
                cell_backward(
                    [xs, gamma, beta],
                    [&zs[4 * hd..][..hd], &zs[5 * hd..][..hd]],
                    [c_now, c_prev],
                    &dh[s * hd..][..hd],
                    &mut carry[s * hd..][..hd],
                    [dgf, dgit, dgif, dgo],
                    [dzct, &mut dzcf[..hd]],
                );
            }
            // The batch norm's backward over the batch at this step, for each gate column j:
            // with dg the gradient of the normalised gate and x̂ the standardised sigmoid,
            // dγ += Σ dg·x̂, dβ += Σ dg, and the sigmoid's gradient
            // γ/σ · (dg − (Σ dg + x̂·Σ dg·x̂)/B); then the sigmoid's own, s·(1 − s).
            sum_dg.fill(0.0);
            sum_dgx.fill(0.0);
            for s in 0..b {
                let at = s * t + step;
                let (dg, xs) = (&dz[at * width..][..n], &xhat[at * n..][..n]);
                for j in 0..n {
                    sum_dg[j] += dg[j];
                    sum_dgx[j] += dg[j] * xs[j];
                }
            }
            for j in 0..n {
                d_gamma[j] += sum_dgx[j];
                d_beta[j] += sum_dg[j];
            }
            let inv = &inv_std[step * n..][..n];
            let inv_b = 1.0 / b as f32;
            for s in 0..b {
                let at = s * t + step;
                let xs = &xhat[at * n..][..n];
                let zs = &z[at * width..][..n];
                let dg = &mut dz[at * width..][..n];
                for j in 0..n {
                    let d_sig =
                        gamma[j] * inv[j] * (dg[j] - (sum_dg[j] + xs[j] * sum_dgx[j]) * inv_b);
                    let sg = sigmoid_f32(zs[j]);
                    dg[j] = d_sig * sg * (1.0 - sg);
                }
            }
        }
    }

    /// One row of the cell's backward (H units, equations (5)-(8) of paper §2.3.4): from the
    /// standardised gates with the batch norm's `gamma`, `beta` ([4H] each), the candidates'
    /// pre-activations, the cells [c_t, c_{t−1}] and dh_t → the gradients of the normalised gates
    /// f, iT, iF, o and of the candidates' pre-activations; the cell's gradient `carry` (dc_{t+1}
    /// · f_{t+1} in, dc_t · f_t out). Distinct `&mut` outputs so that the loop vectorises (as
    /// `crate::recurrence`'s LSTM gate pass).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn cell_backward(
        [xs, gamma, beta]: [&[f32]; 3],
        [zct, zcf]: [&[f32]; 2],
        [c_now, c_prev]: [&[f32]; 2],
        dh: &[f32],
        carry: &mut [f32],
        [dgf, dgit, dgif, dgo]: [&mut [f32]; 4],
        [dzct, dzcf]: [&mut [f32]; 2],
    ) {
        let hd = carry.len();
        let (zct, zcf, c_now, c_prev, dh) = (
            &zct[..hd],
            &zcf[..hd],
            &c_now[..hd],
            &c_prev[..hd],
            &dh[..hd],
        );
        let (dgf, dgit, dgif, dgo) = (
            &mut dgf[..hd],
            &mut dgit[..hd],
            &mut dgif[..hd],
            &mut dgo[..hd],
        );
        let (dzct, dzcf) = (&mut dzct[..hd], &mut dzcf[..hd]);
        let part = |k: usize| {
            (
                &xs[k * hd..][..hd],
                &gamma[k * hd..][..hd],
                &beta[k * hd..][..hd],
            )
        };
        let ((xf, gf, bf), (xit, git, bit)) = (part(0), part(1));
        let ((xif, gif, bif), (xo, go, bo)) = (part(2), part(3));
        for j in 0..hd {
            let f = xf[j] * gf[j] + bf[j];
            let i_t = xit[j] * git[j] + bit[j];
            let i_f = xif[j] * gif[j] + bif[j];
            let o = xo[j] * go[j] + bo[j];
            let (ct, cf) = (tanh_f32(zct[j]), tanh_f32(zcf[j]));
            let c = c_now[j];
            let tc = tanh_f32(c);
            let dc = dh[j] * o * tanh_grad_f32(c, tc) + carry[j];
            carry[j] = dc * f;
            dgf[j] = dc * c_prev[j];
            dgit[j] = dc * ct;
            dgif[j] = dc * cf;
            dgo[j] = dh[j] * tc;
            dzct[j] = dc * i_t * tanh_grad_f32(zct[j], ct);
            dzcf[j] = dc * i_f * tanh_grad_f32(zcf[j], cf);
        }
    }
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use super::*;
    use crate::recurrence::tests::random;
    use crate::rng::SplitMix64;

    /// The largest |a − r| against the largest |r|; asserts it within `tol` of max(|r|, 1).
    fn close(a: Tensor<1>, r: Tensor<1>, tol: f32, what: &str) {
        let scale: f32 = r.clone().abs().max().into_scalar();
        let d: f32 = (a - r).abs().max().into_scalar();
        println!("{what}: max |fused − steps| = {d:.2e} (largest {scale:.2e})");
        assert!(d.is_finite() && d <= tol * scale.max(1.0), "{what}: {d}");
    }

    /// Training through the fused DS-LSTM gives the values, statistics and gradients (with
    /// respect to the input projections, the recurrent weights and the batch norm's gamma and
    /// beta) that burn derives for the step loop, on the CPU: within 1e-5 of the largest value
    /// (at least 1e-5 absolute). Shapes: one
    /// sequence (variance 0 at every step), one step, odd sizes, the shipped model's H = 64 over
    /// 100 steps, and saturated gates. The loss weighs every hidden state by a random factor.
    #[test]
    fn fused_training_matches_the_step_loop() {
        let device = crate::backend::cpu_device().autodiff();
        let mut rng = SplitMix64::new(21);
        for (b, t, hd, scale) in [
            (1, 4, 5, 1.0),
            (3, 1, 7, 1.0),
            (5, 9, 11, 1.0),
            (16, 100, 64, 0.5),
            (4, 20, 8, 20.0),
        ] {
            let pre = random([b, t, 6 * hd], scale, &mut rng, &device);
            let w = random([hd, 6 * hd], scale / (hd as f64).sqrt(), &mut rng, &device);
            let gamma = random([4 * hd], 0.1, &mut rng, &device) + 0.1;
            let beta = random([4 * hd], 0.1, &mut rng, &device);
            let weights = random([b, t, hd], 1.0, &mut rng, &device);
            let run = |fused: bool| {
                let (pre, w) = (pre.clone().require_grad(), w.clone().require_grad());
                let (gamma, beta) = (gamma.clone().require_grad(), beta.clone().require_grad());
                let f = if fused {
                    ds_lstm_train
                } else {
                    ds_lstm_train_steps
                };
                let (h, stats) = f(pre.clone(), w.clone(), gamma.clone(), beta.clone(), 1e-5);
                let g = (h.clone() * weights.clone()).sum().backward();
                let grads = [
                    pre.grad(&g).expect("pre").flatten::<1>(0, 2),
                    w.grad(&g).expect("w").flatten::<1>(0, 1),
                    gamma.grad(&g).expect("gamma"),
                    beta.grad(&g).expect("beta"),
                ];
                (h.flatten::<1>(0, 2), stats.flatten::<1>(0, 2), grads)
            };
            let ((fh, fs, fg), (sh, ss, sg)) = (run(true), run(false));
            let what = format!("b={b} t={t} h={hd} scale={scale}");
            close(fh, sh, 1e-5, &format!("h {what}"));
            close(fs, ss, 1e-5, &format!("stats {what}"));
            for (name, (a, r)) in ["pre", "w", "gamma", "beta"]
                .iter()
                .zip(fg.into_iter().zip(sg))
            {
                close(a, r, 1e-5, &format!("grad {name} {what}"));
            }
        }
    }

    /// The other backends (wgpu: lavapipe in CI) have no fused training operation, whose dispatch
    /// would panic there: [`ds_lstm_train`] takes the step loop on them, with the step loop's
    /// values and a gradient for the recurrent weights.
    #[test]
    fn other_backends_train_through_the_step_loop() {
        let mut rng = SplitMix64::new(22);
        for device in crate::backend::available_devices().into_iter().skip(1) {
            let kind = crate::backend::kind_of(&device);
            let device = device.autodiff();
            let pre = random([3, 5, 24], 1.0, &mut rng, &device).require_grad();
            let w = random([4, 24], 0.5, &mut rng, &device).require_grad();
            let gamma = random([16], 0.1, &mut rng, &device) + 0.1;
            let beta = random([16], 0.1, &mut rng, &device);
            let args = (pre, w.clone(), gamma, beta);
            let (h, stats) = ds_lstm_train(
                args.0.clone(),
                args.1.clone(),
                args.2.clone(),
                args.3.clone(),
                1e-5,
            );
            let (hs, ss) = ds_lstm_train_steps(args.0, args.1, args.2, args.3, 1e-5);
            close(
                h.clone().flatten::<1>(0, 2),
                hs.flatten::<1>(0, 2),
                1e-6,
                &format!("h {kind}"),
            );
            close(
                stats.flatten::<1>(0, 2),
                ss.flatten::<1>(0, 2),
                1e-6,
                &format!("stats {kind}"),
            );
            let g = h.sum().backward();
            assert!(
                w.grad(&g).is_some(),
                "{kind}: no gradient for the recurrent weights"
            );
        }
    }
}
