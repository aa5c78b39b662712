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

/// `-c CKPT [--kind KIND]`: a trained model of any of the three kinds
/// (dinomaly-score, dinomaly-export).
#[derive(Debug, Clone, clap::Args)]
pub struct CheckpointArgs {
    /// Checkpoint: from dinomaly-train, the official repository's saved
    /// state dict, or anomalib 2.x Dinomaly weights.
    #[arg(long, short = 'c', value_name = "CKPT")]
    pub checkpoint: PathBuf,

    /// Checkpoint kind (default: detected from the file).
    #[arg(long, value_enum)]
    pub kind: Option<crate::io::checkpoint_kind::CheckpointKind>,
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
    /// Stop at the first one, with exit status 2.
    #[default]
    Stop,
    /// Report it and go on.
    Skip,
}

/// Where samples come from: JSON lines or paths on stdin / a file, or a
/// dataset tree read by layout.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub source: SampleSource,

    /// Only these classes of --dataset (comma-separated; default all).
    #[arg(long, value_delimiter = ',', requires = "dataset")]
    pub classes: Vec<String>,
}

/// The sample inputs without a class filter, for tools whose own
/// `--classes` also filters other inputs (dinomaly-train).
#[derive(Debug, Clone, clap::Args)]
pub struct SampleSource {
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
}

/// A size in pixels: `N` (square) or `HxW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size2 {
    /// Height.
    pub height: u32,
    /// Width.
    pub width: u32,
}

impl std::str::FromStr for Size2 {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |t: &str| {
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("'{s}' is not a size: use N or HxW with positive integers"))
        };
        match s.split_once(['x', 'X']) {
            Some((h, w)) => Ok(Size2 { height: parse(h)?, width: parse(w)? }),
            None => {
                let n = parse(s)?;
                Ok(Size2 { height: n, width: n })
            }
        }
    }
}

impl std::fmt::Display for Size2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.height == self.width {
            write!(f, "{}", self.height)
        } else {
            write!(f, "{}x{}", self.height, self.width)
        }
    }
}

/// The encoder and its input: which backbone, which weights, which layers,
/// which pre-processing.
#[derive(Debug, Clone, clap::Args)]
pub struct EncoderArgs {
    /// Backbone: dinov2_vit{s,b,l,g}14_reg4 (DINOv2 with registers),
    /// dinov2_vit{s,b,l,g}14 (plain), or any name when --weights is given
    /// (the architecture is read from the weights).
    #[arg(long, default_value = "dinov2_vitb14_reg4", value_name = "NAME")]
    pub backbone: String,

    /// Weights file or folder (Meta .pth, Hugging Face or timm safetensors).
    /// Default: the cache ($DINOMALY_CACHE, else the XDG cache), else a
    /// download from the official URL.
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,

    /// Expected sha256 of the weights file; a different file is refused.
    #[arg(long, value_name = "HEX")]
    pub weights_sha256: Option<String>,

    /// Target encoder blocks, 0-based, comma-separated (default per size:
    /// 2..9 for S/B, 4,6,...,18 for L).
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    pub layers: Vec<usize>,

    /// Resize before the centre crop: N or HxW.
    #[arg(long, default_value = "448", value_name = "SIZE")]
    pub resize: Size2,

    /// Centre crop fed to the encoder: N or HxW (a multiple of the patch size).
    #[arg(long, default_value = "392", value_name = "SIZE")]
    pub crop: Size2,

    /// How the positional embedding is fitted to the patch grid: official
    /// (DINOv2's scale factor with the 0.1 offset), exact (timm/anomalib),
    /// exact-antialias (timm default, Hugging Face).
    #[arg(long, value_enum, default_value = "official")]
    pub pos_interp: crate::backbone::pos_embed::PosInterp,

    /// Image pre-processing: pil (the official code, Pillow-exact) or
    /// tensor (anomalib 2.7's float-tensor resize).
    #[arg(long, value_enum, default_value = "pil")]
    pub preprocess: crate::data::preprocess::ResizeBackend,
}

impl EncoderArgs {
    /// The library's request for the encoder these flags describe.
    pub fn request(&self, quiet: bool, tool: &str) -> crate::backbone::open::EncoderRequest {
        crate::backbone::open::EncoderRequest {
            backbone: self.backbone.clone(),
            weights: self.weights.clone(),
            weights_sha256: self.weights_sha256.clone(),
            layers: self.layers.clone(),
            pos_interp: self.pos_interp,
            quiet,
            tool: tool.to_string(),
        }
    }
}

impl EncoderArgs {
    /// The pre-processing these flags describe (resize, crop, backend).
    pub fn preprocess(&self) -> crate::Result<crate::data::preprocess::Preprocess> {
        crate::data::preprocess::Preprocess::new(
            (self.resize.height as usize, self.resize.width as usize),
            (self.crop.height as usize, self.crop.width as usize),
            self.preprocess,
        )
    }
}

/// Numeric precision (defined with the mixed-precision rules it selects).
pub use crate::model::amp::Precision;

/// `--shard I/N` of dinomaly-score and dinomaly-extract: the I-th of N
/// contiguous blocks of the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based shard number.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a shard: use I/N with 1 <= I <= N");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The contiguous block of `len` inputs this shard owns.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        let start = (self.index - 1) * len / self.count;
        let end = self.index * len / self.count;
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_contiguously() {
        let shards: Vec<Shard> = (1..=3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let ranges: Vec<_> = shards.iter().map(|s| s.range(10)).collect();
        assert_eq!(ranges, vec![0..3, 3..6, 6..10]);
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
