//! `fastai._native.Learner`: the model and its training loops, driven by `fastai.learner`.
//!
//! Every long call releases the GIL (`run_detached`); the Python callbacks it is given
//! (progress, user callbacks, a custom head) are called with the GIL re-taken, and a pending
//! Ctrl-C (`check_signals`) stops the loop after the current batch.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use tch::{Device, Tensor};

use super::convert::{CustomHead, Wrap};
use super::data::PyDataLoader;
use super::distributed::PyGradSync;
use super::errors::from_pyerr;
use super::module::PyModel;
use super::schedule::{PyOptimizer, PySchedule};
use super::{run_detached, to_pyerr};
use crate::cache::{Precision, Split};
use crate::data::shard::Shard;
use crate::models::{
    ConvNet, EntryKind, HeadChoice, Meta, ModuleNet, Naming, Net, Output, ParamStore,
};
use crate::train::distributed::{GradSync, ShardedRows};
use crate::train::learner::{BatchSource, FitConfig, Learner, LossAt, LossFn, TensorSet};
use crate::train::optim::Algo;
use crate::train::precompute::{Activations, CacheDir, CacheStatus};
use crate::train::rows::{self, Kept};
use crate::{Error, Result};

#[pyclass(name = "Learner", module = "fastai._native")]
pub struct PyLearner {
    inner: Mutex<Learner>,
}

/// Calls a Python callback from inside a detached Rust loop. A pending signal (Ctrl-C's
/// KeyboardInterrupt) or an exception raised by the callback travels out of the loop inside
/// `Error::Callback`, and `to_pyerr` raises it unchanged once the loop has returned.
struct Hook(Option<PyObject>);

impl Hook {
    fn call(
        &self,
        args: impl for<'py> IntoPyObject<'py, Target = pyo3::types::PyTuple>,
    ) -> Result<bool> {
        Python::with_gil(|py| {
            py.check_signals().map_err(from_pyerr)?;
            match &self.0 {
                None => Ok(false),
                Some(cb) => cb
                    .call1(py, args)
                    .and_then(|r| r.is_truthy(py))
                    .map_err(from_pyerr),
            }
        })
    }
}

/// The user's `learn.crit`, called from the Rust loops with the GIL taken for that call only:
/// the model's output (the same tensor, autograd graph included, so backward from the result
/// reaches the model) and the targets in, a scalar loss tensor out.
struct PyCrit(PyObject);

impl PyCrit {
    fn name(&self, py: Python<'_>) -> String {
        let obj = self.0.bind(py);
        obj.getattr("__name__")
            .or_else(|_| obj.get_type().getattr("__name__"))
            .and_then(|n| n.extract::<String>())
            .unwrap_or_else(|_| "crit".into())
    }
}

impl LossFn for PyCrit {
    fn loss(&self, out: &Tensor, y: &Tensor, at: LossAt) -> Result<Tensor> {
        let place = match at {
            LossAt::Train(b) => format!("training batch {b}"),
            LossAt::Valid(b) => format!("validation batch {b}"),
        };
        Python::with_gil(|py| {
            let args = (PyTensor(out.shallow_clone()), PyTensor(y.shallow_clone()));
            let r = match self.0.call1(py, args) {
                Ok(r) => r,
                Err(e) => {
                    // The user's exception goes back unchanged, with where it happened added
                    // as a note (shown under its traceback).
                    let note = format!("raised by learn.crit ({}) on {place}", self.name(py));
                    let _ = e.value(py).call_method1("add_note", (note,));
                    return Err(from_pyerr(e));
                }
            };
            let bad = |what: String| {
                from_pyerr(pyo3::exceptions::PyTypeError::new_err(format!(
                    "learn.crit ({}) must return the batch's loss as a scalar tensor; on {place} it returned {what}",
                    self.name(py)
                )))
            };
            let bound = r.bind(py);
            let Ok(t) = bound.extract::<PyTensor>() else {
                let shown = bound
                    .repr()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| "?".into());
                let shown: String = shown.chars().take(80).collect();
                return Err(bad(format!(
                    "a {} ({shown})",
                    bound
                        .get_type()
                        .name()
                        .map_or("?".into(), |n| n.to_string())
                )));
            };
            let t = t.0;
            if t.numel() != 1 {
                return Err(bad(format!("a tensor of shape {:?}", t.size())));
            }
            if matches!(at, LossAt::Train(_)) && !t.requires_grad() {
                return Err(bad(
                    "a tensor that does not depend on the model's output (no gradient flows back)"
                        .into(),
                ));
            }
            t.f_reshape([] as [i64; 0])
                .map_err(Error::torch("reading the loss learn.crit returned"))
        })
    }
}

/// The learner, unless another call holds it. A learner already in use (e.g. `save` called
/// from a callback of a running `fit`) is an error, not a deadlock.
fn locked(inner: &Mutex<Learner>) -> Result<MutexGuard<'_, Learner>> {
    inner.try_lock().map_err(|e| match e {
        TryLockError::WouldBlock => Error::Busy {
            what: "the learner",
        },
        TryLockError::Poisoned(_) => {
            Error::internal("the learner was left inconsistent by a panic in an earlier call")
        }
    })
}

impl PyLearner {
    /// Runs `f` on the learner without the GIL. The mutex is taken inside (tch tensors are
    /// Send but not Sync, so only the mutex may cross into the detached closure).
    fn detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Learner) -> Result<T> + Send,
    ) -> PyResult<T> {
        run_detached(py, || f(&mut *locked(&self.inner)?))
    }

    /// Loads `state` (keys named as `naming` says) into the model, without the GIL; strict.
    fn load_checkpoint(
        &self,
        py: Python<'_>,
        state: Vec<(String, PyTensor)>,
        naming: Naming,
        source: &str,
    ) -> PyResult<()> {
        let entries: Vec<(String, Tensor)> = state.into_iter().map(|(k, t)| (k, t.0)).collect();
        self.detached(py, move |l| match (naming, &l.net) {
            (Naming::Flat, net) => net.load_state(&entries, source),
            (Naming::Published, Net::Conv(n)) => n.load_checkpoint(&entries, naming, source),
            (Naming::Published, Net::Module(_)) => Err(Error::InvalidArgument(
                "a user's module loads its pretrained weights itself".into(),
            )),
        })
    }

    /// Reads the native network (the architectures this crate builds), for what only it has.
    fn conv<T>(&self, what: &str, f: impl FnOnce(&ConvNet) -> T) -> PyResult<T> {
        match &self.lock()?.net {
            Net::Conv(n) => Ok(f(n)),
            Net::Module(m) => Err(to_pyerr(Error::InvalidArgument(format!(
                "{what}: {} is a user's module, not one of the built-in architectures",
                m.name
            )))),
        }
    }

    /// The learner for a quick read or setting, with the GIL held.
    fn lock(&self) -> PyResult<MutexGuard<'_, Learner>> {
        locked(&self.inner).map_err(to_pyerr)
    }
}

pub fn tensor_set(x: PyTensor, y: PyTensor, bs: usize, shuffle: bool, seed: u64) -> TensorSet {
    TensorSet {
        x: x.0,
        y: y.0,
        bs,
        shuffle,
        seed,
    }
}

/// A batch source that can move into a detached closure.
pub type Source = Box<dyn BatchSource + Send>;

#[pymethods]
impl PyLearner {
    /// Builds body + head for `arch` with `c` outputs; `output` is 'log_softmax', 'sigmoid'
    /// or 'identity' (for a custom head: which loss to use). `xtra_cut` removes that many
    /// body children from the end. `custom_head`: (forward(x, train, bn_train) callable,
    /// layer name, [(state key, tensor, is_parameter)] of the module's state dict). `meta`:
    /// (cut, layer-group split) when the user changed the architecture's `model_meta`.
    #[new]
    #[pyo3(signature = (arch, c, *, output=Wrap(Output::LogSoftmax), ps=None, xtra_fc=None, device=Wrap(Device::Cpu), xtra_cut=0, custom_head=None, meta=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        arch: &str,
        c: i64,
        output: Wrap<Output>,
        ps: Option<Vec<f64>>,
        xtra_fc: Option<Vec<i64>>,
        device: Wrap<Device>,
        xtra_cut: usize,
        custom_head: Option<CustomHead>,
        meta: Option<(usize, usize)>,
    ) -> PyResult<Self> {
        let head = match custom_head {
            None => HeadChoice::Fastai { ps, xtra_fc },
            Some(h) => h.0,
        };
        let meta = meta.map(|(cut, split)| Meta { cut, split });
        let net = ConvNet::new(arch, c, output.0, meta, xtra_cut, head).map_err(to_pyerr)?;
        Ok(PyLearner {
            inner: Mutex::new(Learner::new(net, device.0)),
        })
    }

    /// A learner for a user's torch module: `forward(part, x, train, bn_freeze)` runs it
    /// (part 'model', or 'body' / 'head' when `splits`), `state` is its state dict as
    /// (key, tensor, is_parameter, layer group) with the module's own tensors (group
    /// `n_groups`: in no group), `output` names the loss the loop computes natively when
    /// `learn.crit` is that one, `name` names it in messages and cache files.
    #[staticmethod]
    #[pyo3(signature = (forward, state, n_groups, *, name, output=Wrap(Output::LogSoftmax), device=Wrap(Device::Cpu), splits=false))]
    #[allow(clippy::too_many_arguments)]
    fn from_module(
        forward: PyObject,
        state: Vec<(String, PyTensor, bool, usize)>,
        n_groups: usize,
        name: String,
        output: Wrap<Output>,
        device: Wrap<Device>,
        splits: bool,
    ) -> PyResult<Self> {
        if n_groups == 0 || (splits && n_groups < 2) {
            return Err(to_pyerr(Error::InvalidArgument(format!(
                "{name}: {n_groups} layer group(s); need at least {}",
                if splits { 2 } else { 1 }
            ))));
        }
        let mut store = ParamStore::new();
        for (key, t, is_param, group) in state {
            if store.get(&key).is_some() {
                return Err(to_pyerr(Error::InvalidArgument(format!(
                    "{name}: state key {key:?} appears twice"
                ))));
            }
            let group = group.min(n_groups);
            let kind = if is_param {
                EntryKind::Param
            } else {
                EntryKind::Buffer
            };
            store.insert(key, t.0, kind, group);
        }
        let model = Box::new(PyModel {
            forward,
            name: name.clone(),
        });
        let net = ModuleNet::new(store, model, output.0, n_groups, splits, name);
        Ok(PyLearner {
            inner: Mutex::new(Learner::new(net, device.0)),
        })
    }

    #[getter]
    fn arch(&self) -> PyResult<String> {
        self.conv("arch", |n| n.arch.name.to_string())
    }
    #[getter]
    fn nf(&self) -> PyResult<i64> {
        self.conv("nf", |n| n.nf)
    }
    #[getter]
    fn head_start(&self) -> PyResult<usize> {
        self.conv("head_start", |n| n.head_start)
    }
    /// Body children kept (fastai's `cut` after `cut -= xtra_cut`).
    #[getter]
    fn cut(&self) -> PyResult<usize> {
        self.conv("cut", |n| n.cut)
    }
    /// Number of layer groups.
    #[getter]
    fn n_groups(&self) -> PyResult<usize> {
        Ok(self.lock()?.net.n_groups())
    }
    /// "cpu" or "cuda" (the device type the model is on; torch.autocast takes it).
    #[getter]
    fn device_type(&self) -> PyResult<String> {
        Ok(match self.lock()?.net.device() {
            tch::Device::Cpu => "cpu".into(),
            _ => "cuda".into(),
        })
    }
    /// The model's parameters and buffers themselves (not copies): the Python layer changes
    /// their memory layout in place (`t.data = ...`), which the Rust layers then see.
    fn live_tensors(&self) -> PyResult<Vec<(String, PyTensor)>> {
        Ok(self
            .lock()?
            .net
            .store()
            .entries
            .iter()
            .map(|e| (e.key.clone(), PyTensor(e.tensor.shallow_clone())))
            .collect())
    }
    #[getter]
    fn has_custom_head(&self) -> PyResult<bool> {
        Ok(self
            .lock()?
            .net
            .conv()
            .is_some_and(ConvNet::has_custom_head))
    }
    /// The dropout probability of each block of fastai's head (None with a custom head).
    #[getter]
    fn head_ps(&self) -> PyResult<Option<Vec<f64>>> {
        Ok(self.lock()?.net.fastai_head().map(|h| h.dropouts()))
    }
    /// The final activation, in the spelling the constructor takes: 'log_softmax',
    /// 'sigmoid' or 'identity'.
    #[getter]
    fn output(&self) -> PyResult<&'static str> {
        Ok(match self.lock()?.net.output() {
            Output::LogSoftmax => "log_softmax",
            Output::Sigmoid => "sigmoid",
            Output::Identity => "identity",
        })
    }
    /// Per layer group: does it train?
    #[getter]
    fn trainable(&self) -> PyResult<Vec<bool>> {
        Ok(self.lock()?.trainable.clone())
    }
    #[getter]
    fn bn_freeze(&self) -> PyResult<bool> {
        Ok(self.lock()?.bn_freeze)
    }
    #[setter]
    fn set_bn_freeze(&self, v: bool) -> PyResult<()> {
        self.lock()?.bn_freeze = v;
        Ok(())
    }
    fn freeze_to(&self, n: i64) -> PyResult<()> {
        self.lock()?.freeze_to(n);
        Ok(())
    }
    fn freeze_all_but(&self, n: usize) -> PyResult<()> {
        self.lock()?.freeze_all_but(n);
        Ok(())
    }

    /// (key, shape, layer group, is_parameter) of every entry, in state-dict order.
    fn entries(&self) -> PyResult<Vec<(String, Vec<i64>, usize, bool)>> {
        let l = self.lock()?;
        Ok(l.net
            .store()
            .entries
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    e.tensor.size(),
                    e.group,
                    e.kind == crate::models::EntryKind::Param,
                )
            })
            .collect())
    }

    /// (layer, output shape) of each layer for one (3, sz, sz) input.
    fn summary(&self, py: Python<'_>, sz: i64) -> PyResult<Vec<(String, Vec<i64>)>> {
        self.detached(py, move |l| match &l.net {
            Net::Conv(n) => n.summary(sz),
            Net::Module(_) => Err(Error::internal("summary of a user's module runs in Python")),
        })
    }

    /// Loads a published checkpoint (torchvision names) into the body; strict.
    fn load_backbone(
        &self,
        py: Python<'_>,
        state: Vec<(String, PyTensor)>,
        source: &str,
    ) -> PyResult<()> {
        self.load_checkpoint(py, state, Naming::Published, source)
    }

    /// The full state dict (fastai 0.7 flat keys), CPU tensors.
    fn state_dict(&self, py: Python<'_>) -> PyResult<Vec<(String, PyTensor)>> {
        let state = self.detached(py, |l| Ok(l.net.state()))?;
        Ok(state.into_iter().map(|(k, t)| (k, PyTensor(t))).collect())
    }

    fn load_state_dict(
        &self,
        py: Python<'_>,
        state: Vec<(String, PyTensor)>,
        source: &str,
    ) -> PyResult<()> {
        self.load_checkpoint(py, state, Naming::Flat, source)
    }

    /// Starts a fit: a new optimiser (`opt`, default SGD with momentum 0.9) for the parameters
    /// trainable now, at `lrs` / `wds` (1 value, or one per layer group) following
    /// `schedule`. `precompute`: the epochs train the head on activations. `fused_head`:
    /// precompute epochs on the CPU may use the hand-written head step. `clip`: the gradient
    /// norm to clip to before each step (None: none). `crit`: a callable (output, target) ->
    /// scalar loss tensor used for this fit's training and validation loss instead of the one
    /// the model's output implies (None: that one). `grad_sync`: (all_reduce, rank, world) of
    /// a data-parallel fit, all_reduce(t) summing the flat tensor t over the ranks in place.
    #[pyo3(signature = (*, lrs, wds, schedule, precompute, stop_on_divergence=false,
                        fused_head=true, opt=None, clip=None, crit=None, grad_sync=None))]
    #[allow(clippy::too_many_arguments)]
    fn begin_fit(
        &self,
        lrs: Vec<f64>,
        wds: Vec<f64>,
        schedule: PySchedule,
        precompute: bool,
        stop_on_divergence: bool,
        fused_head: bool,
        opt: Option<PyOptimizer>,
        clip: Option<f64>,
        crit: Option<PyObject>,
        grad_sync: Option<(PyObject, usize, usize)>,
    ) -> PyResult<()> {
        let crit = crit.map(|c| Box::new(PyCrit(c)) as Box<dyn LossFn>);
        let grad_sync = match grad_sync {
            Some(g) => Some(Box::new(PyGradSync::new(g)?) as Box<dyn GradSync>),
            None => None,
        };
        let mut l = self.lock()?;
        // One value stands for every layer group (fastai's broadcasting).
        let groups = l.net.n_groups();
        let per_group = |v: Vec<f64>| match v.as_slice() {
            [x] => vec![*x; groups],
            _ => v,
        };
        let (lrs, wds) = (per_group(lrs), per_group(wds));
        l.begin_fit_with(
            FitConfig {
                lrs,
                wds,
                schedule: schedule.0,
                precompute,
                stop_on_divergence,
                fused_head,
                algo: opt.map_or(Algo::Sgd { momentum: 0.9 }, |o| o.0),
                clip,
                grad_sync,
            },
            crit,
        )
        .map_err(to_pyerr)
    }

    /// Ends the fit; returns (last group's lr per batch, smoothed loss per batch, momentum per
    /// batch or None when the schedule did not cycle it, training batches of one row left out).
    #[allow(clippy::type_complexity)]
    fn end_fit(&self) -> PyResult<(Vec<f64>, Vec<f64>, Option<Vec<f64>>, usize)> {
        let r = self.lock()?.end_fit();
        let moms = (!r.moms.is_empty()).then_some(r.moms);
        Ok((r.lrs, r.losses, moms, r.one_row_batches))
    }

    /// One training epoch over in-memory rows (precomputed activations).
    /// `on_batch(i, smoothed_loss)` -> truthy stops; `on_batch_begin(i)` runs before each step.
    /// Returns (trn_loss, stopped). `shard`: (rank, world) of a data-parallel fit, which reads
    /// only its slice of each global batch.
    #[pyo3(signature = (x, y, bs, seed, epoch, on_batch=None, on_batch_begin=None, shard=None))]
    #[allow(clippy::too_many_arguments)]
    fn train_epoch_tensors(
        &self,
        py: Python<'_>,
        x: PyTensor,
        y: PyTensor,
        bs: usize,
        seed: u64,
        epoch: u64,
        on_batch: Option<PyObject>,
        on_batch_begin: Option<PyObject>,
        shard: Option<(usize, usize)>,
    ) -> PyResult<(f64, bool)> {
        let rows = tensor_set(x, y, bs, true, seed);
        let src: Source = match shard {
            None => Box::new(rows),
            Some((rank, world)) => Box::new(ShardedRows {
                rows,
                shard: Shard::new(rank, world).map_err(to_pyerr)?,
            }),
        };
        self.train_epoch(py, src, epoch, on_batch, on_batch_begin)
    }

    /// Eval-mode outputs over in-memory rows: (outputs, targets, mean loss). With `kept` (a
    /// bool mask, one per row), only those rows are predicted and the loss is theirs; the
    /// outputs keep one row per input row, NaN for the others.
    #[pyo3(signature = (x, y, bs, head_only, with_loss, kept=None))]
    #[allow(clippy::too_many_arguments)]
    fn predict_tensors(
        &self,
        py: Python<'_>,
        x: PyTensor,
        y: PyTensor,
        bs: usize,
        head_only: bool,
        with_loss: bool,
        kept: Option<PyTensor>,
    ) -> PyResult<(PyTensor, PyTensor, f64)> {
        let kept = match kept {
            None => Kept::all(x.0.size().first().copied().unwrap_or(0) as usize),
            Some(mask) => Kept::from_mask(
                &Vec::<bool>::try_from(&mask.0.to_kind(tch::Kind::Bool).view(-1))
                    .map_err(|e| to_pyerr(Error::torch("reading the kept mask")(e)))?,
            ),
        };
        let (xs, ys, kept, y) = run_detached(py, move || {
            Ok((kept.select(&x.0)?, kept.select(&y.0)?, kept, y))
        })?;
        let (p, _, loss) = self.predict(
            py,
            Box::new(tensor_set(PyTensor(xs), PyTensor(ys), bs, false, 0)),
            0,
            head_only,
            with_loss,
            None,
        )?;
        let p = run_detached(py, move || kept.spread(&p.0))?;
        Ok((PyTensor(p), y, loss))
    }

    /// Outputs for one batch already in model input format: the model's inputs, or (with
    /// `head_only`) the head's (precomputed activations). `head_only=None`: images are
    /// (n, 3, H, W) and anything else is activations.
    #[pyo3(signature = (x, head_only=None))]
    fn predict_array(
        &self,
        py: Python<'_>,
        x: PyTensor,
        head_only: Option<bool>,
    ) -> PyResult<PyTensor> {
        let x = x.0;
        let out = self.detached(py, move |l| -> Result<Tensor> {
            // Images are (n, 3, H, W); anything else is activations (pooled (n, nf), or a
            // custom head's (n, C, h, w) maps, whose C is never 3 for our bodies).
            let head_only = head_only.unwrap_or(!(x.dim() == 4 && x.size()[1] == 3));
            let y = Tensor::zeros([x.size()[0]], (tch::Kind::Int64, Device::Cpu));
            let src = TensorSet {
                x,
                y,
                bs: 64,
                shuffle: false,
                seed: 0,
            };
            Ok(l.predict(&src, 0, head_only, false, &mut |_| Ok(()))?.0)
        });
        Ok(PyTensor(out?))
    }

    /// One training epoch over an image loader (augmentation drawn for `epoch`); the hooks
    /// as for `train_epoch_tensors`.
    #[pyo3(signature = (dl, epoch, on_batch=None, on_batch_begin=None))]
    fn train_epoch_loader(
        &self,
        py: Python<'_>,
        dl: PyRef<'_, PyDataLoader>,
        epoch: u64,
        on_batch: Option<PyObject>,
        on_batch_begin: Option<PyObject>,
    ) -> PyResult<(f64, bool)> {
        self.train_epoch(
            py,
            Box::new(dl.inner.clone()),
            epoch,
            on_batch,
            on_batch_begin,
        )
    }

    /// Eval-mode outputs over an image loader: (outputs, targets, mean loss, kept). Outputs
    /// and targets have one row per item; with `skip_bad`, the items the pass left out have
    /// NaN outputs (the loss is over the others) and `kept` is their bool mask, else None.
    #[pyo3(signature = (dl, epoch, with_loss, on_batch=None))]
    #[allow(clippy::type_complexity)]
    fn predict_loader(
        &self,
        py: Python<'_>,
        dl: PyRef<'_, PyDataLoader>,
        epoch: u64,
        with_loss: bool,
        on_batch: Option<PyObject>,
    ) -> PyResult<(PyTensor, PyTensor, f64, Option<PyTensor>)> {
        let loader = dl.inner.clone();
        let (p, y, loss) = self.predict(
            py,
            Box::new(loader.clone()),
            epoch,
            false,
            with_loss,
            on_batch,
        )?;
        let (p, y, kept) = run_detached(py, move || rows::one_per_item(&loader, p.0, y.0))?;
        let kept = (!kept.is_all()).then(|| PyTensor(kept.mask_tensor()));
        Ok((PyTensor(p), PyTensor(y), loss, kept))
    }

    /// The body's activations of every split (`splits`: [('trn'|'val'|'test', loader)]),
    /// each read from its cache file under `tmp_path` when it fits, else computed and written
    /// there; `data_path` is the data's PATH (image folders are named relative to it).
    /// `precision`: None (float32) or 'bfloat16' (the caller runs the call under autocast).
    /// `known`: the `body` of activations the caller holds; None is returned when they are
    /// still those of the current body. `on_batch(split, batch, batches)` follows the
    /// computation. Cache I/O and computation run without the GIL. `group`: (all_reduce,
    /// rank, world) of a data-parallel group, every rank calling this: each computes its
    /// shard, all get every row, rank 0 writes the files.
    #[pyo3(signature = (splits, tmp_path, data_path, precision=None, on_batch=None, known=None,
                        group=None))]
    #[allow(clippy::too_many_arguments)]
    fn precompute(
        &self,
        py: Python<'_>,
        splits: Vec<(Wrap<Split>, PyRef<'_, PyDataLoader>)>,
        tmp_path: std::path::PathBuf,
        data_path: std::path::PathBuf,
        precision: Option<Wrap<Precision>>,
        on_batch: Option<PyObject>,
        known: Option<String>,
        group: Option<(PyObject, usize, usize)>,
    ) -> PyResult<Option<Vec<PyActivations>>> {
        let precision = precision.map_or(Precision::Float32, |p| p.0);
        let group = group.map(PyGradSync::new).transpose()?;
        let splits: Vec<(Split, _)> = splits
            .iter()
            .map(|(split, dl)| (split.0, dl.inner.clone()))
            .collect();
        let hook = Hook(on_batch);
        let acts = self.detached(py, move |l| {
            let borrowed: Vec<_> = splits.iter().map(|(s, dl)| (*s, dl)).collect();
            let dir = CacheDir {
                dir: &tmp_path,
                data_path: &data_path,
            };
            l.precompute_splits(
                &borrowed,
                dir,
                precision,
                known.as_deref(),
                group.as_ref().map(|g| g as &dyn GradSync),
                &mut |s, b, n| hook.call((s.name(), b, n)).map(|_| ()),
            )
        })?;
        acts.map(|v| v.into_iter().map(|a| PyActivations::new(py, a)).collect())
            .transpose()
    }

    fn snapshot(&self, py: Python<'_>) -> PyResult<Vec<PyTensor>> {
        let snap = self.detached(py, |l| Ok(l.snapshot()))?;
        Ok(snap.into_iter().map(PyTensor).collect())
    }
    fn restore(&self, py: Python<'_>, snap: Vec<PyTensor>) -> PyResult<()> {
        let snap: Vec<Tensor> = snap.into_iter().map(|t| t.0).collect();
        self.detached(py, move |l| {
            l.restore(&snap);
            Ok(())
        })
    }
}

impl PyLearner {
    pub fn train_epoch(
        &self,
        py: Python<'_>,
        src: Source,
        epoch: u64,
        on_batch: Option<PyObject>,
        on_batch_begin: Option<PyObject>,
    ) -> PyResult<(f64, bool)> {
        let hook = Hook(on_batch);
        // No hook, no call: the GIL is not taken before each batch for nothing.
        let begin = on_batch_begin.map(|f| Hook(Some(f)));
        let r = self.detached(py, move |l| {
            l.train_epoch_hooked(
                &*src,
                epoch,
                &mut |b| match &begin {
                    Some(h) => h.call((b,)).map(|_| ()),
                    None => Ok(()),
                },
                &mut |b, loss| hook.call((b, loss)),
            )
        })?;
        Ok((r.trn_loss, r.stopped))
    }

    pub fn predict(
        &self,
        py: Python<'_>,
        src: Source,
        epoch: u64,
        head_only: bool,
        with_loss: bool,
        on_batch: Option<PyObject>,
    ) -> PyResult<(PyTensor, PyTensor, f64)> {
        let hook = Hook(on_batch);
        let (p, y, loss) = self.detached(py, move |l| {
            l.predict(&*src, epoch, head_only, with_loss, &mut |b| {
                hook.call((b,)).map(|_| ())
            })
        })?;
        Ok((PyTensor(p), PyTensor(y), loss))
    }

    pub fn features(
        &self,
        py: Python<'_>,
        src: Source,
        on_batch: Option<PyObject>,
    ) -> PyResult<Tensor> {
        let hook = Hook(on_batch);
        self.detached(py, move |l| {
            l.features(&*src, &mut |b| hook.call((b,)).map(|_| ()))
        })
    }
}

/// The order of a shuffled epoch of n items: the one order every shuffled source uses (image
/// loaders, in-memory rows, Python's untransformed arrays); tests replay it in PyTorch.
#[pyfunction]
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    crate::util::rng::epoch_order(n, seed, epoch)
}

/// Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): the learners run
/// under bfloat16 autocast by default on the CPU when it does.
#[pyfunction]
fn cpu_has_native_bf16() -> bool {
    crate::util::cpu::has_native_bf16()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLearner>()?;
    m.add_class::<PyActivations>()?;
    m.add_function(wrap_pyfunction!(epoch_order, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_has_native_bf16, m)?)?;
    Ok(())
}

/// The activations of one split (what `Learner.precompute` returns): one row per item, the
/// items kept, and what happened to the cache file.
#[pyclass(name = "Activations", module = "fastai._native", frozen)]
pub struct PyActivations {
    #[pyo3(get)]
    split: &'static str,
    /// One row per item: (n, nf), or (n, C, h, w) for a custom head; NaN for left-out items.
    #[pyo3(get)]
    rows: PyObject,
    /// A bool mask of the items kept, or None when every item was.
    #[pyo3(get)]
    kept: PyObject,
    /// The left-out items' paths, in index order.
    #[pyo3(get)]
    left_out: Vec<String>,
    /// 'hit', 'computed', 'recomputed' (the file could not be used), 'uncached' (it could
    /// not be written), 'memory' (items made by Python code: no file) or 'gathered'
    /// (computed with the other ranks of a group; rank 0 wrote the file).
    #[pyo3(get)]
    status: &'static str,
    /// What to tell the user about the cache file, if anything.
    #[pyo3(get)]
    warning: Option<String>,
    #[pyo3(get)]
    path: std::path::PathBuf,
    /// The body these were computed with (what `precompute(known=...)` compares).
    #[pyo3(get)]
    body: String,
    /// The rows this process ran through the body (0 when the file was read).
    #[pyo3(get)]
    computed_rows: usize,
}

impl PyActivations {
    fn new(py: Python<'_>, a: Activations) -> PyResult<Self> {
        let kept = (!a.kept.is_all()).then(|| PyTensor(a.kept.mask_tensor()));
        Ok(PyActivations {
            split: a.split.name(),
            warning: a.warning(),
            status: match a.status {
                CacheStatus::Hit => "hit",
                CacheStatus::Computed => "computed",
                CacheStatus::Recomputed(_) => "recomputed",
                CacheStatus::Uncached(_) => "uncached",
                CacheStatus::InMemory => "memory",
                CacheStatus::Gathered => "gathered",
            },
            computed_rows: a.computed_rows,
            rows: PyTensor(a.rows).into_pyobject(py)?.unbind(),
            kept: kept.into_pyobject(py)?.unbind(),
            left_out: a.left_out_names,
            path: a.path,
            body: a.body.id(),
        })
    }
}
