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
mod bad_input;
mod cli_flags;
mod batch_invariance;
mod cpu_bf16;
mod cli_score_ux;
mod cli_files;
