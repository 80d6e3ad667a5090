"""A user's torch module trained by the Rust loop: `Learner(data, models)`,
`ConvLearner.from_model_data`, `ConvLearner(data, models)`, `ConvnetBuilder` and
`ConvLearner.pretrained(f)` with a backbone function the core does not build.

References: a hand-written torch.optim loop over the same module and batches (parity),
fastai 0.7's freezing rules written out by hand (spec 4.9), the builder's layout per spec 4.4,
`torch.load` of the saved file against the module's own `state_dict()`."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastai.conv_learner import ConvLearner, ConvnetBuilder, model_meta, resnet18
from fastai.core import BasicModel, SingleModel, children
from fastai.dataset import ImageClassifierData
from fastai.layers import AdaptiveConcatPool2d, Flatten
from fastai.learner import Learner
from fastai.transforms import tfms_from_model, tfms_from_stats
from fastai._archs import imagenet_stats

from test_learner import write_images  # two colour-coded classes, 16 train / 8 valid images

SZ = 32


@pytest.fixture
def folder(tmp_path):
    write_images(tmp_path)
    return tmp_path


def data_of(folder, bs=6, aug_tfms=None):
    """16 training images in batches of 6 (6, 6, 4 per epoch), 8 validation images."""
    tfms = tfms_from_stats(imagenet_stats, SZ, aug_tfms=aug_tfms)
    return ImageClassifierData.from_paths(str(folder), bs=bs, tfms=tfms, num_workers=1, seed=0)


def small_net(c=2, log_softmax=True):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
              nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(16, c)]
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


class Recorder:
    """A loss equal to F.nll_loss that keeps the batches it saw (inputs come from a forward
    pre-hook on the module), so a torch loop can replay them."""

    def __init__(self, model):
        self.xs, self.ys = [], []
        self._h = model.register_forward_pre_hook(lambda m, inp: self.xs.append(inp[0].detach().clone())
                                                  if m.training else None)

    def __call__(self, out, y):
        if out.requires_grad:  # training batches (the validation loss uses it too)
            self.ys.append(y.clone())
        return F.nll_loss(out, y)


def test_from_model_data_steps_equal_a_torch_optim_loop(folder):
    """Three steps (one epoch) through the Rust loop equal torch.optim.SGD(momentum=0.9, weight
    decay) over the same module and batches: weights and BatchNorm statistics."""
    m = small_net()
    ref = copy.deepcopy(m)
    data = data_of(folder)
    learn = ConvLearner.from_model_data(m, data)
    rec = Recorder(m)
    learn.crit = rec
    lr, wd = 0.05, 1e-3
    learn.fit(lr, 1, wds=wd)
    assert len(rec.xs) == len(rec.ys) == 3
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    ref.train()
    for x, y in zip(rec.xs, rec.ys):
        loss = F.nll_loss(ref(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    got, want = m.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), atol=1e-5, rtol=1e-4), k
    # The user's own module object is what trained (0.7 updated it in place).
    assert learn.model is m


def test_adam_and_differential_rates_follow_torch_optim(folder):
    """BasicModel's groups are the module's children: one learning rate per child, Adam."""
    m = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), Flatten()),
                      nn.Sequential(nn.Linear(4, 2), nn.LogSoftmax(dim=1)))
    ref = copy.deepcopy(m)
    learn = Learner.from_model_data(m, data_of(folder), opt_fn=torch.optim.Adam)
    assert len(learn.get_layer_groups()) == 2
    rec = Recorder(m)
    learn.crit = rec
    lrs = np.array([1e-3, 1e-2])
    learn.fit(lrs, 1)
    opt = torch.optim.Adam([{"params": ref[0].parameters(), "lr": 1e-3},
                            {"params": ref[1].parameters(), "lr": 1e-2}])
    for x, y in zip(rec.xs, rec.ys):
        loss = F.nll_loss(ref(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (k, a), b in zip(m.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), k


def test_freeze_to_sets_trainable_and_frozen_layers_do_not_move(folder):
    """Spec 4.9: a 12-child Sequential through from_model_data; after freeze_to(-4) the first
    8 children are frozen (requires_grad False, .trainable False), the last 4 train; a step
    leaves the frozen parameters and the frozen BatchNorm's running statistics bit-identical."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), Flatten(), nn.Sequential(nn.Linear(8, 2), nn.LogSoftmax(dim=1)))
    learn = ConvLearner.from_model_data(m, data_of(folder))
    assert all(p.requires_grad for p in m.parameters())
    learn.freeze_to(-4)
    for i, child in enumerate(children(m)):
        assert child.trainable == (i >= 8), i
        for p in child.parameters():
            assert p.requires_grad == (i >= 8), i
    before = {k: v.clone() for k, v in m.state_dict().items()}
    learn.fit(0.1, 1)
    after = m.state_dict()
    for k in before:
        child = int(k.split(".")[0])
        moved = not torch.equal(before[k], after[k])
        if child < 8:
            assert not moved, k  # frozen: weights and BatchNorm 1's / 4's / 7's statistics
    assert not torch.equal(before["11.0.weight"], after["11.0.weight"])
    learn.unfreeze()
    assert all(c.trainable for c in children(m))


def test_bn_freeze_keeps_running_statistics_of_trainable_layers(folder):
    m = small_net()
    learn = ConvLearner.from_model_data(m, data_of(folder))
    learn.bn_freeze(True)
    before = m[1].running_mean.clone()
    learn.fit(0.05, 1)
    assert torch.equal(before, m[1].running_mean)
    assert m[0].weight.grad is not None  # the layer itself trained


def test_save_writes_the_modules_state_dict_and_load_restores_it(folder):
    m = small_net()
    learn = ConvLearner.from_model_data(m, data_of(folder))
    learn.fit(0.05, 1)
    learn.save("mine")
    saved = torch.load(learn.get_model_path("mine"), weights_only=True)
    assert list(saved) == list(m.state_dict())
    for k, v in m.state_dict().items():
        assert torch.equal(saved[k], v), k
    pred = learn.predict()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    assert not np.allclose(learn.predict(), pred)
    learn.load("mine")
    np.testing.assert_allclose(learn.predict(), pred, atol=1e-6)
    # A file of another model names the keys.
    torch.save({"0.weight": torch.zeros(1)}, learn.get_model_path("other"))
    with pytest.raises(Exception, match="missing key"):
        learn.load("other")


def test_predict_equals_the_module_run_by_hand(folder):
    m = small_net()
    data = data_of(folder)
    learn = ConvLearner.from_model_data(m, data)
    learn.fit(0.05, 1)
    preds, targs = learn.predict_with_targs()
    m.eval()
    xs, ys = [], []
    for x, y in data.val_dl:
        xs.append(torch.as_tensor(np.asarray(x)))
        ys.append(np.asarray(y))
    with torch.no_grad():
        want = m(torch.cat(xs)).numpy()
    np.testing.assert_allclose(preds, want, atol=1e-5)
    np.testing.assert_array_equal(targs, np.concatenate(ys))
    np.testing.assert_allclose(learn.predict_array(torch.cat(xs)[:3].numpy()), want[:3], atol=1e-5)
    log_preds, y = learn.TTA(n_aug=2)
    assert log_preds.shape == (3, 8, 2) and y.shape == (8,)


def test_a_forward_that_raises_comes_back_unchanged_with_the_batch(folder):
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.training and self.calls > 2:
                raise KeyError("user bug")
            return F.log_softmax(self.lin(x.mean((2, 3))), 1)

    learn = Learner(data_of(folder), SingleModel(Boom()), crit=F.nll_loss)
    learn.unfreeze()
    with pytest.raises(KeyError, match="user bug") as e:
        learn.fit(0.1, 1)
    assert any("training batch 1" in n and "Boom" in n for n in getattr(e.value, "__notes__", []))


def test_an_output_width_other_than_the_classes_is_an_error_at_construction(folder):
    with pytest.raises(ValueError, match="3 outputs.*2 classes"):
        ConvLearner.from_model_data(small_net(c=3), data_of(folder))


def test_base_learner_with_single_model_and_a_user_loss(folder):
    """`Learner(data, SingleModel(m))`: one layer group, 0.7's default loss (mean squared
    error) replaced by the user's, raw scores out; metrics given by the user."""
    from fastai.metrics import accuracy
    m = small_net(log_softmax=False)
    learn = Learner(data_of(folder), SingleModel(m), crit=F.cross_entropy, metrics=[accuracy])
    learn.unfreeze()
    assert len(learn.get_layer_groups()) == 1
    w = m[-1].weight.clone()
    vals = learn.fit(0.05, 2)
    assert len(vals) == 2 and np.isfinite(vals[0]) and 0 <= vals[1] <= 1
    assert not torch.equal(w, m[-1].weight)
    with pytest.raises(ValueError, match="1 layer group"):
        learn.fit([0.1, 0.2], 1)


def backbone(pre):
    """A toy backbone taking the pretrained flag, as 0.7's builder calls it."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16))


def test_convnet_builder_layout_per_0_7():
    b = ConvnetBuilder(backbone, 3, False, False)
    assert b.nf == 32 and b.name == "backbone_0"
    types = [type(l) for l in children(b.fc_model)]
    assert types == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout,
                     nn.Linear, nn.LogSoftmax]
    assert [l.p for l in children(b.fc_model) if isinstance(l, nn.Dropout)] == [0.25, 0.5]
    # cut 0: the backbone is one child, split into its own children for the groups.
    groups = b.get_layer_groups()
    assert len(groups) == 3 and len(groups[0]) == 0 and len(groups[1]) == 5 + 2
    assert groups[2] is b.fc_model
    assert isinstance(children(b.model)[0], nn.Sequential)
    # A model_meta entry cuts the backbone and splits the groups.
    model_meta[backbone] = [4, 2]
    try:
        b = ConvnetBuilder(backbone, 2, True, False, xtra_fc=[], ps=0.1)
        assert [len(g) for g in b.get_layer_groups()[:2]] == [2, 2 + 2]
        assert [type(l) for l in children(b.fc_model)] == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.Sigmoid]
        assert b.nf == 16  # the cut leaves the 8-channel BatchNorm last
    finally:
        del model_meta[backbone]
    head = nn.Sequential(Flatten(), nn.Linear(16 * SZ * SZ, 4))
    b = ConvnetBuilder(backbone, 0, 0, 0, custom_head=head)
    assert children(b.model)[-1] is head and len(b.get_layer_groups()) == 3
    assert "1.1.weight" in b.model.state_dict()


def test_pretrained_with_a_user_backbone_trains_precomputes_and_predicts(folder):
    data = data_of(folder)
    learn = ConvLearner.pretrained(backbone, data, precompute=True)
    assert isinstance(learn.models, ConvnetBuilder)
    assert learn.model is learn.models.fc_model
    assert len(learn.get_layer_groups()) == 1
    body = {k: v.clone() for k, v in learn.models.top_model.state_dict().items()}
    vals = learn.fit(0.05, 2)
    assert np.isfinite(vals[0])
    for k, v in learn.models.top_model.state_dict().items():
        assert torch.equal(body[k], v), k  # only the head trained
    # The cached rows are the top model's output for the validation images.
    m = learn.models.model
    m.eval()
    xs = torch.cat([torch.as_tensor(np.asarray(x)) for x, _ in data.val_dl])
    with torch.no_grad():
        want = m(xs).numpy()
    np.testing.assert_allclose(learn.predict(), want, atol=1e-5)
    learn.precompute = False
    learn.unfreeze()
    assert len(learn.get_layer_groups()) == 3
    learn.fit(np.array([1e-3, 1e-2, 1e-2]), 1)
    assert not torch.equal(body["0.0.weight"], learn.models.top_model.state_dict()["0.0.weight"])
    learn.save("user_backbone")
    saved = torch.load(learn.get_model_path("user_backbone"), weights_only=True)
    assert list(saved) == list(learn.models.model.state_dict())


def test_convlearner_on_a_users_models_object_freezes_all_but_the_last_group(folder):
    class TwoPart:
        """A U-Net style models object: its own groups, taking the precompute flag."""

        def __init__(self, model):
            self.model = model

        def get_layer_groups(self, precompute):
            c = children(self.model)
            return [c[:4], c[4:8], c[8:]]

    m = small_net()
    learn = ConvLearner(data_of(folder), TwoPart(m))
    assert [p.requires_grad for p in m[0].parameters()] == [False, False]
    assert all(p.requires_grad for p in m[9].parameters())
    learn.fit(0.05, 1)
    learn.unfreeze()
    assert all(p.requires_grad for p in m.parameters())


def test_a_parameter_in_two_groups_is_refused(folder):
    m = small_net()

    class Dup(BasicModel):
        def get_layer_groups(self):
            return [self.model[0], [self.model[0], self.model[9]]]

    with pytest.raises(ValueError, match="layer groups 0 and 1"):
        Learner(data_of(folder), Dup(m))
