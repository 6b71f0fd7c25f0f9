"""Variational dequantisation (Ho, Chen, Srinivas, Duan & Abbeel 2019, "Flow++", sec. 3.1).

Uniform dequantisation fits a density p to y = x + u, u ~ U[0, 1)^D (in bin units), and
E_u[log p(x + u)] <= log P(x). Flow++ replaces U[0, 1) by a learned q(u | x) and trains
the tighter bound, here in the units of the data scaled to [lo, hi]::

    log P(x) - D log((hi - lo) / L) >= E_{u ~ q(u|x)} [ log p(y) - log q(u | x) ],
    y = lo + (hi - lo) (k + u) / L,   k the grey level of x.

(The left side is what ``Flow.log_prob`` reports, so bits/dim adds log2(L / (hi - lo)) as
for uniform dequantisation; see :mod:`genzoo.units`.)

q(u | x) is itself a conditional flow, run in its sampling direction:
eps ~ N(0, I) -> v = g(eps; x) -> u = sigmoid(v), with

    log q(u | x) = log N(eps; 0, I) - log|det dv/deps| - sum_d log sigmoid'(v_d),
    log sigmoid'(v) = log sigmoid(v) + log sigmoid(-v).

g is a conditional element-wise affine map followed by ``steps`` affine couplings
(checkerboard masks for images, alternating masks for vectors), every network seeing
features h(x) of the data (Flow++ conditions on a feature net of x in the same way; its
networks are much larger: gated convolutions with self-attention).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.likelihoods import randn
from .interface import Chain, StandardNormal, sum_except_batch
from .nets import MLP, ConvNet, ZeroConv2d, ZeroLinear
from .transforms import ConditionalAffine, Coupling, alternating_mask, checkerboard_mask


class VariationalDequantizer(nn.Module):
    """q(u | x), u in (0, 1)^shape, for data x of per-example ``shape`` ((C, H, W) or (D,)).

    Args:
        shape: per-example data shape.
        steps: coupling layers of the conditional flow.
        hidden: width of the feature network and the coupling networks.
    """

    def __init__(self, shape: tuple, steps: int = 4, hidden: int = 32):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        hidden, steps = int(hidden), int(steps)
        layers = []
        if len(self.shape) == 3:
            c, h, w = self.shape
            self.features = nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())
            layers.append(ConditionalAffine(ZeroConv2d(hidden, 2 * c, 3, logscale_factor=0.0), c))
            for i in range(steps):
                layers.append(Coupling(checkerboard_mask(h, w, i % 2), ConvNet(c, 2 * c, hidden, cond_channels=hidden),
                                       kind="affine", scale="tanh", channels=c))
        else:
            d = math.prod(self.shape)
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU())
            layers.append(ConditionalAffine(ZeroLinear(hidden, 2 * d), d))
            if d >= 2:
                for i in range(steps):
                    m = alternating_mask(d, i % 2)
                    layers.append(Coupling(m, MLP(int(m.sum()), 2 * int((~m).sum()), hidden, 2, cond_features=hidden),
                                           kind="affine", scale="tanh"))
        self.flow = Chain(layers)
        self.base = StandardNormal()

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """u ~ q(u | x) and log q(u | x): x (B, *shape) -> u (B, *shape) in (0, 1), log_q (B,) nats."""
        h = self.features(x)
        flat = len(self.shape) != 3
        eps = randn(x.shape, generator, device=x.device, dtype=x.dtype)
        e = eps.reshape(x.shape[0], -1) if flat else eps
        v, logdet = self.flow(e, cond=h)
        v = v.reshape(x.shape)
        u = torch.sigmoid(v)
        log_q = self.base.log_prob(eps) - logdet - sum_except_batch(F.logsigmoid(v) + F.logsigmoid(-v))
        return u, log_q
