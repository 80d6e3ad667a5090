"""`learn.crit`, `learn.metrics` and fastai 0.7's callback protocol in the Rust training loop.

References: a user loss is checked against a hand-written torch.optim loop on the same head and
rows; validation losses and metrics against torch/numpy over `predict()`'s outputs; recall,
precision, fbeta and f2 against scikit-learn; the event order against fastai 0.7's order written
out by hand."""
import os
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from fastai import _native
from fastai.conv_learner import ConvLearner, resnet18
from fastai.dataset import ImageClassifierData
from fastai.metrics import f1, f2, fbeta, opt_th, precision, recall
from fastai.sgdr import Callback, LossRecorder, SaveBestModel
from fastai.transforms import tfms_from_model

from test_learner import write_images  # the two colour-coded classes the learner tests use

SZ = 32


@pytest.fixture
def folder(tmp_path):
    write_images(tmp_path)
    return tmp_path


def make(folder, bs=6, precompute=True, **kw):
    """16 training images in batches of 6: 3 batches (6, 6, 4) per epoch; 8 validation images."""
    data = ImageClassifierData.from_paths(str(folder), bs=bs, tfms=tfms_from_model(resnet18, SZ),
                                          num_workers=1, seed=0)
    return ConvLearner.pretrained(resnet18, data, precompute=precompute, **kw)


def focal(out, y, gamma=2.0):
    """A hand-written focal loss on log-probabilities."""
    logp = out.gather(1, y.view(-1, 1)).view(-1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


class FocalLoss(nn.Module):
    def forward(self, out, y):
        return focal(out, y)


def val_targets(learn):
    return torch.as_tensor(np.asarray(learn.data.val_y))


# ---- learn.crit ---------------------------------------------------------------------------

def test_default_crit_is_fastai_07s_per_data_kind():
    kinds = {(False, False): F.nll_loss, (True, False): F.binary_cross_entropy,
             (True, True): F.l1_loss, (False, True): F.l1_loss}
    for (multi, reg), expected in kinds.items():
        data = types.SimpleNamespace(is_multi=multi, is_reg=reg)
        assert ConvLearner._get_crit(None, data) is expected


def test_default_crit_attribute_and_crit_keyword(hub, folder):
    assert make(folder).crit is F.nll_loss
    mine = nn.L1Loss()
    assert make(folder, crit=mine).crit is mine


def head_rows(n, nf, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, nf, generator=g) * 2 + 0.5, torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("fused", [True, False])
def test_user_crit_steps_equal_a_torch_optim_loop(fused):
    """Three SGD steps of fastai's head (no dropout) with a focal loss, against nn.Sequential +
    the same loss + torch.optim.SGD on the same shuffled batches. With `fused` the hand-written
    head step would apply but must give way to autograd (its gradient is NLL's)."""
    bs, lr, wd = 32, 0.05, 1e-3
    torch.manual_seed(5)
    learn = _native.Learner("resnet18", 2, ps=[0.0])
    start = dict(learn.state_dict())
    hs = learn.head_start
    x, y = head_rows(3 * bs, learn.nf)
    calls = []

    def crit(out, targ):
        calls.append((tuple(out.shape), out.requires_grad))
        return focal(out, targ)
    learn.begin_fit(lrs=[lr] * 3, wds=[wd] * 3, schedule=_native.Schedule.constant(), precompute=True,
                    fused_head=fused, crit=crit)
    learn.train_epoch_tensors(x, y, bs, 42, 0, None)
    learn.end_fit()
    assert calls == [((bs, 2), True)] * 3
    ours = dict(learn.state_dict())

    nf = learn.nf
    ref = nn.Sequential(nn.BatchNorm1d(nf), nn.Linear(nf, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Linear(512, 2),
                        nn.LogSoftmax(dim=1))
    names = {"0": hs, "1": hs + 1, "3": hs + 3, "4": hs + 4}  # torch index -> our key (no Dropout)
    ref.load_state_dict({f"{i}.{k.split('.', 1)[1]}": v for i, j in names.items() for k, v in start.items()
                         if k.split(".")[0] == str(j)}, strict=False)
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    order = _native.epoch_order(len(x), 42, 0)
    for s in range(0, len(x), bs):
        idx = torch.tensor(order[s:s + bs])
        loss = focal(ref(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in ref.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        i, rest = k.split(".", 1)
        mine = ours[f"{names[i]}.{rest}"]
        assert not torch.equal(mine, start[f"{names[i]}.{rest}"]) or "running" in rest
        torch.testing.assert_close(mine, v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")


def test_user_crit_is_honoured_by_fit_validation_and_lr_find(hub, folder):
    learn = make(folder)
    learn.crit = FocalLoss()
    vals = learn.fit(1e-2, 1)
    # The validation loss is the focal loss over the validation outputs (batch-weighted mean of
    # per-batch means = the mean over all rows), not NLL.
    out = torch.as_tensor(learn.predict())
    targ = val_targets(learn)
    assert vals[0] == pytest.approx(float(focal(out, targ)), rel=1e-5)
    assert vals[0] != pytest.approx(float(F.nll_loss(out, targ)), rel=1e-3)

    seen = []
    learn.crit = lambda o, t: seen.append(1) or F.nll_loss(o, t)
    learn.lr_find()
    assert len(seen) >= 1 and len(learn.sched.losses) >= 1


def test_a_regression_style_crit_function_works_without_precompute(hub, folder):
    """A plain function (fastai-style `rmse`-like) through the image loader path."""
    learn = make(folder, precompute=False)
    n = []

    def mse_of_probs(out, targ):
        n.append(out.shape[0])
        return ((out.exp() - F.one_hot(targ, 2).float()) ** 2).mean().sqrt()
    learn.crit = mse_of_probs
    vals = learn.fit(1e-2, 1)
    out, targ = torch.as_tensor(learn.predict()), val_targets(learn)
    per_batch = [float(mse_of_probs(out[s:s + 6], targ[s:s + 6])) * len(out[s:s + 6]) for s in range(0, 8, 6)]
    assert vals[0] == pytest.approx(sum(per_batch) / 8, rel=1e-5)
    assert sum(n[:3]) == 16  # three training batches went through it


def csv_data(tmp_path, rows, **kw):
    for i, (fid, _) in enumerate(rows):
        img = np.random.default_rng(i).integers(0, 255, (36, 40, 3), dtype=np.uint8)
        os.makedirs(tmp_path / "imgs", exist_ok=True)
        Image.fromarray(img).save(tmp_path / "imgs" / f"{fid}.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(["id,tags"] + [f"{a},{b}" for a, b in rows]) + "\n")
    return ImageClassifierData.from_csv(str(tmp_path) + "/", "imgs", str(csv), bs=3, suffix=".png",
                                        tfms=tfms_from_model(resnet18, SZ), num_workers=1, seed=0,
                                        val_idxs=[0, 1, 2, 3], **kw)


@pytest.mark.parametrize("precompute", [True, False])
def test_user_crits_on_multi_label_and_regression_targets(hub, tmp_path, precompute):
    """Float targets as the data gives them: n-hot (N, c) for multi-label, (N, 1) values for
    regression; the validation loss is the user's loss over predict()'s outputs."""
    tags = ["sky water", "sky", "tree water sky", "tree", "water", "sky tree", "tree", "sky water", "water tree"]
    multi = csv_data(tmp_path / "m", [(f"m{i}", t) for i, t in enumerate(tags)])
    reg = csv_data(tmp_path / "r", [(f"r{i}", str(0.5 * i - 1)) for i in range(9)], continuous=True)
    for data, default, mine in ((multi, F.binary_cross_entropy, nn.L1Loss()), (reg, F.l1_loss, nn.MSELoss())):
        learn = ConvLearner.pretrained(resnet18, data, precompute=precompute)
        assert learn.crit is default
        learn.crit = mine
        vals = learn.fit(1e-3, 1)
        out = torch.as_tensor(learn.predict())
        targ = torch.as_tensor(np.asarray(data.val_y), dtype=torch.float32)
        assert out.shape == targ.shape
        per = [float(mine(out[s:s + 3], targ[s:s + 3])) * len(out[s:s + 3]) for s in range(0, 4, 3)]
        assert vals[0] == pytest.approx(sum(per) / 4, rel=1e-5)
        assert vals[0] != pytest.approx(float(default(out, targ)), rel=1e-3)


def test_a_crit_that_raises_comes_back_with_the_batch_named(hub, folder):
    learn = make(folder)

    class Boom(Exception):
        pass

    def crit(out, targ):
        raise Boom("mine")
    learn.crit = crit
    with pytest.raises(Boom, match="mine") as e:
        learn.fit(1e-2, 1)
    assert any("training batch 0" in n and "crit" in n for n in e.value.__notes__)
    assert learn.sched is not None  # the fit ended (end_fit ran)
    learn.crit = F.nll_loss
    assert len(learn.fit(1e-2, 1)) == 2


@pytest.mark.parametrize("ret, what", [(lambda o, t: 1.5, "float"),
                                       (lambda o, t: F.nll_loss(o, t, reduction="none"), "shape"),
                                       (lambda o, t: torch.tensor(0.5), "gradient")])
def test_a_crit_returning_no_scalar_tensor_is_a_type_error(hub, folder, ret, what):
    learn = make(folder)
    learn.crit = ret
    with pytest.raises(TypeError, match=r"learn\.crit \(<lambda>\) must return .*scalar tensor") as e:
        learn.fit(1e-2, 1)
    assert what in str(e.value) and "training batch 0" in str(e.value)
    learn.crit = F.nll_loss
    assert len(learn.fit(1e-2, 1)) == 2


def test_a_crit_that_is_not_callable_is_refused_before_training(hub, folder):
    learn = make(folder)
    learn.crit = "nll"
    with pytest.raises(TypeError, match="learn.crit must be a callable"):
        learn.fit(1e-2, 1)


# ---- callbacks -------------------------------------------------------------------------------

class Recorder(Callback):
    def __init__(self, stop_batch=None):
        self.events, self.stop_batch, self.n = [], stop_batch, 0

    def on_train_begin(self):
        self.events.append("train_begin")

    def on_phase_begin(self):
        self.events.append("phase_begin")

    def on_batch_begin(self):
        self.events.append("batch_begin")

    def on_batch_end(self, loss):
        assert isinstance(loss, float)
        self.n += 1
        self.events.append("batch_end")
        return self.n == self.stop_batch

    def on_phase_end(self):
        self.events.append("phase_end")

    def on_epoch_end(self, metrics):
        self.events.append(("epoch_end", len(metrics)))

    def on_train_end(self):
        self.events.append("train_end")


@pytest.mark.parametrize("precompute", [True, False])
def test_event_order_of_a_two_epoch_fit(hub, folder, precompute):
    learn = make(folder, precompute=precompute)
    rec = Recorder()
    mine = [rec]
    learn.fit(1e-2, 2, callbacks=mine)
    batch = ["batch_begin", "batch_end"]
    assert rec.events == (["train_begin", "phase_begin"] + batch * 3 + [("epoch_end", 2)]
                          + batch * 3 + ["phase_end", ("epoch_end", 2), "train_end"])
    assert mine == [rec]


def test_on_batch_end_true_stops_at_once_and_skips_later_callbacks(hub, folder):
    learn = make(folder)
    first, second = Recorder(stop_batch=2), Recorder()
    assert learn.fit(1e-2, 2, callbacks=[first, second]) is None
    assert first.events == ["train_begin", "phase_begin"] + ["batch_begin", "batch_end"] * 2
    # the second callback's on_batch_end was not called for the stopping batch
    assert second.events == ["train_begin", "phase_begin", "batch_begin", "batch_end", "batch_begin"]
    assert len(learn.sched.losses) == 2
    assert len(learn.fit(1e-2, 1)) == 2


def test_on_epoch_end_true_stops_after_that_epoch(hub, folder):
    class StopFirst(Callback):
        def on_epoch_end(self, metrics):
            return True
    learn = make(folder)
    rec = Recorder()
    vals = learn.fit(1e-2, 3, callbacks=[StopFirst(), rec])
    assert len(vals) == 2 and len(learn.sched.epochs) == 1
    assert ("epoch_end", 2) not in rec.events and "train_end" in rec.events


def test_a_partial_callback_and_a_callback_that_raises(hub, folder):
    class OnlyEnd(Callback):
        def __init__(self):
            self.n = 0

        def on_batch_end(self, loss):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("my callback")
    learn = make(folder)
    cb = OnlyEnd()
    with pytest.raises(RuntimeError, match="my callback") as e:
        learn.fit(1e-2, 1, callbacks=[cb])
    assert any("OnlyEnd.on_batch_end" in n for n in e.value.__notes__)
    assert len(learn.fit(1e-2, 1)) == 2


def test_an_object_with_only_some_hooks_is_a_callback(hub, folder):
    """Not derived from Callback: the hooks it lacks are skipped; a hook set on the instance is
    called like a method."""
    class Plain:
        def __init__(self):
            self.epochs, self.begins = 0, 0

            def begin():
                self.begins += 1
            self.on_batch_begin = begin

        def on_epoch_end(self, metrics):
            self.epochs += 1
    learn = make(folder)
    cb = Plain()
    learn.fit(1e-2, 2, callbacks=[cb])
    assert (cb.epochs, cb.begins) == (2, 6)


def test_loss_recorder_as_a_callback_records_what_the_loop_reports(hub, folder):
    learn = make(folder)
    rec = LossRecorder(types.SimpleNamespace(lr=[1e-3, 1e-2]))
    learn.fit(1e-2, 2, callbacks=[rec])
    np.testing.assert_allclose(rec.losses, learn.sched.losses, rtol=1e-12)
    assert list(rec.iterations) == [1, 2, 3, 4, 5, 6] and list(rec.epochs) == [3, 6]
    np.testing.assert_allclose(rec.val_losses, learn.sched.val_losses)
    assert np.all(rec.lrs == 1e-2)


def test_save_best_model_rules():
    class Model:
        saves = []

        def save(self, name):
            self.saves.append(name)
    seq = [[1.0, 0.5], [0.8, 0.5], [0.9, 0.7], [0.7, 0.7], [0.6, 0.6], [float("nan"), 0.9]]
    saved = []
    m = Model()
    cb = SaveBestModel(m, None, [object()], name="b")
    for e, v in enumerate(seq):
        before = len(m.saves)
        cb.on_epoch_end(v)
        if len(m.saves) > before:
            saved.append(e)
    assert saved == [0, 1, 2, 3]  # first, tie+lower loss, higher metric, tie+lower loss
    m.saves.clear()
    cb = SaveBestModel(m, None, [], name="b")  # no metrics: by validation loss
    saved = []
    for e, v in enumerate(seq):
        before = len(m.saves)
        cb.on_epoch_end(v)
        if len(m.saves) > before:
            saved.append(e)
    assert saved == [0, 1, 3, 4]


def test_best_save_name_keeps_the_best_epochs_weights(hub, folder):
    class Snap(Callback):
        def __init__(self):
            self.states, self.losses = [], []

        def on_epoch_end(self, metrics):
            self.states.append({k: v.clone() for k, v in learn._native.state_dict()})
            self.losses.append(metrics[0])
    learn = make(folder)
    snap = Snap()
    learn.fit(0.5, 3, metrics=[], callbacks=[snap], best_save_name="best")
    best = int(np.argmin(snap.losses))
    saved = torch.load(os.path.join(folder, "models", "best.h5"), weights_only=True)
    for k, v in snap.states[best].items():
        torch.testing.assert_close(saved[k], v, rtol=0, atol=0)


# ---- learn.metrics and the metric functions -----------------------------------------------------

def test_learn_metrics_is_used_when_fit_gets_none(hub, folder):
    class MeanMaxProb:  # a callable object without __name__: titled by its class
        def __call__(self, preds, targs):
            return preds.exp().max(1)[0].mean()

    def wrong(preds, targs):
        return (preds.argmax(1) != targs).float().mean()
    learn = make(folder)
    learn.metrics = [wrong, MeanMaxProb()]
    vals = learn.fit(1e-2, 1)
    assert len(vals) == 3
    p, t = learn.predict(), np.asarray(learn.data.val_y)
    assert vals[1] == pytest.approx(float((p.argmax(1) != t).mean()), abs=1e-6)
    per = [np.exp(p[s:s + 6]).max(1).mean() * len(p[s:s + 6]) for s in range(0, 8, 6)]
    assert vals[2] == pytest.approx(sum(per) / 8, rel=1e-5)
    assert len(learn.fit(1e-2, 1, metrics=[])) == 1  # fit's own metrics win


def test_recall_precision_fbeta_against_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    preds, targs = rng.random((20, 5)), (rng.random((20, 5)) > 0.6).astype(np.float32)
    pos = (preds > 0.4).astype(int)
    P, T = torch.tensor(preds), torch.tensor(targs)
    assert float(recall(P, T, 0.4)) == pytest.approx(sk.recall_score(targs, pos, average="micro"))
    assert float(precision(P, T, 0.4)) == pytest.approx(sk.precision_score(targs, pos, average="micro"))
    for beta in (0.5, 1, 2):
        assert float(fbeta(P, T, beta, 0.4)) == pytest.approx(sk.fbeta_score(targs, pos, beta=beta, average="micro"))
    assert float(f1(P, T)) == pytest.approx(sk.f1_score(targs, (preds > 0.5).astype(int), average="micro"))
    with pytest.raises(ValueError):
        fbeta(P, T, 0)


def test_f2_and_opt_th_against_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    preds, targs = rng.random((30, 6)) * 0.4, (rng.random((30, 6)) > 0.7).astype(int)
    targs[0] = 0  # a sample with no positives
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ths = np.arange(0.17, 0.24, 0.01)
        scores = [sk.fbeta_score(targs, preds > th, beta=2, average="samples") for th in ths]
    assert len(ths) == 7
    assert f2(preds, targs) == pytest.approx(max(scores))
    assert f2(torch.tensor(preds), torch.tensor(targs)) == pytest.approx(max(scores))
    assert opt_th(preds, targs) == pytest.approx(ths[int(np.argmax(scores))])
