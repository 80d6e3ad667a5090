"""Loader throughput: our `aug_dl` against a PyTorch DataLoader doing the same work with PIL and
torchvision, against PIL's decode alone, and against libjpeg-turbo's full-size decode alone of
the same files already in memory (through PIL when it is built on libjpeg-turbo), on as many
threads as the loader has workers. Not a test; run it by hand:

    PYTHONPATH=python python benches/bench_loader.py [--path ../shared/data/dogscats]
        [--workers 2] [--n 1280] [--sz 224]

All three read the same files of `<path>/train` (page cache warmed first), at sz 224 (or `--sz`) with
`transforms_side_on` and `max_zoom=1.1`. Prints images/s of each and the ratios.
"""
import io
import argparse
import glob
import os
import random
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from fastai.dataset import ImageClassifierData  # noqa: E402
from fastai.transforms import imagenet_stats, tfms_from_model, transforms_side_on  # noqa: E402

SZ, BS = 224, 64


class TorchSideOn(torch.utils.data.Dataset):
    """The same pipeline with PIL + torchvision: random scale (p .75, up to 1.1), rotate ±10°
    (p .75), lighting (b, c = .05), horizontal flip, random crop, normalise."""

    def __init__(self, files):
        import torchvision.transforms as T
        import torchvision.transforms.functional as F
        self.files, self.T, self.F = files, T, F
        self.rot = T.RandomApply([T.RandomRotation(10, interpolation=T.InterpolationMode.BILINEAR)], p=0.75)
        self.crop = T.RandomCrop(SZ)
        self.norm = T.Normalize(*[list(map(float, s)) for s in imagenet_stats])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        im = Image.open(self.files[i]).convert("RGB")
        m = random.uniform(1, 1.1) if random.random() < 0.75 else 1.0
        im = self.F.resize(im, int(SZ * m), interpolation=self.T.InterpolationMode.BILINEAR)
        im = self.rot(im)
        x = self.F.to_tensor(im)
        b, c = random.uniform(-0.05, 0.05), random.uniform(-0.05, 0.05)
        k = 1 + c if c >= 0 else 1 / (1 - c)
        mu = x.mean()
        x = ((x - mu) * k + mu + b).clamp_(0, 1)
        if random.random() < 0.5:
            x = x.flip(-1)
        return self.norm(self.crop(x)), 0


def rate(n, t):
    return n / t


def main():
    global SZ
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default=os.path.join(REPO, "..", "shared", "data", "dogscats"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n", type=int, default=1280, help="images per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the best of each is kept")
    ap.add_argument("--sz", type=int, default=SZ, help="output size (224 as the lesson; 128 decodes smaller)")
    args = ap.parse_args()
    SZ = args.sz  # read by the baseline's transform and the pipeline below
    path = os.path.abspath(args.path) + "/"
    files = sorted(glob.glob(os.path.join(path, "train", "*", "*.jpg")))
    if not files:
        sys.exit(f"no images under {path}train")
    n = min(args.n, len(files))
    n -= n % BS or 0
    n = max(n, BS)
    for f in files[:n]:  # warm the page cache so all three read from memory
        with open(f, "rb") as fh:
            fh.read()
    W = args.workers
    print(f"{n} images of {path}train, sz {SZ}, bs {BS}, {W} workers, best of {args.rounds} rounds")

    tfms = tfms_from_model("resnet34", SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(path, bs=BS, tfms=tfms, trn_name="train", val_name="train",
                                          num_workers=W, seed=0)
    nb = n // BS
    sub = TorchSideOn(files[:n])

    def pil_1():
        for f in files[:n]:
            Image.open(f).convert("RGB").load()
        return n

    def pil_w():
        with ThreadPoolExecutor(W) as ex:  # PIL releases the GIL while decoding
            list(ex.map(lambda f: Image.open(f).convert("RGB").load(), files[:n]))
        return n

    blobs = []
    for f in files[:n]:
        with open(f, "rb") as fh:
            blobs.append(fh.read())

    def decode_blob(b):
        im = Image.open(io.BytesIO(b))
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")

    def turbo_w():
        with ThreadPoolExecutor(W) as ex:
            list(ex.map(decode_blob, blobs))
        return n

    def ours():
        got = 0
        for i, (x, y) in enumerate(data.aug_dl):
            got += len(x)
            if i + 1 == nb:
                break
        return got

    def torch_dl():
        dl = torch.utils.data.DataLoader(sub, batch_size=BS, shuffle=False, num_workers=W)
        return sum(len(x) for x, _ in dl)

    # The machine is shared: interleave the measurements and keep each one's best round.
    # Also count CPU seconds (this process and finished children, i.e. DataLoader workers):
    # images per CPU-second does not depend on what else the machine is running.
    def cpu():
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    best, best_cpu = {}, {}
    for _ in range(args.rounds):
        for name, fn in [("pil1", pil_1), ("pilw", pil_w), ("turbo", turbo_w), ("ours", ours),
                         ("torch", torch_dl)]:
            t, c = time.perf_counter(), cpu()
            got = fn()
            best[name] = max(best.get(name, 0.0), rate(got, time.perf_counter() - t))
            best_cpu[name] = max(best_cpu.get(name, 0.0), rate(got, cpu() - c))
    pil1, pilw, ours, tv = best["pil1"], best["pilw"], best["ours"], best["torch"]
    turbo = best["turbo"]
    from PIL import features
    codec = "libjpeg-turbo" if features.check_feature("libjpeg_turbo") else "libjpeg (not turbo)"

    print(f"PIL decode only, 1 thread : {pil1:8.1f} img/s")
    print(f"PIL decode only, {W} threads: {pilw:8.1f} img/s")
    print(f"{codec} decode only, from memory, {W} threads: {turbo:8.1f} img/s")
    print(f"torch DataLoader + PIL/tv : {tv:8.1f} img/s")
    print(f"fastai-rs aug_dl          : {ours:8.1f} img/s")
    print(f"ratio ours / DataLoader   : {ours / tv:8.2f}x   (target >= 4)")
    print(f"ratio ours / PIL decode {W}t: {ours / pilw:8.2f}    (target >= 0.70)")
    print(f"ratio ours / PIL decode 1t: {ours / pil1:8.2f}")
    print(f"ratio ours / {codec} full decode only, memory, {W}t: {ours / turbo:8.2f}    "
          "(target >= 0.85)")
    c = best_cpu
    print("per CPU-second (insensitive to other load on the machine):")
    print(f"  PIL decode {c['pil1']:.1f}, DataLoader {c['torch']:.1f}, ours {c['ours']:.1f} img/cpu-s; "
          f"ours/DataLoader {c['ours'] / c['torch']:.2f}x, ours/PIL decode {c['ours'] / c['pil1']:.2f}")


if __name__ == "__main__":
    main()
