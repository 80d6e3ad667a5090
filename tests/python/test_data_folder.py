"""ImageClassifierData.from_paths: layout, labels, order, loaders, errors, decoding."""
import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fastai import _native
from fastai.dataset import ImageClassifierData, get_cv_idxs, open_image
from fastai.exceptions import DatasetLayoutError, ImageDecodeError
from fastai.transforms import tfms_from_model, transforms_side_on
from _fixtures import (IMAGENET_MEAN, IMAGENET_STD, make_tree, normalize_chw, noise_image,
                       pil_scale_center_crop, png_claiming, save, smooth_image)

SZ = 24


def layout(n_trn=(3, 4), n_val=(2, 3)):
    # Class names chosen so code-point order differs from case-insensitive order.
    return {
        "train": {"dogs": [f"d{i:02d}" for i in range(n_trn[1])][::-1], "Cats": [f"c{i}" for i in range(n_trn[0])]},
        "valid": {"dogs": [f"v{i}" for i in range(n_val[1])], "Cats": [f"w{i}" for i in range(n_val[0])]},
    }


@pytest.fixture
def tree(tmp_path):
    imgs = make_tree(str(tmp_path), layout())
    return str(tmp_path) + "/", imgs


def tfms(aug=False):
    if aug:
        return tfms_from_model("resnet34", SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    return tfms_from_model("resnet34", SZ)


def data_of(path, **kw):
    kw.setdefault("bs", 3)
    kw.setdefault("num_workers", 2)
    kw.setdefault("seed", 1)
    return ImageClassifierData.from_paths(path, tfms=kw.pop("tfms", tfms()), **kw)


def test_labels_order_and_fnames(tree):
    path, imgs = tree
    # noise next to the images: hidden files, a non-image and a stray file at class level
    open(os.path.join(path, "train/dogs/.DS_Store"), "w").close()
    open(os.path.join(path, "train/dogs/Thumbs.db"), "w").close()
    open(os.path.join(path, "train/labels.csv"), "w").close()
    os.makedirs(os.path.join(path, "valid/.ipynb_checkpoints"))
    with pytest.warns(UserWarning, match=r"left out 2 entries that are not images.*train/dogs/Thumbs.db"):
        data = data_of(path)
    assert data.classes == ["Cats", "dogs"]  # code-point order: uppercase first
    assert data.c == 2 and data.sz == SZ and not data.is_multi and not data.is_reg
    assert data.path == path and data.bs == 3
    # A plain list of str, as in fastai 0.7 (`.index`, json, `PATH + fnames[i]`).
    assert type(data.trn_ds.fnames) is list and type(data.val_ds.fnames[0]) is str
    assert list(data.trn_ds.fnames) == [f"train/Cats/c{i}.png" for i in range(3)] + \
        [f"train/dogs/d{i:02d}.png" for i in range(4)]
    assert list(data.val_ds.fnames) == ["valid/Cats/w0.png", "valid/Cats/w1.png"] + \
        [f"valid/dogs/v{i}.png" for i in range(3)]
    assert data.trn_y.dtype == np.int64 and data.trn_y.tolist() == [0] * 3 + [1] * 4
    assert data.val_y.tolist() == [0, 0, 1, 1, 1]
    assert data.skipped["train"] == {"hidden": 1, "non_image": 2,
                                     "examples": ["train/labels.csv", "train/dogs/Thumbs.db"]}
    assert data.skipped["valid"]["hidden"] == 1
    # PATH + fnames[i] is a real file, and ds[i] is that file's image
    for i, f in enumerate(data.val_ds.fnames):
        assert os.path.isfile(path + f)
        x, y = data.val_ds[i]
        assert x.shape == (3, SZ, SZ) and x.dtype == np.float32 and y == data.val_y[i]
        ref = normalize_chw(pil_scale_center_crop(imgs[f], SZ) / 255.0)
        assert np.abs(x - ref).max() < 3 / 255 / 0.224
    np.testing.assert_allclose(data.val_ds.get_x(0), imgs["valid/Cats/w0.png"] / 255.0, atol=1e-6)
    assert len(data.trn_ds) == data.trn_ds.n == 7


def test_loaders_batches_and_epochs(tree):
    path, imgs = tree
    data = data_of(path, tfms=tfms(aug=True))
    assert len(data.trn_dl) == 3 and len(data.val_dl) == 2  # ceil(7/3), ceil(5/3)
    assert data.test_dl is None and data.test_aug_dl is None
    with pytest.raises(AttributeError):
        data.test_ds
    for dl in (data.trn_dl, data.val_dl, data.fix_dl, data.aug_dl):
        assert isinstance(dl._native, _native.DataLoader)
    batches = list(data.val_dl)
    assert [len(x) for x, _ in batches] == [3, 2]
    x, y = batches[0]
    assert x.shape == (3, 3, SZ, SZ) and x.dtype == torch.float32 and y.dtype == torch.int64
    # validation: deterministic and in order, and equal to ds[i]
    again = list(data.val_dl)
    for (a, ya), (b, yb) in zip(batches, again):
        assert torch.equal(a.cpu(), b.cpu()) and torch.equal(ya.cpu(), yb.cpu())
    np.testing.assert_allclose(batches[1][0][1].cpu().numpy(), data.val_ds[4][0], atol=1e-6)
    assert torch.cat([y for _, y in batches]).tolist() == data.val_y.tolist()
    # training: each index once per epoch, a new order each epoch
    orders = [data.trn_dl._native.order(e).tolist() for e in range(4)]
    assert all(sorted(o) == list(range(7)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    ys = torch.cat([y for _, y in data.trn_dl]).tolist()
    assert sorted(ys) == sorted(data.trn_y.tolist())
    # aug_dl: the validation files through the training transform, new draws each pass
    assert list(data.aug_dl.dataset.fnames) == list(data.val_ds.fnames)
    a1 = torch.cat([x for x, _ in data.aug_dl])
    a2 = torch.cat([x for x, _ in data.aug_dl])
    assert a1.shape == (5, 3, SZ, SZ) and not torch.equal(a1, a2)
    assert torch.cat([y for _, y in data.aug_dl]).tolist() == data.val_y.tolist()
    # fix_dl: training files, validation transform, in order
    fx = torch.cat([x for x, _ in data.fix_dl])
    np.testing.assert_allclose(fx[0].cpu().numpy(), data.fix_dl.dataset[0][0], atol=1e-6)


def test_a_split_has_one_dataset_its_loaders_share(tree):
    """The files and labels of a split exist once, in the Rust dataset its two loaders share,
    and the labels keep their dtype across the boundary (int64 classes)."""
    path, _ = tree
    data = ImageClassifierData.from_paths(path, bs=3, num_workers=2, seed=1, tfms=tfms(aug=True),
                                          test_name="valid", test_with_labels=True)
    nds = lambda dl: dl._native.dataset
    assert nds(data.trn_dl) is nds(data.fix_dl) and nds(data.val_dl) is nds(data.aug_dl)
    assert nds(data.test_dl) is nds(data.test_aug_dl)
    assert nds(data.trn_dl) is not nds(data.val_dl) and len(nds(data.trn_dl)) == 7
    # Labels from the folder names, read back from the one copy the loaders use.
    want = [0] * 3 + [1] * 4
    assert nds(data.trn_dl).y.dtype == np.int64 and nds(data.trn_dl).y.tolist() == want
    assert data.trn_y is data.fix_dl.dataset.y and data.trn_y.tolist() == want
    assert torch.cat([y for _, y in data.fix_dl]).tolist() == want
    # The training loader's order is the one epoch order, by (seed, epoch) alone.
    for e in range(3):
        assert data.trn_dl._native.order(e).tolist() == _native.epoch_order(7, 1, e)


def test_a_transform_is_parsed_once_and_shared_by_its_loaders(tree):
    """Each `Transforms` becomes one Rust pipeline, built on first use and handed to every
    loader that runs it: the training transform to trn_dl and aug_dl (and the test ones), the
    validation transform to val_dl and fix_dl."""
    path, _ = tree
    trn_tfm, val_tfm = tfms(aug=True)
    data = ImageClassifierData.from_paths(path, bs=3, num_workers=2, seed=1, tfms=(trn_tfm, val_tfm),
                                          test_name="valid", test_with_labels=True)
    pipe = lambda dl: dl._native.pipeline
    assert isinstance(pipe(data.trn_dl), _native.Pipeline)
    assert pipe(data.trn_dl) is pipe(data.aug_dl) is pipe(data.test_aug_dl) is trn_tfm._pipeline
    assert pipe(data.val_dl) is pipe(data.fix_dl) is pipe(data.test_dl) is val_tfm._pipeline
    assert pipe(data.trn_dl) is not pipe(data.val_dl)
    assert pipe(data.trn_dl).sz == trn_tfm.sz


def test_same_seed_same_batches_whatever_threads(tree):
    path, _ = tree
    runs = []
    for workers in (1, 4):
        data = data_of(path, tfms=tfms(aug=True), num_workers=workers, seed=123)
        runs.append([torch.cat([x for x, _ in data.trn_dl]) for _ in range(2)] +
                    [torch.cat([y for _, y in data.trn_dl])])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    other = data_of(path, tfms=tfms(aug=True), seed=124)
    assert not torch.equal(torch.cat([x for x, _ in other.trn_dl]), runs[0][0])


def test_seed_none_is_random_and_exposed(tree):
    path, _ = tree
    a, b = data_of(path, seed=None), data_of(path, seed=None)
    assert isinstance(a.seed, int) and a.seed != b.seed


def test_denorm_inverts_normalisation(tree):
    path, imgs = tree
    data = data_of(path)
    x, _ = next(iter(data.val_dl))
    d = data.val_ds.denorm(x)
    assert d.shape == (3, SZ, SZ, 3) and d.dtype == np.float32
    ref = pil_scale_center_crop(imgs["valid/Cats/w0.png"], SZ) / 255.0
    assert np.abs(d[0] - ref).max() < 3 / 255
    single = data.val_ds.denorm(data.val_ds[0][0])
    assert single.shape == (SZ, SZ, 3)
    raw = np.random.RandomState(0).rand(2, 3, 4, 5).astype(np.float32)
    np.testing.assert_allclose(data.val_ds.denorm(raw), np.moveaxis(raw, 1, -1) * IMAGENET_STD + IMAGENET_MEAN,
                               rtol=1e-6)


def test_tfms_are_required(tree):
    path, _ = tree
    with pytest.raises(AssertionError, match="please provide transformations"):
        ImageClassifierData.from_paths(path)


def test_validation_class_mismatch_is_an_error(tmp_path):
    lay = layout()
    del lay["valid"]["Cats"]
    make_tree(str(tmp_path), lay)
    with pytest.raises(DatasetLayoutError, match="missing.*Cats") as e:
        data_of(str(tmp_path))
    assert str(tmp_path / "valid") in str(e.value)
    lay = layout()
    lay["valid"]["birds"] = ["b0"]
    make_tree(str(tmp_path / "x"), lay)
    with pytest.raises(DatasetLayoutError, match="birds"):
        data_of(str(tmp_path / "x"))


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data_of(str(tmp_path))
    assert str(tmp_path / "train") in str(e.value)
    make_tree(str(tmp_path), layout())
    os.makedirs(tmp_path / "train" / "empty")
    os.makedirs(tmp_path / "valid" / "empty")
    with pytest.raises(DatasetLayoutError, match="no image files") as e:
        data_of(str(tmp_path))
    assert "empty" in str(e.value)


def test_test_folder(tree):
    path, _ = tree
    for name in ("b.png", "a.png", "c.jpeg"):
        save(smooth_image(30, 30), os.path.join(path, "test1", name))
    open(os.path.join(path, "test1", "notes.txt"), "w").close()
    with pytest.warns(UserWarning, match="test1/notes.txt"):
        data = data_of(path, test_name="test1")
    assert list(data.test_ds.fnames) == ["test1/a.png", "test1/b.png", "test1/c.jpeg"]
    batches = list(data.test_dl)
    assert batches[0][1].shape == (3,) and batches[0][1].dtype == torch.float32
    assert len(list(data.test_aug_dl)) == 1
    with pytest.raises(FileNotFoundError, match="test2"):
        data_of(path, test_name="test2")
    labelled = data_of(path, test_name="valid", test_with_labels=True)
    assert labelled.test_ds.y.tolist() == labelled.val_y.tolist()


def test_corrupt_file_raises_naming_it_then_skip_bad(tree):
    path, _ = tree
    bad = os.path.join(path, "valid", "dogs", "v1.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nthis is not really a png")
    data = data_of(path)
    for _ in range(2):  # the loader keeps working after an error
        t = time.time()
        with pytest.raises(ImageDecodeError) as e:
            list(data.val_dl)
        assert bad in str(e.value) and time.time() - t < 10
    assert isinstance(e.value, OSError)
    data = data_of(path, skip_bad=True)
    with pytest.warns(RuntimeWarning, match="v1.png"):
        ys = torch.cat([y for _, y in data.val_dl])
    assert len(ys) == 4


def test_enormous_dimensions_refused(tmp_path):
    p = png_claiming(str(tmp_path / "huge.png"), 200_000, 200_000)
    t = time.time()
    with pytest.raises(ImageDecodeError, match="larger than") as e:
        open_image(p)
    assert "huge.png" in str(e.value) and time.time() - t < 2


def test_breaking_out_of_a_loader_stops_promptly(tree):
    path, _ = tree
    data = data_of(path, bs=1, num_workers=1)
    t = time.time()
    for _ in range(20):
        it = iter(data.trn_dl)
        next(it)
        del it
    assert time.time() - t < 10
    assert len(list(data.trn_dl)) == 7


def _formats(tmp_path, arr):
    from PIL import Image as I
    out = {}
    im = I.fromarray(arr)
    for name, kw in [("a.png", {}), ("a.bmp", {}), ("a.tif", {}), ("a.webp", {"lossless": True}),
                     ("base.jpg", {"quality": 95}), ("prog.jpg", {"quality": 95, "progressive": True})]:
        out[name] = im.copy()
        im.save(tmp_path / name, **kw)
    im.convert("L").save(tmp_path / "grey.jpg", quality=95)
    out["grey.jpg"] = None
    im.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    out["cmyk.jpg"] = None
    im.convert("P").save(tmp_path / "a.gif")
    out["a.gif"] = None
    I.fromarray(np.dstack([arr, np.full(arr.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    out["rgba.png"] = None
    return out


def test_formats_decode_to_rgb_like_pil(tmp_path):
    arr = smooth_image(24, 32)
    for name in _formats(tmp_path, arr):
        ours = open_image(tmp_path / name)
        theirs = np.asarray(Image.open(tmp_path / name).convert("RGB")) / 255.0
        assert ours.shape == (24, 32, 3) and ours.dtype == np.float32, name
        tol = 0 if name.endswith(("png", "bmp", "tif", "webp", "gif")) else 3 / 255
        if name == "cmyk.jpg":
            tol = 12 / 255  # CMYK->RGB conversions differ slightly between decoders
        assert np.abs(ours - theirs).mean() <= tol + 1e-6, name


def test_exif_orientation_applied(tmp_path):
    arr = smooth_image(20, 30)
    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90 CW for display
    Image.fromarray(arr).save(tmp_path / "o.jpg", exif=ex.tobytes(), quality=95)
    assert open_image(tmp_path / "o.jpg").shape == (30, 20, 3)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        open_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(e.value)


def test_get_cv_idxs_leaves_global_state_alone():
    np.random.seed(3)
    before = np.random.get_state()[1].copy()
    idx = get_cv_idxs(50)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(42)  # the original's algorithm, on the global generator
    assert idx.tolist() == np.random.permutation(50)[:10].tolist()
    assert get_cv_idxs(50, cv_idx=1, val_pct=0.1).tolist() == np.random.RandomState(42).permutation(50)[5:10].tolist()


def test_memory_is_bounded_by_the_prefetch_depth(tmp_path):
    """However many batches pass, a consumer that lets each batch go makes the loader allocate
    only the few buffers of its prefetch window (channel depth 4, the batch being built, the one
    the consumer holds); holding on to every batch is the one way to need more."""
    make_tree(str(tmp_path), layout(n_trn=(20, 20), n_val=(1, 1)), size=(20, 24))
    data = data_of(str(tmp_path) + "/", bs=1, tfms=tfms(aug=True))
    dl = data.trn_dl
    n = 0
    for _ in range(3):
        for x, y in dl:
            n += 1
    assert n == 120
    assert dl._native.buffers_allocated <= 4 + 3, dl._native.buffers_allocated
    kept = [x for x, _ in dl]
    assert len(kept) == 40 and dl._native.buffers_allocated >= 40


def test_load_img_id_is_the_file_as_pil_reads_it(tree):
    from fastai.plots import load_img_id
    path, _ = tree
    data = data_of(path)
    for i in range(len(data.val_ds)):
        ref = np.asarray(Image.open(os.path.join(path, data.val_ds.fnames[i])).convert("RGB"))
        got = load_img_id(data.val_ds, i, path)
        assert got.dtype == np.uint8 and np.array_equal(got, ref), data.val_ds.fnames[i]
