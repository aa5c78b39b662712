//! The integration test binary (one binary: linking libtorch is slow).

mod metrics;
mod preprocess;
