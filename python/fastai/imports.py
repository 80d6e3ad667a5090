"""`from fastai.imports import *`: the standard-library and scientific names lesson 1 expects.

As in fastai 0.7 this module does not import torch (that arrives with `fastai.torch_imports`),
and it sets numpy's print options, which is why arrays print as in the lesson.
Heavy packages of the original load lazily (`pd`, sklearn's `metrics`) or not at all
(bcolz, cv2, seaborn, graphviz: nothing in the lessons needs them, and they would slow every
import).
"""
import collections
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


def __getattr__(name):
    """matplotlib (half a second) is imported when a star import or a plot asks for it, not
    when another fastai module imports this one: `import fastai.conv_learner` stays light,
    while `from fastai.imports import *` gives the real `plt` as before."""
    if name not in ("matplotlib", "plt", "rcParams"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import matplotlib
    import matplotlib.pyplot

    # Runs once: afterwards the three names are found in the module itself.
    matplotlib.rc("animation", html="html5")
    globals().update(matplotlib=matplotlib, plt=matplotlib.pyplot, rcParams=matplotlib.rcParams)
    return globals()[name]


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

__all__ = [
    "collections", "itertools", "json", "math", "os", "pickle", "random", "re", "shutil",
    "string", "sys", "threading", "time", "warnings", "abstractmethod", "Counter",
    "OrderedDict", "Iterable", "ProcessPoolExecutor", "ThreadPoolExecutor", "partial", "glob",
    "iglob", "chain", "attrgetter", "itemgetter", "Path", "matplotlib", "plt", "np", "PIL",
    "rcParams", "Image", "ImageEnhance", "ImageOps", "in_notebook", "in_ipynb", "pd", "metrics",
]
