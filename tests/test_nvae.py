"""NVAE-style hierarchical VAE (Vahdat & Kautz 2020): residual-normal KL, spectral
regularisation by power iteration, KL warm-up / balancing, the IWAE bound, sampling, data checks.

Fast (CPU): tiny models on (1, 8, 8); the one trained model (8x8 digits, dynamically
binarised) trains for 250 steps with a plain torch loop on ``model.loss``.
"""
from __future__ import annotations

import math
import time

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import genzoo
from genzoo.data import DataSpec
from genzoo.errors import ConfigError, DataError, GenzooError
from genzoo.models.base import TrainContext
from genzoo.models.hvae import (
    HierarchicalVAE,
    SpectralRegularizer,
    kl_balance_coeffs,
    kl_beta,
    power_iteration,
    residual_normal_kl,
)

SHAPE = (1, 8, 8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(seed=0, **kw) -> HierarchicalVAE:
    torch.manual_seed(seed)
    args = dict(shape=SHAPE, channels=4, latent_channels=2, groups=(2, 1), kl_warmup_steps=10)
    args.update(kw)
    return genzoo.build("nvae", **args)


def binary(n=6, seed=0, shape=SHAPE) -> torch.Tensor:
    return (torch.rand((n, *shape), generator=gen(seed)) < 0.3).float()


def grid(n=6, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *SHAPE), generator=gen(seed)).float() * (2.0 / 255.0) - 1.0


def _one_line_config_error(fn, *words):
    with pytest.raises(ConfigError) as ei:
        fn()
    msg = str(ei.value)
    assert isinstance(ei.value, GenzooError) and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ------------------------------------------------------------------ closed forms
def test_residual_normal_kl_matches_torch_distributions():
    g = gen(0)
    mu_p, ls_p, dmu, ls_d = (torch.randn(4, 3, 5, generator=g) * s for s in (2.0, 1.0, 1.5, 0.7))
    q = Normal(mu_p + dmu, torch.exp(ls_p + ls_d))
    p = Normal(mu_p, torch.exp(ls_p))
    torch.testing.assert_close(residual_normal_kl(dmu, ls_d, ls_p), kl_divergence(q, p), rtol=1e-5, atol=1e-5)
    # q = p: zero; it does not depend on mu_p
    assert torch.allclose(residual_normal_kl(torch.zeros(3), torch.zeros(3), ls_p[0, 0, :3]), torch.zeros(3))
    torch.testing.assert_close(kl_divergence(Normal(mu_p + 7 + dmu, q.scale), Normal(mu_p + 7, p.scale)),
                               residual_normal_kl(dmu, ls_d, ls_p), rtol=1e-4, atol=1e-4)


def test_power_iteration_converges_to_the_spectral_norm_and_persists():
    g = gen(1)
    w = torch.randn(8, 5, 3, 3, generator=g)
    w2d = w.reshape(8, -1)
    ref = torch.linalg.matrix_norm(w2d, ord=2)
    sr = SpectralRegularizer([w.shape])
    first = float(sr([w], iterations=1))
    est = float(sr([w], iterations=300))
    assert first <= ref.item() + 1e-4  # u^T W v never exceeds the top singular value
    assert abs(est - ref.item()) < 1e-4 * ref.item(), (est, ref)
    # the vectors are buffers: in state_dict, restored by load_state_dict, and the estimate with them
    sd = sr.state_dict()
    assert set(sd) == {"u0", "v0"} and sd["u0"].shape == (8,) and sd["v0"].shape == (45,)
    other = SpectralRegularizer([w.shape])
    assert abs(float(other([w])) - ref.item()) > 1e-3  # fresh random vectors
    other.load_state_dict(sd)
    torch.testing.assert_close(other([w]), torch.tensor(est), rtol=1e-6, atol=1e-6)
    # the gradient of u^T W v with respect to W is u v^T (the vectors are constants)
    wg = w.clone().requires_grad_(True)
    sr([wg]).backward()
    torch.testing.assert_close(wg.grad.reshape(8, -1), torch.outer(sr.u0, sr.v0))
    # the bare function: the same fixed point
    u, v = power_iteration(w2d, torch.ones(8) / math.sqrt(8), torch.ones(45) / math.sqrt(45), 300)
    torch.testing.assert_close(u @ w2d @ v, ref, rtol=1e-4, atol=1e-4)


def test_model_spectral_regularizer_covers_every_conv_and_updates_only_in_training():
    m = tiny(sr_lambda=0.1)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert m.sr.num == len(convs) > 10
    assert {f"sr.u{i}" for i in range(len(convs))} <= set(m.state_dict())
    with torch.no_grad():
        for _ in range(200):
            sr, _ = m.regularizers(update=True)
    ref = sum(torch.linalg.matrix_norm(c.weight.reshape(c.weight.shape[0], -1), ord=2) for c in convs)
    torch.testing.assert_close(sr, ref, rtol=1e-3, atol=1e-3)
    x = binary()
    before = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("sr.")}
    m.eval()
    m.loss(x)  # eval mode: no power iteration, no step
    with torch.no_grad():
        m.train()
        m.loss(x)  # no gradients: neither
    assert all(torch.equal(before[k], m.state_dict()[k]) for k in before)
    with torch.no_grad():
        convs[0].weight.add_(torch.randn(convs[0].weight.shape, generator=gen(9)))  # a training step moves its vectors
    m.loss(x)
    assert not torch.equal(before["sr.u0"], m.sr.u0)


def test_loss_adds_lambda_times_the_regularizers():
    m = tiny(sr_lambda=0.05, kl_balance=False)
    x = binary()
    out = m.loss(x, generator=gen(0))
    sr, bn = m.regularizers()
    torch.testing.assert_close(out["sr"], sr.detach())
    torch.testing.assert_close(out["bn_reg"], bn.detach())
    assert float(bn.detach()) == pytest.approx(sum(float(b.weight.detach().abs().max()) for b in m.modules()
                                          if isinstance(b, torch.nn.BatchNorm2d)))
    torch.testing.assert_close(out["loss"], out["rec"] + out["beta"] * out["kl"] + 0.05 * (out["sr"] + out["bn_reg"]))
    no_bn = tiny(sr_lambda=0.05, kl_balance=False, bn_reg=False).loss(x, generator=gen(0))
    torch.testing.assert_close(no_bn["loss"], no_bn["rec"] + no_bn["beta"] * no_bn["kl"] + 0.05 * no_bn["sr"])
    off = tiny(sr_lambda=0.0, kl_balance=False).loss(x, generator=gen(0))
    torch.testing.assert_close(off["loss"], off["rec"] + off["beta"] * off["kl"])


# ------------------------------------------------------------------ KL warm-up, balancing, step counter
def test_kl_warmup_schedule_values():
    assert kl_beta(0, 300) == 1e-4  # the authors' minimum
    assert kl_beta(1, 300) == pytest.approx(1 / 300)
    assert kl_beta(90, 300) == pytest.approx(0.3)
    assert kl_beta(150, 300) == pytest.approx(0.5)
    assert kl_beta(300, 300) == 1.0 and kl_beta(10_000, 300) == 1.0
    assert kl_beta(0, 0) == 1.0 and kl_beta(0, 300, beta_min=0.01) == 0.01
    m = tiny(kl_warmup_steps=4, sr_lambda=0.0, kl_balance=False)
    x = binary()
    betas = []
    for step in range(6):
        out = m.loss(x, generator=gen(0), ctx=TrainContext(step, 6))
        betas.append(float(out["beta"]))
        torch.testing.assert_close(out["loss"], out["rec"] + out["beta"] * out["kl"])
        torch.testing.assert_close(out["nelbo"], out["rec"] + out["kl"])
    assert betas == pytest.approx([1e-4, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert m.kl_weight() == 1.0 and m.kl_weight(2) == 0.5  # no step: the plain ELBO
    assert float(m.loss(x, generator=gen(0))["beta"]) == 1.0  # called without the trainer's context


def test_kl_balancing_coefficients():
    kl = torch.tensor([[1.0, 4.0, 10.0], [3.0, 0.0, 30.0]])
    alpha = torch.tensor([1.0, 1.0, 8.0])
    gamma = kl_balance_coeffs(kl, alpha)
    c = torch.tensor([2.01, 2.01, 20.01]) / alpha
    torch.testing.assert_close(gamma, c / c.mean())
    assert gamma.mean().item() == pytest.approx(1.0)
    # in the model: the alpha rule (spatial size / groups at the scale, min 1), balancing only while beta < 1
    m = tiny(groups=(2, 1), kl_warmup_steps=2, sr_lambda=0.0)
    torch.testing.assert_close(m.kl_alpha, torch.tensor([1.0, 1.0, 8.0]))  # 2x2 / 2 groups, 4x4 / 1 group
    x = binary()
    out = m.loss(x, generator=gen(3), ctx=TrainContext(0, 10))
    t = m._elbo_terms(x, gen(3))
    g = kl_balance_coeffs(t["kl"], m.kl_alpha)
    torch.testing.assert_close(out["loss"], out["rec"] + 1e-4 * (t["kl"] * g).sum(1).mean(), rtol=1e-5, atol=1e-5)
    assert sum(out[f"kl_{i}"].item() for i in (1, 2, 3)) == pytest.approx(out["kl"].item(), rel=1e-5)
    out = m.loss(x, generator=gen(3), ctx=TrainContext(2, 10))  # beta = 1: the plain negative ELBO
    torch.testing.assert_close(out["loss"], out["nelbo"])


def test_the_warm_up_follows_the_trainers_step_and_old_checkpoints_still_load(tmp_path):
    from genzoo.train.checkpoint import load_checkpoint, load_model_state, save_checkpoint

    m = tiny(kl_warmup_steps=10)
    assert "global_step" not in m.state_dict()  # the step is the trainer's (ctx), resumed with its checkpoint
    assert float(m.loss(binary(), ctx=TrainContext(3, 10))["beta"]) == pytest.approx(0.3)
    # a checkpoint written before the step came in ctx holds the model's own counter: it still loads
    old = dict(m.state_dict(), global_step=torch.tensor(3))
    path = save_checkpoint(tmp_path / "ckpt", 3, model_state=old, ema_state=None, extra={})
    again = tiny(seed=2, kl_warmup_steps=10)
    load_model_state(again, load_checkpoint(path)["model"], "test")
    assert torch.equal(again.sr.v0, m.sr.v0) and "global_step" not in again.state_dict()


def test_the_trainer_drives_the_warm_up(tmp_path):
    from genzoo.train.run import train
    import csv

    cfg = {"model": "nvae", "model_args": {"channels": 8, "latent_channels": 2, "groups": [2, 1], "kl_warmup_steps": 4,
                                           "sr_lambda": 0.0},
           "data": {"name": "digits", "binarize": "dynamic"},
           "train": {"steps": 6, "batch_size": 8, "log_every": 1, "valid_every": 0, "num_samples": 2, "progress": False}}
    run, summary = train(cfg, tmp_path / "r")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [float(r["beta"]) for r in rows if r.get("beta")] == pytest.approx([1e-4, 0.25, 0.5, 0.75, 1.0, 1.0])


# ------------------------------------------------------------------ log_prob (IWAE bound)
def test_log_prob_k1_is_the_monte_carlo_elbo_with_the_same_noise():
    m = tiny().eval()
    x = binary()
    with torch.no_grad():
        lp = m.log_prob(x, k=1, generator=gen(5))
        assert lp.shape == (x.shape[0],)
        t = m._elbo_terms(x, gen(5), trace=True)
        # by hand from the traced group distributions: log p(x|z) + sum log p(z_l|z_<l) - sum log q(z_l|x, z_<l)
        log_p = log_q = kl = 0.0
        for grp in t["groups"]:
            p = Normal(grp["mu_p"], grp["log_sigma_p"].exp())
            q = Normal(grp["mu_q"], grp["log_sigma_q"].exp())
            log_p = log_p + p.log_prob(grp["z"]).flatten(1).sum(1)
            log_q = log_q + q.log_prob(grp["z"]).flatten(1).sum(1)
            kl = kl + kl_divergence(q, p).flatten(1).sum(1)
        first = t["groups"][0]
        assert torch.equal(first["mu_p"], torch.zeros_like(first["mu_p"]))  # p(z_1) = N(0, I)
        torch.testing.assert_close(lp, t["rec"] + log_p - log_q, rtol=0, atol=1e-4)
        # elbo() has the same z and rec; its KL is the closed form of each group at the sampled z_<l
        elbo = m.elbo(x, generator=gen(5))
        torch.testing.assert_close(t["kl"].sum(1), kl, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(lp, elbo + kl - (log_q - log_p), rtol=0, atol=1e-4)
        torch.testing.assert_close(m.log_prob(x, k=1, generator=gen(5)), lp, rtol=0, atol=0)
        # on average over the noise the Monte Carlo KL is the closed-form one
        many = torch.stack([m.log_prob(x, k=1, generator=gen(100 + i)) for i in range(200)])
        e = torch.stack([m.elbo(x, generator=gen(100 + i)) for i in range(200)])
        assert (many.mean(0) - e.mean(0)).abs().max() < 4 * (many - e).std(0).max() / math.sqrt(200) + 0.05


def test_log_prob_chunks_do_not_change_the_value_and_options():
    m = tiny().eval()
    x = binary(n=3)
    with torch.no_grad():
        ref = m.log_prob(x, k=7, generator=gen(4))
        for chunk in (1, 3, 7, 100):
            torch.testing.assert_close(m.log_prob(x, k=7, chunk=chunk, generator=gen(4)), ref, rtol=1e-6, atol=1e-5)
        assert not torch.allclose(m.log_prob(x, k=7, generator=gen(6)), ref)
    _one_line_config_error(lambda: m.log_prob(x, k=0), "k >= 1")
    _one_line_config_error(lambda: m.log_prob(x, chunks=4), "did you mean 'chunk'")
    with pytest.raises(DataError, match="shape"):
        m.log_prob(torch.zeros(2, 1, 28, 28))


@pytest.fixture(scope="module")
def trained_digits_nvae():
    """A small NVAE trained 250 steps (Adam) on dynamically binarised 8x8 digits."""
    from genzoo.data import load_dataset

    train = load_dataset("digits", "train", binarize="dynamic")
    test = load_dataset("digits", "test", binarize="dynamic")
    torch.manual_seed(0)
    model = genzoo.build("nvae", shape=SHAPE, channels=8, latent_channels=2, groups=(2, 1), kl_warmup_steps=75)
    model.check_data(train.spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = gen(0)
    x_test, _ = test.get_batch(torch.arange(100), gen(1))
    model.eval()
    with torch.no_grad():
        before = model.loss(x_test, generator=gen(2))["nelbo"].item()
    model.train()
    t0 = time.perf_counter()
    for step in range(250):
        idx = torch.randint(0, len(train), (64,), generator=g)
        x, _ = train.get_batch(idx, g)
        out = model.loss(x, generator=g, ctx=TrainContext(step, 250))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        after = model.loss(x_test, generator=gen(2))["nelbo"].item()
    return model, x_test, before, after, seconds


def test_training_lowers_the_negative_elbo(trained_digits_nvae):
    model, _, before, after, seconds = trained_digits_nvae
    assert model.kl_weight(249) == 1.0 and model.kl_weight(74) < 1.0
    assert before > 40.0  # about 64 log 2 = 44.4 nats at initialisation
    assert after < before - 10.0, (before, after)
    assert seconds < 60


def test_iwae_bound_rises_with_k(trained_digits_nvae):
    model, x, *_ = trained_digits_nvae
    x = x[:40]
    with torch.no_grad():
        reps = {1: 8, 10: 3, 50: 1}
        L = {k: torch.stack([model.log_prob(x, k=k, generator=gen(100 * k + r)) for r in range(n)]).mean().item()
             for k, n in reps.items()}
        elbo = torch.stack([model.elbo(x, generator=gen(7 + r)) for r in range(8)]).mean().item()
    assert L[1] < L[10] < L[50] < 0, L
    assert L[10] - L[1] > 0.1 and L[50] - L[1] > 0.2, L
    assert abs(L[1] - elbo) < 1.0, (L, elbo)  # the same bound, Monte Carlo vs closed-form KL


# ------------------------------------------------------------------ sampling, encoding
def test_sample_reproducible_shapes_and_temperature():
    m = tiny().eval()
    n = 10
    draw = m.sample(n, generator=gen(5), mean=False)
    mean = m.sample(n, generator=gen(5))
    assert draw.shape == mean.shape == (n, *SHAPE)
    assert set(draw.unique().tolist()) <= {0.0, 1.0}
    assert ((mean >= 0) & (mean <= 1)).all() and not set(mean.unique().tolist()) <= {0.0, 1.0}
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    again = m.sample(n, generator=gen(5), mean=False)
    assert torch.equal(torch.rand(3), ref)  # the global RNG is untouched
    assert torch.equal(again, draw)
    assert not torch.equal(m.sample(n, generator=gen(6)), mean)
    # temperature 0: every group at its prior mean, the decoder at z_1 = 0
    cold = m.sample(4, generator=gen(1), temperature=0.0)
    assert torch.allclose(cold, cold[:1].expand_as(cold))
    torch.testing.assert_close(cold[:1], m.decode(torch.zeros(1, m.encode(binary(1)).shape[1])))
    warm = m.sample(4, generator=gen(1), temperature=0.5)
    assert not torch.allclose(warm, cold)
    _one_line_config_error(lambda: m.sample(2, temprature=0.5), "did you mean 'temperature'")


def test_encode_decode_reconstruct_shapes():
    m = tiny(groups=(1, 2)).eval()
    x = binary(n=5)
    with torch.no_grad():
        z = m.encode(x)
        assert z.shape == (5, 2 * 2 * 2)  # latent_channels x H/4 x W/4
        assert m.decode(z).shape == m.reconstruct(x).shape == (5, *SHAPE)
        assert ((m.reconstruct(x) >= 0) & (m.reconstruct(x) <= 1)).all()
        t = m._elbo_terms(x, gen(0), trace=True)
        assert [tuple(grp["z"].shape[1:]) for grp in t["groups"]] == [(2, 2, 2), (2, 4, 4), (2, 4, 4)]
        # encode is the top group's posterior mean
        torch.testing.assert_close(z, m.top_down(5, m.bottom_up(x), None, trace=True)["groups"][0]["mu_q"].flatten(1))


@pytest.mark.parametrize("groups", [(2, 1), (3, 0)])
def test_loss_terms_and_gradients(groups):
    m = tiny(groups=groups)
    x = binary()
    out = m.loss(x, generator=gen(1))
    L = sum(groups)
    assert {"loss", "nelbo", "rec", "kl", "beta", "sr", "bn_reg"} | {f"kl_{i + 1}" for i in range(L)} <= set(out)
    for k, v in out.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    assert out["kl"] >= 0 and all(out[f"kl_{i + 1}"] >= 0 for i in range(L))
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    # (x, y) batches are accepted; unknown loss options refused; wrong shapes refused
    m.loss((x, torch.zeros(len(x))))
    _one_line_config_error(lambda: m.loss(x, player="generator"), "unknown loss option")
    with pytest.raises(DataError, match="shape"):
        m.loss(torch.zeros(2, 1, 12, 12))


def test_logistic_decoder_on_the_grey_grid():
    m = tiny(decoder="logistic", nr_mix=2).eval()
    assert m.discrete_likelihood and m.lik.num_params == 6
    x = grid()
    with torch.no_grad():
        lp = m.log_prob(x, k=3, generator=gen(0))
        assert lp.shape == (6,) and torch.isfinite(lp).all() and (lp < 0).all()
        s = m.sample(4, generator=gen(0), mean=False)
    k = (s + 1.0) * 127.5
    assert ((k - k.round()).abs() < 1e-3).all() and s.min() >= -1 and s.max() <= 1


# ------------------------------------------------------------------ data checks, registry
def binary_spec(shape=SHAPE):
    return DataSpec(name="toybin", kind="image", shape=shape, value_range=None, discrete="binary", levels=2,
                    binarization="static")


def grey_spec(levels=256, dequantization=None, value_range=(-1.0, 1.0), shape=SHAPE):
    return DataSpec(name="toygrey", kind="image", shape=shape, value_range=value_range, discrete=None, levels=levels,
                    dequantization=dequantization)


def test_check_data_refusals_name_the_fix():
    bern = tiny()
    bern.check_data(binary_spec())
    _one_line_config_error(lambda: bern.check_data(grey_spec()), "bernoulli", "binarize=static", "toygrey")
    _one_line_config_error(lambda: bern.check_data(binary_spec(shape=(1, 28, 28))), "shape", "model.shape")
    vec = DataSpec(name="array", kind="vector", shape=SHAPE, value_range=None)
    _one_line_config_error(lambda: bern.check_data(vec), "image")
    logistic = tiny(decoder="logistic")
    logistic.check_data(grey_spec())
    _one_line_config_error(lambda: logistic.check_data(grey_spec(dequantization="uniform")), "logistic",
                           "dequantis", "data.dequantize=none")
    _one_line_config_error(lambda: logistic.check_data(grey_spec(value_range=(0.0, 1.0))), "[-1, 1]")
    _one_line_config_error(lambda: logistic.check_data(grey_spec(levels=17)), "17 grey levels")
    _one_line_config_error(lambda: logistic.check_data(binary_spec()), "binary", "model.decoder=bernoulli")
    from genzoo.data import load_dataset

    bern.check_data(load_dataset("digits", "valid", binarize="static").spec)
    _one_line_config_error(lambda: bern.check_data(load_dataset("digits", "valid").spec), "binarize", "digits")


def test_registry_entry_and_build_errors():
    e = genzoo.registry.list_models()["nvae"]
    assert e.family == "vae" and e.cls is HierarchicalVAE and "Vahdat" in e.paper
    defaults = e.signature_defaults()
    assert defaults["sr_lambda"] == 1e-2 and defaults["groups"] == (2, 2) and defaults["shape"] == (1, 28, 28)
    m = genzoo.build("nvae", shape=[1, 8, 8], channels=4, latent_channels=2, groups=[1, 1])
    assert isinstance(m, HierarchicalVAE) and m.likelihood == "bound" and m.groups == (1, 1)
    assert [d[1:] for d in m.group_dims] == [(2, 2), (4, 4)]
    _one_line_config_error(lambda: genzoo.build("nvae", shape=(1, 10, 10)), "divisible by 4")
    _one_line_config_error(lambda: genzoo.build("nvae", shape=SHAPE, decoder="gaussian"), "gaussian", "bernoulli")
    _one_line_config_error(lambda: genzoo.build("nvae", shape=SHAPE, groups=[0, 2]), "groups")
    _one_line_config_error(lambda: genzoo.build("nvae", shape=SHAPE, kl_min=0.0), "kl_min")
    _one_line_config_error(lambda: genzoo.build("nvae", sr_lamda=0.1), "did you mean 'sr_lambda'")


def test_recipe_builds_and_checks_its_data():
    from genzoo.config import CONFIG_DIR

    import yaml

    cfg = yaml.safe_load((CONFIG_DIR / "nvae.yaml").read_text())
    assert cfg["model"] == "nvae" and cfg["data"] == {"name": "mnist", "binarize": "static"}
    args = cfg["model_args"]
    assert args["kl_warmup_steps"] == pytest.approx(0.3 * cfg["train"]["steps"], rel=0.01)
    m = genzoo.build("nvae", **args)
    m.check_data(binary_spec(shape=(1, 28, 28)))
    assert [d[1:] for d in m.group_dims] == [(7, 7)] * m.groups[0] + [(14, 14)] * m.groups[1]
    assert m.groups[0] >= 1 and m.groups[1] >= 1
