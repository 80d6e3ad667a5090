//! fastai's `custom_head`: a PyTorch module run from inside the Rust model.
//!
//! The module's parameters and buffers are handed to the model's `ParamStore` as the very
//! tensors the module holds (pyo3-tch wraps the same `at::Tensor`; the extension links the
//! libtorch of the Python `torch` package), so the Rust optimiser steps them in place,
//! freezing flips their `requires_grad`, and save/load/snapshots read and write them. The
//! forward is called with the GIL re-taken from the detached Rust loops; the graph it builds
//! joins the body's graph, and the loop's `backward` (run without the GIL, as libtorch's
//! Python engine requires) reaches both.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use tch::Tensor;

use crate::models::ExternalHead;
use crate::{Error, Result};

/// The Python side's `forward(x, train, bn_train) -> Tensor` callable and where an exception
/// it raised waits to be re-raised once the Rust loop has returned.
pub struct PyHead {
    pub forward: PyObject,
    pub name: String,
    pub raised: Arc<Mutex<Option<PyErr>>>,
}

impl ExternalHead for PyHead {
    fn forward(&self, x: &Tensor, train: bool, bn_train: bool) -> Result<Tensor> {
        Python::with_gil(|py| {
            let r = self
                .forward
                .call1(py, (PyTensor(x.shallow_clone()), train, bn_train))
                .and_then(|out| out.extract::<PyTensor>(py));
            r.map(|t| t.0).map_err(|e| {
                if let Ok(mut slot) = self.raised.lock() {
                    *slot = Some(e);
                }
                Error::Callback
            })
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
