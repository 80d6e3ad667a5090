"""Data-parallel training (`learn.distrib_ctx()`) on the CPU with gloo: 2 ranks started by
torchrun (`python -m torch.distributed.run`) against one process at twice the batch size, on a
tiny generated image folder. Every launch has a wall-clock limit, so a hang fails the test."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_learner import write_images  # two colour classes a linear head can tell apart

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import json, os, sys, time
    import torch
    torch.set_num_threads(1)
    from fastai.conv_learner import *
    from fastai.sgdr import Callback

    mode, root, bs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rank = int(os.environ.get("RANK", 0))
    skip_bad = mode in ("pre", "bad")
    saves = []
    real_save = torch.save
    def counting_save(obj, f, *a, **k):
        if type(f).__name__ == "_WriteErrors":  # learn.save's file (not a collective's pickle)
            saves.append(rank)
        return real_save(obj, f, *a, **k)
    torch.save = counting_save

    tfms = tfms_from_model(resnet18, 32)
    data = ImageClassifierData.from_paths(root, bs=bs, tfms=tfms, num_workers=1, seed=3,
                                          skip_bad=skip_bad)
    learn = ConvLearner.pretrained(resnet18, data, pretrained=False, ps=0.0)
    learn.load("init")
    # Batch statistics of bs rows differ from those of 2 x bs rows: BatchNorm on running
    # statistics makes 2 ranks comparable with 1 (see fastai.distributed for the policy).
    learn.bn_freeze(True)
    result = {"rank": rank}

    class Marker(Callback):
        def on_batch_end(self, loss):
            Path(out + f".batch{rank}").write_text(str(os.getpid()))

    if mode == "fit":
        with learn.distrib_ctx(timeout=60):
            learn.fit(0.05, 1)
            learn.save("after_loader")
            real_save(dict(learn._native.state_dict()), out + f".{rank}.loader.pt")
            learn.precompute = True
            vals = learn.fit(0.05, 2)
            learn.save("after_pre")
            real_save(dict(learn._native.state_dict()), out + f".{rank}.pre.pt")
            result["vals"] = [float(v) for v in vals]
            # The head's BatchNorm on each rank's batch statistics: running statistics drift
            # apart per rank and are averaged at the epoch's end.
            learn.bn_freeze(False)
            learn.fit(0.05, 1)
            real_save(dict(learn._native.state_dict()), out + f".{rank}.bn.pt")
        result["saves"] = saves
        # After the context: the whole validation set, predictions and TTA on every rank.
        learn.precompute = False
        result["n_pred"] = len(learn.predict())
        result["tta_shape"] = list(learn.TTA(n_aug=1)[0].shape)
        learn.load("after_pre")
    elif mode == "pre":
        # What the native precompute reports per split (status, rows this process computed).
        class Recording:
            def __init__(self, native):
                self._real, self.seen = native, []
            def __getattr__(self, name):
                return getattr(self._real, name)
            def precompute(self, *a, **k):
                got = self._real.precompute(*a, **k)
                self.seen += [(x.split, x.status, x.computed_rows) for x in got or []]
                return got
        learn._native = Recording(learn._native)
        with learn.distrib_ctx(timeout=60):
            learn.precompute = True
        for split in ("trn", "val"):
            real_save(learn._acts[split], out + f".{rank}.{split}.pt")
            result[split + "_ok"] = (None if learn._acts[split + "_ok"] is None
                                     else learn._acts[split + "_ok"].tolist())
        result["seen"] = learn._native.seen
    elif mode == "bad":
        with learn.distrib_ctx(timeout=60):
            learn.fit(0.05, 2)
            real_save(dict(learn._native.state_dict()), out + f".{rank}.bad.pt")
    elif mode == "raise":
        with learn.distrib_ctx(timeout=30):
            if rank == 1:
                raise ValueError("boom from rank 1")
            learn.fit(0.05, 3)
    elif mode == "long":
        with learn.distrib_ctx(timeout=60):
            learn.fit(0.05, 10000, callbacks=[Marker()])
    Path(out + f".{rank}.json").write_text(json.dumps(result))
""")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(script, *args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), *map(str, args)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An image folder (14 training images per class: 28 = 3 global batches of 2 x 4 and a last
    one of 4, split 2 + 2) with an initial model saved as models/init.h5, and the worker."""
    root = tmp_path_factory.mktemp("dist")
    write_images(root, n_train=14, n_valid=3)
    script = root / "worker.py"
    script.write_text(WORKER)
    # One initial model that every run loads (the head's initialisation is random).
    probe = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            from fastai.conv_learner import *
            data = ImageClassifierData.from_paths({str(root)!r}, bs=8, tfms=tfms_from_model(resnet18, 32), num_workers=1)
            learn = ConvLearner.pretrained(resnet18, data, pretrained=False, ps=0.0)
            learn.save("init")
        """)], env=_env(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    return root, script


def _load(path):
    return json.loads(Path(path).read_text())


def test_two_ranks_at_bs_equal_one_rank_at_2bs_and_save_once(setup):
    root, script = setup
    out = root / "res"
    one = subprocess.run([sys.executable, str(script), "fit", str(root), "8", str(out) + "_single"],
                         env=_env(), capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(_torchrun(script, "fit", root, 4, out), env=_env(), capture_output=True,
                         text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    ref = _load(str(out) + "_single.0.json")
    r0, r1 = _load(str(out) + ".0.json"), _load(str(out) + ".1.json")
    init = torch.load(root / "models" / "init.h5")
    for phase in ("loader", "pre"):
        want_all = torch.load(f"{out}_single.0.{phase}.pt")
        # The fit moved the weights (else equality would prove nothing).
        moved = max(float((want_all[k] - init[k]).abs().max())
                    for k in want_all if init[k].is_floating_point())
        assert moved > 1e-3, phase
        for rank in (0, 1):
            got_all = torch.load(f"{out}.{rank}.{phase}.pt")
            for k, want in want_all.items():
                got = got_all[k]
                assert torch.allclose(got.double(), want.double(), atol=1e-5, rtol=0), (phase, rank, k)
    # BatchNorm running statistics: moved by the last fit, then the same on both ranks.
    bn0, bn1 = (torch.load(f"{out}.{rank}.bn.pt") for rank in (0, 1))
    pre0 = torch.load(f"{out}.0.pre.pt")
    stats = [k for k in bn0 if k.endswith(("running_mean", "running_var"))]
    assert stats and any(not torch.equal(bn0[k], pre0[k]) for k in stats)
    for k in bn0:
        assert torch.allclose(bn0[k].double(), bn1[k].double(), atol=1e-6, rtol=0), k
    # Validation on every rank over the whole set: the same numbers as one process.
    assert np.allclose(r0["vals"], ref["vals"], atol=1e-5) and r0["vals"] == r1["vals"]
    # Each checkpoint written once, by rank 0; the file is rank 0's weights.
    assert r0["saves"] == [0, 0] and r1["saves"] == []
    saved = torch.load(root / "models" / "after_pre.h5")
    for k, v in torch.load(f"{out}.0.pre.pt").items():
        assert torch.equal(saved[k], v), k
    # Only rank 0 printed the epoch table.
    assert two.stdout.count("trn_loss") == 3, two.stdout
    # After the context, predict and TTA see the whole validation set (6 images).
    assert r0["n_pred"] == r1["n_pred"] == 6 and r0["tta_shape"] == [2, 6, 2]


def test_a_rank_that_raises_stops_every_rank(setup):
    root, script = setup
    start = time.monotonic()
    run = subprocess.run(_torchrun(script, "raise", root, 4, root / "raise"), env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "boom from rank 1" in run.stdout + run.stderr
    assert time.monotonic() - start < 90
    assert not list(root.glob("raise.*.json"))


def test_ctrl_c_on_the_launcher_stops_every_rank(setup):
    root, script = setup
    out = root / "long"
    proc = subprocess.Popen(_torchrun(script, "long", root, 4, out), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        markers = [Path(f"{out}.batch{r}") for r in (0, 1)]
        while not all(m.exists() for m in markers):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the ranks never trained"
            time.sleep(0.2)
        pids = [int(m.read_text()) for m in markers]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        for pid in pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"rank process {pid} still runs after Ctrl-C")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.fixture(scope="module")
def bad_setup(tmp_path_factory):
    """A folder like `setup`'s with one undecodable .jpg among the training images, its worker
    and an initial model."""
    root = tmp_path_factory.mktemp("dist_bad")
    write_images(root, n_train=7, n_valid=3)
    # An even count (16): the shards then need no padding row, which one process would not see.
    shutil.copy(root / "train" / "cats" / "cat.0.jpg", root / "train" / "cats" / "cat.extra.jpg")
    (root / "train" / "dogs" / "dog.bad.jpg").write_bytes(b"not a jpeg at all" * 20)
    script = root / "worker.py"
    script.write_text(WORKER)
    probe = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            from fastai.conv_learner import *
            data = ImageClassifierData.from_paths({str(root)!r}, bs=2, tfms=tfms_from_model(resnet18, 32), num_workers=1, skip_bad=True)
            learn = ConvLearner.pretrained(resnet18, data, pretrained=False, ps=0.0)
            learn.save("init")
        """)], env=_env(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    return root, script


def _cache_files(root):
    return {p: p.stat().st_mtime_ns for p in (root / "tmp").rglob("*") if p.is_file()}


def test_precompute_per_shard_gathered_and_cached_once(bad_setup):
    root, script = bad_setup
    out = root / "pre"
    n_trn, n_val = 15, 6  # decoded: 8 + 7 (the 16th is undecodable); 3 + 3

    def single(tag):
        run = subprocess.run([sys.executable, str(script), "pre", str(root), "4", f"{out}_{tag}"],
                             env=_env(), capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        return _load(f"{out}_{tag}.0.json")

    # The reference: one process computing every row (no cache yet).
    ref = single("ref")
    assert sorted(ref["seen"]) == [["trn", "computed", n_trn], ["val", "computed", n_val]]
    for p in _cache_files(root):
        p.unlink()
    two = subprocess.run(_torchrun(script, "pre", root, 2, out), env=_env(), capture_output=True,
                         text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    ranks = [_load(f"{out}.{r}.json") for r in (0, 1)]
    # Rank 0 wrote the files, rank 1 only gathered; each computed half of each split (its
    # shard of 8 training items, less the undecodable one on its rank).
    trn_rows = []
    for r, res in enumerate(ranks):
        seen = {split: (status, rows) for split, status, rows in res["seen"]}
        status = "computed" if r == 0 else "gathered"
        assert seen["val"] == (status, 3) and seen["trn"][0] == status, (r, seen)
        trn_rows.append(seen["trn"][1])
    assert sorted(trn_rows) == [7, 8]
    files = _cache_files(root)
    assert len(files) == 2, files
    # The undecodable image: left out with a NaN row, on every rank, as alone.
    for res in ranks:
        assert res["trn_ok"] == ref["trn_ok"] and ref["trn_ok"].count(False) == 1
        assert res["val_ok"] is None and ref["val_ok"] is None
    for split in ("trn", "val"):
        want = torch.load(f"{out}_ref.0.{split}.pt")
        for r in (0, 1):
            got = torch.load(f"{out}.{r}.{split}.pt")
            assert got.shape == want.shape
            assert torch.equal(torch.isnan(got), torch.isnan(want)), (split, r)
            assert torch.allclose(got.nan_to_num(), want.nan_to_num(), atol=1e-5, rtol=0), (split, r)
    # A later single process reads the files rank 0 wrote: nothing computed, nothing rewritten.
    again = single("again")
    assert sorted(again["seen"]) == [["trn", "hit", 0], ["val", "hit", 0]]
    assert _cache_files(root) == files
    for split in ("trn", "val"):
        got, want = (torch.load(f"{out}{t}.0.{split}.pt") for t in ("_again", ""))
        assert torch.equal(got.nan_to_num(), want.nan_to_num())


def test_skip_bad_in_one_rank_keeps_the_ranks_in_step(bad_setup):
    """bs=1 per rank: the step whose image is undecodable leaves its rank with no batch at
    all, while the other rank has one. Both finish (short timeout: no hang) with the weights
    one process at bs=2 gets, where that step has one row."""
    root, script = bad_setup
    out = root / "badfit"
    one = subprocess.run([sys.executable, str(script), "bad", str(root), "2", f"{out}_single"],
                         env=_env(), capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    start = time.monotonic()
    two = subprocess.run(_torchrun(script, "bad", root, 1, out), env=_env(), capture_output=True,
                         text=True, timeout=150)
    assert two.returncode == 0, two.stderr[-3000:]
    assert time.monotonic() - start < 150
    want_all = torch.load(f"{out}_single.0.bad.pt")
    init = torch.load(root / "models" / "init.h5")
    assert max(float((want_all[k] - init[k]).abs().max())
               for k in want_all if init[k].is_floating_point()) > 1e-3
    ranks = [torch.load(f"{out}.{rank}.bad.pt") for rank in (0, 1)]
    for k, want in want_all.items():
        # The ranks step together: the same weights to the bit.
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        # And as one process: 16 steps at lr 0.05 sum the two rows' gradients in another order
        # (seen up to 1.6e-5 apart), while training moved them by more than 1e-3 (above).
        assert torch.allclose(ranks[0][k].double(), want.double(), atol=1e-4, rtol=0), k
