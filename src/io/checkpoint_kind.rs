//! Which kind of checkpoint a file is, from its contents: one written by
//! `dinomaly-train` (safetensors with dinomaly metadata), the official
//! repository's saved `ViTill` state dict, or anomalib's (a Lightning
//! `.ckpt` or a torch state dict). Only headers and key names are read.

use std::path::Path;

use crate::io::checkpoint;
use crate::io::pth::read_state_dict;
use crate::io::sniff::{self, FileKind};
use crate::{Error, Result};

/// Which kind of checkpoint a file is. Its names in files are its flag
/// values (`io::names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointKind {
    /// Written by dinomaly-train.
    Dinomaly,
    /// The official repository's saved ViTill state dict.
    Official,
    /// anomalib 2.x Dinomaly (Lightning .ckpt or torch state dict).
    Anomalib,
}

/// Detects the checkpoint kind from the file's contents.
pub fn detect_kind(path: &Path) -> Result<CheckpointKind> {
    match sniff::file_kind(path)? {
        FileKind::Safetensors => {
            // Only the header is read (the map pages in nothing else).
            let map = crate::io::safetensors_load::map_file(path)?;
            let (_, meta) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| Error::format(path, crate::io::safetensors_load::header_problem("checkpoint", &e)))?;
            let format = meta.metadata().as_ref().and_then(|m| m.get("format").cloned());
            if format.as_deref() == Some(checkpoint::FORMAT) {
                Ok(CheckpointKind::Dinomaly)
            } else {
                foreign_kind(meta.tensors().keys().map(String::as_str)).ok_or_else(|| {
                    Error::format(path, "not a Dinomaly checkpoint (no dinomaly metadata, no encoder/decoder keys)")
                })
            }
        }
        FileKind::TorchZip => {
            let sd = read_state_dict(path, None)?;
            foreign_kind(sd.tensors.iter().map(|(k, _)| k.as_str())).ok_or_else(|| {
                Error::format(path, "a torch checkpoint without Dinomaly keys (encoder.*, bottleneck.0.*, decoder.*)")
            })
        }
        FileKind::TorchLegacy => Err(Error::format(path, sniff::legacy_message())),
        _ => Err(Error::format(path, "not a checkpoint (neither safetensors nor a torch.save file)")),
    }
}

/// The foreign kind the tensor names point to: anomalib keeps its timm
/// encoder under `encoder.feature_extractor.` (after `model.` in a Lightning
/// checkpoint), the official `ViTill` its Meta-layout encoder under
/// `encoder.`.
pub fn foreign_kind<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<CheckpointKind> {
    let mut official = false;
    for k in keys {
        if k.contains("encoder.feature_extractor.") {
            return Some(CheckpointKind::Anomalib);
        }
        official |= k.starts_with("encoder.blocks.") || k.starts_with("encoder.cls_token");
    }
    official.then_some(CheckpointKind::Official)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_kinds_follow_the_encoder_keys() {
        let kind = |keys: &[&str]| foreign_kind(keys.iter().copied());
        assert_eq!(
            kind(&["encoder.feature_extractor.cls_token", "bottleneck.0.fc1.weight"]),
            Some(CheckpointKind::Anomalib)
        );
        // Lightning: everything under "model.", plus aliases and buffers.
        assert_eq!(
            kind(&[
                "post_processor.image_min",
                "model.encoder.feature_extractor.pos_embed",
                "trainable_modules.0.0.fc1.weight"
            ]),
            Some(CheckpointKind::Anomalib)
        );
        assert_eq!(
            kind(&["encoder.cls_token", "encoder.blocks.0.norm1.weight", "decoder.0.norm1.weight"]),
            Some(CheckpointKind::Official)
        );
        assert_eq!(kind(&["bottleneck.0.fc1.weight", "decoder.0.norm1.weight"]), None);
        assert_eq!(kind(&[]), None);
    }
}
