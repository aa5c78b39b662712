//! StableAdamW's element-wise update ([`super::optim`]) fused into two
//! passes over the memory of contiguous float32 CPU tensors, instead of the
//! fifteen or so whole-tensor operations (each with a temporary) that the
//! references' per-tensor loop runs.
//!
//! Every element goes through the same float32 operations, in the same
//! order and with the same roundings, as the operation-by-operation path
//! (and the official `StableAdamW.step` it mirrors): Rust neither reorders
//! nor contracts float arithmetic into fused multiply-adds, and libtorch's
//! element-wise kernels round each operation once. The one difference is
//! the RMS of `g/denom` (a single number per tensor): its sum of squares is
//! accumulated in float64 here, where torch's `norm` sums in float32.
//!
//! 1. moments (and the sum of squares of `g/denom`):
//!    `m ← m·β₁ + g·(1−β₁)`, `v ← v·β₂ + (g·(1−β₂))·g`,
//!    `vmax ← max(vmax, v)`, `denom = √vmax / √(1−β₂ᵗ) + eps`;
//! 2. parameters, once the step size is known:
//!    `p ← p·(1 − lr·wd) + (m·(−step)) / denom`, with `denom` recomputed
//!    from `vmax` (cheaper than storing it, and the same float32 value).

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// Elements a rayon task updates; results do not depend on it.
const CHUNK: usize = 1 << 15;

/// The float32 constants of one step of one tensor, each rounded from its
/// float64 value as libtorch rounds a Python scalar for a float32 tensor.
#[derive(Debug, Clone, Copy)]
pub struct Coefficients {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `√(1 − β₂ᵗ)`.
    pub sqrt_bias_correction2: f32,
    pub eps: f32,
}

/// The memory of one parameter tensor and its state.
pub struct Buffers<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
    /// The running maximum of `exp_avg_sq` (amsgrad), if kept.
    pub max_exp_avg_sq: Option<&'a mut [f32]>,
}

/// torch's `maximum`: NaN if either side is NaN.
#[inline]
fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a >= b {
        a
    } else {
        b
    }
}

#[inline]
fn denominator(second: f32, c: &Coefficients) -> f32 {
    second.sqrt() / c.sqrt_bias_correction2 + c.eps
}

/// One chunk of every buffer.
struct Chunk<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    exp_avg: &'a mut [f32],
    exp_avg_sq: &'a mut [f32],
    max_exp_avg_sq: Option<&'a mut [f32]>,
}

fn chunks<'a>(b: &'a mut Buffers<'_>) -> Vec<Chunk<'a>> {
    let mut vmax = b.max_exp_avg_sq.as_deref_mut().map(|v| v.chunks_mut(CHUNK));
    b.param
        .chunks_mut(CHUNK)
        .zip(b.grad.chunks(CHUNK))
        .zip(b.exp_avg.chunks_mut(CHUNK))
        .zip(b.exp_avg_sq.chunks_mut(CHUNK))
        .map(|(((param, grad), exp_avg), exp_avg_sq)| Chunk {
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq: vmax.as_mut().and_then(|it| it.next()),
        })
        .collect()
}

/// Pass 1: updates the moments and returns `Σ (g/denom)²` (float64, in
/// [`LANES`] partial sums per chunk, chunk sums added in order: the same
/// for any thread count).
pub fn update_moments(b: &mut Buffers<'_>, c: &Coefficients) -> f64 {
    let partial: Vec<f64> = chunks(b)
        .into_par_iter()
        .map(|ch| match ch.max_exp_avg_sq {
            Some(vmax) => moments::<true>(ch.grad, ch.exp_avg, ch.exp_avg_sq, vmax, c),
            None => moments::<false>(ch.grad, ch.exp_avg, ch.exp_avg_sq, &mut [], c),
        })
        .collect();
    partial.iter().sum()
}

/// Independent partial sums of the squares: a float sum is a chain the
/// compiler may not reorder, and this lets it run lanes side by side.
const LANES: usize = 8;

/// Pass 1 on one chunk; `vmax` is used (and of `grad`'s length) only when
/// `AMSGRAD`.
#[inline]
fn moments<const AMSGRAD: bool>(
    grad: &[f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    vmax: &mut [f32],
    c: &Coefficients,
) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut one = |lane: usize, g: f32, m: &mut f32, v: &mut f32, vmax: Option<&mut f32>| {
        *m = *m * c.beta1 + g * c.one_minus_beta1;
        *v = *v * c.beta2 + (g * c.one_minus_beta2) * g;
        let second = match vmax {
            Some(x) => {
                *x = maximum(*x, *v);
                *x
            }
            None => *v,
        };
        let ratio = (g / denominator(second, c)) as f64;
        acc[lane] += ratio * ratio;
    };
    let n = grad.len();
    let whole = n - n % LANES;
    for i in (0..whole).step_by(LANES) {
        let (g, m, v) = (&grad[i..i + LANES], &mut exp_avg[i..i + LANES], &mut exp_avg_sq[i..i + LANES]);
        if AMSGRAD {
            let x = &mut vmax[i..i + LANES];
            for lane in 0..LANES {
                one(lane, g[lane], &mut m[lane], &mut v[lane], Some(&mut x[lane]));
            }
        } else {
            for lane in 0..LANES {
                one(lane, g[lane], &mut m[lane], &mut v[lane], None);
            }
        }
    }
    for i in whole..n {
        let x = if AMSGRAD { Some(&mut vmax[i]) } else { None };
        one(i - whole, grad[i], &mut exp_avg[i], &mut exp_avg_sq[i], x);
    }
    acc.iter().sum()
}

/// Pass 2: `p ← p·decay + (m·(−step)) / denom`.
pub fn update_params(b: &mut Buffers<'_>, c: &Coefficients, decay: f32, step: f32) {
    let neg_step = -step;
    chunks(b).into_par_iter().for_each(|ch| {
        let vmax = ch.max_exp_avg_sq.as_deref();
        for i in 0..ch.param.len() {
            let second = vmax.map_or(ch.exp_avg_sq[i], |v| v[i]);
            let update = (ch.exp_avg[i] * neg_step) / denominator(second, c);
            ch.param[i] = ch.param[i] * decay + update;
        }
    });
}

/// Whether `t` is a contiguous float32 CPU tensor of `numel` elements, i.e.
/// one whose memory [`slice_mut`] may view.
pub fn fusable(t: &Tensor, numel: usize) -> bool {
    t.defined() && t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() && t.numel() == numel
}

/// The memory of a [`fusable`] tensor as a slice.
///
/// # Safety
/// `t` must be [`fusable`], and while the slice lives nothing else may read
/// or write the tensor's storage (no other slice of it, no libtorch
/// operation on it or on a view of it).
#[allow(clippy::mut_from_ref)]
pub unsafe fn slice_mut(t: &Tensor) -> &mut [f32] {
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n)
}
