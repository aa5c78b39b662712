//! `demo-data`: prepares what `make demo` (examples/demo.sh) runs on.
//!
//! - `elpv`: solar-cell electroluminescence photos from the `elpv-dataset`
//!   wheel (CC BY-NC-SA 4.0, never committed) as two generic-folder trees,
//!   one for training and one for testing, with the classes mono and poly;
//! - `textures`: the CC0 brick, grass and gravel photographs of the
//!   scikit-image wheel cut into tiles, with synthetic defects and their
//!   exact masks, as an MVTec-AD tree;
//! - `weights`: the DINOv2 ViT-S/14-reg4 weights from the cache or the
//!   official download, else a seeded random checkpoint in Meta's layout;
//! - `compare`: the differences between two scoring outputs (maps and
//!   scores), or between a scoring output and TensorRT's (`trtexec
//!   --exportOutput`), for scripts/gpu-check.sh;
//! - `crops`: the model inputs dinomaly-score makes of a list of images, as
//!   one raw tensor file (for `trtexec --loadInputs`).
//!
//! Every tree is written under a temporary name and renamed into place when
//! complete, so an interrupted run leaves nothing that looks finished.

mod compare;
mod crops;
mod elpv;
mod image_ops;
mod random_weights;
mod textures;
mod tree;
mod weights;
mod wheel;

use std::process::ExitCode;

use clap::Parser;

/// Data and weights for the demo.
#[derive(Debug, clap::Parser)]
#[command(name = "demo-data")]
enum Command {
    /// Solar-cell images from the elpv-dataset wheel.
    Elpv(elpv::Args),
    /// Texture tiles with synthetic defects from the scikit-image wheel.
    Textures(textures::Args),
    /// Pretrained ViT-S/14-reg4 weights, else seeded random ones.
    Weights(weights::Args),
    /// Differences between two dinomaly-score outputs of the same inputs
    /// (maps and scores), for scripts/gpu-check.sh.
    Compare(compare::Args),
    /// The pre-processed model inputs of a list of images as one raw
    /// float32 (or uint8) NCHW file, for trtexec --loadInputs.
    Crops(crops::Args),
}

fn main() -> ExitCode {
    let result = match Command::parse() {
        Command::Elpv(a) => elpv::run(&a),
        Command::Textures(a) => textures::run(&a),
        Command::Weights(a) => weights::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Crops(a) => crops::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-data: {e:#}");
            ExitCode::from(2)
        }
    }
}
