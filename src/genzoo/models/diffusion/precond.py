"""Preconditioning: any network output parameterisation -> the denoiser D(x_t; t) ~ E[x_0 | x_t].

With x_t = s (x_0 + sigma eps) = s x_0 + std eps (std = s sigma), x_hat = x_t / s and
' = d/dt, the raw network F = net(x_in, noise_label, cond) is turned into x0_hat by:

* "eps" (Ho et al. 2020, eq. 11-14): x_in = x_t, label = process.noise_label(t); F ~ eps;
  x0_hat = (x_t - std F) / s.
* "x0": x_in = x_t, label = process.noise_label(t); F ~ x_0; x0_hat = F.
* "v" (Salimans & Ho 2022, eq. 8 / appendix D): x_in = x_t / r, label = process.noise_label(t);
  F ~ v = a eps - b x_0; x0_hat = a x_in - b F, with r = sqrt(s^2 + std^2), a = s / r, b = std / r.
* "velocity" (flow matching, Lipman et al. 2023, eq. 22; Liu et al. 2023): x_in = x_t,
  label = process.noise_label(t); F ~ u = d x_t / dt = s' x_0 + std' eps (eps - x_0 for flow);
  x0_hat = (std' x_t - std F) / (std' s - s' std) (= x_t - t F for FlowMatching).
* "edm" (Karras et al. 2022, eq. 7 and Table 1, "EDM" column): x_in = c_in x_hat,
  label = c_noise; F ~ F_theta; x0_hat = c_skip x_hat + c_out F.

Notes:

* "v": for VP processes s^2 (1 + sigma^2) = 1,
  so r = 1, a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar): exactly Salimans & Ho's
  v = alpha eps - sigma x (their eq. 8 / appendix D) with input z = x_t. For any other
  process genzoo generalises by rescaling x_t onto the VP process of the same
  signal-to-noise ratio (z = x_t / r = a x_0 + b eps), which is finite everywhere (flow
  matching at t = 1 included).
* "velocity": the conditional velocity d x_t / dt of Lipman et al. / Liu et al.; the
  denominator std' s - s' std = s^2 sigma' > 0. For FlowMatching x0_hat = x_t - t F.
* "edm": Karras et al. 2022, Table 1 ("EDM" column), applied to x_hat = x_t / s:
  c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
  c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4 (whatever the process).
  Needs s > 0 (refused at flow matching's t = 1; use t_max < 1 or "velocity").
* "eps" also needs s > 0 (x0 = (x_t - std F) / s).

Noise labels (``process.noise_label``): discrete VP: the DDPM index N t - 1; continuous VP:
999 t; VE: ln(sigma / 2); EDM: ln(sigma) / 4; flow: 1000 t.

Helpers turning an x_0 estimate into the other quantities (true x_0 gives the conditional
quantities, the denoiser's output gives the marginal ones by Tweedie's formula):
eps = (x_t - s x_0) / std, score = grad log p_t(x_t) = -(x_t - s x_0) / std^2,
velocity = s' x_0 + std' eps (the probability-flow ODE drift).
"""
from __future__ import annotations

import torch

from ...errors import ConfigError, did_you_mean
from .process import Process, _bcast, _hi, _tensor, _to_device

__all__ = ["PARAMS", "denoise", "edm_coefficients", "eps_from_x0", "score_from_x0", "velocity_from_x0",
           "v_from_x0", "raw_from_x0"]

PARAMS = ("eps", "x0", "v", "velocity", "edm")


def edm_coefficients(sigma, sigma_data: float = 0.5):
    """EDM Table 1 preconditioning: (c_skip, c_out, c_in, c_noise) at noise level sigma.

    sigma: float or tensor (any shape); returns tensors of sigma's shape (float64 for floats).
    """
    sigma = _tensor(sigma)
    sd2 = float(sigma_data) ** 2
    r = torch.sqrt(sigma * sigma + sd2)
    return sd2 / (sigma * sigma + sd2), sigma * sigma_data / r, 1.0 / r, 0.25 * torch.log(sigma)


def _check_param(param: str) -> None:
    if param not in PARAMS:
        raise ConfigError(f"unknown parameterisation {param!r}{did_you_mean(param, PARAMS)}; valid: {', '.join(PARAMS)}")


def _times(t, x: torch.Tensor) -> torch.Tensor:
    """t (scalar or (B,)) -> (B,) on x's device, float64 where the device has it."""
    t = _hi(_to_device(_tensor(t), x.device))
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ConfigError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def _sigma_data(process: Process, sigma_data):
    return float(sigma_data if sigma_data is not None else getattr(process, "sigma_data", 0.5))


def _predict(net, x_t: torch.Tensor, t, process: Process, param: str, cond=None, sigma_data=None):
    """(raw network output, x0_hat)."""
    _check_param(param)
    t = _times(t, x_t)
    s, std, ds, dstd = process.coeffs(t)
    if param in ("eps", "edm") and bool((s == 0).any()):
        raise ConfigError(f"param={param!r} needs s(t) > 0, but s = 0 at t = {float(t[s == 0][0])} "
                          f"({process.name}); use param='velocity' or 'v', or a process with t_max < 1")
    bc = lambda c: _bcast(c, x_t)  # noqa: E731
    label = process.noise_label(t).to(x_t.dtype)
    if param == "eps":
        out = net(x_t, label, cond)
        return out, (x_t - bc(std) * out) / bc(s)
    if param == "x0":
        out = net(x_t, label, cond)
        return out, out
    if param == "v":
        r = torch.sqrt(s * s + std * std)
        a, b = s / r, std / r
        z = x_t / bc(r)
        out = net(z, label, cond)
        return out, bc(a) * z - bc(b) * out
    if param == "velocity":
        out = net(x_t, label, cond)
        return out, (bc(dstd) * x_t - bc(std) * out) / bc(dstd * s - ds * std)
    # edm
    sigma = std / s
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, _sigma_data(process, sigma_data))
    x_hat = x_t / bc(s)
    out = net(bc(c_in) * x_hat, c_noise.to(x_t.dtype), cond)
    return out, bc(c_skip) * x_hat + bc(c_out) * out


def denoise(net, x_t: torch.Tensor, t, process: Process, param: str, cond=None, *, sigma_data: float | None = None):
    """D(x_t; t): the network's estimate of x_0 (in data space).

    Args:
        net: callable ``net(x_in, noise_label, cond) -> F`` (shape of x_in); noise_label (B,).
        x_t: (B, ...) noisy input in x-space (x_t = s x_0 + std eps).
        t: scalar or (B,) times.
        process: the :class:`~genzoo.models.diffusion.process.Process`.
        param: "eps" | "x0" | "v" | "velocity" | "edm" (see the module docstring for the
            network input, noise label and output of each).
        cond: passed through to ``net`` (class labels, ...).
        sigma_data: for "edm" (default: process.sigma_data, else 0.5).
    Returns: x0_hat (B, ...), dtype of x_t.
    """
    return _predict(net, x_t, t, process, param, cond, sigma_data)[1]


def raw_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t, process: Process, param: str, *,
                sigma_data: float | None = None) -> torch.Tensor:
    """The raw network output that :func:`denoise` maps to ``x0`` (the inverse of the
    preconditioning). With the true x_0 of x_t = s x_0 + std eps this is the regression
    target of each parameterisation: eps, x_0, v = a eps - b x_0, s' x_0 + std' eps, and EDM's
    (x_0 - c_skip x_hat) / c_out."""
    _check_param(param)
    t = _times(t, x_t)
    s, std, ds, dstd = process.coeffs(t)
    bc = lambda c: _bcast(c, x_t)  # noqa: E731
    if param == "eps":
        return (x_t - bc(s) * x0) / bc(std)
    if param == "x0":
        return x0
    if param == "v":
        r = torch.sqrt(s * s + std * std)
        return (bc(s / r) * x_t / bc(r) - x0) / bc(std / r)
    if param == "velocity":
        return (bc(dstd) * x_t - bc(dstd * s - ds * std) * x0) / bc(std)
    c_skip, c_out, _, _ = edm_coefficients(std / s, _sigma_data(process, sigma_data))
    return (x0 - bc(c_skip) * x_t / bc(s)) / bc(c_out)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t, process: Process) -> torch.Tensor:
    """eps = (x_t - s x0) / std. (B, ...)."""
    t = _times(t, x_t)
    s, std, _, _ = process.coeffs(t)
    return (x_t - _bcast(s, x_t) * x0) / _bcast(std, x_t)


def score_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t, process: Process) -> torch.Tensor:
    """Score in x-space, grad_x log p_t(x_t) = -(x_t - s x0) / std^2 (with x0 = D(x_t; t):
    the marginal score, Tweedie; with the true x_0: the conditional score of q(x_t | x_0),
    the denoising-score-matching target). (B, ...)."""
    t = _times(t, x_t)
    s, std, _, _ = process.coeffs(t)
    return -(x_t - _bcast(s, x_t) * x0) / _bcast(std * std, x_t)


def velocity_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t, process: Process) -> torch.Tensor:
    """d x_t / dt = s' x0 + std' eps with eps = (x_t - s x0) / std: the conditional
    flow-matching target for the true x_0, the probability-flow ODE drift for x0 = D(x_t; t)
    (= (x_t - x0) / t for flow matching). (B, ...)."""
    t = _times(t, x_t)
    s, std, ds, dstd = process.coeffs(t)
    bc = lambda c: _bcast(c, x_t)  # noqa: E731
    return bc(ds) * x0 + bc(dstd) * (x_t - bc(s) * x0) / bc(std)


def v_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t, process: Process) -> torch.Tensor:
    """Salimans & Ho's v = a eps - b x0 (a = s / r, b = std / r, r = sqrt(s^2 + std^2)). (B, ...)."""
    return raw_from_x0(x_t, x0, t, process, "v")
