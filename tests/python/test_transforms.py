"""The Rust image pipeline against independent references (numpy, scipy.ndimage, PIL, formulas).

`_native.transform_image(img, pipeline, seed, epoch, index)` returns the transformed image and the
parameters it drew, so each reference recomputes the same image from those parameters.
"""
import numpy as np
import pytest
import scipy.ndimage as ndi

from fastai import _native
from fastai.transforms import (CropType, RandomDihedral, RandomFlip, RandomLighting, RandomRotate,
                               RandomZoom, imagenet_stats, inception_stats, tfms_from_model,
                               tfms_from_stats, transforms_basic, transforms_side_on,
                               transforms_top_down, RandomScale, Scale)
from _fixtures import (IMAGENET_MEAN, IMAGENET_STD, noise_image, normalize_chw, pil_scale_center_crop,
                       smooth_image)


def run(tfm, img, index=0, seed=7, epoch=0):
    return _native.transform_image(np.ascontiguousarray(img), tfm._pipeline, seed, epoch, index)


def denorm_hwc(x):
    return np.moveaxis(x, 0, -1) * IMAGENET_STD + IMAGENET_MEAN


def center_tfm(sz, augs):
    """A train pipeline without random crop/scale: only `augs` are random."""
    trn, _ = tfms_from_stats(imagenet_stats, sz, aug_tfms=augs, crop_type=CropType.CENTER)
    return trn


def test_flip_exact():
    img = noise_image(16, 16, seed=1)
    ref = normalize_chw(img / 255.0)
    x, p = run(center_tfm(16, [RandomFlip(p=1.0)]), img)
    assert p["augs"] == [("flip", True)]
    np.testing.assert_allclose(x, ref[:, :, ::-1], atol=1e-6)
    x0, _ = run(center_tfm(16, [RandomFlip(p=0.0)]), img)
    np.testing.assert_allclose(x0, ref, atol=1e-6)


@pytest.mark.parametrize("shape", [(12, 12), (12, 20)])
def test_dihedral_exact_all_eight(shape):
    img = noise_image(*shape, seed=2)
    sz = min(shape)
    tfm = center_tfm(sz, [RandomDihedral()])
    seen = set()
    for i in range(64):
        x, p = run(tfm, img, index=i)
        (_, k, flip), = p["augs"]
        ref = np.rot90(img, k)
        if flip:
            ref = ref[:, ::-1]
        r, c = ref.shape[:2]
        top, left = int(np.ceil((r - sz) / 2)), int(np.ceil((c - sz) / 2))
        ref = ref[top:top + sz, left:left + sz]
        np.testing.assert_allclose(x, normalize_chw(ref / 255.0), atol=1e-6, err_msg=f"k={k} flip={flip}")
        seen.add((k, flip))
    assert len(seen) == 8


def test_rotation_matches_scipy():
    img = smooth_image(40, 40, seed=3)
    tfm = center_tfm(40, [RandomRotate(30, p=1.0)])
    for i in range(3):
        x, p = run(tfm, img, index=i)
        (_, deg), = p["augs"]
        assert deg is not None and -30 <= deg <= 30
        a = np.deg2rad(deg)
        c, s = np.cos(a), np.sin(a)
        # output (row, col) -> input: inverse of a counter-clockwise rotation about (rows/2, cols/2)
        m = np.array([[c, s], [-s, c]])
        ctr = np.array([20.0, 20.0])
        off = ctr - m @ ctr
        ref = np.stack([ndi.affine_transform(img[..., ch] / 255.0, m, offset=off, order=1, mode="reflect")
                        for ch in range(3)], -1)
        np.testing.assert_allclose(denorm_hwc(x), ref, atol=2e-4)


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_rotation_of_noise_matches_scipy(mode):
    """Sharp noise, a non-square size and both borders: every output pixel, whether sampled by
    the vectorised interior loop or the per-pixel border path, equals scipy's bilinear warp."""
    from fastai.transforms import BORDER_CONSTANT, BORDER_REFLECT
    img = noise_image(53, 53, seed=11)
    tfm = center_tfm(53, [RandomRotate(25, p=1.0, mode=BORDER_REFLECT if mode == "reflect" else BORDER_CONSTANT)])
    for i in range(3):
        x, p = run(tfm, img, index=i)
        (_, deg), = p["augs"]
        a = np.deg2rad(deg)
        c, s = np.cos(a), np.sin(a)
        m = np.array([[c, s], [-s, c]])
        ctr = np.array([26.5, 26.5])
        off = ctr - m @ ctr
        # scipy's 'reflect' is half-sample symmetric, like ours; 'constant' pads with zeros.
        ref = np.stack([ndi.affine_transform(img[..., ch] / 255.0, m, offset=off, order=1, mode=mode,
                                             cval=0.0) for ch in range(3)], -1)
        got = denorm_hwc(x)
        if mode == "constant":
            # Within half a pixel of the image edge scipy and we may disagree on in/out; compare
            # the pixels whose source lies clearly inside or clearly outside.
            yy, xx = np.mgrid[0:53, 0:53]
            src = np.einsum("ij,jhw->ihw", m, np.stack([yy, xx]).astype(float)) + off[:, None, None]
            clear = ((src > 0.5) & (src < 51.5)).all(0) | ((src < -1.0) | (src > 53.0)).any(0)
            np.testing.assert_allclose(got[clear], ref[clear], atol=2e-4)
        else:
            np.testing.assert_allclose(got, ref, atol=2e-4)


def test_rotation_direction_is_counter_clockwise():
    img = np.zeros((41, 41, 3), np.uint8)
    img[19:22, 34:37] = 255  # a dot right of the centre (20.5, 20.5)
    tfm = center_tfm(41, [RandomRotate(90, p=1.0)])
    for i in range(4):
        x, p = run(tfm, img, index=i)
        deg = p["augs"][0][1]
        if abs(deg) < 30:
            continue
        g = denorm_hwc(x).sum(-1)
        yy, xx = np.unravel_index(np.argmax(ndi.gaussian_filter(g, 1)), g.shape)
        a = np.deg2rad(deg)
        # counter-clockwise on screen (y down): the dot moves to (cx + r cos a, cy - r sin a)
        assert abs(xx - (20.5 + 15 * np.cos(a))) <= 1.5 and abs(yy - (20.5 - 15 * np.sin(a))) <= 1.5
        return
    pytest.skip("no large angle drawn")


def test_zoom_matches_scipy():
    img = smooth_image(36, 36, seed=4)
    tfm = center_tfm(36, [RandomZoom(0.6, 0.2)])
    x, p = run(tfm, img, index=5)
    (_, z), = p["augs"]
    assert 0.2 <= z <= 0.6
    f = 1.0 / (1.0 + z)
    ctr = np.array([18.0, 18.0])
    ref = np.stack([ndi.affine_transform(img[..., ch] / 255.0, np.diag([f, f]), offset=ctr - f * ctr,
                                         order=1, mode="reflect") for ch in range(3)], -1)
    np.testing.assert_allclose(denorm_hwc(x), ref, atol=2e-4)


def test_lighting_formula():
    img = smooth_image(20, 20, seed=5)
    tfm = center_tfm(20, [RandomLighting(0.2, 0.3)])
    for i in range(5):
        x, p = run(tfm, img, index=i)
        (_, b, c), = p["augs"]
        assert -0.2 <= b <= 0.2 and -0.3 <= c <= 0.3
        k = 1 + c if c >= 0 else 1 / (1 - c)
        v = img / 255.0
        mu = v.mean()
        ref = np.clip((v - mu) * k + mu + b, 0, 1)
        np.testing.assert_allclose(x, normalize_chw(ref), atol=1e-5)


def test_scale_and_center_crop_match_pil():
    img = smooth_image(60, 90, seed=6)
    _, val = tfms_from_model("resnet34", 32)
    x, _ = run(val, img)
    ref = normalize_chw(pil_scale_center_crop(img, 32) / 255.0)
    # PIL and our resampler both filter bilinearly; allow a couple of 8-bit levels.
    assert np.abs(x - ref).max() < 3 / 255 / 0.224


def test_random_scale_and_crop_match_pil():
    from PIL import Image
    img = smooth_image(50, 70, seed=7)
    trn, _ = tfms_from_model("resnet34", 32, max_zoom=1.5)
    saw_zoom = False
    for i in range(6):
        x, p = run(trn, img, index=i)
        m = p["scale_m"]
        targ = int(32 * m)
        nh, nw = max(int(np.floor(50 * targ / 50)), targ), max(int(np.floor(70 * targ / 50)), targ)
        a = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        ur, uc = p["crop_u"]
        top, left = int(np.floor(ur * (nh - 32))), int(np.floor(uc * (nw - 32)))
        ref = normalize_chw(a[top:top + 32, left:left + 32] / 255.0)
        assert np.abs(x - ref).max() < 3 / 255 / 0.224, (m, top, left)
        saw_zoom |= m > 1
    assert saw_zoom


def test_draw_probabilities_and_ranges():
    img = noise_image(8, 8)
    trn, _ = tfms_from_model("resnet34", 8, aug_tfms=transforms_side_on, max_zoom=1.1)
    n = 3000
    rot, flip, zoom = 0, 0, 0
    for i in range(n):
        _, p = run(trn, img, index=i)
        (_, deg), (_, b, c), (_, f) = p["augs"]
        if deg is not None:
            rot += 1
            assert -10 <= deg <= 10
        assert -0.05 <= b <= 0.05 and -0.05 <= c <= 0.05
        flip += f
        if p["scale_m"] != 1.0:
            zoom += 1
            assert 1.0 <= p["scale_m"] <= 1.1
    assert abs(rot / n - 0.75) < 0.04
    assert abs(flip / n - 0.5) < 0.04
    assert abs(zoom / n - 0.75) < 0.04


def test_same_draws_for_same_seed_epoch_index():
    img = smooth_image(30, 40)
    trn, _ = tfms_from_model("resnet34", 24, aug_tfms=transforms_top_down, max_zoom=1.2)
    a = run(trn, img, index=3, epoch=2)
    b = run(trn, img, index=3, epoch=2)
    c = run(trn, img, index=3, epoch=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[1] != c[1]


def test_presets_and_types():
    assert [type(t).__name__ for t in transforms_basic] == ["RandomRotate", "RandomLighting"]
    assert [type(t).__name__ for t in transforms_side_on][-1] == "RandomFlip"
    assert [type(t).__name__ for t in transforms_top_down][-1] == "RandomDihedral"
    assert transforms_basic[0].deg == 10 and transforms_basic[0].p == 0.75
    assert (transforms_basic[1].b, transforms_basic[1].c) == (0.05, 0.05)
    assert transforms_side_on[2].p == 0.5
    assert (CropType.RANDOM, CropType.CENTER, CropType.NO, CropType.GOOGLENET) == (1, 2, 3, 4)


def test_tfms_from_model_stats_and_steps():
    trn, val = tfms_from_model("resnet34", 224, aug_tfms=transforms_side_on, max_zoom=1.1)
    assert trn.sz == val.sz == 224
    np.testing.assert_allclose(trn.norm.m, [0.485, 0.456, 0.406])
    assert isinstance(trn.scale_step, RandomScale) and isinstance(val.scale_step, Scale)
    assert trn.crop_type == CropType.RANDOM and val.crop_type == CropType.CENTER
    assert val.aug_tfms == [] and len(trn.aug_tfms) == 3

    class Arch:
        name = "custom"
        stats = ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    t2, _ = tfms_from_model(Arch(), 64)
    np.testing.assert_allclose(t2.norm.s, [0.4, 0.5, 0.6])
    t3, _ = tfms_from_model("efficientnet_lite0", 64)
    np.testing.assert_allclose(t3.norm.m, inception_stats[0])
    np.testing.assert_allclose(t3.norm.s, [0.5] * 3)


def test_transforms_call_on_float_and_uint8():
    img = smooth_image(30, 45)
    _, val = tfms_from_model("resnet34", 24)
    a = val(img)
    b = val(img.astype(np.float32) / 255)
    assert a.shape == b.shape == (3, 24, 24) and a.dtype == np.float32
    assert np.abs(a - b).max() < 2 / 255 / 0.224
    x, y = val(img, 3)
    assert y == 3


def test_no_crop_and_googlenet_shapes():
    img = smooth_image(30, 50)
    for ct in (CropType.NO, CropType.GOOGLENET):
        trn, val = tfms_from_model("resnet34", 16, crop_type=ct)
        assert run(trn, img)[0].shape == (3, 16, 16)
        assert run(val, img)[0].shape == (3, 16, 16)
    # NO crop squashes the whole image: compare with PIL's bilinear resize to 16x16 of the
    # (already 16-short-side) scaled image.
    _, val = tfms_from_model("resnet34", 16, crop_type=CropType.NO)
    x, _ = run(val, img)
    assert np.isfinite(x).all()
