"""fastai 0.7's `transforms` module: the transform objects, the functional transforms and the
pipelines `tfms_from_model` builds.

Two ways run a pipeline. Calling it (`val_tfms(img)`, `RandomRotate(10)(x, y)`, a user's own
`Transform` subclass) runs 0.7's object model step by step in Python on numpy arrays, with the
OpenCV-compatible kernels of the Rust core (`_native.cv_resize`, `_native.cv_warp_affine`), so
the numbers are those of the original's OpenCV calls. The loaders instead run a pipeline made
only of built-in steps (`Transforms.fusable`) as one fused pass in Rust (`Transforms._pipeline`),
on loader threads that never hold the GIL. The two agree on the geometry and the draws'
distributions, not bit for bit: the fused path resamples bilinearly with antialiasing where the
original used INTER_AREA.

Differences from fastai 0.7.0 (its rough edges), in both paths unless stated:
* a class built directly with a target type and no `sz_y` uses its own size for the target;
  `RandomCrop(targ=...)` (the old keyword) is accepted; `GoogleNetResize` gets its parameters by
  keyword in pipelines, so GOOGLENET crops really crop;
* `RandomZoom` honours its `mode` (the original always used a black border); a COORD or CLASS
  target still gets a black border there, as in `RandomRotate`;
* the target of a `Cutout` or `GoogleNetResize` gets the same holes / the same crop as the image
  (the original drew them again for the target); both draw one seed per call in `set_state`;
* `RandomBlur` blurs, as intended (never a CLASS mask); `RandomRotateZoom` accepts
  probabilities that sum to 1 within 1e-6;
* a pipeline called without a target transforms the image alone whatever its `tfm_y`; a 2-D
  CLASS mask stays 2-D at the end (the original took its first column); `Transforms` does not
  append its steps to the caller's list;
* `Transforms.__call__` turns a uint8 image into float32 in [0, 1] first (the original expected
  `open_image`'s float32) and returns float32 arrays;
* in the fused path only: random draws come from a generator per (seed, epoch, item), so results
  are reproducible whatever the number of threads; `pad_mode` also applies to the validation
  transform; `RandomStretch` resamples bilinearly within the one resampling pass; the lighting
  mean is that of the decoded image.
"""
import collections.abc
import enum
import itertools
import math
import os
import random
import threading

import numpy as np

from . import _native
# The statistics of each architecture's weights come from the Rust core's table (`_archs`):
# `imagenet_stats`, `inception_stats` (inputs in [-1, 1]), `model_stats` by arch name.
from ._archs import imagenet_stats, inception_models, inception_stats, model_stats

from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402
from . import core as _core  # noqa: E402

# OpenCV's constants, with OpenCV's values, so code written for the original keeps working
# (users pass `cv2.BORDER_REFLECT` and plain integers alike).
BORDER_CONSTANT = 0
BORDER_REPLICATE = 1
BORDER_REFLECT = 2
BORDER_WRAP = 3
BORDER_REFLECT_101 = BORDER_REFLECT101 = BORDER_DEFAULT = 4
INTER_NEAREST = 0
INTER_LINEAR = 1
INTER_CUBIC = 2
INTER_AREA = 3
WARP_FILL_OUTLIERS = 8

_own = [
    "CropType", "TfmType", "imagenet_stats", "inception_stats", "inception_models", "model_stats",
    "BORDER_CONSTANT", "BORDER_REPLICATE", "BORDER_REFLECT", "BORDER_WRAP", "BORDER_REFLECT_101",
    "BORDER_REFLECT101", "BORDER_DEFAULT", "INTER_NEAREST", "INTER_LINEAR", "INTER_CUBIC",
    "INTER_AREA", "WARP_FILL_OUTLIERS",
    "Transform", "CoordTransform", "PassThru", "Scale", "RandomScale", "AddPadding",
    "CenterCrop", "RandomCrop", "NoCrop", "GoogleNetResize", "RandomRotate", "RandomLighting",
    "RandomFlip", "RandomDihedral", "RandomZoom", "RandomStretch", "RandomRotateZoom",
    "Cutout", "RandomBlur", "Normalize", "Denormalize", "ChannelOrder", "Transforms",
    "image_gen", "tfms_from_stats", "tfms_from_model", "transforms_basic",
    "transforms_side_on", "transforms_top_down", "scale_to", "scale_min", "zoom_cv",
    "stretch_cv", "dihedral", "lighting", "rotate_cv", "no_crop", "center_crop", "crop",
    "googlenet_resize", "cutout", "compose", "rand0", "det_dihedral", "det_stretch",
    "det_lighting", "det_rotate", "det_zoom", "to_bb", "coords2px", "partition",
]
# Star imports bring what fastai 0.7's did (spec 1.1): see `_exports`.
__all__, __getattr__ = _exports.reexport(__name__, _own, [_imports, _torch_imports, _core])


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


_BORDER_NAMES = {"constant": BORDER_CONSTANT, "replicate": BORDER_REPLICATE,
                 "reflect": BORDER_REFLECT, "wrap": BORDER_WRAP, "reflect_101": BORDER_REFLECT_101}


def _border_code(mode):
    """OpenCV's integer for a border `mode` (an integer, or its lower-case name)."""
    if isinstance(mode, str) and mode in _BORDER_NAMES:
        return _BORDER_NAMES[mode]
    if not isinstance(mode, str) and int(mode) == mode and 0 <= int(mode) <= 4:
        return int(mode)
    raise ValueError(f"unsupported border mode {mode!r}: use BORDER_CONSTANT, BORDER_REPLICATE, "
                     f"BORDER_REFLECT, BORDER_WRAP or BORDER_REFLECT_101")


def _border(mode):
    """The fused pipeline's name for a border mode; it knows only reflect and constant."""
    code = _border_code(mode)
    if code == BORDER_REFLECT:
        return "reflect"
    if code == BORDER_CONSTANT:
        return "constant"
    raise ValueError(f"unsupported border mode {mode!r} in a loader: use BORDER_REFLECT or "
                     f"BORDER_CONSTANT")


# ---------------------------------------------------------------------------------------------
# Kernels: numpy arrays in, numpy arrays out, computed in float32 by the Rust core.

def _to_kernel(im):
    a = np.asarray(im)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    return a, np.ascontiguousarray(a, dtype=np.float32)


def _from_kernel(out, dtype):
    """Back to the caller's dtype: floats are cast; integers (label masks) come back exactly
    under nearest neighbour and otherwise rounded and clipped to their range, as OpenCV
    saturates."""
    if dtype == np.float32:
        return out
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    if dtype == np.bool_:
        return out > 0.5
    return out.astype(dtype)


def _resize(im, width, height, interpolation, fx=0.0, fy=0.0):
    a, f = _to_kernel(im)
    out = _native.cv_resize(f, int(width), int(height), int(interpolation), float(fx), float(fy))
    return _from_kernel(out, a.dtype)


def _warp(im, m, width, height, interpolation, mode):
    a, f = _to_kernel(im)
    m = [[float(v) for v in row] for row in np.asarray(m, dtype=np.float64).reshape(2, 3)]
    out = _native.cv_warp_affine(f, m, int(width), int(height), int(interpolation) & 7,
                                 _border_code(mode))
    return _from_kernel(out, a.dtype)


def _rotation_matrix(centre, deg, scale):
    """OpenCV's `getRotationMatrix2D`: rotation by `deg` (counter-clockwise on screen) and
    `scale` about `centre` = (x, y), mapping source to destination."""
    a = math.radians(deg)
    alpha, beta = math.cos(a) * scale, math.sin(a) * scale
    cx, cy = centre
    return np.array([[alpha, beta, (1 - alpha) * cx - beta * cy],
                     [-beta, alpha, beta * cx + (1 - alpha) * cy]])


def _gaussian_blur(x, ksize):
    """OpenCV's `GaussianBlur(x, (k, k), 0)`: its fixed kernels up to 7 taps, else a Gaussian
    of sigma 0.3 * ((k - 1) / 2 - 1) + 0.8; borders mirrored without the edge pixel."""
    fixed = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
             7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}
    k = int(ksize)
    if k in fixed:
        g = np.array(fixed[k], dtype=np.float64)
    else:
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
        t = np.arange(k) - (k - 1) / 2
        g = np.exp(-t * t / (2 * sigma * sigma))
        g /= g.sum()
    a = np.asarray(x)
    out = a.astype(np.float64)
    h = k // 2
    for axis in (1, 0):
        if out.shape[axis] == 1:
            continue
        widths = [(0, 0)] * out.ndim
        widths[axis] = (h, h)
        p = np.pad(out, widths, mode="reflect")
        acc = np.zeros_like(out)
        for i, w in enumerate(g):
            acc += w * np.take(p, np.arange(i, i + out.shape[axis]), axis=axis)
        out = acc
    return out.astype(a.dtype) if np.issubdtype(a.dtype, np.floating) else \
        _from_kernel(out.astype(np.float32), a.dtype)


# ---------------------------------------------------------------------------------------------
# The functional transforms of fastai 0.7.

def scale_to(x, ratio, targ):
    """`max(floor(x * ratio), targ)`: the max undoes a floor landing one below `targ`."""
    return max(math.floor(x * ratio), targ)


def scale_min(im, targ, interpolation=INTER_AREA):
    """Resizes `im` so that its shorter side is `targ` (OpenCV's resize; INTER_AREA by
    default). Works on 2-D arrays too."""
    r, c, *_ = im.shape
    ratio = targ / min(r, c)
    return _resize(im, scale_to(c, ratio, targ), scale_to(r, ratio, targ), interpolation)


def zoom_cv(x, z):
    """Zooms by 1 + z about the centre, same size, bilinear with a black border (z < 0 zooms
    out); z == 0 returns `x` itself."""
    if z == 0:
        return x
    r, c, *_ = x.shape
    m = _rotation_matrix((c / 2, r / 2), 0, z + 1.0)
    return _warp(x, m, c, r, INTER_LINEAR, BORDER_CONSTANT)


def stretch_cv(x, sr, sc, interpolation=INTER_AREA):
    """Widens by 1 + sr and heightens by 1 + sc (sizes rounded as OpenCV does), then keeps the
    centre window of the original size."""
    if sr == 0 and sc == 0:
        return x
    r, c, *_ = x.shape
    # OpenCV rounds the scaled size half to even, as Python's round does.
    x = _resize(x, round(c * (sr + 1)), round(r * (sc + 1)), interpolation, fx=sr + 1, fy=sc + 1)
    nr, nc, *_ = x.shape
    cr, cc = (nr - r) // 2, (nc - c) // 2
    return x[cr:r + cr, cc:c + cc]


def dihedral(x, dih):
    """One of the 8 symmetries of the square: `rot90(x, dih % 4)`, mirrored if dih >= 4."""
    x = np.rot90(x, dih % 4)
    return x if dih < 4 else np.fliplr(x).copy()


def lighting(im, b, c):
    """Brightness `b` and contrast `c` about the mean of all elements:
    clip((im - mean) * c + mean + b, 0, 1) as float32; b == 0 and c == 1 return `im`."""
    if b == 0 and c == 1:
        return im
    mu = np.average(im)
    return np.clip((im - mu) * c + mu + b, 0.0, 1.0).astype(np.float32)


def rotate_cv(im, deg, mode=BORDER_CONSTANT, interpolation=INTER_AREA):
    """Rotates by `deg` degrees counter-clockwise about the integer centre (c // 2, r // 2),
    same size, with border `mode` (INTER_AREA means bilinear in a warp, as in OpenCV)."""
    r, c, *_ = im.shape
    m = _rotation_matrix((c // 2, r // 2), deg, 1.0)
    return _warp(im, m, c, r, interpolation, mode)


def no_crop(im, min_sz=None, interpolation=INTER_AREA):
    """Squashes `im` to `min_sz` x `min_sz` (default: its shorter side)."""
    r, c, *_ = im.shape
    if min_sz is None:
        min_sz = min(r, c)
    return _resize(im, min_sz, min_sz, interpolation)


def center_crop(im, min_sz=None):
    """The centre min_sz x min_sz window (top/left = ceil((n - s) / 2)), a view."""
    r, c, *_ = im.shape
    if min_sz is None:
        min_sz = min(r, c)
    start_r, start_c = math.ceil((r - min_sz) / 2), math.ceil((c - min_sz) / 2)
    return crop(im, start_r, start_c, min_sz)


def crop(im, r, c, sz):
    """The sz x sz window whose top-left corner is (r, c)."""
    return im[r:r + sz, c:c + sz]


def googlenet_resize(im, targ, min_area_frac, min_aspect_ratio, max_aspect_ratio, flip_hw_p,
                     interpolation=INTER_AREA, _rng=random):
    """GoogLeNet's random-resized crop: up to 10 tries at a window of U(min_area_frac, 1) of
    the area and aspect ratio U(min, max) (height and width swapped if `flip_hw_p`), resized to
    targ x targ; after 10 misfits, short side to `targ` then the centre square."""
    h, w, *_ = im.shape
    area = h * w
    for _ in range(10):
        target_area = _rng.uniform(min_area_frac, 1.0) * area
        aspect_ratio = _rng.uniform(min_aspect_ratio, max_aspect_ratio)
        ww = int(np.sqrt(target_area * aspect_ratio) + 0.5)
        hh = int(np.sqrt(target_area / aspect_ratio) + 0.5)
        if flip_hw_p:
            ww, hh = hh, ww
        if hh <= h and ww <= w:
            x1 = 0 if w == ww else _rng.randint(0, w - ww)
            y1 = 0 if h == hh else _rng.randint(0, h - hh)
            out = im[y1:y1 + hh, x1:x1 + ww]
            return _resize(out, targ, targ, interpolation)
    return center_crop(scale_min(im, targ, interpolation=interpolation))


def cutout(im, n_holes, length, _rng=np.random):
    """Zeroes `n_holes` squares of side `length` (clipped to the image) whose centres NumPy's
    global generator draws: row `randint(length/2, r - length/2)`, then column likewise. As in
    0.7 the image is multiplied by an int32 mask, so float32 input gives float64."""
    r, c, *_ = im.shape
    mask = np.ones((r, c), np.int32)
    for _ in range(n_holes):
        # NumPy's legacy randint truncated float bounds; newer NumPy refuses them.
        y = _rng.randint(int(length / 2), int(r - length / 2))
        x = _rng.randint(int(length / 2), int(c - length / 2))
        y1, y2 = int(np.clip(y - length / 2, 0, r)), int(np.clip(y + length / 2, 0, r))
        x1, x2 = int(np.clip(x - length / 2, 0, c)), int(np.clip(x + length / 2, 0, c))
        mask[y1:y2, x1:x2] = 0
    return im * (mask[:, :, None] if np.ndim(im) == 3 else mask)


def compose(im, y, fns):
    """Applies each `fn(im, y) -> (im, y)` in turn; returns `im` alone if `y` ends up None."""
    for fn in fns:
        im, y = fn(im, y)
    return im if y is None else (im, y)


def rand0(s):
    """U(-s, s) from Python's `random`."""
    return random.random() * (s * 2) - s


def det_dihedral(dih):
    return lambda x: dihedral(x, dih)


def det_stretch(sr, sc):
    return lambda x: stretch_cv(x, sr, sc)


def det_lighting(b, c):
    return lambda x: lighting(x, b, c)


def det_rotate(deg):
    return lambda x: rotate_cv(x, deg)


def det_zoom(zoom):
    return lambda x: zoom_cv(x, zoom)


def to_bb(YY, y="deprecated"):
    """The extent of the non-zero pixels of a 2-D array as float32 [min_row, min_col, max_row,
    max_col] (inclusive); all zero gives [0, 0, 0, 0]. `y` is ignored (kept for old callers)."""
    YY = np.asarray(YY)
    cols = np.nonzero(np.any(YY, axis=0))[0]
    rows = np.nonzero(np.any(YY, axis=1))[0]
    if len(cols) == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([rows[0], cols[0], rows[-1], cols[-1]], dtype=np.float32)


def coords2px(y, x):
    """A float64 zero array of `x`'s (rows, cols) with the four corners of box `y`
    (rounded half to even) set to 1."""
    y = np.asarray(y)
    rows = np.rint([y[0], y[0], y[2], y[2]]).astype(int)
    cols = np.rint([y[1], y[3], y[1], y[3]]).astype(int)
    r, c, *_ = x.shape
    Y = np.zeros((r, c))
    Y[rows, cols] = 1
    return Y


def partition(a, sz):
    """Consecutive chunks of `sz` elements."""
    return [a[i:i + sz] for i in range(0, len(a), sz)]


# ---------------------------------------------------------------------------------------------
# Transform objects.

def _tfm_type(tfm_y):
    return TfmType.NO if tfm_y is None else tfm_y


def _check_target_shape(x, y, tfm_y):
    """A mask (CLASS) or image-like target (PIXEL) goes through the image's geometry, so it
    must cover the same area: the same size, or a proportional one (a target at another
    resolution, as super-resolution uses with `sz_y`). Otherwise every crop and rotation would
    pair pixels that do not belong together, silently (fastai 0.7 did not check)."""
    y = np.asarray(y)
    if y.ndim < 2 or x.ndim < 2:
        return
    (hx, wx), (hy, wy) = x.shape[:2], y.shape[:2]
    # Proportional within a pixel of rounding: hy / wy == hx / wx.
    if hx and wx and abs(hy - wy * hx / wx) <= 1 and abs(wy - hy * wx / hx) <= 1:
        return
    raise ValueError(f"the target (tfm_y={tfm_y.name}) is {hy}x{wy} (shape {y.shape}) but the image "
                     f"is {hx}x{wx}; a mask must have the image's size (or its shape at another "
                     "resolution)")


class Transform:
    """A step of a pipeline, as in fastai 0.7.

    `__call__(x, y)` draws this call's random state once (`set_state`, into `self.store`, which
    is per thread so loader threads can share the instance), then transforms according to
    `tfm_y`: NO leaves `y` alone, PIXEL and CLASS run `do_transform(x, False)` then
    `do_transform(y, True)`, COORD goes through `transform_coord`. Subclasses override
    `set_state` and `do_transform(x, is_y)`.
    """

    def __init__(self, tfm_y=TfmType.NO):
        self.tfm_y = _tfm_type(tfm_y)
        self.store = threading.local()

    def set_state(self):
        pass

    def __call__(self, x, y):
        self.set_state()
        if y is None:
            # A target-aware step called without a target transforms the image alone.
            return self.transform(x), None
        if self.tfm_y == TfmType.NO:
            return self.transform(x), y
        if self.tfm_y in (TfmType.PIXEL, TfmType.CLASS):
            return self.transform(x, y)
        return self.transform_coord(x, y)

    def transform_coord(self, x, y):
        return self.transform(x), y

    def transform(self, x, y=None):
        x = self.do_transform(x, False)
        return (x, self.do_transform(y, True)) if y is not None else x

    def do_transform(self, x, is_y):
        raise NotImplementedError(f"{type(self).__name__} must define do_transform(x, is_y)")

    # The per-thread store holds only the current call's draws: copies start without them.
    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("store", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self.store = threading.local()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()
                         if not k.startswith("_") and k != "store")
        return f"{type(self).__name__}({args})"


class CoordTransform(Transform):
    """A geometric step: COORD targets (boxes [r1, c1, r2, c2], 4 numbers each) are drawn as
    masks on the image's current shape, transformed with `do_transform(mask, True)` and read
    back as their extent, before the image itself is transformed."""

    @staticmethod
    def make_square(y, x):
        """A float64 zero array of `x`'s (rows, cols) with rows y0..y2-1, cols y1..y3-1 set to
        1 (coordinates truncated toward zero; Python slicing, so negatives count from the end)."""
        r, c, *_ = x.shape
        y1 = np.zeros((r, c))
        y = np.asarray(y).astype(int)
        y1[y[0]:y[2], y[1]:y[3]] = 1.0
        return y1

    def map_y(self, y0, x):
        y = CoordTransform.make_square(y0, x)
        return to_bb(self.do_transform(y, True))

    def transform_coord(self, x, ys):
        boxes = [self.map_y(y, x) for y in partition(np.asarray(ys), 4)]
        x = self.do_transform(x, False)
        return x, (np.concatenate(boxes) if boxes else np.zeros(0, dtype=np.float32))


class PassThru(CoordTransform):
    def do_transform(self, x, is_y):
        return x


def _y_interp(tfm_y):
    """Smooth (INTER_AREA) for PIXEL targets, nearest for masks."""
    return INTER_AREA if tfm_y == TfmType.PIXEL else INTER_NEAREST


class Scale(CoordTransform):
    """Short side -> sz (INTER_AREA); the target's -> sz_y (nearest for masks)."""

    def __init__(self, sz, tfm_y=TfmType.NO, sz_y=None):
        super().__init__(tfm_y)
        self.sz, self.sz_y = sz, sz if sz_y is None else sz_y

    def do_transform(self, x, is_y):
        if is_y:
            return scale_min(x, self.sz_y, _y_interp(self.tfm_y))
        return scale_min(x, self.sz, INTER_AREA)


class RandomScale(CoordTransform):
    """With probability p, short side -> int(sz * m), m ~ U(1, max_zoom) (or U(lo, hi))."""

    def __init__(self, sz, max_zoom, p=0.75, tfm_y=TfmType.NO, sz_y=None):
        super().__init__(tfm_y)
        self.sz, self.max_zoom, self.p = sz, max_zoom, p
        self.sz_y = sz if sz_y is None else sz_y

    def _range(self):
        if isinstance(self.max_zoom, collections.abc.Iterable):
            lo, hi = self.max_zoom
        else:
            lo, hi = 1.0, self.max_zoom
        return float(lo), float(hi)

    def set_state(self):
        lo, hi = self._range()
        mult = random.uniform(lo, hi) if random.random() < self.p else 1
        self.store.mult = mult
        self.store.new_sz = int(mult * self.sz)
        self.store.new_sz_y = int(mult * self.sz_y)

    def do_transform(self, x, is_y):
        if is_y:
            return scale_min(x, self.store.new_sz_y, _y_interp(self.tfm_y))
        return scale_min(x, self.store.new_sz, INTER_AREA)


class AddPadding(CoordTransform):
    """`pad` pixels on every side with border `mode` (OpenCV's copyMakeBorder, value 0)."""

    def __init__(self, pad, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        self.pad, self.mode = pad, mode

    def do_transform(self, im, is_y):
        r, c, *_ = im.shape
        p = int(self.pad)
        # A whole-pixel shift read with nearest neighbour is exactly copyMakeBorder.
        return _warp(im, [[1, 0, p], [0, 1, p]], c + 2 * p, r + 2 * p, INTER_NEAREST, self.mode)


class CenterCrop(CoordTransform):
    """The centre sz x sz window (sz_y x sz_y for the target)."""

    def __init__(self, sz, tfm_y=TfmType.NO, sz_y=None):
        super().__init__(tfm_y)
        self.sz, self.sz_y = sz, sz if sz_y is None else sz_y

    @property
    def min_sz(self):
        return self.sz

    def do_transform(self, x, is_y):
        return center_crop(x, self.sz_y if is_y else self.sz)


class RandomCrop(CoordTransform):
    """A targ_sz window at fractions (U(0,1), U(0,1)) of the free rows and columns; the target
    is cropped (sz_y) at the same fractions."""

    def __init__(self, targ_sz=None, tfm_y=TfmType.NO, sz_y=None, *, targ=None):
        if targ_sz is None:
            targ_sz = targ  # the keyword's name before March 2018
        if targ_sz is None:
            raise TypeError("RandomCrop() needs targ_sz, the side of the crop")
        super().__init__(tfm_y)
        self.sz, self.sz_y = targ_sz, targ_sz if sz_y is None else sz_y

    @property
    def targ_sz(self):
        return self.sz

    def set_state(self):
        self.store.rand_r = random.uniform(0, 1)
        self.store.rand_c = random.uniform(0, 1)

    def do_transform(self, x, is_y):
        r, c, *_ = x.shape
        sz = self.sz_y if is_y else self.sz
        start_r = math.floor(self.store.rand_r * (r - sz))
        start_c = math.floor(self.store.rand_c * (c - sz))
        return crop(x, start_r, start_c, sz)


class NoCrop(CoordTransform):
    """Squashes to sz x sz (INTER_AREA; nearest for masks)."""

    def __init__(self, sz, tfm_y=TfmType.NO, sz_y=None):
        super().__init__(tfm_y)
        self.sz, self.sz_y = sz, sz if sz_y is None else sz_y

    def do_transform(self, x, is_y):
        if is_y:
            return no_crop(x, self.sz_y, _y_interp(self.tfm_y))
        return no_crop(x, self.sz, INTER_AREA)


class GoogleNetResize(CoordTransform):
    """GoogLeNet's random-resized crop to targ_sz (`googlenet_resize`). The crop is drawn
    from one seed per call, so a target gets the same crop as the image."""

    def __init__(self, targ_sz, min_area_frac=0.08, min_aspect_ratio=0.75, max_aspect_ratio=1.333,
                 flip_hw_p=0.5, tfm_y=TfmType.NO, sz_y=None):
        super().__init__(tfm_y)
        self.sz, self.sz_y = targ_sz, targ_sz if sz_y is None else sz_y
        self.min_area_frac, self.min_aspect_ratio = min_area_frac, min_aspect_ratio
        self.max_aspect_ratio, self.flip_hw_p = max_aspect_ratio, flip_hw_p

    def set_state(self):
        self.store.fp = random.random() < self.flip_hw_p
        self.store.seed = random.getrandbits(64)

    def do_transform(self, x, is_y):
        sz = self.sz_y if is_y else self.sz
        interp = INTER_NEAREST if is_y and self.tfm_y in (TfmType.COORD, TfmType.CLASS) \
            else INTER_AREA
        return googlenet_resize(x, sz, self.min_area_frac, self.min_aspect_ratio,
                                self.max_aspect_ratio, self.store.fp, interp,
                                _rng=random.Random(self.store.seed))


class RandomRotate(CoordTransform):
    """With probability p, rotate by U(-deg, deg) degrees (counter-clockwise): bilinear with
    border `mode` for the image, nearest for any target (black border for masks)."""

    def __init__(self, deg, p=0.75, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        self.deg, self.p, self.mode = deg, p, mode

    def _modes(self):
        if self.tfm_y in (TfmType.COORD, TfmType.CLASS):
            return self.mode, BORDER_CONSTANT
        return self.mode, self.mode

    def set_state(self):
        self.store.rdeg = rand0(self.deg)
        self.store.rp = random.random() < self.p

    def do_transform(self, x, is_y):
        if not self.store.rp:
            return x
        mode = self._modes()[1 if is_y else 0]
        return rotate_cv(x, self.store.rdeg, mode=mode,
                         interpolation=INTER_NEAREST if is_y else INTER_AREA)

    def _spec(self):
        return {"kind": "rotate", "deg": float(self.deg), "p": float(self.p), "mode": _border(self.mode)}


class RandomLighting(Transform):
    """Brightness b' ~ U(-b, b), contrast c' ~ U(-c, c) (factor c' + 1, or 1 / (1 - c') below
    0): `lighting(x, b', factor)`; only a PIXEL target is lit too."""

    def __init__(self, b, c, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        self.b, self.c = b, c

    def set_state(self):
        self.store.b_rand = rand0(self.b)
        self.store.c_rand = rand0(self.c)

    def do_transform(self, x, is_y):
        if is_y and self.tfm_y != TfmType.PIXEL:
            return x
        b, c = self.store.b_rand, self.store.c_rand
        c = -1 / (c - 1) if c < 0 else c + 1
        return lighting(x, b, c)

    def _spec(self):
        return {"kind": "lighting", "b": float(self.b), "c": float(self.c)}


class RandomFlip(CoordTransform):
    """Left-right mirror with probability p."""

    def __init__(self, tfm_y=TfmType.NO, p=0.5):
        super().__init__(tfm_y)
        self.p = p

    def set_state(self):
        self.store.do_flip = random.random() < self.p

    def do_transform(self, x, is_y):
        return np.fliplr(x).copy() if self.store.do_flip else x

    def _spec(self):
        return {"kind": "flip", "p": float(self.p)}


class RandomDihedral(CoordTransform):
    """One of the 8 symmetries of the square, uniformly: rot90 by randint(0, 3), then a mirror
    with probability 1/2."""

    def __init__(self, tfm_y=TfmType.NO):
        super().__init__(tfm_y)

    def set_state(self):
        self.store.rot_times = random.randint(0, 3)
        self.store.do_flip = random.random() < 0.5

    def do_transform(self, x, is_y):
        x = np.rot90(x, self.store.rot_times)
        return np.fliplr(x).copy() if self.store.do_flip else x

    def _spec(self):
        return {"kind": "dihedral"}


class RandomZoom(CoordTransform):
    """Zoom about the centre by 1 + U(zoom_min, zoom_max), same output size, bilinear; border
    `mode` for the image and a PIXEL target, black for masks."""

    def __init__(self, zoom_max, zoom_min=0, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        self.zoom_max, self.zoom_min, self.mode = zoom_max, zoom_min, mode

    def set_state(self):
        self.store.zoom = self.zoom_min + (self.zoom_max - self.zoom_min) * random.random()

    def do_transform(self, x, is_y):
        z = self.store.zoom
        if z == 0:
            return x
        mode = BORDER_CONSTANT if is_y and self.tfm_y in (TfmType.COORD, TfmType.CLASS) \
            else self.mode
        r, c, *_ = x.shape
        return _warp(x, _rotation_matrix((c / 2, r / 2), 0, z + 1.0), c, r, INTER_LINEAR, mode)

    def _spec(self):
        return {"kind": "zoom", "zoom_max": float(self.zoom_max), "zoom_min": float(self.zoom_min),
                "mode": _border(self.mode)}


class RandomStretch(CoordTransform):
    """Widen (or, with probability 1/2, heighten) by 1 + U(0, max_stretch) with INTER_AREA,
    then crop the centre back to the original size."""

    def __init__(self, max_stretch, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        if max_stretch < 0:
            raise ValueError(f"RandomStretch: max_stretch must be >= 0, not {max_stretch}")
        self.max_stretch = max_stretch

    def set_state(self):
        self.store.stretch = self.max_stretch * random.random()
        self.store.stretch_dir = random.randint(0, 1)

    def do_transform(self, x, is_y):
        s = self.store.stretch
        return stretch_cv(x, s, 0) if self.store.stretch_dir == 0 else stretch_cv(x, 0, s)

    def _spec(self):
        return {"kind": "stretch", "max_stretch": float(self.max_stretch)}


class RandomRotateZoom(CoordTransform):
    """Exactly one of: `RandomRotate(deg, p=1, mode)`, `RandomZoom(zoom, mode=mode)`,
    `RandomStretch(stretch)` or nothing, with probabilities `ps` (default 0.25 each)."""

    def __init__(self, deg, zoom, stretch, ps=None, mode=BORDER_REFLECT, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        ps = [0.25] * 4 if ps is None else [float(p) for p in ps]
        if len(ps) != 4:
            raise ValueError(f"RandomRotateZoom: ps needs 4 probabilities (rotate, zoom, stretch, "
                             f"nothing), got {len(ps)}")
        if min(ps) < 0 or abs(sum(ps) - 1) > 1e-6:
            raise ValueError(f"RandomRotateZoom: ps must be 4 probabilities summing to 1, got {ps}")
        if stretch < 0:
            raise ValueError(f"RandomRotateZoom: stretch must be >= 0, not {stretch}")
        self.deg, self.zoom, self.stretch, self.ps, self.mode = deg, zoom, stretch, ps, mode
        self.transforms = [RandomRotate(deg, p=1, mode=mode, tfm_y=tfm_y),
                           RandomZoom(zoom, mode=mode, tfm_y=tfm_y),
                           RandomStretch(stretch, tfm_y=tfm_y), PassThru(tfm_y)]
        self.cum_ps = list(itertools.accumulate(ps))

    def set_state(self):
        choice = self.cum_ps[3] * random.random()
        chosen = self.transforms[3]
        for i in range(3):
            if choice < self.cum_ps[i]:
                chosen = self.transforms[i]
                break
        self.store.trans = chosen
        chosen.set_state()

    def do_transform(self, x, is_y):
        return self.store.trans.do_transform(x, is_y)

    def __repr__(self):
        return (f"RandomRotateZoom(deg={self.deg!r}, zoom={self.zoom!r}, stretch={self.stretch!r}, "
                f"ps={self.ps!r}, mode={self.mode!r}, tfm_y={self.tfm_y!r})")

    def _spec(self):
        return {"kind": "rotate_zoom", "deg": float(self.deg), "zoom": float(self.zoom),
                "stretch": float(self.stretch), "ps": tuple(self.ps), "mode": _border(self.mode)}


class Cutout(Transform):
    """Black squares of side `length` at `n_holes` random centres (`cutout`), in the image as
    it is at this step. The holes come from one seed per call (drawn from NumPy's global
    generator), so a PIXEL or CLASS target gets the same holes as the image."""

    def __init__(self, n_holes, length, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        if int(n_holes) != n_holes or n_holes < 0 or int(length) != length or length < 0:
            raise ValueError(f"Cutout: n_holes and length must be whole numbers >= 0, "
                             f"not {n_holes!r} and {length!r}")
        self.n_holes, self.length = int(n_holes), int(length)

    def set_state(self):
        self.store.seed = np.random.randint(2 ** 31)

    def do_transform(self, x, is_y):
        return cutout(x, self.n_holes, self.length, _rng=np.random.RandomState(self.store.seed))

    def _spec(self):
        return {"kind": "cutout", "n_holes": self.n_holes, "length": self.length}


class RandomBlur(Transform):
    """With probability `probability`, OpenCV's Gaussian blur with a kernel of 2k - 1 pixels,
    k drawn from `blur_strengths` (a number or a list); a PIXEL target gets the same blur, a
    CLASS mask none."""

    def __init__(self, blur_strengths=5, probability=0.5, tfm_y=TfmType.NO):
        super().__init__(tfm_y)
        strengths = np.array(blur_strengths, ndmin=1)
        if strengths.size == 0 or (strengths != strengths.astype(int)).any() or (strengths < 1).any():
            raise ValueError(f"RandomBlur: blur_strengths must be whole numbers >= 1, not {blur_strengths!r}")
        self.blur_strengths = strengths.astype(int) * 2 - 1  # kernel sizes, as the original stores them
        self.probability = probability

    def set_state(self):
        self.store.apply = random.random() < self.probability
        self.store.kernel = int(np.random.choice(self.blur_strengths))

    def do_transform(self, x, is_y):
        if not self.store.apply or (is_y and self.tfm_y == TfmType.CLASS):
            return x
        return _gaussian_blur(x, self.store.kernel)

    def _spec(self):
        return {"kind": "blur", "sizes": [int(k) for k in self.blur_strengths], "p": float(self.probability)}


class Normalize:
    """(x - m) / s over the last (channel) axis; a PIXEL target too."""

    def __init__(self, m, s, tfm_y=TfmType.NO):
        self.m, self.s = np.asarray(m, dtype=np.float32), np.asarray(s, dtype=np.float32)
        self.tfm_y = _tfm_type(tfm_y)

    def __call__(self, x, y=None):
        x = (x - self.m) / self.s
        if self.tfm_y == TfmType.PIXEL and y is not None:
            y = (y - self.m) / self.s
        return x, y

    def __repr__(self):
        return f"Normalize(m={self.m.tolist()}, s={self.s.tolist()})"


class Denormalize:
    """x * s + m over the last (channel) axis."""

    def __init__(self, m, s):
        self.m, self.s = np.asarray(m, dtype=np.float32), np.asarray(s, dtype=np.float32)

    def __call__(self, x):
        return x * self.s + self.m

    def __repr__(self):
        return f"Denormalize(m={self.m.tolist()}, s={self.s.tolist()})"


class ChannelOrder:
    """HWC -> CHW for the image and a PIXEL target; a CLASS mask keeps channel 0 (a 2-D mask
    stays as it is)."""

    def __init__(self, tfm_y=TfmType.NO):
        self.tfm_y = _tfm_type(tfm_y)

    def __call__(self, x, y):
        x = np.rollaxis(x, 2)
        if y is not None:
            if self.tfm_y == TfmType.PIXEL:
                y = np.rollaxis(y, 2)
            elif self.tfm_y == TfmType.CLASS and np.ndim(y) == 3:
                y = y[..., 0]
        return x, y

    def __repr__(self):
        return f"ChannelOrder(tfm_y={self.tfm_y!r})"


# ---------------------------------------------------------------------------------------------
# Pipelines.

_CROPS = {CropType.RANDOM: RandomCrop, CropType.CENTER: CenterCrop, CropType.NO: NoCrop,
          CropType.GOOGLENET: GoogleNetResize}
# The steps the fused Rust pipeline implements, by exact type: a subclass may override
# anything, so it runs in Python.
_FUSED_SCALES = (Scale, RandomScale)
_FUSED_AUGS = (RandomRotate, RandomLighting, RandomFlip, RandomDihedral, RandomZoom, RandomStretch,
               RandomRotateZoom, Cutout, RandomBlur)
_FUSED_CROPS = tuple(_CROPS.values())
_FUSED_BORDERS = (BORDER_CONSTANT, BORDER_REFLECT)


def _y_follows(t, target):
    """Whether the fused pass moves a `target` y through step `t` (whose tfm_y is set) as 0.7
    did: every geometric step, and the value steps that leave such a y alone (lighting and
    blur leave masks and boxes alone, cutout boxes)."""
    if type(t) in (RandomLighting, RandomBlur):
        return target != TfmType.PIXEL
    if type(t) is Cutout:
        return target == TfmType.COORD
    return True


class Transforms:
    """A full pipeline (what `tfms_from_model` returns two of): the given steps, then the crop
    of `crop_type`, `normalizer` (if any) and `ChannelOrder`.

    `t(img)` runs it on one HWC image (float32 in [0, 1], or uint8 0-255) and returns a float32
    (C, sz, sz) array; `t(img, y)` returns `(x, y)` with `y` transformed per `tfm_y`. Each call
    draws new random parameters (Python's `random` and NumPy's global generator, as 0.7).
    Loaders run a `fusable` pipeline in Rust instead (`_pipeline`).
    """

    def __init__(self, sz, tfms, normalizer, denorm, crop_type=CropType.CENTER, tfm_y=TfmType.NO,
                 sz_y=None, *, googlenet=None):
        if sz_y is None:
            sz_y = sz
        self.sz, self.sz_y, self.tfm_y = sz, sz_y, _tfm_type(tfm_y)
        self.norm, self.denorm = normalizer, denorm
        self.crop_type = CropType(crop_type)
        if self.crop_type == CropType.GOOGLENET:
            # By keyword: the original passed (sz, tfm_y, sz_y) positionally, which landed in
            # GoogleNetResize's area and aspect parameters and made every crop fall back.
            kw = dict(zip(("min_area_frac", "min_aspect_ratio", "max_aspect_ratio", "flip_hw_p"),
                          googlenet or ()))
            crop_step = GoogleNetResize(sz, tfm_y=tfm_y, sz_y=sz_y, **kw)
        else:
            crop_step = _CROPS[self.crop_type](sz, tfm_y=tfm_y, sz_y=sz_y)
        steps = list(tfms)
        # image_gen puts the scale and padding steps first; the loaders' fused path needs them
        # apart from the augmentations.
        rest = steps
        self.scale_step = self.pad_step = None
        if self.crop_type != CropType.GOOGLENET:
            if rest and type(rest[0]) in _FUSED_SCALES:
                self.scale_step, rest = rest[0], rest[1:]
            if rest and type(rest[0]) is AddPadding:
                self.pad_step, rest = rest[0], rest[1:]
        self.aug_tfms = list(rest)
        self.crop_step = crop_step
        self.tfms = steps + [crop_step] + ([normalizer] if normalizer is not None else []) + \
            [ChannelOrder(tfm_y)]
        self._seed = int.from_bytes(os.urandom(8), "little") >> 1
        self._native_pipeline = None

    @property
    def stats(self):
        return self.norm.m, self.norm.s

    def __call__(self, im, y=None):
        im = np.asarray(im)
        if im.dtype == np.uint8:
            im = im.astype(np.float32) / 255
        if y is not None and self.tfm_y in (TfmType.PIXEL, TfmType.CLASS):
            _check_target_shape(im, y, self.tfm_y)
        out = compose(im, y, self.tfms)
        if y is None:
            return np.ascontiguousarray(out, dtype=np.float32)
        x, y = out
        if self.tfm_y == TfmType.PIXEL:
            y = np.ascontiguousarray(y, dtype=np.float32)
        return np.ascontiguousarray(x, dtype=np.float32), y

    def _unfusable(self):
        """Why the fused Rust pipeline cannot run this one (naming the first step it cannot
        run), or None when it can."""
        def ty(t):
            return _tfm_type(getattr(t, "tfm_y", TfmType.NO))

        target = self.tfm_y
        if self.crop_type != CropType.GOOGLENET and self.scale_step is None:
            first = self.aug_tfms[0] if self.aug_tfms else self.crop_step
            return f"{first!r} (the pipeline does not start with Scale or RandomScale)"
        if target != TfmType.NO and self.crop_type == CropType.GOOGLENET:
            return f"{self.crop_step!r} (a GoogleNet crop with tfm_y={target!r})"
        for t in [self.scale_step, self.pad_step] + self.aug_tfms + [self.crop_step]:
            if t is None:
                continue
            allowed = _FUSED_SCALES if t is self.scale_step else \
                (AddPadding,) if t is self.pad_step else \
                _FUSED_CROPS if t is self.crop_step else _FUSED_AUGS
            if type(t) not in allowed:
                return f"{t!r} (a {type(t).__name__}, not a built-in step the loaders fuse)"
            # y follows a step when its tfm_y is the pipeline's; the scale and crop steps must
            # take y (as image_gen builds them), the others may leave it alone.
            must = t is self.scale_step or t is self.crop_step
            if ty(t) not in ((target,) if must or target == TfmType.NO else (TfmType.NO, target)):
                return f"{t!r} (tfm_y={t.tfm_y!r} in a pipeline with tfm_y={target!r})"
            if ty(t) != TfmType.NO and not _y_follows(t, target):
                return f"{t!r} (changes a {target!r} target's values)"
            if must and getattr(t, "sz_y", self.sz_y) != self.sz_y:
                return f"{t!r} (its sz_y differs from the pipeline's {self.sz_y})"
            mode = getattr(t, "mode", None)
            if mode is not None and _border_code(mode) not in _FUSED_BORDERS:
                return f"{t!r} (border mode {mode!r})"
            if t is self.scale_step and t.sz != self.sz:
                return f"{t!r} (its size differs from the pipeline's {self.sz})"
        norm = self.norm
        if norm is not None and (type(norm) is not Normalize or norm.m.size != 3
                                 or norm.s.size != 3 or ty(norm) not in (TfmType.NO, target)):
            return f"{norm!r} (the loaders normalise 3 channels only)"
        return None

    @property
    def fusable(self):
        """True when every step is a built-in (by exact type) and y, if the pipeline
        transforms it, follows steps the fused pass can move it through (geometry with the
        image's draws), so the loaders can run the pipeline as one fused pass in Rust."""
        return self._unfusable() is None

    @property
    def _pipeline(self):
        """The Rust pipeline (`_native.Pipeline`), built and checked on first use, then the
        same object for every loader of this transform."""
        if self._native_pipeline is None:
            reason = self._unfusable()
            if reason is not None:
                raise NotImplementedError(f"{reason} runs only in Python: there is no fused pipeline "
                                          "(the loaders call this transform per item instead)")
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
                CropType.GOOGLENET: "googlenet"}[self.crop_type]
        if crop == "googlenet":
            g = self.crop_step
            crop = ("googlenet", float(g.min_area_frac), float(g.min_aspect_ratio),
                    float(g.max_aspect_ratio), float(g.flip_hw_p))
        mean, std = ([0.0] * 3, [1.0] * 3) if self.norm is None else (self.norm.m, self.norm.s)
        args = {
            "sz": int(self.sz), "crop": crop, "scale": scale, "pad": pad, "pad_mode": pad_mode,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "augs": [t._spec() for t in self.aug_tfms],
        }
        if self.tfm_y != TfmType.NO:
            def follows(t):
                return t is not None and _tfm_type(getattr(t, "tfm_y", TfmType.NO)) != TfmType.NO

            kind = {TfmType.CLASS: "class", TfmType.PIXEL: "pixel", TfmType.COORD: "coord"}
            args["target"] = (kind[self.tfm_y], int(self.sz_y), follows(self.pad_step),
                              [follows(t) for t in self.aug_tfms],
                              self.tfm_y == TfmType.PIXEL and follows(self.norm))
        return args

    def __repr__(self):
        return "\n".join(repr(t) for t in self.tfms)


def image_gen(normalizer, denorm, sz, tfms=None, max_zoom=None, pad=0, crop_type=None,
              tfm_y=None, sz_y=None, pad_mode=BORDER_REFLECT, scale=None,
              min_area_frac=0.08, min_aspect_ratio=0.75, max_aspect_ratio=1.333, flip_hw_p=0.5):
    """A `Transforms`: scale (or `scale`) -> padding -> `tfms` in order -> crop -> normalise ->
    CHW; GOOGLENET crops drop the scale and padding steps. `tfm_y` and `sz_y` go to the scale,
    crop and channel-order steps (not to the padding, nor to `tfms`, which carry their own)."""
    tfm_y = _tfm_type(tfm_y)
    if tfms is None:
        tfms = []
    elif not isinstance(tfms, collections.abc.Iterable):
        tfms = [tfms]
    if sz_y is None:
        sz_y = sz
    if scale is None:
        scale = [RandomScale(sz, max_zoom, tfm_y=tfm_y, sz_y=sz_y) if max_zoom is not None
                 else Scale(sz, tfm_y, sz_y=sz_y)]
    elif not isinstance(scale, collections.abc.Iterable):
        scale = [scale]
    else:
        scale = list(scale)
    if pad:
        scale.append(AddPadding(pad, mode=pad_mode))
    crop_type = CropType.RANDOM if crop_type is None else CropType(crop_type)
    steps = list(tfms) if crop_type == CropType.GOOGLENET else scale + list(tfms)
    return Transforms(sz, steps, normalizer, denorm, crop_type, tfm_y=tfm_y, sz_y=sz_y,
                      googlenet=(min_area_frac, min_aspect_ratio, max_aspect_ratio, flip_hw_p))


def tfms_from_stats(stats, sz, aug_tfms=None, max_zoom=None, pad=0, crop_type=CropType.RANDOM,
                    tfm_y=None, sz_y=None, pad_mode=BORDER_REFLECT, norm_y=True, scale=None,
                    min_area_frac=0.08, min_aspect_ratio=0.75, max_aspect_ratio=1.333,
                    flip_hw_p=0.5):
    """(train transform, validation transform) for statistics `stats = (mean, std)` (None: no
    normalisation). With `norm_y`, a PIXEL target is normalised too."""
    if stats is None:
        tfm_norm = tfm_denorm = None
    else:
        mean, std = stats
        tfm_norm = Normalize(mean, std, tfm_y=tfm_y if norm_y else TfmType.NO)
        tfm_denorm = Denormalize(mean, std)
    crop_type = CropType(crop_type)
    val_crop = CropType.CENTER if crop_type in (CropType.RANDOM, CropType.GOOGLENET) else crop_type
    val_tfm = image_gen(tfm_norm, tfm_denorm, sz, pad=pad, crop_type=val_crop, tfm_y=tfm_y,
                        sz_y=sz_y, pad_mode=pad_mode, scale=scale)
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
