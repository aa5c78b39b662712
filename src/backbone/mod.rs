//! The frozen encoder: ViT architecture, positional-embedding resizing,
//! weight files in Meta / Hugging Face / timm layouts, and where weights come
//! from (path, cache, download).

pub mod encoder;
pub mod pos_embed;
pub mod vit;
