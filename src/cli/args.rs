//! Flags that several tools share, defined once and flattened into each
//! tool's `Args`.

use std::path::PathBuf;

use crate::device::DeviceChoice;

/// `--device`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Where to compute: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceChoice,
}

/// `--quiet`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuietArgs {
    /// No progress bar and no notes on stderr (errors are still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// What to do when one sample cannot be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OnError {
    /// Stop with exit code 2 after flushing what was done.
    #[default]
    Stop,
    /// Report the sample on stderr and go on.
    Skip,
}

/// Where samples come from: JSON lines or paths on stdin / a file, or a
/// dataset tree read by layout.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// Read samples from this file instead of stdin ('-' is stdin): JSON
    /// lines with an "image" field, or one image path per line.
    #[arg(long, short = 'i', value_name = "FILE", conflicts_with = "dataset")]
    pub input: Option<PathBuf>,

    /// Read samples from a dataset tree instead of stdin.
    #[arg(long, value_name = "ROOT")]
    pub dataset: Option<PathBuf>,

    /// Layout of --dataset.
    #[arg(long, value_enum, default_value = "mvtec", requires = "dataset")]
    pub layout: crate::data::dataset::Layout,

    /// Split of --dataset to read.
    #[arg(long, value_enum, default_value = "train", requires = "dataset")]
    pub split: crate::data::dataset::Split,

    /// Only these classes of --dataset (comma-separated; default all).
    #[arg(long, value_delimiter = ',', requires = "dataset")]
    pub classes: Vec<String>,
}
