//! Files on disk: atomic writes, `.npy` arrays, feature stores and
//! checkpoints.

pub mod atomic;
pub mod npy;
