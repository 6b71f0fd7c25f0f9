"""What every autoregressive model shares: the chain rule, the per-pixel output distributions,
pixel-by-pixel sampling with temperature, and inpainting.

The chain rule
--------------
An autoregressive model picks an ordering o of the D data dimensions (pixels, or pixel
colour channels) and factorises::

    log p(x) = sum_{k=1..D} log p(x_{o_k} | x_{o_1}, ..., x_{o_{k-1}})         (nats)

Each model computes the parameters of *every* conditional in one pass over x (teacher
forcing; :meth:`AutoregressiveModel.conditionals`), so ``log_prob`` is exact and costs
one network evaluation. Sampling is sequential: D passes, one dimension at a time.

Output distributions (``output=``), one per data dimension
----------------------------------------------------------
* ``"bernoulli"``: binary pixels {0, 1} (binarised MNIST), one logit l:
  log p(x) = x l - softplus(l).
* ``"categorical"``: a softmax over ``levels`` grey levels (PixelRNN/PixelCNN's 256-way
  softmax). Data on the grid x = lo + (hi - lo) k / (levels - 1), k = 0..levels-1, with
  (lo, hi) = ``value_range`` (genzoo's un-dequantised grey images, default [-1, 1]);
  ``levels`` logits; log p(x) = log softmax(logits)_k.
* ``"logistic"``: the discretised logistic mixture of PixelCNN++ (Salimans et al. 2017,
  eq. 2; :class:`genzoo.nn.likelihoods.DiscretizedLogisticLikelihood`) with ``nr_mix``
  components per dimension, on the 256-level grid of [-1, 1].
All three are probability masses (``discrete_likelihood = True``): bits/dim adds nothing.

Sampling options (every model)
------------------------------
* ``temperature`` (default 1.0): logits are divided by T (bernoulli, categorical; for
  the logistic mixture the mixture logits are divided by T and the logistic scales
  multiplied by T). T = 0 is greedy: the most probable value of each conditional
  (the mode of the chosen component's logistic for "logistic").
* ``observed`` and ``mask`` (inpainting; the same names as the image transformer's):
  ``observed`` (n, *shape) or (*shape) holds known values, ``mask`` (same shape, bool,
  True = observed) says which; ``mask`` may also name a region of an image:
  "top_half", "bottom_half", "left_half", "right_half".
  Known dimensions are copied into the sample and every other dimension is drawn from
  its conditional given everything before it in the model's ordering, known or drawn.
  When the known dimensions come first in the ordering (the top half of an image for a
  raster ordering) this is exact sampling from p(missing | known). Otherwise known
  values *after* a missing dimension are not taken into account when it is drawn (a
  standard approximation); an order-agnostic NADE avoids that by putting the known
  dimensions first.
Randomness comes only from ``generator`` (torch's global RNG when None): the same
generator state gives the same samples.
"""
from __future__ import annotations

import math

import torch

from ...errors import ConfigError, DataError
from ...nn.likelihoods import DiscretizedLogisticLikelihood, bernoulli_log_prob, quantize_to_grid, rand
from ..base import GenerativeModel
from ..data_needs import IMAGE_OR_VECTOR, DataNeeds, Opt

OUTPUTS = ("bernoulli", "categorical", "logistic")
REGIONS = ("top_half", "bottom_half", "left_half", "right_half")


def _gumbel(shape, generator, device, dtype) -> torch.Tensor:
    u = rand(shape, generator, device=device, dtype=dtype).clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


# ----------------------------------------------------------------------------- output distributions


class BernoulliOutput:
    """Binary data {0, 1}; params (B, 1, ...) are logits."""

    name = "bernoulli"
    num_params = 1

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Elementwise log p(x): params (B, 1, *event), x (B, *event) -> (B, *event) nats."""
        return bernoulli_log_prob(params[:, 0], x)

    def sample(self, params: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        """One draw per row: params (N, 1) -> (N,) in {0, 1}."""
        logits = params[:, 0]
        if temperature == 0:
            return (logits > 0).to(logits.dtype)
        u = rand(logits.shape, generator, device=logits.device, dtype=logits.dtype)
        return (u < torch.sigmoid(logits / temperature)).to(logits.dtype)

    def check_values(self, x: torch.Tensor, who: str) -> None:
        if not ((x == 0) | (x == 1)).all():
            raise DataError(
                f"{who} with output='bernoulli' needs binary {{0, 1}} pixels but got values in "
                f"[{float(x.min()):g}, {float(x.max()):g}]; binarise the data (data.binarize=static or dynamic) "
                "or use output='categorical' / 'logistic' for grey levels"
            )


class CategoricalOutput:
    """A softmax over ``levels`` grey levels on the grid lo + (hi - lo) k / (levels - 1)."""

    name = "categorical"

    def __init__(self, levels: int = 256, value_range=(-1.0, 1.0)):
        self.levels = int(levels)
        self.lo, self.hi = (float(v) for v in value_range)
        self.num_params = self.levels

    @property
    def value_range(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def index(self, x: torch.Tensor) -> torch.Tensor:
        """Grid values -> level indices k (int64)."""
        return torch.round((x - self.lo) * ((self.levels - 1) / (self.hi - self.lo))).long().clamp(0, self.levels - 1)

    def value(self, k: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Level indices -> grid values."""
        return self.lo + (self.hi - self.lo) * k.to(dtype) / (self.levels - 1)

    def log_prob(self, params, x):
        return torch.log_softmax(params, dim=1).gather(1, self.index(x).unsqueeze(1)).squeeze(1)

    def sample(self, params, temperature, generator):
        if temperature == 0:
            return self.value(params.argmax(1), params.dtype)
        g = _gumbel(params.shape, generator, params.device, params.dtype)
        return self.value((params / temperature + g).argmax(1), params.dtype)

    def check_values(self, x, who):
        k = (x - self.lo) * ((self.levels - 1) / (self.hi - self.lo))
        if not (((k - k.round()).abs() < 1e-3) & (k > -0.5) & (k < self.levels - 0.5)).all():
            raise DataError(
                f"{who} with output='categorical' needs values on the {self.levels}-level grid of "
                f"[{self.lo:g}, {self.hi:g}] but got values in [{float(x.min()):g}, {float(x.max()):g}] off that grid; "
                "use data.dequantize=none and set model.levels / model.value_range to the data's"
            )


class LogisticOutput:
    """The discretised logistic mixture of PixelCNN++ on the 256-level grid of [-1, 1]."""

    name = "logistic"

    def __init__(self, nr_mix: int = 5, levels: int = 256):
        self.lik = DiscretizedLogisticLikelihood(nr_mix=nr_mix, levels=levels)
        self.levels = self.lik.levels
        self.num_params = self.lik.num_params

    def log_prob(self, params, x):
        return self.lik.log_prob_elementwise(params, x)

    def sample(self, params, temperature, generator):
        log_pi, m, ls = self.lik.split(params)  # each (N, K)
        if temperature == 0:
            k = log_pi.argmax(1, keepdim=True)
            return quantize_to_grid(m.gather(1, k).squeeze(1), self.levels)
        if self.lik.nr_mix > 1:
            k = (log_pi / temperature + _gumbel(log_pi.shape, generator, m.device, m.dtype)).argmax(1, keepdim=True)
        else:
            k = torch.zeros_like(m[:, :1], dtype=torch.long)
        m, ls = m.gather(1, k).squeeze(1), ls.gather(1, k).squeeze(1)
        u = rand(m.shape, generator, device=m.device, dtype=m.dtype).clamp(1e-5, 1.0 - 1e-5)
        return quantize_to_grid(m + temperature * torch.exp(ls) * (torch.log(u) - torch.log1p(-u)), self.levels)

    def check_values(self, x, who):
        k = (x + 1.0) * ((self.levels - 1) / 2.0)
        if not (((k - k.round()).abs() < 1e-3) & (x >= -1.0 - 1e-6) & (x <= 1.0 + 1e-6)).all():
            raise DataError(
                f"{who} with output='logistic' needs values on the {self.levels}-level grid 2k/{self.levels - 1} - 1 "
                f"of [-1, 1] but got values in [{float(x.min()):g}, {float(x.max()):g}] off that grid; "
                "use data.value_range=[-1,1] data.dequantize=none"
            )


def make_output(output: str, *, levels: int = 256, value_range=(-1.0, 1.0), nr_mix: int = 5):
    """The per-dimension output distribution named ``output`` (see the module docstring)."""
    if output == "bernoulli":
        return BernoulliOutput()
    if output == "categorical":
        if int(levels) < 2:
            raise ConfigError(f"output='categorical' needs levels >= 2, got {levels}")
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ConfigError(f"value_range must have hi > lo, got {list(value_range)}")
        return CategoricalOutput(levels, (lo, hi))
    if output == "logistic":
        if int(nr_mix) < 1:
            raise ConfigError(f"output='logistic' needs nr_mix >= 1, got {nr_mix}")
        return LogisticOutput(nr_mix, levels)
    raise ConfigError(f"unknown output {output!r}; valid: {', '.join(OUTPUTS)}")


def region_mask(name: str, shape: tuple) -> torch.Tensor:
    """A named observed region of an image (C, H, W): "top_half" (rows < H // 2), "bottom_half",
    "left_half" (columns < W // 2), "right_half". Returns a bool mask of ``shape``."""
    if name not in REGIONS:
        raise ConfigError(f"unknown mask {name!r}; give a bool tensor or one of: {', '.join(REGIONS)}")
    if len(shape) != 3:
        raise ConfigError(f"mask={name!r} needs image data (C, H, W), not shape {tuple(shape)}; give a bool tensor")
    C, H, W = shape
    m = torch.zeros(shape, dtype=torch.bool)
    if name == "top_half":
        m[:, : H // 2] = True
    elif name == "bottom_half":
        m[:, H // 2:] = True
    elif name == "left_half":
        m[:, :, : W // 2] = True
    else:
        m[:, :, W // 2:] = True
    return m


# ----------------------------------------------------------------------------- the shared model


class AutoregressiveModel(GenerativeModel):
    """Base of FVSBN, NADE, MADE and the PixelCNNs: exact ``log_prob``, sequential ``sample``.

    A subclass calls :meth:`_init_output` in its constructor (which sets ``shape``,
    ``num_dims`` and the per-dimension ``output`` distribution) and implements

    * :meth:`conditionals` ``(x) -> params`` (B, P, *shape): the parameters of
      p(x_d | x_<d) for every dimension d, from one pass over x;
    * :meth:`ordering` ``() -> (D,)`` int64: the flat indices (into x.reshape(B, D)) in
      the order they are generated.
    """

    likelihood = "exact"
    discrete_likelihood = True

    def _init_output(self, shape, output: str, levels: int, value_range, nr_mix: int) -> None:
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"{type(self).__name__} shape must be a non-empty tuple of positive ints, got {shape}")
        self.shape = shape
        self.num_dims = math.prod(shape)
        self.output_name = output
        self.output = make_output(output, levels=levels, value_range=value_range, nr_mix=nr_mix)

    # -- to implement ---------------------------------------------------------------------
    def conditionals(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Parameters (B, P, *shape) of every conditional p(x_d | x_<d), for x (B, *shape)."""
        raise NotImplementedError

    def ordering(self) -> torch.Tensor:  # pragma: no cover - interface
        """(D,) int64 flat indices in generation order."""
        raise NotImplementedError

    # -- data checks ------------------------------------------------------------------------
    #: pixels, not tokens; "bernoulli" needs binary {0, 1} data, "categorical" the un-dequantised grid
    #: of its levels and value_range, "logistic" the un-dequantised 256-level grid of [-1, 1]
    data_needs_by = ("output", "output_name")
    data_needs = {
        "bernoulli": DataNeeds(IMAGE_OR_VECTOR, ("binary",), alternative="model.output=categorical (grey levels)"),
        "categorical": DataNeeds(IMAGE_OR_VECTOR, levels=Opt("levels", "output.levels"),
                                 value_range=Opt("value_range", "output.value_range")),
        "logistic": DataNeeds(IMAGE_OR_VECTOR, levels=Opt("levels", "output.levels"), value_range=(-1.0, 1.0),
                              alternative="model.output=bernoulli / categorical"),
    }

    def _check_x(self, x) -> torch.Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"{type(self).__name__} built for examples of shape {self.shape} got a batch of shape {tuple(x.shape)}")
        self.output.check_values(x, type(self).__name__)
        return x

    # -- likelihood ------------------------------------------------------------------------
    def log_prob_from_params(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum_d log p(x_d | x_<d) given the conditionals' parameters: (B,) nats."""
        return self.output.log_prob(params, x).reshape(x.shape[0], -1).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) by the chain rule: x (B, *shape) -> (B,) nats per example."""
        x = self._check_x(x)
        return self.log_prob_from_params(self.conditionals(x), x)

    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:
        """{"loss": mean negative log-likelihood (nats per example), "bits_per_dim": the same per dimension}."""
        self.check_options(kwargs, (), what="loss")
        x = self._check_x(batch)
        nll = -self.log_prob_from_params(self.conditionals(x), x).mean()
        return {"loss": nll, "bits_per_dim": nll.detach() / (self.num_dims * math.log(2.0))}

    # -- sampling ----------------------------------------------------------------------------
    def _start(self, n: int, observed, mask, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The canvas (n, *shape) holding the observed values (zeros elsewhere) and the known-mask (n, *shape)."""
        device = self.device
        if (observed is None) != (mask is None):
            raise ConfigError("inpainting needs both sample options: observed=<values> and mask=<bool, True = observed, or a region name>")
        x = torch.zeros((n, *self.shape), device=device, dtype=dtype)
        if observed is None:
            return x, torch.zeros_like(x, dtype=torch.bool)
        observed = torch.as_tensor(observed, dtype=dtype, device=device)
        if isinstance(mask, str):
            mask = region_mask(mask, self.shape)
        known = torch.as_tensor(mask, device=device).to(torch.bool)
        for name, t in (("observed", observed), ("mask", known)):
            if tuple(t.shape) not in (self.shape, (n, *self.shape), (1, *self.shape)):
                raise ConfigError(f"sample option {name} must have shape {self.shape} or {(n, *self.shape)}, got {tuple(t.shape)}")
        known = known.expand(n, *self.shape).clone()
        x = torch.where(known, observed.expand(n, *self.shape), x)
        self.output.check_values(x[known], f"{type(self).__name__}.sample(observed=...)")
        return x, known

    def _sample_start(self, n: int, temperature, observed, mask, dtype=torch.float32):
        temperature = float(temperature)
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        x, known = self._start(int(n), observed, mask, dtype)
        return temperature, x, known

    @torch.no_grad()
    def generate(self, x: torch.Tensor, known: torch.Tensor, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill the unknown dimensions of ``x`` (n, *shape) one at a time in :meth:`ordering`.

        Each step runs :meth:`conditionals` on the current canvas and draws dimension d
        for every row (one draw per row from ``generator``); rows where d is known keep
        their value. Steps where d is known in every row are skipped. Returns x (filled).
        """
        n = x.shape[0]
        flat, known_flat = x.view(n, -1), known.view(n, -1)
        for d in self.ordering().tolist():
            if bool(known_flat[:, d].all()):
                continue
            params = self.conditionals(x).reshape(n, self.output.num_params, -1)[:, :, d]
            value = self.output.sample(params, temperature, generator)
            flat[:, d] = torch.where(known_flat[:, d], flat[:, d], value)
        return x

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               observed=None, mask=None) -> torch.Tensor:
        """n samples (n, *shape), drawn pixel by pixel; options in the module docstring
        (temperature; observed + mask for inpainting)."""
        temperature, x, known = self._sample_start(n, temperature, observed, mask)
        return self.generate(x, known, temperature, generator)
