"""`fastai.torch_imports`: torch names the lesson reaches for, and the architecture handles.

In fastai 0.7 `resnet34` was torchvision's constructor; here it is an `Arch` handle naming an
architecture the Rust core builds (`ConvLearner.pretrained(resnet34, data)`); the handles and
what they carry come from the core's architecture table (`fastai._archs`).
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim
from torch.nn.init import kaiming_normal_ as kaiming_normal, kaiming_uniform_ as kaiming_uniform
from torch.utils.data import Dataset, TensorDataset

from ._exports import LazyModule

# The architecture handles (`resnet34`, ...), built from the Rust core's table.
from ._archs import ARCHS, Arch, arch_from, imagenet_stats  # noqa: F401

globals().update(ARCHS)

# The rest of 0.7's zoo (plain torch modules built here or by torchvision), and the converted
# networks' constructors 0.7 imported here too.
from ._zoo import ZOO, dn121, dn161, dn169, dn201, inception_4, inceptionresnet_2, nasnetalarge  # noqa: E402,F401
from ._zoo import resnext50, resnext101, resnext101_64, vgg16, vgg19, wrn  # noqa: E402,F401
from .models.inceptionresnetv2 import InceptionResnetV2  # noqa: E402,F401
from .models.inceptionv4 import inceptionv4  # noqa: E402,F401
from .models.resnext_50_32x4d import resnext_50_32x4d  # noqa: E402,F401
from .models.resnext_101_32x4d import resnext_101_32x4d  # noqa: E402,F401
from .models.resnext_101_64x4d import resnext_101_64x4d  # noqa: E402,F401
from .models.wrn_50_2f import wrn_50_2f  # noqa: E402,F401


def children(m):
    """Direct sub-modules of a torch module as a list; a list or tuple is returned unchanged."""
    return m if isinstance(m, (list, tuple)) else list(m.children())


cuda = torch.cuda
backends = torch.backends
FloatTensor = torch.FloatTensor
LongTensor = torch.LongTensor


# 0.7 imported torchvision here (its transforms' `Compose` too); it is only loaded when used.
torchvision = LazyModule("torchvision", "torchvision")


def Variable(x, requires_grad=False, volatile=False):
    """PyTorch 0.3's Variable. In torch 2 a tensor is its own Variable: this is PyTorch's
    `Variable` (a tensor sharing `x`'s memory, a new leaf when `requires_grad`), and
    `volatile` (0.3's "no gradient", now `torch.no_grad()`) is accepted and ignored."""
    return torch.autograd.Variable(x, requires_grad=requires_grad)


def save_model(m, p):
    """Saves the state dict of the torch module `m` to `p`."""
    torch.save(m.state_dict(), p)


def load_model(m, p):
    """Loads the state dict in `p` (read onto the CPU first) into `m`, keys matching exactly."""
    m.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))


def load_pre(pre, f, fn):
    """`f()`, with the weights `<this package>/weights/<fn>.pth` loaded into it when `pre`."""
    m = f()
    if pre:
        load_model(m, os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", f"{fn}.pth"))
    return m


__all__ = ["torch", "nn", "F", "optim", "Dataset", "TensorDataset", "os", "children", "Arch",
           *ARCHS, "cuda", "backends", "FloatTensor", "LongTensor", "Variable",
           "save_model", "load_model", "load_pre", "arch_from", "kaiming_normal",
           "kaiming_uniform", "torchvision", *ZOO, "InceptionResnetV2", "inceptionv4",
           "resnext_50_32x4d", "resnext_101_32x4d", "resnext_101_64x4d", "wrn_50_2f"]
