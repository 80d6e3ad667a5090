"""fastai 0.7's `io` module: `get_data(url, filename)`, a download with a progress bar.

Notebooks call it to fetch a data set once: it does nothing when `filename` exists. Unlike 0.7
it writes to a temporary name next to `filename` and renames only a complete download, so an
interrupted one is fetched again next time rather than trusted; it creates the destination
folder only when there is one (0.7 failed on a bare file name); and a failure is a
`DownloadError` (an `OSError`) naming the URL and the file.
"""
import os
import tempfile
import urllib.error
import urllib.request
import http.client

from ._progress import ProgressBar
from .exceptions import FastaiError
from .imports import tqdm

_CHUNK = 1 << 16


class DownloadError(FastaiError, OSError):
    """A download failed (no connection, HTTP error, connection dropped part way)."""


class TqdmUpTo(tqdm):
    """A tqdm bar with `update_to(blocks, block_size, total_size)`, the signature of
    `urllib.request.urlretrieve`'s `reporthook`."""

    def update_to(self, b=1, bsize=1, tsize=None):
        if tsize is not None and tsize >= 0:
            self.total = tsize
        self.update(b * bsize - self.n)


def get_data(url, filename):
    """Downloads `url` to `filename` unless that file exists (any URL urllib opens, `file://`
    included), showing its progress in bytes; returns `filename`."""
    if os.path.exists(filename):
        return filename
    folder = os.path.dirname(os.path.abspath(filename))
    name = url.rstrip("/").rsplit("/", 1)[-1] or url
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(filename) + ".", suffix=".partial",
                                   dir=folder)
    except OSError as e:
        raise DownloadError(f"cannot write {filename}: {e}") from e
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DownloadError(f"cannot download {url} to {filename}: {e}") from e
        with resp, os.fdopen(fd, "wb") as f:
            fd = None
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done = 0
            with ProgressBar(total, desc=name, unit="B") as bar:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise DownloadError(f"download of {url} to {filename} failed after "
                                            f"{done} bytes ({type(e).__name__}: {e})") from e
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(done)
        if total is not None and done != total:
            raise DownloadError(f"download of {url} to {filename} stopped after {done} of "
                                f"{total} bytes")
        os.replace(tmp, filename)
    except BaseException:  # incl. KeyboardInterrupt: never leave a partial file behind
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return filename


from . import _exports, imports as _imports, torch_imports as _torch_imports  # noqa: E402

__all__, __getattr__ = _exports.reexport(
    __name__, ["get_data", "TqdmUpTo", "DownloadError"], [_imports, _torch_imports])
