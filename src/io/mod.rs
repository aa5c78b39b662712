//! Files on disk: atomic writes, `.npy` arrays, feature stores and
//! checkpoints, and the readers of foreign weight files (`torch.save`
//! checkpoints through a pickle reader that runs nothing, safetensors).

pub mod atomic;
pub mod calibration;
pub mod checkpoint;
pub mod checkpoint_kind;
pub mod features;
pub mod hash;
pub mod names;
pub mod npy;
pub mod pickle;
pub mod pth;
pub mod safetensors_load;
pub mod sniff;
pub mod train_state;
pub mod varstore;
