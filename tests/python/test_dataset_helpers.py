"""The module-level helpers of fastai.dataset (open_image, the folder and CSV label readers,
the index splitters, resize_img), checked against OpenCV, pandas, numpy, PIL and hand values."""
import os

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fastai.dataset import (csv_source, dict_source, folder_source, get_cv_idxs, n_hot,
                            nhot_labels, open_image, parse_csv_labels, read_dir, read_dirs,
                            resize_img, resize_imgs, split_by_idx)
from fastai.exceptions import DatasetLayoutError, ImageDecodeError

from _fixtures import smooth_image


# ---- open_image ----------------------------------------------------------------------------

def _cv2_reference(fn):
    """What fastai 0.7 computed: OpenCV's flags 5 (8-bit, 3 channels), BGR -> RGB, / 255."""
    return cv2.imread(str(fn), 5)[..., ::-1].astype(np.float32) / 255


def _write_cases(tmp_path):
    arr = smooth_image(20, 30)
    paths = {}
    paths["gray"] = tmp_path / "gray.png"
    Image.fromarray(arr[..., 0]).save(paths["gray"])
    paths["rgba"] = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([arr, np.linspace(0, 255, 600).reshape(20, 30).astype(np.uint8)])).save(paths["rgba"])
    paths["16bit"] = tmp_path / "deep.png"
    deep = (arr[..., 1].astype(np.uint16) * 257 + np.arange(30, dtype=np.uint16)).astype(np.uint16)
    Image.fromarray(deep).save(paths["16bit"])  # PIL writes a 16-bit grayscale PNG
    paths["exif"] = tmp_path / "rotated.jpg"
    ex = Image.Exif()
    ex[0x0112] = 6  # display rotated by 90 degrees clockwise
    Image.fromarray(arr).save(paths["exif"], exif=ex.tobytes(), quality=95)
    return paths


@pytest.mark.parametrize("case", ["gray", "rgba", "16bit", "exif"])
def test_open_image_matches_opencv_flags_5(tmp_path, case):
    fn = _write_cases(tmp_path)[case]
    ours, ref = open_image(fn), _cv2_reference(fn)
    assert ours.dtype == np.float32 and ours.shape == ref.shape and ours.shape[2] == 3
    assert 0 <= ours.min() and ours.max() <= 1
    diff = np.abs(ours - ref) * 255
    if case == "exif":  # two JPEG decoders: off by a level or two, never rotated differently
        assert ours.shape == (30, 20, 3) and diff.mean() < 1.0 and diff.max() <= 8
    else:  # 16-bit included: both keep each sample's high byte (v >> 8)
        assert diff.max() < 1e-3, case
    assert np.array_equal(open_image(str(fn)), ours)  # a str and a Path alike


def test_open_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        open_image(tmp_path / "nope.jpg")
    folder = tmp_path / "dir.png"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="dir.png"):
        open_image(folder)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all\n")
    assert cv2.imread(str(text), 5) is None  # the reference refuses it too
    with pytest.raises(ImageDecodeError, match="notes.jpg") as e:
        open_image(text)
    assert isinstance(e.value, OSError)  # what 0.7 raised, and code catches


# ---- folder listings -----------------------------------------------------------------------

def _tree(tmp_path):
    arr = smooth_image(8, 8)
    layout = {"train/dogs": ["b.jpg", "a.png"], "train/cats": ["z.jpg", "c.jpg"],
              "test": ["2.jpg", "10.jpg", "1.png"]}
    for folder, names in layout.items():
        os.makedirs(tmp_path / folder, exist_ok=True)
        for n in names:
            Image.fromarray(arr).save(tmp_path / folder / n)
    return layout


def test_read_dir(tmp_path):
    _tree(tmp_path)
    expected = ["test/" + n for n in sorted(os.listdir(tmp_path / "test"))]
    assert read_dir(tmp_path, "test") == expected
    assert read_dir(str(tmp_path), "test") == expected
    # The ids notebooks cut out with fixed slices: 'test/<id>.jpg'[5:-4].
    assert [f[5:-4] for f in read_dir(tmp_path, "test")] == ["1", "10", "2"]
    absolute = read_dir(tmp_path, str(tmp_path / "test"))
    assert absolute == [os.path.join(str(tmp_path / "test"), n) for n in sorted(os.listdir(tmp_path / "test"))]


def test_read_dir_missing_or_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("missing", "empty"):
        with pytest.raises(FileNotFoundError, match=name):
            read_dir(tmp_path, name)


def test_read_dirs_and_folder_source(tmp_path):
    _tree(tmp_path)
    classes = sorted(os.listdir(tmp_path / "train"))
    expected = [(f"train/{c}/{n}", c) for c in classes for n in sorted(os.listdir(tmp_path / "train" / c))]
    fnames, labels, all_labels = read_dirs(tmp_path, "train")
    assert list(zip(fnames, labels)) == expected and all_labels == ["cats", "dogs"]
    fnames, idx, all_labels = folder_source(tmp_path, "train")
    assert fnames == [f for f, _ in expected] and all_labels == ["cats", "dogs"]
    assert idx.dtype == np.int64 and idx.tolist() == [all_labels.index(c) for _, c in expected]


# ---- CSV labels ----------------------------------------------------------------------------

CSV = "id,tags,extra\n00123,b a,x\n7,c,y\nzz,,z\n010,a  c,w\n5,b,v\n"


def _pandas_reference(fn, sep=" "):
    df = pd.read_csv(fn, index_col=0, dtype=str, keep_default_na=False)
    ids = list(df.index)
    labels = {i: [t for t in str(df.loc[i].iloc[0]).split(sep) if t] for i in ids}
    return ids, labels


def test_parse_csv_labels_against_pandas(tmp_path):
    fn = tmp_path / "labels.csv"
    fn.write_text(CSV)
    fnames, labels, classes, label2idx = parse_csv_labels(fn)
    ids, ref = _pandas_reference(fn)
    assert isinstance(fnames, np.ndarray) and list(fnames) == ids == ["00123", "7", "zz", "010", "5"]
    assert labels == ref
    assert labels["zz"] == [] and labels["010"] == ["a", "c"]  # empty tokens are dropped
    assert classes == ["a", "b", "c"] and label2idx == {"a": 0, "b": 1, "c": 2}


def test_parse_csv_labels_without_header_and_other_separator(tmp_path):
    fn = tmp_path / "corners.csv"
    fn.write_text("img1,1|2|3\nimg0,4\n")
    fnames, labels, classes, _ = parse_csv_labels(fn, skip_header=False, cat_separator="|")
    assert list(fnames) == ["img1", "img0"] and labels == {"img1": ["1", "2", "3"], "img0": ["4"]}
    assert classes == ["1", "2", "3", "4"]


def test_parse_csv_labels_refuses_a_duplicate_id(tmp_path):
    fn = tmp_path / "dup.csv"
    fn.write_text("id,l\na,x\nb,y\na,z\n")
    with pytest.raises(DatasetLayoutError, match=r"dup.csv.*lines 2 and 4"):
        parse_csv_labels(fn)


def test_csv_source_single_label_is_class_indices(tmp_path):
    fn = tmp_path / "single.csv"
    fn.write_text("id,label\nq,10\nr,2\ns,1\nt,2\n")
    full, y, classes = csv_source("train", fn, suffix=".jpg")
    assert full == [os.path.join("train", i + ".jpg") for i in pd.read_csv(fn, dtype=str)["id"]]
    assert classes == ["1", "10", "2"]  # string order, as 0.7's data.classes
    assert y.dtype == np.int64 and y.tolist() == [1, 2, 0, 2]


def test_csv_source_multi_label_is_n_hot(tmp_path):
    fn = tmp_path / "labels.csv"
    fn.write_text(CSV)
    full, y, classes = csv_source("imgs", fn)
    ids, ref = _pandas_reference(fn)
    expected = np.array([[float(c in ref[i]) for c in classes] for i in ids], dtype=np.float32)
    assert y.dtype == np.float32 and np.array_equal(y, expected)
    assert y[2].sum() == 0  # the empty row: all zeros (0.7.0 crashed on it)


def test_dict_source_repeated_label_counts_once_and_continuous(tmp_path):
    _, y, _ = dict_source("f", ["a", "b"], {"a": ["x", "x"], "b": ["y"]})
    assert y.dtype == np.int64 and y.tolist() == [0, 1]
    _, boxes, _ = dict_source("f", ["a", "b"], {"a": ["1", "2", "3", "4"], "b": ["5", "6", "7", "8.5"]},
                              continuous=True)
    assert boxes.dtype == np.float32 and boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8.5]]
    _, ragged, _ = dict_source("f", ["a", "b"], {"a": ["1", "2", "3", "4"], "b": ["5"] * 8},
                               continuous=True)
    assert ragged.dtype == object and ragged.shape == (2,)
    assert ragged[0].dtype == np.float32 and ragged[1].tolist() == [5.0] * 8
    with pytest.raises(ValueError, match="numbers"):
        dict_source("f", ["a"], {"a": ["cat"]}, continuous=True)


def test_n_hot_and_nhot_labels():
    v = n_hot([0, 3], 5)
    assert v.dtype == np.float32 and v.tolist() == [1, 0, 0, 1, 0]
    out = nhot_labels({"a": 0, "b": 1, "c": 2}, {"p": ["c"], "q": ["a", "b"], "r": []}, ["q", "p", "r"], 3)
    assert out.dtype == np.float32 and out.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]


# ---- index splits --------------------------------------------------------------------------

def test_split_by_idx_against_numpy():
    x, y = np.arange(10) * 10, np.array(list("abcdefghij"))
    idxs = [7, 2, 2, -1]
    ((vx, tx), (vy, ty)) = split_by_idx(idxs, x, y)
    mask = np.zeros(10, dtype=bool)
    mask[[7, 2, 9]] = True
    assert vx.tolist() == x[mask].tolist() == [20, 70, 90] and tx.tolist() == x[~mask].tolist()
    assert vy.tolist() == y[mask].tolist() and ty.tolist() == y[~mask].tolist()
    ((v, t),) = split_by_idx([], x)  # 0.7 raised IndexError here
    assert v.tolist() == [] and t.tolist() == x.tolist()
    ((v, t),) = split_by_idx(list(range(3)), ["a", "b", "c", "d"])
    assert v.tolist() == ["a", "b", "c"] and t.tolist() == ["d"]


def test_get_cv_idxs_test_vectors():
    assert get_cv_idxs(10).tolist() == [8, 1]
    assert get_cv_idxs(10, cv_idx=1).tolist() == [5, 0]
    assert get_cv_idxs(25).tolist() == [8, 16, 0, 23, 11]
    assert get_cv_idxs(25).dtype == np.int64
    np.random.seed(42)
    assert get_cv_idxs(37, val_pct=0.3).tolist() == np.random.permutation(37)[:11].tolist()


# ---- resizing ------------------------------------------------------------------------------

def test_resize_img_against_pil(tmp_path):
    arr = smooth_image(30, 45)
    os.makedirs(tmp_path / "train" / "a")
    Image.fromarray(arr).save(tmp_path / "train" / "a" / "x.png")
    resize_img("train/a/x.png", 20, str(tmp_path), "tmp")
    out = tmp_path / "tmp" / "20" / "train" / "a" / "x.png"
    ref = Image.fromarray(arr).resize((30, 20), Image.BILINEAR)  # ratio 20/30: 45 -> 30
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(ref))


def test_resize_imgs_resumes_per_file(tmp_path):
    arr = smooth_image(16, 24)
    names = ["train/p.png", "train/q.png", "train/r.png"]
    os.makedirs(tmp_path / "train")
    for n in names:
        Image.fromarray(arr).save(tmp_path / n)
    # The first destination already exists: 0.7 then skipped every file.
    os.makedirs(tmp_path / "small" / "8" / "train")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "small" / "8" / names[0])
    root = resize_imgs(names, 8, str(tmp_path), "small")
    assert root == os.path.join(str(tmp_path), "small", "8")
    assert np.asarray(Image.open(os.path.join(root, names[0]))).max() == 0  # kept as it was
    ref = np.asarray(Image.fromarray(arr).resize((12, 8), Image.BILINEAR))
    for n in names[1:]:
        assert np.array_equal(np.asarray(Image.open(os.path.join(root, n))), ref)
