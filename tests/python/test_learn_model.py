"""`learn.model` is a torch module in fastai 0.7's layout whose tensors are the Rust model's own:
checked against torchvision's ResNet and the test's own EfficientNet-Lite0, against the file
`learn.save` writes, and against the Rust forward (`predict_array`)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import effnet_reference as ref
from fastai.conv_learner import ConvLearner, efficientnet_lite0, resnet18, resnet34
from fastai.core import children
from fastai.dataset import ImageClassifierData
from fastai.layers import AdaptiveConcatPool2d, Flatten
from fastai.transforms import tfms_from_model
from test_learner import write_images

SZ = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    write_images(root)
    return root


def make(folder, arch=resnet18, **kw):
    kw.setdefault("pretrained", False)
    data = ImageClassifierData.from_paths(str(folder), bs=4, tfms=tfms_from_model(arch, SZ), num_workers=1, seed=0)
    return ConvLearner.pretrained(arch, data, **kw)


def batch(n=3, seed=0, sz=SZ):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, sz, sz, generator=g)


def forward(learn, x):
    with torch.no_grad():
        return learn.model.eval()(x)


def assert_same_as_rust(learn, x):
    np.testing.assert_allclose(forward(learn, x).numpy(), learn.predict_array(x.numpy()), rtol=1e-5, atol=1e-5)


def torchvision_keys(arch):
    """torchvision's state-dict keys renamed as fastai 0.7's Sequential numbered the children."""
    number = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
    out = []
    for k in getattr(torchvision.models, arch)(weights=None).state_dict():
        first, rest = k.split(".", 1)
        if first in number and not rest.endswith("num_batches_tracked"):
            out.append(f"{number[first]}.{rest}")
    return out


def test_resnet34_is_fastai_07s_sequential(folder):
    learn = make(folder, resnet34)
    m = learn.model
    assert isinstance(m, nn.Sequential) and learn.models.model is m
    kinds = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d] + [nn.Sequential] * 4 + [
        AdaptiveConcatPool2d, Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d,
        nn.Dropout, nn.Linear, nn.LogSoftmax]
    assert len(children(m)) == 18
    assert all(isinstance(c, k) for c, k in zip(children(m), kinds))
    assert [type(c).__name__ for c in children(m)] == [k.__name__ for k in kinds]
    assert [len(m[i]) for i in range(4, 8)] == [3, 4, 6, 3]
    head = {f"{i}.{p}" for i in (10, 14) for p in ("weight", "bias", "running_mean", "running_var")}
    head |= {f"{i}.{p}" for i in (12, 16) for p in ("weight", "bias")}
    assert list(m.state_dict()) == torchvision_keys("resnet34") + [k for k in m.state_dict() if k in head]
    assert set(m.state_dict()) - set(torchvision_keys("resnet34")) == head
    assert m[12].weight.shape == (512, 1024) and m[16].weight.shape == (2, 512)
    assert m[11].p == 0.25 and m[15].p == 0.5
    assert repr(learn) == repr(m)


def test_head_without_dropout_and_xtra_cut(folder):
    learn = make(folder, ps=0, xtra_fc=[], xtra_cut=1)
    m = learn.model
    # resnet18 without layer4: 7 body children, pool, flatten, BatchNorm1d(512), Linear, LogSoftmax.
    assert [type(c).__name__ for c in children(m)][7:] == ["AdaptiveConcatPool2d", "Flatten", "BatchNorm1d",
                                                            "Linear", "LogSoftmax"]
    assert m[9].num_features == 2 * 256 and m[10].weight.shape == (2, 512)
    assert_same_as_rust(learn, batch())


def test_efficientnet_layout_and_forward_against_the_reference(folder):
    learn = make(folder, efficientnet_lite0)
    m = learn.model
    assert [type(c).__name__ for c in children(m)][:7] == ["Conv2dSame", "BatchNorm2d", "ReLU6", "Sequential",
                                                           "Conv2dSame", "BatchNorm2d", "ReLU6"]
    assert len(m[3]) == 16 and len(m) == 7 + 10
    assert m[1].eps == 1e-3 and m[1].momentum == 0.01
    sd = m.state_dict()
    assert "_blocks.15._project_conv.weight" in sd and "15.bias" in sd and "_fc.weight" not in sd
    # Give the BatchNorm layers non-trivial statistics, so the test can tell layers apart.
    with torch.no_grad():
        for k, t in sd.items():
            if k.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif k.endswith("running_mean"):
                t.uniform_(-0.2, 0.2)
    reference = ref.EfficientNetLite0().eval()
    missing, unexpected = reference.load_state_dict({k: v for k, v in m.state_dict().items() if k.startswith("_")},
                                                    strict=False)
    assert set(missing) == {"_fc.weight", "_fc.bias"} and unexpected == []
    for sz in (32, 37):  # even and odd sizes pad differently
        x = batch(2, sz=sz)
        with torch.no_grad():
            torch.testing.assert_close(m.eval()[:7](x), reference.features(x), rtol=1e-5, atol=1e-5)
        assert_same_as_rust(learn, x)


def test_state_dict_is_what_save_writes(folder):
    learn = make(folder)
    learn.fit(1e-2, 1)  # running statistics and weights away from their initial values
    learn.save("m")
    saved = torch.load(learn.get_model_path("m"), weights_only=True)
    sd = learn.model.state_dict()
    assert list(sd) == list(saved)
    for k, v in saved.items():
        assert torch.equal(sd[k], v), k
    # The saved file loads back strictly into the module, also with the BatchNorm counters a
    # module of torch's own layers would have written.
    learn.model.load_state_dict(saved)
    counted = dict(saved, **{k.replace("running_mean", "num_batches_tracked"): torch.tensor(3)
                             for k in saved if k.endswith("running_mean")})
    learn.model.load_state_dict(counted)
    with pytest.raises(RuntimeError, match="Missing key"):
        learn.model.load_state_dict({k: v for k, v in saved.items() if k != "16.bias"})


def test_forward_equals_the_rust_forward_and_torchvision(folder, hub):
    learn = make(folder, pretrained=True)
    x = batch()
    assert_same_as_rust(learn, x)
    tv = torchvision.models.resnet18()
    tv.load_state_dict(torch.load(hub / "hub" / "checkpoints" / "resnet18-f37072fd.pth", weights_only=True))
    body = nn.Sequential(*list(tv.children())[:8]).eval()
    with torch.no_grad():
        torch.testing.assert_close(learn.model.eval()[:8](x), body(x), rtol=1e-5, atol=1e-5)


def test_no_copies_either_way(folder):
    learn = make(folder)
    m = learn.model
    live = dict(learn._native.live_tensors())
    held = m.state_dict(keep_vars=True)
    assert list(held) == list(live) and all(held[k] is live[k] for k in live)
    assert all(isinstance(p, nn.Parameter) for p in m.parameters())
    x = batch()
    before = learn.predict_array(x.numpy())
    with torch.no_grad():
        m[-2].bias[0] += 1.0  # raises class 0's logit: log-softmax shifts by a known amount
    after = learn.predict_array(x.numpy())
    z = before.astype(np.float64)
    z[:, 0] += 1.0
    expect = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(after, expect, rtol=1e-5, atol=1e-5)

    # load_state_dict through the module lands in the Rust store.
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["16.weight"].zero_()
    sd["16.bias"].copy_(torch.tensor([0.5, -0.5]))
    m.load_state_dict(sd)
    p = np.exp(learn.predict_array(x.numpy()))
    np.testing.assert_allclose(p, np.tile(np.exp([0.5, -0.5]) / np.exp([0.5, -0.5]).sum(), (3, 1)), rtol=1e-5)

    # A Rust training step moves the module's own parameters; learn.load is seen too.
    learn.save("start")
    w = m[-2].weight
    w0 = w.detach().clone()
    learn.fit(1e-1, 1)
    assert m[-2].weight is w and not torch.equal(w, w0)
    assert torch.equal(dict(learn._native.state_dict())["16.weight"], w.detach())
    learn.load("start")
    assert torch.equal(m[-2].weight.detach(), w0)
    assert_same_as_rust(learn, x)


def test_forward_hook_and_modes(folder):
    learn = make(folder)
    m = learn.model
    got = []
    h = m[-4].register_forward_hook(lambda mod, i, o: got.append(o.detach().clone()))
    try:
        out = forward(learn, batch(2))
    finally:
        h.remove()
    assert isinstance(m[-4], nn.BatchNorm1d) and got[0].shape == (2, 512) and out.shape == (2, 2)

    m.train()
    assert all(sub.training for sub in m.modules())
    # A forward in training mode updates the running statistics, which are the Rust buffers.
    rm0 = dict(learn._native.state_dict())["1.running_mean"]
    with torch.no_grad():
        m(batch(4, seed=1))
    rm1 = dict(learn._native.state_dict())["1.running_mean"]
    assert not torch.equal(rm0, rm1) and torch.equal(rm1, m[1].running_mean)
    m.eval()
    assert not any(sub.training for sub in m.modules())
    assert_same_as_rust(learn, batch())


def test_trainable_flags_follow_freezing(folder):
    learn = make(folder)
    m = learn.model

    def flags():
        return [m[i].trainable for i in range(len(m))]

    def requires_grad(i):
        return {p.requires_grad for p in m[i].parameters()}

    # Constructed frozen: only the head (children 10..17) trains.
    assert flags() == [False] * 10 + [True] * 8
    assert requires_grad(0) == {False} and requires_grad(-2) == {True}
    assert m[4][0].conv1.trainable is False and m[4][0].relu.trainable is False
    learn.freeze_to(1)  # layer3, layer4, pool and flatten join the head
    assert flags() == [False] * 6 + [True] * 12
    assert m[6][1].bn2.trainable and requires_grad(6) == {True} and requires_grad(5) == {False}
    learn.unfreeze()
    assert all(flags()) and all(sub.trainable for sub in m.modules() if sub is not m)
    learn.freeze()
    assert m[0].trainable is False and m[-1].trainable is True
    learn.freeze_all_but(1)
    assert flags() == [False] * 6 + [True] * 4 + [False] * 8


def test_efficientnet_trainable_flags_split_the_blocks(folder):
    learn = make(folder, efficientnet_lite0)
    learn.freeze_to(1)
    m = learn.model
    # Group 1 starts at block 8 (the layer groups of the Rust table).
    assert [b.trainable for b in m[3]] == [False] * 8 + [True] * 8
    assert m[3].trainable and not m[0].trainable and m[4].trainable and m[-1].trainable
    groups = learn.models.get_layer_groups()
    assert m[3] in groups[0] and m[3] in groups[1] and groups[2] is learn.models.fc_model


def test_custom_head_is_the_child_after_the_body(folder):
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(512, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 2), nn.LogSoftmax(dim=1))
    learn = make(folder, custom_head=head)
    m = learn.model
    assert len(m) == 9 and m[8] is head and m[learn.cut] is head
    assert head[0].trainable and head[2].trainable and not m[0].trainable
    assert "8.0.weight" in m.state_dict()
    assert_same_as_rust(learn, batch())


def test_precompute_model_is_the_fc_part(folder):
    learn = make(folder, precompute=True)
    fc, full = learn.model, learn.models.model
    assert fc is learn.models.fc_model and fc is not full
    assert isinstance(fc[0], nn.BatchNorm1d) and fc[0].num_features == learn.nf == 1024
    assert len(fc) == 8 and all(a is b for a, b in zip(fc, list(full)[10:]))
    assert fc.trainable
    acts = learn._acts["val"][:3]
    with torch.no_grad():
        np.testing.assert_allclose(fc.eval()(acts).numpy(), learn.predict_array(acts.numpy()), rtol=1e-5, atol=1e-5)
    learn.precompute = False
    assert learn.model is full


def test_multi_label_and_regression_heads_end_as_0_7s(tmp_path):
    from test_crit_metrics_callbacks import csv_data
    tags = ["sky water", "sky", "tree water sky", "tree", "water", "sky tree", "tree", "sky water", "water tree"]
    multi = csv_data(tmp_path / "m", [(f"m{i}", t) for i, t in enumerate(tags)])
    reg = csv_data(tmp_path / "r", [(f"r{i}", str(0.5 * i - 1)) for i in range(9)], continuous=True)
    for data, last, width in ((multi, "Sigmoid", 3), (reg, "Linear", 1)):
        learn = ConvLearner.pretrained(resnet18, data, pretrained=False)
        m = learn.model
        assert type(m[-1]).__name__ == last and len(m) == (18 if last == "Sigmoid" else 17)
        x = batch(2)
        assert forward(learn, x).shape == (2, width)
        assert_same_as_rust(learn, x)


def test_a_users_requires_grad_on_one_layer_is_honoured_by_the_next_fit(folder):
    """Lesson 7 freezes layers by hand: `requires_grad_(False)` on one child of `learn.model`
    keeps its weights and its BatchNorm statistics (a frozen BatchNorm runs on its running
    statistics, as 0.7's training mode put non-trainable BatchNorm in eval mode) through the
    next fit, while the rest of the unfrozen network trains."""
    learn = make(folder)
    learn.unfreeze()
    m = learn.model
    m[4].requires_grad_(False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    learn.fit(0.05, 1)
    after = m.state_dict()
    for k in before:
        if k.startswith("4."):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["5.0.conv1.weight"], after["5.0.conv1.weight"])
    assert not torch.equal(before["5.0.bn1.running_mean"], after["5.0.bn1.running_mean"])
