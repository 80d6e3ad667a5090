"""fastai 0.7's transform objects called directly (`tfm(x, y)`) for every target type, and the
`Transforms` pipelines called on one image, against OpenCV and numpy.

The random state is fixed by seeding Python's `random` and NumPy's global generator, and the
references replay the same draws from fresh generators with the same seeds, in the order each
`set_state` documents."""
import math
import os
import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from fastai import _native
from fastai import transforms as T
from fastai.transforms import TfmType
from _fixtures import IMAGENET_MEAN, IMAGENET_STD, replay_googlenet, save, smooth_image

NO, PIXEL, COORD, CLASS = TfmType.NO, TfmType.PIXEL, TfmType.COORD, TfmType.CLASS
ALL = (NO, PIXEL, CLASS, COORD)

_rng = np.random.default_rng(7)
X = _rng.random((30, 45, 3)).astype(np.float32)
YP = _rng.random((30, 45, 3)).astype(np.float32)
YC = _rng.integers(0, 4, (30, 45, 2)).astype(np.uint8)
# A box inside, an all-zero padding box, a box partly outside the image.
BOXES = np.array([5, 8, 20, 30, 0, 0, 0, 0, 22, 36, 40, 60], np.float32)


def box_ref(op, boxes, shape):
    """The mask round trip done by hand: numpy slicing, `op`, extent of the non-zeros."""
    out = []
    for b in boxes.reshape(-1, 4):
        m = np.zeros(shape, np.float32)
        b = b.astype(int)
        m[b[0]:b[2], b[1]:b[3]] = 1
        m = op(m)
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        out += [0, 0, 0, 0] if len(rows) == 0 else [rows[0], cols[0], rows[-1], cols[-1]]
    return np.array(out, np.float32)


def check(make, make_op, tfm_ys=ALL, seeds=range(4), geometric=True, class_tol=0):
    """Calls `make(tfm_y)(X, y)` with seeded generators and compares with `make_op(r, npr,
    tfm_y)(img, kind)` applied by hand (kind: 'x', 'pixel', 'class' or 'mask')."""
    for tfm_y in tfm_ys:
        for seed in seeds:
            tfm = make(tfm_y)
            y_in = {NO: 7, PIXEL: YP, CLASS: YC, COORD: BOXES}[tfm_y]
            random.seed(seed)
            np.random.seed(seed)
            x, y = tfm(X, y_in)
            op = make_op(random.Random(seed), np.random.RandomState(seed), tfm_y)
            np.testing.assert_allclose(x, op(X, "x"), rtol=0, atol=2e-6)
            if tfm_y == NO:
                assert y == 7
            elif tfm_y == PIXEL:
                np.testing.assert_allclose(y, op(YP, "pixel"), rtol=0, atol=2e-6)
            elif tfm_y == CLASS:
                want = op(YC, "class")
                assert y.shape == want.shape
                assert np.abs(y.astype(int) - want.astype(int)).max() <= class_tol
            elif geometric:
                np.testing.assert_array_equal(y, box_ref(lambda m: op(m, "mask"), BOXES, X.shape[:2]))
            else:
                np.testing.assert_array_equal(y, BOXES)


def smooth(kind):
    return kind in ("x", "pixel")


def area_or_nearest(kind):
    return cv2.INTER_AREA if smooth(kind) else cv2.INTER_NEAREST


def test_transform_protocol_and_store():
    t = T.Transform()
    assert t.tfm_y == NO and isinstance(t.store, threading.local)
    with pytest.raises(NotImplementedError):
        t(X, 1)

    class Bare(T.Transform):
        def __init__(self):
            pass  # forgets super().__init__: no store, as in 0.7

        def do_transform(self, x, is_y):
            return x
    with pytest.raises(AttributeError):
        Bare().store


def test_scale():
    def op_for(r, npr, tfm_y):
        def op(img, kind):
            h, w = img.shape[:2]
            ratio = 20 / min(h, w)
            size = (max(math.floor(w * ratio), 20), max(math.floor(h * ratio), 20))
            return cv2.resize(img, size, interpolation=area_or_nearest(kind))
        return op
    check(lambda ty: T.Scale(20, ty), op_for)


def test_random_scale():
    def op_for(r, npr, tfm_y):
        mult = r.uniform(1, 1.5) if r.random() < 0.6 else 1
        new = int(mult * 20)

        def op(img, kind):
            h, w = img.shape[:2]
            ratio = new / min(h, w)
            size = (max(math.floor(w * ratio), new), max(math.floor(h * ratio), new))
            return cv2.resize(img, size, interpolation=area_or_nearest(kind))
        return op
    check(lambda ty: T.RandomScale(20, 1.5, p=0.6, tfm_y=ty), op_for, seeds=range(8))


def test_no_crop_and_center_crop():
    check(lambda ty: T.NoCrop(20, ty),
          lambda r, npr, ty: lambda img, kind: cv2.resize(img, (20, 20),
                                                          interpolation=area_or_nearest(kind)))
    check(lambda ty: T.CenterCrop(20, ty),
          lambda r, npr, ty: lambda img, kind: img[5:25, 13:33])


def test_random_crop_and_old_keyword():
    def op_for(r, npr, tfm_y):
        fr, fc = r.uniform(0, 1), r.uniform(0, 1)
        return lambda img, kind: img[math.floor(fr * 10):math.floor(fr * 10) + 20,
                                     math.floor(fc * 25):math.floor(fc * 25) + 20]
    check(lambda ty: T.RandomCrop(20, ty), op_for)
    check(lambda ty: T.RandomCrop(targ=20, tfm_y=ty), op_for, tfm_ys=(NO,))


@pytest.mark.parametrize("mode", [cv2.BORDER_REFLECT, cv2.BORDER_WRAP, cv2.BORDER_CONSTANT])
def test_add_padding(mode):
    check(lambda ty: T.AddPadding(3, mode=mode, tfm_y=ty),
          lambda r, npr, ty: lambda img, kind: cv2.copyMakeBorder(img, 3, 3, 3, 3, mode))


def test_googlenet_resize_same_crop_for_x_and_y():
    def op_for(r, npr, tfm_y):
        flip = r.random() < 0.5
        seed = r.getrandbits(64)
        crop = replay_googlenet(random.Random(seed), 30, 45, flip)
        assert crop is not None, "the replay fell back"
        y1, x1, hh, ww = crop
        interp = lambda kind: cv2.INTER_NEAREST if kind in ("class", "mask") else cv2.INTER_AREA
        return lambda img, kind: cv2.resize(img[y1:y1 + hh, x1:x1 + ww], (20, 20),
                                            interpolation=interp(kind))
    check(lambda ty: T.GoogleNetResize(20, tfm_y=ty), op_for, seeds=range(6))


def test_random_rotate():
    def op_for(r, npr, tfm_y):
        deg = r.random() * 50 - 25
        rp = r.random() < 0.8

        def op(img, kind):
            if not rp:
                return img
            m = cv2.getRotationMatrix2D((45 // 2, 30 // 2), deg, 1)
            border = cv2.BORDER_REFLECT if kind in ("x", "pixel") else cv2.BORDER_CONSTANT
            interp = cv2.INTER_LINEAR if kind == "x" else cv2.INTER_NEAREST
            return cv2.warpAffine(img, m, (45, 30), flags=interp, borderMode=border)
        return op
    check(lambda ty: T.RandomRotate(25, p=0.8, tfm_y=ty), op_for, seeds=range(6))


def test_random_rotate_positional_pixel_lands_in_mode():
    t = T.RandomRotate(0.5, 0.5, TfmType.PIXEL)
    assert t.mode == cv2.BORDER_REFLECT and t.tfm_y == NO


def test_random_lighting():
    def op_for(r, npr, tfm_y):
        b, c = r.random() * 0.4 - 0.2, r.random() * 0.6 - 0.3
        k = c + 1 if c >= 0 else 1 / (1 - c)

        def op(img, kind):
            if kind == "class":
                return img
            mu = img.mean(dtype=np.float64)
            return np.clip((img - mu) * k + mu + b, 0, 1)
        return op
    check(lambda ty: T.RandomLighting(0.2, 0.3, ty), op_for, geometric=False)


def test_flip_and_dihedral():
    def flip_op(r, npr, tfm_y):
        f = r.random() < 0.5
        return lambda img, kind: np.fliplr(img) if f else img
    check(lambda ty: T.RandomFlip(ty), flip_op, seeds=range(6))

    def dih_op(r, npr, tfm_y):
        k, f = r.randint(0, 3), r.random() < 0.5
        return lambda img, kind: np.fliplr(np.rot90(img, k)) if f else np.rot90(img, k)
    check(lambda ty: T.RandomDihedral(ty), dih_op, seeds=range(8))


def test_random_zoom():
    def op_for(r, npr, tfm_y):
        z = 0.1 + 0.3 * r.random()
        m = cv2.getRotationMatrix2D((45 / 2, 30 / 2), 0, 1 + z)
        return lambda img, kind: cv2.warpAffine(
            img, m, (45, 30), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT if smooth(kind) else cv2.BORDER_CONSTANT)
    # Label masks are blended by the bilinear zoom (as in 0.7); OpenCV rounds uint8 in fixed
    # point, this library from float32, so a label may differ by 1.
    check(lambda ty: T.RandomZoom(0.4, zoom_min=0.1, tfm_y=ty), op_for, class_tol=1)


def test_random_stretch():
    def op_for(r, npr, tfm_y):
        s, d = 0.5 * r.random(), r.randint(0, 1)

        def op(img, kind):
            h, w = img.shape[:2]
            fx, fy = (1 + s, 1) if d == 0 else (1, 1 + s)
            big = cv2.resize(img, None, fx=fx, fy=fy, interpolation=cv2.INTER_AREA)
            nr, nc = big.shape[:2]
            return big[(nr - h) // 2:(nr - h) // 2 + h, (nc - w) // 2:(nc - w) // 2 + w]
        return op
    check(lambda ty: T.RandomStretch(0.5, ty), op_for, seeds=range(6), class_tol=1)


def test_random_rotate_zoom_choice_and_delegation():
    ps = [0.3, 0.3, 0.3, 0.1]

    def op_for(r, npr, tfm_y):
        choice = r.random()
        i = next((i for i, c in enumerate(np.cumsum(ps)[:3]) if choice < c), 3)
        if i == 0:
            deg = r.random() * 40 - 20
            r.random()
            m = cv2.getRotationMatrix2D((22, 15), deg, 1)
            return lambda img, kind: cv2.warpAffine(
                img, m, (45, 30), flags=cv2.INTER_LINEAR if kind == "x" else cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_REFLECT if smooth(kind) else cv2.BORDER_CONSTANT)
        if i == 1:
            m = cv2.getRotationMatrix2D((22.5, 15), 0, 1 + 0.3 * r.random())
            return lambda img, kind: cv2.warpAffine(
                img, m, (45, 30), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT if smooth(kind) else cv2.BORDER_CONSTANT)
        if i == 2:
            s, d = 0.4 * r.random(), r.randint(0, 1)

            def st(img, kind):
                big = cv2.resize(img, None, fx=1 + s * (d == 0), fy=1 + s * (d == 1),
                                 interpolation=cv2.INTER_AREA)
                nr, nc = big.shape[:2]
                return big[(nr - 30) // 2:(nr - 30) // 2 + 30, (nc - 45) // 2:(nc - 45) // 2 + 45]
            return st
        return lambda img, kind: img
    check(lambda ty: T.RandomRotateZoom(20, 0.3, 0.4, ps=ps, tfm_y=ty), op_for, seeds=range(12),
          class_tol=1)
    t = T.RandomRotateZoom(9, 0.18, 0.1)
    random.seed(0)
    counts = {}
    for _ in range(4000):
        t.set_state()
        counts[type(t.store.trans).__name__] = counts.get(type(t.store.trans).__name__, 0) + 1
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in counts.values()), counts
    T.RandomRotateZoom(1, 1, 1, ps=[0.4, 0.3, 0.2, 0.1])  # sums to 1 up to round-off


def test_cutout_same_holes_for_x_and_y():
    def op_for(r, npr, tfm_y):
        seed = npr.randint(2 ** 31)

        def op(img, kind):
            g = np.random.RandomState(seed)
            mask = np.ones(img.shape[:2])
            for _ in range(2):
                cy, cx = g.randint(3, 27), g.randint(3, 42)
                mask[max(cy - 3, 0):cy + 3, max(cx - 3, 0):cx + 3] = 0
            return img * mask[:, :, None]
        return op
    check(lambda ty: T.Cutout(2, 6, ty), op_for, geometric=False)


def test_random_blur():
    def op_for(r, npr, tfm_y):
        apply = r.random() < 0.7
        k = npr.choice([3, 7])
        return lambda img, kind: cv2.GaussianBlur(img, (k, k), 0) if apply and kind != "class" else img
    check(lambda ty: T.RandomBlur([2, 4], probability=0.7, tfm_y=ty), op_for, geometric=False,
          seeds=range(6))
    random.seed(0)
    np.random.seed(0)
    x, _ = T.RandomBlur(6, probability=1.0)(X, None)  # 11 taps: a computed Gaussian
    np.testing.assert_allclose(x, cv2.GaussianBlur(X, (11, 11), 0), rtol=0, atol=2e-6)


def test_normalize_denormalize_channel_order():
    m, s = [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]
    x4 = _rng.random((5, 6, 4)).astype(np.float32)
    y4 = _rng.random((5, 6, 4)).astype(np.float32)
    ref = (x4 - np.float32(m)) / np.float32(s)
    a, b = T.Normalize(m, s)(x4, y4)
    np.testing.assert_allclose(a, ref, rtol=1e-6)
    assert b is y4
    a, b = T.Normalize(m, s, tfm_y=PIXEL)(x4, y4)
    np.testing.assert_allclose(b, (y4 - np.float32(m)) / np.float32(s), rtol=1e-6)
    np.testing.assert_allclose(T.Denormalize(m, s)(ref), x4, atol=1e-6)
    x, y = T.ChannelOrder(PIXEL)(x4, y4)
    np.testing.assert_array_equal(x, np.moveaxis(x4, -1, 0))
    np.testing.assert_array_equal(y, np.moveaxis(y4, -1, 0))
    x, y = T.ChannelOrder(CLASS)(x4, YC)
    np.testing.assert_array_equal(y, YC[..., 0])
    assert T.ChannelOrder()(x4, 3)[1] == 3


# The worked example: image 200x300, box [20, 30, 120, 180], sz = 100.
IMG = np.zeros((200, 300, 3), np.float32)
BOX = np.array([20, 30, 120, 180], np.float32)


def test_worked_coord_example():
    x, y = T.Scale(100, COORD, 100)(IMG, BOX)
    assert x.shape == (100, 150, 3)
    np.testing.assert_array_equal(y, [10, 15, 59, 89])
    np.testing.assert_array_equal(
        y, box_ref(lambda m: cv2.resize(m, (150, 100), interpolation=cv2.INTER_NEAREST), BOX, (200, 300)))
    x2, y2 = T.NoCrop(100, COORD, 100)(x, y)
    assert x2.shape == (100, 100, 3)
    np.testing.assert_array_equal(y2, [10, 10, 58, 59])
    _, y3 = T.CenterCrop(100, COORD, 100)(x, y)
    np.testing.assert_array_equal(y3, [10, 0, 58, 63])
    flip = T.RandomFlip(COORD, p=1.0)
    _, y4 = flip(x, y)
    np.testing.assert_array_equal(y4, [10, 61, 58, 134])
    # A box leaving the image is clipped; one that vanishes becomes zeros.
    _, y5 = T.CenterCrop(100, COORD)(x, np.array([0, 20, 50, 40, 0, 0, 50, 20, 0, 0, 0, 0],
                                                  np.float32))
    np.testing.assert_array_equal(y5, [0, 0, 49, 14] + [0] * 8)


def test_targets_do_not_follow_pipeline_tfm_y_into_user_augs():
    trn, _ = T.tfms_from_stats(T.imagenet_stats, 64, aug_tfms=[T.RandomFlip()], tfm_y=COORD,
                               crop_type=T.CropType.NO)
    assert [type(t) for t in trn.tfms] == [T.Scale, T.RandomFlip, T.NoCrop, T.Normalize,
                                           T.ChannelOrder]
    assert trn.tfms[0].tfm_y == COORD and trn.tfms[1].tfm_y == NO and trn.tfms[2].tfm_y == COORD
    # The fused pipeline moves the boxes through the scale and the crop, not the flip.
    assert trn.fusable
    assert trn._pipeline_args()["target"] == ("coord", 64, False, [False], False)


class Recorder(T.Transform):
    """A user transform: records its calls, adds a constant drawn in set_state."""

    def __init__(self, tfm_y=NO):
        super().__init__(tfm_y)
        self.log = []

    def set_state(self):
        self.store.tid = threading.get_ident()
        self.store.add = random.random()
        self.log.append(("set_state", self.store.tid))

    def do_transform(self, x, is_y):
        assert self.store.tid == threading.get_ident()
        self.log.append(("do", is_y, self.store.tid))
        return x + np.float32(self.store.add)


class CoordRecorder(T.CoordTransform):
    def __init__(self, tfm_y=NO):
        super().__init__(tfm_y)
        self.log = []

    def set_state(self):
        self.log.append("set_state")

    def do_transform(self, x, is_y):
        self.log.append("mask" if is_y else "x")
        return x


def test_user_transform_through_transforms_call():
    rec = Recorder(PIXEL)
    trn, _ = T.tfms_from_stats(T.imagenet_stats, 16, aug_tfms=[rec], crop_type=T.CropType.CENTER,
                               tfm_y=PIXEL)
    assert not trn.fusable
    with pytest.raises(NotImplementedError, match="Recorder.*PIXEL.*runs only in Python"):
        trn._pipeline
    plain, _ = T.tfms_from_stats(T.imagenet_stats, 16, aug_tfms=[T.RandomFlip(), Recorder()])
    with pytest.raises(NotImplementedError, match="Recorder.*runs only in Python"):
        plain._pipeline
    img, y = smooth_image(20, 24).astype(np.float32) / 255, YP[:20, :24]
    random.seed(1)
    x, yy = trn(img, y)
    assert x.shape == (3, 16, 16) and yy.shape == (3, 16, 16) and x.dtype == np.float32
    tid = threading.get_ident()
    assert rec.log == [("set_state", tid), ("do", False, tid), ("do", True, tid)]
    # x = normalise(centre crop(scale(img)) + add), with add the one draw of set_state.
    add = random.Random(1).random()
    s = cv2.resize(img, (19, 16), interpolation=cv2.INTER_AREA)[:, 2:18]
    ref = np.moveaxis((s + np.float32(add) - IMAGENET_MEAN) / IMAGENET_STD, -1, 0)
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-5)

    # Loader threads share the instance; each call's state stays in its thread.
    rec.log.clear()
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda _: trn(img, y), range(40)))
    assert sum(1 for e in rec.log if e[0] == "set_state") == 40

    crec = CoordRecorder(COORD)
    trn2, _ = T.tfms_from_stats(T.imagenet_stats, 16, aug_tfms=[crec], tfm_y=COORD)
    trn2(img, np.array([1, 2, 10, 12, 3, 3, 8, 8], np.float32))
    assert crec.log == ["set_state", "mask", "mask", "x"]


def test_fusable_by_exact_type():
    trn, val = T.tfms_from_model("resnet34", 32, aug_tfms=T.transforms_side_on, max_zoom=1.1, pad=2)
    assert trn.fusable and val.fusable
    assert isinstance(trn._pipeline, _native.Pipeline)

    class RandomFlip(T.RandomFlip):  # a user class of the same name, overriding nothing else
        pass
    t, _ = T.tfms_from_model("resnet34", 32, aug_tfms=[T.RandomLighting(0.1, 0.1), RandomFlip()])
    assert not t.fusable
    with pytest.raises(NotImplementedError, match="RandomFlip"):
        t._pipeline
    t, _ = T.tfms_from_model("resnet34", 32, aug_tfms=[T.RandomRotate(10, mode=cv2.BORDER_WRAP)])
    assert not t.fusable
    t, _ = T.tfms_from_model("resnet34", 32, aug_tfms=[T.RandomRotate(10, tfm_y=CLASS)])
    assert not t.fusable
    # A pipeline that transforms y through built-in steps only is fused too (with y).
    t, _ = T.tfms_from_model("resnet34", 32, tfm_y=PIXEL)
    assert t.fusable


def test_pipeline_steps_per_0_7():
    trn, val = T.tfms_from_model("resnet34", 32, aug_tfms=T.transforms_side_on, max_zoom=1.1,
                                 pad=4, tfm_y=CLASS, sz_y=16)
    assert [type(t) for t in trn.tfms] == [T.RandomScale, T.AddPadding, T.RandomRotate,
                                           T.RandomLighting, T.RandomFlip, T.RandomCrop,
                                           T.Normalize, T.ChannelOrder]
    assert [type(t) for t in val.tfms] == [T.Scale, T.AddPadding, T.CenterCrop, T.Normalize,
                                           T.ChannelOrder]
    assert trn.tfms[0].tfm_y == CLASS and trn.tfms[0].sz_y == 16 and trn.tfms[1].tfm_y == NO
    assert trn.tfms[5].sz_y == 16 and trn.tfms[-1].tfm_y == CLASS and trn.tfms[-2].tfm_y == CLASS
    g, gv = T.tfms_from_model("resnet34", 32, crop_type=T.CropType.GOOGLENET)
    assert [type(t) for t in g.tfms] == [T.GoogleNetResize, T.Normalize, T.ChannelOrder]
    assert g.tfms[0].min_area_frac == 0.08 and g.tfms[0].tfm_y == NO
    assert type(gv.tfms[1]) is T.CenterCrop
    aug = [T.RandomFlip()]
    T.tfms_from_model("resnet34", 32, aug_tfms=aug, crop_type=T.CropType.GOOGLENET)
    assert len(aug) == 1  # the caller's list is not appended to


def test_transforms_call_matches_hand_composition_and_class_masks():
    _, val = T.tfms_from_stats(T.imagenet_stats, 20, tfm_y=CLASS, crop_type=T.CropType.NO)
    img = X
    x, y = val(img, YC)
    ref = cv2.resize(cv2.resize(img, (30, 20), interpolation=cv2.INTER_AREA), (20, 20),
                     interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(x, np.moveaxis((ref - IMAGENET_MEAN) / IMAGENET_STD, -1, 0),
                               rtol=0, atol=1e-5)
    m = cv2.resize(cv2.resize(YC, (30, 20), interpolation=cv2.INTER_NEAREST), (20, 20),
                   interpolation=cv2.INTER_NEAREST)
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, m[..., 0])
    # Without a target the image alone is transformed, whatever tfm_y.
    np.testing.assert_array_equal(val(img), x)


def test_val_tfms_close_to_the_fused_loader(tmp_path):
    """`val_tfms(open_image(fn))` against the fused pipeline the loaders run on the same file.
    Both scale the short side to sz and take the centre crop; the fused path resamples with an
    antialiased bilinear filter where 0.7 used INTER_AREA, so on a smooth image they agree to a
    few levels of 255 (normalised: divided by std ~0.22)."""
    from fastai.dataset import open_image
    arr = smooth_image(90, 120)
    fn = save(arr, tmp_path / "a.png")
    _, val = T.tfms_from_model("resnet34", 48)
    img = open_image(fn)
    ours = val(img)
    fused, _ = _native.transform_image(np.ascontiguousarray(img), val._pipeline, 0, 0, 0)
    assert ours.shape == fused.shape == (3, 48, 48) and ours.dtype == np.float32
    diff = np.abs(ours - fused) * 0.225
    # Measured: mean 0.23, max 1.07 levels of 255.
    assert diff.mean() < 1 / 255 and diff.max() < 4 / 255, (diff.mean(), diff.max())


def test_star_import_gives_cv2_lazily():
    code = ("import sys\nfrom fastai.conv_learner import *\n"
            "assert 'cv2' not in sys.modules, 'imported eagerly'\n"
            "assert cv2.INTER_AREA == 3 and 'cv2' in sys.modules\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    missing = ("import sys\nsys.modules['cv2'] = None\nfrom fastai.transforms import *\n"
               "assert cv2.BORDER_REFLECT == 2  # imports' stand-in: the constants only\n"
               "import fastai.transforms as T\n"
               "assert T.scale_min(T.np.zeros((4, 6, 3), T.np.float32), 2).shape == (2, 3, 3)\n")
    subprocess.run([sys.executable, "-c", missing], check=True, env=env, timeout=300)
