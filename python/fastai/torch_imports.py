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
from torch.utils.data import Dataset, TensorDataset

# The architecture handles (`resnet34`, ...), built from the Rust core's table.
from ._archs import ARCHS, Arch, arch_from, imagenet_stats  # noqa: F401

globals().update(ARCHS)


def children(m):
    """Direct sub-modules of a torch module as a list; a list or tuple is returned unchanged."""
    return m if isinstance(m, (list, tuple)) else list(m.children())


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
           *ARCHS, "cuda", "backends", "FloatTensor", "LongTensor", "Variable",
           "save_model", "load_model", "arch_from"]
