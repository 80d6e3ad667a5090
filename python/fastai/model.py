"""`fastai.model`: in fastai 0.7 the low-level training loop; here the loop lives in Rust
(`fastai._native.Learner`), so this module keeps the names user code imports from it."""
import numpy as np
import torch

from .layers import AdaptiveConcatPool2d, Flatten
from ._zoo import cut_model, num_features  # noqa: F401 (0.7 defined them here)


def predict_batch(m, x):
    """fastai 0.7's `predict_batch(m, x)`: the torch module `m` in eval mode (its `reset()`
    called when it has one) on the batch `x`, without a gradient; a tensor comes back
    (`F.softmax(predict_batch(learn.model, x), -1)` is how real code uses it). Given a learner
    instead, its `predict_array` (numpy out)."""
    if not isinstance(m, torch.nn.Module):
        return m.predict_array(np.asarray(x))
    m.eval()
    if hasattr(m, "reset"):
        m.reset()
    x = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x
    p = next(m.parameters(), None)
    with torch.no_grad():
        return m(x.to(p.device) if p is not None else x)


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402
from . import core as _core  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "num_features", "cut_model", "predict_batch", "AdaptiveConcatPool2d", "Flatten"
    ], [_imports, _torch_imports, _core])
