//! `fastai._native.Learner`: the model and its training loops, driven by `fastai.learner`.
//!
//! Every long call releases the GIL (`run_detached`); the Python callbacks it is given
//! (progress, user callbacks, a custom head) are called with the GIL re-taken, and a pending
//! Ctrl-C (`check_signals`) stops the loop after the current batch.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use tch::{Device, Tensor};

use super::data::PyDataLoader;
use super::errors::from_pyerr;
use super::head::PyHead;
use super::{run_detached, to_pyerr};
use crate::models::{ConvNet, EntryKind, HeadChoice, Output};
use crate::train::learner::{BatchSource, FitConfig, Learner, TensorSet};
use crate::train::optim::Algo;
use crate::train::schedule::Schedule;
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

fn parse_device(d: &str) -> Result<Device> {
    match d {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => d
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown device {d:?} (use 'cpu', 'cuda' or 'cuda:N')"
                ))
            }),
    }
}

fn group_vec(v: Vec<f64>, what: &str) -> Result<[f64; 3]> {
    match v.as_slice() {
        [x] => Ok([*x; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(Error::InvalidArgument(format!(
            "{what}: expected 1 or 3 values (one per layer group), got {}",
            v.len()
        ))),
    }
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
    /// layer name, [(state key, tensor, is_parameter)] of the module's state dict).
    #[new]
    #[pyo3(signature = (arch, c, output="log_softmax", ps=None, xtra_fc=None, device="cpu", xtra_cut=0, custom_head=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        arch: &str,
        c: i64,
        output: &str,
        ps: Option<Vec<f64>>,
        xtra_fc: Option<Vec<i64>>,
        device: &str,
        xtra_cut: usize,
        custom_head: Option<(PyObject, String, Vec<(String, PyTensor, bool)>)>,
    ) -> PyResult<Self> {
        let output = match output {
            "log_softmax" => Output::LogSoftmax,
            "sigmoid" => Output::Sigmoid,
            "identity" => Output::Identity,
            o => {
                return Err(to_pyerr(Error::InvalidArgument(format!(
                    "unknown output {o:?}"
                ))))
            }
        };
        let device = parse_device(device).map_err(to_pyerr)?;
        let head = match custom_head {
            None => HeadChoice::Fastai { ps, xtra_fc },
            Some((forward, name, state)) => HeadChoice::External {
                head: Box::new(PyHead { forward, name }),
                entries: state
                    .into_iter()
                    .map(|(k, t, is_param)| {
                        (
                            k,
                            t.0,
                            if is_param {
                                EntryKind::Param
                            } else {
                                EntryKind::Buffer
                            },
                        )
                    })
                    .collect(),
            },
        };
        let net = ConvNet::new(arch, c, output, xtra_cut, head).map_err(to_pyerr)?;
        Ok(PyLearner {
            inner: Mutex::new(Learner::new(net, device)),
        })
    }

    #[getter]
    fn arch(&self) -> PyResult<String> {
        Ok(self.lock()?.net.arch.name.to_string())
    }
    #[getter]
    fn nf(&self) -> PyResult<i64> {
        Ok(self.lock()?.net.nf)
    }
    #[getter]
    fn head_start(&self) -> PyResult<usize> {
        Ok(self.lock()?.net.head_start)
    }
    /// Body children kept (fastai's `cut` after `cut -= xtra_cut`).
    #[getter]
    fn cut(&self) -> PyResult<usize> {
        Ok(self.lock()?.net.cut)
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
            .store
            .entries
            .iter()
            .map(|e| (e.key.clone(), PyTensor(e.tensor.shallow_clone())))
            .collect())
    }
    #[getter]
    fn has_custom_head(&self) -> PyResult<bool> {
        Ok(self.lock()?.net.has_custom_head())
    }
    /// Shape of what the head receives (and precompute caches) for one (3, h, w) image:
    /// (1, nf) for fastai's head, (1, C, h', w') for a custom head.
    fn feature_shape(&self, py: Python<'_>, h: i64, w: i64) -> PyResult<Vec<i64>> {
        self.detached(py, move |l| Ok(l.net.feature_shape(h, w)))
    }
    #[getter]
    fn trainable(&self) -> PyResult<[bool; 3]> {
        Ok(self.lock()?.trainable)
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
        self.lock()?.freeze_all_but(n.min(2));
        Ok(())
    }

    /// (key, shape, layer group, is_parameter) of every entry, in state-dict order.
    fn entries(&self) -> PyResult<Vec<(String, Vec<i64>, usize, bool)>> {
        let l = self.lock()?;
        Ok(l.net
            .store
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
        self.detached(py, move |l| l.net.summary(sz))
    }

    /// Loads a published checkpoint (torchvision names) into the body; strict.
    fn load_backbone(
        &self,
        py: Python<'_>,
        state: Vec<(String, PyTensor)>,
        source: &str,
    ) -> PyResult<()> {
        let entries: Vec<(String, Tensor)> = state.into_iter().map(|(k, t)| (k, t.0)).collect();
        self.detached(py, move |l| l.net.load_backbone(&entries, source))
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
        let entries: Vec<(String, Tensor)> = state.into_iter().map(|(k, t)| (k, t.0)).collect();
        self.detached(py, move |l| l.net.load_state(&entries, source))
    }

    /// Hash of the body's weights (part of the activation-cache key).
    fn body_hash(&self, py: Python<'_>) -> PyResult<String> {
        self.detached(py, |l| {
            let mut h = crate::cache::KeyHasher::default();
            h.str(l.net.arch.name);
            // A cut body, and raw maps (custom head) instead of pooled vectors, are other
            // activations from the same weights.
            h.str(&format!(
                "cut {} {}",
                l.net.cut,
                if l.net.has_custom_head() {
                    "raw maps"
                } else {
                    "concat pool"
                }
            ));
            crate::cache::hash_tensors(
                &mut h,
                l.net
                    .store
                    .entries
                    .iter()
                    .filter(|e| e.group < crate::models::HEAD_GROUP)
                    .map(|e| (e.key.as_str(), &e.tensor)),
            )?;
            Ok(h.hex())
        })
    }

    /// Starts a fit: a new optimiser for the groups trainable now. `schedule` is
    /// ('constant',), ('cos', first_cycle_batches, cycle_mult) or ('lr_find', ratio, n, linear).
    /// `fused_head`: precompute epochs on the CPU may use the hand-written head step.
    /// `opt` is ('sgd', momentum) or ('adam', beta1, beta2, eps). `clip`: the gradient norm
    /// to clip to before each step (None: none).
    #[pyo3(signature = (lrs, wds, schedule, precompute, stop_on_divergence=false, fused_head=true,
                        opt=None, clip=None))]
    #[allow(clippy::too_many_arguments)]
    fn begin_fit(
        &self,
        lrs: Vec<f64>,
        wds: Vec<f64>,
        schedule: &Bound<'_, PyAny>,
        precompute: bool,
        stop_on_divergence: bool,
        fused_head: bool,
        opt: Option<&Bound<'_, PyAny>>,
        clip: Option<f64>,
    ) -> PyResult<()> {
        let algo = match opt {
            None => Algo::Sgd { momentum: 0.9 },
            Some(o) => match o.get_item(0)?.extract::<String>()?.as_str() {
                "sgd" => Algo::Sgd {
                    momentum: o.get_item(1)?.extract()?,
                },
                "adam" => Algo::Adam {
                    beta1: o.get_item(1)?.extract()?,
                    beta2: o.get_item(2)?.extract()?,
                    eps: o.get_item(3)?.extract()?,
                },
                k => {
                    return Err(to_pyerr(Error::InvalidArgument(format!(
                        "unknown optimiser {k:?}"
                    ))))
                }
            },
        };
        let lrs = group_vec(lrs, "learning rates").map_err(to_pyerr)?;
        let wds = group_vec(wds, "weight decays").map_err(to_pyerr)?;
        let kind: String = schedule.get_item(0)?.extract()?;
        let schedule = match kind.as_str() {
            "constant" => Schedule::Constant,
            "cos" => Schedule::CosAnneal {
                first_cycle: schedule.get_item(1)?.extract()?,
                cycle_mult: schedule.get_item(2)?.extract()?,
            },
            "lr_find" => Schedule::LrFind {
                ratio: schedule.get_item(1)?.extract()?,
                n_batches: schedule.get_item(2)?.extract()?,
                linear: schedule.get_item(3)?.extract()?,
            },
            // ("clr", cycle, div, cut_div, moms or None) / ("clr_beta", cycle, div, pct, moms or None)
            "clr" | "clr_beta" => {
                let cycle: usize = schedule.get_item(1)?.extract()?;
                let div: f64 = schedule.get_item(2)?.extract()?;
                let third: f64 = schedule.get_item(3)?.extract()?;
                let moms: Option<(f64, f64)> = schedule.get_item(4)?.extract()?;
                if kind == "clr" {
                    Schedule::Clr {
                        cycle,
                        div,
                        cut_div: third,
                        moms,
                    }
                } else {
                    Schedule::ClrBeta {
                        cycle,
                        div,
                        pct: third,
                        moms,
                    }
                }
            }
            k => {
                return Err(to_pyerr(Error::InvalidArgument(format!(
                    "unknown schedule {k:?}"
                ))))
            }
        };
        self.lock()?.begin_fit(FitConfig {
            lrs,
            wds,
            schedule,
            precompute,
            stop_on_divergence,
            fused_head,
            algo,
            clip,
        });
        Ok(())
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
    /// `on_batch(i, smoothed_loss)` -> truthy stops. Returns (trn_loss, stopped).
    #[pyo3(signature = (x, y, bs, seed, epoch, on_batch=None))]
    fn train_epoch_tensors(
        &self,
        py: Python<'_>,
        x: PyTensor,
        y: PyTensor,
        bs: usize,
        seed: u64,
        epoch: u64,
        on_batch: Option<PyObject>,
    ) -> PyResult<(f64, bool)> {
        self.train_epoch(
            py,
            Box::new(tensor_set(x, y, bs, true, seed)),
            epoch,
            on_batch,
        )
    }

    /// Eval-mode outputs over in-memory rows: (outputs, targets, mean loss).
    #[pyo3(signature = (x, y, bs, head_only, with_loss))]
    fn predict_tensors(
        &self,
        py: Python<'_>,
        x: PyTensor,
        y: PyTensor,
        bs: usize,
        head_only: bool,
        with_loss: bool,
    ) -> PyResult<(PyTensor, PyTensor, f64)> {
        self.predict(
            py,
            Box::new(tensor_set(x, y, bs, false, 0)),
            0,
            head_only,
            with_loss,
            None,
        )
    }

    /// Outputs for one batch already in model input format: images (n, 3, H, W) or pooled
    /// activations (n, nf).
    fn predict_array(&self, py: Python<'_>, x: PyTensor) -> PyResult<PyTensor> {
        let x = x.0;
        let out = self.detached(py, move |l| -> Result<Tensor> {
            // Images are (n, 3, H, W); anything else is activations (pooled (n, nf), or a
            // custom head's (n, C, h, w) maps, whose C is never 3 for our bodies).
            let head_only = !(x.dim() == 4 && x.size()[1] == 3);
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

    /// One training epoch over an image loader (augmentation drawn for `epoch`).
    #[pyo3(signature = (dl, epoch, on_batch=None))]
    fn train_epoch_loader(
        &self,
        py: Python<'_>,
        dl: PyRef<'_, PyDataLoader>,
        epoch: u64,
        on_batch: Option<PyObject>,
    ) -> PyResult<(f64, bool)> {
        self.train_epoch(py, Box::new(dl.inner.clone()), epoch, on_batch)
    }

    /// Eval-mode outputs over an image loader: (outputs, targets, mean loss).
    #[pyo3(signature = (dl, epoch, with_loss, on_batch=None))]
    fn predict_loader(
        &self,
        py: Python<'_>,
        dl: PyRef<'_, PyDataLoader>,
        epoch: u64,
        with_loss: bool,
        on_batch: Option<PyObject>,
    ) -> PyResult<(PyTensor, PyTensor, f64)> {
        self.predict(
            py,
            Box::new(dl.inner.clone()),
            epoch,
            false,
            with_loss,
            on_batch,
        )
    }

    /// Pooled body activations of every image of `dl`, from the cache file at `path` when its
    /// key (body weights, transform, files with sizes and mtimes) matches, else computed and
    /// written there. Returns (activations, status): 'hit', 'computed', 'stale: <why>' (it
    /// existed but no longer fits), or 'uncached: <why>' (could not be written; still usable).
    /// One row per item of `dl`: an item skipped as undecodable (`skip_bad`) has a row of NaN,
    /// so rows stay in line with the dataset's files and labels, cached or not.
    #[pyo3(signature = (dl, path, body_hash, on_batch=None))]
    fn precompute_loader(
        &self,
        py: Python<'_>,
        dl: PyRef<'_, PyDataLoader>,
        path: std::path::PathBuf,
        body_hash: &str,
        on_batch: Option<PyObject>,
    ) -> PyResult<(PyTensor, String)> {
        use crate::cache;
        let loader = dl.inner.clone();
        let key = run_detached(py, || -> Result<String> {
            let mut h = cache::KeyHasher::default();
            h.str(body_hash).str(&loader.pipeline_key());
            loader.hash_content(&mut h)?;
            Ok(h.hex())
        })?;
        let previous = match cache::read(&path, &key) {
            cache::Lookup::Hit(t) => return Ok((PyTensor(t), "hit".into())),
            cache::Lookup::Missing => None,
            cache::Lookup::Stale(why) => Some(why),
        };
        // The cache stores rows: a custom head's (N, C, h, w) maps are written flattened and
        // the caller reshapes them (`feature_shape`).
        let acts = self
            .features(py, Box::new(loader.clone()), on_batch)?
            .flatten(1, -1);
        let acts = with_skipped_rows(acts, loader.num_items(), &loader.last_skipped())
            .map_err(to_pyerr)?;
        let status = match (cache::write(&path, &key, &acts), previous) {
            (Err(e), _) => format!("uncached: {e}"),
            (Ok(()), Some(why)) => format!("stale: {why}"),
            (Ok(()), None) => "computed".into(),
        };
        Ok((PyTensor(acts), status))
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
    ) -> PyResult<(f64, bool)> {
        let hook = Hook(on_batch);
        let r = self.detached(py, move |l| {
            l.train_epoch(&*src, epoch, &mut |b, loss| hook.call((b, loss)))
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

/// The order in which a training epoch visits n in-memory rows (tests replay it in PyTorch).
#[pyfunction]
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    crate::train::learner::epoch_order(n, seed, epoch)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLearner>()?;
    m.add_function(wrap_pyfunction!(epoch_order, m)?)?;
    m.add("ARCHS", crate::models::arch_names())?;
    Ok(())
}

/// `rows` (one per kept item, in order) spread over `n` rows, with NaN rows at the `skipped`
/// items' dataset indices.
fn with_skipped_rows(
    rows: Tensor,
    n: usize,
    skipped: &[(usize, std::path::PathBuf)],
) -> Result<Tensor> {
    if skipped.is_empty() {
        return Ok(rows);
    }
    let bad: std::collections::BTreeSet<usize> = skipped.iter().map(|(i, _)| *i).collect();
    let kept: Vec<i64> = (0..n)
        .filter(|i| !bad.contains(i))
        .map(|i| i as i64)
        .collect();
    if kept.len() as i64 != rows.size()[0] {
        return Err(Error::internal(format!(
            "{} activation rows for {} decodable items",
            rows.size()[0],
            kept.len()
        )));
    }
    let e = || Error::torch("placing the skipped items' rows");
    let mut size = rows.size();
    size[0] = n as i64;
    let full = Tensor::f_full(&size, f64::NAN, (rows.kind(), rows.device())).map_err(e())?;
    full.f_index_copy(0, &Tensor::from_slice(&kept), &rows)
        .map_err(e())
}
