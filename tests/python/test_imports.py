"""The lesson's seven star imports bring the names of spec 1.2 into a fresh namespace, with the
right kinds, and set numpy's print options (spec 1.3).

Each check runs in a fresh interpreter so that no other test's imports can help."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

PYTHON_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "python")

STAR_IMPORTS = """\
from fastai.imports import *
from fastai.transforms import *
from fastai.conv_learner import *
from fastai.model import *
from fastai.dataset import *
from fastai.sgdr import *
from fastai.plots import *
"""

# Run in the child: exec the lesson's import cell in an empty namespace, then describe what
# each name is, as JSON, so the parent can assert with readable failures.
PROBE = textwrap.dedent('''
    import json, sys, types
    ns = {}
    exec(compile(STAR, "<lesson1 cell 2>", "exec"), ns)
    import numpy, matplotlib.pyplot, os, shutil, PIL, PIL.Image, torch

    def kind(name):
        if name not in ns:
            return "MISSING"
        v = ns[name]
        if isinstance(v, types.ModuleType):
            return "module:" + v.__name__
        if isinstance(v, list):
            return "list"
        if isinstance(v, type):
            return "class"
        return "callable" if callable(v) else type(v).__name__

    names = ["np", "plt", "os", "shutil", "PIL", "torch", "resnet18", "resnet34", "resnet50",
             "resnet101", "resnet152", "tfms_from_model", "tfms_from_stats", "ImageClassifierData",
             "ConvLearner", "accuracy", "accuracy_np", "plots", "plot_confusion_matrix",
             "transforms_basic", "transforms_side_on", "transforms_top_down", "CropType",
             "imagenet_stats", "children"]
    out = {"kinds": {n: kind(n) for n in names}}
    out["same_modules"] = {
        "np": ns.get("np") is numpy, "plt": ns.get("plt") is matplotlib.pyplot,
        "os": ns.get("os") is os, "shutil": ns.get("shutil") is shutil,
        "PIL": ns.get("PIL") is PIL, "torch": ns.get("torch") is torch,
        "PIL.Image": getattr(ns.get("PIL"), "Image", None) is PIL.Image}
    out["arch_names"] = {n: getattr(ns.get(n), "name", None)
                         for n in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]}
    ct = ns.get("CropType")
    out["crop_type"] = {m: int(getattr(ct, m)) if hasattr(ct, m) else None
                        for m in ["RANDOM", "CENTER", "NO", "GOOGLENET"]}
    st = ns.get("imagenet_stats")
    out["imagenet_stats"] = [[float(x) for x in part] for part in st] if st is not None else None
    out["members"] = {
        "ImageClassifierData.from_paths": callable(getattr(ns.get("ImageClassifierData"),
                                                           "from_paths", None)),
        "ConvLearner.pretrained": callable(getattr(ns.get("ConvLearner"), "pretrained", None))}
    out["len_side_on"] = len(ns.get("transforms_side_on") or [])
    out["len_basic"] = len(ns.get("transforms_basic") or [])
    opts = numpy.get_printoptions()
    out["printoptions"] = [opts["precision"], opts["linewidth"], bool(opts["suppress"])]
    print(json.dumps(out))
''')


def _run(code, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(PYTHON_DIR), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def probe():
    out = _run(f"STAR = {STAR_IMPORTS!r}\n" + PROBE)
    return json.loads(out.strip().splitlines()[-1])


def test_modules_are_the_real_ones(probe):
    assert probe["same_modules"] == {k: True for k in
                                     ["np", "plt", "os", "shutil", "PIL", "torch", "PIL.Image"]}


@pytest.mark.parametrize("name", ["tfms_from_model", "tfms_from_stats", "ImageClassifierData",
                                  "ConvLearner", "accuracy", "accuracy_np", "plots",
                                  "plot_confusion_matrix", "children"])
def test_callables(probe, name):
    assert probe["kinds"][name] in ("callable", "class")


@pytest.mark.parametrize("name", ["transforms_basic", "transforms_side_on",
                                  "transforms_top_down"])
def test_preset_lists(probe, name):
    assert probe["kinds"][name] == "list"


def test_preset_contents(probe):
    # transforms_basic = rotate + lighting; side_on adds a flip (spec 3.6).
    assert probe["len_basic"] == 2 and probe["len_side_on"] == 3


def test_architecture_handles(probe):
    assert probe["arch_names"] == {n: n for n in
                                   ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]}


def test_class_members(probe):
    assert probe["members"] == {"ImageClassifierData.from_paths": True,
                                "ConvLearner.pretrained": True}


def test_crop_type_and_stats(probe):
    assert probe["crop_type"] == {"RANDOM": 1, "CENTER": 2, "NO": 3, "GOOGLENET": 4}
    mean, std = probe["imagenet_stats"]
    assert mean == pytest.approx([0.485, 0.456, 0.406], abs=1e-6)
    assert std == pytest.approx([0.229, 0.224, 0.225], abs=1e-6)


def test_numpy_print_options(probe):
    assert probe["printoptions"] == [5, 110, True]


def test_conv_learner_imports_nothing_heavy():
    """What keeps `import fastai.conv_learner` well under 1 s on top of `import torch`:
    pyplot, scikit-learn, scipy and pandas are only imported when a plot or metric needs
    them (the timing itself is in test_import_time, a benchmark)."""
    code = ("import sys, torch, fastai.conv_learner; "
            "print([m for m in ('matplotlib.pyplot', 'sklearn', 'scipy', 'pandas') if m in sys.modules])")
    assert _run(code).strip().splitlines()[-1] == "[]"


@pytest.mark.benchmark
def test_import_time():
    """`import fastai.conv_learner` adds under 1 s to `import torch` (best of three fresh
    interpreters; run with `-m benchmark` on an idle machine)."""
    code = ("import time; import torch; t = time.perf_counter(); import fastai.conv_learner; "
            "print(time.perf_counter() - t)")
    extra = min(float(_run(code).strip().splitlines()[-1]) for _ in range(3))
    print(f"import fastai.conv_learner adds {extra:.3f} s after import torch")
    assert extra < 1.0, f"import fastai.conv_learner adds {extra:.2f} s after import torch"


# What one star import of each module brings, by fastai 0.7's import graph (spec 1.1): every
# module re-exported `fastai.imports` (np, plt, os, PIL, glob, ...) and the torch names, and
# `conv_learner` everything of the learner's (data, transforms, callbacks, metrics). Lesson 2
# and later notebooks start with `from fastai.conv_learner import *` alone.
ONE_STAR = {
    "transforms": ["np", "os", "PIL", "plt", "torch", "nn", "children", "tfms_from_model"],
    "dataset": ["np", "os", "glob", "torch", "tfms_from_model", "transforms_side_on",
                "ImageClassifierData", "get_cv_idxs", "open_image"],
    "model": ["np", "torch", "nn", "to_np"],
    "sgdr": ["np", "plt", "torch", "Callback", "CosAnneal"],
    "plots": ["np", "plt", "os", "torch", "plot_confusion_matrix"],
    "metrics": ["np", "torch", "accuracy_np"],
    "conv_learner": ["np", "plt", "os", "PIL", "glob", "partial", "Path", "torch", "nn", "optim",
                     "F", "resnet34", "ImageClassifierData", "tfms_from_model",
                     "transforms_side_on", "transforms_top_down", "get_cv_idxs", "open_image",
                     "ConvLearner", "accuracy_np", "accuracy", "Callback", "CosAnneal",
                     "children", "to_np", "metrics", "pd"],
}


@pytest.mark.parametrize("module", sorted(ONE_STAR))
def test_one_star_import_brings_what_the_original_did(module):
    code = textwrap.dedent(f'''
        import json
        ns = {{}}
        exec("from fastai.{module} import *", ns)
        import numpy, matplotlib.pyplot, torch
        print(json.dumps({{"missing": [n for n in {ONE_STAR[module]!r} if n not in ns],
                          "np": ns.get("np") is numpy, "torch": ns.get("torch") is torch,
                          "plt": ns.get("plt", matplotlib.pyplot) is matplotlib.pyplot}}))
    ''')
    out = json.loads(_run(code).strip().splitlines()[-1])
    assert out == {"missing": [], "np": True, "torch": True, "plt": True}


def test_lesson2_names_work_after_conv_learner_alone(tmp_path):
    """`pd.read_csv` and sklearn's `metrics.log_loss`, as lesson 2 calls them, after only
    `from fastai.conv_learner import *`; the values against pandas and sklearn imported
    directly."""
    csv = tmp_path / "labels.csv"
    csv.write_text("id,breed\na,husky\nb,pug\n")
    code = textwrap.dedent(f'''
        import json
        ns = {{}}
        exec("from fastai.conv_learner import *", ns)
        import pandas, sklearn.metrics
        y, probs = [0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]
        df = ns["pd"].read_csv({str(csv)!r})
        print(json.dumps({{
            "log_loss": [ns["metrics"].log_loss(y, probs), sklearn.metrics.log_loss(y, probs)],
            "frame": [type(df) is pandas.DataFrame, list(df["breed"])],
            "same_fn": ns["metrics"].confusion_matrix is sklearn.metrics.confusion_matrix}}))
    ''')
    out = json.loads(_run(code).strip().splitlines()[-1])
    assert out["log_loss"][0] == out["log_loss"][1]
    assert out["frame"] == [True, ["husky", "pug"]]
    assert out["same_fn"] is True


# Names real 0.7 code uses after `from fastai.conv_learner import *` (or `fastai.dataset`)
# without importing them itself.
BEYOND_LESSON1 = {
    "modules": ["cv2", "csv", "collections", "json", "math", "random", "threading", "time", "sys",
                "copy", "warnings", "shutil", "PIL", "Image", "pd", "F", "nn", "optim",
                "datetime"],
    "callables": ["Variable", "Dataset", "kaiming_normal", "kaiming_uniform", "glob", "Path",
                  "FileLink", "tqdm", "trange", "tnrange", "clear_tqdm",
                  "split_by_idx", "read_dir", "read_dirs", "parse_csv_labels", "csv_source",
                  "get_cv_idxs", "open_image", "to_np",
                  "V", "VV", "T", "A", "to_gpu", "children", "split_by_idxs", "set_trainable",
                  "apply_leaf", "num_cpus", "BasicModel", "SingleModel", "SimpleNet", "one_hot",
                  "partition", "noop", "save", "load", "chunk_iter", "sum_geom", "SGD_Momentum",
                  "save_model", "load_model"],
}
# The model, layer and metric names come with conv_learner only (0.7's dataset module did not
# import them either).
BEYOND_LESSON1_CONV = {"modules": [], "callables": [
    "cut_model", "num_features", "AdaptiveConcatPool2d", "Flatten", "predict_batch",
    "accuracy_thresh"]}


@pytest.mark.parametrize("module", ["conv_learner", "dataset"])
def test_names_real_code_uses_without_importing_them(module):
    code = textwrap.dedent(f'''
        import json, types, csv, copy, torch, torch.nn.init
        ns = {{}}
        exec("from fastai.{module} import *", ns)
        names = {BEYOND_LESSON1!r}
        if {module!r} == "conv_learner":
            for k, v in {BEYOND_LESSON1_CONV!r}.items():
                names[k] += v
        print(json.dumps({{
            "missing": [n for v in names.values() for n in v if n not in ns],
            "not_callable": [n for n in names["callables"] if n in ns and not callable(ns[n])],
            "same": [ns.get("csv") is csv, ns.get("copy") is copy,
                     ns.get("Dataset") is torch.utils.data.Dataset,
                     ns.get("kaiming_normal") is torch.nn.init.kaiming_normal_],
            "USE_GPU": ns.get("USE_GPU")}}))
    ''')
    out = json.loads(_run(code).strip().splitlines()[-1])
    assert out == {"missing": [], "not_callable": [], "same": [True] * 4, "USE_GPU": True}


def test_explicit_imports_from_conv_learner():
    code = ("from fastai.conv_learner import (ConvLearner, tfms_from_model, transforms_side_on, "
            "ImageClassifierData, get_cv_idxs, open_image, V, to_np, split_by_idxs, cv2, tqdm)\n"
            "from fastai.io import get_data\nprint('ok')")
    assert _run(code).strip().splitlines()[-1] == "ok"


def test_star_import_loads_no_optional_package():
    """cv2, tqdm, IPython, scipy, seaborn and pandas stay unimported by the star import itself
    (they load when used), which keeps it fast."""
    code = ("import sys; from fastai.conv_learner import *; "
            "print([m for m in ('cv2', 'tqdm', 'IPython', 'scipy', 'seaborn', 'pandas', 'sklearn') "
            "if m in sys.modules])")
    assert _run(code).strip().splitlines()[-1] == "[]"


def test_cv2_is_opencv_when_installed():
    cv2 = pytest.importorskip("cv2")
    code = textwrap.dedent('''
        ns = {}
        exec("from fastai.dataset import *", ns)
        import cv2
        print(ns["cv2"].imread is cv2.imread, ns["cv2"].BORDER_REFLECT == cv2.BORDER_REFLECT)
    ''')
    assert _run(code).strip().splitlines()[-1] == "True True"
    assert cv2.BORDER_REFLECT == 2


def test_cv2_without_opencv_has_the_constants_and_names_the_package():
    code = textwrap.dedent('''
        import sys, json
        sys.modules["cv2"] = None  # as if OpenCV were not installed
        ns = {}
        exec("from fastai.conv_learner import *", ns)
        cv2 = ns["cv2"]
        out = {"consts": [cv2.BORDER_CONSTANT, cv2.BORDER_REFLECT, cv2.BORDER_REFLECT_101,
                          cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.IMREAD_GRAYSCALE,
                          cv2.COLOR_BGR2RGB],
               "has_dunder": hasattr(cv2, "__wrapped__")}
        try:
            cv2.imread("x.png", cv2.IMREAD_GRAYSCALE)
        except ImportError as e:
            out["error"] = str(e)
        print(json.dumps(out))
    ''')
    out = json.loads(_run(code).strip().splitlines()[-1])
    # OpenCV's own values (its documentation's enumerations).
    assert out["consts"] == [0, 2, 4, 3, 0, 0, 4] and out["has_dunder"] is False
    assert "cv2.imread" in out["error"] and "opencv-python" in out["error"]


def test_tqdm_and_trange_without_the_tqdm_package():
    """With tqdm missing, the star import's `tqdm`/`trange` still iterate, and draw a bar
    in a terminal (here a stream that says it is one)."""
    code = textwrap.dedent('''
        import sys, io, json
        sys.modules["tqdm"] = None
        ns = {}
        exec("from fastai.conv_learner import *", ns)
        class Tty(io.StringIO):
            def isatty(self):
                return True
        out = Tty()
        items = [x * 2 for x in ns["tqdm"](range(4), desc="work", file=out)]
        with ns["tqdm"](total=10, file=out, unit="B") as t:
            t.update(4); t.set_postfix(loss=0.5); t.update(6)
        print(json.dumps({"items": items, "trange": list(ns["trange"](2, 5)),
                          "len": len(ns["tqdm"](range(7))), "text": out.getvalue()}))
    ''')
    out = json.loads(_run(code).strip().splitlines()[-1])
    assert out["items"] == [0, 2, 4, 6] and out["trange"] == [2, 3, 4] and out["len"] == 7
    assert "work: 100%" in out["text"] and "4/4" in out["text"]
    assert "10/10" in out["text"] and "loss=0.5" in out["text"]


def test_tqdm_is_the_packages_when_installed(tmp_path):
    """With a `tqdm` package importable, the star import hands out its objects (a stand-in
    package here: tqdm is not a dependency)."""
    (tmp_path / "tqdm.py").write_text("class tqdm:\n    _instances = set()\n"
                                      "def trange(*a, **k):\n    return 'trange'\n")
    code = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import tqdm
        ns = {{}}
        exec("from fastai.conv_learner import *", ns)
        print(ns["tqdm"] is tqdm.tqdm, ns["trange"] is tqdm.trange, ns["tq"] is tqdm,
              ns["tnrange"] is tqdm.trange)
    ''')
    assert _run(code).strip().splitlines()[-1] == "True True True True"


def test_filelink_is_ipythons():
    pytest.importorskip("IPython")
    code = ("ns = {}\nexec('from fastai.conv_learner import *', ns)\n"
            "from IPython.display import FileLink\n"
            "link = ns['FileLink']('sub.csv')\nprint(type(link) is FileLink, link.path)")
    assert _run(code).strip().splitlines()[-1] == "True sub.csv"


# ---- fastai.io.get_data --------------------------------------------------------------------

def test_get_data_downloads_a_file_url_once(tmp_path):
    from fastai.io import get_data
    src = tmp_path / "src.bin"
    payload = os.urandom(200_000)
    src.write_bytes(payload)
    dest = tmp_path / "new" / "folder" / "data.bin"
    assert get_data(src.as_uri(), str(dest)) == str(dest)
    assert dest.read_bytes() == payload
    assert os.listdir(dest.parent) == ["data.bin"]  # no temporary file left
    src.write_bytes(b"changed")
    get_data(src.as_uri(), str(dest))  # the file exists: nothing is fetched
    assert dest.read_bytes() == payload


def test_get_data_from_a_local_http_server(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading
    from fastai.io import get_data
    (tmp_path / "srv").mkdir()
    payload = b"fastai" * 50_000
    (tmp_path / "srv" / "big.tgz").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "srv"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.chdir(tmp_path)
        get_data(url + "big.tgz", "big.tgz")  # a bare file name: 0.7 failed on makedirs('')
        assert (tmp_path / "big.tgz").read_bytes() == payload
        from fastai.io import DownloadError
        with pytest.raises(DownloadError, match="missing.tgz") as e:
            get_data(url + "missing.tgz", str(tmp_path / "out" / "missing.tgz"))
        assert isinstance(e.value, OSError)
        assert os.listdir(tmp_path / "out") == []  # nothing partial left behind
    finally:
        server.shutdown()
        server.server_close()
