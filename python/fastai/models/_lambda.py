"""The containers of the Torch7-converted networks (ResNeXt, Wide-ResNet-50-2).

Those weights were converted from Lua Torch models, whose graph was written as nested
containers: a "ConcatTable" running several branches on one input, a "CAddTable" summing what
they gave, an "Identity". Keeping the same nesting keeps the same state-dict keys
(`4.0.0.0.0.0.weight`...), so fast.ai's published `.pth` files load key for key. These classes
are nn.Sequential subclasses for that reason: their children are numbered like a Sequential's.
"""
import functools

import torch.nn as nn


class LambdaBase(nn.Sequential):
    """A Sequential whose children each see the same input; `fn` combines what they return.
    With no children the input itself is handed to `fn`."""

    def __init__(self, fn, *modules):
        super().__init__(*modules)
        self.lambda_func = fn

    def _branch_outputs(self, x):
        outs = [m(x) for m in self._modules.values()]
        return outs if outs else x


class Lambda(LambdaBase):
    """`fn` of the branch outputs (or of the input when there are no branches)."""

    def forward(self, x):
        return self.lambda_func(self._branch_outputs(x))


class LambdaMap(LambdaBase):
    """Every branch on the same input; `fn` applied to each result; a list comes out."""

    def forward(self, x):
        return [self.lambda_func(y) for y in self._branch_outputs(x)]


class LambdaReduce(LambdaBase):
    """Folds a list input (or the branch outputs) pairwise with `fn`: the residual sum."""

    def forward(self, x):
        return functools.reduce(self.lambda_func, self._branch_outputs(x))


def _identity(x):
    return x


def _add(a, b):
    return a + b


def _flatten(x):
    return x.view(x.size(0), -1)


def _as_row(x):
    # Torch7's Linear accepted a 1-d vector; the conversion kept a reshape to a 1-row batch.
    return x.view(1, -1) if x.dim() == 1 else x


def _conv(ni, nf, ks, stride=1, groups=1):
    return nn.Conv2d(ni, nf, ks, stride, ks // 2, 1, groups, bias=False)


def _residual(branch, ni, nf, stride):
    """A residual unit: branch and shortcut side by side, summed, then ReLU."""
    if stride != 1 or ni != nf:
        shortcut = nn.Sequential(_conv(ni, nf, 1, stride), nn.BatchNorm2d(nf))
    else:
        shortcut = Lambda(_identity)
    return nn.Sequential(LambdaMap(_identity, branch, shortcut), LambdaReduce(_add), nn.ReLU())


def bottleneck_net(blocks, widths, outs, groups, nested, pool):
    """The flat Sequential of the converted ResNeXt / WRN: stem (conv, BN, ReLU, max-pool), four
    stages of bottleneck units, pooling, flatten, and the 1000-way Linear.

    `widths`/`outs`: the inner and output channels of each stage; `groups`: the 3x3 conv's
    groups (the cardinality); `nested`: whether the branch's first two convs sit in their own
    Sequential (ResNeXt's conversion) or the branch is flat (WRN's)."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    ni = 64
    for stage, (n, w, nf) in enumerate(zip(blocks, widths, outs)):
        units = []
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            head = [_conv(ni, w, 1), nn.BatchNorm2d(w), nn.ReLU(),
                    _conv(w, w, 3, stride, groups), nn.BatchNorm2d(w), nn.ReLU()]
            tail = [_conv(w, nf, 1), nn.BatchNorm2d(nf)]
            branch = nn.Sequential(nn.Sequential(*head), *tail) if nested else nn.Sequential(*head, *tail)
            units.append(_residual(branch, ni, nf, stride))
            ni = nf
        layers.append(nn.Sequential(*units))
    layers += [pool, Lambda(_flatten), nn.Sequential(Lambda(_as_row), nn.Linear(ni, 1000))]
    return nn.Sequential(*layers)
