//! Finding the weights file of a known backbone: an explicit path, else the
//! cache, else a download into the cache, with SHA-256 checks.
//!
//! Cache folder: `$DINOMALY_CACHE`, else `$XDG_CACHE_HOME/dinomaly`, else
//! `~/.cache/dinomaly`. The base URL is Meta's unless `$DINOMALY_WEIGHTS_URL`
//! names a mirror (same relative paths). With `DINOMALY_OFFLINE=1` nothing is
//! downloaded.
//!
//! Integrity. A backbone whose published hash is known
//! ([`Backbone::sha256`]) is verified against it on download and on every
//! use of the cached file. Otherwise the first download is trusted and its
//! hash recorded in `<file>.sha256` (the `sha256sum` format) next to it;
//! every later use checks the file against that record. The hash is always
//! returned so the caller can show it, and a hash the user gives
//! (`--weights-sha256`) is checked in every case.
//!
//! A download streams into a temporary file in the cache folder while it is
//! hashed, and is renamed into place only once verified: an interrupted or
//! rejected download leaves nothing under the final name.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::backbone::registry::{Backbone, DEFAULT_BASE_URL};
use crate::io::atomic;
use crate::io::hash::{hex, is_sha256, sha256_file};
use crate::{Error, Result};

/// Where a weights file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The path the user gave.
    Explicit,
    /// Already in the cache folder.
    Cache,
    /// Downloaded now.
    Downloaded,
}

/// What the file's hash was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The published hash of the backbone's file.
    Published,
    /// The hash recorded when the file was first downloaded or used.
    Recorded,
    /// Nothing to compare with: the hash has just been recorded (trust on
    /// first use).
    FirstUse,
    /// Only the hash the user gave.
    UserGiven,
    /// An explicit path with no hash to compare with.
    Unchecked,
}

/// A weights file ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: PathBuf,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    pub source: Source,
    pub verification: Verification,
}

impl Resolved {
    /// One line for the user, e.g. "dinov2_vitb14_reg4_pretrain.pth
    /// (downloaded), sha256 7318...: matches the published hash".
    pub fn describe(&self) -> String {
        let source = match self.source {
            Source::Explicit => "given",
            Source::Cache => "cached",
            Source::Downloaded => "downloaded",
        };
        let check = match self.verification {
            Verification::Published => "matches the published hash",
            Verification::Recorded => "matches the hash recorded at first use",
            Verification::FirstUse => {
                "recorded now (no published hash to compare with; check it against a trusted source)"
            }
            Verification::UserGiven => "matches the hash given",
            Verification::Unchecked => "not checked",
        };
        format!("{} ({source}), sha256 {}: {check}", self.path.display(), self.sha256)
    }
}

/// Progress of a download: bytes so far and the total when the server
/// announced it.
pub type Progress<'a> = dyn FnMut(u64, Option<u64>) + 'a;

/// How weights are found and fetched.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub cache_dir: PathBuf,
    pub base_url: String,
    /// Whether a missing file may be downloaded.
    pub allow_download: bool,
    /// Short, so that an offline machine fails fast.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a download.
    pub read_timeout: Duration,
}

/// The cache folder from the environment values (`DINOMALY_CACHE`,
/// `XDG_CACHE_HOME`, `HOME`); empty values count as unset.
pub fn cache_dir_from(
    dinomaly_cache: Option<&str>,
    xdg_cache_home: Option<&str>,
    home: Option<&str>,
) -> Result<PathBuf> {
    let set = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(d) = set(dinomaly_cache) {
        return Ok(d);
    }
    if let Some(d) = set(xdg_cache_home) {
        return Ok(d.join("dinomaly"));
    }
    if let Some(h) = set(home) {
        return Ok(h.join(".cache").join("dinomaly"));
    }
    Err(Error::config("no cache folder: set DINOMALY_CACHE (or HOME) or pass --weights PATH"))
}

impl Resolver {
    /// Settings from the environment (see the module documentation).
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok();
        let cache_dir = cache_dir_from(
            var(crate::env::CACHE).as_deref(),
            var("XDG_CACHE_HOME").as_deref(),
            var("HOME").as_deref(),
        )?;
        let base_url =
            var(crate::env::WEIGHTS_URL).filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let offline = crate::env::switch_on(crate::env::OFFLINE);
        Ok(Resolver {
            cache_dir,
            base_url,
            allow_download: !offline,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
        })
    }

    /// The cached path of `backbone`'s file.
    pub fn cached_path(&self, backbone: &Backbone) -> PathBuf {
        self.cache_dir.join(backbone.file_name)
    }

    /// Finds the weights of `backbone`: `explicit` if given, else the cached
    /// file, else a download. `user_sha256` (hex) must match when given.
    pub fn resolve(
        &self,
        backbone: &Backbone,
        explicit: Option<&Path>,
        user_sha256: Option<&str>,
        progress: &mut Progress<'_>,
    ) -> Result<Resolved> {
        let user = match user_sha256 {
            Some(s) if is_sha256(s.trim()) => Some(s.trim().to_ascii_lowercase()),
            Some(s) => return Err(Error::config(format!("'{s}' is not a sha256 (64 hex digits)"))),
            None => None,
        };
        let check_user = |path: &Path, sha: &str| match &user {
            Some(u) if u != sha => {
                Err(Error::Weights(format!("{}: sha256 is {sha}, but {u} was asked for", path.display())))
            }
            _ => Ok(()),
        };
        if let Some(path) = explicit {
            let sha = sha256_file(path)?;
            check_user(path, &sha)?;
            let verification = if backbone.sha256 == Some(sha.as_str()) {
                Verification::Published
            } else if user.is_some() {
                Verification::UserGiven
            } else {
                Verification::Unchecked
            };
            return Ok(Resolved { path: path.to_path_buf(), sha256: sha, source: Source::Explicit, verification });
        }
        let cached = self.cached_path(backbone);
        if cached.is_file() {
            let sha = sha256_file(&cached)?;
            check_user(&cached, &sha)?;
            let verification = self.verify_cached(backbone, &cached, &sha)?;
            return Ok(Resolved { path: cached, sha256: sha, source: Source::Cache, verification });
        }
        if !self.allow_download {
            return Err(self.missing(backbone, "downloads are off (DINOMALY_OFFLINE)"));
        }
        let sha = self.download(backbone, user.as_deref(), progress)?;
        let verification = if backbone.sha256.is_some() {
            Verification::Published
        } else if user.is_some() {
            Verification::UserGiven
        } else {
            Verification::FirstUse
        };
        Ok(Resolved { path: cached, sha256: sha, source: Source::Downloaded, verification })
    }

    /// Checks a cached file against the published hash, else against its
    /// record, else records it.
    fn verify_cached(&self, backbone: &Backbone, path: &Path, sha: &str) -> Result<Verification> {
        if let Some(published) = backbone.sha256 {
            if published != sha {
                return Err(Error::Weights(format!(
                    "{}: sha256 is {sha}, but the published {} has {published}; \
                     delete the file to download it again, or pass it with --weights to use it anyway",
                    path.display(),
                    backbone.file_name
                )));
            }
            return Ok(Verification::Published);
        }
        let record = record_path(path);
        match fs::read_to_string(&record) {
            Ok(text) => {
                let recorded = text.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
                if recorded != sha {
                    return Err(Error::Weights(format!(
                        "{}: sha256 is {sha}, but {} recorded {recorded} when it was first used; \
                         the file changed (delete both to download it again)",
                        path.display(),
                        record.display()
                    )));
                }
                Ok(Verification::Recorded)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_record(&record, sha, backbone.file_name)?;
                Ok(Verification::FirstUse)
            }
            Err(e) => Err(Error::io(&record, e)),
        }
    }

    /// The error for weights that cannot be found or fetched.
    fn missing(&self, backbone: &Backbone, why: &str) -> Error {
        Error::Weights(format!(
            "no weights for {}: put {} (from {}) in {} or pass --weights PATH ({why})",
            backbone.name,
            backbone.file_name,
            backbone.url(&self.base_url),
            self.cache_dir.display()
        ))
    }

    /// Downloads into the cache, verified; returns the hash.
    fn download(&self, backbone: &Backbone, user: Option<&str>, progress: &mut Progress<'_>) -> Result<String> {
        let url = backbone.url(&self.base_url);
        fs::create_dir_all(&self.cache_dir)
            .map_err(|e| self.missing(backbone, &format!("cannot create the cache folder: {e}")))?;
        let agent =
            ureq::AgentBuilder::new().timeout_connect(self.connect_timeout).timeout_read(self.read_timeout).build();
        let response = agent.get(&url).call().map_err(|e| {
            let why = match e {
                ureq::Error::Status(code, _) => format!("download failed: HTTP {code}"),
                ureq::Error::Transport(t) => format!("download failed: {t}"),
            };
            self.missing(backbone, &why)
        })?;
        let total = response.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
        let mut temp = atomic::output_temp_in(&self.cache_dir, &format!(".{}.", backbone.file_name), ".partial")
            .map_err(|e| Error::io(&self.cache_dir, e))?;
        let mut reader = response.into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| self.missing(backbone, &format!("download interrupted: {e}; nothing was kept")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            temp.write_all(&buf[..n]).map_err(|e| Error::io(temp.path(), e))?;
            done += n as u64;
            progress(done, total);
        }
        if let Some(total) = total {
            if done != total {
                return Err(
                    self.missing(backbone, &format!("download truncated: {done} of {total} bytes; nothing was kept"))
                );
            }
        }
        let sha = hex(&hasher.finalize());
        for (expected, what) in [(backbone.sha256, "the published hash"), (user, "the hash asked for")] {
            if let Some(expected) = expected {
                if expected != sha {
                    return Err(Error::Weights(format!(
                        "{url}: the download has sha256 {sha}, but {what} is {expected}; nothing was kept"
                    )));
                }
            }
        }
        temp.as_file().sync_all().map_err(|e| Error::io(temp.path(), e))?;
        let dest = self.cached_path(backbone);
        // The record first: a crash between the two leaves a record without
        // a file, which the next download simply replaces.
        write_record(&record_path(&dest), &sha, backbone.file_name)?;
        temp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
        Ok(sha)
    }
}

/// `<file>.sha256` next to `path`.
pub fn record_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".sha256");
    path.with_file_name(name)
}

fn write_record(record: &Path, sha: &str, file_name: &str) -> Result<()> {
    // The format of `sha256sum`, so `sha256sum -c` can check it.
    atomic::write_bytes(record, format!("{sha}  {file_name}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_precedence() {
        let d = |a, b, c| cache_dir_from(a, b, c).unwrap();
        assert_eq!(d(Some("/c"), Some("/x"), Some("/h")), PathBuf::from("/c"));
        assert_eq!(d(Some(""), Some("/x"), Some("/h")), PathBuf::from("/x/dinomaly"));
        assert_eq!(d(None, None, Some("/h")), PathBuf::from("/h/.cache/dinomaly"));
        assert!(cache_dir_from(None, Some(""), None).is_err());
    }

    #[test]
    fn record_sits_next_to_the_file() {
        assert_eq!(record_path(Path::new("/c/w.pth")), PathBuf::from("/c/w.pth.sha256"));
    }
}
