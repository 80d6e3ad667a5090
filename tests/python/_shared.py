"""Helpers several test files share: the real photos and a random-weights checkpoint."""
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOGSCATS = os.environ.get("FASTAI_DOGSCATS", os.path.join(ROOT, "..", "shared", "data", "dogscats"))


def dogscats_slice(dst, n_train, n_valid, root=DOGSCATS):
    """dst/{train,valid}/{cats,dogs}/ holding symlinks to the first photos (sorted) of each
    class: the learner may write dst/tmp and dst/models while the photos stay read-only."""
    for split, n in (("train", n_train), ("valid", n_valid)):
        for cls in ("cats", "dogs"):
            src = os.path.join(root, split, cls)
            os.makedirs(os.path.join(dst, split, cls))
            for f in sorted(os.listdir(src))[:n]:
                os.symlink(os.path.join(src, f), os.path.join(dst, split, cls, f))


def write_random_checkpoint(torch_home, arch, file_name, seed=0):
    """A torchvision `arch` with random weights saved under torch_home/hub/checkpoints."""
    import torchvision
    ck = os.path.join(torch_home, "hub", "checkpoints")
    os.makedirs(ck, exist_ok=True)
    torch.manual_seed(seed)
    path = os.path.join(ck, file_name)
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), path)
    return path
