//! `-` on the command line. It is stdin for the samples (`--input -`, the
//! default) and for a feature store read by `dinomaly-train -` and
//! `dinomaly-score --features -`, and stdout for the store that
//! `dinomaly-extract -o -` writes, so that `dinomaly-extract ... -o - |
//! dinomaly-train - -o model.safetensors` works. Every other path flag
//! refuses `-` with one line instead of reading or writing a file named `-`.
//! No run can have two readers of stdin: a store from stdin excludes
//! samples from stdin (clap's conflicts), and `--val` takes a file.
//!
//! A store read from stdin is first copied to an unnamed temporary file in
//! `$TMPDIR` (stores are memory-mapped, which needs a file); the system
//! removes that file however the process ends. A store written to stdout is
//! written in one piece once all its rows are in.

use std::io::{self, IsTerminal};
use std::path::Path;

use anyhow::{bail, Context};

use crate::io::features::FeatureStore;

/// Where `-` works, for the messages that refuse it elsewhere.
const WHERE_DASH_WORKS: &str =
    "`-` is stdin/stdout only for samples (--input -) and feature stores (dinomaly-extract -o -, dinomaly-train -, dinomaly-score --features -)";

/// True when `path` is the single dash that names stdin or stdout.
pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Refuses `-` for each `(flag, value, what the flag needs)` given `-`,
/// e.g. `("--weights", Some("-"), "encoder weights are read from a file")`.
pub fn refuse_dash(flags: &[(&str, Option<&Path>, &str)]) -> anyhow::Result<()> {
    for (flag, value, need) in flags {
        if value.is_some_and(is_dash) {
            bail!("{flag} -: {need}; {WHERE_DASH_WORKS}");
        }
    }
    Ok(())
}

/// Opens the feature store `path`; `-` is the store piped in on stdin.
pub fn open_store(path: &Path) -> anyhow::Result<FeatureStore> {
    if !is_dash(path) {
        return Ok(FeatureStore::open(path)?);
    }
    let file = spool_stdin("a feature store")?;
    Ok(FeatureStore::from_file(&file, Path::new("stdin"))?)
}

/// Copies stdin to an unnamed temporary file in `$TMPDIR` and returns it.
fn spool_stdin(what: &str) -> anyhow::Result<std::fs::File> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        bail!("-: stdin is a terminal: pipe {what} in (e.g. dinomaly-extract ... -o - | ...) or give a file");
    }
    let tmp = std::env::temp_dir();
    let mut file = tempfile::tempfile_in(&tmp).with_context(|| {
        format!("stdin: cannot create a temporary file in {} ($TMPDIR) to hold {what}", tmp.display())
    })?;
    io::copy(&mut stdin.lock(), &mut file)
        .with_context(|| format!("stdin: cannot copy {what} to a temporary file in {} ($TMPDIR)", tmp.display()))?;
    Ok(file)
}

/// Refuses to write binary `what` to stdout when stdout is a terminal.
pub fn binary_stdout(flag: &str, what: &str) -> anyhow::Result<()> {
    if io::stdout().is_terminal() {
        bail!("{flag} -: stdout is a terminal: redirect {what} to a file or a pipe");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_refused_with_the_flag_and_where_it_works() {
        let dash = Path::new("-");
        let file = Path::new("w.pth");
        refuse_dash(&[("--weights", Some(file), "x"), ("--log", None, "y")]).unwrap();
        // `./-` is a file named `-`, allowed.
        refuse_dash(&[("--weights", Some(Path::new("./-")), "x")]).unwrap();
        let e = refuse_dash(&[("--weights", Some(file), "x"), ("--log", Some(dash), "the log is written to a file")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--log -: the log is written to a file; "), "{e}");
        assert!(e.contains("dinomaly-train -") && e.contains("--input -"), "{e}");
    }
}
