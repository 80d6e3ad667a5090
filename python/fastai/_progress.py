"""Progress display for `fit`, `lr_find`, precompute, TTA and downloads.

The Rust loop never prints: it reports progress through Python callbacks that call these
objects. Where a bar goes is decided once, when it is created:

* inside a Jupyter kernel: an ipywidgets bar when ipywidgets is importable, else a text bar
  written to stdout (the notebook front end honours carriage returns);
* in a terminal: a tqdm-style text bar redrawn in place with `\\r` on stderr (or stdout when
  only stdout is a terminal), at most every `mininterval` seconds;
* otherwise (pipes, CI logs) no bar at all — but the epoch table of `fit` is always printed
  to stdout, as those rows are results, not decoration;
* inside `with no_bar():` no bar either.
"""
import contextlib
import contextvars
import sys
import time

__all__ = ["ProgressBar", "FitProgress", "fit_progress", "no_bar", "format_header",
           "format_row", "format_meter"]

_BARS_OFF = contextvars.ContextVar("fastai_bars_off", default=False)
_BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, as tqdm draws them
_BAR_WIDTH = 10


@contextlib.contextmanager
def no_bar():
    """Silence progress bars created inside the block (epoch table rows still print)."""
    token = _BARS_OFF.set(True)
    try:
        yield
    finally:
        _BARS_OFF.reset(token)


def format_header(names):
    """Epoch table header: each name left-aligned in 10 characters plus a space (spec 6.8)."""
    return "".join(f"{n:<10} " for n in names)


def format_row(epoch, values):
    """Epoch table row: the epoch centred in 10 characters, then for each value a space and
    `str(round(v, 6))` left-aligned in 10 characters (spec 6.8)."""
    return f"{epoch:^10}" + "".join(f" {str(round(_scalar(v), 6)):<10}" for v in values)


def _scalar(v):
    # numpy scalars, 1-element arrays (0.7's val_loss) and tensors all have .item()
    return float(v.item() if hasattr(v, "item") else v)


def format_num(x):
    """A postfix number as tqdm shows it: 3 significant digits, compact exponent."""
    if isinstance(x, float):
        s = f"{x:.3g}".replace("e+0", "e+").replace("e-0", "e-")
        return s if len(s) < len(str(x)) else str(x)
    return str(x)


def _format_time(seconds):
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _format_size(n):
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 999.5:
            return f"{n:.2f}{unit}" if unit else f"{n:.0f}"
        n /= 1000.0
    return f"{n:.2f}P"


def _bar_cells(frac, width=_BAR_WIDTH):
    eighths = int(frac * width * 8)
    full, part = divmod(eighths, 8)
    s = _BLOCKS[-1] * full
    if full < width:
        s += _BLOCKS[part] + " " * (width - full - 1)
    return s


def format_meter(n, total, elapsed, desc="", postfix=None, unit="it"):
    """One line of a text bar, e.g.
    `' 82%|████████▎ | 297/360 [00:05<00:01, 50.34it/s, loss=0.402]'`.

    `unit='B'` shows sizes with k/M/G prefixes (downloads). `total=None` leaves out the
    percentage and the bar.
    """
    rate = n / elapsed if elapsed > 0 and n > 0 else None
    big = unit == "B"
    count = (lambda v: _format_size(v)) if big else str
    if rate is None:
        rate_s = f"?{unit}/s"
    elif rate < 1 and not big:
        rate_s = f"{1 / rate:.2f}s/{unit}"
    else:
        rate_s = f"{_format_size(rate) if big else f'{rate:.2f}'}{unit}/s"
    tail = f", {postfix}" if postfix else ""
    prefix = f"{desc}: " if desc else ""
    if total:
        remaining = _format_time((total - n) / rate) if rate else "?"
        frac = min(max(n / total, 0.0), 1.0)
        return (f"{prefix}{frac * 100:3.0f}%|{_bar_cells(frac)}| {count(n)}/{count(total)} "
                f"[{_format_time(elapsed)}<{remaining}, {rate_s}{tail}]")
    return f"{prefix}{count(n)} [{_format_time(elapsed)}, {rate_s}{tail}]"


def _postfix_text(postfix):
    if postfix is None:
        return None
    if isinstance(postfix, dict):
        return ", ".join(f"{k}={format_num(v)}" for k, v in postfix.items())
    return str(postfix)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _choose_mode(file):
    """'widget', 'text' or 'none', plus the stream for text bars."""
    if _BARS_OFF.get():
        return "none", None
    from .imports import in_notebook
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401
            return "widget", None
        except ImportError:
            return "text", sys.stdout if file is None else file
    if file is not None:
        return ("text", file) if _isatty(file) else ("none", None)
    if _isatty(sys.stderr):
        return "text", sys.stderr
    if _isatty(sys.stdout):
        return "text", sys.stdout
    return "none", None


class ProgressBar:
    """A progress bar over `total` steps (`total=None` when unknown).

    `update(n_done, postfix=None)` takes the number of steps done so far (not an increment) and
    an optional postfix (a string or a dict shown as `k=v`). `leave=False` erases the bar on
    `close()` (epoch and TTA bars); `leave=True` keeps its final state on screen. `file` forces
    the stream of text bars (e.g. stderr for downloads); `enabled=False` draws nothing.
    `start` (a `time.monotonic()` value) is when the work began, for a bar created only once
    the first step is done; the rate and the time left count from it.
    """

    def __init__(self, total, desc="", leave=True, unit="it", file=None, mininterval=0.2,
                 enabled=True, start=None):
        self.total, self.desc, self.leave, self.unit = total, desc, leave, unit
        self.mininterval = mininterval
        self.n, self.postfix = 0, None
        self.mode, self.stream = _choose_mode(file) if enabled else ("none", None)
        self._start = time.monotonic() if start is None else start
        self._last_draw = None
        self._last_len = 0
        self._closed = False
        self._widget = None
        if self.mode == "widget":
            self._make_widget()

    def update(self, n_done, postfix=None):
        self.n = n_done
        if postfix is not None:
            self.postfix = postfix
        if self.mode == "none" or self._closed:
            return
        now = time.monotonic()
        final = self.total is not None and n_done >= self.total
        # Throttle like tqdm: redraw at most every `mininterval`, but always the first and last.
        if self._last_draw is None or final or now - self._last_draw >= self.mininterval:
            self._draw(now)

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.mode == "text":
            if self.leave:
                self._draw(time.monotonic())
                self.stream.write("\n")
            else:
                self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()
        elif self.mode == "widget":
            if self.leave:
                self._draw(time.monotonic())
            else:
                self._widget.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def text(self, now=None):
        """The current text line (what a text bar shows)."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        return format_meter(self.n, self.total, elapsed, self.desc,
                            _postfix_text(self.postfix), self.unit)

    def _draw(self, now):
        self._last_draw = now
        if self.mode == "text":
            line = self.text(now)
            pad = " " * max(self._last_len - len(line), 0)  # wipe a longer previous line
            self.stream.write("\r" + line + pad)
            self.stream.flush()
            self._last_len = len(line)
        elif self.mode == "widget":
            bar, label = self._widget.children
            bar.value = min(self.n, bar.max)
            label.value = self.text(now).split("|")[-1].strip()

    def _make_widget(self):
        import ipywidgets
        from IPython.display import display
        bar = ipywidgets.IntProgress(min=0, max=self.total or 1, description=self.desc or "")
        label = ipywidgets.HTML()
        self._widget = ipywidgets.HBox([bar, label])
        display(self._widget)


class FitProgress:
    """Progress of one `fit`/`lr_find` call: an epoch bar, a batch bar per epoch (erased at
    the epoch's end) and the epoch table (spec 6.8).

    The learner calls `on_batch(epoch, batch_idx, smoothed_loss)` after each batch (batch_idx
    0-based), `on_epoch_end(epoch, values)` after validation with
    `values = [trn_loss, val_loss, *metrics]`, and `close()` at the end (also when stopped
    early). Columns are `epoch, trn_loss, val_loss, *metric_names`; the header is printed once,
    just before the first row.

    In a terminal only the batch bar is drawn (prefixed `Epoch i/n`), so that the table rows and
    the bar never fight over the same lines; in a notebook both bars are widgets.
    """

    def __init__(self, n_epoch, n_batches, metric_names=("accuracy",), file=None):
        self.n_epoch, self.n_batches = n_epoch, n_batches
        self.names = ["epoch", "trn_loss", "val_loss", *metric_names]
        self.file = file  # where table rows go; None means sys.stdout at print time
        self._header_done = False
        self._batch_bar = None
        self._epoch = None
        # The batch bar appears with the epoch's first batch done; its rate counts from here
        # (the call's start) or from the previous epoch's end.
        self._epoch_start = time.monotonic()
        # A second live text line would need cursor movement, so only notebooks get an epoch
        # bar; terminals see the epoch in the batch bar's description instead.
        self._epoch_bar = None
        if _choose_mode(None)[0] == "widget":
            self._epoch_bar = ProgressBar(n_epoch, desc="Epoch", leave=True)

    def on_batch(self, epoch, batch_idx, smoothed_loss):
        if self._batch_bar is None or epoch != self._epoch:
            self._close_batch_bar()
            self._epoch = epoch
            desc = "" if self._epoch_bar else f"Epoch {epoch + 1}/{self.n_epoch}"
            self._batch_bar = ProgressBar(self.n_batches, desc=desc, leave=False,
                                          start=self._epoch_start)
        self._batch_bar.update(batch_idx + 1, {"loss": float(smoothed_loss)})

    def on_epoch_end(self, epoch, values):
        self._close_batch_bar()
        out = self.file or sys.stdout
        if not self._header_done:
            print(format_header(self.names), file=out)
            self._header_done = True
        print(format_row(epoch, values), file=out, flush=True)
        if self._epoch_bar:
            self._epoch_bar.update(epoch + 1)
        self._epoch_start = time.monotonic()

    def close(self):
        self._close_batch_bar()
        if self._epoch_bar:
            self._epoch_bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _close_batch_bar(self):
        if self._batch_bar is not None:
            self._batch_bar.close()
            self._batch_bar = None


def fit_progress(n_epoch, n_batches, metric_names=("accuracy",), file=None):
    """The progress display of one `fit` call (see `FitProgress`)."""
    return FitProgress(n_epoch, n_batches, metric_names, file=file)
