"""Exact log-likelihood through the probability-flow ODE, for every process and parameterisation.

Papers and equations
--------------------
* Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary Differential Equations",
  Theorem 1 (instantaneous change of variables): for dx/dt = f(x, t),
  d log p_t(x(t)) / dt = -tr(df/dx).
* Grathwohl et al. 2019, "FFJORD", eq. 7: Hutchinson's estimator
  tr(A) = E_v[v^T A v] with Rademacher probes v, one fixed probe per trajectory.
* Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 13 and Appendix D.2:
  the probability-flow ODE of a diffusion, integrated from t = eps to T, plus log p_T.

Here f is the probability-flow drift of the process (Karras et al. 2022, eq. 4 with s(t)):
f(x, t) = (std'/std) x - (s std'/std - s') D(x; t), so with x(t_min) = x0:

    log p_{t_min}(x0) = log p_prior(x(t_max)) + int_{t_min}^{t_max} tr(df/dx)(x(t), t) dt.

The result is the density of the process marginal at t_min (the data convolved with
N(0, std(t_min)^2) and scaled by s(t_min)); t_min -> 0 approaches the data density. The
prior is ``process.prior_log_prob`` (see :mod:`.process` for its exact choice).
"""
from __future__ import annotations

import torch

from ...errors import ConfigError
from .process import Process
from .samplers import _C, _den, _odeint

__all__ = ["ode_log_prob"]


def ode_log_prob(denoiser, x0: torch.Tensor, process: Process, *, exact_trace: bool = False, num_probes: int = 1,
                 rtol: float = 1e-5, atol: float = 1e-5, t_min: float | None = None,
                 generator: torch.Generator | None = None, method: str = "dopri5", prior=None,
                 return_stats: bool = False):
    """log p(x0) in nats per example, (B,), by the probability-flow ODE (torchdiffeq).

    Args:
        denoiser: ``denoiser(x_t, t) -> x0_hat`` (as for the samplers); must be differentiable
            in x_t.
        x0: (B, ...) data points (taken as the state at t_min).
        process: the process.
        exact_trace: True: the exact divergence (one vector-Jacobian product per dimension,
            batched as B * D examples - for small D); False: Hutchinson with Rademacher probes.
        num_probes: probes per example (averaged), fixed along the trajectory.
        rtol, atol: dopri5 tolerances. t_min: start time (default process.t_min).
        generator: draws the probes.
        method: torchdiffeq method.
        prior: callable x_{t_max} -> (B,) log density replacing ``process.prior_log_prob``
            (e.g. the exact marginal p_{t_max} when it is known).
        return_stats: also return {"nfe": number of drift evaluations, "t_min", "t_max"}.
    """
    odeint = _odeint()
    t0 = float(process.t_min if t_min is None else t_min)
    T = float(process.t_max)
    if not 0 < t0 < T:
        raise ConfigError(f"ode_log_prob needs 0 < t_min < t_max, got t_min={t0}, t_max={T}")
    B = x0.shape[0]
    shape = x0.shape[1:]
    D = int(x0[0].numel())
    if exact_trace:
        eye = torch.eye(D, dtype=x0.dtype, device=x0.device)
        probes = eye.reshape(D, 1, *shape).expand(D, B, *shape).reshape(D * B, *shape)
        P, reduce = D, "sum"
    else:
        P = int(num_probes)
        if P < 1:
            raise ConfigError(f"num_probes must be >= 1, got {num_probes}")
        probes = torch.randint(0, 2, (P * B, *shape), generator=generator, device=x0.device).to(x0.dtype) * 2 - 1
        reduce = "mean"
    stats = {"nfe": 0, "t_min": t0, "t_max": T}

    def f(t, state):
        x = state[0]
        stats["nfe"] += 1
        c = _C(process, min(max(float(t), t0), T))  # dopri5 may probe stages outside [t0, T]
        with torch.enable_grad():
            xr = x.detach().repeat(P, *([1] * len(shape))).requires_grad_(True)
            drift = c.a * xr - c.b * _den(denoiser, xr, c.t)
            (g,) = torch.autograd.grad((drift * probes).sum(), xr)
        div = (g * probes).reshape(P, B, -1).sum(2)
        div = div.sum(0) if reduce == "sum" else div.mean(0)
        return drift[:B].detach(), div.detach()

    tt = torch.tensor([t0, T], dtype=x0.dtype, device=x0.device)
    state = (x0.detach(), torch.zeros(B, dtype=x0.dtype, device=x0.device))
    options = {"step_t": tt[-1:]} if method in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun") else None
    xT, delta = (s[-1] for s in odeint(f, state, tt, rtol=rtol, atol=atol, method=method, options=options))
    logp = (process.prior_log_prob(xT) if prior is None else prior(xT)) + delta
    return (logp, stats) if return_stats else logp
