//! The paper's seven metrics, equal to the official evaluation
//! (`evaluation_batch` of the Dinomaly code, scikit-learn semantics) and
//! fast: each class's pixels are sorted once and every metric comes from
//! that order.
//!
//! - [`binary`]: ROC AUC, average precision and F1max (image or pixel level);
//! - [`aupro`]: the official 200-threshold AUPRO and the exact one;
//! - [`components`]: 8-connected GT regions;
//! - [`keys`]: float32 sort keys and radix sorts;
//! - [`pixels`]: per-class pixel accumulation and evaluation;
//! - [`thresholds`]: F1-optimal and target-FPR decision thresholds;
//! - [`report`]: per-class results, the mean over classes, JSON/CSV/markdown;
//! - [`plot`]: ROC and PR curves and score histograms as SVG;
//! - [`html`]: the report page of `--html` (table, curves, worst cases);
//! - [`overlay`]: heatmaps over images, for the report and `dinomaly-score --overlay`.
//!
//! A metric that the data cannot define (a class with one label only, all
//! scores equal for the official AUPRO) is `Err(reason)`: reported as null
//! with a warning, never as a number.

pub mod aupro;
pub mod binary;
pub mod components;
pub mod html;
pub mod keys;
pub mod overlay;
pub mod pixels;
pub mod plot;
pub mod report;
pub mod thresholds;

/// A metric value, or why the data leave it undefined.
pub type MetricValue = std::result::Result<f64, String>;
