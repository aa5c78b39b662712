//! The integration test binary (one binary: linking libtorch is slow).

mod util;

mod bad_input;
mod batch_invariance;
mod cli_calibrate;
mod cli_extract;
mod cli_files;
mod cli_flags;
mod cli_init;
mod cli_scale_out;
mod cli_score;
mod cli_score_live;
mod cli_score_ux;
mod cli_train;
mod cli_train_images;
mod cpu_bf16;
mod dataset;
mod demo;
mod deploy;
mod docs;
mod encoder;
mod export;
mod gpu_check;
mod maps;
mod metrics;
mod model;
mod photo;
mod preprocess;
mod report;
mod score_parity;
mod weights;
