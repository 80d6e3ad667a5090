"""precompute=True's cache, from the user's side: which items were left out is stored with the
activations (a body whose outputs are NaN is not a skipped image), and temporaries left by
writers that died are swept by the next precompute."""
import os
import subprocess
import sys
import warnings

import numpy as np
import torch

from _fixtures import smooth_image
from fastai.conv_learner import ConvLearner, resnet18
from fastai.dataset import ImageClassifierData
from fastai.transforms import tfms_from_model

SZ = 32


def arrays(n, seed):
    imgs = np.stack([smooth_image(30, 40, seed=seed + i) for i in range(n)])
    return imgs, np.arange(n) % 2


def data_of(path):
    return ImageClassifierData.from_arrays(str(path), arrays(8, 1), arrays(4, 60), bs=4,
                                           tfms=tfms_from_model(resnet18, SZ))


def nan_body(learn):
    """Makes the body output NaN: its first weight becomes NaN."""
    (key, t), *rest = learn._native.state_dict()
    learn._native.load_state_dict([(key, torch.full_like(t, float("nan")))] + rest, "test")


def test_a_body_that_outputs_nan_is_not_a_skipped_image(tmp_path, hub):
    data = data_of(tmp_path)
    for attempt in ("computed", "read from the cache"):
        learn = ConvLearner.pretrained(resnet18, data)
        nan_body(learn)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no "skipped ... undecodable" warning
            learn.precompute = True
        assert torch.isnan(learn._acts["trn"]).all(), attempt
        # Every item is kept: its rows are what the body gave, NaN or not.
        assert learn._acts["trn_ok"] is None and learn._acts["val_ok"] is None, attempt
        x, y = learn._act_rows("trn")
        assert len(x) == 8 and y.tolist() == (np.arange(8) % 2).tolist(), attempt
        assert np.isnan(learn.predict()).all() and learn.predict().shape == (4, 2), attempt


def test_a_dead_writers_temporary_is_swept_by_the_next_precompute(tmp_path, hub):
    data = data_of(tmp_path)
    tmp = tmp_path / "tmp"
    os.makedirs(tmp)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        left = tmp / f"x_act_resnet18_0_{SZ}_arrays.bin.tmp{dead.pid}-0"
        older = tmp / f"x_act_val_resnet18_0_{SZ}_arrays.tmp{dead.pid}"  # an older version's name
        writing = tmp / f"x_act_resnet18_0_{SZ}_arrays.bin.tmp{live.pid}-0"
        other = tmp / f"notes.txt.tmp{dead.pid}"  # not a cache file
        for f in (left, older, writing, other):
            f.write_bytes(b"half written")
        ConvLearner.pretrained(resnet18, data, precompute=True)
        assert not left.exists() and not older.exists()
        assert writing.read_bytes() == b"half written" and other.exists()
        assert sorted(f for f in os.listdir(tmp) if f.endswith(".bin")) == [
            f"x_act_resnet18_0_{SZ}_arrays.bin", f"x_act_val_resnet18_0_{SZ}_arrays.bin"]
    finally:
        live.kill()
        live.wait()
