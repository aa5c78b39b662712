//! Writing outputs so that a killed run never leaves a half-written file that
//! looks complete: write to a temporary file in the destination folder, then
//! rename over the final name (atomic on POSIX file systems).
//!
//! The temporary is created with the mode a plain `File::create` gives
//! (0666 less the umask), not the 0600 `tempfile` defaults to: the rename
//! keeps the temporary's mode, and outputs are often read by other users
//! (a web server showing maps, a colleague reading a model). The kernel
//! applies the umask when the file is created, so it is never read or
//! changed here (`umask()` is process-wide and racy with threads).

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
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = output_temp_in(&dir, &format!(".{name}."), ".partial").map_err(|e| Error::io(&dest, e))?;
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
        self.temp.as_file().sync_all().map_err(|e| Error::io(&dest, e))?;
        self.temp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
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

/// A hidden temporary file in `dir` that is meant to be renamed into an
/// output: created with mode 0666 less the umask, as `File::create` would
/// create the output itself.
pub fn output_temp_in(dir: &Path, prefix: &str, suffix: &str) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn outputs_get_the_mode_file_create_gives() {
        let dir = tempfile::tempdir().unwrap();
        // Whatever this process's umask is: the mode a plain File::create
        // gives beside it.
        let plain = dir.path().join("plain");
        fs::File::create(&plain).unwrap();
        let expected = mode(&plain);
        let written = dir.path().join("written");
        write_bytes(&written, b"x").unwrap();
        assert_eq!(mode(&written), expected, "write_bytes: {:o} vs File::create {:o}", mode(&written), expected);
        let mut streamed = AtomicFile::create(dir.path().join("streamed")).unwrap();
        streamed.write_all(b"y").unwrap();
        streamed.commit().unwrap();
        assert_eq!(mode(&dir.path().join("streamed")), expected);
    }
}
