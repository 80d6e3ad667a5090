"""The exceptions fastai-rs raises. The Rust core raises these very classes (it looks them up
here), so there is one list of them.

Every one derives from `FastaiError`; they also derive from the built-in exception that
fastai 0.7 raised in the same situation, so existing `except OSError:` code keeps working.
"""


class FastaiError(Exception):
    """Base class of every error specific to fastai-rs."""


class ImageDecodeError(FastaiError, OSError):
    """An image file could not be decoded (corrupt, truncated, not an image, too large)."""


class DatasetLayoutError(FastaiError, ValueError):
    """The data folder or CSV does not have the expected layout (missing/empty/mismatched)."""


class WeightsError(FastaiError, ValueError):
    """A weights file does not fit the model (missing, unexpected or mis-shaped keys)."""


class TransformsRequiredError(FastaiError, ValueError, AssertionError):
    """Image data was built without a training and a validation transform (fastai 0.7
    asserted it, so this is also an AssertionError)."""


class PipelineError(FastaiError, RuntimeError):
    """The image pipeline failed on an image it had accepted: a bug in fastai-rs, not a bad
    file, so `skip_bad` does not skip it."""


class InternalError(FastaiError, RuntimeError):
    """A failure of fastai-rs itself, not of its input (a worker thread that could not start or
    stopped unexpectedly, a state left inconsistent by an earlier crash). Worth a bug report."""


__all__ = ["FastaiError", "ImageDecodeError", "DatasetLayoutError", "WeightsError",
           "TransformsRequiredError", "PipelineError", "InternalError"]
