//! Loading a ViT encoder's weights from a file or a folder into canonical
//! named tensors ([`EncoderWeights`]), choosing the reader by the file's
//! content, checking every tensor against the architecture the file implies
//! and, when one is given, against the architecture the caller expects.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::backbone::arch::ArchInfo;
use crate::backbone::layout::{self, Layout};
use crate::backbone::vit::VitConfig;
use crate::io::hash::sha256_file;
use crate::io::pth::read_state_dict;
use crate::io::safetensors_load::{read_safetensors, FloatKind};
use crate::io::sniff::{self, FileKind};
use crate::{Error, Result};

/// An encoder's weights in the canonical layout, float32, on the CPU.
pub struct EncoderWeights {
    /// The architecture the tensors imply (heads from the expected
    /// architecture, a Hugging Face config.json, or D / 64).
    pub arch: ArchInfo,
    /// Canonical `(name, tensor)` pairs in [`ArchInfo::canonical_shapes`]
    /// order.
    pub tensors: Vec<(String, Tensor)>,
    /// How the file was laid out and what conversion did.
    pub source_layout: Layout,
    /// The file read (inside the folder, when a folder was given).
    pub path: PathBuf,
    /// SHA-256 of that file, lowercase hex.
    pub sha256: String,
}

impl EncoderWeights {
    /// The canonical tensor `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    /// The configuration of the encoder that runs these weights (load them
    /// into it with [`crate::io::varstore::load_into`]).
    pub fn vit_config(&self) -> VitConfig {
        self.arch.vit_config()
    }
}

/// Choices for [`load_encoder_weights_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Key prefix of the encoder inside a larger state dict (`encoder.`);
    /// `None` finds it from the patch-embedding key.
    pub prefix: Option<String>,
    /// For `torch.save` files: the nested dict holding the state dict
    /// (`model`, `state_dict`, `/` between levels); `None` finds it.
    pub dict_key: Option<String>,
    /// The file's SHA-256 when the caller has just computed it (on
    /// download or cache verification), to avoid hashing twice.
    pub known_sha256: Option<String>,
}

/// Loads encoder weights from `path` (a `torch.save` file, a safetensors
/// file, or a Hugging Face model folder), converts them to the canonical
/// layout and checks them; with `expected`, the architecture must match it.
pub fn load_encoder_weights(path: &Path, expected: Option<&ArchInfo>) -> Result<EncoderWeights> {
    load_encoder_weights_with(path, expected, &LoadOptions::default())
}

/// [`load_encoder_weights`] without an expected architecture (the head
/// count is then D / 64, or a Hugging Face folder's config.json).
pub fn load(path: &Path) -> Result<EncoderWeights> {
    load_encoder_weights(path, None)
}

/// [`load_encoder_weights`] with a prefix, a nested-dict key or a known hash.
pub fn load_encoder_weights_with(
    path: &Path,
    expected: Option<&ArchInfo>,
    opts: &LoadOptions,
) -> Result<EncoderWeights> {
    let (file, config_heads) = weights_file(path)?;
    let raw = match sniff::file_kind(&file)? {
        FileKind::Safetensors => read_safetensors(&file, FloatKind::F32)?,
        FileKind::TorchZip => read_state_dict(&file, opts.dict_key.as_deref())?.tensors,
        FileKind::TorchLegacy => return Err(Error::format(&file, sniff::legacy_message())),
        FileKind::Pickle => {
            return Err(Error::format(&file, "is a plain pickle, not a torch.save checkpoint or safetensors file"))
        }
        FileKind::Unknown => {
            return Err(Error::format(&file, "is neither a torch.save checkpoint nor a safetensors file"))
        }
    };
    let hashing = HashInBackground::start(&file, opts.known_sha256.as_deref());
    let mut weights = from_raw(&file, raw, opts.prefix.as_deref(), expected, config_heads)?;
    weights.sha256 = hashing.finish()?;
    Ok(weights)
}

/// A file's SHA-256 computed on another thread while the caller converts
/// and checks the tensors (hashing a ViT-B file costs about as much as
/// reading it), or the hash the caller already knows.
pub enum HashInBackground {
    Known(String),
    Computing(std::thread::JoinHandle<Result<String>>),
}

impl HashInBackground {
    /// Starts hashing `file`, unless `known` gives its hash.
    pub fn start(file: &Path, known: Option<&str>) -> Self {
        match known {
            Some(k) => HashInBackground::Known(k.to_string()),
            None => {
                let file = file.to_path_buf();
                HashInBackground::Computing(std::thread::spawn(move || sha256_file(&file)))
            }
        }
    }

    /// The lowercase hex SHA-256.
    pub fn finish(self) -> Result<String> {
        let hash = match self {
            HashInBackground::Known(k) => k,
            HashInBackground::Computing(worker) => {
                worker.join().map_err(|_| Error::config("the sha256 thread panicked (a bug)"))??
            }
        };
        Ok(hash.to_ascii_lowercase())
    }
}

/// Encoder weights from tensors already read from `file` (which may hold
/// other tensors too, e.g. a whole Dinomaly checkpoint: only those under
/// `prefix` are used). `sha256` is left empty: the caller, which knows
/// how the file was read, sets it (see [`HashInBackground`]).
pub fn from_raw(
    file: &Path,
    raw: Vec<(String, Tensor)>,
    prefix: Option<&str>,
    expected: Option<&ArchInfo>,
    config_heads: Option<i64>,
) -> Result<EncoderWeights> {
    // Everything downstream (and any position folding) works in float32.
    let raw = raw
        .into_iter()
        .map(|(k, t)| {
            let t = if matches!(t.kind(), Kind::Half | Kind::BFloat16 | Kind::Double) {
                t.f_to_kind(Kind::Float)?
            } else {
                t
            };
            Ok((k, t))
        })
        .collect::<Result<Vec<_>>>()?;
    let canonical = layout::to_canonical(file, raw, prefix, expected, config_heads)?;
    Ok(EncoderWeights {
        arch: canonical.arch,
        tensors: canonical.tensors,
        source_layout: canonical.layout,
        path: file.to_path_buf(),
        sha256: String::new(),
    })
}

/// The file to read for `path`, and the head count from a Hugging Face
/// `config.json` when `path` is a model folder.
fn weights_file(path: &Path) -> Result<(PathBuf, Option<i64>)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return Ok((path.to_path_buf(), None));
    }
    if path.join("model.safetensors.index.json").exists() && !path.join("model.safetensors").exists() {
        return Err(Error::format(
            path,
            "holds a sharded checkpoint (model.safetensors.index.json), which is not supported",
        ));
    }
    let file = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|n| path.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::format(path, "is a folder without model.safetensors or pytorch_model.bin"))?;
    let heads = std::fs::read_to_string(path.join("config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("num_attention_heads")?.as_i64());
    Ok((file, heads))
}
