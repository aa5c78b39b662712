//! Recognising which key layout a set of named encoder tensors is in, and
//! converting it to the canonical (Meta DINOv2) layout of
//! [`crate::backbone::arch`], inferring the architecture on the way.
//!
//! Layouts understood:
//! - Meta DINOv2 `.pth` (identity; also the chunked `blocks.<chunk>.<i>.`
//!   form of training checkpoints), possibly under a prefix (`encoder.` in
//!   official Dinomaly checkpoints);
//! - timm `vit_*_patch14[_reg4]_dinov2` and plain timm ViTs, possibly under a
//!   prefix (`encoder.feature_extractor.` in anomalib checkpoints):
//!   `reg_token` is `register_tokens`; the packed SwiGLU `mlp.fc1`/`mlp.fc2`
//!   of timm's ViT-g and the split `mlp.fc1_g`/`fc1_x`/`fc2` become
//!   `mlp.w12`/`mlp.w3`;
//! - Hugging Face `Dinov2Model` / `Dinov2WithRegistersModel` (`embeddings.*`,
//!   `encoder.layer.N.*`, `layernorm.*`; optionally under `dinov2.`), with
//!   the transformers 4 names (`attention.attention.{query,key,value}`,
//!   `mlp.weights_in/out`) that saved files use and the transformers 5
//!   in-memory names (`attention.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`).
//!
//! Positions. The canonical `pos_embed` has a row for the cls token. timm
//! stores DINOv2 "no_embed_class": the cls position is already added into
//! `cls_token` and `pos_embed` holds only the G*G patch rows. Adding a zero
//! row 0 gives the canonical form with identical results (the cls token then
//! gets `cls_token + 0`, which is exactly what timm computes), recorded as
//! [`Layout::cls_pos_folded`]. Plain timm ViTs with registers and
//! `no_embed_class=False` give the registers positions too; since register
//! positions do not depend on the image size (only patch rows are
//! interpolated), they are added into `register_tokens`
//! ([`Layout::reg_pos_folded`]), again exactly. So the encoder always adds
//! `pos_embed` to `[cls, patches]` and never positions the registers.
//!
//! A rows count of `pos_embed` that fits two readings (only possible for
//! tiny grids: G*G = 1 + R + G'*G') is read as no_embed_class, timm's choice
//! for every DINOv2 with registers.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::backbone::arch::{ArchInfo, Ffn};
use crate::{Error, Result};

/// Which family of key names the weights came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Meta's DINOv2 names (also timm's DINOv2 without registers, which
    /// uses the same names and positions).
    Meta,
    /// timm names that differ from Meta's.
    Timm,
    /// transformers `Dinov2Model` / `Dinov2WithRegistersModel`.
    HuggingFace,
}

/// How the source tensors were laid out, and what conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub kind: LayoutKind,
    /// Key prefix that was stripped (`encoder.`, `encoder.feature_extractor.`,
    /// `dinov2.`), empty if none.
    pub prefix: String,
    /// The source's cls token already included its position: the canonical
    /// `pos_embed` row 0 is zero.
    pub cls_pos_folded: bool,
    /// The source gave registers positions; they were added into
    /// `register_tokens`.
    pub reg_pos_folded: bool,
    /// The source's `attn.qkv` had no bias (some timm ViTs); the canonical
    /// one is zero, which computes the same.
    pub qkv_bias_zeroed: bool,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            LayoutKind::Meta => "Meta DINOv2",
            LayoutKind::Timm => "timm",
            LayoutKind::HuggingFace => "Hugging Face",
        };
        write!(f, "{kind} layout")?;
        if !self.prefix.is_empty() {
            write!(f, " under '{}'", self.prefix)?;
        }
        if self.cls_pos_folded {
            write!(f, ", cls position folded into cls_token")?;
        }
        if self.reg_pos_folded {
            write!(f, ", register positions folded into register_tokens")?;
        }
        if self.qkv_bias_zeroed {
            write!(f, ", zero qkv bias added")?;
        }
        Ok(())
    }
}

/// Canonical tensors with the architecture they imply.
pub struct Canonical {
    pub arch: ArchInfo,
    pub layout: Layout,
    /// In the order of [`ArchInfo::canonical_shapes`].
    pub tensors: Vec<(String, Tensor)>,
}

const META_PATCH: &str = "patch_embed.proj.weight";
const HF_PATCH: &str = "embeddings.patch_embeddings.projection.weight";

/// Converts `tensors` (any supported layout, any dtype) to the canonical
/// layout.
///
/// `prefix` selects the encoder inside a larger state dict; `None` finds it
/// from the patch-embedding key. With `expected`, the weights must have that
/// architecture (checked before the tensors, so a wrong size is reported as
/// such). The head count is not in the weights: it is `expected`'s, else
/// `config_heads` (a Hugging Face config.json), else D / 64. `path` only
/// names the file in errors.
pub fn to_canonical(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    prefix: Option<&str>,
    expected: Option<&ArchInfo>,
    config_heads: Option<i64>,
) -> Result<Canonical> {
    let prefix = match prefix {
        Some(p) if !p.is_empty() && !p.ends_with('.') => format!("{p}."),
        Some(p) => p.to_string(),
        None => detect_prefix(path, &tensors)?,
    };
    let mut src = Source::new(path, &prefix, tensors)?;
    let is_hf = src.has_hf_names;
    let mut conv = Converter { src: &mut src, out: Vec::new(), origins: HashMap::new(), kind: LayoutKind::Meta };
    let (cls_pos_folded, reg_pos_folded) = if is_hf { conv.hugging_face()? } else { conv.meta_or_timm()? };
    let qkv_bias_zeroed = conv.zero_qkv_bias()?;
    let Converter { out, origins, kind, .. } = conv;
    let leftovers = src.leftovers();
    if let Some(k) = leftovers.first() {
        return Err(Error::format(
            path,
            format!(
                "unexpected tensor '{prefix}{k}'{}: this ViT variant is not supported{}",
                src.shape_note(k),
                if leftovers.len() > 1 {
                    format!(" ({} more unused tensors)", leftovers.len() - 1)
                } else {
                    String::new()
                }
            ),
        ));
    }
    let layout = Layout {
        kind: if is_hf { LayoutKind::HuggingFace } else { kind },
        prefix,
        cls_pos_folded,
        reg_pos_folded,
        qkv_bias_zeroed,
    };
    let heads = expected.map(|e| e.num_heads).or(config_heads);
    let arch = infer_arch(path, &out, heads, &layout)?;
    if let Some(expected) = expected {
        if let Some(why) = arch.mismatch(expected) {
            return Err(Error::format(path, why));
        }
    }
    if arch.num_heads == 0 {
        return Err(Error::format(
            path,
            format!("embed dim {} is not a multiple of 64, so the number of heads must be given", arch.embed_dim),
        ));
    }
    let tensors = validate(path, out, &arch, &layout, &origins)?;
    Ok(Canonical { arch, layout, tensors })
}

/// Finds the encoder's key prefix from its patch-embedding weight.
fn detect_prefix(path: &Path, tensors: &[(String, Tensor)]) -> Result<String> {
    let mut found = BTreeSet::new();
    for (k, _) in tensors {
        for suffix in [META_PATCH, HF_PATCH] {
            if let Some(p) = k.strip_suffix(suffix) {
                if p.is_empty() || p.ends_with('.') {
                    found.insert(p.to_string());
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        0 => Err(Error::format(
            path,
            format!(
                "holds no ViT encoder: no tensor named '*{META_PATCH}' (Meta/timm) or '*{HF_PATCH}' \
                 (Hugging Face){}",
                match tensors.first() {
                    Some((k, _)) => format!("; the first tensor is '{k}'"),
                    None => "; the file holds no tensors".to_string(),
                }
            ),
        )),
        _ => Err(Error::format(
            path,
            format!(
                "holds several ViT encoders (prefixes {}); choose one by its prefix",
                found.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// The source tensors under the prefix, consumed as they are converted.
struct Source<'p> {
    path: &'p Path,
    prefix: String,
    /// Hugging Face key names (for messages about positions).
    has_hf_names: bool,
    order: Vec<String>,
    map: HashMap<String, Tensor>,
    shapes: HashMap<String, Vec<i64>>,
}

impl<'p> Source<'p> {
    fn new(path: &'p Path, prefix: &str, tensors: Vec<(String, Tensor)>) -> Result<Self> {
        let mut s = Source {
            path,
            prefix: prefix.to_string(),
            has_hf_names: false,
            order: Vec::new(),
            map: HashMap::new(),
            shapes: HashMap::new(),
        };
        for (k, t) in tensors {
            let Some(k) = k.strip_prefix(prefix) else {
                continue;
            };
            let k = flatten_block_chunks(k);
            s.shapes.insert(k.clone(), t.size());
            if s.map.insert(k.clone(), t).is_none() {
                s.order.push(k);
            }
        }
        if s.map.is_empty() {
            return Err(Error::format(path, format!("no tensor name starts with '{prefix}'")));
        }
        s.has_hf_names = s.has("embeddings.cls_token") || s.has(HF_PATCH);
        Ok(s)
    }

    fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    fn shape(&self, k: &str) -> Option<&[i64]> {
        self.shapes.get(k).map(|v| v.as_slice())
    }

    fn shape_note(&self, k: &str) -> String {
        self.shape(k).map(|s| format!(" {s:?}")).unwrap_or_default()
    }

    fn take(&mut self, k: &str) -> Option<Tensor> {
        self.map.remove(k)
    }

    fn drop_matching(&mut self, pred: impl Fn(&str) -> bool) {
        self.map.retain(|k, _| !pred(k));
    }

    fn leftovers(&self) -> Vec<String> {
        self.order.iter().filter(|k| self.map.contains_key(*k)).cloned().collect()
    }

    /// Block indices from keys `<head><i>.<rest>`.
    fn block_indices(&self, head: &str) -> BTreeSet<i64> {
        self.map.keys().filter_map(|k| k.strip_prefix(head)?.split('.').next()?.parse().ok()).collect()
    }
}

/// Meta's BlockChunk checkpoints (`block_chunks > 0`) store
/// `blocks.<chunk>.<i>.<rest>` with `i` already the global block index (each
/// chunk is padded with identities), so dropping the chunk gives the flat
/// name.
fn flatten_block_chunks(k: &str) -> String {
    let mut parts = k.splitn(4, '.');
    if let (Some("blocks"), Some(c), Some(i), Some(rest)) = (parts.next(), parts.next(), parts.next(), parts.next()) {
        if c.parse::<u32>().is_ok() && i.parse::<u32>().is_ok() {
            return format!("blocks.{i}.{rest}");
        }
    }
    k.to_string()
}

struct Converter<'s, 'p> {
    src: &'s mut Source<'p>,
    out: Vec<(String, Tensor)>,
    /// Canonical name -> the source tensor(s) it came from, for messages.
    origins: HashMap<String, String>,
    kind: LayoutKind,
}

impl Converter<'_, '_> {
    /// Adds canonical tensor `name`, made from the source tensors `from`.
    fn put(&mut self, name: String, t: Tensor, from: &[&str]) {
        let origin: Vec<String> = from.iter().map(|f| format!("{}{f}", self.src.prefix)).collect();
        self.origins.insert(name.clone(), origin.join(" + "));
        self.out.push((name, t));
    }

    /// Moves `from` to canonical `to` if present.
    fn rename(&mut self, from: &str, to: &str) {
        if let Some(t) = self.src.take(from) {
            self.put(to.to_string(), t, &[from]);
        }
    }

    /// Concatenates `parts` along dim 0 into `to` if they are all present;
    /// an incomplete set is an error naming what is missing.
    fn concat(&mut self, parts: &[String], to: &str) -> Result<bool> {
        let present: Vec<bool> = parts.iter().map(|p| self.src.has(p)).collect();
        if present.iter().all(|&p| !p) {
            return Ok(false);
        }
        if let Some(i) = present.iter().position(|&p| !p) {
            return Err(Error::MissingKey {
                path: self.src.path.to_path_buf(),
                key: parts[i].clone(),
                hint: format!(" (needed with '{}' to build '{to}')", parts[(i + 1) % parts.len()]),
            });
        }
        let first = self.src.shape(&parts[0]).unwrap_or(&[]).to_vec();
        for p in &parts[1..] {
            let s = self.src.shape(p).unwrap_or(&[]).to_vec();
            if s != first {
                return Err(Error::Shape {
                    path: self.src.path.to_path_buf(),
                    key: p.clone(),
                    expected: first,
                    found: s,
                });
            }
        }
        let ts: Vec<Tensor> = parts.iter().filter_map(|p| self.src.take(p)).collect();
        let t = Tensor::f_cat(&ts, 0)?;
        let from: Vec<&str> = parts.iter().map(|p| p.as_str()).collect();
        self.put(to.to_string(), t, &from);
        Ok(true)
    }

    fn meta_or_timm(&mut self) -> Result<(bool, bool)> {
        if self.src.has("norm_pre.weight") {
            return Err(Error::format(
                self.src.path,
                "has 'norm_pre' (a LayerNorm before the blocks, as in CLIP ViTs), which the DINOv2 encoder does not apply",
            ));
        }
        // Only for classification or pooling; features are block outputs.
        self.src.drop_matching(|k| {
            k == "mask_token" || k.starts_with("head.") || k.starts_with("fc_norm.") || k.starts_with("attn_pool.")
        });
        let blocks = self.src.block_indices("blocks.");
        for i in &blocks {
            let p = format!("blocks.{i}.");
            for k in ["q_norm", "k_norm"] {
                if self.src.has(&format!("{p}attn.{k}.weight")) {
                    return Err(Error::format(
                        self.src.path,
                        format!("has '{p}attn.{k}' (qk-norm), which the DINOv2 encoder does not apply"),
                    ));
                }
            }
            for k in [
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.qkv.bias",
                "attn.proj.weight",
                "attn.proj.bias",
                "ls1.gamma",
                "norm2.weight",
                "norm2.bias",
                "ls2.gamma",
                "mlp.w12.weight",
                "mlp.w12.bias",
                "mlp.w3.weight",
                "mlp.w3.bias",
            ] {
                self.rename(&format!("{p}{k}"), &format!("{p}{k}"));
            }
            self.mlp_meta_or_timm(&p)?;
        }
        for k in ["patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"] {
            self.rename(k, k);
        }
        let cls = self.src.take("cls_token");
        let pos = self.src.take("pos_embed");
        let (regs, from_timm) = match (self.src.take("register_tokens"), self.src.take("reg_token")) {
            (Some(r), None) => (Some(r), false),
            (None, Some(r)) => (Some(r), true),
            (None, None) => (None, false),
            (Some(_), Some(_)) => {
                return Err(Error::format(self.src.path, "has both 'register_tokens' and 'reg_token'"))
            }
        };
        if from_timm {
            self.kind = LayoutKind::Timm;
        }
        let (Some(cls), Some(pos)) = (cls, pos) else {
            let key = if self.out.iter().any(|(k, _)| k == "cls_token") { "pos_embed" } else { "cls_token" };
            return Err(missing(self.src.path, key, " (a ViT without learned positions is not supported)"));
        };
        self.positions(cls, pos, regs, from_timm)
    }

    /// The feed-forward tensors of one Meta/timm block.
    fn mlp_meta_or_timm(&mut self, p: &str) -> Result<()> {
        let k = |s: &str| format!("{p}{s}");
        if self.src.has(&k("mlp.fc1_g.weight")) {
            // timm SwiGLU: fc2(act(fc1_g(x)) * fc1_x(x)); the gate is w12's first half.
            self.kind = LayoutKind::Timm;
            self.concat(&[k("mlp.fc1_g.weight"), k("mlp.fc1_x.weight")], &k("mlp.w12.weight"))?;
            self.concat(&[k("mlp.fc1_g.bias"), k("mlp.fc1_x.bias")], &k("mlp.w12.bias"))?;
            self.rename(&k("mlp.fc2.weight"), &k("mlp.w3.weight"));
            self.rename(&k("mlp.fc2.bias"), &k("mlp.w3.bias"));
            return Ok(());
        }
        let fc1 = self.src.shape(&k("mlp.fc1.weight")).map(|s| s.to_vec());
        let fc2 = self.src.shape(&k("mlp.fc2.weight")).map(|s| s.to_vec());
        // timm's packed SwiGLU (ViT-g): fc1 is (2H, D) and fc2 (D, H), with
        // silu applied to the first half, exactly Meta's w12/w3.
        let packed = matches!((&fc1, &fc2), (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 && a[0] == 2 * b[1]);
        let (w1, w2) = if packed {
            self.kind = LayoutKind::Timm;
            ("w12", "w3")
        } else {
            ("fc1", "fc2")
        };
        for s in ["weight", "bias"] {
            self.rename(&k(&format!("mlp.fc1.{s}")), &k(&format!("mlp.{w1}.{s}")));
            self.rename(&k(&format!("mlp.fc2.{s}")), &k(&format!("mlp.{w2}.{s}")));
        }
        Ok(())
    }

    fn hugging_face(&mut self) -> Result<(bool, bool)> {
        self.src.drop_matching(|k| k == "embeddings.mask_token");
        for (from, to) in [
            ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
            ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
            ("layernorm.weight", "norm.weight"),
            ("layernorm.bias", "norm.bias"),
        ] {
            self.rename(from, to);
        }
        for i in self.src.block_indices("encoder.layer.") {
            let (p, q) = (format!("encoder.layer.{i}."), format!("blocks.{i}."));
            let s = |x: &str| format!("{p}{x}");
            for (from, to) in [
                ("norm1.weight", "norm1.weight"),
                ("norm1.bias", "norm1.bias"),
                ("norm2.weight", "norm2.weight"),
                ("norm2.bias", "norm2.bias"),
                ("layer_scale1.lambda1", "ls1.gamma"),
                ("layer_scale2.lambda1", "ls2.gamma"),
                ("attention.output.dense.weight", "attn.proj.weight"),
                ("attention.output.dense.bias", "attn.proj.bias"),
                ("attention.o_proj.weight", "attn.proj.weight"),
                ("attention.o_proj.bias", "attn.proj.bias"),
                ("mlp.fc1.weight", "mlp.fc1.weight"),
                ("mlp.fc1.bias", "mlp.fc1.bias"),
                ("mlp.fc2.weight", "mlp.fc2.weight"),
                ("mlp.fc2.bias", "mlp.fc2.bias"),
                // Dinov2SwiGLUFFN: weights_in's first half is the silu gate.
                ("mlp.weights_in.weight", "mlp.w12.weight"),
                ("mlp.weights_in.bias", "mlp.w12.bias"),
                ("mlp.weights_out.weight", "mlp.w3.weight"),
                ("mlp.weights_out.bias", "mlp.w3.bias"),
                ("mlp.down_proj.weight", "mlp.w3.weight"),
                ("mlp.down_proj.bias", "mlp.w3.bias"),
            ] {
                self.rename(&s(from), &format!("{q}{to}"));
            }
            for w in ["weight", "bias"] {
                let old: Vec<String> =
                    ["query", "key", "value"].iter().map(|n| s(&format!("attention.attention.{n}.{w}"))).collect();
                let new: Vec<String> =
                    ["q_proj", "k_proj", "v_proj"].iter().map(|n| s(&format!("attention.{n}.{w}"))).collect();
                if !self.concat(&old, &format!("{q}attn.qkv.{w}"))? {
                    self.concat(&new, &format!("{q}attn.qkv.{w}"))?;
                }
                self.concat(
                    &[s(&format!("mlp.gate_proj.{w}")), s(&format!("mlp.up_proj.{w}"))],
                    &format!("{q}mlp.w12.{w}"),
                )?;
            }
        }
        let cls = self.src.take("embeddings.cls_token");
        let pos = self.src.take("embeddings.position_embeddings");
        let regs = self.src.take("embeddings.register_tokens");
        let (Some(cls), Some(pos)) = (cls, pos) else {
            return Err(missing(self.src.path, "embeddings.position_embeddings", ""));
        };
        self.positions(cls, pos, regs, false)
    }

    /// When block 0 has no qkv bias, gives every block a zero one (so the
    /// encoder has a single form). A block that has one while block 0 has
    /// none is left for validation to reject.
    fn zero_qkv_bias(&mut self) -> Result<bool> {
        let has = |out: &[(String, Tensor)], k: &str| out.iter().any(|(n, _)| n == k);
        if has(&self.out, "blocks.0.attn.qkv.bias") {
            return Ok(false);
        }
        let weights: Vec<(String, i64, Kind)> = self
            .out
            .iter()
            .filter_map(|(k, t)| {
                let block = k.strip_suffix(".attn.qkv.weight")?;
                Some((block.to_string(), t.size().first().copied().unwrap_or(0), t.kind()))
            })
            .collect();
        let mut added = false;
        for (block, rows, kind) in weights {
            let key = format!("{block}.attn.qkv.bias");
            if !has(&self.out, &key) {
                let zero = Tensor::f_zeros([rows], (kind, tch::Device::Cpu))?;
                self.origins.insert(key.clone(), format!("zero bias for {}{block}.attn.qkv", self.src.prefix));
                self.out.push((key, zero));
                added = true;
            }
        }
        Ok(added)
    }

    /// Puts cls_token, pos_embed (with its cls row) and register_tokens.
    /// Returns (cls position folded, register positions folded).
    fn positions(&mut self, cls: Tensor, pos: Tensor, regs: Option<Tensor>, timm_regs: bool) -> Result<(bool, bool)> {
        let path = self.src.path;
        let ps = pos.size();
        if ps.len() != 3 || ps[0] != 1 {
            return Err(Error::format(path, format!("pos_embed has shape {ps:?}, expected (1, rows, D)")));
        }
        let rows = ps[1];
        let r = match &regs {
            Some(t) if t.dim() == 3 => t.size()[1],
            Some(t) => {
                return Err(Error::format(
                    path,
                    format!("register tokens have shape {:?}, expected (1, R, D)", t.size()),
                ))
            }
            None => 0,
        };
        let square = |n: i64| -> Option<i64> {
            let g = (n.max(0) as f64).sqrt().round() as i64;
            (g >= 1 && g * g == n).then_some(g)
        };
        let zero_row = || Tensor::f_zeros([1, 1, ps[2]], (pos.kind(), pos.device()));
        // Which rows the stored positions cover.
        let (pos, cls_folded, regs, reg_folded) = if timm_regs {
            if square(rows).is_some() {
                (Tensor::f_cat(&[zero_row()?, pos], 1)?, true, regs, false)
            } else if square(rows - 1 - r).is_some() {
                let reg_pos = pos.f_narrow(1, 1, r)?;
                let regs = match regs {
                    Some(t) => Some(t.f_add(&reg_pos)?),
                    None => None,
                };
                let cls_pos = pos.f_narrow(1, 0, 1)?;
                let patches = pos.f_narrow(1, 1 + r, rows - 1 - r)?;
                (Tensor::f_cat(&[cls_pos, patches], 1)?, false, regs, true)
            } else {
                return Err(bad_rows(path, rows, r));
            }
        } else if square(rows - 1).is_some() {
            (pos, false, regs, false)
        } else if square(rows).is_some() && r == 0 {
            (Tensor::f_cat(&[zero_row()?, pos], 1)?, true, regs, false)
        } else {
            return Err(bad_rows(path, rows, r));
        };
        if cls_folded || reg_folded {
            self.kind = LayoutKind::Timm;
        }
        let names = if self.kind == LayoutKind::HuggingFace || self.src.has_hf_names {
            ["embeddings.cls_token", "embeddings.position_embeddings", "embeddings.register_tokens"]
        } else {
            ["cls_token", "pos_embed", if timm_regs { "reg_token" } else { "register_tokens" }]
        };
        self.put("cls_token".into(), cls, &[names[0]]);
        self.put("pos_embed".into(), pos, &[names[1]]);
        if let Some(t) = regs {
            self.put("register_tokens".into(), t, &[names[2]]);
        }
        Ok((cls_folded, reg_folded))
    }
}

fn bad_rows(path: &Path, rows: i64, regs: i64) -> Error {
    Error::format(
        path,
        format!(
            "pos_embed has {rows} rows, which is neither G*G nor 1 + G*G{} for a square grid",
            if regs > 0 { format!(" nor 1 + {regs} + G*G") } else { String::new() }
        ),
    )
}

fn missing(path: &Path, key: &str, hint: &str) -> Error {
    Error::MissingKey { path: path.to_path_buf(), key: key.to_string(), hint: hint.to_string() }
}

/// Reads the architecture off the canonical tensors.
fn infer_arch(path: &Path, out: &[(String, Tensor)], num_heads: Option<i64>, layout: &Layout) -> Result<ArchInfo> {
    let shape = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, t)| t.size());
    let need = |k: &str| shape(k).ok_or_else(|| missing(path, k, &format!(" (weights in the {layout})")));
    let cls = need("cls_token")?;
    if cls.len() != 3 || cls[0] != 1 || cls[1] != 1 {
        return Err(Error::format(path, format!("cls_token has shape {cls:?}, expected (1, 1, D)")));
    }
    let d = cls[2];
    let patch = need("patch_embed.proj.weight")?;
    if patch.len() != 4 || patch[2] != patch[3] {
        return Err(Error::format(
            path,
            format!("patch_embed.proj.weight has shape {patch:?}, expected (D, C, P, P) of a square convolution"),
        ));
    }
    let pos = need("pos_embed")?;
    let grid = ((pos[1] - 1) as f64).sqrt().round() as i64;
    let depth = out
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("blocks.")?.split('.').next()?.parse::<i64>().ok())
        .max()
        .map_or(0, |m| m + 1);
    if depth == 0 {
        return Err(missing(
            path,
            "blocks.0.norm1.weight",
            &format!(" (no transformer blocks; weights in the {layout})"),
        ));
    }
    let (ffn, mlp_hidden) = match (shape("blocks.0.mlp.w12.weight"), shape("blocks.0.mlp.fc1.weight")) {
        (Some(w12), _) => (Ffn::SwiGlu, w12[0] / 2),
        (None, Some(fc1)) => (Ffn::Mlp, fc1[0]),
        (None, None) => return Err(missing(path, "blocks.0.mlp.fc1.weight", &format!(" (weights in the {layout})"))),
    };
    // 0 = unknown; the caller reports it after the architecture check (a
    // head count that does not divide D belongs to another width).
    let num_heads = match num_heads {
        Some(h) if h > 0 && d % h == 0 => h,
        _ if d % 64 == 0 => d / 64,
        _ => 0,
    };
    Ok(ArchInfo {
        embed_dim: d,
        depth,
        num_heads,
        patch_size: patch[2],
        in_chans: patch[1],
        num_registers: shape("register_tokens").map_or(0, |s| s[1]),
        mlp_hidden,
        ffn,
        layer_scale: shape("blocks.0.ls1.gamma").is_some(),
        pos_grid: grid,
    })
}

/// Checks every tensor against the architecture and puts them in canonical
/// order. Shape errors name the tensor as it is called in the file.
fn validate(
    path: &Path,
    out: Vec<(String, Tensor)>,
    arch: &ArchInfo,
    layout: &Layout,
    origins: &HashMap<String, String>,
) -> Result<Vec<(String, Tensor)>> {
    let origin = |k: &str| origins.get(k).cloned().unwrap_or_else(|| k.to_string());
    let mut by_name: HashMap<String, Tensor> = out.into_iter().collect();
    let mut ordered = Vec::with_capacity(by_name.len());
    for (key, expected) in arch.canonical_shapes() {
        let Some(t) = by_name.remove(&key) else {
            return Err(missing(path, &key, &format!(" (weights in the {layout}, {})", arch.name())));
        };
        let found = t.size();
        if found != expected {
            return Err(Error::Shape { path: path.to_path_buf(), key: origin(&key), expected, found });
        }
        if !matches!(t.kind(), Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double) {
            return Err(Error::format(
                path,
                format!("tensor '{}' has dtype {:?}, expected floating point", origin(&key), t.kind()),
            ));
        }
        ordered.push((key, t));
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(Error::format(
            path,
            format!("unexpected tensor '{}': block 0 of this {} has no such tensor", origin(extra), arch.name()),
        ));
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_chunks_are_flattened() {
        assert_eq!(flatten_block_chunks("blocks.1.7.norm1.weight"), "blocks.7.norm1.weight");
        assert_eq!(flatten_block_chunks("blocks.7.norm1.weight"), "blocks.7.norm1.weight");
        assert_eq!(flatten_block_chunks("blocks.7.attn.qkv.weight"), "blocks.7.attn.qkv.weight");
        assert_eq!(flatten_block_chunks("pos_embed"), "pos_embed");
    }
}
