"""Per-batch transforms of raw integer images, shared by every image data set.

A transform is a callable ``(x_raw, generator) -> x`` where ``x_raw`` is a uint8 batch
(B, C, H, W) of grey levels ``k`` in ``0..levels-1`` (256 levels for 8-bit images, 17 for
sklearn's digits) and ``x`` is float32 of the same shape. All randomness is drawn from
``generator``; with ``generator=None`` a fixed default seed (:data:`DEFAULT_SEED`) is
used, so a batch is always a pure function of (indices, generator).

With ``L = levels`` and ``value_range = (lo, hi)``:

* :class:`ScaleLevels` (no dequantisation): ``x = lo + (hi - lo) * k / (L - 1)``, a grid
  of ``L`` values that includes both ends (the PixelCNN++ discretised-logistic
  convention). DataSpec: ``discrete=None, dequantization=None, value_range=(lo, hi)``.
* :class:`UniformDequantize`: ``x = lo + (hi - lo) * (k + u) / L`` with
  ``u ~ U[0, 1)``; the float32 ``x`` always stays inside bin ``k``: ``b_k <= x < b_{k+1}``
  with the float32 edges ``b_k = lo + (hi - lo) * (k / L)``. For (-1, 1) and (0, 1) the edges
  are exact, so ``floor((x - lo) / (hi - lo) * L) == k`` when evaluated exactly (for
  (-1, 1): ``floor(128 * x) + 128``); evaluating ``x - lo`` in float32 can round a value
  just below an edge up onto it. DataSpec: ``dequantization="uniform"``; bits/dim then
  adds ``log2(L / (hi - lo))`` (see :mod:`genzoo.units`).
* :class:`DynamicBinarize`: ``x ~ Bernoulli(k / (L - 1))``, values {0., 1.}, re-drawn for
  every batch (IWAE / NVAE convention). DataSpec: ``discrete="binary"``,
  ``value_range=None``, ``binarization="dynamic"``.
* :func:`binarize_static`: one fixed Bernoulli draw (seed 0) of the whole data set,
  made once at load time; the per-batch transform is then :class:`ToFloat`.
  DataSpec: ``discrete="binary"``, ``binarization="static"``.

:func:`image_transform` picks the transform and the DataSpec fields from the options
``binarize``, ``value_range`` and ``dequantize``, so mnist, digits, folder and array
data sets share one implementation.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

DEFAULT_SEED = 0
BINARIZE_CHOICES = ("none", "dynamic", "static")
DEQUANTIZE_CHOICES = ("none", "uniform")


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator`` itself, or a fresh CPU generator seeded with :data:`DEFAULT_SEED`."""
    if generator is None:
        return torch.Generator().manual_seed(DEFAULT_SEED)
    return generator


def _rand_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) float32 noise of x's shape, drawn from ``generator`` (on its device), on x's device."""
    g = default_generator(generator)
    return torch.rand(x.shape, generator=g, device=g.device, dtype=torch.float32).to(x.device)


def parse_value_range(value, option: str = "value_range") -> tuple[float, float]:
    """(lo, hi) from a tuple/list (YAML) or a string like "0,1" / "[-1, 1]"; ConfigError if bad."""
    v = value
    if isinstance(v, str):
        s = v.strip().strip("[]()")
        v = [p for p in s.replace(" ", ",").split(",") if p]
    try:
        if len(v) != 2:
            raise ValueError
        lo, hi = float(v[0]), float(v[1])
    except (TypeError, ValueError):
        raise ConfigError(
            f"bad value for {option!r}: {value!r}; give two numbers (lo, hi), e.g. [-1, 1] or [0, 1]"
        ) from None
    if not (lo < hi) or lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise ConfigError(f"bad value for {option!r}: {value!r}; need finite lo < hi, e.g. [-1, 1] or [0, 1]")
    return (lo, hi)


class ToFloat:
    """``x = float(k)``: for data that is already binary ({0, 1}) or already float."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.to(torch.float32)

    def __repr__(self) -> str:
        return "ToFloat()"


class ScaleLevels:
    """Levels ``k`` in 0..L-1 -> ``lo + (hi - lo) * k / (L - 1)`` (both ends included). No randomness."""

    def __init__(self, levels: int, value_range: tuple[float, float] = (-1.0, 1.0)):
        self.levels = int(levels)
        self.lo, self.hi = (float(v) for v in value_range)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # k / (L - 1) is exact at both ends in float32, so k = 0 -> lo and k = L-1 -> hi exactly.
        return self.lo + (self.hi - self.lo) * (x.to(torch.float32) / (self.levels - 1))

    def __repr__(self) -> str:
        return f"ScaleLevels(levels={self.levels}, value_range=({self.lo:g}, {self.hi:g}))"


class UniformDequantize:
    """Levels ``k`` -> ``lo + (hi - lo) * (k + u) / L`` with ``u ~ U[0, 1)`` from the generator.

    The result is clamped into the float32 bin [b_k, b_{k+1}) with
    ``b_k = lo + (hi - lo) * k / L``, so rounding never moves a value into the next bin.
    """

    def __init__(self, levels: int, value_range: tuple[float, float] = (-1.0, 1.0)):
        self.levels = int(levels)
        self.lo, self.hi = (float(v) for v in value_range)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        k = x.to(torch.float32)
        u = _rand_like(x, generator)
        w = self.hi - self.lo
        y = self.lo + w * ((k + u) / self.levels)
        lower = self.lo + w * (k / self.levels)
        upper = torch.nextafter(self.lo + w * ((k + 1) / self.levels), torch.tensor(float("-inf")))
        return torch.minimum(torch.maximum(y, lower), upper)

    def __repr__(self) -> str:
        return f"UniformDequantize(levels={self.levels}, value_range=({self.lo:g}, {self.hi:g}))"


class DynamicBinarize:
    """Levels ``k`` -> Bernoulli(k / (L - 1)) in {0., 1.}, drawn from the generator for each batch."""

    def __init__(self, levels: int):
        self.levels = int(levels)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = x.to(torch.float32) / (self.levels - 1)
        return (_rand_like(x, generator) < p).to(torch.float32)

    def __repr__(self) -> str:
        return f"DynamicBinarize(levels={self.levels})"


def binarize_static(x: torch.Tensor, levels: int, seed: int = 0) -> torch.Tensor:
    """One fixed Bernoulli(k / (L - 1)) draw of a whole uint8 array (N, ...) -> uint8 {0, 1}, seeded by ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    p = x.to(torch.float32) / (int(levels) - 1)
    return (torch.rand(x.shape, generator=g) < p).to(torch.uint8)


def image_transform(levels: int, binarize: str = "none", value_range=(-1.0, 1.0), dequantize: str = "none"):
    """The per-batch transform and DataSpec fields for integer images with ``levels`` grey levels.

    Args:
        levels: number of raw grey levels L (256 for uint8 images).
        binarize: "none" | "dynamic" | "static". For "static" the caller must already hold
            binarised {0, 1} data (see :func:`binarize_static`); the transform is :class:`ToFloat`.
        value_range: (lo, hi) of the continuous output; ignored when binarising.
        dequantize: "none" | "uniform"; must be "none" when binarising.
    Returns:
        (transform, spec_fields) with spec_fields the keyword arguments of
        :class:`~genzoo.data.base.DataSpec` for value_range, discrete, levels,
        binarization and dequantization.
    """
    if binarize not in BINARIZE_CHOICES:
        raise ConfigError(f"bad value for 'binarize': {binarize!r}; valid values: {', '.join(BINARIZE_CHOICES)}")
    if dequantize not in DEQUANTIZE_CHOICES:
        raise ConfigError(f"bad value for 'dequantize': {dequantize!r}; valid values: {', '.join(DEQUANTIZE_CHOICES)}")
    if binarize != "none":
        if dequantize != "none":
            raise ConfigError(
                f"binarize={binarize!r} gives {{0, 1}} pixels and cannot be combined with dequantize={dequantize!r}; "
                "set dequantize=none or binarize=none"
            )
        transform = ToFloat() if binarize == "static" else DynamicBinarize(levels)
        fields = dict(value_range=None, discrete="binary", levels=2, binarization=binarize, dequantization=None)
        return transform, fields
    lo, hi = parse_value_range(value_range)
    if dequantize == "uniform":
        transform = UniformDequantize(levels, (lo, hi))
        deq = "uniform"
    else:
        transform = ScaleLevels(levels, (lo, hi))
        deq = None
    fields = dict(value_range=(lo, hi), discrete=None, levels=int(levels), binarization=None, dequantization=deq)
    return transform, fields


def prepare_static(data: torch.Tensor, levels: int, binarize: str, seed: int = 0) -> torch.Tensor:
    """Binarise the *whole* raw array once when ``binarize == "static"`` (before splitting, so an
    image is binarised identically in every split); otherwise return ``data`` unchanged."""
    if binarize == "static" and int(levels) != 2:
        return binarize_static(data, levels, seed)
    return data


def image_dataset(name: str, data: torch.Tensor, labels: torch.Tensor | None, *, levels: int,
                  binarize: str = "none", value_range=(-1.0, 1.0), dequantize: str = "none",
                  num_classes: int | None = None):
    """An :class:`~genzoo.data.base.ArrayDataset` of uint8 images (N, C, H, W) with the image options applied.

    For ``binarize="static"``, ``data`` must already hold {0, 1} (see :func:`prepare_static`).
    """
    from .base import ArrayDataset, DataSpec

    transform, fields = image_transform(levels, binarize, value_range, dequantize)
    spec = DataSpec(name=name, kind="image", shape=tuple(int(s) for s in data.shape[1:]),
                    num_classes=num_classes, **fields)
    return ArrayDataset(data, labels, spec, transform)
