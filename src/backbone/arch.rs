//! The shape of a DINOv2-style ViT encoder and the canonical tensor names
//! and shapes it implies.
//!
//! The canonical layout is Meta's DINOv2 state dict (the keys of
//! `dinov2_vit*14[_reg4]_pretrain.pth`), which is also the module nesting of
//! the official Dinomaly encoder:
//!
//! ```text
//! cls_token                (1, 1, D)
//! pos_embed                (1, 1 + G*G, D)   row 0 is the cls position
//! register_tokens          (1, R, D)         only when R > 0
//! patch_embed.proj.weight  (D, C, P, P)      and .bias (D)
//! blocks.{i}.norm1.{weight,bias}             (D)
//! blocks.{i}.attn.qkv.{weight (3D, D), bias (3D)}   (a zero bias when the source has none)
//! blocks.{i}.attn.proj.{weight (D, D), bias (D)}
//! blocks.{i}.ls1.gamma     (D)               when layer_scale
//! blocks.{i}.norm2.{weight,bias}             (D)
//! blocks.{i}.mlp.fc1.{weight (H, D), bias (H)}, mlp.fc2.{weight (D, H), bias (D)}     MLP
//! blocks.{i}.mlp.w12.{weight (2H, D), bias (2H)}, mlp.w3.{weight (D, H), bias (D)}    SwiGLU
//! blocks.{i}.ls2.gamma     (D)               when layer_scale
//! norm.{weight,bias}       (D)
//! ```
//!
//! Token order in the forward pass is `[cls, registers, patches]`;
//! `pos_embed` is added to `[cls, patches]` before the registers are
//! inserted, so registers carry no position. SwiGLU splits `w12`'s output in
//! two halves `x1, x2` and computes `w3(silu(x1) * x2)`.

use std::fmt;

pub use super::vit::Ffn;
use super::vit::VitConfig;

/// Everything about the encoder's architecture that the weights fix (plus
/// the number of heads, which they do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchInfo {
    /// Embedding width D.
    pub embed_dim: i64,
    /// Number of transformer blocks.
    pub depth: i64,
    /// Attention heads. Not stored in weight files: taken from the expected
    /// architecture or a Hugging Face config.json, else D / 64 (the head
    /// width of every DINOv2 and standard ViT size).
    pub num_heads: i64,
    /// Patch side P (the patch-embedding convolution's kernel and stride).
    pub patch_size: i64,
    /// Input channels C.
    pub in_chans: i64,
    /// Register tokens R (0 or 4 for DINOv2).
    pub num_registers: i64,
    /// Hidden width H of the feed-forward network (for SwiGLU, the width
    /// after gating: `w3`'s input).
    pub mlp_hidden: i64,
    pub ffn: Ffn,
    /// Blocks scale their two residual branches by `ls1.gamma`/`ls2.gamma`.
    pub layer_scale: bool,
    /// Side G of the square patch grid the stored `pos_embed` covers (37 for
    /// DINOv2, trained at 518 px with patch 14).
    pub pos_grid: i64,
}

impl ArchInfo {
    /// The usual short name: "ViT-B/14", "ViT-g/14", or "ViT/2" for a width
    /// without a name.
    pub fn name(&self) -> String {
        let size = match self.embed_dim {
            192 => "Ti",
            384 => "S",
            768 => "B",
            1024 => "L",
            1280 => "H",
            1536 => "g",
            _ => "",
        };
        if size.is_empty() {
            format!("ViT/{}", self.patch_size)
        } else {
            format!("ViT-{size}/{}", self.patch_size)
        }
    }

    /// The configuration of the encoder ([`crate::backbone::vit`]) that
    /// runs these weights. The canonical `pos_embed` always has its cls row.
    pub fn vit_config(&self) -> VitConfig {
        VitConfig {
            embed_dim: self.embed_dim,
            depth: self.depth as usize,
            num_heads: self.num_heads,
            patch_size: self.patch_size,
            num_registers: self.num_registers,
            ffn_hidden: self.mlp_hidden,
            ffn: self.ffn,
            layer_scale: self.layer_scale,
            pos_grid: (self.pos_grid, self.pos_grid),
            pos_has_cls: true,
        }
    }

    /// The canonical tensor names and shapes, in canonical order.
    pub fn canonical_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let (d, h) = (self.embed_dim, self.mlp_hidden);
        let mut out: Vec<(String, Vec<i64>)> = vec![
            ("cls_token".into(), vec![1, 1, d]),
            ("pos_embed".into(), vec![1, 1 + self.pos_grid * self.pos_grid, d]),
        ];
        if self.num_registers > 0 {
            out.push(("register_tokens".into(), vec![1, self.num_registers, d]));
        }
        out.push(("patch_embed.proj.weight".into(), vec![d, self.in_chans, self.patch_size, self.patch_size]));
        out.push(("patch_embed.proj.bias".into(), vec![d]));
        for i in 0..self.depth {
            let b = |k: &str| format!("blocks.{i}.{k}");
            out.push((b("norm1.weight"), vec![d]));
            out.push((b("norm1.bias"), vec![d]));
            out.push((b("attn.qkv.weight"), vec![3 * d, d]));
            out.push((b("attn.qkv.bias"), vec![3 * d]));
            out.push((b("attn.proj.weight"), vec![d, d]));
            out.push((b("attn.proj.bias"), vec![d]));
            if self.layer_scale {
                out.push((b("ls1.gamma"), vec![d]));
            }
            out.push((b("norm2.weight"), vec![d]));
            out.push((b("norm2.bias"), vec![d]));
            match self.ffn {
                Ffn::Mlp => {
                    out.push((b("mlp.fc1.weight"), vec![h, d]));
                    out.push((b("mlp.fc1.bias"), vec![h]));
                    out.push((b("mlp.fc2.weight"), vec![d, h]));
                    out.push((b("mlp.fc2.bias"), vec![d]));
                }
                Ffn::SwiGlu => {
                    out.push((b("mlp.w12.weight"), vec![2 * h, d]));
                    out.push((b("mlp.w12.bias"), vec![2 * h]));
                    out.push((b("mlp.w3.weight"), vec![d, h]));
                    out.push((b("mlp.w3.bias"), vec![d]));
                }
            }
            if self.layer_scale {
                out.push((b("ls2.gamma"), vec![d]));
            }
        }
        out.push(("norm.weight".into(), vec![d]));
        out.push(("norm.bias".into(), vec![d]));
        out
    }

    /// Why weights of architecture `self` cannot serve where `expected` is
    /// asked for, or `None` if they can. The head count and the stored grid
    /// are not compared (the first is not in the weights, the second is
    /// interpolated at run time).
    pub fn mismatch(&self, expected: &ArchInfo) -> Option<String> {
        let (f, e) = (self, expected);
        if f.embed_dim != e.embed_dim || f.patch_size != e.patch_size {
            return Some(format!(
                "this is a {} (embed {}), expected {} (embed {})",
                f.name(),
                f.embed_dim,
                e.name(),
                e.embed_dim
            ));
        }
        let this = f.name();
        let diff = |what: &str, a: String, b: String| Some(format!("this {this} has {what} {a}, expected {b}"));
        if f.depth != e.depth {
            return diff("depth", f.depth.to_string(), e.depth.to_string());
        }
        if f.num_registers != e.num_registers {
            return diff("register tokens:", f.num_registers.to_string(), e.num_registers.to_string());
        }
        if f.ffn != e.ffn {
            return diff("feed-forward", format!("{:?}", f.ffn), format!("{:?}", e.ffn));
        }
        if f.mlp_hidden != e.mlp_hidden {
            return diff("feed-forward width", f.mlp_hidden.to_string(), e.mlp_hidden.to_string());
        }
        if f.layer_scale != e.layer_scale {
            return diff("LayerScale", yes_no(f.layer_scale), yes_no(e.layer_scale));
        }
        if f.in_chans != e.in_chans {
            return diff("input channels", f.in_chans.to_string(), e.in_chans.to_string());
        }
        None
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

impl fmt::Display for ArchInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (embed {}, {} blocks, {} heads, {} registers, {} {}, grid {})",
            self.name(),
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.num_registers,
            match self.ffn {
                Ffn::Mlp => "MLP",
                Ffn::SwiGlu => "SwiGLU",
            },
            self.mlp_hidden,
            self.pos_grid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vit_b() -> ArchInfo {
        ArchInfo {
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            patch_size: 14,
            in_chans: 3,
            num_registers: 4,
            mlp_hidden: 3072,
            ffn: Ffn::Mlp,
            layer_scale: true,
            pos_grid: 37,
        }
    }

    #[test]
    fn canonical_shapes_of_vit_b_reg4() {
        let shapes = vit_b().canonical_shapes();
        // 3 embeddings + 2 patch + 14 per block + 2 final norm.
        assert_eq!(shapes.len(), 3 + 2 + 12 * 14 + 2);
        assert_eq!(shapes[1], ("pos_embed".to_string(), vec![1, 1370, 768]));
        assert!(shapes.contains(&("blocks.3.attn.qkv.weight".to_string(), vec![2304, 768])));
        assert!(shapes.contains(&("blocks.11.ls2.gamma".to_string(), vec![768])));
    }

    #[test]
    fn mismatch_messages() {
        let b = vit_b();
        let s = ArchInfo { embed_dim: 384, num_heads: 6, mlp_hidden: 1536, ..b };
        assert_eq!(b.mismatch(&s).unwrap(), "this is a ViT-B/14 (embed 768), expected ViT-S/14 (embed 384)");
        let no_reg = ArchInfo { num_registers: 0, ..b };
        assert_eq!(no_reg.mismatch(&b).unwrap(), "this ViT-B/14 has register tokens: 0, expected 4");
        assert_eq!(b.mismatch(&ArchInfo { num_heads: 1, pos_grid: 16, ..b }), None);
    }
}
