//! `compare`: how far two `dinomaly-score` outputs of the same inputs are
//! apart (the GPU check compares a device run against a CPU run with it, so
//! that the machine it runs on needs no Python).
//!
//! Prints `key value` lines: `n`, `map_rel` (max |a - b| over all map pixels
//! divided by max |a|), `map_abs` (max |a - b|), `score_rel`
//! (max |a - b| / |a| over the scores), `score_range_rel` (max |a - b| over
//! the scores divided by their spread, max a - min a) and `spearman` (rank
//! correlation of the scores, ties ranked by position). `a` is the
//! reference (first file).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference output (JSON lines with "score" and "map").
    pub reference: PathBuf,
    /// Output to compare with it (same inputs, same order).
    pub other: PathBuf,
}

struct Scored {
    image: String,
    score: f64,
    map: PathBuf,
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<Scored>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let at = || format!("{}:{}", path.display(), i + 1);
            let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not a JSON line", at()))?;
            let score =
                v.get("score").and_then(Value::as_f64).with_context(|| format!("{}: no numeric \"score\"", at()))?;
            let map = v
                .get("map")
                .and_then(Value::as_str)
                .with_context(|| format!("{}: no \"map\" (score with --maps-dir)", at()))?;
            let image = v.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
            Ok(Scored { image, score, map: PathBuf::from(map) })
        })
        .collect()
}

/// Ranks 0..n of `x` (ties by position).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]).then(i.cmp(&j)));
    let mut r = vec![0.0; x.len()];
    for (rank, &i) in order.iter().enumerate() {
        r[i] = rank as f64;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let a = read_lines(&args.reference)?;
    let b = read_lines(&args.other)?;
    if a.len() != b.len() || a.is_empty() {
        bail!(
            "{} has {} lines and {} has {}: expected the same non-zero count",
            args.reference.display(),
            a.len(),
            args.other.display(),
            b.len()
        );
    }
    let (mut map_abs, mut map_max, mut score_rel, mut score_abs) = (0f64, 0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        if x.image != y.image {
            bail!("line order differs: {} against {}", x.image, y.image);
        }
        let mx = dinomaly::io::npy::read_f32_2d(&x.map)?;
        let my = dinomaly::io::npy::read_f32_2d(&y.map)?;
        if (mx.rows, mx.cols) != (my.rows, my.cols) {
            bail!("{}: map sizes differ ({}x{} against {}x{})", x.image, mx.rows, mx.cols, my.rows, my.cols);
        }
        for (p, q) in mx.data.iter().zip(&my.data) {
            map_abs = map_abs.max(f64::from((p - q).abs()));
            map_max = map_max.max(f64::from(p.abs()));
        }
        score_rel = score_rel.max((x.score - y.score).abs() / x.score.abs());
        score_abs = score_abs.max((x.score - y.score).abs());
    }
    let sa: Vec<f64> = a.iter().map(|s| s.score).collect();
    let sb: Vec<f64> = b.iter().map(|s| s.score).collect();
    println!("n {}", a.len());
    println!("map_rel {:.3e}", map_abs / map_max);
    println!("map_abs {map_abs:.3e}");
    println!("score_rel {score_rel:.3e}");
    let spread =
        sa.iter().copied().fold(f64::NEG_INFINITY, f64::max) - sa.iter().copied().fold(f64::INFINITY, f64::min);
    println!("score_range_rel {:.3e}", score_abs / spread);
    println!("spearman {:.4}", pearson(&ranks(&sa), &ranks(&sb)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_a_monotone_map_is_one_and_of_a_reversal_minus_one() {
        let a = [0.3, 0.1, 0.9, 0.5];
        let up: Vec<f64> = a.iter().map(|x| x * x).collect();
        let down: Vec<f64> = a.iter().map(|x| -x).collect();
        assert!((pearson(&ranks(&a), &ranks(&up)) - 1.0).abs() < 1e-12);
        assert!((pearson(&ranks(&a), &ranks(&down)) + 1.0).abs() < 1e-12);
    }
}
