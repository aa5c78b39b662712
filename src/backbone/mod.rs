//! The frozen encoder: ViT architecture, positional-embedding resizing,
//! weight files in Meta / Hugging Face / timm layouts, and where weights come
//! from (path, cache, download).
//!
//! [`arch`] fixes the canonical tensor layout (Meta's DINOv2 keys) and the
//! architecture numbers read off it; [`layout`] converts the other layouts to
//! it; [`weights`] loads a file or folder by content into canonical tensors;
//! [`registry`] names the known DINOv2 backbones and [`download`] finds or
//! fetches their files; [`extractor`] turns images into the feature maps
//! that stores hold and training reads.

pub mod arch;
pub mod download;
pub mod encoder;
pub mod extractor;
pub mod layout;
pub mod open;
pub mod pos_embed;
pub mod registry;
pub mod vit;
pub mod weights;
