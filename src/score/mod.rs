//! Scoring: anomaly maps and image scores from fused feature groups
//! ([`anomaly_map`], with the Gaussian in [`smoothing`]) and heatmap
//! overlays for people ([`overlay`]); the map's geometry recorded beside it
//! ([`map_geometry`]); maps on the original photo ([`photo`]) and the
//! defect regions above a pixel threshold ([`regions`]).

pub mod anomaly_map;
pub mod calibrate;
pub mod decision;
pub mod map_geometry;
pub mod model_id;
pub mod overlay;
pub mod photo;
pub mod regions;
pub mod scorer;
pub mod smoothing;

pub use anomaly_map::{PostProcess, PostProcessor, ScoredBatch};
pub use smoothing::Padding;
