"""`fastai.torch_imports`: torch names the lesson reaches for, and the architecture handles.

In fastai 0.7 `resnet34` was torchvision's constructor; here it is an `Arch` handle naming an
architecture the Rust core builds (`ConvLearner.pretrained(resnet34, data)`), carrying the
normalisation statistics `tfms_from_model` needs. Calling it (`resnet34(True)`) still gives a
torchvision model, for users who want one, when torchvision is installed.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim
from torch.utils.data import Dataset, TensorDataset



def children(m):
    """Direct sub-modules of a torch module as a list; a list or tuple is returned unchanged."""
    return m if isinstance(m, (list, tuple)) else list(m.children())


imagenet_stats = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# EfficientNet-Lite0's packaged ImageNet weights expect inputs scaled to [-1, 1].
half_stats = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


class Arch:
    """An architecture the Rust core can build: `name`, `stats` = (mean, std) of its weights."""

    def __init__(self, name, stats=imagenet_stats):
        self.name = name
        self.stats = stats
        self.__name__ = name

    def __repr__(self):
        return f"<architecture {self.name}>"

    def __call__(self, pre=False):
        """A torchvision model of this architecture (with our pretrained weights if `pre`)."""
        try:
            import torchvision
        except ImportError as e:
            raise ImportError(f"{self.name}(): building a PyTorch model needs torchvision") from e
        ctor = getattr(torchvision.models, self.name, None)
        if ctor is None:
            raise NotImplementedError(f"{self.name} has no torchvision equivalent; use it with ConvLearner.pretrained")
        m = ctor(weights=None)
        if pre:
            from ._weights import load_pretrained
            m.load_state_dict(load_pretrained(self.name), strict=False)
        return m


resnet18 = Arch("resnet18")
resnet34 = Arch("resnet34")
resnet50 = Arch("resnet50")
resnet101 = Arch("resnet101")
resnet152 = Arch("resnet152")
efficientnet_lite0 = Arch("efficientnet_lite0", half_stats)

ARCHS = {a.name: a for a in (resnet18, resnet34, resnet50, resnet101, resnet152, efficientnet_lite0)}


def arch_from(f):
    """The `Arch` for an Arch, an architecture name, or a torchvision constructor."""
    if isinstance(f, Arch):
        return f
    name = f if isinstance(f, str) else getattr(f, "__name__", None)
    if name in ARCHS:
        return ARCHS[name]
    import difflib
    close = difflib.get_close_matches(str(name), list(ARCHS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown architecture {f!r}; available: {', '.join(ARCHS)}.{hint}")


cuda = torch.cuda
backends = torch.backends
FloatTensor = torch.FloatTensor
LongTensor = torch.LongTensor


def Variable(x, requires_grad=False, volatile=False):
    """PyTorch 0.3's Variable: in modern torch a tensor is its own Variable."""
    return x.requires_grad_(requires_grad) if requires_grad else x


def save_model(m, p):
    torch.save(m.state_dict(), p)


def load_model(m, p):
    m.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))


__all__ = ["torch", "nn", "F", "optim", "Dataset", "TensorDataset", "os", "children", "Arch",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "efficientnet_lite0",
           "cuda", "backends", "FloatTensor", "LongTensor", "Variable",
           "save_model", "load_model", "arch_from"]
