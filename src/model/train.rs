//! One training iteration in the official order (the loop of official `dinomaly_mvtec_uni.py`; docs/sources.md):
//! forward → loss(p(it)) → backward → clip (total norm 0.1) → StableAdamW
//! step at lr(it). Advancing `it` (and with it the scheduler)
//! is the caller's job.
//!
//! A non-finite loss or gradient norm skips the step: weights and optimizer
//! state are left exactly as they were. (The official loop has no such
//! guard; a NaN there poisons the weights.)
//!
//! The gradients are handed back by autograd rather than accumulated in
//! the parameters' `.grad` (the official `zero_grad` → `backward`), except
//! under gradient checkpointing, whose backward runs in pieces: the same
//! values without a zero fill and an addition over every parameter.
//!
//! Two settings change how the step computes, not what it computes:
//! [`TrainSettings::precision`] (bfloat16 mixed precision, [`super::amp`])
//! and [`TrainSettings::grad_checkpointing`] (decoder activations
//! recomputed during backward, [`super::recompute`]; same gradients).

use tch::Tensor;

use super::amp::Amp;
use super::dinomaly::{Dinomaly, Features};
use super::loss::LossKind;
use super::optim::{clip_grads_, grads_of, StableAdamW};
use super::recompute::Checkpointed;
use super::schedule::WarmCosine;
use crate::model::amp::Precision;
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
    /// Compute precision: float32 (the references'), or bfloat16 mixed
    /// precision on float32 weights and optimizer state.
    pub precision: Precision,
    /// Recompute the decoder blocks during backward instead of keeping
    /// their activations (less memory, one more decoder forward).
    pub grad_checkpointing: bool,
}

impl TrainSettings {
    /// The official setting for a run of `total_iters` iterations.
    pub fn official(total_iters: u64) -> Result<Self> {
        Ok(TrainSettings {
            schedule: WarmCosine::official(total_iters)?,
            loss: LossKind::default(),
            max_grad_norm: 0.1,
            loss_ceiling: None,
            precision: Precision::Fp32,
            grad_checkpointing: false,
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
    let (mut outcome, grads) = loss_and_gradients(model, &opt.params(), settings, features, grid, it)?;
    if let Some(grads) = grads {
        clip_and_step(opt, &grads, settings.max_grad_norm, &mut outcome)?;
    }
    Ok(outcome)
}

/// The forward pass and loss of iteration `it`, and the gradients of
/// `params` (one per parameter, in order; undefined for a parameter the
/// loss does not reach), or `None` with the reason set in the outcome when
/// the loss says to skip the step.
pub fn loss_and_gradients(
    model: &Dinomaly,
    params: &[Tensor],
    settings: &TrainSettings,
    features: Features<'_>,
    grid: (i64, i64),
    it: u64,
) -> Result<(StepOutcome, Option<Vec<Tensor>>)> {
    let lr = settings.schedule.lr(it);
    let amp = Amp::from(settings.precision);
    let (x, enc_tokens) = model.inputs(features, grid)?;
    // Training mode: the bottleneck dropout is active. The bottleneck runs
    // once, with grad, in both modes (its dropout mask is never redrawn).
    let bottleneck = model.bottleneck.forward_amp(&x, true, amp)?;
    let (blocks, checkpointed) = if settings.grad_checkpointing {
        let ck = Checkpointed::forward(&model.decoder, &bottleneck, amp)?;
        (ck.outputs(), Some(ck))
    } else {
        (model.decoder.forward_amp(&bottleneck, amp)?, None)
    };
    let (enc, dec) = model.group_outputs(enc_tokens, blocks, grid)?;
    let (loss, p) = settings.loss.compute(&enc, &dec, it)?;
    let loss_value = loss.f_double_value(&[])?;
    let mut outcome =
        StepOutcome { loss: loss_value, grad_norm: f64::NAN, lr, p, rms_clipped: Vec::new(), skipped: None };
    if !loss_value.is_finite() {
        outcome.skipped = Some(SkipReason::NonFiniteLoss);
        return Ok((outcome, None));
    }
    if settings.loss_ceiling.is_some_and(|ceiling| loss_value > ceiling) {
        outcome.skipped = Some(SkipReason::LossSpike);
        return Ok((outcome, None));
    }
    let grads = match checkpointed {
        // Autograd hands the gradients back (`torch.autograd.grad`) instead
        // of adding them to `.grad`, which would first be filled with
        // zeros: two passes over every parameter's size saved.
        None => Tensor::f_run_backward(&[&loss], params, false, false)?,
        // The checkpointed backward runs in pieces that accumulate.
        Some(ck) => {
            for p in params {
                p.shallow_clone().zero_grad();
            }
            loss.f_backward()?;
            backward_checkpointed(ck, &bottleneck)?;
            grads_of(params)
        }
    };
    Ok((outcome, Some(grads)))
}

/// The rest of a checkpointed backward, once the loss's backward stopped
/// at the decoder outputs: block by block, then into the bottleneck.
fn backward_checkpointed(ck: Checkpointed<'_>, bottleneck: &Tensor) -> Result<()> {
    if let Some(g) = ck.backward()? {
        // Backward with grad_output g (see `recompute`).
        bottleneck.f_mul(&g)?.f_sum(bottleneck.kind())?.f_backward()?;
    }
    Ok(())
}

/// Gradient clipping and the optimizer step on `grads` (one per
/// parameter, in order), skipped when the gradient norm is not finite.
fn clip_and_step(opt: &mut StableAdamW, grads: &[Tensor], max_grad_norm: f64, outcome: &mut StepOutcome) -> Result<()> {
    outcome.grad_norm = clip_grads_(grads, max_grad_norm)?;
    if !outcome.grad_norm.is_finite() {
        outcome.skipped = Some(SkipReason::NonFiniteGradient);
        return Ok(());
    }
    let report = opt.step_with(outcome.lr, grads)?;
    outcome.rms_clipped = report.rms_clipped;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::AttentionKind;
    use crate::model::dinomaly::DinomalyConfig;
    use crate::model::fusion::GroupPreset;
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
        let layers: Vec<_> = (0..8).map(|_| Tensor::randn([2, 2 + 4, 8], (Kind::Float, Device::Cpu))).collect();
        let before = snapshot(&m, &opt);
        let out = train_step(&m, &mut opt, &settings, Features::Layers(&layers), (2, 2), 3).unwrap();
        assert!(out.skipped.is_none());
        assert!(out.loss.is_finite() && out.grad_norm > 0.0);
        assert_eq!(out.lr, settings.schedule.lr(3));
        assert_eq!(out.p, 0.9 * 3.0 / 1000.0);
        let after = snapshot(&m, &opt);
        assert!(before.iter().zip(&after).any(|(a, b)| !a.equal(b)));
    }

    /// Relative difference `‖a − b‖ / ‖a‖` of two tensors.
    fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_kind(Kind::Double);
        let b = b.to_kind(Kind::Double);
        (&a - &b).norm().double_value(&[]) / a.norm().double_value(&[]).max(1e-30)
    }

    /// Initial weights and batches made once, so that the runs compared
    /// share them exactly. libtorch's global generator is shared with the
    /// tests running concurrently, so reseeding between runs would not
    /// reproduce draws; hence also no dropout in the compared runs (the
    /// bottleneck, the only dropout, runs once per step in every mode by
    /// construction; `tests/cli_train.rs` compares whole runs with dropout
    /// in separate processes).
    struct Case {
        cfg: DinomalyConfig,
        kind: Kind,
        weights: Vec<Tensor>,
        batches: Vec<Vec<Tensor>>,
    }

    impl Case {
        fn new(attention: AttentionKind, preset: GroupPreset, kind: Kind, steps: usize) -> Self {
            let mut cfg = DinomalyConfig::official(16, 2, 2, 0.0).with_groups(preset).unwrap();
            cfg.attention = attention;
            let vs = nn::VarStore::new(Device::Cpu);
            let m = Dinomaly::new(&vs.root(), cfg.clone()).unwrap();
            let weights = m.named_parameters().into_iter().map(|(_, t)| t.detach().to_kind(kind)).collect();
            let batches = (0..steps)
                .map(|_| (0..8).map(|_| Tensor::randn([3, 3 + 9, 16], (kind, Device::Cpu))).collect())
                .collect();
            Case { cfg, kind, weights, batches }
        }

        /// A model with the case's initial weights (and the store that
        /// holds its variables).
        fn model(&self) -> (nn::VarStore, Dinomaly) {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let m = Dinomaly::new(&vs.root(), self.cfg.clone()).unwrap();
            vs.set_kind(self.kind);
            tch::no_grad(|| {
                for ((_, p), w) in m.named_parameters().iter().zip(&self.weights) {
                    p.shallow_clone().copy_(w);
                }
            });
            (vs, m)
        }

        /// Runs one step per batch (or `steps` on the first batch) from the
        /// initial weights; returns the losses and the final parameters.
        fn run(&self, settings: &TrainSettings, steps: Option<u64>) -> (Vec<f64>, Vec<(String, Tensor)>) {
            let (_vs, m) = self.model();
            let mut opt = StableAdamW::new(m.named_parameters(), StableAdamWConfig::unified()).unwrap();
            let n = steps.unwrap_or(self.batches.len() as u64);
            let mut losses = Vec::new();
            for it in 0..n {
                let batch = &self.batches[if steps.is_some() { 0 } else { it as usize }];
                let out = train_step(&m, &mut opt, settings, Features::Layers(batch), (3, 3), it).unwrap();
                assert!(out.skipped.is_none());
                losses.push(out.loss);
            }
            (losses, m.named_parameters())
        }

        /// The gradients of the first step on the first batch, by name.
        fn gradients(&self, settings: &TrainSettings) -> Vec<(String, Tensor)> {
            let (_vs, m) = self.model();
            let named = m.named_parameters();
            let params: Vec<Tensor> = named.iter().map(|(_, p)| p.shallow_clone()).collect();
            let batch = Features::Layers(&self.batches[0]);
            let (_, grads) = loss_and_gradients(&m, &params, settings, batch, (3, 3), 0).unwrap();
            named.into_iter().map(|(k, _)| k).zip(grads.unwrap()).collect()
        }
    }

    fn small_settings() -> TrainSettings {
        TrainSettings {
            // No warm-up, so every step moves the weights.
            schedule: WarmCosine::new(2e-3, 2e-4, 100, 0).unwrap(),
            // Hard mining at its final share from the first step.
            loss: LossKind::HardMining(crate::model::HardMining { ramp_iters: 0, ..Default::default() }),
            ..TrainSettings::official(100).unwrap()
        }
    }

    const ATTENTIONS: [AttentionKind; 2] = [AttentionKind::OFFICIAL, AttentionKind::Softmax];
    const PRESETS: [GroupPreset; 2] = [GroupPreset::Loose, GroupPreset::Strict];

    /// Gradient checkpointing gives the plain step's parameters after 3
    /// steps: in float64 to <= 1e-10 relative per tensor (norm), well
    /// inside 1e-6; both attentions, loose and strict groups. In float32
    /// the two differ by the order in which libtorch sums gradient
    /// contributions (<= 7e-7 on one step's gradients, see
    /// `checkpointing_gradients_match`), which Adam's
    /// per-element normalisation then magnifies where an element of the
    /// gradient is near zero (~4e-6 after 3 steps).
    #[test]
    fn checkpointing_gives_the_plain_parameters() {
        for attention in ATTENTIONS {
            for preset in PRESETS {
                let case = Case::new(attention, preset, Kind::Double, 3);
                let plain = small_settings();
                let ck = TrainSettings { grad_checkpointing: true, ..plain };
                let (l1, p1) = case.run(&plain, None);
                let (l2, p2) = case.run(&ck, None);
                // The first forward is the same computation.
                assert_eq!(l1[0], l2[0], "{attention:?} {preset}");
                for (a, b) in l1.iter().zip(&l2) {
                    assert!((a - b).abs() <= 1e-10 * a.abs(), "losses {a} {b}");
                }
                for (((k, a), (_, b)), w) in p1.iter().zip(&p2).zip(&case.weights) {
                    let d = rel_diff(a, b);
                    assert!(d <= 1e-10, "{attention:?} {preset} {k}: {d}");
                    // And the weights did move.
                    assert!(!a.equal(w), "{k}");
                }
            }
        }
    }

    /// The raw gradients of one step on the case's first batch (no
    /// clipping, no update).
    fn step_grads(case: &Case, precision: Precision, checkpointing: bool) -> Vec<(String, Tensor)> {
        let settings = TrainSettings {
            grad_checkpointing: checkpointing,
            precision,
            max_grad_norm: f64::MAX,
            schedule: WarmCosine::new(0.0, 0.0, 10, 0).unwrap(),
            ..small_settings()
        };
        case.gradients(&settings)
    }

    /// One float32 step's gradients with and without checkpointing: <= 1e-5
    /// relative per tensor in norm (measured <= 7e-7, the float32
    /// summation order; 6e-7 at ViT-B width). Under bfloat16 those float32
    /// differences flip roundings of later bfloat16 casts: <= 1e-2 here
    /// (0 measured at this width; 5.5e-3 at ViT-B width, where the bfloat16
    /// gradients themselves differ from float32 by ~5e-2).
    #[test]
    fn checkpointing_gradients_match() {
        for attention in ATTENTIONS {
            for preset in PRESETS {
                let case = Case::new(attention, preset, Kind::Float, 1);
                for (precision, tol) in [(Precision::Fp32, 1e-5), (Precision::Bf16, 1e-2)] {
                    let g1 = step_grads(&case, precision, false);
                    let g2 = step_grads(&case, precision, true);
                    for ((k, a), (_, b)) in g1.iter().zip(&g2) {
                        assert!(a.abs().max().double_value(&[]) > 0.0, "{k}");
                        let d = rel_diff(a, b);
                        assert!(d <= tol, "{attention:?} {preset} {precision:?} {k}: {d}");
                    }
                }
            }
        }
    }

    /// A bfloat16 step: the same loss as float32 within 1e-2 relative on
    /// the same weights and batch; weights and optimizer state stay
    /// float32.
    #[test]
    fn bf16_step_is_close_to_fp32_and_keeps_fp32_state() {
        for attention in ATTENTIONS {
            let case = Case::new(attention, GroupPreset::Loose, Kind::Float, 1);
            let fp32 = small_settings();
            for checkpointing in [false, true] {
                let bf16 = TrainSettings { precision: Precision::Bf16, grad_checkpointing: checkpointing, ..fp32 };
                let (l32, p32) = case.run(&fp32, Some(1));
                let (l16, p16) = case.run(&bf16, Some(1));
                let rel = (l16[0] - l32[0]).abs() / l32[0].abs();
                assert!(rel <= 1e-2 && rel > 0.0, "{attention:?}: loss {} vs {}", l16[0], l32[0]);
                for ((k, a), (_, b)) in p32.iter().zip(&p16) {
                    assert_eq!(b.kind(), Kind::Float, "{k}");
                    // Both took one step of about lr per element.
                    assert!((a - b).abs().max().double_value(&[]) <= 2.0 * 2e-3, "{k}");
                }
            }
        }
        // The optimizer's moments are float32 too.
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Dinomaly::new(&vs.root(), DinomalyConfig::official(16, 2, 2, 0.2)).unwrap();
        let mut opt = StableAdamW::new(m.named_parameters(), StableAdamWConfig::unified()).unwrap();
        let layers: Vec<_> = (0..8).map(|_| Tensor::randn([2, 3 + 4, 16], (Kind::Float, Device::Cpu))).collect();
        let settings = TrainSettings { precision: Precision::Bf16, ..small_settings() };
        let out = train_step(&m, &mut opt, &settings, Features::Layers(&layers), (2, 2), 0).unwrap();
        assert!(out.skipped.is_none() && out.grad_norm > 0.0);
        for (k, t) in opt.state_tensors() {
            // The step counters are integers.
            if !k.ends_with(".step") {
                assert_eq!(t.kind(), Kind::Float, "{k}");
            }
        }
    }

    /// A few bfloat16 iterations on one batch lower the loss.
    #[test]
    fn bf16_training_lowers_the_loss() {
        let case = Case::new(AttentionKind::OFFICIAL, GroupPreset::Loose, Kind::Float, 1);
        let settings = TrainSettings { precision: Precision::Bf16, grad_checkpointing: true, ..small_settings() };
        let (losses, _) = case.run(&settings, Some(15));
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(last < 0.9 * first, "losses {losses:?}");
    }

    #[test]
    fn non_finite_loss_touches_nothing() {
        let (_vs, m, mut opt) = setup();
        let settings = TrainSettings::official(10).unwrap();
        let layers: Vec<_> = (0..8).map(|_| Tensor::randn([2, 2 + 4, 8], (Kind::Float, Device::Cpu))).collect();
        let _ = layers[2].get(0).get(3).fill_(f64::NAN);
        let before = snapshot(&m, &opt);
        let out = train_step(&m, &mut opt, &settings, Features::Layers(&layers), (2, 2), 5).unwrap();
        assert_eq!(out.skipped, Some(SkipReason::NonFiniteLoss));
        let after = snapshot(&m, &opt);
        assert!(before.iter().zip(&after).all(|(a, b)| a.equal(b)));
    }

    #[test]
    fn non_finite_gradient_touches_nothing() {
        let (_vs, m, mut opt) = setup();
        let layers: Vec<_> = (0..8).map(|_| Tensor::randn([2, 2 + 4, 8], (Kind::Float, Device::Cpu))).collect();
        let (enc, dec) = m.forward_t(&layers, (2, 2), true).unwrap();
        let (loss, _) = LossKind::default().compute(&enc, &dec, 0).unwrap();
        loss.backward();
        // One infinite gradient entry, as an overflow would leave.
        let g = m.decoder.blocks[4].attn.qkv.weight.grad();
        let _ = g.get(1).get(2).fill_(f64::INFINITY);
        let before = snapshot(&m, &opt);
        let mut out =
            StepOutcome { loss: 0.0, grad_norm: f64::NAN, lr: 0.01, p: 0.0, rms_clipped: Vec::new(), skipped: None };
        let grads = grads_of(&opt.params());
        clip_and_step(&mut opt, &grads, 0.1, &mut out).unwrap();
        assert_eq!(out.skipped, Some(SkipReason::NonFiniteGradient));
        assert!(out.grad_norm.is_infinite());
        let after = snapshot(&m, &opt);
        assert!(before.iter().zip(&after).all(|(a, b)| a.equal(b)));
    }
}
