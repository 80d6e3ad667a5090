"""fastai 0.7's `transforms` module: the image pipeline descriptions of `tfms_from_model`.

The objects here only *describe* a pipeline; the pixels are computed in Rust
(`fastai._native`), on loader threads that never hold the GIL. The order of operations is the
original's (spec §3.2): scale (or random scale) -> padding -> augmentations in order -> crop ->
normalise -> CHW, with the geometric steps fused into one resampling pass.

Differences from the April 2018 original (its rough edges, spec §13):
* random draws come from a generator per (seed, epoch, item), so results are reproducible
  whatever the number of threads (24);
* `RandomZoom` honours its `mode` (20); `pad_mode` also applies to the validation transform
  (22); transform objects are immutable descriptions, so the preset lists can be shared (23);
* the lighting step's mean is that of the decoded image (resampling preserves it up to borders);
* `RandomStretch` (and the stretch of `RandomRotateZoom`) resamples bilinearly like every other
  geometric step, so it joins the one resampling pass (the original enlarged with OpenCV's
  INTER_AREA, which on enlargement is nearest-neighbour with blended pixel edges); the crop back
  to the original size starts where the original's did;
* `Cutout` blacks out its squares in the image as it is at its step, as intended (the original
  took the height and width from the wrong axes of HWC images, 19);
* `RandomBlur` blurs, as intended (the original tested the wrong flag and never did, 19): on the
  finished crop, with its edges reflected (the same as at its step wherever the kernel stays
  inside the crop and no rotation or zoom follows it).
"""
import enum
import itertools
import os

import numpy as np

from . import _native
# The statistics of each architecture's weights come from the Rust core's table (`_archs`):
# `imagenet_stats`, `inception_stats` (inputs in [-1, 1]), `model_stats` by arch name.
from ._archs import imagenet_stats, inception_models, inception_stats, model_stats

from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402
from . import core as _core  # noqa: E402

# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, [
        "CropType", "TfmType", "imagenet_stats", "inception_stats", "inception_models", "model_stats",
        "BORDER_CONSTANT", "BORDER_REFLECT", "Transform", "Scale", "RandomScale", "AddPadding",
        "CenterCrop", "RandomCrop", "NoCrop", "GoogleNetResize", "RandomRotate", "RandomLighting",
        "RandomFlip", "RandomDihedral", "RandomZoom", "RandomStretch", "RandomRotateZoom",
        "Cutout", "RandomBlur", "Normalize", "Denormalize", "ChannelOrder", "Transforms",
        "image_gen", "tfms_from_stats", "tfms_from_model", "transforms_basic",
        "transforms_side_on", "transforms_top_down", "scale_min", "center_crop"
    ], [_imports, _torch_imports, _core])

# OpenCV's border constants, so code written for the original keeps working without cv2.
BORDER_CONSTANT = 0
BORDER_REFLECT = 2


class CropType(enum.IntEnum):
    RANDOM = 1
    CENTER = 2
    NO = 3
    GOOGLENET = 4


class TfmType(enum.IntEnum):
    NO = 1
    PIXEL = 2
    COORD = 3
    CLASS = 4


def _border(mode):
    if mode in (BORDER_REFLECT, "reflect"):
        return "reflect"
    if mode in (BORDER_CONSTANT, "constant"):
        return "constant"
    raise ValueError(f"unsupported border mode {mode!r}: use BORDER_REFLECT or BORDER_CONSTANT")


def _check_tfm_y(tfm_y):
    if tfm_y not in (None, TfmType.NO):
        raise NotImplementedError("only classification targets (tfm_y=TfmType.NO) are supported")


class Transform:
    """Base class: a step of the pipeline, described by `_spec()` for the Rust core."""

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Scale(Transform):
    """Short side -> sz (antialiased bilinear)."""

    def __init__(self, sz, tfm_y=TfmType.NO, sz_y=None):
        _check_tfm_y(tfm_y)
        self.sz = sz


class RandomScale(Transform):
    """With probability p, short side -> int(sz * m), m ~ U(1, max_zoom) (or U(lo, hi))."""

    def __init__(self, sz, max_zoom, p=0.75, tfm_y=TfmType.NO, sz_y=None):
        _check_tfm_y(tfm_y)
        self.sz, self.max_zoom, self.p = sz, max_zoom, p

    def _range(self):
        if isinstance(self.max_zoom, (list, tuple)):
            lo, hi = self.max_zoom
        else:
            lo, hi = 1.0, self.max_zoom
        return float(lo), float(hi)


class AddPadding(Transform):
    def __init__(self, pad, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        self.pad, self.mode = pad, mode


class CenterCrop(Transform):
    def __init__(self, sz, tfm_y=TfmType.NO, sz_y=None):
        self.sz = sz


class RandomCrop(Transform):
    def __init__(self, targ_sz, tfm_y=TfmType.NO, sz_y=None):
        self.sz = targ_sz


class NoCrop(Transform):
    def __init__(self, sz, tfm_y=TfmType.NO, sz_y=None):
        self.sz = sz


class GoogleNetResize(Transform):
    def __init__(self, targ_sz, min_area_frac=0.08, min_aspect_ratio=0.75, max_aspect_ratio=1.333,
                 flip_hw_p=0.5, tfm_y=TfmType.NO, sz_y=None):
        self.sz = targ_sz
        self.min_area_frac, self.min_aspect_ratio = min_area_frac, min_aspect_ratio
        self.max_aspect_ratio, self.flip_hw_p = max_aspect_ratio, flip_hw_p


class RandomRotate(Transform):
    """With probability p, rotate by U(-deg, deg) degrees (counter-clockwise), bilinear."""

    def __init__(self, deg, p=0.75, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        self.deg, self.p, self.mode = deg, p, mode

    def _spec(self):
        return {"kind": "rotate", "deg": float(self.deg), "p": float(self.p), "mode": _border(self.mode)}


class RandomLighting(Transform):
    """Brightness b' ~ U(-b, b), contrast c' ~ U(-c, c): clip((x - mean)*k + mean + b', 0, 1)."""

    def __init__(self, b, c, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        self.b, self.c = b, c

    def _spec(self):
        return {"kind": "lighting", "b": float(self.b), "c": float(self.c)}


class RandomFlip(Transform):
    def __init__(self, tfm_y=TfmType.NO, p=0.5):
        _check_tfm_y(tfm_y)
        self.p = p

    def _spec(self):
        return {"kind": "flip", "p": float(self.p)}


class RandomDihedral(Transform):
    def __init__(self, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)

    def _spec(self):
        return {"kind": "dihedral"}


class RandomZoom(Transform):
    """Zoom about the centre by 1 + U(zoom_min, zoom_max), same output size."""

    def __init__(self, zoom_max, zoom_min=0, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        self.zoom_max, self.zoom_min, self.mode = zoom_max, zoom_min, mode

    def _spec(self):
        return {"kind": "zoom", "zoom_max": float(self.zoom_max), "zoom_min": float(self.zoom_min),
                "mode": _border(self.mode)}


class RandomStretch(Transform):
    """Widen (or, with probability 1/2, heighten) by 1 + U(0, max_stretch), then crop the
    centre back to the original size."""

    def __init__(self, max_stretch, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        if max_stretch < 0:
            raise ValueError(f"RandomStretch: max_stretch must be >= 0, not {max_stretch}")
        self.max_stretch = max_stretch

    def _spec(self):
        return {"kind": "stretch", "max_stretch": float(self.max_stretch)}


class RandomRotateZoom(Transform):
    """Exactly one of: `RandomRotate(deg, p=1, mode)`, `RandomZoom(zoom, mode=mode)`,
    `RandomStretch(stretch)` or nothing, with probabilities `ps` (default 0.25 each)."""

    def __init__(self, deg, zoom, stretch, ps=None, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        ps = [0.25] * 4 if ps is None else [float(p) for p in ps]
        if len(ps) != 4:
            raise ValueError(f"RandomRotateZoom: ps needs 4 probabilities (rotate, zoom, stretch, "
                             f"nothing), got {len(ps)}")
        if min(ps) < 0 or abs(sum(ps) - 1) > 1e-6:
            raise ValueError(f"RandomRotateZoom: ps must be 4 probabilities summing to 1, got {ps}")
        if stretch < 0:
            raise ValueError(f"RandomRotateZoom: stretch must be >= 0, not {stretch}")
        self.deg, self.zoom, self.stretch, self.ps, self.mode = deg, zoom, stretch, ps, mode

    def _spec(self):
        return {"kind": "rotate_zoom", "deg": float(self.deg), "zoom": float(self.zoom),
                "stretch": float(self.stretch), "ps": tuple(self.ps), "mode": _border(self.mode)}


class Cutout(Transform):
    """Black squares of side `length` at `n_holes` random centres (clipped to the image), in
    the image as it is at this step of `aug_tfms`."""

    def __init__(self, n_holes, length, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        if int(n_holes) != n_holes or n_holes < 0 or int(length) != length or length < 0:
            raise ValueError(f"Cutout: n_holes and length must be whole numbers >= 0, "
                             f"not {n_holes!r} and {length!r}")
        self.n_holes, self.length = int(n_holes), int(length)

    def _spec(self):
        return {"kind": "cutout", "n_holes": self.n_holes, "length": self.length}


class RandomBlur(Transform):
    """With probability `probability`, OpenCV's Gaussian blur with a kernel of 2k - 1 pixels,
    k drawn from `blur_strengths` (a number or a list)."""

    def __init__(self, blur_strengths=5, probability=0.5, tfm_y=TfmType.NO):
        _check_tfm_y(tfm_y)
        strengths = np.array(blur_strengths, ndmin=1)
        if strengths.size == 0 or (strengths != strengths.astype(int)).any() or (strengths < 1).any():
            raise ValueError(f"RandomBlur: blur_strengths must be whole numbers >= 1, not {blur_strengths!r}")
        self.blur_strengths = strengths.astype(int) * 2 - 1  # kernel sizes, as the original stores them
        self.probability = probability

    def _spec(self):
        return {"kind": "blur", "sizes": [int(k) for k in self.blur_strengths], "p": float(self.probability)}


class Normalize:
    """(x - mean) / std over the last (channel) axis."""

    def __init__(self, m, s, tfm_y=TfmType.NO):
        self.m, self.s = np.asarray(m, dtype=np.float32), np.asarray(s, dtype=np.float32)

    def __call__(self, x, y=None):
        x = (np.asarray(x, dtype=np.float32) - self.m) / self.s
        return x if y is None else (x, y)

    def __repr__(self):
        return f"Normalize(m={self.m.tolist()}, s={self.s.tolist()})"


class Denormalize:
    """x * std + mean over the last (channel) axis."""

    def __init__(self, m, s):
        self.m, self.s = np.asarray(m, dtype=np.float32), np.asarray(s, dtype=np.float32)

    def __call__(self, x):
        return np.asarray(x, dtype=np.float32) * self.s + self.m

    def __repr__(self):
        return f"Denormalize(m={self.m.tolist()}, s={self.s.tolist()})"


class ChannelOrder(Transform):
    def __init__(self, tfm_y=TfmType.NO):
        pass


def scale_min(im, targ):
    """(rows, cols) the scale step gives an image `im` (array or (rows, cols)), spec §3.4."""
    r, c = (im.shape[:2] if hasattr(im, "shape") else im)
    ratio = targ / min(r, c)
    return max(int(np.floor(r * ratio)), targ), max(int(np.floor(c * ratio)), targ)


def center_crop(im, min_sz=None):
    """The centre min_sz x min_sz window of an HWC array (top/left = ceil((n - s) / 2))."""
    r, c = im.shape[:2]
    s = min(r, c) if min_sz is None else min_sz
    top, left = int(np.ceil((r - s) / 2)), int(np.ceil((c - s) / 2))
    return im[top:top + s, left:left + s]


_draws = itertools.count()


class Transforms:
    """A full pipeline (what `tfms_from_model` returns two of).

    `t(img)` applies it to one HWC image (uint8, or float32 in [0, 1]) and returns a float32
    (3, sz, sz) array; `t(img, y)` returns `(x, y)`. Each call draws new random parameters.
    """

    def __init__(self, sz, tfms, normalizer, denorm, crop_type=CropType.CENTER, tfm_y=TfmType.NO,
                 sz_y=None, scale_step=None, pad_step=None, crop_step=None, aug_tfms=()):
        _check_tfm_y(tfm_y)
        self.sz, self.sz_y, self.tfm_y = sz, sz_y, tfm_y
        self.norm, self.denorm = normalizer, denorm
        self.crop_type = crop_type
        self.scale_step, self.pad_step, self.crop_step = scale_step, pad_step, crop_step
        self.aug_tfms = list(aug_tfms)
        self.tfms = tfms
        self._seed = int.from_bytes(os.urandom(8), "little") >> 1
        self._native_pipeline = None

    @property
    def stats(self):
        return self.norm.m, self.norm.s

    @property
    def _pipeline(self):
        """The Rust pipeline (`_native.Pipeline`), built and checked on first use, then the
        same object for every loader of this transform."""
        if self._native_pipeline is None:
            self._native_pipeline = _native.Pipeline(**self._pipeline_args())
        return self._native_pipeline

    def _pipeline_args(self):
        """The keyword arguments of `_native.Pipeline` for this transform."""
        scale = None
        if isinstance(self.scale_step, RandomScale):
            lo, hi = self.scale_step._range()
            scale = (lo, hi, float(self.scale_step.p))
        pad, pad_mode = 0, "reflect"
        if self.pad_step is not None:
            pad, pad_mode = int(self.pad_step.pad), _border(self.pad_step.mode)
        crop = {CropType.RANDOM: "random", CropType.CENTER: "center", CropType.NO: "no",
                CropType.GOOGLENET: "googlenet"}[CropType(self.crop_type)]
        if crop == "googlenet" and isinstance(self.crop_step, GoogleNetResize):
            g = self.crop_step
            crop = ("googlenet", float(g.min_area_frac), float(g.min_aspect_ratio),
                    float(g.max_aspect_ratio), float(g.flip_hw_p))
        return {
            "sz": int(self.sz), "crop": crop, "scale": scale, "pad": pad, "pad_mode": pad_mode,
            "mean": [float(v) for v in self.norm.m], "std": [float(v) for v in self.norm.s],
            "augs": [t._spec() for t in self.aug_tfms],
        }

    def __call__(self, im, y=None):
        im = np.asarray(im)
        if im.dtype not in (np.uint8, np.float32):
            im = im.astype(np.float32)
        x, _ = _native.transform_image(np.ascontiguousarray(im), self._pipeline, self._seed, 0,
                                      next(_draws))
        return x if y is None else (x, y)

    def __repr__(self):
        return "\n".join(repr(t) for t in self.tfms)


def image_gen(normalizer, denorm, sz, tfms=None, max_zoom=None, pad=0, crop_type=None,
              tfm_y=None, sz_y=None, pad_mode=BORDER_REFLECT, scale=None,
              min_area_frac=0.08, min_aspect_ratio=0.75, max_aspect_ratio=1.333, flip_hw_p=0.5):
    """Builds a `Transforms` the way the original's `image_gen` orders the steps (spec §3.2)."""
    if tfm_y is None:
        tfm_y = TfmType.NO
    if tfms is None:
        tfms = []
    elif not isinstance(tfms, (list, tuple)):
        tfms = [tfms]
    for t in tfms:
        if not hasattr(t, "_spec"):
            raise TypeError(f"{t!r} is not a supported augmentation")
    crop_type = CropType.RANDOM if crop_type is None else CropType(crop_type)
    if crop_type == CropType.GOOGLENET:
        scale_step, pad_step = None, None
        crop_step = GoogleNetResize(sz, min_area_frac, min_aspect_ratio, max_aspect_ratio, flip_hw_p)
    else:
        scale_step = RandomScale(sz, max_zoom) if max_zoom is not None else Scale(sz)
        if scale is not None:
            scale_step = scale
        pad_step = AddPadding(pad, mode=pad_mode) if pad else None
        crop_step = {CropType.RANDOM: RandomCrop, CropType.CENTER: CenterCrop,
                     CropType.NO: NoCrop}[crop_type](sz)
    steps = [s for s in (scale_step, pad_step) if s is not None] + list(tfms) + \
        [crop_step, normalizer, ChannelOrder()]
    return Transforms(sz, steps, normalizer, denorm, crop_type, tfm_y, sz_y,
                      scale_step=scale_step, pad_step=pad_step, crop_step=crop_step, aug_tfms=tfms)


def tfms_from_stats(stats, sz, aug_tfms=None, max_zoom=None, pad=0, crop_type=CropType.RANDOM,
                    tfm_y=None, sz_y=None, pad_mode=BORDER_REFLECT, norm_y=True, scale=None,
                    min_area_frac=0.08, min_aspect_ratio=0.75, max_aspect_ratio=1.333,
                    flip_hw_p=0.5):
    """(train transform, validation transform) for statistics `stats = (mean, std)`."""
    mean, std = stats
    tfm_norm, tfm_denorm = Normalize(mean, std), Denormalize(mean, std)
    crop_type = CropType(crop_type)
    val_crop = CropType.CENTER if crop_type in (CropType.RANDOM, CropType.GOOGLENET) else crop_type
    val_tfm = image_gen(tfm_norm, tfm_denorm, sz, pad=pad, crop_type=val_crop, tfm_y=tfm_y,
                        sz_y=sz_y, pad_mode=pad_mode)
    trn_tfm = image_gen(tfm_norm, tfm_denorm, sz, tfms=aug_tfms, max_zoom=max_zoom, pad=pad,
                        crop_type=crop_type, tfm_y=tfm_y, sz_y=sz_y, pad_mode=pad_mode, scale=scale,
                        min_area_frac=min_area_frac, min_aspect_ratio=min_aspect_ratio,
                        max_aspect_ratio=max_aspect_ratio, flip_hw_p=flip_hw_p)
    return trn_tfm, val_tfm


def _stats_of(f_model):
    """Statistics for an architecture: its own `stats`, else by name, else ImageNet's."""
    stats = getattr(f_model, "stats", None)
    if stats is not None:
        return stats
    name = f_model if isinstance(f_model, str) else getattr(f_model, "name", None) or \
        getattr(f_model, "__name__", None)
    return model_stats.get(name, imagenet_stats)


def tfms_from_model(f_model, sz, aug_tfms=None, max_zoom=None, pad=0, crop_type=CropType.RANDOM,
                    tfm_y=None, sz_y=None, pad_mode=BORDER_REFLECT, norm_y=True, scale=None,
                    min_area_frac=0.08, min_aspect_ratio=0.75, max_aspect_ratio=1.333,
                    flip_hw_p=0.5):
    """(train transform, validation transform) with the statistics that belong to `f_model`."""
    return tfms_from_stats(_stats_of(f_model), sz, aug_tfms, max_zoom=max_zoom, pad=pad,
                           crop_type=crop_type, tfm_y=tfm_y, sz_y=sz_y, pad_mode=pad_mode,
                           norm_y=norm_y, scale=scale, min_area_frac=min_area_frac,
                           min_aspect_ratio=min_aspect_ratio, max_aspect_ratio=max_aspect_ratio,
                           flip_hw_p=flip_hw_p)


transforms_basic = [RandomRotate(10), RandomLighting(0.05, 0.05)]
transforms_side_on = transforms_basic + [RandomFlip()]
transforms_top_down = transforms_basic + [RandomDihedral()]
