//! How the tools and the library report to a person: progress bars on
//! stderr, hidden when stderr is not a terminal, with `--quiet`, or when
//! `TERM=dumb`, so logs and pipelines stay clean; and one-line notes. In the
//! library (not in `cli`) because the library's long steps (a download, the
//! weights' check) report through it; `cli::progress` is this module.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress should be drawn at all.
pub fn visible(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// A bar over `len` items labelled `what`; hidden when not [`visible`].
pub fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if !visible(quiet) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}

/// Prints a note on stderr unless quiet. Used for one-off messages (which
/// device, which weights) that a person running the tool wants to see.
pub fn note(quiet: bool, tool: &str, text: &str) {
    if !quiet {
        eprintln!("{tool}: {text}");
    }
}
