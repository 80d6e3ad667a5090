"""The extension module: it loads, tensors and arrays cross the boundary, errors arrive as
the right Python exceptions with their message and path."""
import os

import numpy as np
import pytest
import torch

import fastai
from fastai import _native
from fastai.exceptions import DatasetLayoutError, FastaiError, ImageDecodeError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_version_and_profile():
    assert fastai.__version__ == _native.__version__
    assert _native.build_profile in ("release", "debug")


def test_tensor_roundtrip_is_a_copy_with_equal_values():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    out = _native._roundtrip_tensor(t)
    assert isinstance(out, torch.Tensor) and torch.equal(out, t)
    out[0, 0] = 99  # a real copy made in libtorch, not the same storage
    assert t[0, 0] == 0


def test_numpy_roundtrip_through_rust():
    a = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    out = _native._roundtrip_array(a)
    assert out.dtype == np.float32 and out.shape == a.shape
    np.testing.assert_array_equal(out, a * 2)


def test_decode_error_is_an_oserror_naming_the_file():
    with pytest.raises(ImageDecodeError) as e:
        _native._raise_error("decode", "/data/train/cats/cat.1.jpg")
    assert isinstance(e.value, OSError) and isinstance(e.value, FastaiError)
    assert "/data/train/cats/cat.1.jpg" in str(e.value) and "cannot decode" in str(e.value)


def test_io_error_maps_to_builtin_with_filename():
    with pytest.raises(FileNotFoundError) as e:
        _native._raise_error("io", "/nowhere/x.jpg")
    assert e.value.filename == "/nowhere/x.jpg" and e.value.errno == 2


def test_layout_and_argument_errors():
    with pytest.raises(DatasetLayoutError, match="/data/valid: folder is empty"):
        _native._raise_error("layout", "/data/valid")
    with pytest.raises(ValueError, match="bad argument"):
        _native._raise_error("argument", "x")


def test_internal_failures_have_their_own_class():
    from fastai.exceptions import InternalError
    with pytest.raises(InternalError, match="internal error: something broke: x") as e:
        _native._raise_error("internal", "x")
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, FastaiError)
    assert not isinstance(e.value, ValueError)


def test_a_full_disk_is_an_oserror_with_enospc():
    with pytest.raises(OSError) as e:
        _native._raise_error("storage_full", "/data/tmp/x.bin")
    assert type(e.value) is OSError and e.value.errno == 28 and e.value.filename == "/data/tmp/x.bin"


def test_every_exception_class_rust_raises_exists_in_python():
    import re
    import fastai.exceptions
    src = open(os.path.join(ROOT, "src", "py", "errors.rs")).read()
    names = set(re.findall(r'fastai_exception\("(\w+)"', src))
    assert names >= {"ImageDecodeError", "DatasetLayoutError", "WeightsError", "InternalError"}
    for name in names:
        cls = getattr(fastai.exceptions, name)
        assert issubclass(cls, FastaiError) and name in fastai.exceptions.__all__


def test_the_gil_is_released_in_one_place_only():
    """Every slow call goes through `run_detached` (src/py/mod.rs): no other place may call
    `allow_threads`, so the rule (and its error conversion) cannot be bypassed."""
    hits = []
    for d, _, files in os.walk(os.path.join(ROOT, "src")):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                for i, line in enumerate(open(p, encoding="utf-8"), 1):
                    if "allow_threads" in line or "py.detach" in line:
                        hits.append((os.path.relpath(p, ROOT), i))
    assert len(hits) == 1 and hits[0][0] == os.path.join("src", "py", "mod.rs"), hits
    src = open(os.path.join(ROOT, "src", "py", "mod.rs")).read()
    body = src[src.index("pub fn run_detached"):]
    assert "allow_threads" in body[:body.index("\n}\n")]


# The crate's layers, each allowed to use only those before it (src/lib.rs's table).
_LAYERS = ["util", "image", "transforms", "data", "models", "cache", "train", "py"]


def test_the_crates_layers_depend_one_way():
    """A module of src/<layer>/ names no layer after its own (`crate::train` in src/data/, say):
    the dependencies point one way, so each layer can be read and tested without the later
    ones. `models` and `cache` are siblings: neither may use the other."""
    import re
    uses = re.compile(r"crate::(" + "|".join(_LAYERS) + r")\b")
    wrong = []
    for rank, layer in enumerate(_LAYERS):
        allowed = set(_LAYERS[:rank + 1])
        if layer == "cache":
            allowed.discard("models")
        for d, _, files in os.walk(os.path.join(ROOT, "src", layer)):
            for f in files:
                if not f.endswith(".rs"):
                    continue
                p = os.path.join(d, f)
                for i, line in enumerate(open(p, encoding="utf-8"), 1):
                    for used in uses.findall(line):
                        if used not in allowed:
                            wrong.append(f"{os.path.relpath(p, ROOT)}:{i} uses crate::{used}")
    assert not wrong, wrong


class _Boom(Exception):
    pass


def test_a_callbacks_exception_comes_back_unchanged():
    learn = _native.Learner("resnet18", 2)
    x, y = torch.randn(8, 1024), torch.randint(0, 2, (8,))
    raised = _Boom("from the callback")

    def on_batch(i, loss):
        raise raised
    learn.begin_fit(lrs=[1e-2], wds=[0.0], schedule=_native.Schedule.constant(), precompute=True)
    with pytest.raises(_Boom) as e:
        learn.train_epoch_tensors(x, y, 4, 0, 0, on_batch)
    assert e.value is raised
    learn.end_fit()


def test_a_custom_heads_exception_comes_back_unchanged():
    raised = _Boom("from the head")

    def forward(x, train, bn_train):
        raise raised
    learn = _native.Learner("resnet18", 2, custom_head=(forward, "Boom", []))
    with pytest.raises(_Boom) as e:
        learn.predict_array(torch.randn(2, 3, 32, 32))
    assert e.value is raised
    # The next call works again (nothing of the failed one is left behind).
    with pytest.raises(_Boom) as e2:
        learn.predict_array(torch.randn(2, 3, 32, 32))
    assert e2.value is raised and e2.value.__traceback__ is not None


def test_a_busy_learner_is_one_runtime_error_on_every_path():
    """Calling the learner from a callback of its own running fit: the same exception type
    whether the call releases the GIL (state_dict) or not (a quick read)."""
    learn = _native.Learner("resnet18", 2)
    x, y = torch.randn(8, 1024), torch.randint(0, 2, (8,))
    for call in (lambda: learn.state_dict(), lambda: learn.nf, lambda: learn.snapshot()):
        def on_batch(i, loss, call=call):
            call()
        learn.begin_fit(lrs=[1e-2], wds=[0.0], schedule=_native.Schedule.constant(), precompute=True)
        with pytest.raises(RuntimeError, match="the learner is busy") as e:
            learn.train_epoch_tensors(x, y, 4, 0, 0, on_batch)
        assert not isinstance(e.value, ValueError)
        learn.end_fit()
    with pytest.raises(RuntimeError, match="the learner is busy"):
        _native._raise_error("busy", "")


def test_each_python_spelling_is_parsed_at_the_boundary():
    """Enum spellings are parsed where the arguments are read: a wrong one is a ValueError
    saying what to use, before anything is built."""
    with pytest.raises(ValueError, match='unknown output "softmax".*\'log_softmax\''):
        _native.Learner("resnet18", 2, output="softmax")
    with pytest.raises(ValueError, match='unknown device "gpu".*\'cuda:N\''):
        _native.Learner("resnet18", 2, device="gpu")
    pipe = dict(sz=8, crop="center", mean=[0.0] * 3, std=[1.0] * 3)
    assert _native.Pipeline(**pipe).sz == 8
    with pytest.raises(ValueError, match='unknown crop type "middle"'):
        _native.Pipeline(**{**pipe, "crop": "middle"})
    with pytest.raises(ValueError, match='unknown border mode "wrap"'):
        _native.Pipeline(**pipe, pad=2, pad_mode="wrap")
    with pytest.raises(ValueError, match='unknown augmentation "spin"'):
        _native.Pipeline(**pipe, augs=[{"kind": "spin"}])
    with pytest.raises(ValueError, match='transform spec lacks "p"'):
        _native.Pipeline(**pipe, augs=[{"kind": "flip"}])
    # The ranges are checked by the core's Pipeline::new, for Rust callers too.
    with pytest.raises(ValueError, match="std must be finite and non-zero"):
        _native.Pipeline(**{**pipe, "std": [1.0, 0.0, 1.0]})
    with pytest.raises(ValueError, match='unknown target kind "labels"'):
        _native.Dataset.from_files("/nowhere", ["a.jpg"], "labels", None)
    learn = _native.Learner("resnet18", 2)
    with pytest.raises(ValueError, match="2 learning rates for a model of 3 layer groups"):
        learn.begin_fit(lrs=[1e-2, 1e-3], wds=[0.0], schedule=_native.Schedule.constant(), precompute=True)
    with pytest.raises(ValueError, match='unknown precision "float16"'):
        learn.precompute([], "/nowhere", "/nowhere", "float16")
    with pytest.raises(ValueError, match='unknown split "train"'):
        learn.precompute([("train", None)], "/nowhere", "/nowhere")


def test_many_arguments_are_keyword_only():
    """Constructors and calls with many arguments take them by name: a positional call of
    the old shape is a TypeError, not a silent reading of the wrong argument."""
    with pytest.raises(TypeError):
        _native.Learner("resnet18", 2, "log_softmax")
    learn = _native.Learner("resnet18", 2)
    with pytest.raises(TypeError):
        learn.begin_fit([1e-2], [0.0], _native.Schedule.constant(), True)
    with pytest.raises(TypeError):
        _native.Schedule.clr(4, 10.0, 3.0)
    with pytest.raises(TypeError):  # a schedule is a Schedule, not a tuple
        learn.begin_fit(lrs=[1e-2], wds=[0.0], schedule=("constant",), precompute=True)
    with pytest.raises(TypeError):
        _native.Pipeline(8, "center", [0.0] * 3, [1.0] * 3)
