"""Padding on images exactly the output size: CIFAR-10's standard augmentation (pad 4, random
crop, flip on 32x32 pictures). Rows of the output that fall in the padding once read and wrote
outside the pipeline's buffers, which killed Python with SIGSEGV at the first batch. A crash
takes the whole interpreter with it, so each check runs in a child process: a crash fails the
test instead of ending pytest.

The values are checked against numpy: np.pad (mode 'symmetric' is OpenCV's BORDER_REFLECT,
'constant' is black), a mirror, and the crop at the drawn offset floor(u * (40 - 32)).
"""
import json

import numpy as np
import pytest

from _badinput_helpers import run_python
from _fixtures import IMAGENET_MEAN, IMAGENET_STD, noise_image, save

SZ = 32


def _child(code, timeout=300):
    r = run_python(code, timeout)
    assert r.returncode == 0, f"child process ended with {r.returncode}:\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_like")
    for split in ("train", "valid"):
        for k, cls in enumerate(("cat", "dog")):
            for i in range(12):
                save(noise_image(SZ, SZ, seed=100 * k + i), str(root / split / cls / f"{i}.png"))
    return root


def test_padded_random_crop_of_images_the_output_size_loads(cifar_like):
    out = _child(f"""
import json
import numpy as np
from fastai.conv_learner import *
out = {{}}
for pad in (4, 2):
    tfms = tfms_from_stats(imagenet_stats, {SZ}, aug_tfms=[RandomFlip()], pad=pad)
    data = ImageClassifierData.from_paths({str(cifar_like)!r}, tfms=tfms, bs=8)
    shapes, finite = set(), True
    for epoch in range(3):
        for x, y in data.trn_dl:
            x = np.asarray(x)
            shapes.add(x.shape[1:])
            finite &= bool(np.isfinite(x).all())
    for x, y in data.val_dl:
        finite &= bool(np.isfinite(np.asarray(x)).all())
    out[pad] = {{"shapes": [list(s) for s in shapes], "finite": finite}}
print(json.dumps(out))
""")
    ok = {"shapes": [[3, SZ, SZ]], "finite": True}
    assert out == {"4": ok, "2": ok}


def test_padded_crop_and_flip_match_numpy():
    img = noise_image(SZ, SZ, seed=3)
    out = _child(f"""
import json
import numpy as np
from fastai import _native
from fastai.transforms import *
img = np.array({img.tolist()!r}, dtype=np.uint8)
runs = []
for mode in ("reflect", "constant"):
    border = BORDER_REFLECT if mode == "reflect" else BORDER_CONSTANT
    trn, _ = tfms_from_stats(imagenet_stats, {SZ}, aug_tfms=[RandomFlip()], pad=4, pad_mode=border)
    for index in range(64):
        x, p = _native.transform_image(img, trn._pipeline, 11, 0, index)
        runs.append({{"mode": mode, "x": x.tolist(), "flip": p["augs"][0][1],
                      "crop_u": list(p["crop_u"])}})
print(json.dumps(runs))
""")
    flips = set()
    for run in out:
        mode = run["mode"]
        padded = np.pad(img / 255.0, ((4, 4), (4, 4), (0, 0)),
                        mode="symmetric" if mode == "reflect" else "constant")
        if run["flip"]:
            padded = padded[:, ::-1]
        flips.add(run["flip"])
        top, left = (int(np.floor(u * (SZ + 8 - SZ))) for u in run["crop_u"])
        crop = padded[top:top + SZ, left:left + SZ]
        ref = np.moveaxis((crop - IMAGENET_MEAN) / IMAGENET_STD, -1, 0)
        np.testing.assert_allclose(np.array(run["x"], dtype=np.float32), ref, atol=2e-5)
    assert flips == {True, False}
    assert {run["mode"] for run in out} == {"reflect", "constant"}
