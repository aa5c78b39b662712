//! The training state written beside a checkpoint by `dinomaly-train
//! --save-every` (`NAME.state` for `NAME`), from which `--resume` continues
//! exactly: a safetensors file holding the optimizer's tensors (under their
//! own names), a copy of the model weights (under `model.`), the iteration
//! count (`progress.iterations_done`), and in its metadata `format` =
//! `dinomaly-train-state` and `progress`, the trainer's progress as JSON.
//!
//! The state carries its own copy of the weights so that it is complete by
//! itself: a run killed between writing the state and the checkpoint leaves
//! a state newer than the checkpoint, and resuming from the state alone still
//! continues exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::Tensor;

use crate::io::checkpoint;
use crate::{Error, Result};

/// The `format` metadata value.
pub const FORMAT: &str = "dinomaly-train-state";
/// Prefix of the model weights' names.
const WEIGHTS: &str = "model.";
/// Prefix of the progress tensors (read from the metadata instead).
const PROGRESS: &str = "progress.";

/// Where the training state of checkpoint `path` is kept.
pub fn state_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".state");
    path.with_file_name(name)
}

/// A state read back.
pub struct TrainState<P> {
    pub progress: P,
    /// The model weights by checkpoint key.
    pub weights: Vec<(String, Tensor)>,
    /// The optimizer's tensors by their own names.
    pub optimizer: Vec<(String, Tensor)>,
}

/// Writes the state of checkpoint `checkpoint` atomically.
pub fn write(
    checkpoint: &Path,
    optimizer: Vec<(String, Tensor)>,
    weights: Vec<(String, Tensor)>,
    iterations_done: u64,
    progress: &impl Serialize,
) -> Result<()> {
    let mut named = optimizer;
    named.extend(weights.into_iter().map(|(k, t)| (format!("{WEIGHTS}{k}"), t)));
    named.push((format!("{PROGRESS}iterations_done"), Tensor::from_slice(&[iterations_done as i64])));
    let mut kv = HashMap::new();
    kv.insert("format".to_string(), FORMAT.to_string());
    kv.insert("progress".to_string(), serde_json::to_string(progress).map_err(|e| Error::config(e.to_string()))?);
    let state = state_path(checkpoint);
    let bytes = checkpoint::serialize(&state, &named, kv)?;
    crate::io::atomic::write_bytes(&state, &bytes)
}

/// Reads the state of checkpoint `checkpoint`.
pub fn read<P: DeserializeOwned>(checkpoint: &Path) -> Result<TrainState<P>> {
    let state = state_path(checkpoint);
    // The header first: a missing or foreign file is named before any
    // tensor is read.
    let map = crate::io::safetensors_load::map_file(&state).map_err(|e| match e {
        Error::Io { source, .. } => Error::io(
            &state,
            std::io::Error::new(
                source.kind(),
                format!("no training state to resume from ({source}); it is written with --save-every"),
            ),
        ),
        other => other,
    })?;
    let (_, st) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| Error::format(&state, format!("not a training state: {e:?}")))?;
    let kv = st.metadata().clone().unwrap_or_default();
    if kv.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(Error::format(&state, "not a dinomaly training state"));
    }
    let progress: P = serde_json::from_str(kv.get("progress").map(String::as_str).unwrap_or(""))
        .map_err(|e| Error::format(&state, format!("bad progress metadata: {e}")))?;
    let named = Tensor::read_safetensors(&state)
        .map_err(|e| Error::format(&state, format!("corrupt or truncated training state: {e}")))?;
    let (weights, optimizer): (Vec<_>, Vec<_>) =
        named.into_iter().filter(|(k, _)| !k.starts_with(PROGRESS)).partition(|(k, _)| k.starts_with(WEIGHTS));
    let weights = weights.into_iter().map(|(k, t)| (k[WEIGHTS.len()..].to_string(), t)).collect();
    Ok(TrainState { progress, weights, optimizer })
}
