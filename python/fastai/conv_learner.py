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
import os
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _native, _progress, distributed as _distributed
from ._modules import NativeModels
from ._weights import load_pretrained
from .core import children, split_by_idxs, to_np, user_stacklevel
from .layers import AdaptiveConcatPool2d, Flatten
from .learner import (Learner, _NATIVE_CRIT, _as_float_batch, _default_device, _is_batchnorm, _name_of,
                      _output_kind)
from .metrics import accuracy, accuracy_np, accuracy_thresh  # noqa: F401 (0.7's star import gave accuracy_np)
from ._archs import ARCHS, Arch, arch_from, default_meta
from ._zoo import cut_model, model_features, num_features, zoo_meta

# fastai 0.7's model_meta: {arch: [cut, lr_cut]}, keyed by the arch handle (`resnet34`), with the
# values of the Rust core's architecture table. `ConvLearner.pretrained` reads it, so a changed
# or added entry (keyed by our handle, or by the function the user passes, e.g. torchvision's
# constructor) sets where the body is cut (before `xtra_cut`) and where layer group 1 starts.
model_meta = default_meta()
model_meta = zoo_meta(model_meta)  # + 0.7's zoo; also answers for torchvision's constructors


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


def _native_arch(f):
    """The architecture handle when `f` names one the Rust core builds (a handle, its name, or
    torchvision's constructor of the same name), else None: any other callable is a user's
    backbone, built in Python by `ConvnetBuilder`."""
    if isinstance(f, Arch):
        return f
    if isinstance(f, str):
        return arch_from(f)
    name = getattr(f, "__name__", None)
    if name in ARCHS and str(getattr(f, "__module__", "")).startswith("torchvision.models"):
        return ARCHS[name]
    return None


class _NativeConvnet:
    """The models object of a network the Rust core builds (fastai 0.7's `ConvnetBuilder` for
    `resnet34` & co.): the native learner, and 0.7's `model` / `fc_model` / `top_model` as torch
    modules holding the Rust model's own tensors (`_modules.NativeModels`, built at first use)."""

    def __init__(self, native, arch, xtra_cut, custom_head):
        self._native = native
        self.arch = arch
        self.f = arch
        self.xtra_cut = xtra_cut
        self.custom_head = custom_head
        self._torch = None

    @property
    def name(self):
        return f"{self.arch.name}_{self.xtra_cut}"

    @property
    def nf(self):
        return self._native.nf

    def _modules(self):
        if self._torch is None:
            self._torch = NativeModels(self._native, self.custom_head, self.name)
        return self._torch

    @property
    def model(self):
        return self._modules().model

    @property
    def fc_model(self):
        return self._modules().fc_model

    @property
    def top_model(self):
        return self._modules().top_model

    def get_layer_groups(self, precompute=False):
        return self._modules().get_layer_groups(precompute)


class ConvnetBuilder:
    """fastai 0.7's builder of a convolutional network from a backbone function `f` (any callable
    taking the pretrained flag and returning a torch module): the backbone cut at
    `model_meta[f]`'s cut (minus `xtra_cut`), then AdaptiveConcatPool2d, Flatten and fastai's
    head (or the `custom_head`, on the raw feature map), all torch modules. `ConvLearner.pretrained`
    builds the architectures the Rust core has (`resnet34`, ...) natively instead."""

    def __init__(self, f, c, is_multi, is_reg, ps=None, xtra_fc=None, xtra_cut=0, custom_head=None,
                 pretrained=True):
        self.f, self.c, self.is_multi, self.is_reg, self.xtra_cut = f, c, is_multi, is_reg, xtra_cut
        if xtra_fc is None:
            xtra_fc = [512]
        if ps is None:
            ps = [0.25] * len(xtra_fc) + [0.5]
        self.ps, self.xtra_fc = ps, xtra_fc
        meta = model_meta.get(f) if _hashable(f) else None
        cut, self.lr_cut = meta if meta is not None else (0, 0)
        cut -= xtra_cut
        layers = cut_model(f(pretrained), cut)
        nf = model_features.get(f) if _hashable(f) else None
        if nf is None:
            n = num_features(nn.Sequential(*layers))
            if n is None:
                raise ValueError(f"ConvnetBuilder: cannot tell the feature width of {_name_of(f)} (it has no "
                                 f"BatchNorm layer); register it: model_features[{_name_of(f)}] = width "
                                 "after concat pooling (2 x the body's channels)")
            nf = n * 2
        self.nf = nf
        if not custom_head:
            layers += [AdaptiveConcatPool2d(), Flatten()]
        self.top_model = nn.Sequential(*layers)
        n_fc = len(self.xtra_fc) + 1
        if not isinstance(self.ps, list):
            self.ps = [self.ps] * n_fc
        fc_layers = [custom_head] if custom_head else self._fc_layers(nf)
        self.n_fc = len(fc_layers)
        self.fc_model = nn.Sequential(*fc_layers)
        if not custom_head:
            for m in self.fc_model.modules():
                _kaiming_init(m)
        self.model = nn.Sequential(*(layers + fc_layers))

    def _fc_layers(self, nf):
        sizes = [nf] + list(self.xtra_fc) + [self.c]
        out = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            out.append(nn.BatchNorm1d(n_in))
            if self.ps[i]:
                out.append(nn.Dropout(p=self.ps[i]))
            out.append(nn.Linear(n_in, n_out))
            if not last:
                out.append(nn.ReLU())
            elif not self.is_reg:
                out.append(nn.Sigmoid() if self.is_multi else nn.LogSoftmax(dim=1))
        return out

    @property
    def name(self):
        return f"{_name_of(self.f)}_{self.xtra_cut}"

    def get_layer_groups(self, do_fc=False):
        if do_fc:
            return [self.fc_model]
        c = children(self.top_model)
        if len(c) == 3:  # cut 0: the whole backbone, pool, flatten: split the backbone itself
            c = children(c[0]) + c[1:]
        return list(split_by_idxs(c, [self.lr_cut])) + [self.fc_model]


def _hashable(f):
    try:
        hash(f)
        return True
    except TypeError:
        return False


def _kaiming_init(m):
    """fastai 0.7's `cond_init(m, kaiming_normal)`: every weight but BatchNorm's drawn
    Kaiming-normal (fan in), biases zeroed."""
    if _is_batchnorm(m):
        return
    w = getattr(m, "weight", None)
    if isinstance(w, torch.Tensor):
        nn.init.kaiming_normal_(w)
    b = getattr(m, "bias", None)
    if isinstance(b, torch.Tensor):
        with torch.no_grad():
            b.zero_()


class ConvLearner(Learner):
    """fastai 0.7's learner for convolutional networks (lesson 1's `learn`): `pretrained` builds
    one from an architecture, `ConvLearner(data, models)` takes any models object; construction
    freezes all but the last layer group, and `precompute=True` trains that group on cached
    body activations."""

    def __init__(self, data, models, precompute=False, **kwargs):
        self._precompute = False
        self._acts = None          # {'trn': tensor, 'val': tensor, 'test': tensor|None, ...}
        # With precompute on the CPU, train fastai's default head with the hand-written step
        # (src/train/fused_head/: same numbers as autograd up to round-off, 2x+ faster);
        # False trains it through libtorch's autograd like every other model. A switch for
        # tests and benchmarks, not user API.
        self._fused_head = True
        super().__init__(data, models, **kwargs)
        # 0.7's defaults, for data that says what it holds and no metrics given.
        if self.metrics is None and hasattr(data, "is_multi") and not data.is_reg:
            self.metrics = [accuracy_thresh(0.5)] if data.is_multi else [accuracy]
        self.freeze()
        self.precompute = precompute

    # ---- precision and memory layout ----------------------------------------------------
    def channels_last(self, enabled=True):
        """Channels-last (NHWC) memory layout for the convolution weights, which makes libtorch
        run the convolutions in that layout (faster with cuDNN tensor cores and with oneDNN on
        CPUs). Numerics are unchanged up to float round-off. `ConvLearner.pretrained` turns it
        on by default on the CPU for the architectures the Rust core builds (measured here:
        1.3-1.4x faster inference, 1.2x frozen training, up to 1.8x unfrozen EfficientNet
        training) and leaves it off on CUDA, where it is an opt-in. Returns the learner."""
        _set_conv_layout(self._native, enabled)
        return self

    @classmethod
    def pretrained(cls, f, data, ps=None, xtra_fc=None, xtra_cut=0, custom_head=None, precompute=False,
                   pretrained=True, weights=None, device=None, channels_last=None, **kwargs):
        if isinstance(xtra_cut, bool) or not isinstance(xtra_cut, (int, np.integer)) or xtra_cut < 0:
            raise ValueError(f"xtra_cut must be a non-negative integer (body children to drop), got {xtra_cut!r}")
        if getattr(data.trn_dl, "_native", None) is None:
            raise ValueError("ConvLearner needs images it can transform: this data has no transforms "
                             "(from_arrays without tfms); pass tfms=tfms_from_model(arch, sz)")
        arch = _native_arch(f)
        if arch is None:
            if weights is not None:
                raise ValueError("weights= names a file for the architectures the Rust core builds; a "
                                 f"backbone function ({_name_of(f)}) loads its own weights")
            models = ConvnetBuilder(f, data.c, data.is_multi, data.is_reg, ps=ps, xtra_fc=xtra_fc,
                                    xtra_cut=int(xtra_cut), custom_head=custom_head, pretrained=pretrained)
            return cls(data, models, precompute=precompute, **kwargs)
        output = _output_kind(data)
        if ps is not None and not isinstance(ps, (list, tuple, np.ndarray)):
            ps = [float(ps)]
        head = None if custom_head is None else _custom_head_args(custom_head)
        native = _native.Learner(arch.name, int(data.c), output=output,
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
        return cls(data, _NativeConvnet(native, arch, int(xtra_cut), custom_head), precompute=precompute,
                   **kwargs)

    # ---- what the lesson reads -----------------------------------------------------------
    @property
    def model(self):
        """The torch module (0.7: the head alone, `fc_model`, while precompute is on)."""
        return self.models.fc_model if self.precompute else self.models.model

    @property
    def arch(self):
        return getattr(self.models, "arch", None) or getattr(self.models, "f", None)

    @property
    def xtra_cut(self):
        return getattr(self.models, "xtra_cut", 0)

    @property
    def custom_head(self):
        return getattr(self.models, "custom_head", None)

    @property
    def name(self):
        return self.models.name

    @property
    def nf(self):
        return self.models.nf

    @property
    def cut(self):
        """Body children kept (fastai 0.7's `cut` after `cut -= xtra_cut`)."""
        return self._native.cut

    @property
    def c(self):
        return self.data_.c

    def _get_crit(self, data):
        """fastai 0.7's ConvLearner loss, for data that says what it holds: L1 for regression,
        binary cross-entropy for multi-label, else negative log-likelihood (the head ends in
        log-softmax); mean squared error for other data."""
        if not hasattr(data, "is_multi"):
            return F.mse_loss
        return _NATIVE_CRIT[_output_kind(data)]

    def get_layer_groups(self):
        return self.models.get_layer_groups(self.precompute)

    def _is_native(self):
        return isinstance(self.models, _NativeConvnet)

    def summary(self):
        """Per layer of the full model, for one input: input and output shapes (batch dimension
        shown as -1), parameter count and whether it trains, keyed `'<Layer>-<n>'` as fastai
        0.7's summary was."""
        if not self._is_native():
            return super().summary()
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
        group = _distributed.active(self)  # each rank computes its shard (fastai.distributed)
        try:
            with self._autocast():
                got = self._native.precompute(
                    [(split, dl._native) for split, dl in splits], self.tmp_path, os.fspath(d.path),
                    None if self._amp_dtype is None else "bfloat16", progress, known,
                    group=group and group.grad_sync)
        finally:
            if shown["bar"] is not None:
                shown["bar"].close()
        if got is None:  # the activations held are those of the current body
            return
        acts = {"body": got[0].body, "computed_rows": {a.split: a.computed_rows for a in got}}
        for a in got:
            if a.warning is not None:
                warnings.warn(a.warning, stacklevel=user_stacklevel())
            # Items skipped as undecodable (skip_bad) are left out of training and
            # validation, and their rows of predictions are NaN.
            if a.left_out:
                self._warn_skipped(a.left_out)
            acts[a.split], acts[a.split + "_ok"] = a.rows, a.kept
        self._acts = acts

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
        old = getattr(self.data_, "classes", None)
        if old is not None and list(getattr(data, "classes", old)) != list(old):
            raise ValueError(f"set_data: the new data has classes {data.classes}, the model was built for "
                             f"{old}")
        self.data_ = data
        self._acts = None
        self._precompute = False
        self.freeze()
        self.precompute = precompute

    def save_cycle(self, name, cycle):
        self.save(f"{name}_cyc_{cycle}")

    def load_cycle(self, name, cycle):
        self.load(f"{name}_cyc_{cycle}")

    # ---- freezing ------------------------------------------------------------------------
    def unfreeze(self):
        """Makes every layer group trainable, and turns precompute off (the body must see
        images to learn)."""
        self.freeze_to(0)
        self._precompute = False

    def freeze_to(self, n):
        super().freeze_to(n)
        groups = self._native.n_groups
        start = n if n >= 0 else groups + n
        if self._precompute and start < groups - 1:
            self._precompute = False

    def predict_array(self, arr):
        """Outputs for a batch in the model's input format (float32 normalised images, or
        activations of the body while precompute is on); returns numpy outputs."""
        x = _as_float_batch(arr, "predict_array")
        if not self._is_native():
            head_only = bool(self.precompute and x.dim() == 2)
            with self._autocast():
                return to_np(self._native.predict_array(x, head_only=head_only))
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


from . import _exports, core as _core, layers as _layers, learner as _learner  # noqa: E402

# As in fastai 0.7, `from fastai.conv_learner import *` brings the learner's whole world (spec
# 1.1): numpy, torch, the architectures, transforms, data classes, metrics, layers, callbacks.
__all__, __getattr__ = _exports.reexport(
    __name__, ["ConvLearner", "ConvnetBuilder", "model_meta", "model_features", "cut_model",
               "num_features"],
    [_core, _layers, _learner])
