"""Figures that plotting helpers can return without notebooks showing them twice.

Use `figure()` / `subplots()` from here instead of pyplot's in any helper that returns its
figure (learn.sched.plot*, plot_confusion_matrix, ...).
"""
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["ShownOnceFigure", "figure", "subplots"]


class ShownOnceFigure(Figure):
    """A figure that a notebook shows once, also when it is the value of a cell.

    The inline backend displays every open pyplot figure at the end of a cell, and IPython
    displays a cell's value too: a returned figure would appear twice. Whichever display comes
    first renders it with IPython's configured formatters (png, retina, svg, ...) and releases
    it from pyplot, so the other finds nothing left to show. With a GUI backend there is no
    image formatter: only the repr is shown and the window stays.
    """

    def _ipython_display_(self):
        from IPython import get_ipython
        from IPython.display import publish_display_data
        ip = get_ipython()
        if ip is None:
            return
        # IPython's own rendering of a figure, minus this hook (which would recurse).
        hook = ip.display_formatter.ipython_display_formatter
        enabled, hook.enabled = hook.enabled, False
        try:
            data, metadata = ip.display_formatter.format(self)
        finally:
            hook.enabled = enabled
        publish_display_data(data, metadata=metadata)
        if set(data) - {"text/plain"}:  # drawn inline; never close a figure in a GUI window
            plt.close(self)


def subplots(*args, **kwargs):
    """`plt.subplots` making a `ShownOnceFigure`."""
    return plt.subplots(*args, FigureClass=ShownOnceFigure, **kwargs)


def figure(*args, **kwargs):
    """`plt.figure` making a `ShownOnceFigure`."""
    return plt.figure(*args, FigureClass=ShownOnceFigure, **kwargs)
