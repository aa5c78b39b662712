//! How the rows of a feature store become the model's input: the stored
//! layer groups as they are, their mean (a single-group model on a store of
//! equal groups), or every layer (a store written with `--all-layers`).
//! Used by training, validation and scoring from a store.

use tch::Tensor;

use crate::io::features::FeatureMeta;
use crate::model::Features;
use crate::{Error, Result};

/// How store rows become model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreInput {
    /// The store's G maps are the model's groups.
    Groups,
    /// The store holds every target layer (G = layers): fed as layers.
    Layers,
    /// The store's groups equally partition the layers and the model wants
    /// a single group of all layers: the mean of the stored groups.
    MeanOfGroups,
}

impl StoreInput {
    /// Decides how a store with `store` metadata feeds a model with `groups`.
    pub fn for_store(store: &FeatureMeta, groups: &[Vec<usize>]) -> Result<Self> {
        let n = store.layers.len();
        if store.all_layers {
            return Ok(StoreInput::Layers);
        }
        if store.groups == groups {
            return Ok(StoreInput::Groups);
        }
        let single = groups.len() == 1 && groups[0].len() == n;
        if single && crate::model::fusion::is_equal_partition(&store.groups, n) {
            return Ok(StoreInput::MeanOfGroups);
        }
        Err(Error::mismatch(
            "feature store",
            format!(
                "it holds the layer groups {:?}; groups {groups:?} need a store written with \
                 `dinomaly-extract --all-layers`",
                store.groups
            ),
        ))
    }
}

impl StoreInput {
    /// Calls `f` with the model input made from store rows `batch`
    /// (B, G, T, D): the groups as they are, their mean, or the layers.
    pub fn with_features<R>(self, batch: &Tensor, f: impl FnOnce(Features<'_>) -> R) -> R {
        match self {
            StoreInput::Groups => f(Features::Groups(batch)),
            StoreInput::MeanOfGroups => {
                let single = batch.mean_dim(1, true, None);
                f(Features::Groups(&single))
            }
            StoreInput::Layers => {
                let layers: Vec<Tensor> = (0..batch.size()[1]).map(|i| batch.select(1, i)).collect();
                f(Features::Layers(&layers))
            }
        }
    }
}
