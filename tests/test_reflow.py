"""Rectified flow's reflow (models/diffusion/reflow.py, `genzoo reflow`): paired coupling, the
pairs data set, straightness, and a real reflow on a 2-D toy."""
from __future__ import annotations

import json

import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data import load_dataset
from genzoo.errors import ConfigError, DataError
from genzoo.models.diffusion.losses import diffusion_loss
from genzoo.models.diffusion.precond import denoise
from genzoo.models.diffusion.reflow import generate_pairs, load_pairs, one_step_error, save_pairs, straightness
from genzoo.train.run import load_run


def gen(seed):
    return torch.Generator().manual_seed(seed)


def flow_mlp(**kw):
    torch.manual_seed(0)
    return genzoo.build("diffusion", shape=(2,), net="mlp", hidden=32, depth=2, process="flow", param="velocity",
                        loss="cfm", sampler="euler", steps=20, **kw)


def test_paired_loss_uses_the_given_noise():
    m = flow_mlp(coupling="paired")
    x, z = torch.randn(8, 2, generator=gen(0)), torch.randn(8, 2, generator=gen(1))
    got = m.loss((x, z), generator=gen(2))["loss"]
    want = diffusion_loss(m.net, x, m.process, "velocity", "cfm", generator=gen(2), noise=z).mean()
    assert torch.allclose(got, want)
    assert m.uses_labels  # the trainer passes (x0, z)
    with pytest.raises(DataError, match="pairs"):
        m.loss(x)
    with pytest.raises(DataError, match="z of shape"):
        m.loss((x, torch.zeros(8, dtype=torch.long)))  # labels where z belongs, in training
    # validation runs on the source data's split (labels or nothing beside x, no pairs there): in eval mode the
    # reflowed network gets the flow-matching loss with fresh noise; found by a 2-rectified MNIST run that died
    # at its first validation
    m.eval()
    want = diffusion_loss(m.net, x, m.process, "velocity", "cfm", generator=gen(3)).mean()
    for batch in ((x, torch.zeros(8, dtype=torch.long)), (x, None), x):
        assert torch.allclose(m.loss(batch, generator=gen(3))["loss"], want)
    with pytest.raises(ConfigError, match="coupling"):
        flow_mlp(coupling="ot")


def test_distill_loss_is_the_one_step_error_at_t_max():
    m = flow_mlp(coupling="distill")
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(torch.randn(p.shape, generator=gen(4)) * 0.3)
    x, z = torch.randn(8, 2, generator=gen(0)), torch.randn(8, 2, generator=gen(1))
    got = m.loss((x, z))["loss"]
    want = ((denoise(m.net, z, torch.ones(8), m.process, "velocity") - x) ** 2).mean()
    assert torch.allclose(got, want)
    # D(z; 1) is exactly one Euler step z - v(z, 1) from t = 1 to 0: the distilled model's sampler
    assert torch.allclose(m.sample(8, generator=gen(1), steps=1, sampler="euler"),
                          denoise(m.net, torch.randn(8, 2, generator=gen(1)), torch.ones(8), m.process, "velocity"), atol=1e-6)
    assert one_step_error(m, x, z) == pytest.approx(float(got.detach()), rel=1e-5)
    assert m.uses_labels
    with pytest.raises(ConfigError, match="flow"):
        genzoo.build("diffusion", shape=(2,), net="mlp", process="vp", param="eps", loss="simple", coupling="distill")


def test_straightness_is_zero_for_a_straight_flow_and_positive_otherwise():
    """A flow whose data is one point c has the exact velocity (x - c) / t: straight paths."""
    m = flow_mlp()
    c = torch.tensor([0.5, -1.0])

    class Exact(torch.nn.Module):
        def forward(self, x, label, cond=None):  # velocity parameterisation: v = eps - x0 = (x_t - c) / t
            t = (label / 1000.0)[:, None] if label.ndim else label / 1000.0
            return (x - c) / t.clamp(min=1e-6)

    m.net = Exact()
    assert straightness(m, 64, 10) < 1e-8
    curved = flow_mlp()
    with torch.no_grad():  # the output layer starts at zero (a constant, hence straight, flow); randomise it
        for p in curved.net.parameters():
            p.add_(torch.randn(p.shape, generator=gen(3)) * 0.5)
    assert straightness(curved, 64, 10) > 1e-4


def test_pairs_file_round_trip_and_errors(tmp_path):
    m = flow_mlp()
    x, z = generate_pairs(m, 10, steps=5)
    assert x.shape == z.shape == (10, 2)
    p = save_pairs(tmp_path / "p.safetensors", x, z, {"name": "moons"}, load_dataset("moons", "train").spec.to_dict())
    x2, z2, src, _ = load_pairs(p)
    assert torch.equal(x, x2) and torch.equal(z, z2) and src == {"name": "moons"}
    ds = load_dataset("pairs", "train", path=str(p))
    bx, bz = ds.get_batch(torch.arange(3))
    assert torch.equal(bx, x[:3]) and torch.equal(bz, z[:3])
    assert len(load_dataset("pairs", "test", path=str(p))) == len(load_dataset("moons", "test"))  # real test data
    with pytest.raises(DataError, match="genzoo reflow"):
        load_pairs(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="flow"):
        generate_pairs(genzoo.build("diffusion", shape=(2,), net="mlp", process="vp", param="eps", loss="simple"), 4)


def _nn_dist(s, ref):
    return float(torch.cdist(s, ref).min(1).values.mean())


def test_reflow_on_moons_straightens_and_keeps_the_distribution(tmp_path, one_thread):
    rf1 = tmp_path / "rf1"
    common = ["train.batch_size=256", "train.sample_every=0", "train.num_samples=0", "train.ckpt_every=0",
              "train.log_every=100", "model.hidden=64", "--no-progress"]
    assert main(["train", "diffusion_toy", "train.steps=600", *common, "--run-dir", str(rf1)]) == 0
    out = tmp_path / "rf2"
    assert main(["reflow", str(rf1), "--pairs", "8000", "--ode-steps", "50", "--out", str(out), "--no-progress",
                 "train.steps=600", "train.lr=1e-3", "train.warmup_steps=0"]) == 0
    rep = json.loads((out / "reflow.json").read_text())
    assert rep["straightness_after"] < 0.5 * rep["straightness_before"], rep
    test = load_dataset("moons", "test").tensor()
    m1, _, _ = load_run(rf1)
    m2, cfg2, _ = load_run(out)
    assert cfg2["model_args"]["coupling"] == "paired" and cfg2["data"]["name"] == "pairs"
    # the 2-rectified flow keeps the data distribution (many steps) ...
    s2 = m2.sample(2000, generator=gen(0), steps=50)
    s1 = m1.sample(2000, generator=gen(0), steps=50)
    assert _nn_dist(s2, test) < 1.5 * _nn_dist(s1, test) + 0.02
    assert abs(float(s2[:, 0].mean() - test[:, 0].mean())) < 0.1 and abs(float(s2[:, 1].mean() - test[:, 1].mean())) < 0.1
    # ... and is much better than the 1-rectified flow with a single Euler step
    assert _nn_dist(m2.sample(2000, generator=gen(1), steps=1), test) < 0.7 * _nn_dist(m1.sample(2000, generator=gen(1), steps=1), test)
    assert main(["reflow", str(out / "nope")]) == 2
    # distillation of the 2-rectified flow into a one-step generator (Liu et al. Sec. 2.3)
    dist = tmp_path / "rf2-distill"
    assert main(["reflow", str(out), "--distill", "--pairs", "4000", "--ode-steps", "50", "--out", str(dist), "--no-progress",
                 "train.steps=300", "train.lr=1e-3", "train.warmup_steps=0"]) == 0
    rep = json.loads((dist / "reflow.json").read_text())
    assert rep["coupling"] == "distill" and rep["one_step_error_after"] < 0.5 * rep["one_step_error_before"], rep
    m3, cfg3, _ = load_run(dist)
    assert cfg3["model_args"]["coupling"] == "distill"
    assert load_dataset("pairs", "test", path=cfg3["data"]["path"]).tensor().shape == test.shape  # the original test data
    s3 = m3.sample(2000, generator=gen(1), steps=1)
    assert _nn_dist(s3, test) < _nn_dist(m2.sample(2000, generator=gen(1), steps=1), test) + 0.01
    assert main(["reflow", str(dist)]) == 2  # a one-step generator has no ODE to reflow


def test_reflow_resumes_a_killed_run_and_refuses_other_pairs(tmp_path, monkeypatch):
    common = ["model.net=mlp", "model.hidden=16", "model.depth=1", "train.batch_size=64", "train.num_samples=0",
              "train.log_every=5", "train.ckpt_every=5"]
    rf1, out = tmp_path / "rf1", tmp_path / "rf2"
    assert main(["train", "diffusion_toy", "train.steps=10", *common, "--run-dir", str(rf1)]) == 0
    args = ["reflow", str(rf1), "--pairs", "300", "--ode-steps", "4", "--out", str(out), "--no-progress"]
    assert main([*args, "train.steps=10"]) == 0
    made = json.loads((out / "pairs.json").read_text())
    assert made["pairs"] == 300 and made["sampler"] == "euler" and made["seconds"] > 0
    first = json.loads((out / "reflow.json").read_text())
    assert first["pairs_seconds"] == made["seconds"]
    assert main(args) == 2  # finished: refuses to run over it
    # simulate a kill between the last checkpoint and the report: no summary, no report
    (out / "reflow.json").unlink()
    (out / "train_summary.json").unlink()
    assert main([*args, "train.steps=20"]) == 2  # a resume takes no new overrides
    assert main([*args[:4], "8", *args[5:]]) == 2  # other pairs than the run was trained on
    assert main([*args, "--distill"]) == 2  # the killed run is a reflow, not a distillation
    pairs_mtime = (out / "pairs.safetensors").stat().st_mtime
    import genzoo.core.precision as T

    monkeypatch.setattr(T, "cpu_has_fast_bf16", lambda: False)  # --precision auto is fp32 here: the fp32 pairs fit
    assert main([*args, "--precision", "auto"]) == 0
    rep = json.loads((out / "reflow.json").read_text())
    assert rep["steps"] == 10 and "straightness_after" in rep
    assert rep["precision"] == "fp32"  # what ran, not "auto"
    assert (out / "pairs.safetensors").stat().st_mtime == pairs_mtime  # the pairs were reused
