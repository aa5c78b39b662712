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
//!
//! With `--trtexec`, the other side is the file TensorRT's `trtexec
//! --exportOutput` writes for a model exported by dinomaly-export: a JSON
//! list of the outputs, each with "name", "dimensions" ("NxHxW") and the
//! flat "values"; "anomaly_map" and "score" of the N inputs, in the order
//! of the reference's lines (the inputs `demo-data crops` wrote).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference output (JSON lines with "score" and "map").
    pub reference: PathBuf,
    /// Output to compare with it (same inputs, same order).
    pub other: PathBuf,
    /// The other file is trtexec's --exportOutput JSON.
    #[arg(long)]
    pub trtexec: bool,
}

/// One side's results: per image its score and map (rows, cols, values).
struct Side {
    images: Vec<String>,
    scores: Vec<f64>,
    maps: Vec<(usize, usize, Vec<f32>)>,
}

fn read_side(path: &Path) -> anyhow::Result<Side> {
    let lines = read_lines(path)?;
    let mut side = Side { images: Vec::new(), scores: Vec::new(), maps: Vec::new() };
    for s in lines {
        let m = dinomaly::io::npy::read_f32_2d(&s.map)?;
        side.images.push(s.image);
        side.scores.push(s.score);
        side.maps.push((m.rows, m.cols, m.data));
    }
    Ok(side)
}

/// trtexec's --exportOutput file: [{"name", "dimensions": "AxBxC", "values"}].
fn read_trtexec(path: &Path) -> anyhow::Result<Side> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let outputs: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("{}: not trtexec's JSON", path.display()))?;
    let output = |name: &str| -> anyhow::Result<(Vec<usize>, Vec<f64>)> {
        let o = outputs
            .iter()
            .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
            .with_context(|| format!("{}: no output {name:?}", path.display()))?;
        let dims = o
            .get("dimensions")
            .and_then(Value::as_str)
            .with_context(|| format!("{}: {name} has no \"dimensions\"", path.display()))?
            .split('x')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: {name}: bad dimensions", path.display()))?;
        let values = o
            .get("values")
            .and_then(Value::as_array)
            .with_context(|| format!("{}: {name} has no \"values\"", path.display()))?
            .iter()
            .map(|v| {
                v.as_f64().with_context(|| format!("{}: {name}: a value that is not a number: {v}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            values.len() == dims.iter().product::<usize>(),
            "{}: {name}: {} values for dimensions {dims:?}",
            path.display(),
            values.len()
        );
        Ok((dims, values))
    };
    let (map_dims, map_values) = output("anomaly_map")?;
    let (score_dims, scores) = output("score")?;
    anyhow::ensure!(
        map_dims.len() == 3 && score_dims == [map_dims[0]],
        "{}: anomaly_map {map_dims:?} and score {score_dims:?} are not (N, H, W) and (N)",
        path.display()
    );
    let (n, h, w) = (map_dims[0], map_dims[1], map_dims[2]);
    let maps =
        (0..n).map(|i| (h, w, map_values[i * h * w..(i + 1) * h * w].iter().map(|&v| v as f32).collect())).collect();
    Ok(Side { images: Vec::new(), scores, maps })
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
    let a = read_side(&args.reference)?;
    let b = if args.trtexec { read_trtexec(&args.other)? } else { read_side(&args.other)? };
    if a.scores.len() != b.scores.len() || a.scores.is_empty() {
        bail!(
            "{} has {} results and {} has {}: expected the same non-zero count",
            args.reference.display(),
            a.scores.len(),
            args.other.display(),
            b.scores.len()
        );
    }
    let (mut map_abs, mut map_max, mut score_rel, mut score_abs) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..a.scores.len() {
        let image = &a.images[i];
        if let Some(other) = b.images.get(i) {
            if other != image {
                bail!("line order differs: {image} against {other}");
            }
        }
        let ((ra, ca, ma), (rb, cb, mb)) = (&a.maps[i], &b.maps[i]);
        if (ra, ca) != (rb, cb) {
            bail!("{image}: map sizes differ ({ra}x{ca} against {rb}x{cb})");
        }
        for (p, q) in ma.iter().zip(mb) {
            map_abs = map_abs.max(f64::from((p - q).abs()));
            map_max = map_max.max(f64::from(p.abs()));
        }
        let (x, y) = (a.scores[i], b.scores[i]);
        score_rel = score_rel.max((x - y).abs() / x.abs());
        score_abs = score_abs.max((x - y).abs());
    }
    let (sa, sb) = (&a.scores, &b.scores);
    println!("n {}", sa.len());
    println!("map_rel {:.3e}", map_abs / map_max);
    println!("map_abs {map_abs:.3e}");
    println!("score_rel {score_rel:.3e}");
    let spread =
        sa.iter().copied().fold(f64::NEG_INFINITY, f64::max) - sa.iter().copied().fold(f64::INFINITY, f64::min);
    println!("score_range_rel {:.3e}", score_abs / spread);
    println!("spearman {:.4}", pearson(&ranks(sa), &ranks(sb)));
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
