"""The diffusion model (genzoo.models.diffusion.model.Diffusion), its networks (UNet, TimeMLP),
classifier-free guidance, the ODE likelihood through the model, and the CLI end to end.

The math core (processes, preconditioning, losses, samplers, likelihood) has its own tests
(tests/test_diffusion_core.py); here the pieces are checked wired together. Everything is
tiny (8x8 images, 2-D points) so the file runs in well under a minute on one core; the one
trained model is a flow-matching MLP on the 2-D moons (a few hundred steps, ~5 s).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data import DataSpec, load_dataset
from genzoo.errors import ConfigError, DataError
from genzoo.models.diffusion import SAMPLERS, Diffusion
from genzoo.nn.time_mlp import TimeMLP
from genzoo.nn.unet import UNet

IMG = (1, 8, 8)
TINY_UNET = dict(shape=IMG, channels=8, channel_mult=(1, 2), attn_resolutions=(4,))
TINY_MLP = dict(shape=(2,), net="mlp", hidden=32, depth=2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perturb_output(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Give every zero-initialised layer (the output layer, the last conv of each residual
    block, the attention projections) random weights, so the network is not identically 0 and
    the residual branches, hence the time and class embeddings, act on the output."""
    g = gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def tiny_image_model(seed: int = 0, perturb: bool = True, **kw) -> Diffusion:
    torch.manual_seed(seed)
    args = dict(TINY_UNET)
    args.update(kw)
    m = genzoo.build("diffusion", **args)
    if perturb:
        perturb_output(m.net, seed)
    return m.eval()


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, *IMG), generator=gen(seed)) * 2 - 1


# ------------------------------------------------------------------ UNet


@pytest.mark.parametrize("kw,size", [
    ({}, 28),  # the default: MNIST 28 -> 14 -> 7, attention at 7
    (dict(image_size=8, channels=16, channel_mult=(1, 2), attn_resolutions=(4,)), 8),  # digits 8 -> 4
    (dict(image_size=7, channels=8, channel_mult=(1, 2, 2), attn_resolutions=(4, 2)), 7),  # odd: 7 -> 4 -> 2
])
def test_unet_output_shape_and_zero_init(kw, size):
    torch.manual_seed(0)
    net = UNet(**kw)
    x = torch.randn(3, 1, size, size)
    y = net(x, torch.rand(3) * 999)
    assert y.shape == x.shape
    assert torch.equal(y, torch.zeros_like(y))  # zero-initialised output convolution
    perturb_output(net)
    y = net(x, torch.rand(3) * 999)
    assert y.abs().min() >= 0 and y.abs().mean() > 0
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)


def test_unet_default_is_cpu_sized():
    net = UNet()
    n = sum(p.numel() for p in net.parameters())
    assert 1.0e6 < n < 2.0e6, n  # the docstring's "about 1.2 M parameters"
    assert net.skip_scales == [1.0, 1.0, 1.0] and net.sizes == [(28, 28), (14, 14), (7, 7)]
    assert UNet(out_channels=2).conv_out.out_channels == 2


def test_unet_attention_at_a_size_the_input_never_has_is_refused():
    """The MNIST recipes' attn_resolutions=[7] on a 32x32 input used to build a UNet without any
    attention at the levels (32, 16, 8), silently; it must say so and name the sizes there are."""
    from genzoo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[7\].*32x32.*32, 16, 8.*attn_resolutions=\[16\]"):
        UNet(image_size=32, channels=8, channel_mult=(1, 2, 2), attn_resolutions=(7,))
    with pytest.raises(ConfigError, match="never has"):
        UNet(image_size=(16, 12), channels=8, channel_mult=(1, 2), attn_resolutions=(8, 12))
    net = UNet(image_size=32, channels=8, channel_mult=(1, 2, 2), attn_resolutions=(16,))
    assert sum(isinstance(m, type(net.mid[1])) for m in net.modules()) == 1 + 1 + 2  # middle, encoder, decoder at 16


@pytest.mark.parametrize("emb", ["sinusoidal", "fourier"])
def test_unet_time_embedding_and_scalar_labels(emb):
    torch.manual_seed(0)
    net = UNet(image_size=8, channels=8, channel_mult=(1, 2), attn_resolutions=(), time_embedding=emb,
               scale_shift=(emb == "fourier"), residual_scale=math.sqrt(0.5) if emb == "fourier" else 1.0)
    perturb_output(net)
    x = torch.randn(2, 1, 8, 8)
    a, b = net(x, torch.tensor([0.3, 0.3])), net(x, torch.tensor(0.3))
    assert torch.equal(a, b)  # a scalar noise label broadcasts over the batch
    assert not torch.allclose(a, net(x, torch.tensor([-0.5, 1.5])))  # the output depends on the label
    with pytest.raises(ValueError):
        UNet(time_embedding="learned")


def test_unet_class_conditioning():
    torch.manual_seed(0)
    net = UNet(image_size=8, channels=8, channel_mult=(1, 2), attn_resolutions=(4,), num_classes=10)
    perturb_output(net)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 10.0])
    y0 = net(x, t, torch.tensor([0, 0]))
    y1 = net(x, t, torch.tensor([1, 1]))
    assert not torch.allclose(y0, y1)  # the label changes the output
    assert net.embed.label.num_embeddings == 11  # num_classes + 1: the last is "no label"
    assert torch.equal(net(x, t), net(x, t, torch.tensor([10, 10])))  # cond=None is the null label
    unc = UNet(image_size=8, channels=8, channel_mult=(1, 2), attn_resolutions=())
    with pytest.raises(ValueError, match="unconditional"):
        unc(x, t, torch.tensor([0, 1]))


def test_unet_skip_scales_hook():
    torch.manual_seed(0)
    net = UNet(image_size=8, channels=8, channel_mult=(1, 2), attn_resolutions=(4,))
    perturb_output(net)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 400.0])
    base = net(x, t)
    net.set_skip_scales([1.0, 1.0])
    assert torch.equal(net(x, t), base)  # skip_scales = 1 everywhere is the identity
    with net.skip_scaling([0.5, 1.0]):
        low = net(x, t)
    assert not torch.allclose(low, base)  # a scaled skip changes the output
    assert net.skip_scales == [1.0, 1.0] and torch.equal(net(x, t), base)  # restored on exit
    with net.skip_scaling(0.7):
        assert net.skip_scales == [0.7, 0.7]
    assert UNet(image_size=8, channels=8, channel_mult=(1, 2), attn_resolutions=(4,), skip_scale=0.8).skip_scales == [0.8, 0.8]
    with pytest.raises(ValueError, match="one value per level"):
        net.set_skip_scales([1.0, 1.0, 1.0])
    # not a parameter or buffer: checkpoints do not carry it
    assert not any("skip_scale" in k for k in net.state_dict())


def test_time_mlp():
    torch.manual_seed(0)
    net = TimeMLP(2, hidden=32, depth=2, num_classes=3)
    x = torch.randn(5, 2)
    assert torch.equal(net(x, torch.rand(5)), torch.zeros(5, 2))  # zero-initialised output
    perturb_output(net)
    y = net(x, torch.rand(5), torch.tensor([0, 1, 2, 3, 0]))
    assert y.shape == (5, 2)
    assert not torch.allclose(net(x, torch.full((5,), 0.5), torch.zeros(5, dtype=torch.long)),
                              net(x, torch.full((5,), 0.5), torch.ones(5, dtype=torch.long)))
    y.sum().backward()
    assert net.inp.weight.grad is not None and net.inp.weight.grad.abs().sum() > 0
    assert TimeMLP(3, out_dim=4, time_embedding="fourier")(torch.randn(2, 3), torch.rand(2)).shape == (2, 4)
    with pytest.raises(ValueError):
        TimeMLP(2)(torch.randn(2, 3), torch.rand(2))


# ------------------------------------------------------------------ the model: build, loss


PAIRS = [(proc, param) for proc in ("vp", "vp-cosine", "ve", "edm", "flow") for param in ("eps", "x0", "v", "velocity", "edm")
         if not (proc == "flow" and param in ("eps", "edm"))]


@pytest.mark.parametrize("process,param", PAIRS)
def test_every_process_param_pair_builds_and_trains(process, param):
    loss = {"edm": "edm", "velocity": "cfm"}.get(param, "simple")
    torch.manual_seed(0)
    m = genzoo.build("diffusion", process=process, param=param, loss=loss, **TINY_MLP)
    x = torch.randn(16, 2)
    out = m.loss(x, generator=gen(0))
    assert set(out) == {"loss"} and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert m.net.out.weight.grad.abs().sum() > 0  # the zero-initialised output layer learns
    # the same generator gives the same loss (t, eps and label dropout all come from it)
    assert torch.equal(m.loss(x, generator=gen(0))["loss"], m.loss(x, generator=gen(0))["loss"])


@pytest.mark.parametrize("loss", ["simple", "edm", "cfm"])
def test_every_loss_on_a_unet(loss):
    m = tiny_image_model(process="vp", param="eps", loss=loss).train()
    out = m(images(4))  # the trainer's call: forward == loss
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


def test_build_errors():
    with pytest.raises(ConfigError, match="s\\(t\\) > 0"):
        genzoo.build("diffusion", process="flow", param="eps", **TINY_MLP)  # s = 0 at t_max = 1
    genzoo.build("diffusion", process="flow", param="eps", process_args={"t_max": 0.999}, **TINY_MLP)
    for bad, needle in ((dict(process="vpp"), "did you mean 'vp'"), (dict(param="score"), "param"),
                        (dict(loss="l1"), "loss"), (dict(net="resnet"), "net"), (dict(sampler="heunn"), "heun"),
                        (dict(grid="log"), "grid"), (dict(process_args="x"), "process_args"),
                        (dict(process_args={"sigma_mid": 1.0}, process="edm"), "sigma_mid")):
        args = dict(TINY_MLP)
        args.update(bad)
        with pytest.raises(ConfigError, match=needle):
            genzoo.build("diffusion", **args)
    with pytest.raises(ConfigError, match="net=mlp"):
        genzoo.build("diffusion", shape=(2,), net="unet")
    with pytest.raises(DataError, match="shape"):
        genzoo.build("diffusion", **TINY_MLP).loss(torch.randn(4, 3))
    with pytest.raises(ConfigError, match="unknown loss option"):
        genzoo.build("diffusion", **TINY_MLP).loss(torch.randn(4, 2), weight=2)


def test_registry_entry_and_uses_labels():
    e = genzoo.registry.get_entry("diffusion")
    assert e.family == "diffusion" and e.cls is Diffusion and e.cls.likelihood == "exact"
    assert "Karras" in e.paper and "Lipman" in e.paper
    assert genzoo.build("diffusion", **TINY_MLP).uses_labels is False
    assert genzoo.build("diffusion", num_classes=3, **TINY_MLP).uses_labels is True
    # an MLP on images flattens them
    m = genzoo.build("diffusion", shape=IMG, net="mlp", hidden=16, depth=1)
    assert m.sample(2, generator=gen(0), steps=2).shape == (2, *IMG)


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("sampler", sorted(list(SAMPLERS) + ["ode"]))
def test_every_sampler_shapes_range_and_reproducibility(sampler):
    m = tiny_image_model(process="vp", param="eps", loss="simple")
    opts = dict(sampler=sampler, steps=4)
    if sampler in ("ode", "ode_adaptive"):
        opts.update(rtol=1e-3, atol=1e-3)
    if sampler == "heun_stochastic":
        opts.update(S_churn=10.0)
    a = m.sample(3, generator=gen(1), **opts)
    b = m.sample(3, generator=gen(1), **opts)
    assert a.shape == (3, *IMG) and torch.isfinite(a).all()
    assert a.min() >= -1 and a.max() <= 1  # images are clamped to data_range
    assert torch.equal(a, b)  # the same generator reproduces the samples exactly
    assert not torch.equal(a, m.sample(3, generator=gen(2), **opts))  # another seed, other samples


def test_sample_defaults_options_and_errors():
    m = tiny_image_model(sampler="euler", steps=3)
    g = m.sample(2, generator=gen(0))
    assert torch.equal(g, m.sample(2, generator=gen(0), sampler="euler", steps=3, grid="karras"))  # edm -> karras
    assert m.default_grid == "karras" and tiny_image_model(process="vp", param="eps").default_grid == "uniform"
    # temperature 0 + a deterministic sampler: x_T = 0, so the generator no longer matters
    assert torch.equal(m.sample(2, generator=gen(0), temperature=0.0), m.sample(2, generator=gen(5), temperature=0.0))
    # unclamped output can leave the range; clamped never does
    raw = m.sample(8, generator=gen(0), clamp=False, temperature=3.0)
    assert torch.equal(raw.clamp(-1, 1), m.sample(8, generator=gen(0), temperature=3.0))
    with pytest.raises(ConfigError, match="unknown sample option 'stepz'"):
        m.sample(2, stepz=3)
    with pytest.raises(ConfigError, match="does not apply to sampler 'heun'"):
        m.sample(2, sampler="heun", eta=0.5)
    with pytest.raises(ConfigError, match="unconditional"):
        m.sample(2, labels=3)
    with pytest.raises(ConfigError, match="class-conditional"):
        m.sample(2, guidance=2.0)
    with pytest.raises(ConfigError, match="steps"):
        m.sample(2, steps=0)
    with pytest.raises(ConfigError, match="sampler"):
        m.sample(2, sampler="plms")


def test_sample_skip_scales_option():
    m = tiny_image_model()
    base = m.sample(2, generator=gen(0), steps=3)
    assert torch.equal(m.sample(2, generator=gen(0), steps=3, skip_scales=1.0), base)
    assert torch.equal(m.sample(2, generator=gen(0), steps=3, skip_scales=[1.0, 1.0]), base)
    assert not torch.equal(m.sample(2, generator=gen(0), steps=3, skip_scales=[0.8, 0.9]), base)
    assert m.net.skip_scales == [1.0, 1.0]  # restored after sampling
    with pytest.raises(ConfigError, match="skip_scales"):
        m.sample(2, skip_scales=[1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="unet"):
        genzoo.build("diffusion", **TINY_MLP).sample(2, skip_scales=0.9)


def test_sample_bf16_precision_is_close_to_fp32():
    """precision=bf16 runs only the network under bfloat16 autocast: samples stay float32 and
    close to the fp32 ones (bf16 keeps ~3 significant digits of each network output)."""
    m = tiny_image_model()
    base = m.sample(4, generator=gen(0), sampler="ddim", steps=5)
    low = m.sample(4, generator=gen(0), sampler="ddim", steps=5, precision="bf16")
    assert low.dtype == torch.float32
    assert not torch.equal(low, base)  # it really ran in bf16
    assert (low - base).abs().max() < 0.05
    with pytest.raises(ConfigError, match="precision"):
        m.sample(2, precision="fp16")


def test_sample_precision_auto_follows_the_hardware(monkeypatch):
    """precision=auto samples exactly as bf16 where bf16 is fast and exactly as fp32 where it is emulated
    (AVX2-only CPUs), the rule of train.precision=auto."""
    import genzoo.core.precision as T

    m = tiny_image_model()
    base = m.sample(4, generator=gen(0), sampler="ddim", steps=5)
    low = m.sample(4, generator=gen(0), sampler="ddim", steps=5, precision="bf16")
    monkeypatch.setattr(T, "cpu_has_fast_bf16", lambda: False)
    assert torch.equal(m.sample(4, generator=gen(0), sampler="ddim", steps=5, precision="auto"), base)
    monkeypatch.setattr(T, "cpu_has_fast_bf16", lambda: True)
    assert torch.equal(m.sample(4, generator=gen(0), sampler="ddim", steps=5, precision="auto"), low)


def test_classifier_free_guidance():
    """guidance w: D_w = D(x; null) + w (D(x; y) - D(x; null)).

    Precisely: with the same generator, sample(labels=y, guidance=0) is bitwise equal to
    sample(labels="none") (the null-label, i.e. unconditional, model) for any y;
    guidance=1 (the default) is bitwise the plain conditional sampler; and for other w the
    guided denoiser equals the formula to float32 rounding."""
    m = tiny_image_model(num_classes=3, steps=3)
    perturb_output(m.net)
    with torch.no_grad():
        m.net.embed.label.weight.mul_(20.0)  # make the label matter visibly
    y = torch.tensor([0, 1, 2, 1])
    unc = m.sample(4, generator=gen(0), labels="none")
    assert torch.equal(m.sample(4, generator=gen(0), labels=y, guidance=0.0), unc)
    assert torch.equal(m.sample(4, generator=gen(0), labels=[2, 2, 2, 2], guidance=0.0), unc)
    cond = m.sample(4, generator=gen(0), labels=y)
    assert torch.equal(m.sample(4, generator=gen(0), labels=y, guidance=1.0), cond)
    assert not torch.allclose(cond, unc)
    assert not torch.allclose(m.sample(4, generator=gen(0), labels=y, guidance=3.0), cond)
    # the default labels of a conditional model cycle through the classes
    assert torch.equal(m.sample(4, generator=gen(0)), m.sample(4, generator=gen(0), labels=[0, 1, 2, 0]))
    assert torch.equal(m.sample(4, generator=gen(0), labels=1), m.sample(4, generator=gen(0), labels=[1] * 4))
    x, t = images(4), torch.full((4,), 0.7)
    d_u, d_c, d_w = m.denoiser(None)(x, t), m.denoiser(y)(x, t), m.denoiser(y, 2.5)(x, t)
    torch.testing.assert_close(d_w, d_u + 2.5 * (d_c - d_u), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="one label per example"):
        m.sample(4, labels=[0, 1])
    with pytest.raises(ConfigError, match="labels must be in"):
        m.sample(2, labels=[0, 7])


def test_label_dropout_uses_the_null_label():
    m = tiny_image_model(num_classes=3, label_dropout=0.5).train()
    seen = []
    orig = m.net.forward

    def spy(x, c, cond=None):
        seen.append(cond.clone())
        return orig(x, c, cond)

    m.net.forward = spy
    y = torch.zeros(64, dtype=torch.long)
    m.loss((images(64), y), generator=gen(0))
    frac = float((seen[0] == 3).float().mean())
    assert 0.3 < frac < 0.7 and set(seen[0].tolist()) <= {0, 3}
    with pytest.raises(DataError, match="no labels"):
        m.loss((images(4), None))
    with pytest.raises(ConfigError, match="label_dropout"):
        tiny_image_model(num_classes=3, label_dropout=1.0)


# ------------------------------------------------------------------ likelihood


@pytest.mark.parametrize("process,param", [("edm", "edm"), ("flow", "velocity")])
def test_untrained_model_log_prob_is_the_closed_form_gaussian(process, param):
    """A zero-output network is the exact denoiser of a Gaussian: with EDM preconditioning
    D = c_skip x, the posterior mean for x_0 ~ N(0, sigma_data^2 I), so the ODE likelihood
    must be log N(x; 0, (sigma_data^2 + sigma(t_min)^2) I); with the flow velocity
    parameterisation the velocity is 0, x never moves and log p = log N(x; 0, I)."""
    torch.manual_seed(0)
    m = genzoo.build("diffusion", shape=IMG, process=process, param=param, loss="edm", channels=8,
                     channel_mult=(1, 2), attn_resolutions=())
    x = images(3, seed=1)
    lp = m.log_prob(x, generator=gen(0))
    var = 0.25 + 0.002 ** 2 if process == "edm" else 1.0
    ref = -0.5 * x.flatten(1).square().sum(1) / var - 0.5 * 64 * math.log(2 * math.pi * var)
    assert lp.shape == (3,)
    torch.testing.assert_close(lp, ref, atol=0.02, rtol=0)


def test_log_prob_shape_finite_options_and_errors():
    m = tiny_image_model()
    x = images(3)
    lp = m.log_prob(x, rtol=1e-3, atol=1e-3, generator=gen(0))
    assert lp.shape == (3,) and torch.isfinite(lp).all()
    # Hutchinson with one probe per example vs several: both finite, same ballpark
    lp4 = m.log_prob(x, rtol=1e-3, atol=1e-3, num_probes=4, generator=gen(0))
    assert torch.isfinite(lp4).all() and (lp4 - lp).abs().max() < 0.25 * lp.abs().max()
    with torch.no_grad():  # evaluate_nll calls log_prob under no_grad: the trace enables grad itself
        assert torch.isfinite(m.log_prob(x, rtol=1e-3, atol=1e-3)).all()
    with pytest.raises(ConfigError, match="unknown log_prob option 'k'"):
        m.log_prob(x, k=10)
    with pytest.raises(ConfigError, match="unconditional"):
        m.log_prob(x, labels=[0, 0, 0])
    mc = tiny_image_model(num_classes=3)
    lu = mc.log_prob(x, rtol=1e-3, atol=1e-3, generator=gen(0))  # default: the null label (unconditional)
    lc = mc.log_prob(x, rtol=1e-3, atol=1e-3, generator=gen(0), labels=[0, 1, 2])
    assert torch.isfinite(lu).all() and torch.isfinite(lc).all()


# ------------------------------------------------------------------ training on 2-D moons


@pytest.fixture(scope="module")
def moons():
    torch.manual_seed(0)
    train = load_dataset("moons", "train").tensor()
    test = load_dataset("moons", "test").tensor()
    m = genzoo.build("diffusion", shape=(2,), net="mlp", hidden=128, depth=3, process="flow", param="velocity",
                     loss="cfm", sampler="euler", steps=50)
    untrained = genzoo.build("diffusion", shape=(2,), net="mlp", hidden=128, depth=3, process="flow",
                             param="velocity", loss="cfm")
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    g = gen(1)
    losses = []
    for _ in range(400):
        idx = torch.randint(0, len(train), (256,), generator=g)
        loss = m.loss(train[idx], generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return m.eval(), untrained.eval(), losses, test


def _mean_nn_distance(samples: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean distance from each sample to its nearest point of ``ref`` (5000 test points)."""
    return float(torch.cdist(samples, ref).min(1).values.mean())


def test_moons_training_lowers_the_loss(moons):
    _, _, losses, _ = moons
    first, last = np.mean(losses[:25]), np.mean(losses[-25:])
    assert last < first - 0.3, (first, last)  # CFM loss: ~2.65 at the start, ~2.05 after 400 steps


def test_moons_samples_land_on_the_moons(moons):
    """Mean distance to the nearest of 5000 test points: ~0.026 for real data, ~0.16 for the
    N(0, I) prior (the untrained model's samples), ~0.06 after 400 steps."""
    m, untrained, _, test = moons
    assert _mean_nn_distance(untrained.sample(1000, generator=gen(0)), test) > 0.13
    for sampler, steps in (("euler", 50), ("heun", 10), ("dpmpp_2m", 20), ("euler_maruyama", 100)):
        s = m.sample(1000, generator=gen(0), sampler=sampler, steps=steps)
        assert s.shape == (1000, 2)
        d = _mean_nn_distance(s, test)
        assert d < 0.09, (sampler, d)


def test_moons_likelihood_improves(moons):
    m, untrained, _, test = moons
    x = test[:100]
    tol = dict(rtol=1e-4, atol=1e-4)
    nll = -m.log_prob(x, exact_trace=True, **tol).mean()
    nll0 = -untrained.log_prob(x, exact_trace=True, **tol).mean()
    # untrained = N(0, I): ~3.0 nats; trained: ~2.6
    assert torch.isfinite(nll) and nll < nll0 - 0.2, (float(nll), float(nll0))
    h = -m.log_prob(x, num_probes=4, generator=gen(0), **tol).mean()  # Hutchinson agrees on average
    assert abs(float(h - nll)) < 0.1, (float(h), float(nll))


# ------------------------------------------------------------------ check_data


def test_check_data_refusals():
    img = tiny_image_model()
    deq = DataSpec("mnist", "image", IMG, value_range=(-1.0, 1.0), dequantization="uniform")
    img.check_data(deq)  # fine
    with pytest.raises(ConfigError, match="dequantize=uniform"):
        img.check_data(DataSpec("mnist", "image", IMG, value_range=None, discrete="binary", binarization="dynamic"))
    with pytest.raises(ConfigError, match="token"):
        genzoo.build("diffusion", shape=(16,), net="mlp").check_data(
            DataSpec("shakespeare", "text", (16,), value_range=None, discrete="tokens", vocab_size=65))
    with pytest.raises(ConfigError, match="data_range"):
        img.check_data(DataSpec("mnist", "image", IMG, value_range=(0.0, 1.0), dequantization="uniform"))
    with pytest.raises(ConfigError, match="shape"):
        img.check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(-1.0, 1.0), dequantization="uniform"))
    with pytest.warns(UserWarning, match="not dequantised"):
        img.check_data(DataSpec("mnist", "image", IMG, value_range=(-1.0, 1.0)))
    cond = tiny_image_model(num_classes=10)
    with pytest.raises(ConfigError, match="no labels"):
        cond.check_data(deq)
    cond.check_data(DataSpec("mnist", "image", IMG, value_range=(-1.0, 1.0), dequantization="uniform", num_classes=10))
    with pytest.raises(ConfigError, match="num_classes=10"):
        tiny_image_model(num_classes=3).check_data(
            DataSpec("mnist", "image", IMG, value_range=(-1.0, 1.0), dequantization="uniform", num_classes=10))
    genzoo.build("diffusion", **TINY_MLP).check_data(DataSpec("moons", "vector", (2,), value_range=None))


# ------------------------------------------------------------------ CLI end to end


TINY_CLI = ["train.steps=20", "train.batch_size=32", "train.ckpt_every=10", "train.num_samples=4", "train.sample_every=10",
            "train.log_every=10", "model.channels=8", "sample.steps=3", "--no-progress"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("diffusion") / "run"
    assert main(["train", "diffusion_digits", *TINY_CLI, "--run-dir", str(d)]) == 0
    return d


def test_cli_train_sample_eval(digits_run, tmp_path, capsys):
    s = json.loads((digits_run / "train_summary.json").read_text())
    assert s["steps"] == 20 and s["model"] == "Diffusion" and (digits_run / "samples.png").is_file()
    a, b, c = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    assert main(["sample", str(digits_run), "--n", "6", "--out", str(a), "sampler=ddim", "steps=5"]) == 0
    assert main(["sample", str(digits_run), "--n", "6", "--out", str(b), "sampler=ddim", "steps=5"]) == 0
    assert main(["sample", str(digits_run), "--n", "6", "--out", str(c), "sampler=dpmpp_2m", "steps=4"]) == 0
    xa, xb, xc = np.load(a), np.load(b), np.load(c)
    assert xa.shape == xc.shape == (6, 1, 8, 8) and np.array_equal(xa, xb)
    assert xa.min() >= -1 and xa.max() <= 1
    capsys.readouterr()
    assert main(["sample", str(digits_run), "--n", "2", "sampler=heun", "eta=0.5"]) == 2
    assert "does not apply" in capsys.readouterr().err
    out = tmp_path / "m.json"
    assert main(["eval", str(digits_run), "--metrics", "nll", "--limit", "6", "--no-progress", "--out", str(out),
                 "rtol=1e-3", "atol=1e-3"]) == 0
    r = json.loads(out.read_text())["nll"]
    assert r["num_examples"] == 6 and math.isfinite(r["nll_nats"]) and r["likelihood"] == "exact"
    assert r["offset_bits"] == pytest.approx(math.log2(17 / 2))  # 17 grey levels dequantised onto [-1, 1]
    assert r["bits_per_dim"] == pytest.approx(r["nll_nats"] / (64 * math.log(2)) + math.log2(17 / 2))


def test_cli_class_conditional_run(tmp_path):
    d = tmp_path / "cond"
    assert main(["train", "diffusion_digits", *TINY_CLI, "train.steps=4", "model.num_classes=10",
                 "--run-dir", str(d)]) == 0
    o = tmp_path / "s.npy"
    assert main(["sample", str(d), "--n", "4", "--out", str(o), "labels=3", "guidance=2.0", "steps=2"]) == 0
    assert np.load(o).shape == (4, 1, 8, 8)


def test_cli_refuses_binary_data(capsys):
    assert main(["train", "diffusion_digits", "data.binarize=dynamic", "data.dequantize=none", "--no-progress"]) == 2
    assert "dequantize=uniform" in capsys.readouterr().err


# ------------------------------------------------------------------ Skip-Tuning search


def test_skip_schedule_and_search_on_a_tiny_unet():
    from genzoo.models.diffusion.skip_tuning import skip_schedule
    from genzoo.pipelines.skip_tuning import search

    assert skip_schedule(3, 0.7) == pytest.approx([1.0, 0.85, 0.7])
    assert skip_schedule(1, 0.8) == [0.8]
    m = tiny_image_model()
    spec = DataSpec("digits", "image", IMG, value_range=(-1.0, 1.0), dequantization="uniform")
    real = images(40, seed=5)
    r = search(m, real, spec, sampler="euler", steps=2, rhos=(1.0, 0.8), n=40)
    assert set(r["fids"]) == {1.0, 0.8} and r["best_rho"] in (1.0, 0.8)
    assert r["best_scales"] == skip_schedule(m.net.num_levels, r["best_rho"])
    assert r["fids"][1.0] != r["fids"][0.8]  # the factor really changes the samples
    with pytest.raises(ConfigError, match="unet"):
        search(genzoo.build("diffusion", **TINY_MLP), real, spec, sampler="euler", steps=2)
