"""A time-conditioned residual MLP for vector data (2-D toys, small arrays).

The vector counterpart of :class:`genzoo.nn.unet.UNet`, with the same time embedding
(sinusoidal or random Fourier features of the noise label, then a 2-layer MLP) and the
same optional class conditioning (``num_classes + 1`` embeddings, the last = "no label"
for classifier-free guidance). Each residual block is
``h <- h + Linear(SiLU(Linear(SiLU(LayerNorm(h))) + Linear(emb)))``, the second linear
zero-initialised, and the output layer is zero-initialised, so a fresh network outputs 0.

``TimeMLP.forward(x, noise_label, cond=None)``: x (B, D), noise_label (B,) or a scalar,
cond (B,) int64 in 0..num_classes or None -> (B, out_dim).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet import TIME_EMBEDDINGS, ConditionEmbedding, _zero


class _Block(nn.Module):
    def __init__(self, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = _zero(nn.Linear(hidden, hidden))

    def forward(self, h, emb):
        z = self.fc1(F.silu(self.norm(h))) + self.emb(F.silu(emb))
        return h + self.fc2(self.dropout(F.silu(z)))


class TimeMLP(nn.Module):
    """Residual MLP ``(x (B, D), noise_label, cond=None) -> (B, out_dim)``.

    Args:
        dim: D, the input dimension.
        out_dim: output dimension (default ``dim``).
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        emb_dim: width of the time (+ class) embedding (default ``hidden``).
        num_classes: 0 = unconditional; else ``num_classes + 1`` class embeddings (last = no label).
        time_embedding: "sinusoidal" or "fourier" (see :mod:`genzoo.nn.unet`).
        dropout: dropout inside the residual blocks.
        fourier_scale: standard deviation of the Fourier frequencies.
    """

    def __init__(self, dim: int = 2, out_dim: int | None = None, hidden: int = 256, depth: int = 3,
                 emb_dim: int | None = None, num_classes: int = 0, time_embedding: str = "sinusoidal",
                 dropout: float = 0.0, fourier_scale: float = 16.0):
        super().__init__()
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"unknown time_embedding {time_embedding!r}; valid: {', '.join(TIME_EMBEDDINGS)}")
        if int(dim) < 1 or int(hidden) < 2 or int(depth) < 1:
            raise ValueError(f"TimeMLP needs dim >= 1, hidden >= 2, depth >= 1; got {dim}, {hidden}, {depth}")
        self.dim = int(dim)
        self.out_dim = int(out_dim or dim)
        self.num_classes = int(num_classes)
        emb_dim = int(emb_dim or hidden)
        base = emb_dim if emb_dim % 2 == 0 else emb_dim + 1
        self.embed = ConditionEmbedding(base, emb_dim, time_embedding, num_classes, fourier_scale)
        self.inp = nn.Linear(self.dim, hidden)
        self.blocks = nn.ModuleList([_Block(hidden, emb_dim, dropout) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(hidden)
        self.out = _zero(nn.Linear(hidden, self.out_dim))

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D), noise_label (B,) or scalar, cond (B,) int64 or None -> (B, out_dim)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"TimeMLP built for (B, {self.dim}) got {tuple(x.shape)}")
        emb = self.embed(noise_label, x.shape[0], cond, x.device).to(x.dtype)
        h = self.inp(x)
        for b in self.blocks:
            h = b(h, emb)
        return self.out(F.silu(self.norm_out(h)))
