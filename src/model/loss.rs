//! The reconstruction losses (official `utils.py` `global_cosine_hm_percent`, `global_cosine`; docs/sources.md).
//!
//! `global_cosine_hm_percent` (the default, "loose loss"): per group, with
//! `e` the detached encoder group and `d` the decoder group, both
//! `(B, C, H, W)`:
//! 1. point distances `pd = 1 − cos(e, d)` over channels (eps 1e-8), no grad;
//! 2. `k = max(1, ⌊B·H·W·(1 − p)⌋)` in float64 (anomalib's clamp; the
//!    official code has none and fails at k = 0), and the threshold τ is the
//!    k-th largest `pd` over the whole batch;
//! 3. loss term: mean over images of `1 − cos(flatten(e_b), flatten(d_b))`
//!    (one cosine per image over all C·H·W values);
//! 4. the gradient reaching `d` is multiplied by `factor` (0.1) at every
//!    point with `pd < τ` (all channels); points at or above τ keep it.
//!
//! The references do step 4 with a tensor hook; libtorch has none, so `d` is
//! replaced by `d' = d.detach() + (d − d.detach())·w`, `w` = 1 or `factor`
//! per point: `d'` equals `d` bit for bit, and `∂L/∂d = w·∂L/∂d'`.
//! The total is the mean of the group terms. The value never depends on
//! `p`; only the gradients do.

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Cosine eps of both references (`nn.CosineSimilarity()` default).
pub const COSINE_EPS: f64 = 1e-8;

/// The hard-mining schedule and down-weighting factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HardMining {
    /// Final share of easy points down-weighted (0.9).
    pub p_final: f64,
    /// Iterations over which p ramps linearly from 0 (1000).
    pub ramp_iters: u64,
    /// Gradient factor at easy points (0.1).
    pub factor: f64,
}

impl Default for HardMining {
    fn default() -> Self {
        HardMining { p_final: 0.9, ramp_iters: 1000, factor: 0.1 }
    }
}

impl HardMining {
    /// `p(it) = min(p_final·it / ramp, p_final)`, `it` 0-based.
    pub fn p_at(&self, it: u64) -> f64 {
        if self.ramp_iters == 0 {
            return self.p_final;
        }
        // Same operation order as the references: (p_final * it) / ramp.
        (self.p_final * it as f64 / self.ramp_iters as f64).min(self.p_final)
    }
}

/// Which loss training minimises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossKind {
    /// `global_cosine_hm_percent` with its schedule (the default).
    HardMining(HardMining),
    /// Plain `global_cosine` (no gradient shaping; ablation).
    Global,
}

impl Default for LossKind {
    fn default() -> Self {
        LossKind::HardMining(HardMining::default())
    }
}

impl LossKind {
    /// The loss at iteration `it`, with the p it used (0 for plain cosine).
    pub fn compute(&self, enc: &[Tensor], dec: &[Tensor], it: u64) -> Result<(Tensor, f64)> {
        match self {
            LossKind::HardMining(hm) => {
                let p = hm.p_at(it);
                Ok((global_cosine_hm_percent(enc, dec, p, hm.factor)?, p))
            }
            LossKind::Global => Ok((global_cosine(enc, dec)?, 0.0)),
        }
    }
}

/// Number of points kept at full gradient: `max(1, ⌊points·(1 − p)⌋)`,
/// computed in float64 like Python's `int(numel * (1 - p))` (so for
/// 12544 points and p = 0.9 it is 1254, not 1255).
pub fn hard_mining_k(points: i64, p: f64) -> i64 {
    ((points as f64 * (1.0 - p)) as i64).max(1)
}

/// The loose loss with hard mining at share `p` and gradient `factor`.
pub fn global_cosine_hm_percent(enc: &[Tensor], dec: &[Tensor], p: f64, factor: f64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) || !factor.is_finite() {
        return Err(Error::config(format!(
            "hard mining needs 0 <= p <= 1 and a finite factor, got p {p}, factor {factor}"
        )));
    }
    check_pairs(enc, dec)?;
    let mut total: Option<Tensor> = None;
    for (e, d) in enc.iter().zip(dec) {
        let e = e.detach();
        let weights = tch::no_grad(|| point_weights(&e, d, p, factor))?;
        let d_shaped = d.detach() + (d - d.detach()) * weights;
        let term = image_cosine_loss(&e, &d_shaped)?;
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    finish(total, enc.len())
}

/// Plain global cosine: mean over groups of the per-image flattened cosine
/// loss, encoder side detached.
pub fn global_cosine(enc: &[Tensor], dec: &[Tensor]) -> Result<Tensor> {
    check_pairs(enc, dec)?;
    let mut total: Option<Tensor> = None;
    for (e, d) in enc.iter().zip(dec) {
        let term = image_cosine_loss(&e.detach(), d)?;
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    finish(total, enc.len())
}

/// Per-point gradient weights `(B, 1, H, W)`: `factor` where `pd < τ`, 1
/// elsewhere.
pub fn point_weights(e: &Tensor, d: &Tensor, p: f64, factor: f64) -> Result<Tensor> {
    let pd = point_distance(e, d)?;
    let k = hard_mining_k(pd.numel() as i64, p);
    let (top, _) = pd.f_reshape([-1])?.f_topk(k, -1, true, true)?;
    let tau = top.f_get(k - 1)?;
    let easy = pd.f_lt_tensor(&tau)?;
    Ok(pd.f_ones_like()?.f_masked_fill(&easy, factor)?)
}

/// `1 − cos` over channels, `(B, C, H, W) → (B, 1, H, W)`.
pub fn point_distance(e: &Tensor, d: &Tensor) -> Result<Tensor> {
    let cos = Tensor::f_cosine_similarity(e, d, 1, COSINE_EPS)?;
    Ok((1f64 - cos).f_unsqueeze(1)?)
}

/// `mean_b(1 − cos(flatten(e_b), flatten(d_b)))`.
fn image_cosine_loss(e: &Tensor, d: &Tensor) -> Result<Tensor> {
    let b = e.size()[0];
    let cos = Tensor::f_cosine_similarity(&e.f_reshape([b, -1])?, &d.f_reshape([b, -1])?, 1, COSINE_EPS)?;
    Ok((1f64 - cos).f_mean(None::<Kind>)?)
}

fn finish(total: Option<Tensor>, groups: usize) -> Result<Tensor> {
    let total = total.ok_or_else(|| Error::config("the loss needs at least one group"))?;
    Ok(total / groups as f64)
}

fn check_pairs(enc: &[Tensor], dec: &[Tensor]) -> Result<()> {
    if enc.len() != dec.len() || enc.is_empty() {
        return Err(Error::mismatch(
            "loss inputs",
            format!("{} encoder groups and {} decoder groups", enc.len(), dec.len()),
        ));
    }
    for (g, (e, d)) in enc.iter().zip(dec).enumerate() {
        if e.size() != d.size() || e.dim() != 4 {
            return Err(Error::mismatch(
                format!("loss group {g}"),
                format!("encoder {:?} and decoder {:?}, expected equal (B, C, H, W)", e.size(), d.size()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn k_values_of_the_spec() {
        let points = 16 * 28 * 28;
        assert_eq!(points, 12544);
        let hm = HardMining::default();
        assert_eq!(hard_mining_k(points, hm.p_at(0)), 12544);
        assert_eq!(hm.p_at(500), 0.45);
        assert_eq!(hard_mining_k(points, hm.p_at(500)), 6899);
        assert_eq!(hard_mining_k(points, hm.p_at(1000)), 1254);
        assert_eq!(hard_mining_k(points, hm.p_at(5000)), 1254);
        // Exactly representable counts still lose one to 1 - 0.9 < 0.1.
        assert_eq!(hard_mining_k(5 * 28 * 28, 0.9), 391);
        assert_eq!(hard_mining_k(3, 0.9), 1);
        assert_eq!(hm.p_at(1), 0.9 / 1000.0);
    }

    fn pair(seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let e = Tensor::randn([3, 5, 4, 6], (Kind::Float, Device::Cpu));
        let d = (&e + Tensor::randn([3, 5, 4, 6], (Kind::Float, Device::Cpu)) * 0.8).set_requires_grad(true);
        (e, d)
    }

    fn grad_of(loss: Tensor, d: &Tensor) -> Tensor {
        let g = Tensor::run_backward(&[loss], &[d], false, false);
        g.into_iter().next().unwrap()
    }

    #[test]
    fn easy_points_get_exactly_a_tenth_of_the_gradient() {
        let (e, d) = pair(1);
        let shaped = global_cosine_hm_percent(&[e.shallow_clone()], &[d.shallow_clone()], 0.9, 0.1).unwrap();
        let plain = global_cosine(&[e.shallow_clone()], &[d.shallow_clone()]).unwrap();
        // Same forward value.
        assert_eq!(shaped.double_value(&[]), plain.double_value(&[]));
        let gs = grad_of(shaped, &d);
        let gp = grad_of(plain, &d);
        let pd = point_distance(&e, &d.detach()).unwrap();
        let k = hard_mining_k(pd.numel() as i64, 0.9);
        assert_eq!(k, 7);
        let tau = pd.reshape([-1]).topk(k, -1, true, true).0.get(k - 1);
        let easy = pd.lt_tensor(&tau).expand_as(&gs);
        let hard = easy.logical_not();
        // Easy points: exactly 0.1x (the same float32 product the hook makes).
        assert!(gs.masked_select(&easy).equal(&(gp.masked_select(&easy) * 0.1)));
        // Hard points (pd >= tau): untouched.
        assert!(gs.masked_select(&hard).equal(&gp.masked_select(&hard)));
        assert_eq!(hard.sum(Kind::Int64).int64_value(&[]), k * 5);
    }

    #[test]
    fn p_zero_changes_nothing() {
        let (e, d) = pair(2);
        let shaped = global_cosine_hm_percent(&[e.shallow_clone()], &[d.shallow_clone()], 0.0, 0.1).unwrap();
        let plain = global_cosine(&[e], &[d.shallow_clone()]).unwrap();
        assert!(grad_of(shaped, &d).equal(&grad_of(plain, &d)));
    }

    #[test]
    fn loss_value_is_the_mean_image_cosine() {
        let e = Tensor::ones([2, 3, 1, 1], (Kind::Float, Device::Cpu));
        let d = Tensor::from_slice(&[1.0f32, 1.0, 1.0, -1.0, -1.0, -1.0]).view([2, 3, 1, 1]);
        // Image 0: cos 1, image 1: cos -1 → mean of (0, 2) = 1.
        let l = global_cosine(&[e.shallow_clone()], &[d.shallow_clone()]).unwrap();
        assert!((l.double_value(&[]) - 1.0).abs() < 1e-7);
        // Two groups average.
        let l = global_cosine(&[e.shallow_clone(), e.shallow_clone()], &[d, e]).unwrap();
        assert!((l.double_value(&[]) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (e, d) = pair(3);
        assert!(global_cosine(&[e.shallow_clone()], &[]).is_err());
        assert!(global_cosine(&[], &[]).is_err());
        let small = Tensor::zeros([3, 5, 4, 5], (Kind::Float, Device::Cpu));
        assert!(global_cosine(&[e.shallow_clone()], &[small]).is_err());
        assert!(global_cosine_hm_percent(&[e.shallow_clone()], &[d.shallow_clone()], 1.5, 0.1).is_err());
        assert!(global_cosine_hm_percent(&[e], &[d], 0.5, f64::NAN).is_err());
    }
}
