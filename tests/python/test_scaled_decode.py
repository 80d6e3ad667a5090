"""The loader decodes a JPEG at the smallest libjpeg-turbo scale (1/8, 1/4 or 1/2) whose short
side still covers the pipeline's first resize; on the real photos its validation output stays within a
stated tolerance of the full-size path, and a photo no scale can reduce is unchanged."""
import os

import numpy as np
import pytest

from fastai import _native
from fastai.dataset import ImageClassifierData
from fastai.transforms import tfms_from_model
from _shared import DOGSCATS, dogscats_slice

pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.path.join(DOGSCATS, "valid")),
    reason=f"Dogs-vs-Cats photos not found at {DOGSCATS} (set FASTAI_DOGSCATS to their folder)")

N_PER_CLASS = 40
SZ = 128  # at 224 the 500 x 375 photos cannot be halved (188 < 224)


def reducible(short, need):
    """Whether 1/8, 1/4 or 1/2 keeps ceil(short * M / 8) >= need (libjpeg-turbo rounds up)."""
    return any(-(-short * m // 8) >= need for m in (1, 2, 4))


def test_validation_output_is_within_tolerance_of_the_full_size_path(tmp_path):
    dogscats_slice(str(tmp_path), 1, N_PER_CLASS)
    tfms = tfms_from_model("resnet34", SZ)
    data = ImageClassifierData.from_paths(str(tmp_path) + "/", bs=16, tfms=tfms,
                                          num_workers=2, seed=0)
    got = np.concatenate([x.cpu().numpy() for x, _ in data.val_dl])
    assert got.shape == (2 * N_PER_CLASS, 3, SZ, SZ)
    mads, reduced = [], 0
    for i, name in enumerate(data.val_ds.fnames):
        full = _native.decode_image(os.path.join(str(tmp_path), name))
        # The full-size path: the same fused pipeline on the full decode.
        ref, _ = _native.transform_image(full, tfms[1]._pipeline, 0, 0, 0)
        mad = float(np.abs(got[i] - ref).mean())
        if reducible(min(full.shape[:2]), SZ):
            reduced += 1
            assert 0 < mad < 0.3, (name, full.shape, mad)
            mads.append(mad)
        else:
            # Too small for any reduction: decoded at full size, the very same pixels.
            assert mad == 0, (name, full.shape, mad)
    # Most of these photos are about 500 x 375 (1/2 gives a short side of 188).
    assert reduced >= N_PER_CLASS
    # Measured at sz 128 with halving: over 200 photos, 162 reduced, mean 0.037 over the reduced
    # ones, largest 0.16; one 8-bit level is 0.017 to 0.018 in these units. The DCT reduction is
    # sharper than the pipeline's triangle filter, hence the textured photos' larger differences.
    assert np.mean(mads) < 0.07, np.mean(mads)
