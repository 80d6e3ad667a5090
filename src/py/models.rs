//! Debug/test bindings for the backbones: run a bare (uncut) backbone of any architecture on a
//! given state dict in its checkpoint naming, so the tests can compare its feature map with a
//! PyTorch reference.

use std::collections::HashSet;

use pyo3::prelude::*;
use tch::{Kind, Tensor};

use super::run_detached;
use crate::models::{BnMode, ParamStore};
use crate::{Error, Result};

type CheckpointKey = fn(&str) -> Option<String>;

/// Copies `state` into `store`. Keys the mapping sends to `None` are not part of the body
/// (classifier, BN counters) and are skipped; every store entry must be given exactly once.
fn load_state(store: &ParamStore, state: &[(String, Tensor)], map: CheckpointKey) -> Result<()> {
    let mut loaded = HashSet::new();
    for (key, tensor) in state {
        if let Some(target) = map(key) {
            store.assign(&target, tensor)?;
            loaded.insert(target);
        }
    }
    let missing: Vec<&str> = store
        .entries
        .iter()
        .map(|e| e.key.as_str())
        .filter(|k| !loaded.contains(*k))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Weights {
            context: "state dict".into(),
            reason: format!("{} missing key(s): {}", missing.len(), missing.join(", ")),
        });
    }
    Ok(())
}

fn features(name: &str, state: Vec<(String, Tensor)>, x: Tensor) -> Result<Tensor> {
    let spec = crate::models::arch(name)?;
    // Checked here because a libtorch error inside the infallible forward would panic.
    let size = x.size();
    if size.len() != 4 || size[1] != 3 || x.kind() != Kind::Float {
        return Err(Error::InvalidArgument(format!(
            "expected a float32 (N, 3, H, W) image batch, got {:?} of shape {size:?}",
            x.kind()
        )));
    }
    let mut store = ParamStore::new();
    let net = spec.build_body(&mut store);
    load_state(&store, &state, spec.checkpoint_key)?;
    let x = x.to_device(store.device());
    Ok(tch::no_grad(|| net.forward(&x, BnMode::EVAL)))
}

/// Builds backbone `arch`, loads `state` (a list of (key, tensor) in the checkpoint's naming)
/// and returns its feature map for `x` in eval mode.
#[pyfunction]
fn _backbone_features(
    py: Python<'_>,
    arch: &str,
    state: Vec<(String, pyo3_tch::PyTensor)>,
    x: pyo3_tch::PyTensor,
) -> PyResult<pyo3_tch::PyTensor> {
    let state: Vec<(String, Tensor)> = state.into_iter().map(|(k, t)| (k, t.0)).collect();
    let name = arch.to_string();
    run_detached(py, move || features(&name, state, x.0)).map(pyo3_tch::PyTensor)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_backbone_features, m)?)?;
    Ok(())
}
