//! The frozen ViT encoder: DINOv2 with or without registers (Meta's code as
//! the official Dinomaly runs it), and plain timm ViTs for the foundation-
//! model ablation.
//!
//! Modules are nested exactly as Meta's checkpoint keys (`cls_token`,
//! `pos_embed`, `register_tokens`, `patch_embed.proj`, `blocks.{i}.norm1`,
//! `blocks.{i}.attn.qkv`, `blocks.{i}.ls1.gamma`, ...), so weights load by
//! name with no renaming; other layouts are converted to these names first
//! (`backbone::layout`). Only blocks up to the last requested layer are built
//! and run: for Dinomaly's ViT-B that is 10 of 12 blocks.
//!
//! Block (spec 1.2): x += g1 * Attn(LN1(x)); x += g2 * FFN(LN2(x)), LayerNorm
//! eps 1e-6, softmax attention scaled by 1/sqrt(head_dim), exact-erf GELU.
//! The final encoder norm is never applied: Dinomaly reads raw block outputs.

use tch::nn;
use tch::{Device, Kind, Tensor};

use super::pos_embed::{self, PosInterp};
use crate::{Error, Result};

/// LayerNorm epsilon of DINOv2 and timm ViTs.
const ENCODER_LN_EPS: f64 = 1e-6;

/// The feed-forward network of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ffn {
    /// `mlp.fc1` → exact GELU → `mlp.fc2`.
    Mlp,
    /// Meta's ViT-g: `mlp.w12` → split → SiLU(x1) * x2 → `mlp.w3`.
    SwiGlu,
}

/// Architecture of a ViT encoder, inferred from its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// Token width D.
    pub embed_dim: i64,
    /// Number of blocks in the checkpoint.
    pub depth: usize,
    /// Attention heads (head dim = D / heads).
    pub num_heads: i64,
    /// Patch side in pixels (14 for DINOv2, 16 for most timm ViTs).
    pub patch_size: i64,
    /// Register tokens (4 for DINOv2-reg, 0 otherwise).
    pub num_registers: i64,
    /// Hidden width of the FFN (4D for MLPs; the half-width for SwiGLU).
    pub ffn_hidden: i64,
    /// MLP or SwiGLU.
    pub ffn: Ffn,
    /// Whether blocks carry LayerScale gammas (`ls1.gamma`, `ls2.gamma`).
    pub layer_scale: bool,
    /// Patch grid of the stored positional embedding (37x37 for DINOv2).
    pub pos_grid: (i64, i64),
    /// Whether `pos_embed` has a row for the class token at index 0 (Meta,
    /// plain timm ViTs). timm's DINOv2 conversions fold it into `cls_token`.
    pub pos_has_cls: bool,
}

impl VitConfig {
    /// Checks the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        if self.num_heads <= 0 || self.embed_dim % self.num_heads != 0 {
            return Err(Error::config(format!(
                "embed dim {} is not divisible by {} heads",
                self.embed_dim, self.num_heads
            )));
        }
        if self.depth == 0 || self.patch_size <= 0 {
            return Err(Error::config("a ViT needs at least one block and a positive patch size"));
        }
        Ok(())
    }

    /// Number of prefix tokens before the patches: class token + registers.
    pub fn num_prefix(&self) -> i64 {
        1 + self.num_registers
    }
}

/// Linear layers of the frozen encoder: zero-filled, because the weights
/// file always overwrites them (`Encoder::from_tensors`); tch's default
/// (Kaiming-uniform draws) would cost a third of the start-up for nothing.
const LOADED: nn::LinearConfig =
    nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true };

/// `blocks.{i}.attn`: softmax self-attention.
#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    num_heads: i64,
}

impl Attention {
    fn new(p: nn::Path, dim: i64, num_heads: i64) -> Self {
        Attention {
            qkv: nn::linear(&p / "qkv", dim, 3 * dim, LOADED),
            proj: nn::linear(&p / "proj", dim, dim, LOADED),
            num_heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.size3()?;
        let head_dim = d / self.num_heads;
        // (B, N, 3, H, hd) -> (3, B, H, N, hd)
        let qkv = linear(&self.qkv, x)?.f_reshape([b, n, 3, self.num_heads, head_dim])?.f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
        // Softmax attention, scale 1/sqrt(head_dim), no mask, no dropout.
        let scale = 1.0 / (head_dim as f64).sqrt();
        let out = if math_attention(x) {
            math_softmax_attention(&q, &k, &v, scale)?
        } else {
            Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, scale, false)?
        };
        linear(&self.proj, &out.f_transpose(1, 2)?.f_reshape([b, n, d])?)
    }
}

/// Whether attention on `x` takes the explicit path instead of libtorch's
/// fused kernel: bfloat16 on a CPU without native bfloat16 (see
/// [`crate::cpu`]). There the fused CPU kernel is emulated, and where the
/// CPU has AMX but `ATEN_CPU_CAPABILITY` selects AVX2 kernels it fails
/// outright ("pack_vnni2 is only supported when avx512 is supported").
/// float32 and other devices keep the fused kernel (the parity figures are
/// measured with it).
fn math_attention(x: &Tensor) -> bool {
    x.kind() == Kind::BFloat16 && x.device() == Device::Cpu && !crate::cpu::native_bf16()
}

/// `softmax(q kᵀ · scale) v`, what the fused kernel computes, with the
/// products and the softmax in float32 as that kernel accumulates them
/// (products of bfloat16 values are exact in float32); the output has the
/// inputs' kind. (B, H, N, hd) in, (B, H, N, hd) out.
fn math_softmax_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let kind = q.kind();
    let (q, k, v) = (q.f_to_kind(Kind::Float)?, k.f_to_kind(Kind::Float)?, v.f_to_kind(Kind::Float)?);
    let weights = q.f_matmul(&k.f_transpose(-2, -1)?)?.f_mul_scalar(scale)?.f_softmax(-1, Kind::Float)?;
    Ok(weights.f_matmul(&v)?.f_to_kind(kind)?)
}

/// `l(x)` without tch's panicking `Module::forward`.
fn linear(l: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    Ok(x.f_linear(&l.ws, l.bs.as_ref())?)
}

/// The encoder's LayerNorm (eps [`ENCODER_LN_EPS`]) without tch's
/// panicking `Module::forward`; the same call that forward makes.
fn layer_norm(ln: &nn::LayerNorm, x: &Tensor) -> Result<Tensor> {
    Ok(x.f_layer_norm(ln.normalized_shape.as_slice(), ln.ws.as_ref(), ln.bs.as_ref(), ENCODER_LN_EPS, true)?)
}

/// `blocks.{i}.mlp`.
#[derive(Debug)]
enum FeedForward {
    Mlp { fc1: nn::Linear, fc2: nn::Linear },
    SwiGlu { w12: nn::Linear, w3: nn::Linear },
}

impl FeedForward {
    fn new(p: nn::Path, dim: i64, hidden: i64, kind: Ffn) -> Self {
        match kind {
            Ffn::Mlp => FeedForward::Mlp {
                fc1: nn::linear(&p / "fc1", dim, hidden, LOADED),
                fc2: nn::linear(&p / "fc2", hidden, dim, LOADED),
            },
            Ffn::SwiGlu => FeedForward::SwiGlu {
                w12: nn::linear(&p / "w12", dim, 2 * hidden, LOADED),
                w3: nn::linear(&p / "w3", hidden, dim, LOADED),
            },
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            // Exact (erf) GELU, as nn.GELU() in DINOv2 and timm.
            FeedForward::Mlp { fc1, fc2 } => linear(fc2, &linear(fc1, x)?.f_gelu("none")?),
            FeedForward::SwiGlu { w12, w3 } => {
                let x12 = linear(w12, x)?.f_chunk(2, -1)?;
                linear(w3, &x12[0].f_silu()?.f_mul(&x12[1])?)
            }
        }
    }
}

/// `blocks.{i}`.
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    ls1: Option<Tensor>,
    norm2: nn::LayerNorm,
    mlp: FeedForward,
    ls2: Option<Tensor>,
}

impl Block {
    fn new(p: nn::Path, cfg: &VitConfig) -> Self {
        let d = cfg.embed_dim;
        let ln = nn::LayerNormConfig { eps: ENCODER_LN_EPS, ..Default::default() };
        let gamma = |name: &str| cfg.layer_scale.then(|| (&p / name).var("gamma", &[d], nn::Init::Const(1.0)));
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            attn: Attention::new(&p / "attn", d, cfg.num_heads),
            ls1: gamma("ls1"),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            mlp: FeedForward::new(&p / "mlp", d, cfg.ffn_hidden, cfg.ffn),
            ls2: gamma("ls2"),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scaled = |y: Tensor, g: &Option<Tensor>| -> Result<Tensor> {
            Ok(match g {
                Some(g) => y.f_mul(g)?,
                None => y,
            })
        };
        let x = x.f_add(&scaled(self.attn.forward(&layer_norm(&self.norm1, x)?)?, &self.ls1)?)?;
        Ok(x.f_add(&scaled(self.mlp.forward(&layer_norm(&self.norm2, &x)?)?, &self.ls2)?)?)
    }
}

/// The encoder with blocks `0..built` (the rest of the checkpoint is unused).
#[derive(Debug)]
pub struct VisionTransformer {
    cfg: VitConfig,
    built: usize,
    cls_token: Tensor,
    pos_embed: Tensor,
    register_tokens: Option<Tensor>,
    patch_embed: nn::Conv2D,
    blocks: Vec<Block>,
}

impl VisionTransformer {
    /// Builds the variables under `p` for blocks `0..built` (at most depth).
    pub fn new(p: &nn::Path, cfg: &VitConfig, built: usize) -> Result<Self> {
        cfg.validate()?;
        if built == 0 || built > cfg.depth {
            return Err(Error::config(format!("asked for {built} blocks of a {}-block encoder", cfg.depth)));
        }
        let d = cfg.embed_dim;
        let pos_rows = cfg.pos_grid.0 * cfg.pos_grid.1 + i64::from(cfg.pos_has_cls);
        let zeros = nn::Init::Const(0.0);
        let register_tokens =
            (cfg.num_registers > 0).then(|| p.var("register_tokens", &[1, cfg.num_registers, d], zeros));
        let conv = nn::ConvConfig { stride: cfg.patch_size, ..Default::default() };
        Ok(VisionTransformer {
            cls_token: p.var("cls_token", &[1, 1, d], zeros),
            pos_embed: p.var("pos_embed", &[1, pos_rows, d], zeros),
            register_tokens,
            patch_embed: nn::conv2d(p / "patch_embed" / "proj", 3, d, cfg.patch_size, conv),
            blocks: (0..built).map(|i| Block::new(p / "blocks" / i, cfg)).collect(),
            cfg: cfg.clone(),
            built,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Whether a checkpoint key is legitimately unused by this encoder: the
    /// final norm, the mask token, classifier heads and blocks past `built`.
    pub fn is_unused_key(&self, key: &str) -> bool {
        if key == "mask_token" || key.starts_with("norm.") || key.starts_with("head") || key.starts_with("fc_norm.") {
            return true;
        }
        key.strip_prefix("blocks.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= self.built && i < self.cfg.depth)
    }

    /// The patch grid of an input of `height` x `width` pixels.
    pub fn grid(&self, height: i64, width: i64) -> Result<(i64, i64)> {
        let p = self.cfg.patch_size;
        if height % p != 0 || width % p != 0 || height < p || width < p {
            return Err(Error::config(format!("input {height}x{width} is not a multiple of the patch size {p}")));
        }
        Ok((height / p, width / p))
    }

    /// Tokens entering block 0: `[cls, registers, patches]` with positions
    /// added to cls and patches only (spec 1.3).
    fn prepare_tokens(&self, images: &Tensor, mode: PosInterp) -> Result<Tensor> {
        let size = images.size();
        if size.len() != 4 || size[1] != 3 {
            return Err(Error::config(format!("encoder input must be (B, 3, H, W), got {size:?}")));
        }
        let (b, d) = (size[0], self.cfg.embed_dim);
        let grid = self.grid(size[2], size[3])?;
        // (B, D, gh, gw) -> (B, gh*gw, D), token t = row * gw + col.
        // The convolution with TF32 off: cuDNN's default for fp32 (TF32 on)
        // would round the patch embedding to 10 mantissa bits on Ampere and
        // later GPUs, and GPU maps would drift ~1e-3 from the CPU's. On the
        // CPU this is the same kernel `conv2d` reaches (bitwise equal).
        let p = self.cfg.patch_size;
        let patches = images
            .f_internal_convolution(
                &self.patch_embed.ws,
                self.patch_embed.bs.as_ref(),
                [p, p],
                [0, 0],
                [1, 1],
                false,
                [0, 0],
                1,
                false, // benchmark
                false, // deterministic
                true,  // cudnn enabled
                false, // allow_tf32
            )?
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?;
        let (cls_pos, patch_pos) = if self.cfg.pos_has_cls {
            (Some(self.pos_embed.f_narrow(1, 0, 1)?), self.pos_embed.f_narrow(1, 1, self.pos_embed.size()[1] - 1)?)
        } else {
            (None, self.pos_embed.shallow_clone())
        };
        let patch_pos = pos_embed::resize(&patch_pos, self.cfg.pos_grid, grid, mode);
        let cls = match cls_pos {
            Some(pos) => self.cls_token.f_add(&pos)?,
            None => self.cls_token.shallow_clone(),
        };
        let mut parts = vec![cls.f_expand([b, 1, d], false)?];
        if let Some(reg) = &self.register_tokens {
            parts.push(reg.f_expand([b, self.cfg.num_registers, d], false)?);
        }
        parts.push(patches.f_add(&patch_pos)?);
        Ok(Tensor::f_cat(&parts, 1)?)
    }

    /// Runs the blocks up to the largest of `layers` and returns their
    /// outputs, in the order of `layers`, each (B, 1 + R + gh*gw, D).
    pub fn forward_layers(&self, images: &Tensor, layers: &[usize], mode: PosInterp) -> Result<Vec<Tensor>> {
        let last = *layers.iter().max().ok_or_else(|| Error::config("no encoder layers requested"))?;
        if last >= self.built {
            return Err(Error::config(format!("layer {last} requested but only blocks 0..{} were built", self.built)));
        }
        let images = images.f_to_kind(self.cls_token.kind())?;
        let mut x = self.prepare_tokens(&images, mode)?;
        let mut outputs: Vec<Option<Tensor>> = layers.iter().map(|_| None).collect();
        for (i, block) in self.blocks.iter().enumerate().take(last + 1) {
            x = block.forward(&x)?;
            for (slot, &layer) in layers.iter().enumerate() {
                if layer == i {
                    outputs[slot] = Some(x.shallow_clone());
                }
            }
        }
        Ok(outputs.into_iter().flatten().collect())
    }

    /// Dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.cls_token.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }

    #[test]
    fn the_explicit_attention_is_what_the_fused_kernel_computes() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let (q, k, v) = (
            Tensor::randn([2, 3, 37, 16], opts),
            Tensor::randn([2, 3, 37, 16], opts),
            Tensor::randn([2, 3, 37, 16], opts),
        );
        let scale = 0.25;
        let fused = |q: &Tensor, k: &Tensor, v: &Tensor| {
            Tensor::f_scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, false, scale, false).unwrap()
        };
        let diff = max_abs(&(math_softmax_attention(&q, &k, &v, scale).unwrap() - fused(&q, &k, &v)));
        assert!(diff < 1e-5, "float32: {diff}");
        // bfloat16 in, bfloat16 out, within its rounding (2^-8 relative)
        // of the float32 answer for the same bfloat16 inputs.
        let bf16 = |t: &Tensor| t.to_kind(Kind::BFloat16);
        let out = math_softmax_attention(&bf16(&q), &bf16(&k), &bf16(&v), scale).unwrap();
        assert_eq!(out.kind(), Kind::BFloat16);
        let f32_of = |t: &Tensor| t.to_kind(Kind::Float);
        let exact = fused(&f32_of(&bf16(&q)), &f32_of(&bf16(&k)), &f32_of(&bf16(&v)));
        let diff = max_abs(&(f32_of(&out) - &exact));
        assert!(diff <= max_abs(&exact) / 256.0, "bfloat16: {diff}");
    }
}
