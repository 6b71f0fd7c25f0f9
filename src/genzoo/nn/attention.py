"""The attention kinds of genzoo's Transformer, each with its own incremental-decoding cache.

* ``softmax``: scaled dot-product attention softmax(q k^T / sqrt(d) + bias) v (Vaswani et al.
  2017) through PyTorch's SDPA, with a KV cache; optional relative encodings (Shaw et al. 2018
  keys and values; T5 bucketed bias) and the **log-n scaling** of Su 2021 ("从熵不变性看Attention
  的Scale操作", kexue.fm/archives/8823): the logits of a query that sees n keys are multiplied
  by log n / log n_train, which keeps the attention entropy roughly constant as the context
  grows. genzoo applies max(1, log n / log n_train) (the length-extrapolation form of Su's
  later posts), so a model behaves identically up to its training length n_train and the
  scaling can be switched on at evaluation time.
* ``linear``: Katharopoulos et al. 2020, "Transformers are RNNs": phi(x) = elu(x) + 1,
  y_i = phi(q_i)^T sum_{j<=i} phi(k_j) v_j^T / phi(q_i)^T sum_{j<=i} phi(k_j), with RoPE as in
  RoFormer (Su et al. 2021, eq. 19): the numerator uses R_i phi(q_i) and R_j phi(k_j), the
  denominator the unrotated features. The cache is the running sums (S, z): O(1) per token.
* ``vq``: Lingle 2023, "Transformer-VQ: Linear-Time Transformers via Vector Quantization":
  keys are vector-quantised (k_hat = VQ(k), straight-through, commitment loss, EMA codebook of
  S codes per head), so that for every query q the past keys collapse by code:
  sum_{j past} exp(q.k_hat_j) v_j = sum_s exp(q.c_s) U_s with U_s = sum_{j: z_j = s} v_j.
  Attention over a block of L queries is exact softmax attention over (the block's own
  quantised keys, causally) plus the S codes weighted by their counts, so cost is
  O(T (L + S)) instead of O(T^2) and the decoding cache is (U, counts), O(S d) whatever the
  length. Forward values equal quadratic softmax attention over the quantised keys
  (:func:`vq_attention_reference`), in training mode too: one forward reads one codebook (the
  one its keys were quantised with) and the EMA codebook step lands after it; in genzoo's block form, gradients reach earlier blocks'
  values through U but their keys only through the commitment loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .positions import ShawRelative, T5Bias
from .quantize import VectorQuantizer

ATTENTIONS = ("softmax", "linear", "vq")
LINEAR_CHUNK = 64  # causal linear attention works in chunks of this many positions


def logn_scale(n_keys: torch.Tensor, train_len: int) -> torch.Tensor:
    """(Tq,) factors max(1, log n / log n_train) for queries that see ``n_keys`` keys each."""
    return (torch.log(n_keys.to(torch.float32)) / math.log(train_len)).clamp(min=1.0)


class Attention(nn.Module):
    """Multi-head self-attention of any kind in :data:`ATTENTIONS`.

    ``forward(x, positions, index, state)``: x (B, T, dim); ``positions`` the rotary positions of
    the T new tokens; ``index`` (T,) their sequence indices; ``state`` a dict (the layer's cache,
    updated in place) or None; ``temperature`` tau (softmax only) divides the logits,
    softmax((q k^T / sqrt(d) + bias) / tau). Returns (B, T, dim). ``self.aux_loss`` holds the
    commitment loss of the last call (vq) or 0."""

    def __init__(self, dim: int, heads: int, *, causal: bool, kind: str = "softmax", rope: nn.Module | None = None,
                 shaw: ShawRelative | None = None, t5: T5Bias | None = None, logn_len: int = 0, dropout: float = 0.0,
                 vq_codes: int = 64, vq_block: int = 64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if kind not in ATTENTIONS:
            raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTIONS)}")
        self.heads, self.head_dim, self.causal, self.kind = heads, dim // heads, causal, kind
        self.rope, self.shaw, self.dropout, self.logn_len = rope, shaw, dropout, logn_len
        self._t5 = [t5]  # shared across layers; kept out of this module's children
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.vq = VectorQuantizer(self.head_dim, vq_codes, groups=heads) if kind == "vq" else None
        self.vq_block = vq_block
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor, positions: torch.Tensor, index: torch.Tensor, state: dict | None = None,
                temperature: float = 1.0) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, T, dh)
        if temperature != 1.0 and self.kind != "softmax":
            raise ValueError(f"an attention temperature applies to softmax attention only, not {self.kind!r}")
        if self.kind == "softmax":
            y = self._softmax(q, k, v, positions, index, state, temperature)
        elif self.kind == "linear":
            y = self._linear(q, k, v, positions, state)
        else:
            y = self._vq(q, k, v, state)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))

    # -- softmax ---------------------------------------------------------------------------------
    def _softmax(self, q, k, v, positions, index, state, temperature: float = 1.0):
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        if state is not None:
            if "k" in state:
                k, v = torch.cat((state["k"], k), 2), torch.cat((state["v"], v), 2)
            state["k"], state["v"] = k, v
        Tq, Tk = q.shape[2], k.shape[2]
        k_index = torch.arange(Tk, device=q.device) + (index[0] - (Tk - Tq))
        if self.logn_len:
            n_keys = (index + 1) if self.causal else torch.full_like(index, Tk)
            q = q * logn_scale(n_keys, self.logn_len).to(q.dtype)[:, None]
        if temperature != 1.0:  # every logit is linear in q (Shaw's too), the T5 bias is divided below
            q = q / temperature
        mask = (k_index[None, :] <= index[:, None]) if self.causal else None
        bias = None
        t5 = self._t5[0]
        if t5 is not None:
            bias = t5(index, k_index).to(q.dtype)[None] / temperature
        drop = self.dropout if self.training else 0.0
        if self.shaw is not None:  # explicit path: the value term needs the probabilities
            idx = self.shaw.index(index, k_index)
            logits = (q @ k.transpose(-1, -2) + self.shaw.logits(q, idx)) / math.sqrt(self.head_dim)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            attn = F.dropout(logits.softmax(-1), drop, self.training)
            return attn @ v + self.shaw.values(attn, idx)
        if bias is None:
            if mask is not None and Tq == Tk and Tq > 1:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)

    # -- linear ----------------------------------------------------------------------------------
    def _linear(self, q, k, v, positions, state):
        fq, fk = F.elu(q.float()) + 1, F.elu(k.float()) + 1
        rq, rk = (self.rope(fq, positions), self.rope(fk, positions)) if self.rope is not None else (fq, fk)
        v = v.float()
        if not self.causal:
            S, z = torch.einsum("bhtd,bhte->bhde", rk, v), fk.sum(2)
            num, den = torch.einsum("bhtd,bhde->bhte", rq, S), torch.einsum("bhtd,bhd->bht", fq, z)
            return (num / den.clamp(min=1e-6)[..., None]).to(q.dtype)
        # causal, in chunks of C positions (the chunked form of Katharopoulos et al.'s recurrence): inside a chunk
        # the quadratic masked sum, across chunks the running state S = sum_j R_j phi(k_j) v_j^T, z = sum_j phi(k_j),
        # so memory is O(T C + (T / C) dh^2) instead of the (T, dh, dh) prefix sums
        B, H, T, dh = rq.shape
        C = min(LINEAR_CHUNK, T)
        pad = (-T) % C
        if pad:  # padded positions come after every real one and have phi = 0: they add nothing to the sums
            rq, rk, fq, fk, v = (F.pad(t, (0, 0, 0, pad)) for t in (rq, rk, fq, fk, v))
        n = (T + pad) // C
        rq, rk, fq, fk, v = (t.reshape(B, H, n, C, -1) for t in (rq, rk, fq, fk, v))
        tril = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        num = ((rq @ rk.transpose(-1, -2)) * tril) @ v  # within the chunk
        den = ((fq @ fk.transpose(-1, -2)) * tril).sum(-1)
        S_blk, z_blk = rk.transpose(-1, -2) @ v, fk.sum(-2)  # (B, H, n, dh, dh), (B, H, n, dh)
        S_past, z_past = torch.cumsum(S_blk, 2) - S_blk, torch.cumsum(z_blk, 2) - z_blk  # chunks before this one
        if state is not None and "S" in state:
            S_past, z_past = S_past + state["S"][:, :, None], z_past + state["z"][:, :, None]
        if state is not None:
            state["S"], state["z"] = S_past[:, :, -1] + S_blk[:, :, -1], z_past[:, :, -1] + z_blk[:, :, -1]
        num = num + rq @ S_past
        den = den + (fq * z_past[:, :, :, None]).sum(-1)
        y = (num / den.clamp(min=1e-6)[..., None]).reshape(B, H, n * C, dh)[:, :, :T]
        return y.to(q.dtype)

    # -- Transformer-VQ --------------------------------------------------------------------------
    def _vq(self, q, k, v, state):
        B, H, T, dh = q.shape
        kt = k.transpose(1, 2)  # groups = heads: (B, T, H, dh)
        # one codebook for the whole forward: in training the quantiser moves its EMA codebook one step
        # inside its call, after quantising, so the past blocks' code logits must read the codebook the
        # keys were quantised with (the one before the step), not the updated one
        if self.training and not bool(self.vq.initialized):
            self.vq._init_from(kt.detach())  # (the first training call draws the codebook from these keys)
        cb = self.vq.codebook.clone() if self.training else self.vq.codebook
        k_hat, codes, commit = self.vq(kt)  # the EMA update happens here, after the quantisation
        self.aux_loss = commit
        k_hat, codes = k_hat.transpose(1, 2), codes.transpose(1, 2)  # (B, H, T, dh), (B, H, T)
        S = self.vq.K
        L = T if state is not None else min(self.vq_block, T)  # decoding: the new tokens are one block
        pad = (-T) % L
        if pad:
            q, k_hat, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k_hat, v))
            codes = F.pad(codes, (0, pad))
        nb = (T + pad) // L
        qb, kb, vb = (t.reshape(B, H, nb, L, dh) for t in (q, k_hat, v))
        onehot = F.one_hot(codes.reshape(B, H, nb, L), S).to(v.dtype)
        if pad:  # padded keys sit after every real query: keep them out of the code sums
            real = (torch.arange(T + pad, device=q.device) < T).reshape(nb, L).to(v.dtype)
            onehot = onehot * real[None, None, :, :, None]
        U_blk = onehot.transpose(-1, -2) @ vb  # (B, H, nb, S, dh)
        n_blk = onehot.sum(-2)  # (B, H, nb, S)
        U_past = torch.cumsum(U_blk, 2) - U_blk  # exclusive: blocks before this one
        n_past = torch.cumsum(n_blk, 2) - n_blk
        if state is not None and "U" in state:
            U_past, n_past = U_past + state["U"][:, :, None], n_past + state["n"][:, :, None]
        if state is not None:
            state["U"], state["n"] = U_past[:, :, -1] + U_blk[:, :, -1], n_past[:, :, -1] + n_blk[:, :, -1]
        scale = 1.0 / math.sqrt(dh)
        cb = self.vq._norm(cb).to(q.dtype)  # (H, S, dh): the codes k_hat was drawn from
        cur = (qb @ kb.transpose(-1, -2)) * scale
        cur = cur.masked_fill(~torch.ones(L, L, dtype=torch.bool, device=q.device).tril(), float("-inf"))
        past = torch.einsum("bhnld,hsd->bhnls", qb, cb) * scale + torch.log(n_past)[:, :, :, None, :]
        attn = torch.cat((cur, past), -1).softmax(-1)
        attn = F.dropout(attn, self.dropout if self.training else 0.0, self.training)
        vals = U_past / n_past.clamp(min=1)[..., None]
        y = attn[..., :L] @ vb + attn[..., L:] @ vals
        return y.reshape(B, H, nb * L, dh)[:, :, :T]


def vq_attention_reference(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Quadratic causal softmax attention over the quantised keys of a ``kind="vq"`` layer (the
    O(T^2) computation the block form and the cache must reproduce). x (B, T, dim)."""
    B, T, _ = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    k_hat = attn.vq.lookup(attn.vq.codes(k.transpose(1, 2))).transpose(1, 2).to(q.dtype)
    y = F.scaled_dot_product_attention(q, k_hat, v, is_causal=True)
    return attn.proj(y.transpose(1, 2).reshape(B, T, -1))
