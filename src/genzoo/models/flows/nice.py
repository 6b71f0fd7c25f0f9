"""NICE: Non-linear Independent Components Estimation (Dinh, Krueger & Bengio 2014, ICLR 2015 workshop).

Equations implemented
---------------------
* Change of variables: log p_X(x) = sum_d log p_{H_d}(f_d(x)) + log|det df/dx|.
* Additive coupling layer: with a partition (I_1, I_2) of the dimensions,
      y_{I_1} = x_{I_1},   y_{I_2} = x_{I_2} + m(x_{I_1}),   log|det| = 0,
  m a ReLU MLP; the inverse is x_{I_2} = y_{I_2} - m(y_{I_1}).
* Alternating partitions (the experiments): the layers alternate which half (odd / even
  indices of the flattened input) is kept, so every dimension is transformed.
* Diagonal scaling ("allowing rescaling"): a last layer h -> S h with S = diag(exp(s)), which makes the
  flow non-volume preserving: log|det| = sum_d s_d.
* Prior: a standard logistic, log p_H(h) = -sum_d (softplus(h_d) + softplus(-h_d))
  (the paper's choice for MNIST), or a standard Gaussian.

The paper's MNIST model: 4 coupling layers, each m with 5 hidden layers of
1000 ReLU units, logistic prior, trained with Adam;
test log-likelihood 1980.5 nats on [0, 1]-scaled dequantised MNIST, i.e. 4.36 bits/dim.
Those are this module's defaults (``couplings=4, hidden=1000, depth=5, prior="logistic"``).
Images are flattened to vectors: NICE does not use the spatial structure.
"""
from __future__ import annotations

import math

from ...errors import ConfigError
from ...registry import register
from .base import PRIORS, Chain, Flow
from .nets import MLP
from .transforms import Coupling, DiagonalScaling, Flatten, alternating_mask


@register("nice", family="flows", paper="Dinh, Krueger & Bengio 2014 (NICE)",
          summary="NICE: additive coupling layers with alternating partitions, diagonal scaling, logistic prior")
class NICE(Flow):
    """NICE (Dinh et al. 2014): additive couplings on the flattened input, diagonal scaling, logistic or Gaussian prior.

    Args:
        shape: per-example data shape, (C, H, W) or (D,), D >= 2.
        couplings: number of additive coupling layers (alternating odd / even partitions).
        hidden, depth: width and number of hidden ReLU layers of each coupling function m.
        prior: "logistic" (the paper's for MNIST) or "gaussian".
        dequantization: "uniform" (the loader's; ``data.dequantize=uniform``) or
            "variational" (Flow++ q(u|x); ``data.dequantize=none``).
        levels, data_range: grey levels and value range of image data (bits/dim, variational
            dequantisation, sample clamping).
        deq_steps, deq_hidden: size of the variational dequantiser's conditional flow.
    """

    def __init__(
        self,
        shape: tuple = (1, 28, 28),
        couplings: int = 4,
        hidden: int = 1000,
        depth: int = 5,
        prior: str = "logistic",
        dequantization: str = "uniform",
        levels: int = 256,
        data_range: tuple = (-1.0, 1.0),
        deq_steps: int = 4,
        deq_hidden: int = 32,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"NICE shape must be a non-empty tuple of positive ints, got {shape}")
        d = math.prod(shape)
        if d < 2:
            raise ConfigError(f"NICE needs at least 2 dimensions to partition, got shape {shape}")
        if int(couplings) < 1:
            raise ConfigError(f"NICE couplings must be >= 1, got {couplings}")
        if prior not in PRIORS:
            raise ConfigError(f"unknown NICE prior {prior!r}; valid: {', '.join(PRIORS)}")
        layers = [Flatten(shape)]
        for i in range(int(couplings)):
            mask = alternating_mask(d, i % 2)
            n_a, n_b = int(mask.sum()), int((~mask).sum())
            layers.append(Coupling(mask, MLP(n_a, n_b, int(hidden), int(depth)), kind="additive"))
        layers.append(DiagonalScaling((d,)))
        self._setup(shape, Chain(layers), prior, dequantization, levels, data_range, deq_steps, deq_hidden)
