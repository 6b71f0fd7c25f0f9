"""Output distributions p(x | params) for decoders and autoregressive models.

Each likelihood turns a network's raw output into a distribution over one example:

* ``params`` has shape (B, P, *event): P raw parameters per data dimension, stacked on
  dim 1 (``likelihood.num_params`` gives P). A conv net emitting (B, P*C, H, W)
  reshapes to (B, P, C, H, W) (parameter-major channels: channel ``p*C + c``).
* ``log_prob(params, x) -> (B,)`` in nats, summed over all data dimensions.
* ``mean(params) -> (B, *event)`` and ``sample(params, generator) -> (B, *event)``.

Likelihoods (``make_likelihood(name)``):

``bernoulli``  (P = 1, logits). Data in {0, 1}. A probability mass:
    log p(x) = x * l - softplus(l)  per dimension, i.e. ``-BCE_with_logits``.
``gaussian``   (P = 2, mean and log-scale). Continuous (dequantised) data. A density:
    log p(x) = -0.5 ((x - m) / s)^2 - log s - 0.5 log(2 pi),  log s clamped to
    [min_log_scale, max_log_scale] = [-7, 2] by default (s >= 9e-4, below the std of
    uniform dequantisation noise on the 256-level [-1, 1] grid, 0.0023).
``logistic``   discretised logistic (mixture), Salimans, Karpathy, Chen & Kingma 2017,
    "PixelCNN++", eq. (2). Data on the grid x = 2k/(L-1) - 1, k = 0..L-1 (L = 256
    levels), bin half-width h = 1/(L-1):
        P(x) = sigma((x + h - m)/s) - sigma((x - h - m)/s)     interior levels,
        P(-1) = sigma((-1 + h - m)/s)                           (whole left tail),
        P(+1) = 1 - sigma((1 - h - m)/s)                        (whole right tail),
    with log s clamped below at -7 as in the PixelCNN++ code. With ``nr_mix = K > 1``
    P(x) = sum_k pi_k P_k(x), pi = softmax(logits), P = 3K: (logits, means,
    log-scales); with K = 1, P = 2: (mean, log-scale). A probability mass.
    The interior difference of sigmoids is evaluated in log space
    (log sigma(a) + log(1 - exp(log sigma(b) - log sigma(a))), mirrored for the right
    tail), so it stays exact far in the tails where PixelCNN++'s code falls back to a
    density approximation. Unlike PixelCNN++ the mixture here is per data dimension:
    the channel coupling of their RGB model (shared mixture indicator per pixel and
    linear dependence of G on R and of B on R, G) is not included.

Randomness: ``sample`` draws only from the ``generator`` passed (torch's global RNG
when None). A generator on another device than the parameters is fine: draws are made
on the generator's device and moved (see :func:`randn` / :func:`rand`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, did_you_mean

_LOG_2PI = math.log(2.0 * math.pi)


# -- random draws that honour an explicit generator on any device ----------------------
def _draw(fn, shape, generator, device, dtype):
    if generator is None:
        return fn(*shape, device=device, dtype=dtype)
    out = fn(*shape, generator=generator, device=generator.device, dtype=dtype)
    return out.to(device)


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator`` (global RNG if None).

    The draw is made on the generator's device (a CPU generator works for a CUDA or MPS
    model) and moved to ``device``; the same generator state gives the same numbers.
    """
    return _draw(torch.randn, tuple(shape), generator, device, dtype)


def rand(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape``; see :func:`randn` for the device handling."""
    return _draw(torch.rand, tuple(shape), generator, device, dtype)


# -- elementwise log-probabilities (no reduction; reusable by autoregressive models) ---
def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) elementwise, nats. x in {0, 1}; same shape as logits."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def gaussian_log_prob(mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_scale)^2) elementwise, nats (a density)."""
    z = (x - mean) * torch.exp(-log_scale)
    return -0.5 * z * z - log_scale - 0.5 * _LOG_2PI


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, stably (Maechler 2012).

    Each branch is evaluated on inputs masked to its own region (the "double where"):
    the branch torch.where discards must not see a = 0, where its log is -inf with an
    infinite derivative, because 0 * inf = NaN would poison the gradient.
    """
    near0 = a > -math.log(2.0)
    a_near = torch.where(near0, a, torch.full_like(a, -1.0))
    a_far = torch.where(near0, torch.full_like(a, -1.0), a)
    return torch.where(near0, torch.log(-torch.expm1(a_near)), torch.log1p(-torch.exp(a_far)))


def _log_sigmoid_diff(hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(hi) - sigmoid(lo)) for hi > lo, accurate in both tails.

    log s(hi) + log(1 - s(lo)/s(hi)) is accurate when both arguments are mostly negative
    (hi + lo < 0); otherwise the identity s(hi) - s(lo) = s(-lo) - s(-hi) maps the pair
    into that region. The pair is swapped *before* the one formula is evaluated, so no
    discarded branch is computed: far in the right tail (e.g. hi, lo > 100) log s(hi)
    and log s(lo) both round to 0 and the unused branch would give log(0) with an
    infinite derivative, i.e. NaN gradients through torch.where.
    """
    left = hi + lo < 0
    h = torch.where(left, hi, -lo)
    l = torch.where(left, lo, -hi)
    ls_h = F.logsigmoid(h)
    return ls_h + _log1mexp(F.logsigmoid(l) - ls_h)


def discretized_logistic_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, levels: int = 256
) -> torch.Tensor:
    """log P(x) of one discretised logistic (PixelCNN++ eq. 2), elementwise, nats.

    Args:
        x: values on the grid 2k/(levels-1) - 1 in [-1, 1] (any shape broadcastable
            with ``mean``).
        mean, log_scale: logistic location and log-scale (log_scale is *not* clamped
            here; the likelihood class clamps it).
        levels: number of grid levels (256 for 8-bit data); bin half-width 1/(levels-1).
    Returns: log-probability mass of x's bin; the edge levels -1 and +1 take the tails.
    """
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    c = x - mean
    plus = inv_s * (c + half)
    minus = inv_s * (c - half)
    interior = _log_sigmoid_diff(plus, minus)
    left_edge = F.logsigmoid(plus)  # log sigma(plus): mass of (-inf, -1 + h]
    right_edge = F.logsigmoid(-minus)  # log(1 - sigma(minus)): mass of (1 - h, inf)
    return torch.where(x < -1.0 + half / 2, left_edge, torch.where(x > 1.0 - half / 2, right_edge, interior))


def quantize_to_grid(x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Clamp to [-1, 1] and round to the nearest of the ``levels`` grid values 2k/(levels-1) - 1."""
    k = torch.round((x.clamp(-1.0, 1.0) + 1.0) * ((levels - 1) / 2.0))
    return k * (2.0 / (levels - 1)) - 1.0


# -- likelihood classes ----------------------------------------------------------------
class Likelihood:
    """Base class. ``params`` (B, P, *event) -> distribution over (B, *event)."""

    name: str = ""
    #: number of raw parameters per data dimension (P)
    num_params: int = 1
    #: True: log_prob is a probability mass; False: a density
    discrete: bool = False

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | params) summed over the event dimensions: (B,) nats."""
        lp = self.log_prob_elementwise(params, x)
        return lp.reshape(lp.shape[0], -1).sum(-1)

    def log_prob_elementwise(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli per dimension; params[:, 0] are logits. Data in {0, 1}."""

    name = "bernoulli"
    num_params = 1
    discrete = True

    def log_prob_elementwise(self, params, x):
        return bernoulli_log_prob(params[:, 0], x)

    def mean(self, params):
        """Probabilities sigmoid(logits) in [0, 1]."""
        return torch.sigmoid(params[:, 0])

    def sample(self, params, generator=None):
        p = torch.sigmoid(params[:, 0])
        u = rand(p.shape, generator, device=p.device, dtype=p.dtype)
        return (u < p).to(p.dtype)


class GaussianLikelihood(Likelihood):
    """Independent Gaussian per dimension; params[:, 0] mean, params[:, 1] log-scale (clamped).

    A density over continuous data; ``mean`` is clamped to ``data_range`` (the model's
    data lives there), ``sample`` is an unclamped draw.
    """

    name = "gaussian"
    num_params = 2
    discrete = False

    def __init__(self, min_log_scale: float = -7.0, max_log_scale: float = 2.0, data_range=(-1.0, 1.0)):
        if not min_log_scale < max_log_scale:
            raise ConfigError(f"gaussian likelihood needs min_log_scale < max_log_scale, got {min_log_scale}, {max_log_scale}")
        self.min_log_scale = float(min_log_scale)
        self.max_log_scale = float(max_log_scale)
        self.data_range = tuple(data_range)

    def split(self, params):
        """(mean, clamped log-scale), each (B, *event)."""
        return params[:, 0], params[:, 1].clamp(self.min_log_scale, self.max_log_scale)

    def log_prob_elementwise(self, params, x):
        m, ls = self.split(params)
        return gaussian_log_prob(m, ls, x)

    def mean(self, params):
        return params[:, 0].clamp(*self.data_range)

    def sample(self, params, generator=None):
        m, ls = self.split(params)
        return m + torch.exp(ls) * randn(m.shape, generator, device=m.device, dtype=m.dtype)

    def __repr__(self):
        return f"GaussianLikelihood(log_scale in [{self.min_log_scale:g}, {self.max_log_scale:g}])"


class DiscretizedLogisticLikelihood(Likelihood):
    """Discretised logistic mixture (PixelCNN++) per dimension on the [-1, 1] grid.

    params: K = 1 -> (mean, log_scale); K > 1 -> (logits[K], means[K], log_scales[K]).
    """

    name = "logistic"
    discrete = True

    def __init__(self, nr_mix: int = 1, levels: int = 256, min_log_scale: float = -7.0):
        if int(nr_mix) < 1:
            raise ConfigError(f"logistic likelihood needs nr_mix >= 1, got {nr_mix}")
        if int(levels) < 2:
            raise ConfigError(f"logistic likelihood needs levels >= 2, got {levels}")
        self.nr_mix = int(nr_mix)
        self.levels = int(levels)
        self.min_log_scale = float(min_log_scale)
        self.num_params = 2 if self.nr_mix == 1 else 3 * self.nr_mix

    def split(self, params):
        """(log mixture weights, means, clamped log-scales), each (B, K, *event)."""
        K = self.nr_mix
        if K == 1:
            means, log_scales = params[:, 0:1], params[:, 1:2]
            log_pi = torch.zeros_like(means)
        else:
            logits, means, log_scales = params[:, :K], params[:, K:2 * K], params[:, 2 * K:3 * K]
            log_pi = torch.log_softmax(logits, dim=1)
        return log_pi, means, log_scales.clamp(min=self.min_log_scale)

    def log_prob_elementwise(self, params, x):
        log_pi, m, ls = self.split(params)
        lp = discretized_logistic_log_prob(x.unsqueeze(1), m, ls, self.levels)
        return torch.logsumexp(log_pi + lp, dim=1)

    def mean(self, params):
        """Mixture mean of the logistic locations sum_k pi_k m_k, clamped to [-1, 1].

        (The mean of the discretised, tail-folded distribution differs slightly near the
        edges; this is the usual "decoder mean" image.)
        """
        log_pi, m, _ = self.split(params)
        return (log_pi.exp() * m).sum(1).clamp(-1.0, 1.0)

    def sample(self, params, generator=None):
        """A draw on the grid: pick a component, draw a logistic, clamp to [-1, 1], round."""
        log_pi, m, ls = self.split(params)
        if self.nr_mix > 1:
            u = rand(log_pi.shape, generator, device=m.device, dtype=m.dtype)
            gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
            onehot = F.one_hot((log_pi + gumbel).argmax(1), self.nr_mix).movedim(-1, 1).to(m.dtype)
            m = (m * onehot).sum(1)
            ls = (ls * onehot).sum(1)
        else:
            m, ls = m[:, 0], ls[:, 0]
        u = rand(m.shape, generator, device=m.device, dtype=m.dtype).clamp(1e-5, 1.0 - 1e-5)
        x = m + torch.exp(ls) * (torch.log(u) - torch.log1p(-u))
        return quantize_to_grid(x, self.levels)

    def __repr__(self):
        return f"DiscretizedLogisticLikelihood(nr_mix={self.nr_mix}, levels={self.levels})"


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "logistic": DiscretizedLogisticLikelihood,
}


def make_likelihood(name: str, **kwargs) -> Likelihood:
    """Build a likelihood by name ("bernoulli", "gaussian", "logistic"); kwargs go to its constructor."""
    if name not in LIKELIHOODS:
        raise ConfigError(
            f"unknown likelihood/decoder {name!r}{did_you_mean(name, LIKELIHOODS)}; valid: {', '.join(LIKELIHOODS)}"
        )
    return LIKELIHOODS[name](**kwargs)
