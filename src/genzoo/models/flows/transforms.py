"""The flow layers: couplings and their masks, normalisations, invertible mixing, reshaping.

Every class is a :class:`~.base.Transform`: ``forward(x, cond=None) -> (z, logabsdet)``
goes data -> noise, ``inverse(z, cond=None) -> x`` back; logabsdet is (B,) nats.
Shapes are (B, D) for vectors and (B, C, H, W) for images.

Couplings (Dinh et al. 2014; Dinh et al. 2017)
----------------------------------------------
Split x into a conditioning part x_a (kept) and a transformed part x_b::

    additive (NICE):  y_a = x_a,  y_b = x_b + t(x_a)                       log|det| = 0
    affine (RealNVP): y_a = x_a,  y_b = x_b * exp(log s(x_a)) + t(x_a)     log|det| = sum log s

The split is given by a boolean ``mask`` (True = x_a, the kept part):

* a 1-D mask over dim 1 (features of a vector, channels of an image) selects indices:
  NICE's alternating odd/even partitions, RealNVP's and Glow's channel-wise masks
  (the network only sees x_a);
* a spatial mask of shape (1, H, W) or (C, H, W) is applied multiplicatively, RealNVP
  masked form: y = b * x + (1 - b) * (x * exp(log s(b * x)) + t(b * x)): the checkerboard.

log s comes from the network's raw output h by ``scale``:
"exp" (log s = h), "tanh" (log s = c * tanh(h) with a learned per-channel c: the RealNVP
code), "sigmoid" (s = sigmoid(h + 2): the Glow code, and nflows' AffineCouplingTransform
without its +1e-3). The network outputs (shift, h) stacked along dim 1, shift first.

Other layers
------------
* :class:`ActNorm` (Glow, sec. 3.1): y = (x + b) * exp(log s) per channel, initialised
  from the first batch so that y has zero mean and unit variance per channel.
* :class:`BatchNorm` (RealNVP): batch statistics in training (the log-det uses
  them as constants), running averages in evaluation; invertible in evaluation mode.
* :class:`InvertibleConv1x1` (Glow, sec. 3.2): y = W x per pixel, log|det| = H W log|det W|;
  LU-decomposed W = P L (U + diag(sign(s) exp(log s))), log|det| = H W sum log s.
* :class:`Squeeze` (RealNVP): (C, H, W) -> (4C, H/2, W/2), 2x2 blocks to channels.
* :class:`MultiScale` (RealNVP): after each stage half of the channels are
  factored out (optionally through a learned prior, Glow's split, :class:`SplitPrior`).
* :class:`DiagonalScaling` (NICE), :class:`Logit` (RealNVP's preprocessing),
  :class:`Flatten`, :class:`ConditionalAffine` (an element-wise affine map whose
  parameters depend on ``cond`` only).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...nn.blocks import ZeroConv2d
from .interface import Transform, sum_except_batch

COUPLING_KINDS = ("affine", "additive")
SCALES = ("exp", "tanh", "sigmoid")


# ----------------------------------------------------------------------------- masks
def checkerboard_mask(height: int, width: int, parity: int = 0) -> torch.Tensor:
    """(1, H, W) bool, True where (i + j + parity) is even (RealNVP's checkerboard)."""
    i = torch.arange(height)[:, None]
    j = torch.arange(width)[None, :]
    return ((i + j + parity) % 2 == 0)[None]


def channel_mask(channels: int, parity: int = 0) -> torch.Tensor:
    """(C,) bool: True for the first half of the channels (parity 0) or the second (parity 1) (RealNVP's channel-wise mask)."""
    first = torch.arange(channels) < channels // 2
    return first if parity % 2 == 0 else ~first


def alternating_mask(features: int, parity: int = 0) -> torch.Tensor:
    """(D,) bool: True at even indices (parity 0) or odd ones (parity 1): NICE's partitions."""
    return torch.arange(features) % 2 == parity % 2


# ----------------------------------------------------------------------------- element-wise maps
def log_scale_from(raw: torch.Tensor, scale: str, factor: torch.Tensor | None = None) -> torch.Tensor:
    """log s from a network's raw output, for ``scale`` in "exp", "tanh" (needs ``factor``), "sigmoid"."""
    if scale == "exp":
        return raw
    if scale == "tanh":
        return factor * torch.tanh(raw)
    if scale == "sigmoid":
        return F.logsigmoid(raw + 2.0)
    raise ConfigError(f"unknown coupling scale {scale!r}; valid: {', '.join(SCALES)}")


def affine_forward(x: torch.Tensor, shift: torch.Tensor, log_s: torch.Tensor | None) -> torch.Tensor:
    """y = x * exp(log s) + shift (additive when log_s is None). Element-wise; reusable by
    autoregressive transforms."""
    return x + shift if log_s is None else x * torch.exp(log_s) + shift


def affine_inverse(y: torch.Tensor, shift: torch.Tensor, log_s: torch.Tensor | None) -> torch.Tensor:
    """x = (y - shift) * exp(-log s), the inverse of :func:`affine_forward`."""
    return y - shift if log_s is None else (y - shift) * torch.exp(-log_s)


def _per_channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a (C,) parameter to broadcast over (B, C, ...) ."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def _spatial(x: torch.Tensor) -> int:
    return math.prod(x.shape[2:]) if x.dim() > 2 else 1


# ----------------------------------------------------------------------------- couplings
class Coupling(Transform):
    """Additive or affine coupling layer (see the module docstring).

    Args:
        mask: bool, True = the kept part x_a. 1-D of size C (index split along dim 1) or
            (1|C, H, W) (multiplicative, e.g. :func:`checkerboard_mask`).
        net: ``net(x_a, cond) -> params``. Index split: (B, m * |x_b|, ...); multiplicative:
            (B, m * C, H, W); m = 2 (shift, raw scale) for "affine", 1 (shift) for "additive".
        kind: "affine" | "additive".
        scale: "exp" | "tanh" | "sigmoid" (affine only).
        channels: C, needed by a multiplicative mask with scale="tanh" (one factor per channel).
    """

    def __init__(self, mask: torch.Tensor, net: nn.Module, kind: str = "affine", scale: str = "tanh",
                 channels: int | None = None):
        super().__init__()
        if kind not in COUPLING_KINDS:
            raise ConfigError(f"unknown coupling kind {kind!r}; valid: {', '.join(COUPLING_KINDS)}")
        if scale not in SCALES:
            raise ConfigError(f"unknown coupling scale {scale!r}; valid: {', '.join(SCALES)}")
        mask = torch.as_tensor(mask, dtype=torch.bool)
        self.kind, self.scale = kind, scale
        self.net = net
        self.index_split = mask.dim() == 1
        if self.index_split:
            idx = torch.arange(mask.numel())
            idx_a, idx_b = idx[mask], idx[~mask]
            if len(idx_a) == 0 or len(idx_b) == 0:
                raise ConfigError(f"a coupling mask must keep some and transform some features, got {mask.tolist()}")
            self.register_buffer("idx_a", idx_a, persistent=False)
            self.register_buffer("idx_b", idx_b, persistent=False)
            self.register_buffer("inv_perm", torch.argsort(torch.cat([idx_a, idx_b])), persistent=False)
            n_factor = len(idx_b)
        else:
            if mask.dim() != 3:
                raise ConfigError(f"a coupling mask is 1-D (features/channels) or (1|C, H, W), got shape {tuple(mask.shape)}")
            self.register_buffer("mask", mask.to(torch.get_default_dtype()), persistent=False)
            n_factor = channels
        if kind == "affine" and scale == "tanh":
            if n_factor is None:
                raise ConfigError("an affine coupling with a spatial mask and scale='tanh' needs channels=C")
            self.scale_factor = nn.Parameter(torch.ones(int(n_factor)))
        else:
            self.scale_factor = None

    def _params(self, x_a: torch.Tensor, cond):
        h = self.net(x_a, cond)
        if self.kind == "additive":
            return h, None
        shift, raw = h.chunk(2, dim=1)
        factor = _per_channel(self.scale_factor, raw) if self.scale_factor is not None else None
        return shift, log_scale_from(raw, self.scale, factor)

    def forward(self, x, cond=None):
        if self.index_split:
            x_a, x_b = x[:, self.idx_a], x[:, self.idx_b]
            shift, log_s = self._params(x_a, cond)
            y_b = affine_forward(x_b, shift, log_s)
            y = torch.cat([x_a, y_b], 1)[:, self.inv_perm]
            ld = sum_except_batch(log_s) if log_s is not None else x.new_zeros(x.shape[0])
            return y, ld
        b = self.mask
        x_a = x * b
        shift, log_s = self._params(x_a, cond)
        if log_s is None:
            return x_a + (1 - b) * (x + shift), x.new_zeros(x.shape[0])
        log_s = (1 - b) * log_s
        return x_a + (1 - b) * affine_forward(x, shift, log_s), sum_except_batch(log_s)

    def inverse(self, z, cond=None):
        if self.index_split:
            z_a, z_b = z[:, self.idx_a], z[:, self.idx_b]
            shift, log_s = self._params(z_a, cond)
            return torch.cat([z_a, affine_inverse(z_b, shift, log_s)], 1)[:, self.inv_perm]
        b = self.mask
        z_a = z * b
        shift, log_s = self._params(z_a, cond)
        if log_s is not None:
            log_s = (1 - b) * log_s
        return z_a + (1 - b) * affine_inverse(z, shift, log_s)


class ConditionalAffine(Transform):
    """y = x * exp(log s(cond)) + t(cond), element-wise, parameters from the context only.

    ``net(cond) -> (B, 2 * C, ...)`` (shift, raw); log s = c * tanh(raw) with a learned
    per-channel c (initialised to 1). Needs ``cond``.
    """

    def __init__(self, net: nn.Module, channels: int):
        super().__init__()
        self.net = net
        self.scale_factor = nn.Parameter(torch.ones(int(channels)))

    def _params(self, cond):
        if cond is None:
            raise ConfigError("ConditionalAffine needs a context tensor cond")
        shift, raw = self.net(cond).chunk(2, dim=1)
        return shift, _per_channel(self.scale_factor, raw) * torch.tanh(raw)

    def forward(self, x, cond=None):
        shift, log_s = self._params(cond)
        return affine_forward(x, shift, log_s), sum_except_batch(log_s.expand_as(x))

    def inverse(self, z, cond=None):
        shift, log_s = self._params(cond)
        return affine_inverse(z, shift, log_s)


# ----------------------------------------------------------------------------- normalisation
class ActNorm(Transform):
    """Glow's activation normalisation: y = (x + b) * exp(log s) per channel (dim 1).

    Data-dependent initialisation: the first call of ``forward`` sets b = -mean and
    log s = -log(std + eps) of that batch per channel (over the batch and spatial dims;
    averaged over processes under torch.distributed), so its output has zero mean and
    unit variance per channel. ``initialized`` is a buffer, saved with the weights.
    """

    def __init__(self, num_features: int, eps: float = 1e-6):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(int(num_features)))
        self.log_scale = nn.Parameter(torch.zeros(int(num_features)))
        self.eps = float(eps)
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        sq = (x * x).mean(dim=dims)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stats = torch.stack([mean, sq])
            torch.distributed.all_reduce(stats)
            stats /= torch.distributed.get_world_size()
            mean, sq = stats[0], stats[1]
        std = (sq - mean * mean).clamp_min(0).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(1)

    def forward(self, x, cond=None):
        if not bool(self.initialized):
            self.initialize(x.detach())
        y = (x + _per_channel(self.bias, x)) * torch.exp(_per_channel(self.log_scale, x))
        ld = self.log_scale.sum() * _spatial(x)
        return y, ld.expand(x.shape[0])

    def inverse(self, z, cond=None):
        return z * torch.exp(-_per_channel(self.log_scale, z)) - _per_channel(self.bias, z)


class BatchNorm(Transform):
    """RealNVP's batch normalisation as a flow layer (Dinh et al. 2017):

        y = (x - mu) / sqrt(var + eps) * exp(log gamma) + beta,
        log|det| = sum_c (log gamma_c - 1/2 log(var_c + eps)) * (H W).

    Training uses the batch's statistics (treated as constants in the log-det, as in the
    paper) and updates running averages; evaluation and ``inverse`` use the running
    averages, so the layer is an exact bijection in eval mode.
    """

    def __init__(self, num_features: int, momentum: float = 0.05, eps: float = 1e-4):
        super().__init__()
        c = int(num_features)
        self.log_gamma = nn.Parameter(torch.zeros(c))
        self.beta = nn.Parameter(torch.zeros(c))
        self.momentum, self.eps = float(momentum), float(eps)
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x, cond=None):
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = torch.rsqrt(var + self.eps)
        y = (x - _per_channel(mean, x)) * _per_channel(inv_std * torch.exp(self.log_gamma), x) + _per_channel(self.beta, x)
        ld = (self.log_gamma + torch.log(inv_std)).sum() * _spatial(x)
        return y, ld.expand(x.shape[0])

    def inverse(self, z, cond=None):
        std = torch.sqrt(self.running_var + self.eps)
        x = (z - _per_channel(self.beta, z)) * _per_channel(std * torch.exp(-self.log_gamma), z)
        return x + _per_channel(self.running_mean, z)


# ----------------------------------------------------------------------------- mixing
class InvertibleConv1x1(Transform):
    """Glow's invertible 1x1 convolution over dim 1 (channels of an image, features of a vector).

    W is initialised to a random rotation. ``lu=True`` parameterises
    W = P L (U + diag(sign(s) * exp(log s))) with P a fixed permutation, L unit lower
    triangular, U strictly upper triangular (Kingma & Dhariwal 2018, sec. 3.2), making
    log|det W| = sum(log s) cost O(C).
    """

    def __init__(self, num_channels: int, lu: bool = False):
        super().__init__()
        c = int(num_channels)
        w = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))[0]
        self.lu = bool(lu)
        if self.lu:
            P, L, U = torch.linalg.lu(w)
            s = torch.diagonal(U)
            dt = torch.get_default_dtype()
            self.register_buffer("P", P.to(dt))
            self.register_buffer("sign_s", torch.sign(s).to(dt))
            self.register_buffer("lower_mask", torch.tril(torch.ones(c, c, dtype=dt), -1), persistent=False)
            self.register_buffer("eye", torch.eye(c, dtype=dt), persistent=False)
            self.lower = nn.Parameter(L.to(dt))
            self.upper = nn.Parameter(torch.triu(U, 1).to(dt))
            self.log_s = nn.Parameter(torch.log(s.abs()).to(dt))
        else:
            self.weight = nn.Parameter(w.to(torch.get_default_dtype()))

    def matrix(self) -> torch.Tensor:
        """W (C, C)."""
        if not self.lu:
            return self.weight
        L = self.lower * self.lower_mask + self.eye
        U = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.P @ L @ U

    def _logabsdet(self) -> torch.Tensor:
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(self.weight)[1]

    @staticmethod
    def _mix(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x @ w.T
        return F.conv2d(x, w.reshape(*w.shape, 1, 1))

    def forward(self, x, cond=None):
        ld = self._logabsdet() * _spatial(x)
        return self._mix(x, self.matrix()), ld.expand(x.shape[0])

    def inverse(self, z, cond=None):
        return self._mix(z, torch.linalg.inv(self.matrix()))


# ----------------------------------------------------------------------------- reshaping & simple maps
class Squeeze(Transform):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block becomes 4 channels, channel c*4 + 2*di + dj
    (the ordering of Glow's ``squeeze2d``). Volume preserving: log|det| = 0."""

    def forward(self, x, cond=None):
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, z, cond=None):
        b, c, h, w = z.shape
        return z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)

    def output_shape(self, shape):
        c, h, w = shape
        if h % 2 or w % 2:
            raise ConfigError(f"cannot squeeze an image of size {h}x{w}: height and width must be even; use fewer scales")
        return (c * 4, h // 2, w // 2)


class Flatten(Transform):
    """(B, *shape) -> (B, D), volume preserving."""

    def __init__(self, shape: tuple):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x, cond=None):
        return x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0])

    def inverse(self, z, cond=None):
        return z.reshape(z.shape[0], *self.shape)

    def output_shape(self, shape):
        return (math.prod(shape),)


class DiagonalScaling(Transform):
    """NICE's last layer (Dinh et al. 2014, "allowing rescaling"): y = exp(s) * x, log|det| = sum s.

    ``s`` has the per-example shape; the paper's S_ii = exp(s_i)."""

    def __init__(self, shape):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(tuple(int(v) for v in shape)))

    def forward(self, x, cond=None):
        return x * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z, cond=None):
        return z * torch.exp(-self.log_scale)


class Logit(Transform):
    """RealNVP's preprocessing: p = alpha + (1 - 2 alpha) (x - lo) / (hi - lo), y = logit(p).

    Maps data in [lo, hi] to the real line with an exact log-det:
    log|dy/dx| = -log p - log(1 - p) + log(1 - 2 alpha) - log(hi - lo). The symmetric form
    of MAF (Papamakarios et al. 2017); RealNVP's paper writes alpha + (1 - alpha) x.
    """

    def __init__(self, data_range=(-1.0, 1.0), alpha: float = 0.05):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ConfigError(f"logit alpha must be in [0, 0.5), got {alpha}")
        self.lo, self.hi = (float(v) for v in data_range)
        self.alpha = float(alpha)

    def forward(self, x, cond=None):
        a, w = self.alpha, self.hi - self.lo
        p = a + (1 - 2 * a) * (x - self.lo) / w
        y = torch.log(p) - torch.log1p(-p)
        ld = F.softplus(y) + F.softplus(-y) + math.log(1 - 2 * a) - math.log(w)  # -log p - log(1-p) = softplus(y) + softplus(-y)
        return y, sum_except_batch(ld)

    def inverse(self, z, cond=None):
        a, w = self.alpha, self.hi - self.lo
        return self.lo + w * (torch.sigmoid(z) - a) / (1 - 2 * a)


# ----------------------------------------------------------------------------- multi-scale
class SplitPrior(Transform):
    """Glow's learned prior of a factored-out half, p(z_2 | z_1) = N(mu(z_1), exp(log sigma(z_1))^2),
    written as a transform to a standard normal: forward z_2 -> (z_2 - mu) exp(-log sigma),
    log|det| = -sum log sigma; ``cond`` is the kept half z_1. mu and log sigma come from a
    zero-initialised conv3x3 (Glow's ``split2d_prior``), so it starts as N(0, I)."""

    def __init__(self, kept_channels: int, factored_channels: int):
        super().__init__()
        self.net = ZeroConv2d(int(kept_channels), 2 * int(factored_channels), 3)

    def _params(self, cond):
        if cond is None:
            raise ConfigError("SplitPrior needs the kept half as cond")
        mean, log_sigma = self.net(cond).chunk(2, dim=1)
        return mean, log_sigma

    def forward(self, x, cond=None):
        mean, log_sigma = self._params(cond)
        return (x - mean) * torch.exp(-log_sigma), -sum_except_batch(log_sigma)

    def inverse(self, z, cond=None):
        mean, log_sigma = self._params(cond)
        return mean + torch.exp(log_sigma) * z


class MultiScale(Transform):
    """Multi-scale architecture (RealNVP; Glow, Fig. 2b) on (B, C, H, W).

    ``stages[i]`` is applied, then (except after the last stage) its output's channels
    are split: the first half continues to the next stage, the second half is factored
    out, through ``priors[i]`` (a :class:`SplitPrior`) when given. The output is the
    flat concatenation (B, D) of the factored-out parts, finest scale first, then the
    last stage's output.
    """

    def __init__(self, shape: tuple, stages: list[Transform], priors: list[Transform | None] | None = None):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        n = len(stages)
        priors = list(priors) if priors is not None else [None] * (n - 1)
        if len(priors) != n - 1:
            raise ValueError(f"{n} stages need {n - 1} split priors, got {len(priors)}")
        self.priors = nn.ModuleList([p if p is not None else nn.Identity() for p in priors])
        self._has_prior = [p is not None for p in priors]
        self.in_shape = tuple(shape)
        self.factored_shapes, s = [], tuple(shape)
        for i, st in enumerate(stages):
            s = st.output_shape(s)
            if i < n - 1:
                c = s[0]
                if c < 2:
                    raise ConfigError(f"cannot factor out half of {c} channel(s) after stage {i + 1}; use fewer scales")
                self.factored_shapes.append((c - c // 2, *s[1:]))
                s = (c // 2, *s[1:])
        self.final_shape = s

    def forward(self, x, cond=None):
        parts, total, h = [], x.new_zeros(x.shape[0]), x
        for i, st in enumerate(self.stages):
            h, ld = st(h, cond)
            total = total + ld
            if i < len(self.stages) - 1:
                keep = h.shape[1] // 2
                h, out = h[:, :keep], h[:, keep:]
                if self._has_prior[i]:
                    out, ld = self.priors[i](out, cond=h)
                    total = total + ld
                parts.append(out.reshape(x.shape[0], -1))
        parts.append(h.reshape(x.shape[0], -1))
        return torch.cat(parts, 1), total

    def inverse(self, z, cond=None):
        b = z.shape[0]
        sizes = [math.prod(s) for s in self.factored_shapes] + [math.prod(self.final_shape)]
        chunks = list(torch.split(z, sizes, dim=1))
        h = chunks[-1].reshape(b, *self.final_shape)
        for i in reversed(range(len(self.stages))):
            if i < len(self.stages) - 1:
                out = chunks[i].reshape(b, *self.factored_shapes[i])
                if self._has_prior[i]:
                    out = self.priors[i].inverse(out, cond=h)
                h = torch.cat([h, out], 1)
            h = self.stages[i].inverse(h, cond)
        return h

    def output_shape(self, shape):
        return (math.prod(shape),)
