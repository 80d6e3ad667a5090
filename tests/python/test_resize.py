"""`data.resize(targ_sz, new_path)` (spec §2.10): sizes by the spec's formula, pixels against
PIL's bilinear resize, the new data object, per-file freshness (rough edge 18), bad input."""
import io
import math
import os

import numpy as np
import pytest
from PIL import Image

from _fixtures import noise_image, save, smooth_image
from _shared import DOGSCATS, dogscats_slice
from fastai.conv_learner import resnet34
from fastai.dataset import ImageClassifierData
from fastai.exceptions import ImageDecodeError
from fastai.transforms import tfms_from_model

SIZES = [(200, 300), (400, 120), (50, 70), (64, 64)]  # (h, w): landscape, portrait, small, square


def spec_size(w, h, targ):
    """Spec §2.10 / fastai's scale_to, written out: the smaller side becomes targ."""
    ratio = targ / min(w, h)
    return max(math.floor(w * ratio), targ), max(math.floor(h * ratio), targ)


def pil_copy(path, targ, jpeg):
    """The original's copy: PIL open, RGB, resize(BILINEAR), save (JPEG at PIL's default)."""
    src = Image.open(path).convert("RGB")
    out = src.resize(spec_size(*src.size, targ), Image.BILINEAR)
    if jpeg:
        buf = io.BytesIO()
        out.save(buf, format="JPEG")
        out = Image.open(buf).convert("RGB")
    return np.asarray(out).astype(int)


def read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def tree(root, exts=("png", "jpg")):
    for split in ("train", "valid"):
        for ci, cls in enumerate(("cats", "dogs")):
            for k, (h, w) in enumerate(SIZES):
                for ext in exts:
                    save(smooth_image(h, w, seed=10 * ci + k), os.path.join(root, split, cls, f"s{k}.{ext}"))
            save(noise_image(90, 120, seed=ci), os.path.join(root, split, cls, "noise.png"))


def data_on(root, **kw):
    return ImageClassifierData.from_paths(str(root), bs=4, tfms=tfms_from_model(resnet34, 32),
                                          num_workers=2, **kw)


def test_copies_have_the_spec_size_and_pils_pixels(tmp_path):
    tree(tmp_path)
    data = data_on(tmp_path)
    new = data.resize(48, "tmp")
    assert new.img_path == os.path.join(str(tmp_path), "tmp", "48")
    files = list(data.trn_ds.fnames) + list(data.val_ds.fnames)
    for f in files:
        src, dst = os.path.join(str(tmp_path), f), os.path.join(new.img_path, f)
        with Image.open(src) as im:
            want = spec_size(*im.size, 48)
        with Image.open(dst) as im:
            assert im.size == want, f
            assert im.format == ("PNG" if f.endswith(".png") else "JPEG"), f
        ours, ref = read(dst), pil_copy(src, 48, f.endswith(".jpg"))
        if f.endswith(".png"):
            # Lossless: the same filter as PIL's, to rounding.
            assert np.abs(ours - ref).max() <= 1, f
        else:
            # Both re-encoded at quality 75: a rounding difference can move a quantised block.
            assert np.abs(ours - ref).mean() <= 1.0, f


def test_the_new_data_reads_the_copies_and_keeps_the_rest(tmp_path):
    tree(tmp_path, exts=("png",))
    data = data_on(tmp_path, seed=3)
    new = data.resize(40)
    assert new.path == data.path  # models/ and tmp/ stay where the user put them
    assert new.trn_ds.path == new.val_ds.path == new.img_path
    assert new.classes == data.classes and new.bs == data.bs and new.seed == data.seed
    assert list(new.trn_ds.fnames) == list(data.trn_ds.fnames)
    np.testing.assert_array_equal(new.val_y, data.val_y)
    # The loaders decode the copies: a validation batch equals one built straight on them.
    direct = ImageClassifierData.from_paths(new.img_path, bs=4, tfms=tfms_from_model(resnet34, 32),
                                            num_workers=2, seed=3)
    x_new, y_new = next(iter(new.val_dl))
    x_dir, y_dir = next(iter(direct.val_dl))
    np.testing.assert_array_equal(x_new.numpy(), x_dir.numpy())
    np.testing.assert_array_equal(y_new.numpy(), y_dir.numpy())
    assert new.val_ds.get_x(0).shape[:2] == read(os.path.join(new.img_path, new.val_ds.fnames[0])).shape[:2]


def test_each_copy_is_redone_only_when_its_source_changed(tmp_path):
    tree(tmp_path, exts=("png",))
    data = data_on(tmp_path)
    new = data.resize(40)
    copies = [os.path.join(new.img_path, f) for f in data.trn_ds.fnames]
    before = {c: (os.stat(c).st_mtime_ns, read(c)) for c in copies}
    data.resize(40)  # nothing changed: nothing rewritten
    for c in copies:
        assert os.stat(c).st_mtime_ns == before[c][0], c
    # A source replaced by other content with an *older* time (cp -p of an old file), a
    # deleted copy, and a copy cut short (an interrupt mid-write leaves part of the bytes and
    # the time of writing): all redone, nothing else touched.
    changed, deleted, cut = data.trn_ds.fnames[0], data.trn_ds.fnames[1], data.trn_ds.fnames[2]
    with open(os.path.join(new.img_path, cut), "r+b") as fh:
        fh.truncate(40)
    src = os.path.join(str(tmp_path), changed)
    old = os.stat(src).st_mtime_ns - 10**12
    save(noise_image(*read(src).shape[:2], seed=9), src)
    os.utime(src, ns=(old, old))
    os.remove(os.path.join(new.img_path, deleted))
    data.resize(40)
    for c in copies:
        rel = os.path.relpath(c, new.img_path)
        if rel == changed:
            assert not np.array_equal(read(c), before[c][1])
            np.testing.assert_allclose(read(c), pil_copy(src, 40, False), atol=1)
        elif rel in (deleted, cut):
            np.testing.assert_array_equal(read(c), before[c][1])
        else:
            assert os.stat(c).st_mtime_ns == before[c][0], c


def test_a_corrupt_image_is_an_error_naming_it_or_skipped_when_asked(tmp_path):
    tree(tmp_path, exts=("png",))
    bad = os.path.join(str(tmp_path), "train", "cats", "zz_broken.jpg")
    with open(bad, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ImageDecodeError, match="zz_broken.jpg"):
        data_on(tmp_path).resize(40)
    # No copy, whole or partial, of the broken file.
    out = os.path.join(str(tmp_path), "tmp", "40", "train", "cats")
    assert not [f for f in os.listdir(out) if "zz_broken" in f]
    with pytest.warns(UserWarning, match="zz_broken.jpg"):
        new = data_on(tmp_path, skip_bad=True).resize(40)
    assert os.path.exists(os.path.join(new.img_path, "train", "dogs", "noise.png"))


def test_a_blocked_destination_is_an_error_naming_it(tmp_path):
    tree(tmp_path, exts=("png",))
    with open(os.path.join(str(tmp_path), "blocked"), "w") as fh:
        fh.write("a file where the copies' folder would go")
    with pytest.raises(OSError, match="blocked"):
        data_on(tmp_path).resize(40, "blocked")
    with pytest.raises(ValueError, match="positive"):
        data_on(tmp_path).resize(0)


@pytest.mark.skipif(not os.path.isdir(DOGSCATS), reason=f"the real photos are not at {DOGSCATS}")
def test_real_photos_resize_and_precompute_keeps_its_own_cache(tmp_path, hub):
    """Lesson 2's `data.resize(...)` on real photos, then a precomputed learner on the copies:
    its activation cache sits beside (not over) the one of the originals."""
    from fastai.conv_learner import ConvLearner, resnet18
    dogscats_slice(str(tmp_path), 6, 4)
    tfms = tfms_from_model(resnet18, 64)
    data = ImageClassifierData.from_paths(str(tmp_path), bs=4, tfms=tfms, num_workers=2)
    new = data.resize(72)
    for f in new.trn_ds.fnames:
        with Image.open(os.path.join(new.img_path, f)) as im:
            assert min(im.size) == 72, f
    ConvLearner.pretrained(resnet18, data, precompute=True)
    ConvLearner.pretrained(resnet18, new, precompute=True)
    caches = sorted(f for f in os.listdir(os.path.join(str(tmp_path), "tmp")) if f.endswith(".bin"))
    assert len(caches) == 4, caches  # train and valid, for the originals and for the copies
    assert not os.path.exists(os.path.join(new.img_path, "tmp"))
