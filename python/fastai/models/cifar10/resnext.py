"""ResNeXt for CIFAR-10 (Xie et al. 2017, section 5.3): a 3x3 stem and three stages of
grouped-conv bottlenecks (`resnext29_8_64`: depth 29, cardinality 8, base width 64).
The forward ends with log-softmax, as in fastai 0.7."""
import math

import torch.nn as nn
import torch.nn.functional as F


class ResNeXtBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, cardinality, base_width, stride=1, downsample=None):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0))) * cardinality
        self.downsample = downsample
        self.conv_reduce = nn.Conv2d(inplanes, width, 1, 1, 0, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_conv = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, planes * 4, 1, 1, 0, bias=False)
        self.bn_expand = nn.BatchNorm2d(planes * 4)

    def forward(self, x):
        out = F.relu(self.bn_reduce(self.conv_reduce(x)), inplace=True)
        out = F.relu(self.bn(self.conv_conv(out)), inplace=True)
        out = self.bn_expand(self.conv_expand(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(identity + out, inplace=True)


class CifarResNeXt(nn.Module):
    def __init__(self, block, depth, cardinality, base_width, num_classes):
        super().__init__()
        if (depth - 2) % 9 != 0:
            raise ValueError(f"CifarResNeXt: depth must be 9n+2 (29, 38, 47, 56, 101), got {depth}")
        self.layer_blocks = (depth - 2) // 9
        self.cardinality, self.base_width = cardinality, base_width
        self.num_classes, self.block = num_classes, block
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        self.inplanes = 64
        self.stage_1 = self._make_layer(64, 1)
        self.stage_2 = self._make_layer(128, 2)
        self.stage_3 = self._make_layer(256, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(256 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes, stride=1):
        out = planes * self.block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        units = [self.block(self.inplanes, planes, self.cardinality, self.base_width, stride, downsample)]
        self.inplanes = out
        units += [self.block(out, planes, self.cardinality, self.base_width)
                  for _ in range(1, self.layer_blocks)]
        return nn.Sequential(*units)

    def forward(self, x):
        x = F.relu(self.bn_1(self.conv_1_3x3(x)), inplace=True)
        x = self.avgpool(self.stage_3(self.stage_2(self.stage_1(x))))
        return F.log_softmax(self.classifier(x.flatten(1)), dim=1)


def resnext29_16_64(num_classes=10):
    return CifarResNeXt(ResNeXtBottleneck, 29, 16, 64, num_classes)


def resnext29_8_64(num_classes=10):
    return CifarResNeXt(ResNeXtBottleneck, 29, 8, 64, num_classes)


__all__ = ["ResNeXtBottleneck", "CifarResNeXt", "resnext29_16_64", "resnext29_8_64"]
