"""tfm_y inside the fused Rust pipeline: label masks (CLASS), image-like targets (PIXEL) and boxes
(COORD) go through the same draws as the image, checked against 0.7's step-by-step handling redone
with OpenCV and numpy from the draws the pipeline reports (`_native.transform_item`)."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

cv2 = pytest.importorskip("cv2")

from fastai import _native  # noqa: E402
from fastai.dataset import ImageClassifierData  # noqa: E402
from fastai.transforms import (AddPadding, CropType, RandomDihedral, RandomFlip,  # noqa: E402
                               RandomLighting, RandomRotate, RandomScale, RandomStretch,
                               RandomZoom, TfmType, Transform, Transforms, tfms_from_stats)
from test_transforms_in_loaders import MaskDataset as LoaderMaskDataset  # noqa: E402 (reads mask files)

STATS = (np.array([0.5] * 3, np.float32), np.array([0.25] * 3, np.float32))


def _scale_min_dims(r, c, targ):
    ratio = targ / min(r, c)
    return max(math.floor(r * ratio), targ), max(math.floor(c * ratio), targ)


def _steps(params, kinds):
    """The recorded draws of the augmentations whose kinds are `kinds` (None: not on y)."""
    return [(d, k) for d, k in zip(params["augs"], kinds)]


def _ref(m, params, sz, kinds, crop):
    """0.7's y steps with OpenCV: `m` a 2-D float mask; nearest everywhere, black borders."""
    r, c = m.shape
    h, w = _scale_min_dims(r, c, int(params["scale_m"] * sz))
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
    for d, on in _steps(params, kinds):
        if not on:
            continue
        r, c = m.shape
        if d[0] == "flip" and d[1]:
            m = np.fliplr(m).copy()
        elif d[0] == "dihedral":
            m = np.rot90(m, d[1])
            m = np.fliplr(m).copy() if d[2] else m.copy()
        elif d[0] == "rotate" and d[1] is not None:
            mat = cv2.getRotationMatrix2D((c // 2, r // 2), d[1], 1)
            m = cv2.warpAffine(m, mat, (c, r), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT)
        elif d[0] == "zoom" and d[1] != 0:
            mat = cv2.getRotationMatrix2D((c / 2, r / 2), 0, 1 + d[1])
            m = cv2.warpAffine(m, mat, (c, r), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT)
    r, c = m.shape
    if crop == "center":
        t, left = math.ceil((r - sz) / 2), math.ceil((c - sz) / 2)
        return m[t:t + sz, left:left + sz]
    if crop == "random":
        u, v = params["crop_u"]
        t, left = math.floor(u * (r - sz)), math.floor(v * (c - sz))
        return m[t:t + sz, left:left + sz]
    return cv2.resize(m, (sz, sz), interpolation=cv2.INTER_NEAREST)


def _to_bb(m):
    rows, cols = np.nonzero(m)
    if len(rows) == 0:
        return [0, 0, 0, 0]
    return [rows.min(), cols.min(), rows.max(), cols.max()]


def _box_ref(shape, box, params, sz, kinds, crop):
    """0.7's CoordTransform: at every coordinate-aware step (scale, each aug on y, crop) the box
    is filled into a mask (end-exclusive, truncated), the step applied, the extent read back."""
    box = [int(v) for v in box]
    r, c = shape

    def fill(b, r, c):
        m = np.zeros((r, c), np.float32)
        m[b[0]:b[2], b[1]:b[3]] = 1
        return m

    m = fill(box, r, c)
    h, w = _scale_min_dims(r, c, int(params["scale_m"] * sz))
    box = _to_bb(cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST))
    r, c = h, w
    for d, on in _steps(params, kinds):
        if not on:
            continue
        m = fill(box, r, c)
        if d[0] == "flip" and d[1]:
            m = np.fliplr(m)
        elif d[0] == "dihedral":
            m = np.rot90(m, d[1])
            m = np.fliplr(m) if d[2] else m
        elif d[0] == "rotate" and d[1] is not None:
            mat = cv2.getRotationMatrix2D((c // 2, r // 2), d[1], 1)
            m = cv2.warpAffine(m, mat, (c, r), flags=cv2.INTER_NEAREST)
        elif d[0] == "zoom" and d[1] != 0:
            mat = cv2.getRotationMatrix2D((c / 2, r / 2), 0, 1 + d[1])
            m = cv2.warpAffine(m, mat, (c, r), flags=cv2.INTER_NEAREST)
        box = _to_bb(m)
        r, c = m.shape
    m = fill(box, r, c)
    if crop == "no":
        m = cv2.resize(m, (sz, sz), interpolation=cv2.INTER_NEAREST)
    else:
        if crop == "center":
            t, left = math.ceil((r - sz) / 2), math.ceil((c - sz) / 2)
        else:
            u, v = params["crop_u"]
            t, left = math.floor(u * (r - sz)), math.floor(v * (c - sz))
        m = m[t:t + sz, left:left + sz]
    return np.asarray(_to_bb(m), np.float32)


def _blob_mask(h, w, seed):
    """Labels 0..3 in blobs (an int64 HWC mask, channel 0 the labels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), np.int64)
    for label in (1, 2, 3):
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(h / 6, h / 3)
        m[(yy - cy) ** 2 + (xx - cx) ** 2 < rad ** 2] = label
    return np.repeat(m[..., None], 3, axis=2)


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    return np.clip(cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _pipeline(tfm_y, crop, augs, sz=32, max_zoom=1.3, **kw):
    trn, _ = tfms_from_stats(STATS, sz, aug_tfms=augs, max_zoom=max_zoom, crop_type=crop,
                             tfm_y=tfm_y, **kw)
    assert trn.fusable, trn._unfusable()
    return trn


CROPS = [(CropType.RANDOM, "random"), (CropType.CENTER, "center"), (CropType.NO, "no")]
EXACT_AUGS = [  # steps whose y 0.7 moved by whole pixels: the fused y equals it exactly
    lambda t: [RandomFlip(tfm_y=t)],
    lambda t: [RandomDihedral(tfm_y=t)],
    lambda t: [RandomFlip(tfm_y=t), RandomLighting(0.1, 0.1, tfm_y=t), RandomDihedral(tfm_y=t)],
    lambda t: [RandomFlip(), RandomDihedral(tfm_y=t)],  # the flip moves x only, as in 0.7
]


@pytest.mark.parametrize("crop,crop_name", CROPS)
@pytest.mark.parametrize("augs", range(len(EXACT_AUGS)))
def test_class_masks_equal_0_7_steps_for_whole_pixel_moves(crop, crop_name, augs):
    tfm = _pipeline(TfmType.CLASS, crop, EXACT_AUGS[augs](TfmType.CLASS))
    kinds = [t.tfm_y != TfmType.NO for t in tfm.aug_tfms]
    for i in range(12):
        img, mask = _image(45, 61, i), _blob_mask(45, 61, i)
        x, y, params = _native.transform_item(img, mask, tfm._pipeline, 7, 0, i)
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == np.int64
        ref = _ref(mask[..., 0].astype(np.float32), params, 32, kinds, crop_name)
        np.testing.assert_array_equal(y, ref.astype(np.int64), err_msg=f"item {i} {params}")


@pytest.mark.parametrize("aug", ["rotate", "zoom", "stretch", "pad"])
def test_class_masks_through_warps_keep_their_labels_and_follow_0_7(aug):
    t = TfmType.CLASS
    augs = {"rotate": [RandomRotate(25, p=1, tfm_y=t)], "zoom": [RandomZoom(0.4, tfm_y=t)],
            "stretch": [RandomStretch(0.3, tfm_y=t)], "pad": []}[aug]
    kw = {"pad": 4} if aug == "pad" else {}
    tfm = _pipeline(t, CropType.CENTER, augs, **kw)
    if aug == "pad":
        # A padding step that takes y, built by the user (image_gen's pads x alone, as 0.7).
        tfm.pad_step = AddPadding(4, tfm_y=t)
        tfm._native_pipeline = None
    kinds = [True] * len(augs)
    bad = []
    for i in range(10):
        img, mask = _image(40, 52, i), _blob_mask(40, 52, i)
        _, y, params = _native.transform_item(img, mask, tfm._pipeline, 3, 0, i)
        assert set(np.unique(y)) <= {0, 1, 2, 3}, "labels are never blended"
        if aug in ("rotate", "zoom"):
            ref = _ref(mask[..., 0].astype(np.float32), params, 32, kinds, "center")
            bad.append((y != ref).mean())
    if bad:
        # The fused warp turns about the float centre (0.7: the integer one) in one pass:
        # labels differ along the blobs' edges only.
        assert np.mean(bad) < 0.06, bad


@pytest.mark.parametrize("crop,crop_name", CROPS)
@pytest.mark.parametrize("augs", range(len(EXACT_AUGS)))
def test_boxes_equal_0_7_to_bb_step_by_step(crop, crop_name, augs):
    tfm = _pipeline(TfmType.COORD, crop, EXACT_AUGS[augs](TfmType.COORD))
    kinds = [t.tfm_y != TfmType.NO and not isinstance(t, RandomLighting) for t in tfm.aug_tfms]
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = 50 + i, 70 - i
        boxes = np.array([rng.uniform(0, h / 2), rng.uniform(0, w / 2), rng.uniform(h / 2, h),
                          rng.uniform(w / 2, w), 0, 0, 0, 0, h - 5, w - 8, h + 10, w + 3],
                         np.float32)
        _, y, params = _native.transform_item(_image(h, w, i), boxes, tfm._pipeline, 11, 0, i)
        assert y.shape == (12,) and y.dtype == np.float32
        for j in range(3):
            ref = _box_ref((h, w), boxes[4 * j:4 * j + 4], params, 32, kinds, crop_name)
            np.testing.assert_array_equal(y[4 * j:4 * j + 4], ref, err_msg=f"item {i} box {j} {params}")


def test_rotated_boxes_follow_0_7_within_a_pixel_or_two():
    t = TfmType.COORD
    tfm = _pipeline(t, CropType.CENTER, [RandomRotate(20, p=1, tfm_y=t), RandomZoom(0.3, tfm_y=t)])
    for i in range(10):
        boxes = np.array([10, 12, 30, 40], np.float32)
        _, y, params = _native.transform_item(_image(48, 60, i), boxes, tfm._pipeline, 5, 0, i)
        ref = _box_ref((48, 60), boxes, params, 32, [True, True], "center")
        assert np.abs(y - ref).max() <= 2, (y, ref, params)


def test_pixel_targets_take_the_image_geometry_without_lighting():
    t = TfmType.PIXEL
    tfm = _pipeline(t, CropType.RANDOM, [RandomFlip(tfm_y=t), RandomLighting(0.3, 0.3),
                                         RandomDihedral(tfm_y=t)], norm_y=False)
    for i in range(8):
        img = _image(40, 56, i)
        target = img[..., ::-1].astype(np.float32) / 255  # another image, same geometry
        x, y, params = _native.transform_item(img, target, tfm._pipeline, 2, 0, i)
        assert y.shape == (3, 32, 32) and y.dtype == np.float32
        # Reference: 0.7's steps on each channel with OpenCV, INTER_AREA for the scale.
        r, c = target.shape[:2]
        h, w = _scale_min_dims(r, c, int(params["scale_m"] * 32))
        m = cv2.resize(target, (w, h), interpolation=cv2.INTER_AREA)
        for d in params["augs"]:
            if d[0] == "flip" and d[1]:
                m = np.fliplr(m)
            elif d[0] == "dihedral":
                m = np.rot90(m, d[1])
                m = np.fliplr(m) if d[2] else m
        u, v = params["crop_u"]
        top, left = math.floor(u * (m.shape[0] - 32)), math.floor(v * (m.shape[1] - 32))
        ref = np.moveaxis(m[top:top + 32, left:left + 32], 2, 0)
        diff = np.abs(y - ref)
        assert diff.mean() < 2 / 255 and diff.max() < 0.1, (diff.mean(), diff.max())


def test_pixel_targets_are_normalised_with_norm_y():
    t = TfmType.PIXEL
    tfm = _pipeline(t, CropType.CENTER, [], max_zoom=None)
    img = _image(40, 40, 0)
    x, y, _ = _native.transform_item(img, img.astype(np.float32) / 255, tfm._pipeline, 0, 0, 0)
    np.testing.assert_allclose(y, x, atol=0.02)  # both normalised: (v - 0.5) / 0.25


def test_what_stays_per_item():
    t = TfmType.CLASS

    class Mine(Transform):
        def do_transform(self, x, is_y):
            return x

    def fusable(tfm_y, augs, **kw):
        return tfms_from_stats(STATS, 32, aug_tfms=augs, tfm_y=tfm_y, **kw)[0].fusable

    assert fusable(t, [RandomFlip(tfm_y=t), RandomLighting(0.1, 0.1, tfm_y=t)])
    assert not fusable(t, [Mine(tfm_y=t)])
    assert not fusable(TfmType.PIXEL, [RandomLighting(0.1, 0.1, tfm_y=TfmType.PIXEL)])
    assert not fusable(t, [RandomFlip(tfm_y=TfmType.COORD)])
    assert not fusable(t, [], crop_type=CropType.GOOGLENET)
    assert not fusable(TfmType.NO, [RandomFlip(tfm_y=t)])
    # A scale step that leaves y alone is not what image_gen builds: per item.
    tfm = Transforms(32, [RandomScale(32, 1.2), RandomFlip(tfm_y=t)], None, None,
                     CropType.CENTER, tfm_y=t)
    assert not tfm.fusable


class MaskDataset(LoaderMaskDataset):
    """The loader tests' mask-reading subclass, with four labels."""

    def get_c(self):
        return 4


def test_the_loaders_run_masks_fused_and_match_transform_item(tmp_path):
    names, masks = [], []
    for i in range(6):
        os.makedirs(tmp_path / "imgs", exist_ok=True)
        os.makedirs(tmp_path / "masks", exist_ok=True)
        Image.fromarray(_image(40, 52, i)).save(tmp_path / "imgs" / f"{i}.png")
        Image.fromarray(_blob_mask(40, 52, i).astype(np.uint8)).save(tmp_path / "masks" / f"{i}.png")
        names.append(f"imgs/{i}.png")
        masks.append(f"masks/{i}.png")
    names, masks = np.array(names), np.array(masks)
    t = TfmType.CLASS
    tfms = tfms_from_stats(STATS, 32, aug_tfms=[RandomRotate(15, tfm_y=t), RandomFlip(tfm_y=t)],
                           crop_type=CropType.RANDOM, tfm_y=t)
    datasets = ImageClassifierData.get_ds(MaskDataset, (names[:4], masks[:4]),
                                          (names[4:], masks[4:]), tfms, path=str(tmp_path))
    md = ImageClassifierData(str(tmp_path), datasets, 2, 2, ["a", "b", "c", "d"])
    native = md.trn_dl._native
    assert native.pipeline is not None, "the masks go through the fused pipeline"
    assert not native.dataset.is_python
    for x, y in md.trn_dl:
        assert x.shape == (2, 3, 32, 32) and y.shape == (2, 32, 32) and y.dtype == torch.int64
        assert set(np.unique(y.numpy())) <= {0, 1, 2, 3}
    # Item by item, the batch equals the pipeline run on the decoded image and mask with the
    # loader's draws (order: the loader's, seed and epoch as it drew them).
    order = native.order(1)
    xs, ys = zip(*list(md.trn_dl))
    xs, ys = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    for k, i in enumerate(order):
        img = np.asarray(Image.open(tmp_path / names[i]))
        mask = np.asarray(Image.open(tmp_path / masks[i]), dtype=np.int64)
        x, y, _ = _native.transform_item(img, mask, tfms[0]._pipeline, native.seed, 1, int(i))
        np.testing.assert_allclose(xs[k], x, atol=1e-5)
        np.testing.assert_array_equal(ys[k], y)
