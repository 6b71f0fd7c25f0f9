"""Small generic network builders: an MLP, a 4x-downsampling conv encoder / decoder pair, and
zero-initialised linear and conv layers (Glow's ``Conv2dZeros``; the flows and their dequantiser use them).

Used by the VAE and reusable by any model that needs a plain encoder or decoder
(e.g. a GAN generator/critic for small images, a VQ-VAE's baseline nets).
"""
from __future__ import annotations

import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: int = 512, depth: int = 2, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Fully connected net (B, in_dim) -> (B, out_dim) with ``depth`` hidden layers of width ``hidden``.

    ``depth = 0`` is a single linear layer.
    """
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), activation()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_dim): two stride-2 4x4 convs (C -> ch -> 2ch, H/4 x W/4), flatten, linear.

    H and W must be divisible by 4.
    """

    def __init__(self, in_shape: tuple[int, int, int], out_dim: int, channels: int = 32, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        C, H, W = in_shape
        if H % 4 or W % 4:
            raise ValueError(f"ConvEncoder needs H and W divisible by 4, got {in_shape}")
        self.net = nn.Sequential(
            nn.Conv2d(C, channels, 4, 2, 1), activation(),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1), activation(),
            nn.Flatten(),
            nn.Linear(2 * channels * (H // 4) * (W // 4), out_dim),
        )

    def forward(self, x):
        return self.net(x)


class ConvDecoder(nn.Module):
    """(B, in_dim) -> (B, out_channels, H, W): the mirror of :class:`ConvEncoder`.

    linear to (2ch, H/4, W/4), then two stride-2 4x4 transposed convs (2ch -> ch -> out).
    """

    def __init__(self, in_dim: int, out_shape: tuple[int, int, int], channels: int = 32, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        C, H, W = out_shape
        if H % 4 or W % 4:
            raise ValueError(f"ConvDecoder needs H and W divisible by 4, got {out_shape}")
        self.start = (2 * channels, H // 4, W // 4)
        self.fc = nn.Sequential(nn.Linear(in_dim, 2 * channels * (H // 4) * (W // 4)), activation())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), activation(),
            nn.ConvTranspose2d(channels, C, 4, 2, 1),
        )

    def forward(self, z):
        return self.net(self.fc(z).reshape(z.shape[0], *self.start))


class ZeroLinear(nn.Linear):
    """A linear layer initialised to output zeros."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class ZeroConv2d(nn.Module):
    """Glow's ``Conv2dZeros``: y = (W * x + b) * exp(logscale_factor * s), W, b, s initialised to 0.

    ``logscale_factor=0`` drops the learned output scale: a plain zero-initialised conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, logscale_factor: float = 3.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logscale_factor = float(logscale_factor)
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1)) if self.logscale_factor else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if self.logs is None else y * torch.exp(self.logs * self.logscale_factor)
