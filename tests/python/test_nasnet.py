"""NASNet-A-Large (`nasnetalarge`, fastai 0.7's last zoo name).

References: Keras's published parameter count for the same network (TensorFlow-slim's
NASNet-A-Large, which Cadene converted), hand-derived tensor shapes and feature-map sizes,
TensorFlow's "SAME" padding rule written out with explicit `F.pad` for the padding trick, and
the spec's layer-group table. Nothing is downloaded: the checkpoint is written by the test into a
temporary torch hub cache."""
import urllib.error

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastai import _weights, _zoo
from fastai.exceptions import WeightsError
from fastai.models import nasnet as nasnet_mod

torch.set_num_threads(2)

CHILDREN = (["conv0", "cell_stem_0", "cell_stem_1"] + [f"cell_{i}" for i in range(6)]
            + ["reduction_cell_0"] + [f"cell_{i}" for i in range(6, 12)] + ["reduction_cell_1"]
            + [f"cell_{i}" for i in range(12, 18)] + ["relu", "dropout", "last_linear"])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _zoo.nasnetalarge(pretrained=None).eval()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp; no download may be attempted."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(url, *a, **k):
        raise urllib.error.URLError(f"no network in tests ({url})")
    monkeypatch.setattr(_weights.urllib.request, "urlopen", no_network)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_parameter_count_matches_the_published_figure(model):
    # keras.io/api/applications lists NASNetLarge (1000 classes) with 88,949,818 parameters,
    # which counts the BatchNorm moving mean/variance too; its model.summary() splits that into
    # 88,753,150 trainable and 196,668 non-trainable (the moving statistics).
    n_params = sum(p.numel() for p in model.parameters())
    n_stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("running_mean", "running_var")))
    assert n_params == 88_753_150
    assert n_stats == 196_668
    assert n_params + n_stats == 88_949_818


def test_layout_and_key_names(model):
    assert [n for n, _ in model.named_children()] == CHILDREN
    sd = model.state_dict()
    # widths: stem 96, stem cells 4 x 42 and 4 x 84, then block widths 168 / 336 / 672 per stage
    # (a normal cell outputs 6 x width, a reduction cell 4 x width)
    shapes = {
        "conv0.conv.weight": (96, 3, 3, 3),
        "conv0.bn.running_var": (96,),
        "cell_stem_0.conv_1x1.conv.weight": (42, 96, 1, 1),
        "cell_stem_0.comb_iter_0_right.separable_1.depthwise_conv2d.weight": (96, 1, 7, 7),
        "cell_stem_0.comb_iter_0_right.separable_1.pointwise_conv2d.weight": (42, 96, 1, 1),
        "cell_stem_0.comb_iter_0_left.separable_1.pointwise_conv2d.weight": (42, 42, 1, 1),
        "cell_stem_1.path_1.conv.weight": (42, 96, 1, 1),
        "cell_stem_1.path_2.conv.weight": (42, 96, 1, 1),
        "cell_stem_1.final_path_bn.weight": (84,),
        "cell_0.path_1.conv.weight": (84, 168, 1, 1),
        "cell_0.conv_1x1.conv.weight": (168, 336, 1, 1),
        "cell_1.conv_prev_1x1.conv.weight": (168, 336, 1, 1),
        "cell_1.conv_1x1.conv.weight": (168, 1008, 1, 1),
        "reduction_cell_0.conv_prev_1x1.conv.weight": (336, 1008, 1, 1),
        "reduction_cell_0.comb_iter_0_left.separable_1.depthwise_conv2d.weight": (336, 1, 5, 5),
        "cell_6.path_2.conv.weight": (168, 1008, 1, 1),
        "cell_6.conv_1x1.conv.weight": (336, 1344, 1, 1),
        "reduction_cell_1.conv_1x1.conv.weight": (672, 2016, 1, 1),
        "cell_12.path_1.conv.weight": (336, 2016, 1, 1),
        "cell_12.conv_1x1.conv.weight": (672, 2688, 1, 1),
        "cell_13.conv_prev_1x1.conv.weight": (672, 2688, 1, 1),
        "cell_17.comb_iter_4_left.separable_2.pointwise_conv2d.weight": (672, 672, 1, 1),
        "cell_17.comb_iter_4_left.bn_sep_2.running_mean": (672,),
        "last_linear.weight": (1000, 4032),
        "last_linear.bias": (1000,),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    # no biases in the convolutions; pooling branches have no keys
    assert "conv0.conv.bias" not in sd
    assert not any(k.startswith("cell_5.comb_iter_2_left") for k in sd)
    # the classifier 0.7 never reached (it named a missing attribute): max pool, linear, log-softmax
    with torch.no_grad():
        logp = model.classifier(torch.rand(2, 4032, 3, 3))
    assert logp.shape == (2, 1000) and torch.allclose(logp.exp().sum(1), torch.ones(2), atol=1e-5)
    assert nasnet_mod.nasnetalarge(num_classes=7, pretrained=None).last_linear.out_features == 7
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-3 and b.momentum == 0.1 and b.affine for b in bns)


def test_forward_at_331_gives_4032_features_11x11(model):
    # 331 -> conv 3x3 stride 2 without padding: (331 - 3) // 2 + 1 = 165; each of the four
    # reducing cells (two stem cells, two reduction cells) halves with "SAME" padding, i.e.
    # ceil(n / 2): 165 -> 83 -> 42 -> 21 -> 11
    n = (331 - 3) // 2 + 1
    for _ in range(4):
        n = -(-n // 2)
    assert n == 11
    with torch.no_grad():
        out = model(torch.randn(1, 3, 331, 331))
    assert out.shape == (1, 4032, 11, 11)
    assert out.min() >= 0 and out.max() > 0  # the features are ReLU'd


def _same_pad(size, k, s):
    """TensorFlow's "SAME" padding (before, after) for one dimension."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def test_padding_trick_equals_tensorflow_same_padding(model):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 42, 42)
    t, b = _same_pad(42, 3, 2)
    assert (t, b) == (0, 1)
    ref_max = F.max_pool2d(F.pad(x, (t, b, t, b), value=float("-inf")), 3, 2)
    assert torch.equal(nasnet_mod.MaxPoolPad()(x), ref_max)
    # TensorFlow averages over the real pixels only
    ones = torch.ones(1, 1, 42, 42)
    ref_avg = F.avg_pool2d(F.pad(x, (t, b, t, b)), 3, 2) / F.avg_pool2d(F.pad(ones, (t, b, t, b)), 3, 2)
    assert torch.allclose(nasnet_mod.AvgPoolPad()(x), ref_avg, atol=1e-6)
    # a strided separable branch of the first reduction cell, written out by hand
    br = model.reduction_cell_0.comb_iter_0_left
    x = torch.randn(1, 336, 42, 42)
    t, b = _same_pad(42, 5, 2)
    assert (t, b) == (1, 2)

    def bn(y, m):
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    s1, s2 = br.separable_1, br.separable_2
    y = F.conv2d(F.pad(F.relu(x), (t, b, t, b)), s1.depthwise_conv2d.weight, stride=2, groups=336)
    y = F.relu(bn(F.conv2d(y, s1.pointwise_conv2d.weight), br.bn_sep_1))
    y = F.conv2d(y, s2.depthwise_conv2d.weight, padding=2, groups=336)
    y = bn(F.conv2d(y, s2.pointwise_conv2d.weight), br.bn_sep_2)
    with torch.no_grad():
        assert torch.allclose(br(x), y, atol=1e-4)


def test_pretrained_loads_through_the_hub_cache_and_builds_the_0_7_learner(hub):
    from fastai.conv_learner import ConvnetBuilder, model_features
    torch.manual_seed(2)
    src = nasnet_mod.NASNetALarge(num_classes=1001)
    for p in (src.last_linear.weight, src.conv0.bn.running_mean):
        p.data.normal_()
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, hub / "nasnetalarge-a1897284.pth")
    del src

    def nasnet(pre):
        return _zoo.nasnetalarge(pretrained="imagenet" if pre else None)
    model_features[nasnet] = 4032 * 2
    try:
        b = ConvnetBuilder(nasnet, 2, False, False, xtra_fc=[], ps=0.5)
    finally:
        del model_features[nasnet]
    m = b.model[0]
    assert isinstance(m, nasnet_mod.NASNetALarge) and m.mean == [0.5] * 3 and m.input_size == [3, 331, 331]
    msd = m.state_dict()
    assert torch.equal(msd["last_linear.weight"], sd["last_linear.weight"][1:])
    assert torch.equal(msd["last_linear.bias"], sd["last_linear.bias"][1:])
    for k in ("conv0.bn.running_mean", "cell_stem_1.path_2.conv.weight", "cell_17.conv_1x1.bn.weight"):
        assert torch.equal(msd[k], sd[k]), k
    # not in model_meta: cut 0, lr_cut 0 -> groups [], [all NASNet children, pool, flatten], [head]
    assert b.nf == 8064 and b.lr_cut == 0
    groups = b.get_layer_groups()
    assert len(groups) == 3 and list(groups[0]) == []
    assert list(groups[1][:-2]) == list(m.children()) and len(groups[1]) == len(CHILDREN) + 2
    assert [type(x).__name__ for x in groups[1][-2:]] == ["AdaptiveConcatPool2d", "Flatten"]
    assert [type(x) for x in groups[2]] == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.LogSoftmax]
    assert groups[2][1].p == 0.5 and groups[2][2].in_features == 8064 and groups[2][2].out_features == 2

    # the 1001-row variant keeps the background row
    full = _zoo.nasnetalarge(num_classes=1001, pretrained="imagenet+background")
    assert torch.equal(full.last_linear.weight, sd["last_linear.weight"])


def test_pretrained_errors(hub):
    with pytest.raises(WeightsError) as e:
        _zoo.nasnetalarge()
    assert "nasnetalarge-a1897284.pth" in str(e.value) and "data.lip6.fr/cadene" in str(e.value)
    with pytest.raises(ValueError, match="1000 classes, not 10"):
        _zoo.nasnetalarge(num_classes=10)
    with pytest.raises(ValueError, match="imagenet"):
        _zoo.nasnetalarge(pretrained="places")
    torch.save({"conv0.conv.weight": torch.zeros(96, 3, 3, 3)}, hub / "nasnetalarge-a1897284.pth")
    with pytest.raises(WeightsError, match="nasnetalarge-a1897284.pth.*does not fit"):
        _zoo.nasnetalarge()
    assert _zoo.nasnetalarge(num_classes=10, pretrained=None).last_linear.out_features == 10
