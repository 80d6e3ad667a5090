//! `fastai._native.Schedule` and `fastai._native.Optimizer`: what a fit's learning rates follow
//! and how its steps are taken, built by name with their own parameters (no positional tuples
//! whose third entry means one thing or another), and handed to `Learner.begin_fit`.

use pyo3::prelude::*;

use crate::train::optim::Algo;
use crate::train::schedule::Schedule;

/// The learning-rate (and momentum) schedule of one fit, as multipliers of the base rates.
#[pyclass(name = "Schedule", module = "fastai._native", frozen)]
#[derive(Clone)]
pub struct PySchedule(pub Schedule);

#[pymethods]
impl PySchedule {
    /// `fit` without `cycle_len`: the base rates throughout.
    #[staticmethod]
    fn constant() -> Self {
        PySchedule(Schedule::Constant)
    }

    /// Cosine annealing with warm restarts (`cycle_len`): the first cycle lasts `first_cycle`
    /// batches, each next one `cycle_mult` times longer.
    #[staticmethod]
    #[pyo3(signature = (*, first_cycle, cycle_mult))]
    fn cos_anneal(first_cycle: usize, cycle_mult: usize) -> Self {
        PySchedule(Schedule::CosAnneal {
            first_cycle,
            cycle_mult,
        })
    }

    /// The learning-rate range test: from 1 to `ratio` over `n_batches` batches, geometrically
    /// or (`linear`) linearly.
    #[staticmethod]
    #[pyo3(signature = (*, ratio, n_batches, linear))]
    fn lr_find(ratio: f64, n_batches: usize, linear: bool) -> Self {
        PySchedule(Schedule::LrFind {
            ratio,
            n_batches,
            linear,
        })
    }

    /// `use_clr=(div, cut_div[, mom_hi, mom_lo])` over cycles of `cycle` batches.
    #[staticmethod]
    #[pyo3(signature = (*, cycle, div, cut_div, moms=None))]
    fn clr(cycle: usize, div: f64, cut_div: f64, moms: Option<(f64, f64)>) -> Self {
        PySchedule(Schedule::Clr {
            cycle,
            div,
            cut_div,
            moms,
        })
    }

    /// `use_clr_beta=(div, pct[, mom1, mom2])` ("1cycle") over cycles of `cycle` batches.
    #[staticmethod]
    #[pyo3(signature = (*, cycle, div, pct, moms=None))]
    fn clr_beta(cycle: usize, div: f64, pct: f64, moms: Option<(f64, f64)>) -> Self {
        PySchedule(Schedule::ClrBeta {
            cycle,
            div,
            pct,
            moms,
        })
    }

    fn __repr__(&self) -> String {
        format!("Schedule.{:?}", self.0)
    }
}

/// The optimiser of one fit (fastai's `opt_fn`); learning rates and weight decays come per
/// layer group from `begin_fit`.
#[pyclass(name = "Optimizer", module = "fastai._native", frozen)]
#[derive(Clone)]
pub struct PyOptimizer(pub Algo);

#[pymethods]
impl PyOptimizer {
    /// `torch.optim.SGD` with `momentum` (no dampening, not Nesterov).
    #[staticmethod]
    #[pyo3(signature = (*, momentum))]
    fn sgd(momentum: f64) -> Self {
        PyOptimizer(Algo::Sgd { momentum })
    }

    /// `torch.optim.Adam` with `betas=(beta1, beta2)` and `eps`.
    #[staticmethod]
    #[pyo3(signature = (*, beta1, beta2, eps))]
    fn adam(beta1: f64, beta2: f64, eps: f64) -> Self {
        PyOptimizer(Algo::Adam { beta1, beta2, eps })
    }

    fn __repr__(&self) -> String {
        format!("Optimizer.{:?}", self.0)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySchedule>()?;
    m.add_class::<PyOptimizer>()?;
    Ok(())
}
