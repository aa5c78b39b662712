//! The DINOv2 encoder's weights: the canonical tensor layout and
//! architecture ([`arch`]), conversion from the Meta, timm and Hugging Face
//! layouts ([`layout`]), loading a weights file ([`weights`]), the known
//! backbones ([`registry`]) and finding or downloading their files
//! ([`download`]).

pub mod arch;
pub mod download;
pub mod layout;
pub mod registry;
pub mod weights;
