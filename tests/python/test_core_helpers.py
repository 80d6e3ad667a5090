"""fastai.core's helpers as fastai 0.7 code calls them, in torch-2 terms, checked against torch,
numpy and hand-computed values."""
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

from fastai import core
from fastai.core import (A, BasicModel, SGD_Momentum, SimpleNet, SingleModel, T, V, VV, V_,
                         apply_leaf, chain_params, children, chunk_iter, create_variable, datafy,
                         delistify, is_iter, is_listy, listify, load, load2, load_model, map_none,
                         map_over, noop, num_cpus, one_hot, partition, partition_by_cores, save,
                         save_model, set_trainable, set_trainable_attr, split_by_idxs, sum_geom,
                         to_gpu, to_half, to_np, trainable_params_)


# ---- tensor conversion ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_T_makes_integers_int64(dtype):
    t = T(np.array([1, -2, 3], dtype=dtype), cuda=False)
    assert t.dtype == torch.int64 and t.tolist() == [1, -2, 3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_T_makes_floats_float32(dtype):
    t = T(np.array([[0.5, 1.25]], dtype=dtype), cuda=False)
    assert t.dtype == torch.float32 and t.shape == (1, 2)
    assert t.tolist() == [[0.5, 1.25]]


def test_T_half_and_lists():
    assert T(np.zeros(2), half=True, cuda=False).dtype == torch.float16
    assert T([1, 2], cuda=False).dtype == torch.int64
    assert T([1.5, 2], cuda=False).dtype == torch.float32


@pytest.mark.parametrize("bad", [np.array([True]), np.array([1], np.uint8), np.array(["a"])])
def test_T_refuses_other_dtypes(bad):
    with pytest.raises(NotImplementedError, match=str(bad.dtype)):
        T(bad)


def test_T_passes_a_tensor_through():
    t = torch.arange(3)
    assert T(t, cuda=False) is t


def test_T_reads_non_contiguous_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert T(a, cuda=False).tolist() == a.tolist()


def test_V_sets_requires_grad_on_floats_only():
    v = V(np.zeros(3), requires_grad=True)
    assert v.requires_grad and v.is_leaf and v.dtype == torch.float32
    assert not V(np.zeros(3)).requires_grad
    # PyTorch cannot give integer tensors a gradient; 0.3 could, so this is not an error.
    assert not V(np.arange(3), requires_grad=True).requires_grad


def test_V_of_a_tensor():
    t = torch.ones(2)
    assert V(t) is t
    v = V(t, requires_grad=True)
    assert v.requires_grad and not t.requires_grad  # a new leaf, the caller's tensor untouched
    v.data[0] = 5  # ... sharing its memory, as PyTorch's Variable(t, requires_grad=True)
    assert t[0] == 5
    g = torch.ones(2, requires_grad=True) * 2
    assert V(g, requires_grad=True) is g


def test_V_and_VV_map_over_lists():
    a, b = np.zeros(2), np.arange(3)
    out = VV([a, b])
    assert isinstance(out, list) and [o.dtype for o in out] == [torch.float32, torch.int64]
    assert not any(o.requires_grad for o in out)
    out = V((a, b), requires_grad=True)
    assert isinstance(out, list) and [o.requires_grad for o in out] == [True, False]
    assert V_(a, requires_grad=True).requires_grad
    assert torch.equal(create_variable(a, True), torch.zeros(2))


def test_to_np():
    t = torch.tensor([1.5, 2.0], requires_grad=True)
    out = to_np(t * 2)
    assert isinstance(out, np.ndarray) and out.tolist() == [3.0, 4.0]
    assert to_np(torch.tensor([1.0], dtype=torch.float16)).dtype == np.float32
    a = np.arange(3)
    assert to_np(a) is a
    s = np.float32(2)
    assert to_np(s) is s
    xs = to_np([torch.ones(1), (torch.zeros(2), torch.arange(2))])
    assert isinstance(xs, list) and isinstance(xs[1], list)
    assert xs[1][1].dtype == np.int64 and xs[0].tolist() == [1.0]
    assert np.asarray(to_np(0.5)) == 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_np_from_the_gpu():
    assert to_np(torch.ones(2, device="cuda", requires_grad=True)).tolist() == [1.0, 1.0]


def test_to_gpu_follows_USE_GPU(monkeypatch):
    t = torch.ones(2)
    monkeypatch.setattr(core, "USE_GPU", False)
    assert to_gpu(t) is t
    assert T(np.zeros(2)).device.type == "cpu"
    monkeypatch.setattr(core, "USE_GPU", True)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert to_gpu(t).device.type == expected
    assert T(np.zeros(2)).device.type == expected


def test_to_half():
    assert to_half(torch.ones(2)).dtype == torch.float16


def test_A():
    a = A([1, 2])
    assert isinstance(a, np.ndarray) and a.tolist() == [1, 2]
    both = A([1], [2])
    assert isinstance(both, list) and [o.tolist() for o in both] == [[1], [2]]


# ---- modules and parameters ----------------------------------------------------------------

def _net():
    return nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()),
                         nn.Linear(3, 2))


def test_children():
    m = _net()
    assert children(m) == list(m.children())
    lst = [nn.ReLU()]
    assert children(lst) is lst
    shared = nn.Linear(2, 2)
    twice = nn.Module()
    twice.a, twice.b = shared, shared  # registered under two names: listed once, as torch
    assert children(twice) == [shared]


def test_trainable_params_and_chain_params():
    m = _net()
    m[0].weight.requires_grad = False
    expected = [p for p in m.parameters() if p.requires_grad]
    assert trainable_params_(m) == expected and len(expected) == 5
    assert chain_params(m) == expected
    assert chain_params([m[0], m[2]]) == [m[0].bias, m[2].weight, m[2].bias]
    # A module listed twice contributes its parameters once (torch warns about duplicates).
    assert chain_params([m[2], m[2]]) == [m[2].weight, m[2].bias]


def test_apply_leaf_is_pre_order():
    m = _net()
    seen = []
    apply_leaf(m, lambda x: seen.append(type(x).__name__))
    assert seen == ["Sequential", "Linear", "Sequential", "BatchNorm1d", "ReLU", "Linear"]
    seen.clear()
    apply_leaf([m[0], m[1]], lambda x: seen.append(type(x).__name__))
    assert seen == ["Linear", "Sequential", "BatchNorm1d", "ReLU"]


def test_set_trainable():
    m = _net()
    set_trainable(m, False)
    assert all(not p.requires_grad for p in m.parameters())
    assert all(x.trainable is False for x in m.modules())
    set_trainable([m[1], m[2]], True)
    assert m[-1].trainable is True and m[1][0].trainable is True and m[0].trainable is False
    assert [p.requires_grad for p in m.parameters()] == [False, False, True, True, True, True]
    set_trainable_attr(m[0], True)
    assert m[0].trainable and m[0].weight.requires_grad


def test_SGD_Momentum():
    p = nn.Parameter(torch.zeros(2))
    opt = SGD_Momentum(0.9)([p], lr=0.1)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["lr"] == 0.1


def test_model_wrappers():
    seq = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])
    bm = BasicModel(seq, name="twelve")
    assert bm.name == "twelve" and bm.model is seq
    assert len(bm.get_layer_groups()) == 12 and bm.get_layer_groups(True)[3] is seq[3]
    assert BasicModel(nn.ReLU()).get_layer_groups() == []
    assert BasicModel(seq).name == "unnamed"
    sm = SingleModel(seq)
    assert sm.get_layer_groups() == [seq] and sm.get_layer_groups(True) == [seq]


def test_SimpleNet_against_torch():
    torch.manual_seed(0)
    net = SimpleNet([12, 5, 3])
    assert [type(m) for m in net.layers] == [nn.Linear, nn.Linear]
    x = torch.randn(4, 3, 4)
    l1, l2 = net.layers
    h = torch.clamp(x.reshape(4, 12) @ l1.weight.T + l1.bias, min=0)
    z = h @ l2.weight.T + l2.bias
    expected = z - torch.logsumexp(z, dim=1, keepdim=True)
    torch.testing.assert_close(net(x), expected)


# ---- sequences -----------------------------------------------------------------------------

def test_listy_and_iter():
    assert is_listy([1]) and is_listy((1,)) and not is_listy(np.zeros(2))
    assert is_iter(np.zeros(2)) and is_iter("ab") and is_iter(x for x in []) and not is_iter(3)
    assert map_over([1, 2], lambda x: x * 2) == [2, 4] and map_over(3, lambda x: x * 2) == 6
    assert map_none(None, len) is None and map_none([1], len) == 1
    assert delistify([4, 5]) == 4 and delistify(4) == 4


def test_listify():
    assert listify(1, 3) == [1, 1, 1]
    assert listify([1], [0, 0]) == [1, 1]
    assert listify([1, 2], 5) == [1, 2]
    assert listify("ab", 2) == ["ab", "ab"]
    # 0.7 multiplied a 1-element array (giving [6]); it is repeated like a list.
    assert [int(v) for v in listify(np.array([2]), 3)] == [2, 2, 2]


def test_datafy():
    a, b = torch.ones(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    out = datafy([a, b])
    assert [o.requires_grad for o in out] == [False, False]
    assert not datafy(a).requires_grad


def test_noop():
    assert noop() is None
    assert noop(5) == 5 and noop(5, 6, key=1) == 5


def test_sum_geom():
    assert sum_geom(1, 2, 3) == 7 and sum_geom(2, 1, 3) == 6 and sum_geom(1, 2, 1) == 1


def test_one_hot():
    out = one_hot([0, 2], 3)
    assert out.dtype == np.float64 and out.tolist() == [[1, 0, 0], [0, 0, 1]]


def test_partition():
    assert partition(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert partition([], 3) == []


def test_partition_by_cores(monkeypatch):
    monkeypatch.setattr(core, "num_cpus", lambda: 2)
    assert [len(p) for p in partition_by_cores(list(range(10)))] == [6, 4]


def test_num_cpus():
    assert num_cpus() == len(os.sched_getaffinity(0))


def test_split_by_idxs():
    assert list(split_by_idxs(list(range(10)), [3, 7])) == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert list(split_by_idxs(list(range(4)), [0])) == [[], [0, 1, 2, 3]]
    with pytest.raises(KeyError, match="Idx 10 is out-of-bounds"):
        list(split_by_idxs(list(range(10)), [10]))


def test_chunk_iter():
    assert list(chunk_iter(iter(range(5)), 2)) == [[0, 1], [2, 3], [4]]
    assert list(chunk_iter(iter(range(4)), 2)) == [[0, 1], [2, 3]]
    with pytest.raises(TypeError):
        list(chunk_iter([1, 2, 3], 2))


# ---- persistence ---------------------------------------------------------------------------

def test_save_and_load_pickles(tmp_path):
    obj = {"a": [1, 2], "b": np.arange(3)}
    save(tmp_path / "x.pkl", obj)
    with open(tmp_path / "x.pkl", "rb") as f:
        direct = pickle.load(f)
    assert direct["a"] == [1, 2] and direct["b"].tolist() == [0, 1, 2]
    back = load(tmp_path / "x.pkl")
    assert back["a"] == [1, 2] and back["b"].tolist() == [0, 1, 2]
    # A Python 2 `str` holding non-ASCII bytes, as protocol 2 wrote it (SHORT_BINSTRING).
    (tmp_path / "py2.pkl").write_bytes(b"\x80\x02U\x04caf\xe9q\x00.")
    assert load2(tmp_path / "py2.pkl") == "caf\xe9"


def test_save_model_and_load_model(tmp_path):
    a, b = _net(), _net()
    save_model(a, tmp_path / "m.pth")
    load_model(b, tmp_path / "m.pth")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    with pytest.raises(RuntimeError):
        load_model(nn.Linear(4, 3), tmp_path / "m.pth")  # keys must match exactly
