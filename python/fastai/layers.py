"""fastai 0.7's custom layers, as PyTorch modules (for users building their own heads or a
PyTorch copy of a saved model; the Rust core implements the same operations)."""
import torch
import torch.nn as nn


class AdaptiveConcatPool2d(nn.Module):
    """Max pool and average pool to `sz`, concatenated along channels (max first)."""

    def __init__(self, sz=None):
        super().__init__()
        sz = sz or (1, 1)
        self.ap, self.mp = nn.AdaptiveAvgPool2d(sz), nn.AdaptiveMaxPool2d(sz)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "AdaptiveConcatPool2d", "Flatten", "Lambda"
    ], [_imports, _torch_imports])
