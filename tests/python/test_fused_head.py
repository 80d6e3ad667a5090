"""The hand-written head step (src/train/fused_head/), which trains fastai's default head
on precomputed activations, against two independent references: the same head trained
through libtorch's autograd (our other path, `fused_head=False`: same dropout masks, so the
results must agree to round-off), and, without dropout, a plain PyTorch `nn.Sequential` with
`torch.optim.SGD`."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from fastai import _native

NF, BS = 1024, 64  # resnet34's pooled width
HEAD_START = 10  # resnet34: 8 body children, then the pool and Flatten


def is_head(key, start=HEAD_START):
    first = key.split(".")[0]
    return first.isdigit() and int(first) >= start


def rows(n, c=2, seed=0, nf=NF):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, nf, generator=g) * 2 + 0.5, torch.randint(0, c, (n,), generator=g)


def train(x, y, fused, epochs=2, lr=1e-2, wd=1e-4, ps=None, c=2, threads=None, stop_after=None, schedule=_native.Schedule.constant(),
          arch="resnet34"):
    """A fresh learner (same seed, so same initial head) trained on rows x, y."""
    torch.manual_seed(5)
    learn = _native.Learner(arch, c, ps=ps)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        learn.begin_fit(lrs=[lr] * 3, wds=[wd] * 3, schedule=schedule, precompute=True,
                        stop_on_divergence=False, fused_head=fused)
        losses = []
        on_batch = None if stop_after is None else (lambda i, loss: i + 1 >= stop_after)
        for e in range(epochs):
            losses.append(learn.train_epoch_tensors(x, y, BS, 42, e, on_batch)[0])
        lrs, smoothed, _, _ = learn.end_fit()
    finally:
        torch.set_num_threads(old)
    head = {k: v.clone() for k, v in learn.state_dict() if is_head(k, learn.head_start)}
    return head, losses, smoothed


def assert_heads_close(a, b, rtol=1e-4, atol=2e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


def test_fused_equals_autograd_with_dropout_weight_decay_and_momentum():
    x, y = rows(1000)  # 16 batches, the last of 40 rows
    fused, loss_f, smooth_f = train(x, y, fused=True)
    ref, loss_r, smooth_r = train(x, y, fused=False)
    assert_heads_close(fused, ref)
    np.testing.assert_allclose(smooth_f, smooth_r, rtol=1e-5)
    np.testing.assert_allclose(loss_f, loss_r, rtol=1e-5)
    # It trained: every tensor of the head moved from its initial value.
    init, _, _ = train(x, y, fused=True, epochs=0)
    for k in init:
        assert not torch.equal(init[k], fused[k]), k


def test_fused_equals_autograd_with_more_classes_and_a_cosine_schedule():
    x, y = rows(700, c=5, seed=1)
    schedule = _native.Schedule.cos_anneal(first_cycle=11, cycle_mult=1)
    fused, _, smooth_f = train(x, y, fused=True, c=5, ps=[0.1, 0.3], schedule=schedule, wd=1e-3)
    ref, _, smooth_r = train(x, y, fused=False, c=5, ps=[0.1, 0.3], schedule=schedule, wd=1e-3)
    assert_heads_close(fused, ref)
    np.testing.assert_allclose(smooth_f, smooth_r, rtol=1e-5)


def test_fused_equals_autograd_on_efficientnet_width():
    """EfficientNet-Lite0's head: 2560 features, split between threads off any 16 boundary."""
    x, y = rows(300, seed=7, nf=2560)
    fused, _, smooth_f = train(x, y, fused=True, arch="efficientnet_lite0")
    ref, _, smooth_r = train(x, y, fused=False, arch="efficientnet_lite0")
    assert_heads_close(fused, ref)
    np.testing.assert_allclose(smooth_f, smooth_r, rtol=1e-5)


def test_one_thread_and_two_threads_agree():
    x, y = rows(640, seed=2)
    one, _, _ = train(x, y, fused=True, threads=1)
    two, _, _ = train(x, y, fused=True, threads=2)
    assert_heads_close(one, two)


def test_without_dropout_equals_a_pytorch_head_with_torch_optim_sgd():
    """The independent reference: nn.Sequential + nll_loss + torch.optim.SGD on the same
    shuffled batches (our permutation, replayed), 3 epochs."""
    x, y = rows(300, seed=3)
    torch.manual_seed(5)
    start = {k: v.clone() for k, v in _native.Learner("resnet34", 2, ps=[0.0]).state_dict() if is_head(k)}
    ours, _, smoothed = train(x, y, fused=True, ps=[0.0], epochs=3, lr=0.05, wd=1e-3)

    ref = nn.Sequential(nn.BatchNorm1d(NF), nn.Linear(NF, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Linear(512, 2),
                        nn.LogSoftmax(dim=1))
    names = {"0": "10", "1": "11", "3": "13", "4": "14"}  # torch index -> our key (no Dropout layers)
    ref.load_state_dict({f"{i}.{p}": start[f"{k}.{p}"] for i, k in names.items()
                         for p in (("weight", "bias", "running_mean", "running_var") if i in "03" else ("weight", "bias"))},
                        strict=False)
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for epoch in range(3):
        order = _shuffled(len(x), 42, epoch)
        for s in range(0, len(x), BS):
            idx = torch.tensor(order[s:s + BS])
            loss = nn.functional.nll_loss(ref(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    got = {names[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in ref.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    assert_heads_close({k: ours[k] for k in got}, got, rtol=1e-4, atol=1e-5)


def _shuffled(n, seed, epoch):
    """The learner's row order in an epoch (the same for both of our paths)."""
    order = _native.epoch_order(n, seed, epoch)
    assert sorted(order) == list(range(n))
    return order


def test_stopping_mid_epoch_writes_the_weights_back():
    """A batch callback that stops after 3 batches: the model holds the weights of exactly
    3 steps (the fused step keeps W1 in its own layout during an epoch)."""
    x, y = rows(640, seed=4)
    fused, _, s_f = train(x, y, fused=True, epochs=1, stop_after=3)
    ref, _, s_r = train(x, y, fused=False, epochs=1, stop_after=3)
    assert len(s_f) == len(s_r) == 3
    assert_heads_close(fused, ref)


def test_a_one_row_batch_is_left_out_by_both_paths():
    """129 rows at bs 64: each epoch's last batch holds one row, which BatchNorm cannot take
    batch statistics of (its running variance would become NaN for good). Both paths leave
    it out, step the same way and record two losses an epoch; the count is reported."""
    x, y = rows(129, seed=5)
    schedule = _native.Schedule.cos_anneal(first_cycle=3, cycle_mult=1)  # the left-out batch still moves the schedule on
    fused, _, smooth_f = train(x, y, fused=True, schedule=schedule)
    ref, _, smooth_r = train(x, y, fused=False, schedule=schedule)
    assert len(smooth_f) == len(smooth_r) == 4
    assert_heads_close(fused, ref)
    assert all(torch.isfinite(v).all() for v in fused.values())
    learn = _native.Learner("resnet34", 2)
    learn.begin_fit(lrs=[1e-2] * 3, wds=[0.0] * 3, schedule=_native.Schedule.constant(), precompute=True,
                    stop_on_divergence=False, fused_head=True)
    learn.train_epoch_tensors(x, y, BS, 42, 0)
    assert learn.end_fit()[3] == 1


def test_out_of_range_labels_are_a_clear_error():
    x, y = rows(128, seed=6)
    y[7] = 2
    with pytest.raises(ValueError, match="label 2 of row 7 is out of bounds for 2 classes"):
        train(x, y, fused=True, epochs=1)
