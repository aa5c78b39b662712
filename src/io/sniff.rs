//! Telling weight-file formats apart by their first bytes, never by their
//! extension (`.pth`, `.pt`, `.bin` and `.ckpt` are all used for the same
//! zip format, and safetensors files are renamed freely).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// What a file holds, judged from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A zip archive: `torch.save` since PyTorch 1.6.
    TorchZip,
    /// The `torch.save` format of PyTorch < 1.6 (a bare pickle stream with
    /// torch's magic number, or the even older tar layout).
    TorchLegacy,
    /// A pickle that `torch.save` did not write (no magic number, no zip).
    Pickle,
    /// A safetensors file (8-byte header length, then a JSON object).
    Safetensors,
    /// Anything else.
    Unknown,
}

/// torch.save's legacy magic number 0x1950a86a20f9469cfc6c, pickled with
/// protocol 2 as LONG1 at the very start of the file.
const LEGACY_MAGIC: [u8; 14] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Classifies a file from its first (up to 512) bytes and its length.
pub fn classify(head: &[u8], file_len: u64) -> FileKind {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        FileKind::TorchZip
    } else if head.starts_with(&LEGACY_MAGIC) || (head.len() >= 262 && &head[257..262] == b"ustar") {
        FileKind::TorchLegacy
    } else if head.first() == Some(&0x80) && head.get(1).is_some_and(|&p| p <= 5) {
        FileKind::Pickle
    } else if head.len() >= 9 && head[8] == b'{' && {
        let n = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
        n >= 2 && n.saturating_add(8) <= file_len
    } {
        FileKind::Safetensors
    } else {
        FileKind::Unknown
    }
}

/// Reads the start of `path` and classifies it.
pub fn file_kind(path: &Path) -> Result<FileKind> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::with_capacity(512);
    f.by_ref().take(512).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    Ok(classify(&head, len))
}

/// The message for a file that is a `torch.save` checkpoint in the legacy
/// format, which this reader does not interpret.
pub fn legacy_message() -> &'static str {
    "is a checkpoint in the legacy (pre-1.6) torch.save format, which is not read; \
     re-save it with a current torch: torch.save(torch.load(old), new)"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_kind() {
        assert_eq!(classify(b"PK\x03\x04rest", 100), FileKind::TorchZip);
        let mut legacy = LEGACY_MAGIC.to_vec();
        legacy.push(b'.');
        assert_eq!(classify(&legacy, 100), FileKind::TorchLegacy);
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(classify(&tar, 10_000), FileKind::TorchLegacy);
        assert_eq!(classify(b"\x80\x02}q\x00.", 6), FileKind::Pickle);
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend(b"{}");
        assert_eq!(classify(&st, 10), FileKind::Safetensors);
        // A header length beyond the file is not safetensors.
        let mut st = 200u64.to_le_bytes().to_vec();
        st.extend(b"{}");
        assert_eq!(classify(&st, 10), FileKind::Unknown);
        assert_eq!(classify(b"hello", 5), FileKind::Unknown);
        assert_eq!(classify(b"", 0), FileKind::Unknown);
    }
}
