"""`from fastai.imports import *`: the standard-library and scientific names lesson 1 expects.

As in fastai 0.7 this module does not import torch (that arrives with `fastai.torch_imports`),
and it sets numpy's print options, which is why arrays print as in the lesson.
Heavy packages of the original load lazily, on first use (`pd`, `scipy`, sklearn's `metrics`,
`sns`, `IPython`, `cv2`), so that a star import stays fast; a missing one says what to install
when it is used. bcolz and graphviz are not offered (nothing written for 0.7's vision part
needs them). `tqdm`/`trange` are the tqdm package's when it is installed, else this package's
own bars behind the same calls; `cv2` is OpenCV when installed, else its constants (what 0.7
code passes to the transforms, `cv2.BORDER_REFLECT`) with a clear error on any function.
"""
import collections
import copy
import csv
import datetime
import itertools
import json
import math
import os
import pickle
import random
import re
import shutil
import string
import sys
import threading
import time
import warnings
from abc import abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from glob import glob, iglob
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageEnhance, ImageOps

from ._exports import LazyModule

np.set_printoptions(precision=5, linewidth=110, suppress=True)


def _load_matplotlib():
    import matplotlib
    import matplotlib.animation
    import matplotlib.pyplot

    matplotlib.rc("animation", html="html5")
    return dict(matplotlib=matplotlib, plt=matplotlib.pyplot, rcParams=matplotlib.rcParams,
                animation=matplotlib.animation)


def _load_tqdm():
    try:
        import tqdm as tq
    except ImportError:
        from . import _tqdm as tq
        return dict(tq=tq, tqdm=tq.tqdm, trange=tq.trange, tqdm_notebook=tq.tqdm_notebook,
                    tnrange=tq.tnrange, clear_tqdm=tq.clear_tqdm)

    def clear_tqdm():
        """Closes every tqdm bar still open."""
        for bar in list(getattr(tq.tqdm, "_instances", ())):
            bar.close()

    # As 0.7 outside a notebook: the "notebook" bars are the text ones.
    return dict(tq=tq, tqdm=tq.tqdm, trange=tq.trange, tqdm_notebook=tq.tqdm,
                tnrange=tq.trange, clear_tqdm=clear_tqdm)


# Names whose module is imported when a star import or user code first asks for them, not when
# another fastai module imports this one (`import fastai.conv_learner` stays light, while
# `from fastai.imports import *` gives the real `plt` as before).
_ON_FIRST_USE = {
    **dict.fromkeys(("matplotlib", "plt", "rcParams", "animation"), _load_matplotlib),
    **dict.fromkeys(("tq", "tqdm", "trange", "tqdm_notebook", "tnrange", "clear_tqdm"),
                    _load_tqdm),
}


def __getattr__(name):
    load = _ON_FIRST_USE.get(name)
    if load is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Runs once per group: afterwards the names are found in the module itself.
    globals().update(load())
    return globals()[name]


def FileLink(path, *args, **kwargs):
    """IPython's `FileLink`: a link to `path` that a notebook displays (to download a
    submission file). IPython is imported on the first call."""
    try:
        from IPython.display import FileLink as file_link
    except ImportError as e:
        raise ImportError("FileLink is IPython's: pip install ipython") from e
    return file_link(path, *args, **kwargs)


def in_notebook():
    """True inside a Jupyter kernel (as fastai 0.7's helper of the same name)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


in_ipynb = in_notebook

# fastai 0.7 imported pandas and sklearn's metrics here (lesson 2 reads its labels with
# `pd.read_csv` and scores with `metrics.log_loss`); they load on first use.
pd = LazyModule("pandas", "pandas")
metrics = LazyModule("sklearn.metrics", "scikit-learn")
ensemble = LazyModule("sklearn.ensemble", "scikit-learn")
preprocessing = LazyModule("sklearn.preprocessing", "scikit-learn")
sklearn = LazyModule("sklearn", "scikit-learn")
scipy = LazyModule("scipy", "scipy")
sns = LazyModule("seaborn", "seaborn")
IPython = LazyModule("IPython", "ipython")
pdb = LazyModule("pdb", "pdb")


class _OpenCV(LazyModule):
    """`cv2`: OpenCV itself when it is installed (imported on first use; fastai-rs never
    calls it). Without it, the constants 0.7 code passes around (border modes,
    interpolations, imread flags) still work, and any function says what to install."""

    _CONSTANTS = {
        "BORDER_CONSTANT": 0, "BORDER_REPLICATE": 1, "BORDER_REFLECT": 2, "BORDER_WRAP": 3,
        "BORDER_REFLECT_101": 4, "BORDER_REFLECT101": 4, "BORDER_DEFAULT": 4,
        "INTER_NEAREST": 0, "INTER_LINEAR": 1, "INTER_CUBIC": 2, "INTER_AREA": 3,
        "INTER_LANCZOS4": 4, "WARP_FILL_OUTLIERS": 8, "IMREAD_UNCHANGED": -1,
        "IMREAD_GRAYSCALE": 0, "IMREAD_COLOR": 1, "IMREAD_ANYDEPTH": 2, "IMREAD_ANYCOLOR": 4,
        "COLOR_BGR2RGB": 4, "COLOR_RGB2BGR": 4, "COLOR_BGR2GRAY": 6, "COLOR_RGB2GRAY": 7,
        "COLOR_GRAY2BGR": 8, "COLOR_GRAY2RGB": 8,
    }

    def __getattr__(self, attr):
        if self.__dict__.get("_missing") is None:
            try:
                return getattr(self._load(), attr)
            except ImportError:
                self.__dict__["_missing"] = True
        if attr in self._CONSTANTS:
            return self._CONSTANTS[attr]
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(f"cv2.{attr} needs OpenCV, which is not installed: "
                          "pip install opencv-python (fastai-rs itself does not use it)")

    def __dir__(self):
        try:
            return dir(self._load())
        except ImportError:
            return sorted(self._CONSTANTS)


cv2 = _OpenCV("cv2", "opencv-python")

__all__ = [
    "collections", "copy", "csv", "datetime", "itertools", "json", "math", "os", "pickle",
    "random", "re", "shutil", "string", "sys", "threading", "time", "warnings", "abstractmethod",
    "Counter", "OrderedDict", "Iterable", "ProcessPoolExecutor", "ThreadPoolExecutor", "partial",
    "glob", "iglob", "chain", "attrgetter", "itemgetter", "Path", "matplotlib", "plt", "np",
    "PIL", "rcParams", "animation", "Image", "ImageEnhance", "ImageOps", "in_notebook",
    "in_ipynb", "pd", "metrics", "ensemble", "preprocessing", "sklearn", "scipy", "sns",
    "IPython", "pdb", "cv2", "FileLink", "tq", "tqdm", "trange", "tqdm_notebook", "tnrange",
    "clear_tqdm",
]
