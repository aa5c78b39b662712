//! `dinomaly-export`: a checkpoint → an ONNX model that computes what
//! dinomaly-score computes after pre-processing (see [`crate::export`]),
//! and one JSON line on stdout describing the file written.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use sha2::Digest;

use crate::cli::args::{CheckpointArgs, QuietArgs};
use crate::cli::output::DataOut;
use crate::cli::progress;
use crate::cli::ranges;
use crate::export::{self, ExportPrecision, ExportRequest, InputKind};
use crate::io::atomic;
use crate::score::scorer::ScorerRequest;

const TOOL: &str = "dinomaly-export";

/// Export a trained Dinomaly model to ONNX (onnxruntime, OpenVINO,
/// TensorRT, Triton).
///
/// The graph computes what dinomaly-score computes after pre-processing:
/// input "image", the checkpoint's centre crops as normalised float32
/// (B, 3, crop, crop) (or raw uint8 RGB crops with --input uint8);
/// outputs "anomaly_map" (B, h, w), the map dinomaly-score writes with
/// --maps-dir, and "score" (B), its image score. Only the encoder blocks up
/// to the last target layer are in it, the positional embedding resized
/// once for the crop. Opset 17 (the first with LayerNormalization; the
/// attention written with MatMul, GELU with Erf): onnxruntime 1.12+,
/// OpenVINO 2022.3+, TensorRT 8.6+.
///
/// The model's metadata_props say how to feed it (resize, resize_backend,
/// crop, mean, std), what it outputs (map_size, score_map_size, top_ratio),
/// what it is (backbone, encoder_sha256, checkpoint_kind, dinomaly.model_id,
/// the same id dinomaly-score writes) and, for a calibrated checkpoint,
/// its "calibration". stdout: one JSON line with the file's path, size,
/// sha256, inputs, outputs and metadata. Exit status: 0 ok, 2 on errors
/// (nothing written).
#[derive(Debug, clap::Parser)]
#[command(name = "dinomaly-export", version, allow_negative_numbers = true)]
pub struct Args {
    #[command(flatten)]
    pub model: CheckpointArgs,

    /// Encoder weights for dinomaly-train checkpoints, as for dinomaly-score
    /// (default: the cache or a download by the recorded backbone name;
    /// sha256 checked). Refused with official and anomalib checkpoints.
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,

    /// Target layers of official/anomalib checkpoints (default per size),
    /// as for dinomaly-score.
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    pub layers: Vec<usize>,

    /// The .onnx file to write (written to a temporary name, then renamed).
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: PathBuf,

    /// Batch size: 0 is a dynamic batch axis ("batch"); N >= 1 a static
    /// one (TensorRT and OpenVINO plan for a fixed shape).
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = ranges::at_least::<u32>(0), allow_hyphen_values = true)]
    pub batch: u32,

    /// fp32, or fp16: float16 weights and encoder/decoder compute (GPUs),
    /// with the LayerNorms, the linear attention, the maps and the score in
    /// float32; the graph's input and outputs stay float32.
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,

    /// What the input holds: float (normalised float32 crops, as
    /// dinomaly-score feeds its model) or uint8 (raw RGB crops, uint8
    /// (B, 3, crop, crop); /255 and the ImageNet mean/std inside the graph).
    /// uint8 crops are exact for dinomaly and official checkpoints (Pillow
    /// resizes in uint8 too); anomalib resizes the float image, so crops
    /// resized in uint8 differ from its input by rounding.
    #[arg(long, value_enum, default_value = "float")]
    pub input: InputArg,

    /// Side of the anomaly map: N or HxW (official: 256), as for
    /// dinomaly-score. Refused with anomalib checkpoints, whose map is
    /// anomalib's raw map at the crop size and whose score is taken at 256.
    #[arg(long, value_name = "SIZE")]
    pub map_size: Option<crate::cli::args::Size2>,

    /// Image score = mean of the top fraction of map pixels, in [0, 1]
    /// (0 = max; default 0.01), as for dinomaly-score.
    #[arg(long, value_name = "R", value_parser = ranges::FRACTION, allow_hyphen_values = true)]
    pub max_ratio: Option<f64>,

    #[command(flatten)]
    pub quiet: QuietArgs,
}

/// `--precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// float32 throughout.
    Fp32,
    /// float16 weights and compute, float32 I/O.
    Fp16,
}

/// `--input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputArg {
    /// Normalised float32 crops.
    Float,
    /// Raw uint8 RGB crops.
    Uint8,
}

/// Runs the tool.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let quiet = args.quiet.quiet;
    crate::cli::stdio::refuse_dash(&[
        ("-c", Some(&args.model.checkpoint), "the checkpoint is read from a file"),
        ("--weights", args.weights.as_deref(), "encoder weights are read from a file or folder"),
        ("-o", Some(&args.output), "the ONNX model is binary and is written to a file"),
    ])?;
    atomic::check_writable(&args.output).with_context(|| "-o is not writable")?;
    let req = ExportRequest {
        scorer: ScorerRequest {
            checkpoint: args.model.checkpoint.clone(),
            kind: args.model.kind,
            weights: args.weights.clone(),
            layers: args.layers.clone(),
            map_size: args.map_size.map(|s| (s.height as i64, s.width as i64)),
            max_ratio: args.max_ratio,
            features_only: false,
            precision: crate::model::amp::Precision::Fp32,
            quiet,
            tool: TOOL.to_string(),
        },
        batch: (args.batch > 0).then_some(i64::from(args.batch)),
        precision: match args.precision {
            PrecisionArg::Fp32 => ExportPrecision::Fp32,
            PrecisionArg::Fp16 => ExportPrecision::Fp16,
        },
        input: match args.input {
            InputArg::Float => InputKind::Float,
            InputArg::Uint8 => InputKind::Uint8,
        },
    };
    let exported = export::export(&req)
        .with_context(|| format!("cannot export checkpoint {}", args.model.checkpoint.display()))?;
    atomic::write_bytes(&args.output, &exported.bytes)?;
    let sha256 = crate::io::hash::hex(&sha2::Sha256::digest(&exported.bytes));
    progress::note(
        quiet,
        TOOL,
        &format!(
            "wrote {} ({:.1} MB, opset {})",
            args.output.display(),
            exported.bytes.len() as f64 / 1e6,
            export::OPSET
        ),
    );
    let line = json!({
        "onnx": args.output,
        "bytes": exported.bytes.len(),
        "sha256": sha256,
        "opset": export::OPSET,
        "precision": exported.metadata["precision"],
        "input_kind": exported.metadata["input_kind"],
        "inputs": exported.inputs,
        "outputs": exported.outputs,
        "metadata": exported.metadata,
    });
    let mut out = DataOut::stdout();
    out.line(&line.to_string())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
