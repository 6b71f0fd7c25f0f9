"""genzoo's ONE Transformer: a pre-norm decoder/encoder stack with position encodings and
attention kinds as constructor switches.

Every sequence model in genzoo is built from this module (the image transformer over pixels,
the character language model, and later TARFLOW's autoregressive blocks and the VQ prior);
a family that needs something new adds a switch here instead of writing a second Transformer.

Papers and what is taken from each
----------------------------------
* Vaswani et al. 2017, "Attention Is All You Need": scaled dot-product multi-head attention
  softmax(Q K^T / sqrt(d_head)) V, the position-wise MLP, the sinusoidal position encoding
  PE(n, 2i) = sin(n / 10000^(2i/d)), PE(n, 2i+1) = cos(n / 10000^(2i/d)) (``pos="sinusoidal"``).
* Radford et al. 2019 (GPT-2) / nanoGPT: pre-norm blocks x + Attn(LN(x)), x + MLP(LN(x)),
  a final LayerNorm, GELU MLP of width 4d, learned absolute positions (``pos="learned"``),
  N(0, 0.02) initialisation with the residual output projections scaled by 1/sqrt(2 depth).
* Su et al. 2021 (RoFormer): rotary position embedding of queries and keys (``pos="rope"``;
  ``pos="rope2d"`` for raster-scanned image grids; see :mod:`genzoo.nn.rope`).
* KV cache (standard incremental decoding): keys and values of past positions are kept per
  layer, so sampling T tokens costs O(T) network passes of one token each, not O(T^2).

Shapes: ``forward(x, cache=None, positions=None)``; x is (B, T) int64 token ids when the
Transformer was built with ``vocab_size`` (else (B, T, in_dim) vectors); returns (B, T, out_dim).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rope import PAIRINGS, RoPE, grid_positions

POSITIONS = ("none", "learned", "sinusoidal", "rope", "rope2d")
ATTENTIONS = ("softmax",)
NORMS = ("layernorm", "rmsnorm")


def sinusoidal_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(T,) positions -> (T, dim): Vaswani et al.'s sin/cos encoding (sin on even, cos on odd dims)."""
    pos = positions.to(torch.float64)[:, None]
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim)
    out = torch.zeros(pos.shape[0], dim, dtype=torch.float64, device=pos.device)
    out[:, 0::2] = torch.sin(pos * inv)
    out[:, 1::2] = torch.cos(pos * inv)[:, : dim // 2]
    return out.float()


class RMSNorm(nn.Module):
    """Zhang & Sennrich 2019: x / sqrt(mean(x^2) + eps) * g."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class KVCache:
    """Per-layer past keys/values for incremental decoding. ``length`` = positions already seen."""

    def __init__(self, depth: int):
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k[layer] is not None:
            k = torch.cat((self.k[layer], k), dim=2)
            v = torch.cat((self.v[layer], v), dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


class Attention(nn.Module):
    """Multi-head self-attention (PyTorch SDPA), causal or not, with optional RoPE and KV cache."""

    def __init__(self, dim: int, heads: int, *, causal: bool, rope: RoPE | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.causal, self.rope, self.dropout = heads, dim // heads, causal, rope, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, layer: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, T, dh)
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        past = 0
        if cache is not None:
            past = 0 if cache.k[layer] is None else cache.k[layer].shape[2]
            k, v = cache.append(layer, k, v)
        mask, is_causal = None, False
        if self.causal and T > 1:
            if past == 0:
                is_causal = True
            else:  # a chunk after a cached prefix: query i sees keys 0 .. past + i
                i = torch.arange(T, device=x.device)[:, None] + past
                mask = torch.arange(past + T, device=x.device)[None, :] <= i
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, *, causal: bool, rope: RoPE | None, mlp_ratio: float, dropout: float, norm: str):
        super().__init__()
        Norm = nn.LayerNorm if norm == "layernorm" else RMSNorm
        self.norm1, self.norm2 = Norm(dim), Norm(dim)
        self.attn = Attention(dim, heads, causal=causal, rope=rope, dropout=dropout)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x, positions, layer=0, cache=None):
        x = x + self.attn(self.norm1(x), positions, layer, cache)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of pre-norm Transformer blocks with an input embedding and an output head.

    Args:
        dim, depth, heads: width, number of blocks, attention heads.
        vocab_size: token inputs (B, T) int64 embedded by a table; else ``in_dim`` (vectors).
        in_dim: input vector size when ``vocab_size`` is None.
        out_dim: output size per position (logits over a vocabulary, or vectors).
        causal: position t attends to positions <= t only (decoder); False = bidirectional.
        max_len: longest sequence (the learned position table's size; checked for every kind
            of absolute position so that a too-long input fails with a clear message).
        pos: "none" | "learned" | "sinusoidal" (added to the input) | "rope" | "rope2d"
            (queries and keys rotated; "rope2d" needs ``grid=(H, W)`` and places sequence
            index i at the i-th cell of the raster-scanned grid).
        rope_base, rope_pairing: theta_k = base^(-2k/d_head); "interleaved" (default,
            RoFormer) or "half" (LLaMA) pairs (see :mod:`genzoo.nn.rope`).
        grid: (H, W) of the raster-scanned grid for ``pos="rope2d"``.
        attention: "softmax" (the only kind so far).
        norm: "layernorm" | "rmsnorm".
        mlp_ratio, dropout: MLP width factor; dropout in attention and MLP.
    """

    def __init__(self, dim: int = 128, depth: int = 4, heads: int = 4, *, vocab_size: int | None = None,
                 in_dim: int | None = None, out_dim: int | None = None, causal: bool = True, max_len: int = 1024,
                 pos: str = "rope", rope_base: float = 10000.0, rope_pairing: str = "interleaved",
                 grid: tuple[int, int] | None = None, attention: str = "softmax", norm: str = "layernorm",
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        for name, value, valid in (("pos", pos, POSITIONS), ("attention", attention, ATTENTIONS), ("norm", norm, NORMS),
                                   ("rope_pairing", rope_pairing, PAIRINGS)):
            if value not in valid:
                raise ValueError(f"unknown Transformer {name} {value!r}; valid: {', '.join(valid)}")
        if (vocab_size is None) == (in_dim is None):
            raise ValueError("give exactly one of vocab_size (token inputs) and in_dim (vector inputs)")
        if pos == "rope2d" and (grid is None or len(grid) != 2):
            raise ValueError("pos='rope2d' needs grid=(H, W), the raster-scanned grid the sequence lives on")
        self.dim, self.depth, self.heads, self.causal, self.max_len, self.pos = dim, depth, heads, causal, max_len, pos
        self.grid = tuple(grid) if grid is not None else None
        self.embed = nn.Embedding(vocab_size, dim) if vocab_size is not None else nn.Linear(in_dim, dim)
        self.pos_table = nn.Embedding(max_len, dim) if pos == "learned" else None
        head_dim = dim // heads
        rope = None
        if pos in ("rope", "rope2d"):
            if head_dim % (4 if pos == "rope2d" else 2):
                raise ValueError(f"pos={pos!r} needs a head dimension divisible by {4 if pos == 'rope2d' else 2}, got {head_dim}")
            rope = RoPE(head_dim, rope_base, rope_pairing, axes=2 if pos == "rope2d" else 1)
        self.blocks = nn.ModuleList(Block(dim, heads, causal=causal, rope=rope, mlp_ratio=mlp_ratio, dropout=dropout, norm=norm)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim) if norm == "layernorm" else RMSNorm(dim)
        self.head = nn.Linear(dim, out_dim if out_dim is not None else (vocab_size or in_dim))
        self.drop = nn.Dropout(dropout)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 depth)
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def new_cache(self) -> KVCache:
        return KVCache(self.depth)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T) ids or (B, T, in_dim) -> (B, T, out_dim). With ``cache``, x continues the cached
        sequence (positions cache.length .. cache.length + T - 1) and the cache is extended.
        ``positions`` (T,) or (T, P) overrides the rotary positions (default: the sequence index,
        or its grid cell for rope2d)."""
        T = x.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.max_len:
            raise ValueError(f"sequence of length {start + T} is longer than this Transformer's max_len={self.max_len}")
        index = torch.arange(start, start + T, device=x.device)
        h = self.embed(x)
        if self.pos == "learned":
            h = h + self.pos_table(index)
        elif self.pos == "sinusoidal":
            h = h + sinusoidal_table(index, self.dim).to(h.dtype)
        if positions is None:
            positions = grid_positions(*self.grid, device=x.device)[index] if self.pos == "rope2d" else index
        h = self.drop(h)
        for i, block in enumerate(self.blocks):
            h = block(h, positions, i, cache)
        if cache is not None:
            cache.length += T
        return self.head(self.norm(h))
