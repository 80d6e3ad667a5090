"""Datasets and transforms of the user's own, served by the Rust loaders the way fastai 0.7's
loaders served them: `ds[i]` (get_x, get_y, then the transform) once per item per epoch, on the
loader's worker threads, batched in the loader's order. References are PIL and numpy reads of
the files the tests write, and hand-written torch loops."""
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from fastai import _native
from fastai.dataset import (ArraysDataset, ArraysIndexDataset, ArraysIndexRegressionDataset,
                            ArraysNhotDataset, BaseDataset, DataLoader, FilesArrayDataset,
                            FilesDataset, FilesIndexArrayDataset, FilesIndexArrayRegressionDataset,
                            FilesNhotArrayDataset, ImageClassifierData, ImageData)

SZ = 8


def write_pngs(folder, n, mode="RGB", size=(SZ, SZ), seed=0):
    """`n` random PNGs `i.png` in `folder`; returns (names, the pixels as numpy uint8)."""
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    names, pixels = [], []
    depth = {"RGB": 3, "RGBA": 4}[mode]
    for i in range(n):
        a = rng.randint(0, 256, size=(size[1], size[0], depth)).astype(np.uint8)
        Image.fromarray(a, mode).save(os.path.join(folder, f"{i}.png"))
        names.append(f"{i}.png")
        pixels.append(a)
    return np.array(names), pixels


class ChwTransform:
    """A user transform: crops the top-left SZ x SZ, normalises by per-channel stats, returns
    CHW float32 (what 0.7's Transforms.__call__ returns); counts its calls and their threads."""

    def __init__(self, mean, std, sz=SZ):
        self.m, self.s, self.sz = np.asarray(mean, np.float32), np.asarray(std, np.float32), sz
        self.calls, self.threads = 0, set()
        self._lock = threading.Lock()

    def __call__(self, x, y):
        with self._lock:
            self.calls += 1
            self.threads.add(threading.get_ident())
        x = (np.asarray(x, np.float32)[:self.sz, :self.sz] - self.m) / self.s
        return np.ascontiguousarray(np.moveaxis(x, -1, 0)), y

    def denorm(self, arr):
        return arr * self.s + self.m


class RgbyDataset(FilesDataset):
    """A 4-channel dataset as protein-atlas kernels wrote them: labels set before the base
    constructor, get_x stacking channels from the PNG (here one RGBA file)."""

    def __init__(self, fnames, y, transform, path):
        self.y = y
        super().__init__(fnames, transform, path)

    def get_x(self, i):
        with Image.open(os.path.join(self.path, self.fnames[i])) as im:
            return np.asarray(im, dtype=np.float32) / 255

    def get_y(self, i):
        return self.y[i]

    def get_c(self):
        return int(self.y.max()) + 1


def rgby_data(tmp_path, n_trn=12, n_val=6, bs=4, num_workers=2):
    names, pixels = write_pngs(str(tmp_path / "imgs"), n_trn + n_val, "RGBA", size=(SZ + 3, SZ + 2))
    stack = np.stack(pixels).astype(np.float32) / 255
    mean, std = stack.mean(axis=(0, 1, 2)), stack.std(axis=(0, 1, 2))
    y = np.arange(n_trn + n_val) % 3
    tfm = ChwTransform(mean, std)
    trn, val = (names[:n_trn], y[:n_trn]), (names[n_trn:], y[n_trn:])
    ds = ImageClassifierData.get_ds(RgbyDataset, trn, val, (tfm, tfm), path=str(tmp_path / "imgs"))
    md = ImageClassifierData(str(tmp_path), ds, bs, num_workers, ["a", "b", "c"])
    ref = [(p.astype(np.float32) / 255)[:SZ, :SZ] for p in pixels]
    ref = [np.moveaxis((r - mean) / std, -1, 0).astype(np.float32) for r in ref]
    return md, tfm, ref, y


def test_a_four_channel_files_dataset_trains_predicts_and_ttas(tmp_path):
    md, tfm, ref, y = rgby_data(tmp_path)
    assert md.trn_dl._native.dataset.is_python and md.trn_dl._native.pipeline is None
    assert md.c == 3 and md.sz == SZ and md.trn_ds.n == 12
    # Validation batches in order, pixel for pixel the numpy reference of each file.
    xs, ys = zip(*list(md.val_dl))
    assert [tuple(x.shape) for x in xs] == [(4, 4, SZ, SZ), (2, 4, SZ, SZ)]
    assert md.val_dl._native.channels == 4
    np.testing.assert_allclose(torch.cat(xs).numpy(), np.stack(ref[12:]), rtol=1e-6, atol=1e-6)
    assert torch.cat(ys).tolist() == y[12:].tolist() and ys[0].dtype == torch.int64
    # Training batches: each item once, in the loader's order.
    order = md.trn_dl._native.order(md.trn_dl._epoch).tolist()
    xt, yt = zip(*list(md.trn_dl))
    np.testing.assert_allclose(torch.cat(xt).numpy(), np.stack([ref[i] for i in order]), atol=1e-6)
    assert torch.cat(yt).tolist() == [int(y[i]) for i in order]
    # 4-channel statistics undo on a batch.
    np.testing.assert_allclose(md.val_ds.denorm(xs[0])[0], ref[12].transpose(1, 2, 0) * tfm.s + tfm.m,
                               atol=1e-6)

    # A small convnet trained one epoch over the loader, then predictions and TTA.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, md.c))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    seen = 0
    for x, t in md.trn_dl:
        loss = torch.nn.functional.cross_entropy(net(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(x)
    assert seen == 12 and all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    with torch.no_grad():
        preds = torch.cat([net(x) for x, _ in md.val_dl])
        np.testing.assert_allclose(preds.numpy(), net(torch.from_numpy(np.stack(ref[12:]))).numpy(),
                                   rtol=1e-5, atol=1e-6)
        tta = [torch.cat([net(x) for x, _ in md.aug_dl]) for _ in range(2)]
    assert all(t.shape == (6, 3) for t in tta)


def test_get_x_subclass_adds_a_constant_pixel_for_pixel(tmp_path):
    names, pixels = write_pngs(str(tmp_path), 7, size=(SZ + 1, SZ))

    class Brighter(FilesIndexArrayDataset):
        def get_x(self, i):
            return super().get_x(i) + 0.25

    tfm = ChwTransform([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    ds = ImageClassifierData.get_ds(Brighter, (names[:4], y[:4]), (names[4:], y[4:]), (tfm, tfm),
                                    path=str(tmp_path))
    md = ImageClassifierData(str(tmp_path), ds, 2, 2, None)
    assert md.val_dl._native.dataset.is_python
    got = torch.cat([x for x, _ in md.val_dl]).numpy()
    for k, i in enumerate(range(4, 7)):
        pil = np.asarray(Image.open(os.path.join(tmp_path, names[i])).convert("RGB"), np.float32) / 255
        want = ((pil + 0.25)[:SZ, :SZ] - tfm.m) / tfm.s
        np.testing.assert_allclose(got[k], want.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
        # ds[i] is the same item, made in Python directly.
        np.testing.assert_allclose(md.val_ds[k][0], want.transpose(2, 0, 1), atol=1e-6)


def test_a_user_transform_runs_once_per_item_per_epoch_on_the_workers(tmp_path):
    md, tfm, _, _ = rgby_data(tmp_path, n_trn=10, n_val=3, bs=3, num_workers=2)
    tfm.calls, tfm.threads = 0, set()
    for _ in range(2):
        assert sum(len(x) for x, _ in md.trn_dl) == 10
    assert tfm.calls == 20
    assert threading.get_ident() not in tfm.threads and 1 <= len(tfm.threads) <= 2
    # A loop stopped early stops the producer: no call waits on the GIL forever.
    it = iter(md.trn_dl)
    next(it)
    it.close()


def test_per_item_targets_keep_the_shape_the_dataset_gave(tmp_path):
    names, _ = write_pngs(str(tmp_path), 5)

    class Masks(FilesDataset):
        def __init__(self, fnames, kind, transform, path):
            self.kind = kind
            super().__init__(fnames, transform, path)

        def get_c(self):
            return 0

        def get_y(self, i):
            if self.kind == "mask":
                return (np.arange(SZ * SZ).reshape(SZ, SZ) + i) % 3  # int64 class-index mask
            if self.kind == "box":
                return np.array([i, 2 * i, 3, 4], dtype=np.float64)
            if self.kind == "uint8":
                return np.full((2,), i, dtype=np.uint8)
            return np.float32(i) / 2

    tfm = ChwTransform([0, 0, 0], [1, 1, 1])
    for kind, shape, dtype in (("mask", (5, SZ, SZ), torch.int64), ("box", (5, 4), torch.float32),
                               ("uint8", (5, 2), torch.int64), ("scalar", (5,), torch.float32)):
        ds = ImageData.get_ds(Masks, (names, kind), (names, kind), (tfm, tfm), path=str(tmp_path))
        md = ImageData(str(tmp_path), ds, 5, 1, None)
        (x, y), = list(md.val_dl)
        assert tuple(y.shape) == shape and y.dtype == dtype, kind
        want = np.stack([np.asarray(ds[1].get_y(i)) for i in range(5)])
        np.testing.assert_array_equal(y.numpy(), want.astype(y.numpy().dtype))


class Boom(Exception):
    pass


def _user_data(tmp_path, cls, tfm=None, n=6, bs=2):
    names, _ = write_pngs(str(tmp_path), n)
    y = np.arange(n) % 2
    tfm = tfm or ChwTransform([0, 0, 0], [1, 1, 1])
    ds = ImageClassifierData.get_ds(cls, (names, y), (names, y), (tfm, tfm), path=str(tmp_path))
    return ImageClassifierData(str(tmp_path), ds, bs, 2, None)


@pytest.mark.parametrize("where", ["get_x", "get_y", "transform"])
def test_an_exception_in_user_code_reaches_the_caller_unchanged_with_a_note(tmp_path, where):
    class Broken(FilesIndexArrayDataset):
        def get_x(self, i):
            if where == "get_x" and i == 3:
                raise Boom(f"no pixels for {i}")
            return super().get_x(i)

        def get_y(self, i):
            if where == "get_y" and i == 3:
                raise Boom(f"no label for {i}")
            return super().get_y(i)

    class BadTfm(ChwTransform):
        def __call__(self, x, y):
            if where == "transform" and np.array_equal(x[0], BadTfm.marker):
                raise Boom("transform failed")
            return super().__call__(x, y)

    BadTfm.marker = None
    md = _user_data(tmp_path, Broken, BadTfm([0, 0, 0], [1, 1, 1]))
    if where == "transform":  # item 3's first row of pixels says it is item 3
        BadTfm.marker = md.val_ds.get_x(3)[0]
    with pytest.raises(Boom) as e:
        list(md.val_dl)
    assert type(e.value) is Boom
    notes = " ".join(getattr(e.value, "__notes__", []))
    assert "Broken" in notes and "item 3" in notes and os.path.join(str(tmp_path), "3.png") in notes
    # The loader still works afterwards (a new pass) once the data is fine.
    BadTfm.marker = None
    if where == "transform":
        assert sum(len(x) for x, _ in md.val_dl) == 6


def _ds_class(make_x):
    class Odd(FilesIndexArrayDataset):
        def get1item(self, i):
            return make_x(i), int(self.y[i])
    return Odd


@pytest.mark.parametrize("make_x, expected", [
    (lambda i: np.zeros((3, SZ, SZ), np.uint8), r"Odd item \d.*uint8.*expected a float32"),
    (lambda i: np.zeros((SZ, SZ), np.float32), r"Odd item \d.*shape \[8, 8\].*\(C, sz, sz\)"),
    (lambda i: np.zeros((3, SZ, SZ - 1), np.float32), r"Odd item 0.*\(3, 8, 7\); expected \(C, 8, 8\)"),
    (lambda i: np.zeros((3 if i < 3 else 4, SZ, SZ), np.float32),
     # Items are made on several threads: the message names both items, in index order.
     r"differs between items: Odd item [0-2] \(.*\) gives \(3, 8, 8\) but Odd item [3-5] \(.*\) gives \(4, 8, 8\)"),
    (lambda i: "not an array", r"Odd item \d.*is a str; expected a float32"),
])
def test_a_wrong_x_is_a_value_error_naming_the_dataset_and_item(tmp_path, make_x, expected):
    md = _user_data(tmp_path, _ds_class(make_x), bs=6)
    with pytest.raises(ValueError, match=expected):
        list(md.val_dl)


def test_a_wrong_y_is_a_value_error_naming_the_dataset_and_item(tmp_path):
    class Mixed(FilesIndexArrayDataset):
        def get_y(self, i):
            return np.zeros(2, np.float32) if i == 4 else 1.5

    md = _user_data(tmp_path, Mixed, bs=6)
    with pytest.raises(ValueError, match=r"Mixed item 4 \(.*4.png\): y is a float32 array of shape \[2\]"):
        list(md.val_dl)

    class Text(FilesIndexArrayDataset):
        def get_y(self, i):
            return "cat"

    md = _user_data(tmp_path, Text, bs=6)
    with pytest.raises(ValueError, match=r"Text item 0: y is <U3"):
        list(md.val_dl)


def test_the_library_classes_keep_the_fused_path(tmp_path):
    from fastai.transforms import tfms_from_stats, imagenet_stats
    names, _ = write_pngs(str(tmp_path), 6, size=(SZ + 4, SZ + 2))
    y = np.arange(6) % 2
    tfms = tfms_from_stats(imagenet_stats, SZ)

    class OnlyC(FilesIndexArrayDataset):  # overrides nothing of the item protocol
        def get_c(self):
            return 5

    for cls in (FilesIndexArrayDataset, OnlyC):
        ds = ImageClassifierData.get_ds(cls, (names[:4], y[:4]), (names[4:], y[4:]), tfms,
                                        path=str(tmp_path))
        md = ImageClassifierData(str(tmp_path), ds, 2, 2, None)
        for dl in (md.trn_dl, md.val_dl, md.fix_dl, md.aug_dl):
            assert not dl._native.dataset.is_python and dl._native.pipeline is not None
        # The split's loaders share one Rust dataset, as the class methods' do.
        assert md.trn_dl._native.dataset is md.fix_dl._native.dataset
        ref = ImageClassifierData.from_names_and_array(str(tmp_path), list(names), y, [0, 1],
                                                       val_idxs=[4, 5], tfms=tfms, bs=2, seed=md.seed)
        assert torch.equal(torch.cat([x for x, _ in md.val_dl]), torch.cat([x for x, _ in ref.val_dl]))
    assert md.c == 5
    # A transform that runs only in Python (a user step in the training transform) sends the
    # same class down the Python path for the loaders that use it.
    from fastai.transforms import Transform

    class Identity(Transform):
        def do_transform(self, x, is_y):
            return x

    tfms = tfms_from_stats(imagenet_stats, SZ, aug_tfms=[Identity()])
    ds = ImageClassifierData.get_ds(FilesIndexArrayDataset, (names[:4], y[:4]), (names[4:], y[4:]),
                                    tfms, path=str(tmp_path))
    md = ImageClassifierData(str(tmp_path), ds, 2, 2, None)
    assert md.trn_dl._native.dataset.is_python and not md.val_dl._native.dataset.is_python


@pytest.mark.parametrize("own_y", [False, True])
def test_a_learner_fits_predicts_and_precomputes_on_python_items(tmp_path, own_y):
    """Only get_x the user's: its images go through the fused pipeline; get_y too: Python
    makes each item."""
    from fastai.conv_learner import ConvLearner, resnet18
    from fastai.transforms import tfms_from_model
    names, _ = write_pngs(str(tmp_path), 10, size=(SZ * 2, SZ * 2))

    class Half(FilesIndexArrayDataset):
        def get_x(self, i):
            return super().get_x(i) * 0.5

    class HalfOwnY(Half):
        def get_y(self, i):
            return int(self.y[i])

    y = np.arange(10) % 2
    tfms = tfms_from_model(resnet18, 32)
    ds = ImageClassifierData.get_ds(HalfOwnY if own_y else Half, (names[:6], y[:6]),
                                    (names[6:], y[6:]), tfms, path=str(tmp_path))
    md = ImageClassifierData(str(tmp_path), ds, 3, 2, ["a", "b"])
    nds = md.trn_dl._native.dataset
    assert (nds.is_python, nds.python_pixels) == ((True, False) if own_y else (False, True))
    learn = ConvLearner.pretrained(resnet18, md, pretrained=False)
    vals = learn.fit(1e-2, 1)
    assert np.isfinite(vals[0])
    log_preds = learn.predict()
    assert log_preds.shape == (4, 2)
    # predict() is the model on the validation loader's batches.
    x = torch.cat([b for b, _ in md.val_dl])
    np.testing.assert_allclose(learn.predict_array(x.numpy()), log_preds, rtol=1e-4, atol=1e-4)
    tta, targs = learn.TTA(n_aug=2)
    assert tta.shape == (3, 4, 2) and targs.tolist() == y[6:].tolist()
    # precompute: computed in memory, never cached on disk (Python code cannot be keyed).
    learn.precompute = True
    learn.fit(1e-2, 1)
    tmp = os.path.join(str(tmp_path), "tmp")
    assert not os.path.isdir(tmp) or not [f for f in os.listdir(tmp) if not f.startswith(".")]


def test_base_dataset_protocol_as_fastai_07():
    calls = []

    class Toy(BaseDataset):
        def get_n(self):
            calls.append("n")
            return 5

        def get_c(self):
            calls.append("c")
            return 2

        def get_sz(self):
            calls.append("sz")
            return 4

        def get_x(self, i):
            return np.full((4, 4, 3), i / 10)

        def get_y(self, i):
            return i % 2

    ds = Toy()
    assert calls == ["n", "c", "sz"] and (ds.n, ds.c, ds.sz, len(ds)) == (5, 2, 4, 5)
    x, y = ds[2]
    np.testing.assert_array_equal(x, np.full((4, 4, 3), 0.2)) and y == 0
    xs, ys = ds[1:3]
    assert xs.shape == (2, 4, 4, 3) and ys == (1, 0) and isinstance(ys, tuple)
    assert not ds.is_multi and not ds.is_reg
    with pytest.raises(NotImplementedError):
        BaseDataset()


def test_the_class_family_with_its_07_constructors(tmp_path):
    names, pixels = write_pngs(str(tmp_path), 3)
    tfm = ChwTransform([0, 0, 0], [1, 1, 1])
    idx = FilesIndexArrayDataset(names, np.array([0, 4, 1]), tfm, str(tmp_path))
    assert (idx.c, idx.sz, idx.n, idx.is_multi, bool(idx.is_reg)) == (5, SZ, 3, False, False)
    np.testing.assert_allclose(idx[1][0], np.moveaxis(pixels[1] / 255, -1, 0), atol=1e-6)
    nhot = FilesNhotArrayDataset(names, np.eye(3, dtype=np.float32), tfm, str(tmp_path))
    assert nhot.c == 3 and nhot.is_multi
    reg = FilesIndexArrayRegressionDataset(names, np.zeros((3, 4), np.float32), tfm, str(tmp_path))
    assert reg.c == 4 and bool(reg.is_reg)
    assert FilesArrayDataset(names, np.zeros(3), tfm, str(tmp_path)).c == 0
    with pytest.raises(NotImplementedError):
        FilesDataset(names, tfm, str(tmp_path))
    with pytest.raises(AssertionError):
        FilesArrayDataset(names, np.zeros(2), tfm, str(tmp_path))
    x = np.zeros((4, 6, 6, 3), np.float32)
    a = ArraysIndexDataset(x, np.array([0, 2, 1, 1]), None)
    assert (a.c, a.sz, len(a)) == (3, 6, 4)
    assert ArraysNhotDataset(x, np.zeros((4, 7)), None).c == 7
    assert bool(ArraysIndexRegressionDataset(x, np.array([0, 1, 0, 0]), None).is_reg)
    assert isinstance(a, ArraysDataset)
    # A DataLoader made directly, as 0.7's single-image prediction did: batch size 1.
    dl = DataLoader(FilesIndexArrayDataset(names[:1], np.array([0]), tfm, str(tmp_path)))
    (xb, yb), = list(dl)
    assert xb.shape == (1, 3, SZ, SZ) and yb.tolist() == [0]


def test_get_ds_makes_six_datasets_in_the_users_argument_order(tmp_path):
    made = []

    class PathSecond(FilesDataset):
        def __init__(self, fnames, path, transform):
            made.append((list(fnames), path, transform))
            super().__init__(fnames, transform, path)

        def get_c(self):
            return 0

        def get_y(self, i):
            return 0

    names, _ = write_pngs(str(tmp_path), 4)
    t0, t1 = ChwTransform([0] * 3, [1] * 3), ChwTransform([0] * 3, [1] * 3)
    p = str(tmp_path)
    ds = ImageData.get_ds(PathSecond, (names[:2], p), (names[2:3], p), (t0, t1), test=(names[3:], p))
    assert [(f, t) for f, _, t in made] == [(list(names[:2]), t0), (list(names[2:3]), t1),
                                            (list(names[:2]), t1), (list(names[2:3]), t0),
                                            (list(names[3:]), t1), (list(names[3:]), t0)]
    md = ImageData(p, ds, 2, 2, None)
    assert md.trn_dl.shuffle and not any(dl.shuffle for dl in (md.val_dl, md.fix_dl, md.aug_dl,
                                                                   md.test_dl, md.test_aug_dl))
    assert md.test_ds is ds[4] and md.trn_ds is ds[0]
    (x, y), = list(md.test_dl)
    assert x.shape == (1, 3, SZ, SZ) and y.tolist() == [0]
    md.is_multi = True  # settable, as real code assigns it
    assert md.is_multi and not md.trn_ds.is_multi


def test_an_iterator_freed_mid_epoch_stops_without_deadlock(tmp_path):
    """Freed with the GIL held while the workers wait for it to make items: it must let them
    finish (or stop) instead of joining them under the GIL."""
    import gc
    import time

    class Slow(FilesIndexArrayDataset):
        def get_x(self, i):
            time.sleep(0.01)
            return super().get_x(i)

    md = _user_data(tmp_path, Slow, n=24, bs=2)
    it = md.trn_dl._native.iter_epoch(0)
    next(it)
    t = time.monotonic()
    del it
    gc.collect()
    assert time.monotonic() - t < 30
    assert sum(len(x) for x, _ in md.val_dl) == 24


def test_resize_imgs_gives_the_same_class_over_smaller_copies(tmp_path):
    names, _ = write_pngs(str(tmp_path), 2, size=(30, 20))
    tfm = ChwTransform([0] * 3, [1] * 3)
    ds = FilesIndexArrayDataset(names, np.array([0, 1]), tfm, str(tmp_path))
    small = ds.resize_imgs(10, "tmp")
    assert type(small) is FilesIndexArrayDataset and small.path == os.path.join(str(tmp_path), "tmp", "10")
    with Image.open(os.path.join(small.path, names[1])) as im:
        assert im.size == (15, 10)  # smaller side 10, the other scaled alike
    assert small.get_x(1).shape == (10, 15, 3) and small.y is ds.y


def test_data_resize_of_user_datasets_resizes_each_with_its_own_class(tmp_path):
    """fastai 0.7's `ImageData.resize` on data built from datasets: each dataset's own
    `resize_imgs` (a user's subclass keeps its class and its get_x), a data object of the same
    class over the copies; the copies checked against PIL's sizes."""
    from fastai.transforms import tfms_from_stats

    class Tinted(FilesIndexArrayDataset):
        def get_x(self, i):
            return super().get_x(i) * np.float32(0.5)

    names, _ = write_pngs(str(tmp_path), 6, size=(30, 20))
    y = np.array([0, 1, 0, 1, 0, 1])
    tfms = tfms_from_stats(([0.5] * 3, [0.25] * 3), 8)
    ds = ImageData.get_ds(Tinted, (names[:4], y[:4]), (names[4:], y[4:]), tfms, path=str(tmp_path))
    md = ImageData(str(tmp_path), ds, 2, 1, [0, 1])
    small = md.resize(10, "tmp")
    assert type(small) is ImageData and small.path == str(tmp_path)
    assert type(small.trn_ds) is Tinted and list(map(str, small.trn_ds.fnames)) == list(map(str, names[:4]))
    assert small.img_path == os.path.join(str(tmp_path), "tmp", "10")
    with Image.open(os.path.join(small.img_path, names[5])) as im:
        assert im.size == (15, 10)
    x, yb = next(iter(small.trn_dl))
    assert tuple(x.shape) == (2, 3, 8, 8) and len(yb) == 2
    arrays = ImageData(str(tmp_path), [ArraysIndexDataset(np.zeros((2, 8, 8, 3), np.float32), np.array([0, 1]), None)] * 2,
                       2, 1, [0, 1])
    with pytest.raises(ValueError, match="no image files to resize"):
        arrays.resize(4)
