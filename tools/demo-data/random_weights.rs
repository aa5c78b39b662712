//! A seeded random DINOv2 checkpoint in Meta's layout (the canonical keys
//! and shapes of [`ArchInfo::canonical_shapes`]), written as safetensors.
//!
//! Scales follow DINOv2's own initialisation so activations stay in a sane
//! range: truncated normal (std 0.02, cut at 2 std) for linear weights and
//! the positional embedding, PyTorch's default uniform bound 1/sqrt(fan_in)
//! for the patch-embedding convolution, normal std 1e-6 for the class and
//! register tokens, ones and zeros for layer norms, zero biases, and
//! layer-scale 1.0 (the value Meta's hub constructors use). The values mean
//! nothing: features from these weights are random projections, and
//! anomaly scores computed from them are not meaningful.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use dinomaly::backbone::arch::ArchInfo;
use rand::Rng;
use rand::SeedableRng;

/// Writes the random checkpoint for `arch` to `path` (atomically).
pub fn write(arch: &ArchInfo, seed: u64, path: &Path) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape) in arch.canonical_shapes() {
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let n: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product();
        let init = Init::for_key(&name, fan_in);
        let mut bytes = Vec::with_capacity(n * 4);
        for _ in 0..n {
            bytes.extend_from_slice(&init.sample(&mut rng).to_le_bytes());
        }
        tensors.push((name, shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .context("cannot lay out the random tensors")?;
    let metadata = HashMap::from([(
        MARK.to_string(),
        format!("seeded random weights (seed {seed}), NOT pretrained: anomaly scores from them are not meaningful"),
    )]);
    let bytes = safetensors::serialize(views, &Some(metadata)).context("cannot serialise the random weights")?;
    dinomaly::io::atomic::write_bytes(path, &bytes)?;
    Ok(())
}

/// The metadata key that marks a checkpoint written here.
const MARK: &str = "dinomaly_demo";

/// Whether `path` is a safetensors file carrying this module's mark.
pub fn is_demo_random(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    let mut reader = std::io::BufReader::new(file);
    if std::io::Read::read_exact(&mut reader, &mut len).is_err() {
        return false;
    }
    // A safetensors header is JSON; anything else (a .pth zip) is not ours.
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return false;
    }
    let mut header = vec![0u8; len as usize];
    if std::io::Read::read_exact(&mut reader, &mut header).is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|h| h.get("__metadata__")?.get(MARK).cloned())
        .is_some()
}

/// How one tensor is filled.
#[derive(Debug, Clone, Copy)]
enum Init {
    Const(f32),
    Normal(f64),
    TruncNormal(f64),
    Uniform(f64),
}

impl Init {
    fn for_key(name: &str, fan_in: usize) -> Init {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        if name == "cls_token" || name == "register_tokens" {
            Init::Normal(1e-6)
        } else if name == "pos_embed" {
            Init::TruncNormal(0.02)
        } else if name.starts_with("patch_embed.proj.") {
            Init::Uniform(bound)
        } else if name.ends_with(".gamma") {
            Init::Const(1.0)
        } else if name.starts_with("norm.") || name.contains(".norm1.") || name.contains(".norm2.") {
            Init::Const(if name.ends_with(".weight") { 1.0 } else { 0.0 })
        } else if name.ends_with(".weight") {
            Init::TruncNormal(0.02)
        } else {
            Init::Const(0.0)
        }
    }

    fn sample(self, rng: &mut impl Rng) -> f32 {
        match self {
            Init::Const(v) => v,
            Init::Normal(std) => (normal(rng) * std) as f32,
            Init::TruncNormal(std) => loop {
                let z = normal(rng);
                if z.abs() <= 2.0 {
                    break (z * std) as f32;
                }
            },
            Init::Uniform(b) => rng.random_range(-b..b) as f32,
        }
    }
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
