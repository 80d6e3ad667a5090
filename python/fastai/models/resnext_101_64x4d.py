"""ResNeXt-101 (64x4d) as fast.ai converted it from Torch7: the layout of fast.ai's `resnext_101_64x4d.pth`."""
import torch.nn as nn

from ._lambda import Lambda, LambdaMap, LambdaReduce, bottleneck_net  # noqa: F401


def resnext_101_64x4d():
    """ResNeXt-101 (64x4d), random weights (`fastai.torch_imports` loads the pretrained file)."""
    return bottleneck_net([3, 4, 23, 3], [256 * 2 ** i for i in range(4)], [256 * 2 ** i for i in range(4)],
                          groups=64, nested=True, pool=nn.AdaptiveAvgPool2d(1))


__all__ = ["resnext_101_64x4d"]
