"""Validation accuracy of lesson 1's precompute fit in float32 and under bfloat16 autocast, over
several seeds, on the Dogs-vs-Cats photos (EfficientNet-Lite0 with its packaged ImageNet weights):
the evidence that the bfloat16 default (CPUs with native bfloat16) costs no accuracy.

    python examples/precision_accuracy.py [FOLDER] [--seeds 8] [--sz 224] [--bs 64]

Per precision the body's activations are computed once (`precompute=True`; the cache under the
temporary PATH/tmp is keyed by the precision), then for each seed a fresh learner in that
precision fits the head, `fit(1e-2, 3)`, as step 1 of `dogscats_accuracy.py`. The seed fixes the
head's initialisation, dropout and the data order, so the two columns differ only by the
precision. Where the CPU has no native bfloat16 (AVX2 machines) libtorch emulates it: the same
numbers, about 9x slower.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from fastai.conv_learner import *  # noqa: F403
from fastai.dataset import *  # noqa: F403
from fastai.transforms import *  # noqa: F403

from dogscats_accuracy import DEFAULT, symlink_tree

PRECISIONS = ("float32", "bfloat16")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=DEFAULT)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--sz", type=int, default=224)
    ap.add_argument("--bs", type=int, default=64)
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.folder, "train")):
        sys.exit(f"no photos: {args.folder} has no train/ folder")
    tmp = tempfile.mkdtemp(prefix="precision_acc_")
    try:
        PATH = symlink_tree(args.folder, os.path.join(tmp, "dogscats"))
        arch = efficientnet_lite0  # noqa: F405
        tfms = tfms_from_model(arch, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)  # noqa: F405
        acc = {p: [] for p in PRECISIONS}
        for p in PRECISIONS:
            for seed in range(args.seeds):
                torch.manual_seed(seed)  # noqa: F405
                data = ImageClassifierData.from_paths(PATH, bs=args.bs, tfms=tfms, seed=seed)  # noqa: F405
                t = time.time()
                learn = ConvLearner.pretrained(arch, data, precompute=True, precision=p)  # noqa: F405
                if seed == 0:
                    print(f"{p}: precompute {time.time() - t:.1f} s "
                          f"({len(data.trn_ds)} train, {len(data.val_ds)} valid)", flush=True)
                acc[p].append(float(learn.fit(1e-2, 3)[1]))
                print(f"{p} seed {seed}: accuracy {acc[p][-1]:.4f}", flush=True)
        print("\nseed  " + "  ".join(f"{p:>9}" for p in PRECISIONS))
        for seed in range(args.seeds):
            print(f"{seed:4d}  " + "  ".join(f"{acc[p][seed]:9.4f}" for p in PRECISIONS))
        for label, f in (("mean", np.mean), ("min", np.min), ("max", np.max)):
            print(f"{label:>4}  " + "  ".join(f"{f(acc[p]):9.4f}" for p in PRECISIONS))
        diff = np.array(acc["bfloat16"]) - np.array(acc["float32"])
        n_valid = len(data.val_ds)
        print(f"bfloat16 - float32 per seed: mean {diff.mean():+.4f} "
              f"({diff.mean() * n_valid:+.1f} of {n_valid} photos), range {diff.min():+.4f} .. {diff.max():+.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
