"""fastai.sgdr: schedule formulas against the spec's test vectors (section 12) and the plots'
data, read back from the returned figures."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from fastai.sgdr import (Callback, CosAnneal, LossRecorder, LR_Finder, cos_anneal_lrs,
                         lr_find_lrs, sum_geom)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("args,epochs", [((1, 2, 3), 7), ((2, 2, 3), 14), ((1, 1, 3), 3),
                                         ((1, 3, 3), 13)])
def test_sum_geom(args, epochs):
    assert sum_geom(*args) == epochs


def test_cos_anneal_spec_vectors():
    # N_0 = 40 batches (40 batches/epoch, cycle_len 1), cycle_mult 2, base 1 (spec 12).
    lrs = cos_anneal_lrs(40, 1, 2, 3, 1.0)
    assert lrs.shape == (40 * 7,)
    expected = {0: 0.01, 1: 0.01, 2: 0.99384, 20: 0.5, 39: 0.00154, 40: 1.0, 119: 0.00039,
                120: 1.0}
    for t, v in expected.items():
        assert lrs[t] == pytest.approx(v, abs=5e-6), t
    # Hand computation of an interior point of the second cycle (i = 20 of N = 80).
    assert lrs[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 80)))
    # The last batch of the third cycle (i = 159 of 160) is nearly 0, never negative.
    assert 0 < lrs[-1] < 1e-3


def test_cos_anneal_warmup_only_start_of_first_cycle():
    # 360 batches/epoch: ceil(360/20) = 18 warm-up batches (spec 6.3).
    lrs = cos_anneal_lrs(360, 1, 1, 3, 0.01)
    assert np.allclose(lrs[:18], 1e-4)
    assert lrs[18] == pytest.approx(0.01 / 2 * (1 + math.cos(math.pi * 18 / 360)))
    assert lrs[360] == pytest.approx(0.01)  # restart of cycle 2, no warm-up there
    assert lrs[720] == pytest.approx(0.01)


def test_cos_anneal_per_group_keeps_ratios():
    base = np.array([1e-4, 1e-3, 1e-2])
    lrs = cos_anneal_lrs(10, 1, 2, 3, base)
    assert lrs.shape == (70, 3)
    assert np.allclose(lrs / lrs[:, -1:], base / base[-1])
    assert np.allclose(lrs[:, -1], cos_anneal_lrs(10, 1, 2, 3, 1e-2))


def test_lr_find_exponential_spec_vectors():
    lrs = lr_find_lrs(1e-5, 10, 360)
    assert lrs.shape == (360,)
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[180] == pytest.approx(1e-2)
    assert lrs[1] / lrs[0] == pytest.approx(1.03912, abs=1e-5)
    assert np.allclose(lrs[1:] / lrs[:-1], 1e6 ** (1 / 360))
    assert lrs[-1] < 10  # just below end_lr


def test_lr_find_linear_starts_at_start_lr():
    lrs = lr_find_lrs(1e-3, 1.0, 100, linear=True)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[50] == pytest.approx(1e-3 + (1.0 - 1e-3) * 0.5)
    assert np.allclose(np.diff(lrs), (1.0 - 1e-3) / 100)


def test_lr_find_per_group():
    start = np.array([1e-7, 1e-6, 1e-5])
    lrs = lr_find_lrs(start, 10, 360)
    assert lrs.shape == (360, 3)
    assert lrs[180, 2] == pytest.approx(1e-2)
    assert lrs[180, 0] == pytest.approx(1e-4)


def test_callback_protocol_defaults():
    cb = Callback()
    cb.on_train_begin()
    cb.on_batch_begin()
    assert cb.on_batch_end(0.5) is None
    assert cb.on_epoch_end([0.1, 0.9]) is None
    cb.on_train_end()


def _line(fig, ax_index=0):
    ax = fig.axes[ax_index]
    (line,) = ax.get_lines()
    return ax, line.get_xdata(), line.get_ydata()


def test_plot_lr_draws_lrs_against_iterations():
    lrs = cos_anneal_lrs(20, 1, 1, 2, 0.1)
    rec = CosAnneal(lrs=lrs, losses=np.linspace(1, 0.1, 40))
    fig = rec.plot_lr()
    assert len(fig.axes) == 1
    ax, x, y = _line(fig)
    assert list(x) == list(range(1, 41))
    assert np.allclose(y, lrs)
    assert ax.get_xlabel() == "iterations" and ax.get_ylabel() == "learning rate"


def test_plot_lr_with_momentum_has_two_panels():
    mom = np.linspace(0.95, 0.85, 30)
    rec = LossRecorder(lrs=np.full(30, 0.1), losses=np.ones(30), momentums=mom)
    fig = rec.plot_lr()
    assert len(fig.axes) == 2
    assert tuple(fig.get_size_inches()) == (12, 4)
    ax, x, y = _line(fig, 1)
    assert np.allclose(y, mom) and ax.get_ylabel() == "momentum"


def test_plot_loss_skips_ends():
    losses = np.arange(100, dtype=float)
    rec = LossRecorder(lrs=np.ones(100), losses=losses)
    ax, x, y = _line(rec.plot_loss())
    assert list(x) == list(range(11, 96))  # iterations 1..100 without 10 first, 5 last
    assert list(y) == list(range(10, 95))
    assert ax.get_ylabel() == "loss"
    _, x, _ = _line(rec.plot_loss(n_skip=0, n_skip_end=0))
    assert len(x) == 100


def test_lr_finder_plot_log_x_and_n_skip_end_zero():
    lrs = lr_find_lrs(1e-5, 10, 50)
    losses = np.linspace(2.0, 0.5, 50)
    finder = LR_Finder(lrs=lrs, losses=losses)
    ax, x, y = _line(finder.plot())
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "learning rate (log scale)" and ax.get_ylabel() == "loss"
    assert np.allclose(x, lrs[10:45]) and np.allclose(y, losses[10:45])
    # Rough edge 38 fixed: n_skip_end=0 plots through the last point.
    _, x, y = _line(finder.plot(n_skip=10, n_skip_end=0))
    assert len(x) == 40 and x[-1] == lrs[-1] and y[-1] == losses[-1]


def test_plots_write_no_files_and_keep_backend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = plt.get_backend()
    rec = LR_Finder(lrs=lr_find_lrs(1e-5, 10, 30), losses=np.ones(30))
    rec.plot_lr(), rec.plot_loss(), rec.plot()
    assert list(tmp_path.iterdir()) == []
    assert plt.get_backend() == backend


def test_from_record():
    rec = LR_Finder.from_record({"lrs": np.array([1e-5, 1e-4]), "losses": np.array([1.0, 0.9]),
                                 "epochs": [], "init_lrs": 1e-5})
    assert isinstance(rec, LR_Finder)
    assert list(rec.iterations) == [1, 2]
    assert rec.epoch == 0 and rec.init_lrs.tolist() == [1e-5]
    with pytest.raises(TypeError, match="lossez"):
        LossRecorder.from_record({"lossez": [1.0]})


def test_lengths_must_match():
    with pytest.raises(ValueError, match="lrs has 2 entries but losses has 3"):
        LossRecorder(lrs=[1, 2], losses=[1, 2, 3])


def test_plots_return_figures_shown_once_in_notebooks():
    from fastai._figures import ShownOnceFigure  # see test_figures.py
    rec = LR_Finder(lrs=lr_find_lrs(1e-5, 10, 30), losses=np.ones(30), momentums=np.ones(30))
    for fig in (rec.plot_lr(), rec.plot_loss(), rec.plot()):
        assert isinstance(fig, ShownOnceFigure)
