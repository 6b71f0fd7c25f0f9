"""Shortcut models (models/diffusion/shortcut.py): the step-size conditioning, the mixed loss,
self-consistency and 1-step mode coverage on a trained 8-Gaussians model."""
from __future__ import annotations

import math

import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data import load_dataset
from genzoo.errors import ConfigError
from genzoo.models.diffusion.shortcut import steps_to_index
from genzoo.train.run import load_run


def gen(seed):
    return torch.Generator().manual_seed(seed)


def centres():
    a = torch.arange(8) * math.pi / 4
    return torch.stack((a.cos(), a.sin()), 1) * 4 / math.sqrt(2)


def modes_covered(x, std=0.5 / math.sqrt(2)):
    d = torch.cdist(x.double(), centres().double())
    dist, near = d.min(1)
    counts = torch.bincount(near[dist < 3 * std], minlength=8)
    return int((counts >= 0.25 * len(x) / 8).sum())


def test_step_index_and_options():
    assert [steps_to_index(k) for k in (128, 64, 1)] == [0, 1, 7]
    with pytest.raises(ConfigError, match="1, 2, 4"):
        steps_to_index(3)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1)
    assert m.sample(5, generator=gen(0), steps=2).shape == (5, 2)
    with pytest.raises(ConfigError, match="unknown sample option"):
        m.sample(2, sampler="heun")
    with pytest.raises(ConfigError, match="bootstrap_every"):
        genzoo.build("shortcut", shape=(2,), net="mlp", bootstrap_every=1)
    # bf16 sampling: the network under autocast, close to fp32; a bad precision is named
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.net.parameters():  # the output layer starts at zero: give the net a non-zero velocity
            p.normal_(0, 0.2)
    a = m.sample(64, generator=gen(1), steps=4)
    b = m.sample(64, generator=gen(1), steps=4, precision="bf16")
    assert b.dtype == a.dtype and not torch.equal(a, b) and torch.allclose(a, b, atol=0.05)
    with pytest.raises(ConfigError, match="bad precision"):
        m.sample(2, precision="fp16")


def test_loss_mixes_the_two_targets_and_moves_the_target_net():
    torch.manual_seed(0)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1, bootstrap_every=4)
    x = torch.randn(32, 2, generator=gen(1))
    out = m.train().loss(x, generator=gen(2))
    assert set(out) == {"loss", "flow_loss", "consistency_loss"} and out["loss"].requires_grad
    # 8 of 32 examples get the consistency target, 24 the flow target: the loss is their mean
    assert torch.allclose(out["loss"], (8 * out["consistency_loss"] + 24 * out["flow_loss"]) / 32, atol=1e-6)
    assert int(m.target_updates) == 1
    assert not any(p.requires_grad for p in m.target_net.parameters())
    assert len([p for p in m.parameters() if p.requires_grad]) == len(list(m.net.parameters()))


def test_target_net_is_an_ema_with_warm_up_and_decay_zero_uses_the_current_weights():
    torch.manual_seed(0)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1, bootstrap_every=2, target_ema_decay=0.999)
    with torch.no_grad():
        for p, q in zip(m.net.parameters(), m.target_net.parameters()):
            p.normal_(0, 0.5)
            q.normal_(0, 0.5)
    t0 = [q.clone() for q in m.target_net.parameters()]
    x = torch.randn(64, 2, generator=gen(1))
    ema = m.train().loss(x, generator=gen(2))["consistency_loss"]
    # first update: decay min(0.999, (1 + 0) / (10 + 0)) = 0.1, i.e. target <- 0.1 target + 0.9 net
    for q, a, p in zip(m.target_net.parameters(), t0, m.net.parameters()):
        assert torch.allclose(q, 0.1 * a + 0.9 * p, atol=1e-6)
    # decay 0: the targets come from the net itself, whatever the target net holds
    m.target_ema_decay = 0.0
    raw = m.loss(x, generator=gen(2))["consistency_loss"]
    m.target_net.load_state_dict(m.net.state_dict())
    m.target_ema_decay = 0.999
    same = m.loss(x, generator=gen(2))["consistency_loss"]  # target = net before and after its EMA update
    assert torch.allclose(raw, same, atol=1e-6) and not torch.allclose(raw, ema, atol=1e-3)
    with pytest.raises(ConfigError, match="target_ema_decay"):
        genzoo.build("shortcut", shape=(2,), net="mlp", target_ema_decay=1.0)


@pytest.mark.parametrize("decay", [0.999, 0.0])
def test_bootstrap_targets_come_from_the_network_in_eval_mode(decay):
    # the authors compute the self-consistency targets with train=False (no dropout): with
    # dropout 0.5 in train mode two evaluations of the target differed by ~0.4
    torch.manual_seed(0)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=32, depth=2, dropout=0.5, bootstrap_every=2,
                     target_ema_decay=decay)
    tnet = m.target_net if decay > 0 else m.net
    calls = []
    hook = tnet.register_forward_hook(lambda mod, inp, out: calls.append((mod.training, [a.clone() for a in inp], out.clone())))
    x = torch.randn(16, 2, generator=gen(1))
    m.train()
    with torch.no_grad():  # no EMA update: the two calls see the same weights
        runs = []
        for _ in range(2):
            calls.clear()
            m.loss(x, generator=gen(2))
            runs.append(list(calls))
    hook.remove()
    assert m.training and m.net.training and m.target_net.training  # the modes are restored
    for run in runs:
        targets = run[:2]  # s(x_t, t, d) and s(x'_{t-d}, t - d, d)
        assert [tr for tr, _, _ in targets] == [False, False]
        if decay == 0:
            assert all(tr for tr, _, _ in run[2:])  # the prediction itself keeps dropout
    for (_, _, a), (_, _, b) in zip(runs[0][:2], runs[1][:2]):
        assert torch.equal(a, b)  # deterministic for the same generator
    tnet.eval()
    with torch.no_grad():
        for _, inp, out in runs[0][:2]:
            assert torch.allclose(tnet(*inp), out)  # = the eval-mode network's output
    tnet.train()


def test_loss_moves_a_cpu_generator_to_the_models_device(monkeypatch):
    from genzoo.models.diffusion import shortcut

    seen = []
    real = shortcut._on_device
    monkeypatch.setattr(shortcut, "_on_device", lambda g, dev: (seen.append((g, torch.device(dev))), real(g, dev))[1])
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1)
    g = gen(3)
    m.loss(torch.randn(8, 2), generator=g)
    assert seen == [(g, torch.device("cpu"))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import one_torch_thread

    d = tmp_path_factory.mktemp("shortcut") / "run"
    with one_torch_thread():
        return _train_toy(d)


def _train_toy(d):
    assert main(["train", "shortcut_toy", "train.steps=1500", "train.batch_size=256", "train.ckpt_every=0", "train.num_samples=0",
                 "train.log_every=500", "model.hidden=128", "--run-dir", str(d), "--no-progress"]) == 0
    return load_run(d)[0], d


def test_trained_toy_is_self_consistent_and_one_step_covers_the_modes(trained):
    m, _ = trained
    test = load_dataset("8gaussians", "test").tensor()
    x = m.process.add_noise(test[:2000], torch.randn(2000, 2, generator=gen(3)), torch.full((2000,), 0.5))
    errs = {k: m.self_consistency_error(x, 0.5, k) for k in (2, 4, 8, 32)}
    print("relative self-consistency error by steps:", errs)
    # s(x, t, 2d) = (s(x, t, d) + s(x', t - d, d)) / 2 within 10% for d <= 1/4 after this short run
    # (measured 0.04-0.05); d = 1/2 is learnt last (each level bootstraps from the one below): 0.25, within 50%
    assert errs[4] < 0.1 and errs[8] < 0.1 and errs[32] < 0.1 and errs[2] < 0.5, errs
    for steps in (1, 4, 128):
        s = m.sample(2000, generator=gen(4), steps=steps)
        assert modes_covered(s) >= 7, steps
    one, many = m.sample(2000, generator=gen(5), steps=1), m.sample(2000, generator=gen(5), steps=128)
    near = lambda s: float(torch.cdist(s, test).min(1).values.mean())  # noqa: E731
    assert near(one) < 2 * near(many) + 0.05  # 1-step samples land about as close to the data as 128-step ones


def test_likelihood_is_the_flow_at_the_smallest_step(trained):
    m, d = trained
    test = load_dataset("8gaussians", "test").tensor()[:200]
    lp = m.log_prob(test, exact_trace=True, rtol=1e-4, atol=1e-4)
    from genzoo.data.toys import log_prob_8gaussians

    assert torch.isfinite(lp).all()
    assert float(-lp.mean()) < float(-log_prob_8gaussians(test).mean()) + 0.6  # within 0.6 nats of the true entropy
    assert main(["sample", str(d), "--n", "4", "--out", str(d / "s.npy"), "steps=2"]) == 0
