//! Writing a folder tree so that it appears complete or not at all: files
//! go to `<dest>.partial`, and a stamp naming the settings is written last,
//! before the rename. A later run with the same settings reuses the tree.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The stamp file inside a finished tree (hidden: the dataset listings
/// skip names starting with a dot).
const STAMP: &str = ".complete";

/// Whether `dest` is a finished tree made with `settings`.
pub fn is_complete(dest: &Path, settings: &str) -> bool {
    fs::read_to_string(dest.join(STAMP)).is_ok_and(|s| s == settings)
}

/// A tree being written.
pub struct Staged {
    partial: PathBuf,
    dest: PathBuf,
}

impl Staged {
    /// Starts a tree that will replace `dest`, removing the leftovers of an
    /// interrupted run.
    pub fn new(dest: &Path) -> anyhow::Result<Self> {
        let mut name = dest.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        if partial.exists() {
            fs::remove_dir_all(&partial).with_context(|| format!("cannot remove {}", partial.display()))?;
        }
        fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(Staged { partial, dest: dest.to_path_buf() })
    }

    /// Writes `bytes` at `rel` inside the tree, creating folders.
    pub fn write(&self, rel: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.partial.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Stamps the tree with `settings` and moves it to its final name,
    /// replacing an older tree there.
    pub fn commit(self, settings: &str) -> anyhow::Result<PathBuf> {
        self.write(Path::new(STAMP), settings.as_bytes())?;
        if self.dest.exists() {
            fs::remove_dir_all(&self.dest).with_context(|| format!("cannot remove the old {}", self.dest.display()))?;
        }
        fs::rename(&self.partial, &self.dest)
            .with_context(|| format!("cannot rename {} to {}", self.partial.display(), self.dest.display()))?;
        Ok(self.dest)
    }
}

/// PNG bytes of an image.
pub fn png(img: image::DynamicImage) -> anyhow::Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).context("cannot encode a PNG")?;
    Ok(out.into_inner())
}
