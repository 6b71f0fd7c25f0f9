"""The data set protocol the trainer and the metrics consume.

A data set is an in-memory array of raw examples (uint8 pixels, token ids, float
points) plus a *transform* applied per batch (scaling to [-1, 1], uniform
dequantisation, dynamic binarisation). Transforms take an explicit ``torch.Generator``,
so a batch is a pure function of (indices, generator): training is reproducible and a
killed run resumes bit-for-bit.

Evaluation (:meth:`ArrayDataset.iter_batches`, :meth:`ArrayDataset.tensor`) draws the
transform's noise *per example*: example ``i`` is transformed with its own generator
seeded with :func:`example_seed` ``(seed, i) = (splitmix64(seed) + i) mod 2**32``, so
its dequantisation / dynamic binarisation is the same at any batch size and in any
``limit`` subset. Seed ``(splitmix64(seed) - 1) mod 2**32`` (:func:`model_noise_seed`)
is reserved for the model's own noise during evaluation (see :mod:`genzoo.eval.nll`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]

_SPAN = 2**32  # torch's CPU generator (mt19937) uses only the low 32 bits of a seed


def _seed_base(seed: int) -> int:
    """splitmix64(seed) mod 2**32: a well-mixed 32-bit offset for the evaluation seed ``seed``."""
    z = (int(seed) + 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) % _SPAN


def example_seed(seed: int, index: int) -> int:
    """Seed of example ``index``'s transform noise under evaluation seed ``seed``:
    ``(splitmix64(seed) + index) mod 2**32``; distinct for every index of one seed."""
    index = int(index)
    if not 0 <= index < _SPAN - 1:
        raise ValueError(f"example index {index} out of range [0, {_SPAN - 1})")
    return (_seed_base(seed) + index) % _SPAN


def model_noise_seed(seed: int) -> int:
    """Seed of the model's own noise stream under evaluation seed ``seed``:
    ``(splitmix64(seed) - 1) mod 2**32``, the seed of an index no example has, so it never
    coincides with any example's data noise (:func:`example_seed`) under the same ``seed``."""
    return (_seed_base(seed) + _SPAN - 1) % _SPAN


@dataclass(frozen=True)
class DataSpec:
    """What a model and the metrics need to know about a data set.

    Attributes:
        name: data set name as given to ``load_dataset`` (e.g. "mnist").
        kind: "image" (B, C, H, W), "vector" (B, D) or "text" (B, T) token ids.
        shape: per-example shape, e.g. (1, 28, 28), (2,), (256,).
        value_range: (lo, hi) of continuous values, e.g. (-1.0, 1.0); None if discrete.
        discrete: None (continuous), "binary" ({0, 1}), "levels" (integer grey levels
            0..levels-1 as float), or "tokens" (int64 ids < vocab_size).
        levels: raw quantisation levels (256 for 8-bit images; used by bits/dim).
        binarization: "static" | "dynamic" | None; every NLL on binary MNIST names it.
        num_classes: number of label classes, or None.
        vocab_size: for text, the number of tokens.
        dequantization: "uniform" | None: how continuous values were made from levels.
    """

    name: str
    kind: str
    shape: tuple
    value_range: tuple | None = (-1.0, 1.0)
    discrete: str | None = None
    levels: int = 256
    binarization: str | None = None
    num_classes: int | None = None
    vocab_size: int | None = None
    dequantization: str | None = None

    @property
    def num_dims(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    def describe(self) -> str:
        """Short human description, e.g. 'mnist 1x28x28, static binarisation'."""
        shape = "x".join(str(s) for s in self.shape)
        extra = []
        if self.binarization:
            extra.append(f"{self.binarization} binarisation")
        elif self.discrete:
            extra.append(self.discrete)
        if self.dequantization:
            extra.append(f"{self.dequantization} dequantisation")
        if self.value_range is not None and not self.binarization:
            extra.append(f"range [{self.value_range[0]:g}, {self.value_range[1]:g}]")
        return f"{self.name} {shape}" + (", " + ", ".join(extra) if extra else "")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["value_range"] = list(self.value_range) if self.value_range is not None else None
        return d


class ArrayDataset:
    """Raw examples ``data`` (N, ...) with optional ``labels`` (N,) and a per-batch transform."""

    def __init__(self, data: torch.Tensor, labels: torch.Tensor | None, spec: DataSpec, transform: Transform | None = None):
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"{len(data)} examples but {len(labels)} labels")
        self.data = data
        self.labels = labels
        self.spec = spec
        self.transform = transform

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        """Returns (x, y): x transformed, float32 (int64 for tokens), shape (B, *spec.shape); y (B,) or None."""
        x = self.data[indices]
        if self.transform is not None:
            x = self.transform(x, generator)
        y = self.labels[indices] if self.labels is not None else None
        return x, y

    def subset_indices(self, limit: int | None = None) -> torch.Tensor:
        """Indices of an evaluation subset of ``limit`` examples: all of them in order when
        ``limit`` is None or covers the set, otherwise a FIXED random subset (permutation with
        seed 0) - never "the first ``limit``": some files are sorted (the static binarised
        MNIST test set is ordered by digit class), and a prefix would be one class only."""
        n = len(self)
        if limit is None or limit >= n:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(0))[: int(limit)].sort().values

    def get_examples(self, indices: torch.Tensor, seed: int = 0):
        """Like :meth:`get_batch`, but each example ``i`` draws its transform noise from its own
        generator seeded with :func:`example_seed` ``(seed, i)``: the result for an example does
        not depend on which other examples share its batch."""
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if self.transform is None:
            return self.get_batch(indices, None)
        xs, ys = [], []
        for i in indices.tolist():
            x, y = self.get_batch(indices.new_tensor([i]), torch.Generator().manual_seed(example_seed(seed, i)))
            xs.append(x)
            ys.append(y)
        y = torch.cat(ys) if ys and ys[0] is not None else None
        return torch.cat(xs), y

    def iter_batches(self, batch_size: int, seed: int = 0, limit: int | None = None) -> Iterator[tuple]:
        """Batches over the set (or its fixed random ``limit`` subset, :meth:`subset_indices`)
        for evaluation; the transform's noise is drawn per example (:meth:`get_examples`), seeded
        by (``seed``, example index), so it does not depend on ``batch_size`` or ``limit``."""
        idx = self.subset_indices(limit)
        for start in range(0, len(idx), batch_size):
            yield self.get_examples(idx[start: start + batch_size], seed)

    def tensor(self, seed: int = 0, limit: int | None = None) -> torch.Tensor:
        """The whole (transformed) set as one tensor, deterministic given ``seed``."""
        return torch.cat([x for x, _ in self.iter_batches(4096, seed, limit)])
