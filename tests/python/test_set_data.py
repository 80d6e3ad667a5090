"""`learn.set_data`: progressive resizing and the deployment trick of fastai 0.7 notebooks (a
new data object whose test folder holds the one image to classify). The weights carry over;
predictions come from the new data's loaders. References: the same network applied by hand
(`predict_array`) to tensors made by the new data's own transform from PIL-read pixels."""
import os

import numpy as np
import pytest
from PIL import Image

from fastai.conv_learner import ConvLearner, resnet18
from fastai.dataset import ImageClassifierData
from fastai.transforms import tfms_from_model


def _photos(root, seed=0):
    rng = np.random.RandomState(seed)
    for split in ("train", "valid"):
        for c in ("cats", "dogs"):
            os.makedirs(os.path.join(root, split, c))
            for i in range(4):
                a = rng.randint(0, 256, (40, 52, 3)).astype(np.uint8)
                Image.fromarray(a).save(os.path.join(root, split, c, f"{i}.png"))
    os.makedirs(os.path.join(root, "one"))
    one = rng.randint(0, 256, (44, 60, 3)).astype(np.uint8)
    Image.fromarray(one).save(os.path.join(root, "one", "x.png"))
    return one


def test_set_data_keeps_the_weights_and_predicts_a_one_image_test_set(tmp_path):
    root = str(tmp_path)
    one = _photos(root)
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model(resnet18, 32), bs=4, seed=1)
    learn = ConvLearner.pretrained(resnet18, data, pretrained=False, ps=0)
    learn.fit(1e-2, 1)
    before = learn.predict()

    tfms = tfms_from_model(resnet18, 48)
    bigger = ImageClassifierData.from_paths(root, tfms=tfms, bs=4, test_name="one", seed=1)
    learn.set_data(bigger)
    assert learn.data is bigger
    assert bigger.test_ds.fnames == ["one/x.png"] and len(bigger.test_dl) == 1

    # Deployment: the one test image, through the new data's validation transform.
    log_preds = learn.predict(is_test=True)
    assert log_preds.shape == (1, 2)
    x = tfms[1](one.astype(np.float32) / 255)[None]
    # The fused loader and 0.7's objects called by hand resample a little differently
    # (antialiased bilinear against INTER_AREA), which on these noise images moves the
    # confident class's log-probability by a few tenths: compare probabilities.
    np.testing.assert_allclose(np.exp(learn.predict_array(x)), np.exp(log_preds), atol=0.02)
    # And exactly what the network gives on the test loader's batch.
    xb, _ = next(iter(bigger.test_dl))
    np.testing.assert_allclose(learn.predict_array(xb.numpy()), log_preds, rtol=1e-5, atol=1e-5)
    tta, _ = learn.TTA(is_test=True)
    assert tta.shape == (5, 1, 2) and np.isfinite(tta).all()

    # The weights carried over: back on the old data, the old predictions.
    learn.set_data(data)
    np.testing.assert_allclose(learn.predict(), before, rtol=1e-5, atol=1e-5)


def test_set_data_refuses_other_classes(tmp_path):
    root = str(tmp_path)
    _photos(root)
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model(resnet18, 32), bs=4)
    learn = ConvLearner.pretrained(resnet18, data, pretrained=False)
    os.rename(os.path.join(root, "train", "dogs"), os.path.join(root, "train", "wolves"))
    os.rename(os.path.join(root, "valid", "dogs"), os.path.join(root, "valid", "wolves"))
    other = ImageClassifierData.from_paths(root, tfms=tfms_from_model(resnet18, 32), bs=4)
    with pytest.raises(ValueError, match="wolves"):
        learn.set_data(other)
