//! Filling a `tch::nn::VarStore` from named tensors, strictly.
//!
//! `VarStore::load` broadcasts on copy and lets the file's dtype replace the
//! variable's (style anchors, tch hazards), so this checks every variable by
//! name, exact shape and floating dtype, converts to the variable's dtype,
//! and reports missing and unexpected keys by name. Module paths equal the
//! checkpoint keys, so no renaming happens here.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn::VarStore, Tensor};

use crate::{Error, Result};

/// Copies `named` into the variables of `vs`. Every variable must be present
/// with the same shape. A file key that matches no variable is an error
/// unless `ignorable(key)` says the model does not use it.
pub fn load_into(
    vs: &VarStore,
    named: &[(String, Tensor)],
    path: &Path,
    ignorable: impl Fn(&str) -> bool,
) -> Result<()> {
    let by_name: HashMap<&str, &Tensor> = named.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    for name in &names {
        let var = &variables[*name];
        let Some(src) = by_name.get(name.as_str()) else {
            return Err(Error::MissingKey { path: path.to_path_buf(), key: (*name).clone(), hint: String::new() });
        };
        if src.size() != var.size() {
            return Err(Error::Shape {
                path: path.to_path_buf(),
                key: (*name).clone(),
                expected: var.size(),
                found: src.size(),
            });
        }
        if !src.is_floating_point() {
            return Err(Error::format(
                path,
                format!("tensor '{name}' has dtype {:?}, expected a floating-point tensor", src.kind()),
            ));
        }
        let value = src.to_device(var.device()).to_kind(var.kind()).contiguous();
        if !all_finite(&value) {
            return Err(Error::format(path, format!("tensor '{name}' contains NaN or infinite values")));
        }
        // The variable takes the loaded storage instead of a copy of it:
        // one copy of the weights in memory instead of two, and no second
        // pass over them. Every handle on the variable (the optimizer's
        // included) shares its TensorImpl and sees the new data.
        tch::no_grad(|| {
            let mut var = var.shallow_clone();
            var.set_data(&value);
        });
    }
    for (key, _) in named {
        if !variables.contains_key(key) && !ignorable(key) {
            return Err(Error::format(
                path,
                format!("unexpected tensor '{key}' (not part of this model; wrong file or layout?)"),
            ));
        }
    }
    Ok(())
}

/// Whether every value of `t` is finite. One reduction pass: a finite sum
/// proves it; only a non-finite sum (a NaN or inf, or an overflow of huge
/// finite values) needs the exact element-wise test.
fn all_finite(t: &Tensor) -> bool {
    let sum = t.sum(tch::Kind::Double).double_value(&[]);
    sum.is_finite() || bool::try_from(t.isfinite().all()).unwrap_or(false)
}
