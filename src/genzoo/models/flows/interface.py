"""The flow abstractions every transform and model builds on: :class:`Transform` (``forward(x) ->
(z, logabsdet)``, data -> noise; ``inverse(z) -> x``), :class:`Chain`, and the base distributions
(:class:`StandardNormal`, :class:`StandardLogistic`). They import nothing of the flows package, so
the transforms, the conditioner nets, the dequantiser and the :class:`~.base.Flow` model all sit
above them without a cycle (``.importlinter``)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.likelihoods import rand, randn

_LOG_2PI = math.log(2.0 * math.pi)
PRIORS = ("gaussian", "logistic")


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): sum over every dimension but the first."""
    return x.reshape(x.shape[0], -1).sum(1)


class Transform(nn.Module):
    """An invertible map with a tractable Jacobian determinant (data -> noise).

    Subclasses implement ``forward(x, cond=None) -> (z, logabsdet)`` with logabsdet (B,)
    = log |det dz/dx| and ``inverse(z, cond=None) -> x``; ``output_shape`` when the shape
    of an example changes.
    """

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def output_shape(self, shape: tuple) -> tuple:
        """Per-example shape of ``forward``'s output for an input of per-example ``shape``."""
        return tuple(shape)


class Chain(Transform):
    """Composition f = f_n o ... o f_1: forward applies f_1 first; log-determinants add."""

    def __init__(self, *transforms: Transform):
        super().__init__()
        if len(transforms) == 1 and isinstance(transforms[0], (list, tuple)):
            transforms = tuple(transforms[0])
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x, cond=None):
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x, cond)
            total = total + ld
        return x, total

    def inverse(self, z, cond=None):
        for t in reversed(self.transforms):
            z = t.inverse(z, cond)
        return z

    def output_shape(self, shape):
        for t in self.transforms:
            shape = t.output_shape(shape)
        return tuple(shape)

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self):
        return iter(self.transforms)


# ----------------------------------------------------------------------------- base distributions
class StandardNormal(nn.Module):
    """p_Z = N(0, I) over (B, *shape): log_prob sums over the event dims (nats)."""

    name = "gaussian"

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return sum_except_batch(-0.5 * z * z - 0.5 * _LOG_2PI)

    def sample(self, shape, generator=None, temperature: float = 1.0, device=None, dtype=None) -> torch.Tensor:
        """z ~ N(0, T^2 I) of ``shape`` (batch first)."""
        return temperature * randn(shape, generator, device=device, dtype=dtype)


class StandardLogistic(nn.Module):
    """p_Z = prod_d Logistic(0, 1) (NICE's prior for MNIST): log p(z) = -sum_d softplus(z_d) + softplus(-z_d)."""

    name = "logistic"

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -sum_except_batch(nn.functional.softplus(z) + nn.functional.softplus(-z))

    def sample(self, shape, generator=None, temperature: float = 1.0, device=None, dtype=None) -> torch.Tensor:
        """z = T * logit(u), u ~ U(0, 1): a logistic of scale T (temperature scales the noise)."""
        dtype = dtype or torch.get_default_dtype()
        u = rand(shape, generator, device=device, dtype=dtype)
        tiny = torch.finfo(dtype).tiny
        u = u.clamp(tiny, 1.0 - torch.finfo(dtype).eps)
        return temperature * (torch.log(u) - torch.log1p(-u))


def make_prior(name: str) -> nn.Module:
    if name == "gaussian":
        return StandardNormal()
    if name == "logistic":
        return StandardLogistic()
    raise ConfigError(f"unknown flow prior {name!r}; valid: {', '.join(PRIORS)}")


# ----------------------------------------------------------------------------- the flow model
