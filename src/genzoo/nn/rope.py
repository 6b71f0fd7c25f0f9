"""Rotary position embedding (RoPE): 1-D, and N-D for image grids and mixed text/image sequences.

Papers
------
* Su, Lu, Pan, Murtadha, Wen & Liu 2021, "RoFormer: Enhanced Transformer with Rotary Position
  Embedding": a query/key vector x at position n is rotated pairwise,

      R_n x = [..., x_{2k} cos(n theta_k) - x_{2k+1} sin(n theta_k),
                    x_{2k} sin(n theta_k) + x_{2k+1} cos(n theta_k), ...],
      theta_k = base^(-2k / d),  k = 0 .. d/2 - 1,  base = 10000,

  so that <R_m q, R_n k> = q^T R_{n-m} k depends on positions only through n - m (eq. 16).
* Su 2021, "Transformer upgrade road 4: 2-D rotary position encoding" (kexue.fm/archives/8397)
  and "... 17: multimodal position encoding" (RoPE-Tie, kexue.fm/archives/10040): a position
  with several axes rotates some frequency pairs by one axis and the others by the next.
  RoPE-Tie (:func:`rope_tie_positions`), for sequences that mix text and w x h patch grids: a text
  token at n is at (n, n), so text alone is exactly RoPE-1-D; after a sentence whose last token
  is at L, the patch in row i = 1..h, column j = 1..w is at (L + i s, L + j t), and the first token
  after the image is at K = L + (w + 1)(h + 1). The scales s = w + 1, t = h + 1 solve
  (L + h s) + s = (L + w t) + t = K, so the step into the image, (s, t), equals the step out of it
  (symmetry) with integer positions; ``integer=False`` takes s = (wh + 1)/(h + 1),
  t = (wh + 1)/(w + 1) instead, so that the image counts as wh tokens (K = L + wh + 1).

Pairing convention (the anchors disagree; genzoo offers both behind ``pairing``):

* ``"interleaved"`` (default; RoFormer, rotary-embedding-torch, GPT-J's ``rotate_every_two``):
  pair k is dimensions (2k, 2k + 1).
* ``"half"`` (GPT-NeoX's and Hugging Face LLaMA's ``rotate_half``): pair k is dimensions
  (k, k + d/2).

Both give the same attention scores for suitably permuted weights; they differ only in which
dimensions form a rotated pair, which matters when loading weights from one of those codes.

Positions with several axes (``(T, P)``): frequency pair k is rotated by axis ``k mod P``
(2-D: even pairs by the row, odd pairs by the column). With every axis equal (a text token at
n placed at (n, n), as RoPE-Tie does) this is *exactly* 1-D RoPE at n; on an image grid it is
the 2-D RoPE whose scores depend only on (row offset, column offset).
"""
from __future__ import annotations

import torch
from torch import nn

PAIRINGS = ("interleaved", "half")


class RoPE(nn.Module):
    """Rotates (B, H, T, d) query/key tensors by positions (T,) or (T, P) (any real values).

    Args:
        dim: the rotated head dimension d (even); dimensions beyond ``dim`` (if the head is wider)
            are left as they are (partial rotary).
        base: theta_k = base^(-2k / dim).
        pairing: "interleaved" (default) or "half" (see the module docstring).
        axes: number of position axes P (1 = RoPE-1-D, 2 = RoPE-2-D / RoPE-Tie).
    """

    def __init__(self, dim: int, base: float = 10000.0, pairing: str = "interleaved", axes: int = 1):
        super().__init__()
        if dim % 2:
            raise ValueError(f"RoPE needs an even dimension, got {dim}")
        if pairing not in PAIRINGS:
            raise ValueError(f"unknown RoPE pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")
        if axes < 1:
            raise ValueError(f"RoPE axes must be >= 1, got {axes}")
        self.dim, self.base, self.pairing, self.axes = dim, float(base), pairing, axes
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """(T,) or (T, P) positions -> (T, dim/2) rotation angles n_{axis(k)} theta_k."""
        pos = positions.to(torch.float64)
        if pos.ndim == 1:
            pos = pos[:, None]
        if pos.shape[-1] != self.axes:
            raise ValueError(f"this RoPE has {self.axes} position axes, got positions of shape {tuple(positions.shape)}")
        k = torch.arange(self.dim // 2, device=pos.device)
        per_pair = pos[:, k % self.axes]  # (T, dim/2): pair k takes axis k mod P
        return per_pair * self.inv_freq.to(device=pos.device, dtype=torch.float64)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (..., T, d_head) with d_head >= dim; returns R_n x in x's dtype."""
        ang = self.angles(positions)
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        rot, rest = x[..., : self.dim], x[..., self.dim:]
        if self.pairing == "interleaved":
            a, b = rot[..., 0::2], rot[..., 1::2]
            out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
        else:
            a, b = rot[..., : self.dim // 2], rot[..., self.dim // 2:]
            out = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
        return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def grid_positions(height: int, width: int, device=None) -> torch.Tensor:
    """(height * width, 2) (row, col) positions of a raster-scanned grid."""
    r, c = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack((r.flatten(), c.flatten()), dim=-1)


def rope_tie_positions(segments, integer: bool = True, device=None) -> torch.Tensor:
    """RoPE-Tie positions (T, 2) of a sequence of segments (Su 2024, kexue.fm/archives/10040).

    ``segments``: a list of ("text", n_tokens) and ("image", (h, w)) items (an image is raster-scanned,
    row by row). The first text token is at (0, 0). Text token at n -> (n, n); an image after a token
    at L -> (L + i s, L + j t) for row i = 1..h, column j = 1..w, with (s, t) = (w + 1, h + 1)
    (``integer=True``) or ((wh + 1)/(h + 1), (wh + 1)/(w + 1)); the next token resumes at
    L + (h + 1) s. Use with ``Transformer(pos="rope-tie")`` and ``forward(x, positions=...)``."""
    out, last = [], -1.0
    for kind, size in segments:
        if kind == "text":
            n = int(size)
            if n < 0:
                raise ValueError(f"a text segment needs n_tokens >= 0, got {size}")
            p = last + 1 + torch.arange(n, dtype=torch.float64)
            out.append(torch.stack((p, p), -1))
            last = last + n
        elif kind == "image":
            h, w = (int(v) for v in size)
            if h < 1 or w < 1:
                raise ValueError(f"an image segment needs (h, w) >= 1, got {size}")
            s, t = (float(w + 1), float(h + 1)) if integer else ((w * h + 1) / (h + 1), (w * h + 1) / (w + 1))
            r, c = torch.meshgrid(torch.arange(1, h + 1, dtype=torch.float64), torch.arange(1, w + 1, dtype=torch.float64),
                                  indexing="ij")
            out.append(torch.stack((last + r.flatten() * s, last + c.flatten() * t), -1))
            last = last + (h + 1) * s - 1  # the next token is at L + (h + 1) s
        else:
            raise ValueError(f"segments are ('text', n) or ('image', (h, w)), got {kind!r}")
    pos = torch.cat(out) if out else torch.zeros(0, 2, dtype=torch.float64)
    if integer:
        pos = pos.long()
    return pos.to(device) if device is not None else pos
