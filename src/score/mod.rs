//! Scoring: anomaly maps and image scores from fused feature groups
//! ([`anomaly_map`], with the Gaussian in [`smoothing`]).

pub mod anomaly_map;
pub mod smoothing;

pub use anomaly_map::{PostProcess, PostProcessor, ScoredBatch};
pub use smoothing::Padding;
