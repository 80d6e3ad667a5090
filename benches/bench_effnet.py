"""Throughput of our EfficientNet-Lite0 body against the PyTorch reference (eval, CPU).

    PYTHONPATH=$PWD/python python benches/bench_effnet.py [--batch 32] [--rounds 5]

Both run on the same libtorch (the extension links pip torch's libraries), so the thread
count set here applies to both. `_backbone_features` rebuilds the model and copies the
weights on every call; that fixed cost is measured on a tiny input and reported separately,
and subtracted for the forward-only ratio. Rounds alternate between the two to spread the
noise of a shared machine evenly.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))

import effnet_reference as ref  # noqa: E402
from fastai import _native  # noqa: E402


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    state = ref.load_state_dict()
    items = list(state.items())
    model = ref.pretrained("same")
    x = torch.randn(args.batch, 3, args.size, args.size)
    tiny = torch.randn(1, 3, 32, 32)

    def run_ref():
        with torch.no_grad():
            model.features(x)

    def run_ours():
        _native._backbone_features("efficientnet_lite0", items, x)

    def build_only():
        _native._backbone_features("efficientnet_lite0", items, tiny)

    run_ref(), run_ours()  # warm-up (allocator, oneDNN primitive caches)
    t_ref, t_ours, t_build = [], [], []
    for _ in range(args.rounds):
        t_ref.append(timed(run_ref))
        t_ours.append(timed(run_ours))
        t_build.append(timed(build_only))
    ref_s, ours_s, build_s = (statistics.median(t) for t in (t_ref, t_ours, t_build))
    fwd_s = max(ours_s - build_s, 1e-9)
    n = args.batch
    print(f"threads={args.threads} batch={n} size={args.size} rounds={args.rounds}")
    print(f"reference (PyTorch)   : {n / ref_s:8.1f} images/s  ({ref_s * 1e3:.0f} ms/batch)")
    print(f"ours (build+load+fwd) : {n / ours_s:8.1f} images/s  ({ours_s * 1e3:.0f} ms/batch)")
    print(f"ours build+load only  : {build_s * 1e3:.0f} ms/call")
    print(f"ours forward only     : {n / fwd_s:8.1f} images/s")
    print(f"ratio ours/reference (images/s): {ref_s / ours_s:.3f} incl. build, {ref_s / fwd_s:.3f} forward only")


if __name__ == "__main__":
    main()
