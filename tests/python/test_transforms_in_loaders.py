"""fastai 0.7's transform objects inside the loaders: a user's `Transform` subclass in
`aug_tfms`, bounding boxes (`tfm_y=TfmType.COORD`) through `from_csv(..., continuous=True)` and
label masks (`TfmType.CLASS`) through a dataset subclass, end to end. Such pipelines have no
fused Rust pass: the loaders call the transform objects per item on their worker threads.

References: OpenCV and numpy written here (resize, slicing, box extents), and the worked box
example of 0.7's behaviour (a 200x300 image, box [20, 30, 120, 180], size 100, computed by hand
from OpenCV's nearest rule)."""
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

cv2 = pytest.importorskip("cv2")

from fastai.conv_learner import ConvLearner, resnet18  # noqa: E402
from fastai.dataset import FilesDataset, ImageClassifierData  # noqa: E402
from fastai.transforms import (CropType, RandomFlip, TfmType, Transform, imagenet_stats,  # noqa: E402
                               tfms_from_model, tfms_from_stats)


def _write(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def _smooth(h, w, seed):
    """A smooth RGB image (so area resampling has something to average)."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (4, 5, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), 0, 255).astype(np.uint8)


def _normalise_chw(img01, stats):
    m, s = (np.asarray(v, np.float32) for v in stats)
    return np.moveaxis((img01 - m) / s, -1, 0)


class AddConstant(Transform):
    """A user step written the 0.7 way: state drawn into `self.store` by `set_state`, applied by
    `do_transform`; counts its draws and the threads that made them."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.draws, self.threads = 0, set()
        self._lock = threading.Lock()

    def set_state(self):
        with self._lock:
            self.draws += 1
            self.threads.add(threading.get_ident())
        self.store.add = self.value

    def do_transform(self, x, is_y):
        return x + self.store.add


def test_a_user_transform_step_runs_in_every_loader_with_0_7_numbers(tmp_path):
    """Scale (INTER_AREA) -> the user's step -> centre crop -> normalise, as 0.7 ordered them;
    one set_state per item per pass; fit, precompute, predict_array and TTA go through it."""
    sz, n = 24, 8
    imgs = {}
    for i in range(n):
        label = ("cats", "dogs")[i % 2]
        split = "train" if i < 6 else "valid"
        a = _smooth(30 + i, 40, seed=i)
        _write(str(tmp_path / split / label / f"{i}.png"), a)
        imgs[(split, label, f"{i}.png")] = a
    step = AddConstant(0.125)
    tfms = tfms_from_stats(imagenet_stats, sz, aug_tfms=[step], crop_type=CropType.CENTER)
    assert not tfms[0].fusable and tfms[1].fusable
    md = ImageClassifierData.from_paths(str(tmp_path), bs=2, tfms=tfms, num_workers=2)
    assert md.aug_dl._native.dataset.is_python and not md.val_dl._native.dataset.is_python

    # aug_dl: the validation items in order, through the training transform.
    xs = torch.cat([x for x, _ in md.aug_dl]).numpy()
    assert step.draws == len(md.val_ds) == 2
    for k, fn in enumerate(md.val_ds.fnames):
        split_label, name = os.path.split(fn)
        a = imgs[("valid", os.path.basename(split_label), name)].astype(np.float32) / 255
        r, c = a.shape[:2]
        ratio = sz / min(r, c)
        h, w = max(int(np.floor(r * ratio)), sz), max(int(np.floor(c * ratio)), sz)
        scaled = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA) + 0.125
        top, left = int(np.ceil((h - sz) / 2)), int(np.ceil((w - sz) / 2))
        ref = _normalise_chw(scaled[top:top + sz, left:left + sz], imagenet_stats)
        np.testing.assert_allclose(xs[k], ref, atol=2e-5)

    # The training loader: one draw per item per epoch, made on the loader's worker threads.
    step.draws, step.threads = 0, set()
    for _ in range(2):
        for _x, _y in md.trn_dl:
            pass
    assert step.draws == 2 * len(md.trn_ds)
    assert threading.get_ident() not in step.threads

    learn = ConvLearner.pretrained(resnet18, md, pretrained=False)
    assert np.isfinite(learn.fit(1e-3, 1)[0])
    tta, targs = learn.TTA(n_aug=2)
    assert tta.shape == (3, 2, 2) and np.isfinite(tta).all()
    # Deployment, 0.7's way: the training transform called by hand on an opened image gives
    # what aug_dl gave, and predict_array takes it.
    by_hand = np.stack([tfms[0](imgs[("valid", os.path.basename(os.path.dirname(f)),
                                      os.path.basename(f))].astype(np.float32) / 255)
                        for f in md.val_ds.fnames])
    np.testing.assert_allclose(by_hand, xs, atol=1e-6)
    preds = learn.predict_array(by_hand)
    assert preds.shape == (2, 2) and np.allclose(np.exp(preds).sum(1), 1, atol=1e-5)
    learn.precompute = True
    assert np.isfinite(learn.fit(1e-3, 1)[0])


def _box_reference(shape, box, sizes):
    """0.7's box handling with OpenCV and numpy: each geometric step fills the box into a mask of
    the current image (rows r1..r2-1, cols c1..c2-1, truncated to integers), resizes the mask with
    nearest, and reads back the inclusive extent of what is left ([0, 0, 0, 0] when nothing)."""
    r, c = shape
    box = [int(v) for v in box]
    for h, w in sizes:
        mask = np.zeros((r, c), np.float32)
        mask[box[0]:box[2], box[1]:box[3]] = 1
        out = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        rows, cols = np.nonzero(out)
        box = ([0, 0, 0, 0] if len(rows) == 0
               else [rows.min(), cols.min(), rows.max(), cols.max()])
        r, c = h, w
    return np.asarray(box, np.float32)


def test_boxes_go_through_from_csv_continuous_fit_predict_and_tta(tmp_path):
    """Lesson 8's bounding-box regression: boxes as 'r1 c1 r2 c2 ...' in a CSV, tfm_y=COORD with
    no crop (Scale then NoCrop, nearest on the box masks), L1 regression of the 4k numbers."""
    sz = 100
    boxes = {  # the worked example, a box partly outside the image, an all-zero padding box
        "0.png": [20, 30, 120, 180, 150, 250, 260, 400],
        "1.png": [20, 30, 120, 180, 0, 0, 0, 0],
        "2.png": [5.7, 8.2, 60.9, 90.99, 100, 10, 190, 290],
    }
    rows = []
    for i in range(8):
        name = f"{i}.png"
        _write(str(tmp_path / "imgs" / name), _smooth(200, 300, seed=i))
        b = boxes.get(name, [10 + i, 20, 150, 200 + i, 30, 40, 60, 80])
        rows.append(f"{name},{' '.join(str(v) for v in b)}")
    (tmp_path / "bb.csv").write_text("fn,bbox\n" + "\n".join(rows) + "\n")
    tfms = tfms_from_model(resnet18, sz, crop_type=CropType.NO, tfm_y=TfmType.COORD)
    md = ImageClassifierData.from_csv(str(tmp_path), "imgs", str(tmp_path / "bb.csv"), tfms=tfms,
                                      continuous=True, bs=4, val_idxs=[0, 1, 2], num_workers=2)
    assert md.is_reg and md.c == 8
    ys = torch.cat([y for _, y in md.val_dl]).numpy()
    assert ys.shape == (3, 8) and ys.dtype == np.float32
    # By hand: Scale gives 100x150 and [10, 15, 59, 89]; NoCrop then 100x100 and [10, 10, 58, 59].
    np.testing.assert_array_equal(ys[0, :4], [10, 10, 58, 59])
    np.testing.assert_array_equal(ys[1], [10, 10, 58, 59, 0, 0, 0, 0])
    for k, name in enumerate(["0.png", "1.png", "2.png"]):
        for j in range(2):
            ref = _box_reference((200, 300), boxes[name][4 * j:4 * j + 4], [(100, 150), (100, 100)])
            np.testing.assert_array_equal(ys[k, 4 * j:4 * j + 4], ref, err_msg=f"{name} box {j}")

    learn = ConvLearner.pretrained(resnet18, md, pretrained=False)
    val_loss = learn.fit(1e-3, 1)[0]
    preds = learn.predict()
    assert preds.shape == (3, 8)
    # The validation loss is the L1 distance of the predictions to the boxes (0.7's regression loss).
    np.testing.assert_allclose(val_loss, np.abs(preds - ys).mean(), rtol=1e-4)
    tta, targs = learn.TTA(n_aug=2)
    assert tta.shape == (3, 3, 8) and np.array_equal(targs, ys)


class MaskDataset(FilesDataset):
    """A segmentation dataset as 0.7 kernels wrote one: labels are mask files beside the images,
    read in get_y (3-channel PNGs, as 0.7 needed for channel 0 to be the mask)."""

    def __init__(self, fnames, masks, transform, path):
        self.masks = masks
        super().__init__(fnames, transform, path)

    def get_y(self, i):
        return np.asarray(Image.open(os.path.join(self.path, self.masks[i])), dtype=np.int64)

    def get_c(self):
        return 3


def test_label_masks_follow_the_image_through_a_dataset_subclass(tmp_path):
    """tfm_y=CLASS: the mask is scaled and cropped with nearest (labels never blended), flipped
    with the image by the same draw, and reaches the batch as (bs, sz, sz) int64 (channel 0)."""
    sz, n = 16, 6
    names, masks, raw = [], [], []
    for i in range(n):
        # Bright right half, dark left half; the mask marks the right half 2 and a block 1.
        img = np.zeros((20, 28, 3), np.uint8)
        img[:, 14:] = 220
        mask = np.zeros((20, 28, 3), np.uint8)
        mask[:, 14:] = 2
        mask[3:9 + i, 2:7] = 1
        _write(str(tmp_path / "imgs" / f"{i}.png"), img)
        _write(str(tmp_path / "masks" / f"{i}.png"), mask)
        names.append(f"imgs/{i}.png")
        masks.append(f"masks/{i}.png")
        raw.append(mask[..., 0].astype(np.int64))
    names, masks = np.array(names), np.array(masks)
    stats = (np.array([0.5] * 3, np.float32), np.array([0.25] * 3, np.float32))
    tfms = tfms_from_stats(stats, sz, aug_tfms=[RandomFlip(tfm_y=TfmType.CLASS)],
                           crop_type=CropType.CENTER, tfm_y=TfmType.CLASS)
    trn = (names[:4], masks[:4])
    val = (names[4:], masks[4:])
    datasets = ImageClassifierData.get_ds(MaskDataset, trn, val, tfms, path=str(tmp_path))
    md = ImageClassifierData(str(tmp_path), datasets, 2, 2, ["bg", "block", "right"])

    # Validation: scale (20x28 -> 16x22, nearest) then centre crop (left 3), no flip.
    ys = torch.cat([y for _, y in md.val_dl]).numpy()
    assert ys.shape == (2, sz, sz) and ys.dtype == np.int64
    for k in range(2):
        scaled = cv2.resize(raw[4 + k].astype(np.float32), (22, 16), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(ys[k], scaled[:, 3:3 + sz].astype(np.int64))

    # Training: whatever the flip drew, the mask's "right" label sits on the bright half of x.
    seen_flipped = seen_plain = False
    for _ in range(6):
        for x, y in md.trn_dl:
            bright = x.numpy()[:, 0] > 0  # normalised: above the mean
            right = y.numpy() == 2
            # Nearest on the mask, area on the image: they may differ on the one boundary column.
            assert (bright != right).sum(axis=(1, 2)).max() <= sz
            seen_flipped |= bool(right[:, :, 0].any())
            seen_plain |= bool(right[:, :, -1].any())
            assert set(np.unique(y.numpy())) <= {0, 1, 2}
    assert seen_flipped and seen_plain
