"""The conv unit shared by the Inception-v4 and Inception-ResNet-v2 ports."""
import torch.nn as nn


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU. The BN epsilon is TensorFlow's 0.001: the
    published weights were trained there, so PyTorch's default would shift every output."""

    def __init__(self, in_planes, out_planes, kernel_size, stride, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride,
                              padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=0.001, momentum=0.1, affine=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def avg_pool_3x3():
    # The padded border is left out of each average, as in TensorFlow's "SAME" average pool.
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
