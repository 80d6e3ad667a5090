"""examples/lesson1.ipynb runs from top to bottom on a small slice of the dogscats fixture.

The slice is a temporary folder of symlinks (24 train + 12 valid images per class) at sz 64;
pretrained weights are a random-weights torchvision resnet34 checkpoint placed in a temporary
torch hub cache, so nothing is downloaded."""
import json
import os
import re
import sys

import pytest

from _shared import DOGSCATS, dogscats_slice, write_random_checkpoint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(ROOT, "examples")
NOTEBOOK = os.path.join(EXAMPLES, "lesson1.ipynb")
N_TRAIN, N_VALID = 24, 12


def test_notebook_matches_its_generator(tmp_path):
    """The committed notebook is what examples/make_lesson1_notebook.py writes."""
    pytest.importorskip("nbformat")
    sys.path.insert(0, EXAMPLES)
    try:
        import make_lesson1_notebook as gen
    finally:
        sys.path.remove(EXAMPLES)
    out = gen.main(str(tmp_path / "lesson1.ipynb"))
    with open(out) as a, open(NOTEBOOK) as b:
        assert json.load(a) == json.load(b), \
            "examples/lesson1.ipynb is stale: run python examples/make_lesson1_notebook.py"




def _kernel_spec(jupyter_dir, env):
    """A kernel spec running this interpreter, so the notebook sees this venv and `env`."""
    d = os.path.join(jupyter_dir, "kernels", "fastai-rs-test")
    os.makedirs(d)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "fastai-rs test", "language": "python", "env": env}
    with open(os.path.join(d, "kernel.json"), "w") as f:
        json.dump(spec, f)


@pytest.mark.skipif(not os.path.isdir(os.path.join(DOGSCATS, "train", "cats")),
                    reason=f"dogscats fixture images not found under {DOGSCATS}")
def test_lesson1_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("torchvision")

    data = tmp_path / "dogscats"
    dogscats_slice(str(data), N_TRAIN, N_VALID)
    write_random_checkpoint(str(tmp_path / "torch"), "resnet34", "resnet34-b627a593.pth")

    jupyter_dir = tmp_path / "jupyter"
    _kernel_spec(str(jupyter_dir), {
        "PYTHONPATH": os.path.join(ROOT, "python"),
        "LESSON1_PATH": str(data) + "/",
        "LESSON1_SZ": "64",
        "TORCH_HOME": str(tmp_path / "torch"),
        "FASTAI_WEIGHTS_URL": "http://127.0.0.1:9/",  # never download in a test
    })
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(jupyter_dir))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="fastai-rs-test", timeout=900,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []

    def text(cell):
        return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                       for o in cell.outputs)

    def cell(last_line):
        """The one code cell whose last line is `last_line`."""
        (c,) = [c for c in code if c.source.splitlines()[-1:] == [last_line]]
        return c

    first_fit = text(cell("learn.fit(0.01, 2)"))
    assert "epoch      trn_loss   val_loss   accuracy   " in first_fit
    assert re.search(r"[\r\n]    1      ", first_fit)  # a row for the second epoch
    assert text(cell("data.classes")).strip() == "['cats', 'dogs']"
    assert text(cell("log_preds.shape")).strip() == f"({2 * N_VALID}, 2)"
    acc = float(text(cell("accuracy_np(probs, y)")).strip())
    assert 0.0 <= acc <= 1.0
    # 1 + 2 + 4 = 7 epochs in the unfrozen fit: rows 0..6.
    unfrozen_fit = text(cell("learn.fit(lr, 3, cycle_len=1, cycle_mult=2)"))
    assert re.search(r"[\r\n]    6      ", unfrozen_fit)
    for name in ("224_lastlayer.h5", "224_all.h5"):
        assert (data / "models" / name).is_file()
    # Schedule plots are drawn exactly once (they also return their figure).
    for src in ("learn.sched.plot()", "learn.sched.plot_loss()"):
        images = [o for o in cell(src).outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, src
