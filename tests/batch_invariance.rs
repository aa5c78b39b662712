//! An input's score and map do not depend on the batch it is scored in:
//! each of the shared images (and of the store's rows), scored alone, is bit
//! for bit the same input scored in a batch of eight at each of the eight
//! positions, and in a short batch; and through `dinomaly-score`, a run with
//! `--batch 8` is byte for byte its eight one-input shards (issue 13: on an
//! AMD EPYC with AVX2 and no AVX-512 an image's score moved in the last bits
//! with its neighbours, so shards did not concatenate to the single run).

use std::path::Path;

use dinomaly::cli::args::Precision;
use dinomaly::data::preprocess::load_image;
use dinomaly::io::features::FeatureStore;
use dinomaly::score::scorer::{Scorer, ScorerRequest};
use dinomaly::score::ScoredBatch;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::util::fixture::{self as fx, parse_lines};
use crate::util::{self, assert_code, Dir};

/// The fixed batch shape handed to the scorer (used on devices that run a
/// batch at once; the CPU runs one input at a time whatever it is).
const BATCH: usize = 8;

fn open(features_only: bool) -> Scorer {
    let shared = fx::shared();
    Scorer::open(
        &ScorerRequest {
            checkpoint: shared.ckpt.clone(),
            kind: None,
            // No encoder runs on store rows, so --weights is refused there.
            weights: (!features_only).then(|| shared.weights.clone()),
            layers: Vec::new(),
            map_size: None,
            max_ratio: None,
            features_only,
            precision: Precision::Fp32,
            quiet: true,
            tool: "batch-invariance".into(),
        },
        Device::Cpu,
    )
    .expect("open the shared checkpoint")
}

/// Each input's score and map as bits.
fn bits(scored: &ScoredBatch) -> Vec<(u32, Vec<u32>)> {
    let maps = scored.maps.to_kind(Kind::Float).contiguous();
    let scores = Vec::<f32>::try_from(scored.scores.to_kind(Kind::Float)).unwrap();
    scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let map = Vec::<f32>::try_from(maps.get(i as i64).reshape([-1])).unwrap();
            (s.to_bits(), map.iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}

/// Scores every input alone, then in batches of all of them rotated so
/// that each input takes every position, then the first three as a short
/// batch; every result must be the input's alone, bit for bit.
fn assert_batch_invariant(inputs: &[Tensor], score: impl Fn(&Tensor) -> ScoredBatch, what: &str) {
    let n = inputs.len();
    assert_eq!(n, 8, "the shared fixture has eight inputs");
    let stack = |order: &[usize]| Tensor::stack(&order.iter().map(|&i| &inputs[i]).collect::<Vec<_>>(), 0);
    let alone: Vec<(u32, Vec<u32>)> = (0..n).map(|i| bits(&score(&stack(&[i]))).remove(0)).collect();
    // Not all equal: the comparison below can tell inputs apart.
    assert!(alone.iter().any(|a| a.0 != alone[0].0), "{what}: every input scored the same");
    let check = |order: &[usize]| {
        let got = bits(&score(&stack(order)));
        assert_eq!(got.len(), order.len());
        for (position, (&i, result)) in order.iter().zip(&got).enumerate() {
            let expected = &alone[i];
            let differing = result.1.iter().zip(&expected.1).filter(|(a, b)| a != b).count();
            assert!(
                result == expected,
                "{what} {i} at position {position} of a batch of {}: score {} vs {} alone, {differing} of {} map pixels differ",
                order.len(),
                f32::from_bits(result.0),
                f32::from_bits(expected.0),
                expected.1.len()
            );
        }
    };
    for shift in 0..n {
        // Input i at position (i + shift) % n.
        let order: Vec<usize> = (0..n).map(|position| (position + n - shift) % n).collect();
        check(&order);
    }
    check(&[5, 2, 7]);
}

#[test]
fn batch_invariance_images_alone_equal_every_position_in_a_batch() {
    let scorer = open(false);
    let prep = scorer.preprocess();
    let images: Vec<Tensor> = fx::images().iter().map(|p| load_image(p, &prep).expect("decode")).collect();
    assert_batch_invariant(&images, |batch| scorer.score_images(batch, BATCH).expect("score images"), "image");
}

#[test]
fn batch_invariance_store_rows_alone_equal_every_position_in_a_batch() {
    let scorer = open(true);
    let store = FeatureStore::open(&fx::shared().store).expect("open the shared store");
    let rows: Vec<Tensor> = (0..store.len())
        .map(|i| store.batch(&[i], Kind::Float, Device::Cpu).expect("read a row").squeeze_dim(0))
        .collect();
    assert_batch_invariant(
        &rows,
        |batch| scorer.score_features(batch, store.meta(), BATCH).expect("score rows"),
        "store row",
    );
}

/// The lines of a run with their map files' bytes in place of the paths
/// (the runs write to different folders).
fn with_map_bytes(stdout: &str) -> Vec<(Value, Vec<u8>)> {
    parse_lines(stdout)
        .into_iter()
        .map(|mut line| {
            let path = line.as_object_mut().unwrap().remove("map").expect("a map path");
            let bytes = std::fs::read(Path::new(path.as_str().unwrap())).expect("read a map");
            (line, bytes)
        })
        .collect()
}

/// `dinomaly-score --batch 8` over the eight inputs against each input
/// alone (`--shard i/8`), from images and from the store.
#[test]
fn batch_invariance_cli_single_run_equals_one_input_shards() {
    let shared = fx::shared();
    let dir = Dir::new("batch_invariance_cli");
    let records = fx::lines(&shared.records);
    for source in ["images", "store"] {
        let run = |maps: &str, shard: Option<usize>| {
            let maps = dir.join(&format!("{source}-{maps}"));
            std::fs::create_dir_all(&maps).unwrap();
            let mut cmd = if source == "store" {
                let mut cmd = util::tool("dinomaly-score");
                cmd.arg("-q").arg("-c").arg(&shared.ckpt);
                cmd
            } else {
                fx::score(&shared.ckpt, &shared.weights)
            };
            cmd.args(["--batch", "8", "--maps-dir", maps.to_str().unwrap()]);
            if let Some(i) = shard {
                cmd.args(["--shard", &format!("{i}/8")]);
            }
            let out = if source == "store" {
                util::run(cmd.arg("--features").arg(&shared.store), "")
            } else {
                util::run(&mut cmd, &records)
            };
            assert_code(&out, 0);
            util::stdout(&out)
        };
        let single = with_map_bytes(&run("single", None));
        assert_eq!(single.len(), 8);
        let mut shards = Vec::new();
        for i in 1..=8 {
            let lines = with_map_bytes(&run(&format!("shard{i}"), Some(i)));
            assert_eq!(lines.len(), 1, "shard {i}/8 of 8 inputs is one input");
            shards.extend(lines);
        }
        for (k, (a, b)) in single.iter().zip(&shards).enumerate() {
            assert_eq!(a.0, b.0, "{source} input {k}: the line differs between the batch of 8 and alone");
            assert!(a.1 == b.1, "{source} input {k}: the map file differs between the batch of 8 and alone");
        }
    }
}
