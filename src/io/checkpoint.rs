//! Checkpoints of the trainable half (bottleneck + decoder) written by
//! `dinomaly-train` and read by `dinomaly-score`.
//!
//! A safetensors file whose tensor names are the module paths
//! (`bottleneck.0.fc1.weight`, `decoder.3.attn.qkv.bias`, ...), exactly the
//! official Dinomaly key names without the `encoder.` part, so
//! `safetensors.torch.load_file` gives a state dict the official `ViTill`
//! bottleneck/decoder accept. `__metadata__` holds `format`,
//! `format_version` and `meta`, a JSON object with everything scoring needs
//! to rebuild the exact pipeline (see [`CheckpointMeta`]).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::io::atomic;
use crate::io::features::FeatureMeta;
use crate::{Error, Result};

/// Format name stored in metadata.
pub const FORMAT: &str = "dinomaly-checkpoint";
/// Current layout version.
pub const FORMAT_VERSION: u32 = 1;

/// Everything about a trained model that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The encoder side, as recorded by the feature store it was trained on
    /// (backbone, weights sha256, layers, groups, resize/crop, pos-embed mode).
    pub encoder: FeatureMeta,
    /// Model hyper-parameters.
    pub model: ModelMeta,
    /// Training settings and progress (iterations done, seed, skipped steps,
    /// mode, class for separated models, loss history).
    pub training: serde_json::Value,
    /// Decision thresholds (`dinomaly-calibrate`); absent until calibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::io::calibration::Calibration>,
}

/// The hyper-parameters that shape the trainable modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// "linear" (ELU+1, the paper's) or "softmax" (ablation).
    pub attention: String,
    /// Epsilon added to the linear-attention normaliser, if any.
    pub attention_eps: Option<f64>,
    /// Bottleneck dropout used in training (inactive when scoring).
    pub dropout: f64,
    /// Biases in the bottleneck and decoder MLPs (official on, anomalib off).
    pub mlp_bias: bool,
    /// Layer groups, indices into the target layers.
    pub groups: Vec<Vec<usize>>,
    /// Target layers fed to the bottleneck.
    pub num_layers: usize,
    /// Decoder blocks.
    pub depth_decoder: usize,
}

/// Writes `tensors` with `meta` to `path` atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &CheckpointMeta) -> Result<()> {
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    metadata.insert(
        "meta".to_string(),
        serde_json::to_string(meta).map_err(|e| Error::config(format!("cannot encode checkpoint metadata: {e}")))?,
    );
    let bytes = serialize(path, tensors, metadata)?;
    atomic::write_bytes(path, &bytes)
}

/// Serialises named tensors (moved to CPU, contiguous) to safetensors bytes.
pub fn serialize(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let host: Vec<(String, Tensor)> =
        tensors.iter().map(|(k, t)| (k.clone(), t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
    let mut buffers = Vec::with_capacity(host.len());
    for (name, t) in &host {
        let dtype = match t.kind() {
            tch::Kind::Float => safetensors::Dtype::F32,
            tch::Kind::Double => safetensors::Dtype::F64,
            tch::Kind::Half => safetensors::Dtype::F16,
            tch::Kind::BFloat16 => safetensors::Dtype::BF16,
            tch::Kind::Int64 => safetensors::Dtype::I64,
            other => {
                return Err(Error::format(path, format!("tensor '{name}' has unsupported dtype {other:?}")));
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), dtype, shape, data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = buffers
        .iter()
        .map(|(name, dtype, shape, data)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::format(path, format!("tensor '{name}': {e:?}")))
        })
        .collect::<Result<_>>()?;
    safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| Error::format(path, format!("cannot serialise: {e:?}")))
}

/// A checkpoint read back.
pub struct Checkpoint {
    /// Named tensors (CPU).
    pub tensors: Vec<(String, Tensor)>,
    /// Metadata.
    pub meta: CheckpointMeta,
}

/// The metadata of a checkpoint written by [`save`] (format and version
/// checked), from its header alone: the tensors are not read.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let map = crate::io::safetensors_load::map_file(path)?;
    meta_of(path, &map)
}

/// Checks format and version in the header of checkpoint bytes `bytes` (at
/// least the header) and parses the metadata.
fn meta_of(path: &Path, bytes: &[u8]) -> Result<CheckpointMeta> {
    let bad = |reason: String| Error::format(path, reason);
    let (_, st_meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(crate::io::safetensors_load::header_problem("dinomaly checkpoint", &e)))?;
    let kv = st_meta.metadata().clone().unwrap_or_default();
    if kv.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!("not a dinomaly checkpoint (format {:?}, expected \"{FORMAT}\")", kv.get("format"))));
    }
    let version = kv.get("format_version").cloned().unwrap_or_default();
    if version != FORMAT_VERSION.to_string() {
        return Err(bad(format!("checkpoint format version {version}, this build reads version {FORMAT_VERSION}")));
    }
    serde_json::from_str(kv.get("meta").map(String::as_str).unwrap_or(""))
        .map_err(|e| bad(format!("bad checkpoint metadata: {e}")))
}

/// Reads a checkpoint written by [`save`], checking format and version.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::format(path, reason);
    let meta = meta_of(path, &bytes)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("corrupt or truncated checkpoint: {e:?}")))?;
    let mut tensors = Vec::new();
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(|e| bad(format!("tensor '{name}': {e:?}")))?;
        let kind = match view.dtype() {
            safetensors::Dtype::F32 => tch::Kind::Float,
            safetensors::Dtype::F64 => tch::Kind::Double,
            safetensors::Dtype::F16 => tch::Kind::Half,
            safetensors::Dtype::BF16 => tch::Kind::BFloat16,
            safetensors::Dtype::I64 => tch::Kind::Int64,
            other => return Err(bad(format!("tensor '{name}' has unsupported dtype {other:?}"))),
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        tensors.push((name.to_string(), t));
    }
    Ok(Checkpoint { tensors, meta })
}
