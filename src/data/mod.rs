//! Samples and images: the JSON-lines record schema shared by all tools,
//! dataset layouts that produce records, and image decoding and
//! pre-processing identical to the reference pipeline.

pub mod batches;
pub mod dataset;
pub mod decode;
pub mod jpeg;
pub mod map_geometry;
pub mod mask;
pub mod pil_image;
pub mod preprocess;
pub mod record;
pub mod resample;
pub mod stream;
