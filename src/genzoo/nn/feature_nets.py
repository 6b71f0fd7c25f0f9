"""The classifier networks whose penultimate layers are genzoo's shipped image features.

They serve two users: the sample metrics (FID, KID, precision / recall through
:mod:`genzoo.eval.features`, which documents the protocol) and the VQGAN's perceptual loss
(:mod:`genzoo.models.vq`). Shared networks live in ``nn/``, below both, with their weights in
``nn/assets/`` (written by ``scripts/train_feature_net.py``; loaded with safetensors, never a pickle).

* :class:`MNISTFeatureNet`: 28x28 grey digits, 128-d features, ``assets/mnist_features.*``.
* :class:`CIFAR10FeatureNet`: 32x32 colour images, 256-d features, ``assets/cifar10_features.*``.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, DataError, did_you_mean

ASSETS = Path(__file__).resolve().parent / "assets"
MNIST_WEIGHTS = ASSETS / "mnist_features.safetensors"
MNIST_METADATA = ASSETS / "mnist_features.json"
CIFAR10_WEIGHTS = ASSETS / "cifar10_features.safetensors"
CIFAR10_METADATA = ASSETS / "cifar10_features.json"


class _ClassifierNet(nn.Module):
    """A classifier whose penultimate layer gives the features: ``conv`` -> ``fc`` (features) -> ``head``."""

    conv: nn.Sequential
    fc: nn.Sequential
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, feature_dim) penultimate features."""
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, 10) class logits."""
        return self.head(self.features(x))


class MNISTFeatureNet(_ClassifierNet):
    """Small CNN classifier for 28x28 grey digits; its penultimate layer gives the features.

    Three 3x3 conv stages (16, 32, 64 channels; BatchNorm, ReLU, 2x2 max-pool:
    28 -> 14 -> 7 -> 3), a linear layer to ``feature_dim`` (BatchNorm, ReLU) = the
    features, and a linear classifier to 10 logits. About 99k parameters.

    Input: (B, 1, 28, 28) float in [-1, 1] (MNIST pixel k in 0..255 -> 2k/255 - 1).
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        c1, c2, c3 = widths
        self.widths = tuple(widths)
        self.feature_dim = feature_dim

        def stage(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.conv = nn.Sequential(stage(1, c1), stage(c1, c2), stage(c2, c3))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c3 * 9, feature_dim, bias=False), nn.BatchNorm1d(feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)


class CIFAR10FeatureNet(_ClassifierNet):
    """Small VGG-style classifier for 32x32 colour images; its penultimate layer gives the features.

    Three stages of two 3x3 convolutions (32, 64, 128 channels; BatchNorm, ReLU) each followed by
    a 2x2 max-pool (32 -> 16 -> 8 -> 4), a global average pool, a linear layer to ``feature_dim``
    (BatchNorm, ReLU) = the features, and a linear classifier to 10 logits. About 0.32M parameters.
    Trained by ``scripts/train_feature_net.py --data cifar10`` (metadata, test accuracy and command in
    ``assets/cifar10_features.json``).

    Input: (B, 3, 32, 32) float in [-1, 1] (pixel k in 0..255 -> 2k/255 - 1, per channel, no other
    normalisation).
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), feature_dim: int = 256, num_classes: int = 10):
        super().__init__()
        c1, c2, c3 = widths
        self.widths = tuple(widths)
        self.feature_dim = feature_dim

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        def stage(cin, cout):
            return nn.Sequential(*conv(cin, cout), *conv(cout, cout), nn.MaxPool2d(2))

        self.conv = nn.Sequential(stage(3, c1), stage(c1, c2), stage(c2, c3))
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, feature_dim, bias=False),
                                nn.BatchNorm1d(feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)


#: the shipped feature nets: name -> (architecture, weights file, metadata file)
FEATURE_NETS = {
    "mnist": (MNISTFeatureNet, MNIST_WEIGHTS, MNIST_METADATA),
    "cifar10": (CIFAR10FeatureNet, CIFAR10_WEIGHTS, CIFAR10_METADATA),
}
#: the ``model`` metadata of weight files: the classes were in genzoo.eval.features when the shipped files were written
_ARCH_BY_MODEL = {f"genzoo.eval.features.{cls.__name__}": name for name, (cls, _, _) in FEATURE_NETS.items()}
_REGEN = {"mnist": "python scripts/train_feature_net.py", "cifar10": "python scripts/train_feature_net.py --data cifar10 --data-root DIR"}


def feature_net_metadata(name: str = "mnist") -> dict:
    """The JSON metadata shipped beside a feature net's weights (accuracy, size, training command, sha256)."""
    meta = FEATURE_NETS[name][2]
    if not meta.exists():
        raise DataError(f"{meta} is missing; regenerate it with `{_REGEN[name]}`")
    return json.loads(meta.read_text())


def mnist_feature_metadata() -> dict:
    """The JSON metadata shipped beside the MNIST weights (accuracy, size, training command, sha256)."""
    return feature_net_metadata("mnist")


def _arch_of_file(p: Path, default: str) -> str:
    """Which architecture a safetensors file declares in its metadata (``model``); ``default`` when none."""
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            model = (f.metadata() or {}).get("model")
    except Exception as e:  # not a safetensors file, truncated, ...
        raise DataError(f"cannot read feature-net weights {p} ({type(e).__name__}: {e}); it must be a safetensors file "
                        f"of the {' or '.join(c.__name__ for c, _, _ in FEATURE_NETS.values())} architecture") from None
    if model is None:
        return default
    if model not in _ARCH_BY_MODEL:
        raise DataError(f"{p} holds a {model}, not a genzoo feature net ({', '.join(_ARCH_BY_MODEL)})")
    return _ARCH_BY_MODEL[model]


@functools.lru_cache(maxsize=None)
def _load_feature_net_cached(path: str, arch: str) -> nn.Module:
    from safetensors.torch import load_file

    cls = FEATURE_NETS[arch][0]
    p = Path(path)
    if not p.exists():
        raise DataError(f"{arch} feature network weights not found at {p}; regenerate them with `{_REGEN[arch]}`")
    try:
        state = load_file(str(p))
    except Exception as e:  # not a safetensors file, truncated, ...
        raise DataError(f"cannot read feature-net weights {p} ({type(e).__name__}: {e}); it must be a safetensors file "
                        f"of the {cls.__name__} architecture") from None
    kw = {}
    meta_path = p.with_suffix(".json")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if "widths" in meta:
            kw["widths"] = tuple(meta["widths"])
        if "feature_dim" in meta:
            kw["feature_dim"] = int(meta["feature_dim"])
    net = cls(**kw)
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:  # wrong keys/shapes
        raise DataError(f"{p} does not match {cls.__name__}{net.widths}: {str(e).splitlines()[0]}") from None
    net.eval()
    for q in net.parameters():
        q.requires_grad_(False)
    return net


def load_feature_net(name: str = "mnist", path: str | Path | None = None) -> nn.Module:
    """A shipped feature network ("mnist" or "cifar10"), or your weights of its architecture at ``path``,
    in eval mode, on the CPU (cached per path). Loaded with ``safetensors.torch.load_file`` (never a
    pickle). The returned module is shared: do not train or move it in place."""
    if name not in FEATURE_NETS:
        raise ConfigError(f"unknown feature net {name!r}{did_you_mean(name, FEATURE_NETS)}; valid: {', '.join(FEATURE_NETS)}")
    return _load_feature_net_cached(str(Path(path) if path is not None else FEATURE_NETS[name][1]), name)


def load_mnist_feature_net(path: str | Path | None = None) -> MNISTFeatureNet:
    """The shipped MNIST feature network, in eval mode, on the CPU (cached per path).

    Loads ``assets/mnist_features.safetensors`` with ``safetensors.torch.load_file``
    (never a pickle). The returned module is shared: do not train or move it in place.
    """
    return load_feature_net("mnist", path)
