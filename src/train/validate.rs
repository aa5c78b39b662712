//! Validation while training: scores a labelled feature store (a test or
//! held-out split made with the same encoder settings) with the model in
//! eval mode, through the same post-processing and metric code as
//! `dinomaly-score` and `dinomaly-metrics`, and reports image AUROC per
//! class and their mean (and pixel AUROC when every anomalous image has a
//! mask).
//!
//! Only the classes a model was trained on are validated: all trained
//! classes for a unified model, its own class for each model of separated
//! training. A metric a class cannot define (image AUROC of a class with
//! only normal or only anomalous images, pixel AUROC without masks) is
//! named with its reason before training ([`Validator::undefined`]), since
//! it makes the mean over classes undefined too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use crate::data::mask::load_sample_mask;
use crate::data::preprocess::{Preprocess, ResizeBackend};
use crate::io::features::{FeatureMeta, FeatureStore};
use crate::metrics::pixels::{reduce, PixelSet};
use crate::metrics::report::{evaluate, ClassInput, Metric, Options, Report};
use crate::model::store_input::StoreInput;
use crate::model::Dinomaly;
use crate::score::anomaly_map::{PostProcess, PostProcessor};
use crate::{Error, Result};

/// Which number decides the best checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValMetric {
    /// Mean image AUROC over classes.
    IAuroc,
    /// Mean pixel AUROC over classes (needs masks).
    PAuroc,
}

impl ValMetric {
    fn metric(self) -> Metric {
        match self {
            ValMetric::IAuroc => Metric::IAuroc,
            ValMetric::PAuroc => Metric::PAuroc,
        }
    }

    /// The flag value (`i-auroc`, `p-auroc`).
    pub fn name(self) -> &'static str {
        match self {
            ValMetric::IAuroc => "i-auroc",
            ValMetric::PAuroc => "p-auroc",
        }
    }

    /// The metric's name in reports (`I-AUROC`, `P-AUROC`).
    pub fn label(self) -> &'static str {
        match self {
            ValMetric::IAuroc => "I-AUROC",
            ValMetric::PAuroc => "P-AUROC",
        }
    }
}

/// A labelled store ready to validate against.
pub struct Validator {
    store: FeatureStore,
    path: PathBuf,
    post: PostProcessor,
    /// Per row: the binary GT mask at the map size, for rows of the
    /// validated classes that have a mask file.
    masks: Vec<Option<Vec<bool>>>,
    map_size: (usize, usize),
}

/// The result of one validation.
pub struct Validation {
    /// The metric report (per class and mean).
    pub report: Report,
}

impl Validation {
    /// The mean of `metric` over classes, if defined.
    pub fn mean(&self, metric: ValMetric) -> Option<f64> {
        self.report.mean.iter().find(|(m, _)| *m == metric.metric()).and_then(|(_, v)| *v)
    }

    fn has_pixels(&self) -> bool {
        self.report.mean.iter().any(|(m, _)| *m == Metric::PAuroc)
    }

    /// One line for the log: means and per-class image AUROC.
    pub fn summary(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}", 100.0 * v));
        let mut text = format!("I-AUROC {}", pct(self.mean(ValMetric::IAuroc)));
        if self.has_pixels() {
            text.push_str(&format!(" P-AUROC {}", pct(self.mean(ValMetric::PAuroc))));
        }
        let classes: Vec<String> = self
            .report
            .classes
            .iter()
            .map(|c| format!("{} {}", if c.name.is_empty() { "-" } else { &c.name }, pct(c.get(Metric::IAuroc))))
            .collect();
        format!("{text} ({})", classes.join(", "))
    }

    /// The values as JSON: `i_auroc` (and `p_auroc` when there are masks),
    /// the means, and `classes`, the same per class; null where undefined.
    pub fn to_json(&self) -> serde_json::Value {
        let pixels = self.has_pixels();
        let values = |get: &dyn Fn(ValMetric) -> Option<f64>| {
            let mut map = serde_json::Map::new();
            map.insert("i_auroc".into(), get(ValMetric::IAuroc).into());
            if pixels {
                map.insert("p_auroc".into(), get(ValMetric::PAuroc).into());
            }
            map
        };
        let mut json = values(&|m| self.mean(m));
        let classes: serde_json::Map<String, serde_json::Value> =
            self.report.classes.iter().map(|c| (c.name.clone(), values(&|m| c.get(m.metric())).into())).collect();
        json.insert("classes".into(), classes.into());
        json.into()
    }
}

impl Validator {
    /// Opens `path`, which must come from the same encoder settings as the
    /// training store `train`, have labels on every record, and images of
    /// every class in `classes` (the trained classes; other classes of the
    /// store are not validated).
    pub fn open(path: &Path, train: &FeatureMeta, classes: &[String], device: Device) -> Result<Self> {
        let store = FeatureStore::open(path)?;
        let meta = store.meta();
        let same = meta.weights_sha256 == train.weights_sha256
            && meta.layers == train.layers
            && meta.crop == train.crop
            && meta.resize == train.resize
            && meta.pos_interp == train.pos_interp
            && meta.preprocess == train.preprocess
            && meta.groups == train.groups
            && meta.all_layers == train.all_layers;
        if !same {
            return Err(Error::mismatch(
                path.display().to_string(),
                "the validation store was made with other encoder settings than the training store",
            ));
        }
        for (i, r) in store.records().iter().enumerate() {
            if r.label.is_none() {
                return Err(Error::config(format!(
                    "{}: record {} ({}) has no label; validation needs labelled images",
                    path.display(),
                    i + 1,
                    r.image.display()
                )));
            }
        }
        for class in classes {
            if !store.records().iter().any(|r| r.class_name() == class) {
                return Err(Error::config(format!(
                    "{}: no images of class '{class}', which is trained",
                    path.display()
                )));
            }
        }
        let post_cfg = PostProcess::official().with_crop((meta.crop.0 as i64, meta.crop.1 as i64));
        let map_size = (post_cfg.map_size.0 as usize, post_cfg.map_size.1 as usize);
        let post = PostProcessor::new(post_cfg, device)?;
        let backend = if meta.preprocess == "tensor" { ResizeBackend::Tensor } else { ResizeBackend::Pil };
        let prep = Preprocess::new(
            (meta.resize.0 as usize, meta.resize.1 as usize),
            (meta.crop.0 as usize, meta.crop.1 as usize),
            backend,
        )?;
        let mut masks = Vec::with_capacity(store.len());
        for r in store.records() {
            let validated = classes.iter().any(|c| c == r.class_name());
            masks.push(match (validated, &r.mask) {
                (true, Some(_)) => load_sample_mask(r, &prep, map_size)?
                    // The official rule: any non-zero GT value is anomalous.
                    .map(|v| v.iter().map(|&x| x > 0.0).collect()),
                _ => None,
            });
        }
        Ok(Validator { store, path: path.to_path_buf(), post, masks, map_size })
    }

    /// The store's rows of `classes`.
    fn rows(&self, classes: &[String]) -> Vec<usize> {
        (0..self.store.len()).filter(|&i| classes.iter().any(|c| c == self.store.records()[i].class_name())).collect()
    }

    /// Images of `classes` validated: (count, anomalous).
    pub fn counts(&self, classes: &[String]) -> (usize, usize) {
        let rows = self.rows(classes);
        let anomalous = rows.iter().filter(|&&i| self.store.records()[i].label == Some(1)).count();
        (rows.len(), anomalous)
    }

    /// Pixel metrics apply to rows `rows` when there is an anomalous image
    /// and every anomalous image has a mask.
    fn pixels_apply(&self, rows: &[usize]) -> bool {
        let anomalous: Vec<usize> =
            rows.iter().copied().filter(|&i| self.store.records()[i].label == Some(1)).collect();
        !anomalous.is_empty() && anomalous.iter().all(|&i| self.masks[i].is_some())
    }

    /// Why `metric` is undefined when validating `classes` together (one
    /// reason per class that cannot define it; empty when it is defined
    /// for every class and therefore for their mean).
    pub fn undefined(&self, classes: &[String], metric: ValMetric) -> Vec<String> {
        let name = |c: &str| if c.is_empty() { "(no class)".to_string() } else { format!("'{c}'") };
        let rows = self.rows(classes);
        let mut reasons = Vec::new();
        if metric == ValMetric::PAuroc && !self.pixels_apply(&rows) {
            let missing = rows.iter().find(|&&i| self.store.records()[i].label == Some(1) && self.masks[i].is_none());
            reasons.push(match missing {
                Some(&i) => format!(
                    "P-AUROC needs a mask for every anomalous image and {} has none",
                    self.store.records()[i].image.display()
                ),
                None => "P-AUROC needs anomalous images and there are none".to_string(),
            });
            return reasons;
        }
        for class in classes {
            let mine: Vec<usize> =
                rows.iter().copied().filter(|&i| self.store.records()[i].class_name() == class).collect();
            let anomalous = mine.iter().filter(|&&i| self.store.records()[i].label == Some(1)).count();
            match metric {
                ValMetric::IAuroc if anomalous == 0 || anomalous == mine.len() => reasons.push(format!(
                    "class {} has only {} images ({}): I-AUROC needs normal and anomalous images",
                    name(class),
                    if anomalous == 0 { "normal" } else { "anomalous" },
                    mine.len()
                )),
                ValMetric::PAuroc => {
                    let pixels = mine.iter().filter_map(|&i| self.masks[i].as_ref());
                    let (mut positive, mut negative) = (false, mine.len() > anomalous);
                    for mask in pixels {
                        positive |= mask.iter().any(|&p| p);
                        negative |= mask.iter().any(|&p| !p);
                    }
                    if !(positive && negative) {
                        reasons.push(format!(
                            "class {}'s masks have no {} pixels: P-AUROC needs both",
                            name(class),
                            if positive { "normal" } else { "anomalous" }
                        ));
                    }
                }
                ValMetric::IAuroc => {}
            }
        }
        reasons
    }

    /// The validation store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scores the rows of `classes` with `model` (eval mode) and computes
    /// the metrics of those classes.
    pub fn run(&self, model: &Dinomaly, batch: usize, classes: &[String]) -> Result<Validation> {
        let meta = self.store.meta();
        let input = StoreInput::for_store(meta, &model.config().groups)?;
        let rows = self.rows(classes);
        let with_pixels = self.pixels_apply(&rows);
        let mut scores = Vec::with_capacity(rows.len());
        let mut pixel_sets: BTreeMap<String, PixelSet> = Default::default();
        let device = self.post.device();
        for chunk in rows.chunks(batch.max(1)) {
            let x = self.store.batch(chunk, Kind::Float, device)?;
            let scored = tch::no_grad(|| -> Result<_> {
                let (enc, dec) = input.with_features(&x, |f| model.forward_features_t(f, meta.grid, false))?;
                self.post.apply(&enc, &dec)
            })?;
            let batch_scores = Vec::<f32>::try_from(scored.scores.to_device(Device::Cpu))?;
            scores.extend(batch_scores);
            if with_pixels {
                let maps = scored.maps.to_device(Device::Cpu).contiguous();
                let flat = Vec::<f32>::try_from(maps.reshape([-1]))?;
                let (h, w) = self.map_size;
                let normal = vec![false; h * w];
                for (j, &row) in chunk.iter().enumerate() {
                    let class = self.store.records()[row].class_name().to_string();
                    let mask = self.masks[row].as_deref().unwrap_or(&normal);
                    let reduced = reduce(&flat[j * h * w..(j + 1) * h * w], mask, h, w)
                        .map_err(|e| Error::NonFinite(format!("validation image {}: {e}", row + 1)))?;
                    pixel_sets.entry(class).or_default().push(reduced).map_err(Error::config)?;
                }
            }
        }
        let mut by_class: BTreeMap<String, Vec<(f64, bool)>> = Default::default();
        for (&row, &s) in rows.iter().zip(&scores) {
            let r = &self.store.records()[row];
            by_class.entry(r.class_name().to_string()).or_default().push((f64::from(s), r.label == Some(1)));
        }
        let classes = by_class
            .into_iter()
            .map(|(name, images)| {
                let pixels = pixel_sets.remove(&name);
                ClassInput { name, images, pixels }
            })
            .collect();
        Ok(Validation { report: evaluate(classes, &Options::default()) })
    }
}
