"""fastai 0.7's `dataset` module: `ImageClassifierData`, its datasets and loaders.

Scanning, decoding, augmentation and batching run in Rust (`fastai._native`); this module
arranges the six loaders of spec §2.4 and converts batches to torch tensors (without copying).
A dataset class of the user's (`get_x`/`get_y` overridden, passed through `get_ds` to
`ImageClassifierData(path, datasets, bs, num_workers, classes)`) or a transform that runs only
in Python is served by the same Rust loaders, which call `ds[i]` once per item on their worker
threads (order, prefetch and batching unchanged; x may have any channel count). When the class
changes only `get_x` and the transform is built-in, the loaders call just `get_x(i)` there and
run the rest (transform, labels, batching) as for the library's classes.

Decisions where the original had rough edges (spec §13):
* class folders and the files inside them are sorted; hidden files and non-image extensions are
  skipped (and counted in `data.skipped`); validation labels use the training classes, and a
  class folder missing on one side is a `DatasetLayoutError` (9, 10, 11, 12);
* `c` is the number of classes (or of target columns), `is_reg` a property (16);
* unlabelled test targets are zeros of shape (N,) (17); `get_cv_idxs` leaves numpy's global
  random state alone (15); `from_csv` also requires transforms (14);
* `denorm` of a single (3, H, W) image returns (H, W, 3) (39);
* shuffling and augmentation follow `seed` (exposed as `data.seed`), whatever `num_workers`;
* `from_arrays` refuses uint8 images without transforms at once (the original failed at batch
  time), counts classes over every split and checks the labels (14);
* `data.resize` checks every copy against its source, and keeps `data.path` (so `models/` and
  `tmp/` stay where the user put them); the copies' folder is `data.img_path` (18).
"""
import itertools
import math
import os
import threading
import warnings
import weakref

import numpy as np
import torch

from . import _native
from . import _progress
from . import core
from .exceptions import TransformsRequiredError

from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402
from . import transforms as _transforms  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "ImageClassifierData", "FilesDataset", "FilesIndexArrayDataset", "FilesNhotArrayDataset",
        "FilesArrayDataset", "ArraysDataset", "ArraysIndexDataset", "DataLoader", "get_cv_idxs",
        "open_image", "read_dir", "read_dirs", "folder_source", "parse_csv_labels", "n_hot",
        "nhot_labels", "dict_source", "csv_source", "split_by_idx", "resize_img", "resize_imgs",
        "BaseDataset", "FilesIndexArrayRegressionDataset", "ArraysNhotDataset",
        "ArraysIndexRegressionDataset", "ImageData", "ModelData"
    ], [_imports, _torch_imports, core, _transforms])

def _has_tfms(tfms):
    return tfms is not None and len(tfms) == 2 and tfms[0] is not None and tfms[1] is not None


def _require_tfms(tfms):
    """Image files need a training and a validation transform (fastai 0.7 asserted it; the
    error is still an AssertionError for code that catches that, and a ValueError)."""
    if not _has_tfms(tfms):
        raise TransformsRequiredError("please provide transformations for your train and validation sets")


def _check_loader_args(bs, num_workers):
    for v, what, least in ((bs, "bs", 1), (num_workers, "num_workers", 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < least:
            raise ValueError(f"{what} must be a whole number >= {least}, got {v!r}")


def _warn_non_images(skipped):
    """One warning for the entries the folder scan left out as not images (files without an
    image extension, sub-folders of class folders, pipes): the original read them and failed
    later; silently leaving out, say, a class's `.heic` photos would be worse. Hidden files
    (`.DS_Store`, `._x.jpg`) are left out without a word."""
    n = sum(sk["non_image"] for sk in skipped.values())
    if not n:
        return
    examples = [e for sk in skipped.values() for e in sk["examples"]][:5]
    what = "entry that is not an image" if n == 1 else "entries that are not images"
    warnings.warn(f"left out {n} {what} by its extension or type, e.g. "
                  f"{', '.join(examples)} (image extensions: {', '.join(_native.IMAGE_EXTENSIONS)})",
                  stacklevel=core.user_stacklevel())


def get_cv_idxs(n, cv_idx=0, val_pct=0.2, seed=42):
    """Validation indices: a slice of a permutation of range(n) drawn with `seed`.

    Same values as the original, but from a private generator: numpy's global random state is
    not touched.
    """
    rng = np.random.RandomState(seed)
    n_val = int(val_pct * n)
    idx_start = cv_idx * n_val
    return rng.permutation(n)[idx_start:idx_start + n_val]


def open_image(fn):
    """Decodes an image file to float32 HWC RGB in [0, 1] (EXIF orientation applied).

    `fn` may be a str or a Path. A missing file is a `FileNotFoundError`, a folder an
    `IsADirectoryError`, a file that is not a readable image an `ImageDecodeError` naming the
    file and the problem (all three are `OSError`s, as 0.7 raised)."""
    return _native.decode_image(os.fspath(fn)).astype(np.float32) / np.float32(255)


def read_dir(path, folder):
    """Sorted image files of the flat folder `path/folder`, as `folder/<name>` (relative to
    `path`; an absolute `folder` gives absolute names)."""
    fnames, _ = _native.scan_flat(os.fspath(path), os.fspath(folder))
    return fnames


def read_dirs(path, folder):
    """(fnames, class name of each, sorted class names) of `path/folder/<class>/*`: the image
    files as `folder/<class>/<name>`, classes and files sorted."""
    fnames, labels, classes, _ = _native.scan_labelled(os.fspath(path), os.fspath(folder), None)
    return fnames, [classes[i] for i in labels], classes


def folder_source(path, folder):
    """(fnames, labels int64, classes) of `path/folder/<class>/*`, everything sorted."""
    fnames, labels, classes, _ = _native.scan_labelled(os.fspath(path), os.fspath(folder), None)
    return fnames, labels, classes


def parse_csv_labels(fn, skip_header=True, cat_separator=" "):
    """(ids, {id: [labels]}, sorted labels, {label: index}) of a label CSV: the first column is
    the file id (kept as written: `00123` stays a string), the second its labels split on
    `cat_separator`. The ids are a numpy array in the CSV's row order.

    This is the four-value form the notebooks unpack (`fnames, labels, _, _ = ...`); 0.7.0
    returned only the first two. Empty tokens (an empty cell, a doubled separator) are dropped
    rather than becoming an empty-string class or NaN; an id listed twice is an error naming
    both lines."""
    rows = _native.read_label_csv(os.fspath(fn), skip_header)
    fnames = np.empty(len(rows), dtype=object)
    fnames[:] = [r[0] for r in rows]
    labels = {r[0]: [t for t in r[1].split(cat_separator) if t] for r in rows}
    classes = sorted({t for ts in labels.values() for t in ts})
    return fnames, labels, classes, {c: i for i, c in enumerate(classes)}


def n_hot(ids, c):
    """float32 zeros of length `c` with ones at `ids`."""
    res = np.zeros((c,), dtype=np.float32)
    res[list(ids)] = 1
    return res


def nhot_labels(label2idx, csv_labels, fnames, c):
    """The n-hot rows (N, c) float32 of the labels of each id in `fnames`."""
    rows = [n_hot([label2idx[t] for t in csv_labels[f]], c) for f in fnames]
    return np.stack(rows) if rows else np.zeros((0, c), dtype=np.float32)


def dict_source(folder, fnames, csv_labels, suffix="", continuous=False):
    """(`folder/<id><suffix>` for each id, labels, sorted label strings) of parsed CSV labels.

    Labels: with `continuous`, each row's numbers as float32 ((N, k), or an object array of
    vectors when rows differ in length); else class indices int64 (N,) when every row has
    exactly one label, n-hot float32 (N, c) otherwise (an empty row is all zeros). The label
    strings sort as strings (`'10'` before `'2'`), as data.classes did in 0.7."""
    all_labels = sorted({t for ts in csv_labels.values() for t in ts})
    full_names = [os.path.join(folder, str(f) + suffix) for f in fnames]
    if continuous:
        try:
            rows = [np.array(csv_labels[f], dtype=np.float32) for f in fnames]
        except ValueError as e:
            raise ValueError(f"continuous labels must be numbers ({e})") from None
        if len({len(r) for r in rows}) <= 1:
            label_arr = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        else:
            label_arr = np.empty(len(rows), dtype=object)
            label_arr[:] = rows
        return full_names, label_arr, all_labels
    label2idx = {c: i for i, c in enumerate(all_labels)}
    label_arr = nhot_labels(label2idx, csv_labels, fnames, len(all_labels))
    if len(label_arr) and (label_arr.sum(axis=1) == 1).all():
        label_arr = np.argmax(label_arr, axis=1).astype(np.int64)
    return full_names, label_arr, all_labels


def csv_source(folder, csv_file, skip_header=True, suffix="", continuous=False, cat_separator=" "):
    """`dict_source` of the labels in `csv_file` (see `parse_csv_labels`)."""
    fnames, csv_labels, _, _ = parse_csv_labels(csv_file, skip_header, cat_separator)
    return dict_source(folder, fnames, csv_labels, suffix, continuous)


def split_by_idx(idxs, *a):
    """For each array, (its rows at `idxs`, the other rows), both in the array's order."""
    a = [o if isinstance(o, np.ndarray) else np.asarray(o) for o in a]
    mask = np.zeros(len(a[0]), dtype=bool)
    # An explicit integer dtype: an empty list would otherwise be a float array numpy refuses.
    mask[np.asarray(idxs, dtype=np.int64)] = True
    return [(o[mask], o[~mask]) for o in a]


def _scale_to(x, ratio, targ):
    return max(math.floor(x * ratio), targ)


def resize_img(fname, targ, path, new_path):
    """Writes `path/fname` with its smaller side resized to `targ` (bilinear, PIL) to
    `new_path/<targ>/fname` under `path` (an absolute `new_path` replaces `path`), unless that
    file exists."""
    dest = os.path.join(path, new_path, str(targ), fname)
    if os.path.exists(dest):
        return
    from PIL import Image

    im = Image.open(os.path.join(path, fname)).convert("RGB")
    w, h = im.size
    ratio = targ / min(w, h)
    im = im.resize((_scale_to(w, ratio, targ), _scale_to(h, ratio, targ)), Image.BILINEAR)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    im.save(dest)


def resize_imgs(fnames, targ, path, new_path):
    """`resize_img` of every file (8 threads, with a progress bar); returns the new root
    folder `path/new_path/<targ>`. Files already there are kept: an interrupted run resumes
    (0.7 skipped everything once the first file existed)."""
    from concurrent.futures import ThreadPoolExecutor

    fnames = list(fnames)
    with ThreadPoolExecutor(8) as ex, _progress.ProgressBar(len(fnames), unit="img") as bar:
        futures = [ex.submit(resize_img, f, targ, path, new_path) for f in fnames]
        for i, fut in enumerate(futures):
            fut.result()
            bar.update(i + 1)
    return os.path.join(path, new_path, str(targ))


def _nhot(fnames, csv_labels, classes):
    idx = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(fnames), len(classes)), dtype=np.float32)
    for r, f in enumerate(fnames):
        for t in csv_labels[f]:
            y[r, idx[t]] = 1
    return y


class BaseDataset:
    """fastai 0.7's dataset protocol: `ds[i]` is `get_x(i)` then `get_y(i)`, then the transform
    (`get(transform, x, y)`); `n`, `c` and `sz` are computed once, by `get_n()`, `get_c()` and
    `get_sz()` in that order, when the dataset is made.

    A user's subclass (overriding `get_x`, `get_y`, `get`, `get1item` or `__getitem__`), or one
    whose transform runs only in Python, is served by the loaders through this very protocol,
    one call per item on the loader's threads. The library's own classes with a transform the
    Rust pipeline runs are served by Rust alone (decoding and transforming fused), and so is a
    subclass that overrides only `get_x` but for that call; `ds[i]` then reads the same Rust
    item (`_native`, the loader serving this dataset)."""

    _native = None

    def __init__(self, transform=None):
        self.transform = transform
        self.n = self.get_n()
        self.c = self.get_c()
        self.sz = self.get_sz()

    def get_n(self):
        raise NotImplementedError

    def get_c(self):
        raise NotImplementedError

    def get_sz(self):
        raise NotImplementedError

    def get_x(self, i):
        raise NotImplementedError

    def get_y(self, i):
        raise NotImplementedError

    @property
    def is_multi(self):
        return False

    @property
    def is_reg(self):
        return False

    def get(self, tfm, x, y):
        return (x, y) if tfm is None else tfm(x, y)

    def get1item(self, idx):
        x, y = self.get_x(idx), self.get_y(idx)
        return self.get(self.transform, x, y)

    def _fused_item(self, i):
        """Item `i` from the Rust loader serving this dataset, with a new draw of its random
        transforms on every access (as the original re-augmented); the draws follow the data
        seed, on the dataset-item stream (apart from the loaders' epochs)."""
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        if "_draws" not in self.__dict__:
            self._draws = itertools.count()
        return self._native.item(i, next(self._draws)), self.get_y(i)

    def _item(self, i):
        if self._native is not None and self._native.pipeline is not None:
            return self._fused_item(i)
        return self.get1item(i)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            xs, ys = zip(*[self._item(i) for i in range(*idx.indices(len(self)))])
            return np.stack(xs), ys
        return self._item(idx)

    def __len__(self):
        return self.n

    def denorm(self, arr):
        """Undo normalisation for display: (N, C, H, W) -> (N, H, W, C); (C, H, W) -> (H, W, C)."""
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 3:
            return self.transform.denorm(np.moveaxis(arr, 0, -1))
        return self.transform.denorm(np.moveaxis(arr, 1, -1))


class FilesDataset(BaseDataset):
    """Image files `fnames` under `path` (fastai 0.7's abstract file dataset: a subclass gives
    `get_y` and `get_c`)."""

    def __init__(self, fnames, transform, path):
        self.path = path
        # As in fastai 0.7: a list for folder data (`from_paths`, test folders), the numpy
        # array of the split for `from_csv` / `from_names_and_array`.
        self.fnames = fnames
        super().__init__(transform)

    def get_sz(self):
        return self.transform.sz

    def get_x(self, i):
        return open_image(os.path.join(self.path, self.fnames[i]))

    def get_n(self):
        return len(self.fnames)

    def resize_imgs(self, targ, new_path):
        """Copies of the files with their smaller side `targ` under `path/new_path/targ` (the
        same relative names), and this dataset's class over them."""
        dst = os.path.join(os.fspath(self.path), os.fspath(new_path), str(int(targ)))
        pool = _native.ThreadPool(os.cpu_count() or 1)
        _native.resize_images(os.fspath(self.path), dst, [os.fspath(f) for f in self.fnames],
                              int(targ), pool, False)
        return self.__class__(self.fnames, self.y, self.transform, dst)


class FilesArrayDataset(FilesDataset):
    """Files with labels `y` (one row per file); regression when built by `from_csv(...,
    continuous=True)`."""

    def __init__(self, fnames, y, transform, path):
        self.y = y
        assert len(fnames) == len(y)
        super().__init__(fnames, transform, path)

    def get_y(self, i):
        return self.y[i]

    def get_c(self):
        return self.y.shape[1] if len(self.y.shape) > 1 else 0


class FilesIndexArrayDataset(FilesArrayDataset):
    """Single-label: `y` is int64 class indices."""

    def get_c(self):
        return int(self.y.max()) + 1 if len(self.y) else 0


class FilesNhotArrayDataset(FilesArrayDataset):
    """Multi-label: `y` is a float32 n-hot matrix (N, c)."""

    @property
    def is_multi(self):
        return True


class FilesIndexArrayRegressionDataset(FilesArrayDataset):
    """Regression targets (e.g. one box per image). fastai 0.7 made `is_reg` a method, which
    code reading it as a flag saw as True; here it is the property it was meant to be."""

    @property
    def is_reg(self):
        return True


class _RegFilesArrayDataset(FilesArrayDataset):
    """What `from_csv(..., continuous=True)` builds: float32 rows, regression."""

    @property
    def is_reg(self):
        return True


class _TestDataset(FilesArrayDataset):
    """An unlabelled test folder: y is float32 zeros (N,), c is 0."""

    def get_c(self):
        return 0


class ArraysDataset(BaseDataset):
    """Items held in arrays: `get_x(i) = x[i]`, `get_y(i) = y[i]`, `sz = x.shape[1]` (fastai
    0.7's abstract array dataset: a subclass gives `get_c`)."""

    def __init__(self, x, y, transform):
        self.x, self.y = x, y
        assert len(x) == len(y)
        super().__init__(transform)

    def get_x(self, i):
        return self.x[i]

    def get_y(self, i):
        return self.y[i]

    def get_n(self):
        return len(self.y)

    def get_sz(self):
        return self.x.shape[1]

    def get1item(self, idx):
        if self.transform is None and type(self).get_x is ArraysDataset.get_x:
            # Untransformed items come out as the float32 the loaders batch them as.
            return np.asarray(self.x[idx], dtype=np.float32), self.get_y(idx)
        return super().get1item(idx)

    def denorm(self, arr):
        if self.transform is None:
            raise ValueError("denorm: this dataset has no transform (from_arrays without tfms)")
        return super().denorm(arr)


class ArraysIndexDataset(ArraysDataset):
    """Single-label: `y` is int64 class indices."""

    def get_c(self):
        return int(self.y.max()) + 1 if len(self.y) else 0


class ArraysIndexRegressionDataset(ArraysIndexDataset):
    @property
    def is_reg(self):
        return True


class ArraysNhotDataset(ArraysDataset):
    def get_c(self):
        return self.y.shape[1]

    @property
    def is_multi(self):
        return True


# The library's dataset classes the Rust loaders serve without Python, by the kind of labels
# the Rust dataset holds. A subclass keeps the fused path only while it leaves the item
# protocol alone (it may add attributes or override `get_c`, `is_multi`, ...).
_FUSED_KINDS = {
    FilesIndexArrayDataset: "class", FilesNhotArrayDataset: "multihot",
    FilesArrayDataset: "continuous", FilesIndexArrayRegressionDataset: "continuous",
    _RegFilesArrayDataset: "continuous", _TestDataset: "none",
    ArraysIndexDataset: "class", ArraysIndexRegressionDataset: "continuous",
    ArraysNhotDataset: "multihot",
}
_ITEM_PROTOCOL = ("get_x", "get_y", "get", "get1item", "__getitem__", "_item", "get_n", "__len__")


def _fused_base(ds):
    """The library class of `_FUSED_KINDS` that `ds` derives from (None: none of them)."""
    return next((b for b in type(ds).__mro__ if b in _FUSED_KINDS), None)


def _own_protocol(ds, base):
    """The names of the item protocol that `ds` does not take from `base`: methods its class
    overrides, or patched on the instance."""
    return {m for m in _ITEM_PROTOCOL
            if m in vars(ds) or getattr(type(ds), m) is not getattr(base, m)}


def _label_kind(ds, base):
    """The kind of labels of the Rust dataset for `ds` (see `_fused_kind`), or None when it
    cannot hold `ds.y` as given, or the transform runs only in Python."""
    tfm = ds.transform
    if not isinstance(tfm, _transforms.Transforms) or not tfm.fusable:
        return None
    kind = _FUSED_KINDS[base]
    target = tfm.tfm_y
    if target in (_transforms.TfmType.CLASS, _transforms.TfmType.PIXEL) and kind != "none":
        return None  # masks and images come from a dataset's own get_y (`_own_get_y`)
    if target == _transforms.TfmType.COORD and kind not in ("continuous", "none"):
        return None
    if kind != "none":
        y = np.asarray(ds.y)
        if len(y) != len(ds):
            return None
        if kind == "class" and not (y.ndim == 1 and y.dtype.kind in "iu"):
            return None
        if kind in ("multihot", "continuous") and not (y.ndim == 2 and y.dtype.kind in "fiub"):
            return None
        if target == _transforms.TfmType.COORD and y.shape[1] % 4:
            return None  # not boxes: 0.7 would have failed on them
    return kind


def _fused_kind(ds):
    """The label kind of the Rust dataset that can serve `ds` without Python ('class',
    'multihot', 'continuous', 'none'), or None when Python must make its items: a class (or
    method) of the user's in the item protocol, a transform that runs only in Python, labels
    or images the Rust dataset does not hold as given (they would come out other than 0.7's)."""
    base = _fused_base(ds)
    if base is None or _own_protocol(ds, base):
        return None
    kind = _label_kind(ds, base)
    if kind is not None and isinstance(ds, ArraysDataset):
        x = ds.x
        if not (isinstance(x, np.ndarray) and x.ndim == 4 and x.shape[3] == 3
                and x.dtype in (np.uint8, np.float32)):
            return None
    return kind


def _own_get_x_kind(ds):
    """The label kind when `ds` changes only `get_x` of a library class whose labels, and
    transform, the Rust side runs: its images then come from Python one at a time and go
    through the fused pipeline, the labels staying in Rust. None otherwise."""
    base = _fused_base(ds)
    if base is None or _own_protocol(ds, base) != {"get_x"}:
        return None
    return _label_kind(ds, base)


def _own_get_y(ds):
    """Whether `ds` is a file dataset whose only own piece of the item protocol is `get_y`,
    giving masks or images that a fusable pipeline with tfm_y CLASS or PIXEL transforms (0.7's
    segmentation datasets): its images are decoded and transformed in Rust, and the y of each
    item, asked of its `get_y` on the loader's threads, goes through the same draws."""
    tfm = ds.transform
    if not (isinstance(ds, FilesDataset) and isinstance(tfm, _transforms.Transforms)
            and tfm.tfm_y in (_transforms.TfmType.CLASS, _transforms.TfmType.PIXEL)
            and tfm.fusable):
        return False
    return _own_protocol(ds, FilesDataset) == {"get_y"}


def _get_y_fn(ds):
    """What the Rust loader calls for the y of item i of an `_own_get_y` dataset: `ds.get_y(i)`
    (a torch tensor brought to numpy), an exception with the note of `_python_item_fn`."""
    return _dataset_call(ds, "get_y", _tensor_to_numpy)


def _item_where(ds, i):
    """How a note names item `i`'s file: ` (<path>)`, or nothing for a dataset without files."""
    try:
        return f" ({os.path.join(ds.path, ds.fnames[i])})"
    except Exception:  # noqa: BLE001 -- a dataset without files (or odd names)
        return ""


def _add_item_note(e, ds, name, i):
    if isinstance(e, Exception):
        e.add_note(f"raised while making item {i} of {name}{_item_where(ds, i)} for a loader")


def _python_item_fn(ds):
    """What the Rust loader calls for item i of a dataset it cannot run itself: `ds[i]`, as
    fastai 0.7's loader did (get_x, get_y, then the transform), with x brought to a float32
    array (float64 and torch tensors convert as 0.7's batching converted them) and y to None,
    an int or an int64/float32 array; Rust checks the shapes. An exception from the user's
    code reaches the caller as itself, with a note naming the dataset, the item and its file."""
    name = type(ds).__name__

    def item(i):
        try:
            x, y = ds[i]
        except BaseException as e:
            _add_item_note(e, ds, name, i)
            raise
        if torch.is_tensor(x):
            x = x.detach().cpu().numpy()
        if isinstance(x, np.ndarray) and x.dtype == np.float64:
            x = x.astype(np.float32)
        if _is_multi_target(y):
            return x, _pack_parts(ds, y, name, i)
        return x, _item_y(y, name, i)

    return item


# A target of several parts (`get_y` returning `(boxes, classes)`) reaches the loss as a list
# of tensors, as fastai 0.7's collate made it. The Rust loaders batch one array per item, so
# the parts travel packed in one float32 row (their layout kept on the dataset, the same for
# every item) and are split again into batch tensors of their own shapes and dtypes.
_PARTS_LOCK = threading.Lock()
# Integers above this are not exact in float32.
_EXACT_INT = 2 ** 24


def _is_multi_target(y):
    """A tuple, or a list holding arrays: one target per element (a list of numbers stays
    one target, a row)."""
    if isinstance(y, tuple):
        return True
    return isinstance(y, list) and any(isinstance(p, (np.ndarray, torch.Tensor, list, tuple)) for p in y)


def _pack_parts(ds, y, name, i):
    parts, layout = [], []
    for k, p in enumerate(y):
        if torch.is_tensor(p):
            p = p.detach().cpu().numpy()
        a = np.asarray(p)
        if a.dtype.kind in "iub":
            if a.size and np.abs(a).max() >= _EXACT_INT:
                raise ValueError(f"{name} item {i}: y part {k} holds integers beyond {_EXACT_INT} "
                                 "(they travel as float32)")
            kind = "int64"
        elif a.dtype.kind == "f":
            kind = "float32"
        else:
            raise ValueError(f"{name} item {i}: y part {k} is {a.dtype} of shape {a.shape}; each "
                             "part of a tuple target must be numbers")
        parts.append(a.astype(np.float32).ravel())
        layout.append((a.shape, kind))
    layout = tuple(layout)
    with _PARTS_LOCK:
        known = ds.__dict__.setdefault("_y_parts", layout)
    if known != layout:
        raise ValueError(f"{name} item {i}: y is a tuple of {_show_layout(layout)}, but earlier items "
                         f"gave {_show_layout(known)}; each part of a tuple target must have the same "
                         "shape in every item (pad them to one length)")
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _show_layout(layout):
    return "(" + ", ".join(f"{kind} {shape}" for shape, kind in layout) + ")"


def _split_target(y, *datasets):
    """A batch's targets as the dataset gave them: a list of tensors (batch first) when the
    first of `datasets` that made tuple targets did, else `y` unchanged."""
    for ds in datasets:
        layout = getattr(ds, "__dict__", {}).get("_y_parts")
        if layout is None:
            continue
        y = torch.as_tensor(y)
        out, at = [], 0
        for shape, kind in layout:
            n = int(np.prod(shape, dtype=np.int64))
            part = y[:, at:at + n].reshape(y.shape[0], *shape)
            out.append(part.to(torch.int64) if kind == "int64" else part)
            at += n
        return out
    return y


def _get_x_fn(ds):
    """What the Rust loader calls for the image of item i of a dataset that changes only
    `get_x`: `ds.get_x(i)`, a float64 array or a torch tensor brought to float32 numpy (Rust
    checks the rest), an exception with the note of `_python_item_fn`."""
    def as_float32(x):
        x = _tensor_to_numpy(x)
        return x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype == np.float64 else x
    return _dataset_call(ds, "get_x", as_float32)


def _tensor_to_numpy(v):
    return v.detach().cpu().numpy() if torch.is_tensor(v) else v


def _dataset_call(ds, method, convert):
    """`i -> convert(ds.<method>(i))` for the Rust loader's threads; an exception raised there
    gets the note of `_python_item_fn`. The dataset is held weakly: its `_native` loader holds
    this function, and a strong reference back would be a cycle through Rust that the garbage
    collector cannot see."""
    name = type(ds).__name__
    try:
        held = weakref.ref(ds)
    except TypeError:  # a class with __slots__ and no __weakref__
        def held():
            return ds

    def call(i):
        d = held()
        if d is None:
            raise ReferenceError(f"{name} was freed while one of its loaders was still running")
        try:
            v = getattr(d, method)(i)
        except BaseException as e:
            _add_item_note(e, d, name, i)
            raise
        return convert(v)

    return call


def _item_y(y, name, i):
    if y is None:
        return None
    if torch.is_tensor(y):
        y = y.detach().cpu().numpy()
    a = np.asarray(y)
    if a.dtype.kind in "iub":
        return int(a) if a.ndim == 0 else np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind == "f":
        # np.array, not ascontiguousarray: that would make a 0-d float (a scalar y) 1-d.
        return np.array(a, dtype=np.float32, order="C")
    raise ValueError(f"{name} item {i}: y is {a.dtype} of shape {a.shape}; expected an integer "
                     "class index, a number, or a numeric array")


def _item_files(ds):
    try:
        return [os.path.join(os.fspath(ds.path), os.fspath(f)) for f in ds.fnames]
    except Exception:  # noqa: BLE001 -- a dataset without files
        return None


class _Loaders:
    """What the loaders of one data object share: the worker threads, the seed, skip_bad, and
    the Rust datasets (one per set of items, so a split's two loaders share theirs)."""

    def __init__(self, num_workers, seed, skip_bad=False):
        self.pool = _native.ThreadPool(num_workers if num_workers else 1)
        self.seed, self.skip_bad = seed, skip_bad
        self._datasets = {}

    def native(self, ds, bs, shuffle, tta=False):
        """The Rust loader of `ds` (None for untransformed arrays, batched in Python)."""
        wrapper = not isinstance(ds, BaseDataset)
        if not wrapper and ds.transform is None:
            return None
        kind, own_x = (None, False) if wrapper else (_fused_kind(ds), False)
        if kind is None and not wrapper and _own_get_y(ds):
            # One Rust dataset per Python dataset: its get_y is part of it.
            nds = _native.Dataset.from_files(os.fspath(ds.path), [os.fspath(f) for f in ds.fnames],
                                             "none", None, get_y=_get_y_fn(ds), name=type(ds).__name__)
            native = _native.DataLoader(nds, ds.transform._pipeline, self.pool, bs=bs,
                                        shuffle=shuffle, seed=self.seed, skip_bad=self.skip_bad,
                                        tta=tta)
            ds._native = native
            return native
        if kind is None and not wrapper:
            # Only get_x is the user's: its images go through the fused pipeline, one Rust
            # dataset per Python dataset (the key holds the dataset itself, not its items).
            kind = _own_get_x_kind(ds)
            own_x = kind is not None
        if kind is None:
            # A dataset of the user's, or a wrapper around one of ours (0.7's ConcatLblDataset
            # assigned to `dl.dataset`), whose items come made: `ds[i]` per item.
            nds = _native.Dataset.from_python(_python_item_fn(ds), len(ds), type(ds).__name__,
                                              _item_files(ds))
            sz = getattr(getattr(ds, "transform", None), "sz", None)
            return _native.DataLoader(nds, None, self.pool, bs=bs, shuffle=shuffle, seed=self.seed,
                                      tta=tta, sz=int(sz) if isinstance(sz, (int, np.integer)) else None)
        arrays = isinstance(ds, ArraysDataset)
        items = ds if own_x else ds.x if arrays else ds.fnames
        key = (own_x or arrays, id(items), id(getattr(ds, "y", None)), kind,
               None if arrays else os.fspath(ds.path))
        # The key holds ids: each entry keeps the objects it names alive beside their dataset.
        nds = self._datasets.get(key, (None,))[0]
        if nds is None:
            y = None if kind == "none" else np.ascontiguousarray(
                ds.y, dtype=np.int64 if kind == "class" else np.float32)
            if own_x:
                nds = _native.Dataset.from_get_x(_get_x_fn(ds), len(ds), type(ds).__name__,
                                                 _item_files(ds), kind, y)
            elif arrays:
                nds = _native.Dataset.from_images(np.ascontiguousarray(items), kind, y)
            else:
                nds = _native.Dataset.from_files(os.fspath(ds.path), [os.fspath(f) for f in items],
                                                 kind, y)
            self._datasets[key] = (nds, items, getattr(ds, "y", None))
        native = _native.DataLoader(nds, ds.transform._pipeline, self.pool, bs=bs, shuffle=shuffle,
                                    seed=self.seed, skip_bad=self.skip_bad, tta=tta)
        ds._native = native
        return native


class DataLoader:
    """Batches of a dataset as torch tensors: x float32 (bs, C, sz, sz), y as the dataset gives
    it (int64 class indices, float rows, masks, ...; a list of tensors for tuple targets). Iterable any number of times; each pass
    is a new epoch (a new order when shuffling, new augmentations). `_native` is the Rust
    loader; None for untransformed items, which are batched here."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 pad_idx=0, num_workers=None, pin_memory=False, drop_last=False, pre_pad=True,
                 half=False, transpose=False, transpose_y=False, *, _native_loader=False, _seed=None,
                 _loaders=None, _tta=False):
        _check_loader_args(batch_size, 0 if num_workers is None else num_workers)
        self._dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.num_workers = num_workers
        self._seed = _seed_or_random(_seed)
        self._tta = _tta
        if _native_loader is False:
            # Made directly by the user (`DataLoader(ds)`): its own threads.
            workers = (os.cpu_count() or 1) if num_workers is None else num_workers
            _loaders = _Loaders(workers or 1, self._seed)
            _native_loader = _loaders.native(dataset, batch_size, shuffle)
        self._loaders = _loaders
        self._native = _native_loader
        self._epoch = 0

    @property
    def dataset(self):
        return self._dataset

    @dataset.setter
    def dataset(self, ds):
        """Real 0.7 code swaps in a wrapper (`md.trn_dl.dataset = ConcatLblDataset(md.trn_ds,
        y2)`, items `(x, (box, class))`): the loader then serves the wrapper's items, made by
        it in Python on the same threads, with the same seed."""
        if ds is self._dataset:
            return
        native = self._native
        if self._loaders is not None:
            native = self._loaders.native(ds, self.batch_size, self.shuffle, self._tta)
        self._dataset, self._native = ds, native

    def __len__(self):
        if self._native is None:
            return -(-len(self.dataset) // self.batch_size)
        return len(self._native)

    def __iter__(self):
        epoch = self._epoch
        self._epoch += 1
        if self._native is None:
            return self._python_batches(epoch)
        return self._batches(epoch)

    def _python_batches(self, epoch):
        """Untransformed items: x float32, y as the dataset holds it; a new order every pass
        when shuffling, the same `epoch_order` as the Rust loaders."""
        ds = self.dataset
        n = len(ds)
        order = np.asarray(_native.epoch_order(n, self._seed, epoch) if self.shuffle else range(n),
                           dtype=np.int64)
        plain = isinstance(ds, ArraysDataset) and _fused_base_protocol(ds)
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            if plain:
                x = np.ascontiguousarray(ds.x[idx], dtype=np.float32)
                y = np.asarray(ds.y[idx])
            else:
                xs, ys = zip(*[ds[int(j)] for j in idx])
                x, y = np.stack(xs).astype(np.float32, copy=False), np.stack([np.asarray(v) for v in ys])
            yield torch.from_numpy(x), torch.from_numpy(y)

    def _batches(self, epoch):
        to_gpu = core.USE_GPU and torch.cuda.is_available()
        it = self._native.iter_epoch(epoch)
        try:
            for x, y in it:
                x, y = torch.from_numpy(x), torch.from_numpy(y)
                if to_gpu:
                    x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
                yield x, _split_target(y, self.dataset)
            skipped = it.skipped()
            if skipped:
                shown = ", ".join(str(p) for p in skipped[:10])
                more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
                warnings.warn(f"skipped {len(skipped)} undecodable image(s) this epoch: {shown}{more}",
                              RuntimeWarning, stacklevel=core.user_stacklevel())
        finally:
            it.close()


def _fused_base_protocol(ds):
    """Whether `ds`'s class leaves the item protocol of the library class it derives from."""
    base = next((b for b in type(ds).__mro__ if b in _FUSED_KINDS), None)
    return base is not None and all(getattr(type(ds), m) is getattr(base, m) for m in _ITEM_PROTOCOL)


def _through_wrapper(ds, name):
    """`ds.<name>`, else that of the dataset a wrapper holds as `.ds` (a ConcatLblDataset
    swapped into `dl.dataset` rarely copies `c`, `sz`, `is_multi`)."""
    try:
        return getattr(ds, name)
    except AttributeError:
        inner = getattr(ds, "ds", None)
        if inner is None:
            raise
        return getattr(inner, name)


def _seed_or_random(seed):
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    return int(seed)


class _Split:
    """One split as a constructor hands it to the builder: image files (`fnames`, relative to
    the image folder) or images held in memory (`x`), and labels `y` (None: unlabelled)."""

    __slots__ = ("fnames", "x", "y")

    def __init__(self, fnames=None, y=None, x=None):
        self.fnames, self.y, self.x = fnames, y, x


class ModelData:
    """fastai 0.7's base data object: a path and the training, validation (and test) loaders."""

    def __init__(self, path, trn_dl, val_dl, test_dl=None):
        self.path, self.trn_dl, self.val_dl, self.test_dl = path, trn_dl, val_dl, test_dl

    @classmethod
    def from_dls(cls, path, trn_dl, val_dl, test_dl=None):
        return cls(path, trn_dl, val_dl, test_dl)

    @property
    def trn_ds(self):
        return self.trn_dl.dataset

    @property
    def val_ds(self):
        return self.val_dl.dataset

    @property
    def test_ds(self):
        if getattr(self, "test_dl", None) is None:
            raise AttributeError("no test set: pass test_name= to from_paths/from_csv")
        return self.test_dl.dataset

    @property
    def trn_y(self):
        return self.trn_ds.y

    @property
    def val_y(self):
        return self.val_ds.y

    # Settable, as real code assigns them (`md.is_multi = False`); the dataset's by default.
    @property
    def is_multi(self):
        v = self.__dict__.get("_is_multi")
        return _through_wrapper(self.trn_ds, "is_multi") if v is None else v

    @is_multi.setter
    def is_multi(self, value):
        self._is_multi = value

    @property
    def is_reg(self):
        v = self.__dict__.get("_is_reg")
        return _through_wrapper(self.trn_ds, "is_reg") if v is None else v

    @is_reg.setter
    def is_reg(self, value):
        self._is_reg = value


class ImageData(ModelData):
    """Images with their six loaders: `datasets` is fastai 0.7's list [trn, val, fix, aug, test,
    test_aug] (the last two may be None), as `get_ds` makes it."""

    def __init__(self, path, datasets, bs, num_workers, classes):
        # Datasets of the user's: no image folder of ours to resize, nothing skipped by a scan.
        self.img_path, self._splits, self.skipped = path, None, {}
        self._setup(path, datasets, bs, num_workers, classes, seed=None)

    def resize(self, targ_sz, new_path="tmp"):
        """Copies of every image with its smaller side `targ_sz` under `path/new_path/targ_sz/`,
        and a data object of this class reading them (see `_resize_datasets`)."""
        targ = int(targ_sz)
        if targ < 1:
            raise ValueError(f"resize: targ_sz must be a positive number of pixels, not {targ_sz!r}")
        return self._resize_datasets(targ, new_path)

    def _resize_datasets(self, targ, new_path):
        """`resize` of data built from datasets (`ImageData(path, datasets, ...)`), as fastai 0.7
        did it: each dataset's own `resize_imgs(targ, new_path)` gives the dataset over the
        copies (a user's subclass keeps its class and its `get_x`/`get_y`), and a data object of
        this class is built over them. `path` stays, as for the class methods' data."""
        dls = (self.trn_dl, self.val_dl, self.fix_dl, self.aug_dl, self.test_dl, self.test_aug_dl)
        dss = [None if dl is None else dl.dataset for dl in dls]
        for ds in dss:
            if ds is not None and not hasattr(ds, "resize_imgs"):
                raise ValueError(f"resize: {type(ds).__name__} holds no image files to resize (it has no "
                                 "resize_imgs); arrays (from_arrays) are resized by the transforms")
        new = [None if ds is None else ds.resize_imgs(targ, new_path) for ds in dss]
        out = self.__class__(self.path, new, self.bs, self.num_workers, self.classes)
        out.img_path = getattr(new[0], "path", self.path)
        return out

    def _setup(self, path, datasets, bs, num_workers, classes, seed, skip_bad=False):
        _check_loader_args(bs, num_workers)
        datasets = list(datasets) + [None] * (6 - len(datasets))
        if len(datasets) != 6 or datasets[0] is None or datasets[1] is None:
            raise ValueError("datasets must be [trn, val, fix, aug, test, test_aug] (as get_ds "
                             "returns), the first two not None")
        self.path, self.bs, self.num_workers, self.classes = path, bs, num_workers, classes
        self.seed = _seed_or_random(seed)
        self._loaders = _Loaders(num_workers, self.seed, skip_bad)
        self._pool = self._loaders.pool
        trn, val, fix, aug, test, test_aug = datasets

        def dl(ds, shuffle, tta=False):
            if ds is None:
                return None
            native = self._loaders.native(ds, bs, shuffle, tta)
            return DataLoader(ds, batch_size=bs, shuffle=shuffle, num_workers=num_workers,
                              _native_loader=native, _seed=self.seed, _loaders=self._loaders, _tta=tta)

        self.trn_dl, self.val_dl = dl(trn, True), dl(val, False)
        self.fix_dl = dl(fix, False)
        # Test-time augmentation: the training transform, drawing on its own stream.
        self.aug_dl = dl(aug, False, tta=True)
        self.test_dl, self.test_aug_dl = dl(test, False), dl(test_aug, False, tta=True)

    @staticmethod
    def get_ds(fn, trn, val, tfms, test=None, **kwargs):
        """fastai 0.7's six datasets: `fn(x, second, tfm, **kwargs)` for training (training
        transform), validation, fix (training items, validation transform), aug (validation
        items, training transform), and the test set's two when `test` is given (a tuple is
        used as given, else its labels are float zeros (n, 1))."""
        res = [
            fn(trn[0], trn[1], tfms[0], **kwargs),
            fn(val[0], val[1], tfms[1], **kwargs),
            fn(trn[0], trn[1], tfms[1], **kwargs),
            fn(val[0], val[1], tfms[0], **kwargs),
        ]
        if test is not None:
            if isinstance(test, tuple):
                test_lbls, test = test[1], test[0]
            else:
                test_lbls = np.zeros((len(test), 1))
            res += [fn(test, test_lbls, tfms[1], **kwargs), fn(test, test_lbls, tfms[0], **kwargs)]
        else:
            res += [None, None]
        return res

    @property
    def sz(self):
        return _through_wrapper(self.trn_ds, "sz")

    @property
    def c(self):
        return _through_wrapper(self.trn_ds, "c")


class ImageClassifierData(ImageData):
    """Training, validation (and optional test) images with their six loaders (spec §2.4).
    The constructor is fastai 0.7's, `ImageClassifierData(path, datasets, bs, num_workers,
    classes)`; the class methods build the datasets from folders, a CSV or arrays."""

    @classmethod
    def _build(cls, path, bs, num_workers, classes, seed, trn, val, test, tfms, skip_bad=False,
               kind="class", skipped=None, img_path=None, c=None):
        """The one builder behind every class method: `trn`, `val` and `test` (or None) are
        `_Split`s, all of files or all of arrays; `kind` says what labels are ('class',
        'multihot', 'continuous'); `c` is the class count of arrays without class names."""
        arrays = trn.x is not None
        if not arrays:
            _require_tfms(tfms)
        _check_loader_args(bs, num_workers)
        has_tfms = _has_tfms(tfms)
        trn_tfm, val_tfm = tfms if has_tfms else (None, None)
        self = cls.__new__(cls)
        # Where the images are read from: `path`, or the copies made by `resize` (None: arrays).
        self.img_path = None if arrays else (path if img_path is None else img_path)
        # What `resize` needs to build the same data on the copies.
        self._splits = None if arrays else (trn, val, test)
        self._tfms, self._skip_bad, self._kind = tfms, skip_bad, kind
        self.skipped = skipped or {}
        files_cls = {"class": FilesIndexArrayDataset, "multihot": FilesNhotArrayDataset,
                     "continuous": _RegFilesArrayDataset}[kind]

        def labels(split):
            if split.y is None:
                return np.zeros(len(split.x if arrays else split.fnames), dtype=np.float32)
            return np.ascontiguousarray(split.y, dtype=np.int64 if kind == "class" else np.float32)

        # Each split's file list once, so its two datasets (and Rust datasets) share it.
        names = {id(sp): (sp.fnames if isinstance(sp.fnames, np.ndarray) else list(sp.fnames))
                 for sp in (trn, val, test) if sp is not None and not arrays}

        def make(split, y, tfm):
            if split is None:
                return None
            if arrays:
                ds = ArraysIndexDataset(split.x, y, tfm)
                if tfm is not None:
                    ds.sz = tfm.sz
                ds.c = c if c is not None and not classes else ds.c
            else:
                fn_cls = files_cls if split.y is not None else _TestDataset
                ds = fn_cls(names[id(split)], y, tfm, self.img_path)
            if classes and not (split.y is None and not arrays):
                ds.c = len(classes)
            ds.classes = classes
            return ds

        datasets = []
        for split, tfm_pair in ((trn, (trn_tfm, val_tfm)), (val, (val_tfm, trn_tfm))):
            # The split's labels once, so its two datasets (and Rust datasets) share them.
            y = labels(split)
            datasets.append((split, y, tfm_pair))
        (t, ty, (t0, t1)), (v, vy, (v1, v0)) = datasets
        ds = [make(t, ty, t0), make(v, vy, v1), make(t, ty, t1), make(v, vy, v0)]
        if test is not None:
            sy = labels(test)
            ds += [make(test, sy, val_tfm), make(test, sy, trn_tfm)]
        ImageData._setup(self, path, ds, bs, num_workers, classes, seed, skip_bad)
        return self

    # --- resized copies ------------------------------------------------------------------
    def resize(self, targ_sz, new_path="tmp"):
        """Copies of every image with its smaller side `targ_sz` (the other side scaled
        alike; antialiased bilinear; JPEG at quality 75) under `path/new_path/targ_sz/` at the
        same relative paths, and a new data object that reads them: same files, labels,
        classes, transforms, `bs`, `num_workers` and seed (spec §2.10).

        Each copy is checked against its source, and redone when the source changed or the
        copy is missing or was cut short (the original skipped everything once the first copy
        existed), so after an interrupt the next call finishes the job. `path`
        stays as it was, so `models/` and `tmp/` stay in the folder you chose (the original
        moved them under `path/tmp/<sz>/`); the copies' folder is the new data's `img_path`."""
        targ = int(targ_sz)
        if targ < 1:
            raise ValueError(f"resize: targ_sz must be a positive number of pixels, not {targ_sz!r}")
        if getattr(self, "_splits", None) is None:
            return self._resize_datasets(targ, new_path)
        dst = os.path.join(os.fspath(self.path), os.fspath(new_path), str(targ))
        trn, val, test = self._splits
        files = list(dict.fromkeys(f for split in (trn, val, test) if split is not None for f in split.fnames))
        failed = []
        bar = _progress.ProgressBar(len(files), desc=f"resize {targ}", leave=False, unit="img")
        try:
            # Chunks, so the bar moves and Ctrl-C is seen between them (each copies in parallel).
            chunk = max(64, 8 * (self.num_workers or 1))
            for i in range(0, len(files), chunk):
                _, _, bad = _native.resize_images(os.fspath(self.img_path), dst, files[i:i + chunk],
                                                  targ, self._pool, self._skip_bad)
                failed += bad
                bar.update(min(i + chunk, len(files)))
        finally:
            bar.close()
        if failed:
            shown = "; ".join(f"{f}: {why}" for f, why in failed[:5])
            warnings.warn(f"resize: {len(failed)} image(s) could not be read and have no copy "
                          f"(skip_bad=True skips them in the loaders too): {shown}",
                          stacklevel=core.user_stacklevel())
        return self.__class__._build(self.path, self.bs, self.num_workers, self.classes, self.seed,
                                     trn, val, test, self._tfms, self._skip_bad, kind=self._kind,
                                     skipped=self.skipped, img_path=dst)

    # --- constructors --------------------------------------------------------------------
    @classmethod
    def from_paths(cls, path, bs=64, tfms=(None, None), trn_name="train", val_name="valid",
                   test_name=None, test_with_labels=False, num_workers=8, seed=None,
                   skip_bad=False):
        """Images in `path/trn_name/<class>/*` and `path/val_name/<class>/*` (spec §2.2)."""
        _require_tfms(tfms)  # before scanning: the missing transforms are the first thing to say
        root = os.fspath(path)
        trn_f, trn_y, classes, sk_t = _native.scan_labelled(root, trn_name, None)
        val_f, val_y, _, sk_v = _native.scan_labelled(root, val_name, classes)
        skipped = {trn_name: sk_t, val_name: sk_v}
        test = None
        if test_name:
            if test_with_labels:
                tf, ty, _, sk = _native.scan_labelled(root, test_name, classes)
                test = _Split(tf, ty)
            else:
                tf, sk = _native.scan_flat(root, test_name)
                test = _Split(tf)
            skipped[test_name] = sk
        _warn_non_images(skipped)
        return cls._build(path, bs, num_workers, classes, _seed_or_random(seed), _Split(trn_f, trn_y),
                   _Split(val_f, val_y), test, tfms, skip_bad, skipped=skipped)

    @classmethod
    def from_arrays(cls, path, trn, val, bs=64, tfms=(None, None), classes=None, num_workers=4,
                    test=None, seed=None):
        """Data held in numpy arrays (spec §2.9): `trn=(x, y)`, `val=(x, y)`, `test` an x array
        or an `(x, y)` pair; y integer class indices. With transforms, x holds images
        (N, H, W, 3), uint8 (0-255) or float32 (0-1), which the Rust pipeline transforms like
        decoded files (a learner can train on them, precompute included; the activation cache
        is keyed by the arrays' values). Without transforms, items are `x[i]` as float32, any
        shape, for iteration only (the original then failed at batch time on uint8 data, rough
        edge 14: here uint8 without transforms is refused at once)."""
        has_tfms = _has_tfms(tfms)
        if tfms is not None and len(tfms) == 2 and (tfms[0] is None) != (tfms[1] is None):
            raise ValueError("from_arrays: pass both transforms (train, validation) or neither")

        def split(xy, what, labelled=True):
            x, y = (xy if labelled else (xy, None))
            x = np.asarray(x)
            if not has_tfms and x.dtype == np.uint8:
                raise TypeError(f"from_arrays: {what} images are uint8 and there are no transforms; "
                                "pass tfms (which scale to [0, 1] and normalise) or float32 data")
            if y is not None:
                y = np.asarray(y)
                if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
                    raise ValueError(f"from_arrays: {what} labels must be {len(x)} integer class "
                                     f"indices, got {y.dtype} of shape {y.shape}")
                y = y.astype(np.int64)
            if has_tfms and (x.ndim != 4 or x.shape[3] != 3):
                # The Rust transforms take RGB images; other data goes through a dataset class
                # of your own (`ImageClassifierData.get_ds`), whose transform runs in Python.
                raise ValueError(f"from_arrays: images must be an (N, H, W, 3) array, got shape {x.shape}")
            if has_tfms and x.dtype.kind == "f" and x.size:
                # The transforms scale floats as [0, 1]: 0-255 floats would come out 255x too
                # bright, and a NaN would spread through every layer.
                lo, hi = float(np.min(x)), float(np.max(x))
                if not (np.isfinite(lo) and np.isfinite(hi)):
                    raise ValueError(f"from_arrays: {what} images hold NaN or infinite values")
                if lo < -1e-3 or hi > 1 + 1e-3:
                    raise ValueError(f"from_arrays: {what} float images must be in [0, 1], found "
                                     f"{lo:g}..{hi:g} (divide by 255, or pass uint8)")
            return _Split(y=y, x=x)

        trn_p, val_p = split(trn, "training"), split(val, "validation")
        test_p = None
        if test is not None:
            test_p = split(test, "test", labelled=isinstance(test, (tuple, list)) and len(test) == 2)
        # One class count for every split (the original took the training labels' max + 1,
        # and a validation label above it failed inside the loss).
        labelled = [p.y for p in (trn_p, val_p, test_p) if p is not None and p.y is not None]
        n_classes = len(classes) if classes else max((int(y.max()) + 1 for y in labelled if len(y)), default=0)
        for y in labelled:
            if len(y) and (y.min() < 0 or y.max() >= n_classes):
                raise ValueError(f"from_arrays: labels must be class indices in 0..{n_classes - 1} "
                                 f"(found {int(y.min())}..{int(y.max())})")
        return cls._build(path, bs, num_workers, classes, _seed_or_random(seed), trn_p, val_p, test_p,
                   tfms, c=n_classes)

    @classmethod
    def from_csv(cls, path, folder, csv_fname, bs=64, tfms=(None, None), val_idxs=None, suffix="",
                 test_name=None, continuous=False, skip_header=True, num_workers=8, seed=None,
                 skip_bad=False, cat_separator=" "):
        """Images `path/folder/<id><suffix>` labelled by a CSV (spec §2.9); multi-label when
        some row has other than exactly one label."""
        fnames, csv_labels, classes, _ = parse_csv_labels(csv_fname, skip_header, cat_separator)
        full = [f"{folder}/{f}{suffix}" for f in fnames]
        _native.check_files_exist(os.fspath(path), full, os.fspath(csv_fname))
        if continuous:
            try:
                y = np.array([[float(v) for v in csv_labels[f]] for f in fnames], dtype=np.float32)
            except ValueError as e:
                raise ValueError(f"{csv_fname}: continuous labels must be numbers ({e})") from None
            classes = []
        else:
            y = _nhot(fnames, csv_labels, classes)
            n_labels = y.sum(axis=1)
            if len(y) and n_labels.max() <= 1 and n_labels.min() == 0:
                # Single-label data with a few blank labels: the original turned the whole
                # set multi-label (sigmoid, BCE, thresholded accuracy) without a word.
                blank = [f for f, k in zip(fnames, n_labels) if k == 0]
                raise ValueError(f"{csv_fname}: {len(blank)} row(s) have no label, e.g. {blank[:5]}, "
                                 "while every other row has exactly one; give them a label or remove "
                                 "them (blank labels make sense only in multi-label data)")
        return cls.from_names_and_array(path, full, y, classes, val_idxs, test_name,
                                        num_workers=num_workers, tfms=tfms, bs=bs,
                                        continuous=continuous, seed=seed, skip_bad=skip_bad)

    @classmethod
    def from_names_and_array(cls, path, fnames, y, classes, val_idxs=None, test_name=None,
                             num_workers=8, suffix="", tfms=(None, None), bs=64, continuous=False,
                             seed=None, skip_bad=False):
        fnames = [f + suffix for f in fnames]
        y = np.asarray(y)
        if val_idxs is None:
            val_idxs = get_cv_idxs(len(fnames))
        idxs = np.asarray(val_idxs)
        if idxs.size and (idxs.dtype.kind not in "iu" or idxs.min() < 0 or idxs.max() >= len(fnames)):
            raise ValueError(f"val_idxs: expected row indices in 0..{len(fnames) - 1} of the "
                             f"{len(fnames)} listed files, got {idxs.dtype} values "
                             f"{idxs.min()}..{idxs.max()}")
        mask = np.zeros(len(fnames), dtype=bool)
        mask[idxs.astype(np.int64)] = True
        if continuous:
            kind = "continuous"
            y = y.astype(np.float32).reshape(len(fnames), -1)
        elif y.ndim == 2 and (y.sum(axis=1) == 1).all():
            kind, y = "class", np.argmax(y, axis=1).astype(np.int64)
        elif y.ndim == 1:
            kind, y = "class", y.astype(np.int64)
        else:
            kind, y = "multihot", y.astype(np.float32)
        fn = np.array(fnames)
        trn = _Split(fn[~mask], y[~mask])
        val = _Split(fn[mask], y[mask])
        test = None
        if test_name:
            tf, _ = _native.scan_flat(os.fspath(path), test_name)
            test = _Split(tf)
        return cls._build(path, bs, num_workers, list(classes), _seed_or_random(seed), trn, val, test,
                   tfms, skip_bad, kind=kind)
