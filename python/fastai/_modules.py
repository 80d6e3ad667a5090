"""`learn.model` as a torch module: the layout fastai 0.7 built (an `nn.Sequential` of the body's
children, `AdaptiveConcatPool2d`, `Flatten`, then the head's layers), whose parameters and
buffers are the very tensors the Rust model trains.

The Rust model keeps every tensor in a store entry named with fastai 0.7's flat key
(`0.weight`, `4.0.conv1.weight`, `16.bias`); `native.live_tensors()` hands out those tensors
themselves, so binding them into a module skeleton makes one model with two front ends: an
in-place edit, `load_state_dict` or an optimiser step through either is what the other computes
with next. The skeleton is built on the meta device (no memory, no initialisation) and every
parameter and buffer is then replaced by the live tensor of the same key.

The module classes below mirror src/models/resnet.rs and efficientnet.rs layer for layer (same
paddings, activations, BatchNorm constants), so calling the module computes what the Rust
forward computes.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .exceptions import InternalError
from .layers import AdaptiveConcatPool2d, Flatten


class _Uncounted:
    """BatchNorm without the `num_batches_tracked` buffer: the Rust layers count no batches
    (PyTorch 0.3, which fastai 0.7 ran on, had no such counter), so the state dict has exactly
    the store's keys, and forward skips the count. Loading ignores a counter in the file, as
    `learn.load` does, and does not ask for one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "num_batches_tracked"
        had = key in state_dict
        # torch's BatchNorm adds a zero counter to a file without one (written before the
        # counter existed), which this layer would then report as unexpected.
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if not had:
            state_dict.pop(key, None)
        if key in unexpected_keys:
            unexpected_keys.remove(key)


class BatchNorm2d(_Uncounted, nn.BatchNorm2d):
    pass


class BatchNorm1d(_Uncounted, nn.BatchNorm1d):
    pass


# ---- ResNet (torchvision's layout, so the keys are torchvision's below the child number) ----

def _conv(c_in, c_out, k, stride=1):
    """Every ResNet convolution: bias-free, padded to keep the size at stride 1."""
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)


def _downsample(c_in, c_out, stride):
    """The shortcut's 1x1 projection, present where a block changes the shape."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(_conv(c_in, c_out, 1, stride), BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the shortcut (resnet18/34)."""
    expansion = 1

    def __init__(self, c_in, width, stride=1):
        super().__init__()
        self.conv1 = _conv(c_in, width, 3, stride)
        self.bn1 = BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = BatchNorm2d(width)
        self.downsample = _downsample(c_in, width, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand by 4
    (resnet50 and deeper)."""
    expansion = 4

    def __init__(self, c_in, width, stride=1):
        super().__init__()
        out = width * self.expansion
        self.conv1 = _conv(c_in, width, 1)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = BatchNorm2d(width)
        self.conv3 = _conv(width, out, 1)
        self.bn3 = BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, out, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


_RESNETS = {
    "resnet18": ([2, 2, 2, 2], BasicBlock),
    "resnet34": ([3, 4, 6, 3], BasicBlock),
    "resnet50": ([3, 4, 6, 3], Bottleneck),
    "resnet101": ([3, 4, 23, 3], Bottleneck),
    "resnet152": ([3, 8, 36, 3], Bottleneck),
}


def _resnet_body(arch, cut):
    """[(name, module)] of torchvision's children conv1, bn1, relu, maxpool, layer1..4 (numbered
    0..7 as fastai 0.7's Sequential numbered them), the first `cut` of them."""
    blocks, block = _RESNETS[arch]
    children = [_conv(3, 64, 7, 2), BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1)]
    c_in = 64
    for i, n in enumerate(blocks):
        width = 64 << i
        layer = []
        for b in range(n):
            layer.append(block(c_in, width, 2 if i > 0 and b == 0 else 1))
            c_in = width * block.expansion
        children.append(nn.Sequential(*layer))
    return [(str(i), m) for i, m in enumerate(children[:cut])]


# ---- EfficientNet-Lite0 (the keys of the lukemelas checkpoint layout) -----------------------

# TensorFlow's BatchNorm constants, which the converted weights were trained with.
_EFF_BN = dict(eps=1e-3, momentum=0.01)
# (expand ratio, kernel, stride of the first block, out channels, repeats) per stage.
_EFF_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
               (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def _same_pad(size, k, stride):
    """TensorFlow's "SAME" padding of one dimension: ceil(size / stride) outputs, the odd
    pixel of padding after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution padded by TensorFlow's "SAME" rule from the actual input size
    (a stride-2 conv on an even input pads bottom/right only)."""

    def __init__(self, c_in, c_out, k, stride=1, groups=1):
        super().__init__(c_in, c_out, k, stride=stride, groups=groups, bias=False)

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = _same_pad(x.shape[-2], k, s)
        left, right = _same_pad(x.shape[-1], k, s)
        if (top, left) != (bottom, right):
            x = F.pad(x, [left, right, top, bottom])
            top = left = 0
        return F.conv2d(x, self.weight, None, self.stride, (top, left), 1, self.groups)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite: [1x1 expand, BN, ReLU6], depthwise
    kxk, BN, ReLU6, 1x1 project, BN, plus the input when the shape is kept."""

    def __init__(self, expand, k, stride, c_in, c_out):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = Conv2dSame(c_in, mid, 1)
            self._bn0 = BatchNorm2d(mid, **_EFF_BN)
        self._depthwise_conv = Conv2dSame(mid, mid, k, stride, groups=mid)
        self._bn1 = BatchNorm2d(mid, **_EFF_BN)
        self._project_conv = Conv2dSame(mid, c_out, 1)
        self._bn2 = BatchNorm2d(c_out, **_EFF_BN)
        self.expand = expand != 1
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


def _efficientnet_lite0_body(cut):
    """[(name, module)] of the 7 children (stem conv, bn0, ReLU6, the 16 blocks, conv_head, bn1,
    ReLU6), the first `cut`; the parameter-free ones are named by their position."""
    blocks, c_in = [], 32
    for expand, k, stride, c_out, repeats in _EFF_STAGES:
        for r in range(repeats):
            blocks.append(MBConvBlock(expand, k, stride if r == 0 else 1, c_in, c_out))
            c_in = c_out
    children = [("_conv_stem", Conv2dSame(3, 32, 3, 2)), ("_bn0", BatchNorm2d(32, **_EFF_BN)),
                ("2", nn.ReLU6()), ("_blocks", nn.Sequential(*blocks)),
                ("_conv_head", Conv2dSame(c_in, 1280, 1)), ("_bn1", BatchNorm2d(1280, **_EFF_BN)),
                ("6", nn.ReLU6())]
    return children[:cut]


_BODIES = {name: (lambda cut, name=name: _resnet_body(name, cut)) for name in _RESNETS}
_BODIES["efficientnet_lite0"] = _efficientnet_lite0_body


# ---- fastai's head ---------------------------------------------------------------------------

def _fastai_head(native, shapes):
    """[(name, module)] from the head's first index on: per block BatchNorm1d, Dropout (when its
    p is above 0), Linear, and ReLU between blocks; then the final activation. The Linear sizes
    come from the stored weights, the dropout probabilities and activation from the learner."""
    idx, layers = native.head_start, []
    ps = native.head_ps
    for i, p in enumerate(ps):
        bn_shape = shapes.get(f"{idx}.weight")
        if bn_shape is None or len(bn_shape) != 1:
            raise InternalError(f"learn.model: the head has no BatchNorm1d weight at key '{idx}.weight'")
        layers.append((str(idx), BatchNorm1d(bn_shape[0])))
        idx += 1
        if p > 0:
            layers.append((str(idx), nn.Dropout(p)))
            idx += 1
        lin_shape = shapes.get(f"{idx}.weight")
        if lin_shape is None or len(lin_shape) != 2:
            raise InternalError(f"learn.model: the head has no Linear weight at key '{idx}.weight'")
        layers.append((str(idx), nn.Linear(lin_shape[1], lin_shape[0])))
        idx += 1
        if i + 1 < len(ps):
            layers.append((str(idx), nn.ReLU()))
            idx += 1
    final = {"log_softmax": nn.LogSoftmax(dim=1), "sigmoid": nn.Sigmoid()}.get(native.output)
    if final is not None:
        layers.append((str(idx), final))
    return layers


# ---- binding -------------------------------------------------------------------------------

def _bind(model, live):
    """Replaces every parameter and buffer of `model` by the live tensor of the same key (the
    object itself, made an `nn.Parameter` in place for parameters: no copy, no new storage).
    The key sets and shapes must agree exactly."""
    skeleton = model.state_dict(keep_vars=True)
    missing = [k for k in live if k not in skeleton]
    extra = [k for k in skeleton if k not in live]
    shapes = [f"{k}: {tuple(skeleton[k].shape)} in the module, {tuple(live[k].shape)} in the model"
              for k in live if k in skeleton and tuple(skeleton[k].shape) != tuple(live[k].shape)]
    if missing or extra or shapes:
        parts = [f"{what} [{', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}]"
                 for what, keys in (("keys of the Rust model without a module tensor", missing),
                                    ("module keys the Rust model lacks", extra),
                                    ("of another shape", shapes)) if keys]
        raise InternalError("learn.model: the torch module does not match the Rust model: " + "; ".join(parts))
    for key, t in live.items():
        path, _, name = key.rpartition(".")
        owner = model.get_submodule(path)
        if name in owner._parameters:
            if not isinstance(t, nn.Parameter):
                # Same object, same tensor: only its Python class changes, so the Rust store
                # and the module hold one thing.
                t.__class__ = nn.Parameter
            owner._parameters[name] = t
        else:
            owner._buffers[name] = t
    bound = model.state_dict(keep_vars=True)
    wrong = [k for k in live if bound[k] is not live[k]]
    if wrong:
        raise InternalError(f"learn.model: could not bind the live tensors {wrong[:5]}")


def build_native_model(native, custom_head=None):
    """The `nn.Sequential` fastai 0.7 built for this native learner (body children, then
    AdaptiveConcatPool2d, Flatten and the head's layers, or the user's `custom_head` as the child
    after the body), holding the Rust model's own tensors; `trainable` flags set from the
    learner's layer groups."""
    arch, cut = native.arch, native.cut
    body = _BODIES.get(arch)
    if body is None:
        raise InternalError(f"learn.model: no torch module layout for the architecture {arch!r}")
    live = dict(native.live_tensors())
    shapes = {k: list(s) for k, s, _, _ in native.entries()}
    with torch.device("meta"):
        children = body(cut)
        if native.has_custom_head:
            head = []
        else:
            head = [(str(cut), AdaptiveConcatPool2d()), (str(cut + 1), Flatten())] + _fastai_head(native, shapes)
    if native.has_custom_head:
        if not isinstance(custom_head, nn.Module):
            raise InternalError("learn.model: the learner has a custom head but no module was given")
        head = [(str(cut), custom_head)]
    model = nn.Sequential(OrderedDict(children + head))
    _bind(model, live)
    sync_trainable(model, native)
    return model


class NativeModels:
    """fastai 0.7's "models" object of a native learner (`learn.models`): `model` (the whole
    Sequential), `fc_model` (the layers after pooling and flattening, input width `nf`, or the
    custom head alone: what precomputed activations feed), `top_model` (the body, with the
    pooling and flattening unless the head is custom), `nf`, `name`, `get_layer_groups`. The
    three Sequentials hold the same module objects."""

    def __init__(self, native, custom_head, name):
        self.model = build_native_model(native, custom_head)
        children = list(self.model.children())
        self.fc_model = nn.Sequential(*children[native.head_start:])
        self.top_model = nn.Sequential(*children[:native.head_start])
        self.nf, self.name = native.nf, name
        self._native = native
        sync_trainable(self, native)

    def get_layer_groups(self, do_fc=False):
        """As fastai 0.7: [fc_model] with `do_fc`; else the body's children (with the pooling
        and flattening) split into the two body groups, then [fc_model]. A child whose tensors
        span both groups (EfficientNet's block list) is listed in each."""
        if do_fc:
            return [self.fc_model]
        sets = _group_sets(self.model, self._native)
        top = list(self.top_model.children())
        return [[c for c in top if g in sets[c]] for g in (0, 1)] + [self.fc_model]


# ---- trainable flags -----------------------------------------------------------------------

def _group_sets(model, native):
    """{module: frozenset of layer groups} for every module below `model`: those owning tensors
    take the groups of their keys' entries; containers the union of their parts'; a module
    without tensors of its own that of the module holding it, or, directly in the Sequential,
    the group of the last child before it that has tensors (ReLU, max-pool), the head's group
    for head layers, and the last body group for the pooling and flattening (as fastai 0.7's
    layer groups put them)."""
    key_group = {k: g for k, _, g, _ in native.entries()}
    sets = {}

    def walk(m, prefix):
        own = {key_group[prefix + n] for n, t in list(m._parameters.items()) + list(m._buffers.items())
               if t is not None and prefix + n in key_group}
        for n, c in m.named_children():
            own |= walk(c, f"{prefix}{n}.")
        sets[m] = frozenset(own) if own else None
        return own

    def fill(m, outer):
        if sets[m] is None:
            sets[m] = outer
        for c in m.children():
            fill(c, sets[m])

    last = frozenset({0})
    for i, (name, child) in enumerate(model.named_children()):
        groups = walk(child, f"{name}.")
        if groups:
            last = frozenset(groups)
            outer = last
        elif i >= native.head_start or (native.has_custom_head and i >= native.cut):
            outer = frozenset({2})
        elif i >= native.cut:
            outer = frozenset({1})
        else:
            outer = last
        fill(child, outer)
    return sets


def sync_trainable(model, native):
    """Sets fastai 0.7's `trainable` attribute on every module below `model` (a Sequential, or
    a `NativeModels`: then also on its `fc_model`) from the learner's layer groups; a module
    whose tensors span several groups, such as EfficientNet's block list, is trainable when
    any of them is. `model` None (nothing built yet): nothing to do."""
    if model is None:
        return
    trainable = native.trainable
    if isinstance(model, NativeModels):
        model.fc_model.trainable = bool(trainable[2])
        model = model.model
    for m, groups in _group_sets(model, native).items():
        m.trainable = any(trainable[g] for g in groups)
