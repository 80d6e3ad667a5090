"""`Learner`: training, prediction and checkpoints on top of the Rust learner.

Python drives the epochs (so the table, callbacks and checkpoints happen between epochs); each
epoch's batch loop, validation and prediction run in Rust without the GIL. Progress is drawn by
`fastai._progress`; the schedule recorded during a call is left in `learn.sched`.
"""
import errno
import functools
import math
import numbers
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

from . import _native
from .core import SGD_Momentum
from .exceptions import WeightsError
from .metrics import accuracy, accuracy_thresh


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


class Learner:
    """State shared by every learner: data, paths, metrics, the last schedule."""

    def __init__(self, data, native, metrics=None, tmp_name="tmp", models_name="models", clip=None,
                 opt_fn=None, crit=None):
        self.data_ = data
        self._native = native
        self.sched = None
        self.clip = clip
        # fastai 0.7's default: SGD with momentum 0.9. Checked now; read again at each fit.
        self.opt_fn = opt_fn or SGD_Momentum(0.9)
        _opt_spec(self.opt_fn)
        self._epochs_seen = 0
        self.tmp_path = os.path.join(data.path, tmp_name)
        self.models_path = os.path.join(data.path, models_name)
        for p in (self.tmp_path, self.models_path):
            try:
                os.makedirs(p, exist_ok=True)
            except OSError as e:
                raise type(e)(e.errno, f"{p}: cannot create this folder ({e.strerror}); make PATH writable or pass "
                              f"tmp_name=/models_name= absolute paths to a writable place", p) from None
        if metrics is None:
            metrics = [accuracy_thresh(0.5)] if data.is_multi else ([] if data.is_reg else [accuracy])
        self.metrics = metrics
        # fastai 0.7's loss: the one given, else the default for this kind of data. A plain
        # attribute, read at the start of each fit.
        self.crit = crit if crit is not None else self._get_crit(data)

    def _get_crit(self, data):
        """The default loss for `data`; the base learner's is mean squared error."""
        return F.mse_loss

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
        state = dict(self._native.state_dict())
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
        self._native.load_state_dict([(k, v) for k, v in state.items() if torch.is_tensor(v)], path)

    # ---- freezing ----------------------------------------------------------------------
    def freeze_to(self, n):
        self._native.freeze_to(n)

    def freeze(self):
        self.freeze_to(-1)

    def unfreeze(self):
        self.freeze_to(0)

    def freeze_all_but(self, n):
        self._native.freeze_all_but(n)

    def bn_freeze(self, do_freeze):
        self._native.bn_freeze = bool(do_freeze)


from . import _exports, core as _core, transforms as _transforms, model as _model  # noqa: E402
from . import dataset as _dataset, sgdr as _sgdr, layers as _layers, metrics as _metrics  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(
    __name__, ["Learner"], [_core, _transforms, _model, _dataset, _sgdr, _layers, _metrics])
