//! # dinomaly
//!
//! Dinomaly (Guo et al., CVPR 2025, "The Less Is More Philosophy in
//! Multi-Class Unsupervised Anomaly Detection") as a library and four
//! chainable command-line tools on libtorch:
//!
//! ```text
//!  images ──dinomaly-extract──▶ feature store ──dinomaly-train──▶ checkpoint
//!                                                                   │
//!  images ─────────────────────dinomaly-score◀──────────────────────┘
//!                                   │ one JSON line per image (score, map)
//!                                   ▼
//!                            dinomaly-metrics ──▶ the paper's seven metrics
//! ```
//!
//! The method follows the official code exactly; every number and its
//! source (official file and function at commit c5c76d0, anomalib 2.7.0,
//! or the paper's section) is in `docs/sources.md`, and cited again at the
//! call site.

pub mod alloc;
pub mod backbone;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod cpu;
pub mod data;
pub mod device;
pub mod env;
pub mod error;
pub mod export;
pub mod io;
pub mod metrics;
pub mod mkl_kernels;
pub mod model;
pub mod progress;
pub mod score;
pub mod train;

pub use error::{Error, Result};
