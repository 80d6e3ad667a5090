"""Pre-activation ResNets for CIFAR-10 (He et al. 2016, "Identity Mappings in Deep Residual
Networks"): BN and ReLU come before each conv, and the shortcut taps the activated input."""
import torch.nn as nn
import torch.nn.functional as F


def _shortcut(in_planes, out_planes, stride):
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        sc = _shortcut(in_planes, planes, stride)
        if sc is not None:
            self.shortcut = sc

    def forward(self, x):
        act = F.relu(self.bn1(x))
        identity = self.shortcut(act) if hasattr(self, "shortcut") else x
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + identity


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        sc = _shortcut(in_planes, planes * 4, stride)
        if sc is not None:
            self.shortcut = sc

    def forward(self, x):
        act = F.relu(self.bn1(x))
        identity = self.shortcut(act) if hasattr(self, "shortcut") else x
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return self.conv3(F.relu(self.bn3(out))) + identity


class PreActResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, n, stride):
        units = []
        for s in [stride] + [1] * (n - 1):
            units.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*units)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        # The 4x4 average pool of a 32-pixel input, written so that other sizes work too.
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def PreActResNet18():
    return PreActResNet(PreActBlock, [2, 2, 2, 2])


def PreActResNet34():
    return PreActResNet(PreActBlock, [3, 4, 6, 3])


def PreActResNet50():
    return PreActResNet(PreActBottleneck, [3, 4, 6, 3])


def PreActResNet101():
    return PreActResNet(PreActBottleneck, [3, 4, 23, 3])


def PreActResNet152():
    return PreActResNet(PreActBottleneck, [3, 8, 36, 3])


__all__ = ["PreActBlock", "PreActBottleneck", "PreActResNet", "PreActResNet18", "PreActResNet34",
           "PreActResNet50", "PreActResNet101", "PreActResNet152"]
