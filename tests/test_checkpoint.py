"""Checkpoints: safetensors + JSON, atomic, corrupt/mismatched files give clear errors, no pickle."""
import json

import pytest
import torch

from genzoo.errors import CheckpointError
from genzoo.train.checkpoint import (
    flatten_state, latest_checkpoint, load_checkpoint, load_model_state, save_checkpoint, unflatten_state,
)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def _opt_state(net):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    return opt


def test_flatten_roundtrip_optimizer_state():
    net = _net()
    opt = _opt_state(net)
    tensors = {}
    tree = flatten_state({"opt": opt.state_dict(), "x": float("inf"), "t": (1, 2)}, "s", tensors)
    json.dumps(tree)  # the tree is JSON
    back = unflatten_state(json.loads(json.dumps(tree)), tensors)
    opt2 = torch.optim.Adam(_net().parameters(), lr=5.0)
    opt2.load_state_dict(back["opt"])
    assert opt2.param_groups[0]["lr"] == 1e-3
    for k, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt2.state_dict()["state"][k][name]))
    assert back["x"] == float("inf") and back["t"] == (1, 2)


def test_save_load_latest_and_prune(tmp_path):
    net = _net()
    opt = _opt_state(net)
    for step in (10, 20, 30):
        save_checkpoint(tmp_path / "checkpoints", step, model_state=net.state_dict(), ema_state=None,
                        extra={"opt": opt.state_dict()}, keep=2)
    ck_dirs = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert ck_dirs == ["step-0000020", "step-0000030"]
    path = latest_checkpoint(tmp_path)
    assert path.name == "step-0000030"
    ck = load_checkpoint(path)
    assert ck["step"] == 30 and ck["ema"] is None
    net2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    load_model_state(net2, ck["model"], str(path))
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    # only safetensors + json on disk
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "state.json", "state.safetensors"]


def test_torn_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    net = _net()
    save_checkpoint(tmp_path / "checkpoints", 1, model_state=net.state_dict(), ema_state=None, extra={})
    import genzoo.train.checkpoint as C

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(C, "save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "checkpoints", 2, model_state=net.state_dict(), ema_state=None, extra={})
    assert latest_checkpoint(tmp_path).name == "step-0000001"
    assert not list((tmp_path / "checkpoints").glob(".step-*"))
    load_checkpoint(latest_checkpoint(tmp_path))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    net = _net()
    path = save_checkpoint(tmp_path / "checkpoints", 5, model_state=net.state_dict(), ema_state=None, extra={})
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    (path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    (path / "state.json").unlink()
    with pytest.raises(CheckpointError, match="not a genzoo checkpoint"):
        load_checkpoint(path)


def test_mismatched_model_is_a_clear_error(tmp_path):
    net = _net()
    path = save_checkpoint(tmp_path / "checkpoints", 5, model_state=net.state_dict(), ema_state=None, extra={})
    other = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model_state(other, load_checkpoint(path)["model"], str(path))


def test_latest_pointing_nowhere(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "LATEST").write_text("step-0000099\n")
    with pytest.raises(CheckpointError, match="missing"):
        latest_checkpoint(tmp_path)


def test_never_unpickles(tmp_path, monkeypatch):
    net = _net()
    opt = _opt_state(net)
    path = save_checkpoint(tmp_path / "checkpoints", 3, model_state=net.state_dict(), ema_state=net.state_dict(),
                           extra={"opt": opt.state_dict()})
    import pickle

    def no(*a, **k):
        raise AssertionError("pickle/torch.load must never be called")

    monkeypatch.setattr(torch, "load", no)
    monkeypatch.setattr(pickle, "load", no)
    monkeypatch.setattr(pickle, "loads", no)
    ck = load_checkpoint(path)
    assert ck["ema"] is not None
