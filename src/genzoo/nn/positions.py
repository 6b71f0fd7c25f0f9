"""Position encodings other than RoPE's 1-D/N-D rotations (those are in :mod:`genzoo.nn.rope`).

Absolute (added to the token embeddings)
* Vaswani et al. 2017: sinusoidal PE(n, 2i) = sin(n / 10000^(2i/d)), PE(n, 2i+1) = cos(...).
* Learned tables (GPT-2) and their **hierarchical extension** (Su 2020, "层次分解位置编码,
  让BERT可以处理超长文本", kexue.fm/archives/7947): a trained table p_1 .. p_n is extended to n^2
  positions by p_{(i-1) n + j} = alpha u_i + (1 - alpha) u_j with u_i = (p_i - alpha p_1) / (1 - alpha)
  (so the first n positions are unchanged), alpha = 0.4.

Relative (inside attention)
* Shaw, Uszkoreit & Vaswani 2018, "Self-Attention with Relative Position Representations":
  e_ij = q_i . (k_j + a^K_ij) / sqrt(d), z_i = sum_j alpha_ij (v_j + a^V_ij), with
  a_ij = w_{clip(j - i, -k, k)} learnt (2k + 1 vectors of the head size, shared across heads).
* Raffel et al. 2020 (T5): a learnt scalar bias per head added to the logits, indexed by a
  bucket of the relative position: exact buckets for small offsets, logarithmic buckets up to
  ``max_distance`` and one bucket beyond (causal: only non-positive offsets). One bias table
  shared by every layer, as in T5.

General RoPE
* Su 2022 ("Transformer升级之路: 6. 旋转位置编码的完备性分析", 28 Dec. 2022, kexue.fm/archives/9403): any
  R_n = exp(n B) with B skew-symmetric satisfies R_m^T R_n = R_{n-m}, hence a relative score;
  standard RoPE is the block-diagonal B with blocks [[0, -theta_k], [theta_k, 0]].
"""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(T,) positions -> (T, dim): Vaswani et al.'s sin/cos encoding (sin on even, cos on odd dims)."""
    pos = positions.to(torch.float64)[:, None]
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim)
    out = torch.zeros(pos.shape[0], dim, dtype=torch.float64, device=pos.device)
    out[:, 0::2] = torch.sin(pos * inv)
    out[:, 1::2] = torch.cos(pos * inv)[:, : dim // 2]
    return out.float()


def hierarchical_extend(table: torch.Tensor, new_len: int, alpha: float = 0.4) -> torch.Tensor:
    """A trained (n, d) absolute position table -> (new_len, d), new_len <= n^2 (Su 2020):
    position k = i n + j (0-based) gets alpha u_i + (1 - alpha) u_j, u = (p - alpha p_0) / (1 - alpha)."""
    n = table.shape[0]
    if new_len > n * n:
        raise ValueError(f"the hierarchical extension reaches n^2 = {n * n} positions, asked for {new_len}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    u = (table - alpha * table[:1]) / (1 - alpha)
    k = torch.arange(new_len, device=table.device)
    return alpha * u[k // n] + (1 - alpha) * u[k % n]


def t5_bucket(relative: torch.Tensor, causal: bool, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of relative positions ``relative = key - query`` (int tensor, any shape)."""
    n = -relative
    ret = torch.zeros_like(n)
    if not causal:
        num_buckets //= 2
        ret = ret + (n < 0).long() * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    exact = num_buckets // 2
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (num_buckets - exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return ret + torch.where(n < exact, n, large)


class T5Bias(nn.Module):
    """Logit bias (H, Tq, Tk) from T5's bucketed relative positions (one table for all layers)."""

    def __init__(self, heads: int, causal: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.causal, self.num_buckets, self.max_distance = causal, num_buckets, max_distance
        self.table = nn.Embedding(num_buckets, heads)

    def forward(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
        b = t5_bucket(k_index[None, :] - q_index[:, None], self.causal, self.num_buckets, self.max_distance)
        return self.table(b).permute(2, 0, 1)


class ShawRelative(nn.Module):
    """Shaw et al.'s clipped relative key and value embeddings for one layer (shared by its heads)."""

    def __init__(self, head_dim: int, max_distance: int = 16):
        super().__init__()
        self.k = max_distance
        self.key = nn.Embedding(2 * max_distance + 1, head_dim)
        self.value = nn.Embedding(2 * max_distance + 1, head_dim)

    def index(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
        """(Tq, Tk) indices clip(j - i, -k, k) + k into the tables."""
        return (k_index[None, :] - q_index[:, None]).clamp(-self.k, self.k) + self.k

    def logits(self, q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """q (B, H, Tq, d) -> (B, H, Tq, Tk): q_i . a^K_ij (unscaled)."""
        qa = q @ self.key.weight.to(q.dtype).T  # (B, H, Tq, 2k+1)
        return qa.gather(-1, idx.expand(*q.shape[:2], *idx.shape))

    def values(self, attn: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """attn (B, H, Tq, Tk) -> (B, H, Tq, d): sum_j alpha_ij a^V_ij (probabilities summed per clipped offset)."""
        per = torch.zeros(*attn.shape[:3], 2 * self.k + 1, dtype=attn.dtype, device=attn.device)
        per.scatter_add_(-1, idx.expand(*attn.shape[:2], *idx.shape), attn)
        return per @ self.value.weight.to(attn.dtype)


def rope_generator(dim: int, base: float = 10000.0, pairing: str = "interleaved") -> torch.Tensor:
    """The skew-symmetric generator of standard RoPE: a block [[0, -theta_k], [theta_k, 0]] on
    each rotated pair, dimensions (2k, 2k + 1) (``"interleaved"``) or (k, k + dim/2) (``"half"``),
    so that exp(n B) is exactly :class:`genzoo.nn.rope.RoPE`'s rotation at position n."""
    if dim % 2:
        raise ValueError(f"a RoPE generator needs an even dimension, got {dim}")
    if pairing not in ("interleaved", "half"):
        raise ValueError(f"unknown RoPE pairing {pairing!r}; valid: interleaved, half")
    B = torch.zeros(dim, dim, dtype=torch.float64)
    th = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    k = torch.arange(dim // 2)
    i, j = (2 * k, 2 * k + 1) if pairing == "interleaved" else (k, k + dim // 2)
    B[j, i], B[i, j] = th, -th
    return B


class GeneralRoPE(nn.Module):
    """R_n = exp(n B) with B skew-symmetric: any such family gives relative scores.

    B = B_0 + (A - A^T), B_0 = :func:`rope_generator` (buffer) and A zero at initialisation, so
    B starts as standard RoPE's generator (of ``pairing``) and stays skew-symmetric whatever A
    becomes. ``learnable=True`` makes A a parameter (the Transformer's default for
    ``pos="rope-general"``); with ``learnable=False`` this is RoPE at the cost of a matrix
    exponential, kept only for comparison. Writing the trained part as an offset from B_0 means
    weight decay pulls B towards RoPE rather than towards B = 0 (no rotation at all).

    Why every trained B stays relative: exp(mB) and exp(nB) are powers of one generator, so they
    commute, and exp(mB)^T = exp(-mB) for skew-symmetric B; hence R_m^T R_n = exp((n - m) B) =
    R_{n-m}. No constraint on B beyond skew symmetry is needed (Su's completeness analysis:
    every such B is, in some orthonormal basis, a block-diagonal RoPE generator of commuting 2x2
    rotation blocks, so a trained B learns that basis and the frequencies). Applied to
    (..., T, d) with positions (T,); dimensions beyond ``dim`` are left as they are."""

    def __init__(self, dim: int, base: float = 10000.0, learnable: bool = False, pairing: str = "interleaved"):
        super().__init__()
        self.dim, self.pairing, self.learnable = dim, pairing, bool(learnable)
        self.register_buffer("B0", rope_generator(dim, base, pairing).float(), persistent=False)
        A = torch.zeros(dim, dim)
        if learnable:
            self.A = nn.Parameter(A)
        else:
            self.register_buffer("A", A, persistent=False)

    def generator(self) -> torch.Tensor:
        return self.B0 + (self.A - self.A.T)

    def matrices(self, positions: torch.Tensor) -> torch.Tensor:
        """(T,) -> (T, dim, dim) rotation matrices exp(n B) (computed in float64)."""
        B = self.generator().to(torch.float64)
        return torch.linalg.matrix_exp(positions.to(device=B.device, dtype=torch.float64)[:, None, None] * B)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if positions.ndim != 1:
            raise ValueError(f"GeneralRoPE takes 1-D positions (T,), got {tuple(positions.shape)}")
        R = self.matrices(positions).to(x.dtype)
        rot = torch.einsum("tij,...tj->...ti", R, x[..., : self.dim])
        return torch.cat((rot, x[..., self.dim:]), -1) if x.shape[-1] > self.dim else rot
