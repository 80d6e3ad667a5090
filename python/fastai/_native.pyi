# The Rust extension's interface (src/py/), typed by hand and checked against the built module
# by `python -m mypy.stubtest fastai._native` (scripts/test.sh). Defaults shown as `...` are
# Rust values the module does not spell out; the docstrings of the bindings give them.
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt
import torch

_Path = str | os.PathLike[str]
_F32 = npt.NDArray[np.float32]
_I64 = npt.NDArray[np.int64]
# Images in memory: uint8 (0-255) or float32 (0-1).
_Pixels = npt.NDArray[np.uint8] | npt.NDArray[np.float32]
# Labels: int64 (n,) class indices, or float32 (n, k) rows (zeros (n,) when unlabelled).
_Labels = npt.NDArray[np.int64] | npt.NDArray[np.float32]
_TargetKind = Literal["none", "class", "multihot", "continuous"]
_Border = Literal["reflect", "constant"]
_Crop = (
    Literal["random", "center", "no"]
    | tuple[Literal["googlenet"], float, float, float, float]
)
_Output = Literal["log_softmax", "sigmoid", "identity"]
_SplitName = Literal["trn", "val", "test"]
# (callable forward(x, train, bn_train) -> Tensor, layer name, [(key, tensor, is_parameter)]).
_CustomHead = tuple[
    Callable[[torch.Tensor, bool, bool], torch.Tensor],
    str,
    Sequence[tuple[str, torch.Tensor, bool]],
]
_State = Sequence[tuple[str, torch.Tensor]]

__all__ = [
    "__version__", "build_profile", "malloc_tuned", "IMAGE_EXTENSIONS", "ARCH_SPECS", "NORM_STATS",
    "Pipeline", "transform_image", "transform_item", "cv_resize", "cv_warp_affine",
    "ThreadPool", "Dataset", "DataLoader", "BatchIter", "BatchMemory",
    "scan_labelled", "scan_flat", "read_label_csv", "check_files_exist", "resize_images",
    "decode_image",
    "Schedule", "Optimizer", "Activations", "Learner", "epoch_order", "cpu_has_native_bf16",
    "_roundtrip_tensor", "_roundtrip_array", "_raise_error", "_backbone_features",
]

__version__: str
build_profile: Literal["debug", "release"]
malloc_tuned: bool
IMAGE_EXTENSIONS: list[str]
# One dict per architecture: name, cut, split, stats, and hub_files or package.
ARCH_SPECS: tuple[dict[str, Any], ...]
# Statistics name -> (mean, std) per channel.
NORM_STATS: dict[str, tuple[list[float], list[float]]]

# ---- transforms -------------------------------------------------------------------------

@final
class Pipeline:
    def __new__(
        cls,
        *,
        sz: int,
        crop: _Crop,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float, float] | None = None,
        pad: int = 0,
        pad_mode: _Border = ...,
        augs: Sequence[dict[str, Any]] = ...,
        target: tuple[str, int, bool, Sequence[bool], bool] | None = None,
    ) -> Pipeline: ...
    @property
    def sz(self) -> int: ...

def transform_image(
    img: _Pixels, pipeline: Pipeline, seed: int, epoch: int, index: int
) -> tuple[_F32, dict[str, Any]]: ...
def transform_item(
    img: _Pixels, y: Any, pipeline: Pipeline, seed: int, epoch: int, index: int
) -> tuple[_F32, npt.NDArray[Any], dict[str, Any]]: ...

# ---- OpenCV-compatible kernels (src/py/cv.rs) ----------------------------------------------

def cv_resize(
    img: _F32, width: int, height: int, interpolation: int, fx: float = 0.0, fy: float = 0.0
) -> _F32: ...
def cv_warp_affine(
    img: _F32,
    m: Sequence[Sequence[float]],
    width: int,
    height: int,
    interpolation: int,
    border: int,
) -> _F32: ...

# ---- data -------------------------------------------------------------------------------

@final
class ThreadPool:
    def __new__(cls, n: int) -> ThreadPool: ...
    @property
    def num_threads(self) -> int: ...

@final
class Dataset:
    @staticmethod
    def from_files(
        root: _Path,
        names: Sequence[str],
        kind: _TargetKind = ...,
        y: _Labels | None = None,
        get_y: Callable[[int], Any] | None = None,
        name: str | None = None,
    ) -> Dataset: ...
    @staticmethod
    def from_images(
        images: _Pixels, kind: _TargetKind = ..., y: _Labels | None = None
    ) -> Dataset: ...
    @staticmethod
    def from_python(
        func: Callable[[int], tuple[Any, Any]],
        n: int,
        name: str,
        files: Sequence[str] | None = None,
    ) -> Dataset: ...
    @staticmethod
    def from_get_x(
        get_x: Callable[[int], Any],
        n: int,
        name: str,
        files: Sequence[str] | None = None,
        kind: _TargetKind = ...,
        y: _Labels | None = None,
    ) -> Dataset: ...
    @property
    def python_pixels(self) -> bool: ...
    @property
    def is_python(self) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def y(self) -> _Labels: ...

@final
class DataLoader:
    def __new__(
        cls,
        dataset: Dataset,
        pipeline: Pipeline | None,
        pool: ThreadPool,
        *,
        bs: int,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = ...,
        skip_bad: bool = False,
        drop_last: bool = False,
        tta: bool = False,
        sz: int | None = None,
    ) -> DataLoader: ...
    @property
    def dataset(self) -> Dataset: ...
    @property
    def pipeline(self) -> Pipeline | None: ...
    @property
    def channels(self) -> int | None: ...
    def last_skipped(self) -> list[tuple[int, Path]]: ...
    def __len__(self) -> int: ...
    @property
    def num_items(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def sz(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def shuffle(self) -> bool: ...
    @property
    def buffers_allocated(self) -> int: ...
    def order(self, epoch: int) -> _I64: ...
    def item(self, index: int, access: int) -> _F32: ...
    def sharded(self, rank: int, world: int) -> DataLoader: ...
    @property
    def shard(self) -> tuple[int, int] | None: ...
    def iter_epoch(self, epoch: int) -> BatchIter: ...

@final
class BatchIter:
    def __iter__(self) -> Iterator[tuple[_F32, _Labels]]: ...
    def __next__(self) -> tuple[_F32, _Labels]: ...
    def skipped(self) -> list[Path]: ...
    def close(self) -> None: ...

# The owner of a batch's pixels (the base of the x arrays `BatchIter` yields).
@final
class BatchMemory: ...

# {'hidden': int, 'non_image': int, 'examples': [str]}: what a scan left out.
_ScanReport = dict[str, Any]

def scan_labelled(
    root: _Path, split: str, classes: Sequence[str] | None = None
) -> tuple[list[str], _I64, list[str], _ScanReport]: ...
def scan_flat(root: _Path, name: str) -> tuple[list[str], _ScanReport]: ...
def read_label_csv(path: _Path, skip_header: bool) -> list[tuple[str, str]]: ...
def check_files_exist(root: _Path, fnames: Sequence[str], source: _Path) -> None: ...
def resize_images(
    src_root: _Path,
    dst_root: _Path,
    files: Sequence[str],
    targ: int,
    pool: ThreadPool,
    skip_bad: bool,
) -> tuple[int, int, list[tuple[str, str]]]: ...
def decode_image(path: _Path) -> npt.NDArray[np.uint8]: ...

# ---- training ---------------------------------------------------------------------------

@final
class Schedule:
    @staticmethod
    def constant() -> Schedule: ...
    @staticmethod
    def cos_anneal(*, first_cycle: int, cycle_mult: int) -> Schedule: ...
    @staticmethod
    def lr_find(*, ratio: float, n_batches: int, linear: bool) -> Schedule: ...
    @staticmethod
    def clr(
        *, cycle: int, div: float, cut_div: float, moms: tuple[float, float] | None = None
    ) -> Schedule: ...
    @staticmethod
    def clr_beta(
        *, cycle: int, div: float, pct: float, moms: tuple[float, float] | None = None
    ) -> Schedule: ...

@final
class Optimizer:
    @staticmethod
    def sgd(*, momentum: float) -> Optimizer: ...
    @staticmethod
    def adam(*, beta1: float, beta2: float, eps: float) -> Optimizer: ...

@final
class Activations:
    @property
    def split(self) -> _SplitName: ...
    @property
    def rows(self) -> torch.Tensor: ...
    @property
    def kept(self) -> torch.Tensor | None: ...
    @property
    def left_out(self) -> list[str]: ...
    @property
    def status(
        self,
    ) -> Literal["hit", "computed", "recomputed", "uncached", "memory", "gathered"]: ...
    @property
    def warning(self) -> str | None: ...
    @property
    def path(self) -> Path: ...
    @property
    def body(self) -> str: ...
    @property
    def computed_rows(self) -> int: ...

@final
class Learner:
    def __new__(
        cls,
        arch: str,
        c: int,
        *,
        output: _Output = ...,
        ps: Sequence[float] | None = None,
        xtra_fc: Sequence[int] | None = None,
        device: str = ...,
        xtra_cut: int = 0,
        custom_head: _CustomHead | None = None,
        meta: tuple[int, int] | None = None,
    ) -> Learner: ...
    @staticmethod
    def from_module(
        forward: Callable[[Literal["model", "body", "head"], torch.Tensor, bool, bool], torch.Tensor],
        state: Sequence[tuple[str, torch.Tensor, bool, int]],
        n_groups: int,
        *,
        name: str,
        output: _Output = ...,
        device: str = ...,
        splits: bool = False,
    ) -> Learner: ...
    @property
    def arch(self) -> str: ...
    @property
    def nf(self) -> int: ...
    @property
    def head_start(self) -> int: ...
    @property
    def cut(self) -> int: ...
    @property
    def n_groups(self) -> int: ...
    @property
    def device_type(self) -> Literal["cpu", "cuda"]: ...
    def live_tensors(self) -> list[tuple[str, torch.Tensor]]: ...
    @property
    def has_custom_head(self) -> bool: ...
    @property
    def head_ps(self) -> list[float] | None: ...
    @property
    def output(self) -> _Output: ...
    @property
    def trainable(self) -> list[bool]: ...
    @property
    def bn_freeze(self) -> bool: ...
    @bn_freeze.setter
    def bn_freeze(self, v: bool) -> None: ...
    def freeze_to(self, n: int) -> None: ...
    def freeze_all_but(self, n: int) -> None: ...
    def entries(self) -> list[tuple[str, list[int], int, bool]]: ...
    def summary(self, sz: int) -> list[tuple[str, list[int]]]: ...
    def load_backbone(self, state: _State, source: str) -> None: ...
    def state_dict(self) -> list[tuple[str, torch.Tensor]]: ...
    def load_state_dict(self, state: _State, source: str) -> None: ...
    def begin_fit(
        self,
        *,
        lrs: Sequence[float],
        wds: Sequence[float],
        schedule: Schedule,
        precompute: bool,
        stop_on_divergence: bool = False,
        fused_head: bool = True,
        opt: Optimizer | None = None,
        clip: float | None = None,
        crit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        grad_sync: tuple[Callable[[torch.Tensor], object], int, int] | None = None,
    ) -> None: ...
    def end_fit(self) -> tuple[list[float], list[float], list[float] | None, int]: ...
    def train_epoch_tensors(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bs: int,
        seed: int,
        epoch: int,
        on_batch: Callable[[int, float], object] | None = None,
        on_batch_begin: Callable[[int], object] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> tuple[float, bool]: ...
    def predict_tensors(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bs: int,
        head_only: bool,
        with_loss: bool,
        kept: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, float]: ...
    def predict_array(self, x: torch.Tensor, head_only: bool | None = None) -> torch.Tensor: ...
    def train_epoch_loader(
        self,
        dl: DataLoader,
        epoch: int,
        on_batch: Callable[[int, float], object] | None = None,
        on_batch_begin: Callable[[int], object] | None = None,
    ) -> tuple[float, bool]: ...
    def predict_loader(
        self,
        dl: DataLoader,
        epoch: int,
        with_loss: bool,
        on_batch: Callable[[int], object] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]: ...
    def precompute(
        self,
        splits: Sequence[tuple[_SplitName, DataLoader]],
        tmp_path: _Path,
        data_path: _Path,
        precision: Literal["float32", "bfloat16"] | None = None,
        on_batch: Callable[[str, int, int], object] | None = None,
        known: str | None = None,
        group: tuple[Callable[[torch.Tensor], object], int, int] | None = None,
    ) -> list[Activations] | None: ...
    def snapshot(self) -> list[torch.Tensor]: ...
    def restore(self, snap: Sequence[torch.Tensor]) -> None: ...

def epoch_order(n: int, seed: int, epoch: int) -> list[int]: ...
def cpu_has_native_bf16() -> bool: ...

# ---- test hooks -------------------------------------------------------------------------

def _roundtrip_tensor(t: torch.Tensor) -> torch.Tensor: ...
def _roundtrip_array(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def _raise_error(kind: str, path: str) -> None: ...
def _backbone_features(arch: str, state: _State, x: torch.Tensor) -> torch.Tensor: ...
