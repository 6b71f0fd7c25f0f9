"""Shortcut models (models/diffusion/shortcut.py): the step-size conditioning, the mixed loss,
self-consistency and 1-step mode coverage on a trained 8-Gaussians model."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data import load_dataset
from genzoo.errors import ConfigError
from genzoo.models.base import TrainContext
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


def _ema_of(m, seed=3):
    """An EMA copy of ``m`` (eval mode, no gradients) with weights unlike m's, as the trainer's ctx.ema."""
    e = copy.deepcopy(m).eval().requires_grad_(False)
    with torch.no_grad():
        for q in e.net.parameters():
            q.copy_(torch.randn(q.shape, generator=gen(seed)) * 0.5)
    return e


def test_loss_mixes_the_two_targets_and_keeps_no_weights_of_its_own():
    torch.manual_seed(0)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1, bootstrap_every=4)
    x = torch.randn(32, 2, generator=gen(1))
    out = m.train().loss(x, generator=gen(2))
    assert set(out) == {"loss", "flow_loss", "consistency_loss"} and out["loss"].requires_grad
    # 8 of 32 examples get the consistency target, 24 the flow target: the loss is their mean
    assert torch.allclose(out["loss"], (8 * out["consistency_loss"] + 24 * out["flow_loss"]) / 32, atol=1e-6)
    # the EMA of the targets is the trainer's (ctx.ema), not a private copy in the model
    assert list(m.state_dict()) == ["net." + k for k in m.net.state_dict()]
    assert len([p for p in m.parameters() if p.requires_grad]) == len(list(m.net.parameters()))


def test_targets_come_from_the_trainers_ema_and_bootstrap_ema_false_uses_the_current_weights():
    torch.manual_seed(0)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1, bootstrap_every=2).train()
    ema = _ema_of(m)
    x = torch.randn(64, 2, generator=gen(1))
    with_ema = m.loss(x, generator=gen(2), ctx=TrainContext(5, 10, ema))["consistency_loss"]
    no_ctx = m.loss(x, generator=gen(2))["consistency_loss"]
    no_ema = m.loss(x, generator=gen(2), ctx=TrainContext(5, 10, None))["consistency_loss"]
    m.bootstrap_ema = False
    off = m.loss(x, generator=gen(2), ctx=TrainContext(5, 10, ema))["consistency_loss"]
    assert torch.equal(no_ctx, no_ema) and torch.equal(no_ctx, off) and not torch.allclose(with_ema, no_ctx, atol=1e-3)
    # the same loss as a model whose own weights are the EMA's: the targets are the EMA network's
    m2 = copy.deepcopy(m)
    m2.bootstrap_ema = True
    assert m2.target_network(TrainContext(5, 10, ema)) is ema.net and m2.target_network(None) is m2.net
    with pytest.raises(ConfigError, match=r"target_ema_decay of 'shortcut' is gone.*bootstrap_ema=false"):
        genzoo.build("shortcut", shape=(2,), net="mlp", target_ema_decay=0.0)


def test_the_trainer_hands_its_ema_to_the_loss(tmp_path):
    seen = []
    from genzoo.models.diffusion.shortcut import Shortcut

    orig = Shortcut.target_network
    def spy(self, ctx):
        seen.append((ctx.step, ctx.total_steps, ctx.ema is not None))
        return orig(self, ctx)
    Shortcut.target_network = spy
    try:
        rc = main(["train", "shortcut_toy", "model.hidden=8", "train.steps=3", "train.batch_size=16",
                   "train.ema_decay=0.9", "train.num_samples=2", "train.ckpt_every=0", "--no-progress",
                   "--run-dir", str(tmp_path / "r")])
    finally:
        Shortcut.target_network = orig
    assert rc == 0 and seen == [(0, 3, True), (1, 3, True), (2, 3, True)]


def test_a_run_folder_with_the_old_private_ema_still_loads(tmp_path):
    torch.manual_seed(0)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1)
    old = dict(m.state_dict())
    old.update({"target_net." + k: v.clone() for k, v in m.net.state_dict().items()})
    old["target_updates"] = torch.tensor(7)
    fresh = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=16, depth=1)
    fresh.load_state_dict(old)  # strict: the retired entries are dropped, the rest must match
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), m.state_dict().values()))


@pytest.mark.parametrize("use_ema", [True, False])
def test_bootstrap_targets_come_from_the_network_in_eval_mode(use_ema):
    # the authors compute the self-consistency targets with train=False (no dropout): with
    # dropout 0.5 in train mode two evaluations of the target differed by ~0.4
    torch.manual_seed(0)
    m = genzoo.build("shortcut", shape=(2,), net="mlp", hidden=32, depth=2, dropout=0.5, bootstrap_every=2)
    ema = copy.deepcopy(m).train()  # even an EMA left in train mode gives eval-mode targets
    ctx = TrainContext(0, 1, ema if use_ema else None)
    tnet = ema.net if use_ema else m.net
    calls = []
    hook = tnet.register_forward_hook(lambda mod, inp, out: calls.append((mod.training, [a.clone() for a in inp], out.clone())))
    x = torch.randn(16, 2, generator=gen(1))
    m.train()
    with torch.no_grad():
        runs = []
        for _ in range(2):
            calls.clear()
            m.loss(x, generator=gen(2), ctx=ctx)
            runs.append(list(calls))
    hook.remove()
    assert m.training and m.net.training and tnet.training  # the modes are restored
    for run in runs:
        targets = run[:2]  # s(x_t, t, d) and s(x'_{t-d}, t - d, d)
        assert [tr for tr, _, _ in targets] == [False, False]
        if not use_ema:
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
