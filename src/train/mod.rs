//! Training from a feature store or from images: batch sampling, where
//! batches come from, the iteration loop, checkpoints and resume,
//! validation and the training log.

pub mod init;
pub mod log;
pub mod preset;
pub mod run;
pub mod sampler;
pub mod source;
pub mod trainer;
pub mod validate;
