//! Layer groups (official `models/uad.py` `ViTill.fuse_feature`, paper §3.4; docs/sources.md): lists of layer outputs are averaged within
//! groups (`torch.stack(list, 1).mean(1)`), then the 1 + R prefix tokens
//! (cls, registers) are dropped and the patch tokens laid out as an image
//! `(B, N, D) → (B, D, H, W)` (permute, then reshape; patch index h·W + w).
//!
//! Presets: loose `[[0,1,2,3],[4,5,6,7]]` (Dinomaly's default), strict (one
//! group per layer) and single (one group of all layers).

use std::fmt;
use std::str::FromStr;

use tch::Tensor;

use crate::{Error, Result};

/// The grouping of the target layers compared by the loss and the maps
/// (`dinomaly-train --groups`; the doc lines are its help).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupPreset {
    /// Two groups, first and second half: [[0,1,2,3],[4,5,6,7]] (the loose constraint).
    Loose,
    /// One group per layer: eight singleton groups (layer to layer).
    Strict,
    /// All layers in one group.
    Single,
}

impl GroupPreset {
    /// The groups for `n` layers (or decoder blocks).
    pub fn groups(self, n: usize) -> Result<Vec<Vec<usize>>> {
        if n == 0 {
            return Err(Error::config("layer groups need at least one layer"));
        }
        Ok(match self {
            GroupPreset::Loose => {
                if n % 2 != 0 {
                    return Err(Error::config(format!(
                        "loose groups split the layers in two halves; {n} layers is odd"
                    )));
                }
                vec![(0..n / 2).collect(), (n / 2..n).collect()]
            }
            GroupPreset::Strict => (0..n).map(|i| vec![i]).collect(),
            GroupPreset::Single => vec![(0..n).collect()],
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupPreset::Loose => "loose",
            GroupPreset::Strict => "strict",
            GroupPreset::Single => "single",
        }
    }
}

impl fmt::Display for GroupPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GroupPreset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "loose" => Ok(GroupPreset::Loose),
            "strict" => Ok(GroupPreset::Strict),
            "single" => Ok(GroupPreset::Single),
            _ => Err(Error::config(format!("unknown layer grouping '{s}', expected loose, strict or single"))),
        }
    }
}

/// Checks that every index of `groups` is below `n` and no group is empty.
pub fn check_groups(groups: &[Vec<usize>], n: usize) -> Result<()> {
    if groups.is_empty() {
        return Err(Error::config("no layer groups given"));
    }
    for (g, idxs) in groups.iter().enumerate() {
        if idxs.is_empty() {
            return Err(Error::config(format!("layer group {g} is empty")));
        }
        if let Some(bad) = idxs.iter().find(|&&i| i >= n) {
            return Err(Error::config(format!("layer group {g} names layer {bad}, but there are only {n}")));
        }
    }
    Ok(())
}

/// Whether `groups` use every index in `0..n` exactly once with equal
/// sizes, so that the mean of the group means is the mean of all layers.
pub fn is_equal_partition(groups: &[Vec<usize>], n: usize) -> bool {
    let Some(size) = groups.first().map(Vec::len) else {
        return false;
    };
    let mut seen = vec![false; n];
    for idxs in groups {
        if idxs.len() != size {
            return false;
        }
        for &i in idxs {
            if i >= n || seen[i] {
                return false;
            }
            seen[i] = true;
        }
    }
    seen.iter().all(|&s| s)
}

/// Mean of the listed tensors (all the same shape), as the references'
/// `fuse_feature`: stack on a new dim 1, mean over it.
pub fn fuse(list: &[Tensor], idxs: &[usize]) -> Result<Tensor> {
    let picked = idxs
        .iter()
        .map(|&i| list.get(i).ok_or_else(|| Error::config(format!("layer {i} requested, only {}", list.len()))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::f_stack(&picked, 1)?.f_mean_dim(1, false, None)?)
}

/// One fused tensor per group.
pub fn fuse_groups(list: &[Tensor], groups: &[Vec<usize>]) -> Result<Vec<Tensor>> {
    groups.iter().map(|idxs| fuse(list, idxs)).collect()
}

/// Drops the `prefix` leading tokens of `(B, N, D)` and lays the rest out
/// as `(B, D, H, W)` (contiguous). `N` must be `prefix + H·W`.
pub fn to_spatial(tokens: &Tensor, prefix: i64, grid: (i64, i64)) -> Result<Tensor> {
    let (b, n, d) = tokens.size3()?;
    let (h, w) = grid;
    if n != prefix + h * w {
        return Err(Error::mismatch(
            "token sequence",
            format!("{n} tokens, expected {prefix} prefix + {h}x{w} patches"),
        ));
    }
    Ok(tokens.f_narrow(1, prefix, h * w)?.f_permute([0, 2, 1])?.f_reshape([b, d, h, w])?.f_contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn presets() {
        let loose = GroupPreset::Loose.groups(8).unwrap();
        assert_eq!(loose, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(GroupPreset::Strict.groups(8).unwrap().len(), 8);
        assert_eq!(GroupPreset::Single.groups(8).unwrap(), vec![(0..8).collect::<Vec<_>>()]);
        assert!(GroupPreset::Loose.groups(7).is_err());
        assert_eq!("strict".parse::<GroupPreset>().unwrap(), GroupPreset::Strict);
        assert!("tight".parse::<GroupPreset>().is_err());
    }

    #[test]
    fn partitions() {
        for p in [GroupPreset::Loose, GroupPreset::Strict, GroupPreset::Single] {
            assert!(is_equal_partition(&p.groups(8).unwrap(), 8));
        }
        assert!(!is_equal_partition(&[vec![0, 1, 2], vec![3, 4, 5, 6, 7]], 8));
        assert!(!is_equal_partition(&[vec![0, 1, 2, 3], vec![3, 4, 5, 6]], 8));
        assert!(!is_equal_partition(&[vec![0, 1, 2, 3]], 8));
        assert!(check_groups(&[vec![0, 9]], 8).is_err());
        assert!(check_groups(&[vec![]], 8).is_err());
    }

    #[test]
    fn spatial_layout_is_row_major_over_patches() {
        // One channel whose value is the token index.
        let t = Tensor::arange(1 + 2 + 6, (Kind::Float, Device::Cpu)).view([1, 9, 1]);
        let s = to_spatial(&t, 3, (2, 3)).unwrap();
        assert_eq!(s.size(), [1, 1, 2, 3]);
        // Patch (h, w) is token 3 + h*3 + w.
        assert_eq!(s.double_value(&[0, 0, 1, 0]), 6.0);
        assert_eq!(s.double_value(&[0, 0, 0, 2]), 5.0);
        assert!(to_spatial(&t, 3, (3, 3)).is_err());
    }
}
