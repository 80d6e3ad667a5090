"""Wide-ResNet-50-2 as fast.ai converted it from Torch7: the layout of fast.ai's `wrn_50_2f.pth`
(a ResNet-50 with every bottleneck twice as wide, the residual branch one flat Sequential, and a
fixed 7x7 average pool, so it expects 224-pixel inputs)."""
import torch.nn as nn

from ._lambda import Lambda, LambdaMap, LambdaReduce, bottleneck_net  # noqa: F401


def wrn_50_2f():
    """Wide-ResNet-50-2, random weights (`fastai.torch_imports.wrn` loads the pretrained file)."""
    return bottleneck_net([3, 4, 6, 3], [128 * 2 ** i for i in range(4)],
                          [256 * 2 ** i for i in range(4)], groups=1, nested=False,
                          pool=nn.AvgPool2d(7, 1))


__all__ = ["wrn_50_2f"]
