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
