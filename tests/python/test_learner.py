"""ConvLearner end to end on a tiny generated image folder with a random-weights ResNet-18
checkpoint in a temporary torch hub cache."""
import os
import re
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from fastai.conv_learner import ConvLearner, resnet18
from fastai.dataset import ImageClassifierData
from fastai.sgdr import Callback
from fastai.transforms import tfms_from_model, transforms_side_on
from _shared import clr_beta_reference, clr_reference

SZ, BS = 32, 4


def write_images(root, n_train=8, n_valid=4, seed=0):
    """Two classes that a linear model on pooled features can tell apart (colour)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for c, name in enumerate(("cats", "dogs")):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
                img[..., 2 * c] += 150
                Image.fromarray(img).save(d / f"{name[:-1]}.{i}.jpg", quality=95)


@pytest.fixture
def folder(tmp_path):
    write_images(tmp_path)
    return tmp_path


def make(folder, precompute=False, sz=SZ, aug=False, **kw):
    tfms = tfms_from_model(resnet18, sz, aug_tfms=transforms_side_on if aug else None, max_zoom=1.1 if aug else None)
    data = ImageClassifierData.from_paths(str(folder), bs=BS, tfms=tfms, num_workers=1, seed=0)
    return ConvLearner.pretrained(resnet18, data, precompute=precompute, **kw)


def state(learn):
    return {k: v.clone() for k, v in learn._native.state_dict()}


def group_of(learn):
    return {k: g for k, _, g, _ in learn._native.entries()}


def test_frozen_fit_changes_only_the_head_then_unfreeze_changes_all(hub, folder):
    learn = make(folder)
    before = state(learn)
    learn.fit(1e-2, 1)
    after = state(learn)
    groups = group_of(learn)
    changed = {g: False for g in range(3)}
    for k in before:
        if not torch.equal(before[k], after[k]):
            changed[groups[k]] = True
    # Frozen groups: neither weights nor BatchNorm running statistics move.
    assert changed == {0: False, 1: False, 2: True}
    learn.unfreeze()
    learn.fit(1e-2, 1)
    again = state(learn)
    for g in range(3):
        assert any(not torch.equal(after[k], again[k]) for k in after if groups[k] == g), g


def test_fit_returns_floats_and_prints_the_table(hub, folder, capsys):
    learn = make(folder, precompute=True)
    res = learn.fit(1e-2, 2)
    out = capsys.readouterr().out
    assert isinstance(res, list) and len(res) == 2 and all(isinstance(v, float) for v in res)
    assert 0.0 <= res[1] <= 1.0
    assert "epoch      trn_loss   val_loss   accuracy   " in out
    rows = [line for line in out.splitlines() if re.match(r"^ {4}\d +\d", line)]
    assert len(rows) == 2 and rows[0].startswith("    0      ")


def test_cycle_mult_epochs_and_schedule(hub, folder, capsys):
    learn = make(folder, precompute=True)
    learn.fit(0.1, 3, cycle_len=1, cycle_mult=2)
    out = capsys.readouterr().out
    assert len([l for l in out.splitlines() if re.match(r"^ {3,4}\d+ +\d", l)]) == 7  # 1 + 2 + 4
    B = 4  # 16 training images / bs 4
    lrs = np.array(learn.sched.lrs)
    assert len(lrs) == 7 * B
    # Hand-computed SGDR (spec 6.3): warm-up batch 0 of the first cycle (B/20 < 1), then
    # cosine within each cycle of B, 2B, 4B batches.
    want = []
    t = 0
    for n in (B, 2 * B, 4 * B):
        for i in range(n):
            want.append(0.1 / 100 if t < n / 20 else 0.1 / 2 * (1 + np.cos(np.pi * i / n)))
            t += 1
    np.testing.assert_allclose(lrs, want, rtol=1e-9)


def test_lr_find_restores_the_weights_exactly(hub, folder):
    learn = make(folder)
    before = state(learn)
    learn.lr_find(start_lr=1e-4, end_lr=1)
    after = state(learn)
    assert all(torch.equal(before[k], after[k]) for k in before)
    lrs = np.array(learn.sched.lrs)
    assert 0 < len(lrs) <= 4 and lrs[0] == pytest.approx(1e-4)
    if len(lrs) > 1:
        np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1 / 1e-4) ** (1 / 4))
    assert not os.path.exists(learn.get_model_path("tmp"))


def test_lrs_of_wrong_length_is_a_clear_error(hub, folder):
    learn = make(folder)
    with pytest.raises(ValueError, match="3 layer groups"):
        learn.fit([1e-3, 1e-2], 1)


def test_precompute_cache_is_reused_and_recomputed_when_needed(hub, folder):
    make(folder, precompute=True)
    cache = os.path.join(folder, "tmp", f"x_act_resnet18_0_{SZ}.bin")
    assert os.path.exists(cache)
    m0 = os.stat(cache).st_mtime_ns
    time.sleep(0.01)
    make(folder, precompute=True)  # same images, transform and weights: reused
    assert os.stat(cache).st_mtime_ns == m0
    # A changed image (same count, same name) must not reuse stale activations.
    img = folder / "train" / "cats" / "cat.0.jpg"
    Image.new("RGB", (48, 40), (255, 255, 255)).save(img)
    with pytest.warns(UserWarning, match="recomputed"):
        make(folder, precompute=True)
    assert os.stat(cache).st_mtime_ns != m0
    # A different sz writes its own file.
    make(folder, precompute=True, sz=SZ + 8)
    assert os.path.exists(os.path.join(folder, "tmp", f"x_act_resnet18_0_{SZ + 8}.bin"))


def test_predict_is_the_same_with_and_without_precompute(hub, folder):
    learn = make(folder, precompute=True)
    p1 = learn.predict()
    learn.precompute = False
    p2 = learn.predict()
    assert p1.shape == (8, 2) and p1.dtype == np.float32
    np.testing.assert_allclose(p1, p2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.exp(p1).sum(1), 1, rtol=1e-5)


def test_save_load_roundtrip_and_pytorch_readable(hub, folder):
    learn = make(folder)
    learn.fit(1e-2, 1)
    learn.save("m")
    saved = torch.load(learn.get_model_path("m"), weights_only=True)
    assert "0.weight" in saved and "4.0.conv1.weight" in saved and "16.bias" in saved
    other = make(folder)
    assert not np.allclose(other.predict(), learn.predict())
    other.load("m")
    np.testing.assert_allclose(other.predict(), learn.predict(), rtol=1e-5, atol=1e-6)


def test_truncated_model_file_is_a_clear_error_and_learner_still_works(hub, folder):
    from fastai.exceptions import WeightsError
    learn = make(folder)
    learn.save("m")
    p = learn.get_model_path("m")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=re.escape(p)):
        learn.load("m")
    assert learn.predict().shape == (8, 2)


def test_tta_shapes_and_first_slice_is_predict(hub, folder):
    learn = make(folder, aug=True)
    log_preds, y = learn.TTA()
    assert log_preds.shape == (5, 8, 2) and y.shape == (8,)
    np.testing.assert_allclose(log_preds[0], learn.predict(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(log_preds[1], log_preds[2])  # real, different augmentations
    assert list(y) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_keyboard_interrupt_during_fit_leaves_a_working_learner(hub, folder):
    class Interrupt(Callback):
        def __init__(self):
            self.n = 0

        def on_batch_end(self, loss):
            self.n += 1
            if self.n == 2:
                raise KeyboardInterrupt

    learn = make(folder)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(1e-2, 2, callbacks=[Interrupt()])
    assert np.isfinite(learn.predict()).all()
    assert learn.fit(1e-2, 1) is not None
    assert os.listdir(os.path.join(folder, "models")) == []


def test_unfreeze_while_precompute_turns_it_off_and_trains_the_body(hub, folder):
    learn = make(folder, precompute=True)
    learn.unfreeze()
    assert learn.precompute is False
    before = state(learn)
    learn.fit(1e-2, 1)
    groups = group_of(learn)
    assert any(not torch.equal(before[k], v) for k, v in state(learn).items() if groups[k] == 0)


def test_summary_shapes_and_model_repr(hub, folder):
    learn = make(folder)
    s = learn.summary()
    names = list(s)
    assert names[:4] == ["Conv2d-1", "BatchNorm2d-2", "ReLU-3", "MaxPool2d-4"]
    # resnet18 at 32 px: conv1 stride 2 -> 16, maxpool -> 8, layer2..4 halve -> 1.
    assert s["Conv2d-1"]["output_shape"] == [-1, 64, 16, 16]
    assert s["Sequential-8"]["output_shape"] == [-1, 512, 1, 1]
    assert s["AdaptiveConcatPool2d-9"]["output_shape"] == [-1, 1024, 1, 1]
    assert s["Flatten-10"]["output_shape"] == [-1, 1024]
    assert names[-1] == "LogSoftmax-18" and s[names[-1]]["output_shape"] == [-1, 2]
    assert s["Linear-13"]["nb_params"] == 1024 * 512 + 512 and s["Linear-13"]["trainable"]
    assert s["Conv2d-1"]["nb_params"] == 64 * 3 * 7 * 7 and not s["Conv2d-1"]["trainable"]
    tv = torchvision.models.resnet18()
    n_body = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in learn.model.parameters()) == n_body + 528_898
    assert repr(learn) == repr(learn.model) and repr(learn).startswith("Sequential(")


def test_predict_array_images_activations_and_bad_shape(hub, folder):
    learn = make(folder, precompute=True)
    x = np.stack([learn.data.val_ds[i][0] for i in range(3)])
    from_images = learn.predict_array(x)
    np.testing.assert_allclose(from_images, learn.predict()[:3], rtol=1e-4, atol=1e-5)
    acts = learn._acts["val"][:3].numpy()
    np.testing.assert_allclose(learn.predict_array(acts), from_images, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        learn.predict_array(np.zeros((2, 5), np.float32))


def test_use_clr_and_use_clr_beta_record_the_spec_schedules(hub, folder):
    learn = make(folder, precompute=True)
    B = len(learn.data.trn_dl)
    learn.fit(1e-2, 1, cycle_len=2, use_clr=(10, 4, 0.95, 0.85))
    mult, moms = np.array(clr_reference(2 * B, 2 * B, 10, 4, (0.95, 0.85))).T
    np.testing.assert_allclose(learn.sched.lrs, 1e-2 * mult, rtol=1e-12)
    np.testing.assert_allclose(learn.sched.momentums, moms, rtol=1e-12)
    assert type(learn.sched).__name__ == "CircularLR"

    learn.fit(1e-2, 1, cycle_len=3, use_clr_beta=(10, 20))
    np.testing.assert_allclose(learn.sched.lrs, 1e-2 * np.array(clr_beta_reference(3 * B, 3 * B, 10, 20)),
                               rtol=1e-12)
    assert learn.sched.momentums is None  # momentum not cycled without mom1, mom2
    assert type(learn.sched).__name__ == "CircularLR_beta"


def test_use_clr_needs_cycle_len_and_two_or_four_values(hub, folder):
    learn = make(folder, precompute=True)
    with pytest.raises(ValueError, match="cycle_len"):
        learn.fit(1e-2, 1, use_clr=(10, 4))
    with pytest.raises(ValueError, match="use_clr_beta"):
        learn.fit(1e-2, 1, cycle_len=1, use_clr_beta=(10, 20, 0.95))


def test_opt_fn_adam_and_sgd_momentum(hub, folder):
    """`opt_fn` (spec 4.1, 4.8): Adam trains (a precompute fit too, which then goes through
    autograd), SGD_Momentum is the default's form, and an optimiser the Rust loop does not
    implement is refused at construction, naming it."""
    from functools import partial

    from fastai.core import SGD_Momentum
    learn = make(folder, precompute=True, opt_fn=torch.optim.Adam)
    assert learn.opt_fn is torch.optim.Adam
    before = state(learn)
    learn.fit(1e-3, 1)
    after = state(learn)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(int(k.split(".")[0]) >= 10 for k in moved)  # the head only
    learn.precompute = False
    learn.opt_fn = partial(torch.optim.Adam, betas=(0.7, 0.99))
    learn.fit(1e-3, 1)
    sgd = SGD_Momentum(0.9)
    assert sgd.func is torch.optim.SGD and sgd.keywords == {"momentum": 0.9}
    assert make(folder).opt_fn.keywords == {"momentum": 0.9}
    with pytest.raises(TypeError, match="RMSprop"):
        make(folder, opt_fn=torch.optim.RMSprop)
    with pytest.raises(ValueError, match="amsgrad"):
        make(folder, opt_fn=partial(torch.optim.Adam, amsgrad=True))


@pytest.mark.parametrize("precompute", [False, True])
def test_a_last_training_batch_of_one_image_is_left_out_not_nan(hub, tmp_path, precompute):
    """9 training images at bs 4: the last batch of each epoch holds one image. BatchNorm
    cannot train on one row (the running variance would turn NaN and every later prediction
    with it); the batch is left out with a warning, and the model stays finite."""
    write_images(tmp_path, n_train=5)
    os.remove(tmp_path / "train" / "dogs" / "dog.4.jpg")
    learn = make(tmp_path, precompute=precompute)
    with pytest.warns(RuntimeWarning, match="left out 2 training batch"):
        learn.fit(1e-2, 2)
    assert all(torch.isfinite(v).all() for v in state(learn).values())
    assert np.isfinite(learn.predict()).all()


def test_bad_arguments_are_clear_errors_before_any_step(hub, folder):
    learn = make(folder)
    before = state(learn)
    for kw, match in [(dict(lrs=0.01, n_cycle=0), "n_cycle must be a whole number >= 1, got 0"),
                      (dict(lrs=0.01, n_cycle=1.5), "n_cycle must be a whole number"),
                      (dict(lrs=0.01, n_cycle=1, cycle_len=-1), "cycle_len must be a whole number >= 0"),
                      (dict(lrs=float("nan"), n_cycle=1), "lrs: every value must be a finite number"),
                      (dict(lrs=-0.1, n_cycle=1), "lrs: every value must be a finite number >= 0"),
                      (dict(lrs=0.01, n_cycle=1, wds=float("inf")), "wds: every value")]:
        with pytest.raises(ValueError, match=match):
            learn.fit(**kw)
    with pytest.raises(ValueError, match="start_lr must be above 0"):
        learn.lr_find(start_lr=0)
    with pytest.raises(ValueError, match="end_lr .* must be above start_lr"):
        learn.lr_find(start_lr=1e-2, end_lr=1e-3)
    with pytest.raises(ValueError, match="TTA: n_aug must be at least 1"):
        learn.TTA(n_aug=0)
    after = state(learn)
    assert all(torch.equal(before[k], after[k]) for k in before)
    tfms = tfms_from_model(resnet18, SZ)
    for kw, match in [(dict(bs=-1), "bs must be a whole number >= 1, got -1"),
                      (dict(bs=0), "bs must be"), (dict(num_workers=-1), "num_workers must be")]:
        with pytest.raises(ValueError, match=match):
            ImageClassifierData.from_paths(str(folder), tfms=tfms, **kw)


def test_save_into_a_sub_folder_of_models(hub, folder):
    learn = make(folder)
    learn.save("stage1/best")
    assert os.path.isfile(folder / "models" / "stage1" / "best.h5")
    learn.load("stage1/best")


def test_an_empty_validation_split_fails_before_training(hub, folder):
    import csv
    rows = [(f"{c}/{f}", c) for c in ("cats", "dogs") for f in sorted(os.listdir(folder / "train" / c))]
    with open(folder / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "label")] + rows)
    tfms = tfms_from_model(resnet18, SZ)
    with pytest.raises(ValueError, match=r"val_idxs: expected row indices in 0..15"):
        ImageClassifierData.from_csv(str(folder), "train", str(folder / "labels.csv"), tfms=tfms,
                                     val_idxs=[0, 16])
    data = ImageClassifierData.from_csv(str(folder), "train", str(folder / "labels.csv"), tfms=tfms,
                                        val_idxs=[], bs=BS, num_workers=1)
    learn = ConvLearner.pretrained(resnet18, data)
    before = state(learn)
    with pytest.raises(ValueError, match="the validation set is empty"):
        learn.fit(1e-2, 1)
    assert all(torch.equal(before[k], v) for k, v in state(learn).items())


def test_other_split_folders_have_their_own_cache_files(hub, folder):
    """trn_name='sample_train' on the same PATH: its own cache file, so switching back and
    forth between the two data objects reuses both caches."""
    import shutil
    shutil.copytree(folder / "train", folder / "sample_train")
    os.remove(folder / "sample_train" / "dogs" / "dog.7.jpg")
    tfms = tfms_from_model(resnet18, SZ)
    sample = lambda: ImageClassifierData.from_paths(str(folder), bs=BS, tfms=tfms, num_workers=1,
                                                    seed=0, trn_name="sample_train")
    make(folder, precompute=True)
    ConvLearner.pretrained(resnet18, sample(), precompute=True)
    tmp = folder / "tmp"
    assert sorted(os.listdir(tmp)) == sorted([f"x_act_resnet18_0_{SZ}.bin", f"x_act_val_resnet18_0_{SZ}.bin",
                                              f"x_act_resnet18_0_{SZ}_sample-train.bin"])
    stamps = {f: os.stat(tmp / f).st_mtime_ns for f in os.listdir(tmp)}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "recomputed" warning: both caches are reused
        make(folder, precompute=True)
        learn = ConvLearner.pretrained(resnet18, sample(), precompute=True)
    assert {f: os.stat(tmp / f).st_mtime_ns for f in os.listdir(tmp)} == stamps
    assert len(learn._act_rows("trn")[0]) == 15
