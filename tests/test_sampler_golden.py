"""Golden trajectories: genzoo's stochastic Heun (EDM Algorithm 2) and DPM-Solver++(2M) against
independent transcriptions of the reference code, written out below:

* ``edm_sampler`` of NVlabs/edm (``generate.py``; Karras et al. 2022, Algorithm 2), with churn;
* ``sample_dpmpp_2m`` of k-diffusion (crowsonkb/k-diffusion, ``k_diffusion/sampling.py``;
  Lu et al. 2022, Algorithm 2),

both on the EDM process (s = 1, sigma = t) and the Karras rho = 7 grid, which is far from uniform
in log sigma (so that DPM-Solver++'s step ratio r = h_last / h is not 1 and inverting it shows),
with the exact denoiser of Gaussian data N(MU, diag(S0^2)):
D(x; sigma) = (S0^2 x + sigma^2 MU) / (S0^2 + sigma^2), and a fixed noise sequence, in float64.
The transcriptions do not import genzoo's samplers; k-diffusion itself is compared too where it is
installed (skipped otherwise).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genzoo.models.diffusion import EDM, time_grid
from genzoo.models.diffusion.samplers import sample_dpmpp_2m, sample_heun_stochastic

f64 = torch.float64
MU = torch.tensor([0.3, -0.5, 1.0], dtype=f64)
S0 = torch.tensor([0.5, 1.0, 0.2], dtype=f64)
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0


def denoiser(x, sigma):
    """Exact denoiser of N(MU, diag(S0^2)); sigma a scalar or (B,)."""
    sigma = torch.as_tensor(sigma, dtype=f64).reshape(-1, 1)
    return (S0 ** 2 * x + sigma ** 2 * MU) / (S0 ** 2 + sigma ** 2)


def karras_steps(num_steps):
    """NVlabs edm_sampler's grid: num_steps Karras sigmas (EDM eq. 5), then t_N = 0."""
    step_indices = torch.arange(num_steps, dtype=f64)
    t_steps = (SIGMA_MAX ** (1 / RHO) + step_indices / (num_steps - 1)
               * (SIGMA_MIN ** (1 / RHO) - SIGMA_MAX ** (1 / RHO))) ** RHO
    return torch.cat([t_steps, torch.zeros_like(t_steps[:1])])


def edm_sampler_transcribed(latents, t_steps, noises, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0):
    """NVlabs/edm ``edm_sampler`` (generate.py), line by line (net.round_sigma is the identity
    for EDMPrecond; ``randn_like`` returns the next entry of ``noises``, drawn only on the steps
    that churn: on the others edm_sampler multiplies its draw by sqrt(t_hat^2 - t_cur^2) = 0)."""
    num_steps = len(t_steps) - 1
    noises = iter(noises)
    x_next = latents.to(f64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):  # 0, ..., N-1
        x_cur = x_next
        # Increase noise temporarily.
        gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur + (t_hat ** 2 - t_cur ** 2).sqrt() * S_noise * (next(noises) if gamma > 0 else 0.0)
        # Euler step.
        denoised = denoiser(x_hat, t_hat)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        # Apply 2nd order correction.
        if i < num_steps - 1:
            denoised = denoiser(x_next, t_next)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def dpmpp_2m_transcribed(x, sigmas):
    """k-diffusion ``sample_dpmpp_2m``, line by line."""
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def _latents(seed=0, B=5):
    return torch.randn(B, 3, generator=torch.Generator().manual_seed(seed), dtype=f64)


def _noises(seed, n, B=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, generator=g, dtype=f64) for _ in range(n)]


def test_the_transcriptions_grid_is_genzoos_karras_grid():
    for n in (8, 18):
        assert torch.allclose(time_grid(EDM(), n, "karras"), karras_steps(n), rtol=1e-12, atol=0)


# S_churn / N = 80 / 8 = 10 > sqrt(2) - 1: the cap; 2 / 8 = 0.25 < sqrt(2) - 1: below it
@pytest.mark.parametrize("S_churn, S_min, S_max, S_noise", [
    (80.0, 0.0, float("inf"), 1.0),   # churn on every step, at sigma_max too (S_tmax = inf)
    (2.0, 0.0, float("inf"), 1.0),
    (40.0, 0.05, 50.0, 1.003),        # EDM's ImageNet-like window: no churn at sigma_max = 80
])
def test_heun_stochastic_matches_edm_sampler_with_churn(S_churn, S_min, S_max, S_noise):
    n = 8
    t_steps = karras_steps(n)
    z = _latents()
    churning = sum(1 for t in t_steps[:-1] if S_min <= float(t) <= S_max)
    want = edm_sampler_transcribed(z, t_steps, _noises(1, churning), S_churn, S_min, S_max, S_noise)
    # genzoo draws the same noises in the same order: one torch.randn per churning step
    got = sample_heun_stochastic(lambda x, t: denoiser(x, t), z * t_steps[0], t_steps, EDM(),
                                 generator=torch.Generator().manual_seed(1),
                                 S_churn=S_churn, S_tmin=S_min, S_tmax=S_max, S_noise=S_noise)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (got - want).abs().max()
    # and the churn matters: without it the trajectory is another one
    plain = edm_sampler_transcribed(z, t_steps, [])
    assert (plain - want).abs().max() > 1e-2


def test_dpmpp_2m_matches_k_diffusion_on_a_karras_grid():
    sigmas = karras_steps(10)
    h = -torch.diff(sigmas[:-1].log())
    assert (h.max() / h.min()) > 1.5  # far from uniform in lambda: r != 1
    z = _latents(2) * SIGMA_MAX
    want = dpmpp_2m_transcribed(z, sigmas)
    got = sample_dpmpp_2m(lambda x, t: denoiser(x, t), z, sigmas, EDM())
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (got - want).abs().max()
    # stop before the last (first-order, onto 0) step, where every multistep detail still shows
    got_mid = sample_dpmpp_2m(lambda x, t: denoiser(x, t), z, sigmas[:-1], EDM())
    want_mid = dpmpp_2m_transcribed(z, sigmas[:-1])
    assert torch.allclose(got_mid, want_mid, rtol=1e-10, atol=1e-10)


def test_golden_against_k_diffusion_itself():
    ks = pytest.importorskip("k_diffusion.sampling")
    sigmas = ks.get_sigmas_karras(10, SIGMA_MIN, SIGMA_MAX, rho=RHO).to(f64)
    assert torch.allclose(sigmas, karras_steps(10), rtol=1e-6)
    z = _latents(3) * SIGMA_MAX
    model = lambda x, sigma, **kw: denoiser(x, sigma)  # noqa: E731
    ref = ks.sample_dpmpp_2m(model, z.clone(), sigmas, disable=True)
    got = sample_dpmpp_2m(lambda x, t: denoiser(x, t), z, sigmas, EDM())
    assert torch.allclose(got, ref, rtol=1e-8, atol=1e-8)
    # k-diffusion's sample_heun with churn draws torch.randn_like on every step (all churn here)
    torch.manual_seed(4)
    ref = ks.sample_heun(model, z.clone(), sigmas, s_churn=80.0, disable=True)
    torch.manual_seed(4)
    got = sample_heun_stochastic(lambda x, t: denoiser(x, t), z, sigmas, EDM(), generator=torch.default_generator,
                                 S_churn=80.0)
    assert torch.allclose(got, ref, rtol=1e-8, atol=1e-8)
    assert math.isfinite(float(got.abs().max()))
