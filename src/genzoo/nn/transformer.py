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
* Class conditioning (``num_classes``; as TARFLOW's released code, apple/ml-tarflow, conditions
  its blocks): a learned embedding of the label is added to every position's input embedding;
  row ``num_classes`` is the "no label" token (classifier-free guidance, the convention of
  :mod:`genzoo.nn.unet`).
* Attention temperature (``forward(..., attn_temp=tau)``): softmax(q k^T / (tau sqrt(d)));
  Zhai et al. 2024 (TARFLOW) use tau != 1 to build the weaker prediction that guidance of an
  unconditional model pushes away from.
* Relative encodings (Shaw et al. 2018; T5), general RoPE exp(n B), the hierarchical extension
  of a learned table: :mod:`genzoo.nn.positions`. Attention kinds (softmax with log-n scaling,
  linear with RoPE, Transformer-VQ): :mod:`genzoo.nn.attention`.

Shapes: ``forward(x, cache=None, positions=None, cond=None, attn_temp=1.0)``; x is (B, T) int64
token ids when the Transformer was built with ``vocab_size`` (else (B, T, in_dim) vectors);
``cond`` (B,) int64 class labels; returns (B, T, out_dim).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .attention import ATTENTIONS, Attention
from .positions import GeneralRoPE, ShawRelative, T5Bias, hierarchical_extend, sinusoidal_table
from .rope import PAIRINGS, RoPE, grid_positions

POSITIONS = ("none", "learned", "sinusoidal", "rope", "rope2d", "rope-tie", "rope-general", "shaw", "t5")
NORMS = ("layernorm", "rmsnorm")
MIXERS = ("attention", "s4d", "rtf")
LINEARS = ("dense", "monarch")


class SSMMixer(nn.Module):
    """A state-space layer (:class:`~genzoo.nn.ssm.S4D` or :class:`~genzoo.nn.ssm.RTF`) in the place of
    attention: the convolutional mode over a whole sequence, the recurrent mode (``step``) when
    decoding with a cache, whose state is the SSM state: O(1) per token."""

    def __init__(self, layer: nn.Module, kind: str):
        super().__init__()
        self.layer, self.kind = layer, kind
        self.aux_loss = torch.zeros(())

    def forward(self, x, positions, index, state=None):
        if state is None:
            return self.layer(x)
        s = state.get("s")
        if s is None:
            s = self.layer.initial_state(x.shape[0])
        ys = []
        for t in range(x.shape[1]):
            y, s = self.layer.step(x[:, t], s)
            ys.append(y)
        state["s"] = s
        return torch.stack(ys, 1).to(x.dtype)
_ROTARY = ("rope", "rope2d", "rope-tie", "rope-general")


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) ids drawn from softmax(logits / temperature), restricted to the top_k
    (0 = all). Draws on the CPU so a CPU ``generator`` reproduces on any device."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


class RMSNorm(nn.Module):
    """Zhang & Sennrich 2019: x / sqrt(mean(x^2) + eps) * g."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class KVCache:
    """Per-layer decoding state (keys/values for softmax attention, running sums for linear
    attention, code sums for Transformer-VQ); ``length`` = positions already seen."""

    def __init__(self, depth: int):
        self.layers: list[dict] = [{} for _ in range(depth)]
        self.length = 0


class Block(nn.Module):
    def __init__(self, dim: int, attn: nn.Module, *, mlp_ratio: float, dropout: float, norm: str, linear: str = "dense"):
        super().__init__()
        Norm = nn.LayerNorm if norm == "layernorm" else RMSNorm
        self.norm1, self.norm2 = Norm(dim), Norm(dim)
        self.attn = attn  # the sequence mixer: attention of any kind, or an SSM
        hidden = int(mlp_ratio * dim)
        if linear == "monarch":
            from .monarch import MonarchLinear as Linear
        else:
            Linear = nn.Linear
        self.mlp = nn.Sequential(Linear(dim, hidden), nn.GELU(), Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x, positions, index, state=None, attn_temp: float = 1.0):
        h = self.norm1(x)
        if attn_temp == 1.0:
            x = x + self.attn(h, positions, index, state)
        else:  # only softmax attention takes a temperature (checked by Transformer.forward)
            x = x + self.attn(h, positions, index, state, temperature=attn_temp)
        return x + self.mlp(self.norm2(x))


def _check_choices(**values) -> None:
    """ValueError naming the first switch whose value is not one of its choices (pos, attention, ...)."""
    choices = {"pos": POSITIONS, "attention": ATTENTIONS, "norm": NORMS, "rope_pairing": PAIRINGS, "mixer": MIXERS,
               "mlp_linear": LINEARS}
    for name, value in values.items():
        if value not in choices[name]:
            raise ValueError(f"unknown Transformer {name} {value!r}; valid: {', '.join(choices[name])}")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The Transformer's switches that a model leaves to its user, written in a config as one nested
    section (``model.transformer: {dim: 128, depth: 4, pos: rope}``; ``model.transformer.dim=256`` on the
    command line). The arguments the data fixes (vocab / input / output sizes, causal, max_len, the
    grid, classes) stay the model's. Validated by its own fields here, before a network is built:
    a ValueError names the bad field."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    pos: str = "rope"
    rope_base: float = 10000.0
    rope_pairing: str = "interleaved"
    attention: str = "softmax"
    logn_len: int = 0
    relative_distance: int = 0
    vq_codes: int = 64
    vq_block: int = 64
    mixer: str = "attention"
    ssm_state: int = 0
    mlp_linear: str = "dense"
    norm: str = "layernorm"
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self):
        _check_choices(pos=self.pos, attention=self.attention, norm=self.norm, rope_pairing=self.rope_pairing,
                       mixer=self.mixer, mlp_linear=self.mlp_linear)
        for name in ("dim", "depth", "heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Transformer {name} must be >= 1, got {getattr(self, name)}")
        for name in ("logn_len", "relative_distance", "ssm_state"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"Transformer {name} must be >= 0, got {getattr(self, name)}")
        if not float(self.mlp_ratio) > 0 or not 0.0 <= float(self.dropout) <= 1.0:
            raise ValueError(f"Transformer needs mlp_ratio > 0 and 0 <= dropout <= 1, got {self.mlp_ratio}, {self.dropout}")

    @classmethod
    def of(cls, value: "TransformerConfig | dict | None") -> "TransformerConfig":
        """``value`` as a config: a config itself, a dict of some fields (the rest default), or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = [k for k in value if k not in names]
            if unknown:
                raise ValueError(f"unknown Transformer setting {unknown[0]!r}; valid: {', '.join(sorted(names))}")
            return cls(**value)
        raise TypeError(f"a Transformer config is a TransformerConfig or a dict, got {type(value).__name__}")

    def build(self, **data_bound) -> "Transformer":
        """The :class:`Transformer` of these settings and the model's data-bound arguments (vocab_size or
        in_dim, out_dim, causal, max_len, grid, num_classes, ...)."""
        return Transformer(**dataclasses.asdict(self), **data_bound)


class Transformer(nn.Module):
    """A stack of pre-norm Transformer blocks with an input embedding and an output head.

    Args:
        dim, depth, heads: width, number of blocks, attention heads.
        vocab_size: token inputs (B, T) int64 embedded by a table; else ``in_dim`` (vectors).
        in_dim: input vector size when ``vocab_size`` is None.
        out_dim: output size per position (logits over a vocabulary, or vectors).
        causal: position t attends to positions <= t only (decoder); False = bidirectional.
        max_len: longest sequence (the learned position table's size; a longer input fails with
            a clear message; :meth:`extend_positions` extends a learned table).
        pos: "none" | "learned" | "sinusoidal" (added to the input) | "rope" | "rope2d" |
            "rope-general" (queries and keys rotated; "rope2d" needs ``grid=(H, W)`` and places
            sequence index i at the i-th cell of the raster-scanned grid) | "shaw" | "t5"
            (relative, inside the attention).
        rope_base, rope_pairing: theta_k = base^(-2k/d_head); "interleaved" (default,
            RoFormer, GPT-J) or "half" (GPT-NeoX, LLaMA) pairs (see :mod:`genzoo.nn.rope`); "rope-general" starts
            from the generator of that pairing.
        rope_learnable: ``pos="rope-general"`` only (another pos refuses it): True (the default
            there) trains the generator B of R_n = exp(n B), skew-symmetric and starting at RoPE's
            generator, one B shared by every layer; False keeps B = RoPE's generator (exactly
            ``pos="rope"``, at the cost of a matrix exponential).
        grid: (H, W) of the raster-scanned grid for ``pos="rope2d"``.
        grid_repeat: tokens per grid cell (default 1). R > 1 (the R, G, B sub-pixels of a colour
            pixel): sequence index i sits in cell i // R (rope2d) and gets a learned sub-position
            embedding of i % R, added to its input like a learned position.
            ``pos="rope-tie"``: 2-axis RoPE for sequences that mix text and image patches (Su's RoPE-Tie);
            every call passes ``positions`` from :func:`genzoo.nn.rope.rope_tie_positions`.
        attention: "softmax" | "linear" | "vq" (see :mod:`genzoo.nn.attention`).
        logn_len: 0 = off; else softmax logits of a query that sees n keys are scaled by
            max(1, log n / log logn_len) (Su's entropy-invariant scaling; set it to the
            training length; it changes nothing up to that length).
        relative_distance: Shaw's clipping distance k / T5's max_distance.
        vq_codes, vq_block: Transformer-VQ codebook size S per head and block length L.
        mixer: "attention" (default) | "s4d" | "rtf": the sequence-mixing layer of every block
            (:mod:`genzoo.nn.ssm`; an SSM block has no attention and takes pos none/learned/
            sinusoidal); ``ssm_state`` = S4D's state size N / RTF's order.
        mlp_linear: "dense" | "monarch" (Dao et al. 2022's Monarch matrices in the MLP,
            :mod:`genzoo.nn.monarch`).
        norm: "layernorm" | "rmsnorm".
        num_classes: 0 (default) = unconditional; K > 0 = a table of K + 1 learned class
            embeddings added to every position's input embedding (row K = "no label");
            ``forward(..., cond=y)`` picks the rows (cond None = no label for every example).
        mlp_ratio, dropout: MLP width factor; dropout in attention and MLP.

    ``forward(..., return_aux=True)`` also returns the sum of the layers' auxiliary losses (the
    Transformer-VQ commitment losses; 0 otherwise): a model adds it to its loss.
    """

    def __init__(self, dim: int = 128, depth: int = 4, heads: int = 4, *, vocab_size: int | None = None,
                 in_dim: int | None = None, out_dim: int | None = None, causal: bool = True, max_len: int = 1024,
                 pos: str = "rope", rope_base: float = 10000.0, rope_pairing: str = "interleaved",
                 rope_learnable: bool | None = None, grid: tuple[int, int] | None = None, attention: str = "softmax", logn_len: int = 0,
                 relative_distance: int = 0, vq_codes: int = 64, vq_block: int = 64, mixer: str = "attention",
                 ssm_state: int = 0, mlp_linear: str = "dense", norm: str = "layernorm", mlp_ratio: float = 4.0,
                 dropout: float = 0.0, num_classes: int = 0, grid_repeat: int = 1):
        super().__init__()
        _check_choices(pos=pos, attention=attention, norm=norm, rope_pairing=rope_pairing, mixer=mixer,
                       mlp_linear=mlp_linear)
        if (vocab_size is None) == (in_dim is None):
            raise ValueError("give exactly one of vocab_size (token inputs) and in_dim (vector inputs)")
        if rope_learnable is not None and pos != "rope-general":
            raise ValueError(f"rope_learnable (a trainable generator B) applies to pos='rope-general' only, not {pos!r}")
        if pos == "rope2d" and (grid is None or len(grid) != 2):
            raise ValueError("pos='rope2d' needs grid=(H, W), the raster-scanned grid the sequence lives on")
        if attention == "linear" and pos in ("shaw", "t5"):
            raise ValueError(f"linear attention has no logits to add a relative bias to; use pos=rope (or an absolute pos), not {pos!r}")
        if attention == "vq" and (pos not in ("none", "learned", "sinusoidal") or not causal):
            raise ValueError("Transformer-VQ (attention=vq) is causal and needs keys that do not depend on position: "
                             f"use pos=learned, sinusoidal or none (got pos={pos!r}, causal={causal})")
        if logn_len and (attention != "softmax" or mixer != "attention"):
            raise ValueError("logn_len (log-n scaling) applies to softmax attention only")
        if mixer != "attention" and (pos not in ("none", "learned", "sinusoidal") or not causal):
            raise ValueError(f"mixer={mixer!r} is a causal state-space layer with no queries or keys: use pos=none, learned "
                             f"or sinusoidal (got pos={pos!r}, causal={causal})")
        self.dim, self.depth, self.heads, self.causal, self.max_len, self.pos = dim, depth, heads, causal, max_len, pos
        self.grid = tuple(grid) if grid is not None else None
        if int(grid_repeat) < 1:
            raise ValueError(f"grid_repeat must be >= 1, got {grid_repeat}")
        self.grid_repeat = int(grid_repeat)
        self.embed = nn.Embedding(vocab_size, dim) if vocab_size is not None else nn.Linear(in_dim, dim)
        self.pos_table = nn.Embedding(max_len, dim) if pos == "learned" else None
        if int(num_classes) < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = int(num_classes)
        self.class_embed = nn.Embedding(self.num_classes + 1, dim) if self.num_classes > 0 else None
        # tokens per grid cell > 1 (colour sub-pixels R, G, B of one pixel): a learned embedding of the
        # sub-position (index % grid_repeat), so the input at index i knows which sub-pixel it predicts
        self.sub_embed = nn.Embedding(self.grid_repeat, dim) if self.grid_repeat > 1 else None
        head_dim = dim // heads
        rope = None
        if pos in ("rope", "rope2d", "rope-tie"):
            two = pos in ("rope2d", "rope-tie")
            if head_dim % (4 if two else 2):
                raise ValueError(f"pos={pos!r} needs a head dimension divisible by {4 if two else 2}, got {head_dim}")
            rope = RoPE(head_dim, rope_base, rope_pairing, axes=2 if two else 1)
        elif pos == "rope-general":
            if head_dim % 2:
                raise ValueError(f"pos='rope-general' needs an even head dimension, got {head_dim}")
            rope = GeneralRoPE(head_dim, rope_base, learnable=True if rope_learnable is None else bool(rope_learnable),
                               pairing=rope_pairing)
        self.t5 = T5Bias(heads, causal, max_distance=relative_distance or 128) if pos == "t5" else None
        blocks = []
        for _ in range(depth):
            if mixer == "s4d":
                from .ssm import S4D

                attn = SSMMixer(S4D(dim, state_size=ssm_state or 64), "s4d")
            elif mixer == "rtf":
                from .ssm import RTF

                attn = SSMMixer(RTF(dim, order=ssm_state or 16), "rtf")
            else:
                shaw = ShawRelative(head_dim, relative_distance or 16) if pos == "shaw" else None
                attn = Attention(dim, heads, causal=causal, kind=attention, rope=rope, shaw=shaw, t5=self.t5,
                                 logn_len=logn_len, dropout=dropout, vq_codes=vq_codes, vq_block=vq_block)
            blocks.append(Block(dim, attn, mlp_ratio=mlp_ratio, dropout=dropout, norm=norm, linear=mlp_linear))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim) if norm == "layernorm" else RMSNorm(dim)
        self.head = nn.Linear(dim, out_dim if out_dim is not None else (vocab_size or in_dim))
        self.drop = nn.Dropout(dropout)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 depth)
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth))
        # (the SSMs' and Monarch factors' raw parameters keep their own papers' initialisations)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def set_logn(self, train_len: int) -> None:
        """Switch log-n scaling on (train_len > 0) or off (0) for every layer, e.g. at evaluation."""
        if train_len and any(b.attn.kind != "softmax" for b in self.blocks):
            raise ValueError("log-n scaling applies to softmax attention only")
        for b in self.blocks:
            b.attn.logn_len = int(train_len)

    @torch.no_grad()
    def extend_positions(self, new_len: int, alpha: float = 0.4) -> None:
        """Extend a learned position table to ``new_len`` by Su's hierarchical decomposition
        (positions < max_len unchanged); raises for the other position kinds."""
        if self.pos_table is None:
            raise ValueError(f"extend_positions needs pos='learned' (this Transformer has pos={self.pos!r})")
        table = hierarchical_extend(self.pos_table.weight, new_len, alpha)
        self.pos_table = nn.Embedding.from_pretrained(table, freeze=False).to(self.pos_table.weight.device)
        self.max_len = new_len

    def new_cache(self) -> KVCache:
        return KVCache(self.depth)

    @torch.no_grad()
    def generate(self, n: int, length: int, bos: int, *, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, observed: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, use_cache: bool = True, cond: torch.Tensor | None = None,
                 progress: bool = False, desc: str = "tokens") -> torch.Tensor:
        """Autoregressive decoding of n sequences of ``length`` tokens after a BOS token id ``bos``:
        the input is [BOS, t_1, ..., t_{length-1}] and output i is the distribution of t_{i+1} (the
        layout of the image transformer and the VQ prior). Each token is drawn by
        :func:`sample_logits` (temperature, top-k) from ``generator``. ``observed`` (n, length) ids
        and ``mask`` (n, length) bool keep the observed tokens where mask is True (completion /
        inpainting). ``use_cache=False`` recomputes the prefix every step (same tokens, slower).
        Returns (n, length) int64."""
        from tqdm.auto import tqdm

        dev = next(self.parameters()).device
        k = torch.zeros(n, length, dtype=torch.long, device=dev)
        bos_col = torch.full((n, 1), int(bos), dtype=torch.long, device=dev)
        cache = self.new_cache() if use_cache else None
        token = bos_col
        for i in tqdm(range(length), desc=desc, disable=not progress, leave=False):
            if cache is not None:
                out = self(token, cache, cond=cond)[:, -1]
            else:
                out = self(torch.cat((bos_col, k[:, :i]), 1), cond=cond)[:, -1]
            k[:, i] = sample_logits(out, temperature, top_k, generator)
            if observed is not None:
                k[:, i] = torch.where(mask[:, i], observed[:, i], k[:, i])
            token = k[:, i:i + 1]
        return k

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, positions: torch.Tensor | None = None,
                cond: torch.Tensor | None = None, attn_temp: float = 1.0, return_aux: bool = False):
        """x (B, T) ids or (B, T, in_dim) -> (B, T, out_dim). With ``cache``, x continues the cached
        sequence (positions cache.length .. cache.length + T - 1) and the cache is extended.
        ``positions`` (T,) or (T, P) overrides the rotary positions (default: the sequence index,
        or its grid cell for rope2d). ``cond`` (B,) int64 class labels in 0..num_classes
        (num_classes = no label; None = no label for every example), for a Transformer built
        with ``num_classes > 0``; pass the same labels with every cached call. ``attn_temp``
        tau divides every softmax attention logit (tau = 1: plain attention). ``return_aux``: return
        ``(output, aux)``, aux the sum of the layers' auxiliary losses (the Transformer-VQ commitment losses;
        a 0 tensor otherwise), which a model adds to its loss."""
        T = x.shape[1]
        if attn_temp != 1.0:
            if not attn_temp > 0:
                raise ValueError(f"attn_temp must be > 0, got {attn_temp}")
            if any(getattr(b.attn, "kind", "") != "softmax" for b in self.blocks):
                raise ValueError("attn_temp (attention temperature) applies to softmax attention only")
        start = cache.length if cache is not None else 0
        if self.pos_table is not None and start + T > self.max_len:
            raise ValueError(f"sequence of length {start + T} is longer than this Transformer's learned position table "
                             f"(max_len={self.max_len}); extend it with extend_positions() or use a relative/rotary pos")
        if self.pos == "rope2d" and positions is None and start + T > self.grid[0] * self.grid[1] * self.grid_repeat:
            raise ValueError(f"sequence of length {start + T} is longer than the {self.grid[0]}x{self.grid[1]} grid"
                             + (f" with {self.grid_repeat} tokens per cell" if self.grid_repeat > 1 else ""))
        index = torch.arange(start, start + T, device=x.device)
        h = self.embed(x)
        if self.pos == "learned":
            h = h + self.pos_table(index)
        elif self.pos == "sinusoidal":
            h = h + sinusoidal_table(index, self.dim).to(h.dtype)
        if self.sub_embed is not None:
            h = h + self.sub_embed(index % self.grid_repeat)
        if self.class_embed is not None:
            if cond is None:
                cond = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            cond = torch.as_tensor(cond, device=x.device).long()
            if cond.shape != (x.shape[0],):
                raise ValueError(f"cond must hold one class label per example, shape ({x.shape[0]},); "
                                 f"got {tuple(cond.shape)}")
            if bool(((cond < 0) | (cond > self.num_classes)).any()):
                raise ValueError(f"class labels must be in 0..{self.num_classes} ({self.num_classes} = no label)")
            h = h + self.class_embed(cond)[:, None]
        elif cond is not None:
            raise ValueError("this Transformer has num_classes=0 (unconditional) but was given class labels (cond)")
        if positions is None and self.pos == "rope-tie":
            raise ValueError("pos='rope-tie' needs positions=rope_tie_positions(segments) (genzoo.nn.rope) with every call")
        if positions is None:
            positions = grid_positions(*self.grid, device=x.device)[index // self.grid_repeat] if self.pos == "rope2d" else index
        h = self.drop(h)
        aux = torch.zeros((), device=x.device)
        for i, block in enumerate(self.blocks):
            h = block(h, positions, index, cache.layers[i] if cache is not None else None, attn_temp)
            if getattr(block.attn, "kind", "") == "vq":
                aux = aux + block.attn.aux_loss
        if cache is not None:
            cache.length += T
        out = self.head(self.norm(h))
        return (out, aux) if return_aux else out
