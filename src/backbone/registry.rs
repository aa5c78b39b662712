//! The DINOv2 backbones known by name: where Meta publishes their weights,
//! their architecture, the encoder blocks Dinomaly reads features from, and
//! the SHA-256 of the published file where it is known.
//!
//! Hashes. Meta does not publish checksums for these files. The values
//! below are the SHA-256 that independent byte-identical mirrors of the
//! files on the Hugging Face Hub report in their Git LFS pointers (two or
//! more mirrors agreeing, sizes matching); they are pinned so that a
//! download is verified. Files without such a value are trusted on first
//! download: their hash is recorded next to them in the cache and checked
//! on every later use (see [`crate::backbone::download`]).

use crate::backbone::arch::{ArchInfo, Ffn};
use crate::{Error, Result};

/// Where Meta serves the DINOv2 weights.
pub const DEFAULT_BASE_URL: &str = "https://dl.fbaipublicfiles.com/dinov2";

/// The backbone of the paper's main results (ViT-B/14 with 4 registers).
pub const DEFAULT_BACKBONE: &str = "dinov2_vitb14_reg4";

/// A backbone known by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backbone {
    /// Canonical name, e.g. `dinov2_vitb14_reg4`.
    pub name: &'static str,
    /// Other accepted names: the official Dinomaly code's
    /// (`dinov2reg_vit_base_14`) and torch hub's (`dinov2_vitb14_reg`).
    pub aliases: &'static [&'static str],
    /// File name of the published weights (also the cache file name).
    pub file_name: &'static str,
    /// Path of the file below the base URL.
    pub url_path: &'static str,
    pub arch: ArchInfo,
    /// Encoder blocks (0-based) whose outputs are the Dinomaly features.
    pub target_layers: &'static [i64],
    /// SHA-256 of the published file, when known.
    pub sha256: Option<&'static str>,
    /// Size in bytes of the published file, when known.
    pub size: Option<u64>,
}

impl Backbone {
    /// The download URL below `base_url`.
    pub fn url(&self, base_url: &str) -> String {
        format!("{}/{}", base_url.trim_end_matches('/'), self.url_path)
    }

    /// The last block that has to run.
    pub fn last_layer(&self) -> i64 {
        self.target_layers.iter().copied().max().unwrap_or(0)
    }
}

const fn dinov2(embed_dim: i64, depth: i64, num_heads: i64, num_registers: i64, ffn: Ffn, mlp_hidden: i64) -> ArchInfo {
    ArchInfo {
        embed_dim,
        depth,
        num_heads,
        patch_size: 14,
        in_chans: 3,
        num_registers,
        mlp_hidden,
        ffn,
        layer_scale: true,
        // Trained at 518 px: 37 x 37 patches.
        pos_grid: 37,
    }
}

// MLP width 4D; ViT-g's SwiGLU keeps 2/3 of 4D rounded up to a multiple of
// 8: (int(6144 * 2 / 3) + 7) // 8 * 8 = 4096.
const S: (i64, i64, i64, Ffn, i64) = (384, 12, 6, Ffn::Mlp, 1536);
const B: (i64, i64, i64, Ffn, i64) = (768, 12, 12, Ffn::Mlp, 3072);
const L: (i64, i64, i64, Ffn, i64) = (1024, 24, 16, Ffn::Mlp, 4096);
const G: (i64, i64, i64, Ffn, i64) = (1536, 40, 24, Ffn::SwiGlu, 4096);

const fn arch(size: (i64, i64, i64, Ffn, i64), registers: i64) -> ArchInfo {
    dinov2(size.0, size.1, size.2, registers, size.3, size.4)
}

/// ViT-S and ViT-B: blocks 2..=9 of 12 (official Dinomaly).
const LAYERS_SB: &[i64] = &[2, 3, 4, 5, 6, 7, 8, 9];
/// ViT-L: every other block from 4 to 18 of 24 (official Dinomaly).
const LAYERS_L: &[i64] = &[4, 6, 8, 10, 12, 14, 16, 18];
/// ViT-g: the official code has no setting (it refuses ViT-g). These are
/// ViT-L's blocks at the same relative depths, round(i * 40 / 24): 8 middle
/// blocks from 1/6 to 3/4 of the depth, like the other sizes, so the two
/// fusion groups of 4 keep their roles. Not validated against the paper.
const LAYERS_G: &[i64] = &[7, 10, 13, 17, 20, 23, 27, 30];

static BACKBONES: [Backbone; 8] = [
    Backbone {
        name: "dinov2_vits14",
        aliases: &["dinov2_vit_small_14"],
        file_name: "dinov2_vits14_pretrain.pth",
        url_path: "dinov2_vits14/dinov2_vits14_pretrain.pth",
        arch: arch(S, 0),
        target_layers: LAYERS_SB,
        sha256: Some("b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9"),
        size: Some(88_283_115),
    },
    Backbone {
        name: "dinov2_vits14_reg4",
        aliases: &["dinov2reg_vit_small_14", "dinov2_vits14_reg"],
        file_name: "dinov2_vits14_reg4_pretrain.pth",
        url_path: "dinov2_vits14/dinov2_vits14_reg4_pretrain.pth",
        arch: arch(S, 4),
        target_layers: LAYERS_SB,
        sha256: None,
        size: None,
    },
    Backbone {
        name: "dinov2_vitb14",
        aliases: &["dinov2_vit_base_14"],
        file_name: "dinov2_vitb14_pretrain.pth",
        url_path: "dinov2_vitb14/dinov2_vitb14_pretrain.pth",
        arch: arch(B, 0),
        target_layers: LAYERS_SB,
        sha256: Some("0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73"),
        size: Some(346_378_731),
    },
    Backbone {
        name: "dinov2_vitb14_reg4",
        aliases: &["dinov2reg_vit_base_14", "dinov2_vitb14_reg"],
        file_name: "dinov2_vitb14_reg4_pretrain.pth",
        url_path: "dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth",
        arch: arch(B, 4),
        target_layers: LAYERS_SB,
        sha256: Some("73182a088cf94833c94b1666d1c99e02fe87e2007bff57b564fb6206e25dba71"),
        size: Some(346_393_545),
    },
    Backbone {
        name: "dinov2_vitl14",
        aliases: &["dinov2_vit_large_14"],
        file_name: "dinov2_vitl14_pretrain.pth",
        url_path: "dinov2_vitl14/dinov2_vitl14_pretrain.pth",
        arch: arch(L, 0),
        target_layers: LAYERS_L,
        sha256: Some("d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428"),
        size: Some(1_217_586_395),
    },
    Backbone {
        name: "dinov2_vitl14_reg4",
        aliases: &["dinov2reg_vit_large_14", "dinov2_vitl14_reg"],
        file_name: "dinov2_vitl14_reg4_pretrain.pth",
        url_path: "dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth",
        arch: arch(L, 4),
        target_layers: LAYERS_L,
        sha256: None,
        size: None,
    },
    Backbone {
        name: "dinov2_vitg14",
        aliases: &[],
        file_name: "dinov2_vitg14_pretrain.pth",
        url_path: "dinov2_vitg14/dinov2_vitg14_pretrain.pth",
        arch: arch(G, 0),
        target_layers: LAYERS_G,
        sha256: None,
        size: None,
    },
    Backbone {
        name: "dinov2_vitg14_reg4",
        aliases: &["dinov2_vitg14_reg"],
        file_name: "dinov2_vitg14_reg4_pretrain.pth",
        url_path: "dinov2_vitg14/dinov2_vitg14_reg4_pretrain.pth",
        arch: arch(G, 4),
        target_layers: LAYERS_G,
        sha256: None,
        size: None,
    },
];

/// All known backbones.
pub fn backbones() -> &'static [Backbone] {
    &BACKBONES
}

/// The backbone called `name` (or one of its aliases), case-insensitively.
pub fn find_backbone(name: &str) -> Result<&'static Backbone> {
    let n = name.trim().to_ascii_lowercase();
    BACKBONES.iter().find(|b| b.name == n || b.aliases.contains(&n.as_str())).ok_or_else(|| {
        let names: Vec<&str> = BACKBONES.iter().map(|b| b.name).collect();
        Error::config(format!("unknown backbone '{name}' (known: {})", names.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_urls() {
        let b = find_backbone("dinov2reg_vit_base_14").unwrap();
        assert_eq!(b.name, DEFAULT_BACKBONE);
        assert_eq!(
            b.url(DEFAULT_BASE_URL),
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth"
        );
        assert_eq!(b.url("http://mirror/x/"), "http://mirror/x/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth");
        assert_eq!(find_backbone("DINOv2_ViTL14_reg").unwrap().target_layers, LAYERS_L);
        let e = find_backbone("resnet50").unwrap_err().to_string();
        assert!(e.starts_with("unknown backbone 'resnet50' (known: dinov2_vits14, "), "{e}");
    }

    #[test]
    fn table_is_consistent() {
        for b in backbones() {
            let a = b.arch;
            assert_eq!(a.embed_dim, 64 * a.num_heads, "{}: head width 64", b.name);
            assert_eq!(b.file_name, b.url_path.rsplit('/').next().unwrap(), "{}", b.name);
            assert_eq!(b.file_name.contains("_reg4"), a.num_registers == 4, "{}", b.name);
            assert!(b.target_layers.len() == 8 && b.last_layer() < a.depth, "{}", b.name);
            assert!(b.target_layers.windows(2).all(|w| w[0] < w[1]), "{}", b.name);
            assert!(b.sha256.is_none_or(crate::io::hash::is_sha256), "{}", b.name);
        }
    }
}
