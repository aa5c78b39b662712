//! Where the training batch of an iteration comes from: rows of a feature
//! store (from its memory map, or from a copy held in device memory), or
//! images decoded, pre-processed and encoded by the frozen encoder at every
//! iteration, for data sets whose store would not fit.
//!
//! Both give the same (B, G, T, D) float32 tensor for the same rows: the
//! image path runs exactly the [`Extractor`] that `dinomaly-extract` runs,
//! so training from images equals training from a float32 store of the same
//! images. While the model trains on one batch, a background thread decodes
//! the next one (the batch of iteration `it` is a pure function of the
//! sampler and `it`, so it can be prepared ahead).

use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::sampler::BatchSampler;
use crate::backbone::extractor::Extractor;
use crate::data::preprocess::{load_batch, Preprocess};
use crate::data::record::Sample;
use crate::io::features::{FeatureMeta, FeatureStore};
use crate::{Error, Result};

/// The rows training draws its batches from.
// One value per run: boxing the larger variant would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum BatchSource<'a> {
    /// A feature store; `held` is all of it on the training device when it
    /// was loaded there.
    Store {
        /// The store.
        store: &'a FeatureStore,
        /// Every row on the device (float16), or none to read the map.
        held: Option<Tensor>,
    },
    /// Images encoded at every iteration.
    Images(ImageSource),
}

impl BatchSource<'_> {
    /// What a row holds: the store's metadata, or the metadata a store of
    /// these images written by `dinomaly-extract --dtype f32` would have.
    pub fn meta(&self) -> &FeatureMeta {
        match self {
            BatchSource::Store { store, .. } => store.meta(),
            BatchSource::Images(images) => images.extractor.meta(),
        }
    }

    /// One record per row.
    pub fn records(&self) -> &[Sample] {
        match self {
            BatchSource::Store { store, .. } => store.records(),
            BatchSource::Images(images) => &images.samples,
        }
    }

    /// The rows the sampler picks for iteration `it`, as one (B, G, T, D)
    /// float32 tensor on `device`. Running out of memory (a CUDA device
    /// holding the model and the store) is an error that suggests a
    /// smaller --batch, not a panic.
    pub fn batch(&mut self, sampler: &BatchSampler, it: u64, device: Device) -> Result<Tensor> {
        let rows = sampler.batch_at(it as usize);
        let batch = match self {
            BatchSource::Store { held: Some(all), .. } => held_rows(all, &rows, device),
            BatchSource::Store { store, held: None } => store.batch(&rows, Kind::Float, device),
            BatchSource::Images(images) => images.batch(sampler, it, &rows, device),
        };
        batch.map_err(|e| crate::device::out_of_memory_advice(e, device, "assembling a training batch"))
    }
}

/// `rows` of the store held on `device`, as float32.
fn held_rows(all: &Tensor, rows: &[usize], device: Device) -> Result<Tensor> {
    let index = Tensor::f_from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>())?.f_to_device(device)?;
    Ok(all.f_index_select(0, &index)?.f_to_kind(Kind::Float)?)
}

/// Images as training rows: the samples, the encoder, and the batches being
/// decoded ahead.
pub struct ImageSource {
    extractor: Extractor,
    samples: Arc<Vec<Sample>>,
    ahead: Option<Ahead>,
}

/// Batches decoded by a background thread, from iteration `next` on.
struct Ahead {
    next: u64,
    batches: Receiver<Decoded>,
}

/// One decoded batch: its iteration, rows, and per row the image or why it
/// could not be read.
type Decoded = (u64, Vec<usize>, Vec<Result<Tensor>>);

/// Decoded batches waiting beside the one being decoded; one keeps the
/// model busy, more would only hold memory.
const AHEAD: usize = 1;

impl ImageSource {
    /// Rows `samples` (in order), encoded by `extractor`. Check the images
    /// first with [`unreadable`].
    pub fn new(extractor: Extractor, samples: Vec<Sample>) -> Self {
        ImageSource { extractor, samples: Arc::new(samples), ahead: None }
    }

    /// The encoder and its metadata.
    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    fn batch(&mut self, sampler: &BatchSampler, it: u64, rows: &[usize], device: Device) -> Result<Tensor> {
        let images = self.decoded(sampler, it, rows)?;
        // Errors name their file (the images were checked before training;
        // this is a file changed since).
        let good = images.into_iter().collect::<Result<Vec<Tensor>>>()?;
        let stacked = Tensor::f_stack(&good, 0)?;
        Ok(self.extractor.maps(&stacked)?.f_to_device(device)?.f_to_kind(Kind::Float)?)
    }

    /// The decoded images of iteration `it` (rows `rows`), from the
    /// background thread; the thread is (re)started from `it` when it is
    /// not preparing exactly this batch (the first call, a resumed run, the
    /// next class of a separated run).
    fn decoded(&mut self, sampler: &BatchSampler, it: u64, rows: &[usize]) -> Result<Vec<Result<Tensor>>> {
        if let Some(ahead) = self.ahead.as_mut().filter(|a| a.next == it) {
            if let Ok((got_it, got_rows, images)) = ahead.batches.recv() {
                ahead.next = got_it + 1;
                if got_it == it && got_rows == rows {
                    return Ok(images);
                }
            }
        }
        let mut ahead = self.start(sampler.clone(), it);
        let (_, got_rows, images) =
            ahead.batches.recv().map_err(|_| Error::config("the image decoding thread stopped"))?;
        debug_assert_eq!(got_rows, rows);
        ahead.next = it + 1;
        self.ahead = Some(ahead);
        Ok(images)
    }

    /// Starts a thread decoding the batches of iterations `from`, `from` +
    /// 1, ... ahead of the model; it ends when the receiver is dropped.
    fn start(&mut self, sampler: BatchSampler, from: u64) -> Ahead {
        // Dropping the old receiver ends the old thread at its next send.
        self.ahead = None;
        let (tx, rx) = mpsc::sync_channel(AHEAD);
        let samples = Arc::clone(&self.samples);
        let prep = self.extractor.preprocess();
        std::thread::spawn(move || {
            for it in from.. {
                let rows = sampler.batch_at(it as usize);
                let paths: Vec<&std::path::Path> = rows.iter().map(|&r| samples[r].image.as_path()).collect();
                let images = load_batch(&paths, &prep);
                if tx.send((it, rows, images)).is_err() {
                    return;
                }
            }
        });
        Ahead { next: from, batches: rx }
    }
}

/// The samples among `samples` whose image cannot be decoded and
/// pre-processed, with why, in input order. Decodes every image once (in
/// parallel, a few at a time), so that a bad file stops a run before
/// training instead of at the iteration that first draws it.
pub fn unreadable(samples: &[Sample], prep: &Preprocess) -> Vec<(usize, Error)> {
    // Enough images per round to keep every core busy, few enough to hold.
    let chunk = 4 * rayon::current_num_threads().max(1);
    let mut bad = Vec::new();
    for (c, part) in samples.chunks(chunk).enumerate() {
        let paths: Vec<&std::path::Path> = part.iter().map(|s| s.image.as_path()).collect();
        for (i, result) in load_batch(&paths, prep).into_iter().enumerate() {
            if let Err(e) = result {
                bad.push((c * chunk + i, e));
            }
        }
    }
    bad
}
