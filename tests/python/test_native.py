"""The extension module: it loads, tensors and arrays cross the boundary, errors arrive as
the right Python exceptions with their message and path."""
import numpy as np
import pytest
import torch

import fastai
from fastai import _native
from fastai.exceptions import DatasetLayoutError, FastaiError, ImageDecodeError


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
