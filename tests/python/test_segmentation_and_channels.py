"""Segmentation masks and 4-channel images trained end to end, as fastai 0.7 kernels did it: a
`FilesDataset` subclass whose `get_y` opens a mask file (`tfm_y=TfmType.CLASS`), a small U-Net
of the user's through `ConvLearner(md, models)` / `from_model_data`; an RGBY dataset whose
`get_x` stacks four greyscale files, through `from_model_data` and `ConvLearner.pretrained` with
a 4-channel resnet18 (0.7's Resnet34_4 pattern).

References: numpy written here (OpenCV's nearest-neighbour rule for the mask resize, the
normalisation of the 4th channel), torch's own `F.nll_loss` / `nn.CrossEntropyLoss` on the
outputs `predict()` gives, and the masks painted by the test (the easy data: the label is
whether a pixel's red channel is bright, so a trained model's argmax must reproduce it)."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image

from fastai.conv_learner import ConvLearner, model_meta
from fastai.core import children
from fastai.dataset import FilesDataset, ImageClassifierData, ImageData
from fastai.transforms import (CropType, RandomFlip, RandomRotate, TfmType, tfms_from_stats)

SZ = 32
RAW = 40  # files are 40x40: Scale takes them to 32 (nearest for masks, area for images)
CELL = 8


def _write(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def _paint(seed):
    """A 40x40 photo whose red channel is bright on random 8x8 cells (green and blue noise),
    and its mask: label 1 on the bright cells, 0 elsewhere (3 equal channels, as 0.7 read
    channel 0 of an HWC mask)."""
    rng = np.random.RandomState(seed)
    cells = rng.rand(RAW // CELL, RAW // CELL) < 0.5
    red = np.kron(cells, np.ones((CELL, CELL), bool))
    img = rng.randint(0, 256, (RAW, RAW, 3)).astype(np.uint8)
    img[..., 0] = np.where(red, rng.randint(200, 256, red.shape), rng.randint(0, 56, red.shape))
    mask = np.repeat(red[..., None].astype(np.uint8), 3, axis=2)
    return img, mask


class MaskDataset(FilesDataset):
    """0.7's segmentation dataset: `y` holds the mask files, read in `get_y`."""

    def __init__(self, fnames, y, transform, path):
        self.y = y
        super().__init__(fnames, transform, path)

    def get_y(self, i):
        return np.asarray(Image.open(os.path.join(self.path, self.y[i])), dtype=np.int64)

    def get_c(self):
        return 2


def write_seg(root, n_trn=12, n_val=4):
    names, masks = [], []
    for i in range(n_trn + n_val):
        img, mask = _paint(i)
        _write(str(root / "imgs" / f"{i}.png"), img)
        _write(str(root / "masks" / f"{i}.png"), mask)
        names.append(f"imgs/{i}.png")
        masks.append(f"masks/{i}.png")
    names, masks = np.array(names), np.array(masks)
    return (names[:n_trn], masks[:n_trn]), (names[n_trn:], masks[n_trn:])


STATS3 = (np.array([0.5, 0.5, 0.5], np.float32), np.array([0.3, 0.3, 0.3], np.float32))


def seg_data(root, aug=True, bs=4):
    trn, val = write_seg(root)
    aug_tfms = [RandomRotate(4, tfm_y=TfmType.CLASS), RandomFlip(tfm_y=TfmType.CLASS)] if aug else [
        RandomFlip(tfm_y=TfmType.CLASS)]
    tfms = tfms_from_stats(STATS3, SZ, aug_tfms=aug_tfms, crop_type=CropType.CENTER, tfm_y=TfmType.CLASS)
    datasets = ImageData.get_ds(MaskDataset, trn, val, tfms, path=str(root))
    return ImageData(str(root), datasets, bs, 2, ["bg", "red"]), val


def nearest(a, out_h, out_w):
    """OpenCV's INTER_NEAREST (the spec's rule for CLASS masks): source index floor(i * in/out)."""
    h, w = a.shape[:2]
    rows = np.minimum((np.arange(out_h) * (h / out_h)).astype(int), h - 1)
    cols = np.minimum((np.arange(out_w) * (w / out_w)).astype(int), w - 1)
    return a[rows][:, cols]


class TinyUnet(nn.Module):
    """An encoder (a Sequential, as 0.7 kernels cut from a backbone), one upsampling step and a
    skip connection from the input; `log_softmax` picks log-probabilities or logits out."""

    def __init__(self, c_in=3, c=2, log_softmax=False):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(8 + c_in, c, 1)
        self.log_softmax = log_softmax

    def forward(self, x):
        y = F.relu(self.up(self.enc(x)))
        y = self.out(torch.cat([y, x], 1))
        return F.log_softmax(y, 1) if self.log_softmax else y


class UnetModels:
    """A models object as 0.7's U-Net kernels wrote it: groups = encoder, decoder."""

    def __init__(self, model):
        self.model = model
        self.name = "tiny_unet"

    def get_layer_groups(self, precompute):
        return [self.model.enc, [self.model.up, self.model.out]]


def pixel_accuracy(preds, targs):
    return (preds.argmax(1) == targs).float().mean()


def val_masks(root, val):
    """The validation masks as the batch must hold them: channel 0, nearest to 32x32 (square
    files: Scale gives 32x32 and the centre crop keeps it)."""
    return np.stack([nearest(np.asarray(Image.open(root / m))[..., 0].astype(np.int64), SZ, SZ)
                     for m in val[1]])


def test_validation_masks_are_the_mask_files_resized_by_nearest(tmp_path):
    md, val = seg_data(tmp_path)
    xs, ys = zip(*md.val_dl)
    ys = torch.cat(ys).numpy()
    assert ys.dtype == np.int64 and ys.shape == (4, SZ, SZ)
    np.testing.assert_array_equal(ys, val_masks(tmp_path, val))
    # Training batches (rotated and flipped): values only from the label set, and the label
    # still follows the red channel of the same draw of x (nearest vs area, rotation edges).
    for x, y in md.trn_dl:
        assert set(np.unique(y.numpy())) <= {0, 1}
        red = x.numpy()[:, 0] * STATS3[1][0] + STATS3[0][0] > 0.5
        assert (red == (y.numpy() == 1)).mean() > 0.85


def test_a_user_unet_trains_on_masks_predicts_and_tta(tmp_path):
    md, val = seg_data(tmp_path)
    m = TinyUnet()
    learn = ConvLearner(md, UnetModels(m))
    learn.unfreeze()
    learn.crit = nn.CrossEntropyLoss()
    learn.metrics = [pixel_accuracy]
    learn.opt_fn = torch.optim.Adam
    first = learn.fit(1e-2, 1)
    last = learn.fit(1e-2, 6)
    assert last[0] < first[0] * 0.7, (first, last)
    assert last[1] > 0.9
    preds, targs = learn.predict_with_targs()
    assert preds.shape == (4, 2, SZ, SZ) and targs.shape == (4, SZ, SZ)
    want = val_masks(tmp_path, val)
    np.testing.assert_array_equal(targs, want)
    assert (preds.argmax(1) == want).mean() > 0.9
    # The validation loss fit reported is torch's cross-entropy of these outputs.
    np.testing.assert_allclose(last[0], float(nn.CrossEntropyLoss()(torch.from_numpy(preds),
                                                                     torch.from_numpy(want))), rtol=1e-4)
    # TTA: the centre view, then passes of the training augmentation (rotation, flip) whose
    # outputs are in the augmented geometry; the targets are the plain validation masks (0.7).
    tta, t = learn.TTA(n_aug=4)
    assert tta.shape == (5, 4, 2, SZ, SZ)
    np.testing.assert_array_equal(t, want)
    np.testing.assert_array_equal(tta[0], preds)


def test_tta_passes_follow_the_flip_of_their_own_draw(tmp_path):
    """With only flips in aug_tfms, each TTA pass's prediction is the mask or its mirror image."""
    md, val = seg_data(tmp_path, aug=False)
    m = TinyUnet()
    learn = ConvLearner(md, UnetModels(m))
    learn.unfreeze()
    learn.crit = nn.CrossEntropyLoss()
    learn.opt_fn = torch.optim.Adam
    learn.fit(1e-2, 6)
    want = val_masks(tmp_path, val)
    tta, _ = learn.TTA(n_aug=8)
    flipped = plain = 0
    for p in tta[2:]:
        for k in range(4):
            am = p[k].argmax(0)
            a, b = (am == want[k]).mean(), (am == want[k][:, ::-1]).mean()
            assert max(a, b) > 0.85, (a, b)
            plain += a > b
            flipped += b > a
    assert plain and flipped
    # The aug loader TTA reads moves each mask with its image (one draw for both).
    for _ in range(3):
        for x, y in md.aug_dl:
            red = x.numpy()[:, 0] * STATS3[1][0] + STATS3[0][0] > 0.5
            assert (red == (y.numpy() == 1)).mean() > 0.85


def test_native_nll_loss_on_4d_log_probabilities_matches_torch(tmp_path):
    """from_model_data with a log-softmax U-Net: the default loss is F.nll_loss, which the
    Rust loop computes itself on (N, C, H, W) outputs and (N, H, W) targets."""
    md, val = seg_data(tmp_path)
    m = TinyUnet(log_softmax=True)
    learn = ConvLearner.from_model_data(m, md)
    assert learn.crit is F.nll_loss and learn._crit_for_fit() is None
    learn.opt_fn = torch.optim.Adam
    first = learn.fit(1e-2, 1)
    last = learn.fit(1e-2, 5)
    preds, targs = learn.predict_with_targs()
    want = float(F.nll_loss(torch.from_numpy(preds), torch.from_numpy(targs)))
    np.testing.assert_allclose(last[0], want, rtol=1e-4)
    assert last[0] < first[0]
    # The default metric (accuracy, argmax over dim 1) is pixel accuracy here.
    np.testing.assert_allclose(last[1], (preds.argmax(1) == targs).mean(), rtol=1e-5)
    assert last[1] > 0.9


def test_a_user_dice_loss_gets_the_4d_outputs(tmp_path):
    md, _ = seg_data(tmp_path)
    m = TinyUnet()
    seen = []

    def dice_bce(out, y):
        seen.append((tuple(out.shape), tuple(y.shape), y.dtype))
        p = torch.softmax(out, 1)[:, 1]
        t = (y == 1).float()
        dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        return dice + F.cross_entropy(out, y)

    learn = ConvLearner.from_model_data(m, md, crit=dice_bce, metrics=[pixel_accuracy])
    learn.opt_fn = torch.optim.Adam
    vals = learn.fit(1e-2, 2)
    assert np.isfinite(vals[0])
    assert seen[0] == ((4, 2, SZ, SZ), (4, SZ, SZ), torch.int64)


class NoClassCount(MaskDataset):
    """0.7's segmentation kernels: get_c() is 0, the model alone decides its outputs."""

    def get_c(self):
        return 0


def test_get_c_zero_leaves_the_output_width_to_the_model(tmp_path):
    trn, val = write_seg(tmp_path)
    tfms = tfms_from_stats(STATS3, SZ, aug_tfms=[RandomFlip(tfm_y=TfmType.CLASS)],
                           crop_type=CropType.CENTER, tfm_y=TfmType.CLASS)
    md = ImageData(str(tmp_path), ImageData.get_ds(NoClassCount, trn, val, tfms, path=str(tmp_path)), 4, 1,
                   None)
    assert md.c == 0
    learn = ConvLearner.from_model_data(TinyUnet(log_softmax=True), md)
    vals = learn.fit(1e-2, 1)
    assert np.isfinite(vals[0])


def test_dynamic_unet_builds_its_decoder_before_the_learner_takes_its_parameters(tmp_path):
    """fastai.models.unet.DynamicUnet makes its decoder on the first call: the learner's trial
    call makes it, and every decoder parameter then trains (none left behind)."""
    from fastai.models.unet import DynamicUnet
    md, _ = seg_data(tmp_path, aug=False)
    torch.manual_seed(0)
    enc = nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:5])
    m = DynamicUnet(enc, n_classes=2)
    learn = ConvLearner.from_model_data(m, md)
    assert hasattr(m, "upmodel") and len(learn.get_layer_groups()) == len(children(m)) > 1
    learn.crit = nn.CrossEntropyLoss()
    learn.opt_fn = torch.optim.Adam
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    vals = learn.fit(1e-3, 1)
    assert np.isfinite(vals[0])
    still = [k for k, v in m.named_parameters() if torch.equal(before[k], v)]
    assert not still, still
    assert learn.predict().shape == (4, 2, SZ, SZ)


class WrongSizeMask(MaskDataset):
    def get_y(self, i):
        y = super().get_y(i)
        return y[:-3] if i == 2 else y


def test_a_mask_of_the_wrong_size_names_the_dataset_item_and_file(tmp_path):
    trn, val = write_seg(tmp_path)
    tfms = tfms_from_stats(STATS3, SZ, aug_tfms=[RandomFlip(tfm_y=TfmType.CLASS)],
                           crop_type=CropType.CENTER, tfm_y=TfmType.CLASS)
    datasets = ImageData.get_ds(WrongSizeMask, trn, val, tfms, path=str(tmp_path))
    md = ImageData(str(tmp_path), datasets, 4, 1, ["bg", "red"])
    with pytest.raises(Exception) as e:
        for _ in md.trn_dl:
            pass
    text = str(e.value) + " ".join(getattr(e.value, "__notes__", []))
    assert "WrongSizeMask" in text and "item 2" in text and "imgs/2.png" in text, text
    assert "37" in text and "40" in text, text  # the two sizes


# ---- 4 channels (RGBY) --------------------------------------------------------------------

STATS4 = (np.array([0.4, 0.3, 0.2, 0.5], np.float32), np.array([0.25, 0.2, 0.15, 0.3], np.float32))


class RGBYDataset(FilesDataset):
    """The human-protein kernels' dataset: four greyscale PNGs per id, stacked on the last
    axis; y class indices."""

    def __init__(self, fnames, y, transform, path):
        self.y = y
        super().__init__(fnames, transform, path)

    def get_x(self, i):
        base = os.path.join(self.path, self.fnames[i])
        return np.stack([np.asarray(Image.open(f"{base}_{c}.png"), np.float32) / 255
                         for c in ("red", "green", "blue", "yellow")], axis=-1)

    def get_y(self, i):
        return self.y[i]

    def get_c(self):
        return 2


def write_rgby(root, n_trn=12, n_val=4):
    """Class 1: bright yellow channel, class 0: dark; the other channels are noise."""
    names, ys = [], []
    for i in range(n_trn + n_val):
        rng = np.random.RandomState(100 + i)
        y = i % 2
        for c in ("red", "green", "blue", "yellow"):
            a = rng.randint(0, 256, (SZ, SZ)).astype(np.uint8)
            if c == "yellow":
                a = rng.randint(170, 256, (SZ, SZ)) if y else rng.randint(0, 86, (SZ, SZ))
            _write(str(root / "rgby" / f"{i}_{c}.png"), a.astype(np.uint8))
        names.append(f"rgby/{i}")
        ys.append(y)
    names, ys = np.array(names), np.array(ys, np.int64)
    return (names[:n_trn], ys[:n_trn]), (names[n_trn:], ys[n_trn:])


def rgby_data(root):
    trn, val = write_rgby(root)
    tfms = tfms_from_stats(STATS4, SZ, aug_tfms=[RandomFlip()], crop_type=CropType.NO)
    datasets = ImageClassifierData.get_ds(RGBYDataset, trn, val, tfms, path=str(root))
    return ImageClassifierData(str(root), datasets, 4, 2, ["dim", "bright"]), val


def test_the_batches_4th_channel_is_the_normalised_yellow_file(tmp_path):
    md, val = rgby_data(tmp_path)
    x = torch.cat([x for x, _ in md.val_dl]).numpy()
    assert x.shape == (4, 4, SZ, SZ)
    for k, name in enumerate(val[0]):
        for c, ch in enumerate(("red", "green", "blue", "yellow")):
            raw = np.asarray(Image.open(tmp_path / f"{name}_{ch}.png"), np.float32) / 255
            np.testing.assert_allclose(x[k, c], (raw - STATS4[0][c]) / STATS4[1][c], atol=1e-5)


def rgby_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2), nn.LogSoftmax(dim=1))


def test_a_4_channel_module_trains_through_from_model_data(tmp_path):
    md, val = rgby_data(tmp_path)
    m = rgby_net()
    learn = ConvLearner.from_model_data(m, md)
    learn.opt_fn = torch.optim.Adam
    first = learn.fit(1e-2, 1)
    last = learn.fit(1e-2, 5)
    assert last[0] < first[0] and last[1] == 1.0
    preds = learn.predict()
    assert preds.shape == (4, 2)
    np.testing.assert_array_equal(preds.argmax(1), val[1])
    tta, targs = learn.TTA(n_aug=2)
    assert tta.shape == (3, 4, 2)
    np.testing.assert_array_equal(targs, val[1])
    np.testing.assert_array_equal(tta.mean(0).argmax(1), val[1])
    # summary() runs a real batch (4 channels), where 0.7 fed 3.
    rows = learn.summary()
    assert rows["Conv2d-1"]["input_shape"] == [-1, 4, SZ, SZ]


def resnet18_4(pre):
    """0.7's Resnet34_4 pattern: torchvision's resnet, conv1 taking 4 channels (the RGB
    kernels' weights copied, the 4th channel's from red)."""
    m = torchvision.models.resnet18(weights=None)
    w = m.conv1.weight.data
    m.conv1 = nn.Conv2d(4, 64, kernel_size=7, stride=2, padding=3, bias=False)
    m.conv1.weight.data = torch.cat([w, w[:, :1]], 1)
    return m


def test_pretrained_with_a_4_channel_resnet_function(tmp_path):
    md, val = rgby_data(tmp_path)
    model_meta[resnet18_4] = [8, 6]
    try:
        torch.manual_seed(0)
        learn = ConvLearner.pretrained(resnet18_4, md, pretrained=False)
        assert children(learn.models.model)[0].weight.shape[1] == 4
        learn.opt_fn = torch.optim.Adam
        learn.unfreeze()
        w = learn.models.model[0].weight.detach().clone()
        vals = learn.fit(1e-3, 1)
        assert np.isfinite(vals[0])
        # The 4-channel first convolution is the user's layer, and it trained.
        assert not torch.equal(w, learn.models.model[0].weight)
        preds = learn.predict()
        assert preds.shape == (4, 2) and np.isfinite(preds).all()
        np.testing.assert_allclose(np.exp(preds).sum(1), 1, rtol=1e-5)
        tta, targs = learn.TTA(n_aug=2)
        assert tta.shape == (3, 4, 2)
        np.testing.assert_array_equal(targs, val[1])
    finally:
        del model_meta[resnet18_4]


# ---- tuple targets (spec 4.10) ------------------------------------------------------------

class BoxAndClass(FilesDataset):
    """Lesson 8's joint target: `get_y` returns (box, class), a float32 (4,) and an int."""

    def __init__(self, fnames, y, transform, path):
        self.bbs, self.cls = y
        super().__init__(fnames, transform, path)

    def get_y(self, i):
        return self.bbs[i], int(self.cls[i])

    def get_c(self):
        return 4 + 2


def test_a_tuple_target_reaches_crit_and_metrics_as_a_list_of_tensors(tmp_path):
    n = 10
    rng = np.random.RandomState(0)
    names = []
    for i in range(n):
        _write(str(tmp_path / "imgs" / f"{i}.png"), rng.randint(0, 256, (SZ, SZ, 3)).astype(np.uint8))
        names.append(f"imgs/{i}.png")
    names = np.array(names)
    bbs = rng.uniform(0, SZ, (n, 4)).astype(np.float32)
    cls = np.arange(n) % 2
    trn = (names[:6], (bbs[:6], cls[:6]))
    val = (names[6:], (bbs[6:], cls[6:]))
    tfms = tfms_from_stats(STATS3, SZ, crop_type=CropType.NO)
    md = ImageData(str(tmp_path), ImageData.get_ds(BoxAndClass, trn, val, tfms, path=str(tmp_path)),
                   3, 1, ["a", "b"])
    # Iterating a loader: [boxes, classes] per batch, as 0.7's collate made them.
    ys = [y for _, y in md.val_dl]
    assert isinstance(ys[0], list) and len(ys[0]) == 2
    np.testing.assert_array_equal(torch.cat([y[0] for y in ys]).numpy(), bbs[6:])
    assert ys[0][1].dtype == torch.int64
    np.testing.assert_array_equal(torch.cat([y[1] for y in ys]).numpy(), cls[6:])

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))
    seen = []

    def detn_loss(out, targ):
        bb_t, c_t = targ
        seen.append((bb_t.clone(), c_t.clone()))
        return F.l1_loss(out[:, :4], bb_t) + F.cross_entropy(out[:, 4:], c_t)

    def detn_acc(out, targ):
        return (out[:, 4:].argmax(1) == targ[1]).float().mean()

    learn = ConvLearner.from_model_data(m, md, crit=detn_loss, metrics=[detn_acc])
    vals = learn.fit(1e-3, 1)
    got_bb = torch.cat([b for b, _ in seen[:2]]).numpy()
    assert sorted(map(tuple, got_bb)) == sorted(map(tuple, bbs[:6]))  # shuffled training rows
    assert all(c.dtype == torch.int64 for _, c in seen)
    preds, targs = learn.predict_with_targs()
    assert isinstance(targs, list)
    np.testing.assert_array_equal(targs[0], bbs[6:])
    np.testing.assert_array_equal(targs[1], cls[6:])
    p, b, c = torch.from_numpy(preds), torch.from_numpy(bbs[6:]), torch.from_numpy(cls[6:])
    want = (F.l1_loss(p[:, :4], b) + F.cross_entropy(p[:, 4:], c)).item()
    np.testing.assert_allclose(vals[0], want, rtol=1e-4)  # batches of 3, 1: weighted mean
    np.testing.assert_allclose(vals[1], (p[:, 4:].argmax(1) == c).float().mean().item(), rtol=1e-5)


class RaggedBoxes(BoxAndClass):
    def get_y(self, i):
        return self.bbs[i][: 4 if i % 2 else 2], int(self.cls[i])


def test_tuple_targets_of_varying_shapes_are_an_error_naming_the_item(tmp_path):
    names = []
    for i in range(4):
        _write(str(tmp_path / "imgs" / f"{i}.png"), np.full((SZ, SZ, 3), 9 * i, np.uint8))
        names.append(f"imgs/{i}.png")
    names, bbs, cls = np.array(names), np.ones((4, 4), np.float32), np.zeros(4, np.int64)
    tfms = tfms_from_stats(STATS3, SZ, crop_type=CropType.NO)
    ds = ImageData.get_ds(RaggedBoxes, (names, (bbs, cls)), (names, (bbs, cls)), tfms, path=str(tmp_path))
    md = ImageData(str(tmp_path), ds, 4, 1, ["a"])
    with pytest.raises(ValueError, match=r"RaggedBoxes item \d: y is a tuple of .*same shape in every item"):
        list(md.val_dl)


class ConcatLblDataset(torch.utils.data.Dataset):
    """Lesson 9's wrapper, verbatim in spirit: the loader's dataset replaced by one returning
    (x, (box, class)) from the original dataset and a second label array."""

    def __init__(self, ds, y2):
        self.ds, self.y2 = ds, y2

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return x, (y, self.y2[i])


def test_a_wrapper_assigned_to_dl_dataset_feeds_the_learner(tmp_path):
    """Spec 2.7: `md.trn_dl.dataset = ConcatLblDataset(md.trn_ds, y2)`; the loaders then serve
    the wrapper's items, `md.trn_ds` is the wrapper, and a learner made after trains on them."""
    n = 10
    rng = np.random.RandomState(1)
    rows = []
    for i in range(n):
        _write(str(tmp_path / "imgs" / f"{i}.png"), rng.randint(0, 256, (40, 40, 3)).astype(np.uint8))
        rows.append(f"{i}.png,{' '.join(str(v) for v in rng.randint(0, 30, 4))}")
    (tmp_path / "bb.csv").write_text("fn,bbox\n" + "\n".join(rows) + "\n")
    tfms = tfms_from_stats(STATS3, SZ, crop_type=CropType.NO)
    md = ImageClassifierData.from_csv(str(tmp_path), "imgs", str(tmp_path / "bb.csv"), tfms=tfms,
                                      continuous=True, bs=3, val_idxs=[0, 1, 2, 3], num_workers=1)
    boxes = torch.cat([y for _, y in md.val_dl]).numpy()
    x_plain = torch.cat([x for x, _ in md.val_dl]).numpy()
    trn_cls, val_cls = np.arange(6) % 2, np.array([1, 0, 0, 1])
    inner = md.val_ds
    md.trn_dl.dataset = ConcatLblDataset(md.trn_ds, trn_cls)
    md.val_dl.dataset = ConcatLblDataset(md.val_ds, val_cls)
    assert md.val_ds.ds is inner and md.c == 4 and md.sz == SZ
    xs, ys = zip(*md.val_dl)
    np.testing.assert_allclose(torch.cat(xs).numpy(), x_plain, atol=1e-6)
    np.testing.assert_array_equal(torch.cat([y[0] for y in ys]).numpy(), boxes)
    np.testing.assert_array_equal(torch.cat([y[1] for y in ys]).numpy(), val_cls)

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))
    seen = []

    def detn_loss(out, targ):
        bb_t, c_t = targ
        seen.append(c_t.clone())
        return F.l1_loss(out[:, :4], bb_t) + F.cross_entropy(out[:, 4:], c_t)

    learn = ConvLearner.from_model_data(m, md, crit=detn_loss)
    vals = learn.fit(1e-3, 1)
    assert sorted(torch.cat(seen[:2]).tolist()) == sorted(trn_cls.tolist())
    preds, targs = learn.predict_with_targs()
    np.testing.assert_array_equal(targs[1], val_cls)
    p = torch.from_numpy(preds)
    want = (F.l1_loss(p[:, :4], torch.from_numpy(boxes)) + F.cross_entropy(p[:, 4:], torch.from_numpy(val_cls))).item()
    np.testing.assert_allclose(vals[0], want, rtol=1e-4)
