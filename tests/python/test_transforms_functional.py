"""fastai 0.7's functional transforms and the OpenCV-compatible kernels under them, against
OpenCV itself (a test-only dependency), numpy and hand-computed values."""
import math
import random

import cv2
import numpy as np
import pytest

from fastai import _native
from fastai import transforms as T

from _fixtures import replay_googlenet

RNG = np.random.default_rng(20)


def rand_img(h, w, c=3, dtype=np.float32):
    return RNG.random((h, w, c)).astype(dtype) if c else RNG.random((h, w)).astype(dtype)


def close(a, b, tol=2e-6):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol)


# OpenCV's float32 resize and warp are matched to within float rounding (their sums run in
# another order for some sizes); nearest neighbour and area are exact in practice.
@pytest.mark.parametrize("interp", [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA])
def test_cv_resize_matches_opencv(interp):
    rng = np.random.default_rng(interp)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        ow, oh = (int(v) for v in rng.integers(1, 70, 2))
        c = int(rng.integers(1, 5))
        img = rng.random((h, w, c)).astype(np.float32)
        ref = cv2.resize(img, (ow, oh), interpolation=interp)
        out = _native.cv_resize(img, ow, oh, interp)
        close(out, ref.reshape(oh, ow, c))


def test_cv_resize_keeps_ndim_and_many_channels():
    img = rand_img(9, 13, 0)
    out = _native.cv_resize(img, 5, 4, cv2.INTER_AREA)
    assert out.shape == (4, 5)
    close(out, cv2.resize(img, (5, 4), interpolation=cv2.INTER_AREA))
    # OpenCV's area resize stops at 4 channels; each channel is resized on its own.
    img7 = rand_img(11, 8, 7)
    out7 = _native.cv_resize(img7, 5, 6, cv2.INTER_AREA)
    for ch in range(7):
        close(out7[..., ch], cv2.resize(img7[..., ch], (5, 6), interpolation=cv2.INTER_AREA))


def test_cv_resize_worked_values():
    row = np.array([[0.0, 1.0]], np.float32)
    for w, want in [(5, [0, 0, 0.5, 1, 1]), (4, [0, 0, 1, 1]), (3, [0, 0.5, 1])]:
        close(_native.cv_resize(row, w, 1, T.INTER_AREA)[0], want)
    ten = np.arange(10, dtype=np.float32)[None]
    close(_native.cv_resize(ten, 4, 1, T.INTER_NEAREST)[0], [0, 2, 5, 7])


@pytest.mark.parametrize("border", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("interp", [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA])
def test_cv_warp_affine_matches_opencv(border, interp):
    rng = np.random.default_rng(border * 10 + interp)
    for _ in range(15):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        ow, oh = (int(v) for v in rng.integers(1, 50, 2))
        c = int(rng.integers(1, 6))
        img = rng.random((h, w, c)).astype(np.float32)
        m = cv2.getRotationMatrix2D((float(rng.random() * w), float(rng.random() * h)),
                                    float(rng.random() * 360), float(0.3 + rng.random() * 2))
        m[:, 2] += rng.normal(0, 5, 2)
        ref = cv2.warpAffine(img, m, (ow, oh), flags=interp, borderMode=border)
        out = _native.cv_warp_affine(img, m.tolist(), ow, oh, interp, border)
        close(out, ref.reshape(oh, ow, c), tol=5e-7)


def test_cv_kernels_name_bad_arguments():
    img = rand_img(4, 4)
    with pytest.raises(ValueError, match="interpolation"):
        _native.cv_resize(img, 2, 2, cv2.INTER_CUBIC)
    with pytest.raises(ValueError, match="border"):
        _native.cv_warp_affine(img, [[1, 0, 0], [0, 1, 0]], 4, 4, 1, 7)
    with pytest.raises(ValueError, match="size"):
        _native.cv_resize(img, 0, 2, 1)
    with pytest.raises(ValueError, match="img"):
        _native.cv_resize(np.zeros((2, 2, 2, 2), np.float32), 2, 2, 1)


def test_opencv_constants():
    for name in ["BORDER_CONSTANT", "BORDER_REPLICATE", "BORDER_REFLECT", "BORDER_WRAP",
                 "BORDER_REFLECT_101", "BORDER_DEFAULT", "INTER_NEAREST", "INTER_LINEAR",
                 "INTER_AREA", "INTER_CUBIC", "WARP_FILL_OUTLIERS"]:
        assert getattr(T, name) == getattr(cv2, name), name


def test_scale_to():
    for x, ratio, targ in [(375, 224 / 375, 224), (500, 224 / 375, 224), (480, 224 / 480, 224),
                           (33, 7 / 33, 7), (49, 0.1, 5)]:
        assert T.scale_to(x, ratio, targ) == max(math.floor(x * ratio), targ)


@pytest.mark.parametrize("shape,want", [((375, 500), (224, 298)), ((499, 480), (232, 224)),
                                        ((333, 500), (224, 336)), ((281, 500), (224, 398)),
                                        ((32, 32), (224, 224))])
def test_scale_min_sizes_and_pixels(shape, want):
    img = rand_img(*shape)
    out = T.scale_min(img, 224)
    assert out.shape[:2] == want
    close(out, cv2.resize(img, (want[1], want[0]), interpolation=cv2.INTER_AREA))


def test_scale_min_2d_and_interpolation():
    img = rand_img(30, 40, 0)
    out = T.scale_min(img, 12, interpolation=cv2.INTER_NEAREST)
    assert out.shape == (12, 16)
    close(out, cv2.resize(img, (16, 12), interpolation=cv2.INTER_NEAREST))


def test_integer_masks_stay_exact_under_nearest():
    mask = RNG.integers(0, 5, (20, 30, 2)).astype(np.uint8)
    out = T.scale_min(mask, 10, interpolation=T.INTER_NEAREST)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.resize(mask, (15, 10), interpolation=cv2.INTER_NEAREST))
    rot = T.rotate_cv(mask, 33, interpolation=T.INTER_NEAREST)
    m = cv2.getRotationMatrix2D((15, 10), 33, 1)
    np.testing.assert_array_equal(rot, cv2.warpAffine(mask, m, (30, 20), flags=cv2.INTER_NEAREST))


def test_zoom_cv():
    img = rand_img(100, 100)
    assert T.zoom_cv(img, 0) is img
    m = cv2.getRotationMatrix2D((50.0, 50.0), 0, 1.5)
    close(m, [[1.5, 0, -25], [0, 1.5, -25]], tol=1e-12)
    close(T.zoom_cv(img, 0.5), cv2.warpAffine(img, m, (100, 100)), tol=5e-7)
    img2 = rand_img(31, 47)
    m2 = cv2.getRotationMatrix2D((47 / 2, 31 / 2), 0, 0.8)
    close(T.zoom_cv(img2, -0.2), cv2.warpAffine(img2, m2, (47, 31)), tol=5e-7)


def test_stretch_cv():
    img = rand_img(40, 100)
    assert T.stretch_cv(img, 0, 0) is img
    out = T.stretch_cv(img, 0.5, 0)
    big = cv2.resize(img, None, fx=1.5, fy=1.0, interpolation=cv2.INTER_AREA)
    assert big.shape[1] == 150
    close(out, big[:, 25:125])
    # OpenCV rounds the new size half to even: 33 * 1.5 = 49.5 -> 50, 35 * 1.5 = 52.5 -> 52.
    for h in (33, 35):
        img = rand_img(h, 20)
        big = cv2.resize(img, None, fx=1.0, fy=1.5, interpolation=cv2.INTER_AREA)
        nr = big.shape[0]
        close(T.stretch_cv(img, 0, 0.5), big[(nr - h) // 2:(nr - h) // 2 + h])


def test_dihedral():
    x = np.array([[0, 1, 2], [3, 4, 5]])
    want = {1: [[2, 5], [1, 4], [0, 3]], 2: [[5, 4, 3], [2, 1, 0]], 4: [[2, 1, 0], [5, 4, 3]],
            6: [[3, 4, 5], [0, 1, 2]], 7: [[0, 3], [1, 4], [2, 5]]}
    for d, w in want.items():
        np.testing.assert_array_equal(T.dihedral(x, d), w)
    img = rand_img(5, 7)
    for d in range(8):
        ref = np.rot90(img, d % 4)
        ref = np.fliplr(ref) if d >= 4 else ref
        np.testing.assert_array_equal(T.dihedral(img, d), ref)
        np.testing.assert_array_equal(T.det_dihedral(d)(img), ref)


def test_lighting():
    im = np.array([[0.2, 0.4], [0.6, 0.8]], np.float32)
    assert T.lighting(im, 0, 1) is im
    close(T.lighting(im, 0.1, 1.5), [[0.15, 0.45], [0.75, 1.0]], tol=1e-6)
    img = rand_img(6, 7)
    mu = img.mean(dtype=np.float64)
    ref = np.clip((img - mu) * 0.7 + mu - 0.05, 0, 1)
    out = T.lighting(img, -0.05, 0.7)
    assert out.dtype == np.float32
    close(out, ref, tol=1e-6)
    close(T.det_lighting(-0.05, 0.7)(img), ref, tol=1e-6)


@pytest.mark.parametrize("shape,deg,mode", [((224, 224), 10, 0), ((37, 52), -23.5, 2),
                                            ((20, 31), 181, 4), ((16, 9), 45, 1)])
def test_rotate_cv(shape, deg, mode):
    img = rand_img(*shape)
    r, c = shape
    m = cv2.getRotationMatrix2D((c // 2, r // 2), deg, 1)
    ref = cv2.warpAffine(img, m, (c, r), borderMode=mode, flags=cv2.INTER_AREA + cv2.WARP_FILL_OUTLIERS)
    close(T.rotate_cv(img, deg, mode=mode), ref, tol=5e-7)
    if mode == 0:
        close(T.det_rotate(deg)(img), ref, tol=5e-7)


def test_rotate_cv_worked_values():
    m = cv2.getRotationMatrix2D((112, 112), 10, 1)
    close(m, [[0.98481, 0.17365, -17.74706], [-0.17365, 0.98481, 21.15013]], tol=1e-5)
    bar = np.array([[0, .1, 0], [0, .2, 0], [0, .3, 0]], np.float32)
    close(T.rotate_cv(bar, 90), [[0, 0, 0], [.1, .2, .3], [0, 0, 0]], tol=1e-6)


def test_no_crop_center_crop_crop():
    img = rand_img(30, 45)
    close(T.no_crop(img), cv2.resize(img, (30, 30), interpolation=cv2.INTER_AREA))
    close(T.no_crop(img, 17), cv2.resize(img, (17, 17), interpolation=cv2.INTER_AREA))
    for shape, s, (top, left) in [((224, 298), None, (0, 37)), ((225, 300), 224, (1, 38)),
                                  ((40, 40), 32, (4, 4))]:
        im = rand_img(*shape)
        side = s or min(shape)
        np.testing.assert_array_equal(T.center_crop(im, s), im[top:top + side, left:left + side])
    np.testing.assert_array_equal(T.crop(img, 3, 5, 10), img[3:13, 5:15])


def test_googlenet_resize_replays_the_draws():
    img = rand_img(75, 100)
    crops = 0
    for seed in range(30):
        random.seed(seed)
        out = T.googlenet_resize(img, 20, 0.08, 0.75, 1.333, seed % 2 == 0)
        win = replay_googlenet(random.Random(seed), 75, 100, seed % 2 == 0)
        assert win is not None
        y1, x1, hh, ww = win
        crops += 1
        close(out, cv2.resize(img[y1:y1 + hh, x1:x1 + ww], (20, 20), interpolation=cv2.INTER_AREA))
    assert crops == 30


def test_googlenet_resize_falls_back():
    img = rand_img(75, 100)
    random.seed(1)
    out = T.googlenet_resize(img, 20, 1.0, 224, 300, False)
    small = cv2.resize(img, (26, 20), interpolation=cv2.INTER_AREA)
    close(out, small[:, 3:23])


def test_cutout_replays_numpy_draws():
    img = rand_img(30, 40)
    np.random.seed(5)
    out = T.cutout(img, 3, 8)
    np.random.seed(5)
    mask = np.ones((30, 40))
    for _ in range(3):
        cy = np.random.randint(4, 26)
        cx = np.random.randint(4, 36)
        mask[max(cy - 4, 0):min(cy + 4, 30), max(cx - 4, 0):min(cx + 4, 40)] = 0
    assert out.dtype == np.float64  # an int32 mask times float32, as in 0.7
    np.testing.assert_array_equal(out, img * mask[:, :, None])
    with pytest.raises(ValueError):
        T.cutout(img, 1, 30)


def test_compose_and_rand0():
    fns = [lambda x, y: (x + 1, y), lambda x, y: (x * 2, None if y is None else y - 1)]
    assert T.compose(1, None, fns) == 4
    assert T.compose(1, 5, fns) == (4, 4)
    random.seed(3)
    got = [T.rand0(2.5) for _ in range(5)]
    random.seed(3)
    assert got == [random.random() * 5 - 2.5 for _ in range(5)]


def test_det_stretch_and_zoom():
    img = rand_img(21, 30)
    np.testing.assert_array_equal(T.det_stretch(0.3, 0)(img), T.stretch_cv(img, 0.3, 0))
    np.testing.assert_array_equal(T.det_zoom(0.2)(img), T.zoom_cv(img, 0.2))


def test_to_bb_coords2px_make_square():
    m = np.zeros((10, 12))
    m[2:5, 3:9] = 1
    close(T.to_bb(m), [2, 3, 4, 8], tol=0)
    assert T.to_bb(m).dtype == np.float32
    close(T.to_bb(np.zeros((4, 4))), [0, 0, 0, 0], tol=0)
    x = np.zeros((10, 12, 3))
    sq = T.CoordTransform.make_square(np.array([2.9, 3.2, 5.99, 9.0]), x)
    np.testing.assert_array_equal(sq, m)
    assert sq.dtype == np.float64
    px = T.coords2px(np.array([2.5, 3.5, 4.4, 8.6]), x)
    want = np.zeros((10, 12))
    for rr, cc in [(2, 4), (2, 9), (4, 4), (4, 9)]:
        want[rr, cc] = 1
    np.testing.assert_array_equal(px, want)


def test_googlenet_resize_crops_with_its_parameters_and_falls_back_without():
    """0.7's pipelines passed (sz, tfm_y, sz_y) positionally, so every crop fell back; with the
    intended parameters 100 draws on a 375x500 image all crop, with an impossible aspect range
    all fall back to the centre square."""
    img = rand_img(375, 500)
    fallback = T.center_crop(T.scale_min(img, 16))
    random.seed(0)
    outs = [T.googlenet_resize(img, 16, 0.08, 0.75, 1.333, False) for _ in range(100)]
    assert not any(np.array_equal(o, fallback) for o in outs)
    outs = [T.googlenet_resize(img, 16, 1.0, 224, 300, False) for _ in range(100)]
    assert all(np.array_equal(o, fallback) for o in outs)
    g = T.GoogleNetResize(16)
    assert (g.min_area_frac, g.min_aspect_ratio, g.max_aspect_ratio) == (0.08, 0.75, 1.333)
