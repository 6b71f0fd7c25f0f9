"""Vector quantisation layers.

* van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning" (VQ-VAE):
  z_q = e_k with k = argmin_j ||z - e_j||^2; the straight-through estimator
  z_st = z + sg(z_q - z) (forward value z_q, gradient of the identity to z); the commitment loss
  beta ||z - sg(z_q)||^2 with beta = 0.25; the codebook learnt by exponential moving averages
  (appendix A.1): N_j <- gamma N_j + (1 - gamma) n_j, m_j <- gamma m_j + (1 - gamma) sum_{i: k_i = j} z_i,
  e_j = m_j / N_j, with gamma = 0.99 and Laplace-smoothed counts
  N_j <- (N_j + eps) / (sum N + K eps) * sum N.
  The codebook is initialised from the first training batch's vectors (data-dependent, as
  the k-means initialisation common in VQ codes), not left at N(0, 1).

Shapes: inputs (..., G, d) with G independent groups (attention heads), each with its own
codebook of K codes: the codebook is (G, K, d). G = 1 for a single codebook.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """VQ with straight-through gradients, commitment loss and EMA codebook updates.

    Args:
        dim: code dimension d.
        codebook_size: K codes per group.
        groups: G independent codebooks (inputs (..., G, d)).
        beta: commitment weight (0.25).
        decay: EMA decay gamma (0.99); the codebook is a buffer updated in training mode.
        eps: Laplace smoothing of the counts.
    """

    def __init__(self, dim: int, codebook_size: int, groups: int = 1, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5):
        super().__init__()
        self.dim, self.K, self.G, self.beta, self.decay, self.eps = dim, codebook_size, groups, beta, decay, eps
        embed = torch.randn(groups, codebook_size, dim)
        self.register_buffer("codebook", embed)
        self.register_buffer("ema_count", torch.ones(groups, codebook_size))
        self.register_buffer("ema_sum", embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(..., G, d) -> (..., G) int64 indices of the nearest codes."""
        flat = z.reshape(-1, self.G, self.dim).transpose(0, 1).float()  # (G, N, d)
        cb = self.codebook.float()
        d2 = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ cb.transpose(1, 2) + cb.pow(2).sum(-1)[:, None, :]
        return d2.argmin(-1).transpose(0, 1).reshape(z.shape[:-1])

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """(..., G) indices -> (..., G, d) code vectors."""
        g = torch.arange(self.G, device=idx.device).expand(idx.shape)
        return self.codebook[g, idx]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (..., G, d) -> (z_st, indices (..., G), commitment loss (scalar)). In training mode
        the codebook moves by one EMA step towards the mean of the vectors assigned to each code."""
        if self.training and not bool(self.initialized):
            self._init_from(z.detach())
        idx = self.codes(z)
        zq = self.lookup(idx).to(z.dtype)
        commit = self.beta * F.mse_loss(z, zq.detach())
        if self.training and torch.is_grad_enabled():
            self._ema_update(z.detach(), idx)
        return z + (zq - z).detach(), idx, commit

    @torch.no_grad()
    def _init_from(self, z: torch.Tensor) -> None:
        """Data-dependent initialisation: the codebook starts as K vectors of the first training
        batch (drawn with replacement when the batch has fewer than K), so codes live at the
        scale of the inputs instead of N(0, 1)."""
        flat = z.reshape(-1, self.G, self.dim).float()
        pick = torch.randint(0, flat.shape[0], (self.K,), device=z.device) if flat.shape[0] < self.K else \
            torch.randperm(flat.shape[0], device=z.device)[: self.K]
        self.codebook.copy_(flat[pick].transpose(0, 1))
        self.ema_sum.copy_(self.codebook)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        flat = z.reshape(-1, self.G, self.dim).transpose(0, 1).float()  # (G, N, d)
        onehot = F.one_hot(idx.reshape(-1, self.G).transpose(0, 1), self.K).float()  # (G, N, K)
        count = onehot.sum(1)
        total = onehot.transpose(1, 2) @ flat  # (G, K, d)
        self.ema_count.mul_(self.decay).add_(count, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(total, alpha=1 - self.decay)
        n = self.ema_count.sum(-1, keepdim=True)
        smoothed = (self.ema_count + self.eps) / (n + self.K * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[..., None])
