"""fastai.metrics and fastai.plots against hand computations (spec 9.4-9.6)."""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from fastai.metrics import accuracy, accuracy_np
from fastai.plots import plot_confusion_matrix, plots

CM = np.array([[995, 5], [7, 993]])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_accuracy_np_by_hand():
    preds = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    targs = np.array([0, 1, 1, 1, 0])
    assert accuracy_np(preds, targs) == pytest.approx(4 / 5)  # only row 2 is wrong
    assert isinstance(accuracy_np(preds, targs), float)
    # Log-probabilities give the same argmax.
    assert accuracy_np(np.log(preds), targs) == pytest.approx(0.8)


def test_accuracy_torch_by_hand():
    preds = torch.tensor([[-0.1, -2.3], [-1.6, -0.2], [-0.7, -0.69], [-3.0, -0.05]])
    targs = torch.tensor([0, 1, 0, 1])
    assert float(accuracy(preds, targs)) == pytest.approx(3 / 4)  # row 2: -0.69 > -0.7


def test_plot_confusion_matrix_prints_and_labels(capsys):
    fig = plot_confusion_matrix(CM, ["cats", "dogs"])
    assert capsys.readouterr().out == "[[995   5]\n [  7 993]]\n"
    ax = fig.axes[0]
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t for t in ax.texts}
    assert len(ax.texts) == 4
    # Cell (row i, column j) is drawn at x=j, y=i; white above max/2 = 496.5, else black.
    expected = {(0, 0): ("995", "white"), (1, 0): ("5", "black"),
                (0, 1): ("7", "black"), (1, 1): ("993", "white")}
    for pos, (s, colour) in expected.items():
        assert texts[pos].get_text() == s
        assert matplotlib.colors.same_color(texts[pos].get_color(), colour)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cats", "dogs"]
    assert ax.get_ylabel() == "True label" and ax.get_xlabel() == "Predicted label"


def test_plot_confusion_matrix_axis_labels_inside_the_figure(capsys):
    # The original laid the figure out before adding the axis labels, which cut the x label
    # off at the bottom of a saved or inline figure.
    fig = plot_confusion_matrix(CM, ["cats", "dogs"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for label in (fig.axes[0].xaxis.label, fig.axes[0].yaxis.label):
        ext = label.get_window_extent(renderer)
        assert ext.y0 >= box.y0 and ext.x0 >= box.x0 and ext.y1 <= box.y1 and ext.x1 <= box.x1, ext


def test_plot_confusion_matrix_normalized(capsys):
    fig = plot_confusion_matrix(CM, ["cats", "dogs"], normalize=True)
    assert capsys.readouterr().out == "[[0.99 0.01]\n [0.01 0.99]]\n"
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0.01", "0.01", "0.99", "0.99"]


def test_sklearn_confusion_matrix_with_numpy_labels():
    from sklearn.metrics import confusion_matrix
    y = np.array([0] * 1000 + [1] * 1000, dtype=np.int64)
    log_preds = np.zeros((2000, 2), dtype=np.float32)
    wrong = np.r_[np.arange(5), 1000 + np.arange(7)]  # 5 cats called dogs, 7 dogs called cats
    pred_cls = y.copy()
    pred_cls[wrong] = 1 - pred_cls[wrong]
    log_preds[np.arange(2000), pred_cls] = 1.0
    preds = np.argmax(log_preds, axis=1)
    assert confusion_matrix(y, preds).tolist() == CM.tolist()


def test_plots_grid_shape():
    ims = np.random.rand(6, 3, 8, 8).astype(np.float32)  # NCHW: transposed to NHWC
    fig = plots(ims, rows=2, titles=list("abcdef"))
    assert len(fig.axes) == 6
    shapes = {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes}
    assert shapes == {(2, 3)}
    assert fig.axes[4].get_title() == "e"
    assert fig.axes[0].get_images()[0].get_array().shape == (8, 8, 3)
