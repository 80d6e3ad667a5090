//! The learner: one model, its freezing state, and the loops that train, validate and
//! predict with it. Epochs are driven from outside (the Python layer calls `train_epoch` once
//! per epoch, so checkpoints, callbacks and the printed table happen between epochs while the
//! batch loop stays in Rust).

use tch::{Device, Kind, Tensor};

use super::distributed::{agree_step, average_grads_weighted, GradSync};
use super::fused_head::FusedHead;
use super::optim::{Algo, Optimizer};
use super::schedule::{Schedule, SmoothedLoss};
use crate::models::{BatchAt, EntryKind, Net, Output};
use crate::util::rng::epoch_order;
use crate::{Error, Result};

/// Anything that yields `(x, y)` batches on the CPU: image loaders or cached activations.
pub trait BatchSource {
    fn num_batches(&self) -> usize;
    fn batches<'a>(&'a self, epoch: u64)
        -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a>;
    /// The rows themselves, when the source is in-memory rows (the fused head step reads
    /// them directly instead of through batch tensors).
    fn as_rows(&self) -> Option<&TensorSet> {
        None
    }
}

/// Precomputed activations (or any in-memory rows) served in batches, shuffled per epoch
/// in the same order as an image loader with the same seed (`epoch_order`) when `shuffle` is
/// set.
pub struct TensorSet {
    pub x: Tensor,
    pub y: Tensor,
    pub bs: usize,
    pub shuffle: bool,
    pub seed: u64,
}

impl BatchSource for TensorSet {
    fn num_batches(&self) -> usize {
        let n = self.x.size().first().copied().unwrap_or(0) as usize;
        n.div_ceil(self.bs.max(1))
    }
    fn batches<'a>(
        &'a self,
        epoch: u64,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a> {
        let n = self.x.size().first().copied().unwrap_or(0) as usize;
        let order: Vec<i64> = self.order(epoch).into_iter().map(|i| i as i64).collect();
        let bs = self.bs.max(1);
        Box::new((0..n.div_ceil(bs)).map(move |b| {
            let idx = Tensor::from_slice(&order[b * bs..((b + 1) * bs).min(n)]);
            Ok((self.x.index_select(0, &idx), self.y.index_select(0, &idx)))
        }))
    }
    fn as_rows(&self) -> Option<&TensorSet> {
        Some(self)
    }
}

impl TensorSet {
    /// The order of the rows in `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.x.size().first().copied().unwrap_or(0) as usize;
        if self.shuffle {
            epoch_order(n, self.seed, epoch)
        } else {
            (0..n).collect()
        }
    }
}

/// Where a loss is computed: the training batch or the validation batch of that index (what a
/// user's loss function is told, so its errors can name the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossAt {
    Train(usize),
    Valid(usize),
}

/// A loss function other than the one the model's output implies (fastai's `learn.crit` set by
/// the user). `out` is the model's output (part of the autograd graph when training), `y` the
/// batch's targets as the source gives them; the result is the batch's loss, a scalar that
/// backward runs from. The bindings implement it by calling back into Python.
pub trait LossFn: Send {
    fn loss(&self, out: &Tensor, y: &Tensor, at: LossAt) -> Result<Tensor>;
}

/// The settings of one `fit` / `lr_find` call.
pub struct FitConfig {
    /// One per layer group, earliest first.
    pub lrs: Vec<f64>,
    pub wds: Vec<f64>,
    pub schedule: Schedule,
    /// Train the head on the cached activations.
    pub precompute: bool,
    /// lr_find: stop when the loss diverges.
    pub stop_on_divergence: bool,
    /// Let precompute fits on the CPU use the hand-written head step (`fused_head/mod.rs`) when
    /// the head is fastai's default one and the optimiser SGD; false keeps libtorch autograd.
    pub fused_head: bool,
    pub algo: Algo,
    /// fastai 0.7's `clip`: the total L2 norm the trainable parameters' gradients are scaled
    /// down to before each step, when they exceed it (None: no clipping).
    pub clip: Option<f64>,
    /// Data-parallel training: the group the gradients are averaged over after each backward.
    pub grad_sync: Option<Box<dyn GradSync>>,
}

/// What the batch loop of one `fit` / `lr_find` call keeps between epochs.
struct FitState {
    opt: Optimizer,
    lrs: Vec<f64>,
    wds: Vec<f64>,
    schedule: Schedule,
    /// Global batch index within this call.
    t: usize,
    smooth: SmoothedLoss,
    precompute: bool,
    /// lr_find's divergence rule: best smoothed loss after batch 10.
    stop_on_divergence: bool,
    best: f64,
    record: Record,
    /// May the hand-written head step replace autograd (precompute fits on the CPU)?
    fused_allowed: bool,
    /// The hand-written head step, made at the first epoch it applies to; it keeps its
    /// momentum for the rest of the fit.
    fused: Option<FusedHead>,
    /// Gradient-norm clipping before each step (see [`FitConfig::clip`]).
    clip: Option<f64>,
    /// The user's loss function, None for the one the model's output implies.
    crit: Option<Box<dyn LossFn>>,
    grad_sync: Option<Box<dyn GradSync>>,
}

impl FitState {
    /// This batch's learning rates, and its momentum when the schedule cycles it (already
    /// handed to the optimiser).
    fn batch_rates(&mut self) -> (Vec<f64>, Option<f64>) {
        let m = self.schedule.multiplier(self.t);
        let mom = self.schedule.momentum(self.t);
        if let Some(mu) = mom {
            self.opt.set_momentum(mu);
        }
        (self.lrs.iter().map(|lr| lr * m).collect(), mom)
    }

    /// A training batch of one row is left out: BatchNorm cannot take batch statistics of a
    /// single value (its unbiased variance would be 0/0, making the running variance NaN for
    /// good; PyTorch raises there). It happens when the training set is one more than a
    /// multiple of bs (a different image each epoch, as the order is shuffled) or when
    /// skip_bad leaves one image in a batch. The schedule still moves on by one batch.
    fn skip_one_row(&mut self) {
        self.t += 1;
        self.record.one_row_batches += 1;
    }

    /// Bookkeeping after a step with raw loss `raw`: smoothing, lr_find's divergence rule,
    /// the record, the batch callback. Some(result) ends the epoch early.
    fn after_step(
        &mut self,
        b: usize,
        raw: f64,
        lrs: &[f64],
        mom: Option<f64>,
        on_batch: &mut dyn FnMut(usize, f64) -> Result<bool>,
    ) -> Result<Option<EpochResult>> {
        let smoothed = self.smooth.update(raw);
        self.t += 1;
        if self.stop_on_divergence {
            // lr_find: stop on NaN or when the loss is 4x the best seen after batch 10; the
            // triggering batch is not recorded.
            if smoothed.is_nan() || smoothed > 4.0 * self.best {
                return Ok(Some(EpochResult {
                    trn_loss: smoothed,
                    stopped: true,
                }));
            }
            if smoothed < self.best && self.t > 10 {
                self.best = smoothed;
            }
        }
        // The last group's rate: the head's, which `sched.plot_lr` shows.
        self.record.lrs.push(lrs.last().copied().unwrap_or(0.0));
        self.record.moms.extend(mom);
        self.record.losses.push(smoothed);
        if on_batch(b, smoothed)? {
            return Ok(Some(EpochResult {
                trn_loss: smoothed,
                stopped: true,
            }));
        }
        Ok(None)
    }
}

/// Per batch of one call: the last group's learning rate and the smoothed loss.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    /// One per batch when the schedule cycles momentum, else empty.
    pub moms: Vec<f64>,
    /// Training batches of a single row left out (see [`FitState::skip_one_row`]).
    pub one_row_batches: usize,
}

pub struct EpochResult {
    pub trn_loss: f64,
    /// The batch callback or the divergence rule asked to stop.
    pub stopped: bool,
}

pub struct Learner {
    pub net: Net,
    /// Which layer groups train (fastai's freeze_to; the native networks have three).
    pub trainable: Vec<bool>,
    /// Keep every BatchNorm on running statistics even in trainable groups.
    pub bn_freeze: bool,
    pub device: Device,
    fit: Option<FitState>,
}

impl Learner {
    pub fn new(net: impl Into<Net>, device: Device) -> Self {
        let net = net.into();
        net.to_device(device);
        let n = net.n_groups();
        let mut l = Learner {
            net,
            trainable: vec![false; n],
            bn_freeze: false,
            device,
            fit: None,
        };
        l.freeze_to(-1);
        l
    }

    /// Host batch -> the model's device. On CUDA the batch is pinned and copied without
    /// blocking, so the copy overlaps the kernels already queued.
    fn upload(&self, t: Tensor) -> Result<Tensor> {
        match self.device {
            Device::Cpu => Ok(t),
            d => {
                let pinned = t.f_pin_memory(d).map_err(Error::torch("pinning a batch"))?;
                pinned
                    .f_to_device_(d, pinned.kind(), true, false)
                    .map_err(Error::torch("copying a batch to the GPU"))
            }
        }
    }

    /// Groups `n..` train, the earlier ones are frozen (Python slice semantics: -1 = head only).
    pub fn freeze_to(&mut self, n: i64) {
        let groups = self.trainable.len();
        let start = if n < 0 {
            (groups as i64 + n).max(0) as usize
        } else {
            (n as usize).min(groups)
        };
        for (g, t) in self.trainable.iter_mut().enumerate() {
            *t = g >= start;
        }
        self.apply_requires_grad();
    }

    /// Only group `n` trains.
    pub fn freeze_all_but(&mut self, n: usize) {
        for (g, t) in self.trainable.iter_mut().enumerate() {
            *t = g == n;
        }
        self.apply_requires_grad();
    }

    /// Sets `requires_grad` of every parameter in a layer group to its group's flag; a
    /// parameter in no group is left as it is. The optimiser and BatchNorm's training mode
    /// read the flag itself, so a user's later change to one layer is honoured too.
    fn apply_requires_grad(&mut self) {
        for e in &self.net.store().entries {
            if let (EntryKind::Param, Some(&t)) = (e.kind, self.trainable.get(e.group)) {
                let _ = e.tensor.shallow_clone().set_requires_grad(t);
            }
        }
    }

    /// Starts a `fit` / `lr_find` call: a new optimiser for the parameters trainable now.
    pub fn begin_fit(&mut self, cfg: FitConfig) -> Result<()> {
        self.begin_fit_with(cfg, None)
    }

    /// [`Learner::begin_fit`] with the loss of this call: `crit` replaces the one the model's
    /// output implies for training and for the validation loss, until `end_fit`.
    pub fn begin_fit_with(&mut self, cfg: FitConfig, crit: Option<Box<dyn LossFn>>) -> Result<()> {
        let FitConfig {
            lrs,
            wds,
            schedule,
            precompute,
            stop_on_divergence,
            fused_head,
            algo,
            clip,
            grad_sync,
        } = cfg;
        let groups = self.net.n_groups();
        for (what, v) in [("learning rates", &lrs), ("weight decays", &wds)] {
            if v.len() != groups {
                return Err(Error::InvalidArgument(format!(
                    "{} {what} for a model of {groups} layer groups",
                    v.len()
                )));
            }
        }
        if precompute && !self.net.has_body() {
            return Err(Error::InvalidArgument(
                "precompute: this model has no body and head to run apart".into(),
            ));
        }
        // fastai 0.7's optimiser took every parameter of a layer group that requires a
        // gradient; with precompute only the head sees data, so only its parameters may step.
        let head = self.net.head_group();
        let select = |e: &crate::models::Entry| {
            e.group < groups && e.tensor.requires_grad() && (!precompute || e.group == head)
        };
        self.fit = Some(FitState {
            opt: Optimizer::new(self.net.store(), select, algo),
            lrs,
            wds,
            schedule,
            t: 0,
            smooth: SmoothedLoss::default(),
            precompute,
            stop_on_divergence,
            best: 1e9,
            record: Record::default(),
            fused_allowed: fused_head,
            fused: None,
            clip,
            crit,
            grad_sync,
        });
        Ok(())
    }

    pub fn end_fit(&mut self) -> Record {
        self.fit.take().map(|f| f.record).unwrap_or_default()
    }

    /// The loss of one batch: the user's function during a fit that set one, else the one the
    /// model's output implies.
    fn loss(
        &self,
        crit: Option<&dyn LossFn>,
        out: &Tensor,
        y: &Tensor,
        at: LossAt,
    ) -> Result<Tensor> {
        if let Some(crit) = crit {
            return crit.loss(out, y, at);
        }
        let r = match self.net.output() {
            // The n-d form takes (N, C) rows and (N, C, d1, ...) maps alike (segmentation:
            // log-probabilities per pixel against (N, H, W) labels), as torch's F.nll_loss.
            Output::LogSoftmax => out.f_nll_loss_nd(y, None::<Tensor>, tch::Reduction::Mean, -100),
            Output::Sigmoid => out.f_binary_cross_entropy(
                &y.to_kind(Kind::Float),
                None::<Tensor>,
                tch::Reduction::Mean,
            ),
            Output::Identity => {
                out.f_l1_loss(&y.to_kind(Kind::Float).view_as(out), tch::Reduction::Mean)
            }
        };
        r.map_err(Error::torch("computing the loss"))
    }

    /// One epoch over `src`. `on_batch(batch_index, smoothed_loss)` runs after every step;
    /// returning Ok(true) stops the epoch (a callback asked to), an Err aborts (interrupt).
    pub fn train_epoch(
        &mut self,
        src: &dyn BatchSource,
        epoch: u64,
        on_batch: &mut dyn FnMut(usize, f64) -> Result<bool>,
    ) -> Result<EpochResult> {
        self.train_epoch_hooked(src, epoch, &mut |_| Ok(()), on_batch)
    }

    /// [`Learner::train_epoch`] with `before(batch_index)` also run before every step (fastai's
    /// `on_batch_begin`); an Err from it aborts like one from `on_batch`.
    pub fn train_epoch_hooked(
        &mut self,
        src: &dyn BatchSource,
        epoch: u64,
        before: &mut dyn FnMut(usize) -> Result<()>,
        on_batch: &mut dyn FnMut(usize, f64) -> Result<bool>,
    ) -> Result<EpochResult> {
        let mut fit = self
            .fit
            .take()
            .ok_or_else(|| Error::internal("train_epoch called outside a fit"))?;
        let result = match self.fused_rows(&mut fit, src) {
            Ok(Some(rows)) => Self::train_epoch_fused(&mut fit, rows, epoch, before, on_batch),
            Ok(None) => self.train_epoch_autograd(&mut fit, src, epoch, before, on_batch),
            Err(e) => Err(e),
        };
        self.fit = Some(fit);
        result
    }

    /// The rows to train on with the hand-written head step, when it applies to this epoch
    /// (making the step at the first such epoch of the fit).
    fn fused_rows<'s>(
        &self,
        fit: &mut FitState,
        src: &'s dyn BatchSource,
    ) -> Result<Option<&'s TensorSet>> {
        let Some(rows) = src.as_rows() else {
            return Ok(None);
        };
        let plain = |t: &Tensor, kind: Kind, dim: usize| {
            t.device() == Device::Cpu && t.kind() == kind && t.is_contiguous() && t.dim() == dim
        };
        // The hand-written step does SGD only, without gradient clipping, on the model's own
        // loss (its gradient is written out by hand).
        let sgd = fit.opt.sgd_momentum().is_some();
        if !(fit.fused_allowed
            && sgd
            && fit.clip.is_none()
            && fit.crit.is_none()
            && fit.grad_sync.is_none()
            && fit.precompute
            && !self.bn_freeze
            && self.device == Device::Cpu)
            || !plain(&rows.x, Kind::Float, 2)
            || !plain(&rows.y, Kind::Int64, 1)
            || rows.y.size()[0] != rows.x.size()[0]
        {
            return Ok(None);
        }
        if fit.fused.is_none() {
            let Some(head) = self.net.fastai_head().and_then(|h| h.one_hidden()) else {
                return Ok(None);
            };
            let threads = tch::get_num_threads().max(1) as usize;
            fit.fused = FusedHead::new(head, threads)?;
        }
        Ok(fit
            .fused
            .as_ref()
            .filter(|f| f.nf() as i64 == rows.x.size()[1])
            .map(|_| rows))
    }

    /// An epoch of the hand-written head step over in-memory rows.
    fn train_epoch_fused(
        fit: &mut FitState,
        rows: &TensorSet,
        epoch: u64,
        before: &mut dyn FnMut(usize) -> Result<()>,
        on_batch: &mut dyn FnMut(usize, f64) -> Result<bool>,
    ) -> Result<EpochResult> {
        let Some(mut fused) = fit.fused.take() else {
            return Err(Error::internal("no fused head step"));
        };
        // SAFETY: `fused_rows` checked both are contiguous CPU tensors of these kinds; they
        // are only read, and outlive this call.
        let x =
            unsafe { std::slice::from_raw_parts(rows.x.data_ptr() as *const f32, rows.x.numel()) };
        let y =
            unsafe { std::slice::from_raw_parts(rows.y.data_ptr() as *const i64, rows.y.numel()) };
        let order = rows.order(epoch);
        let batches: Vec<&[usize]> = order.chunks(rows.bs.max(1)).collect();
        // Dropout seeds for the steps that will run (as many as the autograd path draws).
        fused.begin_epoch(batches.iter().filter(|b| b.len() > 1).count());
        let result = (|| -> Result<EpochResult> {
            for (b, idx) in batches.iter().enumerate() {
                if idx.len() == 1 {
                    fit.skip_one_row();
                    continue;
                }
                before(b)?;
                let (lrs, mom) = fit.batch_rates();
                let next = batches.get(b + 1).copied().unwrap_or(&[]);
                let Some(mu) = fit.opt.sgd_momentum() else {
                    return Err(Error::internal("the head step is SGD's"));
                };
                let head = lrs.len().saturating_sub(1);
                let (lr, wd) = (lrs[head], fit.wds.get(head).copied().unwrap_or(0.0));
                let raw = fused.step(x, y, idx, next, lr, wd, mu)?;
                if let Some(stop) = fit.after_step(b, raw, &lrs, mom, on_batch)? {
                    return Ok(stop);
                }
            }
            Ok(EpochResult {
                trn_loss: fit.smooth.value(),
                stopped: false,
            })
        })();
        // W1 goes back into the model on every exit (end, stop, error, interrupt).
        fused.end_epoch();
        fit.fused = Some(fused);
        result
    }

    /// An epoch through libtorch's autograd and our SGD.
    fn train_epoch_autograd(
        &self,
        fit: &mut FitState,
        src: &dyn BatchSource,
        epoch: u64,
        before: &mut dyn FnMut(usize) -> Result<()>,
        on_batch: &mut dyn FnMut(usize, f64) -> Result<bool>,
    ) -> Result<EpochResult> {
        if let Some(sync) = fit.grad_sync.take() {
            let r = self.train_epoch_synced(fit, sync.as_ref(), src, epoch, before, on_batch);
            fit.grad_sync = Some(sync);
            return r;
        }
        // BatchNorm layers of trainable layers take batch statistics, unless bn_freeze.
        let batch_stats = !self.bn_freeze;
        for (b, batch) in src.batches(epoch).enumerate() {
            let (x, y) = batch?;
            if batch_stats && x.size()[0] == 1 {
                fit.skip_one_row();
                continue;
            }
            before(b)?;
            let (lrs, mom) = fit.batch_rates();
            fit.opt.zero_grad();
            let raw = self.backward_batch(fit, x, y, b, batch_stats)?;
            Self::step(fit, &lrs)?;
            if let Some(stop) = fit.after_step(b, raw, &lrs, mom, on_batch)? {
                return Ok(stop);
            }
        }
        Ok(EpochResult {
            trn_loss: fit.smooth.value(),
            stopped: false,
        })
    }

    /// Forward and backward of training batch `b` (gradients accumulate: the caller zeroes
    /// them first); its loss.
    fn backward_batch(
        &self,
        fit: &FitState,
        x: Tensor,
        y: Tensor,
        b: usize,
        batch_stats: bool,
    ) -> Result<f64> {
        let x = self.upload(x)?;
        let y = self.upload(y)?;
        let at = BatchAt {
            phase: "training batch",
            index: b,
        };
        let out = if fit.precompute {
            self.net.head_forward(&x, true, batch_stats, at)?
        } else {
            self.net.forward(&x, true, batch_stats, at)?
        };
        let loss = self.loss(fit.crit.as_deref(), &out, &y, LossAt::Train(b))?;
        loss.f_backward().map_err(Error::torch("backward pass"))?;
        Ok(loss.double_value(&[]))
    }

    /// The optimiser's step at rates `lrs`, after clipping the gradients when the fit asks.
    fn step(fit: &mut FitState, lrs: &[f64]) -> Result<()> {
        if let Some(max_norm) = fit.clip {
            fit.opt.clip_grad_norm(max_norm)?;
        }
        fit.opt.step(lrs, &fit.wds)
    }

    /// An epoch of a data-parallel fit: every rank takes the same steps whatever `skip_bad`
    /// left in its batches (the rule is `train::distributed`'s).
    fn train_epoch_synced(
        &self,
        fit: &mut FitState,
        sync: &dyn GradSync,
        src: &dyn BatchSource,
        epoch: u64,
        before: &mut dyn FnMut(usize) -> Result<()>,
        on_batch: &mut dyn FnMut(usize, f64) -> Result<bool>,
    ) -> Result<EpochResult> {
        let batch_stats = !self.bn_freeze;
        let mut batches = src.batches(epoch);
        let mut b = 0;
        loop {
            let batch = batches.next().transpose()?;
            let n = batch.as_ref().map_or(0, |(x, _)| x.size()[0] as usize);
            // One row cannot take BatchNorm's batch statistics: this rank brings none.
            let rows = if batch_stats && n == 1 { 0 } else { n };
            let plan = agree_step(sync, rows, batch.is_some())?;
            if !plan.any_batch {
                break;
            }
            if n == 1 && rows == 0 {
                fit.record.one_row_batches += 1;
            }
            if plan.rows == 0 {
                fit.t += 1;
                b += 1;
                continue;
            }
            before(b)?;
            let (lrs, mom) = fit.batch_rates();
            fit.opt.zero_grad();
            let loss = match batch.filter(|_| rows > 0) {
                Some((x, y)) => self.backward_batch(fit, x, y, b, batch_stats)?,
                None => 0.0,
            };
            let weight = rows as f64 / plan.rows as f64;
            let raw = average_grads_weighted(self.net.store(), sync, weight, loss)?;
            Self::step(fit, &lrs)?;
            if let Some(stop) = fit.after_step(b, raw, &lrs, mom, on_batch)? {
                return Ok(stop);
            }
            b += 1;
        }
        Ok(EpochResult {
            trn_loss: fit.smooth.value(),
            stopped: false,
        })
    }

    /// Eval-mode outputs over `src` in order: (outputs on CPU, targets on CPU, mean loss).
    /// `head_only`: the batches are pooled activations, not images. `with_loss`: the targets
    /// are real labels (not an unlabelled test set's placeholders).
    pub fn predict(
        &self,
        src: &dyn BatchSource,
        epoch: u64,
        head_only: bool,
        with_loss: bool,
        on_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<(Tensor, Tensor, f64)> {
        let mut outs = Vec::new();
        let mut ys = Vec::new();
        let mut loss_sum = 0.0;
        let mut n = 0usize;
        // Inside a fit (its validation), the fit's loss function.
        let crit = self.fit.as_ref().and_then(|f| f.crit.as_deref());
        tch::no_grad(|| -> Result<()> {
            for (b, batch) in src.batches(epoch).enumerate() {
                let (x, y) = batch?;
                let x = self.upload(x)?;
                let at = BatchAt {
                    phase: if with_loss {
                        "validation batch"
                    } else {
                        "batch"
                    },
                    index: b,
                };
                let out = if head_only {
                    self.net.head_forward(&x, false, false, at)?
                } else {
                    self.net.forward(&x, false, false, at)?
                };
                let bs = x.size()[0] as usize;
                if with_loss {
                    let y = self.upload(y.shallow_clone())?;
                    loss_sum += self
                        .loss(crit, &out, &y, LossAt::Valid(b))?
                        .double_value(&[])
                        * bs as f64;
                }
                n += bs;
                outs.push(out.to_device(Device::Cpu));
                ys.push(y);
                on_batch(b)?;
            }
            Ok(())
        })?;
        if outs.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing to predict: the data set is empty".into(),
            ));
        }
        Ok((
            Tensor::cat(&outs, 0),
            Tensor::cat(&ys, 0),
            loss_sum / n.max(1) as f64,
        ))
    }

    /// Pooled body activations (eval mode) of every image of `src`, in order, on the CPU.
    pub fn features(
        &self,
        src: &dyn BatchSource,
        on_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Tensor> {
        let mut outs = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (b, batch) in src.batches(0).enumerate() {
                let (x, _) = batch?;
                let at = BatchAt {
                    phase: "precompute batch",
                    index: b,
                };
                // Float32 whatever precision computed them (bfloat16 under autocast): the
                // cache file holds float32, and a fresh run must train the head as a cached
                // one does (the hand-written head step reads float32 only).
                outs.push(
                    self.net
                        .features(&self.upload(x)?, at)?
                        .to_device(Device::Cpu)
                        .f_to_kind(Kind::Float)
                        .map_err(Error::torch("the activations to float32"))?,
                );
                on_batch(b)?;
            }
            Ok(())
        })?;
        if outs.is_empty() {
            let nf = self.net.conv().map_or(0, |n| n.nf);
            return Ok(Tensor::zeros([0, nf], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&outs, 0))
    }

    /// A copy of every parameter and buffer (lr_find restores it, also when interrupted).
    pub fn snapshot(&self) -> Vec<Tensor> {
        self.net
            .store()
            .entries
            .iter()
            .map(|e| e.tensor.detach().copy())
            .collect()
    }

    pub fn restore(&self, snap: &[Tensor]) {
        tch::no_grad(|| {
            for (e, s) in self.net.store().entries.iter().zip(snap) {
                let _ = e.tensor.shallow_clone().copy_(s);
            }
        });
    }
}
