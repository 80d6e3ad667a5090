"""ImageClassifierData.from_csv: single-label, multi-label, regression, and bad CSVs."""
import os

import numpy as np
import pytest
import torch

from fastai.dataset import ImageClassifierData
from fastai.exceptions import DatasetLayoutError
from fastai.transforms import tfms_from_model
from _fixtures import save, smooth_image

SZ = 16


def write(tmp_path, rows, header="id,tags", n_imgs=None):
    for i, (fid, _) in enumerate(rows):
        save(smooth_image(20, 24, seed=i), str(tmp_path / "imgs" / f"{fid}.png"))
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join([header] + [f"{a},{b}" for a, b in rows]) + "\n")
    return str(tmp_path) + "/", str(csv)


def make(path, csv, **kw):
    kw.setdefault("tfms", tfms_from_model("resnet34", SZ))
    return ImageClassifierData.from_csv(path, "imgs", csv, bs=2, suffix=".png", num_workers=2, seed=0, **kw)


def test_single_label(tmp_path):
    rows = [("f3", "dog"), ("f1", "cat"), ("f0", "dog"), ("f2", "bird"), ("f4", "cat")]
    path, csv = write(tmp_path, rows)
    data = make(path, csv, val_idxs=[1, 3])
    assert data.classes == ["bird", "cat", "dog"] and data.c == 3
    assert not data.is_multi and not data.is_reg
    # val_idxs index the CSV's data rows in file order, as fastai 0.7 kept them (an unsorted CSV
    # used to be sorted by id first, so val_idxs picked other rows); order kept in both splits.
    # Reference: pandas reads the rows, a numpy mask splits them.
    import pandas as pd
    df = pd.read_csv(csv, dtype=str)
    is_val = np.isin(np.arange(len(df)), [1, 3])
    names = np.array([f"imgs/{i}.png" for i in df["id"]])
    label = {c: k for k, c in enumerate(sorted(set(df["tags"])))}
    ys = np.array([label[t] for t in df["tags"]])
    assert list(data.val_ds.fnames) == list(names[is_val]) == ["imgs/f1.png", "imgs/f2.png"]
    assert isinstance(data.val_ds.fnames, np.ndarray)  # the split of an array, as the original
    assert list(data.trn_ds.fnames) == list(names[~is_val])
    assert data.trn_y.tolist() == ys[~is_val].tolist() and data.val_y.tolist() == ys[is_val].tolist()
    assert data.trn_y.dtype == np.int64
    x, y = next(iter(data.val_dl))
    assert x.shape == (2, 3, SZ, SZ) and y.dtype == torch.int64


def test_multi_label(tmp_path):
    rows = [("a", "sky water"), ("b", "sky"), ("c", "tree water sky"), ("d", "tree")]
    path, csv = write(tmp_path, rows)
    data = make(path, csv, val_idxs=[0])
    assert data.is_multi and data.classes == ["sky", "tree", "water"] and data.c == 3
    assert data.val_y.tolist() == [[1, 0, 1]]
    assert data.trn_y.dtype == np.float32 and data.trn_y.tolist() == [[1, 0, 0], [1, 1, 1], [0, 1, 0]]
    ys = torch.cat([y for _, y in data.fix_dl])
    assert ys.dtype == torch.float32 and ys.tolist() == data.trn_y.tolist()


def test_continuous(tmp_path):
    rows = [("a", "1.5"), ("b", "2"), ("c", "-3")]
    path, csv = write(tmp_path, rows)
    data = make(path, csv, val_idxs=[2], continuous=True)
    assert data.is_reg and data.trn_y.tolist() == [[1.5], [2.0]]
    _, y = next(iter(data.val_dl))
    assert y.dtype == torch.float32 and y.tolist() == [[-3.0]]


def test_default_split_is_get_cv_idxs(tmp_path):
    rows = [(f"f{i}", "x" if i % 2 else "y") for i in range(10)]
    path, csv = write(tmp_path, rows)
    data = make(path, csv)
    assert len(data.val_ds) == 2 and len(data.trn_ds) == 8


def test_missing_file_is_an_error(tmp_path):
    path, csv = write(tmp_path, [("a", "x"), ("b", "y")])
    with open(csv, "a") as f:
        f.write("ghost,x\n")
    with pytest.raises(DatasetLayoutError) as e:
        make(path, csv)
    assert "labels.csv" in str(e.value) and "ghost.png" in str(e.value)


def test_duplicate_ids_are_an_error(tmp_path):
    path, csv = write(tmp_path, [("a", "x"), ("b", "y")])
    with open(csv, "a") as f:
        f.write("a,y\n")
    with pytest.raises(DatasetLayoutError, match="duplicate") as e:
        make(path, csv)
    assert "labels.csv" in str(e.value)


def test_tfms_required(tmp_path):
    path, csv = write(tmp_path, [("a", "x"), ("b", "y")])
    with pytest.raises(AssertionError):
        ImageClassifierData.from_csv(path, "imgs", csv, suffix=".png")


def test_a_blank_label_in_single_label_data_is_an_error_naming_it(tmp_path):
    path, csv = write(tmp_path, [("a", "cat"), ("b", ""), ("c", "dog"), ("d", "dog")])
    with pytest.raises(ValueError, match=r"labels.csv: 1 row\(s\) have no label, e.g. \['b'\]"):
        make(path, csv, val_idxs=[0])
    # In multi-label data a row without tags is an image with none of them.
    path, csv = write(tmp_path / "multi", [("a", "sky water"), ("b", ""), ("c", "tree")])
    data = make(path, csv, val_idxs=[0])
    assert data.is_multi and data.trn_y.tolist() == [[0, 0, 0], [0, 1, 0]]
