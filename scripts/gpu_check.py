"""Device check for issue 7: throughput of each lesson stage, CPU/GPU agreement, and the
lesson's sequence end to end. Run through scripts/gpu_check.sh; `--cpu` runs it small on CPU.

Prints a table and writes the full log to $OUT (or ./gpu_check_out) when set.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def make_dataset(root, n_train, n_valid, size=(500, 375), seed=0):
    """Two classes that differ learnably: class 1 has a bright disc, class 0 a dark square,
    on noisy backgrounds; JPEGs of about 500x375 like the Kaggle photos."""
    rng = np.random.default_rng(seed)
    w, h = size
    for split, n in (("train", n_train), ("valid", n_valid)):
        for c, name in enumerate(("cats", "dogs")):
            d = os.path.join(root, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(n // 2):
                img = rng.integers(40, 200, (h, w, 3), dtype=np.uint8)
                cy, cx, r = rng.integers(80, h - 80), rng.integers(80, w - 80), rng.integers(30, 70)
                yy, xx = np.ogrid[:h, :w]
                if c:
                    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (250, 240, 60)
                else:
                    img[cy - r:cy + r, cx - r:cx + r] = (20, 30, 120)
                Image.fromarray(img).save(os.path.join(d, f"{name[:-1]}.{i}.jpg"), quality=90)


def random_resnet34_checkpoint(torch_home):
    import torchvision
    d = os.path.join(torch_home, "hub", "checkpoints")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), os.path.join(d, "resnet34-b627a593.pth"))


def rate(n, seconds):
    return n / seconds if seconds > 0 else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="store_true", help="small sizes, CPU only")
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    out_dir = os.environ.get("OUT") or os.path.abspath("gpu_check_out")
    os.makedirs(out_dir, exist_ok=True)
    log = open(os.path.join(out_dir, "gpu_check.log"), "w")

    def say(*a):
        s = " ".join(str(x) for x in a)
        print(s, flush=True)
        log.write(s + "\n")
        log.flush()

    small = args.cpu
    n_train, n_valid, sz, bs = (64, 32, 64, 16) if small else (23000, 2000, 224, 256)
    threads = 2 if small else args.threads
    work = tempfile.mkdtemp(prefix="gpu_check_")
    os.environ["TORCH_HOME"] = os.path.join(work, "torch_home")
    t = time.time()
    make_dataset(os.path.join(work, "data"), n_train, n_valid)
    random_resnet34_checkpoint(os.environ["TORCH_HOME"])
    say(f"dataset {n_train}+{n_valid} JPEGs made in {time.time() - t:.1f} s under {work}")

    from fastai.conv_learner import ConvLearner, resnet34
    from fastai.dataset import ImageClassifierData
    from fastai.transforms import tfms_from_model, transforms_side_on

    cuda = torch.cuda.is_available() and not small
    device = "cuda" if cuda else "cpu"
    say(f"device {device}; torch {torch.__version__}; threads {threads}")
    PATH = os.path.join(work, "data")
    tfms = tfms_from_model(resnet34, sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(PATH, bs=bs, tfms=tfms, num_workers=threads, seed=0)
    rows = []

    def loader_rate(dl, name, max_batches):
        t = time.time()
        n = 0
        for i, (x, y) in enumerate(dl):
            n += len(x)
            if i + 1 >= max_batches:
                break
        rows.append((name, rate(n, time.time() - t)))

    loader_rate(data.aug_dl, "loader aug_dl images/s", 20 if not small else 2)
    loader_rate(data.val_dl, "loader val_dl images/s", 20 if not small else 2)

    t = time.time()
    # The default layout first (channels-last is the CPU default; keep the rows comparable).
    learn = ConvLearner.pretrained(resnet34, data, precompute=True, device=device, channels_last=False)
    rows.append(("precompute images/s", rate(n_train + n_valid, time.time() - t)))
    t = time.time()
    learn.fit(1e-2, 1)
    rows.append(("fit on activations, epoch s", time.time() - t))
    learn.precompute = False

    def timed_fit(label, lrs):
        t = time.time()
        learn.fit(lrs, 1)
        rows.append((f"fit {label} images/s", rate(n_train, time.time() - t)))

    timed_fit("frozen (fp32)", 1e-2)
    learn.unfreeze()
    diff_lrs = np.array([1e-4, 1e-3, 1e-2])
    timed_fit("unfrozen (fp32)", diff_lrs)
    # The opt-ins: channels-last weights, then bfloat16 mixed precision on top.
    learn.channels_last()
    timed_fit("unfrozen (fp32, channels-last)", diff_lrs)
    learn.half()
    timed_fit("unfrozen (bf16 autocast, channels-last)", diff_lrs)
    learn.float()
    learn.channels_last(False)
    preds = learn.predict()
    if cuda:
        learn.save("gpu_check")
        cpu = ConvLearner.pretrained(resnet34, data, precompute=False, device="cpu")
        cpu.load("gpu_check")
        diff = float(np.abs(cpu.predict() - preds).max())
        rows.append(("max |log-prob GPU - CPU|", diff))
    t = time.time()
    log_preds, y = learn.TTA()
    rows.append(("TTA s", time.time() - t))
    acc = float((np.argmax(np.exp(log_preds).mean(0), 1) == y).mean())
    rows.append(("accuracy after TTA", acc))
    say("\n| stage | value |\n|---|---|")
    for name, v in rows:
        say(f"| {name} | {v:.4g} |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
