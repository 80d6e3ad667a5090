"""`RandomStretch` and `RandomRotateZoom` (spec §3.5) against scipy.ndimage references built
from the parameters the pipeline reports, and the pick frequencies of `RandomRotateZoom`."""
import numpy as np
import pytest
import scipy.ndimage as ndi

from fastai import _native
from fastai.transforms import (BORDER_CONSTANT, CropType, RandomRotateZoom, RandomStretch,
                               imagenet_stats, tfms_from_stats)
from _fixtures import IMAGENET_MEAN, IMAGENET_STD, noise_image, smooth_image


def run(tfm, img, index=0, seed=7):
    return _native.transform_image(np.ascontiguousarray(img), tfm._pipeline, seed, 0, index)


def center_tfm(sz, augs):
    trn, _ = tfms_from_stats(imagenet_stats, sz, aug_tfms=augs, crop_type=CropType.CENTER)
    return trn


def denorm_hwc(x):
    return np.moveaxis(x, 0, -1) * IMAGENET_STD + IMAGENET_MEAN


def stretch_reference(img, s, tall):
    """The original's stretch_cv, as a map: the axis is resized to round(n·(1+s)) and the crop
    back to n starts at floor((that − n)/2); output x reads (x + start + 0.5)/(1+s) − 0.5."""
    axis = 0 if tall else 1
    n = img.shape[axis]
    start = (int(round(n * (1 + s))) - n) // 2
    m, off = np.eye(2), np.zeros(2)
    m[axis, axis] = 1 / (1 + s)
    off[axis] = (start + 0.5) / (1 + s) - 0.5
    return np.stack([ndi.affine_transform(img[..., ch] / 255.0, m, offset=off, order=1, mode="nearest")
                     for ch in range(3)], -1)


def rotate_reference(img, deg, mode):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.array([[c, s], [-s, c]])
    ctr = np.array(img.shape[:2], dtype=float) / 2
    return np.stack([ndi.affine_transform(img[..., ch] / 255.0, m, offset=ctr - m @ ctr, order=1,
                                          mode=mode) for ch in range(3)], -1)


def zoom_reference(img, z, mode):
    f = 1 / (1 + z)
    ctr = np.array(img.shape[:2], dtype=float) / 2
    return np.stack([ndi.affine_transform(img[..., ch] / 255.0, np.diag([f, f]), offset=ctr - f * ctr,
                                          order=1, mode=mode) for ch in range(3)], -1)


def test_stretch_matches_the_originals_resize_and_crop():
    img = noise_image(37, 37, seed=3)  # odd size: the crop's floor matters
    tfm = center_tfm(37, [RandomStretch(0.6)])
    seen = set()
    for i in range(12):
        x, p = run(tfm, img, index=i)
        (kind, s, tall), = p["augs"]
        assert kind == "stretch" and 0 <= s <= 0.6
        np.testing.assert_allclose(denorm_hwc(x), stretch_reference(img, s, tall), atol=2e-4,
                                   err_msg=f"s={s} tall={tall}")
        seen.add(tall)
    assert seen == {False, True}  # both directions drawn


def test_stretch_direction_widens_or_heightens():
    """A centred vertical bar gets wider (tall=False) or stays as wide (tall=True)."""
    img = np.zeros((41, 41, 3), np.uint8)
    img[:, 18:23] = 255
    tfm = center_tfm(41, [RandomStretch(1.0)])
    for i in range(20):
        x, p = run(tfm, img, index=i)
        (_, s, tall), = p["augs"]
        width = (denorm_hwc(x).mean(-1)[20] > 0.5).sum()
        if tall:
            assert width == 5
        elif s > 0.5:
            assert width >= 7, (s, width)


def test_rotate_zoom_picks_with_its_probabilities():
    img = smooth_image(16, 16, seed=1)
    tfm = center_tfm(16, [RandomRotateZoom(20, 0.5, 0.4, ps=[0.1, 0.2, 0.3, 0.4])])
    counts = {"rotate": 0, "zoom": 0, "stretch": 0, "pass": 0}
    n = 2000
    for i in range(n):
        _, p = run(tfm, img, index=i)
        (draw,) = p["augs"]
        counts[draw[0]] += 1
    for kind, want in zip(counts, [0.1, 0.2, 0.3, 0.4]):
        assert abs(counts[kind] / n - want) < 0.035, counts


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_rotate_zoom_applies_the_picked_transform(mode):
    img = smooth_image(40, 40, seed=8)
    border = 2 if mode == "reflect" else BORDER_CONSTANT
    tfm = center_tfm(40, [RandomRotateZoom(25, 0.4, 0.5, mode=border)])
    done = set()
    for i in range(40):
        x, p = run(tfm, img, index=i)
        (draw,) = p["augs"]
        kind = draw[0]
        if kind == "rotate":
            assert -25 <= draw[1] <= 25
            ref = rotate_reference(img, draw[1], mode)
        elif kind == "zoom":
            assert 0 <= draw[1] <= 0.4
            ref = zoom_reference(img, draw[1], mode)
        elif kind == "stretch":
            assert 0 <= draw[1] <= 0.5
            ref = stretch_reference(img, draw[1], draw[2])
        else:
            ref = img / 255.0
        got = denorm_hwc(x)
        if mode == "constant" and kind == "rotate":
            # Near the edge scipy and we may disagree on in/out by half a pixel: compare the
            # middle, whose sources are inside.
            got, ref = got[8:32, 8:32], ref[8:32, 8:32]
        np.testing.assert_allclose(got, ref, atol=2e-4, err_msg=f"{draw}")
        done.add(kind)
    assert done == {"rotate", "zoom", "stretch", "pass"}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="4 probabilities"):
        RandomRotateZoom(10, 0.1, 0.1, ps=[0.5, 0.5])
    with pytest.raises(ValueError, match="summing to 1"):
        RandomRotateZoom(10, 0.1, 0.1, ps=[0.5, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="max_stretch"):
        RandomStretch(-0.1)


def cutout_mask(h, w, centres, length):
    """The intended Cutout (fastai's later fix), written out: hole rows
    int(clip(y − L/2, 0, h)) .. int(clip(y + L/2, 0, h)), y = randint(h) ~ floor(u·h)."""
    mask = np.ones((h, w), np.float64)
    for u, v in centres:
        y, x = int(np.floor(u * h)), int(np.floor(v * w))
        y1, y2 = int(np.clip(y - length / 2, 0, h)), int(np.clip(y + length / 2, 0, h))
        x1, x2 = int(np.clip(x - length / 2, 0, w)), int(np.clip(x + length / 2, 0, w))
        mask[y1:y2, x1:x2] = 0
    return mask


def normalize(img01):
    return np.moveaxis((img01 - IMAGENET_MEAN) / IMAGENET_STD, -1, 0)


@pytest.mark.parametrize("length", [5, 8])
def test_cutout_blacks_out_its_boxes(length):
    from fastai.transforms import Cutout
    img = noise_image(30, 30, seed=4)
    tfm = center_tfm(30, [Cutout(3, length)])
    for i in range(6):
        x, p = run(tfm, img, index=i)
        (kind, centres), = p["augs"]
        assert kind == "cutout" and len(centres) == 3
        ref = img / 255.0 * cutout_mask(30, 30, centres, length)[..., None]
        np.testing.assert_allclose(x, normalize(ref), atol=1e-5)
    x, _ = run(center_tfm(30, [Cutout(0, length)]), img)
    np.testing.assert_allclose(x, normalize(img / 255.0), atol=1e-5)


def test_cutout_holes_move_with_later_steps_and_take_later_lighting():
    """Cutout, then a flip and lighting: the holes are flipped, and lighting acts on their
    black as on every other pixel (clip((0 − μ)k + μ + b, 0, 1))."""
    from fastai.transforms import Cutout, RandomFlip, RandomLighting
    img = noise_image(24, 24, seed=5)
    tfm = center_tfm(24, [Cutout(2, 6), RandomFlip(p=1.0), RandomLighting(0.2, 0.2)])
    for i in range(4):
        x, p = run(tfm, img, index=i)
        (_, centres), (_, flipped), (_, b, c) = p["augs"]
        assert flipped
        v = img / 255.0
        mu = v.mean()  # the lighting step's mean is the decoded image's (module docs)
        cut = (v * cutout_mask(24, 24, centres, 6)[..., None])[:, ::-1]
        k = 1 + c if c >= 0 else 1 / (1 - c)
        ref = np.clip((cut - mu) * k + mu + b, 0, 1)
        np.testing.assert_allclose(x, normalize(ref), atol=1e-5)


def test_cutout_arguments_are_checked():
    from fastai.transforms import Cutout
    with pytest.raises(ValueError, match="whole numbers"):
        Cutout(1.5, 4)
    with pytest.raises(ValueError, match="whole numbers"):
        Cutout(1, -4)


def cv_gaussian_kernel(k):
    """OpenCV's getGaussianKernel(k, sigma=0), from its documentation: fixed tables up to 7
    taps, else sampled with sigma = 0.3*((k-1)*0.5 - 1) + 0.8, normalised."""
    tables = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16],
              7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}
    if k in tables:
        return np.array(tables[k])
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    g = np.exp(-((np.arange(k) - (k - 1) / 2) ** 2) / (2 * sigma ** 2))
    return g / g.sum()


@pytest.mark.parametrize("strength", [2, 3, 5])
def test_blur_is_opencvs_gaussian_with_reflect101(strength):
    from fastai.transforms import RandomBlur
    img = noise_image(26, 26, seed=6)
    tfm = center_tfm(26, [RandomBlur(strength, probability=1.0)])
    x, p = run(tfm, img)
    assert p["augs"] == [("blur", 2 * strength - 1)]
    w = cv_gaussian_kernel(2 * strength - 1)
    v = img / 255.0
    # scipy's 'mirror' is OpenCV's BORDER_REFLECT_101 (the edge pixel is not repeated).
    ref = ndi.correlate1d(ndi.correlate1d(v, w, axis=1, mode="mirror"), w, axis=0, mode="mirror")
    np.testing.assert_allclose(x, normalize(ref), atol=1e-5)


def test_blur_probability_and_strength_choice():
    from fastai.transforms import RandomBlur
    img = smooth_image(12, 12, seed=2)
    tfm = center_tfm(12, [RandomBlur([1, 2, 4], probability=0.3)])
    draws = [run(tfm, img, index=i)[1]["augs"][0][1] for i in range(600)]
    hits = [k for k in draws if k is not None]
    assert abs(len(hits) / 600 - 0.3) < 0.06
    assert set(hits) == {1, 3, 7}
    x, p = run(center_tfm(12, [RandomBlur(3, probability=0.0)]), img)
    assert p["augs"] == [("blur", None)]
    np.testing.assert_allclose(x, normalize(img / 255.0), atol=1e-5)
    with pytest.raises(ValueError, match="blur_strengths"):
        RandomBlur(0)
