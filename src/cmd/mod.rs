//! The command-line tools: one module per binary, each holding its clap
//! `Args` and `run`.

pub mod calibrate;
pub mod export;
pub mod extract;
pub mod metrics;
pub mod score;
pub mod train;
