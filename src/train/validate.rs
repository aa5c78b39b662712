//! Validation while training: scores a labelled feature store (a test or
//! held-out split made with the same encoder settings) with the model in
//! eval mode, through the same post-processing and metric code as
//! `dinomaly-score` and `dinomaly-metrics`, and reports image AUROC per
//! class and their mean (and pixel AUROC when every anomalous image has a
//! mask).

use tch::{Device, Kind, Tensor};

use super::trainer::StoreInput;
use crate::data::mask::load_sample_mask;
use crate::data::preprocess::{Preprocess, ResizeBackend};
use crate::io::features::{FeatureMeta, FeatureStore};
use crate::metrics::pixels::{reduce, PixelSet};
use crate::metrics::report::{evaluate, ClassInput, Metric, Options, Report};
use crate::model::{Dinomaly, Features};
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
}

/// A labelled store ready to validate against.
pub struct Validator {
    store: FeatureStore,
    post: PostProcessor,
    /// Binary GT masks at the map size, per row, when pixel metrics apply.
    masks: Option<Vec<Vec<bool>>>,
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
        self.report
            .mean
            .iter()
            .find(|(m, _)| *m == metric.metric())
            .and_then(|(_, v)| *v)
    }

    /// One line for the log: means and per-class image AUROC.
    pub fn summary(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}", 100.0 * v));
        let mut text = format!("I-AUROC {}", pct(self.mean(ValMetric::IAuroc)));
        if self.report.mean.iter().any(|(m, _)| *m == Metric::PAuroc) {
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
}

impl Validator {
    /// Opens `path`, which must come from the same encoder settings as the
    /// training store `train`, and have labels on every record.
    pub fn open(path: &std::path::Path, train: &FeatureMeta, device: Device) -> Result<Self> {
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
        let post_cfg = PostProcess::official().with_crop((meta.crop.0 as i64, meta.crop.1 as i64));
        let map_size = (post_cfg.map_size.0 as usize, post_cfg.map_size.1 as usize);
        let post = PostProcessor::new(post_cfg, device)?;
        let needs_masks = store.records().iter().all(|r| r.label == Some(0) || r.mask.is_some())
            && store.records().iter().any(|r| r.label == Some(1));
        let masks = if needs_masks {
            let backend = if meta.preprocess == "tensor" { ResizeBackend::Tensor } else { ResizeBackend::Pil };
            let prep = Preprocess::new(
                (meta.resize.0 as usize, meta.resize.1 as usize),
                (meta.crop.0 as usize, meta.crop.1 as usize),
                backend,
            )?;
            let mut masks = Vec::with_capacity(store.len());
            for r in store.records() {
                let values = load_sample_mask(r, &prep, map_size)?;
                masks.push(match values {
                    // The official rule: any non-zero GT value is anomalous.
                    Some(v) => v.iter().map(|&x| x > 0.0).collect(),
                    None => vec![false; map_size.0 * map_size.1],
                });
            }
            Some(masks)
        } else {
            None
        };
        Ok(Validator {
            store,
            post,
            masks,
            map_size,
        })
    }

    /// Scores every row with `model` (eval mode) and computes the metrics.
    pub fn run(&self, model: &Dinomaly, batch: usize) -> Result<Validation> {
        let meta = self.store.meta();
        let input = StoreInput::for_store(meta, &model.config().groups)?;
        let n = self.store.len();
        let mut scores = Vec::with_capacity(n);
        let mut pixel_sets: std::collections::BTreeMap<String, PixelSet> = Default::default();
        let device = self.post_device();
        for start in (0..n).step_by(batch.max(1)) {
            let rows: Vec<usize> = (start..(start + batch).min(n)).collect();
            let x = self.store.batch(&rows, Kind::Float, device)?;
            let scored = tch::no_grad(|| -> Result<_> {
                let (enc, dec) = match input {
                    StoreInput::Groups => model.forward_features_t(Features::Groups(&x), meta.grid, false)?,
                    StoreInput::MeanOfGroups => {
                        let single = x.mean_dim(1, true, Kind::Float);
                        model.forward_features_t(Features::Groups(&single), meta.grid, false)?
                    }
                    StoreInput::Layers => {
                        let layers: Vec<Tensor> = (0..x.size()[1]).map(|i| x.select(1, i)).collect();
                        model.forward_features_t(Features::Layers(&layers), meta.grid, false)?
                    }
                };
                self.post.apply(&enc, &dec)
            })?;
            let batch_scores = Vec::<f32>::try_from(scored.scores.to_device(Device::Cpu))?;
            scores.extend(batch_scores);
            if let Some(masks) = &self.masks {
                let maps = scored.maps.to_device(Device::Cpu).contiguous();
                let flat = Vec::<f32>::try_from(maps.reshape([-1]))?;
                let (h, w) = self.map_size;
                for (j, &row) in rows.iter().enumerate() {
                    let class = self.store.records()[row].class_name().to_string();
                    let reduced = reduce(&flat[j * h * w..(j + 1) * h * w], &masks[row], h, w)
                        .map_err(|e| Error::NonFinite(format!("validation image {}: {e}", row + 1)))?;
                    pixel_sets
                        .entry(class)
                        .or_default()
                        .push(reduced)
                        .map_err(Error::config)?;
                }
            }
        }
        let mut by_class: std::collections::BTreeMap<String, Vec<(f64, bool)>> = Default::default();
        for (r, &s) in self.store.records().iter().zip(&scores) {
            by_class
                .entry(r.class_name().to_string())
                .or_default()
                .push((f64::from(s), r.label == Some(1)));
        }
        let classes = by_class
            .into_iter()
            .map(|(name, images)| {
                let pixels = pixel_sets.remove(&name);
                ClassInput { name, images, pixels }
            })
            .collect();
        Ok(Validation {
            report: evaluate(classes, &Options::default()),
        })
    }

    fn post_device(&self) -> Device {
        self.post.device()
    }
}
