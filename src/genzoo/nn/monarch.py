"""Monarch matrices (Dao, Chen, Sohoni, Desai, Poli, Grogan, Liu, Rao, Rudra & Re 2022, "Monarch:
Expressive Structured Matrices for Efficient and Accurate Training") as a drop-in nn.Linear.

The paper's Monarch matrix of size n = m^2 is

    M = P L P^T R,

with L and R block-diagonal, m blocks of size m x m each, and P the "perfect shuffle"
permutation: view a length-n vector as an (m, m) array, transpose, flatten. Computing M x
costs two batched block matmuls, O(n^1.5) instead of O(n^2), and M has 2 n^1.5 parameters
instead of n^2; every entry of M generically depends on the parameters (a product of two
block-diagonal factors through a shuffle can reach every input from every output).

General sizes (as the authors' ``MonarchLinear`` in HazyResearch/fly): with k = ``nblocks``
blocks, the input is zero-padded to k * p (p = ceil(in / k)) and the output truncated from
k * s (s = ceil(out / k)). The middle width per block is q = min(p, s): when the padded input is
narrower than the padded output, R has blocks p x p and L blocks s x p, else R has blocks s x p
and L blocks s x s. The two permutations become stride permutations

    P_(a, b): view a length a*b vector as (a, b), transpose to (b, a), flatten,

and, written as x -> M x on the padded vectors,

    M = P_(k, s) L P_(q, k) R = P_(k, s) L P_(k, q)^T R,

which for in = out = m^2, k = m reduces to the paper's P L P^T R (P_(m, m) = P_(m, m)^T). The
layer's (out, in) matrix is M with the padded input columns and truncated output rows removed.

Default ``nblocks`` = floor(sqrt(min(in, out))): sqrt(n) blocks of size sqrt(n) when
in = out = n = m^2; in general it keeps q >= k, which is what lets every output reach every
input (with q < k some (output, input) pairs are structurally zero). An explicit ``nblocks``
is used as given.

Initialisation as the authors' code: each factor U(-bound, bound) with the nn.Linear (Kaiming,
a = sqrt(5)) bound for its own block fan-in, bias U(-1/sqrt(in), 1/sqrt(in)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def stride_permutation(a: int, b: int, device=None) -> torch.Tensor:
    """Index perm with (P_(a, b) v) = v[perm]: (a, b) -> transpose -> flatten; new[j*a + i] = v[i*b + j]."""
    return torch.arange(a * b, device=device).reshape(a, b).t().reshape(-1)


class MonarchLinear(nn.Module):
    """y = x M^T + bias with M a Monarch matrix; input (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, out_features: int, nblocks: int | None = None, bias: bool = True):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"MonarchLinear needs positive sizes, got {in_features}, {out_features}")
        k = max(1, math.isqrt(min(in_features, out_features))) if nblocks is None else int(nblocks)
        if k < 1:
            raise ValueError(f"nblocks must be >= 1, got {nblocks}")
        self.in_features, self.out_features, self.nblocks = in_features, out_features, k
        self.in_block = -(-in_features // k)          # p
        self.out_block = -(-out_features // k)        # s
        self.in_padded, self.out_padded = k * self.in_block, k * self.out_block
        q = self.in_block if self.in_padded < self.out_padded else self.out_block
        self.mid_block = q
        self.R = nn.Parameter(torch.empty(k, q, self.in_block))               # blocks of R: (q, p)
        self.L = nn.Parameter(torch.empty(k, self.out_block, q))              # blocks of L: (s, q)
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.R, self.L):
            bound = 1.0 / math.sqrt(w.shape[-1])      # kaiming_uniform(a=sqrt(5)): sqrt(3) * sqrt(1/3) / sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, nblocks={self.nblocks}, "
                f"blocks R {tuple(self.R.shape[1:])} L {tuple(self.L.shape[1:])}, bias={self.bias is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, q = self.nblocks, self.mid_block
        lead = x.shape[:-1]
        x = F.pad(x, (0, self.in_padded - self.in_features)).reshape(*lead, k, self.in_block)
        z = torch.einsum("kqp,...kp->...kq", self.R, x)                  # R (block-diagonal)
        z = z.reshape(*lead, q, k).transpose(-1, -2)                     # P_(q,k): (.., k blocks, q)
        y = torch.einsum("ksq,...kq->...ks", self.L, z)                  # L (block-diagonal)
        y = y.transpose(-1, -2).reshape(*lead, self.out_padded)          # P_(k,s)
        y = y[..., : self.out_features]
        return y + self.bias if self.bias is not None else y

    def to_dense(self) -> torch.Tensor:
        """The (out_features, in_features) matrix M, built from the factors: P_(k,s) L P_(q,k) R."""
        k, q, s = self.nblocks, self.mid_block, self.out_block
        R = torch.block_diag(*self.R.unbind(0))                         # (k q, k p)
        L = torch.block_diag(*self.L.unbind(0))                         # (k s, k q)
        PR = R[stride_permutation(q, k, R.device)]                      # rows permuted: P_(q,k) R
        M = (L @ PR)[stride_permutation(k, s, R.device)]                # P_(k,s) L P_(q,k) R
        return M[: self.out_features, : self.in_features]
