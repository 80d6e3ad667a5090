//! The process group of a data-parallel fit as the Rust loop sees it: a Python callable that
//! runs `torch.distributed.all_reduce` on the tensor it is given (`fastai.distributed` makes
//! it). The GIL is taken for that call only; the collective itself runs inside torch's C++
//! with the GIL released by torch, so the other Python threads are not held up.

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use tch::Tensor;

use super::errors::from_pyerr;
use crate::data::shard::Shard;
use crate::train::distributed::GradSync;
use crate::{Error, Result};

pub struct PyGradSync {
    func: PyObject,
    shard: Shard,
}

impl PyGradSync {
    /// `(all_reduce, rank, world)` as `begin_fit(grad_sync=...)` takes it.
    pub fn new((func, rank, world): (PyObject, usize, usize)) -> PyResult<Self> {
        let shard = Shard::new(rank, world).map_err(super::to_pyerr)?;
        Ok(PyGradSync { func, shard })
    }
}

impl GradSync for PyGradSync {
    fn all_reduce(&self, flat: &mut Tensor) -> Result<()> {
        Python::with_gil(|py| {
            // Ctrl-C between batches stops this rank here; the launcher stops the others.
            py.check_signals().map_err(from_pyerr)?;
            let r = self
                .func
                .call1(py, (PyTensor(flat.shallow_clone()),))
                .map_err(from_pyerr)?;
            // A callable that does not reduce in place returns the sum instead.
            if let Ok(sum) = r.bind(py).extract::<PyTensor>() {
                let e = Error::torch("copying the all-reduced gradients");
                flat.f_copy_(&sum.0).map_err(e)?;
            }
            Ok(())
        })
    }
    fn world(&self) -> usize {
        self.shard.world
    }
    fn rank(&self) -> usize {
        self.shard.rank
    }
}
