"""Shared pytest setup for the Python suite. Keep it minimal: put fixtures in the test files."""
import os

# Tests draw figures but never show them: the non-interactive backend, set before any test
# module imports matplotlib.
os.environ["MPLBACKEND"] = "Agg"

# The suite compares against float32 references at tight tolerances, so its learners run in
# float32 even on CPUs where bfloat16 autocast is the default (the learners read this at
# construction); test_default_precision.py unsets it to test that default.
os.environ["FASTAI_RS_PRECISION"] = "float32"


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """TORCH_HOME pointing at a temporary hub cache holding a random-weights resnet18."""
    from _shared import write_random_checkpoint
    home = tmp_path_factory.mktemp("torch_home")
    write_random_checkpoint(str(home), "resnet18", "resnet18-f37072fd.pth")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old
