"""Metrics with fastai 0.7's names and semantics (spec 4.8 and 9.4)."""
import numpy as np
import torch


def accuracy_np(preds, targs):
    """Fraction of rows whose argmax equals the target; preds may be probabilities or logs."""
    preds = np.argmax(np.asarray(preds), axis=1)
    return float((preds == np.asarray(targs)).mean())


def accuracy(preds, targs):
    """Batch accuracy on torch tensors (argmax over dim 1), as a 0-d float tensor."""
    preds = torch.max(preds, dim=1)[1]
    return (preds == targs).float().mean()


def accuracy_thresh(thresh):
    """Multi-label accuracy at a threshold, as a metric function named like the original's."""
    def accuracy_multi_(preds, targs):
        return accuracy_multi(preds, targs, thresh)
    accuracy_multi_.__name__ = "accuracy_thresh"
    return accuracy_multi_


def accuracy_multi(preds, targs, thresh):
    return ((preds > thresh).float() == targs).float().mean()


def accuracy_multi_np(preds, targs, thresh):
    return float(((np.asarray(preds) > thresh) == np.asarray(targs)).mean())


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "accuracy", "accuracy_np", "accuracy_thresh", "accuracy_multi", "accuracy_multi_np"
    ], [_imports, _torch_imports])
