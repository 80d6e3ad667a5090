"""`fastai.model`: in fastai 0.7 the low-level training loop; here the loop lives in Rust
(`fastai._native.Learner`), so this module keeps the names user code imports from it."""
import numpy as np
import torch

from .layers import AdaptiveConcatPool2d, Flatten


def num_features(m):
    """Output channels of the last BatchNorm found in a PyTorch module (fastai 0.7's rule)."""
    bns = [c for c in m.modules() if isinstance(c, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    return bns[-1].num_features if bns else None


def cut_model(m, cut):
    """The first `cut` children of a PyTorch module (the whole list when cut is 0)."""
    return list(m.children())[:cut] if cut else [m]


def predict_batch(learner, x):
    """Outputs of a learner for one batch (numpy in, numpy out)."""
    return learner.predict_array(np.asarray(x))


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402
from . import core as _core  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "num_features", "cut_model", "predict_batch", "AdaptiveConcatPool2d", "Flatten"
    ], [_imports, _torch_imports, _core])
