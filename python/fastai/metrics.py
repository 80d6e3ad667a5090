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


def _positives(preds, targs, thresh):
    """(predicted positives, true positives, actual positives) counted over every element, as
    float tensors: the multi-label 0/1 reading of fastai 0.7.0's recall and precision."""
    preds, targs = torch.as_tensor(preds), torch.as_tensor(targs)
    pred_pos = preds > thresh
    actual = targs > 0.5
    return pred_pos.sum().float(), (pred_pos & actual).sum().float(), actual.sum().float()


def recall(preds, targs, thresh=0.5):
    """Micro-averaged recall of `preds > thresh` against 0/1 targets: true positives / actual
    positives (NaN when there are none). Float division, where 0.7.0 divided integers."""
    _, tp, actual = _positives(preds, targs, thresh)
    return tp / actual


def precision(preds, targs, thresh=0.5):
    """Micro-averaged precision of `preds > thresh` against 0/1 targets: true positives /
    predicted positives (NaN when there are none)."""
    pred_pos, tp, _ = _positives(preds, targs, thresh)
    return tp / pred_pos


def fbeta(preds, targs, beta, thresh=0.5):
    """The F-beta score, (1 + b^2) P R / (b^2 P + R), of the micro-averaged precision P and
    recall R at `thresh`; beta must be above 0."""
    if not beta > 0:
        raise ValueError(f"fbeta: beta must be greater than 0, got {beta!r}")
    b2 = beta ** 2
    p, r = precision(preds, targs, thresh), recall(preds, targs, thresh)
    return (1 + b2) * p * r / (b2 * p + r)


def f1(preds, targs, thresh=0.5):
    return fbeta(preds, targs, 1, thresh)


def _f2_per_threshold(preds, targs, start, end, step):
    """[(threshold, mean over samples of each sample's F2)] for the thresholds
    np.arange(start, end, step). A sample with no predicted or no actual positive scores 0
    there, as scikit-learn's fbeta_score(average='samples') counts it."""
    preds = np.asarray(preds.detach().cpu() if torch.is_tensor(preds) else preds, dtype=np.float64)
    targs = np.asarray(targs.detach().cpu() if torch.is_tensor(targs) else targs) > 0.5
    out = []
    for th in np.arange(start, end, step):
        pos = preds > th
        tp = (pos & targs).sum(1).astype(np.float64)
        denom = 4 * targs.sum(1) + pos.sum(1)  # (1+b^2) tp + b^2 fn + fp, with b = 2
        with np.errstate(divide="ignore", invalid="ignore"):
            per_sample = np.where(denom > 0, 5 * tp / np.maximum(denom, 1), 0.0)
        out.append((float(th), float(per_sample.mean())))
    return out


def f2(preds, targs, start=0.17, end=0.24, step=0.01):
    """The course's (planet.py) multi-label metric: the best over thresholds
    np.arange(start, end, step) of the per-sample F2 averaged over samples."""
    return max(v for _, v in _f2_per_threshold(preds, targs, start, end, step))


def opt_th(preds, targs, start=0.17, end=0.24, step=0.01):
    """The first threshold reaching `f2`'s maximum."""
    scores = _f2_per_threshold(preds, targs, start, end, step)
    best = max(v for _, v in scores)
    return next(th for th, v in scores if v == best)


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "accuracy", "accuracy_np", "accuracy_thresh", "accuracy_multi", "accuracy_multi_np",
        "recall", "precision", "fbeta", "f1", "f2", "opt_th"
    ], [_imports, _torch_imports])
