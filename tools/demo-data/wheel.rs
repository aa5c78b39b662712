//! Files read out of a downloaded wheel, which is a zip archive.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// An open wheel.
pub struct Wheel {
    path: PathBuf,
    archive: zip::ZipArchive<File>,
}

impl Wheel {
    /// Opens the wheel at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let archive =
            zip::ZipArchive::new(file).with_context(|| format!("{} is not a wheel (zip archive)", path.display()))?;
        Ok(Wheel { path: path.to_path_buf(), archive })
    }

    /// The bytes of the member `name` (a path inside the archive).
    pub fn read(&mut self, name: &str) -> anyhow::Result<Vec<u8>> {
        let mut member =
            self.archive.by_name(name).with_context(|| format!("{}: no member {name}", self.path.display()))?;
        let mut bytes = Vec::with_capacity(member.size() as usize);
        // Reading to the end makes zip check the member's CRC.
        member.read_to_end(&mut bytes).with_context(|| format!("{}: cannot read {name}", self.path.display()))?;
        Ok(bytes)
    }
}
