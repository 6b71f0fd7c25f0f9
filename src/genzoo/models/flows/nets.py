"""Conditioner networks of coupling layers (not transforms: plain networks, any function will do).

Every network maps ``(x_a, cond=None)`` to the parameters of the element-wise map of
the other part; ``cond`` (a context tensor, e.g. features of x in the variational
dequantiser) is concatenated to the input along dim 1. The last layer is zero-initialised,
so every coupling layer starts as the identity map (Kingma & Dhariwal 2018, sec. 3.3).

* :class:`MLP`     - NICE's coupling function m (Dinh et al. 2014: ReLU MLPs), vectors.
* :class:`ResNet`  - RealNVP's s and t (Dinh et al. 2017: deep residual networks
  with batch normalisation), images.
* :class:`GlowNet` - Glow's NN() (Kingma & Dhariwal 2018, sec. 3.3 and their code:
  conv3x3 - actnorm - ReLU - conv1x1 - actnorm - ReLU - zero-initialised conv3x3), images.
"""
from __future__ import annotations

import torch
from torch import nn

from ...nn.blocks import ZeroConv2d, ZeroLinear  # noqa: F401  (zero-initialised layers, shared: re-exported here)


def _cat(x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return x if cond is None else torch.cat([x, cond], dim=1)


class MLP(nn.Module):
    """(B, in_features [+ cond_features]) -> (B, out_features): ``depth`` ReLU hidden layers of ``hidden``."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 256, depth: int = 2, cond_features: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features + cond_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        layers.append(ZeroLinear(d, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_cat(x, cond))


class _ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(ReLU(BN(conv(ReLU(BN(x))))))."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class ResNet(nn.Module):
    """RealNVP's conditioner: conv3x3 -> ``blocks`` residual blocks -> BN-ReLU -> zero conv3x3.

    (B, in_channels [+ cond_channels], H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, blocks: int = 4, cond_channels: int = 0):
        super().__init__()
        self.inp = nn.Conv2d(in_channels + cond_channels, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResBlock(hidden) for _ in range(blocks)])
        self.out = nn.Sequential(nn.BatchNorm2d(hidden), nn.ReLU(), ZeroConv2d(hidden, out_channels, 3, logscale_factor=0.0))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.blocks(self.inp(_cat(x, cond))))


class GlowNet(nn.Module):
    """Glow's coupling network: conv3x3 - actnorm - ReLU - conv1x1 - actnorm - ReLU - Conv2dZeros 3x3.

    The actnorms are data-initialised like the flow's own (:class:`~.transforms.ActNorm`).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 128, cond_channels: int = 0):
        super().__init__()
        from .transforms import ActNorm

        self.conv1 = nn.Conv2d(in_channels + cond_channels, hidden, 3, padding=1, bias=False)
        self.norm1 = ActNorm(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.norm2 = ActNorm(hidden)
        self.out = ZeroConv2d(hidden, out_channels, 3)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1(_cat(x, cond)))[0])
        h = torch.relu(self.norm2(self.conv2(h))[0])
        return self.out(h)


class ConvNet(nn.Module):
    """A small plain conditioner, conv3x3 - ReLU - conv3x3 - ReLU - zero conv3x3 (the variational dequantiser's)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32, cond_channels: int = 0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + cond_channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            ZeroConv2d(hidden, out_channels, 3, logscale_factor=0.0),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_cat(x, cond))
