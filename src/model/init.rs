//! Initialisation of the trainable modules, as the official training scripts
//! do it after building them (`dinomaly_mvtec_uni.py`): every Linear weight
//! from a truncated normal (mean 0, std 0.01, cut at ±0.03 absolute), every
//! Linear bias 0, every LayerNorm weight 1 and bias 0.
//!
//! libtorch has no truncated normal, so [`trunc_normal_`] follows the
//! algorithm of `torch.nn.init.trunc_normal_` step by step (inverse-CDF
//! sampling from a uniform draw). It draws from libtorch's global generator,
//! so `tch::manual_seed(s)` followed by the same calls gives the same values
//! as `torch.manual_seed(s)` followed by `trunc_normal_` in PyTorch.

use std::cell::Cell;

use tch::{Kind, Tensor};

use crate::Result;

thread_local! {
    /// Set while [`without_random_init`] runs on this thread.
    static SKIP_RANDOM_INIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `build` with the draws of [`trunc_normal_`] skipped on this thread
/// (tensors keep the zeros they were created with), for a model whose every
/// parameter is loaded from a checkpoint right after: drawing 60 M
/// truncated-normal values for a ViT-B decoder costs a few hundred
/// milliseconds of a scoring run's start-up for values that are then
/// overwritten. The flag is restored when `build` returns or unwinds.
pub fn without_random_init<R>(build: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SKIP_RANDOM_INIT.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SKIP_RANDOM_INIT.with(|s| s.replace(true)));
    build()
}

/// Standard deviation of the official Linear-weight init.
pub const LINEAR_INIT_STD: f64 = 0.01;
/// Absolute cut-off of the official Linear-weight init (three std).
pub const LINEAR_INIT_CUT: f64 = 0.03;

/// Fills `t` in place with samples of a normal(`mean`, `std`) truncated to
/// `[a, b]`, exactly as `torch.nn.init.trunc_normal_` does:
/// uniform on `[2Φ(α)−1, 2Φ(β)−1]`, `erfinv`, scale by `std·√2`, shift by
/// `mean`, clamp to `[a, b]` (α, β the standardised bounds).
///
/// Runs without gradient tracking, so it may be applied to parameters.
pub fn trunc_normal_(t: &Tensor, mean: f64, std: f64, a: f64, b: f64) -> Result<()> {
    // Written so that NaN bounds are refused too.
    if std.is_nan() || a.is_nan() || b.is_nan() || std <= 0.0 || a >= b {
        return Err(crate::Error::config(format!(
            "truncated normal needs std > 0 and a < b, got std {std}, a {a}, b {b}"
        )));
    }
    if SKIP_RANDOM_INIT.with(Cell::get) {
        return Ok(());
    }
    let lo = 2.0 * norm_cdf((a - mean) / std)? - 1.0;
    let hi = 2.0 * norm_cdf((b - mean) / std)? - 1.0;
    tch::no_grad(|| -> Result<()> {
        let mut t = t.shallow_clone();
        let _ = t.f_uniform_(lo, hi)?;
        let _ = t.f_erfinv_()?;
        let _ = t.f_mul_scalar_(std * std::f64::consts::SQRT_2)?;
        let _ = t.f_add_scalar_(mean)?;
        let _ = t.f_clamp_(a, b)?;
        Ok(())
    })
}

/// Φ(x), the standard normal CDF, as `(1 + erf(x/√2)) / 2` in double
/// precision. Rust's std has no `erf`; libtorch's double `erf` is the C
/// library's, the one Python's `math.erf` uses.
fn norm_cdf(x: f64) -> Result<f64> {
    let e = Tensor::from(x / std::f64::consts::SQRT_2).f_to_kind(Kind::Double)?.f_erf()?.f_double_value(&[])?;
    Ok((1.0 + e) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_in_bounds_with_the_right_spread() {
        tch::manual_seed(3);
        let t = Tensor::zeros([200_000], (Kind::Float, tch::Device::Cpu));
        trunc_normal_(&t, 0.0, 0.01, -0.03, 0.03).unwrap();
        let max = t.abs().max().double_value(&[]);
        assert!(max <= 0.03, "max {max}");
        // The std of a normal truncated at ±3σ is 0.98658σ.
        let std = t.std(true).double_value(&[]);
        assert!((std / 0.01 - 0.98658).abs() < 0.005, "std {std}");
        let mean = t.mean(Kind::Double).double_value(&[]);
        assert!(mean.abs() < 1e-4, "mean {mean}");
    }

    #[test]
    fn same_seed_same_values() {
        let draw = || {
            tch::manual_seed(11);
            let t = Tensor::zeros([64], (Kind::Float, tch::Device::Cpu));
            trunc_normal_(&t, 0.0, 0.01, -0.03, 0.03).unwrap();
            t
        };
        assert!(draw().equal(&draw()));
    }

    #[test]
    fn draws_are_skipped_only_inside_without_random_init() {
        let t = Tensor::zeros([64], (Kind::Float, tch::Device::Cpu));
        without_random_init(|| trunc_normal_(&t, 0.0, 0.01, -0.03, 0.03)).unwrap();
        assert_eq!(t.abs().sum(Kind::Double).double_value(&[]), 0.0);
        trunc_normal_(&t, 0.0, 0.01, -0.03, 0.03).unwrap();
        assert!(t.abs().sum(Kind::Double).double_value(&[]) > 0.0);
    }

    #[test]
    fn bad_bounds_are_refused() {
        let t = Tensor::zeros([4], (Kind::Float, tch::Device::Cpu));
        assert!(trunc_normal_(&t, 0.0, 0.01, 0.03, -0.03).is_err());
        assert!(trunc_normal_(&t, 0.0, 0.0, -0.03, 0.03).is_err());
    }

    #[test]
    fn cdf_values() {
        assert!((norm_cdf(0.0).unwrap() - 0.5).abs() < 1e-15);
        assert!((norm_cdf(-3.0).unwrap() - 0.0013498980316301).abs() < 1e-13);
    }
}
