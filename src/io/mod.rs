//! Files on disk: atomic writes, `.npy` arrays, feature stores and
//! checkpoints.

pub mod atomic;
pub mod checkpoint;
pub mod features;
pub mod varstore;
