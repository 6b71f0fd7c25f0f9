"""The diffusion math core against closed forms, hand-derived values and diffusers.

Reference data: a non-isotropic, correlated 2-D Gaussian N(MU, SIGMA), for which, with
x_t = s x_0 + std eps (std = s sigma),
  * the marginal is x_t ~ N(s MU, s^2 SIGMA + std^2 I),
  * the exact denoiser is D(x_t; t) = MU + SIGMA (SIGMA + sigma^2 I)^-1 (x_t / s - MU)
    = MU + s SIGMA (s^2 SIGMA + std^2 I)^-1 (x_t - s MU)   (finite where s = 0),
  * the marginal score is -(s^2 SIGMA + std^2 I)^-1 (x_t - s MU).
Sample statistics are compared in whitened coordinates w = L^-1 (x - MU) (L L^T = SIGMA),
where a perfect sampler gives mean 0 and covariance I; with N samples the standard errors
are 1/sqrt(N) for a mean entry and sqrt(2/N) (diagonal) / sqrt(1/N) (off-diagonal) for a
covariance entry.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genzoo.errors import ConfigError
from genzoo.models.diffusion import (
    EDM,
    GRID_KINDS,
    PARAMS,
    SAMPLERS,
    VP,
    ddim_invert,
    denoise,
    diffusion_loss,
    edm_coefficients,
    eps_from_x0,
    make_process,
    nfe,
    ode_log_prob,
    process_from_dict,
    run_sampler,
    sampler_options,
    score_from_x0,
    time_grid,
    v_from_x0,
    velocity_from_x0,
)
from genzoo.models.diffusion.losses import edm_weight
from genzoo.models.diffusion.precond import raw_from_x0
from genzoo.models.diffusion.samplers import CountNFE, sample_ddim, sample_ddpm

try:  # optional peer
    import diffusers  # noqa: F401
    from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

    HAVE_DIFFUSERS = True
except Exception:  # pragma: no cover - depends on the environment
    HAVE_DIFFUSERS = False
try:  # optional peer (adaptive ODE sampler, likelihood)
    import torchdiffeq  # noqa: F401

    HAVE_TORCHDIFFEQ = True
except ImportError:  # pragma: no cover
    HAVE_TORCHDIFFEQ = False
needs_torchdiffeq = pytest.mark.skipif(not HAVE_TORCHDIFFEQ, reason="torchdiffeq not installed")


def _skip_without_torchdiffeq(name):
    if name == "ode_adaptive" and not HAVE_TORCHDIFFEQ:
        pytest.skip("torchdiffeq not installed")

f64 = torch.float64
MU = torch.tensor([0.6, -0.4], dtype=f64)
SIGMA = torch.tensor([[0.7, 0.3], [0.3, 0.4]], dtype=f64)
LAM, U = torch.linalg.eigh(SIGMA)
WHITEN = torch.linalg.inv(torch.linalg.cholesky(SIGMA))
I2 = torch.eye(2, dtype=f64)

PROCS = {
    "vp": dict(name="vp"),                                   # DDPM, 1000 linear betas
    "vp-cosine": dict(name="vp-cosine"),                     # iDDPM cosine, 1000 steps
    "vp-sde": dict(name="vp", discrete=False),               # Song et al. VP-SDE
    "vp-cosine-cont": dict(name="vp-cosine", discrete=False),  # continuous cosine (s(1) = 0)
    "ve": dict(name="ve"),
    "edm": dict(name="edm"),
    "flow": dict(name="flow"),
}


def proc(key):
    kw = dict(PROCS[key])
    return make_process(kw.pop("name"), **kw)


class GaussDen:
    """Exact denoiser of N(MU, SIGMA) data: D = MU + U diag(s lam / (s^2 lam + std^2)) U^T (x - s MU)."""

    def __init__(self, process):
        self.p = process

    def __call__(self, x, t):
        t = torch.as_tensor(t, device=x.device).to(f64)
        if t.dim() == 1 and bool((t == t[0]).all()):
            t = t[0]  # the samplers pass one time for the whole batch: evaluate the process once
        s, std, _, _ = self.p.coeffs(t)
        s, std = s.reshape(-1, 1), std.reshape(-1, 1)
        w = s * LAM / (s * s * LAM + std * std)
        y = ((x.to(f64) - s * MU) @ U) * w @ U.T + MU
        return y.to(x.dtype)


def marginal(p, t):
    s, std, _, _ = p.coeffs(torch.tensor(float(t), dtype=f64))
    return s * MU, s * s * SIGMA + std * std * I2


def gauss_logpdf(x, m, C):
    return torch.distributions.MultivariateNormal(m, covariance_matrix=C).log_prob(x)


def data(n, gen, dtype=f64):
    z = torch.randn(n, 2, generator=gen, dtype=f64)
    return (MU + z @ torch.linalg.cholesky(SIGMA).T).to(dtype)


def start_samples(p, ts, n, gen, dtype=torch.float32):
    """Draws from the exact marginal at ts[0] (isolates the sampler from the prior's approximation)."""
    m, C = marginal(p, ts[0])
    z = torch.randn(n, 2, generator=gen, dtype=f64)
    return (m + z @ torch.linalg.cholesky(C).T).to(dtype)


def whitened_moments(y):
    w = (y.to(f64) - MU) @ WHITEN.T
    return w.mean(0), torch.cov(w.T)


# --------------------------------------------------------------------------------------
# grids and processes
# --------------------------------------------------------------------------------------
def test_edm_karras_grid_18_steps():
    ts = time_grid(EDM(), 18, "karras")
    assert ts.dtype == f64 and ts.shape == (19,)
    assert ts[0].item() == 80.0
    assert ts[1].item() == pytest.approx(57.585985, abs=1e-6)
    assert ts[-2].item() == pytest.approx(0.002, abs=1e-12)
    assert ts[-1].item() == 0.0


def test_edm_coefficients_at_sigma_1():
    got = [float(c) for c in edm_coefficients(1.0, 0.5)]
    want = [0.2, 0.5 / math.sqrt(1.25), 1 / math.sqrt(1.25), math.log(1.0) / 4]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[:3] == pytest.approx([0.2, 0.447214, 0.894427], abs=1e-6)


@pytest.mark.parametrize("key", list(PROCS))
@pytest.mark.parametrize("kind", GRID_KINDS)
def test_every_grid_descends_to_zero(key, kind):
    p = proc(key)
    spacing = kind in ("leading", "trailing", "linspace")
    for n in (1, 2, 10, 50):
        if spacing and not (isinstance(p, VP) and p.discrete):
            with pytest.raises(ConfigError):
                time_grid(p, n, kind)
            continue
        ts = time_grid(p, n, kind)
        assert ts.dtype == f64 and ts.shape == (n + 1,)
        assert bool((ts[1:] < ts[:-1]).all()), (kind, n, ts)
        assert ts[-1].item() == 0.0
        assert ts[0].item() <= p.t_max
        if kind in ("uniform", "quadratic", "karras", "trailing") or (kind == "linspace" and n > 1):
            assert ts[0].item() == pytest.approx(p.t_max, abs=1e-12)


# diffusers' set_timesteps, derived by hand from its source (N = 1000, steps_offset = 0):
#   linspace: np.linspace(0, N - 1, n).round()[::-1]
#   leading:  (np.arange(n) * (N // n)).round()[::-1] + steps_offset
#   trailing: np.round(np.arange(N, 0, -N / n)) - 1
EXPECTED_TIMESTEPS = {
    ("leading", 10): list(range(900, -1, -100)),
    ("trailing", 10): list(range(999, 0, -100)),
    ("linspace", 10): [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    ("leading", 50): list(range(980, -1, -20)),
    ("trailing", 50): list(range(999, 0, -20)),
    ("linspace", 50): [999, 979, 958, 938, 917, 897, 877, 856, 836, 816, 795, 775, 754, 734, 714, 693, 673, 652,
                       632, 612, 591, 571, 550, 530, 510, 489, 469, 449, 428, 408, 387, 367, 347, 326, 306, 285,
                       265, 245, 224, 204, 183, 163, 143, 122, 102, 82, 61, 41, 20, 0],
}


@pytest.mark.parametrize("spacing,n", list(EXPECTED_TIMESTEPS))
def test_diffusers_timestep_spacings_hardcoded(spacing, n):
    p = make_process("vp")
    ts = time_grid(p, n, spacing)
    k = torch.round(ts[:-1] * 1000 - 1).long().tolist()
    assert k == EXPECTED_TIMESTEPS[(spacing, n)]
    # t = (k + 1) / N exactly, then 0
    assert torch.equal(ts[:-1], (torch.tensor(k, dtype=f64) + 1) / 1000)


@pytest.mark.skipif(not HAVE_DIFFUSERS, reason="diffusers not installed")
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_diffusers_timestep_spacings_library(spacing):
    p = make_process("vp")
    for n in (3, 7, 10, 48, 50, 100, 1000):
        for cls in (DDIMScheduler, DDPMScheduler):
            sch = cls(num_train_timesteps=1000, timestep_spacing=spacing)
            sch.set_timesteps(n)
            ref = sch.timesteps.tolist()
            ours = torch.round(time_grid(p, n, spacing)[:-1] * 1000 - 1).long().tolist()
            assert ours == ref, (cls.__name__, spacing, n)
    # steps_offset (Stable Diffusion's leading spacing uses 1)
    sch = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1)
    sch.set_timesteps(10)
    assert torch.round(time_grid(p, 10, "leading", steps_offset=1)[:-1] * 1000 - 1).long().tolist() == sch.timesteps.tolist()


def test_uniform_1000_steps_is_the_ddpm_chain():
    p = make_process("vp")
    assert torch.allclose(time_grid(p, 1000, "uniform"), time_grid(p, 1000, "leading"), atol=1e-15, rtol=0)


def test_ddpm_alphas_cumprod_and_forward_marginals():
    p = make_process("vp")
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)  # Ho et al. 2020, computed independently
    abar = np.cumprod(1.0 - betas)
    assert np.allclose(p.alphas_cumprod.numpy(), abar, rtol=1e-12, atol=0)
    k = np.arange(1000)
    t = torch.from_numpy((k + 1) / 1000.0)
    assert np.allclose((p.s(t) ** 2).numpy(), abar, rtol=1e-12, atol=0)
    assert np.allclose((p.std(t) ** 2).numpy(), 1 - abar, rtol=1e-10, atol=0)
    assert np.allclose((p.sigma(t) ** 2).numpy(), (1 - abar) / abar, rtol=1e-10, atol=0)
    assert p.s(0.0).item() == 1.0 and p.sigma(0.0).item() == 0.0
    # add_noise is q(x_t | x_0) = N(sqrt(abar) x_0, (1 - abar) I) with the given eps
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 2, generator=g, dtype=f64), torch.randn(5, 2, generator=g, dtype=f64)
    kk = torch.tensor([0, 10, 500, 998, 999])
    xt = p.add_noise(x0, eps, p.timestep_to_t(kk))
    a = torch.from_numpy(abar)[kk][:, None]
    assert torch.allclose(xt, a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-12)
    # ... and the Markov chain x_k = sqrt(1 - beta_k) x_{k-1} + sqrt(beta_k) z has those marginals
    N = 20000
    x_start = torch.tensor([1.5, -0.7], dtype=f64)
    x = x_start.expand(N, 2).clone()
    for i in range(1000):
        x = math.sqrt(1 - betas[i]) * x + math.sqrt(betas[i]) * torch.randn(N, 2, generator=g, dtype=f64)
        if i in (0, 99, 499, 999):
            ti = torch.tensor((i + 1) / 1000, dtype=f64)
            m, sd = p.s(ti) * x_start, p.std(ti)
            # 5 standard errors: mean sd / sqrt(N); variance sd^2 sqrt(2 / N)
            assert (x.mean(0) - m).abs().max() < 5 * sd / math.sqrt(N)
            assert (x.var(0) - sd ** 2).abs().max() < 5 * sd ** 2 * math.sqrt(2 / N)


@pytest.mark.skipif(not HAVE_DIFFUSERS, reason="diffusers not installed")
def test_alphas_cumprod_match_diffusers():
    for key, sched in (("vp", "linear"), ("vp-cosine", "squaredcos_cap_v2")):
        ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=sched)
        p = proc(key)
        assert torch.allclose(p.betas.float(), ref.betas, rtol=1e-6, atol=1e-9)
        assert torch.allclose(p.alphas_cumprod.float(), ref.alphas_cumprod, rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("key", list(PROCS))
def test_process_derivatives_inverse_and_dict(key):
    p = proc(key)
    t = torch.tensor([0.1234567, 0.4567891, 0.7654321], dtype=f64) * p.t_max
    h = 1e-7 * p.t_max
    for f, df in ((p.s, p.ds), (p.std, p.dstd), (p.sigma, p.dsigma)):
        fd = (f(t + h) - f(t - h)) / (2 * h)
        assert torch.allclose(df(t), fd, rtol=1e-5, atol=1e-8), (key, f.__name__)
    assert torch.allclose(p.std(t), p.s(t) * p.sigma(t), rtol=1e-12)
    assert torch.allclose(p.t_of_sigma(p.sigma(t)), t, rtol=1e-9, atol=1e-12)
    assert p.s(0.0).item() == pytest.approx(1.0, abs=1e-15) and p.std(0.0).item() == 0.0
    a, b = p.drift_coefficients(t)
    assert torch.allclose(a, p.ds(t) / p.s(t) + p.dsigma(t) / p.sigma(t), rtol=1e-9)
    assert torch.allclose(b, p.s(t) * p.dsigma(t) / p.sigma(t), rtol=1e-9)
    q = process_from_dict(p.to_dict())
    assert type(q) is type(p) and q.to_dict() == p.to_dict()
    assert torch.equal(q.sigma(t), p.sigma(t))
    tt = p.sample_train_t(1000, generator=torch.Generator().manual_seed(0))
    assert tt.shape == (1000,) and bool(torch.isfinite(tt).all()) and bool((tt > 0).all())


def test_process_tables():
    vp, ve, edm, fl = make_process("vp", discrete=False), make_process("ve"), make_process("edm"), make_process("flow")
    t = torch.tensor([0.25, 0.5], dtype=f64)
    abar = torch.exp(-(0.1 * t + 0.5 * 19.9 * t * t))  # Song et al. 2021, eq. 33
    assert torch.allclose(vp.s(t), abar.sqrt(), rtol=1e-12)
    assert torch.allclose(vp.sigma(t), ((1 - abar) / abar).sqrt(), rtol=1e-12)
    assert torch.allclose(ve.sigma(t), 0.01 * (5000.0 ** t), rtol=1e-12) and ve.sigma(0.0).item() == 0.0
    assert torch.equal(edm.sigma(t), t) and torch.equal(edm.s(t), torch.ones_like(t))
    assert torch.allclose(fl.s(t), 1 - t) and torch.allclose(fl.sigma(t), t / (1 - t))
    assert fl.sigma(1.0).item() == math.inf and fl.std(1.0).item() == 1.0
    assert edm.t_min == 0.002 and edm.t_max == 80.0
    # noise labels
    assert make_process("vp").noise_label(torch.tensor([0.001, 1.0], dtype=f64)).tolist() == pytest.approx([0, 999])
    assert edm.noise_label(torch.tensor(1.0)).item() == 0.0
    assert fl.noise_label(torch.tensor(0.25)).item() == 250.0


@pytest.mark.parametrize("key", list(PROCS))
def test_prior(key):
    p = proc(key)
    expected = {"ve": 50.0 ** 2, "edm": 80.0 ** 2}.get(key, 1.0)
    assert p.prior_var == pytest.approx(expected, rel=1e-12)
    g = torch.Generator().manual_seed(3)
    x = p.prior_sample((20000, 2), generator=g, dtype=f64)
    sd = math.sqrt(expected)
    assert x.mean(0).abs().max() < 5 * sd / math.sqrt(20000)
    assert (x.var(0) / expected - 1).abs().max() < 5 * math.sqrt(2 / 20000)
    ref = torch.distributions.Normal(torch.tensor(0.0, dtype=f64), torch.tensor(sd, dtype=f64)).log_prob(x[:10]).sum(1)
    assert torch.allclose(p.prior_log_prob(x[:10]), ref, rtol=1e-12)


def test_make_process_errors():
    with pytest.raises(ConfigError, match="valid: vp, vp-cosine, ve, edm, flow"):
        make_process("vpp")
    with pytest.raises(ConfigError, match="did you mean 'karras'"):
        time_grid(EDM(), 10, "karas")
    with pytest.raises(ConfigError, match="valid: eta"):
        run_sampler("ddim", GaussDen(EDM()), torch.zeros(2, 2), time_grid(EDM(), 2), EDM(), etaa=0.5)
    with pytest.raises(ConfigError, match="unknown parameterisation"):
        denoise(lambda x, c, y: x, torch.zeros(2, 2), 0.5, EDM(), "score")
    assert sampler_options("heun_stochastic") == ("S_churn", "S_tmin", "S_tmax", "S_noise")
    assert sampler_options("ddpm") == ()


# --------------------------------------------------------------------------------------
# preconditioning
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(PROCS))
@pytest.mark.parametrize("param", PARAMS)
def test_precond_roundtrip_and_inputs(key, param):
    p = proc(key)
    g = torch.Generator().manual_seed(1)
    B = 6
    t = (torch.rand(B, generator=g, dtype=f64) * 0.9 + 0.05) * p.t_max
    x0 = torch.randn(B, 2, generator=g, dtype=f64)
    eps = torch.randn(B, 2, generator=g, dtype=f64)
    xt = p.add_noise(x0, eps, t)
    raw = raw_from_x0(xt, x0, t, p, param)
    seen = {}

    def net(x_in, label, cond):
        seen.update(x_in=x_in, label=label, cond=cond)
        return raw

    x0_hat = denoise(net, xt, t, p, param, cond="c")
    assert torch.allclose(x0_hat, x0, atol=1e-9, rtol=1e-9)
    assert seen["cond"] == "c"
    s, std, ds, dstd = (c[:, None] for c in p.coeffs(t))
    sigma = std / s
    # the regression targets of each parameterisation
    target = {"eps": eps, "x0": x0, "velocity": ds * x0 + dstd * eps,
              "v": (s * eps - std * x0) / (s * s + std * std).sqrt()}
    if param in target:
        assert torch.allclose(raw, target[param], atol=1e-9, rtol=1e-9)
    if param == "edm":
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5 if key != "edm" else p.sigma_data)
        assert torch.allclose(seen["x_in"], c_in * xt / s, rtol=1e-12)
        assert torch.allclose(seen["label"], c_noise[:, 0], rtol=1e-12)
    else:
        scale = (s * s + std * std).sqrt() if param == "v" else torch.ones_like(s)
        assert torch.allclose(seen["x_in"], xt / scale, rtol=1e-12)
        assert torch.allclose(seen["label"], p.noise_label(t), rtol=1e-12)
    # helpers agree with the definitions
    assert torch.allclose(eps_from_x0(xt, x0, t, p), eps, atol=1e-9)
    assert torch.allclose(score_from_x0(xt, x0, t, p), -eps / std, atol=1e-9)
    assert torch.allclose(velocity_from_x0(xt, x0, t, p), ds * x0 + dstd * eps, atol=1e-9)


def test_v_is_salimans_ho_for_vp_and_velocity_is_flow():
    p = make_process("vp")
    t = torch.tensor([0.3, 0.9], dtype=f64)
    x0, eps = torch.randn(2, 2, dtype=f64), torch.randn(2, 2, dtype=f64)
    xt = p.add_noise(x0, eps, t)
    a, sg = p.alphas_cumprod[[299, 899]].sqrt()[:, None], (1 - p.alphas_cumprod[[299, 899]]).sqrt()[:, None]
    assert torch.allclose(v_from_x0(xt, x0, t, p), a * eps - sg * x0, atol=1e-12)
    fl = make_process("flow")
    t = torch.tensor([0.3, 1.0], dtype=f64)
    xt = fl.add_noise(x0, eps, t)
    v = torch.randn(2, 2, dtype=f64)
    assert torch.allclose(denoise(lambda *_: v, xt, t, fl, "velocity"), xt - t[:, None] * v, atol=1e-12)
    with pytest.raises(ConfigError, match="s\\(t\\) > 0"):
        denoise(lambda *_: v, xt, t, fl, "eps")


# --------------------------------------------------------------------------------------
# samplers against the analytic Gaussian
# --------------------------------------------------------------------------------------
# deterministic samplers: (steps, grid, tolerance on every whitened mean / covariance entry)
DETERMINISTIC = {
    "ddim": (1000, {}, 0.02),
    "euler": (1000, {}, 0.02),
    "heun": (100, {}, 0.01),
    "dpmpp_2m": (200, {}, 0.01),
    "ode_adaptive": (1, dict(rtol=1e-6, atol=1e-6), 0.005),
}


@pytest.mark.parametrize("key", list(PROCS))
@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_samplers_gaussian(key, name):
    """A deterministic sampler with the (affine) exact denoiser is an affine map x_T -> A x_T + c,
    so running it on m_T and m_T + L_T e_i (L_T L_T^T = Cov[x_T]) gives the exact mean and
    covariance of its samples, with no Monte Carlo error: only the discretisation error (first
    order: ~ 1/steps, second order ~ 1/steps^2) and the t_min floor (sigma(t_min)^2 / lambda_min
    ~ 5e-4 for VP / VE) remain."""
    _skip_without_torchdiffeq(name)
    p = proc(key)
    steps, opts, tol = DETERMINISTIC[name]
    if key == "ve" and name == "euler":
        steps = 5000  # Euler in t is Euler in log sigma for VE: error ~ (log(5000))^2 / steps
    ts = time_grid(p, steps, "karras")
    m, C = marginal(p, ts[0])
    L = torch.linalg.cholesky(C)
    X = torch.cat([m[None], m + L.T], 0)
    Y = SAMPLERS[name](GaussDen(p), X, ts, p, **opts)
    mean, dY = Y[0], Y[1:] - Y[0]
    cov = dY.T @ dY
    assert (WHITEN @ (mean - MU)).abs().max() < tol
    assert (WHITEN @ cov @ WHITEN.T - I2).abs().max() < tol


STOCHASTIC = {
    "ddpm": (1000, {}),
    "ddim_eta": (500, dict(eta=0.5)),
    "heun_stochastic": (200, dict(S_churn=40.0, S_tmin=0.05, S_tmax=50.0, S_noise=1.0)),
    "euler_maruyama": (1000, {}),
}
N_MC = 20000
ALLOW = 0.02  # discretisation allowance at these step counts (measured <= 0.017 with N = 1e5)


@pytest.mark.parametrize("key", list(PROCS))
@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_stochastic_samplers_gaussian(key, name):
    """N_MC samples: |whitened mean| < 5/sqrt(N) + ALLOW, |whitened cov - I| < 5 sqrt(2/N) + ALLOW."""
    p = proc(key)
    steps, opts = STOCHASTIC[name]
    fn = sample_ddim if name == "ddim_eta" else SAMPLERS[name]
    g = torch.Generator().manual_seed(7)
    ts = time_grid(p, steps, "karras")
    x = start_samples(p, ts, N_MC, g)
    y = fn(GaussDen(p), x, ts, p, generator=g, **opts)
    mean, cov = whitened_moments(y)
    assert mean.abs().max() < 5 / math.sqrt(N_MC) + ALLOW, mean
    assert (cov - I2).abs().max() < 5 * math.sqrt(2 / N_MC) + ALLOW, cov


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_reproduce_and_count_nfe(name):
    _skip_without_torchdiffeq(name)
    p = make_process("vp")
    ts = time_grid(p, 10, "karras")
    x = p.prior_sample((8, 2), generator=torch.Generator().manual_seed(0))
    outs = []
    for seed in (1, 1, 2):
        den = CountNFE(GaussDen(p))
        outs.append(SAMPLERS[name](den, x, ts, p, generator=torch.Generator().manual_seed(seed)))
        if nfe(name, 10) is not None:
            assert den.n == nfe(name, 10)
    assert torch.equal(outs[0], outs[1])
    stochastic = name in ("ddpm", "euler_maruyama")
    assert torch.equal(outs[0], outs[2]) != stochastic
    # heun_stochastic with churn draws noise, and reproduces
    a, b = (SAMPLERS["heun_stochastic"](GaussDen(p), x, ts, p, generator=torch.Generator().manual_seed(5), S_churn=10.0)
            for _ in range(2))
    assert torch.equal(a, b)


def test_nfe_table():
    assert [nfe(n, 18) for n in SAMPLERS] == [18, 18, 18, 35, 35, 18, 18, None]


@pytest.mark.parametrize("key", list(PROCS))
def test_ddim_eta0_deterministic_and_invertible(key):
    p = proc(key)
    den = GaussDen(p)
    ts = time_grid(p, 50, "karras")
    x0 = data(16, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    xT = ddim_invert(den, x0, ts, p, iters=20)
    back = sample_ddim(den, xT, ts, p, eta=0.0, generator=g)
    assert torch.equal(g.get_state(), state)  # eta = 0 draws nothing
    assert (back - x0).abs().max() < 1e-4
    assert torch.equal(back, sample_ddim(den, xT, ts, p, eta=0.0, generator=torch.Generator().manual_seed(9)))
    # the classic one-evaluation inversion is only approximate, and the encoding is noise-like
    rough = sample_ddim(den, ddim_invert(den, x0, ts, p, iters=1), ts, p)
    assert (rough - x0).abs().max() > (back - x0).abs().max()


@pytest.mark.skipif(not HAVE_DIFFUSERS, reason="diffusers not installed")
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_steps_match_diffusers(spacing):
    """One genzoo DDPM / DDIM step from each grid time to the next equals diffusers' step on the
    same eps-model output and the same generator seed. DDIM is compared where diffusers'
    prev_timestep = t - N // n is the next grid entry (leading, trailing with n | N);
    for "linspace" diffusers' DDIMScheduler steps to t - N // n (not a grid time: its bug)."""
    p = make_process("vp")
    g = torch.Generator().manual_seed(0)
    for n in (10, 50):
        ts = time_grid(p, n, spacing)
        ddpm = DDPMScheduler(num_train_timesteps=1000, clip_sample=False, timestep_spacing=spacing)
        ddpm.set_timesteps(n)
        ddim = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, timestep_spacing=spacing)
        ddim.set_timesteps(n)
        for i, k in enumerate(ddpm.timesteps.tolist()):
            x = torch.randn(4, 2, generator=g)
            eps = torch.randn(4, 2, generator=g)
            den = lambda xt, t: denoise(lambda *_: eps, xt, t, p, "eps")  # noqa: E731
            pair = ts[i:i + 2]
            ours = sample_ddpm(den, x, pair, p, generator=torch.Generator().manual_seed(i))
            ref = ddpm.step(eps, k, x, generator=torch.Generator().manual_seed(i)).prev_sample
            assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5), (spacing, n, k)
            if spacing == "linspace":
                continue
            for eta in (0.0, 0.5, 1.0):
                ours = sample_ddim(den, x, pair, p, eta=eta, generator=torch.Generator().manual_seed(i))
                ref = ddim.step(eps, k, x, eta=eta, generator=torch.Generator().manual_seed(i)).prev_sample
                assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5), (spacing, n, k, eta)


@pytest.mark.skipif(not HAVE_DIFFUSERS, reason="diffusers not installed")
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_euler_matches_diffusers_flow_match_scheduler(shift):
    """sigma_diffusers = t_genzoo, timesteps = 1000 t = the flow noise label, model output = genzoo
    velocity (noise - x_0): a whole Euler chain agrees with FlowMatchEulerDiscreteScheduler."""
    fl = make_process("flow")
    sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sch.set_timesteps(12)
    net = lambda x, label, cond: torch.tanh(x) * (label[:, None] / 1000.0) - 0.3 * x  # noqa: E731
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    ref = x.clone()
    for k in sch.timesteps:
        ref = sch.step(net(ref, k.expand(5), None), k, ref).prev_sample
    ts = sch.sigmas.to(f64)
    assert ts[-1].item() == 0.0
    ours = SAMPLERS["euler"](lambda xt, t: denoise(net, xt, t, fl, "velocity"), x, ts, fl)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------
# likelihood
# --------------------------------------------------------------------------------------
@needs_torchdiffeq
@pytest.mark.parametrize("key", list(PROCS))
def test_ode_log_prob_matches_closed_form(key):
    """Exact trace: |ode_log_prob - log N(x; s mu, s^2 Sigma + std^2 I) at t_min| < 5e-4 nats with
    the exact p_{t_max} as prior; with the default prior the error adds the prior's
    approximation (VE / EDM ignore the data's share of the variance: < 0.05 nats here).
    Hutchinson (Rademacher, one fixed probe per trajectory) is unbiased: its average over
    400 probes is within 5 standard errors (+ 2e-3) of the exact-trace value."""
    p = proc(key)
    den = GaussDen(p)
    x = data(6, torch.Generator().manual_seed(4))
    m0, C0 = marginal(p, p.t_min)
    mT, CT = marginal(p, p.t_max)
    want = gauss_logpdf(x, m0, C0)
    exact = ode_log_prob(den, x, p, exact_trace=True, rtol=1e-6, atol=1e-6, prior=lambda z: gauss_logpdf(z, mT, CT))
    assert (exact - want).abs().max() < 5e-4, (exact, want)
    default = ode_log_prob(den, x, p, exact_trace=True, rtol=1e-6, atol=1e-6)
    assert (default - want).abs().max() < 0.05
    # Hutchinson: 400 independent single-probe estimates at one point
    xr = x[:1].expand(400, 2)
    est = ode_log_prob(den, xr, p, num_probes=1, rtol=1e-6, atol=1e-6, generator=torch.Generator().manual_seed(0),
                       prior=lambda z: gauss_logpdf(z, mT, CT))
    se = est.std() / math.sqrt(400)
    assert se < 0.1
    assert (est.mean() - want[0]).abs() < 5 * se + 2e-3
    multi = ode_log_prob(den, x[:2], p, num_probes=8, generator=torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(multi).all()) and (multi - want[:2]).abs().max() < 1.0


# --------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------
def test_losses_hand_values():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 2, generator=g, dtype=f64), torch.randn(4, 2, generator=g, dtype=f64)
    zero = lambda x, label, cond: torch.zeros_like(x)  # noqa: E731
    vp = make_process("vp", discrete=False)
    t = torch.full((4,), 0.5, dtype=f64)
    # simple: eps_hat = 0 -> mean(eps^2)
    got = diffusion_loss(zero, x0, vp, "eps", "simple", t=t, noise=eps)
    assert torch.allclose(got, (eps ** 2).mean(1), rtol=1e-12)
    # edm: D = 0 (x0 param) -> lambda(sigma) mean(x0^2), lambda = (sigma^2 + 0.25) / (0.5 sigma)^2
    edm = EDM()
    sig = torch.tensor([0.1, 0.7, 2.0, 30.0], dtype=f64)
    got = diffusion_loss(zero, x0, edm, "x0", "edm", t=sig, noise=eps)
    assert torch.allclose(got, (sig ** 2 + 0.25) / (0.5 * sig) ** 2 * (x0 ** 2).mean(1), rtol=1e-12)
    assert torch.allclose(edm_weight(torch.tensor(1.0)), torch.tensor(5.0))
    # cfm on flow: target eps - x0
    fl = make_process("flow")
    got = diffusion_loss(zero, x0, fl, "velocity", "cfm", t=torch.full((4,), 0.3, dtype=f64), noise=eps)
    assert torch.allclose(got, ((eps - x0) ** 2).mean(1), rtol=1e-12)
    # cfm on the VP-SDE: target s' x0 + std' eps with s = exp(-(0.1 t + 9.95 t^2) / 2)
    tt = 0.5
    s = math.exp(-(0.1 * tt + 9.95 * tt * tt) / 2)
    ds = s * -(0.1 + 19.9 * tt) / 2
    dstd = -s * ds / math.sqrt(1 - s * s)
    got = diffusion_loss(zero, x0, vp, "velocity", "cfm", t=t, noise=eps)
    assert torch.allclose(got, ((ds * x0 + dstd * eps) ** 2).mean(1), rtol=1e-10)
    # EDM: the default draw is log-normal sigma -> finite, positive
    got = diffusion_loss(zero, x0, edm, "edm", "edm", generator=g)
    assert got.shape == (4,) and bool(torch.isfinite(got).all())
    with pytest.raises(ConfigError):
        diffusion_loss(zero, x0, edm, "edm", "dsm")


def _toy_net(p, param, theta):
    """(1 + theta) x the Bayes-optimal raw output (theta = 0 minimises every loss). The net
    recovers (x_t, t) from its inputs (x_in, noise label) by inverting the preconditioning."""
    den = GaussDen(p)
    if isinstance(p, VP):
        t_of_label = (lambda lab: (lab + 1) / p.num_steps) if p.discrete else (lambda lab: lab / 999)
    else:
        t_of_label = lambda lab: lab / 1000  # noqa: E731 - flow

    def net(x_in, label, cond):
        if param == "edm":
            sigma = torch.exp(4 * label)
            t = p.t_of_sigma(sigma)
            xt = x_in * torch.sqrt(sigma ** 2 + 0.25)[:, None] * p.s(t)[:, None]
        else:
            t = t_of_label(label)
            s, std = p.s(t)[:, None], p.std(t)[:, None]
            xt = x_in * torch.sqrt(s * s + std * std) if param == "v" else x_in
        return (1 + theta) * raw_from_x0(xt, den(xt, t), t, p, param)

    return net


@pytest.mark.parametrize("loss,param,key", [("simple", "eps", "vp"), ("simple", "v", "vp-sde"),
                                            ("edm", "edm", "edm"), ("edm", "edm", "vp"), ("cfm", "velocity", "flow"),
                                            ("cfm", "velocity", "vp-sde")])
def test_losses_finite_with_right_gradient_direction(loss, param, key):
    p = proc(key)
    x0 = data(4096, torch.Generator().manual_seed(5))
    grads = []
    for th in (-0.3, 0.3):
        theta = torch.tensor(th, dtype=f64, requires_grad=True)
        val = diffusion_loss(_toy_net(p, param, theta), x0, p, param, loss, generator=torch.Generator().manual_seed(6))
        assert val.shape == (4096,) and bool(torch.isfinite(val).all())
        val.mean().backward()
        grads.append(theta.grad.item())
    assert grads[0] < 0 < grads[1], grads  # descent moves theta towards the optimum 0


def test_dsm_equals_esm_plus_constant_and_its_optimum_is_the_score():
    """Vincent 2011: J_DSM(f) = E 1/2 |f(x_t) - grad log q(x_t | x_0)|^2 and J_ESM(f) =
    E 1/2 |f(x_t) - grad log p_t(x_t)|^2 differ by a constant independent of f (here
    C = 1/2 (D / std^2 - tr C_t^-1)); the minimiser of the DSM regression is the marginal score."""
    p = make_process("vp", discrete=False)
    t = torch.tensor(0.3, dtype=f64)
    M = 200000
    g = torch.Generator().manual_seed(11)
    x0 = data(M, g)
    eps = torch.randn(M, 2, generator=g, dtype=f64)
    xt = p.add_noise(x0, eps, t)
    m, C = marginal(p, t)
    Ci = torch.linalg.inv(C)
    true = -(xt - m) @ Ci.T
    # Tweedie: the exact denoiser gives the marginal score; the true x_0 the conditional one
    assert torch.allclose(score_from_x0(xt, GaussDen(p)(xt, t), t, p), true, atol=1e-9)
    cond = score_from_x0(xt, x0, t, p)
    assert torch.allclose(cond, -eps / p.std(t), atol=1e-9)
    cands = {"f1": -xt, "f2": true + 0.3 * xt @ torch.tensor([[0.2, -0.5], [0.1, 0.4]], dtype=f64).T + 0.2}
    diffs, esm = {}, {}
    for k, f in cands.items():
        dsm_i = 0.5 * ((f - cond) ** 2).sum(1)
        esm_i = 0.5 * ((f - true) ** 2).sum(1)
        diffs[k] = dsm_i - esm_i
        esm[k] = esm_i.mean()
    const = 0.5 * (2 / p.std(t) ** 2 - torch.trace(Ci))
    d = diffs["f1"] - diffs["f2"]
    se = d.std() / math.sqrt(M)
    assert (d.mean()).abs() < 5 * se
    for k in cands:
        assert (diffs[k].mean() - const).abs() < 5 * diffs[k].std() / math.sqrt(M)
    assert (esm["f1"] - esm["f2"]).abs() > 100 * se  # the two candidates are far apart in ESM
    # least squares on the DSM regression (the DSM loss restricted to affine f) -> the marginal score
    X = torch.cat([xt, torch.ones(M, 1, dtype=f64)], 1)
    beta = torch.linalg.lstsq(X, cond).solution  # (3, 2)
    resid = cond - X @ beta
    cov_beta = torch.linalg.inv(X.T @ X)
    se_beta = torch.sqrt(torch.diag(cov_beta)[:, None] * resid.var(0)[None, :])
    want = torch.cat([-Ci.T, (Ci @ m)[None]], 0)
    assert ((beta - want).abs() < 5 * se_beta).all(), (beta, want, se_beta)


@pytest.mark.parametrize("t_dist", ["uniform", "logit_normal"])
def test_flow_matching_training_times_stay_away_from_zero(monkeypatch, t_dist):
    """t = 0 (U[0, 1) can draw it; sigmoid of a very negative logit underflows to it) made the
    x0 / v / eps parameterisations divide by std = t = 0: the training times are >= train_eps."""
    p = make_process("flow", t_dist=t_dist)
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(a[0], dtype=k.get("dtype") or torch.float32))
    monkeypatch.setattr(torch, "randn", lambda *a, **k: torch.full(a[0] if isinstance(a[0], tuple) else (a[0],), -1e3,
                                                                  dtype=k.get("dtype") or torch.float32))
    t = p.sample_train_t(4)
    x0 = torch.full((4, 2), 0.5)
    eps = torch.ones(4, 2)

    def net(x, label, cond=None):
        return 0.1 * x

    for param in PARAMS:
        for loss in ("simple", "cfm", "edm"):
            if loss == "edm":
                val = diffusion_loss(net, x0, p, param, loss, t=p.sample_train_t(4), noise=eps)
            else:
                val = diffusion_loss(net, x0, p, param, loss, noise=eps)
            assert torch.isfinite(val).all(), (param, loss, val)
    assert float(t.min()) > 0
    assert float(t.min()) == pytest.approx(p.train_eps) and p.train_eps == 1e-5
    assert process_from_dict(p.to_dict()).train_eps == p.train_eps
