"""Bad and unusual input, end to end: each case either works (decoding what PIL decodes, with
pixels checked against PIL or a hand-computed reference) or raises an exception whose message
names the file and the problem; afterwards the same data object or learner still works.

Hang guard: every test runs under `faulthandler.dump_traceback_later(exit=True)`, so a hang
prints the stacks and ends the run instead of blocking CI. Crash guard: the decoder battery
first runs in a fresh interpreter (a segfault or abort there fails one test, not the session).
"""
import faulthandler
import json
import os
import re
import shutil
import signal
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fastai.conv_learner import ConvLearner, resnet18
from fastai.dataset import ImageClassifierData, open_image
from fastai.exceptions import DatasetLayoutError, ImageDecodeError, WeightsError
from fastai.sgdr import Callback
from fastai.transforms import tfms_from_model
import _badinput_helpers as h

SZ, BS = 16, 2
TEST_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def hang_guard():
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ---------------------------------------------------------------------------------------------
# The bad files

def bad_files():
    """{name: (bytes, regex the error message must match)}: files no decoder should accept."""
    j = h.jpeg_bytes(h.pattern(48, 64, seed=1))
    p = h.png_bytes(h.pattern(48, 64, seed=2))
    return {
        "zero.jpg": (b"", r"empty"),
        "truncated.jpg": (j[:len(j) // 2], r"truncated"),
        "no_eoi.jpg": (j[:-2], r"truncated"),
        "random.jpg": (np.random.RandomState(0).bytes(4096), r"not a recognised image"),
        "text.jpg": (b"id,label\ncat.1,cat\n" * 20, r"not a recognised image"),
        "huge.jpg": (h.with_sof_dimensions(j, 65000, 65000), r"65000x65000.*larger than"),
        "truncated.png": (p[:len(p) // 2], r"unexpected end|truncated|not enough data"),
    }


def good_files():
    """{name: (bytes, reference uint8 (H, W, 3), max abs difference allowed per pixel,
    max mean abs difference)}."""
    arr = h.pattern(20, 28, seed=3)
    im = Image.fromarray(arr)
    out = {}

    def pil_ref(data):
        import io
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    alpha = np.dstack([arr, np.tile(np.arange(28, dtype=np.uint8) * 9, (20, 1))])
    alpha[0, 0, 3] = 0  # a fully transparent pixel keeps its colour (OpenCV/PIL drop alpha)
    data = h.png_bytes(alpha)
    out["alpha.png"] = (data, pil_ref(data), 0, 0)
    a16 = (arr.astype(np.uint16) * 257 + np.random.RandomState(4).randint(0, 257, arr.shape)).astype(np.uint16)
    data = h.png16_rgb_bytes(a16)
    # PIL reads 16-bit colour as 8-bit (high byte); we round to nearest: at most 1 apart.
    out["rgb16.png"] = (data, pil_ref(data), 1, 0.5)
    # PIL converts 16-bit grey to 8-bit by clamping at 255 (not scaling), so the reference is
    # computed from the raw 16-bit values PIL reads, not from PIL's conversion.
    g16 = a16[..., 0]
    data = h.png16_grey_bytes(g16)
    import io
    raw = np.asarray(Image.open(io.BytesIO(data))).astype(np.float64)
    assert raw.max() > 255  # the file really is 16-bit
    out["grey16.png"] = (data, np.repeat(np.round(raw / 257)[..., None], 3, -1).astype(np.uint8), 1, 0.5)
    data = h.jpeg_bytes(im.convert("L"))
    out["grey.jpg"] = (data, pil_ref(data), 2, 0.5)
    data = h.jpeg_bytes(im.convert("CMYK"))
    out["cmyk.jpg"] = (data, pil_ref(data), 8, 2)
    data = h.jpeg_bytes(arr, progressive=True)
    out["progressive.jpg"] = (data, pil_ref(data), 6, 1.5)
    for ext, data in (("png", h.png_bytes(arr[5:6, 7:8])), ("jpg", h.jpeg_bytes(arr[5:6, 7:8]))):
        out[f"one_pixel.{ext}"] = (data, pil_ref(data), 2, 2)
    return out


def test_decoder_battery_in_a_fresh_interpreter(tmp_path):
    """Every bad and unusual file through open_image and a loader in a child interpreter: it
    must exit normally (no signal, no hang), one result per file."""
    names = {}
    for name, (data, *_) in {**bad_files(), **good_files()}.items():
        names[name] = h.write_bytes(tmp_path / "files" / name, data)
    (tmp_path / "files" / "dir.jpg").mkdir()
    names["dir.jpg"] = str(tmp_path / "files" / "dir.jpg")
    code = f"""
import json, os
import numpy as np
from fastai.dataset import open_image
from fastai import _native
out = {{}}
for name, path in {json.dumps(names)}.items():
    try:
        out[name] = list(open_image(path).shape)
    except Exception as e:
        out[name] = type(e).__name__
# The same files through a loader with skip_bad: bad ones skipped, the rest batched.
pool = _native.ThreadPool(2)
from fastai.transforms import tfms_from_model
spec = tfms_from_model("resnet18", 8)[1]._pipeline
files = sorted(n for n in {json.dumps(sorted(names))} if n != "dir.jpg")
ds = _native.Dataset.from_files({str(tmp_path / "files")!r}, files)
dl = _native.DataLoader(ds, spec, pool, bs=3, prefetch=2, skip_bad=True)
it = dl.iter_epoch(0)
n = sum(x.shape[0] for x, _ in it)
out["__loader__"] = [n, sorted(os.path.basename(p) for p in it.skipped())]
print(json.dumps(out))
"""
    r = h.run_python(code, timeout=60)
    assert r.returncode == 0, f"child exited with {r.returncode}\n{r.stderr[-3000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name in bad_files():
        assert out[name] == "ImageDecodeError", (name, out[name])
    assert out["dir.jpg"] == "IsADirectoryError"
    for name, (_, ref, *_) in good_files().items():
        assert out[name] == list(ref.shape), (name, out[name])
    assert out["__loader__"] == [len(good_files()), sorted(bad_files())]


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_undecodable_file_raises_naming_file_and_problem(tmp_path, name):
    data, problem = bad_files()[name]
    path = h.write_bytes(tmp_path / name, data)
    # Independent check that the file really is bad: PIL refuses it too.
    with pytest.raises(Exception):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(path).convert("RGB")
    t = time.time()
    with pytest.raises(ImageDecodeError) as e:
        open_image(path)
    assert time.time() - t < 5
    msg = str(e.value)
    assert path in msg and re.search(problem, msg), msg
    assert isinstance(e.value, OSError)


@pytest.mark.parametrize("name", sorted(good_files()))
def test_unusual_file_decodes_like_the_reference(tmp_path, name):
    data, ref, max_diff, mean_diff = good_files()[name]
    path = h.write_bytes(tmp_path / name, data)
    ours = np.round(open_image(path) * 255).astype(np.int16)
    assert ours.shape == ref.shape, name
    diff = np.abs(ours - ref.astype(np.int16))
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, (name, diff.max(), diff.mean())


def test_directory_named_like_an_image(tmp_path):
    d = tmp_path / "x.jpg"
    d.mkdir()
    with pytest.raises(IsADirectoryError) as e:
        open_image(d)
    assert str(d) in str(e.value)


# ---------------------------------------------------------------------------------------------
# Folders

def write_tree(root, n_train=2, n_valid=1, classes=("cats", "dogs"), size=(20, 28)):
    """root/{train,valid}/<class>/<class[0]><i>.jpg with a colour per class."""
    for split, n in (("train", n_train), ("valid", n_valid)):
        for c, cls in enumerate(classes):
            for i in range(n):
                img = h.pattern(*size, seed=17 * c + i + (100 if split == "valid" else 0))
                img[..., c % 3] = np.clip(img[..., c % 3].astype(int) + 90, 0, 255)
                h.write_bytes(os.path.join(root, split, cls, f"{cls[0]}{i}.jpg"), h.jpeg_bytes(img))
    return str(root)


def data_of(path, **kw):
    kw.setdefault("bs", BS)
    kw.setdefault("num_workers", 1)
    kw.setdefault("seed", 0)
    return ImageClassifierData.from_paths(path, tfms=tfms_from_model(resnet18, SZ), **kw)


def all_batches(dl):
    xs, ys = zip(*list(dl))
    return torch.cat(xs), torch.cat(ys)


def test_bad_files_in_a_class_folder_fail_the_loader_naming_them_then_skip_bad(tmp_path):
    root = write_tree(tmp_path)
    bad = {n: h.write_bytes(tmp_path / "valid" / "dogs" / n, d) for n, (d, _) in bad_files().items()}
    data = data_of(root)
    assert len(data.val_ds) == 2 + len(bad)
    for _ in range(2):  # the data object stays usable after an error: same error, no hang
        with pytest.raises(ImageDecodeError) as e:
            all_batches(data.val_dl)
        assert any(p in str(e.value) for p in bad.values()), str(e.value)
    x, y = all_batches(data.trn_dl)  # other loaders are unaffected
    assert x.shape == (4, 3, SZ, SZ)
    data = data_of(root, skip_bad=True)
    with pytest.warns(RuntimeWarning) as rec:
        x, y = all_batches(data.val_dl)
    assert y.tolist() == [0, 1]
    msg = " ".join(str(r.message) for r in rec)
    assert all(n in msg for n in bad), msg


@pytest.mark.parametrize("precompute", [True, False])
def test_skip_bad_learner_keeps_labels_and_rows_in_line(hub, tmp_path, precompute):
    """With skip_bad, an undecodable photo is left out of training with its own label (the
    labels after it are not shifted), predict()/TTA() keep one row per listed file (NaN for
    the skipped one), and the learner warns naming it. Reference: the same weights on a copy
    of the folder without the broken files."""
    root = write_tree(tmp_path / "with", n_train=3, n_valid=2)
    bad_trn = os.path.join(root, "train", "cats", "c0.jpg")
    bad_val = os.path.join(root, "valid", "cats", "c1.jpg")
    clean = shutil.copytree(root, tmp_path / "clean")
    for f in (bad_trn, bad_val):
        data_bytes = open(f, "rb").read()
        h.write_bytes(f, data_bytes[:len(data_bytes) // 3])
        os.remove(os.path.join(clean, os.path.relpath(f, root)))
    data = data_of(root, skip_bad=True)
    with pytest.warns(RuntimeWarning) as rec:
        learn = ConvLearner.pretrained(resnet18, data, precompute=precompute)
        learn.fit(1e-3, 1)
    msg = " ".join(str(r.message) for r in rec)
    assert bad_trn in msg and bad_val in msg, msg
    ref = ConvLearner.pretrained(resnet18, data_of(str(clean)), precompute=precompute)
    ref._native.load_state_dict(list(learn._native.state_dict()), "test")
    if precompute:  # training rows: the decodable files' own labels
        x, y = learn._act_rows("trn")
        rx, ry = ref._act_rows("trn")
        assert y.tolist() == ry.tolist() == [0, 0, 1, 1, 1]
        torch.testing.assert_close(x, rx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported once already
        p, y = learn.predict_with_targs()
        tta, ty = learn.TTA(n_aug=2)
    assert p.shape == (4, 2) and y.tolist() == [0, 0, 1, 1] and ty.tolist() == [0, 0, 1, 1]
    assert np.isnan(p[1]).all() and np.isfinite(np.delete(p, 1, 0)).all()
    np.testing.assert_allclose(np.delete(p, 1, 0), ref.predict(), rtol=1e-5, atol=1e-5)
    assert tta.shape == (3, 4, 2) and np.isnan(tta[:, 1]).all() and np.isfinite(np.delete(tta, 1, 1)).all()


def test_ds_store_thumbs_db_and_a_directory_in_class_folders_are_skipped(tmp_path):
    root = write_tree(tmp_path)
    h.write_bytes(tmp_path / "train" / "cats" / ".DS_Store", b"\x00\x00\x00\x01Bud1" + b"\x00" * 200)
    h.write_bytes(tmp_path / "train" / "dogs" / "Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 200)
    (tmp_path / "train" / "dogs" / "x.jpg").mkdir()
    h.write_bytes(tmp_path / "valid" / ".DS_Store", b"junk")
    with pytest.warns(UserWarning, match="left out 2 entries that are not images"):
        data = data_of(root)
    assert list(data.trn_ds.fnames) == ["train/cats/c0.jpg", "train/cats/c1.jpg",
                                        "train/dogs/d0.jpg", "train/dogs/d1.jpg"]
    assert data.classes == ["cats", "dogs"]
    assert data.skipped["train"] == {"hidden": 1, "non_image": 2,
                                     "examples": ["train/dogs/Thumbs.db", "train/dogs/x.jpg"]}
    assert data.skipped["valid"] == {"hidden": 1, "non_image": 0, "examples": []}
    for _ in range(2):
        x, y = all_batches(data.trn_dl)
        assert x.shape == (4, 3, SZ, SZ) and sorted(y.tolist()) == [0, 0, 1, 1]


def test_a_named_pipe_is_skipped_and_open_image_refuses_it_without_blocking(tmp_path):
    """Reading a FIFO blocks until a writer comes, and Ctrl-C cannot interrupt that: the scan
    leaves it out, and open_image refuses anything that is not a regular file."""
    root = write_tree(tmp_path)
    fifo = tmp_path / "train" / "cats" / "zz.jpg"
    os.mkfifo(fifo)
    with pytest.warns(UserWarning, match="train/cats/zz.jpg"):
        data = data_of(root)
    assert "train/cats/zz.jpg" not in data.trn_ds.fnames
    assert all_batches(data.trn_dl)[0].shape == (4, 3, SZ, SZ)
    with pytest.raises(ImageDecodeError, match="zz.jpg.*not a regular file"):
        open_image(str(fifo))


def test_jfif_and_jpe_are_images_and_odd_names_of_skipped_entries_do_not_fail(tmp_path):
    root = write_tree(tmp_path)
    img = h.pattern(24, 30, seed=3)
    for name in ("a.jfif", "b.JPE"):
        h.write_bytes(tmp_path / "train" / "cats" / name, h.jpeg_bytes(img))
    # A macOS resource fork with a Latin-1 name (not UTF-8) and a non-image: skipped, not fatal.
    h.write_bytes(os.path.join(os.fsencode(tmp_path / "train" / "cats"), b"._caf\xe9.jpg"), b"junk")
    h.write_bytes(os.path.join(os.fsencode(tmp_path / "train" / "dogs"), b"notes-caf\xe9.txt"), b"x")
    with pytest.warns(UserWarning, match="left out 1 entry that is not an image"):
        data = data_of(root)
    assert [f for f in data.trn_ds.fnames if "/cats/" in f] == [
        "train/cats/a.jfif", "train/cats/b.JPE", "train/cats/c0.jpg", "train/cats/c1.jpg"]
    path = tmp_path / "train" / "cats" / "a.jfif"
    np.testing.assert_allclose(open_image(str(path)) * 255, np.asarray(Image.open(path).convert("RGB")), atol=1e-3)


def test_a_class_of_only_unrecognised_files_says_what_it_left_out(tmp_path):
    root = write_tree(tmp_path)
    for f in os.listdir(tmp_path / "valid" / "dogs"):
        os.rename(tmp_path / "valid" / "dogs" / f, tmp_path / "valid" / "dogs" / (f + ".heic"))
    with pytest.raises(DatasetLayoutError, match=r"valid/dogs: class folder has no image files \(1 entry is not an image.*d0.jpg.heic"):
        data_of(root)


def test_one_pixel_image_through_the_loader(tmp_path):
    root = write_tree(tmp_path)
    colour = np.array([[[200, 30, 90]]], dtype=np.uint8)
    os.remove(tmp_path / "valid" / "cats" / "c0.jpg")
    h.write_bytes(tmp_path / "valid" / "cats" / "tiny.png", h.png_bytes(colour))
    data = data_of(root)
    x, _ = all_batches(data.val_dl)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = (colour[0, 0] / 255 - mean) / std
    # Scaling a single pixel up to SZ x SZ gives that colour everywhere.
    np.testing.assert_allclose(x[0].numpy(), np.broadcast_to(want[:, None, None], (3, SZ, SZ)), atol=1e-4)
    assert torch.isfinite(x).all()


def test_spaces_and_non_ascii_names(tmp_path):
    root = write_tree(tmp_path, classes=("chats noirs", "chiens été"))
    img = h.pattern(30, 20, seed=9)
    name = "chat noir é 猫 #1.jpg"
    path = h.write_bytes(tmp_path / "train" / "chats noirs" / name, h.jpeg_bytes(img))
    np.testing.assert_allclose(open_image(path) * 255, np.asarray(Image.open(path).convert("RGB")), atol=6)
    data = data_of(root)
    assert data.classes == ["chats noirs", "chiens été"]
    assert f"train/chats noirs/{name}" in list(data.trn_ds.fnames)
    x, y = all_batches(data.fix_dl)
    assert x.shape == (5, 3, SZ, SZ) and y.tolist() == [0, 0, 0, 1, 1]
    # The same file through a CSV whose ids carry spaces and non-ASCII letters.
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\n" + "".join(f"{os.path.splitext(f)[0]},{c}\n" for c, f in
                                          [("cat", name), ("cat", "c0.jpg"), ("cat", "c1.jpg")]),
                   encoding="utf-8")
    d2 = ImageClassifierData.from_csv(root, "train/chats noirs", str(csv), tfms=tfms_from_model(resnet18, SZ),
                                      suffix=".jpg", val_idxs=[0], bs=BS, num_workers=1, seed=0)
    assert len(list(d2.trn_dl)) == 1 and len(list(d2.val_dl)) == 1


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = write_tree(tmp_path)
    (tmp_path / "train" / "birds").mkdir()
    with pytest.raises(DatasetLayoutError, match=re.escape(str(tmp_path / "train" / "birds")) + ".*no image files"):
        data_of(root)
    # A folder holding only non-images counts as empty too.
    h.write_bytes(tmp_path / "train" / "birds" / ".DS_Store", b"junk")
    with pytest.raises(DatasetLayoutError, match="birds.*no image files"):
        data_of(root)


def test_class_folders_that_differ_between_train_and_valid(tmp_path):
    root = write_tree(tmp_path)
    shutil.rmtree(tmp_path / "valid" / "dogs")
    h.write_bytes(tmp_path / "valid" / "birds" / "b0.jpg", h.jpeg_bytes(h.pattern(20, 28)))
    with pytest.raises(DatasetLayoutError) as e:
        data_of(root)
    msg = str(e.value)
    assert str(tmp_path / "valid") in msg and "missing" in msg and "dogs" in msg and "birds" in msg, msg


def test_missing_valid_folder(tmp_path):
    root = write_tree(tmp_path)
    shutil.rmtree(tmp_path / "valid")
    with pytest.raises(FileNotFoundError) as e:
        data_of(root)
    assert str(tmp_path / "valid") in str(e.value)


def test_csv_listing_unknown_files(tmp_path):
    root = write_tree(tmp_path)
    (tmp_path / "train" / "cats" / "dir.jpg").mkdir()  # listed, but a folder
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\nc0,cat\nc1,cat\nghost,cat\ndir,cat\n")
    with pytest.raises(DatasetLayoutError) as e:
        ImageClassifierData.from_csv(root, "train/cats", str(csv), tfms=tfms_from_model(resnet18, SZ),
                                     suffix=".jpg", bs=BS, num_workers=1, seed=0)
    msg = str(e.value)
    assert str(csv) in msg and "ghost.jpg" in msg and "dir.jpg" in msg and "2 listed" in msg, msg


# ---------------------------------------------------------------------------------------------
# Learner: a random-weights ResNet-18 in a temporary torch hub cache



@pytest.fixture(scope="module")
def world(hub, tmp_path_factory):
    """A folder given WITHOUT a trailing slash, its data and a precompute learner."""
    root = write_tree(tmp_path_factory.mktemp("world"), n_train=3, n_valid=2)
    assert not root.endswith("/")
    data = data_of(root)
    learn = ConvLearner.pretrained(resnet18, data, precompute=True)
    return root, data, learn


def cache_file(root, prefix="x_act"):
    return os.path.join(root, "tmp", f"{prefix}_resnet18_0_{SZ}.bin")


def test_path_without_trailing_slash(world):
    root, data, learn = world
    assert learn.tmp_path == os.path.join(root, "tmp") and os.path.isfile(cache_file(root))
    assert learn.models_path == os.path.join(root, "models") and os.path.isdir(learn.models_path)
    slash = data_of(root + "/")
    assert list(slash.trn_ds.fnames) == list(data.trn_ds.fnames)
    a, b = all_batches(slash.val_dl), all_batches(data.val_dl)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("how", ["garbage", "garbage_after_header", "truncated"])
def test_corrupt_cache_is_recomputed_with_a_warning(world, how):
    root, data, learn = world
    path = cache_file(root)
    good = open(path, "rb").read()
    if how == "garbage":
        bad = np.random.RandomState(1).bytes(len(good))
    elif how == "garbage_after_header":
        # Header (magic, key, shape) intact, the numbers replaced: only a checksum sees it.
        bad = good[:128] + np.random.RandomState(2).bytes(len(good) - 128)
    else:
        bad = good[:len(good) // 2]
    try:
        with open(path, "wb") as f:
            f.write(bad)
        with pytest.warns(UserWarning, match=re.escape(path) + ".*recomputed"):
            other = ConvLearner.pretrained(resnet18, data, precompute=True)
        assert torch.allclose(other._acts["trn"], learn._acts["trn"], atol=1e-6)
        assert open(path, "rb").read() == good  # rewritten: the next learner hits the cache
        assert other.predict().shape == (4, 2)
    finally:
        with open(path, "wb") as f:
            f.write(good)


def test_unwritable_tmp(hub, tmp_path):
    root = write_tree(tmp_path)
    data = data_of(root)
    h.write_bytes(tmp_path / "tmp", b"a file where the tmp folder should be")
    with pytest.raises(FileExistsError) as e:
        ConvLearner.pretrained(resnet18, data, precompute=True)
    assert str(tmp_path / "tmp") in str(e.value)
    with pytest.raises(NotADirectoryError) as e:
        ConvLearner.pretrained(resnet18, data, tmp_name="tmp/under_a_file")
    assert str(tmp_path / "tmp" / "under_a_file") in str(e.value)
    # A cache file that cannot be written (its name is taken by a folder): precompute still
    # works, in memory, with a warning naming the file.
    os.remove(tmp_path / "tmp")
    os.makedirs(cache_file(root))
    with pytest.warns(UserWarning, match=re.escape(cache_file(root)) + ".*not cached"):
        learn = ConvLearner.pretrained(resnet18, data, precompute=True)
    assert learn.predict().shape == (2, 2)
    assert learn.fit(1e-2, 1) is not None


def _leftovers(folder, name):
    return [f for f in os.listdir(folder) if f.startswith(name + ".h5")]


def _permission_bits_bind(tmp_path):
    """False for root (os.geteuid() == 0) unless it runs without CAP_DAC_OVERRIDE: probed."""
    d = tmp_path / "probe"
    d.mkdir(mode=0o500)
    try:
        open(d / "f", "wb").close()
        return False
    except PermissionError:
        return True
    finally:
        d.chmod(0o700)


def test_save_into_a_read_only_models_folder(world, tmp_path):
    if not _permission_bits_bind(tmp_path):
        pytest.skip("permission bits do not bind this user (root); see the two tests below")
    root, data, learn = world
    learn.save("kept")
    kept = open(learn.get_model_path("kept"), "rb").read()
    os.chmod(learn.models_path, 0o500)
    try:
        with pytest.raises(PermissionError) as e:
            learn.save("kept")
        with pytest.raises(PermissionError):
            learn.save("new")
    finally:
        os.chmod(learn.models_path, 0o755)
    assert learn.models_path in str(e.value) and "kept.h5" in str(e.value)
    assert _leftovers(learn.models_path, "kept") == ["kept.h5"] and _leftovers(learn.models_path, "new") == []
    assert open(learn.get_model_path("kept"), "rb").read() == kept  # the previous file is intact


def test_save_into_a_folder_the_system_refuses(world):
    """Also as root: sysfs refuses new files to everyone (models_name may be absolute)."""
    root, data, learn = world
    probe = os.path.join("/sys", f"fastai_probe_{os.getpid()}")
    try:
        open(probe, "wb").close()
        os.remove(probe)
        pytest.skip("/sys accepts new files here")
    except OSError:
        pass
    sys_learn = ConvLearner.pretrained(resnet18, data, precompute=True, models_name="/sys")
    assert sys_learn.models_path == "/sys"
    with pytest.raises(PermissionError) as e:
        sys_learn.save("m")
    assert "/sys: cannot write the model file m.h5 (Permission denied)" in str(e.value)
    assert e.value.filename == "/sys"
    assert _leftovers("/sys", "m") == []


def test_save_when_a_file_took_the_models_folders_place(world, tmp_path):
    root, data, learn = world
    other = ConvLearner.pretrained(resnet18, data, precompute=True, models_name=str(tmp_path / "models"))
    os.rmdir(other.models_path)
    h.write_bytes(other.models_path, b"not a folder")
    with pytest.raises(NotADirectoryError) as e:
        other.save("m")
    assert other.models_path in str(e.value) and "m.h5" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["models"] and open(other.models_path, "rb").read() == b"not a folder"


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_bad_model_file_is_a_clear_error_and_the_learner_still_works(world, how):
    root, data, learn = world
    learn.save("m")
    p = learn.get_model_path("m")
    good = open(p, "rb").read()
    bad = {"truncated": good[:len(good) // 2], "empty": b"", "garbage": np.random.RandomState(3).bytes(5000)}[how]
    with open(p, "wb") as f:
        f.write(bad)
    before = learn.predict()
    with pytest.raises(WeightsError) as e:
        learn.load("m")
    assert p in str(e.value) and "cannot read" in str(e.value)
    np.testing.assert_array_equal(learn.predict(), before)  # nothing half-loaded


class InterruptAt(Callback):
    def __init__(self, n):
        self.n, self.seen = n, 0

    def on_batch_end(self, loss):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("precompute", [True, False])
def test_keyboard_interrupt_from_a_callback(world, precompute):
    root, data, learn = world
    learn.precompute = precompute
    try:
        with pytest.raises(KeyboardInterrupt):
            learn.fit(1e-2, 3, callbacks=[InterruptAt(2)])
        assert len(learn.sched.losses) == 2  # the schedule of the interrupted fit is kept
        assert np.isfinite(learn.predict()).all()
        assert learn.fit(1e-2, 1) is not None
    finally:
        learn.precompute = True


@pytest.mark.parametrize("precompute", [False, True])  # image batches; the hand-written head step
def test_real_sigint_during_a_long_fit(world, precompute):
    """SIGINT from another thread while the Rust loop runs without the GIL: KeyboardInterrupt
    within a few batches, and the learner still works."""
    root, data, learn = world
    learn.precompute = precompute
    # Python's own handler, as in a terminal or notebook: a process started in the background
    # by a non-interactive shell inherits SIGINT ignored, and Python then leaves it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = threading.Event()

    class Watch(Callback):
        def __init__(self):
            self.seen, self.at_signal = 0, None

        def on_batch_end(self, loss):
            self.seen += 1
            if self.seen == 2:
                started.set()
            if self.at_signal is not None and self.seen > self.at_signal + 20:
                # The interrupt was not honoured: fail instead of training for minutes.
                raise RuntimeError("SIGINT was not honoured within 20 batches")

    watch = Watch()

    def fire():
        if started.wait(30):
            watch.at_signal = watch.seen
            os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=fire, daemon=True)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            learn.fit(1e-2, 1000, callbacks=[watch])  # far longer than the test: only SIGINT ends it
    finally:
        timer.join(5)
        learn.precompute = True
        signal.signal(signal.SIGINT, previous)
    assert watch.at_signal is not None and watch.seen <= watch.at_signal + 3
    assert np.isfinite(learn.predict()).all()
    assert learn.fit(1e-2, 1) is not None


def test_bad_image_during_fit_names_it_and_the_learner_recovers(world):
    root, data, learn = world
    path = os.path.join(root, "train", "dogs", "d1.jpg")
    good = open(path, "rb").read()
    learn.precompute = False
    try:
        with open(path, "wb") as f:
            f.write(good[:len(good) // 2])
        with pytest.raises(ImageDecodeError, match=re.escape(path) + ".*truncated"):
            learn.fit(1e-2, 1)
        with open(path, "wb") as f:
            f.write(good)
        assert learn.fit(1e-2, 1) is not None
    finally:
        with open(path, "wb") as f:
            f.write(good)
        learn.precompute = True
