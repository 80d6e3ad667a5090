"""Inception-v4 (Szegedy et al. 2016) with the module layout of Cadene's PyTorch port, whose
ImageNet weights (`inceptionv4-58153ba9.pth`, 1001 classes) fastai 0.7 used: the body is one
`features` Sequential (stem, Mixed 3a/4a/5a, 4 x Inception-A, Reduction-A, 7 x Inception-B,
Reduction-B, 3 x Inception-C, pooling) and the classifier is `classif`."""
import torch
import torch.nn as nn

from ._inception import BasicConv2d, avg_pool_3x3

WEIGHTS_URL = "https://s3.amazonaws.com/pytorch/models/inceptionv4-58153ba9.pth"


def _seq(*specs):
    return nn.Sequential(*(BasicConv2d(*s[:4], **({"padding": s[4]} if len(s) > 4 else {}))
                           for s in specs))


class Mixed_3a(nn.Module):
    def __init__(self):
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = BasicConv2d(64, 96, 3, 2)

    def forward(self, x):
        return torch.cat([self.maxpool(x), self.conv(x)], 1)


class Mixed_4a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _seq((160, 64, 1, 1), (64, 96, 3, 1))
        self.branch1 = _seq((160, 64, 1, 1), (64, 64, (1, 7), 1, (0, 3)),
                            (64, 64, (7, 1), 1, (3, 0)), (64, 96, 3, 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Mixed_5a(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = BasicConv2d(192, 192, 3, 2)
        self.maxpool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.conv(x), self.maxpool(x)], 1)


class Inception_A(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(384, 96, 1, 1)
        self.branch1 = _seq((384, 64, 1, 1), (64, 96, 3, 1, 1))
        self.branch2 = _seq((384, 64, 1, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1))
        self.branch3 = nn.Sequential(avg_pool_3x3(), BasicConv2d(384, 96, 1, 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Reduction_A(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(384, 384, 3, 2)
        self.branch1 = _seq((384, 192, 1, 1), (192, 224, 3, 1, 1), (224, 256, 3, 2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Inception_B(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(1024, 384, 1, 1)
        self.branch1 = _seq((1024, 192, 1, 1), (192, 224, (1, 7), 1, (0, 3)),
                            (224, 256, (7, 1), 1, (3, 0)))
        self.branch2 = _seq((1024, 192, 1, 1), (192, 192, (7, 1), 1, (3, 0)),
                            (192, 224, (1, 7), 1, (0, 3)), (224, 224, (7, 1), 1, (3, 0)),
                            (224, 256, (1, 7), 1, (0, 3)))
        self.branch3 = nn.Sequential(avg_pool_3x3(), BasicConv2d(1024, 128, 1, 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Reduction_B(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _seq((1024, 192, 1, 1), (192, 192, 3, 2))
        self.branch1 = _seq((1024, 256, 1, 1), (256, 256, (1, 7), 1, (0, 3)),
                            (256, 320, (7, 1), 1, (3, 0)), (320, 320, 3, 2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Inception_C(nn.Module):
    """Two of the branches fork into a 1x3 and a 3x1 conv whose outputs are concatenated."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(1536, 256, 1, 1)
        self.branch1_0 = BasicConv2d(1536, 384, 1, 1)
        self.branch1_1a = BasicConv2d(384, 256, (1, 3), 1, padding=(0, 1))
        self.branch1_1b = BasicConv2d(384, 256, (3, 1), 1, padding=(1, 0))
        self.branch2_0 = BasicConv2d(1536, 384, 1, 1)
        self.branch2_1 = BasicConv2d(384, 448, (3, 1), 1, padding=(1, 0))
        self.branch2_2 = BasicConv2d(448, 512, (1, 3), 1, padding=(0, 1))
        self.branch2_3a = BasicConv2d(512, 256, (1, 3), 1, padding=(0, 1))
        self.branch2_3b = BasicConv2d(512, 256, (3, 1), 1, padding=(1, 0))
        self.branch3 = nn.Sequential(avg_pool_3x3(), BasicConv2d(1536, 256, 1, 1))

    def forward(self, x):
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1),
                          self.branch2_3a(b2), self.branch2_3b(b2), self.branch3(x)], 1)


class InceptionV4(nn.Module):
    def __init__(self, num_classes=1001):
        super().__init__()
        self.features = nn.Sequential(
            BasicConv2d(3, 32, 3, 2), BasicConv2d(32, 32, 3, 1),
            BasicConv2d(32, 64, 3, 1, padding=1),
            Mixed_3a(), Mixed_4a(), Mixed_5a(),
            *(Inception_A() for _ in range(4)), Reduction_A(),
            *(Inception_B() for _ in range(7)), Reduction_B(),
            *(Inception_C() for _ in range(3)),
            nn.AdaptiveAvgPool2d((1, 1)))
        self.classif = nn.Linear(1536, num_classes)

    def forward(self, x):
        return self.classif(self.features(x).flatten(1))


def inceptionv4(pretrained=True):
    """Inception-v4; with `pretrained`, the ImageNet weights from the torch hub cache
    (downloaded there from Cadene's published URL when absent)."""
    model = InceptionV4()
    if pretrained:
        from .._zoo import load_hub_weights
        load_hub_weights(model, WEIGHTS_URL)
    return model


__all__ = ["InceptionV4", "inceptionv4", "BasicConv2d", "Mixed_3a", "Mixed_4a", "Mixed_5a",
           "Inception_A", "Reduction_A", "Inception_B", "Reduction_B", "Inception_C"]
