"""`learn.save` (also through `cycle_save_name` / `best_save_name`) when the disk fills up or a
writer dies: a clear OSError naming the folder, nothing half-written left, the previous file
intact, and temporaries of dead writers swept by the next save."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fastai.learner
from fastai.conv_learner import ConvLearner, resnet18
from fastai.dataset import ImageClassifierData
from fastai.transforms import tfms_from_model


@pytest.fixture
def learn(hub, tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for c in ("cats", "dogs"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    data = ImageClassifierData.from_paths(str(tmp_path), bs=4, tfms=tfms_from_model(resnet18, 32), num_workers=1)
    return ConvLearner.pretrained(resnet18, data, precompute=True)


class _FillsUp:
    """A file whose disk is full after `room` bytes: write() stores what fits, then raises
    ENOSPC as the kernel would."""

    def __init__(self, path, mode, room):
        self._f = open(path, mode)
        self._room = room

    def write(self, b):
        b = bytes(b)
        if len(b) > self._room:
            self._f.write(b[:self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(b)
        return self._f.write(b)

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _full_disk(monkeypatch, room=100_000):
    """Makes every file `learn.save` opens fill up after `room` bytes (torch writes through it)."""
    monkeypatch.setattr(fastai.learner, "open", lambda path, mode="r": _FillsUp(path, mode, room), raising=False)


def _check_enospc(e, folder):
    assert type(e) is OSError and e.errno == errno.ENOSPC
    assert e.filename == folder and str(folder) in str(e) and "No space left" in str(e)
    assert "RuntimeError" not in str(e) and "unexpected pos" not in str(e)


def test_a_full_disk_is_enospc_naming_the_folder_and_keeps_the_previous_file(learn, monkeypatch):
    learn.save("m")
    path = learn.get_model_path("m")
    previous = open(path, "rb").read()
    learn.fit(1e-2, 1)  # other weights to save
    with monkeypatch.context() as m:
        _full_disk(m)
        with pytest.raises(OSError) as e:
            learn.save("m")
    _check_enospc(e.value, learn.models_path)
    assert sorted(os.listdir(learn.models_path)) == ["m.h5"]  # no temporary left
    assert open(path, "rb").read() == previous


@pytest.mark.parametrize("how", ["best_save_name", "cycle_save_name"])
def test_a_full_disk_during_fit_checkpoints_is_enospc(learn, monkeypatch, how):
    with monkeypatch.context() as m:
        _full_disk(m)
        with pytest.raises(OSError) as e:
            learn.fit(1e-2, 1, cycle_len=1, **{how: "ckpt"})
    _check_enospc(e.value, learn.models_path)
    assert os.listdir(learn.models_path) == []


def test_a_real_full_file_system(learn, tmp_path):
    """A 1 MB tmpfs (needs root with CAP_SYS_ADMIN; skipped elsewhere): the model does not fit."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        learn.models_path = str(mnt)
        with pytest.raises(OSError) as e:
            learn.save("m")
        _check_enospc(e.value, str(mnt))
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporaries_of_dead_writers_are_swept_live_ones_kept(learn):
    folder = learn.models_path
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        names = {
            "dead": f"old.h5.tmp{dead}",
            "live": f"old.h5.tmp{live.pid}",
            "ours": f"busy.h5.tmp{os.getpid()}",  # another thread of this process, mid-save
            "other": f"notes.tmp{dead}",            # not a model temporary: never touched
        }
        os.makedirs(os.path.join(folder, "sub"))
        names["sub"] = os.path.join("sub", f"x.h5.tmp{dead}")
        for n in names.values():
            with open(os.path.join(folder, n), "wb") as f:
                f.write(b"half a model")
        learn.save("m")
        left = set(os.listdir(folder))
        assert names["dead"] not in left
        assert {names["live"], names["ours"], names["other"], "m.h5"} <= left
        # Only the folder saved into is swept; a save into the sub-folder sweeps that one.
        assert os.listdir(os.path.join(folder, "sub")) == [os.path.basename(names["sub"])]
        learn.save("sub/m")
        assert os.listdir(os.path.join(folder, "sub")) == ["m.h5"]
    finally:
        live.kill()
        live.wait()
