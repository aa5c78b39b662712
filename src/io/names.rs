//! The names enums take in the files the tools write (checkpoint and store
//! metadata, the training record): each enum's serde names are its table,
//! spelled as its command-line value, so renaming a Rust variant cannot
//! silently change a file format, and a file's name is read back by the same
//! table. `tests` checks, for every such enum, that every variant's file name
//! is its flag value and reads back to itself.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The name `value` is written under (its serde name).
pub fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        // Only unit variants are named this way; anything else is a bug in
        // the caller's type, shown rather than hidden.
        other => format!("{other:?}"),
    }
}

/// The variant a file names, if the table has it.
pub fn parse_name<T: DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// Every variant: file name = flag value, and it reads back.
    fn check<T: ValueEnum + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(expected: &[&str]) {
        let names: Vec<String> = T::value_variants().iter().map(name_of).collect();
        assert_eq!(names, expected);
        for v in T::value_variants() {
            let name = name_of(v);
            assert_eq!(v.to_possible_value().unwrap().get_name(), name, "{v:?}");
            assert_eq!(parse_name::<T>(&name).as_ref(), Some(v));
        }
        assert!(parse_name::<T>("no-such-name").is_none());
    }

    #[test]
    fn file_names_are_the_flag_values() {
        check::<crate::data::preprocess::ResizeBackend>(&["pil", "tensor"]);
        check::<crate::score::scorer::CheckpointKind>(&["dinomaly", "official", "anomalib"]);
        check::<crate::train::sampler::Sampling>(&["shuffle", "class-balanced"]);
        check::<crate::io::features::StoreDtype>(&["f16", "f32"]);
        // Written by earlier versions as the lowercased Debug name.
        assert_eq!(
            parse_name::<crate::train::sampler::Sampling>("classbalanced"),
            Some(crate::train::sampler::Sampling::ClassBalanced)
        );
    }
}
