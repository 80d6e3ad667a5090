"""fastai 0.7's model zoo (`fastai._zoo` through `fastai.torch_imports` / `fastai.conv_learner`)
and the `fastai.models` package.

References are torchvision's own models (outputs compared layer for layer), torchvision's
parameter counts for the same architectures, and hand-computed counts and layouts. Nothing is
downloaded: pretrained files are written by the tests into a temporary torch hub cache or
package weights folder."""
import re

import pytest
import torch
import torch.nn as nn
import torchvision

from fastai import _zoo
from fastai.exceptions import WeightsError

torch.set_num_threads(2)


def _last_bn_width(m):
    bns = [x for x in m.modules() if isinstance(x, (nn.BatchNorm1d, nn.BatchNorm2d))]
    return bns[-1].num_features


def _perturbed(sd, seed):
    """The state dict `sd` with every float tensor replaced by random values (variances kept
    positive), so that equal outputs mean the weights really went to the same places."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.1
    return out


def _copy_in_order(src, dst):
    """Load `src`'s state into `dst` entry by entry in registration order (shapes must match):
    for two layouts of one architecture that register their tensors in the same order."""
    s = [(k, v) for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")]
    d = [k for k in dst.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(s) == len(d)
    new = {}
    for (sk, sv), dk in zip(s, d):
        assert dst.state_dict()[dk].shape == sv.shape, (sk, dk)
        new[dk] = sv
    dst.load_state_dict(new, strict=False)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp; downloads go to a closed port."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FASTAI_WEIGHTS_URL", "http://127.0.0.1:9/models/")
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


# --- torchvision-based entries ----------------------------------------------------------------

@pytest.mark.parametrize("f, tv_name, n_children, nf", [
    (_zoo.dn121, "densenet121", 12, 1024), (_zoo.dn169, "densenet169", 12, 1664),    (_zoo.dn161, "densenet161", 12, 2208)])
def test_densenet_body_equals_torchvision_features(f, tv_name, n_children, nf):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, tv_name)(weights=None)
    ref.load_state_dict(_perturbed(ref.state_dict(), 1))
    ref.eval()
    body = f(False).eval()
    body.load_state_dict(ref.features.state_dict())
    kids = list(body.children())
    assert len(kids) == n_children
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # torchvision's features end with norm5; its forward adds the final ReLU, 0.7's body not.
        assert torch.allclose(body(x), ref.features(x), atol=1e-5)
    assert _zoo.num_features(body) == nf == _last_bn_width(ref.features)
    # layer groups: lr_cut 7 puts conv0..denseblock2 first, transition2..norm5 second
    cut, lr_cut = _zoo.zoo_meta()[f]
    assert (cut, lr_cut) == (0, 7)
    names = [n for n, _ in body.named_children()]
    assert names[:lr_cut] == ["conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2"]
    assert names[lr_cut:] == ["transition2", "denseblock3", "transition3", "denseblock4", "norm5"]


@pytest.mark.parametrize("f, tv_name, n_layers", [(_zoo.vgg16, "vgg16_bn", 44), (_zoo.vgg19, "vgg19_bn", 53)])
def test_vgg_body_equals_torchvision_features(f, tv_name, n_layers):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, tv_name)(weights=None).features
    ref.load_state_dict(_perturbed(ref.state_dict(), 2))
    ref.eval()
    body = f(False).eval()
    body.load_state_dict(ref.state_dict())
    kids = list(body.children())
    assert len(kids) == n_layers and isinstance(kids[-1], nn.MaxPool2d)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(body(x), ref(x), atol=1e-5)
    cut, lr_cut = _zoo.zoo_meta()[f]
    assert (cut, lr_cut) == (0, 22)
    # the split falls between block 3's third BN and its ReLU
    assert isinstance(kids[lr_cut - 1], nn.BatchNorm2d) and isinstance(kids[lr_cut], nn.ReLU)
    assert _zoo.num_features(body) == 512 == _last_bn_width(ref)


def _old_densenet_keys(sd):
    # torchvision's published DenseNet files spell `norm1` as `norm.1` (pre-2018 module names).
    return {re.sub(r"(denselayer\d+\.)(norm|relu|conv)([12])\.", r"\1\2.\3.", k): v for k, v in sd.items()}


def test_dn121_pretrained_comes_from_the_hub_cache_with_old_key_names(hub):
    torch.manual_seed(0)
    ref = torchvision.models.densenet121(weights=None)
    sd = _perturbed(ref.state_dict(), 3)
    ref.load_state_dict(sd)
    old = _old_densenet_keys(sd)
    assert any(".norm.1." in k for k in old)
    torch.save(old, hub / "densenet121-a639ec97.pth")
    body = _zoo.dn121(True).eval()
    for k, v in ref.features.state_dict().items():
        assert torch.equal(body.state_dict()[k], v), k


def test_torchvision_weights_missing_and_no_network(hub):
    with pytest.raises(WeightsError, match="vgg16_bn-6c64b313.pth"):
        _zoo.vgg16(True)


# --- the converted fast.ai networks -------------------------------------------------------------

@pytest.mark.parametrize("f, tv_name, key, shape", [
    (_zoo.resnext50, "resnext50_32x4d", "4.0.0.0.0.0.weight", (128, 64, 1, 1)),
    (_zoo.wrn, "wide_resnet50_2", "4.0.0.0.0.weight", (128, 64, 1, 1))])
def test_converted_body_equals_torchvision(f, tv_name, key, shape):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, tv_name)(weights=None)
    ref.load_state_dict(_perturbed(ref.state_dict(), 4))
    ref.eval()
    m = f(False).eval()
    sd = m.state_dict()
    # fast.ai's files: the stem, 4 stages, pool, view, then the Linear inside a Sequential
    assert tuple(sd[key].shape) == shape
    assert tuple(sd["10.1.weight"].shape) == (1000, 2048)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
    _copy_in_order(ref, m)
    cut, lr_cut = _zoo.zoo_meta()[f]
    assert (cut, lr_cut) == (8, 6)
    body = nn.Sequential(*_zoo.cut_model(m, cut))
    ref_body = nn.Sequential(*list(ref.children())[:8])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(body(x), ref_body(x), atol=1e-4)
    assert _zoo.num_features(body) == 2048
    # groups: [conv .. stage2], [stage3, stage4]
    assert len(list(m.children())[:lr_cut]) == 6


def test_resnext101_parameter_counts_match_torchvision():
    for f, name in [(_zoo.resnext101, "resnext101_32x8d"), (_zoo.resnext101_64, "resnext101_64x4d")]:
        m = f(False)
        n = sum(p.numel() for p in m.parameters())
        if name == "resnext101_64x4d":
            assert n == sum(p.numel() for p in torchvision.models.resnext101_64x4d(weights=None).parameters())
        else:  # 32x4d has half the width of torchvision's 32x8d: hand-computed count
            assert n == 44_177_704
        assert _zoo.num_features(m) == 2048


@pytest.mark.parametrize("f, fn", [(_zoo.resnext50, "resnext_50_32x4d"), (_zoo.resnext101, "resnext_101_32x4d"),
                                   (_zoo.resnext101_64, "resnext_101_64x4d"), (_zoo.wrn, "wrn_50_2f"),
                                   (_zoo.inceptionresnet_2, "inceptionresnetv2-d579a627")])
def test_missing_fastai_weight_file_names_file_and_folder(f, fn, tmp_path, monkeypatch):
    monkeypatch.setattr(_zoo, "WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(FileNotFoundError) as e:
        f(True)
    msg = str(e.value)
    assert f"{fn}.pth" in msg and str(tmp_path / "weights") in msg and "weights.tgz" in msg


def test_fastai_weight_file_loads_key_for_key(tmp_path, monkeypatch):
    monkeypatch.setattr(_zoo, "WEIGHTS_DIR", str(tmp_path))
    torch.manual_seed(0)
    src = _zoo.wrn(False)
    sd = _perturbed(src.state_dict(), 5)
    torch.save(sd, tmp_path / "wrn_50_2f.pth")
    m = _zoo.wrn(True)
    for k, v in sd.items():
        assert torch.equal(m.state_dict()[k], v), k


# --- Inception ------------------------------------------------------------------------------------

def test_inception_4_layout():
    body = _zoo.inception_4(False)
    kids = list(body.children())
    assert len(kids) == 23 and isinstance(kids[-1], nn.AdaptiveAvgPool2d)
    names = [type(k).__name__ for k in kids]
    assert names[3:6] == ["Mixed_3a", "Mixed_4a", "Mixed_5a"]
    cut, lr_cut = _zoo.zoo_meta()[_zoo.inception_4]
    assert (cut, lr_cut) == (-1, 9)
    assert names[lr_cut - 3:lr_cut] == ["Inception_A"] * 3 and names[lr_cut] == "Inception_A"
    assert names[lr_cut + 1] == "Reduction_A" and names[cut - 1] == "Inception_C"
    # the last BN is a 256-wide branch of the last Inception-C: why model_features holds 3072
    assert _zoo.num_features(body) == 256
    assert _zoo.model_features[_zoo.inception_4] == 3072
    # Cadene's published keys
    sd = body.state_dict()
    assert tuple(sd["0.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["3.conv.conv.weight"].shape) == (96, 64, 3, 3)
    assert tuple(sd["21.branch2_3b.conv.weight"].shape) == (256, 512, 3, 1)
    with torch.no_grad():
        out = nn.Sequential(*_zoo.cut_model(body, cut)).eval()(torch.randn(1, 3, 75, 75))
    assert out.shape[:2] == (1, 1536)


def test_inceptionresnet_2_layout_and_forward():
    m = _zoo.inceptionresnet_2(False).eval()
    names = [n for n, _ in m.named_children()]
    cut, lr_cut = _zoo.zoo_meta()[_zoo.inceptionresnet_2]
    assert (cut, lr_cut) == (-2, 9)
    assert names[lr_cut - 1] == "repeat" and names[lr_cut] == "mixed_6a"
    assert names[cut:] == ["avgpool_1a", "last_linear"]
    assert _zoo.num_features(_zoo.cut_model(m, cut)) == 1536
    assert len(m.repeat) == 10 and len(m.repeat_1) == 20 and len(m.repeat_2) == 9
    with torch.no_grad():
        assert m(torch.randn(1, 3, 75, 75)).shape == (1, 1001)


# --- model_meta, model_features, cut_model, num_features ------------------------------------------

def test_model_meta_answers_for_torchvision_constructors():
    from fastai.conv_learner import model_features, model_meta
    from fastai.torch_imports import dn121, inception_4, resnet34, resnext101_64
    assert model_meta[torchvision.models.resnet34] == [8, 6] == model_meta[resnet34]
    assert torchvision.models.resnet50 in model_meta
    assert model_meta.get(torchvision.models.resnet152) == [8, 6]
    assert torchvision.models.densenet121 not in model_meta  # dn121 is not torchvision's name
    assert model_meta.get(torchvision.models.densenet121) is None
    with pytest.raises(KeyError):
        model_meta[torchvision.models.alexnet]
    assert model_meta[resnext101_64] == [8, 6] and model_meta[dn121] == [0, 7]
    # an entry the user stores under torchvision's constructor wins
    model_meta[torchvision.models.resnet18] = [7, 5]
    try:
        assert model_meta[torchvision.models.resnet18] == [7, 5]
    finally:
        del model_meta[torchvision.models.resnet18]
    assert model_features == {inception_4: 3072, dn121: 2048, _zoo.dn161: 4416}


def test_cut_model_and_num_features_on_torchvision_resnet34():
    m = torchvision.models.resnet34(weights=None)
    kids = list(m.children())
    assert _zoo.cut_model(m, 0) == [m]
    assert _zoo.cut_model(m, 8) == kids[:8]
    assert _zoo.cut_model(m, -2) == kids[:-2]
    assert _zoo.num_features(m) == 512 == _last_bn_width(m)
    assert _zoo.num_features(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) is None
    # a child carrying num_features is taken before looking inside later-listed modules' children
    assert _zoo.num_features([nn.BatchNorm2d(3), nn.Sequential(nn.BatchNorm2d(5), nn.ReLU())]) == 5


# --- fastai.models ---------------------------------------------------------------------------------

def test_cifar10_wrn_22_shape_and_parameter_count():
    from fastai.models.cifar10.wideresnet import WideResNet, wrn_22
    m = wrn_22()
    assert isinstance(m, WideResNet)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # widths 16 | 96, 192, 384; each block: BN(ni), 3x3 ni->nf, BN(nf), 3x3 nf->nf, 1x1 ni->nf if ni != nf
    def block(ni, nf):
        return 2 * ni + 9 * ni * nf + 2 * nf + 9 * nf * nf + (ni * nf if ni != nf else 0)
    n = 27 * 16
    for ni, nf in [(16, 96), (96, 192), (192, 384)]:
        n += block(ni, nf) + 2 * block(nf, nf)
    n += 2 * 384 + 384 * 10 + 10
    assert n == 9_658_458
    assert sum(p.numel() for p in m.parameters()) == n


def test_other_models_build_and_run():
    from fastai.models.cifar10.preact_resnet import PreActResNet18
    from fastai.models.cifar10.resnext import resnext29_8_64
    from fastai.models.darknet import Darknet, darknet_53
    from fastai.models.resnet import vgg_resnet50
    from fastai.models.unet import DynamicUnet, UnetBlock
    x = torch.randn(2, 3, 32, 32)
    assert PreActResNet18()(x).shape == (2, 10)
    out = resnext29_8_64().eval()(x)
    assert out.shape == (2, 10) and torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-5)
    d = darknet_53(num_classes=10)
    # the strided convs have no padding (as in 0.7), so 32-pixel inputs shrink to nothing
    assert isinstance(d, Darknet) and d(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert sum(p.numel() for p in darknet_53().parameters()) == 41_609_928
    assert vgg_resnet50().eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    enc = nn.Sequential(*_zoo.cut_model(torchvision.models.resnet18(weights=None), 8))
    u = DynamicUnet(enc, n_classes=2)
    assert u(torch.randn(2, 3, 64, 64)).shape == (2, 2, 64, 64)
    assert all(isinstance(b, UnetBlock) for b in u.upmodel)


def test_vgg_resnet50_pretrained_without_file(tmp_path, monkeypatch):
    from fastai.models.resnet import vgg_resnet50
    monkeypatch.setattr(_zoo, "WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vgg_resnet50.pth"):
        vgg_resnet50(pretrained=True)


def test_star_imports_give_the_zoo():
    ns = {}
    exec("from fastai.conv_learner import *", ns)
    for name in ["resnext50", "resnext101", "resnext101_64", "wrn", "inception_4", "inceptionresnet_2",
                 "dn121", "dn161", "dn169", "dn201", "vgg16", "vgg19", "nasnetalarge", "model_meta",
                 "model_features", "cut_model", "num_features", "resnet34"]:
        assert name in ns, name
    assert isinstance(ns["resnext50"](False), nn.Module)
    from fastai.conv_learner import resnext101_64  # noqa: F401  (0.7 notebooks import it by name)
    # nasnetalarge itself is tested in test_nasnet.py
    assert ns["nasnetalarge"] is _zoo.nasnetalarge
