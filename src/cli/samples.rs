//! Reading the input samples of a tool: JSON lines or paths from stdin or
//! `--input FILE` ('-' is stdin), or a dataset tree by layout; whole, or,
//! for a live input (a pipe, a FIFO, a terminal), as the lines arrive.

use std::io::BufReader;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use anyhow::Context;

use super::args::{SampleArgs, SampleSource};
use crate::data::record::{read_all, Sample};

/// All samples named by the flags, in input order.
pub fn read(args: &SampleArgs) -> anyhow::Result<Vec<Sample>> {
    read_source(&args.source, &args.classes)
}

/// All samples of `args`, in input order; `classes` (empty: all) selects
/// the classes of a --dataset tree.
pub fn read_source(args: &SampleSource, classes: &[String]) -> anyhow::Result<Vec<Sample>> {
    if let Some(root) = &args.dataset {
        super::stdio::refuse_dash(&[("--dataset", Some(root), "a dataset is a folder")])?;
        return Ok(crate::data::dataset::list(root, args.layout, args.split, classes)?);
    }
    match args.input.as_deref() {
        None => read_stdin(),
        Some(p) if p.as_os_str() == "-" => read_stdin(),
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            Ok(read_all(BufReader::new(file), &path.display().to_string())?)
        }
    }
}

fn read_stdin() -> anyhow::Result<Vec<Sample>> {
    let stdin = std::io::stdin();
    Ok(read_all(stdin.lock(), "stdin")?)
}

/// Whether the samples of `args` can still be arriving while the tool runs:
/// stdin or `--input` that is a pipe, a FIFO, a socket or a terminal. A
/// regular file (also as stdin, `< list.jsonl`) is all there and is read
/// whole, and so is a --dataset tree.
pub fn arrives_over_time(args: &SampleSource) -> bool {
    if args.dataset.is_some() {
        return false;
    }
    match args.input.as_deref() {
        None => !stdin_is_regular_file(),
        Some(p) if p.as_os_str() == "-" => !stdin_is_regular_file(),
        // A missing file is left to the whole read, which names it.
        Some(path) => std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_file()),
    }
}

/// The samples of stdin or `--input` (see [`arrives_over_time`]), each
/// sent as soon as its line is complete, and the input's name.
pub fn read_live(args: &SampleSource) -> (Receiver<crate::Result<Sample>>, String) {
    match args.input.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            let path: PathBuf = path.to_path_buf();
            let name = path.display().to_string();
            let open = move || {
                // Opening a FIFO waits for its writer: on the reader thread.
                let file = std::fs::File::open(&path).map_err(|e| crate::Error::io(&path, e))?;
                Ok(BufReader::new(file))
            };
            (crate::data::stream::read_in_background(open, name.clone()), name)
        }
        _ => {
            let open = || Ok(std::io::stdin().lock());
            (crate::data::stream::read_in_background(open, "stdin".to_string()), "stdin".to_string())
        }
    }
}

/// Whether stdin is a regular file (`tool < file`), not a pipe or terminal.
#[cfg(unix)]
fn stdin_is_regular_file() -> bool {
    use std::os::fd::AsFd;
    // A duplicate of fd 0, closed again when the File is dropped.
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd).metadata().is_ok_and(|m| m.file_type().is_file())
}

#[cfg(not(unix))]
fn stdin_is_regular_file() -> bool {
    false
}
