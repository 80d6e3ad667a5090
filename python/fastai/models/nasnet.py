"""NASNet-A-Large (Zoph et al. 2018, "Learning Transferable Architectures for Scalable Image
Recognition", the 6 @ 4032 variant) with the module names of Cadene's PyTorch port, so that its
ImageNet file (`nasnetalarge-a1897284.pth`, 1001 classes: row 0 is a "background" class) loads
key for key.

As in fastai 0.7 the network's forward returns the features, the ReLU of the last cell's output
(4032 channels, 11 x 11 for a 331-pixel input); there is no average-pool child, and `dropout` /
`last_linear` are only used by `classifier` (with `use_classifier=True`). Inputs are expected
scaled to [0, 1] then normalised with mean 0.5 and std 0.5 per channel, at 331 x 331.

Two details of the port matter for the weights to mean the same thing: every BatchNorm has
eps 1e-3 (TensorFlow's default, where the weights were trained), and the stride-2 layers of the
first reduction cell emulate TensorFlow's "SAME" padding, which pads right/bottom more than
left/top for even sizes: they pad one extra row/column at the top/left, then drop the first
output row/column.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_FILE = "nasnetalarge-a1897284.pth"
WEIGHTS_URL = "http://data.lip6.fr/cadene/pretrainedmodels/" + WEIGHTS_FILE

# What Cadene's `pretrained` names mean: both read the same 1001-class file; "imagenet" drops
# the background row so that class i is ImageNet's class i.
PRETRAINED_SETTINGS = {
    "imagenet": {"num_classes": 1000},
    "imagenet+background": {"num_classes": 1001},
}
INPUT_SETTINGS = {"input_space": "RGB", "input_size": [3, 331, 331], "input_range": [0, 1],
                  "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _bn(c):
    return nn.BatchNorm2d(c, eps=0.001, momentum=0.1, affine=True)


def _relu_conv_bn(c_in, c_out):
    """The 1x1 projection every cell applies to its inputs."""
    return nn.Sequential(OrderedDict([
        ("relu", nn.ReLU()), ("conv", nn.Conv2d(c_in, c_out, 1, bias=False)), ("bn", _bn(c_out))]))


def _avg3(stride=1):
    # count_include_pad=False: border averages are over the real pixels only (as TensorFlow).
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


def _max3():
    return nn.MaxPool2d(3, stride=2, padding=1)


class DropFirst(nn.Module):
    """Drops the first row and column of a feature map (the other half of the padding trick)."""

    def forward(self, x):
        return x[:, :, 1:, 1:]


class _TFPaddedPool(nn.Sequential):
    # one extra zero row/column at the top/left, the pool, then the first output row/column
    # dropped: the pooling windows then sit where TensorFlow's "SAME" padding puts them.
    def __init__(self, pool):
        super().__init__(OrderedDict([("pad", nn.ZeroPad2d((1, 0, 1, 0))), ("pool", pool),
                                      ("crop", DropFirst())]))


class MaxPoolPad(_TFPaddedPool):
    """3x3 stride-2 max pooling with TensorFlow's padding (see the module docstring)."""

    def __init__(self):
        super().__init__(_max3())


class AvgPoolPad(_TFPaddedPool):
    """3x3 stride-2 average pooling with TensorFlow's padding."""

    def __init__(self):
        super().__init__(_avg3(2))


class SeparableConv2d(nn.Sequential):
    """A depthwise k x k convolution then a pointwise 1x1 one, both without bias."""

    def __init__(self, c_in, c_out, kernel, stride, padding):
        super().__init__(OrderedDict([
            ("depthwise_conv2d", nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding,
                                           groups=c_in, bias=False)),
            ("pointwise_conv2d", nn.Conv2d(c_in, c_out, 1, bias=False))]))


class BranchSeparables(nn.Sequential):
    """ReLU, separable conv (carrying the stride), BN, ReLU, separable conv, BN.

    The first separable conv keeps the width (`c_in` -> `c_in`) except in the stem cell
    (`stem=True`, `c_in` -> `c_out`), where the input has another width than the cell.
    `tf_pad=True` adds the TensorFlow padding trick around the first (strided) conv.
    """

    def __init__(self, c_in, c_out, kernel, stride, padding, stem=False, tf_pad=False):
        mid = c_out if stem else c_in
        layers = [("relu", nn.ReLU())]
        if tf_pad:
            layers.append(("padding", nn.ZeroPad2d((1, 0, 1, 0))))
        layers.append(("separable_1", SeparableConv2d(c_in, mid, kernel, stride, padding)))
        if tf_pad:
            layers.append(("crop", DropFirst()))
        layers += [("bn_sep_1", _bn(mid)), ("relu1", nn.ReLU()),
                   ("separable_2", SeparableConv2d(mid, c_out, kernel, 1, padding)),
                   ("bn_sep_2", _bn(c_out))]
        super().__init__(OrderedDict(layers))


def _sep(c_in, c_out, kernel, stride=1, **kw):
    return BranchSeparables(c_in, c_out, kernel, stride, kernel // 2, **kw)


class _FactorizedReduction:
    """Halves the spatial size of the previous cell's output to match the current one: two
    stride-2 1x1 convolutions, one on the even pixels and one on the odd pixels (shifted by
    one), concatenated and batch-normalised. Adds `relu`, `path_1`, `path_2`, `final_path_bn`."""

    def _add_factorized(self, c_in, c_half):
        self.relu = nn.ReLU()
        self.path_1 = nn.Sequential(OrderedDict([
            ("avgpool", nn.AvgPool2d(1, stride=2, count_include_pad=False)),
            ("conv", nn.Conv2d(c_in, c_half, 1, bias=False))]))
        # shift by one pixel: pad one zero row/column at the bottom/right, drop the first ones
        self.path_2 = nn.Sequential(OrderedDict([
            ("pad", nn.ZeroPad2d((0, 1, 0, 1))), ("crop", DropFirst()),
            ("avgpool", nn.AvgPool2d(1, stride=2, count_include_pad=False)),
            ("conv", nn.Conv2d(c_in, c_half, 1, bias=False))]))
        self.final_path_bn = _bn(2 * c_half)

    def _factorized(self, x):
        x = self.relu(x)
        return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))


class _ReducingCell(nn.Module):
    """The wiring of the stem and reduction cells, on `a` (this cell's projected input) and `b`
    (the other one: the conv stem itself in the first stem cell, the factorized-reduced conv
    stem in the second, the projected previous cell in a reduction cell); output: the last 4
    of the 5 blocks, at half the size."""

    def _combine(self, a, b):
        c0 = self.comb_iter_0_left(a) + self.comb_iter_0_right(b)
        c1 = self.comb_iter_1_left(a) + self.comb_iter_1_right(b)
        c2 = self.comb_iter_2_left(a) + self.comb_iter_2_right(b)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(a)
        return torch.cat([c1, c2, c3, c4], 1)

    def _add_branches(self, c_b, c, stem=False, tf_pad=False):
        # c_b: width of input `b`; c: the cell's block width
        self.comb_iter_0_left = _sep(c, c, 5, 2, tf_pad=tf_pad)
        self.comb_iter_0_right = _sep(c_b, c, 7, 2, tf_pad=tf_pad, stem=stem)
        self.comb_iter_1_left = MaxPoolPad() if tf_pad else _max3()
        self.comb_iter_1_right = _sep(c_b, c, 7, 2, tf_pad=tf_pad, stem=stem)
        self.comb_iter_2_left = AvgPoolPad() if tf_pad else _avg3(2)
        self.comb_iter_2_right = _sep(c_b, c, 5, 2, tf_pad=tf_pad, stem=stem)
        self.comb_iter_3_right = _avg3()
        self.comb_iter_4_left = _sep(c, c, 3, 1, tf_pad=tf_pad)
        self.comb_iter_4_right = MaxPoolPad() if tf_pad else _max3()


class CellStem0(_ReducingCell):
    """First stem cell: 96 channels at 165 x 165 (for 331 input) -> 4 x 42 at 83 x 83."""

    def __init__(self):
        super().__init__()
        self.conv_1x1 = _relu_conv_bn(96, 42)
        # the right branches read the 96-wide conv stem itself, so their first separable conv
        # changes the width
        self._add_branches(96, 42, stem=True)

    def forward(self, x):
        return self._combine(self.conv_1x1(x), x)


class CellStem1(_ReducingCell, _FactorizedReduction):
    """Second stem cell: reads the first stem cell (168 channels) and the conv stem (96,
    reduced by the factorized path) -> 4 x 84 at half size."""

    def __init__(self):
        super().__init__()
        self.conv_1x1 = _relu_conv_bn(168, 84)
        self._add_factorized(96, 42)
        self._add_branches(84, 84)

    def forward(self, x_conv0, x_stem_0):
        return self._combine(self.conv_1x1(x_stem_0), self._factorized(x_conv0))


class _ReductionCell(_ReducingCell):
    """A reduction cell between two stages: both inputs are projected to the new width."""
    tf_pad = False

    def __init__(self, in_channels_left, out_channels_left, in_channels_right, out_channels_right):
        super().__init__()
        self.conv_prev_1x1 = _relu_conv_bn(in_channels_left, out_channels_left)
        self.conv_1x1 = _relu_conv_bn(in_channels_right, out_channels_right)
        self._add_branches(out_channels_right, out_channels_right, tf_pad=self.tf_pad)

    def forward(self, x, x_prev):
        return self._combine(self.conv_1x1(x), self.conv_prev_1x1(x_prev))


class ReductionCell0(_ReductionCell):
    """The first reduction (42 -> 21 pixels at 331 input), with TensorFlow's padding trick on
    its strided layers: on an even size, plain symmetric padding would shift the windows."""
    tf_pad = True


class ReductionCell1(_ReductionCell):
    """The second reduction (21 -> 11 pixels): odd size, so symmetric padding already matches."""


class _NormalCellBase(nn.Module):
    """The wiring of the normal cells, on `left` (the previous cell's output, projected) and
    `right` (the current input, projected); output: `left` and 5 blocks, same size."""

    def _add_branches(self, c_left, c_right):
        self.comb_iter_0_left = _sep(c_right, c_right, 5)
        self.comb_iter_0_right = _sep(c_left, c_left, 3)
        self.comb_iter_1_left = _sep(c_left, c_left, 5)
        self.comb_iter_1_right = _sep(c_left, c_left, 3)
        self.comb_iter_2_left = _avg3()
        self.comb_iter_3_left = _avg3()
        self.comb_iter_3_right = _avg3()
        self.comb_iter_4_left = _sep(c_right, c_right, 3)

    def _combine(self, left, right):
        c0 = self.comb_iter_0_left(right) + self.comb_iter_0_right(left)
        c1 = self.comb_iter_1_left(left) + self.comb_iter_1_right(left)
        c2 = self.comb_iter_2_left(right) + left
        c3 = self.comb_iter_3_left(left) + self.comb_iter_3_right(left)
        c4 = self.comb_iter_4_left(right) + right
        return torch.cat([left, c0, c1, c2, c3, c4], 1)


class FirstCell(_NormalCellBase, _FactorizedReduction):
    """The normal cell after a reduction: its previous input is at twice the resolution, so it
    goes through the factorized reduction instead of a 1x1 projection."""

    def __init__(self, in_channels_left, out_channels_left, in_channels_right, out_channels_right):
        super().__init__()
        self.conv_1x1 = _relu_conv_bn(in_channels_right, out_channels_right)
        self._add_factorized(in_channels_left, out_channels_left)
        self._add_branches(2 * out_channels_left, out_channels_right)

    def forward(self, x, x_prev):
        return self._combine(self._factorized(x_prev), self.conv_1x1(x))


class NormalCell(_NormalCellBase):
    def __init__(self, in_channels_left, out_channels_left, in_channels_right, out_channels_right):
        super().__init__()
        self.conv_prev_1x1 = _relu_conv_bn(in_channels_left, out_channels_left)
        self.conv_1x1 = _relu_conv_bn(in_channels_right, out_channels_right)
        self._add_branches(out_channels_left, out_channels_right)

    def forward(self, x, x_prev):
        return self._combine(self.conv_prev_1x1(x_prev), self.conv_1x1(x))


def _cell_plan():
    """(name, class, in_left, out_left, in_right, out_right) of the cells after the stem, in
    the order they run. Stage k has the block width f = 168 * 2**k; a normal cell outputs 6f
    channels, the reduction cell before the stage (block width f too) 4f. `in_left` is the
    width of the output two cells back: for the first cell after a reduction, the previous
    stage's second-to-last normal cell."""
    plan = []
    prev_prev, prev = 4 * 42, 4 * 84  # cell_stem_0, cell_stem_1
    for stage, f in enumerate((168, 336, 672)):
        if stage:
            kind = ReductionCell0 if stage == 1 else ReductionCell1
            plan.append((f"reduction_cell_{stage - 1}", kind, prev_prev, f, prev, f))
            prev = 4 * f  # `prev_prev` stays: see the docstring
        for i in range(6):
            name = f"cell_{6 * stage + i}"
            if i == 0:
                plan.append((name, FirstCell, prev_prev, f // 2, prev, f))
            else:
                plan.append((name, NormalCell, prev_prev, f, prev, f))
            prev_prev, prev = prev, 6 * f
    return plan


class NASNetALarge(nn.Module):
    """NASNet-A-Large. `forward` returns the ReLU'd features of the last cell (fastai 0.7's
    variant); with `use_classifier=True` it continues with `classifier` (global max pool,
    dropout, `last_linear`, log-softmax)."""

    def __init__(self, use_classifier=False, num_classes=1001):
        super().__init__()
        self.use_classifier, self.num_classes = use_classifier, num_classes
        self.conv0 = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(3, 96, 3, stride=2, padding=0, bias=False)), ("bn", _bn(96))]))
        self.cell_stem_0 = CellStem0()
        self.cell_stem_1 = CellStem1()
        plan = _cell_plan()
        for name, kind, *widths in plan:
            self.add_module(name, kind(*widths))
        self._cell_names = [p[0] for p in plan]
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout()
        self.last_linear = nn.Linear(4032, num_classes)

    def features(self, x):
        x_conv0 = self.conv0(x)
        stem_0 = self.cell_stem_0(x_conv0)
        # each cell reads the last output and the one before it; a reduction cell's output
        # replaces only the last one, so the cell after it still reads the stage's
        # second-to-last normal cell
        prev, last = stem_0, self.cell_stem_1(x_conv0, stem_0)
        for name in self._cell_names:
            out = getattr(self, name)(last, prev)
            if name.startswith("reduction"):
                last = out
            else:
                prev, last = last, out
        return self.relu(last)

    def classifier(self, x):
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return F.log_softmax(self.last_linear(self.dropout(x)), dim=1)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x) if self.use_classifier else x


def nasnetalarge(num_classes=1000, pretrained="imagenet"):
    """fastai 0.7's `fastai.models.nasnet.nasnetalarge`: the same function as
    `fastai.conv_learner.nasnetalarge` (see `fastai._zoo.nasnetalarge`)."""
    from .._zoo import nasnetalarge as build
    return build(num_classes=num_classes, pretrained=pretrained)
