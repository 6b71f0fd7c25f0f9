"""2-D toy densities for flows, diffusion and GANs.

The scales follow FFJORD's ``lib/toy_data.py`` (Grathwohl et al. 2019), the convention
most 2-D density papers and repositories plot, so every toy lies roughly within
[-4, 4]^2:

* ``moons``: sklearn's two moons with noise 0.1, then ``x * 2 + (-1, -0.2)``.
* ``8gaussians``: 8 isotropic Gaussians, centres ``4 * (cos, sin)(k pi / 4) / 1.414``,
  standard deviation ``0.5 / 1.414`` (FFJORD divides by 1.414, not sqrt(2); kept),
  equal weights.
* ``checkerboard``: uniform on the 8 "black" squares of side 2 of a 4x4 board covering
  [-4, 4)^2 (cells with even ``floor(x/2) + floor(y/2)``); density 1/32 there, 0 elsewhere.
* ``swissroll``: sklearn's swiss roll (``t ~ 1.5 pi (1 + 2 U)``, ``(t cos t, t sin t)``
  plus N(0, 1) noise) divided by 5.
* ``spirals``: FFJORD's "2spirals": ``r = 3 pi sqrt(U)``, ``(-r cos r + U/2, r sin r + U/2)``
  and its mirror image, divided by 3, plus N(0, 0.1^2) noise.

Where FFJORD splits a batch exactly in half between two components (moons, spirals),
genzoo picks each point's component with a fair coin; the distribution is the same.

Every sampler is ``sample_<name>(n, generator=None) -> (n, 2)`` float32 and draws all
randomness from ``generator`` (a fixed default seed when None). Closed-form log
densities (nats) exist for ``8gaussians``, ``checkerboard`` and ``mixture8d``: ``log_prob_<name>(x)``
maps (N, D) -> (N,) and is collected in :data:`TOY_LOG_PROB`.

* ``mixture8d``: an 8-D mixture of 6 Gaussians with diagonal covariances, built by genzoo
  for the leaderboard's vector track (a density whose exact log-likelihood is known in more
  than 2 dimensions): means ~ N(0, 2.5^2 I), standard deviations ~ U(0.3, 1.2) per
  coordinate, weights = softmax(N(0, 0.5^2)), all drawn once from ``torch.Generator``
  seed 8 in float64 (:func:`mixture8d_parameters`). Test NLL minus the test points' exact
  -log p estimates KL(p || model) in nats.
"""
from __future__ import annotations

import math

import torch

from .transforms import default_generator

_SQ = 1.414  # FFJORD's constant


def _rand(n, generator, *shape):
    g = default_generator(generator)
    return torch.rand((n, *shape), generator=g, dtype=torch.float64)


def _randn(n, generator, *shape):
    g = default_generator(generator)
    return torch.randn((n, *shape), generator=g, dtype=torch.float64)


def sample_moons(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved half circles (noise 0.1), scaled by 2 and shifted by (-1, -0.2). (n, 2) float32."""
    g = default_generator(generator)
    t = math.pi * _rand(n, g)
    lower = _rand(n, g) < 0.5
    x = torch.where(lower, 1.0 - torch.cos(t), torch.cos(t))
    y = torch.where(lower, 1.0 - torch.sin(t) - 0.5, torch.sin(t))
    pts = torch.stack([x, y], 1) + 0.1 * _randn(n, g, 2)
    return (pts * 2.0 + torch.tensor([-1.0, -0.2], dtype=torch.float64)).to(torch.float32)


def _eight_centres(dtype=torch.float64) -> torch.Tensor:
    s = 1.0 / math.sqrt(2.0)
    c = torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)], dtype=dtype)
    return c * 4.0 / _SQ


_EIGHT_STD = 0.5 / _SQ


def sample_8gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mixture of 8 Gaussians on a circle of radius 4/1.414, std 0.5/1.414. (n, 2) float32."""
    g = default_generator(generator)
    idx = torch.randint(0, 8, (n,), generator=g)
    pts = _eight_centres()[idx] + _EIGHT_STD * _randn(n, g, 2)
    return pts.to(torch.float32)


def log_prob_8gaussians(x: torch.Tensor) -> torch.Tensor:
    """Exact log density (nats) of :func:`sample_8gaussians`: (N, 2) -> (N,), in x's float dtype."""
    dt = x.dtype if x.is_floating_point() else torch.float64
    mu = _eight_centres(dt).to(x.device)
    d2 = ((x.to(dt)[:, None, :] - mu[None]) ** 2).sum(-1)  # (N, 8)
    log_comp = -d2 / (2 * _EIGHT_STD**2) - math.log(2 * math.pi * _EIGHT_STD**2)
    return torch.logsumexp(log_comp, dim=1) - math.log(8.0)


def sample_checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the 8 black squares (side 2) of a checkerboard on [-4, 4)^2. (n, 2) float32."""
    g = default_generator(generator)
    x1 = _rand(n, g) * 4 - 2
    x2_ = _rand(n, g) - torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2
    x2 = x2_ + torch.remainder(torch.floor(x1), 2)
    x = torch.stack([x1, x2], 1) * 2
    # keep each point inside its square after rounding to float32 (so log_prob is finite on samples)
    lower = 2 * torch.floor(x / 2)
    upper = torch.nextafter((lower + 2).to(torch.float32), torch.tensor(-math.inf))
    return torch.minimum(torch.maximum(x.to(torch.float32), lower.to(torch.float32)), upper)


def log_prob_checkerboard(x: torch.Tensor) -> torch.Tensor:
    """Exact log density of :func:`sample_checkerboard`: log(1/32) on its squares, -inf elsewhere. (N, 2) -> (N,)."""
    dt = x.dtype if x.is_floating_point() else torch.float64
    u = x.to(dt) / 2
    inside = ((u >= -2) & (u < 2)).all(dim=1)
    even = torch.remainder(torch.floor(u[:, 0]) + torch.floor(u[:, 1]), 2) == 0
    out = torch.full((x.shape[0],), -math.inf, dtype=dt, device=x.device)
    return out.masked_fill(inside & even, -math.log(32.0))


def sample_swissroll(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """sklearn's swiss roll (noise 1.0), coordinates (x, z), divided by 5. (n, 2) float32."""
    g = default_generator(generator)
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + _randn(n, g, 2)
    return (pts / 5.0).to(torch.float32)


def sample_spirals(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """FFJORD's two spirals (each point on one of the two with probability 1/2). (n, 2) float32."""
    g = default_generator(generator)
    r = torch.sqrt(_rand(n, g)) * 540 * (2 * math.pi) / 360
    dx = -torch.cos(r) * r + _rand(n, g) * 0.5
    dy = torch.sin(r) * r + _rand(n, g) * 0.5
    sign = torch.where(_rand(n, g) < 0.5, -1.0, 1.0).to(torch.float64)
    pts = torch.stack([dx, dy], 1) * sign[:, None] / 3 + 0.1 * _randn(n, g, 2)
    return pts.to(torch.float32)


def mixture8d_parameters(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log weights (6,), means (6, 8), standard deviations (6, 8)) of the ``mixture8d`` toy, fixed by seed 8."""
    g = torch.Generator().manual_seed(8)
    mu = 2.5 * torch.randn(6, 8, generator=g, dtype=torch.float64)
    std = 0.3 + 0.9 * torch.rand(6, 8, generator=g, dtype=torch.float64)
    logw = torch.log_softmax(0.5 * torch.randn(6, generator=g, dtype=torch.float64), 0)
    return logw.to(dtype), mu.to(dtype), std.to(dtype)


def sample_mixture8d(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points of the 8-D Gaussian mixture (see :func:`mixture8d_parameters`). (n, 8) float32."""
    g = default_generator(generator)
    logw, mu, std = mixture8d_parameters()
    idx = torch.multinomial(logw.exp(), n, replacement=True, generator=g)
    return (mu[idx] + std[idx] * _randn(n, g, 8)).to(torch.float32)


def log_prob_mixture8d(x: torch.Tensor) -> torch.Tensor:
    """Exact log density (nats) of :func:`sample_mixture8d`: (N, 8) -> (N,), in x's float dtype (float64 for ints)."""
    dt = x.dtype if x.is_floating_point() else torch.float64
    logw, mu, std = (t.to(x.device) for t in mixture8d_parameters(dt))
    z = (x.to(dt)[:, None, :] - mu[None]) / std[None]  # (N, 6, 8)
    log_comp = (-0.5 * z**2 - torch.log(std)[None] - 0.5 * math.log(2 * math.pi)).sum(-1)
    return torch.logsumexp(log_comp + logw[None], dim=1)


#: name -> sampler(n, generator) -> (n, D) float32 (D = 2 except mixture8d's 8)
TOYS = {
    "moons": sample_moons,
    "8gaussians": sample_8gaussians,
    "checkerboard": sample_checkerboard,
    "swissroll": sample_swissroll,
    "spirals": sample_spirals,
    "mixture8d": sample_mixture8d,
}

#: name -> exact log density (nats), for the toys that have one in closed form
TOY_LOG_PROB = {
    "8gaussians": log_prob_8gaussians,
    "checkerboard": log_prob_checkerboard,
    "mixture8d": log_prob_mixture8d,
}

TOY_DESCRIPTIONS = {
    "moons": "two moons (FFJORD scale), 2-D points",
    "8gaussians": "mixture of 8 Gaussians on a circle (FFJORD scale), exact log-density",
    "checkerboard": "uniform on a 4x4 checkerboard's black squares in [-4, 4]^2, exact log-density",
    "swissroll": "2-D swiss roll (FFJORD scale)",
    "spirals": "two interleaved spirals (FFJORD '2spirals')",
    "mixture8d": "mixture of 6 Gaussians in 8 dimensions (diagonal covariances), exact log-density",
}

_SPLIT_INDEX = {"train": 0, "valid": 1, "test": 2}


def split_seed(seed: int, split: str) -> int:
    """The seed of one split's fixed draw, derived from (seed, split) by numpy's SeedSequence."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), _SPLIT_INDEX[split]]).generate_state(1)[0])


def load_toy(name: str, split: str, *, n: int = 20000, n_eval: int = 5000, seed: int = 0):
    """A fixed draw of toy ``name``: ``n`` points for train, ``n_eval`` for valid/test (seeds from (seed, split))."""
    from .base import ArrayDataset, DataSpec

    size = n if split == "train" else n_eval
    g = torch.Generator().manual_seed(split_seed(seed, split))
    data = TOYS[name](int(size), g)
    spec = DataSpec(name=name, kind="vector", shape=tuple(data.shape[1:]), value_range=None, discrete=None)
    return ArrayDataset(data, None, spec, None)
