"""fastai 0.7's experimental ResNet variants (`fastai.models.resnet`): batch-norm placement
studies and a ResNet with a VGG-style fully connected head (`vgg_resnet50`). The body is one
`features` Sequential so that `children(m.features)` can be cut like a torchvision model."""
import math

import torch.nn as nn

from ..layers import Flatten


def conv(ni, nf, ks=3, stride=1):
    return nn.Conv2d(ni, nf, kernel_size=ks, stride=stride, padding=ks // 2, bias=False)


def bn1(planes):
    m = nn.BatchNorm1d(planes)
    nn.init.ones_(m.weight)
    nn.init.zeros_(m.bias)
    return m


def bn(planes, init_zero=False):
    """BatchNorm2d starting at scale 0 (`init_zero`: the block starts as the identity) or 1."""
    m = nn.BatchNorm2d(planes)
    nn.init.constant_(m.weight, 0.0 if init_zero else 1.0)
    nn.init.zeros_(m.bias)
    return m


class BasicBlock(nn.Module):
    """Two 3x3 convs; the variant studied here normalises after each ReLU and after the sum."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv(inplanes, planes, stride=stride)
        self.bn1 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes)
        self.bn2 = bn(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.relu(self.conv1(x)))
        return self.bn2(self.relu(identity + self.conv2(out)))


class _Bottleneck(nn.Module):
    expansion = 4
    zero_last_bn = False

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv(inplanes, planes, ks=1)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, stride=stride)
        self.bn2 = bn(planes)
        self.conv3 = conv(planes, planes * 4, ks=1)
        self.bn3 = bn(planes * 4, init_zero=self.zero_last_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def _branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.conv3(self.relu(self.bn2(self.conv2(out))))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(identity + self.bn3(self._branch(x)))


class Bottleneck(_Bottleneck):
    """The standard bottleneck (BN before the residual sum)."""


class BottleneckZero(_Bottleneck):
    """The standard bottleneck whose last BN starts at zero."""
    zero_last_bn = True


class BottleneckFinal(_Bottleneck):
    """The bottleneck with its last BN applied after the residual sum."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn3(identity + self._branch(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, k=1, vgg_head=False):
        super().__init__()
        self.inplanes = 64
        features = [conv(3, 64, ks=7, stride=2), bn(64), nn.ReLU(inplace=True),
                    nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]
        for i, n in enumerate(layers):
            features.append(self._make_layer(block, int(64 * 2 ** i * k), n, stride=1 if i == 0 else 2))
        out_sz = int(512 * k) * block.expansion
        if vgg_head:
            features += [nn.AdaptiveAvgPool2d(3), Flatten(),
                         nn.Linear(out_sz * 3 * 3, 4096), nn.ReLU(inplace=True), bn1(4096), nn.Dropout(0.25),
                         nn.Linear(4096, 4096), nn.ReLU(inplace=True), bn1(4096), nn.Dropout(0.25),
                         nn.Linear(4096, num_classes)]
        else:
            features += [nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(out_sz, num_classes)]
        self.features = nn.Sequential(*features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He initialisation on fan-out
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv(self.inplanes, planes * block.expansion, ks=1, stride=stride),
                                       bn(planes * block.expansion))
        units = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        units += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*units)

    def forward(self, x):
        return self.features(x)


def bnf_resnet50():
    return ResNet(BottleneckFinal, [3, 4, 6, 3])


def bnz_resnet50():
    return ResNet(BottleneckZero, [3, 4, 6, 3])


def w5_resnet50():
    return ResNet(Bottleneck, [2, 3, 3, 2], k=1.5)


def w25_resnet50():
    return ResNet(Bottleneck, [3, 4, 4, 3], k=1.25)


def w125_resnet50():
    return ResNet(Bottleneck, [3, 4, 6, 3], k=1.125)


def vgg_resnet34():
    return ResNet(BasicBlock, [3, 4, 6, 3], vgg_head=True)


def vgg_resnet50(pretrained=False):
    """ResNet-50 with a VGG-style head; `pretrained` loads `<fastai>/weights/vgg_resnet50.pth`
    (fast.ai never published this file: it must be placed there by hand)."""
    model = ResNet(Bottleneck, [3, 4, 6, 3], vgg_head=True)
    if pretrained:
        from .._zoo import load_package_weights
        load_package_weights(model, "vgg_resnet50")
    return model


__all__ = ["vgg_resnet50"]
