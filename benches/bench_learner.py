"""Speed of the native learner against plain PyTorch eager on the CPU (ratios from one run).

    PYTHONPATH=$PWD/python python benches/bench_learner.py [--threads N] [--rounds 3]
        [--head-rows 23000] [--batch 32] [--images 64] [--skip-head] [--skip-body]

(a) head epoch: one epoch of fastai's head (BN, Dropout .25, Linear 1024->512, ReLU, BN,
    Dropout .5, Linear 512->2, LogSoftmax) on 23,000 random rows of width 1024 (resnet34's
    nf), bs 64, SGD momentum 0.9: `Learner.train_epoch_tensors` (the hand-written head step,
    src/train/fused_head/; also timed: the same learner through libtorch's autograd,
    `fused_head=False`) against the same head in PyTorch with `torch.optim.SGD(momentum=0.9)`
    over the same shuffled batches. Target: our epoch under 0.5 s.
(b) resnet34 + head at 224 px, batch `--batch`: forward (eval, no_grad; `predict_array`) and
    forward + backward + SGD step (train mode, everything unfrozen: `freeze_to(0)` then
    `train_epoch_tensors` on image rows) against torchvision's resnet34 + the same head.
    Target: at least 0.95x PyTorch's images/s.

Both sides run on the same libtorch (the extension links pip torch's libraries), so
`torch.set_num_threads` applies to both. Rounds alternate between the two sides so that the
noise of a shared machine hits both alike; the median of the rounds is reported, and the
ratio is ours / PyTorch in images (rows) per second: > 1 means we are faster. Weights are
random (speed does not depend on them).
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn as nn
import torchvision

from fastai import _native


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def torch_head(nf=1024, c=2):
    return nn.Sequential(
        nn.BatchNorm1d(nf), nn.Dropout(0.25), nn.Linear(nf, 512), nn.ReLU(),
        nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, c), nn.LogSoftmax(dim=1))


class ConcatPool(nn.Module):
    def forward(self, x):
        return torch.cat([torch.amax(x, (2, 3)), x.mean((2, 3))], 1)


def torch_resnet34_full():
    body = torchvision.models.resnet34(weights=None)
    body = nn.Sequential(*list(body.children())[:-2])
    return nn.Sequential(body, ConcatPool(), torch_head())


def median(v):
    return statistics.median(v)


def report(name, n, ours, ref, unit):
    o, r = median(ours), median(ref)
    print(f"{name:<34} ours {o:7.3f} s ({n / o:9.1f} {unit}/s)  pytorch {r:7.3f} s ({n / r:9.1f} {unit}/s)"
          f"  ratio {r / o:5.3f}x   [rounds ours {' '.join(f'{t:.3f}' for t in ours)};"
          f" pytorch {' '.join(f'{t:.3f}' for t in ref)}]")
    return r / o


def ours_epoch(learner, lrs, precompute, x, y, bs, seed, epoch, fused_head=True):
    """One epoch of our native loop over in-memory rows, in a fit of its own."""
    learner.begin_fit(lrs=lrs, wds=[0.0] * len(lrs), schedule=_native.Schedule.constant(),
                      precompute=precompute, fused_head=fused_head)
    learner.train_epoch_tensors(x, y, bs, seed, epoch)
    learner.end_fit()


def ref_epoch(model, opt, x, y, bs, g):
    """The same epoch in PyTorch eager: shuffled batches, NLL loss, SGD step."""
    perm = torch.randperm(len(x), generator=g)
    for s in range(0, len(x), bs):
        idx = perm[s:s + bs]
        loss = nn.functional.nll_loss(model(x.index_select(0, idx)), y.index_select(0, idx))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # as our loop reads the loss of every batch


def alternate(rounds, *sides):
    """Seconds of each side per round, the sides interleaved so shared-machine noise hits all."""
    times = [[] for _ in sides]
    for r in range(rounds):
        for f, t in zip(sides, times):
            t.append(timed(lambda: f(r + 1)))
    return times


def sgemm_round(size=1024, reps=4):
    """One round of this machine's float32 matrix-product speed: PyTorch's sgemm on size³
    (the best a well-tuned BLAS gets from these cores right now)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return lambda _: [torch.mm(a, b) for _ in range(reps)]


def bench_head(args):
    n, nf, bs = args.head_rows, 1024, 64
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, nf, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    ours = _native.Learner("resnet34", 2)
    ref = torch_head(nf)
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=1e-2, momentum=0.9)
    run_ours = lambda epoch: ours_epoch(ours, [1e-2], True, x, y, bs, 42, epoch)  # noqa: E731
    run_ref = lambda epoch: ref_epoch(ref, opt, x, y, bs, g)  # noqa: E731
    run_autograd = lambda epoch: ours_epoch(ours, [1e-2], True, x, y, bs, 42, epoch, fused_head=False)  # noqa: E731
    size, reps = 1024, 4
    run_sgemm = sgemm_round(size, reps)
    run_ours(0), run_ref(0), run_autograd(0), run_sgemm(0)  # warm-up
    t_ours, t_ref, t_auto, t_mm = alternate(args.rounds, run_ours, run_ref, run_autograd, run_sgemm)
    report("(a) head epoch, autograd path", n, t_auto, t_ref, "rows")
    ratio = report(f"(a) head epoch ({n} x {nf}, bs {bs})", n, t_ours, t_ref, "rows")
    o = median(t_ours)
    print(f"    target: our head epoch < 0.5 s: {'MET' if o < 0.5 else 'NOT MET'} ({o:.3f} s)")
    # The machine's speed in the same run, so that the figure above can be read on another
    # machine: the epoch's matrix products (layer 1 forward, and W1's gradient with BatchNorm
    # 1's over the nonzero half of the ReLU's gradient) against PyTorch's sgemm rate.
    rate = 2 * size**3 * reps / median(t_mm) / 1e9
    nh = 512
    products = (2 * n * nf * nh + 2 * 2 * n * nh * nf * 0.5) / 1e9
    print(f"    this machine: PyTorch sgemm {size}^3 at {rate:.1f} GFLOP/s ({torch.get_num_threads()} threads,"
          f" rounds {' '.join(f'{2 * size**3 * reps / t / 1e9:.0f}' for t in t_mm)});"
          f" the epoch's products, {products:.1f} GFLOP, take {products / rate:.3f} s at that rate;"
          f" our epoch runs at {products / o / rate:.0%} of it (0.5 s needs {products / 0.5 / rate:.0%})")
    return ratio


def bench_body(args):
    bs, n, sz = args.batch, args.images, 224
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, sz, sz, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    xb = x[:bs].contiguous()
    ours = _native.Learner("resnet34", 2)
    ref = torch_resnet34_full()

    # forward, eval, no_grad: one batch of bs images
    ref.eval()

    def fwd_ref(_):
        with torch.no_grad():
            ref(xb)

    fwd_ours = lambda _: ours.predict_array(xb)  # noqa: E731
    fwd_ours(0), fwd_ref(0)
    t_ours, t_ref = alternate(args.rounds, fwd_ours, fwd_ref)
    r_fwd = report(f"(b) resnet34 forward (bs {bs}, {sz}px)", bs, t_ours, t_ref, "img")

    # forward + backward + SGD step, train mode, whole model trainable: n images in batches of bs
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)
    ours.freeze_to(0)
    # warm-up on one batch each
    ours_epoch(ours, [1e-3] * 3, False, xb, y[:bs], bs, 7, 0)
    ref_epoch(ref, opt, xb, y[:bs], bs, g)
    t_ours, t_ref = alternate(args.rounds, lambda e: ours_epoch(ours, [1e-3] * 3, False, x, y, bs, 7, e),
                              lambda e: ref_epoch(ref, opt, x, y, bs, g))
    r_train = report(f"(b) resnet34 fwd+bwd+SGD (bs {bs}, {n} img)", n, t_ours, t_ref, "img")
    return r_fwd, r_train


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--head-rows", type=int, default=23000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--skip-head", action="store_true")
    ap.add_argument("--skip-body", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"malloc tuned by fastai._native: {getattr(_native, 'malloc_tuned', None)}")
    ratios = {}
    if not args.skip_head:
        ratios["head"] = bench_head(args)
    if not args.skip_body:
        ratios["forward"], ratios["train"] = bench_body(args)
    for k, v in ratios.items():
        if k != "head":
            print(f"    target {k}: >= 0.95x PyTorch: {'MET' if v >= 0.95 else 'NOT MET'} ({v:.3f}x)")
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
