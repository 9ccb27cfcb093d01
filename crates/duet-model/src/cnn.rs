//! The CNN branches' strided-view computations and their batch norm (paper §3.1: conv → BN →
//! ReLU → max-pool) as backend operations, so that training differentiates them with a backward
//! of their own.
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
//!
//! Training's batch norm over the conv outputs is here too ([`batch_norm_stats`],
//! [`batch_norm_rows`]): composed from tensor operations, its backward wrote about ten tensors the
//! size of the first conv's output, the model's largest; its own backward is two passes (the
//! column sums, then the input's gradient through the statistics). In the CNN blocks the batch
//! norm and the pooling after it are one operation ([`batch_norm_pool`]): the normalisation is
//! monotonic in x, so the pooling takes each window's extreme of the conv output first and
//! normalises only those; the normalised image is never written, and the backward's column sums
//! run over the extremes alone.
//!
//! At inference on the CPU the first conv, its pooling, the batch norm's shift and the ReLU are one
//! operation ([`conv_pool_relu`]): the first conv's output, the model's largest activation (all
//! its channels at the spectrogram's full resolution), is made one strip of pooling windows at a
//! time in cache and never written whole.

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

    /// Inference's conv → max-pool → shift → ReLU as one operation: `rows` [B, N, Cin] and `w`
    /// [kf, kt, Cin, Cout] as in [`CnnOps::offset_products`], whose output seen as [B, `fo`, T,
    /// Cout] (T = `t`, N ≥ (`fo` + kf − 1)·T) is pooled as in [`CnnOps::max_pool_valid`] over its
    /// first `valid` columns, then `shift` [Cout] is added and the ReLU taken → [B, `fo` / k,
    /// `valid` / k, Cout]. On the CPU the conv output, the model's largest activation, is made one
    /// strip of pooling windows at a time in cache and never written whole. Made for inference:
    /// under autodiff with a tracked input it is the composition, whose parts have their backward.
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn conv_pool_relu(
        rows: FloatTensor<Self>,
        w: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        t: usize,
        fo: usize,
        valid: usize,
        k: usize,
    ) -> FloatTensor<Self> {
        conv_pool_relu_of::<Self>(rows, w, shift, [t, fo, valid, k])
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

    /// Training batch norm's statistics of `x` [N, C] over its data rows, the rows r with
    /// r mod `t` < `valid` (a conv output's valid columns; `t` = `valid` = 1 for every row) →
    /// [2, C]: each channel's mean, then its biased variance.
    #[fusion(default)]
    fn batch_norm_stats(x: FloatTensor<Self>, t: usize, valid: usize) -> FloatTensor<Self> {
        batch_norm_stats_of::<Self>(x, t, valid)
    }

    /// Every row of `x` [N, C] normalised with `stats` [2, C] (mean, biased variance), then scaled
    /// and shifted: (x − mean) · `gamma` / √(var + `eps`) + `beta` (`gamma`, `beta` [C]). Its
    /// backward is training's: `stats` are [`CnnOps::batch_norm_stats`] of `x` over the data rows
    /// (`t`, `valid`, which only the backward reads), so the gradient with respect to `x` runs
    /// through them too.
    #[fusion(default)]
    fn batch_norm_rows(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        t: usize,
        valid: usize,
    ) -> FloatTensor<Self> {
        let _ = (t, valid);
        batch_norm_rows_of::<Self>(x, stats, gamma, beta, eps)
    }

    /// The column sums [`CnnOps::batch_norm_rows`]' backward needs, from its output's gradient
    /// `grad` [N, C] → [2, C]: Σ_r grad·x̂ (γ's gradient), then Σ_r grad (β's), with x̂ = (x −
    /// mean) / √(var + eps).
    #[fusion(default)]
    fn batch_norm_sums(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        batch_norm_sums_of::<Self>(x, stats, grad, eps)
    }

    /// The gradient of [`CnnOps::batch_norm_rows`] (statistics of `x` itself) with respect to `x`:
    /// γ·s·(grad − w_r·(Σ grad + x̂·Σ grad·x̂)), s = 1/√(var + eps), w_r = 1/n on the n data rows
    /// (`t`, `valid`) and 0 elsewhere, `sums` from [`CnnOps::batch_norm_sums`].
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn batch_norm_input_grad(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        sums: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
        t: usize,
        valid: usize,
    ) -> FloatTensor<Self> {
        batch_norm_input_grad_of::<Self>(x, stats, gamma, sums, grad, eps, [t, valid])
    }

    /// Each k×k window's extreme (stride k) of the first `valid` columns of `x` [B, F, T, C] →
    /// [B, F / k, `valid` / k, C]: per channel its maximum where `gamma` [C] ≥ 0 and its minimum
    /// elsewhere, the value whose batch normalisation (rising in x where γ ≥ 0, falling
    /// elsewhere) is the window's maximum.
    #[fusion(default)]
    fn pool_extremes(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        valid: usize,
        k: usize,
    ) -> FloatTensor<Self> {
        pool_extremes_of::<Self>(x, gamma, valid, k)
    }

    /// Training's batch norm and the pooling after it as one operation: `x` [B, F, T, C] →
    /// [`CnnOps::max_pool_valid`] of [`CnnOps::batch_norm_rows`] of `x` seen as [B·F·T, C]
    /// (`stats` are [`CnnOps::batch_norm_stats`] of those rows over the `valid` columns). As the
    /// normalisation is monotonic in x, that is the normalisation of
    /// [`CnnOps::pool_extremes`]: the normalised image, as large as `x`, is neither written nor
    /// kept for the backward, whose column sums are [`CnnOps::batch_norm_sums`] of the extremes
    /// (the pooling sends each window's gradient to its extreme alone).
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn batch_norm_pool(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        valid: usize,
        k: usize,
    ) -> FloatTensor<Self> {
        let ext = Self::pool_extremes(x, gamma.clone(), valid, k);
        normalised_extremes::<Self>(ext, stats, gamma, beta, eps)
    }

    /// The gradient of [`CnnOps::batch_norm_pool`] with respect to `x` [B, F, T, C], from its
    /// output's gradient `grad` [B, F / k, `valid` / k, C], `ext` = [`CnnOps::pool_extremes`] of
    /// `x` and `sums` = [`CnnOps::batch_norm_sums`] of the extremes: [`CnnOps::batch_norm_input_grad`]
    /// of the gradient the pooling sends back, `grad` at the first position of each window that
    /// holds its extreme and 0 elsewhere.
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn batch_norm_pool_input_grad(
        x: FloatTensor<Self>,
        ext: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        sums: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
        valid: usize,
        k: usize,
    ) -> FloatTensor<Self> {
        let _ = ext;
        batch_norm_pool_input_grad_of::<Self>(x, stats, gamma, sums, grad, eps, [valid, k])
    }
}

/// An image [B, F, T, C] as its rows [B·F·T, C].
fn image_rows<B: Backend>(x: FloatTensor<B>, [b, f, t, c]: [usize; 4]) -> FloatTensor<B> {
    B::float_reshape(x, Shape::new([b * f * t, c]))
}

/// Rows [B·F·T, C] back as the image [B, F, T, C].
fn image_of_rows<B: Backend>(x: FloatTensor<B>, dims: [usize; 4]) -> FloatTensor<B> {
    B::float_reshape(x, Shape::new(dims))
}

/// ±1 per channel of `gamma` [C], as [1, 1, 1, C]: −1 where γ < 0.
fn gamma_signs<B: Backend>(gamma: FloatTensor<B>) -> FloatTensor<B> {
    let c = gamma.shape().dims::<1>()[0];
    let device = gamma.device();
    let bool_dtype = burn::backend::get_or_init_device_settings::<B>(&device).bool_dtype;
    let ones = B::float_ones(gamma.shape(), &device, gamma.dtype().into());
    let negative = B::float_lower_elem(gamma, 0f32.into(), bool_dtype);
    let signs = B::float_mask_fill(ones, negative, (-1f32).into());
    B::float_reshape(signs, Shape::new([1, 1, 1, c]))
}

/// The default body of [`CnnOps::pool_extremes`]: the pooling of x·±1, times ±1 again
/// (negation is exact, so the minimum is the negated maximum of −x).
fn pool_extremes_of<B: CnnOps>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    valid: usize,
    k: usize,
) -> FloatTensor<B> {
    let signs = gamma_signs::<B>(gamma);
    let pooled = B::max_pool_valid(B::float_mul(x, signs.clone()), valid, k);
    B::float_mul(pooled, signs)
}

/// The pooled extremes [B, F', T', C] normalised with [`CnnOps::batch_norm_rows`] (the
/// statistics are the whole image's, so its backward does not apply: the caller's does).
fn normalised_extremes<B: CnnOps>(
    ext: FloatTensor<B>,
    stats: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let dims = ext.shape().dims::<4>();
    let y = B::batch_norm_rows(image_rows::<B>(ext, dims), stats, gamma, beta, eps, 1, 1);
    image_of_rows::<B>(y, dims)
}

/// The default body of [`CnnOps::batch_norm_pool_input_grad`]: the pooling's backward of x·±1
/// (whose windows' maxima are the extremes), then the batch norm's input gradient.
fn batch_norm_pool_input_grad_of<B: CnnOps>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    gamma: FloatTensor<B>,
    sums: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
    [valid, k]: [usize; 2],
) -> FloatTensor<B> {
    let dims = x.shape().dims::<4>();
    let signed = B::float_mul(x.clone(), gamma_signs::<B>(gamma.clone()));
    let dy = B::max_pool_valid_backward(signed, grad, valid, k);
    let rows = |v| image_rows::<B>(v, dims);
    let dx = B::batch_norm_input_grad(rows(x), stats, gamma, sums, rows(dy), eps, dims[2], valid);
    image_of_rows::<B>(dx, dims)
}

/// The number of data rows among `n` rows when row r is one iff r mod `t` < `valid`.
pub(crate) fn data_rows(n: usize, t: usize, valid: usize) -> usize {
    let t = t.max(1);
    (n / t) * valid.min(t) + (n % t).min(valid)
}

/// The batch-norm row weights of `n` rows as [1, n] (1/count on the data rows, 0 elsewhere; see
/// [`CnnOps::batch_norm_stats`]) in `dtype`, on `device`.
fn data_row_weights<B: Backend>(
    n: usize,
    [t, valid]: [usize; 2],
    device: &burn::backend::tensor::Device<B>,
    dtype: burn::tensor::DType,
) -> FloatTensor<B> {
    let w = 1.0 / data_rows(n, t, valid).max(1) as f32;
    let row: Vec<f32> = (0..n)
        .map(|r| if r % t.max(1) < valid { w } else { 0.0 })
        .collect();
    let data = burn::tensor::TensorData::new(row, [1, n]).convert_dtype(dtype);
    B::float_from_data(data, device)
}

/// Row `i` of `stats` [2, C] as [1, C].
fn stats_row<B: Backend>(stats: FloatTensor<B>, i: usize) -> FloatTensor<B> {
    let c = stats.shape().dims::<2>()[1];
    B::float_slice(stats, &[Slice::from(i..i + 1), Slice::from(0..c)])
}

/// x̂ = (x − mean) · s and s = 1/√(var + eps) ([1, C]) from `stats` [2, C].
fn normalised_of<B: Backend>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let s = B::float_recip(B::float_sqrt(B::float_add_scalar(
        stats_row::<B>(stats.clone(), 1),
        eps.into(),
    )));
    let dev = B::float_sub(x, stats_row::<B>(stats, 0));
    (B::float_mul(dev, s.clone()), s)
}

/// The default body of [`CnnOps::batch_norm_stats`]: column sums as matrix products with the row
/// weights, the mean first and then the mean square deviation from it (two passes rather than
/// E[x²] − E[x]²: the columns of the first conv's output sit far from zero, and in f32 the one-pass
/// form cancels away part of the variance).
fn batch_norm_stats_of<B: Backend>(x: FloatTensor<B>, t: usize, valid: usize) -> FloatTensor<B> {
    let n = x.shape().dims::<2>()[0];
    let w = data_row_weights::<B>(n, [t, valid], &x.device(), x.dtype());
    let mean = B::float_matmul(w.clone(), x.clone());
    let dev = B::float_sub(x, mean.clone());
    let var = B::float_matmul(w, B::float_mul(dev.clone(), dev));
    B::float_cat(vec![mean, var], 0)
}

/// The default body of [`CnnOps::batch_norm_rows`]: the centred x scaled (not the folded x·a + b,
/// whose two large terms would cancel), then shifted.
fn batch_norm_rows_of<B: Backend>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let c = x.shape().dims::<2>()[1];
    let row = |v: FloatTensor<B>| B::float_reshape(v, Shape::new([1, c]));
    let (x_hat, _) = normalised_of::<B>(x, stats, eps);
    B::float_add(B::float_mul(x_hat, row(gamma)), row(beta))
}

/// The default body of [`CnnOps::batch_norm_sums`].
fn batch_norm_sums_of<B: Backend>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let (x_hat, _) = normalised_of::<B>(x, stats, eps);
    let d_gamma = B::float_sum_dim(B::float_mul(grad.clone(), x_hat), 0);
    let d_beta = B::float_sum_dim(grad, 0);
    B::float_cat(vec![d_gamma, d_beta], 0)
}

/// The default body of [`CnnOps::batch_norm_input_grad`].
fn batch_norm_input_grad_of<B: Backend>(
    x: FloatTensor<B>,
    stats: FloatTensor<B>,
    gamma: FloatTensor<B>,
    sums: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
    t_valid: [usize; 2],
) -> FloatTensor<B> {
    let [n, c] = x.shape().dims::<2>();
    let w = data_row_weights::<B>(n, t_valid, &x.device(), x.dtype());
    let w = B::float_reshape(w, Shape::new([n, 1]));
    let (x_hat, s) = normalised_of::<B>(x, stats, eps);
    let through_stats = B::float_add(
        B::float_mul(x_hat, stats_row::<B>(sums.clone(), 0)),
        stats_row::<B>(sums, 1),
    );
    let d = B::float_sub(grad, B::float_mul(through_stats, w));
    let g = B::float_mul(B::float_reshape(gamma, Shape::new([1, c])), s);
    B::float_mul(d, g)
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

/// The default body of [`CnnOps::conv_pool_relu`]: the offset products up to the last row any
/// window reads (extended by zeros to whole rows of T), pooled, shifted, through the ReLU.
fn conv_pool_relu_of<B: CnnOps>(
    rows: FloatTensor<B>,
    w: FloatTensor<B>,
    shift: FloatTensor<B>,
    [t, fo, valid, k]: [usize; 4],
) -> FloatTensor<B> {
    let b = rows.shape().dims::<3>()[0];
    let [_, kt, _, cout] = w.shape().dims::<4>();
    let (device, dtype) = (rows.device(), rows.dtype());
    // Row fo·T − kt + 1 onwards would read past row (fo + kf − 1)·T − 1; no window reads them.
    let len = fo * t + 1 - kt;
    let acc = B::offset_products(rows, w, t, len);
    let tail = B::float_zeros(Shape::new([b, kt - 1, cout]), &device, dtype.into());
    let image = B::float_reshape(
        B::float_cat(vec![acc, tail], 1),
        Shape::new([b, fo, t, cout]),
    );
    let pooled = B::max_pool_valid(image, valid, k);
    let shift = B::float_reshape(shift, Shape::new([1, 1, 1, cout]));
    B::relu(B::float_add(pooled, shift))
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

/// [`CnnOps::conv_pool_relu`] on tensors: `rows` [B, N, Cin], `w` [kf, kt, Cin, Cout], `shift`
/// [Cout] → [B, `fo` / k, `valid` / k, Cout].
pub fn conv_pool_relu(
    rows: Tensor<3>,
    w: Tensor<4>,
    shift: Tensor<1>,
    [t, fo, valid, k]: [usize; 4],
) -> Tensor<4> {
    let out = <burn::backend::Dispatch as CnnOps>::conv_pool_relu(
        rows.into_dispatch(),
        w.into_dispatch(),
        shift.into_dispatch(),
        t,
        fo,
        valid,
        k,
    );
    Tensor::from_dispatch(out)
}

/// [`CnnOps::max_pool_valid`] on tensors: `x` [B, F, T, C].
pub fn max_pool_valid(x: Tensor<4>, valid: usize, k: usize) -> Tensor<4> {
    let out = <burn::backend::Dispatch as CnnOps>::max_pool_valid(x.into_dispatch(), valid, k);
    Tensor::from_dispatch(out)
}

/// [`CnnOps::batch_norm_stats`] on tensors: `x` [N, C] → [2, C] (mean, biased variance).
pub fn batch_norm_stats(x: Tensor<2>, t: usize, valid: usize) -> Tensor<2> {
    let out = <burn::backend::Dispatch as CnnOps>::batch_norm_stats(x.into_dispatch(), t, valid);
    Tensor::from_dispatch(out)
}

/// [`CnnOps::batch_norm_rows`] on tensors: `x` [N, C], `stats` [2, C] from
/// [`batch_norm_stats`] of `x` with the same `t` and `valid`, `gamma` and `beta` [C].
pub fn batch_norm_rows(
    x: Tensor<2>,
    stats: Tensor<2>,
    [gamma, beta]: [Tensor<1>; 2],
    eps: f64,
    [t, valid]: [usize; 2],
) -> Tensor<2> {
    let out = <burn::backend::Dispatch as CnnOps>::batch_norm_rows(
        x.into_dispatch(),
        stats.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
        t,
        valid,
    );
    Tensor::from_dispatch(out)
}

/// [`CnnOps::batch_norm_pool`] on tensors: `x` [B, F, T, C], `stats` [2, C] from
/// [`batch_norm_stats`] of `x`'s rows [B·F·T, C] with `t` = T and the same `valid`, `gamma` and
/// `beta` [C] → [B, F / k, `valid` / k, C].
pub fn batch_norm_pool(
    x: Tensor<4>,
    stats: Tensor<2>,
    [gamma, beta]: [Tensor<1>; 2],
    eps: f64,
    valid: usize,
    k: usize,
) -> Tensor<4> {
    let out = <burn::backend::Dispatch as CnnOps>::batch_norm_pool(
        x.into_dispatch(),
        stats.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
        valid,
        k,
    );
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
    use burn::backend::{Slice, TensorMetadata};
    use burn::tensor::Shape;

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

    #[derive(Debug)]
    struct BatchNormBackward {
        eps: f64,
        t: usize,
        valid: usize,
    }

    impl<B: Backend + CnnOps> Backward<B, 3> for BatchNormBackward {
        /// `x`, its statistics and γ.
        type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (x, stats, gamma) = ops.state;
            let c = stats.shape().dims::<2>()[1];
            let sums = B::batch_norm_sums(x.clone(), stats.clone(), grad.clone(), self.eps);
            let row = |i: usize| {
                let r = B::float_slice(sums.clone(), &[Slice::from(i..i + 1), Slice::from(0..c)]);
                B::float_reshape(r, Shape::new([c]))
            };
            if let Some(node) = node_gamma {
                grads.register::<B>(node.id, row(0));
            }
            if let Some(node) = node_beta {
                grads.register::<B>(node.id, row(1));
            }
            if let Some(node) = node_x {
                let d = B::batch_norm_input_grad(
                    x, stats, gamma, sums, grad, self.eps, self.t, self.valid,
                );
                grads.register::<B>(node.id, d);
            }
        }
    }

    #[derive(Debug)]
    struct BatchNormPoolBackward {
        eps: f64,
        valid: usize,
        k: usize,
    }

    impl<B: Backend + CnnOps> Backward<B, 3> for BatchNormPoolBackward {
        /// `x`, its windows' extremes, its statistics and γ.
        type State = [FloatTensor<B>; 4];

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let [x, ext, stats, gamma] = ops.state;
            let [b, fo, to, c] = ext.shape().dims::<4>();
            let (eps, valid, k) = (self.eps, self.valid, self.k);
            // The pooling sends each window's gradient to its extreme alone.
            let rows = |v| B::float_reshape(v, Shape::new([b * fo * to, c]));
            let sums =
                B::batch_norm_sums(rows(ext.clone()), stats.clone(), rows(grad.clone()), eps);
            let row = |i: usize| {
                let r = B::float_slice(sums.clone(), &[Slice::from(i..i + 1), Slice::from(0..c)]);
                B::float_reshape(r, Shape::new([c]))
            };
            if let Some(node) = node_gamma {
                grads.register::<B>(node.id, row(0));
            }
            if let Some(node) = node_beta {
                grads.register::<B>(node.id, row(1));
            }
            if let Some(node) = node_x {
                let d =
                    B::batch_norm_pool_input_grad(x, ext, stats, gamma, sums, grad, eps, valid, k);
                grads.register::<B>(node.id, d);
            }
        }
    }

    impl<B: Backend + CnnOps, C: CheckpointStrategy> CnnOps for Autodiff<B, C> {
        /// The statistics are not differentiated on their own: [`CnnOps::batch_norm_rows`]'s
        /// backward accounts for them.
        fn batch_norm_stats(x: FloatTensor<Self>, t: usize, valid: usize) -> FloatTensor<Self> {
            <FloatTensor<Self>>::new(B::batch_norm_stats(x.into_primitive(), t, valid))
        }

        fn batch_norm_rows(
            x: FloatTensor<Self>,
            stats: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            eps: f64,
            t: usize,
            valid: usize,
        ) -> FloatTensor<Self> {
            let stats = stats.into_primitive();
            match (BatchNormBackward { eps, t, valid })
                .prepare::<C>([x.node(), gamma.node(), beta.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (x, gamma) = (x.primitive().clone(), gamma.primitive().clone());
                    let out = B::batch_norm_rows(
                        x.clone(),
                        stats.clone(),
                        gamma.clone(),
                        beta.into_primitive(),
                        eps,
                        t,
                        valid,
                    );
                    prep.finish((x, stats, gamma), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::batch_norm_rows(
                    x.into_primitive(),
                    stats,
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    eps,
                    t,
                    valid,
                )),
            }
        }

        fn batch_norm_pool(
            x: FloatTensor<Self>,
            stats: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            eps: f64,
            valid: usize,
            k: usize,
        ) -> FloatTensor<Self> {
            let stats = stats.into_primitive();
            match (BatchNormPoolBackward { eps, valid, k })
                .prepare::<C>([x.node(), gamma.node(), beta.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (x, gamma) = (x.primitive().clone(), gamma.primitive().clone());
                    let ext = B::pool_extremes(x.clone(), gamma.clone(), valid, k);
                    let out = super::normalised_extremes::<B>(
                        ext.clone(),
                        stats.clone(),
                        gamma.clone(),
                        beta.into_primitive(),
                        eps,
                    );
                    prep.finish([x, ext, stats, gamma], out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::batch_norm_pool(
                    x.into_primitive(),
                    stats,
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    eps,
                    valid,
                    k,
                )),
            }
        }

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

        /// The inner backend's fused operation where nothing is tracked (inference); otherwise
        /// the composition, whose parts have their backward.
        #[allow(clippy::too_many_arguments)]
        fn conv_pool_relu(
            rows: FloatTensor<Self>,
            w: FloatTensor<Self>,
            shift: FloatTensor<Self>,
            t: usize,
            fo: usize,
            valid: usize,
            k: usize,
        ) -> FloatTensor<Self> {
            if rows.is_tracked() || w.is_tracked() || shift.is_tracked() {
                return super::conv_pool_relu_of::<Self>(rows, w, shift, [t, fo, valid, k]);
            }
            <FloatTensor<Self>>::new(B::conv_pool_relu(
                rows.into_primitive(),
                w.into_primitive(),
                shift.into_primitive(),
                t,
                fo,
                valid,
                k,
            ))
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
            let out = offset_products_f32(
                rows.storage::<f32>(),
                w.storage::<f32>(),
                [b, n, cin],
                [kf, kt, cout],
                t,
                len,
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

        fn conv_pool_relu(
            rows: FlexTensor,
            w: FlexTensor,
            shift: FlexTensor,
            t: usize,
            fo: usize,
            valid: usize,
            k: usize,
        ) -> FlexTensor {
            if [&rows, &w, &shift].iter().any(|x| x.dtype() != DType::F32) {
                return super::conv_pool_relu_of::<Flex>(rows, w, shift, [t, fo, valid, k]);
            }
            let [b, n, cin] = rows.shape().dims::<3>();
            let [kf, kt, _, cout] = w.shape().dims::<4>();
            let (rows, w, shift) = (contiguous(rows), contiguous(w), contiguous(shift));
            let out = conv_pool_relu_f32(
                rows.storage::<f32>(),
                w.storage::<f32>(),
                shift.storage::<f32>(),
                [b, n, cin],
                [kf, kt, cout],
                [t, fo, valid, k],
            );
            FlexTensor::from_data(TensorData::new(out, [b, fo / k, valid / k, cout]))
        }

        fn max_pool_valid(x: FlexTensor, valid: usize, k: usize) -> FlexTensor {
            if x.dtype() != DType::F32 {
                return super::max_pool_of::<Flex>(x, valid, k);
            }
            let [b, f, t, c] = x.shape().dims::<4>();
            let x = contiguous(x);
            let out = window_extremes(x.storage::<f32>(), [b, f, t, c], [valid, k], None);
            FlexTensor::from_data(TensorData::new(out, [b, f / k, valid / k, c]))
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
            // Whether each channel's maximum has been met yet, in the forward's visiting order.
            let mut taken = vec![0u32; c];
            let offset = |bi: usize, oi: usize, oj: usize, i: usize, j: usize| {
                ((bi * f + oi * k + i) * t + oj * k + j) * c
            };
            for (n, g) in grad.chunks_exact(c).enumerate() {
                let (bi, rest) = (n / (fo * to), n % (fo * to));
                let (oi, oj) = (rest / to, rest % to);
                let first = offset(bi, oi, oj, 0, 0);
                best.copy_from_slice(&x[first..first + c]);
                for i in 0..k {
                    for j in 0..k {
                        let at = offset(bi, oi, oj, i, j);
                        // The running maximum as the forward takes it (a later value only where
                        // greater): a select of one output, which compiles to `maxps`.
                        for (b, &v) in best.iter_mut().zip(&x[at..at + c]) {
                            *b = if v > *b { v } else { *b };
                        }
                    }
                }
                // Each window position written whole: the gradient at the first position that
                // holds the maximum (where the forward's running maximum stopped changing),
                // 0 elsewhere. Every store is unconditional, so that the loop vectorises (a
                // select that may keep a value in place compiles to one conditional store per
                // channel). Windows do not overlap (stride k): each element is written once.
                taken.fill(0);
                for i in 0..k {
                    for j in 0..k {
                        let at = offset(bi, oi, oj, i, j);
                        let lanes = dx[at..at + c].iter_mut().zip(taken.iter_mut());
                        for (((d, seen), &v), (&g, &m)) in
                            lanes.zip(&x[at..at + c]).zip(g.iter().zip(&best))
                        {
                            let hit = u32::from(v == m) & (*seen ^ 1);
                            *d = if hit == 1 { g } else { 0.0 };
                            *seen |= hit;
                        }
                    }
                }
            }
            FlexTensor::from_data(TensorData::new(dx, [b, f, t, c]))
        }

        /// One pass over the data rows; the default body takes five over the whole tensor.
        fn batch_norm_stats(x: FlexTensor, t: usize, valid: usize) -> FlexTensor {
            if x.dtype() != DType::F32 {
                return super::batch_norm_stats_of::<Flex>(x, t, valid);
            }
            let c = x.shape().dims::<2>()[1];
            let x = contiguous(x);
            let stats = batch_norm_stats_f32(x.storage::<f32>(), c, [t, valid]);
            FlexTensor::from_data(TensorData::new(stats, [2, c]))
        }

        /// One pass, written without zero-filling the output first.
        fn batch_norm_rows(
            x: FlexTensor,
            stats: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            eps: f64,
            t: usize,
            valid: usize,
        ) -> FlexTensor {
            let all_f32 = [&x, &stats, &gamma, &beta]
                .iter()
                .all(|v| v.dtype() == DType::F32);
            if !all_f32 {
                let _ = (t, valid);
                return super::batch_norm_rows_of::<Flex>(x, stats, gamma, beta, eps);
            }
            let shape = x.shape();
            let c = shape.dims::<2>()[1];
            let (mean, _, scale) = mean_and_slope(stats, gamma, eps);
            let beta = contiguous(beta);
            let beta = beta.storage::<f32>();
            let x = contiguous(x);
            let mut y = Vec::with_capacity(x.storage::<f32>().len());
            for row in x.storage::<f32>().chunks_exact(c) {
                y.extend(
                    row.iter()
                        .zip(&mean)
                        .zip(&scale)
                        .zip(beta)
                        .map(|(((&v, m), a), b)| (v - m) * a + b),
                );
            }
            FlexTensor::from_data(TensorData::new(y, shape))
        }

        /// One pass over x and the gradient.
        fn batch_norm_sums(
            x: FlexTensor,
            stats: FlexTensor,
            grad: FlexTensor,
            eps: f64,
        ) -> FlexTensor {
            if [&x, &stats, &grad].iter().any(|v| v.dtype() != DType::F32) {
                return super::batch_norm_sums_of::<Flex>(x, stats, grad, eps);
            }
            let c = x.shape().dims::<2>()[1];
            let (mean, s) = mean_and_scale(&contiguous(stats), eps);
            let (x, grad) = (contiguous(x), contiguous(grad));
            // Σ g·(x − mean) and Σ g per channel: f32 over blocks of rows, f64 across blocks.
            let mut sums = [vec![0f64; c], vec![0f64; c]];
            let mut block = [vec![0f32; c], vec![0f32; c]];
            let rows = x
                .storage::<f32>()
                .chunks_exact(c)
                .zip(grad.storage::<f32>().chunks_exact(c));
            for (n, (xr, gr)) in rows.enumerate() {
                let [bx, bg] = &mut block;
                for ((((bx, bg), &v), &g), m) in
                    bx.iter_mut().zip(bg.iter_mut()).zip(xr).zip(gr).zip(&mean)
                {
                    *bx += g * (v - m);
                    *bg += g;
                }
                if n % STATS_BLOCK == STATS_BLOCK - 1 {
                    flush(&mut sums, &mut block);
                }
            }
            flush(&mut sums, &mut block);
            sums_tensor(&sums, &s)
        }

        /// One pass, written without zero-filling the output first.
        fn batch_norm_input_grad(
            x: FlexTensor,
            stats: FlexTensor,
            gamma: FlexTensor,
            sums: FlexTensor,
            grad: FlexTensor,
            eps: f64,
            t: usize,
            valid: usize,
        ) -> FlexTensor {
            if [&x, &stats, &gamma, &sums, &grad]
                .iter()
                .any(|v| v.dtype() != DType::F32)
            {
                return super::batch_norm_input_grad_of::<Flex>(
                    x,
                    stats,
                    gamma,
                    sums,
                    grad,
                    eps,
                    [t, valid],
                );
            }
            let shape = x.shape();
            let [n, c] = shape.dims::<2>();
            let w = 1.0 / super::data_rows(n, t, valid).max(1) as f32;
            let InputGrad {
                mean,
                a,
                shift,
                slope,
            } = InputGrad::new(stats, gamma, sums, eps, w);
            let (x, grad) = (contiguous(x), contiguous(grad));
            let mut dx = Vec::with_capacity(n * c);
            let rows = x
                .storage::<f32>()
                .chunks_exact(c)
                .zip(grad.storage::<f32>().chunks_exact(c));
            for (r, (xr, gr)) in rows.enumerate() {
                if r % t.max(1) < valid {
                    dx.extend(
                        xr.iter()
                            .zip(gr)
                            .zip(&mean)
                            .zip(&a)
                            .zip(&shift)
                            .zip(&slope)
                            .map(|(((((&v, &g), m), a), sh), sl)| a * g - sh - sl * (v - m)),
                    );
                } else {
                    dx.extend(gr.iter().zip(&a).map(|(g, a)| a * g));
                }
            }
            FlexTensor::from_data(TensorData::new(dx, shape))
        }

        /// One pass over the windows.
        fn pool_extremes(x: FlexTensor, gamma: FlexTensor, valid: usize, k: usize) -> FlexTensor {
            if x.dtype() != DType::F32 || gamma.dtype() != DType::F32 {
                return super::pool_extremes_of::<Flex>(x, gamma, valid, k);
            }
            let [b, f, t, c] = x.shape().dims::<4>();
            let (gamma, x) = (contiguous(gamma), contiguous(x));
            let gamma = Some(gamma.storage::<f32>());
            let ext = window_extremes(x.storage::<f32>(), [b, f, t, c], [valid, k], gamma);
            FlexTensor::from_data(TensorData::new(ext, [b, f / k, valid / k, c]))
        }

        /// One pass over x, written in order, with the pooled gradient at the first position of
        /// each window that holds its extreme.
        fn batch_norm_pool_input_grad(
            x: FlexTensor,
            ext: FlexTensor,
            stats: FlexTensor,
            gamma: FlexTensor,
            sums: FlexTensor,
            grad: FlexTensor,
            eps: f64,
            valid: usize,
            k: usize,
        ) -> FlexTensor {
            if [&x, &ext, &stats, &gamma, &sums, &grad]
                .iter()
                .any(|v| v.dtype() != DType::F32)
            {
                return super::batch_norm_pool_input_grad_of::<Flex>(
                    x,
                    stats,
                    gamma,
                    sums,
                    grad,
                    eps,
                    [valid, k],
                );
            }
            let shape = x.shape();
            let [b, f, t, c] = shape.dims::<4>();
            let (fo, to) = (f / k, valid / k);
            let w = 1.0 / super::data_rows(b * f * t, t, valid).max(1) as f32;
            let InputGrad {
                mean,
                a,
                shift,
                slope,
            } = InputGrad::new(stats, gamma, sums, eps, w);
            let (x, ext, grad) = (contiguous(x), contiguous(ext), contiguous(grad));
            let (x, ext, grad) = (
                x.storage::<f32>(),
                ext.storage::<f32>(),
                grad.storage::<f32>(),
            );
            let mut dx = Vec::with_capacity(b * f * t * c);
            // Whether each window's extreme has been met yet, per channel.
            let mut taken = vec![0u32; to * c];
            for bi in 0..b {
                for fi in 0..f {
                    let (oi, i) = (fi / k, fi % k);
                    let pooled = oi < fo;
                    if pooled && i == 0 {
                        taken.fill(0);
                    }
                    let row = &x[(bi * f + fi) * t * c..][..t * c];
                    for (tj, v) in row.chunks_exact(c).enumerate() {
                        if pooled && tj < to * k {
                            let at = ((bi * fo + oi) * to + tj / k) * c;
                            let (e, g) = (&ext[at..][..c], &grad[at..][..c]);
                            let seen = &mut taken[(tj / k) * c..][..c];
                            dx.extend(
                                v.iter()
                                    .zip(e)
                                    .zip(g)
                                    .zip(seen.iter_mut())
                                    .zip(mean.iter().zip(&a))
                                    .zip(shift.iter().zip(&slope))
                                    .map(|(((((&v, &e), &g), seen), (m, a)), (sh, sl))| {
                                        // Unconditional stores, so that the loop vectorises.
                                        let hit = u32::from(v == e) & (*seen ^ 1);
                                        *seen |= hit;
                                        let dy = if hit == 1 { g } else { 0.0 };
                                        a * dy - sh - sl * (v - m)
                                    }),
                            );
                        } else if tj < valid {
                            dx.extend(
                                v.iter()
                                    .zip(&mean)
                                    .zip(shift.iter().zip(&slope))
                                    .map(|((&v, m), (sh, sl))| -sh - sl * (v - m)),
                            );
                        } else {
                            dx.extend(std::iter::repeat_n(0.0, c));
                        }
                    }
                }
            }
            FlexTensor::from_data(TensorData::new(dx, shape))
        }
    }

    /// The k×k window `oj` (columns oj·k …) of a strip of k rows of T positions with C channels
    /// each: its maximum per channel into `high`, and its minimum into `low` when given. Strictly
    /// greater (less) only: a tie keeps the earlier view, as the backward assumes. Selects of one
    /// output each, not conditional stores, so that they compile to `maxps` and `minps`.
    #[inline(always)]
    fn window_extreme(
        strip: &[f32],
        [t, c, k]: [usize; 3],
        oj: usize,
        high: &mut [f32],
        mut low: Option<&mut [f32]>,
    ) {
        for i in 0..k {
            for j in 0..k {
                let v = &strip[(i * t + oj * k + j) * c..][..c];
                if i == 0 && j == 0 {
                    high.copy_from_slice(v);
                    if let Some(low) = low.as_deref_mut() {
                        low.copy_from_slice(v);
                    }
                    continue;
                }
                match low.as_deref_mut() {
                    Some(low) => {
                        for ((h, l), &v) in high.iter_mut().zip(low.iter_mut()).zip(v) {
                            let (hv, lv) = (*h, *l);
                            *h = if v > hv { v } else { hv };
                            *l = if v < lv { v } else { lv };
                        }
                    }
                    None => {
                        for (h, &v) in high.iter_mut().zip(v) {
                            let hv = *h;
                            *h = if v > hv { v } else { hv };
                        }
                    }
                }
            }
        }
    }

    /// Each k×k window's extreme per channel of `x` [b, f, t, c] over its first `valid` frames,
    /// in the output's order [b, f/k, valid/k, c]: the maximum, or, given γ, the minimum where
    /// γ < 0 (where the batch norm's slope is negative, so that its output's maximum sits at
    /// the input's minimum). Appended window by window, not zero-filled first.
    fn window_extremes(
        x: &[f32],
        [b, f, t, c]: [usize; 4],
        [valid, k]: [usize; 2],
        gamma: Option<&[f32]>,
    ) -> Vec<f32> {
        let (fo, to) = (f / k, valid / k);
        let mut out = Vec::with_capacity(b * fo * to * c);
        let (mut high, mut low) = (vec![0f32; c], vec![0f32; c]);
        for bi in 0..b {
            for oi in 0..fo {
                let strip = &x[(bi * f + oi * k) * t * c..][..k * t * c];
                for oj in 0..to {
                    let want_low = gamma.map(|_| &mut low[..]);
                    window_extreme(strip, [t, c, k], oj, &mut high, want_low);
                    match gamma {
                        Some(gamma) => out.extend(
                            high.iter()
                                .zip(&low)
                                .zip(gamma)
                                .map(|((&h, &l), &g)| if g >= 0.0 { h } else { l }),
                        ),
                        None => out.extend_from_slice(&high),
                    }
                }
            }
        }
        out
    }

    /// [`CnnOps::conv_pool_relu`] on row-major f32 slices: `rows` [B, N, Cin], `w` [kf, kt, Cin,
    /// Cout], `shift` [Cout] → [B, fo / k, valid / k, Cout]. For each strip of pooling windows
    /// (k rows of the conv output, the last one only as far as the windows reach) the input rows
    /// each output row meets are gathered and multiplied once, as in [`offset_products_f32`]'s
    /// narrow-input path, into a buffer that stays in cache; the windows' maxima are taken from
    /// it, shifted and passed through the ReLU.
    fn conv_pool_relu_f32(
        rows: &[f32],
        w: &[f32],
        shift: &[f32],
        [b, n, cin]: [usize; 3],
        [kf, kt, cout]: [usize; 3],
        [t, fo, valid, k]: [usize; 4],
    ) -> Vec<f32> {
        let (po, to) = (fo / k, valid / k);
        let mut out = Vec::with_capacity(b * po * to * cout);
        if po == 0 || to == 0 || cout == 0 {
            return out;
        }
        let offsets = kernel_offsets(kf, kt, t);
        let depth = offsets.len() * cin;
        // Output rows one strip reads: k − 1 whole rows of T, then the windows' columns.
        let m = (k - 1) * t + to * k;
        // The strip's last output row meets input row (po·k − 1)·T + to·k − 1 + (kf − 1)·T + kt − 1.
        let reach = ((po * k - 1) + (kf - 1)) * t + to * k + kt - 1;
        assert!(
            reach <= n,
            "conv_pool_relu: {n} input rows do not reach the windows of {fo} output rows of {t}"
        );
        let mut p = vec![0f32; m * depth];
        let mut y = vec![0f32; m * cout];
        let mut high = vec![0f32; cout];
        for bi in 0..b {
            let x = &rows[bi * n * cin..(bi + 1) * n * cin];
            for pi in 0..po {
                gather_rows(x, cin, &offsets, pi * k * t, &mut p);
                crate::recurrence::cpu::product(
                    (m, cout, depth),
                    (&mut y, cout),
                    (&p, 0, depth),
                    (w, 1, cout),
                    false,
                );
                for oj in 0..to {
                    window_extreme(&y, [t, cout, k], oj, &mut high, None);
                    out.extend(high.iter().zip(shift).map(|(&h, &s)| {
                        let v = h + s;
                        if v > 0.0 { v } else { 0.0 }
                    }));
                }
            }
        }
        out
    }

    /// The column sums Σ g·(x − mean) and Σ g as the [2, C] tensor the batch norm's backward
    /// passes on: the first scaled by `s` = 1/√(var + eps) (Σ g·x̂).
    fn sums_tensor(sums: &[Vec<f64>; 2], s: &[f32]) -> FlexTensor {
        let out: Vec<f32> = sums[0]
            .iter()
            .zip(s)
            .map(|(v, &s)| (v * s as f64) as f32)
            .chain(sums[1].iter().map(|&v| v as f32))
            .collect();
        FlexTensor::from_data(TensorData::new(out, [2, s.len()]))
    }

    /// Per channel, what the batch norm's input gradient needs: with a = γ·s, on data rows dx =
    /// a·(g − w·Σg) − a·w·s·Σg·x̂ · (x − mean) = a·g − shift − slope·(x − mean), shift = a·w·Σg
    /// and slope = a·w·s·Σgx̂ (`w` = 1/the number of data rows).
    struct InputGrad {
        mean: Vec<f32>,
        a: Vec<f32>,
        shift: Vec<f32>,
        slope: Vec<f32>,
    }

    impl InputGrad {
        /// From the statistics [2, C], γ [C] and the sums [2, C] (Σ g·x̂, Σ g).
        fn new(stats: FlexTensor, gamma: FlexTensor, sums: FlexTensor, eps: f64, w: f32) -> Self {
            let (mean, s, a) = mean_and_slope(stats, gamma, eps);
            let sums = contiguous(sums);
            let (sum_gx, sum_g) = sums.storage::<f32>().split_at(a.len());
            let shift = a.iter().zip(sum_g).map(|(a, sg)| a * w * sg).collect();
            let slope = a
                .iter()
                .zip(&s)
                .zip(sum_gx)
                .map(|((a, s), sgx)| a * w * s * sgx)
                .collect();
            InputGrad {
                mean,
                a,
                shift,
                slope,
            }
        }
    }

    /// Each channel's mean, s = 1/√(var + eps) and a = γ·s, the slope of its normalisation,
    /// from batch-norm statistics [2, C] and γ [C].
    fn mean_and_slope(
        stats: FlexTensor,
        gamma: FlexTensor,
        eps: f64,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mean, s) = mean_and_scale(&contiguous(stats), eps);
        let gamma = contiguous(gamma);
        let a = s
            .iter()
            .zip(gamma.storage::<f32>())
            .map(|(s, g)| s * g)
            .collect();
        (mean, s, a)
    }

    /// Rows summed in f32 before their block's sums join the f64 totals: short enough that f32
    /// loses nothing that matters, long enough that the f64 additions cost little.
    const STATS_BLOCK: usize = 64;

    /// Adds each block sum to its total and clears it.
    fn flush<const K: usize>(totals: &mut [Vec<f64>; K], block: &mut [Vec<f32>; K]) {
        for (total, part) in totals.iter_mut().zip(block.iter_mut()) {
            for (t, p) in total.iter_mut().zip(part.iter_mut()) {
                *t += *p as f64;
                *p = 0.0;
            }
        }
    }

    /// Each channel's mean and 1/√(var + eps) from batch-norm statistics [2, C].
    fn mean_and_scale(stats: &FlexTensor, eps: f64) -> (Vec<f32>, Vec<f32>) {
        let (mean, var) = stats
            .storage::<f32>()
            .split_at(stats.shape().dims::<2>()[1]);
        let s = var
            .iter()
            .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
            .collect();
        (mean.to_vec(), s)
    }

    /// [`CnnOps::batch_norm_stats`] on an f32 slice `x` [N, C]: the deviations from the first data
    /// row summed and squared (f32 within blocks of rows, f64 across them), so that neither the
    /// distance of the columns from zero nor the number of rows costs precision.
    fn batch_norm_stats_f32(x: &[f32], c: usize, [t, valid]: [usize; 2]) -> Vec<f32> {
        let t = t.max(1);
        let data = |r: &usize| r % t < valid;
        let rows = x.len() / c.max(1);
        let Some(first) = (0..rows).find(data) else {
            return vec![0.0; 2 * c];
        };
        let k = &x[first * c..][..c];
        let mut sums = [vec![0f64; c], vec![0f64; c]];
        let mut block = [vec![0f32; c], vec![0f32; c]];
        let mut in_block = 0;
        for r in (0..rows).filter(data) {
            let [b1, b2] = &mut block;
            for (((b1, b2), &v), &k) in b1
                .iter_mut()
                .zip(b2.iter_mut())
                .zip(&x[r * c..][..c])
                .zip(k)
            {
                let d = v - k;
                *b1 += d;
                *b2 += d * d;
            }
            in_block += 1;
            if in_block == STATS_BLOCK {
                flush(&mut sums, &mut block);
                in_block = 0;
            }
        }
        flush(&mut sums, &mut block);
        let n = super::data_rows(rows, t, valid) as f64;
        let mut out = vec![0f32; 2 * c];
        for ch in 0..c {
            let shift = sums[0][ch] / n;
            out[ch] = (k[ch] as f64 + shift) as f32;
            out[c + ch] = (sums[1][ch] / n - shift * shift).max(0.0) as f32;
        }
        out
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
    /// Cout] → [B, len, Cout]. Input row s meets output row r = s − (i·T + j)
    /// through w(i, j). One product per tile of rows, on whichever side is narrower:
    ///
    /// - more input than output channels (the second conv, 64 → 16): for a tile of input rows,
    ///   Y = rows[s] · [w(0,0) | w(0,1) | … ] ([tile, Cin] × [Cin, kf·kt·Cout]), and Y's block
    ///   (i, j) of row s is added to out[r] for the r that exist;
    /// - otherwise (the first conv, 1 → 64, and the second's gradient with respect to its rows,
    ///   16 → 64): for a tile of output rows,
    ///   the kf·kt input rows each one meets side by side ([tile, kf·kt·Cin]), times w seen as
    ///   [kf·kt·Cin, Cout], into a tile that is then appended to the output: the output is
    ///   written once, where a zero-filled output written by the product is written twice (the
    ///   allocator hands these sizes out of its heap, so the fill is a real pass, not fresh
    ///   zero pages).
    fn offset_products_f32(
        rows: &[f32],
        w: &[f32],
        [b, n, cin]: [usize; 3],
        [kf, kt, cout]: [usize; 3],
        t: usize,
        len: usize,
    ) -> Vec<f32> {
        let offsets = kernel_offsets(kf, kt, t);
        if cin <= cout {
            let depth = offsets.len() * cin;
            let tile = (TILE_FLOATS / (depth + cout)).max(8);
            let mut p = vec![0f32; tile.min(len) * depth];
            let mut y = vec![0f32; tile.min(len) * cout];
            let mut out = Vec::with_capacity(b * len * cout);
            for bi in 0..b {
                let x = &rows[bi * n * cin..(bi + 1) * n * cin];
                for r0 in (0..len).step_by(tile) {
                    let m = tile.min(len - r0);
                    gather_rows(x, cin, &offsets, r0, &mut p[..m * depth]);
                    crate::recurrence::cpu::product(
                        (m, cout, depth),
                        (&mut y, cout),
                        (&p, 0, depth),
                        (w, 1, cout),
                        false,
                    );
                    out.extend_from_slice(&y[..m * cout]);
                }
            }
            return out;
        }
        let mut out = vec![0f32; b * len * cout];
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
        out
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

    /// [`conv_pool_relu`] equals the conv (the reference's per-offset products), pooling, shift
    /// and ReLU written with tensor operations, on every available backend: with one and several
    /// input channels, output rows and valid columns not multiples of k, a 3×3 pooling, and a
    /// strip longer than the CPU's product tiles. Within 1e-5 of the largest value.
    #[test]
    fn conv_pool_relu_matches_the_composition() {
        let mut rng = SplitMix64::new(24);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            // (B, F, T, Cin, Cout, kf, kt, valid, k); F and T are the padded input's.
            for (b, f, t, cin, cout, kf, kt, valid, k) in [
                (2, 9, 11, 1, 8, 4, 4, 8, 2),
                (1, 12, 20, 3, 5, 3, 2, 19, 2),
                (2, 10, 13, 1, 64, 4, 4, 10, 3),
                (1, 14, 700, 1, 64, 4, 4, 695, 2),
                (1, 7, 9, 2, 4, 4, 4, 5, 2),
            ] {
                let fo = f + 1 - kf;
                let rows = random([b, f * t, cin], &mut rng, &device);
                let w = random([kf, kt, cin, cout], &mut rng, &device);
                let shift = random([cout], &mut rng, &device);
                #[cfg(feature = "train")]
                let (rows_copy, w_copy, shift_copy) = (rows.clone(), w.clone(), shift.clone());
                let own = conv_pool_relu(rows.clone(), w.clone(), shift.clone(), [t, fo, valid, k]);
                let len = fo * t + 1 - kt;
                let conv = Tensor::cat(
                    vec![
                        offset_products_reference(rows, w, t, len),
                        Tensor::zeros([b, kt - 1, cout], &device),
                    ],
                    1,
                )
                .reshape([b, fo, t, cout]);
                let reference =
                    relu(max_pool_reference(conv, valid, k) + shift.reshape([1, 1, 1, cout]));
                assert_eq!(own.dims(), [b, fo / k, valid / k, cout]);
                let what = format!("{kind} {b}x{f}x{t}x{cin}->{cout} kernel {kf}x{kt} pool {k}");
                // Under autodiff: the inner backend's operation untracked, the composition
                // (with its backward) when the input is tracked.
                #[cfg(feature = "train")]
                for tracked in [false, true] {
                    let ad = device.clone().autodiff();
                    let on = |x: Tensor<1>| Tensor::<1>::from_data(x.to_data(), &ad);
                    let rows = Tensor::<3>::from_data(rows_copy.to_data(), &ad);
                    let rows = if tracked { rows.require_grad() } else { rows };
                    let w = Tensor::<4>::from_data(w_copy.to_data(), &ad);
                    let out = conv_pool_relu(rows, w, on(shift_copy.clone()), [t, fo, valid, k]);
                    let out = Tensor::<4>::from_data(out.to_data(), &device);
                    assert_close(
                        out,
                        reference.clone(),
                        1e-5,
                        &format!("{what} tracked {tracked}"),
                    );
                }
                assert_close(own, reference, 1e-5, &what);
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

    /// Training batch norm written with tensor operations (burn derives its gradient): mean and
    /// biased variance over the data rows (r mod t < valid), every row normalised.
    fn batch_norm_reference(
        x: Tensor<2>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        eps: f64,
        [t, valid]: [usize; 2],
    ) -> Tensor<2> {
        let [n, c] = x.dims();
        let count = data_rows(n, t, valid) as f32;
        let w: Vec<f32> = (0..n)
            .map(|r| if r % t < valid { 1.0 / count } else { 0.0 })
            .collect();
        let w = Tensor::<2>::from_data(TensorData::new(w, [n, 1]), &x.device());
        let mean = (x.clone() * w.clone()).sum_dim(0);
        let dev = x - mean;
        let var = (dev.clone() * dev.clone() * w).sum_dim(0);
        dev / (var + eps).sqrt() * gamma.reshape([1, c]) + beta.reshape([1, c])
    }

    /// Training batch norm's forward and gradients (with respect to x, γ and β) equal those burn
    /// derives for the composition, on every available backend, with padding rows and without,
    /// over more rows than one of the CPU's summing blocks, and with columns far from zero.
    #[cfg(feature = "train")]
    #[test]
    fn batch_norm_gradients_match_burns() {
        let mut rng = SplitMix64::new(23);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            let device = device.autodiff();
            // (rows, channels, t, valid, offset of the columns)
            for (n, c, t, valid, offset) in [
                (60, 4, 1, 1, 0.0),
                (60, 3, 12, 9, 3.0),
                (4000, 16, 20, 17, 20.0),
                (1001, 5, 7, 7, -2.0),
            ] {
                let x = random([n, c], &mut rng, &device) * 2.0 + offset;
                let gamma = random([c], &mut rng, &device);
                let beta = random([c], &mut rng, &device);
                let weights = random([n, c], &mut rng, &device);
                let eps = 1e-5;
                let run = |own: bool| {
                    let x = x.clone().require_grad();
                    let (g, b) = (gamma.clone().require_grad(), beta.clone().require_grad());
                    let out = if own {
                        let stats = batch_norm_stats(x.clone(), t, valid);
                        batch_norm_rows(x.clone(), stats, [g.clone(), b.clone()], eps, [t, valid])
                    } else {
                        batch_norm_reference(x.clone(), g.clone(), b.clone(), eps, [t, valid])
                    };
                    let grads = (out.clone() * weights.clone()).sum().backward();
                    let d = |v: &Tensor<1>| v.grad(&grads).unwrap();
                    (out, x.grad(&grads).unwrap(), d(&g), d(&b))
                };
                let ((o, dx, dg, db), (ro, rdx, rdg, rdb)) = (run(true), run(false));
                let what = format!("{kind} {n}x{c} t {t} valid {valid} offset {offset}");
                assert_close(o.inner(), ro.inner(), 1e-5, &format!("{what} output"));
                assert_close(dx, rdx, 1e-4, &format!("{what} d x"));
                assert_close(dg, rdg, 1e-5, &format!("{what} d gamma"));
                assert_close(db, rdb, 1e-5, &format!("{what} d beta"));
            }
        }
    }

    /// Training batch norm then pooling as one operation: forward and gradients (with respect to
    /// x, γ and β) equal those burn derives for the composition of the batch norm and the
    /// pooling written with tensor operations, on every available backend: with channels whose γ
    /// is negative (where the pooling takes each window's minimum of x), padding columns past
    /// `valid`, trailing rows and columns no window covers, and more windows than one of the CPU's
    /// summing blocks.
    #[cfg(feature = "train")]
    #[test]
    fn batch_norm_pool_matches_the_composition() {
        let mut rng = SplitMix64::new(25);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            let device = device.autodiff();
            // (B, F, T, valid, C, k, offset of the columns, ties: x on a coarse grid, so that
            // windows often hold their extreme twice and the gradient must go to the first)
            for (b, f, t, valid, c, k, offset, ties) in [
                (2, 8, 12, 9, 3, 2, 0.0, false),
                (1, 7, 10, 10, 4, 3, 5.0, true),
                (2, 21, 60, 57, 6, 2, -3.0, false),
            ] {
                let mut x = random([b, f, t, c], &mut rng, &device) * 2.0;
                if ties {
                    x = x.round();
                }
                let x = x + offset;
                // Both signs, none near zero.
                let gamma = random([c], &mut rng, &device);
                let gamma = gamma.clone().sign() * (gamma.abs() + 0.2);
                let beta = random([c], &mut rng, &device);
                let weights = random([b, f / k, valid / k, c], &mut rng, &device);
                let eps = 1e-5;
                let run = |own: bool| {
                    let x = x.clone().require_grad();
                    let (g, be) = (gamma.clone().require_grad(), beta.clone().require_grad());
                    let rows = x.clone().reshape([b * f * t, c]);
                    let out = if own {
                        let stats = batch_norm_stats(rows, t, valid);
                        batch_norm_pool(x.clone(), stats, [g.clone(), be.clone()], eps, valid, k)
                    } else {
                        let y = batch_norm_reference(rows, g.clone(), be.clone(), eps, [t, valid]);
                        max_pool_reference(y.reshape([b, f, t, c]), valid, k)
                    };
                    let grads = (out.clone() * weights.clone()).sum().backward();
                    let d = |v: &Tensor<1>| v.grad(&grads).unwrap();
                    (out, x.grad(&grads).unwrap(), d(&g), d(&be))
                };
                let ((o, dx, dg, db), (ro, rdx, rdg, rdb)) = (run(true), run(false));
                let what = format!("{kind} {b}x{f}x{t} valid {valid} c {c} k {k}");
                assert_close(o.inner(), ro.inner(), 1e-5, &format!("{what} output"));
                assert_close(dx, rdx, 1e-4, &format!("{what} d x"));
                assert_close(dg, rdg, 1e-5, &format!("{what} d gamma"));
                assert_close(db, rdb, 1e-5, &format!("{what} d beta"));
            }
        }
    }

    /// The statistics of columns a thousand standard deviations from zero keep their variance
    /// (one-pass E[x²] − E[x]² in f32 would lose it all), against f64 sums on the host.
    #[test]
    fn batch_norm_statistics_of_columns_far_from_zero() {
        let mut rng = SplitMix64::new(24);
        for device in crate::backend::available_devices() {
            let kind = crate::backend::kind_of(&device);
            let (n, c, t, valid) = (3000, 3, 10, 8);
            let host: Vec<f32> = (0..n * c)
                .map(|i| 1000.0 * (i % c + 1) as f32 + rng.normal() as f32)
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(host.clone(), [n, c]), &device);
            let stats = batch_norm_stats(x, t, valid)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for ch in 0..c {
                let col: Vec<f64> = (0..n)
                    .filter(|r| r % t < valid)
                    .map(|r| host[r * c + ch] as f64)
                    .collect();
                let mean = col.iter().sum::<f64>() / col.len() as f64;
                let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
                println!(
                    "{kind} channel {ch}: mean {} vs {mean}, var {} vs {var}",
                    stats[ch],
                    stats[c + ch]
                );
                // The mean to f32's rounding of a sum of n terms (the GPU's matmul sums in f32,
                // in an order its autotuner picks); the variance, taken about that mean, to 1e-3.
                assert!(
                    (stats[ch] as f64 - mean).abs() < 2e-5 * mean.abs(),
                    "{kind} mean {ch}"
                );
                assert!(
                    (stats[c + ch] as f64 / var - 1.0).abs() < 1e-3,
                    "{kind} var {ch}"
                );
            }
        }
    }
}
