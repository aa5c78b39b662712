//! The elpv-dataset solar cells as two generic-folder trees:
//! `<out>/train/<class>/good` and `<out>/test/<class>/{good,defective}`,
//! with class = the cell type (mono, poly).
//!
//! `elpv_dataset/data/labels.csv` gives, per 300x300 image, the defect
//! probability experts assigned (0, 1/3, 2/3 or 1) and the cell type.
//! Probability 0 is normal and 1 anomalous; the uncertain 1/3 and 2/3 cells
//! are left out. The images have no defect masks, so the demo reports
//! image-level metrics only. A deterministic (seeded) subset keeps the demo
//! fast. The dataset is CC BY-NC-SA 4.0: it is read from the wheel on the
//! user's machine and never committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::tree::{self, Staged};
use crate::wheel::Wheel;

const LABELS: &str = "elpv_dataset/data/labels.csv";
const IMAGES_PREFIX: &str = "elpv_dataset/data/";
/// Folder of the anomalous test images.
const DEFECT: &str = "defective";

/// `demo-data elpv`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The elpv-dataset wheel (pip download elpv-dataset==1.0.0.post1).
    #[arg(long)]
    pub wheel: PathBuf,
    /// Folder receiving train/ and test/.
    #[arg(long)]
    pub out: PathBuf,
    /// Normal training images per class.
    #[arg(long, default_value_t = 150)]
    pub train: usize,
    /// Normal test images per class.
    #[arg(long, default_value_t = 30)]
    pub test_good: usize,
    /// Defective test images per class.
    #[arg(long, default_value_t = 30)]
    pub test_defect: usize,
    /// Seed of the subset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One row of labels.csv.
struct Cell {
    /// Path inside the wheel's data folder, e.g. `images/cell0001.png`.
    image: String,
    probability: f64,
    class: String,
}

/// Builds the trees unless they exist with the same settings.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let settings = format!(
        "elpv-dataset subset v1: train {} test-good {} test-defect {} seed {}\n",
        args.train, args.test_good, args.test_defect, args.seed
    );
    if tree::is_complete(&args.out, &settings) {
        eprintln!("demo-data: reusing {}", args.out.display());
        return Ok(());
    }
    let mut wheel = Wheel::open(&args.wheel)?;
    let labels = wheel.read(LABELS)?;
    let cells = parse_labels(&String::from_utf8_lossy(&labels))?;
    let mut by_class: BTreeMap<&str, (Vec<&Cell>, Vec<&Cell>)> = BTreeMap::new();
    let mut uncertain = 0usize;
    for cell in &cells {
        let entry = by_class.entry(cell.class.as_str()).or_default();
        if cell.probability == 0.0 {
            entry.0.push(cell);
        } else if cell.probability == 1.0 {
            entry.1.push(cell);
        } else {
            uncertain += 1;
        }
    }
    let staged = Staged::new(&args.out)?;
    let mut summary = Vec::new();
    for (index, (class, (normal, defective))) in by_class.iter_mut().enumerate() {
        let want_normal = args.train + args.test_good;
        if normal.len() < want_normal || defective.len() < args.test_defect {
            bail!(
                "{LABELS}: class {class} has {} normal and {} defective cells, fewer than the {} and {} asked for",
                normal.len(),
                defective.len(),
                want_normal,
                args.test_defect
            );
        }
        // labels.csv is in file order; the shuffle is seeded per class.
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
        normal.shuffle(&mut rng);
        defective.shuffle(&mut rng);
        let (test_good, rest) = normal.split_at(args.test_good);
        let groups = [
            (Path::new("train").join(class).join("good"), &rest[..args.train]),
            (Path::new("test").join(class).join("good"), test_good),
            (Path::new("test").join(class).join(DEFECT), &defective[..args.test_defect]),
        ];
        for (dir, chosen) in groups {
            for cell in chosen {
                let bytes = wheel.read(&format!("{IMAGES_PREFIX}{}", cell.image))?;
                let name = Path::new(&cell.image)
                    .file_name()
                    .with_context(|| format!("{LABELS}: no file name in {}", cell.image))?;
                staged.write(&dir.join(name), &bytes)?;
            }
        }
        summary.push(format!(
            "{class}: {} train, {} test good, {} test {DEFECT}",
            args.train, args.test_good, args.test_defect
        ));
    }
    staged.write(Path::new("SOURCE.txt"), SOURCE.as_bytes())?;
    let dest = staged.commit(&settings)?;
    eprintln!(
        "demo-data: elpv-dataset -> {} ({}; {uncertain} cells with defect probability 1/3 or 2/3 left out)",
        dest.display(),
        summary.join("; ")
    );
    Ok(())
}

/// Parses labels.csv: whitespace-separated path, probability, type.
fn parse_labels(text: &str) -> anyhow::Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let [image, probability, class] = fields[..] else {
            bail!("{LABELS} line {}: expected path, probability, type; got {line:?}", n + 1);
        };
        let probability: f64 =
            probability.parse().with_context(|| format!("{LABELS} line {}: bad probability {probability:?}", n + 1))?;
        if !(0.0..=1.0).contains(&probability) {
            bail!("{LABELS} line {}: probability {probability} is not in [0, 1]", n + 1);
        }
        cells.push(Cell { image: image.to_string(), probability, class: class.to_string() });
    }
    if cells.is_empty() {
        bail!("{LABELS}: no rows");
    }
    Ok(cells)
}

const SOURCE: &str = "\
Images from the elpv-dataset package 1.0.0.post1 (read from its wheel):
C. Buerhop-Lutz, S. Deitsch, A. Maier, F. Gallwitz, S. Berger, B. Doll,
J. Hauch, C. Camus, C. J. Brabec, \"A Benchmark for Visual Identification of
Defective Solar Cells in Electroluminescence Imagery\", EU PVSEC 2018;
https://github.com/zae-bayern/elpv-dataset (cite the publications its
README lists). License: CC BY-NC-SA 4.0 (non-commercial, share-alike).
Defect probability 0 -> good, 1 -> defective; 1/3 and 2/3 left out.
";
