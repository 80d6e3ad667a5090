"""fastai 0.7's `core` module: the small helpers user code and the notebooks reach for.

0.7 targeted PyTorch 0.3, where a tensor had to be wrapped in a `Variable` (and `volatile=True`
meant "no gradient"). In torch 2 a tensor is its own Variable, so `V`/`VV` return tensors: `V`
sets `requires_grad` when asked, `VV` leaves it off (inference code wraps its forward pass in
`torch.no_grad()` itself). What a 0.7 call gets back otherwise is unchanged.

Decisions where the original had rough edges:
* one `noop(*args, **kwargs)`, returning its first positional argument (else None): 0.7 had a
  `noop` returning None here and one returning `x` in `transforms`, and which a star import
  gave depended on import order;
* `split_by_idxs` refuses an index outside the sequence (as mid-2018 did, with `KeyError`);
* `SingleModel.get_layer_groups` accepts (and ignores) `precompute`, so it works with
  `ConvLearner`; `chain_params` lists a parameter once even when a module appears twice;
* `listify` repeats a 1-element numpy array instead of multiplying it.
"""
import functools
import math
import os
import pickle
import sys
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# 0.7 defined these in torch_imports and core alike; here they live in torch_imports.
from .torch_imports import children, load_model, save_model  # noqa: F401

# Whether `T`, `to_gpu` and friends move data to the GPU (when there is one). Settable, as in
# 0.7: `fastai.core.USE_GPU = False` keeps everything on the CPU.
USE_GPU = True
# 0.7's flag for "PyTorch 0.4 or later"; always true here.
IS_TORCH_04 = True


def _gpu_in_use():
    return USE_GPU and torch.cuda.is_available()


# ---- sequences and small helpers -----------------------------------------------------------


def is_listy(x):
    """A list or a tuple (numpy arrays are not listy)."""
    return isinstance(x, (list, tuple))


def is_iter(x):
    """Anything iterable: lists, arrays, strings, generators."""
    return isinstance(x, Iterable)


def map_over(x, f):
    """`f` of each element of a list or tuple (as a list), else `f(x)`."""
    return [f(o) for o in x] if is_listy(x) else f(x)


def map_none(x, f):
    return None if x is None else f(x)


def delistify(x):
    """The first element of a list or tuple, else `x`."""
    return x[0] if is_listy(x) else x


def listify(x, y):
    """`x` as a list as long as `y` (a length, or a sequence whose length counts): a single
    value (a string is one) or a 1-element sequence is repeated, a longer one is returned as
    it is."""
    if not is_iter(x) or isinstance(x, (str, bytes)):
        x = [x]
    n = y if isinstance(y, (int, np.integer)) else len(y)
    if len(x) == 1:
        # 0.7 wrote `x * n`, which multiplied a 1-element numpy array instead of repeating it.
        x = [x[0]] * n
    return x


def datafy(x):
    """The `.data` of each element of a list, or of `x` itself."""
    return [o.data for o in x] if is_listy(x) else x.data


def noop(*args, **kwargs):
    """Does nothing: returns its first positional argument, if any (so it serves both as 0.7's
    do-nothing callback and as its identity transform)."""
    return args[0] if args else None


def A(*a):
    """One argument: it as a numpy array; several: a list of arrays (`A(means, stds)`)."""
    return np.array(a[0]) if len(a) == 1 else [np.array(o) for o in a]


def sum_geom(a, r, n):
    """Number of epochs of `n` cycles of length a, a*r, a*r^2, ..."""
    return a * n if r == 1 else math.ceil(a * (1 - r ** n) / (1 - r))


def one_hot(a, c):
    """Rows of the c x c identity picked by the class indices `a` (float64, as 0.7)."""
    return np.eye(c)[a]


def partition(a, sz):
    """Consecutive slices of `a` of length `sz` (the last may be shorter)."""
    return [a[i:i + sz] for i in range(0, len(a), sz)]


def num_cpus():
    """CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def partition_by_cores(a):
    """`a` cut into about one piece per CPU."""
    return partition(a, len(a) // num_cpus() + 1)


def split_by_idxs(seq, idxs):
    """Yields `seq[:i0]`, `seq[i0:i1]`, ..., `seq[ik:]` (an index of 0 yields an empty first
    piece). An index outside the sequence is a `KeyError` naming it."""
    last = 0
    for idx in idxs:
        if not -len(seq) <= idx < len(seq):
            raise KeyError(f"Idx {idx} is out-of-bounds")
        yield seq[last:idx]
        last = idx
    yield seq[last:]


def chunk_iter(iterable, chunk_size):
    """Yields lists of `chunk_size` items taken from the iterator `iterable` (the last may be
    shorter). As in 0.7 it wants an iterator: a list is a `TypeError`."""
    while True:
        chunk = []
        try:
            for _ in range(chunk_size):
                chunk.append(next(iterable))
        except StopIteration:
            if chunk:
                yield chunk
            return
        yield chunk


def user_stacklevel():
    """The `stacklevel` for `warnings.warn` that points at the user's code: the first caller
    outside this package (a warning from deep inside `fit` is reported at the `fit` line)."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    return level


# ---- tensors -------------------------------------------------------------------------------


def to_gpu(x, *args, **kwargs):
    """`x.cuda(*args, **kwargs)` when a GPU is in use (see `USE_GPU`), else `x`."""
    return x.cuda(*args, **kwargs) if _gpu_in_use() else x


def T(a, half=False, cuda=True):
    """numpy/list -> torch tensor: integers become int64, floats float32 (float16 with
    `half`), anything else is a `NotImplementedError`; a tensor passes through. Moved to
    the GPU when `cuda` and a GPU is in use."""
    if not torch.is_tensor(a):
        a = np.ascontiguousarray(a)
        if a.dtype in (np.int8, np.int16, np.int32, np.int64):
            a = torch.from_numpy(a.astype(np.int64, copy=False))
        elif a.dtype in (np.float32, np.float64):
            a = torch.from_numpy(a.astype(np.float32, copy=False))
            if half:
                a = a.half()
        else:
            raise NotImplementedError(a.dtype)
    if cuda:
        a = to_gpu(a, non_blocking=True)
    return a


def create_variable(x, volatile=False, requires_grad=False):
    """`x` as a tensor (`T(x)`; a tensor is used as it is); with `requires_grad`, a float
    tensor that does not yet require a gradient comes back as a new leaf that does (sharing
    its memory, as PyTorch's `Variable(t, requires_grad=True)`; integer tensors cannot require
    one). `volatile` (0.3's "no gradient") is accepted and ignored."""
    t = x if torch.is_tensor(x) else T(x)
    if requires_grad and not t.requires_grad and (t.is_floating_point() or t.is_complex()):
        t = t.detach().requires_grad_(True)
    return t


def V_(x, requires_grad=False, volatile=False):
    return create_variable(x, volatile, requires_grad)


def V(x, requires_grad=False, volatile=False):
    """`x` as a tensor (each element of a list or tuple, as a list); see `create_variable`."""
    return map_over(x, lambda o: V_(o, requires_grad, volatile))


def VV_(x):
    return create_variable(x, True)


def VV(x):
    """`x` as a tensor without gradient (each element of a list or tuple, as a list)."""
    return map_over(x, VV_)


def to_np(v):
    """A tensor (any device, with or without grad), or a list of them, as numpy arrays; half
    precision comes back as float32. numpy arrays and scalars pass through."""
    if is_listy(v):
        return [to_np(o) for o in v]
    if isinstance(v, (np.ndarray, np.generic)):
        return v
    if isinstance(v, torch.Tensor):
        v = v.detach()
        if v.dtype == torch.float16:
            v = v.float()
        return v.cpu().numpy()
    return np.asarray(v)


def to_half(tensor):
    """`tensor` in half precision (on the GPU when one is in use)."""
    return to_gpu(torch.as_tensor(tensor)).half()


# ---- modules and parameters ----------------------------------------------------------------


def trainable_params_(m):
    """Parameters of `m` that require a gradient."""
    return [p for p in m.parameters() if p.requires_grad]


def chain_params(p):
    """Trainable parameters of a module, or of each module of a list (one parameter once, even
    when a module is listed twice: torch warns about, and double-steps, duplicates)."""
    if not is_listy(p):
        return trainable_params_(p)
    out, seen = [], set()
    for m in p:
        for q in trainable_params_(m):
            if id(q) not in seen:
                seen.add(id(q))
                out.append(q)
    return out


def set_trainable_attr(m, b):
    """`m.trainable = b`, and `requires_grad = b` on all of `m`'s parameters."""
    m.trainable = b
    for p in m.parameters():
        p.requires_grad = b


def apply_leaf(m, f):
    """Pre-order walk: `f(m)` for `m` and every module below it (`m` may be a list)."""
    if isinstance(m, nn.Module):
        f(m)
    for c in children(m):
        apply_leaf(c, f)


def set_trainable(l, b):
    """Makes a module, or a list of modules, and everything below trainable (or frozen)."""
    apply_leaf(l, lambda m: set_trainable_attr(m, b))


def SGD_Momentum(momentum):
    """fastai 0.7's `opt_fn` for SGD with momentum (its default is `SGD_Momentum(0.9)`)."""
    return functools.partial(torch.optim.SGD, momentum=momentum)


class BasicModel:
    """A torch model with a name; each direct child is one layer group."""

    def __init__(self, model, name="unnamed"):
        self.model, self.name = model, name

    def get_layer_groups(self, do_fc=False):
        return children(self.model)


class SingleModel(BasicModel):
    """A torch model trained as a single layer group."""

    def get_layer_groups(self, precompute=False):
        # 0.7's took no argument, so ConvLearner (which passes `precompute`) failed on it.
        return [self.model]


class SimpleNet(nn.Module):
    """Linear layers of the given widths, each followed by ReLU except the last, whose output
    goes through log-softmax."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(layers[:-1], layers[1:])])

    def forward(self, x):
        x = x.view(x.size(0), -1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return F.log_softmax(self.layers[-1](x), dim=-1)


# ---- persistence ---------------------------------------------------------------------------


def save(fn, a):
    """Pickles `a` to the file `fn`."""
    with open(fn, "wb") as f:
        pickle.dump(a, f)


def load(fn):
    """The object pickled in the file `fn`."""
    with open(fn, "rb") as f:
        return pickle.load(f)


def load2(fn):
    """The object pickled by Python 2 in the file `fn`."""
    with open(fn, "rb") as f:
        return pickle.load(f, encoding="iso-8859-1")


def load_array(fname):
    """A bcolz array read fully into numpy (needs the `bcolz` package)."""
    try:
        import bcolz
    except ImportError as e:
        raise ImportError("load_array reads bcolz arrays: pip install bcolz") from e
    return bcolz.open(fname)[:]


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402

__all__, __getattr__ = _exports.reexport(
    __name__, ["USE_GPU", "IS_TORCH_04", "is_listy", "is_iter", "map_over", "map_none",
               "delistify", "listify", "datafy", "noop", "A", "sum_geom", "one_hot",
               "partition", "num_cpus", "partition_by_cores", "split_by_idxs", "chunk_iter",
               "to_gpu", "T", "create_variable", "V_", "V", "VV_", "VV", "to_np", "to_half",
               "children", "trainable_params_", "chain_params", "set_trainable_attr",
               "apply_leaf", "set_trainable", "SGD_Momentum", "BasicModel", "SingleModel",
               "SimpleNet", "save", "load", "load2", "load_array", "save_model", "load_model"],
    [_imports, _torch_imports])
