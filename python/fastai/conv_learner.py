"""`ConvLearner.pretrained(arch, data, precompute=True)`: a pretrained body cut before its
classifier, fastai 0.7's head on top, and the training/prediction API of lesson 1.

Differences from fastai 0.7, all on purpose (spec section 13):
- the activation cache is keyed by content (images, transform, weights), never stale;
- `learn.precompute = True` computes the cache when needed; `unfreeze()`/`freeze_to()` act on
  the full model even while precompute is on (and `unfreeze` turns precompute off);
- `save`, `predict_array` and `TTA` behave the same with precompute on or off (full model,
  images in, real augmentation);
- `lr_find` restores the weights from memory (also when interrupted) and leaves `models/tmp.h5`
  alone; `fit` returns plain floats `[val_loss, accuracy]`.

`learn.crit` is fastai 0.7's loss for the data (`F.nll_loss`, `F.binary_cross_entropy` or
`F.l1_loss`), computed natively by the Rust loop; any other callable assigned to it is called by
that loop once per batch (the model's output and the targets in, a scalar loss tensor out) and
backward and the step stay in Rust. `fit(callbacks=...)` calls fastai 0.7's hooks in its order.

`custom_head` (any `torch.nn.Module`, given the raw body map as in fastai 0.7): the Rust loops
call it once per batch through `_HeadRunner`; its parameters and buffers are handed to the Rust
model as the same tensors (no copies), so the Rust SGD steps them, freezing and snapshots
cover them, and `save` writes them as `<cut>.<key>` after the body (what
`nn.Sequential(*children[:cut], custom_head)` loads). With precompute the raw maps are cached.
"""
import contextlib
import math
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import _native, _progress, distributed as _distributed
from ._weights import load_pretrained
from .core import sum_geom, to_np, user_stacklevel
from .layers import AdaptiveConcatPool2d, Flatten
from .learner import Learner, _check_clip, _group_values, _opt_spec
from .metrics import accuracy, accuracy_np, accuracy_thresh
from .sgdr import CircularLR, CircularLR_beta, CosAnneal, LossRecorder, LR_Finder, SaveBestModel
from ._archs import arch_from, default_meta

# fastai 0.7's model_meta: {arch: [cut, lr_cut]}, keyed by the arch handle (`resnet34`), with the
# values of the Rust core's architecture table. `ConvLearner.pretrained` reads it, so a changed
# or added entry (keyed by our handle, or by the function the user passes, e.g. torchvision's
# constructor) sets where the body is cut (before `xtra_cut`) and where layer group 1 starts.
model_meta = default_meta()


def _meta_of(f, arch):
    """The (cut, lr_cut) of `model_meta` for what the user passed (`f`), else for its handle;
    None (the table's own) when neither has an entry."""
    for key in (f, arch):
        try:
            entry = model_meta.get(key)
        except TypeError:  # an unhashable `f` cannot be a key
            entry = None
        if entry is not None:
            break
    else:
        return None
    try:
        cut, lr_cut = entry
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
               for v in (cut, lr_cut)):
            return int(cut), int(lr_cut)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"model_meta[{arch.name}] must be [cut, lr_cut], two non-negative integers; "
                     f"got {entry!r}")


def _output_kind(data):
    """What the model's last layer gives for this data, which also names the loss the Rust loop
    computes itself: log-probabilities (NLL), sigmoid probabilities (binary cross-entropy) or
    raw values (L1). Regression first, as fastai 0.7 (a multi-column regression is both)."""
    return "identity" if data.is_reg else ("sigmoid" if data.is_multi else "log_softmax")


# The loss fastai 0.7's ConvLearner chose for each output kind; when `learn.crit` is this very
# function the Rust loop computes it natively instead of calling back into Python per batch.
_NATIVE_CRIT = {"log_softmax": F.nll_loss, "sigmoid": F.binary_cross_entropy, "identity": F.l1_loss}


def _name_of(f):
    """A metric's column title: its `__name__`, else its class name (a callable object or a
    functools.partial has none)."""
    return getattr(f, "__name__", None) or type(f).__name__


def _call_all(callbacks, event, *args):
    """Calls `event` on every callback in order; an exception comes back unchanged with a note
    naming the callback and the event."""
    for cb in callbacks:
        _call_one(cb, event, *args)


def _any_stops(callbacks, event, *args):
    """fastai 0.7's `stop = stop or cb.event(...)`: the first callback returning something
    truthy stops the round (the later ones are not called)."""
    return any(_call_one(cb, event, *args) for cb in callbacks)


def _call_one(cb, event, *args):
    hook = getattr(cb, event, None)
    if hook is None:  # an object not derived from Callback, without this hook
        return None
    try:
        return hook(*args)
    except BaseException as e:
        e.add_note(f"raised by the fit callback {type(cb).__name__}.{event}")
        raise


def _overrides(cb, event):
    """Does `cb` do something on `event` (not Callback's no-op)? Saves a call per batch."""
    from .sgdr import Callback
    hook = getattr(cb, event, None)
    return hook is not None and getattr(hook, "__func__", hook) is not getattr(Callback, event)


def _default_device():
    # Under torchrun each process of a node takes its own GPU (LOCAL_RANK).
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def _is_batchnorm(m):
    return isinstance(m, torch.nn.modules.batchnorm._BatchNorm)


class _HeadRunner:
    """Runs a `custom_head` module for the Rust model, switching its modes as fastai 0.7's
    training loop did: `train` puts it in training mode (dropout on), and when its layer group
    is frozen or `bn_freeze` is set (`bn_train` False) its BatchNorm layers stay in eval mode."""

    def __init__(self, module):
        self.module = module

    def __call__(self, x, train, bn_train):
        m = self.module
        m.train(bool(train))
        if train and not bn_train:
            for sub in m.modules():
                if _is_batchnorm(sub):
                    sub.eval()
        return m(x)


def _custom_head_args(module):
    """(forward, layer name, [(key, tensor, is_parameter)]) for the native learner. The Rust
    model keeps these very tensors (no copies), so training, freezing and loading act on the
    module the user passed, and `learn.save` writes its state dict under `<cut>.<key>`."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"custom_head must be a torch.nn.Module, got {type(module).__name__}")
    state = module.state_dict(keep_vars=True)
    params = {id(p) for p in module.parameters()}
    if len(params) != sum(1 for v in state.values() if isinstance(v, torch.nn.Parameter)):
        raise NotImplementedError("custom_head with shared (tied) parameters: each would be stepped once per name")
    entries = []
    for k, v in state.items():
        if not torch.is_tensor(v):
            raise TypeError(f"custom_head: state entry {k!r} is a {type(v).__name__}, not a tensor")
        is_param = id(v) in params
        if is_param and v.dtype != torch.float32:
            raise TypeError(f"custom_head: parameter {k!r} is {v.dtype}; the model trains in float32")
        entries.append((k, v, is_param))
    return (_HeadRunner(module), type(module).__name__, entries)


class ModelSummary:
    """What `learn.model` shows: the layers of the flat Sequential and the parameter count."""

    def __init__(self, native, precompute):
        self._entries = native.entries()
        self._head_start = native.head_start
        self.precompute = precompute

    def parameters_count(self):
        return sum(int(np.prod(s)) for _, s, _, is_p in self._entries if is_p)

    def __repr__(self):
        rows = []
        for key, shape, group, is_param in self._entries:
            rows.append(f"  {key:<32} {str(tuple(shape)):<22} group {group}{'' if is_param else ' (buffer)'}")
        n = self.parameters_count()
        return "ConvnetModel(\n" + "\n".join(rows) + f"\n)  {n:,} parameters"


def _set_conv_layout(native, channels_last):
    """Puts every 4-D tensor of the model (convolution weights) in channels-last or the default
    layout, in place: the Rust layers hold the same tensors and see the change."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        for _, t in native.live_tensors():
            if t.dim() == 4 and not t.is_contiguous(memory_format=fmt):
                t.data = t.data.contiguous(memory_format=fmt)
                # A gradient kept from earlier would have the old layout: the next backward
                # makes a fresh one in the new layout instead.
                t.grad = None


class ConvLearner(Learner):
    """A learner for a pretrained convolutional network (lesson 1's `learn`)."""

    def __init__(self, data, native, arch, precompute=False, **kwargs):
        super().__init__(data, native, **kwargs)
        self.arch = arch
        self._precompute = False
        self._acts = None          # {'trn': tensor, 'val': tensor, 'test': tensor|None, ...}
        self._skipped_reported = set()
        self._amp_dtype = None     # torch.bfloat16 when mixed precision is on
        # With precompute on the CPU, train fastai's default head with the hand-written step
        # (src/train/fused_head/: same numbers as autograd up to round-off, 2x+ faster);
        # False trains it through libtorch's autograd like every other model. A switch for
        # tests and benchmarks, not user API.
        self._fused_head = True
        self.freeze()
        self.precompute = precompute

    # ---- precision and memory layout (opt-in) -----------------------------------------------
    def mixed_precision(self, enabled=True, dtype=torch.bfloat16):
        """Opt-in mixed precision: convolutions and matrix products run in `dtype` under
        `torch.autocast` (it reaches the Rust model: both use the same libtorch), while the
        weights, the optimiser's momentum, BatchNorm statistics and the loss stay float32.
        Only bfloat16: float16 would need loss scaling, which this learner does not do. Worth it
        on recent GPUs; on CPUs without bfloat16 units it is slower. Returns the learner."""
        if enabled and dtype is not torch.bfloat16:
            raise ValueError(f"mixed_precision: only torch.bfloat16 is supported (got {dtype}); "
                             "float16 needs loss scaling")
        self._amp_dtype = dtype if enabled else None
        return self

    def half(self):
        """fastai 0.7's switch to reduced precision; here bfloat16 mixed precision (see
        `mixed_precision`)."""
        return self.mixed_precision(True)

    def float(self):
        """Back to full float32."""
        return self.mixed_precision(False)

    def channels_last(self, enabled=True):
        """Channels-last (NHWC) memory layout for the convolution weights, which makes libtorch
        run the convolutions in that layout (faster with cuDNN tensor cores and with oneDNN on
        CPUs). Numerics are unchanged up to float round-off. `ConvLearner.pretrained` turns it
        on by default on the CPU (measured here: 1.3-1.4x faster inference, 1.2x frozen
        training, up to 1.8x unfrozen EfficientNet training) and leaves it off on CUDA, where it
        is an opt-in. Returns the learner."""
        _set_conv_layout(self._native, enabled)
        return self

    def _autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._native.device_type, dtype=self._amp_dtype)

    @classmethod
    def pretrained(cls, f, data, ps=None, xtra_fc=None, xtra_cut=0, custom_head=None, precompute=False,
                   pretrained=True, weights=None, device=None, channels_last=None, **kwargs):
        from ._native import Learner as NativeLearner
        arch = arch_from(f)
        if getattr(data.trn_dl, "_native", None) is None:
            raise ValueError("ConvLearner needs images it can transform: this data has no transforms "
                             "(from_arrays without tfms); pass tfms=tfms_from_model(arch, sz)")
        if isinstance(xtra_cut, bool) or not isinstance(xtra_cut, (int, np.integer)) or xtra_cut < 0:
            raise ValueError(f"xtra_cut must be a non-negative integer (body children to drop), got {xtra_cut!r}")
        output = _output_kind(data)
        if ps is not None and not isinstance(ps, (list, tuple, np.ndarray)):
            ps = [float(ps)]
        head = None if custom_head is None else _custom_head_args(custom_head)
        native = NativeLearner(arch.name, int(data.c), output=output,
                               ps=None if ps is None else [float(p) for p in ps],
                               xtra_fc=None if xtra_fc is None else [int(h) for h in xtra_fc],
                               device=device or _default_device(), xtra_cut=int(xtra_cut),
                               custom_head=head, meta=_meta_of(f, arch))
        if pretrained:
            state = load_pretrained(arch.name, weights)
            native.load_backbone(list(state.items()), str(weights or f"{arch.name} pretrained weights"))
        # Before __init__: precompute=True runs the body at once, in this layout.
        if channels_last is None:
            channels_last = native.device_type == "cpu"
        _set_conv_layout(native, channels_last)
        self = cls.__new__(cls)
        self.xtra_cut = int(xtra_cut)
        self.custom_head = custom_head
        ConvLearner.__init__(self, data, native, arch, precompute=precompute, **kwargs)
        return self

    # ---- what the lesson reads -----------------------------------------------------------
    @property
    def data(self):
        return self.data_

    @property
    def model(self):
        return ModelSummary(self._native, self.precompute)

    @property
    def models(self):
        return self

    @property
    def name(self):
        return f"{self.arch.name}_{self.xtra_cut}"

    @property
    def nf(self):
        return self._native.nf

    @property
    def cut(self):
        """Body children kept (fastai 0.7's `cut` after `cut -= xtra_cut`)."""
        return self._native.cut

    @property
    def c(self):
        return self.data_.c

    def __repr__(self):
        return repr(self.model)

    def _get_crit(self, data):
        """fastai 0.7's ConvLearner loss: L1 for regression, binary cross-entropy for
        multi-label, else negative log-likelihood (the head ends in log-softmax)."""
        return _NATIVE_CRIT[_output_kind(data)]

    def _crit_for_fit(self):
        """`learn.crit` for the Rust loop: None when it is the loss the loop computes natively
        for this model, else the callable (called once per batch)."""
        crit = self.crit
        if crit is _NATIVE_CRIT[_output_kind(self.data_)]:
            return None
        if not callable(crit):
            raise TypeError(f"learn.crit must be a callable (output, target) -> loss tensor, such as "
                            f"F.nll_loss or nn.L1Loss(); got {type(crit).__name__}")
        return crit

    def get_layer_groups(self):
        """Number of layer groups that `fit` sees: 1 (head) with precompute, else 3."""
        return ["head"] if self.precompute else ["group0", "group1", "head"]

    def summary(self):
        """Per layer of the full model, for one (3, sz, sz) input: input and output shapes
        (batch dimension shown as -1), parameter count and whether it trains, keyed
        `'<Layer>-<n>'` as fastai 0.7's summary was."""
        from collections import OrderedDict
        rows = self._native.summary(int(self.data_.sz))
        params, groups = {}, {}
        for key, shape, group, is_param in self._native.entries():
            owner = key.split(".")[0]
            groups[owner] = group
            if is_param:
                params[owner] = params.get(owner, 0) + int(np.prod(shape))
        trainable = self._native.trainable
        out, prev = OrderedDict(), [-1, 3, self.data_.sz, self.data_.sz]
        for i, (name, shape) in enumerate(rows):
            owner = name if name.startswith("_") else str(i)
            shape = [-1] + list(shape[1:])
            out[f"{name}-{i + 1}"] = OrderedDict(
                input_shape=prev, output_shape=shape, nb_params=params.get(owner, 0),
                trainable=bool(trainable[groups[owner]]) if owner in groups else False)
            prev = shape
        return out

    # ---- precompute ------------------------------------------------------------------------
    @property
    def precompute(self):
        return self._precompute

    @precompute.setter
    def precompute(self, value):
        value = bool(value)
        if value:
            self._ensure_activations()
        self._precompute = value

    def _ensure_activations(self):
        """Computes (or loads from PATH/tmp) the body activations of every split: one Rust call
        that keys, names, reads or computes and writes the cache files. The key covers the
        body's current weights, so it follows fine-tuning too."""
        d = self.data_
        splits = [("trn", d.fix_dl), ("val", d.val_dl)]
        if getattr(d, "test_dl", None) is not None:
            splits.append(("test", d.test_dl))
        # A split's bar appears with its first computed batch: a cache that is read draws none.
        shown = {"split": None, "bar": None, "start": time.monotonic()}

        def progress(split, i, n):
            if shown["split"] != split:
                if shown["bar"] is not None:
                    shown["bar"].close()
                    shown["start"] = time.monotonic()
                shown["split"] = split
                shown["bar"] = _progress.ProgressBar(n, desc=f"precompute {split}", start=shown["start"])
            shown["bar"].update(i + 1)
        known = None if self._acts is None else self._acts["body"]
        try:
            with self._autocast():
                got = self._native.precompute(
                    [(split, dl._native) for split, dl in splits], self.tmp_path, os.fspath(d.path),
                    None if self._amp_dtype is None else "bfloat16", progress, known)
        finally:
            if shown["bar"] is not None:
                shown["bar"].close()
        if got is None:  # the activations held are those of the current body
            return
        acts = {"body": got[0].body}
        for a in got:
            if a.warning is not None:
                warnings.warn(a.warning, stacklevel=user_stacklevel())
            # Items skipped as undecodable (skip_bad) are left out of training and
            # validation, and their rows of predictions are NaN.
            if a.left_out:
                self._warn_skipped(a.left_out)
            acts[a.split], acts[a.split + "_ok"] = a.rows, a.kept
        self._acts = acts

    def _warn_skipped(self, paths):
        """One warning per call naming the undecodable images (skip_bad=True) not reported by
        this learner before (an epoch loop would otherwise repeat it every epoch)."""
        new = [p for p in map(str, paths) if p not in self._skipped_reported]
        if not new:
            return
        self._skipped_reported.update(new)
        shown = ", ".join(new[:10]) + (f" and {len(new) - 10} more" if len(new) > 10 else "")
        warnings.warn(f"skipped {len(new)} undecodable image(s) (skip_bad=True): {shown}; they are "
                      "left out of training and validation, and their rows of predict()/TTA() "
                      "are NaN", RuntimeWarning, stacklevel=user_stacklevel())

    def _warn_loader_skips(self, dl):
        """Warns about the items `dl`'s latest pass skipped as undecodable, if any."""
        skipped = dl._native.last_skipped()
        if skipped:
            self._warn_skipped([p for _, p in skipped])

    def _act_targets(self, split):
        d = self.data_
        y = d.trn_y if split == "trn" else d.val_y
        return torch.as_tensor(np.asarray(y))

    def _act_rows(self, split):
        """(activations, targets) of the items of `split` that were decoded."""
        key = split + "_rows"
        if key not in self._acts:
            x, y, ok = self._acts[split], self._act_targets(split), self._acts[split + "_ok"]
            self._acts[key] = (x, y) if ok is None else (x[ok], y[ok])
        return self._acts[key]

    def set_data(self, data, precompute=False):
        """Swaps the data (e.g. bigger images for progressive resizing); re-freezes as
        fastai 0.7 did. The classes must be the same."""
        if list(data.classes) != list(self.data_.classes):
            raise ValueError(f"set_data: the new data has classes {data.classes}, the model was built for "
                             f"{self.data_.classes}")
        self.data_ = data
        self._acts = None
        self._precompute = False
        self.freeze()
        self.precompute = precompute

    def save_cycle(self, name, cycle):
        self.save(f"{name}_cyc_{cycle}")

    def load_cycle(self, name, cycle):
        self.load(f"{name}_cyc_{cycle}")

    # ---- freezing (always on the full 3-group model) ----------------------------------
    def unfreeze(self):
        """Makes every layer group trainable, and turns precompute off (the body must see
        images to learn)."""
        self.freeze_to(0)
        self._precompute = False

    def freeze_to(self, n):
        super().freeze_to(n)
        if self._precompute and n < 2 and n != -1:
            self._precompute = False

    # ---- training --------------------------------------------------------------------------
    def _n_groups(self):
        return 1 if self.precompute else 3

    def _lr_vector(self, v, what):
        vals = _group_values(v, self._n_groups(), what)
        # With precompute only the head trains: a 1-group vector stands for the head.
        return vals * 3 if len(vals) == 1 else vals

    def _n_train_batches(self):
        if self.precompute:
            return math.ceil(len(self._act_rows("trn")[0]) / self.data_.bs)
        return len(self.data_.trn_dl)

    def fit(self, lrs, n_cycle, wds=None, cycle_len=None, cycle_mult=1, cycle_save_name=None,
            best_save_name=None, metrics=None, callbacks=None, use_clr=None, use_clr_beta=None, **kwargs):
        """Trains for `sum_geom(cycle_len or 1, cycle_mult, n_cycle)` epochs; with `cycle_len`,
        cosine annealing with warm restarts. Returns `[val_loss, *metrics]` of the last epoch."""
        if kwargs:
            raise TypeError(f"fit() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        lrs_v = _non_negative(self._lr_vector(lrs, "lrs"), "lrs")
        wds_v = _non_negative(self._lr_vector(wds, "wds"), "wds")
        n_cycle = _whole(n_cycle, "n_cycle")
        cycle_len = None if cycle_len is None else _whole(cycle_len, "cycle_len", zero_ok=True)
        cycle_mult = _whole(cycle_mult, "cycle_mult")
        n_epoch = sum_geom(cycle_len or 1, cycle_mult, n_cycle)
        B = self._n_train_batches()
        if use_clr is not None and use_clr_beta is not None:
            raise ValueError("fit: pass use_clr or use_clr_beta, not both")
        if use_clr is not None or use_clr_beta is not None:
            kind, clr, second, rec_cls = (("clr", use_clr, "cut_div", CircularLR) if use_clr is not None
                                          else ("clr_beta", use_clr_beta, "pct", CircularLR_beta))
            # A cycle is cycle_len epochs (cycle_mult lengthens the fit, not the cycle, as in
            # the original, which crashed without cycle_len instead of saying so).
            if not cycle_len:
                raise ValueError(f"fit: use_{kind} needs cycle_len (the cycle length in epochs)")
            clr = tuple(float(v) for v in clr)
            if len(clr) not in (2, 4) or clr[0] <= 0 or clr[1] <= 0:
                raise ValueError(f"fit: expected use_{kind}=(div, {second}[, mom1, mom2]) with positive "
                                 f"div and {second}, got {clr}")
            cycle, moms = B * cycle_len, clr[2:] or None
            if kind == "clr":
                schedule = _native.Schedule.clr(cycle=cycle, div=clr[0], cut_div=clr[1], moms=moms)
            else:
                schedule = _native.Schedule.clr_beta(cycle=cycle, div=clr[0], pct=clr[1], moms=moms)
        else:
            schedule = (_native.Schedule.cos_anneal(first_cycle=B * cycle_len, cycle_mult=int(cycle_mult))
                        if cycle_len else _native.Schedule.constant())
            rec_cls = CosAnneal if cycle_len else LossRecorder
        return self._fit_loop(lrs_v, wds_v, schedule, n_epoch, metrics, callbacks, rec_cls,
                              cycle_len=cycle_len, cycle_mult=cycle_mult,
                              cycle_save_name=cycle_save_name, best_save_name=best_save_name)

    def _fit_loop(self, lrs, wds, schedule, n_epoch, metrics, callbacks, rec_cls, lr_find=False,
                  cycle_len=None, cycle_mult=1, cycle_save_name=None, best_save_name=None):
        metrics = self.metrics if metrics is None else metrics
        # fastai 0.7's order: the user's callbacks, then (the schedule, recorded by the Rust
        # loop here) SaveBestModel. The user's list itself is never mutated.
        callbacks = list(callbacks or [])
        if best_save_name:
            callbacks.append(SaveBestModel(self, None, metrics, name=best_save_name))
        names = ["epoch", "trn_loss", "val_loss"] + [_name_of(m) for m in metrics]
        precompute = self.precompute
        B = self._n_train_batches()
        self._check_not_empty(precompute)
        crit = self._crit_for_fit()
        group = _distributed.active(self)  # inside learn.distrib_ctx(), else None
        # The hand-written head step is float32: mixed precision keeps the autograd path.
        self._native.begin_fit(lrs=lrs, wds=wds, schedule=schedule, precompute=precompute,
                               stop_on_divergence=lr_find,
                               fused_head=self._fused_head and self._amp_dtype is None,
                               opt=_opt_spec(self.opt_fn), clip=_check_clip(self.clip), crit=crit,
                               grad_sync=group and group.grad_sync)
        progress = _progress.fit_progress(n_epoch, B, names[3:])
        result = None
        cycle_end, cycle_epochs, cycle_idx = (cycle_len or 0), (cycle_len or 0), 0
        # What learn.sched keeps per completed epoch, as fastai 0.7's LossRecorder did.
        n_recorded, epoch_ends, val_losses, rec_metrics = 0, [], [], []
        # on_batch_begin crosses into Python before every step only when a callback uses it.
        begin_cbs = [cb for cb in callbacks if _overrides(cb, "on_batch_begin")]
        try:
            _call_all(callbacks, "on_train_begin")
            _call_all(callbacks, "on_phase_begin")
            for epoch in range(n_epoch):
                def on_batch(i, loss, epoch=epoch):
                    nonlocal n_recorded
                    n_recorded += 1
                    progress.on_batch(epoch, i, loss)
                    return _any_stops(callbacks, "on_batch_end", loss)

                def on_batch_begin(i):
                    _call_all(begin_cbs, "on_batch_begin")
                begin = on_batch_begin if begin_cbs else None
                seed_epoch = self._epochs_seen
                self._epochs_seen += 1
                with self._autocast():
                    if precompute:
                        trn_loss, stopped = self._native.train_epoch_tensors(
                            *self._act_rows("trn"), self.data_.bs,
                            int(getattr(self.data_, "seed", 0) or 0), seed_epoch, on_batch, begin,
                            shard=group and group.shard)
                    else:
                        trn_loss, stopped = self._native.train_epoch_loader(
                            self.data_.trn_dl._native, seed_epoch, on_batch, begin)
                        self._warn_loader_skips(self.data_.trn_dl)
                if stopped:
                    return None
                if group is not None:
                    group.average_bn_stats(self._native)
                if epoch + 1 == n_epoch:  # the fit's one phase ends with its last batch
                    _call_all(callbacks, "on_phase_end")
                vals = self._validate(metrics, precompute)
                result = vals
                epoch_ends.append(n_recorded)
                val_losses.append(vals[0])
                rec_metrics.append(vals[1:])
                progress.on_epoch_end(epoch, [trn_loss] + vals)
                if cycle_len and epoch + 1 == cycle_end:
                    if cycle_save_name:
                        self.save(f"{cycle_save_name}_cyc_{cycle_idx}")
                    cycle_idx += 1
                    cycle_epochs *= cycle_mult
                    cycle_end += cycle_epochs
                if _any_stops(callbacks, "on_epoch_end", vals):
                    break
            _call_all(callbacks, "on_train_end")
            return result
        finally:
            lrs_rec, losses, moms, one_row = self._native.end_fit()
            if one_row:
                warnings.warn(f"left out {one_row} training batch(es) of a single image: BatchNorm "
                              "cannot train on one row (the training set is one more than a "
                              f"multiple of bs={self.data_.bs}, or skip_bad left one image in a "
                              "batch); each epoch leaves out a different image",
                              RuntimeWarning, stacklevel=user_stacklevel())
            self.sched = rec_cls(iterations=list(range(1, len(losses) + 1)), lrs=lrs_rec, losses=losses,
                                 momentums=moms, epochs=epoch_ends, val_losses=val_losses,
                                 rec_metrics=rec_metrics, init_lrs=lrs[-1:] if precompute else lrs)
            progress.close()

    def _check_not_empty(self, precompute):
        """Before the first step: an empty split would otherwise 'train' on nothing (NaN loss)
        or fail only after a whole epoch."""
        d = self.data_
        n_trn = len(self._act_rows("trn")[0]) if precompute else len(d.trn_ds)
        n_val = len(self._act_rows("val")[0]) if precompute else len(d.val_ds)
        for n, what in ((n_trn, "training"), (n_val, "validation")):
            if n == 0:
                raise ValueError(f"fit: the {what} set is empty (check val_idxs, or the folders "
                                 "and skip_bad)")

    def _validate(self, metrics, precompute):
        preds, targs, loss, keep = self._predict_raw(is_test=False, precompute=precompute, with_loss=True)
        if keep is not None:  # metrics over the items that were decoded
            preds, targs = preds[keep], targs[keep]
        vals = [loss]
        bs = self.data_.bs
        n = len(preds)
        for m in metrics:
            total = 0.0
            for s in range(0, n, bs):
                p, t = preds[s:s + bs], targs[s:s + bs]
                total += float(m(p, t)) * len(p)
            vals.append(total / max(n, 1))
        return vals

    def _predict_raw(self, is_test=False, precompute=None, with_loss=False, caller="predict"):
        """(outputs, targets) with one row per item of the split (NaN outputs for the items
        skip_bad left out), the mean loss over the others, and their mask (None: all)."""
        precompute = self.precompute if precompute is None else precompute
        d = self.data_
        if is_test and getattr(d, "test_dl", None) is None:
            raise ValueError(f"{caller}(is_test=True): the data has no test set (give from_paths or "
                             "from_csv a test_name=, or from_arrays a test=)")
        with self._autocast():
            if precompute:
                split = "test" if is_test else "val"
                x, keep = self._acts[split], self._acts[split + "_ok"]
                y = torch.zeros(len(x), dtype=torch.int64) if is_test else self._act_targets("val")
                return (*self._native.predict_tensors(x, y, d.bs, True, with_loss and not is_test, keep), keep)
            dl = d.test_dl if is_test else d.val_dl
            out = self._native.predict_loader(dl._native, 0, with_loss and not is_test, None)
            self._warn_loader_skips(dl)
            return out

    def lr_find(self, start_lr=1e-5, end_lr=10, wds=None, linear=False, **kwargs):
        """The learning-rate range test over at most one epoch; weights are restored after,
        also when interrupted. Leaves `learn.sched` (a `LR_Finder`) to plot."""
        starts = _non_negative(self._lr_vector(start_lr, "start_lr"), "start_lr")
        if not linear and min(starts) <= 0:
            raise ValueError(f"lr_find: start_lr must be above 0 (the rates grow by a constant "
                             f"factor), got {start_lr}")
        if not float(end_lr) > starts[-1]:
            raise ValueError(f"lr_find: end_lr ({end_lr}) must be above start_lr ({starts[-1]})")
        ratio = float(end_lr) / starts[-1]
        B = self._n_train_batches()
        snap = self._native.snapshot()
        try:
            self._fit_loop(starts, self._lr_vector(wds, "wds"), _native.Schedule.lr_find(ratio=ratio, n_batches=B, linear=bool(linear)), 1,
                           None, kwargs.pop("callbacks", None), LR_Finder, lr_find=True)
        finally:
            self._native.restore(snap)

    # ---- prediction ------------------------------------------------------------------------
    def predict(self, is_test=False):
        """(N, c) float32 log-probabilities for the validation (or test) set, in `val_y` order."""
        return to_np(self._predict_raw(is_test, caller="predict")[0])

    def predict_with_targs(self, is_test=False):
        p, y, _, _ = self._predict_raw(is_test, caller="predict_with_targs")
        return to_np(p), to_np(y)

    def predict_array(self, arr):
        """Outputs for a batch in model input format: float32 (n, 3, sz, sz) normalised images
        (or (n, nf) activations); returns numpy log-probabilities."""
        x = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float32)
        if self._native.has_custom_head:
            # The custom head's input: the body's raw map, (n, C, h, w), C = nf / 2.
            c = self.nf // 2
            acts_ok, acts = x.dim() == 4 and x.shape[1] == c, f"(n, {c}, h, w)"
        else:
            acts_ok, acts = x.dim() == 2 and x.shape[1] == self.nf, f"(n, {self.nf})"
        if not ((x.dim() == 4 and x.shape[1] == 3) or acts_ok):
            raise ValueError(f"predict_array: expected normalised images (n, 3, H, W) or activations "
                             f"{acts}, got shape {tuple(x.shape)}")
        with self._autocast():
            return to_np(self._native.predict_array(x))

    def TTA(self, n_aug=4, is_test=False):
        """(log_preds of shape (ceil(n_aug/4) + n_aug, N, c), targets): the centre-crop view,
        then `n_aug` passes of the training augmentation (always real images, even with
        precompute on)."""
        if int(n_aug) < 1:
            raise ValueError(f"TTA: n_aug must be at least 1 (got {n_aug}); predict() gives the "
                             "centre-crop view alone")
        d = self.data_
        p0, targs, _, _ = self._predict_raw(is_test, precompute=False, caller="TTA")
        p0, targs = to_np(p0), to_np(targs)
        dl = d.test_aug_dl if is_test else d.aug_dl
        outs = [p0] * math.ceil(n_aug / 4)
        bar = _progress.ProgressBar(n_aug, desc="TTA", leave=False)
        try:
            for i in range(n_aug):
                with self._autocast():
                    # Pass i's draws: the aug loaders draw from the test-time stream.
                    p = self._native.predict_loader(dl._native, i, False, None)[0]
                self._warn_loader_skips(dl)
                outs.append(to_np(p))
                bar.update(i + 1)
        finally:
            bar.close()
        return np.stack(outs), targs


def _non_negative(values, what):
    """Learning rates and weight decays: finite and not negative (a NaN one ruins the weights
    for good, silently)."""
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{what}: every value must be a finite number >= 0, got {v}")
    return values


def _whole(v, what, zero_ok=False):
    """A count of cycles or epochs: a whole number >= 1 (or 0 where `zero_ok`)."""
    ok = isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
    if not ok or int(v) < (0 if zero_ok else 1):
        raise ValueError(f"fit: {what} must be a whole number >= {0 if zero_ok else 1}, got {v!r}")
    return int(v)


class ConvnetBuilder:
    """fastai 0.7 name kept for imports; the model is built by `ConvLearner.pretrained`."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("ConvnetBuilder: build models with ConvLearner.pretrained(arch, data)")


from . import _exports, core as _core, layers as _layers, learner as _learner  # noqa: E402

# As in fastai 0.7, `from fastai.conv_learner import *` brings the learner's whole world (spec
# 1.1): numpy, torch, the architectures, transforms, data classes, metrics, layers, callbacks.
__all__, __getattr__ = _exports.reexport(
    __name__, ["ConvLearner", "ConvnetBuilder", "model_meta", "ModelSummary"],
    [_core, _layers, _learner])
