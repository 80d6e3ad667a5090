"""`ImageClassifierData.from_arrays` (spec §2.9): in-memory images through the Rust pipeline
(against PIL), labels and order, the untransformed mode, bad input, and a precomputed learner
whose activation cache follows the arrays' values."""
import io
import os
import sys
import warnings

import numpy as np
import pytest
import torch

from _fixtures import normalize_chw, pil_scale_center_crop, smooth_image
from fastai.conv_learner import resnet34
from fastai.dataset import ImageClassifierData
from fastai.transforms import tfms_from_model

SZ = 24


def arrays(n, seed, h=30, w=40):
    imgs = np.stack([smooth_image(h, w, seed=seed + i) for i in range(n)])
    labels = np.random.RandomState(seed).randint(0, 3, n)
    return imgs, labels


def test_validation_batches_match_pil_and_keep_the_order(tmp_path):
    (x, y), (xv, yv) = arrays(10, 0), arrays(7, 100)
    data = ImageClassifierData.from_arrays(str(tmp_path), (x, y), (xv, yv), bs=4,
                                           tfms=tfms_from_model(resnet34, SZ))
    assert data.c == 3 and data.sz == SZ and len(data.trn_dl) == 3 and len(data.val_dl) == 2
    xs, ys = zip(*data.val_dl)
    xs, ys = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    np.testing.assert_array_equal(ys, yv)
    for i in range(len(xv)):
        ref = normalize_chw(pil_scale_center_crop(xv[i], SZ) / 255.0)
        assert np.abs(xs[i] - ref).max() < 3 / 255 / 0.224, i
    np.testing.assert_allclose(data.val_ds[2][0], xs[2], atol=1e-6)
    np.testing.assert_array_equal(data.val_ds.get_x(1), xv[1])
    # float32 images in [0, 1] give the same pixels as the bytes they came from (to the
    # rounding of a uint8 resize: one level).
    f = ImageClassifierData.from_arrays(str(tmp_path), (x / np.float32(255), y),
                                        (xv.astype(np.float32) / 255, yv), bs=4,
                                        tfms=tfms_from_model(resnet34, SZ))
    np.testing.assert_allclose(torch.cat([b for b, _ in f.val_dl]).numpy(), xs, atol=1.01 / 255 / 0.224)


def test_training_batches_shuffle_every_epoch_and_follow_the_seed(tmp_path):
    (x, y), val = arrays(12, 3), arrays(4, 50)
    tfms = tfms_from_model(resnet34, SZ, max_zoom=1.1)
    make = lambda: ImageClassifierData.from_arrays(str(tmp_path), (x, y), val, bs=5, tfms=tfms, seed=9)
    a, b = make(), make()
    ep1 = [(xb.numpy(), yb.numpy()) for xb, yb in a.trn_dl]
    ep2 = [(xb.numpy(), yb.numpy()) for xb, yb in a.trn_dl]
    assert sorted(np.concatenate([yb for _, yb in ep1])) == sorted(y)
    assert not all(np.array_equal(p[1], q[1]) for p, q in zip(ep1, ep2))
    for (x1, y1), (x2, y2) in zip(ep1, [(xb.numpy(), yb.numpy()) for xb, yb in b.trn_dl]):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)


def test_without_transforms_items_are_the_raw_values(tmp_path):
    x = np.random.RandomState(0).rand(9, 784).astype(np.float32)
    y = np.arange(9) % 2
    data = ImageClassifierData.from_arrays(str(tmp_path), (x, y), (x[:4], y[:4]), bs=4)
    xb, yb = next(iter(data.val_dl))
    np.testing.assert_array_equal(xb.numpy(), x[:4])
    np.testing.assert_array_equal(yb.numpy(), y[:4])
    assert data.c == 2 and data.sz == 784 and len(data.trn_dl) == 3
    seen = np.concatenate([xb.numpy() for xb, _ in data.trn_dl])
    np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(x, axis=0))
    with pytest.raises(ValueError, match="no transforms"):
        from fastai.conv_learner import ConvLearner
        ConvLearner.pretrained(resnet34, data, pretrained=False)


def test_bad_arrays_are_clear_errors(tmp_path):
    (x, y), val = arrays(4, 0), arrays(2, 9)
    with pytest.raises(TypeError, match="uint8"):
        ImageClassifierData.from_arrays(str(tmp_path), (x, y), val)
    with pytest.raises(ValueError, match="integer class"):
        ImageClassifierData.from_arrays(str(tmp_path), (x, y[:3]), val, tfms=tfms_from_model(resnet34, SZ))
    with pytest.raises(ValueError, match=r"0..1 \(found -3..-1\)"):
        ImageClassifierData.from_arrays(str(tmp_path), (x, y), (val[0], -val[1] - 1),
                                        tfms=tfms_from_model(resnet34, SZ))
    with pytest.raises(ValueError, match=r"0..1 \(found 0..2\)"):
        ImageClassifierData.from_arrays(str(tmp_path), (x, y), val, classes=["a", "b"],
                                        tfms=tfms_from_model(resnet34, SZ))
    tf = tfms_from_model(resnet34, SZ)
    with pytest.raises(ValueError, match=r"training float images must be in \[0, 1\], found 13..242 \(divide by 255"):
        ImageClassifierData.from_arrays(str(tmp_path), (x.astype(np.float32), y), val, tfms=tf)
    nan = (x / np.float32(255)).astype(np.float32)
    nan[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="training images hold NaN"):
        ImageClassifierData.from_arrays(str(tmp_path), (nan, y), val, tfms=tf)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        ImageClassifierData.from_arrays(str(tmp_path), (x[..., 0], y), val, tfms=tfms_from_model(resnet34, SZ))
    with pytest.raises(ValueError, match="arrays"):
        ImageClassifierData.from_arrays(str(tmp_path), (x, y), val, tfms=tfms_from_model(resnet34, SZ)).resize(16)


def test_precompute_on_arrays_keys_its_cache_by_their_values(tmp_path, hub):
    from fastai.conv_learner import ConvLearner, resnet18
    (x, y), (xv, yv) = arrays(8, 1), arrays(4, 60)
    tfms = tfms_from_model(resnet18, 32)
    data = lambda xs: ImageClassifierData.from_arrays(str(tmp_path), (xs, y), (xv, yv), bs=4, tfms=tfms)
    d = data(x)
    learn = ConvLearner.pretrained(resnet18, d, precompute=True)
    preds = learn.predict()
    # The class count covers every split (here a validation label is above the training ones).
    assert y.max() < yv.max() and d.c == int(yv.max()) + 1 and preds.shape == (4, d.c)
    caches = [f for f in os.listdir(os.path.join(str(tmp_path), "tmp")) if f.endswith(".bin")]
    assert len(caches) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reused cache: no "recomputed" warning
        ConvLearner.pretrained(resnet18, data(x.copy()), precompute=True)
    changed = x.copy()
    changed[3, 5, 5] = 255 - changed[3, 5, 5]
    with pytest.warns(UserWarning, match="recomputed the activation cache"):
        ConvLearner.pretrained(resnet18, data(changed), precompute=True)
    learn.fit(0.01, 1)


class _TTY(io.StringIO):
    def isatty(self):
        return True


def test_precompute_bars_only_while_computing_and_warnings_point_at_the_caller(tmp_path, hub,
                                                                              monkeypatch):
    from fastai.conv_learner import ConvLearner, resnet18
    (x, y), val = arrays(8, 1), arrays(4, 60)
    tfms = tfms_from_model(resnet18, 32)
    data = lambda xs: ImageClassifierData.from_arrays(str(tmp_path), (xs, y), val, bs=4, tfms=tfms)
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    learn = ConvLearner.pretrained(resnet18, data(x), precompute=True)
    assert "precompute trn" in err.getvalue() and "precompute val" in err.getvalue()
    err.seek(0)
    err.truncate()
    learn = ConvLearner.pretrained(resnet18, data(x), precompute=True)  # read from the cache
    assert err.getvalue() == ""  # no bars stuck at 0%
    changed = x.copy()
    changed[0] = 255 - changed[0]
    with pytest.warns(UserWarning, match="recomputed the activation cache") as rec:
        ConvLearner.pretrained(resnet18, data(changed), precompute=True)
    assert {w.filename for w in rec} == {__file__}  # this line, not the library's
    with pytest.raises(ValueError, match=r"TTA\(is_test=True\): the data has no test set"):
        learn.TTA(is_test=True)

