//! The training log (`dinomaly-train --log`): one JSON line per iteration
//! (`it`, 0-based) and one per validation (`validation`, the iterations done
//! when it ran), written as training goes, so a person can follow it, a
//! FIFO or device can carry it, and a killed run keeps what it logged.
//!
//! A log is not an output that is renamed into place: a regular file is
//! written under its own name from the start, one whole line per write.
//! A resumed run continues the log of the run it resumes: the lines up to
//! the resume point are kept, those the killed run wrote after its last save
//! (recomputed now, as is the last line a kill may have cut) are dropped.
//!
//! A log that cannot be written (a FIFO whose reader went away, a full
//! disk) does not stop training: the first failure is reported once, logging
//! stops, and [`TrainLog::failure`] tells the command, which still writes
//! its checkpoints and then exits with an error naming the log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A log being written.
pub struct TrainLog {
    path: PathBuf,
    /// None once a write failed.
    file: Option<File>,
    regular: bool,
    failure: Option<LogFailure>,
}

/// Why and where logging stopped.
#[derive(Debug, Clone)]
pub struct LogFailure {
    /// The error, as text (a broken pipe must not read as a quiet exit).
    pub error: String,
    /// What was being logged (`iteration 12`, `validation at 100`).
    pub at: String,
}

/// Where a resumed log stands after [`TrainLog::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continued {
    /// A new log (not resumed, or not a regular file).
    Fresh,
    /// The resumed run's log, with `kept` of its iteration lines (those
    /// before the resume point) and `dropped` lines after it.
    Kept { kept: u64, dropped: usize },
    /// No log of the earlier run was there; this one starts at the resume point.
    Missing,
}

impl TrainLog {
    /// Checks before any work that `path` can be written: for a regular
    /// file (or a new one) that its folder accepts new files. FIFOs and
    /// devices are opened when training starts.
    pub fn check(path: &Path) -> Result<()> {
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() && !m.is_dir() => Ok(()),
            Ok(m) if m.is_dir() => Err(Error::io(path, std::io::Error::other("is a folder"))),
            _ => crate::io::atomic::check_writable(path),
        }
    }

    /// Opens the log. A regular file is created or emptied, except for a
    /// run resumed after `resume_at` iterations: then it keeps its iteration
    /// lines before `resume_at` and its validation lines up to it. A FIFO
    /// or device is opened for writing (which waits for a FIFO's reader).
    pub fn open(path: &Path, resume_at: Option<u64>) -> Result<(Self, Continued)> {
        let regular = std::fs::metadata(path).map_or(true, |m| m.is_file());
        let (file, continued) = match (regular, resume_at) {
            (true, Some(at)) => continue_log(path, at)?,
            (true, None) => (File::create(path).map_err(|e| Error::io(path, e))?, Continued::Fresh),
            (false, _) => {
                (OpenOptions::new().write(true).open(path).map_err(|e| Error::io(path, e))?, Continued::Fresh)
            }
        };
        let log = TrainLog { path: path.to_path_buf(), file: Some(file), regular, failure: None };
        Ok((log, continued))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line (`at` says what it is, for a failure message). The
    /// first failure stops logging and returns a warning to show; later
    /// calls do nothing.
    pub fn write(&mut self, line: &serde_json::Value, at: impl FnOnce() -> String) -> Option<String> {
        let file = self.file.as_mut()?;
        let mut text = line.to_string();
        text.push('\n');
        match file.write_all(text.as_bytes()) {
            Ok(()) => None,
            Err(e) => Some(self.fail(e, at())),
        }
    }

    fn fail(&mut self, e: std::io::Error, at: String) -> String {
        self.file = None;
        let failure = LogFailure { error: e.to_string(), at };
        let warning = format!(
            "cannot write the log {} at {} ({}): logging stopped, training goes on",
            self.path.display(),
            failure.at,
            failure.error
        );
        self.failure = Some(failure);
        warning
    }

    /// Flushes a regular file to disk; a failure is recorded as for a write.
    pub fn finish(&mut self) -> Option<String> {
        let file = self.file.as_mut()?;
        if self.regular {
            if let Err(e) = file.sync_all() {
                return Some(self.fail(e, "the end".into()));
            }
        }
        None
    }

    /// The failure that stopped logging, if any.
    pub fn failure(&self) -> Option<&LogFailure> {
        self.failure.as_ref()
    }
}

/// Opens the regular file `path` of a run resumed after `at` iterations,
/// cut after its last line that belongs before the resume point.
fn continue_log(path: &Path, at: u64) -> Result<(File, Continued)> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((File::create(path).map_err(|e| Error::io(path, e))?, Continued::Missing));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    let (keep, kept, dropped) = resume_point(path, &bytes, at)?;
    file.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
    Ok((file, Continued::Kept { kept, dropped }))
}

/// Where the log `bytes` is cut for a run resumed after `at` iterations:
/// (bytes kept, iteration lines kept, lines dropped). Every complete line
/// must be one of this tool's; the last one, without its newline, is a line
/// a kill cut short and is dropped.
fn resume_point(path: &Path, bytes: &[u8], at: u64) -> Result<(usize, u64, usize)> {
    let mut offset = 0;
    let (mut keep, mut kept, mut dropped) = (0, 0, 0);
    let mut beyond = false;
    for (n, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        offset += line.len();
        if !line.ends_with(b"\n") {
            dropped += 1;
            break;
        }
        let value: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        let position = value.as_ref().and_then(|v| {
            v["it"]
                .as_u64()
                .map(|it| it < at)
                .or_else(|| v["validation"].as_u64().map(|done| done <= at))
                .map(|before| (before, v["it"].is_u64()))
        });
        let Some((before, iteration)) = position else {
            return Err(Error::format(
                path,
                format!("line {} is not a dinomaly-train log line; the log of a resumed run is continued, so it is left as it is", n + 1),
            ));
        };
        // Lines are in order: after the first line past the resume point,
        // all are.
        beyond |= !before;
        if beyond {
            dropped += 1;
        } else {
            keep = offset;
            kept += u64::from(iteration);
        }
    }
    Ok((keep, kept, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(its: std::ops::Range<u64>) -> String {
        its.map(|it| format!("{{\"it\":{it},\"loss\":0.5}}\n")).collect()
    }

    #[test]
    fn a_resumed_log_keeps_the_lines_before_the_resume_point() {
        let p = Path::new("log.jsonl");
        let mut text = lines(0..4);
        text.push_str("{\"validation\":4,\"i_auroc\":0.5}\n");
        let upto_4 = text.len();
        text.push_str(&lines(4..6));
        text.push_str("{\"it\":6,\"lo");
        assert_eq!(resume_point(p, text.as_bytes(), 4).unwrap(), (upto_4, 4, 3));
        // Resumed earlier: the validation at 4 goes too.
        assert_eq!(resume_point(p, text.as_bytes(), 2).unwrap().1, 2);
        assert_eq!(resume_point(p, b"", 4).unwrap(), (0, 0, 0));
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused() {
        let p = Path::new("notes.txt");
        let err = resume_point(p, b"dear diary\n", 4).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("line 1"), "{err}");
        let err = resume_point(p, b"{\"it\":0}\n{\"other\":1}\n", 4).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
