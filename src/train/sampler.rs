//! Which feature-store rows make up the batch of each training iteration.
//!
//! The batch of iteration `it` is a pure function of (seed, it), so a run
//! resumed from a checkpoint at iteration `it` draws exactly the batches the
//! uninterrupted run would have drawn, with no sampler state to save.
//! - `shuffle`: the official loader (shuffle, drop_last): epochs of a fresh
//!   permutation each, cut into full batches; the incomplete tail of each
//!   epoch is dropped.
//! - `class-balanced`: batch slots cycle over the classes, each class walking
//!   its own reshuffled order, so small classes are seen as often as large
//!   ones.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// How batches are drawn. Its names in files are its flag values
/// (`io::names`); `classbalanced`, the name earlier versions recorded, is
/// read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Shuffle all rows together every epoch; drop the last partial batch.
    #[default]
    Shuffle,
    /// Draw classes evenly within every batch.
    #[serde(alias = "classbalanced")]
    ClassBalanced,
}

/// Deterministic batch plan over a set of rows.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    rows: Vec<usize>,
    by_class: Vec<Vec<usize>>,
    batch: usize,
    seed: u64,
    sampling: Sampling,
}

impl BatchSampler {
    /// A sampler over `rows` (indices into the store) whose classes are
    /// `classes[i]` for `rows[i]`.
    pub fn new(rows: Vec<usize>, classes: &[String], batch: usize, seed: u64, sampling: Sampling) -> Result<Self> {
        if batch == 0 {
            return Err(Error::config("--batch must be at least 1"));
        }
        if rows.len() < batch {
            return Err(Error::config(format!(
                "{} training images but a batch needs {batch}: lower --batch or add images \
                 (incomplete batches are dropped, as the official loader does)",
                rows.len()
            )));
        }
        let mut names: Vec<&String> = classes.iter().collect();
        names.sort();
        names.dedup();
        let by_class = names
            .iter()
            .map(|name| rows.iter().zip(classes).filter(|(_, c)| c == name).map(|(&r, _)| r).collect())
            .collect();
        Ok(BatchSampler { rows, by_class, batch, seed, sampling })
    }

    /// Full batches per epoch in shuffle mode.
    pub fn batches_per_epoch(&self) -> usize {
        self.rows.len() / self.batch
    }

    /// Row indices of the batch of iteration `it`.
    pub fn batch_at(&self, it: usize) -> Vec<usize> {
        match self.sampling {
            Sampling::Shuffle => {
                let per_epoch = self.batches_per_epoch();
                let epoch = it / per_epoch;
                let order = permutation(self.rows.len(), self.seed, 0, epoch as u64);
                let first = (it % per_epoch) * self.batch;
                order[first..first + self.batch].iter().map(|&i| self.rows[i]).collect()
            }
            Sampling::ClassBalanced => {
                let classes = self.by_class.len();
                (0..self.batch)
                    .map(|j| {
                        let slot = it * self.batch + j;
                        let class = slot % classes;
                        let draw = slot / classes;
                        let members = &self.by_class[class];
                        let epoch = draw / members.len();
                        let order = permutation(members.len(), self.seed, 1 + class as u64, epoch as u64);
                        members[order[draw % members.len()]]
                    })
                    .collect()
            }
        }
    }
}

/// A permutation of 0..n determined by (seed, stream, epoch).
fn permutation(n: usize, seed: u64, stream: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng.set_word_pos(u128::from(epoch) << 32);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(n: usize, split: usize) -> Vec<String> {
        (0..n).map(|i| if i < split { "a".into() } else { "b".into() }).collect()
    }

    #[test]
    fn shuffle_covers_each_epoch_once_and_is_reproducible() {
        let s = BatchSampler::new((0..10).collect(), &classes(10, 5), 3, 1, Sampling::Shuffle).unwrap();
        assert_eq!(s.batches_per_epoch(), 3);
        let epoch: Vec<usize> = (0..3).flat_map(|it| s.batch_at(it)).collect();
        let mut sorted = epoch.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 9, "no repeats within an epoch: {epoch:?}");
        assert_eq!(s.batch_at(7), s.clone().batch_at(7));
        assert_ne!(s.batch_at(0), s.batch_at(3), "epochs are reshuffled");
    }

    #[test]
    fn class_balanced_alternates_classes() {
        let c = classes(12, 10);
        let s = BatchSampler::new((0..12).collect(), &c, 4, 3, Sampling::ClassBalanced).unwrap();
        for it in 0..5 {
            let b = s.batch_at(it);
            let small = b.iter().filter(|&&r| c[r] == "b").count();
            assert_eq!(small, 2, "half of every batch from the small class: {b:?}");
        }
    }

    #[test]
    fn too_few_rows_is_an_error() {
        let e = BatchSampler::new(vec![0, 1], &classes(2, 1), 16, 1, Sampling::Shuffle).unwrap_err();
        assert!(e.to_string().contains("2 training images but a batch needs 16"), "{e}");
    }
}
