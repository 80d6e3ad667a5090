"""Data-parallel training across processes (fastai v2's spelling, for 0.7 code):

    learn = ConvLearner.pretrained(arch, data)
    with learn.distrib_ctx():
        learn.fit(1e-2, 3)

started with `torchrun --nproc_per_node=N script.py` (or `--nnodes`). Outside torchrun
(no WORLD_SIZE, or WORLD_SIZE=1) the context does nothing. Inside it:

- the process group is PyTorch's own (`torch.distributed`): NCCL when the learner's model is on
  a GPU, gloo on the CPU; created here (and destroyed on exit) unless the script made one;
- each rank reads its slice of every global batch of `bs x world` rows of the shared, seeded
  epoch order (the Rust loader's `sharded`), so N ranks at batch bs take the steps one process
  at batch N*bs would; the last partial global batch is split evenly, padded with the epoch's
  first rows when it does not divide (every rank runs the same steps); `bs` is per rank;
- after each backward the Rust loop packs the trainable gradients into ~25 MB buckets and has
  each summed by `torch.distributed.all_reduce`, each rank's weighted by its share of the
  step's rows (1/N when no image was skipped): every rank steps the same;
- `skip_bad`: an undecodable image can leave one rank's batch shorter, of one row (left out
  while BatchNorm takes batch statistics) or gone, where the others still have theirs. Before
  every step the ranks agree (one small all-reduce) on the rows each brings: the epoch ends
  when no rank has a batch left, a step no rank brings rows to is skipped by every rank (the
  schedule moves on), and otherwise every rank steps, a rank without rows adding a zero
  gradient. So all take the same steps, and the step's gradient and recorded loss are those
  of the mean over the rows that were decoded (as one process at batch N*bs would have them);
- BatchNorm uses each rank's batch statistics while training (as torch's DDP without
  SyncBatchNorm), and the running statistics are averaged across ranks at every epoch end, so
  validation, `save` and everything after see one model;
- precompute: every rank reads the cache file under tmp/; when every rank found it valid,
  nobody computes. Otherwise each rank runs its shard of each split through the body (the
  fixed loader cut as the training epochs are: about 1/N of the rows), the rows are summed
  across the ranks (`all_reduce` of a zero-filled tensor of every row, in slices of 64 MB,
  with a count per item: a repeated padding row is averaged, an item no rank could decode
  gets a NaN row and is left out, as alone), and rank 0 writes the cache file the
  single-process path writes (same key and format: a later single-process run reads it).
  Every rank ends with the same activations;
- validation runs on every rank over the whole validation set (same weights, same numbers: no
  reduction needed); only rank 0 prints the table and draws bars (other ranks' stdout is
  silenced inside the context); only rank 0 writes models/ (`save`), the others wait for it;
- on exit the learner is as before (whole loaders, no sync): `save`, `load`, `predict`, `TTA`.
"""
import contextlib
import datetime
import io
import os

import torch
import torch.distributed as dist

from . import _progress

__all__ = ["distrib_ctx", "rank_distrib", "num_distrib", "rank0_first"]


def num_distrib():
    """Processes in the launch (torchrun's WORLD_SIZE), 0 outside one."""
    return int(os.environ.get("WORLD_SIZE", 0))


def rank_distrib():
    """This process's rank (torchrun's RANK), 0 outside a launch."""
    return int(os.environ.get("RANK", 0))


class _Group:
    """What a fit inside `distrib_ctx` needs: this rank, the group size, and the all-reduce the
    Rust loop calls with each gradient bucket."""

    def __init__(self, rank, world):
        self.rank, self.world = rank, world

    @staticmethod
    def all_reduce(t):
        # NCCL reduces CUDA tensors only: the CPU ones (precomputed activations, the step
        # agreement) go through the GPU and come back as the sum.
        if t.device.type == "cpu" and dist.get_backend() == "nccl":
            on_gpu = t.cuda()
            dist.all_reduce(on_gpu)
            return on_gpu.cpu()
        dist.all_reduce(t)

    @property
    def grad_sync(self):
        return (self.all_reduce, self.rank, self.world)

    @property
    def shard(self):
        return (self.rank, self.world)

    def average_bn_stats(self, native):
        """BatchNorm running means and variances (float buffers) replaced by their mean over
        the ranks; the batch counters are the same everywhere already."""
        live = dict(native.live_tensors())
        with torch.no_grad():
            for key, _, _, is_param in native.entries():
                t = live[key]
                if not is_param and t.is_floating_point():
                    dist.all_reduce(t)
                    t.div_(self.world)

    def from_rank0(self, make):
        """`make()` run on rank 0 only; its result (or its exception) reaches every rank."""
        box = [None]
        if self.rank == 0:
            try:
                box[0] = ("ok", make())
            except BaseException as e:
                box[0] = ("error", e)
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise value
        return value


def active(learn):
    """The group of the `distrib_ctx` `learn` is in, else None."""
    return getattr(learn, "_distrib", None)


def _backend(learn):
    return "nccl" if learn._native.device_type == "cuda" else "gloo"


def _loaders(learn):
    """The Python loaders whose Rust loader a fit trains from."""
    d = learn.data_
    return [dl for dl in (getattr(d, "trn_dl", None),) if getattr(dl, "_native", None) is not None]


@contextlib.contextmanager
def distrib_ctx(learn, timeout=1800):
    """See the module's doc. `timeout` (seconds): how long a rank waits for the others in a
    collective before failing (a rank that died or raised ends the others then at the latest;
    torchrun usually ends them at once)."""
    world = num_distrib()
    if world <= 1 or active(learn) is not None:
        yield learn
        return
    rank = rank_distrib()
    created = False
    if not dist.is_initialized():
        if _backend(learn) == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(_backend(learn), timeout=datetime.timedelta(seconds=timeout),
                                rank=rank, world_size=world)
        created = True
    group = _Group(dist.get_rank(), dist.get_world_size())
    saved = [(dl, dl._native) for dl in _loaders(learn)]
    with contextlib.ExitStack() as stack:
        for dl, native in saved:
            dl._native = native.sharded(group.rank, group.world)
        learn._distrib = group
        learn.save = _save_on_rank0(learn, group)
        if group.rank != 0:
            stack.enter_context(_progress.no_bar())
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        try:
            yield learn
        finally:
            for dl, native in saved:
                dl._native = native
            for attr in ("_distrib", "save"):
                learn.__dict__.pop(attr, None)
            if created:
                dist.destroy_process_group()


def _save_on_rank0(learn, group):
    cls_save = type(learn).save

    def save(name):
        # Rank 0 writes; every rank returns once the file is there (or raises its error).
        group.from_rank0(lambda: cls_save(learn, name))
    return save


@contextlib.contextmanager
def rank0_first():
    """Runs the block on rank 0 first, then on the others (e.g. a download or `data.resize`
    that writes files); outside a group it just runs it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield
        return
    if dist.get_rank() != 0:
        dist.barrier()
    yield
    if dist.get_rank() == 0:
        dist.barrier()
