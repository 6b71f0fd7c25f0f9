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


def test_cli_on_binarised_digits(tmp_path):
    d = tmp_path / "run"
    assert main(["train", "discrete_diffusion", "data.name=digits", "data.binarize=static", "model.channels=8",
                 "model.num_steps=50", "model.steps=10", "train.steps=20", "train.batch_size=16", "train.num_samples=4", "train.ckpt_every=0",
                 "train.valid_every=0", "--run-dir", str(d), "--no-progress"]) == 0
    out = tmp_path / "m.json"
    assert main(["eval", str(d), "--metrics", "nll", "--limit", "8", "--no-progress", "--out", str(out), "t_samples=5"]) == 0
