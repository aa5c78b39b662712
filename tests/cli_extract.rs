//! `dinomaly-extract` end to end on the tiny encoder and real images: every
//! way of giving samples, what the store keeps, and each kind of bad input
//! (exit 2, one line naming the culprit, no store or temporary left).

use std::path::{Path, PathBuf};

use dinomaly::io::features::FeatureStore;
use serde_json::{json, Value};
use tch::{Device, Kind};

use crate::util::fixture::{self as fx, assert_error, entries};
use crate::util::{self, assert_code, Dir};

/// The store's records as JSON values.
fn stored_records(store: &FeatureStore) -> Vec<Value> {
    store.records().iter().map(|s| Value::Object(s.to_json())).collect()
}

/// All rows of a store as one fp32 tensor.
fn rows(store: &FeatureStore) -> tch::Tensor {
    store.all(Kind::Float, Device::Cpu).expect("read rows")
}

#[test]
fn cli_extract_json_lines_keep_records_and_metadata() {
    let dir = Dir::new("cli_extract_json");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    let mut records = fx::records(&fx::images());
    records[0]["mask"] = Value::Null;
    records[1]["nested"] = json!({"a": [1, 2]});
    let store_path = dir.join("f.safetensors");
    let out = util::run(&mut fx::extract(&weights, &store_path), &fx::lines(&records));
    assert_code(&out, 0);
    assert!(util::stdout(&out).is_empty(), "extract printed data on stdout");
    let store = FeatureStore::open(&store_path).expect("open store");
    assert_eq!(store.len(), records.len());
    // The whole store (as held in GPU memory), filled in chunks that do not
    // divide the row count: the same rows as one batch of all of them.
    let every: Vec<usize> = (0..store.len()).collect();
    let whole = store.batch(&every, tch::Kind::Float, tch::Device::Cpu).unwrap();
    for chunk in [1, 3, store.len() + 1] {
        let all = store.all_in_chunks(tch::Kind::Float, tch::Device::Cpu, chunk).unwrap();
        assert!(all.equal(&whole), "chunks of {chunk} rows");
    }
    // Every field kept, in order; a null mask is dropped (no mask).
    records[0].as_object_mut().unwrap().remove("mask");
    assert_eq!(stored_records(&store), records);
    let meta = store.meta();
    assert_eq!(meta.weights_sha256, fx::sha256(&weights));
    assert_eq!(meta.embed_dim, fx::DIM);
    assert_eq!(meta.num_heads, 1);
    assert_eq!(meta.num_registers, 4);
    assert_eq!(meta.layers, vec![0, 1, 2, 3]);
    assert_eq!(meta.groups, vec![vec![0, 1], vec![2, 3]]);
    assert_eq!((meta.resize, meta.crop, meta.grid), ((112, 112), (112, 112), (8, 8)));
    let all = rows(&store);
    assert_eq!(all.size(), vec![records.len() as i64, 2, 1 + 4 + 64, fx::DIM]);
    assert_eq!(all.kind(), Kind::Float);
    assert!(bool::try_from(all.isfinite().all()).unwrap());
    // Different images give different rows (the encoder really ran).
    assert!(f64::try_from((all.get(0) - all.get(1)).abs().max()).unwrap() > 1e-3);
    assert!(entries(dir.path()).iter().all(|n| !n.starts_with('.')), "temporary left: {:?}", entries(dir.path()));
}

#[test]
fn cli_extract_paths_from_stdin_input_file_and_dash_agree() {
    let dir = Dir::new("cli_extract_paths");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    let images = fx::images();
    let text: String = images.iter().map(|p| format!("{}\n\n", p.display())).collect();
    let list = dir.write("list.txt", &text);
    let a = dir.join("a.st");
    let b = dir.join("b.st");
    let c = dir.join("c.st");
    assert_code(&util::run(&mut fx::extract(&weights, &a), &text), 0);
    assert_code(&util::run(fx::extract(&weights, &b).arg("--input").arg(&list), ""), 0);
    assert_code(&util::run(fx::extract(&weights, &c).args(["--input", "-"]), &text), 0);
    let a = FeatureStore::open(&a).unwrap();
    let b = FeatureStore::open(&b).unwrap();
    let c = FeatureStore::open(&c).unwrap();
    let paths: Vec<PathBuf> = a.records().iter().map(|s| s.image.clone()).collect();
    assert_eq!(paths, images, "blank lines skipped, order kept");
    assert!(a.records().iter().all(|s| s.class.is_none() && s.label.is_none() && s.extra.is_empty()));
    assert_eq!(a.records(), b.records());
    assert_eq!(a.records(), c.records());
    // fp16 by default, and the same bits whichever way the paths came.
    assert_eq!(a.meta().dtype, dinomaly::io::features::StoreDtype::F16);
    assert!(rows(&a).equal(&rows(&b)));
    assert!(rows(&a).equal(&rows(&c)));
}

/// A tiny MVTec-AD tree: two classes, train/good, test/good and a defect
/// with its ground-truth masks.
fn mvtec_tree(root: &Path) {
    let images = fx::images();
    let copy = |src: &Path, dest: PathBuf| {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(src, dest).unwrap();
    };
    for (c, class) in ["bottle", "carpet"].iter().enumerate() {
        let base = root.join(class);
        copy(&images[c * 2], base.join("train/good/000.png"));
        copy(&images[c * 2 + 1], base.join("train/good/001.png"));
        copy(&images[4], base.join("test/good/000.png"));
        copy(&images[5 + c], base.join("test/crack/000.png"));
        let mask = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([if x > 40 && y > 40 { 255 } else { 0 }]));
        std::fs::create_dir_all(base.join("ground_truth/crack")).unwrap();
        mask.save(base.join("ground_truth/crack/000_mask.png")).unwrap();
    }
}

#[test]
fn cli_extract_dataset_tree() {
    let dir = Dir::new("cli_extract_dataset");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    let root = dir.join("mvtec");
    mvtec_tree(&root);
    let train = dir.join("train.st");
    let out = util::run(fx::extract(&weights, &train).arg("--dataset").arg(&root), "");
    assert_code(&out, 0);
    let store = FeatureStore::open(&train).unwrap();
    let got: Vec<(String, String, Option<u8>)> = store
        .records()
        .iter()
        .map(|s| (s.image.strip_prefix(&root).unwrap().display().to_string(), s.class_name().to_string(), s.label))
        .collect();
    // Classes in the official MVTec-AD order (textures first).
    assert_eq!(
        got,
        vec![
            ("carpet/train/good/000.png".into(), "carpet".into(), Some(0)),
            ("carpet/train/good/001.png".into(), "carpet".into(), Some(0)),
            ("bottle/train/good/000.png".into(), "bottle".into(), Some(0)),
            ("bottle/train/good/001.png".into(), "bottle".into(), Some(0)),
        ]
    );
    let test = dir.join("test.st");
    let out = util::run(
        fx::extract(&weights, &test).arg("--dataset").arg(&root).args(["--split", "test", "--classes", "carpet"]),
        "",
    );
    assert_code(&out, 0);
    let store = FeatureStore::open(&test).unwrap();
    let recs = stored_records(&store);
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0]["label"].as_u64(), recs[0]["defect"].as_str()), (Some(1), Some("crack")));
    assert!(recs[0]["mask"].as_str().unwrap().ends_with("carpet/ground_truth/crack/000_mask.png"));
    assert_eq!((recs[1]["label"].as_u64(), recs[1]["defect"].as_str()), (Some(0), Some("good")));
    assert!(recs[1].get("mask").is_none());
}

/// Runs extract with `input` on stdin into `out/f.st` and checks the
/// failure: exit 2, one stderr line with every needle, `out/` still empty.
fn assert_fails(dir: &Dir, weights: &Path, extra: &[&str], input: &str, needles: &[&str]) {
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = util::run(fx::extract(weights, &out_dir.join("f.st")).args(extra), input);
    assert_error(&out, needles);
    assert!(entries(&out_dir).is_empty(), "left behind after {needles:?}: {:?}", entries(&out_dir));
}

#[test]
fn cli_extract_bad_images_fail_cleanly() {
    let dir = Dir::new("cli_extract_bad_images");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    let good = fx::images()[0].display().to_string();
    let png = std::fs::read(&fx::images()[0]).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.join("missing.png"), "missing.png"),
        (dir.write("empty.png", b""), "empty.png"),
        (dir.write("truncated.png", &png[..png.len() / 2]), "truncated.png"),
        (dir.write("text.png", b"this is not an image\n"), "text.png"),
    ];
    for (bad, name) in &cases {
        // The bad image comes after good ones, in a later batch: whatever
        // was encoded before is not kept either.
        let input = format!("{good}\n{good}\n{}\n", bad.display());
        assert_fails(&dir, &weights, &["--batch", "2"], &input, &[name]);
    }
}

#[test]
fn cli_extract_malformed_json_names_the_line() {
    let dir = Dir::new("cli_extract_bad_json");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    let good = json!({"image": fx::images()[0]}).to_string();
    assert_fails(&dir, &weights, &[], &format!("{good}\n{good}\n{{\"image\": \"a.png\",\n"), &["stdin:3", "JSON"]);
    assert_fails(&dir, &weights, &[], &format!("{good}\n{{\"class\": \"x\"}}\n"), &["stdin:2", "image"]);
    assert_fails(&dir, &weights, &[], "{\"image\": \"a.png\", \"label\": 3}\n", &["stdin:1", "label"]);
    let file = dir.write("records.jsonl", format!("{good}\n{{\"image\": 5}}\n"));
    assert_fails(&dir, &weights, &["--input", file.to_str().unwrap()], "", &["records.jsonl:2"]);
}

#[test]
fn cli_extract_bad_weights_fail_cleanly() {
    let dir = Dir::new("cli_extract_bad_weights");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    let input = format!("{}\n", fx::images()[0].display());
    let bytes = std::fs::read(&weights).unwrap();
    let not_ckpt = dir.write("weights/notes.pth", b"just some text, not a checkpoint\n");
    assert_fails(&dir, &not_ckpt, &[], &input, &["notes.pth"]);
    let truncated = dir.write("weights/cut.safetensors", &bytes[..bytes.len() / 2]);
    assert_fails(&dir, &truncated, &[], &input, &["cut.safetensors"]);
    let missing = dir.join("weights/absent.safetensors");
    assert_fails(&dir, &missing, &[], &input, &["absent.safetensors"]);
    // A registry name fixes the architecture: ViT-S weights are 384 wide.
    let out_dir = dir.join("out");
    let out = util::run(
        util::tool("dinomaly-extract")
            .args(["-q", "--backbone", "dinov2_vits14_reg4", "--resize", "112", "--crop", "112", "--weights"])
            .arg(&weights)
            .arg("-o")
            .arg(out_dir.join("f.st")),
        &input,
    );
    assert_error(&out, &["tiny.safetensors", "384", "64"]);
    assert!(entries(&out_dir).is_empty());
}

#[test]
fn cli_extract_unusable_output_is_refused_before_any_work() {
    let dir = Dir::new("cli_extract_bad_output");
    // No weights and no readable input at all: the output is checked first,
    // so its error is the one reported.
    let weights = dir.join("absent.safetensors");
    let input = "/nonexistent/image.png\n";
    let out = util::run(&mut fx::extract(&weights, &dir.join("no/such/folder/f.st")), input);
    assert_error(&out, &["no/such/folder", "does not exist"]);
    let file = dir.write("plain-file", b"x");
    let out = util::run(&mut fx::extract(&weights, &file.join("f.st")), input);
    assert_error(&out, &["plain-file"]);
    assert_eq!(entries(dir.path()), vec!["plain-file"]);
    // A read-only folder: root writes anywhere, so this only means
    // something (and only runs) as an ordinary user.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = util::run(&mut fx::extract(&weights, &ro.join("f.st")), input);
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_error(&out, &["ro"]);
        assert!(entries(&ro).is_empty());
    }
}

#[test]
fn cli_extract_empty_input_fails() {
    let dir = Dir::new("cli_extract_empty");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    assert_fails(&dir, &weights, &[], "", &["no samples"]);
    assert_fails(&dir, &weights, &[], "\n  \n", &["no samples"]);
}

#[test]
fn cli_extract_on_error_skip_goes_on() {
    let dir = Dir::new("cli_extract_skip");
    let weights = dir.join("tiny.safetensors");
    fx::tiny_weights(&weights, 1);
    let images = fx::images();
    let empty = dir.write("empty.png", b"");
    let text = dir.write("text.png", b"not an image");
    let input: String = [&images[0], &dir.join("missing.png"), &images[1], &empty, &text, &images[2]]
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    let store_path = dir.join("f.st");
    let out = util::run(fx::extract(&weights, &store_path).args(["--on-error", "skip", "--batch", "2"]), &input);
    assert_code(&out, 0);
    let err = util::stderr(&out);
    for name in ["missing.png", "empty.png", "text.png"] {
        assert_eq!(
            err.lines().filter(|l| l.contains(name) && l.contains("skipped")).count(),
            1,
            "{name} not reported once:\n{err}"
        );
    }
    let store = FeatureStore::open(&store_path).unwrap();
    let kept: Vec<PathBuf> = store.records().iter().map(|s| s.image.clone()).collect();
    assert_eq!(kept, images[..3].to_vec());
    // Rows follow their records: equal to a store of only the good images.
    let clean = dir.join("clean.st");
    let good: String = images[..3].iter().map(|p| format!("{}\n", p.display())).collect();
    assert_code(&util::run(&mut fx::extract(&weights, &clean), &good), 0);
    assert!(rows(&store).equal(&rows(&FeatureStore::open(&clean).unwrap())));

    // Nothing readable at all: an error, and no empty store.
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = util::run(
        fx::extract(&weights, &out_dir.join("f.st")).args(["--on-error", "skip"]),
        &format!("{}\n", empty.display()),
    );
    assert_code(&out, 2);
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));
}
