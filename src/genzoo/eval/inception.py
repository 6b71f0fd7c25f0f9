"""The Inception-v3 of the standard FID protocol (pool3, 2048 features), in genzoo's own code.

Papers and protocol
-------------------
* Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision": Inception-v3.
* Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium" (FID): the 2048-d pool3 features of the TensorFlow graph
  ``inception-2015-12-05`` (the TTUR reference code), fed uint8 images that the graph itself
  resizes to 299x299 with TF 1.x bilinear resizing (no half-pixel offset) and maps to
  ``(x - 128) / 128``.

This module rebuilds that graph as torch modules, as pytorch-fid (``FIDInceptionA/C/E``) and
torch-fidelity (``inception-v3-compat``) do, with the graph's three differences from the textbook
network: average pools that do not count padding, a max pool in the last block's pool branch,
and 1008 logits. It reads their converted weight files, ``pt_inception-2015-12-05-6726825d.pth``
(pytorch-fid) or ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity; both name the tensors
as torchvision's Inception3 does, which this module follows), from a path you give or from torch's
hub cache, and never downloads them. Resizing follows the TF graph (and torch-fidelity); pytorch-fid
resizes with torch's half-pixel bilinear instead, which moves FIDs slightly.
``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors only: the restricted
unpickler runs no code) and ``.safetensors`` files as they are.

Numbers from it are comparable with published FIDs only under the published protocol: 50,000
samples against the statistics of the 50,000 CIFAR-10 training images (EDM, StudioGAN), on the
official images (not the JPEG copy), with these weights. The tests run it with random weights:
they check the plumbing (shapes, resizing, key names, the extractor), not the numbers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

#: the first 8 hex digits of the sha256 of the converted TF weights (torch hub's file-name convention)
WEIGHTS_HASH = "6726825d"
WEIGHT_FILES = (f"pt_inception-2015-12-05-{WEIGHTS_HASH}.pth", f"weights-inception-2015-12-05-{WEIGHTS_HASH}.pth")
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHT_FILES[0]
ENV = "GENZOO_INCEPTION_WEIGHTS"


def tf1_resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing as TensorFlow 1.x's ``resize_bilinear(align_corners=False)``: output pixel i reads the
    input at ``i * in / out`` (no half-pixel offset; torch's ``interpolate`` uses ``(i + 0.5) * in / out - 0.5``),
    the right/bottom neighbour clamped to the edge. (B, C, H, W) -> (B, C, *size), float."""
    def weights(n_in: int, n_out: int):
        src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        return i0.to(x.device), i1.to(x.device), (src - i0).to(x.dtype).to(x.device)

    (y0, y1, wy), (x0, x1, wx) = weights(x.shape[2], size[0]), weights(x.shape[3], size[1])
    rows = x[:, :, y0] * (1 - wy)[:, None] + x[:, :, y1] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, the TF graph's) -> ReLU."""

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # the TF graph's average pool ignores the zero padding
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b = x
        for i in range(1, 5):
            b = getattr(self, f"branch7x7x3_{i}")(b)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """``pool="avg"``: Mixed_7b; ``pool="max"``: Mixed_7c, whose pool branch the TF graph takes by max pooling."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.pool == "max" else _avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3: ``(B, 3, H, W)`` pixel values in [0, 255] -> ``(B, 2048)`` pool3 features.

    Any H, W: the input is resized to 299x299 first (:func:`tf1_resize_bilinear`), then mapped to
    ``(x - 128) / 128``. Module names follow the converted weight files (``Conv2d_1a_3x3.conv.weight``,
    ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight``)."""

    SIZE = 299

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")
        self.fc = nn.Linear(2048, 1008)  # the graph's logits; not used for FID, kept so the weight files load

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = tf1_resize_bilinear(x.float(), (self.SIZE, self.SIZE))
        x = (x - 128.0) / 128.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))  # pool3: global average pool, (B, 2048)


def find_weights(path=None) -> Path:
    """The weight file: ``path``, else ``$GENZOO_INCEPTION_WEIGHTS``, else one of :data:`WEIGHT_FILES` in torch's
    hub cache (``$TORCH_HOME/hub/checkpoints``, where pytorch-fid and torch-fidelity keep them). A ConfigError
    names where to get it otherwise: genzoo never downloads it."""
    if path is None:
        path = os.environ.get(ENV) or None
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"Inception weights {p} not found; give the path of {WEIGHT_FILES[0]} "
                              f"(pytorch-fid) or {WEIGHT_FILES[1]} (torch-fidelity)")
        return p
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in WEIGHT_FILES:
        if (hub / name).is_file():
            return hub / name
    raise ConfigError(f"extractor 'inception' needs the FID Inception-v3 weights, which genzoo does not download: "
                      f"put {WEIGHT_FILES[0]} ({WEIGHTS_URL}) or torch-fidelity's {WEIGHT_FILES[1]} in {hub}, "
                      f"or set {ENV}=PATH; offline, use the shipped extractors (mnist, cifar10)")


def load_weights(path) -> tuple[dict, str]:
    """(state dict, sha256) of a weight file: ``.safetensors``, or ``.pth`` / ``.pt`` read with
    ``torch.load(weights_only=True)`` (tensors only; no code runs)."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), digest
    if path.suffix not in (".pth", ".pt"):
        raise ConfigError(f"Inception weights must be a .pth / .pt state dict or a .safetensors file, got {path.name}")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"could not read {path} as a state dict of tensors ({type(e).__name__}: {e}); "
                          f"use the file {WEIGHT_FILES[0]} of pytorch-fid or {WEIGHT_FILES[1]} of torch-fidelity") from None
    if not isinstance(sd, dict):
        raise ConfigError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return sd, digest


def load_fid_inception(path=None, device=None) -> tuple[FIDInceptionV3, str]:
    """The network with the weights of :func:`find_weights` (every tensor of the architecture must be in the file;
    BatchNorm's step counters may be absent), in eval mode, and its name: ``"inception"`` for the standard
    weights (sha256 starting with :data:`WEIGHTS_HASH`), ``"inception:file:NAME@SHA12"`` for any other file."""
    p = find_weights(path)
    sd, digest = load_weights(p)
    net = FIDInceptionV3()
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.startswith("AuxLogits.")]
    if missing or unexpected:
        raise ConfigError(f"{p.name} is not an FID Inception-v3 state dict: {len(missing)} tensors missing "
                          f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    net = net.eval().requires_grad_(False)
    if device is not None:
        net = net.to(device)
    name = "inception" if digest.startswith(WEIGHTS_HASH) else f"inception:file:{p.name}@{digest[:12]}"
    return net, name
