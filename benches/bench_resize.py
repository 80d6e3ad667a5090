"""`data.resize` throughput: our copies (libjpeg-turbo decode, antialiased bilinear resize,
JPEG encode, in Rust on `--workers` threads) against the original's way of doing the same work
(PIL open, convert, resize BILINEAR, save, on a thread pool of the same size). Not a test; run
it by hand:

    PYTHONPATH=python python benches/bench_resize.py [--path ../shared/data/dogscats]
        [--workers 2] [--n 1000] [--targ 340]

Both read the same files of `<path>/train` (page cache warmed first) and write into fresh
temporary folders. Prints images/s of each and the ratio.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from fastai.conv_learner import resnet34  # noqa: E402
from fastai.dataset import ImageClassifierData  # noqa: E402
from fastai.transforms import tfms_from_model  # noqa: E402


def pil_copy(src, dst, targ):
    """The original's resize_img, written out."""
    im = Image.open(src).convert("RGB")
    w, h = im.size
    ratio = targ / min(w, h)
    size = (max(int(w * ratio), targ), max(int(h * ratio), targ))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    im.resize(size, Image.BILINEAR).save(dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default=os.path.join(REPO, "..", "shared", "data", "dogscats"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000, help="photos (per class, half each)")
    ap.add_argument("--targ", type=int, default=340)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_resize_")
    try:
        # A slice of the photos as symlinks (the data set stays read-only).
        files = []
        for cls in ("cats", "dogs"):
            src = os.path.join(args.path, "train", cls)
            os.makedirs(os.path.join(work, "train", cls))
            os.makedirs(os.path.join(work, "valid", cls))
            for f in sorted(os.listdir(src))[: args.n // 2]:
                os.symlink(os.path.join(src, f), os.path.join(work, "train", cls, f))
                files.append(os.path.join("train", cls, f))
            # from_paths needs a validation folder: one photo per class.
            first = sorted(os.listdir(src))[0]
            os.symlink(os.path.join(src, first), os.path.join(work, "valid", cls, first))
        for f in files:  # warm the page cache
            with open(os.path.join(work, f), "rb") as fh:
                fh.read()
        data = ImageClassifierData.from_paths(work, tfms=tfms_from_model(resnet34, 224),
                                              num_workers=args.workers)
        t = time.perf_counter()
        data.resize(args.targ, "ours")
        ours = len(files) / (time.perf_counter() - t)
        out = os.path.join(work, "pil", str(args.targ))
        t = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as ex:
            list(ex.map(lambda f: pil_copy(os.path.join(work, f), os.path.join(out, f), args.targ), files))
        pil = len(files) / (time.perf_counter() - t)
        print(f"{len(files)} photos -> smaller side {args.targ}, {args.workers} threads")
        print(f"ours (data.resize)     {ours:8.1f} img/s")
        print(f"PIL thread pool        {pil:8.1f} img/s")
        print(f"ratio                  {ours / pil:8.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
