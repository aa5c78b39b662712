//! The model id every scored line carries (`"model"`), so that a
//! calibration can refuse the lines of another model.
//!
//! The id identifies the weights that make the scores, not the file:
//! the first 16 hex digits (64 bits) of the SHA-256 of
//!
//! ```text
//! for each trainable tensor (bottleneck.*, decoder.*), in byte order of the names:
//!     name "\0" dtype "\0" shape (decimal, comma-separated) "\0" data (little-endian)
//! "encoder\0" the encoder weights' sha256 (lowercase hex)
//! ```
//!
//! where dtype is libtorch's name of the element type (`Float`, `BFloat16`,
//! ...). The tensors are those the scorer loads, under dinomaly key names: a
//! dinomaly checkpoint's as stored, an official or anomalib checkpoint's
//! bottleneck and decoder converted to float32 (as scoring uses them). The
//! encoder sha256 is the weights file's (dinomaly checkpoints record it;
//! for official and anomalib checkpoints, whose encoder is inside the file,
//! it is the checkpoint file's). So renaming a file or adding calibration
//! metadata keeps the id (`dinomaly-calibrate`'s output scores with the
//! id of its input), and any change to a weight changes it.

use std::path::Path;

use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::io::checkpoint;
use crate::score::scorer::{detect_kind, read_foreign, CheckpointKind};
use crate::{Error, Result};

/// Hex digits of the id (64 bits: collisions between a site's models are
/// out of reach, and the id stays short enough to read in a line).
pub const ID_HEX_DIGITS: usize = 16;

/// The id of a model with trainable `tensors` (any order) on the encoder
/// weights of sha256 `encoder_sha256`.
pub fn model_id(tensors: &[(String, Tensor)], encoder_sha256: &str) -> Result<String> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hasher = Sha256::new();
    for (name, tensor) in sorted {
        let host = tensor.to_device(tch::Device::Cpu).contiguous();
        let shape: Vec<String> = host.size().iter().map(i64::to_string).collect();
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        hasher.update(format!("{:?}", host.kind()).as_bytes());
        hasher.update(b"\0");
        hasher.update(shape.join(",").as_bytes());
        hasher.update(b"\0");
        let numel = host.numel();
        let mut data = vec![0u8; numel * host.kind().elt_size_in_bytes()];
        host.f_copy_data_u8(&mut data, numel)?;
        hasher.update(&data);
    }
    hasher.update(b"encoder\0");
    hasher.update(encoder_sha256.to_ascii_lowercase().as_bytes());
    let hex = crate::io::hash::hex(&hasher.finalize());
    Ok(hex[..ID_HEX_DIGITS].to_string())
}

/// The id of the model in checkpoint `path` (of `kind`, or detected),
/// without building it.
pub fn checkpoint_model_id(path: &Path, kind: Option<CheckpointKind>) -> Result<String> {
    let kind = match kind {
        Some(k) => k,
        None => detect_kind(path)?,
    };
    match kind {
        CheckpointKind::Dinomaly => {
            let ckpt = checkpoint::load(path)?;
            model_id(&ckpt.tensors, &ckpt.meta.encoder.weights_sha256)
        }
        CheckpointKind::Official | CheckpointKind::Anomalib => {
            let foreign = read_foreign(path, kind)?;
            model_id(&foreign.trainable, &foreign.weights.sha256)
        }
    }
}

/// Whether `text` has the form of a model id.
pub fn is_model_id(text: &str) -> bool {
    text.len() == ID_HEX_DIGITS && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why two ids differ, for messages.
pub fn mismatch(what: &str, found: &str, expected: &str) -> Error {
    Error::mismatch(what, format!("scored by model {found}, but the checkpoint is model {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(values: &[f32]) -> Vec<(String, Tensor)> {
        vec![
            ("decoder.0.w".to_string(), Tensor::from_slice(values)),
            ("bottleneck.0.fc1.weight".to_string(), Tensor::from_slice(&[1.0f32, 2.0]).reshape([1, 2])),
        ]
    }

    #[test]
    fn the_id_follows_the_weights_not_their_order() {
        let sha = "ab".repeat(32);
        let a = model_id(&tensors(&[0.5, 0.25]), &sha).unwrap();
        assert!(is_model_id(&a), "{a}");
        let mut reversed = tensors(&[0.5, 0.25]);
        reversed.reverse();
        assert_eq!(model_id(&reversed, &sha).unwrap(), a);
        // Any weight, the encoder, a shape or a name changes it.
        assert_ne!(model_id(&tensors(&[0.5, 0.250001]), &sha).unwrap(), a);
        assert_ne!(model_id(&tensors(&[0.5, 0.25]), &"cd".repeat(32)).unwrap(), a);
        let mut reshaped = tensors(&[0.5, 0.25]);
        reshaped[0].1 = reshaped[0].1.reshape([2, 1]);
        assert_ne!(model_id(&reshaped, &sha).unwrap(), a);
        let mut renamed = tensors(&[0.5, 0.25]);
        renamed[0].0 = "decoder.1.w".to_string();
        assert_ne!(model_id(&renamed, &sha).unwrap(), a);
        // The encoder sha256's case does not matter.
        assert_eq!(model_id(&tensors(&[0.5, 0.25]), &"AB".repeat(32)).unwrap(), a);
    }

    #[test]
    fn the_id_is_the_documented_digest() {
        // sha256("w\0Float\0" "1\0" <0.5f32 LE> "encoder\0" "00"), first 16 hex digits.
        let t = vec![("w".to_string(), Tensor::from_slice(&[0.5f32]))];
        let mut bytes = b"w\0Float\x001\0".to_vec();
        bytes.extend_from_slice(&0.5f32.to_le_bytes());
        bytes.extend_from_slice(b"encoder\x0000");
        let expected = crate::io::hash::hex(&Sha256::digest(&bytes));
        assert_eq!(model_id(&t, "00").unwrap(), expected[..16]);
    }
}
