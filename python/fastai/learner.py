"""`Learner`: training, prediction and checkpoints on top of the Rust learner.

Python drives the epochs (so the table, callbacks and checkpoints happen between epochs); each
epoch's batch loop, validation and prediction run in Rust without the GIL. Progress is drawn by
`fastai._progress`; the schedule recorded during a call is left in `learn.sched`.
"""
import contextlib
import errno
import functools
import math
import numbers
import os
import re
import warnings
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from . import _native, _progress, distributed as _distributed
from ._modules import sync_trainable
from .core import BasicModel, SGD_Momentum, children, sum_geom, to_np, user_stacklevel
from .exceptions import WeightsError
from .sgdr import CircularLR, CircularLR_beta, CosAnneal, LossRecorder, LR_Finder, SaveBestModel


def _group_values(v, n_groups, what):
    """fastai's broadcasting of lrs/wds to layer groups: a scalar (or 1 value) for all, else
    one per group (earliest layers first)."""
    if v is None:
        return [0.0] * n_groups
    vals = [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]
    if len(vals) == 1:
        return vals * n_groups
    if len(vals) != n_groups:
        raise ValueError(f"{what}: got {len(vals)} values but the model has {n_groups} layer groups "
                         f"(give one number, or {n_groups} values, earliest layers first)")
    return vals


def _opt_spec(opt_fn):
    """The optimiser the Rust loop runs for fastai's `opt_fn` (a `_native.Optimizer`). `opt_fn` is `torch.optim.SGD` or `torch.optim.Adam`, or a
    `functools.partial` of one with its hyper-parameters (fastai's `SGD_Momentum(0.9)`, the
    default, is one); `lr` and `weight_decay` come from `fit`, per layer group."""
    fn, kw = opt_fn, {}
    if isinstance(fn, functools.partial):
        if fn.args:
            raise TypeError(f"opt_fn: give the optimiser's settings as keywords, got {opt_fn!r}")
        fn, kw = fn.func, dict(fn.keywords)
    kw.pop("lr", None)
    kw.pop("weight_decay", None)
    # Implementation switches of torch's optimisers that do not change the numbers.
    for k in ("foreach", "fused", "capturable", "differentiable"):
        kw.pop(k, None)
    if fn is torch.optim.SGD:
        momentum = float(kw.pop("momentum", 0.0))
        if kw.pop("dampening", 0) != 0 or kw.pop("nesterov", False) or kw.pop("maximize", False):
            raise ValueError("opt_fn: SGD with dampening, nesterov or maximize is not implemented "
                             "by the Rust training loop")
        spec = _native.Optimizer.sgd(momentum=momentum)
    elif fn is torch.optim.Adam:
        b1, b2 = (float(b) for b in kw.pop("betas", (0.9, 0.999)))
        eps = float(kw.pop("eps", 1e-8))
        if kw.pop("amsgrad", False) or kw.pop("maximize", False) or kw.pop("decoupled_weight_decay", False):
            raise ValueError("opt_fn: Adam with amsgrad, maximize or decoupled weight decay is not "
                             "implemented by the Rust training loop")
        spec = _native.Optimizer.adam(beta1=b1, beta2=b2, eps=eps)
    else:
        raise TypeError(f"opt_fn: the Rust training loop runs torch.optim.SGD and torch.optim.Adam "
                        f"(or a functools.partial of either with its settings), got {opt_fn!r}")
    if kw:
        raise TypeError(f"opt_fn: unsupported setting(s) {sorted(kw)} for {fn.__name__}")
    return spec


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass  # never created, or the folder refuses even that: nothing was left there


# `save` writes `<name>.h5.tmp<pid>` and renames it; the pid tells whose it is.
_TEMPORARY = re.compile(r"\.h5\.tmp([0-9]+)$")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or not a pid we can ask about): leave it be
    return True


def _sweep_dead_temporaries(folder):
    """Removes the temporary files that saves of processes no longer alive left in `folder`
    (a writer killed between writing and renaming); a live writer's, ours included, is never
    touched."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # no such folder yet, or unreadable: the save itself reports what matters
    for entry in entries:
        m = _TEMPORARY.search(entry.name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid > 0 and pid != os.getpid() and not _pid_alive(pid):
            _remove_quietly(entry.path)


class _WriteErrors:
    """The file object torch.save writes through. torch's zip writer turns an OSError raised by
    `write` (a full disk) into `RuntimeError: unexpected pos`, naming neither the error nor the
    file; this keeps the first such OSError so `save` can raise it instead."""

    def __init__(self, f):
        self._f = f
        self.error = None

    def write(self, b):
        try:
            return self._f.write(b)
        except OSError as e:
            if self.error is None:
                self.error = e
            raise

    def flush(self):
        return self._f.flush()


def _check_clip(clip):
    """fastai 0.7's `clip`: the gradient norm to clip to before each step, as a float, or None
    (also for 0: the original tested `if self.clip:`)."""
    if clip is None:
        return None
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not (math.isfinite(clip) and clip >= 0):
        raise ValueError(f"clip must be a finite number >= 0 (the gradient norm to clip to; 0 or None: "
                         f"no clipping), got {clip!r}")
    return float(clip) or None


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


_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def _amp_dtype_for(precision, device_type):
    """The autocast dtype a new learner runs in (None: plain float32). `precision` is
    'float32', 'bfloat16' or None; None reads FASTAI_RS_PRECISION (the same two values), and
    unset, the default rule: bfloat16 on a CPU that computes it natively (about twice as fast
    there, at float32 accuracy for these networks), float32 elsewhere (emulated bfloat16 is
    slower; on CUDA the choice is left to the user for now)."""
    source = "precision"
    if precision is None:
        precision = os.environ.get("FASTAI_RS_PRECISION") or None
        source = "FASTAI_RS_PRECISION"
    if precision is None:
        native = device_type == "cpu" and _native.cpu_has_native_bf16()
        return torch.bfloat16 if native else None
    if isinstance(precision, torch.dtype):
        precision = str(precision).removeprefix("torch.")
    if precision not in _PRECISIONS:
        raise ValueError(f"{source}: expected 'float32' or 'bfloat16', got {precision!r}")
    return _PRECISIONS[precision]



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



def _as_float_batch(arr, caller):
    """A batch given to `predict_array`: float32 or float64 values (0.7 refused uint8 too)."""
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{caller}: expected float32/float64 values in the model's input format, got {a.dtype}")
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


def _flat_modules(group):
    """A layer group as fastai 0.7 allowed it: one module, or a list (or tuple) of modules."""
    if isinstance(group, torch.nn.Module):
        return [group]
    if isinstance(group, (list, tuple)):
        out = []
        for g in group:
            out.extend(_flat_modules(g))
        return out
    raise TypeError(f"get_layer_groups() returned a {type(group).__name__}; each layer group must be a "
                    "torch.nn.Module or a list of them")


def _state_keys(models):
    m = getattr(models, "model", None)
    return tuple(m.state_dict(keep_vars=True)) if isinstance(m, torch.nn.Module) else None


class _SplitTargetCrit:
    """`learn.crit` given a tuple target as the list of its parts' batch tensors (fastai 0.7's
    `crit(output, [boxes, classes])`); other targets pass unchanged. Named as the user's loss,
    so errors name it."""

    def __init__(self, crit, datasets):
        self.crit, self.datasets = crit, datasets
        self.__name__ = _name_of(crit)

    def __call__(self, out, y):
        return self.crit(out, _dataset._split_target(y, *self.datasets))


def _targets_np(y):
    return [to_np(t) for t in y] if isinstance(y, list) else to_np(y)


class _ModuleRunner:
    """Runs a user's module for the Rust loop, in fastai 0.7's training mode: `train()` on the
    whole module, then every BatchNorm layer that is frozen (not `trainable`, or its weight
    not requiring a gradient) or under `bn_freeze` back in eval mode, and dropout layers with
    0.7's `drop_freeze` flag too. `part` is 'model', or 'body' / 'head' for a model built as a
    body and a head (precompute). A tuple output gives its first element, as 0.7's loop did."""

    def __init__(self, model, body=None, head=None):
        self.parts = {"model": model, "body": body, "head": head}

    def __call__(self, part, x, train, bn_freeze):
        m = self.parts[part]
        if train:
            m.train()
            for sub in m.modules():
                if _is_batchnorm(sub):
                    frozen = not getattr(sub, "trainable", True) or (
                        sub.weight is not None and not sub.weight.requires_grad)
                    if frozen or bn_freeze or getattr(sub, "bn_freeze", False):
                        sub.eval()
                elif isinstance(sub, torch.nn.Dropout) and getattr(sub, "drop_freeze", False) \
                        and not getattr(sub, "trainable", True):
                    sub.eval()
        else:
            m.eval()
        out = m(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


def _module_learner(learner, models):
    """The Rust learner for a models object holding a user's torch module: its parameters and
    buffers (the module's own tensors) each tagged with the layer group `get_layer_groups()`
    puts them in. A models object with `top_model` and `fc_model` (`ConvnetBuilder`) can also
    precompute: its body and head run apart."""
    model = getattr(models, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"models.model must be a torch.nn.Module, got {type(model).__name__} (from "
                        f"{type(models).__name__})")
    # ConvLearner asks for the groups without precompute: the full model's.
    try:
        groups = models.get_layer_groups(False)
    except TypeError:
        groups = models.get_layer_groups()
    groups = [_flat_modules(g) for g in groups]
    device = _default_device()
    model.to(device)  # in place: the parameters keep their identity
    group_of = {}
    for g, mods in enumerate(groups):
        for m in mods:
            for t in list(m.parameters()) + list(m.buffers()):
                if id(t) in group_of and group_of[id(t)] != g and isinstance(t, torch.nn.Parameter):
                    raise ValueError(f"{type(models).__name__}.get_layer_groups(): a parameter of "
                                     f"{type(m).__name__} is in layer groups {group_of[id(t)]} and {g}; "
                                     "each parameter may be in one group only")
                group_of.setdefault(id(t), g)
    params = {id(p) for p in model.parameters()}
    state, aliases, taken = [], set(), set()
    for key, t in model.state_dict(keep_vars=True).items():
        if not torch.is_tensor(t):
            raise TypeError(f"{type(model).__name__}: state entry {key!r} is a {type(t).__name__}, not a tensor")
        if id(t) in taken:  # a tied tensor's second name: one entry, stepped once
            aliases.add(key)
            continue
        taken.add(id(t))
        is_param = id(t) in params
        if is_param and t.dtype != torch.float32:
            raise TypeError(f"{type(model).__name__}: parameter {key!r} is {t.dtype}; the learner trains "
                            "float32 parameters")
        state.append((key, t, is_param, group_of.get(id(t), len(groups))))
    body, head = getattr(models, "top_model", None), getattr(models, "fc_model", None)
    splits = isinstance(body, torch.nn.Module) and isinstance(head, torch.nn.Module) and len(groups) >= 2
    name = getattr(models, "name", None)
    if not name or name == "unnamed":  # BasicModel's default: the class says more
        name = type(model).__name__
    name = str(name)
    runner = _ModuleRunner(model, body if splits else None, head if splits else None)
    native = _native.Learner.from_module(runner, state, len(groups), name=name, output=learner._output(),
                                         device=device, splits=splits)
    return _ModuleNative(native, model, groups, aliases)


class _ModuleNative:
    """The Rust learner of a user's module, with what the Python side keeps beside it: the
    module, its layer groups (lists of modules) and the names of tied tensors' second keys."""

    def __init__(self, native, module, groups, aliases):
        self._inner = native
        self._module = module
        self._groups = groups
        self._aliases = aliases

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)


def _module_summary(model, x):
    """fastai 0.7's `model_summary`: one row per layer that is not a container, in call
    order, for the batch `x`."""
    rows, hooks = OrderedDict(), []

    def hook(m, inp, out):
        name = f"{type(m).__name__}-{len(rows) + 1}"
        first = inp[0] if isinstance(inp, (tuple, list)) and inp else inp
        shape = lambda t: [-1] + list(t.shape[1:]) if torch.is_tensor(t) else [
            [-1] + list(o.shape[1:]) for o in t if torch.is_tensor(o)]
        n = sum(p.numel() for p in m.parameters(recurse=False))
        w = getattr(m, "weight", None)
        rows[name] = OrderedDict(input_shape=shape(first), output_shape=shape(out), nb_params=n,
                                 trainable=bool(w is not None and w.requires_grad))

    for m in model.modules():
        if not isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList)) and m is not model:
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


class Learner:
    """fastai 0.7's learner: data, a models object (`.model`, a torch module, and
    `.get_layer_groups()`), an optimiser, a loss and metrics.

    The batch loops run in Rust (`fastai._native.Learner`) without the GIL. For the
    architectures the Rust core builds (`ConvLearner.pretrained(resnet34, data)`) the whole
    model is native; any other torch module (`Learner(data, BasicModel(m))`,
    `ConvLearner.from_model_data(m, data)`, a U-Net's models object) is handed to the same loop:
    its parameters and buffers are given to the Rust model as the very tensors the module holds
    (each in the layer group `get_layer_groups()` puts it in), the Rust optimiser steps them in
    place, and only the module's forward runs in Python, once per batch. So the user's own
    reference to the module sees training as it happens, as in 0.7.
    """

    def __init__(self, data, models, opt_fn=None, tmp_name="tmp", models_name="models", metrics=None,
                 clip=None, crit=None, precision=None):
        self.data_ = data
        self.models = models
        self.metrics = metrics
        self.sched = None
        self.wd_sched = None
        # fastai 0.7 ignored the `clip` argument (only `learn.clip = ...` after construction
        # clipped); clipping when asked is what a user passing it means.
        self.clip = clip
        # fastai 0.7's default: SGD with momentum 0.9. Checked now; read again at each fit.
        self.opt_fn = opt_fn or SGD_Momentum(0.9)
        _opt_spec(self.opt_fn)
        self._epochs_seen = 0
        self._amp_dtype = None     # torch.bfloat16 when mixed precision is on (set below)
        self._skipped_reported = set()
        # ConvLearner's hand-written head step (precompute on the CPU); nothing else has it.
        self._fused_head = getattr(self, "_fused_head", False)
        self.reg_fn = None
        self.fp16 = False
        # Relative names are below the data's PATH, as 0.7 (through the `data` property, which
        # a subclass may override); absolute ones are used as they are.
        self.tmp_path = os.path.join(self.data.path, tmp_name)
        self.models_path = os.path.join(self.data.path, models_name)
        for p in (self.tmp_path, self.models_path):
            try:
                os.makedirs(p, exist_ok=True)
            except OSError as e:
                raise type(e)(e.errno, f"{p}: cannot create this folder ({e.strerror}); make PATH writable or pass "
                              f"tmp_name=/models_name= absolute paths to a writable place", p) from None
        # fastai 0.7's loss: the one given, else the default for this kind of data. A plain
        # attribute, read at the start of each fit.
        self.crit = crit if crit is not None else self._get_crit(data)
        native = getattr(models, "_native", None)
        if native is None:
            before = _state_keys(models)
            native = _module_learner(self, models)
            self._native = native
            out = self._trial_output()
            if _state_keys(models) != before:
                # A module that makes layers on its first call (DynamicUnet sizes its decoder
                # from the encoder's activations): the trial call made them, and the learner
                # must hold them too, or they would never train.
                native = _module_learner(self, models)
            self._check_output_width(out)
        self._native = native
        # Before ConvLearner's precompute, which runs in this precision.
        self._amp_dtype = _amp_dtype_for(precision, native.device_type)

    @classmethod
    def from_model_data(cls, m, data, **kwargs):
        """A learner for the torch module `m` (each direct child one layer group), every group
        trainable: fastai 0.7's way to train one's own network (lesson 7's CIFAR-10 ResNets,
        Darknet, ...)."""
        self = cls(data, BasicModel(m), **kwargs)
        self.unfreeze()
        return self

    # ---- what 0.7's learner exposes --------------------------------------------------------
    @property
    def data(self):
        return self.data_

    @property
    def model(self):
        return self.models.model

    @property
    def children(self):
        return children(self.model)

    def __getitem__(self, i):
        return self.children[i]

    def __repr__(self):
        return repr(self.model)

    def get_layer_groups(self):
        return self.models.get_layer_groups()

    @property
    def precompute(self):
        """Training on cached body activations: only `ConvLearner` does it."""
        return False

    def _output(self):
        """What the model's last layer gives for this data ('log_softmax', 'sigmoid',
        'identity'), which names the loss the Rust loop computes natively."""
        data = self.data_
        return _output_kind(data) if hasattr(data, "is_multi") else "identity"

    def _get_crit(self, data):
        """The default loss for `data`; the base learner's is mean squared error."""
        return F.mse_loss

    def _crit_for_fit(self):
        """`learn.crit` for the Rust loop: None when it is the loss the loop computes natively
        for this model's output, else the callable (called once per batch)."""
        crit = self.crit
        if crit is _NATIVE_CRIT[self._output()]:
            return None
        if not callable(crit):
            raise TypeError(f"learn.crit must be a callable (output, target) -> loss tensor, such as "
                            f"F.nll_loss or nn.L1Loss(); got {type(crit).__name__}")
        datasets = self._target_datasets()
        if not datasets:
            return crit
        return _SplitTargetCrit(crit, datasets)

    def _target_datasets(self):
        """The datasets of the user's (items made in Python) whose targets may be tuples, which
        reach the loss and metrics as lists of tensors."""
        d = self.data_
        out = []
        for name in ("trn_dl", "val_dl"):
            ds = getattr(getattr(d, name, None), "dataset", None)
            if ds is not None and not (isinstance(ds, _dataset.BaseDataset) and _dataset._fused_kind(ds)):
                out.append(ds)
        return out

    def _split(self, y, is_test=False):
        d = self.data_
        ds = getattr(getattr(d, "test_dl" if is_test else "val_dl", None), "dataset", None)
        return _dataset._split_target(y, ds) if ds is not None else y

    def _metrics_for_fit(self):
        return list(self.metrics or [])

    def summary(self):
        """Per layer of the model, for one batch of the data: input and output shapes (batch
        dimension shown as -1), parameter count and whether it trains, keyed `'<Layer>-<n>'` as
        fastai 0.7's summary was. The input is a real batch of the validation set (so models of
        other than 3 channels work, where 0.7 assumed 3)."""
        return _module_summary(self.model, self._sample_input())

    def _trial_output(self):
        """The model's output for one validation item (eval mode, no gradient), or None when
        that fails: any trouble with it is left for training to report."""
        m = self.models.model
        try:
            x = torch.as_tensor(np.asarray(self._sample_input()[:1]))
            was = m.training
            m.eval()
            try:
                with torch.no_grad():
                    out = m(x.to(next(m.parameters()).device))
            finally:
                m.train(was)
        except Exception:
            return None
        return out[0] if isinstance(out, (tuple, list)) else out

    def _check_output_width(self, out):
        """A classifier whose output width is not the data's class count would fail (or, for
        NLL, index past its outputs) only once training starts: say so at construction. Not
        for data whose `get_c()` is 0 (0.7's masks: the model decides) or whose targets are
        tuples (a joint box-and-class output is wider than the classes)."""
        c = getattr(self.data_, "c", None)
        if not c or self._output() == "identity" or not torch.is_tensor(out):
            return
        if any("_y_parts" in getattr(ds, "__dict__", {}) for ds in self._target_datasets()):
            return
        if out.dim() >= 2 and out.shape[1] != c:
            m = self.models.model
            raise ValueError(f"{type(m).__name__} gives {out.shape[1]} outputs per item, but the data has "
                             f"{c} classes; make its last layer give {c}")

    def _sample_input(self):
        d = self.data_
        dl = d.val_dl if getattr(d, "val_dl", None) is not None else d.trn_dl
        x, _ = next(iter(dl))
        return x[:2] if len(x) > 1 else x

    @property
    def clip(self):
        """Gradient clipping, as fastai 0.7: before each optimiser step the trainable parameters'
        gradients are scaled down to this total L2 norm when above it (None: no clipping)."""
        return self._clip

    @clip.setter
    def clip(self, value):
        _check_clip(value)
        self._clip = value

    # ---- checkpoints -------------------------------------------------------------------
    def get_model_path(self, name):
        return os.path.join(self.models_path, name) + ".h5"

    def save(self, name):
        """Writes the full model's state dict (fastai 0.7 keys) to `models/<name>.h5`, readable
        by `torch.load`; written to a temporary file and renamed, so a failed save leaves the
        previous file intact. Temporary files left in that folder by saves of processes that
        died mid-write are removed."""
        path = self.get_model_path(name)
        state = self._state_to_save()
        folder = os.path.dirname(path)
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            # `save('stage1/best')` makes the sub-folder, as a user would expect.
            if os.path.dirname(name):
                os.makedirs(folder, exist_ok=True)
            _sweep_dead_temporaries(folder)
            # Opened here rather than by torch.save(path): its zip writer reports an unwritable
            # place or a full disk as a bare RuntimeError, while open() and write() give the
            # OSError kind (permission, read-only file system, not a directory, no space) to
            # re-raise naming the folder.
            with open(tmp, "wb") as f:
                w = _WriteErrors(f)
                try:
                    torch.save(state, w)
                except RuntimeError:
                    if w.error is not None:
                        raise w.error from None
                    raise
            os.replace(tmp, path)
        except OSError as e:
            _remove_quietly(tmp)
            hint = ("free some space there or pass models_name= a folder on another disk"
                    if e.errno in (errno.ENOSPC, errno.EDQUOT) else
                    "make that folder writable or pass models_name= a writable folder")
            raise type(e)(e.errno, f"{folder}: cannot write the model file {os.path.basename(path)} "
                          f"({e.strerror or e}); {hint}", folder) from e
        except BaseException:
            _remove_quietly(tmp)
            raise

    def distrib_ctx(self, timeout=1800):
        """Data-parallel training under torchrun (fastai v2's spelling); does nothing outside
        a launch. See `fastai.distributed`."""
        from .distributed import distrib_ctx
        return distrib_ctx(self, timeout=timeout)

    def load(self, name):
        """Reads `models/<name>.h5` (written by `save`, or by fastai 0.7 for the same model)."""
        path = self.get_model_path(name)
        self._load_state_file(path)

    def _load_state_file(self, path):
        if not os.path.exists(path):
            raise FileNotFoundError(2, f"{path}: no such model file", path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"{path}: cannot read this model file ({e})") from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
        # A module's second name for a tied tensor is not a separate entry of the Rust model.
        aliases = getattr(self._native, "_aliases", ())
        self._native.load_state_dict([(k, v) for k, v in state.items()
                                      if torch.is_tensor(v) and k not in aliases], path)

    def _state_to_save(self):
        """The state dict `save` writes: the native model's (fastai 0.7's keys), or a user
        module's own (`model.state_dict()`, tied tensors under each of their names)."""
        if getattr(self._native, "_aliases", None) is None:
            return dict(self._native.state_dict())
        return {k: v.detach().cpu() for k, v in self._native._module.state_dict().items()}

    # ---- freezing ----------------------------------------------------------------------
    def freeze_to(self, n):
        """Layer groups `n:` train (a Python slice: -1 is the last group), the others are
        frozen: their parameters stop requiring gradients and their BatchNorm layers keep
        their running statistics while training. Modules get 0.7's `trainable` attribute."""
        self._native.freeze_to(n)
        self._sync_trainable()

    def freeze(self):
        self.freeze_to(-1)

    def unfreeze(self):
        self.freeze_to(0)

    def freeze_all_but(self, n):
        self._native.freeze_all_but(n)
        self._sync_trainable()

    def bn_freeze(self, do_freeze):
        """Every BatchNorm layer keeps its running statistics while training (fastai 0.7's
        `bn_freeze`), in trainable groups too."""
        self._native.bn_freeze = bool(do_freeze)

    def _sync_trainable(self):
        """Sets 0.7's `trainable` attribute on every module of each layer group from the
        group's flag (the parameters' `requires_grad` the Rust learner has set)."""
        groups = getattr(self._native, "_groups", None)
        if groups is None:  # a native network: its module, if built yet
            sync_trainable(getattr(self.models, "_torch", None), self._native)
            return
        for group, on in zip(groups, self._native.trainable):
            for m in group:
                for sub in m.modules():
                    sub.trainable = bool(on)


    def mixed_precision(self, enabled=True, dtype=torch.bfloat16):
        """Mixed precision: convolutions and matrix products run in `dtype` under
        `torch.autocast` (it reaches the Rust model: both use the same libtorch), while the
        weights, the optimiser's momentum, BatchNorm statistics and the loss stay float32.
        Only bfloat16: float16 would need loss scaling, which this learner does not do. On by
        default on CPUs with native bfloat16 (AVX512-BF16 or AMX; `_native.cpu_has_native_bf16()`),
        where it is about twice as fast; worth it on recent GPUs; on other CPUs it is slower.
        The learner's `precision=` argument and FASTAI_RS_PRECISION choose at construction;
        `mixed_precision(False)` / `float()` turn it off. Returns the learner."""
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


    def _autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._native.device_type, dtype=self._amp_dtype)

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


    def _n_groups(self):
        """Layer groups `fit` takes rates for: only the last (the head) with precompute."""
        return 1 if self.precompute else self._native.n_groups

    def _lr_vector(self, v, what):
        vals = _group_values(v, self._n_groups(), what)
        # One value per group of the model (with precompute, the head's stands for all).
        return vals * self._native.n_groups if len(vals) == 1 else vals

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
        metrics = list(self.metrics or []) if metrics is None else metrics
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
        # The hand-written head step is kept under mixed precision: it trains the head in
        # float32 on the float32 cached activations, 2x+ faster than float32 autograd (the
        # body's precompute is where bfloat16 pays).
        self._native.begin_fit(lrs=lrs, wds=wds, schedule=schedule, precompute=precompute,
                               stop_on_divergence=lr_find,
                               fused_head=self._fused_head,
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
                p, t = preds[s:s + bs], self._split(targs[s:s + bs])
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
        """(outputs, targets) as numpy; tuple targets as a list of arrays, one per part."""
        p, y, _, _ = self._predict_raw(is_test, caller="predict_with_targs")
        return to_np(p), _targets_np(self._split(y, is_test))

    def predict_array(self, arr):
        """The model's outputs for one batch in its input format (numpy in, numpy out), in eval
        mode and without a gradient."""
        x = _as_float_batch(arr, "predict_array")
        with self._autocast():
            return to_np(self._native.predict_array(x, head_only=False))

    def TTA(self, n_aug=4, is_test=False):
        """(log_preds of shape (ceil(n_aug/4) + n_aug, N, c), targets): the centre-crop view,
        then `n_aug` passes of the training augmentation (always real images, even with
        precompute on).

        The targets are those of the plain view, as fastai 0.7 returned them. For masks
        (`tfm_y=CLASS`) each augmented pass moves image and mask by one draw, but only the
        outputs come back, in that pass's geometry (flipped, rotated): undo the moves before
        averaging, or use flips alone and compare with the flipped masks."""
        if int(n_aug) < 1:
            raise ValueError(f"TTA: n_aug must be at least 1 (got {n_aug}); predict() gives the "
                             "centre-crop view alone")
        d = self.data_
        p0, targs, _, _ = self._predict_raw(is_test, precompute=False, caller="TTA")
        p0, targs = to_np(p0), _targets_np(self._split(targs, is_test))
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




from . import _exports, core as _core, transforms as _transforms, model as _model  # noqa: E402
from . import dataset as _dataset, sgdr as _sgdr, layers as _layers, metrics as _metrics  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(
    __name__, ["Learner"], [_core, _transforms, _model, _dataset, _sgdr, _layers, _metrics])
