"""Plotting helpers of fastai 0.7 (spec 9.5, 9.6), drawn with matplotlib."""
import itertools
import math

import matplotlib.pyplot as plt
import numpy as np

from ._figures import figure


def confusion_matrix(y_true, y_pred, *args, **kwargs):
    """scikit-learn's `confusion_matrix` (re-exported as fastai 0.7 did), imported on first
    use: importing scikit-learn takes seconds, too long for every `import fastai.plots`."""
    try:
        from sklearn.metrics import confusion_matrix as cm
    except ImportError as e:
        raise ImportError("confusion_matrix needs scikit-learn: pip install scikit-learn") from e
    return cm(y_true, y_pred, *args, **kwargs)


def ceildiv(a, b):
    return -(-a // b)


def plots(ims, figsize=(12, 6), rows=1, interp=False, titles=None, maintitle=None):
    """Show images in a grid; NCHW arrays are transposed to NHWC first."""
    if isinstance(ims[0], np.ndarray):
        ims = np.array(ims)
        if ims.shape[-1] != 3:
            ims = ims.transpose((0, 2, 3, 1))
    f = figure(figsize=figsize)
    if maintitle is not None:
        plt.suptitle(maintitle, fontsize=16)
    cols = ceildiv(len(ims), rows)
    for i in range(len(ims)):
        sp = f.add_subplot(rows, cols, i + 1)
        sp.axis("Off")
        if titles is not None:
            sp.set_title(titles[i], fontsize=16)
        plt.imshow(ims[i], interpolation=None if interp else "none")
    return f


def plots_from_files(imspaths, figsize=(10, 5), rows=1, titles=None, maintitle=None):
    f = figure(figsize=figsize)
    if maintitle is not None:
        plt.suptitle(maintitle, fontsize=16)
    cols = ceildiv(len(imspaths), rows)
    for i, p in enumerate(imspaths):
        sp = f.add_subplot(rows, cols, i + 1)
        sp.axis("Off")
        if titles is not None:
            sp.set_title(titles[i], fontsize=16)
        plt.imshow(plt.imread(p))
    return f


def plots_raw(ims, figsize=(12, 6), rows=1, titles=None):
    f = figure(figsize=figsize)
    cols = ceildiv(len(ims), rows)
    for i, im in enumerate(ims):
        sp = f.add_subplot(rows, cols, i + 1)
        sp.axis("Off")
        if titles is not None:
            sp.set_title(titles[i], fontsize=16)
        plt.imshow(im)
    return f


def load_img_id(ds, idx, path):
    """The idx-th file of a dataset as a uint8 HWC RGB array at its original size, decoded
    like the training images (EXIF orientation applied), so what is shown is what was
    learnt from (fastai 0.7 used PIL here, which ignores EXIF: spec 13, rough edge 13)."""
    import os

    from . import _native
    return _native.decode_image(os.path.join(path, ds.fnames[idx]))


def plot_confusion_matrix(cm, classes, normalize=False, title="Confusion matrix",
                          cmap=plt.cm.Blues, figsize=None):
    """Draw a confusion matrix (rows = true class), print it, and label every cell.

    Unlike the original, a normalised matrix is also *coloured* by the normalised values
    (spec 13, rough edge 37) and printed with 2 decimals.
    """
    cm = np.asarray(cm)
    if normalize:
        cm = cm.astype("float") / cm.sum(axis=1)[:, np.newaxis]
    fig = figure(figsize=figsize)
    plt.imshow(cm, interpolation="nearest", cmap=cmap)
    plt.title(title)
    plt.colorbar()
    tick_marks = np.arange(len(classes))
    plt.xticks(tick_marks, classes, rotation=45)
    plt.yticks(tick_marks, classes)
    if normalize:
        with np.printoptions(precision=2, suppress=True):
            print(cm)
    else:
        print(cm)
    thresh = cm.max() / 2.0
    for i, j in itertools.product(range(cm.shape[0]), range(cm.shape[1])):
        text = f"{cm[i, j]:.2f}" if normalize else str(cm[i, j])
        plt.text(j, i, text, horizontalalignment="center",
                 color="white" if cm[i, j] > thresh else "black")
    plt.ylabel("True label")
    plt.xlabel("Predicted label")
    # After the labels (the original laid out first and cut the x label off).
    plt.tight_layout()
    return fig


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "plots", "plots_from_files", "plots_raw", "load_img_id", "plot_confusion_matrix",
        "ceildiv", "confusion_matrix"
    ], [_imports, _torch_imports])
