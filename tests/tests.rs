//! The integration test binary (one binary: linking libtorch is slow).

mod util;

mod docs;
mod encoder;
mod maps;
mod model;
mod dataset;
mod demo;
mod gpu_check;
mod metrics;
mod preprocess;
mod score_parity;
mod weights;
mod cli_fixture;
mod cli_extract;
mod cli_train;
mod cli_train_images;
mod cli_score;
mod cli_files;
