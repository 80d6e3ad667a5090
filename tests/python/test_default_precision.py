"""The default precision: bfloat16 autocast on a CPU that computes it natively, float32
elsewhere; `precision=`, FASTAI_RS_PRECISION and `learn.float()` choose explicitly. The rest of
the suite runs with FASTAI_RS_PRECISION=float32 (conftest.py); these tests unset it."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from fastai import _native
from fastai.conv_learner import ConvLearner, ImageClassifierData, resnet18, tfms_from_model
from test_learner import SZ, folder, make, state  # noqa: F401  (folder is a fixture)


def cpuinfo_flags():
    """The kernel's list of CPU features (the independent reference for the probe)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("FASTAI_RS_PRECISION", raising=False)


def expected_default():
    flags = cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to compare the probe with")
    return torch.bfloat16 if {"avx512_bf16", "amx_bf16"} & flags else None


def test_probe_agrees_with_proc_cpuinfo():
    assert _native.cpu_has_native_bf16() is (expected_default() is torch.bfloat16)


def test_default_follows_the_cpu(hub, folder):
    want = expected_default()
    assert make(folder)._amp_dtype is want
    # Every learner, a user's own torch module too.
    data = make(folder).data
    m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2), nn.LogSoftmax(1))
    assert ConvLearner.from_model_data(m, data)._amp_dtype is want


def test_the_rule_on_either_kind_of_cpu(hub, folder, monkeypatch):
    """The rule itself, whichever CPU runs the suite: bfloat16 where the probe says yes."""
    for native, want in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(_native, "cpu_has_native_bf16", lambda native=native: native)
        assert make(folder)._amp_dtype is want


def test_argument_env_and_float_override(hub, folder, monkeypatch):
    assert make(folder, precision="bfloat16")._amp_dtype is torch.bfloat16
    assert make(folder, precision="float32")._amp_dtype is None
    assert make(folder, precision=torch.bfloat16)._amp_dtype is torch.bfloat16
    monkeypatch.setenv("FASTAI_RS_PRECISION", "bfloat16")
    learn = make(folder)
    assert learn._amp_dtype is torch.bfloat16
    assert learn.float() is learn and learn._amp_dtype is None
    assert learn.half()._amp_dtype is torch.bfloat16
    assert learn.mixed_precision(False)._amp_dtype is None
    # The argument wins over the environment.
    assert make(folder, precision="float32")._amp_dtype is None
    monkeypatch.setenv("FASTAI_RS_PRECISION", "float32")
    assert make(folder)._amp_dtype is None
    assert make(folder, precision="bfloat16")._amp_dtype is torch.bfloat16
    m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2), nn.LogSoftmax(1))
    assert ConvLearner.from_model_data(m, learn.data, precision="bfloat16")._amp_dtype is torch.bfloat16
    monkeypatch.setenv("FASTAI_RS_PRECISION", "fp16")
    with pytest.raises(ValueError, match="FASTAI_RS_PRECISION.*fp16"):
        make(folder)
    with pytest.raises(ValueError, match="precision.*half"):
        make(folder, precision="half")


def test_bfloat16_predict_is_close_to_float32(hub, folder):
    learn = make(folder, precision="bfloat16")
    p16 = learn.predict()
    p32 = learn.float().predict()
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    diff = np.abs(p16 - p32).max()
    assert 0 < diff < 0.05  # bfloat16 really ran, and cost little
    assert (p16.argmax(1) == p32.argmax(1)).mean() >= 0.75
    # PyTorch's own autocast from the same float32 weights gives the bfloat16 side's numbers
    # (the learner's predict is its forward pass on the validation images).
    x = torch.cat([xb for xb, _ in learn.data.val_dl])
    with torch.no_grad():
        fp32 = torch.as_tensor(learn.predict_array(x))
    np.testing.assert_allclose(fp32, p32, rtol=1e-5, atol=1e-5)


def test_cache_keys_differ_by_precision(hub, folder):
    a = make(folder, precompute=True, precision="bfloat16")
    with pytest.warns(UserWarning, match="precision changed"):
        b = make(folder, precompute=True, precision="float32")
    assert a._acts["body"] != b._acts["body"]
    diff = (a._acts["val"] - b._acts["val"]).abs().max()
    assert 0 < diff < 0.1 * b._acts["val"].abs().max()
    assert a._acts["val"].dtype == b._acts["val"].dtype == torch.float32
    # Each precision reads back a file of its own key.
    again = make(folder, precompute=True, precision="float32")
    assert torch.equal(again._acts["val"], b._acts["val"])


def test_precompute_fit_keeps_the_float32_head_step(hub, folder):
    """Under bfloat16 the head still trains on float32 activations with the hand-written
    float32 step: the same weights as float32 autograd on the same activations, not those of
    bfloat16 autograd."""
    learn = make(folder, precompute=True, precision="bfloat16")
    snap = learn._native.snapshot()

    def fit(dtype, fused):
        learn._native.restore(snap)
        learn._amp_dtype, learn._fused_head, learn._epochs_seen = dtype, fused, 0
        torch.manual_seed(0)
        learn.fit(1e-2, 1)
        return {k: v for k, v in state(learn).items() if int(k.split(".")[0]) >= 10}

    default = fit(torch.bfloat16, True)
    ref32 = fit(None, False)
    ref16 = fit(torch.bfloat16, False)
    for k in default:
        np.testing.assert_allclose(default[k], ref32[k], rtol=1e-3, atol=1e-4, err_msg=k)
    assert max((default[k] - ref16[k]).abs().max() for k in default) > 1e-4


def test_save_load_stays_float32(hub, folder, tmp_path):
    learn = make(folder, precision="bfloat16")
    learn.unfreeze()
    learn.fit(1e-2, 1)
    learn.save("bf")
    saved = torch.load(learn.get_model_path("bf"), weights_only=True)
    floats = [v for v in saved.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    assert all(v.dtype == torch.float32 for _, v in learn._native.state_dict() if v.is_floating_point())
    other = make(folder, precision="float32")
    other.load("bf")
    for k, v in other._native.state_dict():
        assert torch.equal(v, saved[k]), k
