"""VAE (Kingma & Welling 2014) with the IWAE bound (Burda et al. 2016), its decoder
likelihoods (Bernoulli, Gaussian, PixelCNN++ discretised logistic) and the small blocks.

Fast (CPU, a few seconds): tiny models on 8x8 / 2x2 shapes. The one trained model (an
MLP VAE on sklearn's 8x8 digits, *dynamically* binarised) trains for a few hundred
steps with a plain torch loop on ``model.loss``.
"""
from __future__ import annotations

import math
import time

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

import genzoo
from genzoo.data import DataSpec
from genzoo.errors import ConfigError, DataError, GenzooError
from genzoo.models.vae import VAE, kl_normal_std_normal
from genzoo.nn.blocks import ConvDecoder, ConvEncoder, mlp
from genzoo.nn.likelihoods import (
    BernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    discretized_logistic_log_prob,
    make_likelihood,
    quantize_to_grid,
)

SHAPE = (1, 8, 8)
ARCHS = ("mlp", "conv")
DECODERS = ("bernoulli", "gaussian", "logistic")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(arch="mlp", decoder="bernoulli", seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(shape=SHAPE, arch=arch, decoder=decoder, latent_dim=4, hidden=32, depth=1, channels=8)
    args.update(kw)
    return genzoo.build("vae", **args)


def data_for(decoder: str, n: int = 6, seed: int = 0, shape=SHAPE) -> torch.Tensor:
    g = gen(seed)
    if decoder == "bernoulli":
        return (torch.rand((n, *shape), generator=g) < 0.3).float()
    if decoder == "gaussian":
        return torch.rand((n, *shape), generator=g) * 2 - 1
    k = torch.randint(0, 256, (n, *shape), generator=g).float()  # 256-level grid in [-1, 1]
    return k * (2.0 / 255.0) - 1.0


def on_grid(x: torch.Tensor, levels: int = 256) -> bool:
    k = (x + 1.0) * (levels - 1) / 2.0
    return bool(((k - k.round()).abs() < 1e-4).all() and (x >= -1).all() and (x <= 1).all())


# ------------------------------------------------------------------ build, loss, sample
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_loss_is_negative_elbo_per_example(arch, decoder):
    model = tiny(arch, decoder)
    assert isinstance(model, VAE) and model.likelihood == "bound"
    assert model.discrete_likelihood == (decoder != "gaussian")
    x = data_for(decoder)
    out = model.loss(x, generator=gen(1))
    assert {"loss", "rec", "kl", "nelbo"} <= set(out)
    for k, v in out.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    assert out["kl"] >= 0
    torch.testing.assert_close(out["loss"], out["rec"] + out["kl"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["nelbo"], out["loss"])
    # nats per example: the mean over the batch of -ELBO(x_i), same reparameterisation draw
    elbo = model.elbo(x, generator=gen(1))
    assert elbo.shape == (x.shape[0],)
    torch.testing.assert_close(out["loss"], -elbo.mean(), rtol=1e-6, atol=1e-5)
    # the KL is the analytic one of the posterior
    mu, logvar = model.posterior(x)
    torch.testing.assert_close(out["kl"], kl_normal_std_normal(mu, logvar).mean())
    # (x, y) batches are accepted, gradients are finite
    out2 = model.loss((x, torch.zeros(len(x))), generator=gen(1))
    torch.testing.assert_close(out2["loss"], out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_kl_weight_changes_loss_not_nelbo():
    a, b = tiny(kl_weight=1.0), tiny(kl_weight=0.25)
    x = data_for("bernoulli")
    oa, ob = a.loss(x, generator=gen(2)), b.loss(x, generator=gen(2))
    torch.testing.assert_close(ob["loss"], ob["rec"] + 0.25 * ob["kl"])
    torch.testing.assert_close(ob["nelbo"], oa["nelbo"])
    assert not torch.allclose(ob["loss"], oa["loss"])


def test_wrong_batch_shape_and_loss_options():
    model = tiny()
    with pytest.raises(DataError, match="shape"):
        model.loss(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ConfigError, match="unknown loss option"):
        model.loss(data_for("bernoulli"), player="generator")


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_sample_shapes_domains_and_reproducibility(arch, decoder):
    model = tiny(arch, decoder)
    n = 32
    draw = model.sample(n, generator=gen(5), mean=False)
    mean = model.sample(n, generator=gen(5), mean=True)
    default = model.sample(n, generator=gen(5))
    assert draw.shape == mean.shape == default.shape == (n, *SHAPE)
    assert torch.isfinite(draw).all() and torch.isfinite(mean).all()
    torch.testing.assert_close(default, mean)  # documented default: the decoder mean
    if decoder == "bernoulli":
        assert set(draw.unique().tolist()) <= {0.0, 1.0}
        assert ((mean >= 0) & (mean <= 1)).all()
        assert not set(mean.unique().tolist()) <= {0.0, 1.0}  # probabilities, not draws
    elif decoder == "gaussian":
        assert ((draw >= -1) & (draw <= 1)).all() and ((mean >= -1) & (mean <= 1)).all()
    else:
        assert on_grid(draw)
        assert ((mean >= -1) & (mean <= 1)).all()
    # a fixed generator reproduces exactly; another seed differs; the global RNG is untouched
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    again = model.sample(n, generator=gen(5), mean=False)
    assert torch.equal(torch.rand(3), ref)
    assert torch.equal(again, draw)
    assert not torch.equal(model.sample(n, generator=gen(6), mean=False), draw)


def test_sample_temperature():
    model = tiny("mlp", "gaussian")
    n, L = 8, model.latent_dim
    z = torch.randn((n, L), generator=gen(9))
    for t in (0.0, 0.5, 1.0, 2.0):
        s = model.sample(n, generator=gen(9), temperature=t)
        torch.testing.assert_close(s, model.decode(t * z))
    cold = model.sample(n, generator=gen(9), temperature=0.0)
    assert torch.allclose(cold, cold[:1].expand_as(cold))  # every sample is the decoder at z = 0
    torch.testing.assert_close(cold[0], model.decode(torch.zeros(1, L))[0])
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        model.sample(2, temprature=0.5)


def test_gaussian_vector_samples_not_squashed_into_unit_square():
    """Vector data (e.g. the 8gaussians toy, spread over [-4, 4]^2) has no [-1, 1] range:
    the Gaussian decoder's means and draws must not be clamped there (images still are)."""
    torch.manual_seed(0)
    model = genzoo.build("vae", shape=(2,), arch="mlp", decoder="gaussian", latent_dim=2, hidden=16, depth=1)
    last = model.decoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([3.0, -3.0, math.log(0.1), math.log(0.1)]))  # (mean, log-scale) x 2 dims
    m = model.sample(200, generator=gen(0))
    d = model.sample(200, generator=gen(0), mean=False)
    torch.testing.assert_close(m, torch.tensor([3.0, -3.0]).expand(200, 2))
    torch.testing.assert_close(d.mean(0), torch.tensor([3.0, -3.0]), atol=0.05, rtol=0)
    assert 0.07 < d.std(0).min() and d.std(0).max() < 0.13
    img = tiny("mlp", "gaussian")
    with torch.no_grad():
        img.decoder[-1].bias[:64] = 3.0
    assert img.sample(4, generator=gen(0), mean=False).max() <= 1.0
    assert img.sample(4, generator=gen(0)).max() <= 1.0


# ------------------------------------------------------------------ log_prob (IWAE bound)
@pytest.mark.parametrize("decoder", DECODERS)
def test_iwae_k1_is_the_monte_carlo_elbo(decoder):
    model = tiny("mlp", decoder)
    x = data_for(decoder)
    with torch.no_grad():
        lp = model.log_prob(x, k=1, generator=gen(3))
        assert lp.shape == (x.shape[0],)
        # by hand, the same draw eps: log p(x|z) + log p(z) - log q(z|x)
        mu, logvar = model.posterior(x)
        eps = torch.randn(mu.shape, generator=gen(3))
        std = torch.exp(0.5 * logvar)
        z = mu + std * eps
        rec = model.lik.log_prob(model.decode_params(z), x)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q = Normal(mu, std).log_prob(z).sum(-1)
        torch.testing.assert_close(lp, rec + log_pz - log_q, rtol=0, atol=1e-5)
        # = elbo() with the same draw once its analytic KL is swapped for the Monte Carlo one
        elbo = model.elbo(x, generator=gen(3))
        torch.testing.assert_close(lp, elbo + kl_normal_std_normal(mu, logvar) + log_pz - log_q, rtol=0, atol=1e-4)
        # the same generator reproduces; the Monte Carlo KL averages to the analytic KL
        torch.testing.assert_close(model.log_prob(x, k=1, generator=gen(3)), lp, rtol=0, atol=0)
        many = torch.stack([model.log_prob(x, k=1, generator=gen(100 + i)) for i in range(400)])
        e = torch.stack([model.elbo(x, generator=gen(100 + i)) for i in range(400)])
        torch.testing.assert_close(many.mean(0), e.mean(0), rtol=0, atol=0.1 * e.std(0).max() + 0.05)


@pytest.mark.parametrize("arch", ARCHS)
def test_log_prob_chunks_do_not_change_the_value(arch):
    model = tiny(arch, "logistic")
    x = data_for("logistic", n=3)
    with torch.no_grad():
        ref = model.log_prob(x, k=37, generator=gen(4))
        for chunk in (1, 5, 36, 37, 1000):
            # identical draws; only the decoder's batch size changes (bitwise equal on this CPU,
            # the tolerance leaves room for BLAS kernels that round differently by batch size)
            torch.testing.assert_close(model.log_prob(x, k=37, chunk=chunk, generator=gen(4)), ref, rtol=1e-6, atol=1e-5)
        assert not torch.allclose(model.log_prob(x, k=37, generator=gen(5)), ref)
    with pytest.raises(ConfigError, match="k >= 1"):
        model.log_prob(x, k=0)
    with pytest.raises(ConfigError, match="did you mean 'chunk'"):
        model.log_prob(x, chunks=4)


@pytest.fixture(scope="module")
def trained_digits_vae():
    """MLP VAE trained ~350 steps (Adam) on dynamically binarised 8x8 digits."""
    from genzoo.data import load_dataset

    train = load_dataset("digits", "train", binarize="dynamic")
    test = load_dataset("digits", "test", binarize="dynamic")
    assert train.spec.binarization == "dynamic"
    torch.manual_seed(0)
    model = genzoo.build("vae", shape=SHAPE, arch="mlp", decoder="bernoulli", latent_dim=8, hidden=128, depth=1)
    model.check_data(train.spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = gen(0)
    x_test, _ = test.get_batch(torch.arange(200), gen(1))
    with torch.no_grad():
        before = model.loss(x_test, generator=gen(2))["nelbo"].item()
    t0 = time.perf_counter()
    for _ in range(350):
        idx = torch.randint(0, len(train), (64,), generator=g)
        x, _ = train.get_batch(idx, g)  # a fresh binarisation every time
        loss = model.loss(x, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        after = model.loss(x_test, generator=gen(2))["nelbo"].item()
    return model, x_test, before, after, seconds


def test_training_lowers_the_negative_elbo(trained_digits_vae):
    model, x_test, before, after, seconds = trained_digits_vae
    assert seconds < 30
    assert before > 40.0  # about 64 log 2 = 44.4 nats at initialisation
    assert after < before - 10.0, (before, after)


def test_iwae_bound_rises_with_k(trained_digits_vae):
    model, x, *_ = trained_digits_vae
    with torch.no_grad():
        # average over test images and over independent draws (fewer for larger k: less noise)
        reps = {1: 20, 10: 5, 100: 2}
        L = {k: torch.stack([model.log_prob(x, k=k, generator=gen(100 * k + r)) for r in range(n)]).mean().item()
             for k, n in reps.items()}
        elbo = model.elbo(x, generator=gen(7)).mean().item()
    assert L[1] < L[10] < L[100] < 0, L
    assert L[10] - L[1] > 0.1 and L[100] - L[1] > 0.2, L
    assert abs(L[1] - elbo) < 1.0  # same bound, Monte Carlo vs analytic KL


# ------------------------------------------------------------------ closed forms
def test_kl_matches_torch_distributions():
    g = gen(0)
    mu = torch.randn(5, 7, generator=g) * 2
    logvar = torch.randn(5, 7, generator=g) * 2
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_normal_std_normal(mu, logvar), ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(kl_normal_std_normal(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_bernoulli_likelihood_matches_torch():
    g = gen(0)
    logits = torch.randn(4, 1, 1, 8, 8, generator=g) * 5
    logits[0, 0, 0, 0, :4] = torch.tensor([40.0, -40.0, 80.0, -80.0])
    x = (torch.rand(4, 1, 8, 8, generator=g) < 0.5).float()
    lik = BernoulliLikelihood()
    ref = Bernoulli(logits=logits[:, 0]).log_prob(x).reshape(4, -1).sum(-1)
    torch.testing.assert_close(lik.log_prob(logits, x), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(lik.mean(logits), torch.sigmoid(logits[:, 0]))
    # draws follow the probabilities
    p = torch.tensor([0.1, 0.5, 0.9])
    draws = lik.sample(torch.logit(p).reshape(1, 1, 3).expand(20000, 1, 3).contiguous(), gen(1))
    torch.testing.assert_close(draws.mean(0), p, rtol=0, atol=0.015)


def test_gaussian_likelihood_matches_torch_with_clamped_log_scale():
    g = gen(0)
    params = torch.randn(4, 2, 3, 5, generator=g)
    params[:, 1] *= 6  # some log-scales outside [-7, 2]
    x = torch.randn(4, 3, 5, generator=g)
    lik = make_likelihood("gaussian")
    assert isinstance(lik, GaussianLikelihood) and lik.num_params == 2 and not lik.discrete
    ref = Normal(params[:, 0], params[:, 1].clamp(-7, 2).exp()).log_prob(x).reshape(4, -1).sum(-1)
    torch.testing.assert_close(lik.log_prob(params, x), ref, rtol=1e-5, atol=1e-4)
    big = torch.tensor([[[5.0], [10.0]]])  # mean 5, log-scale 10 -> clamped to 2
    torch.testing.assert_close(lik.log_prob(big, torch.zeros(1, 1)), Normal(5.0, math.exp(2.0)).log_prob(torch.zeros(1)))
    d = lik.sample(torch.tensor([[[0.5], [math.log(0.2)]]]).expand(20000, 2, 1).contiguous(), gen(2))
    assert abs(d.mean() - 0.5) < 0.01 and abs(d.std() - 0.2) < 0.01


def _logistic_params():
    """A grid of (mean, log-scale): centre, edges, outside [-1, 1], tiny and large scales."""
    means = torch.tensor([-3.0, -1.0, -0.999, -0.5, 0.0, 0.013, 0.7, 1.0, 2.5])
    log_scales = torch.tensor([-7.0, -5.0, -3.0, -1.0, 0.0, 2.0])
    m, s = torch.meshgrid(means, log_scales, indexing="ij")
    return m.reshape(-1), s.reshape(-1)


@pytest.mark.parametrize("levels", [2, 4, 17, 256])
def test_discretized_logistic_sums_to_one_over_levels(levels):
    m, ls = _logistic_params()
    grid = torch.arange(levels, dtype=torch.float32) * (2.0 / (levels - 1)) - 1.0  # (L,)
    lp = discretized_logistic_log_prob(grid[:, None], m[None, :], ls[None, :], levels=levels)  # (L, P)
    assert torch.isfinite(lp).all() and (lp <= 1e-6).all()
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(m.shape[0]), rtol=0, atol=2e-5)
    # the likelihood class agrees (K = 1: params (B, 2, *event))
    lik = DiscretizedLogisticLikelihood(nr_mix=1, levels=levels)
    assert lik.num_params == 2 and lik.discrete
    params = torch.stack([m, ls], 0)[None].expand(levels, 2, m.shape[0])
    x = grid[:, None].expand(levels, m.shape[0])
    torch.testing.assert_close(lik.log_prob_elementwise(params, x), lp)
    # the class clamps log-scales below at -7 (PixelCNN++), the bare function does not
    tiny_ls = torch.tensor([[[0.3], [-12.0]]]).expand(levels, 2, 1)
    torch.testing.assert_close(lik.log_prob_elementwise(tiny_ls, grid[:, None]),
                               discretized_logistic_log_prob(grid[:, None], torch.tensor(0.3), torch.tensor(-7.0), levels))


def test_discretized_logistic_edges_take_the_tails_and_interior_is_exact():
    levels = 256
    h = 1.0 / (levels - 1)
    m, ls = _logistic_params()
    md, sd = m.double(), ls.double().exp()
    lo = discretized_logistic_log_prob(torch.full_like(m, -1.0), m, ls, levels)
    hi = discretized_logistic_log_prob(torch.full_like(m, 1.0), m, ls, levels)
    torch.testing.assert_close(lo.double().exp(), torch.sigmoid((-1 + h - md) / sd), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(hi.double().exp(), 1 - torch.sigmoid((1 - h - md) / sd), rtol=1e-4, atol=1e-7)
    # interior levels, checked in log space against float64 (the right-tail identity keeps
    # float64 accurate far out: sigma(a) - sigma(b) = sigma(-b) - sigma(-a))
    for xv in (-1 + 2 * h, -0.5019607843137255, 0.0039215686274509665, 0.5019607843137255, 1 - 2 * h):
        x = torch.full_like(m, xv)
        lp = discretized_logistic_log_prob(x, m, ls, levels).double()
        a, b = (xv + h - md) / sd, (xv - h - md) / sd
        ref = torch.where(a + b < 0, torch.log(torch.sigmoid(a) - torch.sigmoid(b)),
                          torch.log(torch.sigmoid(-b) - torch.sigmoid(-a)))
        finite = torch.isfinite(ref)
        assert finite.sum() > 40
        torch.testing.assert_close(lp[finite], ref[finite], rtol=1e-4, atol=1e-4)


def test_discretized_logistic_gradients_finite_far_in_the_tails():
    """Regression: the discarded torch.where branch used to give log(0) -> NaN gradients
    when a pixel lies many scales above the mean (both log-sigmoids round to 0)."""
    x = torch.tensor([0.5019607843137255, -0.5019607843137255, 0.0, 0.9921568627450981, -1.0, 1.0])
    m = torch.tensor([-0.9, 0.9, 0.0, -1.0, 1.0, -1.0], requires_grad=True)
    ls = torch.full((6,), -4.6, requires_grad=True)
    lp = discretized_logistic_log_prob(x, m, ls)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(ls.grad).all()
    # the gradient pulls the mean towards the pixel
    assert m.grad[0] > 0 and m.grad[1] < 0
    # and through a whole logistic-decoder VAE whose decoder means sit far from the data
    model = tiny("mlp", "logistic")
    with torch.no_grad():
        model.decoder[-1].bias[:64] = -0.95
        model.decoder[-1].bias[64:] = -6.0
    x = torch.full((3, *SHAPE), 0.8)
    model.loss(x, generator=gen(0))["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("levels", [4, 256])
def test_discretized_logistic_mixture_sums_to_one(levels):
    K, P = 3, 7
    g = gen(0)
    params = torch.randn(1, 3 * K, P, generator=g)
    params[:, K:2 * K] *= 1.5  # means
    params[:, 2 * K:] = params[:, 2 * K:] * 2 - 2  # log-scales
    params[0, 2 * K, :3] = torch.tensor([-12.0, -30.0, -7.5])  # below the -7 clamp (PixelCNN++)
    lik = DiscretizedLogisticLikelihood(nr_mix=K, levels=levels)
    assert lik.num_params == 3 * K
    grid = torch.arange(levels, dtype=torch.float32) * (2.0 / (levels - 1)) - 1.0
    x = grid[:, None].expand(levels, P)
    lp = lik.log_prob_elementwise(params.expand(levels, 3 * K, P), x)  # (L, P)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(P), rtol=0, atol=2e-5)
    # = sum_k softmax(logits)_k P_k(x)
    pi = torch.softmax(params[0, :K], 0)
    comp = discretized_logistic_log_prob(x[:, None], params[0, K:2 * K][None], params[0, 2 * K:].clamp(min=-7)[None], levels).exp()
    torch.testing.assert_close(lp.exp(), (pi[None] * comp).sum(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("nr_mix", [1, 2])
def test_discretized_logistic_draws_follow_the_mass(nr_mix):
    levels, n = 4, 40000
    if nr_mix == 1:
        p1 = torch.tensor([0.2, math.log(0.4)])
    else:
        p1 = torch.tensor([0.0, math.log(3.0), -0.6, 0.5, math.log(0.2), math.log(0.3)])  # logits, means, log-scales
    lik = DiscretizedLogisticLikelihood(nr_mix=nr_mix, levels=levels)
    params = p1.reshape(1, -1, 1).expand(n, -1, 1).contiguous()
    draws = lik.sample(params, gen(0))
    assert on_grid(draws, levels)
    grid = torch.arange(levels, dtype=torch.float32) * (2.0 / (levels - 1)) - 1.0
    pmf = lik.log_prob_elementwise(p1.reshape(1, -1, 1).expand(levels, -1, 1), grid[:, None]).exp()[:, 0]
    freq = torch.stack([(draws == v).float().mean() for v in grid])
    torch.testing.assert_close(freq, pmf, rtol=0, atol=0.012)


def test_quantize_to_grid():
    x = torch.tensor([-2.0, -1.0, -0.34, -0.01, 0.34, 0.999, 5.0])
    q = quantize_to_grid(x, levels=4)
    torch.testing.assert_close(q, torch.tensor([-1.0, -1.0, -1 / 3, -1 / 3, 1 / 3, 1.0, 1.0]))
    assert on_grid(quantize_to_grid(torch.linspace(-1.2, 1.2, 1001)))


# ------------------------------------------------------------------ exact enumeration
@pytest.fixture(scope="module")
def tiny_binary_vae():
    """D = 4 binary pixels (1, 2, 2), latent_dim = 1, float64, briefly trained on a
    correlated distribution over the 16 patterns so q(z|x) is not the prior."""
    torch.manual_seed(0)
    model = genzoo.build("vae", shape=(1, 2, 2), arch="mlp", decoder="bernoulli", latent_dim=1, hidden=16, depth=1).double()
    xs = torch.tensor([[(i >> b) & 1 for b in range(4)] for i in range(16)], dtype=torch.float64).reshape(16, 1, 2, 2)
    weights = torch.tensor([8.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8.0])  # mostly all-off / all-on
    g = gen(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        x = xs[torch.multinomial(weights, 64, replacement=True, generator=g)]
        loss = model.loss(x, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, xs


def _quadrature(model, xs, n=2000, lo=-8.0, hi=8.0):
    z = torch.linspace(lo, hi, n, dtype=torch.float64)[:, None]
    logw = torch.full((n,), math.log((hi - lo) / (n - 1)), dtype=torch.float64)
    logw[0] -= math.log(2)
    logw[-1] -= math.log(2)  # trapezoid rule
    logits = model.decode_params(z)  # (n, 1, 1, 2, 2)
    log_px_z = torch.stack([model.lik.log_prob(logits, x.expand(n, *x.shape)) for x in xs], 1)  # (n, 16)
    log_pz = Normal(0.0, 1.0).log_prob(z[:, 0]).double()
    return z[:, 0], logw, log_px_z, log_pz


def test_exact_marginal_by_quadrature_sums_to_one(tiny_binary_vae):
    model, xs = tiny_binary_vae
    with torch.no_grad():
        _, logw, log_px_z, log_pz = _quadrature(model, xs)
        log_px = torch.logsumexp(log_px_z + (log_pz + logw)[:, None], 0)  # (16,)
    torch.testing.assert_close(log_px.exp().sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-6)
    # the trained model prefers the two frequent patterns
    assert log_px[0] > log_px[1:15].max() and log_px[15] > log_px[1:15].max()


def test_iwae_5000_close_to_and_elbo_below_exact_log_px(tiny_binary_vae):
    model, xs = tiny_binary_vae
    with torch.no_grad():
        z, logw, log_px_z, log_pz = _quadrature(model, xs)
        log_px = torch.logsumexp(log_px_z + (log_pz + logw)[:, None], 0)
        # ten independent L_5000 estimates: each is random, only its expectation is a bound
        runs = torch.stack([model.log_prob(xs, k=5000, generator=gen(i)) for i in range(10)])  # (10, 16)
        iwae, sem = runs.mean(0), runs.std(0) / math.sqrt(runs.shape[0])
        # the ELBO in expectation over q (quadrature again): E_q log p(x|z) - KL(q || p)
        mu, logvar = model.posterior(xs)
        std = torch.exp(0.5 * logvar)
        q = torch.exp(Normal(mu[:, 0], std[:, 0]).log_prob(z[:, None]) + logw[:, None])  # (n, 16)
        assert torch.allclose(q.sum(0), torch.ones(16, dtype=torch.float64), atol=1e-4)
        elbo = (q * log_px_z).sum(0) - kl_normal_std_normal(mu, logvar)
        elbos = torch.stack([model.elbo(xs, generator=gen(50 + i)) for i in range(2000)])
        elbo_mc, elbo_sem = elbos.mean(0), elbos.std(0) / math.sqrt(elbos.shape[0])
        iwae10 = torch.stack([model.log_prob(xs, k=10, generator=gen(1000 + i)) for i in range(300)]).mean(0)
    assert (runs >= log_px - 0.05).all(), (runs - log_px)  # every single estimate is close
    assert (iwae <= log_px + 4 * sem + 1e-4).all(), (iwae - log_px, sem)  # and below, up to its noise
    assert (runs - log_px).mean() < 1e-3  # over all 160 estimates, clearly not above
    assert (elbo <= log_px + 1e-9).all(), (elbo - log_px)
    assert (log_px - elbo).max() > 1e-3  # a real gap: q is Gaussian, the posterior is not
    assert ((elbo_mc - elbo).abs() <= 4 * elbo_sem + 1e-3).all(), (elbo_mc - elbo, elbo_sem)  # elbo() is unbiased
    # on average over x: ELBO <= E L_10 <= E L_5000 <= log p(x)
    assert elbo.mean() < iwae10.mean() + 0.005 and iwae10.mean() < iwae.mean() + 0.005, (elbo, iwae10, iwae)


# ------------------------------------------------------------------ data checks
def binary_spec(shape=SHAPE):
    return DataSpec(name="toybin", kind="image", shape=shape, value_range=None, discrete="binary", levels=2,
                    binarization="dynamic")


def grey_spec(levels=256, dequantization=None, value_range=(-1.0, 1.0), shape=SHAPE):
    return DataSpec(name="toygrey", kind="image", shape=shape, value_range=value_range, discrete=None, levels=levels,
                    dequantization=dequantization)


def _one_line_config_error(fn, *words):
    with pytest.raises(ConfigError) as ei:
        fn()
    msg = str(ei.value)
    assert isinstance(ei.value, GenzooError) and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def test_check_data_bernoulli_needs_binary_data():
    model = tiny("mlp", "bernoulli")
    model.check_data(binary_spec())
    _one_line_config_error(lambda: model.check_data(grey_spec()), "bernoulli", "binar", "binarize=static", "toygrey")
    _one_line_config_error(lambda: model.check_data(grey_spec(dequantization="uniform")), "bernoulli", "binarize")
    from genzoo.data import load_dataset

    model.check_data(load_dataset("digits", "valid", binarize="static").spec)
    _one_line_config_error(lambda: model.check_data(load_dataset("digits", "valid").spec), "bernoulli", "binarize", "digits")


def test_check_data_gaussian_refuses_undequantised_lattice_data():
    """A Gaussian density on the un-dequantised grid (lattice data) is unbounded: its NLL can go
    below 0 bits/dim, an impossible number. Refused like the flows refuse it (issue 29)."""
    from genzoo.data import load_dataset

    gauss = tiny("mlp", "gaussian")
    for spec in (grey_spec(), grey_spec(levels=17), grey_spec(value_range=(0.0, 1.0)),
                 load_dataset("digits", "valid").spec):
        msg = _one_line_config_error(lambda: gauss.check_data(spec), "gaussian", "not dequantised",
                                     "data.dequantize=uniform", "logistic", "bernoulli")
        assert spec.name in msg
    gauss.check_data(load_dataset("digits", "valid", dequantize="uniform").spec)
    # continuous vectors (2-D toys, float arrays) are taken as they are
    vec = genzoo.build("vae", shape=(2,), arch="mlp", decoder="gaussian", latent_dim=2, hidden=8, depth=1)
    vec.check_data(DataSpec(name="8gaussians", kind="vector", shape=(2,), value_range=None, discrete=None))


def test_check_data_refuses_a_shape_mismatch():
    model = tiny("conv", "bernoulli")
    msg = _one_line_config_error(lambda: model.check_data(binary_spec(shape=(1, 28, 28))), "shape", "(1, 8, 8)", "(1, 28, 28)")
    assert "model.shape" in msg  # the fix


def test_check_data_other_decoders():
    gauss = tiny("mlp", "gaussian")
    gauss.check_data(grey_spec(dequantization="uniform"))
    gauss.check_data(grey_spec(levels=17, dequantization="uniform"))
    _one_line_config_error(lambda: gauss.check_data(binary_spec()), "gaussian", "bernoulli")
    logistic = tiny("mlp", "logistic")
    logistic.check_data(grey_spec())
    _one_line_config_error(lambda: logistic.check_data(grey_spec(levels=17)), "logistic", "17", "256")
    _one_line_config_error(lambda: logistic.check_data(grey_spec(dequantization="uniform")), "logistic", "dequantis")
    _one_line_config_error(lambda: logistic.check_data(grey_spec(value_range=(0.0, 1.0))), "logistic", "[-1, 1]")
    _one_line_config_error(lambda: logistic.check_data(binary_spec()), "logistic", "binary")
    text = DataSpec(name="chars", kind="text", shape=(64,), value_range=None, discrete="tokens", vocab_size=65)
    vec = genzoo.build("vae", shape=(64,), decoder="gaussian", latent_dim=2, hidden=8, depth=1)
    _one_line_config_error(lambda: vec.check_data(text), "token")
    vec.check_data(DataSpec(name="array", kind="vector", shape=(64,), value_range=None))


# ------------------------------------------------------------------ registry, blocks
def test_registry_entry_and_build_errors():
    models = genzoo.registry.list_models()
    assert "vae" in models
    e = models["vae"]
    assert e.family == "vae" and "Kingma" in e.paper and "Burda" in e.paper and e.cls is VAE
    assert e.signature_defaults()["decoder"] == "bernoulli"
    _one_line_config_error(lambda: genzoo.build("vae", latnt_dim=4), "latnt_dim", "did you mean 'latent_dim'")
    _one_line_config_error(lambda: genzoo.build("vae", shape=SHAPE, decoder="poisson"), "poisson", "bernoulli")
    _one_line_config_error(lambda: genzoo.build("vae", shape=SHAPE, arch="resnet"), "resnet", "mlp")
    _one_line_config_error(lambda: genzoo.build("vae", shape=(1, 6, 6), arch="conv"), "divisible by 4", "arch='mlp'")
    _one_line_config_error(lambda: genzoo.build("vae", shape=SHAPE, latent_dim="many"), "latent_dim")
    _one_line_config_error(lambda: genzoo.build("vea"), "did you mean 'vae'")
    # CLI-style strings are coerced
    m = genzoo.build("vae", shape="[1, 8, 8]", latent_dim="3", hidden="8", depth="1")
    assert m.shape == SHAPE and m.latent_dim == 3


def test_blocks_shapes():
    assert len(mlp(5, 3, hidden=7, depth=0)) == 1
    net = mlp(5, 3, hidden=7, depth=2)
    assert [type(l).__name__ for l in net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert net(torch.zeros(2, 5)).shape == (2, 3)
    enc = ConvEncoder((3, 8, 12), 10, channels=4)
    assert enc(torch.zeros(2, 3, 8, 12)).shape == (2, 10)
    dec = ConvDecoder(6, (5, 8, 12), channels=4)
    assert dec(torch.zeros(2, 6)).shape == (2, 5, 8, 12)
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvEncoder((1, 6, 8), 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvDecoder(4, (1, 8, 10))
    # conv VAE: parameter-major channels (B, P*C, H, W) -> (B, P, C, H, W)
    model = genzoo.build("vae", shape=(3, 8, 8), arch="conv", decoder="gaussian", latent_dim=2, channels=4)
    z = torch.randn(4, 2, generator=gen(0))
    raw = model.decoder(z)
    assert raw.shape == (4, 6, 8, 8)
    params = model.decode_params(z)
    assert params.shape == (4, 2, 3, 8, 8)
    torch.testing.assert_close(params[:, 1, 2], raw[:, 5])
    torch.testing.assert_close(model.decode(z), raw[:, :3].clamp(-1, 1))
    assert model.encode(torch.zeros(4, 3, 8, 8)).shape == (4, 2)
    assert model.reconstruct(torch.zeros(4, 3, 8, 8)).shape == (4, 3, 8, 8)


def test_iwae_objective_trains_on_the_k_sample_bound():
    """objective='iwae': the loss is -L_k with k_train samples (Burda et al.), k_train = 1 is the
    Monte Carlo ELBO, and a short IWAE training run raises the bound."""
    import genzoo

    torch.manual_seed(0)
    m = genzoo.build("vae", shape=(6,), arch="mlp", latent_dim=2, hidden=16, depth=1, objective="iwae", k_train=1)
    x = (torch.rand(32, 6, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    out = m.loss(x, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(out["loss"], -m.log_prob(x, k=1, generator=torch.Generator().manual_seed(2)).mean())
    m5 = genzoo.build("vae", shape=(6,), arch="mlp", latent_dim=2, hidden=16, depth=1, objective="iwae", k_train=5)
    opt = torch.optim.Adam(m5.parameters(), 1e-2)
    first = float(m5.loss(x, generator=torch.Generator().manual_seed(3))["loss"].detach())
    for i in range(300):
        loss = m5.loss(x, generator=torch.Generator().manual_seed(10 + i))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m5.loss(x, generator=torch.Generator().manual_seed(3))["loss"].detach()) < first - 0.25
    with pytest.raises(ConfigError, match="objective"):
        genzoo.build("vae", objective="vimco")
