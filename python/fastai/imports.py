"""`from fastai.imports import *`: the standard-library and scientific names lesson 1 expects.

As in fastai 0.7 this module does not import torch (that arrives with `fastai.torch_imports`),
and it sets numpy's print options, which is why arrays print as in the lesson.
Heavy optional packages of the original (bcolz, cv2, pandas, seaborn, graphviz) are not
imported: nothing in the lesson needs them and they would slow every import.
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

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import PIL
from matplotlib import rcParams
from PIL import Image, ImageEnhance, ImageOps

np.set_printoptions(precision=5, linewidth=110, suppress=True)
matplotlib.rc("animation", html="html5")


def in_notebook():
    """True inside a Jupyter kernel (as fastai 0.7's helper of the same name)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


in_ipynb = in_notebook

__all__ = [
    "collections", "itertools", "json", "math", "os", "pickle", "random", "re", "shutil",
    "string", "sys", "threading", "time", "warnings", "abstractmethod", "Counter",
    "OrderedDict", "Iterable", "ProcessPoolExecutor", "ThreadPoolExecutor", "partial", "glob",
    "iglob", "chain", "attrgetter", "itemgetter", "Path", "matplotlib", "plt", "np", "PIL",
    "rcParams", "Image", "ImageEnhance", "ImageOps", "in_notebook", "in_ipynb",
]
