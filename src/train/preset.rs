//! The paper's training settings in one word (`dinomaly-train --preset`):
//! the per-setting values of the official training scripts, next to the
//! optimizer defaults they override (`model::optim::StableAdamWConfig`).
//! Sources: official `dinomaly_{mvtec,visa,realiad}_{uni,sep}.py` at
//! c5c76d0; paper §4.1 (docs/sources.md).

use crate::model::optim::StableAdamWConfig;

/// Training protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One model for all classes.
    Unified,
    /// One model per class.
    Separated,
}

/// Per-setting defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// MVTec-AD multi-class.
    Mvtec,
    /// VisA multi-class.
    Visa,
    /// Real-IAD multi-class.
    Realiad,
    /// Class-separated training.
    Separated,
    /// ViT-L (as mvtec).
    Large,
}

/// What a preset sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetValues {
    pub mode: Mode,
    pub iterations: u64,
    /// Bottleneck dropout.
    pub dropout: f64,
}

impl Preset {
    /// The preset's values: 10,000 iterations and dropout 0.2 for MVTec-AD
    /// and VisA, 50,000 and 0.4 for Real-IAD, 5,000 per class for separated
    /// training.
    pub fn values(self) -> PresetValues {
        let (mode, iterations, dropout) = match self {
            Preset::Mvtec | Preset::Visa | Preset::Large => (Mode::Unified, 10_000, 0.2),
            Preset::Realiad => (Mode::Unified, 50_000, 0.4),
            Preset::Separated => (Mode::Separated, 5_000, 0.2),
        };
        PresetValues { mode, iterations, dropout }
    }
}

impl Mode {
    /// StableAdamW's eps of the mode: the official unified scripts use 1e-10,
    /// the separated ones 1e-8.
    pub fn eps(self) -> f64 {
        match self {
            Mode::Unified => StableAdamWConfig::unified().eps,
            Mode::Separated => StableAdamWConfig::separated().eps,
        }
    }
}
