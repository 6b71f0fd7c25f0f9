"""The FID Inception-v3 (genzoo.eval.inception) with RANDOM weights: these tests check the plumbing (resizing,
architecture and key names, weight files, the extractor and its errors), not the FID numbers, which need the
real converted weights that genzoo never downloads."""
from __future__ import annotations

import pytest
import torch

from genzoo.errors import ConfigError
from genzoo.eval import sample_metrics
from genzoo.eval.features import InceptionExtractor, get_extractor
from genzoo.eval.inception import ENV, WEIGHT_FILES, FIDInceptionV3, find_weights, load_fid_inception, tf1_resize_bilinear


def _tf1_reference(x, out_h, out_w):
    """TF 1.x resize_bilinear(align_corners=False), one output pixel at a time (its kernel's loop)."""
    B, C, H, W = x.shape
    y = torch.empty(B, C, out_h, out_w, dtype=torch.float64)
    for i in range(out_h):
        sy = i * H / out_h
        y0, fy = int(sy), sy - int(sy)
        y1 = min(y0 + 1, H - 1)
        for j in range(out_w):
            sx = j * W / out_w
            x0, fx = int(sx), sx - int(sx)
            x1 = min(x0 + 1, W - 1)
            top = x[:, :, y0, x0] * (1 - fx) + x[:, :, y0, x1] * fx
            bot = x[:, :, y1, x0] * (1 - fx) + x[:, :, y1, x1] * fx
            y[:, :, i, j] = top * (1 - fy) + bot * fy
    return y


def test_tf1_resize_matches_the_kernel_loop_and_differs_from_half_pixel():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for size in ((11, 13), (3, 4), (5, 7), (29, 29)):
        torch.testing.assert_close(tf1_resize_bilinear(x, size), _tf1_reference(x, *size), rtol=0, atol=1e-12)
    assert torch.equal(tf1_resize_bilinear(x, (5, 7)), x)  # same size: the identity
    half_pixel = torch.nn.functional.interpolate(x, size=(11, 13), mode="bilinear", align_corners=False)
    assert (half_pixel - tf1_resize_bilinear(x, (11, 13))).abs().max() > 1e-3


def _random_weights(tmp_path, fmt="pth"):
    torch.manual_seed(0)
    net = FIDInceptionV3()
    with torch.no_grad():  # random BatchNorm statistics too, so that every tensor of the file matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    sd = net.state_dict()
    path = tmp_path / f"random-inception.{'pth' if fmt == 'pth' else 'safetensors'}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path, net


def test_architecture_follows_the_converted_weight_files():
    sd = FIDInceptionV3().state_dict()
    # the names and shapes of pytorch-fid's / torch-fidelity's files (torchvision's Inception3 naming)
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Conv2d_4a_3x3.bn.running_var"].shape) == (192,)
    assert tuple(sd["Mixed_5b.branch_pool.conv.weight"].shape) == (32, 192, 1, 1)
    assert tuple(sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape) == (192, 192, 1, 7)
    assert tuple(sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape) == (384, 384, 3, 1)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)


def test_extractor_with_random_weights_pth_and_safetensors(tmp_path):
    pth, net = _random_weights(tmp_path, "pth")
    st, _ = _random_weights(tmp_path, "safetensors")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    a, b = InceptionExtractor(weights=pth), InceptionExtractor(weights=st)
    fa, fb = a(x), b(x)
    assert fa.shape == (2, 2048) and fa.dtype == torch.float64 and torch.isfinite(fa).all()
    torch.testing.assert_close(fa, fb)
    assert a.name.startswith("inception:file:random-inception.pth@")  # not the standard weights: named by file
    # what the extractor feeds the network: the images as integers 0..255
    u = ((x + 1) / 2 * 255).round()
    with torch.no_grad():
        torch.testing.assert_close(fa, net.eval()(u).double(), rtol=1e-4, atol=1e-4)
    # grey images are repeated to three channels
    grey = x[:1, :1]
    torch.testing.assert_close(a(grey), a(grey.repeat(1, 3, 1, 1)))
    # through get_extractor and the environment variable, into sample_metrics
    import os

    os.environ[ENV] = str(pth)
    try:
        ext = get_extractor("inception", shape=(3, 32, 32))
        out = sample_metrics(x, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, metrics=("fid",), extractor=ext)
        assert out["extractor"] == a.name and out["feature_dim"] == 2048 and out["fid"] >= 0
    finally:
        del os.environ[ENV]


def test_missing_weights_and_wrong_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError) as e:
        find_weights()
    msg = str(e.value)
    assert "\n" not in msg and WEIGHT_FILES[0] in msg and "https://" in msg and ENV in msg
    with pytest.raises(ConfigError, match="not found"):
        find_weights(tmp_path / "nope.pth")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    path, _ = _random_weights(tmp_path)
    (tmp_path / "torch" / "hub" / "checkpoints" / WEIGHT_FILES[1]).write_bytes(path.read_bytes())
    assert find_weights().name == WEIGHT_FILES[1]  # torch's hub cache, where pytorch-fid / torch-fidelity keep it
    bad = tmp_path / "bad.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(ConfigError, match="not an FID Inception-v3 state dict"):
        load_fid_inception(bad)
    pickled = tmp_path / "code.pth"
    torch.save({"x": object()}, pickled)  # a pickle that is not tensors: refused, never executed
    with pytest.raises(ConfigError, match="state dict of tensors"):
        load_fid_inception(pickled)
