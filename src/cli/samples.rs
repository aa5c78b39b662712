//! Reading the input samples of a tool: JSON lines or paths from stdin or
//! `--input FILE` ('-' is stdin), or a dataset tree by layout.

use std::io::BufReader;

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
