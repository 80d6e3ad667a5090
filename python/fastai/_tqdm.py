"""`tqdm` and `trange` for code written against fastai 0.7 when the tqdm package is not
installed (0.7 depended on it; fastai-rs does not): the same calls, drawn by this package's
own progress bars (`fastai._progress`), so they show in a terminal or a notebook and stay
quiet in a pipe or a log.

Covers what scripts do with tqdm: wrap an iterable (`for x in tqdm(xs)`), `trange(n)`, manual
`update`/`close` (also as a context manager), `set_description`, `set_postfix` and
`tqdm.write`. Other keyword arguments of tqdm are accepted and ignored.
"""
import sys
import time
import weakref

from ._progress import ProgressBar

_live = weakref.WeakSet()


class tqdm:
    """A progress bar over `iterable` (or `total` steps advanced with `update`)."""

    def __init__(self, iterable=None, desc=None, total=None, leave=True, file=None,
                 mininterval=0.1, disable=False, unit="it", initial=0, postfix=None, **kwargs):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self.iterable, self.total, self.desc = iterable, total, desc or ""
        self.n = initial
        self.disable = disable
        self._bar = ProgressBar(total, desc=self.desc, leave=leave, unit=unit, file=file,
                                mininterval=mininterval, enabled=not disable,
                                start=time.monotonic())
        if postfix is not None:
            self.set_postfix(postfix) if isinstance(postfix, dict) else self.set_postfix_str(postfix)
        self._closed = False
        _live.add(self)

    def __iter__(self):
        if self.iterable is None:
            raise TypeError("tqdm: nothing to iterate over (pass an iterable)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self):
        if self.total is not None:
            return int(self.total)
        return len(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1):
        """Advances the bar by `n` steps."""
        self.n += n
        self._bar.update(self.n)

    def refresh(self):
        self._bar.update(self.n)

    def reset(self, total=None):
        self.n = 0
        if total is not None:
            self.total = self._bar.total = total
        self._bar.update(0)

    def set_description(self, desc=None, refresh=True):
        self.desc = self._bar.desc = desc or ""
        if refresh:
            self.refresh()

    set_description_str = set_description

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        values = dict(ordered_dict or {}, **kwargs)
        self._bar.update(self.n, values)

    def set_postfix_str(self, s="", refresh=True):
        self._bar.update(self.n, str(s))

    def close(self):
        if not self._closed:
            self._closed = True
            self._bar.close()
            _live.discard(self)

    def clear(self, *args, **kwargs):
        pass

    @classmethod
    def write(cls, s, file=None, end="\n"):
        """Prints `s` (on its own line, not through a bar)."""
        out = sys.stdout if file is None else file
        out.write(str(s) + end)
        out.flush()


def trange(*args, **kwargs):
    """`tqdm(range(*args), **kwargs)`."""
    return tqdm(range(*args), **kwargs)


# Outside a notebook 0.7's notebook bars were its text bars; ours choose by themselves.
tqdm_notebook = tqdm
tnrange = trange


def clear_tqdm():
    """Closes every bar still open (0.7 called it before starting a new one in a notebook)."""
    for bar in list(_live):
        bar.close()
