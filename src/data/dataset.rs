//! Dataset trees read by layout into sample records: MVTec-AD, VisA,
//! Real-IAD, a generic folder tree.

use std::path::Path;

use crate::data::record::Sample;
use crate::Result;

/// A dataset tree layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `<root>/<class>/{train,test}/<defect>/*`, masks in `ground_truth/<defect>/*_mask.png`.
    Mvtec,
    /// VisA: the 1cls split csv over the raw download, or the reorganised tree.
    Visa,
    /// Real-IAD: `realiad_jsons` lists over `realiad_1024` images.
    Realiad,
    /// `<root>/<class>/good/*` normal, `<root>/<class>/<defect>/*` anomalous.
    Folder,
}

/// Which split to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Normal training images.
    Train,
    /// Test images, normal and anomalous, with masks.
    Test,
}

/// Lists the samples of `split` under `root`, sorted as the official code
/// sorts them, restricted to `classes` when not empty.
pub fn list(root: &Path, layout: Layout, split: Split, classes: &[String]) -> Result<Vec<Sample>> {
    let _ = (root, layout, split, classes);
    todo!("dataset layouts")
}
