"""What a user's own pieces cost in the loaders. Not a test; run it by hand on a quiet machine:

    PYTHONPATH=python python benches/bench_user_steps.py [--path ../shared/data/dogscats]
        [--workers 2] [--n 512] [--rounds 2]

The same files of `<path>/train` (page cache warmed first), sz 224, `transforms_side_on` with
`max_zoom=1.1`, read through `aug_dl` (training transform, no shuffle):

* built-in: fastai 0.7's objects only, fused into one Rust pass per image;
* + user step: the same pipeline with one `Transform` subclass of the user's (a lighting step
  written as 0.7 kernels wrote theirs: `set_state` draws with `rand0`, `do_transform` calls
  `lighting`); such a pipeline runs per item as 0.7's objects in Python on the loader's
  threads, each built-in step one Rust kernel;
* get_x subclass: the built-in pipeline over a dataset class overriding `get_x` (it calls the
  library's own): only get_x(i) runs in Python on the loader's threads, its image then
  goes through the fused pipeline;
* CLASS masks, fused / per item: a segmentation dataset (a `FilesDataset` subclass whose
  `get_y` reads a label mask: here each image's own pixels quantised to 4 labels) with
  `tfm_y=TfmType.CLASS` and the side-on augmentations taking y: fused, the image and the mask
  go through one Rust pass with the same draws (only get_y runs in Python); per item (the
  same class also overriding `get_x`), 0.7's objects run in Python on the loader's threads;
* 0.7's way: what fastai 0.7 ran for the same pipeline, written out here with OpenCV and numpy
  (cv2.imread, RandomScale with INTER_AREA, RandomRotate, lighting, flip, random crop,
  normalise) in a PyTorch DataLoader with one OpenCV thread per worker process.

Prints images/s of each and the ratios.
"""
import argparse
import glob
import math
import os
import random
import resource
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from fastai.dataset import FilesDataset, FilesIndexArrayDataset, ImageClassifierData  # noqa: E402
from fastai.transforms import (RandomFlip, RandomLighting, RandomRotate, TfmType,  # noqa: E402
                               Transform, imagenet_stats, lighting, rand0, tfms_from_model,
                               transforms_side_on)

SZ, BS = 224, 64


class UserLighting(Transform):
    """A user's lighting step, as Kaggle kernels subclassed Transform."""

    def __init__(self, b, c, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        self.b, self.c = b, c

    def set_state(self):
        self.store.b_rand = rand0(self.b)
        self.store.c_rand = rand0(self.c)

    def do_transform(self, x, is_y):
        if is_y:
            return x
        b, c = self.store.b_rand, self.store.c_rand
        c = -1 / (c - 1) if c < 0 else c + 1
        return lighting(x, b, c)


class OwnGetX(FilesIndexArrayDataset):
    """A dataset class whose get_x is the user's (here: the library's, called through it)."""

    def get_x(self, i):
        return super().get_x(i)


class Masks(FilesDataset):
    """Segmentation as 0.7 kernels wrote it: y is a label mask read in get_y."""

    def __init__(self, fnames, y, transform, path):
        self.y = y
        super().__init__(fnames, transform, path)

    def get_y(self, i):
        from PIL import Image
        im = np.asarray(Image.open(os.path.join(self.path, self.fnames[i])).convert("L"))
        return (im // 64).astype(np.int64)

    def get_c(self):
        return 4


class MasksPerItem(Masks):
    """The same, with get_x the user's too: the whole item is made in Python per item."""

    def get_x(self, i):
        return super().get_x(i)


class Fastai07SideOn(torch.utils.data.Dataset):
    """fastai 0.7's pipeline for the same transforms, with OpenCV and numpy per image."""

    def __init__(self, files):
        self.files = files
        self.mean, self.std = (np.asarray(s, np.float32) for s in imagenet_stats)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import cv2
        cv2.setNumThreads(1)
        im = cv2.imread(self.files[i], cv2.IMREAD_UNCHANGED + cv2.IMREAD_ANYDEPTH + cv2.IMREAD_ANYCOLOR)
        x = cv2.cvtColor(im, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
        # RandomScale(sz, 1.1): p .75 of a zoom in [1, 1.1), INTER_AREA.
        targ = int(SZ * random.uniform(1, 1.1)) if random.random() < 0.75 else SZ
        r, c = x.shape[:2]
        ratio = targ / min(r, c)
        sz = (max(math.floor(c * ratio), targ), max(math.floor(r * ratio), targ))
        x = cv2.resize(x, sz, interpolation=cv2.INTER_AREA)
        # RandomRotate(10): p .75, reflected border, bilinear.
        if random.random() < 0.75:
            r, c = x.shape[:2]
            m = cv2.getRotationMatrix2D((c // 2, r // 2), rand0(10), 1)
            x = cv2.warpAffine(x, m, (c, r), borderMode=cv2.BORDER_REFLECT,
                               flags=cv2.WARP_FILL_OUTLIERS + cv2.INTER_LINEAR)
        # RandomLighting(0.05, 0.05).
        b, cc = rand0(0.05), rand0(0.05)
        cc = -1 / (cc - 1) if cc < 0 else cc + 1
        x = np.clip((x - x.mean()) * cc + x.mean() + b, 0, 1).astype(np.float32)
        # RandomFlip, RandomCrop, normalise, CHW.
        if random.random() < 0.5:
            x = np.fliplr(x)
        r, c = x.shape[:2]
        top, left = math.floor(random.random() * (r - SZ)), math.floor(random.random() * (c - SZ))
        x = (x[top:top + SZ, left:left + SZ] - self.mean) / self.std
        return np.ascontiguousarray(np.moveaxis(x, -1, 0)), 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default=os.path.join(REPO, "..", "shared", "data", "dogscats"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n", type=int, default=512, help="images per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the best of each is kept")
    args = ap.parse_args()
    try:
        import cv2  # noqa: F401  (0.7's way needs it; the library does not)
    except ImportError:
        sys.exit("this benchmark's 0.7 baseline needs OpenCV: pip install opencv-python-headless")
    path = os.path.abspath(args.path) + "/"
    files = sorted(glob.glob(os.path.join(path, "train", "*", "*.jpg")))
    if not files:
        sys.exit(f"no images under {path}train")
    n = max(BS, min(args.n, len(files)) // BS * BS)
    for f in files[:n]:  # warm the page cache so all read from memory
        with open(f, "rb") as fh:
            fh.read()
    W = args.workers
    print(f"{n} images of {path}train, sz {SZ}, bs {BS}, {W} workers, best of {args.rounds} rounds")

    def loader_of(aug, ds_cls=None):
        tfms = tfms_from_model("resnet34", SZ, aug_tfms=aug, max_zoom=1.1)
        data = ImageClassifierData.from_paths(path, bs=BS, tfms=tfms, trn_name="train",
                                              val_name="train", num_workers=W, seed=0)
        if ds_cls is None:
            return data.aug_dl
        ds = data.val_ds
        datasets = ImageClassifierData.get_ds(ds_cls, (ds.fnames, ds.y), (ds.fnames, ds.y), tfms,
                                              path=ds.path)
        return ImageClassifierData(path, datasets, BS, W, data.classes).aug_dl

    builtin = loader_of(transforms_side_on)
    user = loader_of(transforms_side_on + [UserLighting(0.05, 0.05)])
    own_get_x = loader_of(transforms_side_on, OwnGetX)

    def masks_of(ds_cls):
        t = TfmType.CLASS
        aug = [RandomRotate(10, tfm_y=t), RandomLighting(0.05, 0.05, tfm_y=t), RandomFlip(tfm_y=t)]
        tfms = tfms_from_model("resnet34", SZ, aug_tfms=aug, max_zoom=1.1, tfm_y=t)
        fn = np.array([os.path.relpath(f, path) for f in files[:n]])
        datasets = ImageClassifierData.get_ds(ds_cls, (fn, fn), (fn, fn), tfms, path=path)
        return ImageClassifierData(path, datasets, BS, W, ["0", "1", "2", "3"]).aug_dl

    masks_fused, masks_per_item = masks_of(Masks), masks_of(MasksPerItem)
    assert masks_fused._native.pipeline is not None and masks_per_item._native.dataset.is_python
    assert not builtin._native.dataset.is_python
    # Only get_x is the user's: its images feed the fused pipeline (not the Python item path).
    assert user._native.dataset.is_python and own_get_x._native.dataset.python_pixels
    nb = n // BS

    def through(dl):
        def run():
            got = 0
            for i, (x, _) in enumerate(dl):
                got += len(x)
                if i + 1 == nb:
                    break
            return got
        return run

    sub = Fastai07SideOn(files[:n])

    def fastai07():
        dl = torch.utils.data.DataLoader(sub, batch_size=BS, shuffle=False, num_workers=W)
        return sum(len(x) for x, _ in dl)

    def cpu():
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    runs = [("builtin", through(builtin)), ("user", through(user)), ("getx", through(own_get_x)),
            ("masks", through(masks_fused)), ("masks_item", through(masks_per_item)),
            ("fastai07", fastai07)]
    best, best_cpu = {}, {}
    for _ in range(args.rounds):  # interleaved, best round of each: the machine is shared
        for name, fn in runs:
            t, c = time.perf_counter(), cpu()
            got = fn()
            best[name] = max(best.get(name, 0.0), got / (time.perf_counter() - t))
            best_cpu[name] = max(best_cpu.get(name, 0.0), got / max(cpu() - c, 1e-9))
    b = best
    print(f"built-in pipeline (fused)        : {b['builtin']:8.1f} img/s")
    print(f"+ one user Transform step        : {b['user']:8.1f} img/s")
    print(f"get_x subclass, built-in pipeline: {b['getx']:8.1f} img/s")
    print(f"CLASS masks, fused               : {b['masks']:8.1f} img/s")
    print(f"CLASS masks, per item            : {b['masks_item']:8.1f} img/s")
    print(f"fastai 0.7's way (OpenCV, {W} procs): {b['fastai07']:8.1f} img/s")
    print(f"ratio user step / built-in       : {b['user'] / b['builtin']:8.2f}")
    print(f"ratio user step / fastai 0.7     : {b['user'] / b['fastai07']:8.2f}x")
    print(f"ratio get_x subclass / built-in  : {b['getx'] / b['builtin']:8.2f}")
    print(f"ratio CLASS masks fused / per item: {b['masks'] / b['masks_item']:7.2f}x")
    c = best_cpu
    print("per CPU-second: " + ", ".join(f"{k} {v:.1f}" for k, v in c.items()) + " img/cpu-s")


if __name__ == "__main__":
    main()
