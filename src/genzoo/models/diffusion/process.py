"""Gaussian diffusion processes on one form, and the sampling time grids.

Every process in genzoo is written in the form of Karras, Aittala, Aila & Laine 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models" (EDM), eq. 4 / 10:

    x_t = s(t) * (x_0 + sigma(t) * eps),      eps ~ N(0, I),

with the data at t = 0, sigma = 0 and s(0) = 1. We also use the noise standard deviation in
x-space ``std(t) = s(t) sigma(t)`` (the "sigma_t" of Kingma et al. 2021, whose "alpha_t" is
our s(t)), which stays finite where s = 0 (flow matching at t = 1).

Processes and the equations implemented
---------------------------------------
* :class:`VP` - Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM):
  betas = linspace(1e-4, 0.02, N = 1000), alpha_bar_k = prod_{i<=k} (1 - beta_i) (their
  eq. 4: q(x_k | x_0) = N(sqrt(alpha_bar_k) x_0, (1 - alpha_bar_k) I)), so
  s = sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar).
  Continuous time: the DDPM index k in {0..N-1} sits at t_k = (k + 1) / N, t = 0 is the data
  (alpha_bar = 1), and log alpha_bar(t) is interpolated between the knots t_j = j / N
  (j = 0..N, log alpha_bar(t_0) = 0) by the monotone cubic of Fritsch & Carlson 1980 (PCHIP):
  exact at the knots, continuously differentiable, so the probability-flow drift has no
  jumps between knots (a piecewise-linear log alpha_bar makes adaptive ODE solvers crawl). ``schedule="cosine"``: Nichol & Dhariwal
  2021, "Improved DDPM", eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s)/(1 + s) pi/2),
  s = 0.008, betas_k = min(1 - alpha_bar((k+1)/N) / alpha_bar(k/N), 0.999).
  ``discrete=False``: the VP-SDE of Song et al. 2021, "Score-Based Generative Modeling
  through SDEs", eq. 11 / 29: alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2),
  beta_min = 0.1, beta_max = 20, t in [0, 1]; or the continuous cosine alpha_bar(t) = f(t)/f(0)
  (s(1) = 0, like flow matching).
* :class:`VE` - Song & Ermon 2019 (NCSN) / Song et al. 2021 (VE-SDE, eq. 9 / 31):
  s = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t for t in (0, 1]; genzoo adds the data
  point sigma(0) = 0 (a jump from sigma_min, which every sampler's last step - the
  "noise removal" denoising step of Song et al. - crosses).
* :class:`EDM` - Karras et al. 2022: s = 1, sigma(t) = t, training sigmas log-normal
  ln sigma ~ N(P_mean, P_std^2) (their Table 1, "EDM" column).
* :class:`FlowMatching` - Lipman et al. 2023, "Flow Matching for Generative Modeling";
  Liu et al. 2023, "Flow Straight and Fast" (rectified flow): x_t = (1 - t) x_0 + t eps, i.e.
  s = 1 - t, sigma = t / (1 - t), std = t. Training t ~ U(0, 1) or logit-normal
  (Esser et al. 2024, "Scaling Rectified Flow Transformers", eq. 19).

Probability-flow ODE (EDM eq. 4 with s(t)): with D = D(x; t) the denoiser (the estimate of
E[x_0 | x_t]),

    dx/dt = (s'/s + sigma'/sigma) x - s sigma'/sigma D = (std'/std) x - (s std'/std - s') D,

the second form being finite where s = 0 (flow: dx/dt = (x - D) / t). The forward SDE
dx = f x dt + g dW has f = s'/s and g^2 = 2 s^2 sigma sigma' = 2 std std' - 2 std^2 s'/s.

The prior (the law of x_{t_max} used to start sampling and to close the likelihood) is
N(0, v I) with v = std(t_max)^2 + c s(t_max)^2: c = 1 for VP (v = 1 exactly, DDPM's N(0, I))
and flow matching (v = 1 at t_max = 1), c = 0 for VE and EDM (v = sigma_max^2, as NCSN and
EDM draw). It ignores the data's contribution s(T)^2 Cov[x_0] where c = 0 (a relative error
of about Var[x_0] / sigma_max^2 in the variance).

Time grids (:func:`time_grid`) are data: a float64 tensor of n + 1 times from t_max down to
exactly 0, the k-diffusion style, never a hidden scheduler state.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import ConfigError, did_you_mean

__all__ = ["Process", "VP", "VE", "EDM", "FlowMatching", "make_process", "process_from_dict", "time_grid",
           "PROCESSES", "GRID_KINDS"]


def _tensor(t) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.float64)
    return torch.as_tensor(t, dtype=torch.float64)


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    """t on ``device`` (float64 becomes float32 on Apple MPS, which has no float64)."""
    device = torch.device(device)
    if device.type == "mps" and t.dtype == torch.float64:
        t = t.to(torch.float32)
    return t.to(device)


def _hi(t: torch.Tensor) -> torch.Tensor:
    """float64 where the device has it (not Apple MPS)."""
    if t.dtype == torch.float64 or t.device.type == "mps":
        return t
    return t.to(torch.float64)


class Process:
    """Base class of the processes x_t = s(t) (x_0 + sigma(t) eps), data at t = 0.

    Subclasses implement ``_coeffs(t) -> (s, std, ds, dstd)`` on float64 tensors (std =
    s sigma, d = d/dt), ``_t_of_sigma``, ``_noise_label`` and ``sample_train_t``. Every
    public method takes a tensor (any float dtype, any shape, elementwise) or a Python
    number and returns a tensor of the input's dtype (float64 for numbers).

    Attributes:
        name: the :func:`make_process` name.
        t_min: the smallest positive time of the grids (sigma(t_min) is the lowest noise
            level a sampler visits before the final step onto t = 0); default start of
            :func:`~genzoo.models.diffusion.likelihood.ode_log_prob`.
        t_max: where sampling starts (x_{t_max} ~ the prior).
        prior_data_var: c in the prior variance v = std(t_max)^2 + c s(t_max)^2.
    """

    name: str = "process"
    t_min: float = 0.0
    t_max: float = 1.0
    prior_data_var: float = 0.0

    # -- to implement ----------------------------------------------------------------
    def _coeffs(self, t: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError

    def _t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _noise_label(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sample_train_t(self, n: int, generator: torch.Generator | None = None, device=None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:  # pragma: no cover
        """(n,) training times drawn from the process's training distribution."""
        raise NotImplementedError

    def to_dict(self) -> dict:  # pragma: no cover - interface
        """JSON-able description; ``process_from_dict(p.to_dict())`` rebuilds the process."""
        raise NotImplementedError

    # -- coefficient functions ---------------------------------------------------------
    def _apply(self, t, fn) -> torch.Tensor:
        t = _tensor(t)
        return fn(_hi(t)).to(t.dtype)

    def coeffs(self, t):
        """(s, std, ds/dt, dstd/dt) at t, each a tensor of t's dtype."""
        t = _tensor(t)
        return tuple(c.to(t.dtype) for c in self._coeffs(_hi(t)))

    def s(self, t) -> torch.Tensor:
        """Scale s(t) (= sqrt(alpha_bar) for VP, 1 - t for flow)."""
        return self._apply(t, lambda u: self._coeffs(u)[0])

    def std(self, t) -> torch.Tensor:
        """Noise standard deviation in x-space, s(t) sigma(t) (finite where s = 0)."""
        return self._apply(t, lambda u: self._coeffs(u)[1])

    def ds(self, t) -> torch.Tensor:
        """ds/dt."""
        return self._apply(t, lambda u: self._coeffs(u)[2])

    def dstd(self, t) -> torch.Tensor:
        """d std / dt."""
        return self._apply(t, lambda u: self._coeffs(u)[3])

    def sigma(self, t) -> torch.Tensor:
        """Noise level sigma(t) = std / s of x_hat = x_t / s = x_0 + sigma eps (inf where s = 0)."""
        def f(u):
            s, std, _, _ = self._coeffs(u)
            return std / s
        return self._apply(t, f)

    def dsigma(self, t) -> torch.Tensor:
        """d sigma / dt = (std' s - std s') / s^2."""
        def f(u):
            s, std, ds, dstd = self._coeffs(u)
            return (dstd * s - std * ds) / (s * s)
        return self._apply(t, f)

    def log_snr(self, t) -> torch.Tensor:
        """lambda(t) = log(s^2 / std^2) = -2 log sigma (Kingma et al. 2021)."""
        def f(u):
            s, std, _, _ = self._coeffs(u)
            return 2.0 * (torch.log(s) - torch.log(std))
        return self._apply(t, f)

    def t_of_sigma(self, sigma) -> torch.Tensor:
        """Inverse of sigma(t) (sigma = 0 -> t = 0)."""
        sigma = _tensor(sigma)
        return self._t_of_sigma(_hi(sigma)).to(sigma.dtype)

    def noise_label(self, t) -> torch.Tensor:
        """The time input of eps / x0 / v / velocity networks (EDM Table 1's c_noise of the
        process's column): see each subclass."""
        return self._apply(t, self._noise_label)

    def drift_coefficients(self, t):
        """(a, b) of the probability-flow ODE dx/dt = a x - b D(x; t):
        a = std'/std = s'/s + sigma'/sigma, b = s std'/std - s' = s sigma'/sigma."""
        def fa(u):
            s, std, ds, dstd = self._coeffs(u)
            return dstd / std

        def fb(u):
            s, std, ds, dstd = self._coeffs(u)
            return s * dstd / std - ds
        return self._apply(t, fa), self._apply(t, fb)

    def sde_g2(self, t) -> torch.Tensor:
        """g(t)^2 of the forward SDE dx = (s'/s) x dt + g dW: 2 std std' - 2 std^2 s'/s
        (= 2 s^2 sigma sigma'; infinite where s = 0)."""
        def f(u):
            s, std, ds, dstd = self._coeffs(u)
            return 2.0 * std * dstd - 2.0 * std * std * ds / s
        return self._apply(t, f)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """x_t = s(t) x0 + std(t) eps; t scalar or (B,). Shapes of x0."""
        t = _to_device(_tensor(t), x0.device)
        s = _bcast(self.s(t), x0)
        std = _bcast(self.std(t), x0)
        return s * x0 + std * eps

    # -- prior -----------------------------------------------------------------------
    @property
    def prior_var(self) -> float:
        """Variance v of the prior N(0, v I) of x_{t_max} (see the module docstring)."""
        s, std, _, _ = self._coeffs(torch.tensor(float(self.t_max), dtype=torch.float64))
        return float(std ** 2 + self.prior_data_var * s ** 2)

    def prior_sample(self, shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
        """x_{t_max} ~ N(0, v I) of ``shape`` (B, ...)."""
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return z * math.sqrt(self.prior_var)

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, v I) in nats per example, summed over all but the batch dim. (B,)."""
        v = self.prior_var
        xf = x.reshape(x.shape[0], -1)
        d = xf.shape[1]
        return -0.5 * (xf * xf).sum(1) / v - 0.5 * d * math.log(2.0 * math.pi * v)

    # -- misc ------------------------------------------------------------------------
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _bcast(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Coefficient of shape () or (B,) -> broadcastable to x (B, ...), in x's dtype/device."""
    c = c.to(device=x.device, dtype=x.dtype)
    if c.dim() == 0:
        return c
    return c.reshape(c.shape[0], *([1] * (x.dim() - 1)))


def _uniform(n, generator, device, dtype, lo=0.0, hi=1.0):
    return torch.rand(n, generator=generator, device=device, dtype=dtype) * (hi - lo) + lo


# ---------------------------------------------------------------------------------------
class VP(Process):
    """Variance preserving: DDPM (discrete, Ho et al. 2020 / Nichol & Dhariwal 2021) or the
    VP-SDE (Song et al. 2021). s = sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar)/alpha_bar).

    Args:
        schedule: "linear" (betas = linspace(beta_start, beta_end, N); continuous: the VP-SDE
            with beta_min, beta_max) or "cosine" (Nichol & Dhariwal, s = 0.008, betas
            clipped at 0.999; continuous: alpha_bar(t) = f(t) / f(0)).
        discrete: True: the N-step DDPM table; DDPM index k <-> t = (k + 1) / N, log alpha_bar
            a monotone cubic (PCHIP) in t between knots (t = 0: alpha_bar = 1). False: continuous time.
        num_steps: N, the number of training steps of the discrete table.
        beta_start, beta_end: the linear betas of the discrete table.
        beta_min, beta_max: the continuous VP-SDE (Song et al. 2021).
        cosine_s: the offset s of the cosine schedule.
        t_min: smallest positive grid time (default 1/N discrete, 1e-3 continuous).
        train_eps: continuous training times t ~ U(train_eps, 1) (Song et al. use 1e-5).

    Noise label (network time input): the DDPM index N t - 1 (= k at t_k, so a diffusers /
    DDPM UNet sees its usual timestep) when discrete, 999 t when continuous (EDM Table 1,
    (M - 1) t). Training times: k ~ U{0..N-1} (t = (k+1)/N) when discrete (Ho et al.
    Algorithm 1); U(train_eps, 1) when continuous.
    """

    prior_data_var = 1.0

    def __init__(self, schedule: str = "linear", discrete: bool = True, num_steps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, beta_min: float = 0.1, beta_max: float = 20.0,
                 cosine_s: float = 0.008, t_min: float | None = None, train_eps: float = 1e-5):
        if schedule not in ("linear", "cosine"):
            raise ConfigError(f"unknown VP schedule {schedule!r}{did_you_mean(schedule, ('linear', 'cosine'))}; "
                              "valid: linear, cosine")
        if int(num_steps) < 1:
            raise ConfigError(f"VP num_steps must be >= 1, got {num_steps}")
        self.schedule = schedule
        self.discrete = bool(discrete)
        self.num_steps = int(num_steps)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.cosine_s = float(cosine_s)
        self.train_eps = float(train_eps)
        self.name = "vp" if schedule == "linear" else "vp-cosine"
        self.t_max = 1.0
        self._t_min_arg = t_min
        self.t_min = float(t_min) if t_min is not None else (1.0 / self.num_steps if self.discrete else 1e-3)
        N = self.num_steps
        if schedule == "linear":
            betas = np.linspace(self.beta_start, self.beta_end, N, dtype=np.float64)
        else:
            betas = self._cosine_betas(N, self.cosine_s)
        #: (N,) float64 betas and alphas_cumprod of the discrete table (also kept when discrete=False)
        self.betas = torch.from_numpy(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, 0)
        # knots of log alpha_bar at t_j = j / N, j = 0..N
        self._logab = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-self.betas), 0)])
        self._slopes = self._pchip_slopes(self._logab, N)
        self._cache: dict = {}

    @staticmethod
    def _cosine_betas(N: int, s: float) -> np.ndarray:
        def f(t):
            return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return np.array([min(1 - f((i + 1) / N) / f(i / N), 0.999) for i in range(N)], dtype=np.float64)

    @staticmethod
    def _pchip_slopes(y: torch.Tensor, N: int) -> torch.Tensor:
        """dL/dt at the knots t_j = j / N of L = log alpha_bar: Fritsch & Carlson (1980) monotone
        cubic slopes (harmonic mean of the neighbouring secants; one-sided at the ends)."""
        sec = (y[1:] - y[:-1]) * N  # (N,) secant slopes, all < 0
        d = torch.empty_like(y)
        d[0], d[-1] = sec[0], sec[-1]
        a, b = sec[:-1], sec[1:]
        d[1:-1] = torch.where(a * b > 0, 2.0 * a * b / (a + b), torch.zeros_like(a))
        return d

    def _knots(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = (self._logab.to(device, dtype), self._slopes.to(device, dtype))
        return self._cache[key]

    def _hermite(self, t):
        """(L, dL/dt) of the monotone cubic through the knots, linear beyond [0, 1]."""
        N = self.num_steps
        y, d = self._knots(t.device, t.dtype)
        u = t * N
        j = torch.floor(u).clamp(0, N - 1).long()
        f = (u - j.to(t.dtype)).clamp(0.0, 1.0)
        y0, y1, d0, d1 = y[j], y[j + 1], d[j] / N, d[j + 1] / N
        f2, f3 = f * f, f * f * f
        L = (2 * f3 - 3 * f2 + 1) * y0 + (f3 - 2 * f2 + f) * d0 + (3 * f2 - 2 * f3) * y1 + (f3 - f2) * d1
        dL = ((6 * f2 - 6 * f) * y0 + (3 * f2 - 4 * f + 1) * d0 + (6 * f - 6 * f2) * y1 + (3 * f2 - 2 * f) * d1) * N
        below, above = t < 0, t > 1
        L = torch.where(below, y[0] + d[0] * t, torch.where(above, y[N] + d[N] * (t - 1), L))
        dL = torch.where(below, d[0].expand_as(dL), torch.where(above, d[N].expand_as(dL), dL))
        return L, dL

    def timestep_to_t(self, k):
        """DDPM / diffusers index k in {0..N-1} -> t = (k + 1) / N (float64)."""
        return (_tensor(k).to(torch.float64) + 1.0) / self.num_steps

    def t_to_timestep(self, t):
        """t -> the (real-valued) DDPM index N t - 1."""
        return _tensor(t) * self.num_steps - 1.0

    def _log_alpha_bar(self, t):
        """(L, dL/dt) with L = log alpha_bar(t)."""
        if self.discrete:
            return self._hermite(t)
        d = self.beta_max - self.beta_min
        return -(self.beta_min * t + 0.5 * d * t * t), -(self.beta_min + d * t)

    def _coeffs(self, t):
        if self.schedule == "cosine" and not self.discrete:
            cs = self.cosine_s
            th0 = cs / (1 + cs) * math.pi / 2
            dth = math.pi / (2 * (1 + cs))
            th = (t + cs) / (1 + cs) * math.pi / 2
            s = torch.sin((1.0 - t) / (1 + cs) * math.pi / 2) / math.cos(th0)  # cos(th), exactly 0 at t = 1
            # 1 - s^2 = (cos^2 th0 - cos^2 th) / cos^2 th0 = sin(th - th0) sin(th + th0) / cos^2 th0
            std = torch.sqrt((torch.sin(th - th0) * torch.sin(th + th0)).clamp_min(0.0)) / math.cos(th0)
            ds = -torch.sin(th) * dth / math.cos(th0)
            dstd = -s * ds / std
            return s, std, ds, dstd
        L, dL = self._log_alpha_bar(t)
        s = torch.exp(0.5 * L)
        std = torch.sqrt(-torch.expm1(L))
        ds = 0.5 * s * dL
        dstd = -torch.exp(L) * dL / (2.0 * std)
        return s, std, ds, dstd

    def _t_of_sigma(self, sigma):
        nl = torch.log1p(sigma * sigma)  # -log alpha_bar
        if self.discrete:
            N = self.num_steps
            y, _ = self._knots(sigma.device, sigma.dtype)
            target = -nl  # log alpha_bar, decreasing in t
            j = (torch.searchsorted(-y, nl.contiguous()) - 1).clamp(0, N - 1)
            # Newton on the monotone cubic of [j / N, (j + 1) / N], started at the linear interpolant
            # and kept inside the interval (converges to machine precision in a few steps)
            lo, hi = j.to(sigma.dtype) / N, (j + 1).to(sigma.dtype) / N
            y0, y1 = y[j], y[j + 1]
            t = lo + (target - y0) / (y1 - y0) / N
            for _ in range(8):
                L, dL = self._hermite(t)
                t = torch.minimum(torch.maximum(t - (L - target) / dL, lo), hi)
            # beyond the table: the linear extrapolation of _hermite
            t = torch.where(target < y[N], 1.0 + (target - y[N]) / self._knots(sigma.device, sigma.dtype)[1][N], t)
            return torch.where(sigma == 0, torch.zeros_like(t), t)
        if self.schedule == "cosine":
            cs = self.cosine_s
            th0 = cs / (1 + cs) * math.pi / 2
            th = torch.atan2(torch.sqrt(math.sin(th0) ** 2 + sigma * sigma), torch.full_like(sigma, math.cos(th0)))
            return th * (1 + cs) * 2 / math.pi - cs
        b0, d = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * nl / (b0 + torch.sqrt(b0 * b0 + 2.0 * d * nl))

    def _noise_label(self, t):
        return t * self.num_steps - 1.0 if self.discrete else 999.0 * t

    def sample_train_t(self, n, generator=None, device=None, dtype=torch.float32):
        if self.discrete:
            k = torch.randint(0, self.num_steps, (n,), generator=generator, device=device)
            return ((k + 1).to(torch.float64) / self.num_steps).to(dtype)
        return _uniform(n, generator, device, dtype, self.train_eps, 1.0)

    def to_dict(self):
        d = {"name": self.name, "discrete": self.discrete, "num_steps": self.num_steps}
        if self.schedule == "linear" and self.discrete:
            d.update(beta_start=self.beta_start, beta_end=self.beta_end)
        elif self.schedule == "linear":
            d.update(beta_min=self.beta_min, beta_max=self.beta_max)
        else:
            d.update(cosine_s=self.cosine_s)
        d.update(t_min=self.t_min, train_eps=self.train_eps)
        return d


class VE(Process):
    """Variance exploding (NCSN / VE-SDE): s = 1, sigma(t) = sigma_min (sigma_max/sigma_min)^t
    for t in (0, 1], sigma(0) = 0 (the data).

    Noise label: log(sigma / 2) (EDM Table 1, VE column). Training t ~ U(train_eps, 1)
    (Song et al. 2021). t_min = 1e-5 (Song et al.'s sampling eps; sigma(t_min) ~ sigma_min).
    Prior N(0, sigma_max^2 I).
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5, train_eps: float = 1e-5):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"VE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.t_min, self.t_max, self.train_eps = float(t_min), 1.0, float(train_eps)
        self._logr = math.log(self.sigma_max / self.sigma_min)

    def _coeffs(self, t):
        sig = self.sigma_min * torch.exp(self._logr * t)
        one = torch.ones_like(t)
        return one, torch.where(t == 0, torch.zeros_like(sig), sig), torch.zeros_like(t), sig * self._logr

    def _t_of_sigma(self, sigma):
        t = torch.log(sigma / self.sigma_min) / self._logr
        return torch.where(sigma == 0, torch.zeros_like(t), t)

    def _noise_label(self, t):
        return torch.log(0.5 * self._coeffs(t)[1])

    def sample_train_t(self, n, generator=None, device=None, dtype=torch.float32):
        return _uniform(n, generator, device, dtype, self.train_eps, 1.0)

    def to_dict(self):
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "t_min": self.t_min,
                "train_eps": self.train_eps}


class EDM(Process):
    """Karras et al. 2022: s = 1, sigma(t) = t; t_min = sigma_min, t_max = sigma_max.

    Training sigmas: ln sigma ~ N(P_mean, P_std^2). Noise label (for non-"edm"
    parameterisations): c_noise = ln(sigma) / 4. Prior N(0, sigma_max^2 I). ``rho`` is the
    Karras exponent that ``time_grid(..., "karras", rho=None)`` uses for this process.
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5,
                 P_mean: float = -1.2, P_std: float = 1.2, rho: float = 7.0):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"EDM needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.P_mean, self.P_std, self.rho = float(P_mean), float(P_std), float(rho)
        self.t_min, self.t_max = self.sigma_min, self.sigma_max

    def _coeffs(self, t):
        return torch.ones_like(t), t, torch.zeros_like(t), torch.ones_like(t)

    def _t_of_sigma(self, sigma):
        return sigma

    def _noise_label(self, t):
        return 0.25 * torch.log(t)

    def sample_train_t(self, n, generator=None, device=None, dtype=torch.float32):
        z = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return torch.exp(self.P_mean + self.P_std * z)

    def to_dict(self):
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "sigma_data": self.sigma_data, "P_mean": self.P_mean, "P_std": self.P_std, "rho": self.rho}


class FlowMatching(Process):
    """Linear interpolant x_t = (1 - t) x_0 + t eps (data at t = 0, noise at t = 1):
    s = 1 - t, sigma = t / (1 - t), std = t.

    Args:
        t_max: where sampling starts (1.0: pure noise; s(1) = 0, sigma(1) = inf).
        t_min: smallest positive grid time.
        t_dist: training times, "uniform" (U(train_eps, t_max), Lipman et al.'s U(0, 1) kept
            away from 0) or "logit_normal" (t = sigmoid(m + s z) t_max, Esser et al. 2024, with
            logit_mean, logit_std; clamped below at train_eps).
        train_eps: the smallest training time (1e-5, as VP / VE): at t = 0 std = t = 0 and the
            x0, v and eps parameterisations divide by it (inf / NaN losses).

    Noise label: 1000 t (diffusers' FlowMatchEulerDiscreteScheduler timestep). Prior
    N(0, ((1 - t_max)^2 + t_max^2) I) = N(0, I) at t_max = 1.
    """

    name = "flow"
    prior_data_var = 1.0

    def __init__(self, t_max: float = 1.0, t_min: float = 1e-3, t_dist: str = "uniform",
                 logit_mean: float = 0.0, logit_std: float = 1.0, train_eps: float = 1e-5):
        if not 0 < t_min < t_max <= 1:
            raise ConfigError(f"FlowMatching needs 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        if not 0 < train_eps < t_max:
            raise ConfigError(f"FlowMatching needs 0 < train_eps < t_max, got train_eps={train_eps}, t_max={t_max}")
        self.train_eps = float(train_eps)
        if t_dist not in ("uniform", "logit_normal"):
            raise ConfigError(f"unknown t_dist {t_dist!r}{did_you_mean(t_dist, ('uniform', 'logit_normal'))}; "
                              "valid: uniform, logit_normal")
        self.t_min, self.t_max, self.t_dist = float(t_min), float(t_max), t_dist
        self.logit_mean, self.logit_std = float(logit_mean), float(logit_std)

    def _coeffs(self, t):
        return 1.0 - t, t, -torch.ones_like(t), torch.ones_like(t)

    def _t_of_sigma(self, sigma):
        t = sigma / (1.0 + sigma)
        return torch.where(torch.isinf(sigma), torch.ones_like(t), t)

    def _noise_label(self, t):
        return 1000.0 * t

    def sample_train_t(self, n, generator=None, device=None, dtype=torch.float32):
        if self.t_dist == "uniform":
            return _uniform(n, generator, device, dtype, self.train_eps, self.t_max)
        z = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return (torch.sigmoid(self.logit_mean + self.logit_std * z) * self.t_max).clamp(min=self.train_eps)

    def to_dict(self):
        return {"name": self.name, "t_max": self.t_max, "t_min": self.t_min, "t_dist": self.t_dist,
                "logit_mean": self.logit_mean, "logit_std": self.logit_std, "train_eps": self.train_eps}


# ---------------------------------------------------------------------------------------
PROCESSES = ("vp", "vp-cosine", "ve", "edm", "flow")


def make_process(name: str, **kw) -> Process:
    """Build a process by name: "vp" (DDPM linear; ``discrete=False`` for the VP-SDE),
    "vp-cosine", "ve", "edm", "flow". Keywords go to the class."""
    if isinstance(name, Process):
        return name
    key = str(name).lower()
    try:
        if key == "vp":
            return VP(schedule=kw.pop("schedule", "linear"), **kw)
        if key == "vp-cosine":
            return VP(schedule="cosine", **kw)
        if key == "ve":
            return VE(**kw)
        if key == "edm":
            return EDM(**kw)
        if key in ("flow", "fm", "rectified_flow"):
            return FlowMatching(**kw)
    except TypeError as e:
        raise ConfigError(f"bad argument for process {name!r}: {e}") from None
    raise ConfigError(f"unknown diffusion process {name!r}{did_you_mean(key, PROCESSES)}; valid: {', '.join(PROCESSES)}")


def process_from_dict(d: dict) -> Process:
    """Inverse of ``Process.to_dict``."""
    d = dict(d)
    return make_process(d.pop("name"), **d)


# ---------------------------------------------------------------------------------------
GRID_KINDS = ("uniform", "quadratic", "karras", "leading", "trailing", "linspace")

#: sigma where a Karras grid starts when sigma(t_max) is infinite (flow matching, continuous cosine VP)
KARRAS_FALLBACK_SIGMA_MAX = 80.0


def _karras_sigmas(hi: float, lo: float, m: int, rho: float) -> torch.Tensor:
    """EDM eq. 5: m sigmas from hi to lo, (hi^(1/rho) + i/(m-1) (lo^(1/rho) - hi^(1/rho)))^rho."""
    if m == 1:
        return torch.tensor([hi], dtype=torch.float64)
    i = torch.arange(m, dtype=torch.float64)
    a, b = hi ** (1.0 / rho), lo ** (1.0 / rho)
    return (a + i / (m - 1) * (b - a)) ** rho


def _diffusers_timesteps(N: int, n: int, spacing: str, steps_offset: int = 0) -> np.ndarray:
    """The DDIMScheduler / DDPMScheduler ``timestep_spacing`` rules (diffusers
    ``set_timesteps``; Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps
    are Flawed", Table 2), as int64 indices in descending order."""
    if spacing == "linspace":
        return np.linspace(0, N - 1, n).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = N // n
        return (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) + int(steps_offset)
    # trailing: diffusers' exact expression (ties such as 937.5 round as it rounds them) ...
    ratio = N / n
    k = np.round(np.arange(N, 0, -ratio)).astype(np.int64) - 1
    if len(k) != n:
        # ... except where arange's floating-point end effect yields n + 1 steps (e.g. n = 61)
        k = (np.round(N - np.arange(n) * ratio) - 1).astype(np.int64)
    return k


def time_grid(process: Process, n: int, kind: str = "karras", rho: float | None = 7.0,
              steps_offset: int = 0) -> torch.Tensor:
    """Sampling grid: (n + 1,) float64 times, strictly descending, ending at exactly 0.

    Args:
        process: the process (its t_min, t_max, sigma and t_of_sigma are used).
        n: number of steps (intervals).
        kind:
            "uniform": t_i = t_max (1 - i/n).
            "quadratic": t_i = t_max (1 - i/n)^2 (quadratic in the step index, denser near the
                data). Not DDIM's ``skip_type="quad"`` grid, int((sqrt(0.8 N) i / (n - 1))^2),
                which has this shape but starts at 0.8 N.
            "karras": EDM eq. 5 in sigma between sigma(t_max) and sigma(t_min), n points,
                mapped with t_of_sigma, then 0. Where sigma(t_max) is infinite (flow at t = 1)
                the grid is t_max, then n - 1 Karras points from sigma = 80, then 0.
            "leading", "trailing", "linspace": diffusers' DDIM/DDPM ``timestep_spacing`` (discrete
                VP only): indices k as diffusers' set_timesteps, t = (k + 1) / N, then 0. The
                step after k always goes to the NEXT entry of the grid (diffusers' DDIMScheduler
                uses k - N // n instead, which is wrong for "linspace" and for "trailing" when n
                does not divide N). "leading" does not start at t_max (e.g. k = 900 for n = 10).
        rho: Karras exponent (None: process.rho if it has one, else 7).
        steps_offset: diffusers' ``steps_offset``, added to the "leading" indices.
    """
    n = int(n)
    if n < 1:
        raise ConfigError(f"a time grid needs n >= 1 steps, got {n}")
    if kind not in GRID_KINDS:
        raise ConfigError(f"unknown time grid kind {kind!r}{did_you_mean(kind, GRID_KINDS)}; valid: {', '.join(GRID_KINDS)}")
    T = float(process.t_max)
    i = torch.arange(n + 1, dtype=torch.float64)
    if kind == "uniform":
        ts = T * (1.0 - i / n)
    elif kind == "quadratic":
        ts = T * (1.0 - i / n) ** 2
    elif kind == "karras":
        rho = float(rho if rho is not None else getattr(process, "rho", 7.0))
        lo = float(process.sigma(torch.tensor(float(process.t_min), dtype=torch.float64)))
        hi = float(process.sigma(torch.tensor(T, dtype=torch.float64)))
        if math.isfinite(hi):
            sig = _karras_sigmas(hi, lo, n, rho)
            inner = process.t_of_sigma(sig)
            inner[0] = T
        else:
            sig = _karras_sigmas(max(KARRAS_FALLBACK_SIGMA_MAX, 2 * lo), lo, n - 1, rho) if n > 1 else None
            inner = torch.tensor([T], dtype=torch.float64)
            if sig is not None:
                inner = torch.cat([inner, process.t_of_sigma(sig)])
        ts = torch.cat([inner.to(torch.float64), torch.zeros(1, dtype=torch.float64)])
    else:
        if not (isinstance(process, VP) and process.discrete):
            raise ConfigError(f"time grid {kind!r} is diffusers' timestep spacing for a discrete VP (DDPM) process; "
                              f"use uniform, quadratic or karras for {process.name!r}")
        N = process.num_steps
        if n > N:
            raise ConfigError(f"{kind!r} spacing needs n <= num_steps = {N}, got {n}")
        k = _diffusers_timesteps(N, n, kind, steps_offset)
        if np.any(k >= N) or np.any(k < 0):
            raise ConfigError(f"{kind!r} spacing with steps_offset={steps_offset} leaves the table 0..{N - 1}: {k[:3]}...")
        ts = torch.cat([(torch.from_numpy(k).to(torch.float64) + 1.0) / N, torch.zeros(1, dtype=torch.float64)])
    ts[-1] = 0.0
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ConfigError(f"time grid {kind!r} with n={n} is not strictly descending for {process!r} "
                          "(too many steps for the process's range?)")
    return ts
