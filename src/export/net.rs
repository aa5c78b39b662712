//! The scoring network as ONNX nodes: the frozen encoder up to the last
//! target layer, the bottleneck and decoder, and the post-processing into
//! the anomaly map and the image score. Each composite piece says which of
//! our functions it mirrors (and through it the official or anomalib code).
//!
//! Operators are those of the default domain at opset 17 that onnxruntime,
//! OpenVINO, TensorRT 8.6+ and tract all implement: MatMul (no Einsum, no
//! Gemm on 3-d inputs), LayerNormalization (new in 17), Erf for the exact
//! GELU (the Gelu operator only arrived in opset 20), Elu, Softmax, Conv,
//! Pad, TopK, Reduce*, Reshape/Transpose/Gather/Slice/Concat/Expand.
//! Bilinear resizes are MatMuls by constant interpolation matrices (see
//! [`interpolation_matrix`]), not Resize.
//! Reshapes copy the batch axis (0) so the batch stays dynamic.

use std::collections::HashMap;

use tch::Tensor;

use super::graph::{Attr, Compute, Graph};
use super::onnx::data_type;
use crate::backbone::pos_embed::{self, PosInterp};
use crate::backbone::vit::{Ffn, VitConfig};
use crate::model::{AttentionKind, DinomalyConfig};
use crate::score::anomaly_map::{top_count, PostProcess, COSINE_EPS};
use crate::score::smoothing::{gaussian_kernel, Padding};
use crate::{Error, Result};

/// LayerNorm epsilon of DINOv2 and timm ViTs (`backbone::vit`).
const ENCODER_LN_EPS: f32 = 1e-6;

/// Everything the network is built from.
pub struct NetSpec<'a> {
    /// The encoder's architecture.
    pub vit: &'a VitConfig,
    /// Encoder weights by canonical name (`cls_token`, `blocks.{i}.attn.qkv.weight`, ...).
    pub encoder: HashMap<String, Tensor>,
    /// Target layers (strictly increasing block indices).
    pub layers: &'a [usize],
    /// How the positional embedding is fitted to the crop's grid.
    pub pos_interp: PosInterp,
    /// The trainable half's settings.
    pub model: &'a DinomalyConfig,
    /// Its weights by checkpoint key (`bottleneck.0.fc1.weight`, `decoder.{i}...`).
    pub trainable: HashMap<String, Tensor>,
    /// The post-processing (crop, map size, blur, top ratio, raw map).
    pub post: PostProcess,
}

fn get<'t>(map: &'t HashMap<String, Tensor>, key: &str, what: &str) -> Result<&'t Tensor> {
    map.get(key).ok_or_else(|| Error::config(format!("the {what} has no tensor '{key}'")))
}

/// `x W^T + b` as MatMul and Add (`nn::Linear`, `model::layers::Linear`).
fn linear(g: &mut Graph, x: &str, w: &Tensor, b: Option<&Tensor>, hint: &str) -> Result<String> {
    let wt = g.weight(&format!("{hint}.weight_t"), &w.f_transpose(0, 1)?)?;
    let y = g.op("MatMul", &[x, &wt], &[], hint);
    match b {
        Some(b) => {
            let b = g.weight(&format!("{hint}.bias"), b)?;
            Ok(g.op("Add", &[&y, &b], &[], hint))
        }
        None => Ok(y),
    }
}

/// LayerNormalization over the last axis (opset 17), computed in float32.
/// For float16 graphs the input is cast to float32 and the result back, with
/// float32 scale and bias: what torch's autocast does with layer_norm (it is
/// on autocast's float32 list), and what keeps the variance of large
/// activations from overflowing float16 (TensorRT warns of exactly that for
/// float16 LayerNorm). It also sidesteps tract 0.21, which cannot plan a
/// float16 LayerNormalization.
fn layer_norm(g: &mut Graph, x: &str, w: &Tensor, b: &Tensor, eps: f32, hint: &str) -> Result<String> {
    let w = g.weight_f32(&format!("{hint}.weight"), w)?;
    let b = g.weight_f32(&format!("{hint}.bias"), b)?;
    let attrs = [("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))];
    if g.compute == Compute::F16 {
        let x32 = g.op("Cast", &[x], &[("to", Attr::Int(data_type::FLOAT as i64))], hint);
        let y = g.op("LayerNormalization", &[&x32, &w, &b], &attrs, hint);
        return Ok(g.op("Cast", &[&y], &[("to", Attr::Int(data_type::FLOAT16 as i64))], hint));
    }
    Ok(g.op("LayerNormalization", &[x, &w, &b], &attrs, hint))
}

/// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))`, as libtorch's
/// `gelu(approximate="none")` (nn.GELU() in DINOv2, timm, the official
/// code and anomalib). Written with Erf: the Gelu operator is opset 20.
fn gelu(g: &mut Graph, x: &str, hint: &str) -> String {
    let inv_sqrt2 = g.scalar("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
    let one = g.scalar("one", 1.0);
    let half = g.scalar("half", 0.5);
    let scaled = g.op("Mul", &[x, &inv_sqrt2], &[], hint);
    let erf = g.op("Erf", &[&scaled], &[], hint);
    let plus = g.op("Add", &[&erf, &one], &[], hint);
    let xh = g.op("Mul", &[x, &half], &[], hint);
    g.op("Mul", &[&xh, &plus], &[], hint)
}

/// `(B, N, D) -> q, k, v`, each `(B, heads, N, D / heads)`: the references'
/// `reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)`.
fn split_heads(g: &mut Graph, qkv: &str, heads: i64, dim: i64, hint: &str) -> [String; 3] {
    let shape = g.ints(&[0, 0, 3, heads, dim / heads]);
    let r = g.op("Reshape", &[qkv, &shape], &[], hint);
    let t = g.op("Transpose", &[&r], &[("perm", Attr::Ints(vec![2, 0, 3, 1, 4]))], hint);
    [0, 1, 2].map(|i| {
        let idx = g.int_scalar(i);
        g.op("Gather", &[&t, &idx], &[("axis", Attr::Int(0))], hint)
    })
}

/// `(B, heads, N, hd) -> (B, N, D)`: `transpose(1, 2).reshape(B, N, D)`.
fn merge_heads(g: &mut Graph, y: &str, dim: i64, hint: &str) -> String {
    let t = g.op("Transpose", &[y], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))], hint);
    let shape = g.ints(&[0, 0, dim]);
    g.op("Reshape", &[&t, &shape], &[], hint)
}

/// `softmax(q k^T / sqrt(hd)) v` (the encoder's attention, `backbone::vit`
/// `Attention::forward`; the decoder's softmax ablation,
/// `model::attention::softmax_attention`). q is scaled before the product,
/// as libtorch's math SDPA does.
fn softmax_core(g: &mut Graph, q: &str, k: &str, v: &str, head_dim: i64, hint: &str) -> String {
    let scale = g.scalar("attn_scale", (1.0 / (head_dim as f64).sqrt()) as f32);
    let qs = g.op("Mul", &[q, &scale], &[], hint);
    let kt = g.op("Transpose", &[k], &[("perm", Attr::Ints(vec![0, 1, 3, 2]))], hint);
    let logits = g.op("MatMul", &[&qs, &kt], &[], hint);
    let w = g.op("Softmax", &[&logits], &[("axis", Attr::Int(-1))], hint);
    g.op("MatMul", &[&w, v], &[], hint)
}

/// ELU+1 linear attention (`model::attention::linear_attention`; official
/// `LinearAttention2`, anomalib `LinearAttention`): `phi = elu + 1`,
/// `KV = phi(k)^T v`, `out = phi(q) KV * 1 / (phi(q) . sum_n phi(k))`, the
/// einsums written as MatMuls. In float32 whatever the compute type: the
/// normaliser sums over every token and overflows float16 (it reaches
/// ~1e5 for a 28x28 grid), as the bfloat16 path keeps it in float32 too.
fn linear_core(g: &mut Graph, q: &str, k: &str, v: &str, eps: Option<f64>, hint: &str) -> String {
    let f16 = g.compute == Compute::F16;
    let to_f32 = |g: &mut Graph, x: &str| {
        if f16 {
            g.op("Cast", &[x], &[("to", Attr::Int(data_type::FLOAT as i64))], hint)
        } else {
            x.to_string()
        }
    };
    let (q, k, v) = (to_f32(g, q), to_f32(g, k), to_f32(g, v));
    let one = g.floats_f32("one_f32", &[1.0], &[]);
    let phi = |g: &mut Graph, x: &str| {
        let e = g.op("Elu", &[x], &[("alpha", Attr::Float(1.0))], hint);
        g.op("Add", &[&e, &one], &[], hint)
    };
    let (q, k) = (phi(g, &q), phi(g, &k));
    let kt = g.op("Transpose", &[&k], &[("perm", Attr::Ints(vec![0, 1, 3, 2]))], hint);
    let kv = g.op("MatMul", &[&kt, &v], &[], hint);
    let axes = g.ints(&[-2]);
    let s = g.op("ReduceSum", &[&k, &axes], &[("keepdims", Attr::Int(1))], hint);
    let st = g.op("Transpose", &[&s], &[("perm", Attr::Ints(vec![0, 1, 3, 2]))], hint);
    let mut denom = g.op("MatMul", &[&q, &st], &[], hint);
    if let Some(e) = eps {
        let e = g.floats_f32("linear_attn_eps", &[e as f32], &[]);
        denom = g.op("Add", &[&denom, &e], &[], hint);
    }
    let num = g.op("MatMul", &[&q, &kv], &[], hint);
    let recip = g.op("Reciprocal", &[&denom], &[], hint);
    let out = g.op("Mul", &[&num, &recip], &[], hint);
    if f16 {
        g.op("Cast", &[&out], &[("to", Attr::Int(data_type::FLOAT16 as i64))], hint)
    } else {
        out
    }
}

/// Mean of equally shaped values (`torch.stack(list, 1).mean(1)`,
/// `model::fusion::fuse`).
fn mean_of(g: &mut Graph, values: &[String], hint: &str) -> String {
    if values.len() == 1 {
        return values[0].clone();
    }
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let sum = g.op("Sum", &refs, &[], hint);
    let n = g.scalar(&format!("count{}", values.len()), values.len() as f32);
    g.op("Div", &[&sum, &n], &[], hint)
}

/// The encoder: patch embedding, `[cls, registers, patches]` with the
/// positional embedding resized once here for the crop's grid, blocks up
/// to the last target layer (`backbone::vit::VisionTransformer::
/// forward_layers`; DINOv2 `prepare_tokens_with_masks`). Returns the
/// target layers' outputs, each (B, 1 + R + gh*gw, D).
fn encoder(g: &mut Graph, image: &str, spec: &NetSpec<'_>, grid: (i64, i64)) -> Result<Vec<String>> {
    let vit = spec.vit;
    let w = &spec.encoder;
    let enc = |key: &str| get(w, key, "encoder");
    let (d, p) = (vit.embed_dim, vit.patch_size);
    let pw = g.weight("patch_embed.weight", enc("patch_embed.proj.weight")?)?;
    let pb = g.weight("patch_embed.bias", enc("patch_embed.proj.bias")?)?;
    let conv = g.op(
        "Conv",
        &[image, &pw, &pb],
        &[("kernel_shape", Attr::Ints(vec![p, p])), ("strides", Attr::Ints(vec![p, p]))],
        "patch_embed",
    );
    let flat_shape = g.ints(&[0, 0, -1]);
    let flat = g.op("Reshape", &[&conv, &flat_shape], &[], "patch_embed");
    let tokens = g.op("Transpose", &[&flat], &[("perm", Attr::Ints(vec![0, 2, 1]))], "patch_embed");
    // Positions: the same split and resize as `prepare_tokens`.
    let pos = enc("pos_embed")?;
    let rows = pos.size()[1];
    let (cls_pos, patch_pos) = if vit.pos_has_cls {
        (Some(pos.f_narrow(1, 0, 1)?), pos.f_narrow(1, 1, rows - 1)?)
    } else {
        (None, pos.shallow_clone())
    };
    let patch_pos = pos_embed::resize(&patch_pos, vit.pos_grid, grid, spec.pos_interp);
    let patch_pos = g.weight("pos_embed.resized", &patch_pos)?;
    let patches = g.op("Add", &[&tokens, &patch_pos], &[], "patch_tokens");
    let cls = match cls_pos {
        Some(pos) => enc("cls_token")?.f_add(&pos)?,
        None => enc("cls_token")?.shallow_clone(),
    };
    let mut prefix = vec![cls];
    if vit.num_registers > 0 {
        prefix.push(enc("register_tokens")?.shallow_clone());
    }
    let prefix = g.weight("prefix_tokens", &Tensor::f_cat(&prefix, 1)?)?;
    // (1, 1 + R, D) expanded to the batch read from the image's shape.
    let shape = g.op("Shape", &[image], &[], "batch");
    let (s0, s1) = (g.ints(&[0]), g.ints(&[1]));
    let batch = g.op("Slice", &[&shape, &s0, &s1, &s0], &[], "batch");
    let rest = g.ints(&[vit.num_prefix(), d]);
    let prefix_shape = g.op("Concat", &[&batch, &rest], &[("axis", Attr::Int(0))], "prefix_shape");
    let prefix = g.op("Expand", &[&prefix, &prefix_shape], &[], "prefix_tokens");
    let mut x = g.op("Concat", &[&prefix, &patches], &[("axis", Attr::Int(1))], "tokens");

    let last = *spec.layers.iter().max().ok_or_else(|| Error::config("no encoder layers"))?;
    let mut outputs = Vec::new();
    for i in 0..=last {
        x = encoder_block(g, &x, spec, i)?;
        if spec.layers.contains(&i) {
            outputs.push(x.clone());
        }
    }
    Ok(outputs)
}

/// One encoder block (`backbone::vit` `Block::forward`; DINOv2
/// `NestedTensorBlock`): `x += g1 * Attn(LN1(x)); x += g2 * FFN(LN2(x))`.
fn encoder_block(g: &mut Graph, x: &str, spec: &NetSpec<'_>, i: usize) -> Result<String> {
    let vit = spec.vit;
    let w = &spec.encoder;
    let key = |name: &str| format!("blocks.{i}.{name}");
    let t = |name: &str| get(w, &key(name), "encoder");
    let hint = |name: &str| format!("enc{i}.{name}");
    let d = vit.embed_dim;

    let h = layer_norm(g, x, t("norm1.weight")?, t("norm1.bias")?, ENCODER_LN_EPS, &hint("norm1"))?;
    let qkv = linear(g, &h, t("attn.qkv.weight")?, Some(t("attn.qkv.bias")?), &hint("attn.qkv"))?;
    let [q, k, v] = split_heads(g, &qkv, vit.num_heads, d, &hint("attn"));
    let y = softmax_core(g, &q, &k, &v, d / vit.num_heads, &hint("attn"));
    let y = merge_heads(g, &y, d, &hint("attn"));
    let mut y = linear(g, &y, t("attn.proj.weight")?, Some(t("attn.proj.bias")?), &hint("attn.proj"))?;
    if vit.layer_scale {
        let gamma = g.weight(&hint("ls1"), t("ls1.gamma")?)?;
        y = g.op("Mul", &[&y, &gamma], &[], &hint("ls1"));
    }
    let x = g.op("Add", &[x, &y], &[], &hint("res1"));

    let h = layer_norm(g, &x, t("norm2.weight")?, t("norm2.bias")?, ENCODER_LN_EPS, &hint("norm2"))?;
    let mut y = match vit.ffn {
        Ffn::Mlp => {
            let a = linear(g, &h, t("mlp.fc1.weight")?, Some(t("mlp.fc1.bias")?), &hint("mlp.fc1"))?;
            let a = gelu(g, &a, &hint("mlp.gelu"));
            linear(g, &a, t("mlp.fc2.weight")?, Some(t("mlp.fc2.bias")?), &hint("mlp.fc2"))?
        }
        // Meta's SwiGLUFFN: w12 -> chunk(2) -> silu(x1) * x2 -> w3, SiLU
        // written as x * sigmoid(x).
        Ffn::SwiGlu => {
            let a = linear(g, &h, t("mlp.w12.weight")?, Some(t("mlp.w12.bias")?), &hint("mlp.w12"))?;
            let half = vit.ffn_hidden;
            let split = g.ints(&[half, half]);
            let parts = g.op_n("Split", &[&a, &split], &[("axis", Attr::Int(-1))], &hint("mlp.split"), 2);
            let sig = g.op("Sigmoid", &[&parts[0]], &[], &hint("mlp.silu"));
            let silu = g.op("Mul", &[&parts[0], &sig], &[], &hint("mlp.silu"));
            let gated = g.op("Mul", &[&silu, &parts[1]], &[], &hint("mlp.gate"));
            linear(g, &gated, t("mlp.w3.weight")?, Some(t("mlp.w3.bias")?), &hint("mlp.w3"))?
        }
    };
    if vit.layer_scale {
        let gamma = g.weight(&hint("ls2"), t("ls2.gamma")?)?;
        y = g.op("Mul", &[&y, &gamma], &[], &hint("ls2"));
    }
    Ok(g.op("Add", &[&x, &y], &[], &hint("res2")))
}

/// A two-layer MLP with exact GELU (`model::mlp::Mlp` in eval mode).
fn mlp(g: &mut Graph, x: &str, w: &HashMap<String, Tensor>, prefix: &str, hint: &str) -> Result<String> {
    let t = |name: &str| get(w, &format!("{prefix}.{name}"), "checkpoint");
    let a = linear(g, x, t("fc1.weight")?, w.get(&format!("{prefix}.fc1.bias")), &format!("{hint}.fc1"))?;
    let a = gelu(g, &a, &format!("{hint}.gelu"));
    linear(g, &a, t("fc2.weight")?, w.get(&format!("{prefix}.fc2.bias")), &format!("{hint}.fc2"))
}

/// Bottleneck and decoder (`model::dinomaly::Dinomaly::forward_t` in eval
/// mode; official `ViTill.forward`): the bottleneck MLP on the mean of the
/// target layers, the decoder blocks, outputs reversed, both sides fused
/// per group and laid out as (B, D, gh, gw). Returns (encoder, decoder)
/// groups.
fn dinomaly(
    g: &mut Graph,
    layers: &[String],
    spec: &NetSpec<'_>,
    grid: (i64, i64),
) -> Result<(Vec<String>, Vec<String>)> {
    let cfg = spec.model;
    let w = &spec.trainable;
    let t = |key: &str| get(w, key, "checkpoint");
    let d = cfg.embed_dim;
    let x = mean_of(g, layers, "bottleneck_input");
    // `bottleneck.0` is the MLP itself (a one-element ModuleList).
    let mut x = mlp(g, &x, w, "bottleneck.0", "bottleneck")?;
    let mut blocks = Vec::new();
    for i in 0..cfg.depth_decoder {
        let p = |name: &str| format!("decoder.{i}.{name}");
        let hint = |name: &str| format!("dec{i}.{name}");
        // Pre-norm block, LayerNorm eps 1e-8 (`model::decoder::Block`).
        let eps = crate::model::decoder::DECODER_LN_EPS as f32;
        let h = layer_norm(g, &x, t(&p("norm1.weight"))?, t(&p("norm1.bias"))?, eps, &hint("norm1"))?;
        let qkv = linear(g, &h, t(&p("attn.qkv.weight"))?, Some(t(&p("attn.qkv.bias"))?), &hint("attn.qkv"))?;
        let [q, k, v] = split_heads(g, &qkv, cfg.num_heads, d, &hint("attn"));
        let y = match cfg.attention {
            AttentionKind::Linear { eps } => linear_core(g, &q, &k, &v, eps, &hint("attn")),
            AttentionKind::Softmax => softmax_core(g, &q, &k, &v, d / cfg.num_heads, &hint("attn")),
        };
        let y = merge_heads(g, &y, d, &hint("attn"));
        let y = linear(g, &y, t(&p("attn.proj.weight"))?, Some(t(&p("attn.proj.bias"))?), &hint("attn.proj"))?;
        let x1 = g.op("Add", &[&x, &y], &[], &hint("res1"));
        let h = layer_norm(g, &x1, t(&p("norm2.weight"))?, t(&p("norm2.bias"))?, eps, &hint("norm2"))?;
        let y = mlp(g, &h, w, &p("mlp"), &hint("mlp"))?;
        x = g.op("Add", &[&x1, &y], &[], &hint("res2"));
        blocks.push(x.clone());
    }
    blocks.reverse();
    let prefix = cfg.prefix_tokens();
    let spatial = |g: &mut Graph, list: &[String], side: &str| -> Vec<String> {
        cfg.groups
            .iter()
            .enumerate()
            .map(|(gi, idxs)| {
                let picked: Vec<String> = idxs.iter().map(|&i| list[i].clone()).collect();
                let hint = format!("{side}_group{gi}");
                let fused = mean_of(g, &picked, &hint);
                to_spatial(g, &fused, prefix, d, grid, &hint)
            })
            .collect()
    };
    let enc = spatial(g, layers, "enc");
    let dec = spatial(g, &blocks, "dec");
    Ok((enc, dec))
}

/// Drops the prefix tokens and lays the patches out as (B, D, gh, gw)
/// (`model::fusion::to_spatial`; official `ViTill.forward`'s
/// `permute(0, 2, 1).reshape(...)`).
fn to_spatial(g: &mut Graph, tokens: &str, prefix: i64, d: i64, grid: (i64, i64), hint: &str) -> String {
    let (start, end, axis) = (g.ints(&[prefix]), g.ints(&[i64::MAX]), g.ints(&[1]));
    let patches = g.op("Slice", &[tokens, &start, &end, &axis], &[], hint);
    let t = g.op("Transpose", &[&patches], &[("perm", Attr::Ints(vec![0, 2, 1]))], hint);
    let shape = g.ints(&[0, d, grid.0, grid.1]);
    g.op("Reshape", &[&t, &shape], &[], hint)
}

/// Bilinear resize of (B, 1, H, W) to `to`, written as two MatMuls with
/// constant interpolation matrices: `out = R_h · x · R_wᵀ`. Bilinear
/// interpolation is separable, so this is PyTorch's `upsample_bilinear2d`
/// exactly, and a MatMul means the same in every runtime, while the ONNX
/// Resize op's coordinate modes are read differently by runtimes (tract
/// 0.21 gave 3e-3 relative differences on the maps where onnxruntime gave
/// 1e-5).
fn resize(g: &mut Graph, x: &str, from: (i64, i64), to: (i64, i64), align_corners: bool, hint: &str) -> String {
    let rows = interpolation_matrix(from.0, to.0, align_corners);
    let rows = g.floats_f32(&format!("{hint}.rows"), &rows, &[to.0, from.0]);
    let cols = interpolation_matrix(from.1, to.1, align_corners);
    let cols_t = transpose(&cols, to.1 as usize, from.1 as usize);
    let cols_t = g.floats_f32(&format!("{hint}.cols_t"), &cols_t, &[from.1, to.1]);
    let tall = g.op("MatMul", &[&rows, x], &[], hint);
    g.op("MatMul", &[&tall, &cols_t], &[], hint)
}

/// The (output × input) matrix of 1-D linear interpolation as PyTorch's
/// `upsample_bilinear2d` computes it (ATen `area_pixel_compute_source_index`
/// and `UpSampleKernel.cpp`): with `align_corners` the source position is
/// `dst · (in − 1) / (out − 1)`; without, `(dst + 0.5) · in / out − 0.5`
/// clamped at 0; the two neighbours `floor` and `min(floor + 1, in − 1)`
/// get weights `1 − λ` and `λ`. Positions and weights in float32, as ATen
/// computes them for float32 maps.
pub fn interpolation_matrix(input: i64, output: i64, align_corners: bool) -> Vec<f32> {
    let (n_in, n_out) = (input as usize, output as usize);
    let mut m = vec![0f32; n_in * n_out];
    let scale: f32 = if align_corners {
        if output > 1 {
            (input - 1) as f32 / (output - 1) as f32
        } else {
            0.0
        }
    } else {
        input as f32 / output as f32
    };
    for dst in 0..n_out {
        let src = if align_corners { scale * dst as f32 } else { (scale * (dst as f32 + 0.5) - 0.5).max(0.0) };
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let lambda = (src - i0 as f32).clamp(0.0, 1.0);
        m[dst * n_in + i0] += 1.0 - lambda;
        m[dst * n_in + i1] += lambda;
    }
    m
}

/// `m` (rows × cols, row-major) transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// 1 - cosine similarity over channels of one group pair, in float32
/// (`score::anomaly_map::group_distance`; libtorch 2.x
/// `cosine_similarity`: each vector divided by its L2 norm clamped to
/// at least eps, then the product summed).
fn group_distance(g: &mut Graph, e: &str, d: &str, hint: &str) -> String {
    let axes = g.ints(&[1]);
    let eps = g.floats_f32("cosine_eps", &[COSINE_EPS as f32], &[]);
    let unit = |g: &mut Graph, x: &str| {
        let sq = g.op("Mul", &[x, x], &[], hint);
        let sum = g.op("ReduceSum", &[&sq, &axes], &[("keepdims", Attr::Int(1))], hint);
        let norm = g.op("Sqrt", &[&sum], &[], hint);
        let norm = g.op("Max", &[&norm, &eps], &[], hint);
        g.op("Div", &[x, &norm], &[], hint)
    };
    let (ue, ud) = (unit(g, e), unit(g, d));
    let prod = g.op("Mul", &[&ue, &ud], &[], hint);
    let cos = g.op("ReduceSum", &[&prod, &axes], &[("keepdims", Attr::Int(1))], hint);
    let one = g.floats_f32("one_f32", &[1.0], &[]);
    g.op("Sub", &[&one, &cos], &[], hint)
}

/// The post-processing (`score::anomaly_map::PostProcessor::apply`): per
/// group distance upsampled to the crop (bilinear, align_corners=True),
/// mean over groups, bilinear resize to the map size (align_corners=False:
/// ONNX `half_pixel`, which clamps at the border as PyTorch does), the
/// Gaussian (`score::smoothing::smooth`: Conv with zero padding, or Pad
/// reflect then Conv), and the top-ratio mean (TopK with k fixed by the
/// map size, then ReduceMean; ReduceMax for ratio 0). All float32.
/// Returns (map (B, 1, h, w) as dinomaly-score writes it, score (B)).
fn post_process(
    g: &mut Graph,
    enc: &[String],
    dec: &[String],
    post: &PostProcess,
    grid: (i64, i64),
) -> Result<(String, String)> {
    post.validate()?;
    let f16 = g.compute == Compute::F16;
    let crop = post.crop;
    let mut ups = Vec::new();
    for (i, (e, d)) in enc.iter().zip(dec).enumerate() {
        let hint = format!("distance{i}");
        let (e, d) = if f16 {
            let to = [("to", Attr::Int(data_type::FLOAT as i64))];
            (g.op("Cast", &[e], &to, &hint), g.op("Cast", &[d], &to, &hint))
        } else {
            (e.clone(), d.clone())
        };
        let dist = group_distance(g, &e, &d, &hint);
        ups.push(resize(g, &dist, grid, crop, true, &format!("upsample{i}")));
    }
    let fused = if ups.len() == 1 {
        ups.remove(0)
    } else {
        let refs: Vec<&str> = ups.iter().map(String::as_str).collect();
        let cat = g.op("Concat", &refs, &[("axis", Attr::Int(1))], "fused_map");
        g.op("ReduceMean", &[&cat], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))], "fused_map")
    };
    // Same size: PyTorch's resize samples every pixel exactly, so none.
    let resized = if post.map_size == crop {
        fused.clone()
    } else {
        resize(g, &fused, crop, post.map_size, false, "resized_map")
    };
    let k = post.kernel_size;
    let kernel = gaussian_kernel(k, post.sigma)?.f_view([1, 1, k, k])?;
    let kernel = g.weight_f32("gaussian_kernel", &kernel)?;
    let pad = k / 2;
    let smoothed = match post.padding {
        Padding::Zero => {
            g.op("Conv", &[&resized, &kernel], &[("pads", Attr::Ints(vec![pad, pad, pad, pad]))], "smoothed_map")
        }
        Padding::Reflect => {
            let pads = g.ints(&[0, 0, pad, pad, 0, 0, pad, pad]);
            let padded = g.op("Pad", &[&resized, &pads], &[("mode", Attr::Str("reflect"))], "smoothed_map");
            g.op("Conv", &[&padded, &kernel], &[], "smoothed_map")
        }
    };
    let flat_shape = g.ints(&[0, -1]);
    let flat = g.op("Reshape", &[&smoothed, &flat_shape], &[], "score");
    let score = if post.max_ratio == 0.0 {
        g.op("ReduceMax", &[&flat], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))], "score")
    } else {
        let kk = g.ints(&[top_count(post.map_size.0 * post.map_size.1, post.max_ratio)?]);
        let top = g.op_n(
            "TopK",
            &[&flat, &kk],
            &[("axis", Attr::Int(1)), ("largest", Attr::Int(1)), ("sorted", Attr::Int(1))],
            "top",
            2,
        );
        g.op("ReduceMean", &[&top[0]], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))], "score")
    };
    let map = if post.raw_map { fused } else { smoothed };
    Ok((map, score))
}

/// The whole network on `image` (B, 3, crop, crop) in the compute type.
/// Returns the map (B, 1, h, w) and score (B) values, float32.
pub fn build(g: &mut Graph, image: &str, spec: &NetSpec<'_>) -> Result<(String, String)> {
    let p = spec.vit.patch_size;
    let (h, w) = spec.post.crop;
    if h % p != 0 || w % p != 0 {
        return Err(Error::config(format!("crop {h}x{w} is not a multiple of the patch size {p}")));
    }
    let grid = (h / p, w / p);
    let layers = encoder(g, image, spec, grid)?;
    if layers.len() != spec.model.num_layers {
        return Err(Error::mismatch(
            "encoder layers",
            format!("{} target layers, the model was built for {}", layers.len(), spec.model.num_layers),
        ));
    }
    let (enc, dec) = dinomaly(g, &layers, spec, grid)?;
    post_process(g, &enc, &dec, &spec.post, grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interpolation matrices equal libtorch's bilinear resize of
    /// the identity, for up- and down-sampling, both corner modes.
    #[test]
    fn interpolation_matrices_are_libtorchs_bilinear_resize() {
        for (input, output) in [(4, 16), (16, 4), (28, 392), (392, 256), (224, 256), (5, 5), (7, 3)] {
            for align in [true, false] {
                let eye = tch::Tensor::eye(input, (tch::Kind::Float, tch::Device::Cpu)).view([1, 1, input, input]);
                // Resizing rows of the identity gives the matrix's transpose's rows.
                let torch = eye.upsample_bilinear2d([output, input], align, None, None).view([output, input]);
                let want = Vec::<f32>::try_from(torch.flatten(0, -1)).unwrap();
                let got = interpolation_matrix(input, output, align);
                let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(worst <= 1e-6, "{input} -> {output} align {align}: {worst}");
            }
        }
    }
}
