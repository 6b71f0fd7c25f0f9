"""Discrete diffusion (models/diffusion/discrete.py): the chain's algebra, and the bound against the
exact entropy of a 6-pixel binary distribution, computed by enumeration (no Monte Carlo)."""
from __future__ import annotations

import itertools

import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.errors import ConfigError, DataError

D, T = 6, 10


def gen(seed):
    return torch.Generator().manual_seed(seed)


def model(kind, **kw):
    torch.manual_seed(0)
    return genzoo.build("discrete_diffusion", shape=(D,), kind=kind, num_steps=T, net="mlp", hidden=64, depth=2, **kw)


@torch.no_grad()
def exact_nelbo(m, x0):
    """L(x0) with every expectation over x_t computed exactly by enumerating the S^D states."""
    states = torch.tensor(list(itertools.product(range(m.S), repeat=D)))
    total = m.prior_kl(x0[None])[0]
    for t in range(1, T + 1):
        q = m._q_t(x0[None], torch.tensor([t]))[0]  # (D, S)
        w = q[torch.arange(D), states].prod(-1)  # q(x_t | x_0) of every state
        keep = w > 0
        term, _ = m.terms_at(x0[None].expand(int(keep.sum()), D), states[keep], torch.full((int(keep.sum()),), t))
        total = total + (w[keep] * term).sum()
    return float(total)


@pytest.fixture(scope="module")
def data():
    g = gen(0)
    logits = torch.randn(2 ** D, generator=g) * 2
    probs = logits.softmax(0)
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)))
    entropy = float(-(probs * probs.log()).sum())
    return patterns, probs, entropy


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_chain_marginals_and_posterior(kind):
    m = model(kind)
    x0 = torch.tensor([[0, 1, 1, 0, 1, 0]])
    assert torch.allclose(m._q_t(x0, torch.tensor([0])).sum(-1), torch.ones(1, D))
    assert torch.allclose(m._q_t(x0, torch.tensor([T]))[0], m.m.float().expand(D, m.S))  # pure noise at T
    # the posterior of a jump t -> s equals Bayes' rule with the one-step matrices composed
    t, s = 7, 4
    a_t, a_s = float(m.abar[t]), float(m.abar[s])
    Q_ts = (a_t / a_s) * torch.eye(m.S) + (1 - a_t / a_s) * m.m.float()[None].expand(m.S, m.S)
    Qbar_s = a_s * torch.eye(m.S)[: m.K] + (1 - a_s) * m.m.float()
    xt = torch.tensor([[0, m.S - 1, 1, 0, 1, m.S - 1]])
    post = m._posterior(xt, torch.nn.functional.one_hot(x0, m.K).float(), torch.tensor([t]), torch.tensor([s]))[0]
    for i in range(D):
        want = Q_ts[:, xt[0, i]] * Qbar_s[x0[0, i]]
        assert torch.allclose(post[i], want / want.sum(), atol=1e-6)


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_bound_stays_above_the_entropy_and_approaches_it(kind, data):
    patterns, probs, H = data
    m = model(kind, hybrid_lambda=0.01)
    before = sum(float(p) * exact_nelbo(m, x.long()) for x, p in zip(patterns, probs))
    assert before >= H - 1e-4
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    g = gen(1)
    for _ in range(600):
        x = patterns[torch.multinomial(probs, 256, replacement=True, generator=g)]
        loss = m.loss(x, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = sum(float(p) * exact_nelbo(m, x.long()) for x, p in zip(patterns, probs))
    assert H - 1e-4 <= after < before  # a bound, and it tightens with training
    assert after < H + 0.35, (kind, H, before, after)
    # the Monte-Carlo log_prob (all T terms once, x_t sampled) is unbiased for the exact bound
    x = patterns[torch.multinomial(probs, 4000, replacement=True, generator=gen(2))]
    mc = float(-m.log_prob(x, t_samples=T, generator=gen(3)).mean())
    assert abs(mc - after) < 0.1


def test_sampling_and_errors():
    m = model("absorbing")
    s = m.sample(7, generator=gen(4), steps=3)
    assert s.shape == (7, D) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(s, m.sample(7, generator=gen(4), steps=3))
    with pytest.raises(ConfigError, match="kind"):
        genzoo.build("discrete_diffusion", kind="gaussian")
    with pytest.raises(DataError, match="values in 0..1"):
        m.loss(torch.full((2, D), 0.5) * 3)
    with pytest.raises(ConfigError, match="steps"):
        m.sample(2, steps=T + 1)
    with pytest.raises(ConfigError, match="num_steps=10"):  # refused when built, not after training
        model("absorbing", steps=100)


def test_hybrid_loss_weights_the_cross_entropy_by_lambda_against_the_single_t_term(monkeypatch):
    # D3PM (Austin et al. 2021, eq. 5; their training_losses: vb_t + hybrid_coeff * ce): the per-t
    # objective is L_t + lambda CE; the bound estimate uses T L_t, so the loss is T (L_t + lambda CE)
    m = model("absorbing", hybrid_lambda=0.01)
    term, aux, prior = torch.tensor([2.0, 4.0]), torch.tensor([3.0, 5.0]), torch.tensor([0.5, 0.25])
    monkeypatch.setattr(m, "_terms", lambda x0, t, generator=None: (term, aux))
    monkeypatch.setattr(m, "prior_kl", lambda x0: prior)
    out = m.loss(torch.zeros(2, D))
    # by hand: nelbo = (0.5 + 10 * 2, 0.25 + 10 * 4) = (20.5, 40.25), mean 30.375;
    # T lambda CE = (10 * 0.01 * 3, 10 * 0.01 * 5) = (0.3, 0.5), mean 0.4; loss = (30.375 + 0.4) / 6
    assert float(out["nelbo"]) == pytest.approx(30.375)
    assert float(out["loss"]) == pytest.approx((30.375 + 0.4) / D)
    # the CE's gradient weight relative to the single-t term's is lambda, whatever T
    m2 = genzoo.build("discrete_diffusion", shape=(D,), kind="absorbing", num_steps=1000, net="mlp", hidden=8, depth=1)
    t_, a_ = torch.tensor([1.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    monkeypatch.setattr(m2, "_terms", lambda x0, t, generator=None: (t_, a_))
    monkeypatch.setattr(m2, "prior_kl", lambda x0: torch.zeros(1))
    m2.loss(torch.zeros(1, D))["loss"].backward()
    assert float(a_.grad / t_.grad) == pytest.approx(0.01)


def test_continuous_data_is_refused_for_more_than_two_values():
    from genzoo.data.base import DataSpec

    m = genzoo.build("discrete_diffusion", shape=(D,), kind="uniform", num_values=4, num_steps=T, net="mlp",
                     hidden=8, depth=1)
    cont = DataSpec(name="grey", kind="vector", shape=(D,), value_range=(-1.0, 1.0), discrete=None, levels=4)
    with pytest.raises(ConfigError, match="integer") as e:  # levels == K but the values are continuous
        m.check_data(cont)
    assert "\n" not in str(e.value) and "num_values=2" in str(e.value)
    m.check_data(DataSpec(name="lv", kind="vector", shape=(D,), value_range=None, discrete="levels", levels=4))
    with pytest.raises(ConfigError, match="levels"):
        m.check_data(DataSpec(name="lv", kind="vector", shape=(D,), value_range=None, discrete="levels", levels=5))
    with pytest.raises(DataError, match="integer"):  # continuous values would be truncated to state 0
        m.loss(torch.full((2, D), 0.5))
    assert torch.isfinite(m.loss(torch.randint(0, 4, (2, D)).float())["loss"])


def test_cli_on_binarised_digits(tmp_path):
    d = tmp_path / "run"
    assert main(["train", "discrete_diffusion", "data.name=digits", "data.binarize=static", "model.channels=8", "model.attn_resolutions=[]",
                 "model.num_steps=50", "model.steps=10", "train.steps=20", "train.batch_size=16", "train.num_samples=4", "train.ckpt_every=0",
                 "train.valid_every=0", "--run-dir", str(d), "--no-progress"]) == 0
    out = tmp_path / "m.json"
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "8", "--no-progress", "--out", str(out), "t_samples=5"]) == 0
