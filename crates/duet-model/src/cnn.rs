//! The CNN branches' two strided-view computations (paper §3.1: conv → BN → ReLU → max-pool) as
//! backend operations, so that training differentiates them with a backward of their own.
//!
//! [`offset_products`] is the kernel-offset sum of a channels-last convolution and
//! [`max_pool_valid`] the k×k max pooling of the valid columns (see `crate::nn::conv_rows` and
//! `crate::nn::max_pool_padded` for the layouts). Their forward is the composition of tensor
//! operations each backend already has (the trait's default bodies), except on the CPU, where the
//! pooling and its backward are one pass each over the windows, and the offset products and their
//! kernel's gradient one matrix product per tile of rows with all kernel offsets side by side.
//! What changes is training: burn's autodiff differentiates every slice of a tensor by writing a
//! zero tensor the size of its source and assigning the slice's gradient into it, so the 16 kernel-offset
//! views of the second conv and the 4 pooling views each cost a full-size zero-filled tensor in the
//! backward (15 % of a CPU training step in `perf`). Here:
//!
//! - the gradient of [`offset_products`] with respect to its input is itself an offset-product sum
//!   (a transposed convolution: the output's gradient, zero-extended at both ends, against the
//!   kernel flipped in both axes with its channel axes swapped), read through views in place; the
//!   kernel's gradient is one product per offset;
//! - the gradient of [`max_pool_valid`] goes to each window's maximum (the first on ties, as in the
//!   forward's running maximum): one write per window into one zero tensor.
//!
//! Both are tested against burn's own gradients of the same composition.

// The backward (the autodiff implementation) serves training only.
#![cfg_attr(not(feature = "train"), allow(dead_code))]

use burn::backend::{Backend, Slice, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::Shape;

/// The CNN's strided-view operations, implemented by each backend (see the module documentation).
/// Every backend runs the default bodies; autodiff adds the backward.
#[backend_extension(
    Cube,
    Flex,
    Fusion: cfg(not(target_family = "wasm")),
    Autodiff: cfg(feature = "train")
)]
pub trait CnnOps: Backend {
    /// `rows` [B, N, Cin] (a channels-last image's rows, row f·T + t, with T = `t`), `w` [kf, kt,
    /// Cin, Cout] → [B, `len`, Cout] where output row r = Σ_{i,j} rows[r + i·T + j] · w[i, j].
    /// Needs N ≥ `len` + (kf − 1)·T + kt − 1.
    #[fusion(default)]
    fn offset_products(
        rows: FloatTensor<Self>,
        w: FloatTensor<Self>,
        t: usize,
        len: usize,
    ) -> FloatTensor<Self> {
        offset_products_of::<Self>(rows, w, t, len)
    }

    /// The gradient of [`CnnOps::offset_products`] with respect to its kernel: `rows` [B, N, Cin],
    /// `grad` [B, len, Cout] → [kf, kt, Cin, Cout], entry (i, j) = Σ_b Σ_r rows[r + i·T + j]ᵀ ·
    /// grad[r].
    #[fusion(default)]
    fn offset_products_kernel_grad(
        rows: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kf: usize,
        kt: usize,
        t: usize,
    ) -> FloatTensor<Self> {
        kernel_grad_of::<Self>(rows, grad, [kf, kt], t)
    }

    /// `x` [B, F, T, C] → [B, F / k, `valid` / k, C]: the maximum of each k×k window (stride k)
    /// of the first `valid` columns (trailing rows and columns dropped).
    #[fusion(default)]
    fn max_pool_valid(x: FloatTensor<Self>, valid: usize, k: usize) -> FloatTensor<Self> {
        max_pool_of::<Self>(x, valid, k)
    }

    /// The gradient of [`CnnOps::max_pool_valid`] with respect to `x` [B, F, T, C]: `grad` [B,
    /// F / k, `valid` / k, C] goes to each window's maximum, the first one on ties (the forward's
    /// running maximum takes a later view only where it is greater); zero elsewhere.
    #[fusion(default)]
    fn max_pool_valid_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        valid: usize,
        k: usize,
    ) -> FloatTensor<Self> {
        max_pool_backward_of::<Self>(x, grad, valid, k)
    }
}

/// The views of one kernel offset of [`CnnOps::offset_products`]: rows `start..start + len`.
fn rows_view<B: Backend>(rows: FloatTensor<B>, start: usize, len: usize) -> FloatTensor<B> {
    let [b, _, c] = rows.shape().dims::<3>();
    B::float_slice(
        rows,
        &[
            Slice::from(0..b),
            Slice::from(start..start + len),
            Slice::from(0..c),
        ],
    )
}

/// One kernel offset's matrix of `w` [kf, kt, Cin, Cout] as [1, Cin, Cout].
fn weight_at<B: Backend>(w: FloatTensor<B>, i: usize, j: usize) -> FloatTensor<B> {
    let [_, _, cin, cout] = w.shape().dims::<4>();
    let wij = B::float_slice(
        w,
        &[
            Slice::from(i..i + 1),
            Slice::from(j..j + 1),
            Slice::from(0..cin),
            Slice::from(0..cout),
        ],
    );
    B::float_reshape(wij, Shape::new([1, cin, cout]))
}

/// The default body of [`CnnOps::offset_products`]: one [len, Cin] × [Cin, Cout] product per
/// kernel offset on a view of `rows` (the GEMM reads it in place), accumulated.
fn offset_products_of<B: Backend>(
    rows: FloatTensor<B>,
    w: FloatTensor<B>,
    t: usize,
    len: usize,
) -> FloatTensor<B> {
    let [kf, kt, _, _] = w.shape().dims::<4>();
    let mut acc: Option<FloatTensor<B>> = None;
    for i in 0..kf {
        for j in 0..kt {
            let p = B::float_matmul(
                rows_view::<B>(rows.clone(), i * t + j, len),
                weight_at::<B>(w.clone(), i, j),
            );
            acc = Some(match acc {
                Some(a) => B::float_add(a, p),
                None => p,
            });
        }
    }
    acc.expect("a kernel has at least one offset")
}

/// The k² strided views of [`CnnOps::max_pool_valid`], in the order the running maximum visits
/// them (row offset outer, column offset inner).
fn pool_views(dims: [usize; 4], valid: usize, k: usize) -> Vec<[Slice; 4]> {
    let [b, f, _, c] = dims;
    let (fo, to) = (f / k, valid / k);
    let mut views = Vec::with_capacity(k * k);
    for i in 0..k {
        for j in 0..k {
            views.push([
                Slice::from(0..b),
                Slice::new(i as isize, Some((i + k * fo) as isize), k as isize),
                Slice::new(j as isize, Some((j + k * to) as isize), k as isize),
                Slice::from(0..c),
            ]);
        }
    }
    views
}

/// The default body of [`CnnOps::max_pool_valid`]: the running maximum of the k² strided views,
/// max(a, b) written a + relu(b − a) (burn's `max_pair` is a comparison plus a masked select,
/// twice as slow on the CPU backend).
fn max_pool_of<B: Backend>(x: FloatTensor<B>, valid: usize, k: usize) -> FloatTensor<B> {
    let views = pool_views(x.shape().dims::<4>(), valid, k);
    let mut out: Option<FloatTensor<B>> = None;
    for s in &views {
        let v = B::float_slice(x.clone(), s);
        out = Some(match out {
            Some(o) => B::float_add(o.clone(), B::relu(B::float_sub(v, o))),
            None => v,
        });
    }
    out.expect("the pool size is at least 1")
}

/// [`CnnOps::offset_products`] on tensors: `rows` [B, N, Cin], `w` [kf, kt, Cin, Cout].
pub fn offset_products(rows: Tensor<3>, w: Tensor<4>, t: usize, len: usize) -> Tensor<3> {
    let out = <burn::backend::Dispatch as CnnOps>::offset_products(
        rows.into_dispatch(),
        w.into_dispatch(),
        t,
        len,
    );
    Tensor::from_dispatch(out)
}

/// [`CnnOps::max_pool_valid`] on tensors: `x` [B, F, T, C].
pub fn max_pool_valid(x: Tensor<4>, valid: usize, k: usize) -> Tensor<4> {
    let out = <burn::backend::Dispatch as CnnOps>::max_pool_valid(x.into_dispatch(), valid, k);
    Tensor::from_dispatch(out)
}

/// The backward of [`CnnOps::offset_products`]: the gradients with respect to `rows` and `w`
/// from `grad` [B, len, Cout], each only where `want_*` asks.
fn offset_products_backward<B: CnnOps>(
    rows: FloatTensor<B>,
    w: FloatTensor<B>,
    grad: FloatTensor<B>,
    t: usize,
    [want_rows, want_w]: [bool; 2],
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
    let [b, n, _] = rows.shape().dims::<3>();
    let [kf, kt, _, cout] = w.shape().dims::<4>();
    let len = grad.shape().dims::<3>()[1];
    let device = grad.device();
    let dtype = grad.dtype();
    let d_rows = want_rows.then(|| {
        // rows[s] meets grad[s − i·T − j] through w[i, j]: with P = (kf − 1)·T + kt − 1 zeros in
        // front of grad and the offsets reversed (i' = kf − 1 − i, j' = kt − 1 − j), that is
        // Σ_{i',j'} padded[s + i'·T + j'] · w[i', j']ᵀ — the same offset-product sum.
        let p = (kf - 1) * t + kt - 1;
        let zeros =
            |rows: usize| B::float_zeros(Shape::new([b, rows, cout]), &device, dtype.into());
        let padded = B::float_cat(vec![zeros(p), grad.clone(), zeros(n - len)], 1);
        let w_rev = B::float_swap_dims(B::float_flip(w.clone(), &[0, 1]), 2, 3);
        B::offset_products(padded, w_rev, t, n)
    });
    let d_w = want_w.then(|| B::offset_products_kernel_grad(rows, grad, kf, kt, t));
    (d_rows, d_w)
}

/// The default body of [`CnnOps::offset_products_kernel_grad`]: one product per kernel offset, a
/// view of `rows` transposed against `grad`, summed over the batch.
fn kernel_grad_of<B: Backend>(
    rows: FloatTensor<B>,
    grad: FloatTensor<B>,
    [kf, kt]: [usize; 2],
    t: usize,
) -> FloatTensor<B> {
    let cin = rows.shape().dims::<3>()[2];
    let [_, len, cout] = grad.shape().dims::<3>();
    let mut per_offset = Vec::with_capacity(kf * kt);
    for i in 0..kf {
        for j in 0..kt {
            let view = rows_view::<B>(rows.clone(), i * t + j, len);
            let g = B::float_matmul(B::float_swap_dims(view, 1, 2), grad.clone());
            per_offset.push(B::float_sum_dim(g, 0)); // [1, Cin, Cout]
        }
    }
    B::float_reshape(B::float_cat(per_offset, 0), Shape::new([kf, kt, cin, cout]))
}

/// The default body of [`CnnOps::max_pool_valid_backward`]: which view holds each window's
/// maximum, then each view's share of `grad` written into one zero tensor the size of `x`.
fn max_pool_backward_of<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    valid: usize,
    k: usize,
) -> FloatTensor<B> {
    let shape = x.shape();
    let device = x.device();
    let dtype = grad.dtype();
    let bool_dtype = burn::backend::get_or_init_device_settings::<B>(&device).bool_dtype;
    let views = pool_views(shape.dims::<4>(), valid, k);
    // Which view holds each window's maximum, as a float index.
    let mut best = B::float_slice(x.clone(), &views[0]);
    let mut winner = B::float_zeros(best.shape(), &device, dtype.into());
    for (n, s) in views.iter().enumerate().skip(1) {
        let v = B::float_slice(x.clone(), s);
        let greater = B::float_greater(v.clone(), best.clone(), bool_dtype);
        best = B::float_mask_where(best, greater.clone(), v);
        winner = B::float_mask_fill(winner, greater, (n as f32).into());
    }
    let mut d_x = B::float_zeros(shape, &device, dtype.into());
    for (n, s) in views.iter().enumerate() {
        let other = B::float_not_equal_elem(winner.clone(), (n as f32).into(), bool_dtype);
        let g = B::float_mask_fill(grad.clone(), other, 0f32.into());
        d_x = B::float_slice_assign(d_x, s, g);
    }
    d_x
}

/// Training: burn's autodiff wrapper records the backwards above.
#[cfg(feature = "train")]
mod autodiff {
    use super::{CnnOps, offset_products_backward};
    use burn::backend::Backend;
    use burn::backend::autodiff::{
        Autodiff,
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    };
    use burn::backend::tensor::FloatTensor;

    #[derive(Debug)]
    struct OffsetProductsBackward {
        t: usize,
    }

    impl<B: Backend + CnnOps> Backward<B, 2> for OffsetProductsBackward {
        /// `rows` and `w`.
        type State = (FloatTensor<B>, FloatTensor<B>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_rows, node_w] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (rows, w) = ops.state;
            let want = [node_rows.is_some(), node_w.is_some()];
            let (d_rows, d_w) = offset_products_backward::<B>(rows, w, grad, self.t, want);
            if let (Some(node), Some(d)) = (node_rows, d_rows) {
                grads.register::<B>(node.id, d);
            }
            if let (Some(node), Some(d)) = (node_w, d_w) {
                grads.register::<B>(node.id, d);
            }
        }
    }

    #[derive(Debug)]
    struct MaxPoolBackward {
        valid: usize,
        k: usize,
    }

    impl<B: Backend + CnnOps> Backward<B, 1> for MaxPoolBackward {
        /// The input.
        type State = FloatTensor<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            if let Some(node) = node_x {
                let d = B::max_pool_valid_backward(ops.state, grad, self.valid, self.k);
                grads.register::<B>(node.id, d);
            }
        }
    }

    impl<B: Backend + CnnOps, C: CheckpointStrategy> CnnOps for Autodiff<B, C> {
        fn offset_products(
            rows: FloatTensor<Self>,
            w: FloatTensor<Self>,
            t: usize,
            len: usize,
        ) -> FloatTensor<Self> {
            match (OffsetProductsBackward { t })
                .prepare::<C>([rows.node(), w.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (rows, w) = (rows.primitive().clone(), w.primitive().clone());
                    let out = B::offset_products(rows.clone(), w.clone(), t, len);
                    prep.finish((rows, w), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::offset_products(
                    rows.into_primitive(),
                    w.into_primitive(),
                    t,
                    len,
                )),
            }
        }

        fn max_pool_valid(x: FloatTensor<Self>, valid: usize, k: usize) -> FloatTensor<Self> {
            match (MaxPoolBackward { valid, k })
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let x = x.primitive().clone();
                    let out = B::max_pool_valid(x.clone(), valid, k);
                    prep.finish(x, out)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::max_pool_valid(x.into_primitive(), valid, k))
                }
            }
        }
    }
}

mod backends {
    use super::CnnOps;
    use crate::recurrence::cpu::contiguous;
    use burn::backend::TensorMetadata;
    use burn::tensor::{DType, TensorData};
    use burn_flex::{Flex, FlexTensor};

    /// On the CPU the pooling and its backward are one pass each over the windows (the default
    /// bodies take several element-wise passes per view, and the backward's masked selects are
    /// scalar loops in burn-flex).
    impl CnnOps for Flex {
        /// All kernel offsets in one product per tile of rows (`offset_products_f32`): the
        /// default body's one product per offset reads the whole input
        /// once per offset, and with few output channels (16 in the second conv) each is a narrow
        /// product that runs at a fraction of the GEMM's speed, into a fresh zero-filled tensor.
        fn offset_products(rows: FlexTensor, w: FlexTensor, t: usize, len: usize) -> FlexTensor {
            if rows.dtype() != DType::F32 || w.dtype() != DType::F32 {
                return super::offset_products_of::<Flex>(rows, w, t, len);
            }
            let [b, n, cin] = rows.shape().dims::<3>();
            let [kf, kt, _, cout] = w.shape().dims::<4>();
            let (rows, w) = (contiguous(rows), contiguous(w));
            let mut out = vec![0f32; b * len * cout];
            offset_products_f32(
                rows.storage::<f32>(),
                w.storage::<f32>(),
                [b, n, cin],
                [kf, kt, cout],
                t,
                len,
                &mut out,
            );
            FlexTensor::from_data(TensorData::new(out, [b, len, cout]))
        }

        /// One product per tile of input rows: the tile's rows transposed against the output
        /// gradients each of them met, side by side ([Cin, tile] × [tile, kf·kt·Cout]),
        /// accumulated; the default body's products per offset have 16 output columns.
        fn offset_products_kernel_grad(
            rows: FlexTensor,
            grad: FlexTensor,
            kf: usize,
            kt: usize,
            t: usize,
        ) -> FlexTensor {
            if rows.dtype() != DType::F32 || grad.dtype() != DType::F32 {
                return super::kernel_grad_of::<Flex>(rows, grad, [kf, kt], t);
            }
            let [b, n, cin] = rows.shape().dims::<3>();
            let [_, len, cout] = grad.shape().dims::<3>();
            let (rows, grad) = (contiguous(rows), contiguous(grad));
            let d_w = kernel_grad_f32(
                rows.storage::<f32>(),
                grad.storage::<f32>(),
                [b, n, cin],
                [kf, kt, len, cout],
                t,
            );
            FlexTensor::from_data(TensorData::new(d_w, [kf, kt, cin, cout]))
        }

        fn max_pool_valid(x: FlexTensor, valid: usize, k: usize) -> FlexTensor {
            if x.dtype() != DType::F32 {
                return super::max_pool_of::<Flex>(x, valid, k);
            }
            let [b, f, t, c] = x.shape().dims::<4>();
            let (fo, to) = (f / k, valid / k);
            let x = contiguous(x);
            let x = x.storage::<f32>();
            let mut out = vec![0f32; b * fo * to * c];
            for (n, window) in out.chunks_exact_mut(c).enumerate() {
                let (bi, rest) = (n / (fo * to), n % (fo * to));
                let (oi, oj) = (rest / to, rest % to);
                for i in 0..k {
                    for j in 0..k {
                        let at = ((bi * f + oi * k + i) * t + oj * k + j) * c;
                        let v = &x[at..at + c];
                        if i == 0 && j == 0 {
                            window.copy_from_slice(v);
                        } else {
                            // Greater only: a tie keeps the earlier view, as the backward
                            // assumes. A select, not a conditional store, so that it vectorises.
                            for (o, &v) in window.iter_mut().zip(v) {
                                let m = *o;
                                *o = if v > m { v } else { m };
                            }
                        }
                    }
                }
            }
            FlexTensor::from_data(TensorData::new(out, [b, fo, to, c]))
        }

        fn max_pool_valid_backward(
            x: FlexTensor,
            grad: FlexTensor,
            valid: usize,
            k: usize,
        ) -> FlexTensor {
            if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
                return super::max_pool_backward_of::<Flex>(x, grad, valid, k);
            }
            let [b, f, t, c] = x.shape().dims::<4>();
            let (fo, to) = (f / k, valid / k);
            let (x, grad) = (contiguous(x), contiguous(grad));
            let (x, grad) = (x.storage::<f32>(), grad.storage::<f32>());
            let mut dx = vec![0f32; b * f * t * c];
            let mut best = vec![0f32; c];
            // The window offset (i·k + j) of each channel's maximum so far.
            let mut which = vec![0u32; c];
            let offset = |bi: usize, oi: usize, oj: usize, i: usize, j: usize| {
                ((bi * f + oi * k + i) * t + oj * k + j) * c
            };
            for (n, g) in grad.chunks_exact(c).enumerate() {
                let (bi, rest) = (n / (fo * to), n % (fo * to));
                let (oi, oj) = (rest / to, rest % to);
                let first = offset(bi, oi, oj, 0, 0);
                best.copy_from_slice(&x[first..first + c]);
                which.fill(0);
                for i in 0..k {
                    for j in 0..k {
                        if i == 0 && j == 0 {
                            continue;
                        }
                        let at = offset(bi, oi, oj, i, j);
                        let id = (i * k + j) as u32;
                        // Selects, so that it vectorises; greater only (ties keep the first).
                        for ((b, w), &v) in
                            best.iter_mut().zip(which.iter_mut()).zip(&x[at..at + c])
                        {
                            let gt = v > *b;
                            *b = if gt { v } else { *b };
                            *w = if gt { id } else { *w };
                        }
                    }
                }
                // Every position of the window written whole, the gradient where it held the
                // maximum and 0 elsewhere: contiguous selects that vectorise, where one scattered
                // store per channel (with a division to find its position) did not. Windows do
                // not overlap (stride k), so each element is written once.
                for i in 0..k {
                    for j in 0..k {
                        let at = offset(bi, oi, oj, i, j);
                        let id = (i * k + j) as u32;
                        for ((d, &w), &g) in dx[at..at + c].iter_mut().zip(&which).zip(g) {
                            *d = if w == id { g } else { 0.0 };
                        }
                    }
                }
            }
            FlexTensor::from_data(TensorData::new(dx, [b, f, t, c]))
        }
    }

    impl CnnOps for burn_cubecl::CubeBackend {}

    /// [`CnnOps::offset_products_kernel_grad`] on row-major f32 slices: `rows` [B, N, Cin],
    /// `grad` [B, len, Cout] → [kf, kt, Cin, Cout]. With more input than output channels (the
    /// second conv), for each tile of input rows s, G holds the gradient of every output row s
    /// meets, grad[s − (i·T + j)] in block (i, j) (zero where that row does not exist), and D +=
    /// rows[s]ᵀ · G ([Cin, tile] × [tile, kf·kt·Cout]); otherwise (the first conv), the other way
    /// round: the input rows each output row meets, gathered as in the forward.
    fn kernel_grad_f32(
        rows: &[f32],
        grad: &[f32],
        [b, n, cin]: [usize; 3],
        [kf, kt, len, cout]: [usize; 4],
        t: usize,
    ) -> Vec<f32> {
        let offsets = kernel_offsets(kf, kt, t);
        if cin <= cout {
            // Fewer input than output channels (the first conv: 1 → 64): gather the input rows
            // instead, P [tile, kf·kt·Cin] as in the forward, and D [kf·kt·Cin, Cout] += Pᵀ ·
            // grad[r] — already [kf, kt, Cin, Cout]. Gathering the gradient rows would copy
            // kf·kt·Cout floats per row where this copies kf·kt·Cin.
            let depth = offsets.len() * cin;
            let mut d_w = vec![0f32; depth * cout];
            let tile = (TILE_FLOATS / depth.max(1)).max(8);
            let mut p = vec![0f32; tile.min(len) * depth];
            for bi in 0..b {
                let x = &rows[bi * n * cin..(bi + 1) * n * cin];
                let gr = &grad[bi * len * cout..(bi + 1) * len * cout];
                for r0 in (0..len).step_by(tile) {
                    let m = tile.min(len - r0);
                    gather_rows(x, cin, &offsets, r0, &mut p[..m * depth]);
                    crate::recurrence::cpu::product_t(
                        (depth, cout, m),
                        (&mut d_w, cout),
                        (&p, 0, depth),
                        (&gr[r0 * cout..], 1, cout),
                    );
                }
            }
            return d_w;
        }
        let wide = offsets.len() * cout;
        let mut d_all = vec![0f32; cin * wide];
        let reach = (len + offsets.last().copied().unwrap_or(0)).min(n);
        let tile = (TILE_FLOATS / wide.max(1)).max(8);
        let mut g = vec![0f32; tile.min(reach) * wide];
        for bi in 0..b {
            let x = &rows[bi * n * cin..(bi + 1) * n * cin];
            let gr = &grad[bi * len * cout..(bi + 1) * len * cout];
            for s0 in (0..reach).step_by(tile) {
                let m = tile.min(reach - s0);
                for (r, row) in g.chunks_exact_mut(wide).take(m).enumerate() {
                    let s = s0 + r;
                    for (part, &off) in row.chunks_exact_mut(cout).zip(&offsets) {
                        match s.checked_sub(off).filter(|&r| r < len) {
                            Some(r) => part.copy_from_slice(&gr[r * cout..][..cout]),
                            None => part.fill(0.0),
                        }
                    }
                }
                // D [Cin, wide] += xᵀ [Cin, m] · G [m, wide]: x read in place, transposed.
                crate::recurrence::cpu::product_t(
                    (cin, wide, m),
                    (&mut d_all, wide),
                    (x, s0 * cin, cin),
                    (&g, 1, wide),
                );
            }
        }
        // D's block o = (i, j) is w(i, j)'s gradient: d_w[o][ci][c] = D[ci][o·Cout + c].
        let mut d_w = vec![0f32; cin * wide];
        for (o, block) in d_w.chunks_exact_mut(cin * cout).enumerate() {
            for (ci, dst) in block.chunks_exact_mut(cout).enumerate() {
                dst.copy_from_slice(&d_all[ci * wide + o * cout..][..cout]);
            }
        }
        d_w
    }

    /// The row offset i·T + j of each kernel position (i, j), in the kernel's row-major order.
    fn kernel_offsets(kf: usize, kt: usize, t: usize) -> Vec<usize> {
        (0..kf)
            .flat_map(|i| (0..kt).map(move |j| i * t + j))
            .collect()
    }

    /// The input rows each output row r0, r0 + 1, … meets, side by side: row r of `p` holds
    /// x[r0 + r + off] (`cin` floats each) for every kernel offset `off`, in order.
    fn gather_rows(x: &[f32], cin: usize, offsets: &[usize], r0: usize, p: &mut [f32]) {
        let depth = offsets.len() * cin;
        if cin == 1 {
            // One channel (the first conv): a float per offset, without a slice copy each.
            for (r, row) in p.chunks_exact_mut(depth).enumerate() {
                for (v, &off) in row.iter_mut().zip(offsets) {
                    *v = x[r0 + r + off];
                }
            }
            return;
        }
        for (r, row) in p.chunks_exact_mut(depth).enumerate() {
            for (part, &off) in row.chunks_exact_mut(cin).zip(offsets) {
                part.copy_from_slice(&x[(r0 + r + off) * cin..][..cin]);
            }
        }
    }

    /// Floats of one tile of the all-offsets product (a quarter of a typical L2 cache), so that
    /// the tile is still in cache when its columns are added to the output.
    const TILE_FLOATS: usize = 64 * 1024;

    /// [`CnnOps::offset_products`] on row-major f32 slices: `rows` [B, N, Cin], `w` [kf, kt, Cin,
    /// Cout], `out` [B, len, Cout] (zeroed on entry). Input row s meets output row r = s − (i·T + j)
    /// through w(i, j). One product per tile of rows, on whichever side is narrower:
    ///
    /// - more input than output channels (the second conv, 64 → 16): for a tile of input rows,
    ///   Y = rows[s] · [w(0,0) | w(0,1) | … ] ([tile, Cin] × [Cin, kf·kt·Cout]), and Y's block
    ///   (i, j) of row s is added to out[r] for the r that exist;
    /// - otherwise (the first conv, 1 → 64, and the second's gradient with respect to its rows,
    ///   16 → 64): for a tile of output rows,
    ///   the kf·kt input rows each one meets side by side ([tile, kf·kt·Cin]), times w seen as
    ///   [kf·kt·Cin, Cout], written straight into the output.
    fn offset_products_f32(
        rows: &[f32],
        w: &[f32],
        [b, n, cin]: [usize; 3],
        [kf, kt, cout]: [usize; 3],
        t: usize,
        len: usize,
        out: &mut [f32],
    ) {
        let offsets = kernel_offsets(kf, kt, t);
        if cin <= cout {
            let depth = offsets.len() * cin;
            let tile = (TILE_FLOATS / depth.max(1)).max(8);
            let mut p = vec![0f32; tile.min(len) * depth];
            for bi in 0..b {
                let x = &rows[bi * n * cin..(bi + 1) * n * cin];
                let dst = &mut out[bi * len * cout..(bi + 1) * len * cout];
                for r0 in (0..len).step_by(tile) {
                    let m = tile.min(len - r0);
                    gather_rows(x, cin, &offsets, r0, &mut p[..m * depth]);
                    crate::recurrence::cpu::product(
                        (m, cout, depth),
                        (&mut dst[r0 * cout..], cout),
                        (&p, 0, depth),
                        (w, 1, cout),
                        false,
                    );
                }
            }
            return;
        }
        let wide = offsets.len() * cout;
        // The kernel's offsets side by side: w_all[ci][o·Cout + c] = w[o][ci][c].
        let mut w_all = vec![0f32; cin * wide];
        for (o, block) in w.chunks_exact(cin * cout).enumerate() {
            for (ci, src) in block.chunks_exact(cout).enumerate() {
                w_all[ci * wide + o * cout..][..cout].copy_from_slice(src);
            }
        }
        // Input rows past the last output's reach contribute nothing.
        let reach = (len + offsets.last().copied().unwrap_or(0)).min(n);
        let tile = (TILE_FLOATS / wide.max(1)).max(8);
        let mut y = vec![0f32; tile.min(reach) * wide];
        for bi in 0..b {
            let x = &rows[bi * n * cin..(bi + 1) * n * cin];
            let dst = &mut out[bi * len * cout..(bi + 1) * len * cout];
            for s0 in (0..reach).step_by(tile) {
                let m = tile.min(reach - s0);
                crate::recurrence::cpu::product(
                    (m, wide, cin),
                    (&mut y, wide),
                    (x, s0 * cin, cin),
                    (&w_all, 1, wide),
                    false,
                );
                for (o, &off) in offsets.iter().enumerate() {
                    // Rows s of this tile with 0 ≤ s − off < len.
                    let (lo, hi) = (s0.max(off), (s0 + m).min(off + len));
                    for s in lo..hi {
                        let src = &y[(s - s0) * wide + o * cout..][..cout];
                        let d = &mut dst[(s - off) * cout..][..cout];
                        for (d, &v) in d.iter_mut().zip(src) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use burn::tensor::TensorData;
    use burn::tensor::activation::relu;

    fn random<const D: usize>(
        shape: [usize; D],
        rng: &mut SplitMix64,
        device: &Device,
    ) -> Tensor<D> {
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// [`offset_products`] written with tensor operations, so burn derives its gradient.
    fn offset_products_reference(rows: Tensor<3>, w: Tensor<4>, t: usize, len: usize) -> Tensor<3> {
        let [kf, kt, cin, cout] = w.dims();
        let mut acc: Option<Tensor<3>> = None;
        for i in 0..kf {
            for j in 0..kt {
                let wij = w
                    .clone()
                    .narrow(0, i, 1)
                    .narrow(1, j, 1)
                    .reshape([1, cin, cout]);
                let p = rows.clone().narrow(1, i * t + j, len).matmul(wij);
                acc = Some(match acc {
                    Some(a) => a + p,
                    None => p,
                });
            }
        }
        acc.unwrap()
    }

    /// [`max_pool_valid`] written with tensor operations.
    fn max_pool_reference(x: Tensor<4>, valid: usize, k: usize) -> Tensor<4> {
        let [_, f, _, _] = x.dims();
        let (fo, to) = (f / k, valid / k);
        let mut out: Option<Tensor<4>> = None;
        for i in 0..k {
            for j in 0..k {
                let v = x.clone().slice(burn::tensor::s![
                    ..,
                    i..i + k * (fo - 1) + 1;k,
                    j..j + k * (to - 1) + 1;k,
                    ..
                ]);
                out = Some(match out {
                    Some(o) => o.clone() + relu(v - o),
                    None => v,
                });
            }
        }
        out.unwrap()
    }

    /// Asserts `a` within `tol` of `b`, relative to `b`'s largest magnitude (at least 1).
    fn assert_close<const D: usize>(a: Tensor<D>, b: Tensor<D>, tol: f32, what: &str) {
        let scale: f32 = b.clone().abs().max().into_scalar();
        let d: f32 = (a - b).abs().max().into_scalar();
        println!("{what}: max diff {d:.2e} (largest {scale:.2e})");
        assert!(d.is_finite() && d <= tol * scale.max(1.0), "{what}: {d}");
    }

    /// (B, F, T, Cin, Cout, kf, kt): the second conv's shape at small sizes, odd sizes, a kernel
    /// of one offset and a non-square one.
    /// The fifth and sixth span several of the CPU's row tiles (4096 and 1024 rows per tile
    /// there); the last is the first conv's (one input channel, 64 outputs) over two tiles.
    const CONV_SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 7] = [
        (2, 9, 11, 5, 3, 4, 4),
        (3, 17, 23, 64, 16, 4, 4),
        (1, 6, 7, 4, 2, 1, 1),
        (2, 8, 10, 3, 4, 2, 3),
        (2, 45, 200, 2, 1, 4, 4),
        (1, 20, 300, 3, 4, 4, 4),
        (1, 60, 100, 1, 64, 4, 4),
    ];

    /// Forward and gradients (with respect to the rows and the kernel) equal those burn derives for
    /// the composition of views and products, on every available backend (lavapipe's wgpu in CI):
    /// within 1e-5 of the largest value. The loss weighs every output by a random factor.
    #[cfg(feature = "train")]
    #[test]
    fn offset_products_gradients_match_burns() {
        let mut rng = SplitMix64::new(21);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            let device = device.autodiff();
            for (b, f, t, cin, cout, kf, kt) in CONV_SHAPES {
                let len = (f - kf + 1) * t - (kt - 1);
                let rows = random([b, f * t, cin], &mut rng, &device);
                let w = random([kf, kt, cin, cout], &mut rng, &device);
                let weights = random([b, len, cout], &mut rng, &device);
                let run = |own: bool| {
                    let (rows, w) = (rows.clone().require_grad(), w.clone().require_grad());
                    let out = if own {
                        offset_products(rows.clone(), w.clone(), t, len)
                    } else {
                        offset_products_reference(rows.clone(), w.clone(), t, len)
                    };
                    let g = (out.clone() * weights.clone()).sum().backward();
                    (out, rows.grad(&g).unwrap(), w.grad(&g).unwrap())
                };
                let ((o, dr, dw), (ro, rdr, rdw)) = (run(true), run(false));
                let what = format!("{kind} {b}x{f}x{t}x{cin}->{cout} kernel {kf}x{kt}");
                assert_close(o.inner(), ro.inner(), 1e-5, &format!("{what} output"));
                assert_close(dr, rdr, 1e-5, &format!("{what} d rows"));
                assert_close(dw, rdw, 1e-5, &format!("{what} d w"));
            }
        }
    }

    /// Forward and gradient of the pooling equal burn's for the running maximum of strided views,
    /// on every available backend, with padding columns past `valid`, odd sizes and ties (inputs
    /// rounded to a coarse grid, so that windows often hold their maximum twice: the gradient must
    /// go to the first, as burn's does for a + relu(b − a)).
    #[cfg(feature = "train")]
    #[test]
    fn max_pool_gradient_matches_burns_including_ties() {
        let mut rng = SplitMix64::new(22);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            let device = device.autodiff();
            for (b, f, t, valid, c, k, coarse) in [
                (2, 8, 12, 9, 3, 2, false),
                (3, 9, 11, 11, 5, 2, true),
                (1, 7, 10, 8, 2, 3, true),
            ] {
                let mut x = random([b, f, t, c], &mut rng, &device);
                if coarse {
                    x = (x * 2.0).round();
                }
                let to = valid / k;
                let weights = random([b, f / k, to, c], &mut rng, &device);
                let run = |own: bool| {
                    let x = x.clone().require_grad();
                    let out = if own {
                        max_pool_valid(x.clone(), valid, k)
                    } else {
                        max_pool_reference(x.clone(), valid, k)
                    };
                    let g = (out.clone() * weights.clone()).sum().backward();
                    (out, x.grad(&g).unwrap())
                };
                let ((o, dx), (ro, rdx)) = (run(true), run(false));
                let what = format!("{kind} {b}x{f}x{t} valid {valid} c {c} k {k}");
                assert_close(o.inner(), ro.inner(), 1e-6, &format!("{what} output"));
                assert_close(dx, rdx, 1e-6, &format!("{what} d x"));
            }
        }
    }
}
