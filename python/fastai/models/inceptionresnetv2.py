"""Inception-ResNet-v2 (Szegedy et al. 2016) with the module names of the PyTorch port whose
weights fastai 0.7 used (`weights/inceptionresnetv2-d579a627.pth`, 1001 classes with the
background class first): its state-dict keys are `conv2d_1a.conv.weight`, `repeat.0.branch0...`.
"""
import torch
import torch.nn as nn

from ._inception import BasicConv2d, avg_pool_3x3


def _seq(*specs):
    return nn.Sequential(*(BasicConv2d(*s[:4], **({"padding": s[4]} if len(s) > 4 else {}))
                           for s in specs))


class Mixed_5b(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(192, 96, 1, 1)
        self.branch1 = _seq((192, 48, 1, 1), (48, 64, 5, 1, 2))
        self.branch2 = _seq((192, 64, 1, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1))
        self.branch3 = nn.Sequential(avg_pool_3x3(), BasicConv2d(192, 64, 1, 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class _Residual(nn.Module):
    """Branches concatenated, projected back by a 1x1 conv (with bias), scaled, added to the
    input, then ReLU (except the very last block)."""

    def _combine(self, x, outs):
        out = self.conv2d(torch.cat(outs, 1)) * self.scale + x
        return self.relu(out) if hasattr(self, "relu") else out


class Block35(_Residual):
    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(320, 32, 1, 1)
        self.branch1 = _seq((320, 32, 1, 1), (32, 32, 3, 1, 1))
        self.branch2 = _seq((320, 32, 1, 1), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1))
        self.conv2d = nn.Conv2d(128, 320, 1, 1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self._combine(x, [self.branch0(x), self.branch1(x), self.branch2(x)])


class Mixed_6a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(320, 384, 3, 2)
        self.branch1 = _seq((320, 256, 1, 1), (256, 256, 3, 1, 1), (256, 384, 3, 2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Block17(_Residual):
    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1088, 192, 1, 1)
        self.branch1 = _seq((1088, 128, 1, 1), (128, 160, (1, 7), 1, (0, 3)),
                            (160, 192, (7, 1), 1, (3, 0)))
        self.conv2d = nn.Conv2d(384, 1088, 1, 1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self._combine(x, [self.branch0(x), self.branch1(x)])


class Mixed_7a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _seq((1088, 256, 1, 1), (256, 384, 3, 2))
        self.branch1 = _seq((1088, 256, 1, 1), (256, 288, 3, 2))
        self.branch2 = _seq((1088, 256, 1, 1), (256, 288, 3, 1, 1), (288, 320, 3, 2))
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block8(_Residual):
    def __init__(self, scale=1.0, noReLU=False):
        super().__init__()
        self.scale = scale
        self.noReLU = noReLU
        self.branch0 = BasicConv2d(2080, 192, 1, 1)
        self.branch1 = _seq((2080, 192, 1, 1), (192, 224, (1, 3), 1, (0, 1)),
                            (224, 256, (3, 1), 1, (1, 0)))
        self.conv2d = nn.Conv2d(448, 2080, 1, 1)
        if not noReLU:
            self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self._combine(x, [self.branch0(x), self.branch1(x)])


class InceptionResnetV2(nn.Module):
    """Children in forward order; `ConvLearner` cuts the last two (pool and classifier)."""

    def __init__(self, num_classes=1001):
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed_5b()
        self.repeat = nn.Sequential(*(Block35(scale=0.17) for _ in range(10)))
        self.mixed_6a = Mixed_6a()
        self.repeat_1 = nn.Sequential(*(Block17(scale=0.10) for _ in range(20)))
        self.mixed_7a = Mixed_7a()
        self.repeat_2 = nn.Sequential(*(Block8(scale=0.20) for _ in range(9)))
        self.block8 = Block8(noReLU=True)
        self.conv2d_7b = BasicConv2d(2080, 1536, 1, 1)
        # Adaptive (the port's fixed 8x8 pool equals it at 299 pixels) so other sizes work too.
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(1536, num_classes)

    def features(self, x):
        for name, m in self.named_children():
            if name in ("avgpool_1a", "last_linear"):
                break
            x = m(x)
        return x

    def logits(self, features):
        return self.last_linear(self.avgpool_1a(features).flatten(1))

    def forward(self, x):
        return self.logits(self.features(x))


def inceptionresnetv2(num_classes=1001):
    """Inception-ResNet-v2 with random weights."""
    return InceptionResnetV2(num_classes=num_classes)


__all__ = ["InceptionResnetV2", "inceptionresnetv2", "BasicConv2d", "Mixed_5b", "Block35",
           "Mixed_6a", "Block17", "Mixed_7a", "Block8"]
