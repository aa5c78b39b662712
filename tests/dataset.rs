//! Dataset layouts listed from tiny synthetic trees in the exact official
//! structures (file contents do not matter for listing).

use std::path::{Path, PathBuf};

use dinomaly::data::dataset::{list, Layout, Split};
use dinomaly::data::record::Sample;
use dinomaly::Error;

/// Creates empty files (and their folders) under `root`.
fn touch(root: &Path, files: &[&str]) {
    for f in files {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"").unwrap();
    }
}

/// (image relative to root, class, label, mask relative to root, defect).
fn summary(root: &Path, samples: &[Sample]) -> Vec<(String, String, u8, Option<String>, String)> {
    let rel = |p: &PathBuf| p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    samples
        .iter()
        .map(|s| {
            (
                rel(&s.image),
                s.class.clone().unwrap(),
                s.label.unwrap(),
                s.mask.as_ref().map(rel),
                s.extra["defect"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn mvtec_tree(root: &Path) {
    touch(
        root,
        &[
            "license.txt",
            "bottle/train/good/001.png",
            "bottle/train/good/000.png",
            "bottle/train/good/.hidden.png",
            "bottle/train/good/notes.txt",
            "bottle/test/good/000.png",
            "bottle/test/broken_large/001.png",
            "bottle/test/broken_large/000.png",
            "bottle/ground_truth/broken_large/001_mask.png",
            "bottle/ground_truth/broken_large/000_mask.png",
            // MVTecDataset globs *.png, *.JPG and *.bmp, case-sensitively.
            "bottle/test/contamination/002.bmp",
            "bottle/test/contamination/003.JPG",
            "bottle/test/contamination/004.jpg",
            "bottle/ground_truth/contamination/002_mask.png",
            "bottle/ground_truth/contamination/003_mask.png",
            "wood/train/good/000.png",
            "wood/test/good/000.png",
            "wood/test/hole/000.png",
            "wood/ground_truth/hole/000_mask.png",
        ],
    );
}

#[test]
fn mvtec_train_and_test_pairing_and_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    mvtec_tree(root);
    let train = list(root, Layout::Mvtec, Split::Train, &[]).unwrap();
    // Official class order: wood (5th) before bottle (6th).
    assert_eq!(
        summary(root, &train),
        vec![
            ("wood/train/good/000.png".into(), "wood".into(), 0, None, "good".into()),
            ("bottle/train/good/000.png".into(), "bottle".into(), 0, None, "good".into()),
            ("bottle/train/good/001.png".into(), "bottle".into(), 0, None, "good".into()),
        ]
    );
    let test = list(root, Layout::Mvtec, Split::Test, &names(&["bottle"])).unwrap();
    let m = |s: &str| Some(s.to_string());
    assert_eq!(
        summary(root, &test),
        vec![
            (
                "bottle/test/broken_large/000.png".into(),
                "bottle".into(),
                1,
                m("bottle/ground_truth/broken_large/000_mask.png"),
                "broken_large".into()
            ),
            (
                "bottle/test/broken_large/001.png".into(),
                "bottle".into(),
                1,
                m("bottle/ground_truth/broken_large/001_mask.png"),
                "broken_large".into()
            ),
            (
                "bottle/test/contamination/002.bmp".into(),
                "bottle".into(),
                1,
                m("bottle/ground_truth/contamination/002_mask.png"),
                "contamination".into()
            ),
            (
                "bottle/test/contamination/003.JPG".into(),
                "bottle".into(),
                1,
                m("bottle/ground_truth/contamination/003_mask.png"),
                "contamination".into()
            ),
            ("bottle/test/good/000.png".into(), "bottle".into(), 0, None, "good".into()),
        ]
    );
    // The class filter keeps its order.
    let both = list(root, Layout::Mvtec, Split::Test, &names(&["bottle", "wood"])).unwrap();
    assert_eq!(both.last().unwrap().class.as_deref(), Some("wood"));
    // Records serialise with the extra field.
    let json = serde_json::to_string(&test[0]).unwrap();
    assert!(json.contains("\"defect\":\"broken_large\""), "{json}");
}

#[test]
fn mvtec_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    mvtec_tree(root);
    let e = list(root, Layout::Mvtec, Split::Test, &names(&["cable"])).unwrap_err().to_string();
    assert!(e.contains("unknown class 'cable'") && e.contains("found: bottle, wood"), "{e}");
    let e = list(&root.join("nope"), Layout::Mvtec, Split::Train, &[]).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("nope"), "{e}");
    // A missing mask shifts the sorted pairing: refused, naming the image.
    std::fs::remove_file(root.join("bottle/ground_truth/broken_large/000_mask.png")).unwrap();
    let e = list(root, Layout::Mvtec, Split::Test, &[]).unwrap_err().to_string();
    assert!(e.contains("2 test images but 1 masks") && e.contains("no mask for") && e.contains("000.png"), "{e}");
    // Same count but names that do not correspond.
    touch(root, &["bottle/ground_truth/broken_large/007_mask.png"]);
    let e = list(root, Layout::Mvtec, Split::Test, &[]).unwrap_err().to_string();
    assert!(e.contains("names do not match"), "{e}");
    // A defect folder without its mask folder.
    touch(root, &["wood/test/crack/000.png"]);
    let e = list(root, Layout::Mvtec, Split::Test, &names(&["wood"])).unwrap_err().to_string();
    assert!(e.contains("wood/ground_truth/crack") && e.contains("mask folder"), "{e}");
    // A class without its training folder.
    touch(root, &["tile/test/good/000.png"]);
    let e = list(root, Layout::Mvtec, Split::Train, &names(&["tile"])).unwrap_err().to_string();
    assert!(e.contains("tile/train") && e.contains("training folder"), "{e}");
}

#[test]
fn visa_reorganised_tree_with_jpg_images_and_png_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    touch(
        root,
        &[
            "1cls/candle/train/good/0002.JPG",
            "1cls/candle/train/good/0001.JPG",
            "1cls/candle/test/good/0100.JPG",
            "1cls/candle/test/bad/0003.JPG",
            "1cls/candle/test/bad/0000.JPG",
            "1cls/candle/ground_truth/bad/0003.png",
            "1cls/candle/ground_truth/bad/0000.png",
            "1cls/pcb1/train/good/0000.JPG",
            "1cls/pcb1/test/good/0000.JPG",
        ],
    );
    for r in [root.to_path_buf(), root.join("1cls")] {
        let test = list(&r, Layout::Visa, Split::Test, &[]).unwrap();
        let s = summary(&r, &test);
        let p = if r == root { "1cls/" } else { "" };
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].0, format!("{p}candle/test/bad/0000.JPG"));
        assert_eq!(s[0].3, Some(format!("{p}candle/ground_truth/bad/0000.png")));
        assert_eq!(s[1].3, Some(format!("{p}candle/ground_truth/bad/0003.png")));
        assert_eq!((s[2].2, s[2].4.as_str()), (0, "good"));
        assert_eq!(s[3].1, "pcb1");
        assert!(test.iter().all(|t| !t.extra.contains_key("binarize_mask")));
    }
    let train = list(root, Layout::Visa, Split::Train, &names(&["candle"])).unwrap();
    assert_eq!(summary(root, &train)[0].0, "1cls/candle/train/good/0001.JPG");
}

#[test]
fn visa_raw_download_through_the_split_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let csv = "object,split,label,image,mask\n\
        candle,train,normal,candle/Data/Images/Normal/0836.JPG,\n\
        candle,test,anomaly,candle/Data/Images/Anomaly/010.JPG,candle/Data/Masks/Anomaly/010.png\n\
        candle,train,normal,candle/Data/Images/Normal/0451.JPG,\n\
        candle,test,normal,candle/Data/Images/Normal/0001.JPG,\n\
        candle,test,anomaly,candle/Data/Images/Anomaly/002.JPG,candle/Data/Masks/Anomaly/002.png\n\
        capsules,train,normal,capsules/Data/Images/Normal/0000.JPG,\n";
    touch(
        root,
        &[
            "candle/Data/Images/Normal/0836.JPG",
            "candle/Data/Images/Normal/0451.JPG",
            "candle/Data/Images/Normal/0001.JPG",
            "candle/Data/Images/Anomaly/010.JPG",
            "candle/Data/Images/Anomaly/002.JPG",
            "candle/Data/Masks/Anomaly/010.png",
            "candle/Data/Masks/Anomaly/002.png",
            "capsules/Data/Images/Normal/0000.JPG",
        ],
    );
    std::fs::create_dir_all(root.join("split_csv")).unwrap();
    std::fs::write(root.join("split_csv/1cls.csv"), csv).unwrap();
    let train = list(root, Layout::Visa, Split::Train, &[]).unwrap();
    let s = summary(root, &train);
    assert_eq!(
        s.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect::<Vec<_>>(),
        vec![
            ("candle/Data/Images/Normal/0451.JPG", "candle"),
            ("candle/Data/Images/Normal/0836.JPG", "candle"),
            ("capsules/Data/Images/Normal/0000.JPG", "capsules"),
        ]
    );
    let test = list(root, Layout::Visa, Split::Test, &names(&["candle"])).unwrap();
    let s = summary(root, &test);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].0, "candle/Data/Images/Anomaly/002.JPG");
    assert_eq!(s[0].3.as_deref(), Some("candle/Data/Masks/Anomaly/002.png"));
    assert_eq!((s[0].2, s[0].4.as_str()), (1, "bad"));
    assert_eq!(test[0].extra["binarize_mask"], true);
    assert_eq!((s[2].2, s[2].4.as_str(), s[2].3.clone()), (0, "good", None));
    // A class present only in other splits still counts as known.
    assert!(list(root, Layout::Visa, Split::Test, &names(&["capsules"])).unwrap().is_empty());

    std::fs::remove_file(root.join("candle/Data/Masks/Anomaly/010.png")).unwrap();
    let e = list(root, Layout::Visa, Split::Test, &[]).unwrap_err().to_string();
    assert!(e.contains("010.png") && e.contains("mask listed in the split csv"), "{e}");
    std::fs::write(root.join("split_csv/1cls.csv"), "object,split,label,image,mask\ncandle,test,broken,a.JPG,\n")
        .unwrap();
    let e = list(root, Layout::Visa, Split::Test, &[]).unwrap_err().to_string();
    assert!(e.contains("1cls.csv:2") && e.contains("'broken'"), "{e}");
}

fn realiad_entry(anomaly: &str, image: &str, mask: Option<&str>) -> serde_json::Value {
    serde_json::json!({"category": "audiojack", "anomaly_class": anomaly, "image_path": image, "mask_path": mask})
}

#[test]
fn realiad_json_lists_with_ok_label_and_relative_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let views: Vec<String> = (1..=5).map(|c| format!("OK/S0001/audiojack_0001_OK_C{c}_20231021130449.jpg")).collect();
    let bad_img = "NG/AK/S0002/audiojack_0002_NG_AK_C3_20231021131015.jpg";
    let bad_mask = "NG/AK/S0002/audiojack_0002_NG_AK_C3_20231021131015.png";
    let doc = serde_json::json!({
        "meta": {"prefix": "", "normal_class": "OK"},
        "train": views.iter().map(|v| realiad_entry("OK", v, None)).collect::<Vec<_>>(),
        "test": [realiad_entry("AK", bad_img, Some(bad_mask)), realiad_entry("OK", &views[4], None)],
    });
    std::fs::create_dir_all(root.join("realiad_jsons/realiad_jsons")).unwrap();
    std::fs::write(root.join("realiad_jsons/realiad_jsons/audiojack.json"), doc.to_string()).unwrap();
    let mut files: Vec<String> = views.iter().map(|v| format!("realiad_1024/audiojack/{v}")).collect();
    files.push(format!("realiad_1024/audiojack/{bad_img}"));
    files.push(format!("realiad_1024/audiojack/{bad_mask}"));
    touch(root, &files.iter().map(String::as_str).collect::<Vec<_>>());

    let train = list(root, Layout::Realiad, Split::Train, &[]).unwrap();
    assert_eq!(train.len(), 5, "all five camera views");
    let s = summary(root, &train);
    assert_eq!(s[2].0, format!("realiad_1024/audiojack/{}", views[2]));
    assert_eq!((s[2].2, s[2].4.as_str()), (0, "OK"));
    let test = list(root, Layout::Realiad, Split::Test, &names(&["audiojack"])).unwrap();
    let s = summary(root, &test);
    assert_eq!(s[0].3, Some(format!("realiad_1024/audiojack/{bad_mask}")));
    assert_eq!((s[0].2, s[0].4.as_str()), (1, "AK"));
    assert_eq!((s[1].2, s[1].3.clone()), (0, None));

    let e = list(root, Layout::Realiad, Split::Test, &names(&["toy"])).unwrap_err().to_string();
    assert!(e.contains("unknown class 'toy'") && e.contains("audiojack"), "{e}");
    std::fs::remove_file(root.join(format!("realiad_1024/audiojack/{bad_mask}"))).unwrap();
    let e = list(root, Layout::Realiad, Split::Test, &[]).unwrap_err().to_string();
    assert!(e.contains("mask listed in the Real-IAD json"), "{e}");
    let doc = serde_json::json!({"train": [], "test": [realiad_entry("AK", bad_img, None)]});
    std::fs::write(root.join("realiad_jsons/realiad_jsons/audiojack.json"), doc.to_string()).unwrap();
    let e = list(root, Layout::Realiad, Split::Test, &[]).unwrap_err().to_string();
    assert!(e.contains("\"test\"[0]") && e.contains("mask_path"), "{e}");
    // One level of realiad_jsons is accepted too.
    let flat = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(flat.path().join("realiad_jsons")).unwrap();
    std::fs::create_dir_all(flat.path().join("realiad_1024/audiojack")).unwrap();
    std::fs::write(flat.path().join("realiad_jsons/audiojack.json"), r#"{"train": [], "test": []}"#).unwrap();
    assert!(list(flat.path(), Layout::Realiad, Split::Train, &[]).unwrap().is_empty());
}

#[test]
fn folder_layout_with_optional_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    touch(
        root,
        &[
            "widget/good/b.png",
            "widget/good/a.jpg",
            "widget/scratch/s1.png",
            "widget/scratch/s10.png",
            "widget/ground_truth/scratch/s1_mask.png",
            "widget/ground_truth/scratch/s10_mask.png",
            "widget/dent/d1.PNG",
            "gadget/good/x.bmp",
        ],
    );
    let train = list(root, Layout::Folder, Split::Train, &[]).unwrap();
    assert_eq!(
        summary(root, &train).iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        vec!["gadget/good/x.bmp", "widget/good/a.jpg", "widget/good/b.png"]
    );
    let test = list(root, Layout::Folder, Split::Test, &names(&["widget"])).unwrap();
    let s = summary(root, &test);
    assert_eq!(s.len(), 5);
    assert_eq!((s[2].0.as_str(), s[2].2, s[2].3.clone()), ("widget/dent/d1.PNG", 1, None));
    assert_eq!(s[3].3.as_deref(), Some("widget/ground_truth/scratch/s1_mask.png"));
    assert_eq!(s[4].3.as_deref(), Some("widget/ground_truth/scratch/s10_mask.png"));
    assert_eq!(s[4].4, "scratch");

    // A root holding good/ directly is one class named after the folder.
    let single = list(&root.join("widget"), Layout::Folder, Split::Test, &[]).unwrap();
    assert_eq!(single.len(), 5);
    assert!(single.iter().all(|s| s.class.as_deref() == Some("widget")));

    // With a mask folder, every anomalous image needs its mask.
    touch(root, &["widget/scratch/s2.png"]);
    let e = list(root, Layout::Folder, Split::Test, &[]).unwrap_err().to_string();
    assert!(e.contains("no mask for") && e.contains("s2.png"), "{e}");
    let e = list(root, Layout::Folder, Split::Train, &names(&["thing"])).unwrap_err().to_string();
    assert!(e.contains("unknown class 'thing'"), "{e}");
    touch(root, &["broken_only/dent/a.png"]);
    let e = list(root, Layout::Folder, Split::Train, &names(&["broken_only"])).unwrap_err().to_string();
    assert!(e.contains("broken_only/good"), "{e}");
}
