//! The official `WarmCosineScheduler`, advanced once per iteration
//! (official `utils.py` `WarmCosineScheduler`): `lr(it)` is `linspace(start, base, warmup)[it]` during the
//! warm-up, then `final + ½(base − final)(1 + cos(π·j / (total − warmup)))`
//! with `j = it − warmup`, and `final` from `total` on. The optimizer step of
//! iteration `it` uses `lr(it)`, so the very first step runs at lr 0.
//!
//! (anomalib's Lightning module advances the same scheduler once per epoch;
//! this crate follows the official per-iteration use.)

use crate::{Error, Result};

/// Warm-up then cosine decay of the learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmCosine {
    pub base: f64,
    pub final_lr: f64,
    pub total_iters: u64,
    pub warmup_iters: u64,
    pub start_warmup: f64,
}

impl WarmCosine {
    /// A schedule from 0 to `base` over `warmup_iters`, then down to
    /// `final_lr` at `total_iters`.
    pub fn new(base: f64, final_lr: f64, total_iters: u64, warmup_iters: u64) -> Result<Self> {
        let s = WarmCosine { base, final_lr, total_iters, warmup_iters, start_warmup: 0.0 };
        if !(base.is_finite() && final_lr.is_finite() && base >= 0.0 && final_lr >= 0.0) {
            return Err(Error::config(format!(
                "learning rates must be finite and >= 0, got base {base}, final {final_lr}"
            )));
        }
        if warmup_iters > total_iters {
            return Err(Error::config(format!(
                "warm-up ({warmup_iters} iterations) longer than training ({total_iters})"
            )));
        }
        Ok(s)
    }

    /// The official setting for a run of `total_iters`: 2e-3 → 2e-4 with a
    /// 100-iteration warm-up.
    pub fn official(total_iters: u64) -> Result<Self> {
        WarmCosine::new(2e-3, 2e-4, total_iters, 100.min(total_iters))
    }

    /// Learning rate of iteration `it` (0-based).
    pub fn lr(&self, it: u64) -> f64 {
        if it >= self.total_iters {
            return self.final_lr;
        }
        if it < self.warmup_iters {
            return self.warmup_value(it);
        }
        let len = (self.total_iters - self.warmup_iters) as f64;
        let j = (it - self.warmup_iters) as f64;
        // numpy's order: pi * iters / len, then final + (0.5 * (b - f)) * (1 + cos).
        let cos = (std::f64::consts::PI * j / len).cos();
        self.final_lr + 0.5 * (self.base - self.final_lr) * (1.0 + cos)
    }

    /// `numpy.linspace(start, base, warmup)[it]`: `start + it·step` with
    /// `step = (base − start)/(warmup − 1)`, the last value exactly `base`.
    fn warmup_value(&self, it: u64) -> f64 {
        let n = self.warmup_iters;
        if n == 1 {
            return self.start_warmup;
        }
        if it == n - 1 {
            return self.base;
        }
        let step = (self.base - self.start_warmup) / (n - 1) as f64;
        it as f64 * step + self.start_warmup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn spec_check_values() {
        let s = WarmCosine::official(10_000).unwrap();
        assert_eq!(s.lr(0), 0.0);
        assert!(close(s.lr(1), 2.0202e-5, 1e-4), "{}", s.lr(1));
        assert!(close(s.lr(50), 1.0101e-3, 1e-4), "{}", s.lr(50));
        assert_eq!(s.lr(99), 2e-3);
        assert_eq!(s.lr(100), 2e-3);
        assert!(close(s.lr(1000), 1.96354e-3, 1e-5), "{}", s.lr(1000));
        assert!(close(s.lr(5000), 1.11428e-3, 1e-5), "{}", s.lr(5000));
        assert!(close(s.lr(9999), 2.0000005e-4, 1e-7), "{}", s.lr(9999));
        assert_eq!(s.lr(10_000), 2e-4);
        assert_eq!(s.lr(20_000), 2e-4);
    }

    #[test]
    fn exact_formula_values() {
        let s = WarmCosine::official(10_000).unwrap();
        assert_eq!(s.lr(1), 2e-3 / 99.0);
        let j = 900.0;
        let expect = 2e-4 + 0.5 * (2e-3 - 2e-4) * (1.0 + (std::f64::consts::PI * j / 9900.0).cos());
        assert_eq!(s.lr(1000), expect);
    }

    #[test]
    fn edge_cases() {
        let s = WarmCosine::new(1e-2, 1e-3, 6, 3).unwrap();
        assert_eq!([s.lr(0), s.lr(1), s.lr(2)], [0.0, 5e-3, 1e-2]);
        assert!(close(s.lr(3), 1e-2, 1e-15));
        let no_warmup = WarmCosine::new(1.0, 0.0, 4, 0).unwrap();
        assert_eq!(no_warmup.lr(0), 1.0);
        assert!(close(no_warmup.lr(2), 0.5, 1e-12));
        let one = WarmCosine::new(1.0, 0.0, 4, 1).unwrap();
        assert_eq!(one.lr(0), 0.0);
        assert!(WarmCosine::new(1.0, 0.0, 4, 5).is_err());
        assert!(WarmCosine::new(f64::NAN, 0.0, 4, 1).is_err());
    }
}
