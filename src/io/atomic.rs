//! Writing outputs so that a killed run never leaves a half-written file that
//! looks complete: write to a temporary file in the destination folder, then
//! rename over the final name (atomic on POSIX file systems).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A file being written; becomes visible under its final name only on
/// [`AtomicFile::commit`]. Dropped without commit, the temporary is removed.
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dest`. Fails at once if its folder is missing or not
    /// writable, so long work is not wasted.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let dir = parent_dir(&dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dest, e))?;
        Ok(AtomicFile { temp, dest })
    }

    /// The file to write into.
    pub fn file(&mut self) -> &mut fs::File {
        self.temp.as_file_mut()
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flushes to disk and renames into place.
    pub fn commit(self) -> Result<()> {
        let dest = self.dest.clone();
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(&dest, e))?;
        self.temp
            .persist(&dest)
            .map_err(|e| Error::io(&dest, e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_bytes(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest.as_ref())?;
    f.write_all(bytes).map_err(|e| Error::io(dest.as_ref(), e))?;
    f.commit()
}

/// Checks before any work that `dest` can be created: its folder exists and
/// accepts a new file. Leaves nothing behind.
pub fn check_writable(dest: impl AsRef<Path>) -> Result<()> {
    let dest = dest.as_ref();
    let dir = parent_dir(dest);
    if !dir.is_dir() {
        return Err(Error::io(
            dest,
            io::Error::new(io::ErrorKind::NotFound, format!("folder {} does not exist", dir.display())),
        ));
    }
    tempfile::Builder::new()
        .prefix(".dinomaly-write-check.")
        .tempfile_in(&dir)
        .map(drop)
        .map_err(|e| Error::io(dest, io::Error::new(e.kind(), format!("cannot write in {}: {e}", dir.display()))))
}

/// Checks that `dir` exists (creating it if needed) and accepts new files.
pub fn check_writable_dir(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    check_writable(dir.join("x"))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
