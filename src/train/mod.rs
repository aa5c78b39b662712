//! Training from a feature store: batch sampling, the iteration loop,
//! checkpoints and resume.

pub mod sampler;
pub mod trainer;
pub mod validate;
