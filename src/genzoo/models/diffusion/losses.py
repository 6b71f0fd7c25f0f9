"""Training losses of diffusion and flow-matching models, on any process and parameterisation.

All three draw a time t per example and eps ~ N(0, I), form x_t = s(t) x_0 + std(t) eps and
return a per-example loss (B,) that is a MEAN over the non-batch dimensions (so its scale
does not grow with the image size; multiply by D for the papers' sums):

* "simple" - Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eq. 14 (L_simple):
  E_{t, x_0, eps} || eps - eps_hat(x_t, t) ||^2 with t ~ process.sample_train_t (DDPM: k uniform
  on {0..N-1}). For param="eps" eps_hat is the raw network output; for any other
  parameterisation it is eps_from_x0(x_t, D(x_t; t)).
* "edm" - Karras et al. 2022, eq. 8 and Table 1: ln sigma ~ N(P_mean, P_std^2) (the process's
  P_mean / P_std, else -1.2 / 1.2), t = t_of_sigma(sigma),
  lambda(sigma) || D(x_t; t) - x_0 ||^2, lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,
  so that with param="edm" the effective target of F has unit variance at every sigma.
* "cfm" - conditional flow matching, Lipman et al. 2023, eq. 9 / 22 (and Liu et al. 2023):
  E || u_hat(x_t, t) - (s' x_0 + std' eps) ||^2 with t ~ process.sample_train_t; for
  FlowMatching the target is eps - x_0. For param="velocity" u_hat is the raw network
  output; otherwise velocity_from_x0(x_t, D(x_t; t)).

Denoising score matching (Vincent 2011): each loss is a weighted regression onto a
conditional expectation of the true (x_0, eps), so its minimiser over all functions is the
posterior mean, i.e. D(x_t; t) = E[x_0 | x_t] and the score grad log p_t(x_t) =
-(x_t - s D) / std^2 (tested in tests/test_diffusion_core.py).
"""
from __future__ import annotations

import torch

from ...errors import ConfigError, did_you_mean
from .precond import _predict, _sigma_data, eps_from_x0, velocity_from_x0
from .process import Process, _bcast

__all__ = ["LOSSES", "diffusion_loss", "edm_weight"]

LOSSES = ("simple", "edm", "cfm")


def edm_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM Table 1)."""
    return (sigma * sigma + sigma_data ** 2) / (sigma * sigma_data) ** 2


def _mean_rest(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(1)


def diffusion_loss(net, x0: torch.Tensor, process: Process, param: str, loss: str = "simple", cond=None,
                   generator: torch.Generator | None = None, *, t: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None, sigma_data: float | None = None) -> torch.Tensor:
    """Per-example training loss (B,) (mean over non-batch dims; see the module docstring).

    Args:
        net: ``net(x_in, noise_label, cond)`` (see :func:`~genzoo.models.diffusion.precond.denoise`).
        x0: (B, ...) clean data.
        process: the process; param: the network's parameterisation.
        loss: "simple" | "edm" | "cfm".
        cond: passed to the network.
        generator: draws t (first) and then eps.
        t: (B,) times to use instead of drawing them (for tests / importance sampling).
        noise: eps to use instead of drawing it.
        sigma_data: EDM's sigma_data (default process.sigma_data, else 0.5).
    """
    if loss not in LOSSES:
        raise ConfigError(f"unknown diffusion loss {loss!r}{did_you_mean(loss, LOSSES)}; valid: {', '.join(LOSSES)}")
    B, dev, dt = x0.shape[0], x0.device, x0.dtype
    if t is None:
        if loss == "edm":
            pm, ps = float(getattr(process, "P_mean", -1.2)), float(getattr(process, "P_std", 1.2))
            z = torch.randn(B, generator=generator, device=dev, dtype=dt)
            t = process.t_of_sigma(torch.exp(pm + ps * z))
        else:
            t = process.sample_train_t(B, generator=generator, device=dev, dtype=dt)
    t = torch.as_tensor(t, device=dev)
    if t.dim() == 0:
        t = t.expand(B)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=dt)
    x_t = process.add_noise(x0, noise, t)
    if loss == "simple":
        out, x0_hat = _predict(net, x_t, t, process, param, cond, sigma_data)
        eps_hat = out if param == "eps" else eps_from_x0(x_t, x0_hat, t, process)
        return _mean_rest((eps_hat - noise) ** 2)
    if loss == "edm":
        out, x0_hat = _predict(net, x_t, t, process, param, cond, sigma_data)
        w = edm_weight(process.sigma(t), _sigma_data(process, sigma_data)).to(dt)
        return w * _mean_rest((x0_hat - x0) ** 2)
    # cfm
    s, std, ds, dstd = process.coeffs(t)
    target = _bcast(ds, x0) * x0 + _bcast(dstd, x0) * noise
    out, x0_hat = _predict(net, x_t, t, process, param, cond, sigma_data)
    u_hat = out if param == "velocity" else velocity_from_x0(x_t, x0_hat, t, process)
    return _mean_rest((u_hat - target) ** 2)
