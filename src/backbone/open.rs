//! Opening the encoder a tool asks for: a backbone name and optional
//! weights path become a checked, loaded [`Encoder`] with its target layers.
//!
//! Steps: the name is looked up in the [`registry`] (an unknown name is
//! allowed with `--weights`, the architecture then coming from the file);
//! the weights file is found by [`download::Resolver`] (explicit path, cache,
//! download) and its SHA-256 checked; the file is converted to canonical
//! tensors and checked against the backbone's architecture
//! ([`weights::load_encoder_weights_with`]); the ViT is built up to the last
//! target layer and filled.

use std::path::PathBuf;

use indicatif::ProgressBar;
use tch::Device;

use crate::backbone::arch::ArchInfo;
use crate::backbone::download::{Resolved, Resolver, Source, Verification};
use crate::backbone::encoder::Encoder;
use crate::backbone::layout::Layout;
use crate::backbone::pos_embed::PosInterp;
use crate::backbone::registry::{self, find_backbone};
use crate::backbone::weights::{load_encoder_weights_with, EncoderWeights, LoadOptions};
use crate::progress;
use crate::{Error, Result};

/// What to open.
#[derive(Debug, Clone)]
pub struct EncoderRequest {
    /// A registry name or alias; any name when `weights` is given.
    pub backbone: String,
    /// Weights file or folder; `None` uses the cache or downloads.
    pub weights: Option<PathBuf>,
    /// SHA-256 the weights file must have.
    pub weights_sha256: Option<String>,
    /// Target blocks, 0-based; empty means the backbone's default.
    pub layers: Vec<usize>,
    pub pos_interp: PosInterp,
    /// No notes or progress on stderr.
    pub quiet: bool,
    /// Tool name that prefixes notes.
    pub tool: String,
}

/// A loaded encoder and where its weights came from.
pub struct OpenedEncoder {
    pub encoder: Encoder,
    /// The backbone's registry name (or the name given, for other weights).
    pub name: String,
    /// SHA-256 of the weights file.
    pub sha256: String,
    /// The weights file read.
    pub weights: PathBuf,
    /// Architecture of the weights.
    pub arch: ArchInfo,
    /// Layout the weights were in.
    pub layout: Layout,
}

/// The sha256 a checkpoint records of the encoder weights it was trained
/// with: other weights are refused.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// SHA-256, lowercase hex.
    pub sha256: &'a str,
    /// The checkpoint, for the note and the error (its path).
    pub by: &'a str,
}

/// Opens the encoder of `req` on `device`.
pub fn open_encoder(req: &EncoderRequest, device: Device) -> Result<OpenedEncoder> {
    open_encoder_expecting(req, device, None)
}

/// Finds and reads the encoder weights of `req` (the cache, a download or
/// `req.weights`) without building the encoder, with the same checks as
/// [`open_encoder_expecting`]; also returns the registry entry, if any.
pub fn encoder_weights_expecting(
    req: &EncoderRequest,
    expected: Option<Expected>,
) -> Result<(EncoderWeights, Option<&'static registry::Backbone>)> {
    let known = find_backbone(&req.backbone);
    let backbone = match (&known, &req.weights) {
        (Ok(b), _) => Some(*b),
        (Err(_), Some(_)) => None,
        (Err(e), None) => {
            return Err(Error::config(format!("{e}; other weights need --weights PATH")));
        }
    };
    let (path, sha256, arch) = match backbone {
        Some(b) => {
            let resolved = resolve(req, b)?;
            check_expected(expected, &resolved.path, &resolved.sha256)?;
            progress::note(req.quiet, &req.tool, &format!("weights: {}", weights_note(&resolved, expected)));
            (resolved.path, resolved.sha256, Some(b.arch))
        }
        None => {
            let path = req.weights.clone().unwrap_or_default();
            (path, String::new(), None)
        }
    };
    let opts = LoadOptions { known_sha256: (!sha256.is_empty()).then(|| sha256.clone()), ..Default::default() };
    let weights = load_encoder_weights_with(&path, arch.as_ref(), &opts)?;
    if backbone.is_none() {
        check_expected(expected, &weights.path, &weights.sha256)?;
    }
    if let (None, Some(want)) = (backbone, &req.weights_sha256) {
        if !want.trim().eq_ignore_ascii_case(&weights.sha256) {
            return Err(Error::Weights(format!(
                "{}: sha256 is {}, but {} was asked for",
                weights.path.display(),
                weights.sha256,
                want.trim()
            )));
        }
    }
    Ok((weights, backbone))
}

/// Opens the encoder of `req` on `device`; with `expected`, weights of
/// another sha256 are refused (before they are loaded when the file is
/// hashed up front) and the note says what the hash was checked against.
pub fn open_encoder_expecting(
    req: &EncoderRequest,
    device: Device,
    expected: Option<Expected>,
) -> Result<OpenedEncoder> {
    let (weights, backbone) = encoder_weights_expecting(req, expected)?;
    let layers = if req.layers.is_empty() {
        default_layers(&weights.arch, backbone.map(|b| b.target_layers))?
    } else {
        req.layers.clone()
    };
    let encoder =
        Encoder::from_tensors(&weights.vit_config(), &weights.tensors, &weights.path, &layers, req.pos_interp, device)?;
    if backbone.is_none() {
        progress::note(
            req.quiet,
            &req.tool,
            &format!(
                "weights: {} ({}, {}), sha256 {}{}",
                weights.path.display(),
                weights.arch,
                weights.source_layout,
                weights.sha256,
                expected.map_or_else(String::new, |e| format!(": {}", matches_expected(e)))
            ),
        );
    }
    Ok(OpenedEncoder {
        encoder,
        name: backbone.map_or_else(|| req.backbone.clone(), |b| b.name.to_string()),
        sha256: weights.sha256,
        weights: weights.path,
        arch: weights.arch,
        layout: weights.source_layout,
    })
}

/// Refuses weights whose sha256 is not the expected one.
fn check_expected(expected: Option<Expected>, path: &std::path::Path, sha256: &str) -> Result<()> {
    match expected {
        Some(e) if !e.sha256.eq_ignore_ascii_case(sha256) => Err(Error::mismatch(
            e.by,
            format!(
                "trained on features of weights with sha256 {}, but {} has sha256 {sha256}",
                e.sha256,
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

fn matches_expected(e: Expected) -> String {
    format!("matches the weights {} was trained with", e.by)
}

/// The note on the weights: where they came from and every check their
/// sha256 passed (an explicit file no registry knows is only "not checked"
/// when nothing expects a hash either).
fn weights_note(resolved: &Resolved, expected: Option<Expected>) -> String {
    match (expected, resolved.verification) {
        (None, _) => resolved.describe(),
        (Some(e), Verification::Unchecked) => {
            format!("{} (given), sha256 {}: {}", resolved.path.display(), resolved.sha256, matches_expected(e))
        }
        (Some(e), _) => format!("{}; it {}", resolved.describe(), matches_expected(e)),
    }
}

/// Finds the weights file of a registry backbone, with a progress bar for
/// a download.
fn resolve(req: &EncoderRequest, b: &registry::Backbone) -> Result<crate::backbone::download::Resolved> {
    let resolver = Resolver::from_env()?;
    let mut bar: Option<ProgressBar> = None;
    let mut announced = false;
    let resolved = resolver.resolve(b, req.weights.as_deref(), req.weights_sha256.as_deref(), &mut |done, total| {
        if !announced {
            announced = true;
            progress::note(
                req.quiet,
                &req.tool,
                &format!("downloading {} into {}", b.url(&resolver.base_url), resolver.cache_dir.display()),
            );
        }
        let bar = bar.get_or_insert_with(|| {
            let bar = progress::bar(total.unwrap_or(0), "download", req.quiet);
            if total.is_none() {
                bar.set_length(0);
            }
            bar
        });
        bar.set_position(done);
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let resolved = resolved?;
    if resolved.source == Source::Downloaded && resolved.verification == Verification::FirstUse {
        progress::note(
            req.quiet,
            &req.tool,
            &format!("{} has no published sha256; this one is recorded and checked on every later use", b.file_name),
        );
    }
    Ok(resolved)
}

/// The target layers of a registry backbone, or, for other weights, those
/// of the registry backbone with the same width and depth.
pub fn default_layers(arch: &ArchInfo, registry_layers: Option<&[i64]>) -> Result<Vec<usize>> {
    let layers = registry_layers.or_else(|| {
        registry::backbones()
            .iter()
            .find(|b| b.arch.embed_dim == arch.embed_dim && b.arch.depth == arch.depth)
            .map(|b| b.target_layers)
    });
    match layers {
        Some(l) => Ok(l.iter().map(|&i| i as usize).collect()),
        None => Err(Error::config(format!(
            "no default target layers for a {} with {} blocks; pass --layers",
            arch.name(),
            arch.depth
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::arch::Ffn;

    #[test]
    fn default_layers_follow_the_registry() {
        let b = find_backbone("dinov2_vitl14_reg4").unwrap();
        assert_eq!(default_layers(&b.arch, None).unwrap(), vec![4, 6, 8, 10, 12, 14, 16, 18]);
        let odd = ArchInfo { depth: 7, ..b.arch };
        assert!(default_layers(&odd, None).unwrap_err().to_string().contains("pass --layers"));
        let tiny = ArchInfo { embed_dim: 8, depth: 2, ffn: Ffn::Mlp, ..b.arch };
        assert_eq!(default_layers(&tiny, Some(&[0, 1])).unwrap(), vec![0, 1]);
    }

    #[test]
    fn the_weights_note_says_what_the_hash_was_checked_against() {
        let sha = "ab".repeat(32);
        let given = Resolved {
            path: PathBuf::from("/w/dinov2_vits14_reg4_pretrain.pth"),
            sha256: sha.clone(),
            source: Source::Explicit,
            verification: Verification::Unchecked,
        };
        let ckpt = Expected { sha256: &sha, by: "model.safetensors" };
        // Nothing to compare with: said so.
        assert!(weights_note(&given, None).ends_with(": not checked"));
        // The checkpoint's record was compared: that is what the note says.
        let note = weights_note(&given, Some(ckpt));
        assert!(!note.contains("not checked"), "{note}");
        assert!(
            note.ends_with(&format!("sha256 {sha}: matches the weights model.safetensors was trained with")),
            "{note}"
        );
        let cached = Resolved { source: Source::Cache, verification: Verification::Published, ..given.clone() };
        let note = weights_note(&cached, Some(ckpt));
        assert!(note.contains("matches the published hash; it matches the weights model.safetensors"), "{note}");
        // Other weights: refused, naming the checkpoint, both hashes and the file.
        let other = "cd".repeat(32);
        let err = check_expected(Some(ckpt), &given.path, &other).unwrap_err().to_string();
        for needle in ["model.safetensors", sha.as_str(), other.as_str(), "dinov2_vits14_reg4_pretrain.pth"] {
            assert!(err.contains(needle), "{err}");
        }
        assert!(check_expected(Some(ckpt), &given.path, &sha.to_uppercase()).is_ok());
        assert!(check_expected(None, &given.path, &other).is_ok());
    }
}
