//! The CC0 texture photographs of scikit-image (brick, grass, gravel) cut
//! into tiles, as an MVTec-AD tree per texture:
//! `train/good`, `test/good`, `test/<defect>` and
//! `ground_truth/<defect>/<stem>_mask.png` (0/255 L PNG).
//!
//! Each photograph is split into a training band (top) and a test band
//! (bottom, at least 1.25 tiles high), so test tiles show surface the model
//! never saw. Tiles are cut at seeded random offsets; defects are painted
//! by [`crate::image_ops`]. Everything is deterministic for a seed.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::{DynamicImage, GrayImage, RgbImage};
use rand::{Rng, SeedableRng};

use crate::image_ops::{self, KINDS};
use crate::tree::{self, png, Staged};
use crate::wheel::Wheel;

/// The textures, by their file name in `skimage/data/`.
pub const TEXTURES: [&str; 3] = ["brick", "grass", "gravel"];

/// `demo-data textures`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scikit-image wheel (pip download scikit-image==0.26.0).
    #[arg(long)]
    pub wheel: PathBuf,
    /// Root of the MVTec-AD tree (one folder per texture).
    #[arg(long)]
    pub out: PathBuf,
    /// Tile side in pixels.
    #[arg(long, default_value_t = 128)]
    pub tile: u32,
    /// Normal training tiles per texture.
    #[arg(long, default_value_t = 100)]
    pub train: usize,
    /// Normal test tiles per texture.
    #[arg(long, default_value_t = 12)]
    pub test_good: usize,
    /// Test tiles per texture and defect kind.
    #[arg(long, default_value_t = 8)]
    pub test_defect: usize,
    /// Seed of tile positions and defects.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Builds the tree unless it exists with the same settings.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let settings = format!(
        "scikit-image textures v1: tile {} train {} test-good {} test-defect {} seed {}\n",
        args.tile, args.train, args.test_good, args.test_defect, args.seed
    );
    if tree::is_complete(&args.out, &settings) {
        eprintln!("demo-data: reusing {}", args.out.display());
        return Ok(());
    }
    if args.tile < 32 {
        bail!("--tile {} is too small (at least 32)", args.tile);
    }
    let mut wheel = Wheel::open(&args.wheel)?;
    let mut photos = Vec::new();
    for name in TEXTURES {
        let member = format!("skimage/data/{name}.png");
        let bytes = wheel.read(&member)?;
        let photo = image::load_from_memory(&bytes)
            .with_context(|| format!("{}: cannot decode {member}", args.wheel.display()))?
            .to_luma8();
        let band = test_band(photo.height(), args.tile);
        if photo.width() < args.tile || photo.height() < band + args.tile {
            bail!("{member} is {}x{}, too small for {} px tiles", photo.width(), photo.height(), args.tile);
        }
        photos.push(photo);
    }
    let staged = Staged::new(&args.out)?;
    for (index, name) in TEXTURES.iter().enumerate() {
        let photo = &photos[index];
        // Patches come from the next texture.
        let donor = &photos[(index + 1) % photos.len()];
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
        write_texture(&staged, Path::new(name), photo, donor, args, &mut rng)?;
    }
    staged.write(Path::new("SOURCE.txt"), SOURCE.as_bytes())?;
    let dest = staged.commit(&settings)?;
    eprintln!(
        "demo-data: scikit-image textures (CC0) -> {} ({} x {} px tiles per texture: {} train, {} test good, {} per defect: {})",
        dest.display(),
        args.tile,
        args.tile,
        args.train,
        args.test_good,
        args.test_defect,
        KINDS.join(", ")
    );
    Ok(())
}

/// Height of the test band at the bottom of a photograph.
fn test_band(height: u32, tile: u32) -> u32 {
    (tile + tile / 4).max(height * 5 / 16)
}

fn write_texture<R: Rng>(
    staged: &Staged,
    root: &Path,
    photo: &GrayImage,
    donor: &GrayImage,
    args: &Args,
    rng: &mut R,
) -> anyhow::Result<()> {
    let t = args.tile;
    let split = photo.height() - test_band(photo.height(), t);
    let train_rows = 0..=split - t;
    let test_rows = split..=photo.height() - t;
    let cut = |rows: &RangeInclusive<u32>, rng: &mut R| cut_tile(photo, rows, t, rng);
    for i in 0..args.train {
        let tile = cut(&train_rows, rng);
        staged.write(&root.join("train/good").join(stem(i)), &png(tile.into())?)?;
    }
    for i in 0..args.test_good {
        let tile = cut(&test_rows, rng);
        staged.write(&root.join("test/good").join(stem(i)), &png(tile.into())?)?;
    }
    for kind in KINDS {
        for i in 0..args.test_defect {
            let tile = cut(&test_rows, rng);
            let d = image_ops::paint(kind, &tile, donor, rng);
            staged.write(&root.join("test").join(kind).join(stem(i)), &png(d.image.into())?)?;
            let mask_name = format!("{i:03}_mask.png");
            staged.write(&root.join("ground_truth").join(kind).join(mask_name), &png(d.mask.into())?)?;
        }
    }
    Ok(())
}

/// A `t` x `t` tile at a random place whose top row is in `rows`, as RGB.
fn cut_tile(photo: &GrayImage, rows: &RangeInclusive<u32>, t: u32, rng: &mut impl Rng) -> RgbImage {
    let (x, y) = (rng.random_range(0..=photo.width() - t), rng.random_range(rows.clone()));
    let tile = image::imageops::crop_imm(photo, x, y, t, t).to_image();
    DynamicImage::ImageLuma8(tile).to_rgb8()
}

fn stem(i: usize) -> String {
    format!("{i:03}.png")
}

const SOURCE: &str = "\
Tiles cut from three photographs shipped in scikit-image 0.26.0
(skimage/data/), each released under the Creative Commons CC0 license
according to scikit-image's documentation (skimage.data):
  brick.png  - from CC0Textures (Bricks25), https://cc0textures.com
  grass.png  - from DeviantArt user linolafett (Grass 01), CC0
  gravel.png - from CC0Textures (Gravel04), https://cc0textures.com
The defects (scratches, pasted patches from another texture, colour spots)
and their masks are synthetic, drawn by examples/demo-data.
";
