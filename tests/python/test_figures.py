"""fastai._figures: returned figures are shown once in notebooks."""
import types

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from fastai._figures import ShownOnceFigure, figure, subplots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_factories_make_pyplot_figures():
    fig = figure(figsize=(3, 2))
    fig2, ax = subplots(1, 2)
    assert isinstance(fig, ShownOnceFigure) and isinstance(fig2, ShownOnceFigure)
    assert plt.fignum_exists(fig.number) and len(fig2.axes) == 2


def test_no_ipython_shell_does_nothing():
    figure()._ipython_display_()  # outside IPython: no error, nothing published


@pytest.mark.parametrize("png,closed", [("UE5H", True), (None, False)])
def test_figure_displayed_once_in_notebooks(monkeypatch, png, closed):
    """As a cell's value the figure is rendered by IPython's formatters and released from
    pyplot (so the inline backend does not show it again); without an image formatter (GUI
    backends) only its repr is shown and the window stays open."""
    IPython = pytest.importorskip("IPython")
    import IPython.display
    from IPython.core.formatters import DisplayFormatter
    fmt = DisplayFormatter()
    if png is not None:  # what matplotlib_inline registers for figures
        fmt.formatters["image/png"].for_type(Figure, lambda fig: png)
    published = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(
        display_formatter=fmt))
    monkeypatch.setattr(IPython.display, "publish_display_data",
                        lambda data, metadata=None: published.append(data))
    fig = figure()
    fig.add_subplot().plot([1, 2, 3])
    fig._ipython_display_()
    assert len(published) == 1
    assert published[0].get("image/png") == png
    assert published[0]["text/plain"].startswith("<")
    assert plt.fignum_exists(fig.number) != closed
    assert fmt.ipython_display_formatter.enabled  # restored
