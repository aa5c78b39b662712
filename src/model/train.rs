//! One training iteration in the official order (spec §5):
//! forward → loss(p(it)) → zero_grad → backward → clip (total norm 0.1) →
//! StableAdamW step at lr(it). Advancing `it` (and with it the scheduler)
//! is the caller's job.
//!
//! A non-finite loss or gradient norm skips the step: weights and optimizer
//! state are left exactly as they were and the gradients are zeroed. (The
//! official loop has no such guard; a NaN there poisons the weights.)

use super::dinomaly::{Dinomaly, Features};
use super::loss::LossKind;
use super::optim::{clip_grad_norm_, StableAdamW};
use super::schedule::WarmCosine;
use crate::Result;

/// Everything about a step that is not the model, the optimizer or data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSettings {
    pub schedule: WarmCosine,
    pub loss: LossKind,
    /// Global gradient-norm limit (0.1).
    pub max_grad_norm: f64,
    /// A loss above this value is treated as a spike: the step is skipped
    /// before backward, so it never reaches the weights or the moments.
    pub loss_ceiling: Option<f64>,
}

impl TrainSettings {
    /// The official setting for a run of `total_iters` iterations.
    pub fn official(total_iters: u64) -> Result<Self> {
        Ok(TrainSettings {
            schedule: WarmCosine::official(total_iters)?,
            loss: LossKind::default(),
            max_grad_norm: 0.1,
            loss_ceiling: None,
        })
    }
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NonFiniteLoss,
    NonFiniteGradient,
    /// The loss exceeded [`TrainSettings::loss_ceiling`].
    LossSpike,
}

/// What a step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Loss value of the forward pass.
    pub loss: f64,
    /// Total gradient norm before clipping (NaN if never computed).
    pub grad_norm: f64,
    /// Learning rate used (or that would have been used).
    pub lr: f64,
    /// Hard-mining share p used (0 for the plain cosine loss).
    pub p: f64,
    /// Tensors whose update StableAdamW's RMS clip scaled down.
    pub rms_clipped: Vec<String>,
    /// Set when the step was skipped.
    pub skipped: Option<SkipReason>,
}

/// Runs iteration `it` on one batch of features (training mode, so the
/// bottleneck dropout is active).
pub fn train_step(
    model: &Dinomaly,
    opt: &mut StableAdamW,
    settings: &TrainSettings,
    features: Features<'_>,
    grid: (i64, i64),
    it: u64,
) -> Result<StepOutcome> {
    let lr = settings.schedule.lr(it);
    let (enc, dec) = model.forward_features_t(features, grid, true)?;
    let (loss, p) = settings.loss.compute(&enc, &dec, it)?;
    let loss_value = loss.f_double_value(&[])?;
    let mut outcome = StepOutcome {
        loss: loss_value,
        grad_norm: f64::NAN,
        lr,
        p,
        rms_clipped: Vec::new(),
        skipped: None,
    };
    opt.zero_grad();
    if !loss_value.is_finite() {
        outcome.skipped = Some(SkipReason::NonFiniteLoss);
        return Ok(outcome);
    }
    if settings.loss_ceiling.is_some_and(|ceiling| loss_value > ceiling) {
        outcome.skipped = Some(SkipReason::LossSpike);
        return Ok(outcome);
    }
    loss.f_backward()?;
    clip_and_step(opt, settings.max_grad_norm, &mut outcome)?;
    Ok(outcome)
}

/// Gradient clipping and the optimizer step, skipped (with the gradients
/// zeroed) when the gradient norm is not finite.
fn clip_and_step(
    opt: &mut StableAdamW,
    max_grad_norm: f64,
    outcome: &mut StepOutcome,
) -> Result<()> {
    outcome.grad_norm = clip_grad_norm_(&opt.params(), max_grad_norm)?;
    if !outcome.grad_norm.is_finite() {
        opt.zero_grad();
        outcome.skipped = Some(SkipReason::NonFiniteGradient);
        return Ok(());
    }
    let report = opt.step(outcome.lr)?;
    outcome.rms_clipped = report.rms_clipped;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dinomaly::DinomalyConfig;
    use crate::model::optim::StableAdamWConfig;
    use tch::{nn, Device, Kind, Tensor};

    fn setup() -> (nn::VarStore, Dinomaly, StableAdamW) {
        tch::manual_seed(9);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Dinomaly::new(&vs.root(), DinomalyConfig::official(8, 2, 1, 0.2)).unwrap();
        let opt = StableAdamW::new(m.named_parameters(), StableAdamWConfig::unified()).unwrap();
        (vs, m, opt)
    }

    fn snapshot(m: &Dinomaly, opt: &StableAdamW) -> Vec<Tensor> {
        m.named_parameters()
            .into_iter()
            .map(|(_, t)| t.detach().copy())
            .chain(opt.state_tensors().into_iter().map(|(_, t)| t.copy()))
            .collect()
    }

    #[test]
    fn a_step_changes_weights() {
        let (_vs, m, mut opt) = setup();
        let settings = TrainSettings::official(10).unwrap();
        let layers: Vec<_> = (0..8)
            .map(|_| Tensor::randn([2, 2 + 4, 8], (Kind::Float, Device::Cpu)))
            .collect();
        let before = snapshot(&m, &opt);
        let out = train_step(
            &m,
            &mut opt,
            &settings,
            Features::Layers(&layers),
            (2, 2),
            3,
        )
        .unwrap();
        assert!(out.skipped.is_none());
        assert!(out.loss.is_finite() && out.grad_norm > 0.0);
        assert_eq!(out.lr, settings.schedule.lr(3));
        assert_eq!(out.p, 0.9 * 3.0 / 1000.0);
        let after = snapshot(&m, &opt);
        assert!(before.iter().zip(&after).any(|(a, b)| !a.equal(b)));
    }

    #[test]
    fn non_finite_loss_touches_nothing() {
        let (_vs, m, mut opt) = setup();
        let settings = TrainSettings::official(10).unwrap();
        let layers: Vec<_> = (0..8)
            .map(|_| Tensor::randn([2, 2 + 4, 8], (Kind::Float, Device::Cpu)))
            .collect();
        let _ = layers[2].get(0).get(3).fill_(f64::NAN);
        let before = snapshot(&m, &opt);
        let out = train_step(
            &m,
            &mut opt,
            &settings,
            Features::Layers(&layers),
            (2, 2),
            5,
        )
        .unwrap();
        assert_eq!(out.skipped, Some(SkipReason::NonFiniteLoss));
        let after = snapshot(&m, &opt);
        assert!(before.iter().zip(&after).all(|(a, b)| a.equal(b)));
    }

    #[test]
    fn non_finite_gradient_touches_nothing() {
        let (_vs, m, mut opt) = setup();
        let layers: Vec<_> = (0..8)
            .map(|_| Tensor::randn([2, 2 + 4, 8], (Kind::Float, Device::Cpu)))
            .collect();
        let (enc, dec) = m.forward_t(&layers, (2, 2), true).unwrap();
        let (loss, _) = LossKind::default().compute(&enc, &dec, 0).unwrap();
        loss.backward();
        // One infinite gradient entry, as an overflow would leave.
        let g = m.decoder.blocks[4].attn.qkv.weight.grad();
        let _ = g.get(1).get(2).fill_(f64::INFINITY);
        let before = snapshot(&m, &opt);
        let mut out = StepOutcome {
            loss: 0.0,
            grad_norm: f64::NAN,
            lr: 0.01,
            p: 0.0,
            rms_clipped: Vec::new(),
            skipped: None,
        };
        clip_and_step(&mut opt, 0.1, &mut out).unwrap();
        assert_eq!(out.skipped, Some(SkipReason::NonFiniteGradient));
        assert!(out.grad_norm.is_infinite());
        let after = snapshot(&m, &opt);
        assert!(before.iter().zip(&after).all(|(a, b)| a.equal(b)));
        // Gradients were cleared for the next iteration.
        assert_eq!(g.abs().max().double_value(&[]), 0.0);
    }
}
