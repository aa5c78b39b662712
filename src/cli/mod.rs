//! What the four binaries share: the run wrapper that turns errors into exit
//! codes, stdout handling, progress bars, common flags, the documentation of
//! the environment variables and the generation of man pages and shell
//! completions.

pub mod args;
pub mod environment;
pub mod exit;
pub mod generate;
pub mod on_error;
pub mod output;
pub use crate::progress;
pub mod ranges;
pub mod samples;
pub mod stdio;
