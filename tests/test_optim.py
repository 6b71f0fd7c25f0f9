"""Lion (optim/lion.py): a hand computation, lion-pytorch where installed, and the trainer switch."""
from __future__ import annotations

import pytest
import torch

from genzoo.config import TrainConfig
from genzoo.errors import ConfigError
from genzoo.optim import Lion
from genzoo.train.trainer import make_optimizer


def test_lion_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    g1, g2 = torch.tensor([0.3, -0.1, 0.0]), torch.tensor([-1.0, 0.2, 0.4])
    theta, m = p.detach().clone(), torch.zeros(3)
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
        c = 0.9 * m + 0.1 * g                       # interpolation for the update
        theta = theta * (1 - 0.1 * 0.5) - 0.1 * torch.sign(c)  # decoupled decay, sign update
        m = 0.99 * m + 0.01 * g                     # momentum with beta2
        assert torch.allclose(p.detach(), theta, atol=1e-7)
    assert torch.allclose(opt.state[p]["exp_avg"], m)


def test_lion_matches_lion_pytorch():
    lp = pytest.importorskip("lion_pytorch")
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    oa = Lion(a.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    ob = lp.Lion(b.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    for i in range(20):
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(x[i::20] if i < 3 else x).square().mean().backward()
            opt.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.allclose(pa, pb, atol=1e-6), i


def test_make_optimizer_lion_defaults_and_errors():
    w = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer("lion", w, 1e-4, (), 0.1)
    assert isinstance(opt, Lion) and opt.defaults["betas"] == (0.9, 0.99) and opt.defaults["weight_decay"] == 0.1
    assert make_optimizer("adam", w, 1e-3, (), 0.0).defaults["betas"] == (0.9, 0.999)
    assert make_optimizer("lion", w, 1e-4, (0.95, 0.98), 0.0).defaults["betas"] == (0.95, 0.98)
    with pytest.raises(ConfigError, match="valid: adam, adamw, sgd, lion"):
        make_optimizer("adagrad", w, 1e-3, (), 0.0)
    assert TrainConfig().betas == ()


def test_every_recipe_accepts_optimizer_lion(tmp_path):
    from genzoo.cli import main

    d = tmp_path / "run"
    assert main(["train", "vae_toy", "train.optimizer=lion", "train.lr=3e-4", "train.steps=5", "train.num_samples=0",
                 "--run-dir", str(d), "--no-progress"]) == 0
    assert main(["train", "vae_toy", "train.optimizer=lion", "train.betas=[0.9]", "--no-progress"]) == 2
