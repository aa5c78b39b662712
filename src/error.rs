//! The library's error type.
//!
//! Every message is lowercase, names the thing that failed (a file, a
//! checkpoint key, a JSON line number) and says what was expected, so that the
//! command layer can print it on one line as `dinomaly-<tool>: <message>`.
//! `anyhow` is used only in `cmd/` and `bin/`.

use std::path::PathBuf;

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while touching a path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An image that cannot be decoded.
    #[error("{path}: not a readable image: {reason}")]
    Image { path: PathBuf, reason: String },

    /// A JSON line that does not parse or lacks a required field.
    #[error("{source_name}:{line}: {reason}")]
    Record { source_name: String, line: usize, reason: String },

    /// A weights, checkpoint or feature file whose contents are not what
    /// they should be (bad format, truncated, wrong tensor).
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },

    /// A tensor in a file with the wrong shape.
    #[error("{path}: tensor '{key}' has shape {found:?}, expected {expected:?}")]
    Shape { path: PathBuf, key: String, expected: Vec<i64>, found: Vec<i64> },

    /// A tensor the model needs that the file does not contain.
    #[error("{path}: missing tensor '{key}'{hint}")]
    MissingKey { path: PathBuf, key: String, hint: String },

    /// Two artefacts that must agree (a checkpoint and a feature store, say)
    /// do not.
    #[error("{what}: {reason}")]
    Mismatch { what: String, reason: String },

    /// A setting or combination of settings that cannot work.
    #[error("{0}")]
    Config(String),

    /// Weights that could not be found or fetched.
    #[error("{0}")]
    Weights(String),

    /// A numeric problem that must not reach the outputs (NaN, Inf).
    #[error("{0}")]
    NonFinite(String),

    /// An error raised inside libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A file whose contents are not in the expected format.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format { path: path.into(), reason: reason.into() }
    }

    /// A bad setting.
    pub fn config(reason: impl Into<String>) -> Self {
        Error::Config(reason.into())
    }

    /// Two artefacts that disagree.
    pub fn mismatch(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Mismatch { what: what.into(), reason: reason.into() }
    }
}
