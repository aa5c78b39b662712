//! One model being trained from a feature store or images: the modules, the
//! optimizer, the iteration counter, and saving/restoring all of it so that
//! a killed run resumed from its last save ends with the same weights as an
//! uninterrupted one.
//!
//! Reproducibility: the model is initialised right after seeding libtorch
//! with the run's seed, and before every iteration libtorch is reseeded with
//! (seed, iteration), so the dropout masks of iteration `it` do not depend
//! on what ran before; batches come from [`BatchSampler`], also a function
//! of (seed, it). Resuming therefore needs only the weights, the optimizer
//! moments and the iteration number.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use super::sampler::BatchSampler;
use super::source::BatchSource;
use crate::io::checkpoint::{self, CheckpointMeta, ModelMeta};
use crate::io::features::FeatureMeta;
use crate::io::train_state::{self, TrainState};
use crate::model::{train_step, Dinomaly, DinomalyConfig, StableAdamW, StableAdamWConfig, StepOutcome, TrainSettings};
use crate::{Error, Result};

pub use crate::model::store_input::StoreInput;

/// Training progress recorded in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Progress {
    /// Iterations completed (the next iteration to run).
    pub iterations_done: u64,
    /// Steps skipped (non-finite loss or gradient, loss spike).
    pub skipped_steps: u64,
    /// (iteration, mean loss) every `history_every` iterations.
    pub loss_history: Vec<(u64, f64)>,
    /// The last losses, for spike detection (saved so a resumed run judges
    /// spikes exactly as the uninterrupted one).
    pub recent_losses: Vec<f64>,
    /// Sum and count of the losses since the last history entry.
    pub window: (f64, u64),
    /// The best validation so far when the best checkpoint is kept, so that
    /// a resumed run goes on comparing against it.
    #[serde(default)]
    pub best: Option<Best>,
    /// Validations in a row that did not improve on `best`.
    #[serde(default)]
    pub since_best: u32,
}

/// The best validation of a run that keeps its best checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// The metric's flag value (`i-auroc`, `p-auroc`).
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// Iterations done when it was measured.
    pub iteration: u64,
}

/// A model under training.
pub struct Trainer {
    vs: nn::VarStore,
    model: Dinomaly,
    opt: StableAdamW,
    settings: TrainSettings,
    input: StoreInput,
    seed: u64,
    device: Device,
    /// Progress so far.
    pub progress: Progress,
    spike_factor: Option<f64>,
    history_every: u64,
}

/// Losses kept to judge spikes against their median.
const SPIKE_WINDOW: usize = 100;
/// Iterations before spike detection starts (the loss falls fast at first).
const SPIKE_WARMUP: usize = 50;

impl Trainer {
    /// A freshly initialised model (seeded with `seed`).
    pub fn new(
        cfg: DinomalyConfig,
        opt_cfg: StableAdamWConfig,
        settings: TrainSettings,
        input: StoreInput,
        seed: u64,
        spike_factor: Option<f64>,
        device: Device,
    ) -> Result<Self> {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let model = Dinomaly::new(&vs.root(), cfg)?;
        let opt = StableAdamW::new(model.named_parameters(), opt_cfg)?;
        let history_every = (settings.schedule.total_iters / 200).max(1);
        Ok(Trainer {
            vs,
            model,
            opt,
            settings,
            input,
            seed,
            device,
            progress: Progress::default(),
            spike_factor,
            history_every,
        })
    }

    /// The model.
    pub fn model(&self) -> &Dinomaly {
        &self.model
    }

    /// Runs iteration `progress.iterations_done` on the rows the sampler
    /// picks from `source`, and advances the counter.
    pub fn step(&mut self, source: &mut BatchSource<'_>, sampler: &BatchSampler) -> Result<StepOutcome> {
        let it = self.progress.iterations_done;
        let batch = source.batch(sampler, it, self.device)?;
        let grid = source.meta().grid;
        // Dropout masks of this iteration depend on (seed, it) only.
        tch::manual_seed(self.seed.wrapping_mul(1_000_003).wrapping_add(it) as i64);
        let mut settings = self.settings;
        settings.loss_ceiling = self.loss_ceiling();
        let (model, opt) = (&self.model, &mut self.opt);
        let outcome =
            self.input.with_features(&batch, |features| train_step(model, opt, &settings, features, grid, it))?;
        self.record(&outcome);
        Ok(outcome)
    }

    fn loss_ceiling(&self) -> Option<f64> {
        let factor = self.spike_factor?;
        let recent = &self.progress.recent_losses;
        if recent.len() < SPIKE_WARMUP {
            return None;
        }
        let mut sorted = recent.clone();
        sorted.sort_by(f64::total_cmp);
        Some(factor * sorted[sorted.len() / 2])
    }

    fn record(&mut self, outcome: &StepOutcome) {
        let it = self.progress.iterations_done;
        self.progress.iterations_done += 1;
        if outcome.skipped.is_some() {
            self.progress.skipped_steps += 1;
            return;
        }
        let progress = &mut self.progress;
        progress.recent_losses.push(outcome.loss);
        if progress.recent_losses.len() > SPIKE_WINDOW {
            progress.recent_losses.remove(0);
        }
        progress.window.0 += outcome.loss;
        progress.window.1 += 1;
        if (it + 1) % self.history_every == 0 {
            let (sum, count) = progress.window;
            progress.loss_history.push((it + 1, sum / count as f64));
            progress.window = (0.0, 0);
        }
    }

    /// Replaces the initial weights by `tensors` (`dinomaly-train --init`,
    /// read from `path`): every parameter must be there with its shape; the
    /// optimizer state and the progress stay those of a fresh run. The
    /// tensors are copied, so that the same ones can start several models.
    pub fn start_from(&mut self, tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
        let copies: Vec<(String, Tensor)> = tensors.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        crate::io::varstore::load_into(&self.vs, &copies, path, |_| false)
    }

    /// The model's tensors by checkpoint key.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        self.model.named_parameters()
    }

    /// Writes the model checkpoint to `path` and, with `with_state`, the
    /// optimizer state and progress to [`state_path`]`(path)`.
    pub fn save(
        &self,
        path: &Path,
        encoder: &FeatureMeta,
        training: serde_json::Value,
        with_state: bool,
    ) -> Result<()> {
        let meta = CheckpointMeta {
            encoder: encoder.clone(),
            model: ModelMeta::from_config(self.model.config()),
            training,
            calibration: None,
        };
        if with_state {
            train_state::write(
                path,
                self.opt.state_tensors(),
                self.weights(),
                self.progress.iterations_done,
                &self.progress,
            )?;
        }
        checkpoint::save(path, &self.weights(), &meta)
    }

    /// Restores the weights, optimizer state and progress saved with the
    /// checkpoint at `path` (from its state file), after checking that the
    /// checkpoint was trained with this run's model settings on features
    /// of the same encoder and input as `store`.
    pub fn resume(&mut self, path: &Path, store: &FeatureMeta) -> Result<()> {
        // Its metadata only: the weights come from the state file.
        let meta = checkpoint::read_meta(path)?;
        crate::io::features::check_store_matches(store, &meta.encoder)?;
        let model_meta = ModelMeta::from_config(self.model.config());
        if meta.model != model_meta {
            return Err(Error::mismatch(
                path.display().to_string(),
                format!("the checkpoint's model settings {:?} differ from this run's {:?}", meta.model, model_meta),
            ));
        }
        let state: TrainState<Progress> = train_state::read(path)?;
        crate::io::varstore::load_into(&self.vs, &state.weights, &state_path(path), |_| false)?;
        self.opt.load_state_tensors(&state.optimizer)?;
        self.progress = state.progress;
        Ok(())
    }
}

pub use crate::io::train_state::state_path;
