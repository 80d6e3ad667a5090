//! fastai's `custom_head`: a PyTorch module run from inside the Rust model.
//!
//! The module's parameters and buffers are handed to the model's `ParamStore` as the very
//! tensors the module holds (pyo3-tch wraps the same `at::Tensor`; the extension links the
//! libtorch of the Python `torch` package), so the Rust optimiser steps them in place,
//! freezing flips their `requires_grad`, and save/load/snapshots read and write them. The
//! forward is called with the GIL re-taken from the detached Rust loops; the graph it builds
//! joins the body's graph, and the loop's `backward` (run without the GIL, as libtorch's
//! Python engine requires) reaches both.

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use tch::Tensor;

use super::errors::from_pyerr;
use crate::models::ExternalHead;
use crate::Result;

/// The Python side's `forward(x, train, bn_train) -> Tensor` callable. An exception it raises
/// travels out of the Rust loop inside the error and is re-raised unchanged.
pub struct PyHead {
    pub forward: PyObject,
    pub name: String,
}

impl ExternalHead for PyHead {
    fn forward(&self, x: &Tensor, train: bool, bn_train: bool) -> Result<Tensor> {
        Python::with_gil(|py| {
            let r = self
                .forward
                .call1(py, (PyTensor(x.shallow_clone()), train, bn_train))
                .and_then(|out| out.extract::<PyTensor>(py));
            r.map(|t| t.0).map_err(from_pyerr)
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
