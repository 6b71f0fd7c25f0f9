"""Feature extractors for the sample-based metrics (FID, KID, precision/recall).

FID (Heusel et al. 2017) and its relatives compare two sets of images through the
features of a fixed network. The number depends entirely on that network, so every
genzoo metric names the extractor it used (``extractor.name``) and the protocol is:

* ``"mnist"``: genzoo's shipped MNIST classifier (:class:`MNISTFeatureNet`, trained by
  ``scripts/train_feature_net.py`` on the 60k training images, grey and binarised,
  >= 99% test accuracy; metadata in ``assets/mnist_features.json``). Features are its
  128-dimensional penultimate layer (after BatchNorm and ReLU). Input (B, 1, 28, 28);
  the extractor maps the data set's value range onto the net's [-1, 1].
  Default for (1, 28, 28) images. FIDs computed with it are *not* comparable with
  Inception FIDs in papers; compare models with each other and with the floor
  (:func:`genzoo.eval.fid_floor`: test set vs training set).
* ``"cifar10"``: genzoo's shipped CIFAR-10 classifier (:class:`CIFAR10FeatureNet`, trained by
  ``scripts/train_feature_net.py --data cifar10`` on the 50k training images of the CIFAR-10 copy
  the project has (decoded from JPEG; test accuracy and command in ``assets/cifar10_features.json``).
  Features are its 256-dimensional penultimate layer. Input (B, 3, 32, 32). Default for CIFAR-10;
  for your own 32x32 colour images choose it by name (``--extractor cifar10``). Like ``"mnist"``,
  its FIDs compare models with each other and with the floor, never with the Inception FIDs of
  papers.
* ``"inception"``: the Inception-v3 pool3 features (2048-d) of the standard FID protocol, the network
  of the original TF FID code rebuilt in :mod:`genzoo.eval.inception`. Needs the converted weights of
  pytorch-fid or torch-fidelity (``$GENZOO_INCEPTION_WEIGHTS`` or torch's hub cache; never downloaded
  by genzoo).
* ``"raw"``: the flattened data itself (8x8 digits, 2-D toy points, vectors).
* ``"auto"``, given the data set's ``spec``: ``"mnist"`` only for the MNIST data sets genzoo
  ships (:data:`MNIST_DATASETS`), ``"raw"`` for its 2-D toys and the 8x8 digits
  (:data:`RAW_DATASETS`: low-dimensional data that are their own features), ``"cifar10"`` for the
  ``cifar10`` data set (:data:`CIFAR10_DATASETS`); any other data (your folder of images, your
  array) has no automatic feature net and ``"auto"`` raises a
  ConfigError naming the choices, since raw pixels of RGB images or the digit net on other
  28x28 images give numbers that look like FIDs and mean nothing. Without a spec, ``"auto"``
  goes by the shape alone (``"mnist"`` for (1, 28, 28), ``"cifar10"`` for (3, 32, 32), ``"raw"``
  otherwise): the caller
  asserts what the data are.
* a file ``NET.safetensors``: your own weights of the :class:`MNISTFeatureNet` or
  :class:`CIFAR10FeatureNet` architecture (the file's ``model`` metadata says which; MNIST when
  absent), e.g. ``scripts/train_feature_net.py --out NET.safetensors``, with its ``NET.json`` beside
  it for other widths; named ``file:NET.safetensors@SHA256[:12]`` in
  every result. Other architectures are refused when the weights do not fit.

An extractor is any object with ``name: str``, ``dim: int | None`` and
``__call__(x: Tensor) -> Tensor`` returning (B, dim) float64 features on the CPU; it
batches internally and never builds an autograd graph. Pass your own to any metric.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ..errors import ConfigError, DataError, did_you_mean
from ..nn.feature_nets import (  # noqa: F401  (the networks and their weights: nn/, shared with the VQGAN's loss)
    ASSETS, CIFAR10_METADATA, CIFAR10_WEIGHTS, FEATURE_NETS, MNIST_METADATA, MNIST_WEIGHTS, CIFAR10FeatureNet,
    MNISTFeatureNet, _arch_of_file, _ClassifierNet, feature_net_metadata, load_feature_net, load_mnist_feature_net,
    mnist_feature_metadata,
)

EXTRACTORS = ("auto", "mnist", "cifar10", "inception", "raw")
#: the data sets whose images the shipped MNIST feature net was trained for
MNIST_DATASETS = ("mnist", "binarized_mnist")
#: the data sets whose images the shipped CIFAR-10 feature net was trained for
CIFAR10_DATASETS = ("cifar10",)
#: shipped low-dimensional data sets whose values are their own features (``"auto"`` -> ``"raw"``)
RAW_DATASETS = ("digits", "moons", "8gaussians", "checkerboard", "swissroll", "spirals")  # + every genzoo.data.toys.TOYS


def auto_extractor_name(spec=None, shape: tuple | None = None) -> str:
    """What ``extractor="auto"`` means for a data set (see the module docstring); ConfigError when
    genzoo has no feature net made for it."""
    if spec is not None:
        from ..data.toys import TOYS

        shp = "x".join(str(int(s)) for s in spec.shape)
        if spec.name in MNIST_DATASETS and tuple(spec.shape) == (1, 28, 28):
            return "mnist"
        if spec.name in RAW_DATASETS or spec.name in TOYS:
            return "raw"
        if spec.name in CIFAR10_DATASETS and tuple(spec.shape) == (3, 32, 32):
            return "cifar10"
        raise ConfigError(
            f"no feature network is chosen automatically for data set {spec.name!r} ({spec.kind}, {shp}): genzoo's mnist "
            "net is made for MNIST digits only and raw values are rarely meaningful features; choose one with --extractor: "
            "inception (natural images, needs torch-fidelity), cifar10 (genzoo's CIFAR-10 net, 3x32x32 images), "
            "mnist (28x28 grey digit-like images), raw "
            "(low-dimensional data), or FILE.safetensors (your MNISTFeatureNet or CIFAR10FeatureNet weights)")
    if shape is None:
        raise ConfigError("extractor='auto' needs the data's shape: pass spec=DataSpec or shape=(C, H, W)")
    if tuple(shape) in ((1, 28, 28), (28, 28)):
        return "mnist"
    return "cifar10" if tuple(shape) == (3, 32, 32) else "raw"


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need: a name, a feature dimension and a batched map to features."""

    name: str
    dim: int | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) data space -> (B, dim) float64
        ...


def _value_range_of(spec) -> tuple[float, float] | None:
    """The (lo, hi) range of a DataSpec's values as the feature nets see them."""
    if spec is None:
        return None
    if spec.discrete == "binary":
        return (0.0, 1.0)
    if spec.discrete == "levels":
        return (0.0, float(spec.levels - 1))
    if spec.discrete == "tokens":
        raise ConfigError(f"data set {spec.name!r} holds tokens; image feature extractors do not apply (use extractor='raw' or nll)")
    if spec.value_range is not None:
        return (float(spec.value_range[0]), float(spec.value_range[1]))
    return None


def _to_unit_interval(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Map data in [lo, hi] to [0, 1], clamping small excursions; gross mismatch -> DataError."""
    lo, hi = value_range
    width = hi - lo
    xf = x.float()
    mn, mx = float(xf.min()), float(xf.max())
    if mn < lo - 0.5 * width or mx > hi + 0.5 * width or not torch.isfinite(xf).all():
        raise DataError(
            f"inputs span [{mn:g}, {mx:g}] but the declared value range is [{lo:g}, {hi:g}]; "
            "pass the data set's DataSpec (spec=...) or value_range=(lo, hi) matching the data"
        )
    return ((xf - lo) / width).clamp(0.0, 1.0)


class _BatchedExtractor:
    name: str = "base"
    dim: int | None = None
    batch_size: int = 500

    def _features(self, xb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) in data space -> (B, dim) float64 features on the CPU, computed without grad."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        self._check(x)
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                out.append(self._features(x[start: start + self.batch_size]).detach().to("cpu", torch.float64))
        if not out:
            return torch.zeros(0, self.dim or 0, dtype=torch.float64)
        return torch.cat(out)

    def _check(self, x: torch.Tensor) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class ClassifierExtractor(_BatchedExtractor):
    """Penultimate features of one of genzoo's shipped classifiers (:data:`FEATURE_NETS`).

    Args:
        value_range: (lo, hi) of the inputs' values: (0, 1) for binary {0, 1} or [0, 1]
            data, (-1, 1) for genzoo's continuous images (the default). Inputs are mapped
            linearly to the net's [-1, 1]; values slightly outside are clamped.
        batch_size: images per forward pass.
        device: where to run the net (default: CPU).
        weights: your own weights of the same architecture (a .safetensors file); the
            extractor is then named ``file:NAME@SHA256[:12]``.
    """

    name = "classifier"
    arch = "mnist"
    #: per-example input shapes accepted (all reshaped to the first)
    shapes: tuple[tuple[int, ...], ...] = ((1, 28, 28),)

    def __init__(self, value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 500, device=None, weights=None):
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ConfigError(f"value_range must have hi > lo, got {value_range}")
        self.value_range = (lo, hi)
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        net = load_feature_net(self.arch, weights)
        if weights is not None:  # a user's feature net: named by its file and content
            import hashlib

            digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]
            self.name = f"file:{Path(weights).name}@{digest}"
        if self.device.type != "cpu":
            moved = type(net)(net.widths, net.feature_dim).to(self.device).eval()
            moved.load_state_dict(net.state_dict())
            net = moved
        self.net = net
        self.dim = net.feature_dim

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) not in self.shapes:
            raise DataError(
                f"the {self.arch} feature net needs images of shape (B, {', '.join(map(str, self.shapes[0]))}), got "
                f"{tuple(x.shape)}; use extractor='raw' (or 'inception') for other data"
            )

    def _features(self, xb: torch.Tensor) -> torch.Tensor:
        xb = xb.reshape(-1, *self.shapes[0]).to(self.device)
        x = 2.0 * _to_unit_interval(xb, self.value_range) - 1.0
        return self.net.features(x)


class MNISTExtractor(ClassifierExtractor):
    """Penultimate features (128-d) of the shipped MNIST classifier.

    Args: as :class:`ClassifierExtractor`.
    Input: (B, 1, 28, 28) (or (B, 28, 28) / (B, 784), reshaped). Output (B, 128) float64.
    """

    name = "mnist"
    arch = "mnist"
    shapes = ((1, 28, 28), (28, 28), (784,))


class CIFAR10Extractor(ClassifierExtractor):
    """Penultimate features (256-d) of the shipped CIFAR-10 classifier (:class:`CIFAR10FeatureNet`).

    Args: as :class:`ClassifierExtractor`.
    Input: (B, 3, 32, 32) (or (B, 3072), reshaped). Output (B, 256) float64.
    """

    name = "cifar10"
    arch = "cifar10"
    shapes = ((3, 32, 32), (3072,))


class RawExtractor(_BatchedExtractor):
    """The data itself, flattened: (B, ...) -> (B, prod(...)) float64."""

    name = "raw"

    def __init__(self, dim: int | None = None, batch_size: int = 4096):
        self.dim = dim
        self.batch_size = int(batch_size)

    def _check(self, x: torch.Tensor) -> None:
        d = 1
        for s in x.shape[1:]:
            d *= int(s)
        if self.dim is not None and d != self.dim:
            raise DataError(f"the raw extractor was built for {self.dim}-dimensional data, got shape {tuple(x.shape)}")

    def _features(self, xb: torch.Tensor) -> torch.Tensor:
        return xb.reshape(xb.shape[0], -1).to(torch.float64)


class InceptionExtractor(_BatchedExtractor):
    """Inception-v3 pool3 features (2048-d) of the standard FID protocol (:mod:`genzoo.eval.inception`).

    Inputs in ``value_range`` are mapped to 0..255 and rounded to integers (the uint8 images of the
    reference code; grey images repeated to 3 channels); the network resizes them to 299x299 with TF 1.x
    bilinear resizing. ``weights``: the weight file (default: ``$GENZOO_INCEPTION_WEIGHTS`` or torch's hub
    cache, :func:`genzoo.eval.inception.find_weights`); genzoo never downloads it. Named ``"inception"`` with
    the standard weights, ``"inception:file:NAME@SHA12"`` with any other file.
    """

    name = "inception"

    def __init__(self, value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 100, device=None, weights=None):
        from .inception import load_fid_inception

        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.net, self.name = load_fid_inception(weights, device=self.device)
        self.dim = 2048

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise DataError(f"the inception extractor needs images (B, 1 or 3, H, W), got {tuple(x.shape)}")

    def _features(self, xb: torch.Tensor) -> torch.Tensor:
        u = (_to_unit_interval(xb, self.value_range) * 255.0).round()
        if u.shape[1] == 1:
            u = u.repeat(1, 3, 1, 1)
        return self.net(u.to(self.device))


def get_extractor(
    name: str | FeatureExtractor = "auto",
    spec=None,
    *,
    shape: tuple | None = None,
    value_range: tuple[float, float] | None = None,
    batch_size: int | None = None,
    device=None,
) -> FeatureExtractor:
    """Build a feature extractor by name.

    Args:
        name: "auto" | "mnist" | "cifar10" | "inception" | "raw", a feature-net FILE.safetensors, or an extractor
            object (returned as is). "auto": see :func:`auto_extractor_name`.
        spec: the data set's :class:`~genzoo.data.base.DataSpec`; gives the value range
            (binary {0,1} and [0,1] -> 2x - 1 for the mnist net; [-1,1] as is) and, for
            "auto", the per-example shape.
        shape: per-example shape for "auto" when no spec is given (e.g. (1, 28, 28)).
        value_range: (lo, hi) of the inputs; overrides the spec. Default (-1, 1).
        batch_size: examples per forward pass (default 500 for mnist and cifar10, 100 for inception).
        device: device for the network (default CPU).
    Returns: an object with ``.name``, ``.dim`` and ``__call__(x) -> (B, dim) float64``.
    """
    if not isinstance(name, str):
        if callable(name) and hasattr(name, "name"):
            return name
        raise ConfigError(f"extractor must be one of {', '.join(EXTRACTORS)} or an object with .name, .dim and __call__; got {name!r}")
    if name not in EXTRACTORS:
        if name.endswith(".safetensors") or Path(name).is_file():
            if not Path(name).is_file():
                raise ConfigError(f"feature-net file {name} not found; pass an existing .safetensors file of the "
                                  f"MNISTFeatureNet or CIFAR10FeatureNet architecture, or one of {', '.join(EXTRACTORS)}")
            if not name.endswith(".safetensors"):
                raise ConfigError(f"feature-net file {name} is not a .safetensors file; genzoo loads feature nets only "
                                  "as safetensors weights of the MNISTFeatureNet or CIFAR10FeatureNet architecture (never pickles)")
            vr = tuple(value_range) if value_range is not None else _value_range_of(spec)
            cls = CIFAR10Extractor if _arch_of_file(Path(name), "mnist") == "cifar10" else MNISTExtractor
            return cls(vr or (-1.0, 1.0), device=device, weights=name, **({"batch_size": batch_size} if batch_size else {}))
        raise ConfigError(f"unknown feature extractor {name!r}{did_you_mean(name, EXTRACTORS)}; valid: "
                          f"{', '.join(EXTRACTORS)}, or a feature-net FILE.safetensors")
    if shape is None and spec is not None:
        shape = tuple(spec.shape)
    shape = tuple(int(s) for s in shape) if shape is not None else None
    if name == "auto":
        name = auto_extractor_name(spec, shape)
    vr = tuple(value_range) if value_range is not None else _value_range_of(spec)
    if name == "raw":
        dim = None
        if shape is not None:
            dim = 1
            for s in shape:
                dim *= s
        return RawExtractor(dim, **({"batch_size": batch_size} if batch_size else {}))
    if vr is None:
        vr = (-1.0, 1.0)
    kw = {"batch_size": batch_size} if batch_size else {}
    if name == "mnist":
        return MNISTExtractor(vr, device=device, **kw)
    if name == "cifar10":
        return CIFAR10Extractor(vr, device=device, **kw)
    return InceptionExtractor(vr, device=device, **kw)
