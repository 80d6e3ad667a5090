"""Opt-in mixed precision (bfloat16 autocast) and channels-last layout, against PyTorch running
the same network (torchvision children + fastai's head, loaded from the learner's state)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from test_learner import SZ, folder, make  # noqa: F401  (folder is a fixture)
from test_models import ConcatPool, Flat, reference_head


def reference(learn):
    tv = torchvision.models.resnet18(weights=None)
    seq = nn.Sequential(*list(tv.children())[:8], ConcatPool(), Flat(), *reference_head(1024, 2))
    missing, unexpected = seq.load_state_dict(dict(learn._native.state_dict()), strict=False)
    assert [k for k in missing if not k.endswith("num_batches_tracked")] == [] and unexpected == []
    return seq.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_mixed_precision_is_torch_autocast_bf16(hub, folder, channels_last):
    learn = make(folder, channels_last=channels_last)
    x = torch.randn(4, 3, SZ, SZ, generator=torch.Generator().manual_seed(0))
    ref = reference(learn)
    if channels_last:  # the same layout on both sides: bfloat16 sums depend on the order
        ref = ref.to(memory_format=torch.channels_last)
    fp32 = torch.as_tensor(learn.predict_array(x))
    assert learn.half() is learn
    got = torch.as_tensor(learn.predict_array(x))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = ref[:-1](x)
    # Our last layer asks for float32 log-probabilities of the bfloat16 scores.
    want = torch.log_softmax(logits.float(), 1)
    with torch.no_grad():
        want32 = ref(x)
    np.testing.assert_allclose(fp32, want32, rtol=1e-4, atol=1e-5)
    # bfloat16 really was used (the outputs moved), and moved the way PyTorch's autocast moves.
    assert (got - fp32).abs().max() > 1e-3
    assert (got - want).abs().max() < 0.25 * (got - fp32).abs().max()
    assert got.dtype == torch.float32
    learn.float()
    np.testing.assert_allclose(learn.predict_array(x), fp32, rtol=1e-6, atol=1e-6)


def test_fit_in_mixed_precision_keeps_float32_weights(hub, folder):
    learn = make(folder).half()
    learn.unfreeze()
    before = {k: v.clone() for k, v in learn._native.state_dict()}
    vals = learn.fit(1e-2, 1)
    after = dict(learn._native.state_dict())
    assert all(np.isfinite(v) for v in vals)
    assert all(v.dtype == before[k].dtype for k, v in after.items())
    assert after["0.weight"].dtype == torch.float32
    assert not torch.equal(after["0.weight"], before["0.weight"])  # the body trained
    assert not torch.equal(after["16.weight"], before["16.weight"])  # and the head


def test_only_bfloat16(hub, folder):
    learn = make(folder)
    with pytest.raises(ValueError, match="bfloat16"):
        learn.mixed_precision(dtype=torch.float16)


def test_channels_last_is_the_default_on_cpu_only(hub, folder):
    convs = lambda l: [t for _, t in l._native.live_tensors() if t.dim() == 4 and t.shape[-1] > 1]
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in convs(make(folder)))
    assert all(t.is_contiguous() for t in convs(make(folder, channels_last=False)))


def test_channels_last_same_outputs_and_torch_readable(hub, folder, tmp_path):
    learn = make(folder, channels_last=False)
    x = torch.randn(4, 3, SZ, SZ, generator=torch.Generator().manual_seed(1))
    before = learn.predict_array(x)
    learn.channels_last()
    convs = [t for _, t in learn._native.live_tensors() if t.dim() == 4]
    assert convs and all(t.is_contiguous(memory_format=torch.channels_last) for t in convs)
    np.testing.assert_allclose(learn.predict_array(x), before, rtol=1e-4, atol=1e-5)
    learn.unfreeze()
    learn.fit(1e-2, 1)
    learn.save("cl")
    ref = reference(learn)
    ref.load_state_dict(torch.load(learn.get_model_path("cl"), weights_only=True), strict=False)
    with torch.no_grad():
        want = ref(x)
    np.testing.assert_allclose(learn.predict_array(x), want, rtol=1e-4, atol=1e-5)
    learn.channels_last(False)
    assert all(t.is_contiguous() for _, t in learn._native.live_tensors())
