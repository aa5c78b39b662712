//! The iteration loop of one model: steps, validation, keeping the best
//! checkpoint, patience, periodic saves and the final save. It prints
//! nothing: each event goes to a [`Report`] that the command implements (the
//! JSON log lines, the progress bar, the notes on stderr), so the loop is
//! usable without a terminal or clap.

use std::path::{Path, PathBuf};

use super::sampler::BatchSampler;
use super::source::BatchSource;
use super::trainer::{Best, Trainer};
use super::validate::{ValMetric, Validation, Validator};
use crate::io::features::FeatureMeta;
use crate::model::StepOutcome;
use crate::Result;

/// One model to train.
pub struct Job {
    /// Its class (separated training).
    pub class: Option<String>,
    /// Its training rows and how batches are drawn from them.
    pub rows: Vec<usize>,
    pub sampler: BatchSampler,
    /// Its classes, sorted: validated on these, recorded in the checkpoint.
    pub classes: Vec<String>,
    /// Its checkpoint.
    pub output: PathBuf,
}

impl Job {
    /// "the model" or "the model of class 'c'", for messages.
    pub fn whose(&self) -> String {
        match &self.class {
            Some(c) => format!("the model of class '{c}'"),
            None => "the model".to_string(),
        }
    }
}

/// How the loop runs: validated settings, shared by every job of a run.
#[derive(Debug, Clone, Copy)]
pub struct RunPlan {
    /// Iterations to reach (per model).
    pub iterations: u64,
    /// Images per validation batch (the training batch).
    pub batch: usize,
    /// Validate every this many iterations (and at the last one).
    pub val_every: u64,
    /// Keep the checkpoint with the best mean of this metric.
    pub keep_best: Option<ValMetric>,
    /// Stop after this many validations in a row without improvement.
    pub patience: Option<u32>,
    /// Save a resumable checkpoint every this many iterations.
    pub save_every: Option<u64>,
}

/// What happens during a run, in order.
pub enum Event<'a> {
    /// Iteration `it` ran (`done` iterations are now done).
    Iteration {
        it: u64,
        outcome: &'a StepOutcome,
        /// Seconds since this run's first iteration began (monotonic).
        elapsed_s: f64,
        /// The exponentially smoothed loss of the steps not skipped.
        smoothed: Option<f64>,
        /// Iterations per second in this run.
        rate: f64,
        done: u64,
    },
    /// A validation after `done` iterations.
    Validation { done: u64, result: &'a Validation },
    /// `since` validations in a row did not improve: stopping at `done`.
    EarlyStop { since: u32, done: u64 },
}

/// Receives the events of a run (the command prints them).
pub trait Report {
    /// One event.
    fn event(&mut self, event: Event<'_>);
}

/// How a job ended.
pub struct Finished {
    /// Iterations done.
    pub done: u64,
    /// Steps skipped.
    pub skipped: u64,
    /// The last recorded mean loss, else the smoothed loss.
    pub last_loss: Option<f64>,
    /// With `keep_best`: the best validation, whose checkpoint is the output.
    pub best: Option<Best>,
}

/// Where the resumable saves of a run that keeps its best checkpoint at
/// `output` go: `NAME.last.EXT` beside it (`model.last.safetensors`).
pub fn last_path(output: &Path) -> PathBuf {
    let name = match (output.file_stem(), output.extension()) {
        (Some(stem), Some(ext)) => format!("{}.last.{}", stem.to_string_lossy(), ext.to_string_lossy()),
        _ => format!("{}.last", output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
    };
    output.with_file_name(name)
}

/// Where `plan`'s periodic saves of `job` go: with keep-best the output
/// holds the best weights only, and the saves a killed run resumes from go
/// beside it.
pub fn periodic_path(plan: &RunPlan, job: &Job) -> PathBuf {
    match plan.keep_best {
        Some(_) => last_path(&job.output),
        None => job.output.clone(),
    }
}

/// Trains `trainer` on `job` from its current iteration to
/// `plan.iterations` (or an early stop) and writes its checkpoint(s);
/// `training_meta` gives the `training` record of each save.
#[allow(clippy::too_many_arguments)]
pub fn run_job(
    trainer: &mut Trainer,
    source: &mut BatchSource<'_>,
    job: &Job,
    plan: &RunPlan,
    validator: Option<&Validator>,
    meta: &FeatureMeta,
    training_meta: impl Fn(&Trainer) -> serde_json::Value,
    report: &mut dyn Report,
) -> Result<Finished> {
    let periodic = periodic_path(plan, job);
    let mut smoothed: Option<f64> = None;
    let started = std::time::Instant::now();
    let start_it = trainer.progress.iterations_done;
    let mut stop = false;
    while trainer.progress.iterations_done < plan.iterations && !stop {
        let it = trainer.progress.iterations_done;
        let outcome = trainer.step(source, &job.sampler)?;
        if outcome.skipped.is_none() {
            smoothed = Some(smoothed.map_or(outcome.loss, |s| 0.98 * s + 0.02 * outcome.loss));
        }
        let done = trainer.progress.iterations_done;
        let elapsed_s = started.elapsed().as_secs_f64();
        let rate = (done - start_it) as f64 / elapsed_s.max(1e-9);
        report.event(Event::Iteration { it, outcome: &outcome, elapsed_s, smoothed, rate, done });
        // Validation comes before a save at the same iteration, so that the
        // save (and a run resumed from it) knows its outcome.
        if let Some(validator) = validator {
            if done % plan.val_every == 0 || done == plan.iterations {
                let result = validator.run(trainer.model(), plan.batch, &job.classes)?;
                report.event(Event::Validation { done, result: &result });
                if let Some(metric) = plan.keep_best {
                    let value = result.mean(metric);
                    let progress = &mut trainer.progress;
                    match value {
                        Some(v) if progress.best.as_ref().is_none_or(|b| v > b.value) => {
                            progress.best = Some(Best { metric: metric.name().to_string(), value: v, iteration: done });
                            progress.since_best = 0;
                            trainer.save(&job.output, meta, training_meta(trainer), false)?;
                        }
                        _ => {
                            progress.since_best += 1;
                            if plan.patience.is_some_and(|p| progress.since_best >= p) {
                                report.event(Event::EarlyStop { since: progress.since_best, done });
                                stop = true;
                            }
                        }
                    }
                }
            }
        }
        if !stop && plan.save_every.is_some_and(|n| done % n == 0) && done < plan.iterations {
            trainer.save(&periodic, meta, training_meta(trainer), true)?;
        }
    }
    let best = trainer.progress.best.clone();
    match (plan.keep_best, &best) {
        // The best checkpoint is already written; the last weights go
        // beside it when the run is resumable.
        (Some(_), Some(_)) => {
            if plan.save_every.is_some() {
                trainer.save(&periodic, meta, training_meta(trainer), true)?;
            }
        }
        _ => trainer.save(&job.output, meta, training_meta(trainer), plan.save_every.is_some())?,
    }
    let progress = &trainer.progress;
    Ok(Finished {
        done: progress.iterations_done,
        skipped: progress.skipped_steps,
        last_loss: progress.loss_history.last().map(|&(_, l)| l).or(smoothed),
        best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumable_saves_of_a_kept_best_go_beside_it() {
        assert_eq!(last_path(Path::new("out/model.safetensors")), Path::new("out/model.last.safetensors"));
        assert_eq!(last_path(Path::new("model")), Path::new("model.last"));
    }
}
