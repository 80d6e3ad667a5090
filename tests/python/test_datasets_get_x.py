"""A dataset subclass that overrides only `get_x` (the common case of issue 18): the loaders ask
it for each image on their worker threads, and the rest -- the fused transform, the labels,
batching, fit, precompute, TTA, predict -- is the library's own. References: the same pixels
held in arrays through `from_arrays`, the library's class over the files (which PIL writes and
reads), and the files' bytes as PIL decodes them."""
import collections
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from fastai.dataset import FilesIndexArrayDataset, ImageClassifierData
from fastai.transforms import RandomFlip, RandomRotate, imagenet_stats, tfms_from_stats

SZ = 16
N_TRN, N_VAL = 5, 3


def write_pngs(folder, n, size=(24, 20), seed=0):
    """`n` random RGB PNGs `i.png` of `size` (w, h) in `folder`: (names, uint8 pixels)."""
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    names, pixels = [], []
    for i in range(n):
        a = rng.randint(0, 256, size=(size[1], size[0], 3)).astype(np.uint8)
        Image.fromarray(a, "RGB").save(os.path.join(folder, f"{i}.png"))
        names.append(f"{i}.png")
        pixels.append(a)
    return np.array(names), pixels


class Darker(FilesIndexArrayDataset):
    """The library's image times 0.5; records each call's item and thread."""
    calls, threads = [], set()
    lock = threading.Lock()

    def get_x(self, i):
        with Darker.lock:
            Darker.calls.append(int(i))
            Darker.threads.add(threading.get_ident())
        return super().get_x(i) * np.float32(0.5)


def _tfms():
    return tfms_from_stats(imagenet_stats, SZ, aug_tfms=[RandomRotate(10), RandomFlip()])


def _data(tmp_path, cls, bs=2):
    names, pixels = write_pngs(str(tmp_path), N_TRN + N_VAL)
    y = np.arange(N_TRN + N_VAL) % 2
    ds = ImageClassifierData.get_ds(cls, (names[:N_TRN], y[:N_TRN]), (names[N_TRN:], y[N_TRN:]),
                                    _tfms(), path=str(tmp_path))
    return ImageClassifierData(str(tmp_path), ds, bs, 2, ["a", "b"]), names, pixels, y


def _all(dl):
    xs, ys = zip(*list(dl))
    return torch.cat(xs), torch.cat(ys)


def test_a_get_x_subclass_feeds_the_fused_pipeline_with_its_pixels(tmp_path):
    md, names, pixels, y = _data(tmp_path, Darker)
    for dl in (md.trn_dl, md.val_dl, md.fix_dl, md.aug_dl):
        nds = dl._native.dataset
        assert nds.python_pixels and not nds.is_python and dl._native.pipeline is not None
    # The labels stay in Rust, as the library classes hold them.
    assert md.val_dl._native.dataset.y.tolist() == y[N_TRN:].tolist()

    # Reference 1: the darkened images as float32 arrays through from_arrays' fused path.
    dark = np.stack(pixels).astype(np.float32) / np.float32(255) * np.float32(0.5)
    ref = ImageClassifierData.from_arrays(str(tmp_path), (dark[:N_TRN], y[:N_TRN]),
                                          (dark[N_TRN:], y[N_TRN:]), bs=2, tfms=_tfms(),
                                          seed=md.seed, num_workers=1)
    x, t = _all(md.val_dl)
    assert x.shape == (N_VAL, 3, SZ, SZ) and t.tolist() == y[N_TRN:].tolist()
    assert torch.equal(x, _all(ref.val_dl)[0])
    # The augmented loaders draw as the library's do for the same seed (shuffle and rotation).
    xt, tt = _all(md.trn_dl)
    rt, rtt = _all(ref.trn_dl)
    assert torch.equal(xt, rt) and torch.equal(tt, rtt)

    # Reference 2: the library's class over the files; resizing and cropping are linear, so the
    # darker images are half of its images (within the 8-bit working image's rounding).
    plain = ImageClassifierData.from_names_and_array(
        str(tmp_path), list(names), y, ["a", "b"], val_idxs=list(range(N_TRN, N_TRN + N_VAL)),
        tfms=_tfms(), bs=2, seed=md.seed)
    xp, _ = _all(plain.val_dl)
    np.testing.assert_allclose(md.val_ds.denorm(x), 0.5 * plain.val_ds.denorm(xp), atol=1 / 255)
    assert not np.allclose(md.val_ds.denorm(x), plain.val_ds.denorm(xp), atol=0.05)

    # ds[i] is the same Rust item (the validation transform has no random step).
    np.testing.assert_array_equal(md.val_ds[1][0], x[1].numpy())
    assert md.val_ds[1][1] == y[N_TRN + 1]


def test_get_x_runs_once_per_item_per_epoch_on_the_workers(tmp_path):
    md, *_ = _data(tmp_path, Darker, bs=2)
    Darker.calls.clear()
    Darker.threads.clear()
    for epoch in range(2):
        order = md.trn_dl._native.order(md.trn_dl._epoch).tolist()
        assert [int(v) for v in torch.cat([t for _, t in md.trn_dl])] == [i % 2 for i in order]
        assert collections.Counter(Darker.calls) == {i: epoch + 1 for i in range(N_TRN)}
    assert threading.get_ident() not in Darker.threads and 1 <= len(Darker.threads) <= 2
    # A loop stopped early stops the producer: no worker waits on the GIL forever.
    it = iter(md.trn_dl)
    next(it)
    it.close()


class Bytes(FilesIndexArrayDataset):
    """The file's bytes as PIL decodes them, uint8 (H, W, 3)."""

    def get_x(self, i):
        with Image.open(os.path.join(self.path, self.fnames[i])) as im:
            return np.asarray(im.convert("RGB"))


class Doubles(FilesIndexArrayDataset):
    def get_x(self, i):
        return super().get_x(i).astype(np.float64)


class Tensors(FilesIndexArrayDataset):
    def get_x(self, i):
        return torch.from_numpy(super().get_x(i))


def test_uint8_float64_and_tensor_images_are_taken_as_open_image_would_give_them(tmp_path):
    md, names, pixels, y = _data(tmp_path, Bytes)
    plain = ImageClassifierData.from_names_and_array(
        str(tmp_path), list(names), y, ["a", "b"], val_idxs=list(range(N_TRN, N_TRN + N_VAL)),
        tfms=_tfms(), bs=2, seed=md.seed)
    # PIL's bytes are the decoder's: bit for bit the library's class, augmentation included.
    for dl, ref in ((md.val_dl, plain.val_dl), (md.trn_dl, plain.trn_dl)):
        assert torch.equal(_all(dl)[0], _all(ref)[0])
    floats = np.stack(pixels).astype(np.float32) / np.float32(255)
    for cls in (Doubles, Tensors):
        md, *_ = _data(tmp_path, cls)
        assert md.val_dl._native.dataset.python_pixels
        ref = ImageClassifierData.from_arrays(str(tmp_path), (floats[:N_TRN], y[:N_TRN]),
                                              (floats[N_TRN:], y[N_TRN:]), bs=2, tfms=_tfms())
        assert torch.equal(_all(md.val_dl)[0], _all(ref.val_dl)[0]), cls.__name__


class Boom(Exception):
    pass


def test_an_exception_in_get_x_reaches_the_caller_unchanged_with_a_note(tmp_path):
    class Broken(FilesIndexArrayDataset):
        fail = True

        def get_x(self, i):
            if Broken.fail and i == 1:
                raise Boom(f"no pixels for {i}")
            return super().get_x(i)

    md, *_ = _data(tmp_path, Broken)
    assert md.val_dl._native.dataset.python_pixels
    with pytest.raises(Boom) as e:
        list(md.val_dl)
    assert type(e.value) is Boom and str(e.value) == "no pixels for 1"
    notes = " ".join(getattr(e.value, "__notes__", []))
    assert "Broken" in notes and "item 1" in notes and os.path.join(str(tmp_path), f"{N_TRN + 1}.png") in notes
    # ds[i] too; the loader works again once get_x does.
    with pytest.raises(Boom):
        md.val_ds[1]
    Broken.fail = False
    assert len(_all(md.val_dl)[0]) == N_VAL


def _returning(make_x):
    class Odd(FilesIndexArrayDataset):
        def get_x(self, i):
            return make_x(i)
    return Odd


@pytest.mark.parametrize("make_x, expected", [
    (lambda i: np.zeros((20, 24), np.float32), r"shape \[20, 24\]"),
    (lambda i: np.zeros((20, 24, 4), np.float32), r"shape \[20, 24, 4\]"),
    (lambda i: np.zeros((0, 24, 3), np.uint8), r"shape \[0, 24, 3\]"),
    (lambda i: np.zeros((20, 24, 3), np.int64), r"returned int64"),
    (lambda i: "not an array", r"returned a str"),
])
def test_a_wrong_image_is_a_value_error_naming_the_dataset_item_and_file(tmp_path, make_x, expected):
    md, *_ = _data(tmp_path, _returning(make_x), bs=N_VAL)
    with pytest.raises(ValueError, match=r"Odd item \d \(.*\d\.png\): get_x " + ".*" + expected
                       + r".*expected an \(H, W, 3\) RGB numpy array, float32 in \[0, 1\]"):
        list(md.val_dl)


def test_a_get_x_subclass_with_a_python_transform_or_get_y_keeps_the_python_item_path(tmp_path):
    class DarkerY(Darker):
        def get_y(self, i):
            return int(self.y[i])

    md, *_ = _data(tmp_path, DarkerY)
    assert md.val_dl._native.dataset.is_python and not md.val_dl._native.dataset.python_pixels
    # get_x patched on an instance of a library class counts as the user's get_x.
    md, names, pixels, y = _data(tmp_path, FilesIndexArrayDataset)
    ds = md.val_ds
    ds.get_x = lambda i: np.zeros((20, 24, 3), np.uint8)
    dl = type(md.val_dl)(ds, batch_size=N_VAL, num_workers=1)
    assert dl._native.dataset.python_pixels
    x, _ = _all(dl)
    # Black images normalised: -mean/std in every pixel of each channel.
    m, s = imagenet_stats
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), -np.asarray(m) / np.asarray(s), rtol=1e-5)


def test_an_arrays_subclass_with_its_own_get_x_feeds_the_fused_pipeline(tmp_path):
    from fastai.dataset import ArraysIndexDataset

    class UpsideDown(ArraysIndexDataset):
        def get_x(self, i):
            return self.x[i][::-1]  # a strided view: copied as the values it shows

    rng = np.random.RandomState(1)
    x = rng.randint(0, 256, size=(N_TRN + N_VAL, 20, 24, 3)).astype(np.uint8)
    y = np.arange(N_TRN + N_VAL) % 3
    ds = ImageClassifierData.get_ds(UpsideDown, (x[:N_TRN], y[:N_TRN]), (x[N_TRN:], y[N_TRN:]),
                                    _tfms())
    md = ImageClassifierData(str(tmp_path), ds, 2, 2, ["a", "b", "c"])
    assert md.val_dl._native.dataset.python_pixels
    flipped = np.ascontiguousarray(x[:, ::-1])
    ref = ImageClassifierData.from_arrays(str(tmp_path), (flipped[:N_TRN], y[:N_TRN]),
                                          (flipped[N_TRN:], y[N_TRN:]), bs=2, tfms=_tfms(), seed=md.seed)
    for dl, rdl in ((md.val_dl, ref.val_dl), (md.trn_dl, ref.trn_dl)):
        (a, t), (b, u) = _all(dl), _all(rdl)
        assert torch.equal(a, b) and torch.equal(t, u)
    # Not the unflipped images: the reference can tell them apart.
    plain = ImageClassifierData.from_arrays(str(tmp_path), (x[:N_TRN], y[:N_TRN]),
                                            (x[N_TRN:], y[N_TRN:]), bs=2, tfms=_tfms())
    assert not torch.equal(_all(md.val_dl)[0], _all(plain.val_dl)[0])
