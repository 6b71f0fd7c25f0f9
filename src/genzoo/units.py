"""Units: nats per example <-> bits per dimension.

genzoo's ``log_prob`` always returns **nats per example**. For continuous (dequantised)
image data the density depends on the scaling of the data, so bits/dim must add the
log-volume of one quantisation bin. With ``levels`` grey levels (256 for 8-bit data)
dequantised uniformly and mapped linearly onto an interval of width ``hi - lo``, each bin
has width ``(hi - lo) / levels`` per dimension, so the negative log-likelihood of the
*discrete* data is ``nll_nats + D * log(levels / (hi - lo))`` and::

    bits/dim = nll_nats / (D * ln 2) + log2(levels / (hi - lo))

which is ``+ 8`` for data in [0, 1] and ``+ 7`` for data in [-1, 1] (256 levels).
For a discrete likelihood (binary pixels, softmax over 256 levels, discretised
logistic) there is no bin volume to add: ``bits/dim = nll_nats / (D ln 2)``.
"""
from __future__ import annotations

import math

import torch


def dequantization_offset_bits(data_range: tuple[float, float] | None, levels: int = 256) -> float:
    """Bits per dimension to add to a continuous density's NLL, ``log2(levels / (hi - lo))``.

    ``data_range=None`` means a discrete likelihood: offset 0.
    """
    if data_range is None:
        return 0.0
    lo, hi = data_range
    if not hi > lo:
        raise ValueError(f"data_range must have hi > lo, got {data_range}")
    return math.log2(levels / (hi - lo))


def bits_per_dim(nll_nats, num_dims: int, data_range: tuple[float, float] | None = None, levels: int = 256):
    """Convert an NLL in nats per example to bits per dimension.

    Args:
        nll_nats: float or Tensor (B,), negative log-likelihood in nats per example.
        num_dims: D, the number of dimensions per example (e.g. 784 for MNIST).
        data_range: (lo, hi) of continuous dequantised data, or None for a discrete
            likelihood (binary data, categorical grey levels).
        levels: number of quantisation levels of the raw data (256 for 8-bit).
    Returns: same type as ``nll_nats``, in bits/dim.
    """
    return nll_nats / (num_dims * math.log(2.0)) + dequantization_offset_bits(data_range, levels)


def nats_from_bits_per_dim(bpd, num_dims: int, data_range: tuple[float, float] | None = None, levels: int = 256):
    """Inverse of :func:`bits_per_dim`: bits/dim -> nats per example (in the model's data space)."""
    return (bpd - dequantization_offset_bits(data_range, levels)) * num_dims * math.log(2.0)


def logmeanexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """log(mean(exp(x))) along ``dim``, stably (used by IWAE-style bounds)."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])
