"""What a user's own torch module costs in the Rust training loop. Not a test; run it by hand on
a quiet machine:

    PYTHONPATH=python python benches/bench_module_path.py [--path ../shared/data/dogscats]
        [--n 192] [--sz 128] [--bs 32] [--rounds 2]

One unfrozen training epoch plus a validation pass of ResNet-34 (random weights, fastai 0.7's
head, SGD with momentum 0.9, the CPU's channels-last layout for every contender) over the same
photos (`--n` training images, `--n // 4` validation images of `<path>`, read through symlinks
so nothing is written there), three ways:

* native: `ConvLearner.pretrained(resnet34, data)`, the network built by the Rust core;
* module path: `ConvLearner.pretrained(f, data)` with `f` returning torchvision's resnet34 (a
  backbone the learner does not build itself): the same Rust loader, optimiser and loop, the
  module's forward called from the loop once per batch;
* plain PyTorch: the same torchvision module and head in a hand-written loop over a
  `torch.utils.data.DataLoader` (PIL decode, RandomResizedCrop-free 0.7-style resize + random
  crop + flip, 2 worker processes), `torch.optim.SGD`.

Prints images/s of each (best of `--rounds`) and the ratios. Measured figures go in the issue
note with the machine and the command.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from fastai.conv_learner import ConvLearner, ConvnetBuilder, model_meta, resnet34  # noqa: E402
from fastai.dataset import ImageClassifierData  # noqa: E402
from fastai.transforms import tfms_from_model, transforms_side_on  # noqa: E402


def tv_resnet34(pre):
    """torchvision's ResNet-34 as a user's backbone function (not routed to the native build)."""
    import torchvision
    return torchvision.models.resnet34(weights=None)


model_meta[tv_resnet34] = [8, 6]


def link_subset(src, dst, n):
    """`dst/{train,valid}/<class>/` holding symlinks to the first files of `src`'s, evenly over
    its classes: n training and n // 4 validation images."""
    for split, count in (("train", n), ("valid", max(n // 4, 2))):
        classes = sorted(os.listdir(os.path.join(src, split)))
        for c in classes:
            os.makedirs(os.path.join(dst, split, c), exist_ok=True)
            names = sorted(os.listdir(os.path.join(src, split, c)))[: count // len(classes)]
            for f in names:
                os.symlink(os.path.join(src, split, c, f), os.path.join(dst, split, c, f))


def one_fit(learn):
    learn.unfreeze()
    t = time.perf_counter()
    learn.fit(1e-3, 1)
    return time.perf_counter() - t


def plain_pytorch(root, sz, bs, n_trn, n_val):
    """The same module and head in a hand-written loop over torch's DataLoader."""
    import torchvision
    from torchvision import transforms as T
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    trn_tf = T.Compose([T.Resize(sz), T.RandomCrop(sz), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize(sz), T.CenterCrop(sz), T.ToTensor(), norm])
    trn = torchvision.datasets.ImageFolder(os.path.join(root, "train"), trn_tf)
    val = torchvision.datasets.ImageFolder(os.path.join(root, "valid"), val_tf)
    trn_dl = torch.utils.data.DataLoader(trn, bs, shuffle=True, num_workers=2, persistent_workers=False)
    val_dl = torch.utils.data.DataLoader(val, bs, num_workers=2)
    model = ConvnetBuilder(tv_resnet34, 2, False, False).model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    t = time.perf_counter()
    model.train()
    for x, y in trn_dl:
        loss = F.nll_loss(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for x, y in val_dl:
            F.nll_loss(model(x.contiguous(memory_format=torch.channels_last)), y)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default=os.path.join(REPO, "..", "shared", "data", "dogscats"))
    ap.add_argument("--n", type=int, default=192)
    ap.add_argument("--sz", type=int, default=128)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as root:
        link_subset(os.path.abspath(args.path), root, args.n)
        tfms = tfms_from_model(resnet34, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
        data = ImageClassifierData.from_paths(root, bs=args.bs, tfms=tfms, num_workers=2, seed=0)
        n = len(data.trn_ds) + len(data.val_ds)
        native = ConvLearner.pretrained(resnet34, data, pretrained=False)
        module = ConvLearner.pretrained(tv_resnet34, data, pretrained=False).channels_last()
        times = {"native": [], "module path": [], "plain PyTorch": []}
        for _ in range(args.rounds):
            times["native"].append(one_fit(native))
            times["module path"].append(one_fit(module))
            times["plain PyTorch"].append(plain_pytorch(root, args.sz, args.bs, len(data.trn_ds), len(data.val_ds)))
    rate = {k: n / min(v) for k, v in times.items()}
    print(f"\nResNet-34, sz {args.sz}, bs {args.bs}, {len(data.trn_ds)} train + {len(data.val_ds)} valid images, "
          f"{torch.get_num_threads()} threads, best of {args.rounds}")
    for k, r in rate.items():
        print(f"  {k:<14} {r:8.1f} img/s")
    print(f"  module path / plain PyTorch: {rate['module path'] / rate['plain PyTorch']:.2f}x")
    print(f"  module path / native:        {rate['module path'] / rate['native']:.2f}x")
    print(f"  native / plain PyTorch:      {rate['native'] / rate['plain PyTorch']:.2f}x")


if __name__ == "__main__":
    main()
