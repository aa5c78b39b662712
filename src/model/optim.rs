//! StableAdamW as in the official `optimizers/StableAdamW.py` (also
//! anomalib's `components/optimizer.py`, identical), and torch's
//! `clip_grad_norm_`.
//!
//! Per parameter tensor `p` with gradient `g`, at learning rate `lr`:
//! 1. decoupled weight decay on every tensor: `p ← p·(1 − lr·wd)`;
//! 2. `t += 1`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//!    `vmax ← max(vmax, v)` (amsgrad);
//! 3. `denom = √vmax / √(1−β₂ᵗ) + eps`;
//! 4. `r = ‖g/denom‖₂ / √numel / clip_threshold` (current gradient, not m);
//! 5. `p ← p − (lr / (1−β₁ᵗ) / max(1, r))·m/denom`.
//!
//! Dtype detail (spec 13.3): in Python `max(1.0, r)` returns the float 1.0
//! or the float32 tensor `r`; in the second case the step size
//! `lr/(1−β₁ᵗ)/r` is evaluated as torch does for `float / tensor`, i.e.
//! `float32(1/r) · float32(lr/(1−β₁ᵗ))` rounded to float32. That is
//! reproduced here.
//!
//! The step runs at any lr, including 0: moments and the step counter
//! still advance (the first scheduled step of the official run is at lr 0).

use tch::Tensor;

use super::optim_fused as fused;
use super::NamedTensor;
use crate::{Error, Result};

/// Hyper-parameters (the learning rate is given per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StableAdamWConfig {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    pub amsgrad: bool,
    pub clip_threshold: f64,
}

impl StableAdamWConfig {
    /// Official multi-class setting: betas (0.9, 0.999), eps 1e-10,
    /// weight decay 1e-4, amsgrad, clip threshold 1.
    pub fn unified() -> Self {
        StableAdamWConfig { betas: (0.9, 0.999), eps: 1e-10, weight_decay: 1e-4, amsgrad: true, clip_threshold: 1.0 }
    }

    /// Official class-separated setting (and anomalib's): eps 1e-8.
    pub fn separated() -> Self {
        StableAdamWConfig { eps: 1e-8, ..StableAdamWConfig::unified() }
    }

    fn validate(&self) -> Result<()> {
        let (b1, b2) = self.betas;
        let ok = (0.0..1.0).contains(&b1)
            && (0.0..1.0).contains(&b2)
            && self.eps >= 0.0
            && self.weight_decay >= 0.0
            && self.clip_threshold > 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::config(format!("invalid StableAdamW settings {self:?}")))
        }
    }
}

/// One parameter with its optimizer state.
#[derive(Debug)]
struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
    step: i64,
}

/// The step size `lr / (1−β₁ᵗ) / max(1, r)` for RMS ratio `r` (float32),
/// and whether `r` scaled it down. As in Python, `max(1.0, r)` is the float
/// 1.0 or the float32 tensor `r`, and then `lr/(1−β₁ᵗ)/r` evaluates as
/// `float32(1/r) · float32(lr/(1−β₁ᵗ))`.
fn step_size(rms: f32, lr: f64, bias_correction1: f64) -> (f64, bool) {
    if rms as f64 > 1.0 {
        (((1.0f32 / rms) * (lr / bias_correction1) as f32) as f64, true)
    } else {
        (lr / bias_correction1, false)
    }
}

impl Slot {
    /// Whether the fused CPU update can run on this slot with `grad`.
    fn fusable(&self, grad: &Tensor) -> bool {
        let n = self.param.numel();
        fused::fusable(&self.param, n)
            && fused::fusable(grad, n)
            && fused::fusable(&self.exp_avg, n)
            && fused::fusable(&self.exp_avg_sq, n)
            && self.max_exp_avg_sq.as_ref().is_none_or(|v| fused::fusable(v, n))
    }

    /// The update in two fused passes over CPU memory ([`fused`]), with the
    /// bias corrections `(1−β₁ᵗ, 1−β₂ᵗ)` of this step; returns whether the
    /// RMS clip scaled it.
    fn update_fused(
        &mut self,
        grad: &Tensor,
        lr: f64,
        (bias_correction1, bias_correction2): (f64, f64),
        cfg: &StableAdamWConfig,
    ) -> bool {
        let (b1, b2) = cfg.betas;
        let c = fused::Coefficients {
            beta1: b1 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            sqrt_bias_correction2: bias_correction2.sqrt() as f32,
            eps: cfg.eps as f32,
        };
        let numel = self.param.numel();
        // SAFETY: `fusable` checked that each tensor is a contiguous float32
        // CPU tensor of `numel` elements. They are distinct allocations (the
        // moments were made by `zeros_like` or copied into, the gradient by
        // autograd), and nothing else touches them until the slices drop at
        // the end of this function: the step runs on the training thread
        // between two forward passes.
        let mut buffers = unsafe {
            fused::Buffers {
                param: fused::slice_mut(&self.param),
                grad: fused::slice_mut(grad),
                exp_avg: fused::slice_mut(&self.exp_avg),
                exp_avg_sq: fused::slice_mut(&self.exp_avg_sq),
                max_exp_avg_sq: self.max_exp_avg_sq.as_ref().map(|v| fused::slice_mut(v)),
            }
        };
        let sum_sq = fused::update_moments(&mut buffers, &c);
        // torch: ratio.norm() / √numel / clip_threshold, in float32.
        let rms = (sum_sq.sqrt() as f32) / (numel as f64).sqrt() as f32 / cfg.clip_threshold as f32;
        let (step, clipped) = step_size(rms, lr, bias_correction1);
        let decay = (1.0 - lr * cfg.weight_decay) as f32;
        fused::update_params(&mut buffers, &c, decay, step as f32);
        clipped
    }

    /// The update operation by operation, as the official loop runs it
    /// (any device and kind), with the same arguments as `update_fused`;
    /// returns whether the RMS clip scaled it.
    fn update_ops(
        &mut self,
        grad: &Tensor,
        lr: f64,
        (bias_correction1, bias_correction2): (f64, f64),
        cfg: &StableAdamWConfig,
    ) -> Result<bool> {
        let (b1, b2) = cfg.betas;
        let mut p = self.param.shallow_clone();
        let _ = p.f_mul_scalar_(1.0 - lr * cfg.weight_decay)?;

        let _ = self.exp_avg.f_mul_scalar_(b1)?;
        let _ = self.exp_avg.f_add_(&grad.f_mul_scalar(1.0 - b1)?)?;
        let _ = self.exp_avg_sq.f_mul_scalar_(b2)?;
        // addcmul_(g, g, value) computes (value·g)·g.
        let _ = self.exp_avg_sq.f_add_(&grad.f_mul_scalar(1.0 - b2)?.f_mul(grad)?)?;
        let second = match &mut self.max_exp_avg_sq {
            Some(vmax) => {
                let m = vmax.f_maximum(&self.exp_avg_sq)?;
                vmax.f_copy_(&m)?;
                vmax.shallow_clone()
            }
            None => self.exp_avg_sq.shallow_clone(),
        };
        let denom = (second.f_sqrt()? / bias_correction2.sqrt()).f_add_scalar(cfg.eps)?;

        let ratio = grad.f_div(&denom)?;
        let rms = ratio.f_norm()? / (ratio.numel() as f64).sqrt() / cfg.clip_threshold;
        let (step, clipped) = step_size(rms.f_double_value(&[])? as f32, lr, bias_correction1);
        // addcdiv_(m, denom, value=-step) computes (value·m)/denom.
        let _ = p.f_add_(&self.exp_avg.f_mul_scalar(-step)?.f_div(&denom)?)?;
        Ok(clipped)
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Tensors whose update was scaled down (r > clip threshold).
    pub rms_clipped: Vec<String>,
    /// Tensors skipped because they had no gradient.
    pub without_grad: usize,
}

/// StableAdamW over a fixed, ordered list of named parameters.
#[derive(Debug)]
pub struct StableAdamW {
    cfg: StableAdamWConfig,
    slots: Vec<Slot>,
    /// Take the fused CPU update where the tensors allow it (always, except
    /// in the tests that compare it with the operation-by-operation path).
    fused: bool,
}

/// Keys of the exported state of parameter `name`.
const STATE_FIELDS: [&str; 4] = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"];

impl StableAdamW {
    /// Zero state for every parameter (equivalent to torch's lazy init).
    pub fn new(params: Vec<NamedTensor>, cfg: StableAdamWConfig) -> Result<Self> {
        cfg.validate()?;
        let mut slots = Vec::with_capacity(params.len());
        for (name, param) in params {
            if slots.iter().any(|s: &Slot| s.name == name) {
                return Err(Error::config(format!("parameter '{name}' listed twice")));
            }
            let zeros = || param.f_zeros_like();
            slots.push(Slot {
                exp_avg: zeros()?,
                exp_avg_sq: zeros()?,
                max_exp_avg_sq: if cfg.amsgrad { Some(zeros()?) } else { None },
                step: 0,
                name,
                param,
            });
        }
        Ok(StableAdamW { cfg, slots, fused: true })
    }

    pub fn config(&self) -> &StableAdamWConfig {
        &self.cfg
    }

    /// The optimised tensors, in order.
    pub fn params(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.shallow_clone()).collect()
    }

    /// Sets every gradient to zero (where one exists).
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.param.zero_grad();
        }
    }

    /// One step at learning rate `lr` using the gradients in the
    /// parameters' `.grad`.
    pub fn step(&mut self, lr: f64) -> Result<StepReport> {
        self.step_with(lr, &grads_of(&self.params()))
    }

    /// One step at learning rate `lr` with `grads`, one per parameter in
    /// order (an undefined tensor for a parameter without gradient, which
    /// is left alone).
    pub fn step_with(&mut self, lr: f64, grads: &[Tensor]) -> Result<StepReport> {
        if !(lr >= 0.0 && lr.is_finite()) {
            return Err(Error::config(format!("learning rate must be finite and >= 0, got {lr}")));
        }
        if grads.len() != self.slots.len() {
            return Err(Error::mismatch(
                "optimizer step",
                format!("{} gradients for {} parameters", grads.len(), self.slots.len()),
            ));
        }
        let cfg = self.cfg;
        let mut report = StepReport::default();
        tch::no_grad(|| -> Result<()> {
            for (s, grad) in self.slots.iter_mut().zip(grads) {
                if !grad.defined() {
                    report.without_grad += 1;
                    continue;
                }
                s.step += 1;
                let (b1, b2) = cfg.betas;
                let corrections = (1.0 - b1.powi(s.step as i32), 1.0 - b2.powi(s.step as i32));
                let clipped = if self.fused && s.fusable(grad) {
                    s.update_fused(grad, lr, corrections, &cfg)
                } else {
                    s.update_ops(grad, lr, corrections, &cfg)?
                };
                if clipped {
                    report.rms_clipped.push(s.name.clone());
                }
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// The state as named tensors for a checkpoint: for each parameter
    /// `{name}.exp_avg`, `{name}.exp_avg_sq`, `{name}.max_exp_avg_sq`
    /// (amsgrad only) and `{name}.step` (int64 scalar).
    pub fn state_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::with_capacity(self.slots.len() * 4);
        for s in &self.slots {
            out.push((format!("{}.exp_avg", s.name), s.exp_avg.shallow_clone()));
            out.push((format!("{}.exp_avg_sq", s.name), s.exp_avg_sq.shallow_clone()));
            if let Some(v) = &s.max_exp_avg_sq {
                out.push((format!("{}.max_exp_avg_sq", s.name), v.shallow_clone()));
            }
            out.push((format!("{}.step", s.name), Tensor::from(s.step)));
        }
        out
    }

    /// Restores state written by [`StableAdamW::state_tensors`]. Every
    /// expected key must be present with the parameter's shape; the state is
    /// only changed if all of them are.
    pub fn load_state_tensors(&mut self, named: &[NamedTensor]) -> Result<()> {
        let find = |key: &str| named.iter().find(|(k, _)| k == key).map(|(_, t)| t);
        let missing =
            |key: &str| Error::MissingKey { path: "optimizer state".into(), key: key.to_string(), hint: String::new() };
        let mut staged = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let shape = s.param.size();
            let moment = |field: &str| -> Result<Tensor> {
                let key = format!("{}.{field}", s.name);
                let t = find(&key).ok_or_else(|| missing(&key))?;
                if t.size() != shape {
                    return Err(Error::Shape {
                        path: "optimizer state".into(),
                        key,
                        expected: shape.clone(),
                        found: t.size(),
                    });
                }
                Ok(t.f_to_kind(s.param.kind())?.f_to_device(s.param.device())?)
            };
            let m = moment(STATE_FIELDS[0])?;
            let v = moment(STATE_FIELDS[1])?;
            let vmax = if self.cfg.amsgrad { Some(moment(STATE_FIELDS[2])?) } else { None };
            let key = format!("{}.{}", s.name, STATE_FIELDS[3]);
            let step_t = find(&key).ok_or_else(|| missing(&key))?;
            if step_t.numel() != 1 {
                return Err(Error::mismatch(key, "the step counter must be a single number"));
            }
            let step = step_t.f_int64_value(&[])?;
            if step < 0 {
                return Err(Error::mismatch(key, format!("negative step count {step}")));
            }
            staged.push((m, v, vmax, step));
        }
        tch::no_grad(|| -> Result<()> {
            for (s, (m, v, vmax, step)) in self.slots.iter_mut().zip(staged) {
                s.exp_avg.f_copy_(&m)?;
                s.exp_avg_sq.f_copy_(&v)?;
                if let (Some(dst), Some(src)) = (&mut s.max_exp_avg_sq, vmax) {
                    dst.f_copy_(&src)?;
                }
                s.step = step;
            }
            Ok(())
        })
    }
}

/// Total L2 norm of `grads` (norm of the per-tensor norms, as torch's
/// `clip_grad_norm_`), as a float32 scalar tensor. Undefined tensors are
/// left out; `None` if all are.
fn total_norm(grads: &[Tensor]) -> Result<Option<Tensor>> {
    let norms = grads.iter().filter(|g| g.defined()).map(|g| g.f_norm()).collect::<Result<Vec<_>, _>>()?;
    if norms.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tensor::f_stack(&norms, 0)?.f_norm()?))
}

/// The `.grad` of each of `params` (undefined where there is none).
pub fn grads_of(params: &[Tensor]) -> Vec<Tensor> {
    params.iter().map(|p| p.grad()).collect()
}

/// torch's `clip_grad_norm_(params, max_norm)`: scales every gradient by
/// `min(1, max_norm / (norm + 1e-6))` (computed in float32 as torch does)
/// and returns the norm before clipping. A non-finite norm is returned
/// without touching the gradients (the caller skips such a step).
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64) -> Result<f64> {
    clip_grads_(&grads_of(params), max_norm)
}

/// [`clip_grad_norm_`] on the gradient tensors themselves (scaled in
/// place; undefined tensors left out).
pub fn clip_grads_(grads: &[Tensor], max_norm: f64) -> Result<f64> {
    let Some(total) = total_norm(grads)? else {
        return Ok(0.0);
    };
    let norm = total.f_double_value(&[])?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    // max_norm / (total + 1e-6) with a tensor divisor is reciprocal * float.
    let coef = (total.f_add_scalar(1e-6)?.f_reciprocal()? * max_norm).f_clamp_max(1.0)?;
    tch::no_grad(|| -> Result<()> {
        for g in grads.iter().filter(|g| g.defined()) {
            let _ = g.shallow_clone().f_mul_(&coef.f_to_kind(g.kind())?)?;
        }
        Ok(())
    })?;
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn param(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).set_requires_grad(true)
    }

    fn set_grad(p: &Tensor, g: &[f32]) {
        let loss = (p * Tensor::from_slice(g)).sum(Kind::Float);
        loss.backward();
    }

    #[test]
    fn first_step_matches_the_formula() {
        let p = param(&[0.5, -1.0, 2.0]);
        let mut opt = StableAdamW::new(vec![("w".into(), p.shallow_clone())], StableAdamWConfig::separated()).unwrap();
        set_grad(&p, &[0.1, -0.2, 0.0]);
        let lr = 0.01;
        opt.step(lr).unwrap();
        // t = 1: m = 0.1g, v = 0.001g², denom = |g| + eps, step = lr/0.1.
        let expect = |p0: f64, g: f64| {
            let p0 = p0 * (1.0 - lr * 1e-4);
            p0 - lr / 0.1 * (0.1 * g) / (g.abs() + 1e-8)
        };
        for (i, (p0, g)) in [(0.5, 0.1), (-1.0, -0.2), (2.0, 0.0)].iter().enumerate() {
            let got = p.double_value(&[i as i64]);
            assert!((got - expect(*p0, *g)).abs() < 1e-6, "{i}: {got} vs {}", expect(*p0, *g));
        }
    }

    #[test]
    fn rms_clip_scales_the_step() {
        // Second step with a much larger gradient: g/denom ≫ 1, so r > 1.
        let p = param(&[1.0, 1.0]);
        let cfg = StableAdamWConfig { weight_decay: 0.0, ..StableAdamWConfig::separated() };
        let mut opt = StableAdamW::new(vec![("w".into(), p.shallow_clone())], cfg).unwrap();
        set_grad(&p, &[1e-3, 1e-3]);
        assert!(opt.step(0.0).unwrap().rms_clipped.is_empty());
        let before = p.detach().copy();
        opt.zero_grad();
        set_grad(&p, &[1.0, 1.0]);
        let report = opt.step(0.1).unwrap();
        assert_eq!(report.rms_clipped, ["w"]);
        // Formula in f64.
        let (b1, b2): (f64, f64) = (0.9, 0.999);
        let m = b1 * (1.0 - b1) * 1e-3 + (1.0 - b1) * 1.0;
        let v = b2 * (1.0 - b2) * 1e-6 + (1.0 - b2) * 1.0;
        let denom = v.sqrt() / (1.0 - b2 * b2).sqrt() + 1e-8;
        let r = 1.0 / denom;
        let step = 0.1 / (1.0 - b1 * b1) / r;
        let expect = 1.0 - step * m / denom;
        let got = p.double_value(&[0]);
        assert!(r > 1.0);
        assert!((got - expect).abs() < 1e-6, "{got} vs {expect}");
        assert!(before.double_value(&[0]) == 1.0);
    }

    #[test]
    fn lr_zero_still_advances_moments() {
        let p = param(&[0.3]);
        let mut opt = StableAdamW::new(vec![("w".into(), p.shallow_clone())], StableAdamWConfig::unified()).unwrap();
        set_grad(&p, &[0.5]);
        opt.step(0.0).unwrap();
        assert_eq!(p.double_value(&[0]), 0.3f32 as f64);
        let state = opt.state_tensors();
        let step = state.iter().find(|(k, _)| k == "w.step").unwrap();
        assert_eq!(step.1.int64_value(&[]), 1);
        let m = state.iter().find(|(k, _)| k == "w.exp_avg").unwrap();
        assert!((m.1.double_value(&[0]) - 0.05).abs() < 1e-8);
    }

    #[test]
    fn state_round_trip_and_errors() {
        let p = param(&[0.3, 0.1]);
        let mut a = StableAdamW::new(vec![("w".into(), p.shallow_clone())], StableAdamWConfig::unified()).unwrap();
        set_grad(&p, &[0.5, -0.1]);
        a.step(0.01).unwrap();
        let saved: Vec<NamedTensor> = a.state_tensors().into_iter().map(|(k, t)| (k, t.copy())).collect();
        assert_eq!(saved.len(), 4);
        let q = param(&[0.3, 0.1]);
        let mut b = StableAdamW::new(vec![("w".into(), q.shallow_clone())], StableAdamWConfig::unified()).unwrap();
        b.load_state_tensors(&saved).unwrap();
        for ((ka, ta), (kb, tb)) in a.state_tensors().iter().zip(b.state_tensors().iter()) {
            assert_eq!(ka, kb);
            assert!(ta.equal(tb), "{ka}");
        }
        // Missing key, wrong shape: refused, state unchanged.
        let before = b.state_tensors();
        assert!(b.load_state_tensors(&saved[1..]).is_err());
        let mut bad: Vec<NamedTensor> = saved.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        bad[0].1 = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        assert!(b.load_state_tensors(&bad).is_err());
        for ((_, x), (_, y)) in before.iter().zip(b.state_tensors().iter()) {
            assert!(x.equal(y));
        }
        assert!(StableAdamW::new(vec![("w".into(), p.shallow_clone()), ("w".into(), q)], StableAdamWConfig::unified())
            .is_err());
        assert!(a.step(f64::NAN).is_err());
    }

    #[test]
    fn clip_grad_norm_follows_torch() {
        let a = param(&[3.0]);
        let b = param(&[0.0, 0.0]);
        set_grad(&a, &[3.0]);
        set_grad(&b, &[0.0, 4.0]);
        let params = [a.shallow_clone(), b.shallow_clone()];
        let norm = clip_grad_norm_(&params, 0.1).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let coef = 0.1 / (5.0 + 1e-6);
        assert!((a.grad().double_value(&[0]) - 3.0 * coef).abs() < 1e-8);
        assert!((b.grad().double_value(&[1]) - 4.0 * coef).abs() < 1e-8);
        // Below the limit: unchanged.
        let before = a.grad().copy();
        clip_grad_norm_(&params, 10.0).unwrap();
        assert!(a.grad().equal(&before));
    }

    /// The fused CPU update and the operation-by-operation one agree: the
    /// moments bit for bit, the parameters within float32 rounding of the
    /// RMS (float64 sum of squares against torch's float32), over steps
    /// with and without the RMS clip, with and without amsgrad, on tensors
    /// larger than one fused chunk.
    #[test]
    fn fused_update_equals_the_operations() {
        for cfg in
            [StableAdamWConfig::unified(), StableAdamWConfig { amsgrad: false, ..StableAdamWConfig::separated() }]
        {
            tch::manual_seed(21);
            let shapes: [&[i64]; 3] = [&[300, 257], &[768], &[1]];
            let init: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu))).collect();
            let make = |fused: bool| {
                let params: Vec<NamedTensor> =
                    init.iter().enumerate().map(|(i, t)| (format!("p{i}"), t.copy().set_requires_grad(true))).collect();
                let mut opt = StableAdamW::new(params, cfg).unwrap();
                opt.fused = fused;
                opt
            };
            let (mut a, mut b) = (make(true), make(false));
            let mut clipped = 0;
            for step in 0..6 {
                // Small gradients first, then large ones: the RMS clip acts.
                let scale = if step < 3 { 1e-3 } else { 10.0 };
                let grads: Vec<Tensor> =
                    shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)) * scale).collect();
                let ra = a.step_with(0.01, &grads).unwrap();
                let rb = b.step_with(0.01, &grads).unwrap();
                assert_eq!(ra, rb, "step {step}");
                clipped += ra.rms_clipped.len();
            }
            assert!(clipped > 0, "the clip never acted");
            for ((ka, ta), (_, tb)) in a.state_tensors().iter().zip(b.state_tensors().iter()) {
                assert!(ta.equal(tb), "{ka}");
            }
            for (pa, pb) in a.params().iter().zip(b.params()) {
                let d = (pa - &pb).abs().max().double_value(&[]);
                assert!(d <= 1e-6 * pb.abs().max().double_value(&[]), "parameters differ by {d}");
            }
        }
    }
}
