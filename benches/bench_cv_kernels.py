"""The OpenCV-compatible kernels (`_native.cv_resize`, `_native.cv_warp_affine`) against
OpenCV itself, one call on one image, OpenCV held to one thread (as in a loader worker). Not a
test; run it by hand, ideally on a quiet machine (compare the ratios of one run):

    PYTHONPATH=python python benches/bench_cv_kernels.py [--repeat 50]

Prints the best-of-`repeat` milliseconds of ours and OpenCV's and ours / OpenCV for each case, OpenCV
timed as installed (its pip wheels hand linear resizes to Intel IPP's AVX2 code) and with IPP
switched off (`cv2.ipp.setUseIPP(False)`: OpenCV's own kernels). Our times include the copy of
the input array into Rust memory that the binding makes before releasing the GIL.
"""
import argparse
import os
import sys
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from fastai import _native  # noqa: E402


def best_ms(fn, repeat):
    """The fastest of `repeat` calls: on a shared machine the least disturbed one."""
    fn()  # warm caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def cases(rng):
    photo = rng.random((375, 500, 3)).astype(np.float32)
    small = rng.random((224, 298, 3)).astype(np.float32)
    rot = cv2.getRotationMatrix2D((149.0, 112.0), 10.0, 1.0)
    resize = [
        ("area shrink 500x375 -> 298x224", photo, (298, 224), cv2.INTER_AREA),
        ("area enlarge 298x224 -> 500x375", small, (500, 375), cv2.INTER_AREA),
        ("linear resize 500x375 -> 298x224", photo, (298, 224), cv2.INTER_LINEAR),
        ("linear enlarge 298x224 -> 500x375", small, (500, 375), cv2.INTER_LINEAR),
        ("nearest resize 500x375 -> 298x224", photo, (298, 224), cv2.INTER_NEAREST),
    ]
    for name, img, (w, h), interp in resize:
        yield (name,
               lambda img=img, w=w, h=h, i=interp: _native.cv_resize(img, w, h, i),
               lambda img=img, w=w, h=h, i=interp: cv2.resize(img, (w, h), interpolation=i))
    warps = [
        ("warpAffine linear reflect 224x298 rot 10", cv2.INTER_LINEAR, cv2.BORDER_REFLECT),
        ("warpAffine nearest constant 224x298 rot 10", cv2.INTER_NEAREST, cv2.BORDER_CONSTANT),
    ]
    for name, interp, border in warps:
        yield (name,
               lambda i=interp, b=border: _native.cv_warp_affine(small, rot.tolist(), 298, 224,
                                                                 i, b),
               lambda i=interp, b=border: cv2.warpAffine(small, rot, (298, 224), flags=i,
                                                         borderMode=b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=100)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    print(f"{'case':45s} {'ours ms':>8s} {'opencv ms':>10s} {'ratio':>6s} "
          f"{'no-IPP ms':>10s} {'ratio':>6s}")
    photo = rng.random((375, 500, 3)).astype(np.float32)
    fixed = best_ms(lambda: _native.cv_resize(photo, 1, 1, cv2.INTER_NEAREST), args.repeat)
    print(f"(our fixed cost per call on the 500x375 input, mostly its copy: {fixed:.3f} ms)")
    for name, ours, ref in cases(rng):
        a = best_ms(ours, args.repeat)
        cv2.ipp.setUseIPP(True)
        b = best_ms(ref, args.repeat)
        cv2.ipp.setUseIPP(False)
        c = best_ms(ref, args.repeat)
        cv2.ipp.setUseIPP(True)
        print(f"{name:45s} {a:8.3f} {b:10.3f} {a / b:6.2f} {c:10.3f} {a / c:6.2f}")


if __name__ == "__main__":
    main()
