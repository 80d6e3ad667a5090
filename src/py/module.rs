//! A user's `torch.nn.Module` as the Rust learner's model (`Learner(data, models)`,
//! `from_model_data`, `ConvLearner.pretrained(f)` for a backbone the core does not build).
//!
//! As for a custom head (`head.rs`), the module's parameters and buffers are handed to the
//! model's `ParamStore` as the very tensors the module holds, so the Rust optimiser steps the
//! user's own module in place; only the forward is Python, called with the GIL re-taken from
//! the detached loop, once per batch.

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use tch::Tensor;

use super::errors::from_pyerr;
use crate::models::{BatchAt, ExternalModel, Part};
use crate::Result;

/// The Python side's `forward(part, x, train, bn_freeze) -> Tensor` callable
/// (`fastai.learner._ModuleRunner`), and the model's name for messages.
pub struct PyModel {
    pub forward: PyObject,
    pub name: String,
}

impl ExternalModel for PyModel {
    fn forward(
        &self,
        part: Part,
        x: &Tensor,
        train: bool,
        bn_freeze: bool,
        at: BatchAt,
    ) -> Result<Tensor> {
        let part = match part {
            Part::Whole => "model",
            Part::Body => "body",
            Part::Head => "head",
        };
        Python::with_gil(|py| {
            let out = match self
                .forward
                .call1(py, (part, PyTensor(x.shallow_clone()), train, bn_freeze))
            {
                Ok(out) => out,
                Err(e) => {
                    // The user's exception goes back unchanged, with the batch as a note.
                    let note = format!("raised by the forward of {} on {at}", self.name);
                    let _ = e.value(py).call_method1("add_note", (note,));
                    return Err(from_pyerr(e));
                }
            };
            match out.extract::<PyTensor>(py) {
                Ok(t) => Ok(t.0),
                Err(_) => {
                    let kind = out
                        .bind(py)
                        .get_type()
                        .name()
                        .map_or_else(|_| "?".to_string(), |n| n.to_string());
                    Err(from_pyerr(pyo3::exceptions::PyTypeError::new_err(format!(
                        "the forward of {} returned a {kind} on {at}; the learner needs one tensor of outputs",
                        self.name
                    ))))
                }
            }
        })
    }
}
