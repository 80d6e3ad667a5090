"""Small generated images and folder trees for the data tests (written with PIL into tmp dirs)."""
import os
import struct
import zlib

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

DOGSCATS = "/work/shared/data/dogscats"


def smooth_image(h, w, seed=0):
    """uint8 (h, w, 3) made of low-frequency sines: resampling differences stay small on it."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for _ in range(3):
        fy, fx = rng.uniform(0.5, 2.0, size=2)
        py, px = rng.uniform(0, 2 * np.pi, size=2)
        v = 0.5 + 0.25 * np.sin(2 * np.pi * fy * yy / h + py) + 0.2 * np.cos(2 * np.pi * fx * xx / w + px)
        chans.append(v)
    return np.clip(np.stack(chans, -1) * 255 + 0.5, 0, 255).astype(np.uint8)


def noise_image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(h, w, 3), dtype=np.uint8)


def save(arr, path, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def make_tree(root, layout, size=(40, 56), ext="png", seed=0):
    """layout: {split: {class: [file stems]}} -> writes smooth images; returns {relpath: array}."""
    out = {}
    k = seed
    for split, classes in layout.items():
        for cls, stems in classes.items():
            for stem in stems:
                k += 1
                arr = smooth_image(size[0], size[1], seed=k)
                rel = f"{split}/{cls}/{stem}.{ext}"
                save(arr, os.path.join(root, rel))
                out[rel] = arr
    return out


def normalize_chw(img01, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """float HWC in [0, 1] -> normalised CHW float32 (the reference of the last two steps)."""
    return np.moveaxis((img01.astype(np.float32) - mean) / std, -1, 0)


def pil_scale_center_crop(arr, sz):
    """Independent reference of Scale(sz) + CenterCrop(sz) with PIL's bilinear filter."""
    h, w = arr.shape[:2]
    ratio = sz / min(h, w)
    nh, nw = max(int(np.floor(h * ratio)), sz), max(int(np.floor(w * ratio)), sz)
    im = Image.fromarray(arr).resize((nw, nh), Image.BILINEAR)
    a = np.asarray(im)
    top, left = int(np.ceil((nh - sz) / 2)), int(np.ceil((nw - sz) / 2))
    return a[top:top + sz, left:left + sz]


def png_claiming(path, width, height):
    """A PNG whose header claims width x height, with (far too little) pixel data."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def replay_googlenet(rng, h, w, flip, min_area=0.08, min_ar=0.75, max_ar=1.333):
    """fastai 0.7's GoogLeNet crop draws replayed with `rng` (a `random.Random` seeded as the
    transform's): the crop (top, left, height, width) of an h x w image, or None when all ten
    attempts fail and the transform falls back to scale + centre crop."""
    for _ in range(10):
        area = rng.uniform(min_area, 1.0) * h * w
        ar = rng.uniform(min_ar, max_ar)
        ww, hh = int(np.sqrt(area * ar) + 0.5), int(np.sqrt(area / ar) + 0.5)
        if flip:
            ww, hh = hh, ww
        if hh <= h and ww <= w:
            x1 = 0 if w == ww else rng.randint(0, w - ww)
            y1 = 0 if h == hh else rng.randint(0, h - hh)
            return y1, x1, hh, ww
    return None
