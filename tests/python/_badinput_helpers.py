"""Builders of malformed and unusual image files for tests/python/test_bad_input.py (and seeds
for fuzz/fuzz_decode.py). Everything is generated here from numpy arrays with PIL or by hand,
so the tests need no data files."""
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")


def pattern(h, w, seed=0):
    """uint8 (h, w, 3): smooth gradients plus a little noise (JPEG-friendly, not constant)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([128 + 100 * np.sin(xx / max(w, 1) * 3 + k) * np.cos(yy / max(h, 1) * 2 - k)
                     for k in range(3)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def jpeg_bytes(img, **kw):
    """JPEG file bytes of a PIL image or uint8 array (baseline, so the frame header is SOF0)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    kw.setdefault("quality", 95)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def png_bytes(img, **kw):
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def write_bytes(path, data):
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def jpeg_segments(data):
    """[(marker, offset of the marker's 0xFF, segment length field)] up to the first SOS."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    out, i = [], 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"no marker at offset {i}")
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        out.append((marker, i, length))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        i += 2 + length
    return out


def with_sof_dimensions(data, width, height):
    """The same JPEG with its SOF0 frame header claiming `width` x `height` pixels (the scan
    data stays that of the small image)."""
    for marker, off, _ in jpeg_segments(data):
        if marker == 0xC0:
            # SOF0: FF C0, length (2), precision (1), height (2), width (2), ...
            b = bytearray(data)
            b[off + 5:off + 7] = struct.pack(">H", height)
            b[off + 7:off + 9] = struct.pack(">H", width)
            return bytes(b)
    raise ValueError("no SOF0 segment (is the JPEG progressive?)")


def _png_chunk(tag, payload):
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def png16_rgb_bytes(arr16):
    """A 16-bit-per-channel RGB PNG of a uint16 (h, w, 3) array, written by hand (PIL cannot
    write 16-bit colour PNGs)."""
    h, w, _ = arr16.shape
    rows = b"".join(b"\x00" + arr16[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def png16_grey_bytes(arr16):
    """A 16-bit greyscale PNG of a uint16 (h, w) array, written by hand."""
    h, w = arr16.shape
    rows = b"".join(b"\x00" + arr16[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def seed_files():
    """{name: bytes}: small valid files of every decoded format, the fuzzing seeds."""
    arr = pattern(12, 16)
    im = Image.fromarray(arr)
    out = {
        "base.jpg": jpeg_bytes(arr),
        "prog.jpg": jpeg_bytes(arr, progressive=True),
        "grey.jpg": jpeg_bytes(im.convert("L")),
        "cmyk.jpg": jpeg_bytes(im.convert("CMYK")),
        "sub.jpg": jpeg_bytes(arr, subsampling=2, quality=50),
        "rgb.png": png_bytes(arr),
        "rgba.png": png_bytes(np.dstack([arr, arr[..., :1]])),
        "pal.png": png_bytes(im.convert("P")),
        "grey16.png": png16_grey_bytes((arr[..., 0].astype(np.uint16) * 257)),
        "rgb16.png": png16_rgb_bytes(arr.astype(np.uint16) * 257),
    }
    for fmt, ext in (("BMP", "bmp"), ("GIF", "gif"), ("TIFF", "tif"), ("WEBP", "webp")):
        buf = io.BytesIO()
        (im.convert("P") if fmt == "GIF" else im).save(buf, format=fmt)
        out[f"a.{ext}"] = buf.getvalue()
    return out


def run_python(code, timeout, env_extra=None):
    """Runs `code` in a fresh interpreter with the package on the path. Returns the completed
    process; a hang becomes subprocess.TimeoutExpired (the child is killed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PYTHON_DIR, HERE, env.get("PYTHONPATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)
