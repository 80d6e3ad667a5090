"""`fastai.sgdr`: the callback protocol, the schedule records left in `learn.sched`, and the
learning-rate schedules as plain functions (spec 6.3, 6.4, 7).

The training loop runs in Rust and returns what it recorded (iterations, learning rates,
smoothed losses, ...); the learner adds the per-epoch values (epoch ends, validation loss and
metrics) and builds the object users know from fastai 0.7 (`learn.sched.plot_lr()`,
`learn.sched.plot()`, ...).
`cos_anneal_lrs` and `lr_find_lrs` compute the same schedules in numpy, as an independent
reference for the Rust implementation and for users who want to see a schedule before training.

Fixed rough edges of the original (spec 13): `plot(n_skip_end=0)` / `plot_loss(n_skip_end=0)`
plot up to the last point (38); plots never switch the matplotlib backend nor write files into
the current folder, they return the figure (38); `lr_find_lrs(linear=True)` starts at
`start_lr` (29).
"""
import math

import numpy as np

from .core import sum_geom


def _subplots(*args, **kwargs):
    # matplotlib.pyplot is imported on first plot, not with the module: it is most of the
    # import time of `fastai.conv_learner` otherwise.
    from ._figures import subplots
    return subplots(*args, **kwargs)

from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402
from . import core as _core  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "Callback", "LossRecorder", "SaveBestModel", "LR_Finder", "CosAnneal", "CircularLR", "CircularLR_beta",
        "sum_geom", "cos_anneal_lrs", "lr_find_lrs"
    ], [_imports, _torch_imports, _core])


class Callback:
    """The hooks the training loop calls, in this order: `on_train_begin`, `on_phase_begin`,
    per batch `on_batch_begin` then (after the step) `on_batch_end(smoothed_loss)`, per epoch
    `on_epoch_end([val_loss, *metrics])`, `on_phase_end` after the last batch of the fit, and
    `on_train_end`. Subclass and override what you need (the others do nothing); returning
    True from `on_batch_end` stops training at once (`fit` returns None), from `on_epoch_end`
    after that epoch."""

    def on_train_begin(self):
        pass

    def on_batch_begin(self):
        pass

    def on_phase_begin(self):
        pass

    def on_epoch_end(self, metrics):
        pass

    def on_phase_end(self):
        pass

    def on_batch_end(self, metrics):
        pass

    def on_train_end(self):
        pass


def _array(x, name, dtype=np.float64):
    a = np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


class LossRecorder(Callback):
    """What one `fit` call recorded, one entry per training batch:

    * `iterations`: 1, 2, ... (the global batch count of the call);
    * `lrs`: the learning rate of the **last** layer group for each batch;
    * `losses`: the smoothed (debiased moving-average) training loss after each batch;
    * `epochs`: the iteration at which each completed epoch ended;
    * `momentums`: the momentum per batch, only when momentum was scheduled (else None);
    * `val_losses`, `rec_metrics`: validation loss and metric values per completed epoch;
    * `init_lrs`: the per-group base learning rates of the call.

    `learn.sched` is built from what the Rust loop recorded. Passed to `fit(callbacks=[...])`,
    a recorder also records through the hooks as fastai 0.7's did: `on_train_begin` clears
    it, `on_batch_end(loss)` adds a batch (the learning rate is the last value of
    `layer_opt.lr` when `layer_opt` has one, else NaN), `on_epoch_end(metrics)` an epoch.
    """

    _fields = ("iterations", "lrs", "losses", "epochs", "momentums", "val_losses",
               "rec_metrics", "init_lrs")

    def __init__(self, layer_opt=None, save_path="", record_mom=False, metrics=None, *,
                 iterations=None, lrs=None, losses=None, epochs=None, momentums=None,
                 val_losses=None, rec_metrics=None, init_lrs=None):
        self.layer_opt = layer_opt
        self.save_path = save_path
        self.record_mom = record_mom
        self.losses = _array([] if losses is None else losses, "losses")
        n = len(self.losses)
        self.lrs = _array([] if lrs is None else lrs, "lrs")
        self.iterations = (np.arange(1, n + 1) if iterations is None
                           else _array(iterations, "iterations", np.int64))
        self.momentums = None if momentums is None else _array(momentums, "momentums")
        for name in ("lrs", "iterations", "momentums"):
            a = getattr(self, name)
            if a is not None and len(a) != n:
                raise ValueError(f"{name} has {len(a)} entries but losses has {n}: the record "
                                 "must hold one value per batch in each")
        self.epochs = _array([] if epochs is None else epochs, "epochs", np.int64)
        self.val_losses = _array([] if val_losses is None else val_losses, "val_losses")
        self.rec_metrics = [] if rec_metrics is None else [list(m) for m in rec_metrics]
        self.init_lrs = None if init_lrs is None else np.atleast_1d(np.asarray(init_lrs, float))

    # ---- the hooks, for a recorder used as a callback -----------------------------------
    def on_train_begin(self):
        self.losses, self.lrs = np.zeros(0), np.zeros(0)
        self.iterations = np.zeros(0, np.int64)
        self.epochs = np.zeros(0, np.int64)
        self.val_losses, self.rec_metrics = np.zeros(0), []
        self.momentums = None
        self.iteration = 0

    def _current_lr(self):
        lr = getattr(self.layer_opt, "lr", None)
        if lr is None:
            return math.nan
        return float(np.atleast_1d(np.asarray(lr, dtype=np.float64))[-1])

    def on_batch_end(self, loss):
        self.iteration = getattr(self, "iteration", len(self.losses)) + 1
        # A list (fastai's all_val) is the loss followed by metrics: the loss is recorded.
        if isinstance(loss, (list, tuple)):
            loss = loss[0]
        self.losses = np.append(self.losses, float(loss))
        self.lrs = np.append(self.lrs, self._current_lr())
        self.iterations = np.append(self.iterations, self.iteration)

    def on_epoch_end(self, metrics):
        self.epochs = np.append(self.epochs, len(self.losses))
        self.val_losses = np.append(self.val_losses, float(metrics[0]))
        self.rec_metrics.append([float(m) for m in metrics[1:]])

    @classmethod
    def from_record(cls, record):
        """Build from the dict the Rust loop returns; unknown keys raise TypeError."""
        unknown = sorted(set(record) - set(cls._fields))
        if unknown:
            raise TypeError(f"{cls.__name__}.from_record: unknown keys {unknown} "
                            f"(expected some of {list(cls._fields)})")
        return cls(**record)

    @property
    def epoch(self):
        """Number of completed epochs."""
        return len(self.epochs)

    def __len__(self):
        return len(self.losses)

    def __repr__(self):
        return f"{type(self).__name__}({len(self)} iterations, {self.epoch} epochs)"

    def plot_lr(self):
        """Learning rate (and momentum, when recorded) against iterations; returns the figure."""
        if self.momentums is None:
            fig, ax = _subplots()
            axes = [ax]
        else:
            fig, axes = _subplots(1, 2, figsize=(12, 4))
        axes[0].plot(self.iterations, self.lrs)
        axes[0].set_xlabel("iterations")
        axes[0].set_ylabel("learning rate")
        if self.momentums is not None:
            axes[1].plot(self.iterations, self.momentums)
            axes[1].set_xlabel("iterations")
            axes[1].set_ylabel("momentum")
        return fig

    def plot_loss(self, n_skip=10, n_skip_end=5):
        """Smoothed loss against iterations, without the first `n_skip` and the last
        `n_skip_end` points; returns the figure."""
        sl = self._window(n_skip, n_skip_end)
        fig, ax = _subplots()
        ax.plot(self.iterations[sl], self.losses[sl])
        ax.set_xlabel("iterations")
        ax.set_ylabel("loss")
        return fig

    def _window(self, n_skip, n_skip_end):
        # The original sliced [n_skip:-n_skip_end], which is empty for n_skip_end=0.
        return slice(n_skip, len(self) - n_skip_end)


class SaveBestModel(LossRecorder):
    """`fit(..., best_save_name=name)`'s callback: after each epoch, saves the model (through
    `model.save(name)`, the learner's atomic save into its models folder) when it is the best
    so far. With metrics, the first one is taken as higher-is-better and a tie is broken by a
    lower validation loss; without (None or an empty list), a lower validation loss is better.
    An epoch whose validation loss is NaN is never the best."""

    def __init__(self, model, layer_opt=None, metrics=None, name="best_model"):
        super().__init__(layer_opt)
        self.model = model
        self.name = name
        self.by_metric = bool(metrics)
        self.best_loss = None
        self.best_acc = None

    def on_epoch_end(self, metrics):
        super().on_epoch_end(metrics)
        loss = float(metrics[0])
        if math.isnan(loss):
            return
        if self.by_metric and len(metrics) > 1:
            acc = float(metrics[1])
            better = (self.best_acc is None or acc > self.best_acc
                      or (acc == self.best_acc and loss < self.best_loss))
            if better:
                self.best_acc = acc
        else:
            better = self.best_loss is None or loss < self.best_loss
        if better:
            self.best_loss = loss
            self.model.save(self.name)


class LR_Finder(LossRecorder):
    """The record of `learn.lr_find()`: loss against an exponentially growing learning rate."""

    def plot(self, n_skip=10, n_skip_end=5):
        """Smoothed loss against learning rate on a log-scale x axis, without the first `n_skip`
        and the last `n_skip_end` points; returns the figure."""
        sl = self._window(n_skip, n_skip_end)
        fig, ax = _subplots()
        ax.plot(self.lrs[sl], self.losses[sl])
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("loss")
        return fig


class CosAnneal(LossRecorder):
    """The record of `fit(..., cycle_len=...)`: cosine annealing with warm restarts."""


class CircularLR(LossRecorder):
    """The record of `fit(..., use_clr=...)` (with `momentums` when momentum was cycled)."""


class CircularLR_beta(LossRecorder):
    """The record of `fit(..., use_clr_beta=...)`, the "1cycle" policy."""


def cos_anneal_lrs(n_batches_per_epoch, cycle_len, cycle_mult, n_cycle, base):
    """The learning rate of every batch of `fit(base, n_cycle, cycle_len=, cycle_mult=)`
    (spec 6.3): shape `(T,)` for a scalar `base`, `(T, n_groups)` for a per-group array, with
    `T = n_batches_per_epoch * sum_geom(cycle_len, cycle_mult, n_cycle)`.

    Cycle k lasts `N_k = n_batches_per_epoch * cycle_len * cycle_mult**k` batches. For global
    batch t at position i of a cycle of length N: `base/100` while `t < N/20` (the warm-up,
    which in practice only touches the start of the first cycle), else
    `base/2 * (1 + cos(pi * i / N))`.
    """
    base = np.asarray(base, dtype=np.float64)
    total = int(n_batches_per_epoch * sum_geom(cycle_len, cycle_mult, n_cycle))
    mult = np.empty(total)
    n = n_batches_per_epoch * cycle_len
    i = 0
    for t in range(total):
        mult[t] = 0.01 if t < n / 20 else 0.5 * (1 + math.cos(math.pi * i / n))
        i += 1
        if i == n:  # restart: next cycle, cycle_mult times longer
            i, n = 0, n * cycle_mult
    return mult * base if base.ndim == 0 else mult[:, None] * base[None, :]


def lr_find_lrs(start_lr, end_lr, n_batches, linear=False):
    """The learning rate of every batch of `learn.lr_find(start_lr, end_lr, linear=)` over
    `n_batches` batches (spec 7): shape `(n_batches,)` for a scalar `start_lr`,
    `(n_batches, n_groups)` for a per-group array.

    Exponential: `start * (end_lr / start_last) ** (t / n_batches)`. Linear: the multiplier goes
    linearly from 1 to `end_lr / start_last`, i.e. from `start_lr` towards `end_lr` (the original
    started at 0). `start_last` is the last group's start; other groups keep their ratios.
    """
    start = np.asarray(start_lr, dtype=np.float64)
    ratio = end_lr / float(np.atleast_1d(start)[-1])
    frac = np.arange(n_batches) / n_batches
    mult = 1 + (ratio - 1) * frac if linear else ratio ** frac
    return mult * start if start.ndim == 0 else mult[:, None] * start[None, :]
