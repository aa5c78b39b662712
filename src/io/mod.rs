//! Files on disk: atomic writes, `.npy` arrays, feature stores and
//! checkpoints.

pub mod atomic;
pub mod hash;
pub mod pickle;
pub mod pth;
pub mod safetensors_load;
pub mod sniff;
