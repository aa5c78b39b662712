//! Which encoder weights the demo uses: DINOv2 ViT-S/14-reg4 from the cache
//! or the official download (the tools' own resolver, sha256-checked), and
//! when neither works a seeded random checkpoint.
//!
//! Prints one line on stdout: `pretrained PATH` or `random PATH`. A file
//! that this tool wrote as random (its safetensors metadata says so) is
//! reported as random wherever it is found, so it is never shown as
//! pretrained.

use std::path::{Path, PathBuf};

use anyhow::Context;

use dinomaly::backbone::download::Resolver;
use dinomaly::backbone::registry::find_backbone;

use crate::random_weights;

/// `demo-data weights`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backbone to look for.
    #[arg(long, default_value = "dinov2_vits14_reg4")]
    pub backbone: String,
    /// Folder for the random fallback checkpoint.
    #[arg(long)]
    pub random_dir: PathBuf,
    /// Seed of the random fallback.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the cache and the download: random weights straight away.
    #[arg(long, conflicts_with = "given")]
    pub random: bool,
    /// Only classify this weights file (the user's WEIGHTS=).
    #[arg(long, value_name = "FILE")]
    pub given: Option<PathBuf>,
}

/// Finds the weights or writes the random fallback.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(path) = &args.given {
        report(path);
        return Ok(());
    }
    let backbone = find_backbone(&args.backbone)?;
    if !args.random {
        let resolver = Resolver::from_env()?;
        let mut last_tenth = None;
        let mut progress = |done: u64, total: Option<u64>| {
            if let Some(total) = total.filter(|&t| t > 0) {
                let tenth = done * 10 / total;
                if last_tenth != Some(tenth) {
                    last_tenth = Some(tenth);
                    eprintln!("demo-data: downloading {}: {}%", backbone.file_name, tenth * 10);
                }
            }
        };
        match resolver.resolve(backbone, None, None, &mut progress) {
            Ok(resolved) => {
                eprintln!("demo-data: weights: {}", resolved.describe());
                report(&resolved.path);
                return Ok(());
            }
            Err(e) => eprintln!("demo-data: no pretrained weights: {e}"),
        }
    }
    let path = args.random_dir.join(format!("random-{}-seed{}.safetensors", backbone.name, args.seed));
    if !path.is_file() {
        std::fs::create_dir_all(&args.random_dir)
            .with_context(|| format!("cannot create {}", args.random_dir.display()))?;
        random_weights::write(&backbone.arch, args.seed, &path)?;
    }
    println!("random {}", path.display());
    Ok(())
}

/// Prints the verdict line for `path`.
fn report(path: &Path) {
    let kind = if random_weights::is_demo_random(path) { "random" } else { "pretrained" };
    println!("{kind} {}", path.display());
}
