"""fastai-rs: the vision part of fastai 0.7 on a Rust core.

`import torch` must come first: the extension module links to torch's libtorch, and loading
torch first makes the dynamic loader find the same copy of it.
"""
import torch  # noqa: F401  (must precede the extension import)

from ._native import __version__, build_profile  # noqa: E402

__all__ = ["__version__", "build_profile"]
