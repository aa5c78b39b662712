//! One module per command-line tool: its clap `Args` and its `run`.

pub mod metrics;
