//! The integration test binary (one binary: linking libtorch is slow).

mod util;

mod docs;
mod encoder;
mod maps;
mod model;
mod dataset;
mod metrics;
mod preprocess;
mod score_parity;
mod weights;
