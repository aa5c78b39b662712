//! Scoring: anomaly maps and image scores from fused feature groups
//! ([`anomaly_map`], with the Gaussian in [`smoothing`]); maps on the
//! original photo ([`photo`]) and the defect regions above a pixel threshold
//! ([`regions`]). The heatmap overlays are drawn by
//! [`crate::metrics::overlay`] (the report draws them too) and the map's
//! geometry is [`crate::data::map_geometry`] (a field of the scored record).

pub mod anomaly_map;
pub mod calibrate;
pub mod decision;
pub mod model_id;
pub mod photo;
pub mod regions;
pub mod scorer;
pub mod smoothing;

pub use anomaly_map::{PostProcess, PostProcessor, ScoredBatch};
pub use smoothing::Padding;
