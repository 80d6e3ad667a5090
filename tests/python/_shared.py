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


def clr_reference(n_steps, cycle, div, cut_div, moms):
    """use_clr per spec 6.3, written out independently of the library: (lr multiplier,
    momentum) for each of `n_steps` batches."""
    out, cut = [], max(1, int(cycle // cut_div))
    for t in range(n_steps):
        i = t % cycle
        p = 1 - (i - cut) / (cycle - cut) if i > cut else i / cut
        out.append(((1 + p * (div - 1)) / div, moms[0] + p * (moms[1] - moms[0])))
    return out


def clr_beta_reference(n_steps, cycle, div, pct):
    """use_clr_beta ("1cycle") per spec 6.3: the lr multiplier of each batch."""
    out, m = [], int(cycle * (1 - pct / 100) / 2)
    for t in range(n_steps):
        i = t % cycle
        if i > 2 * m:
            out.append((1 - (i - 2 * m) / (cycle - 2 * m) * 0.99) / div)
        else:
            q = 1 - (i - m) / m if i > m else i / m
            out.append((1 + q * (div - 1)) / div)
    return out
