//! `--on-error`: what extract, train and score do with an input that cannot
//! be read or scored. One policy so that the three tools stop with the same
//! message, skip with the same note and count what they left out the same
//! way; what "skip" means for each tool's output (left out of a store or a
//! training set, an `"error"` line in the scores) is said in its `--help`.

use std::fmt::Display;
use std::path::Path;

use crate::cli::args::OnError;

/// How a skipped input is made known: a note on stderr (extract and train
/// leave it out of their output, so stderr is the only trace), or not at all
/// because the output itself carries it (score's `"error"` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// `TOOL: skipped PATH: REASON` on stderr, always (the data changed, so
    /// even `--quiet` shows it).
    Noted,
    /// Nothing on stderr: the tool writes the reason into its output.
    InOutput,
}

/// The `--on-error` decision for each failed input, and how many were skipped.
#[derive(Debug)]
pub struct OnErrorPolicy {
    mode: OnError,
    tool: &'static str,
    shown: Skipped,
    /// What stopping leaves unwritten ("no checkpoint written to m.st"),
    /// added to the error; none where the output so far stays (score).
    unwritten: Option<String>,
    skipped: usize,
}

impl OnErrorPolicy {
    /// The policy of `mode` for `tool`.
    pub fn new(mode: OnError, tool: &'static str, shown: Skipped) -> Self {
        OnErrorPolicy { mode, tool, shown, unwritten: None, skipped: 0 }
    }

    /// Says in the stopping error what is not written (the tool writes its
    /// output only when every input went through).
    pub fn unwritten(mut self, what: impl Into<String>) -> Self {
        self.unwritten = Some(what.into());
        self
    }

    /// Decides for the input `path` that failed with `err`: with `stop`, the
    /// error that ends the run; with `skip`, counts it, notes it (above the
    /// progress bar `bar`, if any) and returns `Ok`.
    pub fn failed(
        &mut self,
        path: &Path,
        err: &dyn Display,
        bar: Option<&indicatif::ProgressBar>,
    ) -> anyhow::Result<()> {
        let what = naming(path, err);
        match self.mode {
            OnError::Stop => {
                let unwritten = self.unwritten.as_ref().map(|u| format!("; {u}")).unwrap_or_default();
                anyhow::bail!("{what}; stopped (pass --on-error skip to go on){unwritten}")
            }
            OnError::Skip => {
                self.skipped += 1;
                if self.shown == Skipped::Noted {
                    let note = || eprintln!("{}: skipped {what}", self.tool);
                    match bar {
                        Some(bar) => bar.suspend(note),
                        None => note(),
                    }
                }
                Ok(())
            }
        }
    }

    /// How many inputs were skipped so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// `err` naming `path` once: most errors about a file already begin with its
/// name (`crate::Error::Image`, `Io`); those that do not get it in front.
fn naming(path: &Path, err: &dyn Display) -> String {
    let text = err.to_string();
    let name = path.display().to_string();
    if text.starts_with(&name) {
        text
    } else {
        format!("{name}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_named_once() {
        let path = Path::new("a/b.png");
        assert_eq!(naming(path, &"a/b.png: not a readable image: empty"), "a/b.png: not a readable image: empty");
        assert_eq!(naming(path, &"the model produced NaN"), "a/b.png: the model produced NaN");
    }

    #[test]
    fn stop_ends_the_run_and_skip_counts() {
        let path = Path::new("x.png");
        let mut stop = OnErrorPolicy::new(OnError::Stop, "t", Skipped::InOutput).unwritten("no store written to s");
        let err = stop.failed(path, &"bad", None).unwrap_err().to_string();
        assert_eq!(err, "x.png: bad; stopped (pass --on-error skip to go on); no store written to s");
        assert_eq!(stop.skipped(), 0);
        let mut skip = OnErrorPolicy::new(OnError::Skip, "t", Skipped::InOutput);
        skip.failed(path, &"bad", None).unwrap();
        skip.failed(path, &"bad", None).unwrap();
        assert_eq!(skip.skipped(), 2);
    }
}
