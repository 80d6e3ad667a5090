"""Small helpers of fastai 0.7's `core` module that user code and the notebook reach for."""
import functools
import math
import os
import sys

import numpy as np
import torch

USE_GPU = True


def is_listy(x):
    return isinstance(x, (list, tuple))


def to_np(v):
    """A tensor (any device) or a list of tensors as numpy; numpy passes through."""
    if isinstance(v, (list, tuple)):
        return [to_np(o) for o in v]
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def T(a):
    """numpy/list -> torch tensor (int64 for integers, float32 for floats)."""
    if torch.is_tensor(a):
        return a
    a = np.asarray(a)
    if a.dtype in (np.int8, np.int16, np.int32, np.int64):
        return torch.from_numpy(a.astype(np.int64))
    if a.dtype in (np.float32, np.float64):
        return torch.from_numpy(a.astype(np.float32))
    raise NotImplementedError(f"T(): cannot convert dtype {a.dtype}")


def V(x, requires_grad=False):
    """fastai 0.7's Variable wrapper; in modern torch a tensor is its own Variable."""
    t = T(x) if not torch.is_tensor(x) else x
    return t.requires_grad_(requires_grad) if requires_grad else t


def VV(x):
    return V(x)


def A(*a):
    return np.array(a[0]) if len(a) == 1 else [np.array(o) for o in a]


def sum_geom(a, r, n):
    """Number of epochs of `n` cycles of length a, a*r, a*r^2, ... (spec 6.2)."""
    return a * n if r == 1 else math.ceil(a * (1 - r ** n) / (1 - r))


def num_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def user_stacklevel():
    """The `stacklevel` for `warnings.warn` that points at the user's code: the first caller
    outside this package (a warning from deep inside `fit` is reported at the `fit` line)."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def SGD_Momentum(momentum):
    """fastai 0.7's `opt_fn` for SGD with momentum (its default is `SGD_Momentum(0.9)`)."""
    return functools.partial(torch.optim.SGD, momentum=momentum)


def to_gpu(x):
    return x.cuda() if USE_GPU and torch.cuda.is_available() else x


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402
from .torch_imports import children  # noqa: E402,F401

__all__, __getattr__ = _exports.reexport(
    __name__, ["USE_GPU", "is_listy", "to_np", "T", "V", "VV", "A", "sum_geom", "num_cpus",
               "to_gpu", "children", "SGD_Momentum"], [_imports, _torch_imports])
