"""The real Dogs-vs-Cats photos (read in place). Skipped when the data set is absent."""
import glob
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fastai.dataset import ImageClassifierData
from fastai.transforms import tfms_from_model, transforms_side_on
from _fixtures import DOGSCATS, normalize_chw, pil_scale_center_crop

pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(DOGSCATS, "valid")),
                                reason=f"Dogs-vs-Cats photos not found at {DOGSCATS}")


@pytest.fixture(scope="module")
def data():
    tfms = tfms_from_model("resnet34", 224, aug_tfms=transforms_side_on, max_zoom=1.1)
    return ImageClassifierData.from_paths(DOGSCATS + "/", bs=8, tfms=tfms, num_workers=2, seed=0)


def test_layout_labels_and_lengths(data):
    n_trn = len(glob.glob(os.path.join(DOGSCATS, "train", "*", "*.jpg")))
    n_val = len(glob.glob(os.path.join(DOGSCATS, "valid", "*", "*.jpg")))
    n_val_cats = len(glob.glob(os.path.join(DOGSCATS, "valid", "cats", "*.jpg")))
    assert data.classes == ["cats", "dogs"]
    assert len(data.trn_ds) == n_trn and len(data.val_ds) == n_val
    assert len(data.trn_dl) == -(-n_trn // 8) and len(data.val_dl) == -(-n_val // 8)
    assert data.val_y.tolist() == [0] * n_val_cats + [1] * (n_val - n_val_cats)
    assert all(f.startswith("valid/cats/") for f in data.val_ds.fnames[:n_val_cats])
    assert list(data.val_ds.fnames[:n_val_cats]) == sorted(data.val_ds.fnames[:n_val_cats])


def test_first_validation_batch_matches_pil(data):
    x, y = next(iter(data.val_dl))
    x = x.cpu().numpy()
    assert x.shape == (8, 3, 224, 224) and y.tolist() == [0] * 8
    from fastai import _native
    val = tfms_from_model("resnet34", 224, aug_tfms=transforms_side_on, max_zoom=1.1)[1]
    for i in range(8):
        path = os.path.join(DOGSCATS, data.val_ds.fnames[i])
        arr = np.asarray(Image.open(path).convert("RGB"))
        ref = normalize_chw(pil_scale_center_crop(arr, 224) / 255.0)
        # The full-size path: same decoded pixels (see below); the rest is resampling round-off.
        full, _ = _native.transform_image(_native.decode_image(path), val._pipeline, 0, 0, 0)
        assert np.abs(full - ref).mean() < 1.0 / 255 / 0.224, data.val_ds.fnames[i]
        # The loader decodes large JPEGs at a reduced scale (test_scaled_decode.py): within
        # that path's tolerance.
        assert np.abs(x[i] - ref).mean() < 0.3, data.val_ds.fnames[i]


def test_jpeg_decode_equals_pillow():
    """Both decode with libjpeg-turbo (accurate integer IDCT, fancy upsampling): the pixels of
    every 25th photo agree exactly with Pillow's when Pillow is built on libjpeg-turbo."""
    from PIL import features
    from fastai import _native
    if not features.check_feature("libjpeg_turbo"):
        pytest.skip("this Pillow is not built with libjpeg-turbo")
    files = sorted(glob.glob(os.path.join(DOGSCATS, "*", "*", "*.jpg")))[::25]
    assert len(files) > 100
    for f in files:
        ref = np.asarray(Image.open(f).convert("RGB"))
        got = _native.decode_image(f)
        assert got.shape == ref.shape and np.array_equal(got, ref), f


def test_aug_batch_is_sane(data):
    x, y = next(iter(data.aug_dl))
    d = data.val_ds.denorm(x)
    assert d.shape == (8, 224, 224, 3) and d.min() >= -1e-4 and d.max() <= 1 + 1e-4
    assert torch.isfinite(x).all()
