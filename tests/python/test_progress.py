"""fastai._progress: the epoch table strings of spec 6.8/12 and where bars are drawn."""
import io
import sys
import types

import pytest

import fastai._progress
import fastai.imports
from fastai._progress import (ProgressBar, fit_progress, format_header, format_meter,
                              format_row, no_bar)


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_header_spec():
    assert (format_header(["epoch", "trn_loss", "val_loss", "accuracy"])
            == "epoch      trn_loss   val_loss   accuracy   ")


@pytest.mark.parametrize("epoch,values,row", [
    (0, [0.0464871234, 0.02497512, 0.991], "    0      0.046487   0.024975   0.991     "),
    (12, [0.0175, 0.01716, 0.9945], "    12     0.0175     0.01716    0.9945    "),
])
def test_row_spec(epoch, values, row):
    assert format_row(epoch, values) == row


def test_row_accepts_numpy_and_torch_values():
    import numpy as np
    import torch
    row = format_row(0, [np.float32(0.0464871234), np.array([0.02497512]), torch.tensor(0.991)])
    assert row == "    0      0.046487   0.024975   0.991     "


def test_meter_like_tqdm():
    # 297 of 360 at 50.34 it/s: 5.9 s elapsed, 1.25 s left (spec 6.8's example line).
    assert (format_meter(297, 360, 297 / 50.34, postfix="loss=0.402")
            == " 82%|████████▎ | 297/360 [00:05<00:01, 50.34it/s, loss=0.402]")
    assert format_meter(0, 32, 0.0) == "  0%|          | 0/32 [00:00<?, ?it/s]"
    assert format_meter(32, 32, 2.0) == "100%|██████████| 32/32 [00:02<00:00, 16.00it/s]"
    assert format_meter(1, 4, 4.0).endswith("4.00s/it]")


def test_text_bar_on_tty(monkeypatch):
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    bar = ProgressBar(360, leave=True)
    assert bar.mode == "text"
    bar.update(1, {"loss": 0.40234})
    assert err.getvalue().startswith("\r  0%|")
    assert "1/360" in err.getvalue() and "loss=0.402" in err.getvalue()
    bar.close()  # leave=True: the final state is redrawn and kept on its own line
    last = err.getvalue().rsplit("\r", 1)[-1]
    assert last.startswith("  0%|") and "1/360" in last and last.endswith("\n")
    assert last.rstrip().endswith("loss=0.402]")  # (spaces wipe a longer previous line)


def test_batch_rate_counts_from_the_epochs_start(monkeypatch):
    # The batch bar appears with the first batch done; its rate must count from the start of
    # the call (epoch 1) or the end of the previous epoch's validation, not from its own
    # creation (which showed e.g. 114324.96it/s after one batch).
    clock = [100.0]
    monkeypatch.setattr(fastai._progress, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    err, out = TTY(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    p = fit_progress(2, 8, [])
    clock[0] = 102.0  # first batch: 2 s
    p.on_batch(0, 0, 0.7)
    assert "1/8 [00:02<00:14, 2.00s/it" in err.getvalue()
    clock[0] = 110.0
    p.on_epoch_end(0, [0.7, 0.6])
    clock[0] = 111.0  # the second epoch's first batch: 1 s after the first epoch ended
    p.on_batch(1, 0, 0.7)
    assert "1/8 [00:01<00:07, 1.00it/s" in err.getvalue()
    p.close()


def test_throttled_redraws(monkeypatch):
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    bar = ProgressBar(1000, mininterval=3600)
    for i in range(1, 1000):
        bar.update(i)
    assert err.getvalue().count("\r") == 1  # only the first update drew
    bar.update(1000)  # the final step always draws
    assert err.getvalue().count("\r") == 2 and "1000/1000" in err.getvalue()


def test_leave_false_erases(monkeypatch):
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    bar = ProgressBar(10, leave=False)
    bar.update(5)
    line = err.getvalue()[1:]
    bar.close()
    assert err.getvalue().endswith("\r" + " " * len(line) + "\r")
    assert "\n" not in err.getvalue()


def test_no_tty_no_bar(monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    bar = ProgressBar(10)
    bar.update(3)
    bar.close()
    assert bar.mode == "none" and out.getvalue() == "" and err.getvalue() == ""


def test_no_bar_context(monkeypatch):
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    with no_bar():
        bar = ProgressBar(10)
        bar.update(10)
        bar.close()
    assert err.getvalue() == ""
    assert ProgressBar(10).mode == "text"  # back on after the block


def test_fit_progress_table_without_tty(capsys):
    p = fit_progress(2, 3, ["accuracy"])
    for e, vals in enumerate([[0.0464871234, 0.02497512, 0.991], [0.036038, 0.024141, 0.991]]):
        for b in range(3):
            p.on_batch(e, b, 0.5)
        p.on_epoch_end(e, vals)
    p.close()
    out = capsys.readouterr()
    assert out.out == ("epoch      trn_loss   val_loss   accuracy   \n"
                       "    0      0.046487   0.024975   0.991     \n"
                       "    1      0.036038   0.024141   0.991     \n")
    assert out.err == ""


def test_fit_progress_terminal_erases_bar_before_rows(monkeypatch):
    err, out = TTY(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    with fit_progress(1, 2, []) as p:
        p.on_batch(0, 0, 0.7)
        assert "Epoch 1/1:" in err.getvalue() and "1/2" in err.getvalue()
        p.on_epoch_end(0, [0.7, 0.6])
    assert err.getvalue().endswith("\r")  # the batch bar was erased (leave=False)
    assert out.getvalue().splitlines() == ["epoch      trn_loss   val_loss   ",
                                           "    0      0.7        0.6       "]


def test_notebook_without_ipywidgets_writes_text_to_stdout(monkeypatch):
    monkeypatch.setattr(fastai.imports, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    bar = ProgressBar(4)
    bar.update(2)
    assert bar.mode == "text" and "2/4" in out.getvalue()


def test_notebook_widgets(monkeypatch):
    shown, closed = [], []

    class W:
        def __init__(self, *children, **kw):
            self.children = children[0] if children else ()
            self.__dict__.update(kw)
            self.value = kw.get("value", 0)

        def close(self):
            closed.append(self)

    fake = types.SimpleNamespace(IntProgress=W, HTML=W, HBox=W)
    monkeypatch.setattr(fastai.imports, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", fake)
    import IPython.display
    monkeypatch.setattr(IPython.display, "display", shown.append)
    p = fit_progress(2, 4, ["accuracy"])
    p.on_batch(0, 3, 0.25)
    inner = p._batch_bar._widget
    assert inner.children[0].value == 4 and inner.children[0].max == 4
    p.on_epoch_end(0, [0.25, 0.2, 0.9])
    assert closed == [inner]  # the batch bar is removed at the epoch's end
    assert len(shown) == 2  # epoch bar + batch bar
    assert shown[0].children[0].value == 1 and shown[0].children[0].max == 2
    p.close()
