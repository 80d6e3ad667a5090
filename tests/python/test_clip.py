"""`Learner(clip=...)`: fastai 0.7 clipped the trainable parameters' gradient norm before each
optimiser step (`nn.utils.clip_grad_norm(trainable_params_(self.m), self.clip)`). Checked against
a PyTorch copy of the model trained with `torch.nn.utils.clip_grad_norm_` and `torch.optim`, on
the same batches, in both training paths (precomputed rows, images)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from fastai import _native

NF, BS = 1024, 16  # resnet18's pooled width


def reference_head(c):
    """fastai 0.7's head without dropout, as PyTorch layers (keys 10.. of the flat model)."""
    return [nn.BatchNorm1d(NF), nn.Linear(NF, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Linear(512, c),
            nn.LogSoftmax(dim=1)]


class ConcatPool(nn.Module):
    def forward(self, x):
        return torch.cat([torch.amax(x, (2, 3), keepdim=True), x.mean((2, 3), keepdim=True)], 1)


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def batches(n, seed, epoch):
    order = _native.epoch_order(n, seed, epoch)
    assert sorted(order) == list(range(n))
    return [torch.tensor(order[s:s + BS]) for s in range(0, n, BS)]


def ours(x, y, precompute, clip, opt, epochs, lr=0.05, wd=1e-3, unfreeze=False):
    """A fresh resnet18 learner (same seed, same initial weights) trained on rows or images.
    fused_head is asked for: with clip set the learner must leave the hand-written head step."""
    torch.manual_seed(3)
    learn = _native.Learner("resnet18", 2, ps=[0.0])
    if unfreeze:
        learn.freeze_to(0)
    start = dict(learn.state_dict())
    learn.begin_fit(lrs=[lr] * 3, wds=[wd] * 3, schedule=_native.Schedule.constant(), precompute=precompute,
                    stop_on_divergence=False, fused_head=True, opt=opt, clip=clip)
    for e in range(epochs):
        learn.train_epoch_tensors(x, y, BS, 42, e)
    learn.end_fit()
    return start, dict(learn.state_dict())


def theirs(model, params, x, y, clip, make_opt, epochs, body_eval):
    """The same fit in PyTorch: backward, clip_grad_norm_ over the trainable parameters, step.
    Returns the gradient norms seen before clipping."""
    opt = make_opt(params)
    norms = []
    for e in range(epochs):
        for idx in batches(len(x), 42, e):
            model.train()
            if body_eval:
                model[:8].eval()
            loss = nn.functional.nll_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
            opt.step()
    return norms


OPTS = {
    "sgd": (_native.Optimizer.sgd(momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    "adam": (_native.Optimizer.adam(beta1=0.9, beta2=0.99, eps=1e-8), lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-8,
                                                                   weight_decay=1e-3)),
}


def assert_close(got, want, keys, rtol, atol):
    for k in keys:
        torch.testing.assert_close(got[k], want[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_clip_on_precomputed_rows_matches_clip_grad_norm(opt):
    """The head trained on in-memory rows (precompute), 3 batches an epoch for 2 epochs."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, NF, generator=g) * 2 + 0.5, torch.randint(0, 2, (48,), generator=g)
    clip = 0.2
    native_opt, make_opt = OPTS[opt]
    start, got = ours(x, y, True, clip, native_opt, epochs=2)
    head = nn.Sequential(*reference_head(2))
    head.load_state_dict({f"{int(k.split('.')[0]) - 10}.{k.split('.', 1)[1]}": v.clone()
                          for k, v in start.items() if int(k.split(".")[0]) >= 10})
    norms = theirs(head, list(head.parameters()), x, y, clip, make_opt, epochs=2, body_eval=False)
    assert min(norms) > 2 * clip  # every step was clipped, by a lot
    want = {f"{int(k.split('.')[0]) + 10}.{k.split('.', 1)[1]}": v for k, v in head.state_dict().items()
            if not k.endswith("num_batches_tracked")}
    assert_close(got, want, want, rtol=1e-4, atol=1e-5)
    # Without clipping the same fit ends elsewhere: the comparison above can fail.
    _, unclipped = ours(x, y, True, None, native_opt, epochs=2)
    assert max(float((unclipped[k] - got[k]).abs().max()) for k in want) > 1e-3


def test_clip_on_images_matches_clip_grad_norm_over_every_trainable_layer():
    """The whole unfrozen network on image batches: the norm is over all three groups."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 2, (32,), generator=g)
    clip = 0.5
    native_opt, make_opt = OPTS["sgd"]
    start, got = ours(x, y, False, clip, native_opt, epochs=1, lr=0.01, unfreeze=True)
    tv = torchvision.models.resnet18(weights=None)
    model = nn.Sequential(*list(tv.children())[:8], ConcatPool(), Flat(), *reference_head(2))
    missing, unexpected = model.load_state_dict({k: v.clone() for k, v in start.items()}, strict=False)
    assert [k for k in missing if not k.endswith("num_batches_tracked")] == [] and unexpected == []
    make = lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=1e-3)  # noqa: E731
    norms = theirs(model, list(model.parameters()), x, y, clip, make, epochs=1, body_eval=False)
    assert min(norms) > 2 * clip
    want = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert_close(got, want, want, rtol=1e-3, atol=1e-5)
    _, unclipped = ours(x, y, False, None, native_opt, epochs=1, lr=0.01, unfreeze=True)
    assert max(float((unclipped[k] - got[k]).abs().max()) for k in want) > 1e-3


def test_learner_clip_reaches_every_fit_and_is_checked(hub, tmp_path):
    """`ConvLearner.pretrained(..., clip=c)` and `learn.clip = c`: a tiny clip leaves the head
    where it was (the gradients are scaled to norm 1e-9 and there is no weight decay), also with
    precompute on the CPU, where the hand-written head step would otherwise ignore it."""
    from PIL import Image
    from fastai.conv_learner import ConvLearner, resnet18
    from fastai.dataset import ImageClassifierData
    from fastai.transforms import tfms_from_model
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for c in ("cats", "dogs"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    data = ImageClassifierData.from_paths(str(tmp_path), bs=4, tfms=tfms_from_model(resnet18, 32), num_workers=1)

    def head(learn):
        return {k: v.clone() for k, v in learn._native.state_dict() if int(k.split(".")[0]) >= learn._native.head_start}

    for precompute in (True, False):
        learn = ConvLearner.pretrained(resnet18, data, precompute=precompute, clip=1e-9)
        assert learn.clip == 1e-9
        before = head(learn)
        learn.fit(1e-2, 1)
        after = head(learn)
        assert max(float((after[k] - before[k]).abs().max()) for k in before if "running" not in k) < 1e-7
        learn.clip = None
        learn.fit(1e-2, 1)
        moved = head(learn)
        assert max(float((moved[k] - after[k]).abs().max()) for k in before if "running" not in k) > 1e-4
    learn.clip = 0  # fastai 0.7 tested `if self.clip:`: 0 is off
    for bad in (-1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="clip"):
            learn.clip = bad
        with pytest.raises(ValueError, match="clip"):
            ConvLearner.pretrained(resnet18, data, clip=bad)
