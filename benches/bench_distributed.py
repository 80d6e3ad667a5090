"""Data-parallel scaling of `learn.distrib_ctx()`: steps/s and scaling efficiency at 1..N ranks.

    PYTHONPATH=$PWD/python python benches/bench_distributed.py [--worlds 1,2] [--arch resnet18]
        [--sz 64] [--bs 16] [--steps 20] [--threads 1] [--unfreeze]

CPU (gloo): each rank runs `--threads` torch threads; on a machine with N GPUs (NCCL, one GPU
per rank, chosen by LOCAL_RANK) the same command with `--worlds 1,2,4,8 --sz 224 --bs 64`.

For each world size W the script starts itself under torchrun (`python -m
torch.distributed.run --nproc_per_node=W`); every rank trains `--steps` steps of batch `--bs`
(weak scaling: the global batch is W x bs) on random in-memory images (`from_arrays`, so the
disk is out of the picture) and rank 0 times the steps after the first two (warm-up) with a
batch-end callback. Reported: steps/s, images/s (W x bs x steps/s) and the scaling
efficiency images/s(W) / (W x images/s(1)). One JSON line per world size on stdout.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def worker(args):
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import fastai.conv_learner as cl
    from fastai.conv_learner import ConvLearner, ImageClassifierData, tfms_from_model
    from fastai.sgdr import Callback

    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    arch = getattr(cl, args.arch)
    n = args.bs * world * args.steps
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, args.sz, args.sz, 3), dtype=np.uint8)
    y = rng.integers(0, 2, n).astype(np.int64)
    xv, yv = x[:args.bs], y[:args.bs]
    data = ImageClassifierData.from_arrays(args.tmp, (x, y), (xv, yv), bs=args.bs,
                                           tfms=tfms_from_model(arch, args.sz), classes=["a", "b"],
                                           num_workers=args.threads, seed=0)
    learn = ConvLearner.pretrained(arch, data, pretrained=False)
    if args.unfreeze:
        learn.unfreeze()
    stamps = []

    class Stamp(Callback):
        def on_batch_end(self, loss):
            stamps.append(time.perf_counter())

    with learn.distrib_ctx():
        learn.fit(1e-3, 1, callbacks=[Stamp()])
    if rank == 0:
        timed = stamps[1:]  # steps 2.. (the first two pay for warm-up)
        sps = (len(timed) - 1) / (timed[-1] - timed[0])
        with open(args.out, "w") as f:
            json.dump({"world": world, "steps_per_s": sps, "images_per_s": sps * args.bs * world}, f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worlds", default="1,2")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--sz", type=int, default=64)
    p.add_argument("--bs", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--unfreeze", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.steps < 4:
        p.error("--steps must be at least 4 (two warm-up steps, then at least two timed)")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for w in [int(v) for v in args.worlds.split(",")]:
            out = os.path.join(tmp, f"w{w}.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={w}",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}", __file__, "--worker",
                   "--out", out, "--tmp", tmp, "--arch", args.arch, "--sz", str(args.sz),
                   "--bs", str(args.bs), "--steps", str(args.steps), "--threads", str(args.threads)]
            if args.unfreeze:
                cmd.append("--unfreeze")
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            with open(out) as f:
                r = json.load(f)
            base = base or r["images_per_s"] / w
            r["efficiency"] = r["images_per_s"] / (w * base)
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
