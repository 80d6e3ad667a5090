"""The Rust networks against torchvision and a PyTorch copy of fastai 0.7's head."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from fastai import _native
from _shared import clr_reference


def randomise_bn(model, seed=0):
    """Non-trivial BatchNorm statistics, so eval mode (running stats) is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)


def reference_head(nf, c, hidden=(512,), ps=(0.25, 0.5)):
    """fastai 0.7's head per spec 4.4, as PyTorch layers."""
    layers, n_in = [], nf
    for h, p in zip(hidden, ps):
        layers += [nn.BatchNorm1d(n_in)] + ([nn.Dropout(p)] if p else []) + [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers += [nn.BatchNorm1d(n_in)] + ([nn.Dropout(ps[-1])] if ps[-1] else []) + [nn.Linear(n_in, c),
                                                                                  nn.LogSoftmax(dim=1)]
    return layers


class ConcatPool(nn.Module):
    def forward(self, x):
        return torch.cat([torch.amax(x, (2, 3), keepdim=True), x.mean((2, 3), keepdim=True)], 1)


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten(1)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_resnet_matches_torchvision_and_sequential_copy(arch):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(weights=None).eval()
    randomise_bn(tv)
    learner = _native.Learner(arch, 3)
    learner.load_backbone(list(tv.state_dict().items()), "torchvision")
    state = dict(learner.state_dict())

    # The body in the saved state equals torchvision's weights exactly, under fastai's keys.
    body = nn.Sequential(*list(tv.children())[:8])
    for k, v in body.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(state[k], v), k

    # A PyTorch nn.Sequential (torchvision children + head) loaded from that state gives the
    # same outputs as predict_array.
    nf = 2 * (512 if arch in ("resnet18", "resnet34") else 2048)
    seq = nn.Sequential(*list(tv.children())[:8], ConcatPool(), Flat(), *reference_head(nf, 3))
    missing, unexpected = seq.load_state_dict(state, strict=False)
    assert [k for k in missing if not k.endswith("num_batches_tracked")] == [] and unexpected == []
    randomise_bn(seq[10:], seed=1)
    learner.load_state_dict(list(seq.state_dict().items()), "reference")
    seq.eval()
    # A batch of 12 takes the inference path that folds each BatchNorm into its convolution
    # (batches of 8 or more); 4 runs the layers one by one.
    for n in (4, 12):
        x = torch.randn(n, 3, 64, 80)
        with torch.no_grad():
            want = seq(x)
        got = learner.predict_array(x)
        rel = (got - want).abs().max() / want.abs().max()
        assert rel < 1e-5, (n, float(rel))


def test_head_init_follows_spec():
    torch.manual_seed(0)
    learner = _native.Learner("resnet34", 2)
    state = dict(learner.state_dict())
    w1, w2 = state["12.weight"], state["16.weight"]
    assert w1.shape == (512, 1024) and w2.shape == (2, 512)
    # Kaiming normal, fan_in: std sqrt(2/1024) and sqrt(2/512); biases zero; BN gamma 1.
    assert abs(float(w1.std()) - (2 / 1024) ** 0.5) < 0.002
    assert abs(float(w2.std()) - (2 / 512) ** 0.5) < 0.02
    assert float(state["12.bias"].abs().max()) == 0 and float(state["16.bias"].abs().max()) == 0
    assert torch.equal(state["10.weight"], torch.ones(1024))
    assert torch.equal(state["14.running_var"], torch.ones(512))
    n_head = sum(v.numel() for k, v in state.items() if int(k.split(".")[0]) >= 10 and "running" not in k)
    assert n_head == 528_898  # spec 4.4


def test_layer_groups_of_resnet34():
    learner = _native.Learner("resnet34", 2)
    groups = {}
    for key, shape, group, is_param in learner.entries():
        if is_param:
            groups[group] = groups.get(group, 0) + int(np.prod(shape))
    assert groups == {0: 1_347_904, 1: 19_936_768, 2: 528_898}  # spec 4.4


def test_checkpoint_for_another_arch_is_a_clear_error():
    tv = torchvision.models.resnet18(weights=None)
    learner = _native.Learner("resnet34", 2)
    from fastai.exceptions import WeightsError
    with pytest.raises(WeightsError, match="resnet18-ckpt.*missing key"):
        learner.load_backbone(list(tv.state_dict().items()), "resnet18-ckpt")


def _steps_against_torch_optim(schedule, make_opt, set_momentum, native_opt, lr, wd, seed):
    """3 steps of the Rust optimiser `native_opt` on resnet18's head (precomputed activations,
    one batch per epoch) and 3 of `make_opt(params)` on a PyTorch copy of the head, with the
    same learning rates and momentum per step (use_clr cycles both). Returns (ours, theirs,
    initial) head tensors by the PyTorch copy's keys."""
    torch.manual_seed(seed)
    learner = _native.Learner("resnet18", 3, ps=[0.0])
    nf = learner.nf
    x = torch.randn(32, nf)
    y = torch.randint(0, 3, (32,))
    seq = nn.Sequential(*reference_head(nf, 3, ps=(0.0, 0.0)))
    head = {k: v for k, v in learner.state_dict() if int(k.split(".")[0]) >= 10}
    seq.load_state_dict({f"{int(k.split('.')[0]) - 10}.{k.split('.', 1)[1]}": v for k, v in head.items()})
    opt = make_opt(seq.parameters())
    seq.train()
    steps = clr_reference(3, 4, 10.0, 3.0, (0.95, 0.85)) if schedule == "clr" else [(1.0, None)] * 3
    for m, mom in steps:
        for g in opt.param_groups:
            g["lr"] = lr * m
            if mom is not None:
                set_momentum(g, mom)
        opt.zero_grad()
        nn.functional.nll_loss(seq(x), y).backward()
        opt.step()
    native_schedule = (_native.Schedule.clr(cycle=4, div=10.0, cut_div=3.0, moms=(0.95, 0.85)) if schedule == "clr"
                       else _native.Schedule.constant())
    learner.begin_fit(lrs=[lr], wds=[wd], schedule=native_schedule, precompute=True, opt=native_opt)
    for epoch in range(3):  # one batch per epoch: bs = N, so order does not matter
        learner.train_epoch_tensors(x, y, 32, 0, epoch)
    learner.end_fit()
    got = {k: v for k, v in learner.state_dict() if int(k.split(".")[0]) >= 10}
    keys = [k for k in seq.state_dict() if not k.endswith("num_batches_tracked")]
    ours = {k: got[f"{int(k.split('.')[0]) + 10}.{k.split('.', 1)[1]}"] for k in keys}
    initial = {k: head[f"{int(k.split('.')[0]) + 10}.{k.split('.', 1)[1]}"] for k in keys}
    return ours, {k: seq.state_dict()[k] for k in keys}, initial


@pytest.mark.parametrize("schedule", ["constant", "clr"])
def test_adam_matches_torch_optim_adam(schedule):
    """3 steps of our Adam (`opt_fn=optim.Adam`) on the head equal torch.optim.Adam's with L2
    weight decay, also when use_clr cycles the learning rate and β1 (fastai 0.7 cycled Adam's
    β1 as SGD's momentum)."""
    lr, wd, betas, eps = 1e-3, 1e-2, (0.8, 0.99), 1e-6
    ours, theirs, initial = _steps_against_torch_optim(
        schedule, lambda ps: torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd),
        lambda g, mom: g.update(betas=(mom, betas[1])), _native.Optimizer.adam(beta1=betas[0], beta2=betas[1], eps=eps), lr, wd, seed=1)
    for k, v in theirs.items():
        # Adam divides by √v: where a gradient is near zero, its float round-off (the two
        # libtorch graphs sum in other orders) moves the step by up to a few ‰ of lr (1e-3). A
        # wrong rule (bias corrections, β order, decay) moves it by a large part of lr.
        torch.testing.assert_close(ours[k], v, rtol=1e-4, atol=2e-5)
    assert any(not torch.equal(theirs[k], initial[k]) for k in theirs)


@pytest.mark.parametrize("schedule", ["constant", "clr"])
def test_sgd_matches_torch_optim_sgd(schedule):
    """3 steps of our SGD on the head (precomputed activations) equal torch.optim.SGD's, also
    when use_clr cycles the learning rate and the momentum every step."""
    lr, wd = 0.05, 1e-3
    ours, theirs, _ = _steps_against_torch_optim(
        schedule, lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=wd),
        lambda g, mom: g.update(momentum=mom), _native.Optimizer.sgd(momentum=0.9), lr, wd, seed=0)
    for k, v in theirs.items():
        torch.testing.assert_close(ours[k], v, rtol=1e-5, atol=1e-6)
