"""A small DDPM / ADM-style UNet for diffusion and flow-matching models, and the time embeddings.

Papers and what is taken from each
----------------------------------
* Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (NeurIPS), appendix B:
  a PixelCNN++-like UNet of wide residual blocks (GroupNorm, SiLU/swish, 3x3 convs), the
  sinusoidal Transformer position embedding of the timestep added inside every residual
  block, self-attention at the 16x16 resolution (here: the low resolutions listed in
  ``attn_resolutions``), skip connections from every encoder block to the decoder
  (concatenated), dropout in the residual blocks.
* Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis" (ADM), section 3:
  the timestep (plus class) embedding injected by adaptive group normalisation,
  ``AdaGN(h, y) = y_s * GroupNorm(h) + y_b`` with ``(y_s, y_b) = Linear(emb)``
  (``scale_shift=True``; written as ``(1 + y_s)`` so a zero projection is the identity),
  self-attention at several resolutions, a class embedding added to the time embedding.
* Song et al. 2021, "Score-Based Generative Modeling through SDEs" (NCSN++) and Karras et
  al. 2022 (EDM), appendix F.2: random Fourier features of the noise label,
  ``[cos(2 pi f c), sin(2 pi f c)]`` with fixed ``f ~ N(0, 16^2)`` (``time_embedding="fourier"``),
  and the residual sum scaled by ``residual_scale`` (EDM/NCSN++ use 1/sqrt(2)).
* Ho & Salimans 2021, "Classifier-Free Diffusion Guidance": one extra class index
  ``num_classes`` means "no label" (the null token), so one network gives both the
  conditional and the unconditional denoiser.
* Ma et al. 2024, "The Surprising Effectiveness of Skip-Tuning in Diffusion Sampling":
  :attr:`UNet.skip_scales` multiplies the encoder skips that each decoder level
  concatenates (1.0 = the trained network); a sampling-time knob, not a parameter.

Shapes and units
----------------
``UNet.forward(x, noise_label, cond=None)``: x (B, C, H, W); ``noise_label`` (B,) or a
scalar, the network's time input c_noise (whatever the preconditioning passes, i.e.
``process.noise_label(t)``: the DDPM index N t - 1 for discrete VP, 999 t for continuous VP,
ln(sigma / 2) for VE, ln(sigma) / 4 for EDM and for the "edm" parameterisation of any process,
1000 t for flow matching); ``cond`` (B,) int64 class indices in
0..num_classes (num_classes = no label) or None (= no label for every example).
Returns (B, out_channels, H, W). The output convolution is zero-initialised, so a freshly
built network outputs exactly 0 (the usual DDPM/ADM/EDM initialisation).

Resolutions: each level after the first halves H and W with a stride-2 3x3 convolution
(``ceil(H / 2)``: 28 -> 14 -> 7, 8 -> 4, 7 -> 4), and the decoder upsamples by nearest
neighbour to the matching encoder size followed by a 3x3 convolution, so odd sizes work.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

TIME_EMBEDDINGS = ("sinusoidal", "fourier")


# ------------------------------------------------------------------ time embeddings


class SinusoidalEmbedding(nn.Module):
    """Transformer position embedding of a real-valued label (Vaswani et al. 2017; DDPM).

    ``(B,) -> (B, dim)``: ``[cos(c * w_k), sin(c * w_k)]`` with ``w_k = max_period^(-k / (dim/2))``,
    k = 0..dim/2-1 (frequencies from 1 down to 1/max_period). Fits labels of order 1..1000.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = c.float()[:, None] * self.freqs[None]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features (Tancik et al. 2020; NCSN++ / EDM): ``[cos(2 pi f c), sin(2 pi f c)]``.

    ``(B,) -> (B, dim)``, fixed frequencies ``f ~ N(0, scale^2)`` (EDM: scale 16) drawn at
    construction from torch's global RNG (the trainer seeds it) and stored as a buffer
    (saved with the weights, so a checkpoint reproduces the same network). Suits labels of
    order 1 (ln(sigma)/4, t in [0, 1]).
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)
        self.dim = dim

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = (2 * math.pi) * c.float()[:, None] * self.freqs[None].float()
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


def make_time_embedding(kind: str, dim: int, fourier_scale: float = 16.0) -> nn.Module:
    """``"sinusoidal"`` -> :class:`SinusoidalEmbedding`, ``"fourier"`` -> :class:`FourierEmbedding`."""
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim)
    if kind == "fourier":
        return FourierEmbedding(dim, fourier_scale)
    raise ValueError(f"unknown time_embedding {kind!r}; valid: {', '.join(TIME_EMBEDDINGS)}")


class ConditionEmbedding(nn.Module):
    """Noise label (+ optional class) -> embedding (B, emb_dim).

    ``emb = MLP(time_embedding(c_noise)) + class_embedding(cond)`` (ADM adds the class
    embedding to the time embedding). The class table has ``num_classes + 1`` rows; the
    last row is the "no label" token used for classifier-free guidance, and ``cond=None``
    means no label for every example.
    """

    def __init__(self, base_dim: int, emb_dim: int, time_embedding: str = "sinusoidal",
                 num_classes: int = 0, fourier_scale: float = 16.0):
        super().__init__()
        self.time = make_time_embedding(time_embedding, base_dim, fourier_scale)
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = int(num_classes)
        self.label = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes > 0 else None

    def forward(self, noise_label: torch.Tensor, batch: int, cond: torch.Tensor | None, device) -> torch.Tensor:
        c = torch.as_tensor(noise_label, device=device)
        if c.ndim == 0:
            c = c.expand(batch)
        c = c.reshape(-1)
        if c.shape[0] != batch:
            raise ValueError(f"noise_label must be a scalar or have shape ({batch},), got {tuple(c.shape)}")
        emb = self.mlp(self.time(c))
        if self.label is not None:
            if cond is None:
                cond = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
            cond = torch.as_tensor(cond, device=device).long().reshape(-1)
            if cond.shape[0] != batch:
                raise ValueError(f"cond must have shape ({batch},), got {tuple(cond.shape)}")
            emb = emb + self.label(cond)
        elif cond is not None:
            raise ValueError("this network has num_classes=0 (unconditional) but was given class labels")
        return emb


# ------------------------------------------------------------------ blocks


def _groups(ch: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """GroupNorm groups for ``ch`` channels: the largest divisor of ``ch`` that is <= 32 and
    leaves at least 4 channels per group where possible (32 groups for 128+ channels as in
    DDPM/ADM; 8 for 32). With one channel per group a per-channel embedding added before
    the norm (``scale_shift=False``, DDPM) would be normalised away entirely."""
    for g in range(max(1, min(max_groups, ch // min_group_size)), 0, -1):
        if ch % g == 0:
            return g
    return 1


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(ch), ch, eps=1e-6)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """Residual block: GN-SiLU-conv, + embedding (add or AdaGN scale-shift), GN-SiLU-dropout-conv (zero init).

    ``(x (B, in, H, W), emb (B, E)) -> (B, out, H, W)``; output ``(skip(x) + h) * residual_scale``.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0,
                 scale_shift: bool = True, residual_scale: float = 1.0):
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.scale_shift = scale_shift
        self.emb = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.residual_scale = float(residual_scale)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        out = self.skip(x) + h
        return out * self.residual_scale if self.residual_scale != 1.0 else out


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, GroupNorm first, zero-init output, residual.

    (B, C, H, W) -> (B, C, H, W). Heads of ``head_channels`` channels (at least one head).
    """

    def __init__(self, ch: int, head_channels: int = 32, residual_scale: float = 1.0):
        super().__init__()
        self.heads = max(1, ch // head_channels)
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))
        self.residual_scale = float(residual_scale)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        out = x + self.proj(h)
        return out * self.residual_scale if self.residual_scale != 1.0 else out


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to ``size`` then a 3x3 convolution."""

    def __init__(self, ch: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, size=self.size, mode="nearest"))


# ------------------------------------------------------------------ the UNet


class UNet(nn.Module):
    """DDPM/ADM-style UNet ``(x, noise_label, cond=None) -> (B, out_channels, H, W)``.

    Args:
        in_channels: C of the input images.
        out_channels: C of the output (default ``in_channels``).
        channels: base width; level i has ``channels * channel_mult[i]`` channels.
        channel_mult: width multipliers, one per resolution level (len = number of levels;
            each level after the first halves H and W).
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more
            per level, as in DDPM/ADM, consuming the extra skip of each downsampling).
        attn_resolutions: feature-map sizes (H) at which a self-attention block follows each
            residual block; the middle block always has one (ADM). A size no level has is an
            error (a ConfigError naming the sizes there are), never silently no attention.
        image_size: H (= W unless ``image_size`` is a (H, W) pair) of the input.
        dropout: dropout rate inside the residual blocks (DDPM CIFAR-10: 0.1).
        num_classes: 0 = unconditional; otherwise a class embedding of ``num_classes + 1``
            rows, the last one meaning "no label" (classifier-free guidance).
        time_embedding: "sinusoidal" (DDPM/ADM) or "fourier" (random Fourier features,
            NCSN++/EDM, frequencies N(0, fourier_scale^2)).
        skip_scale: initial :attr:`skip_scales` for Skip-Tuning: None = 1.0 at every level,
            a float for every level, or one float per level. A sampling-time knob (see
            :meth:`skip_scaling`); it is not stored in checkpoints.
        scale_shift: inject the embedding by AdaGN scale-shift (ADM; True) or by addition
            (DDPM; False).
        residual_scale: multiply every residual sum by this (1.0 = DDPM/ADM; EDM/NCSN++
            use sqrt(0.5)).
        head_channels: channels per attention head.
        fourier_scale: standard deviation of the Fourier frequencies.

    The default (``channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
    attn_resolutions=(7,)``, 28x28) is sized for a CPU: 1.19 M parameters (1,191,233);
    measured with OMP_NUM_THREADS=1 on one core of a 2-core x86 machine, batch 64, fp32:
    ~60 images/s for a training step (forward + backward + Adam) and ~165 images/s for a
    forward pass without gradients (one sampler step); ~40 and ~125 while the machine was
    busy with other jobs.

    Skip connections: the encoder pushes a skip after its input convolution, after each
    residual block and after each downsampling; decoder level ``i`` (same resolution as
    encoder level ``i``) pops ``num_res_blocks + 1`` of them and multiplies each by
    ``skip_scales[i]`` before concatenating it (level 0 = full resolution).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attn_resolutions: Sequence[int] = (7,),
        image_size: int | Sequence[int] = 28,
        dropout: float = 0.0,
        num_classes: int = 0,
        time_embedding: str = "sinusoidal",
        skip_scale: float | Sequence[float] | None = None,
        scale_shift: bool = True,
        residual_scale: float = 1.0,
        head_channels: int = 32,
        fourier_scale: float = 16.0,
    ):
        super().__init__()
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"unknown time_embedding {time_embedding!r}; valid: {', '.join(TIME_EMBEDDINGS)}")
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive ints, got {channel_mult}")
        if int(channels) < 1 or int(num_res_blocks) < 1:
            raise ValueError(f"channels and num_res_blocks must be >= 1, got {channels}, {num_res_blocks}")
        H, W = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels or in_channels)
        self.num_levels = len(channel_mult)
        self.num_classes = int(num_classes)
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        emb_dim = 4 * channels
        kw = dict(emb_dim=emb_dim, dropout=dropout, scale_shift=scale_shift, residual_scale=residual_scale)

        self.embed = ConditionEmbedding(channels, emb_dim, time_embedding, num_classes, fourier_scale)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        # encoder
        sizes = [(H, W)]
        for _ in range(self.num_levels - 1):
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))
        self.sizes = sizes
        unmatched = [r for r in self.attn_resolutions if r not in {h for h, _ in sizes}]
        if unmatched:
            from ..errors import ConfigError

            raise ConfigError(
                f"attn_resolutions {list(self.attn_resolutions)} names feature-map sizes {unmatched} that a {H}x{W} input "
                f"never has (its levels are {', '.join(str(h) for h, _ in sizes)}); set attn_resolutions to some of "
                f"those (e.g. model.attn_resolutions=[{sizes[min(1, len(sizes) - 1)][0]}]) or [] for none")
        self.down = nn.ModuleList()
        skip_ch = [channels]
        ch = channels
        for lvl, mult in enumerate(channel_mult):
            out = channels * mult
            for _ in range(num_res_blocks):
                blocks = [ResBlock(ch, out, **kw)]
                ch = out
                if sizes[lvl][0] in self.attn_resolutions:
                    blocks.append(AttnBlock(ch, head_channels, residual_scale))
                self.down.append(nn.ModuleList(blocks))
                skip_ch.append(ch)
            if lvl < self.num_levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_ch.append(ch)

        # middle
        self.mid = nn.ModuleList([ResBlock(ch, ch, **kw), AttnBlock(ch, head_channels, residual_scale), ResBlock(ch, ch, **kw)])

        # decoder: level by level from the lowest resolution; remember the level of each block
        self.up = nn.ModuleList()
        self._up_levels: list[int] = []
        for lvl in reversed(range(self.num_levels)):
            out = channels * channel_mult[lvl]
            for i in range(num_res_blocks + 1):
                blocks = [ResBlock(ch + skip_ch.pop(), out, **kw)]
                ch = out
                if sizes[lvl][0] in self.attn_resolutions:
                    blocks.append(AttnBlock(ch, head_channels, residual_scale))
                if lvl > 0 and i == num_res_blocks:
                    blocks.append(Upsample(ch, sizes[lvl - 1]))
                self.up.append(nn.ModuleList(blocks))
                self._up_levels.append(lvl)
        assert not skip_ch

        self.norm_out = _norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1))
        self.skip_scales = self._check_skip_scales(skip_scale)

    # -- Skip-Tuning --------------------------------------------------------------------
    def _check_skip_scales(self, s) -> list[float]:
        if s is None:
            return [1.0] * self.num_levels
        if isinstance(s, (int, float)):
            return [float(s)] * self.num_levels
        s = [float(v) for v in s]
        if len(s) != self.num_levels:
            raise ValueError(f"skip_scales needs one value per level ({self.num_levels}), got {len(s)}")
        return s

    def set_skip_scales(self, scales: float | Sequence[float] | None) -> None:
        """Set :attr:`skip_scales` (None = 1.0 everywhere, a float, or one float per level, level 0 = full resolution)."""
        self.skip_scales = self._check_skip_scales(scales)

    @contextlib.contextmanager
    def skip_scaling(self, scales: float | Sequence[float] | None):
        """Context manager: use ``scales`` as :attr:`skip_scales` inside the block, restore afterwards."""
        old = list(self.skip_scales)
        self.set_skip_scales(scales)
        try:
            yield self
        finally:
            self.skip_scales = old

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), noise_label (B,) or scalar, cond (B,) int64 or None -> (B, out_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.sizes[0]:
            H, W = self.sizes[0]
            raise ValueError(f"UNet built for (B, {self.in_channels}, {H}, {W}) got {tuple(x.shape)}")
        emb = self.embed(noise_label, x.shape[0], cond, x.device).to(x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for blocks in self.down:
            for b in blocks:
                h = b(h, emb)
            skips.append(h)
        for b in self.mid:
            h = b(h, emb)
        for lvl, blocks in zip(self._up_levels, self.up):
            s = skips.pop()
            scale = self.skip_scales[lvl]
            if scale != 1.0:
                s = s * scale
            h = torch.cat([h, s], dim=1)
            for b in blocks:
                h = b(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
