"""The transform abstraction and the one flow model: a base distribution plus a chain of transforms.

Conventions (nflows / zuko style; see docs/flows.md)
----------------------------------------------------
* A :class:`Transform` is an ``nn.Module`` with

      forward(x, cond=None) -> (z, logabsdet)      data -> noise
      inverse(z, cond=None) -> x                   noise -> data (generation)

  ``logabsdet`` has shape (B,): log |det dz/dx| summed over every non-batch dimension.
  ``cond`` is an optional context tensor (conditional flows, e.g. the variational
  dequantiser's q(u|x)); a transform that does not use it ignores it.
* Transforms compose with :class:`Chain`; log-determinants add (the chain rule).
* A transform may change the shape (squeeze) and says how with ``output_shape(shape)``.
* A flow's density is the change of variables (Dinh et al. 2014)::

      log p_X(x) = log p_Z(f(x)) + log |det df/dx|

  and sampling inverts it: z ~ p_Z, x = f^{-1}(z). Temperature T draws z from the base
  distribution scaled by T (for the Gaussian, N(0, T^2 I); Kingma & Dhariwal 2018's reduced-temperature sampling).

Adding a transform (e.g. an autoregressive affine transform for TARFLOW): subclass
:class:`Transform`, compute ``(z, logabsdet)`` in ``forward`` (for an autoregressive
transform this is one parallel pass: z_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)),
logabsdet = -sum alpha) and the exact inverse in ``inverse`` (sequential over positions
for an autoregressive transform); :func:`genzoo.models.flows.transforms.affine_forward`
/ ``affine_inverse`` are the element-wise maps a coupling uses, reusable there.

Dequantisation and units
------------------------
``log_prob`` returns nats per example of a *density* over the continuous data. For
8-bit images this density lives on dequantised values y = lo + (hi - lo)(k + u) / L,
u in [0, 1)^D, and bits/dim add the log-volume of one bin (:mod:`genzoo.units`)::

    bits/dim = -log_prob / (D ln 2) + log2(L / (hi - lo))        (+7 for [-1, 1], L = 256)

* ``dequantization="uniform"``: the data loader adds u ~ U[0, 1)^D
  (``data.dequantize=uniform``); ``log_prob`` is the exact density of y, and its
  expectation over u is a lower bound on the discrete log-likelihood (Theis et al. 2016).
* ``dequantization="variational"`` (Ho et al. 2019, Flow++, sec. 3.1): the data is the
  8-bit grid (``data.dequantize=none``) and u ~ q(u | x), a conditional flow learned
  jointly (:mod:`.dequantization`). ``log_prob`` is the bound
  E_q[log p(y) - log q(u|x)] (one sample, or k importance samples:
  log (1/k) sum_i p(y_i) / q(u_i|x), tighter by Jensen, Burda et al. 2016);
  ``likelihood = "bound"``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ...errors import ConfigError, DataError
from ...units import bits_per_dim, logmeanexp
from ..base import GenerativeModel
from ..data_needs import IMAGE_OR_VECTOR, DataNeeds, Opt
from .dequantization import VariationalDequantizer
from .interface import (  # noqa: F401  (the abstractions, re-exported: genzoo.models.flows.base.Transform, ...)
    PRIORS, Chain, StandardLogistic, StandardNormal, Transform, make_prior, sum_except_batch,
)

DEQUANTIZATIONS = ("uniform", "variational")


class Flow(GenerativeModel):
    """A normalizing flow: ``log p(x) = log p_Z(f(x)) + log |det df/dx|``, samples ``f^{-1}(z)``.

    Subclasses (NICE, RealNVP, Glow) build ``transform`` (data -> latent of shape
    (D,)) and call :meth:`_setup`. The latent of every genzoo flow is flat: ``encode``
    returns (B, D), ``decode`` takes (B, D); multi-scale flows concatenate their
    factored-out latents (finest scale first).
    """

    likelihood = "exact"
    #: images per sample() call in genzoo sample / eval (benchmarks/sampling_speed.py --only families, untrained
    #: recipe nets, 2 cores: Glow 0.95 / 1.11 / 1.21 ms per image at 64 / 256 / 16, TARFLOW 5.67 / 6.93 / 8.21)
    sample_chunk = 64

    def _setup(self, shape, transform: Transform, prior: str, dequantization: str, levels: int,
               data_range, deq_steps: int, deq_hidden: int) -> None:
        if dequantization not in DEQUANTIZATIONS:
            raise ConfigError(f"unknown dequantization {dequantization!r}; valid: {', '.join(DEQUANTIZATIONS)}")
        self.shape = tuple(int(s) for s in shape)
        self.transform = transform
        self.prior = make_prior(prior)
        self.latent_shape = (math.prod(self.shape),)
        out = tuple(transform.output_shape(self.shape))
        if out != self.latent_shape:  # pragma: no cover - a construction bug, not a user error
            raise RuntimeError(f"{type(self).__name__}: transform maps {self.shape} to {out}, expected {self.latent_shape}")
        self.dequantization = dequantization
        self.levels = int(levels)
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ConfigError(f"data_range must be [lo, hi] with hi > lo, got {list(data_range)}")
        if self.levels < 2:
            raise ConfigError(f"levels must be >= 2 (256 for 8-bit images), got {levels}")
        self.data_range = (lo, hi)
        self.is_image = len(self.shape) == 3
        if dequantization == "variational":
            self.dequantizer = VariationalDequantizer(self.shape, steps=deq_steps, hidden=deq_hidden)
            #: instance attribute: the variational bound is a lower bound on log p
            self.likelihood = "bound"
        else:
            self.dequantizer = None

    # -- data compatibility -------------------------------------------------------------
    #: dequantization="uniform": continuous data (token, binary and integer-level data are refused: a
    #: density on a lattice is unbounded); images, and vectors with a value_range, must be uniformly
    #: dequantised by the loader (data.dequantize=uniform) and lie in data_range (logit preprocessing,
    #: sample clamping); continuous vectors (2-D toys) are taken as they are.
    #: dequantization="variational": the un-dequantised grid of ``levels`` levels in data_range.
    data_needs_by = ("dequantization", "dequantization")
    data_needs = {
        "uniform": DataNeeds(IMAGE_OR_VECTOR, (None,), dequantized=True, value_range=Opt("data_range"), range_scope="any",
                             alternative="model.dequantization=variational"),
        "variational": DataNeeds(IMAGE_OR_VECTOR, levels=Opt("levels"), value_range=Opt("data_range")),
    }

    def check_data(self, spec) -> None:
        """The declared checks (:attr:`data_needs`), then: training-time bits/dim (the loss) use the data's
        levels, e.g. 17 for sklearn's digits even when the model keeps the default levels=256 (that offset
        was log2(256 / 17) = 3.9 too high)."""
        super().check_data(spec)
        if self.dequantization != "variational" and spec.value_range is not None:
            self.data_levels = int(spec.levels)

    # -- pieces -------------------------------------------------------------------------
    def _check_x(self, x) -> torch.Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"{type(self).__name__} built for examples of shape {self.shape} got a batch of shape {got}")
        return x

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def bin_index(self, x: torch.Tensor) -> torch.Tensor:
        """Grey level k of grid data x = lo + (hi - lo) k / (L - 1), as float (B, *shape)."""
        lo, hi = self.data_range
        return torch.round((x - lo) / (hi - lo) * (self.levels - 1)).clamp(0, self.levels - 1)

    def dequantize(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """y = lo + (hi - lo) (k + u) / L for grid data x and u in [0, 1)^D (the loader's mapping)."""
        lo, hi = self.data_range
        return lo + (hi - lo) * (self.bin_index(x) + u) / self.levels

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """Continuous y -> the grid value lo + (hi - lo) k / (L - 1) of its bin k = floor((y - lo) L / (hi - lo))."""
        lo, hi = self.data_range
        k = torch.floor((y - lo) / (hi - lo) * self.levels).clamp(0, self.levels - 1)
        return lo + (hi - lo) * k / (self.levels - 1)

    def log_density(self, y: torch.Tensor) -> torch.Tensor:
        """Exact log p(y) of continuous (dequantised) y: (B, *shape) -> (B,) nats, by the change of variables."""
        z, logdet = self.transform(y)
        return self.prior.log_prob(z) + logdet

    def _variational_terms(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """One-sample log p(y) - log q(u|x), y = dequantize(x, u), u ~ q(u|x): (B,) nats."""
        u, log_q = self.dequantizer.sample(x, generator=generator)
        return self.log_density(self.dequantize(x, u)) - log_q

    # -- the interface ------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, *, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) in nats per example, (B,).

        uniform dequantisation: the exact log-density of x (already dequantised, or a
        continuous vector). variational: the Flow++ lower bound with ``k`` importance samples
        (default 1), log (1/k) sum_i p(y_i) / q(u_i | x), drawing from ``generator``
        (global RNG when None). Gradients flow; wrap in ``torch.no_grad()`` to evaluate.
        """
        x = self._check_x(x)
        if self.dequantizer is None:
            if k is not None and int(k) != 1:
                raise ConfigError(f"log_prob option k applies to dequantization='variational' only; "
                                  f"{type(self).__name__} uses uniform dequantisation and its log_prob is exact")
            return self.log_density(x)
        k = 1 if k is None else int(k)
        if k < 1:
            raise ConfigError(f"log_prob needs k >= 1 importance samples, got {k}")
        terms = torch.stack([self._variational_terms(x, generator) for _ in range(k)])  # (k, B)
        return logmeanexp(terms, dim=0) if k > 1 else terms[0]

    def loss(self, batch, **kwargs) -> dict[str, torch.Tensor]:
        """Mean negative log-likelihood in nats per example (for "variational": the negative
        one-sample bound). Returns {"loss", "nll"} plus "bits_per_dim" for images
        (with the dequantisation offset of :mod:`genzoo.units`)."""
        self.check_options(kwargs, (), what="loss")
        x = self._check_x(batch)
        nll = -self.log_prob(x).mean()
        out = {"loss": nll, "nll": nll.detach()}
        if self.is_image:
            out["bits_per_dim"] = bits_per_dim(nll.detach(), math.prod(self.shape), self.data_range, self.bpd_levels)
        return out

    @property
    def bpd_levels(self) -> int:
        """Levels of the training-time bits/dim offset: the data's (``spec.levels``, recorded by
        :meth:`check_data`), else the model's ``levels``."""
        return int(getattr(self, "data_levels", None) or self.levels)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n samples (n, *shape) in data space by inversion, x = f^{-1}(z).

        Options:
            temperature: z ~ base scaled by T (N(0, T^2 I) for the Gaussian prior;
                Glow). Default 1.0 (the model's own distribution).
        Images are clamped to ``data_range``; with variational dequantisation they are
        mapped to the grid values of their bins (the data's representation).
        """
        t = float(temperature)
        if t < 0:
            raise ConfigError(f"temperature must be >= 0, got {t}")
        z = self.prior.sample((int(n), *self.latent_shape), generator, temperature=t, device=self.device, dtype=self._dtype())
        return self.decode(z)

    # -- encodings ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent z = f(x): (B, *shape) -> (B, D). Grid data (variational dequantisation)
        is encoded at the centre of its bins, y = lo + (hi - lo)(k + 1/2) / L."""
        x = self._check_x(x)
        if self.dequantizer is not None:
            x = self.dequantize(x, torch.full_like(x, 0.5))
        return self.transform(x)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x = f^{-1}(z): (B, D) -> (B, *shape) in data space (clamped / quantised as in :meth:`sample`)."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise DataError(f"{type(self).__name__} latents have shape {self.latent_shape}, got a batch of shape {tuple(z.shape)}")
        x = self.transform.inverse(z)
        if self.is_image:
            x = x.clamp(*self.data_range)
            if self.dequantizer is not None:
                x = self.quantize(x)
        return x

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode the straight line between the latents of x0 and x1 (each (B, *shape)):
        returns (B, steps, *shape), the first and last columns the reconstructions of x0, x1."""
        if steps < 2:
            raise ConfigError(f"interpolation needs steps >= 2, got {steps}")
        z0, z1 = self.encode(x0), self.encode(x1)
        w = torch.linspace(0.0, 1.0, steps, dtype=z0.dtype, device=z0.device)
        z = (1 - w)[None, :, None] * z0[:, None] + w[None, :, None] * z1[:, None]  # (B, steps, D)
        out = self.decode(z.reshape(-1, z0.shape[1]))
        return out.reshape(z0.shape[0], steps, *self.shape)


def save_interpolation_grid(model: Flow, x0: torch.Tensor, x1: torch.Tensor, path, steps: int = 8) -> Path:
    """PNG of latent interpolations between test images: row i goes from x0[i] to x1[i] in
    ``steps`` columns (:meth:`Flow.interpolate`). Images only; returns the path."""
    from ...viz import save_image_grid

    if not getattr(model, "is_image", False):
        raise ConfigError("interpolation grids are for image flows; plot 2-D latents with genzoo.viz.save_scatter")
    was = model.training
    model.eval()
    try:
        grid = model.interpolate(x0, x1, steps)
    finally:
        model.train(was)
    return save_image_grid(grid.reshape(-1, *model.shape).float().cpu(), path, value_range=model.data_range, nrow=steps)
