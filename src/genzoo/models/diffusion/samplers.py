"""Samplers as pure functions (k-diffusion style) for ANY process x_t = s(t) (x_0 + sigma(t) eps).

Every sampler has the signature

    sample_xxx(denoiser, x, ts, process, *, generator=None, progress=False, **options) -> x at ts[-1]

* ``denoiser(x_t, t) -> x0_hat``: x_t (B, ...) in x-space, t a (B,) tensor of x's dtype
  (float32 for half-precision x);
  e.g. ``lambda x, t: denoise(net, x, t, process, "eps")``.
* ``x``: the state at ts[0] (drawn from ``process.prior_sample`` for a grid starting at t_max).
* ``ts``: the time grid (:func:`~genzoo.models.diffusion.process.time_grid`), strictly
  descending; when it ends at 0 the result is a sample of the data.
* All noise comes from ``generator`` (``torch.randn(x.shape, generator=...)`` once per
  stochastic step, in step order), so a fixed generator reproduces a run exactly.

Every step that lands on t = 0 returns x = s(0) D(x; t) = D: for EDM and flow matching that is
exactly the Euler step (s sigma is linear in t), for the others it is the final "noise
removal" step of Song et al. 2021, the EDM Algorithm 1 convention of no 2nd-order
correction on the last step, and the sigma_next = 0 limit of DDIM and DPM-Solver++.

The equations
-------------
With std = s sigma, eps_hat = (x - s D) / std and ' = d/dt:

* Probability-flow ODE (Karras et al. 2022, eq. 4 with s(t)):
  dx/dt = (s'/s + sigma'/sigma) x - (s sigma'/sigma) D = (std'/std) x - (s std'/std - s') D
  (finite at s = 0: flow matching gives dx/dt = (x - D) / t at t = 1).
  ``sample_euler``: x <- x + (t_next - t) dx/dt. ``sample_heun``: EDM Algorithm 1 (Heun's
  2nd-order method in t, the correction skipped on the step onto t = 0).
  ``sample_heun_stochastic``: EDM Algorithm 2: gamma = min(S_churn / n, sqrt(2) - 1) when
  S_tmin <= sigma <= S_tmax (else 0), sigma_hat = sigma (1 + gamma), t_hat = t_of_sigma(sigma_hat)
  (not clamped: at sigma_max it goes above t_max, as NVlabs' edm_sampler, every process
  extending past t_max), x_hat <- x_hat + sqrt(sigma_hat^2 - sigma^2) S_noise z in x_hat = x / s
  space, then a Heun step from t_hat.
* DDIM (Song, Meng & Ermon 2021, eq. 12 / 16), written in x_hat = x / s space, where the
  posterior q(x_hat' | x_hat, x_0) of the process has std sigma' sqrt(sigma^2 - sigma'^2) / sigma:
  x_hat' = D + sqrt(sigma'^2 - c^2) eps_hat + c z, c = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma,
  i.e. in x-space with q = sigma'/sigma
  x' = s' D + std' (sqrt(1 - eta^2 (1 - q^2)) eps_hat + eta sqrt(1 - q^2) z),
  finite at s = 0 (q = 0). For VP processes this is diffusers' DDIMScheduler.step
  (std_dev_t^2 = eta^2 (1 - abar') / (1 - abar) (1 - abar / abar')).
  ``sample_ddpm`` = DDIM with eta = 1: the DDPM ancestral step with the posterior variance
  beta_tilde (Ho et al. 2020, eq. 6-7; diffusers DDPMScheduler "fixed_small").
* ``sample_dpmpp_2m``: DPM-Solver++(2M), Lu et al. 2022, "DPM-Solver++", Algorithm 2, in
  lambda = -log sigma with x0-prediction, in x_hat space (k-diffusion's sample_dpmpp_2m):
  h = lambda' - lambda, r = h_last / h, D_d = (1 + 1/(2r)) D - 1/(2r) D_prev,
  x_hat' = (sigma'/sigma) x_hat + (1 - e^{-h}) D_d (first order on the first step and on the
  step onto t = 0). In x-space: x' = (std'/std) x + s' (1 - q) D_d.
* ``sample_euler_maruyama``: the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6)
  of the forward SDE dx = (s'/s) x dt + g dW, g^2 = 2 s^2 sigma sigma':
  x' = x + h [ODE drift - (g^2 / 2) score] + g sqrt(|h|) z, h = t' - t < 0,
  score = -(x - s D) / std^2. Where g^2 is infinite (flow matching at t = 1, s = 0) the
  step is a deterministic Euler step.
* ``sample_ode_adaptive``: the probability-flow ODE solved by torchdiffeq (Chen et al. 2018)
  with dopri5 from ts[0] to process.t_min (only the ends of ts are used), then the step onto 0.
* :func:`ddim_invert`: DDIM (eta = 0) run backwards, data -> noise, for encoding / editing.
  ``iters=1`` is the classic DDIM inversion (the model evaluated once, at the noisier time);
  more iterations solve the implicit equation so that ``sample_ddim`` decodes it exactly.
"""
from __future__ import annotations

import inspect
import math

import torch

from ...errors import ConfigError, did_you_mean
from .process import Process

__all__ = ["sample_ddpm", "sample_ddim", "sample_euler", "sample_heun", "sample_heun_stochastic",
           "sample_dpmpp_2m", "sample_euler_maruyama", "sample_ode_adaptive", "ddim_invert", "SAMPLERS",
           "nfe", "run_sampler", "sampler_options", "CountNFE"]


# -- helpers ------------------------------------------------------------------------------
def _grid(ts) -> list[float]:
    ts = torch.as_tensor(ts, dtype=torch.float64).detach().cpu().reshape(-1)
    if ts.numel() < 2:
        raise ConfigError(f"a time grid needs at least 2 times, got {ts.numel()}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ConfigError("the time grid must be strictly descending (from noise to data); "
                          "build one with genzoo.models.diffusion.time_grid")
    if float(ts[-1]) < 0:
        raise ConfigError(f"the time grid must end at t >= 0, got {float(ts[-1])}")
    return [float(v) for v in ts]


class _C:
    """Process coefficients at one time, as Python floats (float64)."""

    __slots__ = ("t", "s", "std", "ds", "dstd", "sigma")

    def __init__(self, process: Process | None, t: float, values=None):
        if values is None:
            values = (float(c) for c in process.coeffs(torch.tensor(t, dtype=torch.float64)))
        s, std, ds, dstd = values
        self.t, self.s, self.std, self.ds, self.dstd = t, s, std, ds, dstd
        self.sigma = std / s if s != 0 else math.inf

    @property
    def a(self) -> float:  # dx/dt = a x - b D
        return self.dstd / self.std

    @property
    def b(self) -> float:
        return self.s * self.dstd / self.std - self.ds


def _coeff_list(process: Process, ts: list[float]) -> list[_C]:
    """_C at every grid time, computed in one vectorised call."""
    cols = [c.tolist() for c in process.coeffs(torch.tensor(ts, dtype=torch.float64))]
    return [_C(None, t, vals) for t, vals in zip(ts, zip(*cols))]


def _odeint():
    try:
        from torchdiffeq import odeint
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("adaptive ODE sampling and ODE likelihoods need torchdiffeq: pip install torchdiffeq") from None
    return odeint


def _den(denoiser, x: torch.Tensor, t: float) -> torch.Tensor:
    # t in x's dtype, but never below float32 (a bfloat16 t = 0.901 would read 0.902)
    dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return denoiser(x, torch.full((x.shape[0],), t, dtype=dt, device=x.device))


def _randn(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _steps(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, leave=False)


def _to_zero(cn: _C, D: torch.Tensor) -> torch.Tensor:
    return cn.s * D


# -- ODE samplers -------------------------------------------------------------------------
@torch.no_grad()
def sample_euler(denoiser, x, ts, process: Process, *, generator=None, progress=False):
    """Euler's method on the probability-flow ODE in t. NFE = n."""
    cs = _coeff_list(process, _grid(ts))
    for i in _steps(len(cs) - 1, progress, "euler"):
        c, cn = cs[i], cs[i + 1]
        D = _den(denoiser, x, c.t)
        x = _to_zero(cn, D) if cn.t == 0 else x + (cn.t - c.t) * (c.a * x - c.b * D)
    return x


@torch.no_grad()
def sample_heun(denoiser, x, ts, process: Process, *, generator=None, progress=False):
    """EDM Algorithm 1 (Heun, 2nd order; Euler / denoise on the step onto t = 0). NFE = 2n - 1."""
    cs = _coeff_list(process, _grid(ts))
    for i in _steps(len(cs) - 1, progress, "heun"):
        x = _heun_step(denoiser, x, cs[i], cs[i + 1])
    return x


def _heun_step(denoiser, x, c: _C, cn: _C):
    D = _den(denoiser, x, c.t)
    if cn.t == 0:
        return _to_zero(cn, D)
    h = cn.t - c.t
    d = c.a * x - c.b * D
    x1 = x + h * d
    d1 = cn.a * x1 - cn.b * _den(denoiser, x1, cn.t)
    return x + h * 0.5 * (d + d1)


@torch.no_grad()
def sample_heun_stochastic(denoiser, x, ts, process: Process, *, generator=None, progress=False,
                           S_churn: float = 0.0, S_tmin: float = 0.0, S_tmax: float = float("inf"),
                           S_noise: float = 1.0):
    """EDM Algorithm 2 (stochastic Heun). S_churn, S_tmin, S_tmax, S_noise as in the paper
    (S_tmin / S_tmax are compared with sigma). S_churn = 0 is :func:`sample_heun`.
    gamma = min(S_churn / n, sqrt(2) - 1) where S_tmin <= sigma_i <= S_tmax, sigma_hat =
    sigma_i (1 + gamma), unclamped (NVlabs/edm ``edm_sampler``; tests/test_sampler_golden.py).
    One noise draw per churning step, in step order. NFE = 2n - 1."""
    cs = _coeff_list(process, _grid(ts))
    n = len(cs) - 1
    gamma0 = min(S_churn / n, math.sqrt(2.0) - 1.0) if S_churn > 0 else 0.0
    for i in _steps(n, progress, "heun_stochastic"):
        c, cn = cs[i], cs[i + 1]
        if gamma0 > 0 and S_tmin <= c.sigma <= S_tmax and math.isfinite(c.sigma) and c.s > 0:
            sig_hat = c.sigma * (1.0 + gamma0)
            t_hat = float(process.t_of_sigma(torch.tensor(sig_hat, dtype=torch.float64)))
            if math.isfinite(t_hat) and t_hat > c.t:
                ch = _C(process, t_hat)
                x = (ch.s / c.s) * x + ch.s * math.sqrt(max(ch.sigma ** 2 - c.sigma ** 2, 0.0)) * S_noise * _randn(x, generator)
                c = ch
        x = _heun_step(denoiser, x, c, cn)
    return x


@torch.no_grad()
def sample_ddim(denoiser, x, ts, process: Process, *, generator=None, progress=False, eta: float = 0.0):
    """DDIM with noise eta in [0, 1] (0: deterministic; 1: DDPM ancestral). NFE = n."""
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"DDIM eta must be in [0, 1], got {eta}")
    cs = _coeff_list(process, _grid(ts))
    for i in _steps(len(cs) - 1, progress, "ddim" if eta < 1 else "ddpm"):
        c, cn = cs[i], cs[i + 1]
        D = _den(denoiser, x, c.t)
        if cn.t == 0:
            x = _to_zero(cn, D)
            continue
        q = cn.sigma / c.sigma  # 0 where s = 0 (sigma = inf)
        eps_hat = (x - c.s * D) / c.std
        var = eta * eta * max(1.0 - q * q, 0.0)
        x = cn.s * D + cn.std * math.sqrt(1.0 - var) * eps_hat
        if var > 0:
            x = x + cn.std * math.sqrt(var) * _randn(x, generator)
    return x


def sample_ddpm(denoiser, x, ts, process: Process, *, generator=None, progress=False):
    """DDPM ancestral sampling = :func:`sample_ddim` with eta = 1 (posterior variance beta_tilde). NFE = n."""
    return sample_ddim(denoiser, x, ts, process, generator=generator, progress=progress, eta=1.0)


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x, ts, process: Process, *, generator=None, progress=False):
    """DPM-Solver++(2M) (Lu et al. 2022), multistep 2nd order in lambda = -log sigma. NFE = n."""
    cs = _coeff_list(process, _grid(ts))
    D_old, lam_old = None, None
    for i in _steps(len(cs) - 1, progress, "dpmpp_2m"):
        c, cn = cs[i], cs[i + 1]
        D = _den(denoiser, x, c.t)
        lam = -math.log(c.sigma) if c.sigma > 0 else math.inf
        if cn.t == 0:
            x = _to_zero(cn, D)
        else:
            lam_n = -math.log(cn.sigma)
            h = lam_n - lam
            Dd = D
            if D_old is not None and math.isfinite(lam_old):
                r = (lam - lam_old) / h
                Dd = (1.0 + 1.0 / (2.0 * r)) * D - (1.0 / (2.0 * r)) * D_old
            q = cn.sigma / c.sigma
            x = (cn.std / c.std) * x + cn.s * (1.0 - q) * Dd
        D_old, lam_old = D, lam
    return x


# -- SDE ----------------------------------------------------------------------------------
@torch.no_grad()
def sample_euler_maruyama(denoiser, x, ts, process: Process, *, generator=None, progress=False):
    """Euler-Maruyama on the reverse-time SDE of the process. NFE = n."""
    cs = _coeff_list(process, _grid(ts))
    for i in _steps(len(cs) - 1, progress, "euler_maruyama"):
        c, cn = cs[i], cs[i + 1]
        D = _den(denoiser, x, c.t)
        if cn.t == 0:
            x = _to_zero(cn, D)
            continue
        h = cn.t - c.t
        drift = c.a * x - c.b * D
        g2 = 2.0 * c.std * c.dstd - 2.0 * c.std ** 2 * c.ds / c.s if c.s != 0 else math.inf
        if not math.isfinite(g2):
            x = x + h * drift
            continue
        score = -(x - c.s * D) / (c.std ** 2)
        x = x + h * (drift - 0.5 * g2 * score) + math.sqrt(g2 * -h) * _randn(x, generator)
    return x


# -- adaptive ODE -------------------------------------------------------------------------
@torch.no_grad()
def sample_ode_adaptive(denoiser, x, ts, process: Process, *, generator=None, progress=False,
                        rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", t_end: float | None = None):
    """Probability-flow ODE solved by torchdiffeq's adaptive ``method`` (dopri5). Only ts[0]
    and ts[-1] are used: it integrates from ts[0] to ``t_end`` (default: process.t_min when
    ts[-1] = 0, else ts[-1]) and, when ts ends at 0, takes the step onto 0 (x = D). NFE
    depends on the tolerances (wrap the denoiser in :class:`CountNFE` to count)."""
    odeint = _odeint()

    ts = _grid(ts)
    if t_end is None:
        t_end = float(process.t_min) if ts[-1] == 0 else ts[-1]
    lo, hi = float(t_end), ts[0]
    if not 0 < lo < hi:
        raise ConfigError(f"sample_ode_adaptive integrates from ts[0] = {hi} down to t_end = {lo}: needs 0 < t_end < ts[0]")

    def f(t, y):
        # dopri5 may probe stages beyond the interval; the process need not exist there (VP, t < 0)
        c = _C(process, min(max(float(t), lo), hi))
        return c.a * y - c.b * _den(denoiser, y, c.t)

    tt = torch.tensor([hi, lo], dtype=x.dtype, device=x.device)
    options = {"step_t": tt[-1:]} if method in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun") else None
    x = odeint(f, x, tt, rtol=rtol, atol=atol, method=method, options=options)[-1]
    if ts[-1] == 0:
        x = _to_zero(_C(process, 0.0), _den(denoiser, x, lo))
    return x


# -- inversion ----------------------------------------------------------------------------
@torch.no_grad()
def ddim_invert(denoiser, x, ts, process: Process, *, iters: int = 1, progress=False):
    """Run DDIM (eta = 0) backwards along the sampling grid ``ts`` (descending, as given to
    the samplers): x at ts[-1] (the data when ts ends at 0) -> x at ts[0].

    Each backward step from u to t (u < t) solves for the x with
    ``sample_ddim``-step(x, t -> u) = x_u, i.e. x_u = s_u D(x; t) + std_u eps_hat(x; t),
    by the fixed-point iteration x <- (s / s_u) x_u + std (1 - sigma_u / sigma) eps_hat(x; t)
    started at (s / s_u) x_u (at s = 0: x <- s D + (std / std_u)(x_u - s_u D)). iters = 1 is
    the classic DDIM inversion; its contraction factor is below 1 - sigma_u / sigma, so a
    few more iterations make ``sample_ddim(..., eta=0)`` recover x to solver precision.
    NFE = iters * n.
    """
    cs = _coeff_list(process, _grid(ts))
    iters = int(iters)
    if iters < 1:
        raise ConfigError(f"ddim_invert needs iters >= 1, got {iters}")
    for i in _steps(len(cs) - 1, progress, "ddim_invert"):
        cu, c = cs[-1 - i], cs[-2 - i]
        xu = x
        q = cu.sigma / c.sigma
        if c.s != 0:
            base = (c.s / cu.s) * xu
            y = base
            for _ in range(iters):
                D = _den(denoiser, y, c.t)
                y = base + (1.0 - q) * (y - c.s * D)
        else:
            y = xu * (c.std / cu.std)
            for _ in range(iters):
                D = _den(denoiser, y, c.t)
                y = c.s * D + (c.std / cu.std) * (xu - cu.s * D)
        x = y
    return x


# -- registry -----------------------------------------------------------------------------
SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "heun_stochastic": sample_heun_stochastic,
    "dpmpp_2m": sample_dpmpp_2m,
    "euler_maruyama": sample_euler_maruyama,
    "ode_adaptive": sample_ode_adaptive,
}

_COMMON = ("generator", "progress")


def _check_name(name: str) -> None:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}{did_you_mean(name, SAMPLERS)}; valid: {', '.join(SAMPLERS)}")


def sampler_options(name: str) -> tuple[str, ...]:
    """Keyword options of sampler ``name`` beyond generator / progress (e.g. ("eta",) for ddim)."""
    _check_name(name)
    sig = inspect.signature(SAMPLERS[name])
    return tuple(p for p, v in sig.parameters.items() if v.kind == v.KEYWORD_ONLY and p not in _COMMON)


def nfe(name: str, steps: int) -> int | None:
    """Network evaluations of sampler ``name`` on a grid of ``steps`` steps ending at 0
    (None for ode_adaptive: it depends on the tolerances)."""
    _check_name(name)
    steps = int(steps)
    if name in ("heun", "heun_stochastic"):
        return 2 * steps - 1
    if name == "ode_adaptive":
        return None
    return steps


def run_sampler(name: str, denoiser, x, ts, process: Process, *, generator=None, progress=False, **opts):
    """``SAMPLERS[name](denoiser, x, ts, process, generator=..., progress=..., **opts)``, with a
    ConfigError naming the valid options for an unknown one."""
    valid = sampler_options(name)
    for k in opts:
        if k not in valid:
            raise ConfigError(f"unknown option {k!r} for sampler {name!r}{did_you_mean(k, valid)}; "
                              f"valid: {', '.join(valid) if valid else '(none)'}")
    return SAMPLERS[name](denoiser, x, ts, process, generator=generator, progress=progress, **opts)


class CountNFE:
    """Wrap a denoiser and count its calls (``.n``) and evaluated examples (``.examples``)."""

    def __init__(self, denoiser):
        self.denoiser, self.n, self.examples = denoiser, 0, 0

    def __call__(self, x, t):
        self.n += 1
        self.examples += x.shape[0]
        return self.denoiser(x, t)
