"""Fuzz target: the image decoding entry point (`fastai._native.decode_image`, which
`fastai.dataset.open_image` and every loader use) over mutated JPEG/PNG/BMP/GIF/WebP/TIFF seeds.

Run (see fuzz/README.md):

    PYTHONPATH=python python fuzz/fuzz_decode.py -max_total_time=180 -rss_limit_mb=3072 -timeout=20

Contract checked for every input: decode_image either returns a uint8 (H, W, 3) array with
H, W >= 1, or raises an OSError (ImageDecodeError is one) naming the file. Anything else (a
crash, another exception type, a hang past -timeout) is a finding. A panic inside a codec is
caught by the library and reported as "the decoder failed on malformed data"; such inputs are
not crashes but codec bugs, so they are saved under fuzz/findings/ and counted.
"""
import hashlib
import os
import sys
import tempfile
import time

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import numpy as np  # noqa: E402
from fastai import _native  # noqa: E402
from fastai.exceptions import ImageDecodeError  # noqa: E402

# Inputs are written to memory-backed storage when available (one write per execution).
_DIR = tempfile.mkdtemp(prefix="fuzz_decode_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_PATH = os.path.join(_DIR, "input.img")
FINDINGS = os.path.join(HERE, "findings")
SLOW_S = 5.0
stats = {"runs": 0, "ok": 0, "decode_error": 0, "os_error": 0, "panics": 0, "slow": 0}


def _save_finding(kind, data):
    os.makedirs(FINDINGS, exist_ok=True)
    name = f"{kind}-{hashlib.sha1(data).hexdigest()[:16]}"
    with open(os.path.join(FINDINGS, name), "wb") as f:
        f.write(data)
    return name


def TestOneInput(data):
    stats["runs"] += 1
    if stats["runs"] % 10000 == 0:
        # libFuzzer ends the process with exit(), past Python's atexit: report as we go.
        print(f"fuzz_decode stats: {stats}", file=sys.stderr, flush=True)
    with open(_PATH, "wb") as f:
        f.write(data)
    t = time.monotonic()
    try:
        img = _native.decode_image(_PATH)
    except ImageDecodeError as e:
        msg = str(e)
        if _PATH not in msg:
            raise AssertionError(f"decode error does not name the file: {msg}") from e
        if "failed on malformed data" in msg:
            stats["panics"] += 1
            print(f"panic caught in a codec, saved as {_save_finding('panic', data)}", file=sys.stderr)
        else:
            stats["decode_error"] += 1
        return
    except OSError as e:  # e.g. a read error; must still name the file
        if _PATH not in str(e):
            raise
        stats["os_error"] += 1
        return
    finally:
        if time.monotonic() - t > SLOW_S:
            stats["slow"] += 1
            print(f"slow input ({time.monotonic() - t:.1f}s), saved as {_save_finding('slow', data)}",
                  file=sys.stderr)
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
            and img.shape[2] == 3 and img.shape[0] >= 1 and img.shape[1] >= 1):
        raise AssertionError(f"bad decode result: {type(img)} {getattr(img, 'shape', None)}")
    stats["ok"] += 1


# ---------------------------------------------------------------------------------------------
# Mutation. The Rust decoders are not instrumented for coverage, so libFuzzer sees every input
# as equally (un)interesting and shrinks its corpus to one byte. The custom mutator therefore
# starts most mutations from a seed file and adds format-aware steps (PNG chunk CRCs fixed up so
# mutations get past the CRC check; JPEG segment and frame-header fields) on top of libFuzzer's
# own byte-level mutations.

SEEDS = []


def _load_seeds(corpus):
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), "rb") as f:
            data = f.read()
        if data:
            SEEDS.append(data)


def _fix_png_crcs(b):
    import struct
    import zlib
    if b[:8] != b"\x89PNG\r\n\x1a\n":
        return b
    i = 8
    while i + 12 <= len(b):
        n = struct.unpack(">I", b[i:i + 4])[0]
        end = i + 8 + n
        if end + 4 > len(b):
            break
        b[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(b[i + 4:end])))
        i = end + 4
    return b


def _jpeg_field(b, rng):
    """Overwrites a 16-bit field right after a random JPEG marker (segment length, or the
    height/width of a frame header) with an edge value."""
    marks = [i for i in range(len(b) - 9) if b[i] == 0xFF and b[i + 1] not in (0x00, 0xFF)]
    if not marks:
        return b
    i = rng.choice(marks)
    off = rng.choice([2, 5, 7]) if b[i + 1] in (0xC0, 0xC1, 0xC2) else 2
    v = rng.choice([0, 1, 2, 7, 8, 255, 256, 4096, 16384, 16385, 65535, rng.randrange(65536)])
    b[i + off:i + off + 2] = v.to_bytes(2, "big")
    return b


def CustomMutator(data, max_size, seed):
    import random
    rng = random.Random(seed)
    base = rng.choice(SEEDS) if (SEEDS and (rng.random() < 0.8 or not data)) else data
    out = bytes(base)
    for _ in range(rng.randint(1, 4)):
        out = atheris.Mutate(out, max(max_size, len(out)))
    b = bytearray(out)
    if b[:2] == b"\xff\xd8" and rng.random() < 0.5:
        b = _jpeg_field(b, rng)
    if rng.random() < 0.1 and len(b) > 4:
        del b[rng.randrange(2, len(b)):]  # truncation anywhere
    if rng.random() < 0.7:
        b = _fix_png_crcs(b)
    return bytes(b[:max_size])


def write_seeds(corpus):
    """Small valid files of every format, plus a few known-bad shapes, as the starting corpus."""
    import _badinput_helpers as h
    os.makedirs(corpus, exist_ok=True)
    seeds = h.seed_files()
    j = seeds["base.jpg"]
    seeds["truncated.jpg"] = j[:len(j) // 2]
    seeds["huge_sof.jpg"] = h.with_sof_dimensions(j, 65000, 65000)
    seeds["big_sof.jpg"] = h.with_sof_dimensions(j, 3000, 2000)
    for name, data in seeds.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)


def main():
    corpus = os.path.join(HERE, "corpus_decode")
    if not os.path.isdir(corpus) or not os.listdir(corpus):
        write_seeds(corpus)
    _load_seeds(corpus)
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        args.append(corpus)  # default corpus directory (mutations are added to it)
    atheris.Setup(args, TestOneInput, custom_mutator=CustomMutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
