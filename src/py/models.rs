//! The architecture table (`ARCH_SPECS`, `NORM_STATS`), which the Python package builds its
//! arch handles, `model_meta`, statistics and weight files from, and a test binding that runs
//! a bare backbone on a state dict in its checkpoint naming.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tch::Tensor;

use super::run_detached;
use crate::models::{backbone_features, ArchSpec, Weights, ARCHS, STATS};

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
    run_detached(py, move || backbone_features(&name, &state, &x.0)).map(pyo3_tch::PyTensor)
}

/// One table entry as a dict: name, cut, split, stats (a `NORM_STATS` name) and either
/// `hub_files` (torch hub file names, current first) or `package` (pip name, module, file path).
fn spec_to_py<'py>(py: Python<'py>, spec: &ArchSpec) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", spec.name)?;
    d.set_item("cut", spec.meta.cut)?;
    d.set_item("split", spec.meta.split)?;
    d.set_item("stats", spec.stats.name)?;
    match spec.weights {
        Weights::TorchHub { files } => d.set_item("hub_files", PyTuple::new(py, files)?)?,
        Weights::Package { pip, module, file } => d.set_item("package", (pip, module, file))?,
    }
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(_backbone_features, m)?)?;
    let specs = ARCHS
        .iter()
        .map(|s| spec_to_py(py, s))
        .collect::<PyResult<Vec<_>>>()?;
    m.add("ARCH_SPECS", PyTuple::new(py, specs)?)?;
    let stats = PyDict::new(py);
    for s in STATS {
        stats.set_item(s.name, (s.mean.to_vec(), s.std.to_vec()))?;
    }
    m.add("NORM_STATS", stats)?;
    Ok(())
}
