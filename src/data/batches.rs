//! Decoding images on rayon threads while the caller runs the model.
//!
//! A producer thread cuts the samples into batches, decodes each batch in
//! parallel and hands it over a bounded channel, so the next batch is being
//! decoded while the current one is encoded, with at most `ahead` decoded
//! batches in memory (bounded memory for any number of inputs).

use std::sync::mpsc;
use std::thread;

use tch::Tensor;

use crate::data::record::Sample;
use crate::Result;

/// One decoded batch, in input order.
pub struct Batch {
    /// Index of the first sample of the batch in the input.
    pub start: usize,
    /// The samples of this batch, in order.
    pub samples: Vec<Sample>,
    /// Per sample: its decoded (3, H, W) image, or why it failed.
    pub images: Vec<Result<Tensor>>,
}

impl Batch {
    /// The decoded images stacked to (B, 3, H, W) with the samples they
    /// belong to, and the failures with their samples, both in order.
    pub fn split(self) -> (Vec<Sample>, Option<Tensor>, Vec<(Sample, crate::Error)>) {
        let mut good_samples = Vec::new();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (sample, image) in self.samples.into_iter().zip(self.images) {
            match image {
                Ok(t) => {
                    good_samples.push(sample);
                    good.push(t);
                }
                Err(e) => bad.push((sample, e)),
            }
        }
        let stacked = (!good.is_empty()).then(|| Tensor::stack(&good, 0));
        (good_samples, stacked, bad)
    }
}

/// Decodes `samples` in batches of `batch_size` on a producer thread with
/// `decode` run in parallel within each batch. Iterate the returned
/// receiver to get batches in order.
pub fn decode_in_background<F>(
    samples: Vec<Sample>,
    batch_size: usize,
    ahead: usize,
    decode: F,
) -> mpsc::Receiver<Batch>
where
    F: Fn(&Sample) -> Result<Tensor> + Send + Sync + 'static,
{
    use rayon::prelude::*;
    let (tx, rx) = mpsc::sync_channel(ahead.max(1));
    let batch_size = batch_size.max(1);
    thread::spawn(move || {
        let mut start = 0;
        let mut rest = samples;
        while !rest.is_empty() {
            let tail = rest.split_off(batch_size.min(rest.len()));
            let chunk = std::mem::replace(&mut rest, tail);
            let images: Vec<Result<Tensor>> = chunk.par_iter().map(&decode).collect();
            let n = chunk.len();
            if tx.send(Batch { start, samples: chunk, images }).is_err() {
                // The consumer stopped (an error or a closed pipe).
                return;
            }
            start += n;
        }
    });
    rx
}

/// Decodes batches as they come from `batches` (e.g. a
/// [`crate::data::stream::Gather`] over a live input), each in parallel
/// with `decode`, on a producer thread; at most `ahead` decoded batches
/// wait. An error of the input (a bad line) is passed on in its place in
/// the order, after the batches before it, and ends the stream.
pub fn decode_stream_in_background<I, F>(batches: I, ahead: usize, decode: F) -> mpsc::Receiver<Result<Batch>>
where
    I: Iterator<Item = Result<Vec<Sample>>> + Send + 'static,
    F: Fn(&Sample) -> Result<Tensor> + Send + Sync + 'static,
{
    use rayon::prelude::*;
    let (tx, rx) = mpsc::sync_channel(ahead.max(1));
    thread::spawn(move || {
        let mut start = 0;
        for chunk in batches {
            let item = chunk.map(|samples| {
                let images: Vec<Result<Tensor>> = samples.par_iter().map(&decode).collect();
                let batch = Batch { start, samples, images };
                start += batch.samples.len();
                batch
            });
            let stop = item.is_err();
            if tx.send(item).is_err() || stop {
                return;
            }
        }
    });
    rx
}
