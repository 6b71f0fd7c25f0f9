"""Normalizing flows (genzoo.models.flows): every transform exactly invertible with the right
log-determinant, the models' densities normalised, actnorm's data-dependent init, variational
dequantisation, peers' coupling layers where installed, and the CLI end to end.

Everything is tiny (4x4 / 8x8 images, 2-D points); the trained models are three 2-D flows
on the 8 Gaussians (a few hundred steps of a plain torch loop on ``model.loss``).
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
from genzoo.data.toys import sample_8gaussians
from genzoo.data.transforms import ScaleLevels, UniformDequantize
from genzoo.errors import ConfigError, DataError
from genzoo.models.flows import NICE, Chain, Flow, Glow, RealNVP, save_interpolation_grid
from genzoo.models.flows.base import StandardLogistic, StandardNormal
from genzoo.models.flows.dequantization import VariationalDequantizer
from genzoo.models.flows.nets import MLP, ConvNet, GlowNet, ResNet
from genzoo.models.flows.transforms import (
    ActNorm,
    BatchNorm,
    ConditionalAffine,
    Coupling,
    DiagonalScaling,
    Flatten,
    InvertibleConv1x1,
    Logit,
    MultiScale,
    SplitPrior,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
)
from genzoo.nn.blocks import mlp as plain_mlp
from genzoo.registry import list_models

IMG = (2, 4, 4)  # small image shape for the Jacobian tests (D = 32)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Every model here is tiny: a second intra-op thread only adds synchronisation, which on a
    busy 2-core machine made the toy training 15x slower (69 s instead of 4 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class CondMLP(torch.nn.Module):
    """(x, cond) -> params, for vector couplings with a context."""

    def __init__(self, d_in, d_out, d_cond):
        super().__init__()
        self.net = plain_mlp(d_in + d_cond, d_out, 16, 1)

    def forward(self, x, cond=None):
        return self.net(torch.cat([x, cond], 1))


# ------------------------------------------------------------------ the transform catalogue
# name -> (factory, per-example input shape, cond shape or None, input kind)
def _catalogue():
    c, h, w = IMG
    v = 4
    ms_stage = lambda ch: Chain(Squeeze(), ActNorm(4 * ch), InvertibleConv1x1(4 * ch, lu=True))  # noqa: E731
    return {
        "coupling-additive-index": (lambda: Coupling(alternating_mask(v, 0), MLP(2, 2, 16, 1), kind="additive"), (v,), None, "real"),
        "coupling-affine-exp": (lambda: Coupling(alternating_mask(v, 1), MLP(2, 4, 16, 1), scale="exp"), (v,), None, "real"),
        "coupling-affine-tanh": (lambda: Coupling(alternating_mask(v, 0), MLP(2, 4, 16, 1), scale="tanh"), (v,), None, "real"),
        "coupling-affine-sigmoid": (lambda: Coupling(channel_mask(v, 0), MLP(2, 4, 16, 1), scale="sigmoid"), (v,), None, "real"),
        "coupling-checkerboard": (lambda: Coupling(checkerboard_mask(h, w, 1), ResNet(c, 2 * c, 8, 1), channels=c), IMG, None, "real"),
        "coupling-checkerboard-additive": (lambda: Coupling(checkerboard_mask(h, w, 0), ConvNet(c, c, 8), kind="additive"),
                                           IMG, None, "real"),
        "coupling-channel-glow": (lambda: Coupling(channel_mask(c, 0), GlowNet(1, 2, 8), scale="sigmoid"), IMG, None, "real"),
        "coupling-channel-cond": (lambda: Coupling(channel_mask(c, 1), ConvNet(1, 2, 8, cond_channels=3), scale="exp"),
                                  IMG, (3, h, w), "real"),
        "coupling-vector-cond": (lambda: Coupling(alternating_mask(v, 0), CondMLP(2, 4, 3), scale="tanh"), (v,), (3,), "real"),
        "conditional-affine": (lambda: ConditionalAffine(ConvNet(3, 2 * c, 8), c), IMG, (3, h, w), "real"),
        "actnorm-vector": (lambda: ActNorm(v), (v,), None, "real"),
        "actnorm-image": (lambda: ActNorm(c), IMG, None, "real"),
        "batchnorm-vector": (lambda: BatchNorm(v), (v,), None, "real"),
        "batchnorm-image": (lambda: BatchNorm(c), IMG, None, "real"),
        "invconv-image": (lambda: InvertibleConv1x1(c), IMG, None, "real"),
        "invconv-image-lu": (lambda: InvertibleConv1x1(c, lu=True), IMG, None, "real"),
        "invconv-vector-lu": (lambda: InvertibleConv1x1(v, lu=True), (v,), None, "real"),
        "squeeze": (lambda: Squeeze(), IMG, None, "real"),
        "flatten": (lambda: Flatten(IMG), IMG, None, "real"),
        "diagonal-scaling": (lambda: DiagonalScaling((v,)), (v,), None, "real"),
        "logit": (lambda: Logit((-1.0, 1.0), 0.05), IMG, None, "unit"),
        "split-prior": (lambda: SplitPrior(3, c), IMG, (3, h, w), "real"),
        "multiscale-split-prior": (lambda: MultiScale(IMG, [ms_stage(2), ms_stage(4)], [SplitPrior(4, 4)]), IMG, None, "real"),
        "multiscale-plain": (lambda: MultiScale((1, 4, 4), [ms_stage(1), Chain(ActNorm(2))], [None]), (1, 4, 4), None, "real"),
        "nice-model": (lambda: genzoo.build("nice", shape=IMG, hidden=16, depth=1).transform, IMG, None, "unit"),
        "realnvp-model": (lambda: genzoo.build("realnvp", shape=(1, 4, 4), num_scales=1, couplings=1, hidden=8, blocks=1).transform,
                          (1, 4, 4), None, "unit"),
        "realnvp-model-actnorm": (lambda: genzoo.build("realnvp", shape=(1, 4, 4), num_scales=2, couplings=1, hidden=8, blocks=1,
                                                       norm="act", logit_alpha=0.0).transform, (1, 4, 4), None, "unit"),
        "realnvp-vector": (lambda: genzoo.build("realnvp", shape=(3,), couplings=2, hidden=16).transform, (3,), None, "real"),
        "glow-model": (lambda: genzoo.build("glow", shape=(1, 4, 4), num_scales=2, steps=2, hidden=8).transform,
                       (1, 4, 4), None, "unit"),
        "glow-model-additive-nolu": (lambda: genzoo.build("glow", shape=(1, 4, 4), num_scales=1, steps=2, hidden=8, coupling="additive",
                                                          lu=False, logit_alpha=0.05).transform, (1, 4, 4), None, "unit"),
        "glow-vector": (lambda: genzoo.build("glow", shape=(2,), steps=3, hidden=16).transform, (2,), None, "real"),
        "dequantizer-flow-image": (lambda: VariationalDequantizer(IMG, steps=2, hidden=8).flow, IMG, (8, h, w), "real"),
        "dequantizer-flow-vector": (lambda: VariationalDequantizer((3,), steps=2, hidden=8).flow, (3,), (8,), "real"),
    }


CATALOGUE = _catalogue()


def _inputs(shape, kind, n=3, seed=0, dtype=torch.float64):
    g = gen(seed)
    if kind == "unit":  # data in (-1, 1), as dequantised pixels
        return (torch.rand((n, *shape), generator=g, dtype=dtype) * 1.9 - 0.95)
    return torch.randn((n, *shape), generator=g, dtype=dtype) * 0.8 + 0.3


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Move every parameter off its initialisation (zero-initialised outputs make couplings the
    identity, which would test nothing) and randomise BatchNorm running statistics."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)


def ready(name: str, seed: int = 0):
    """Build a catalogue transform in float64, initialise its actnorms on data, perturb it, eval mode."""
    factory, shape, cond_shape, kind = CATALOGUE[name]
    torch.manual_seed(seed)
    t = factory().double()
    cond_of = lambda n, s: torch.randn((n, *cond_shape), generator=gen(s), dtype=torch.float64) if cond_shape else None  # noqa: E731
    with torch.no_grad():
        t(_inputs(shape, kind, n=64, seed=seed + 11), cond_of(64, seed + 12))  # data-dependent initialisations
    perturb(t, seed + 1, 0.05 if "model" in name else 0.2)  # whole models: perturbations compound over layers
    return t.eval(), _inputs(shape, kind, seed=seed), cond_of(3, seed + 7)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_inverse_of_forward_is_identity_float64(name):
    t, x, cond = ready(name)
    with torch.no_grad():
        z, ld = t(x, cond)
        assert ld.shape == (x.shape[0],) and torch.isfinite(ld).all() and torch.isfinite(z).all()
        assert tuple(z.shape[1:]) == t.output_shape(tuple(x.shape[1:]))
        back = t.inverse(z, cond)
    assert back.shape == x.shape
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)
    if not name.startswith(("squeeze", "flatten")):
        assert not torch.allclose(z.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1), atol=1e-3)  # not the identity


def autograd_logdet(t, x, cond):
    """log|det J| per example from torch.autograd.functional.jacobian (blocks of the batch Jacobian)."""
    n, d = x.shape[0], x[0].numel()
    jac = torch.autograd.functional.jacobian(lambda inp: t(inp, cond)[0], x, vectorize=True)
    jac = jac.reshape(n, d, n, d)
    out = []
    for i in range(n):
        others = torch.cat([jac[i, :, j] for j in range(n) if j != i]) if n > 1 else None
        if others is not None:
            assert others.abs().max() < 1e-10, "examples must not interact"
        out.append(torch.linalg.slogdet(jac[i, :, i])[1])
    return torch.stack(out)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_logabsdet_matches_autograd_jacobian(name):
    t, x, cond = ready(name, seed=3)
    with torch.no_grad():
        _, ld = t(x, cond)
    torch.testing.assert_close(ld, autograd_logdet(t, x, cond), rtol=1e-7, atol=1e-7)


def test_batchnorm_training_mode_uses_batch_statistics():
    bn = BatchNorm(3).double()
    x = torch.randn(64, 3, 2, 2, dtype=torch.float64) * 2 + 5
    y, ld = bn.train()(x)
    dims = (0, 2, 3)
    torch.testing.assert_close(y.mean(dims), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(y.var(dims, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-3, rtol=0)
    var = x.var(dims, unbiased=False)
    torch.testing.assert_close(ld, (-0.5 * torch.log(var + bn.eps)).sum().expand(64) * 4)
    assert not torch.allclose(bn.running_mean, torch.zeros(3, dtype=torch.float64))  # running averages moved


# ------------------------------------------------------------------ actnorm data-dependent init
@pytest.mark.parametrize("shape", [(5,), (3, 6, 6)])
def test_actnorm_data_init_gives_zero_mean_unit_variance(shape):
    torch.manual_seed(0)
    an = ActNorm(shape[0])
    assert int(an.initialized) == 0
    scale = torch.arange(1, shape[0] + 1, dtype=torch.float32).view(1, -1, *([1] * (len(shape) - 1)))
    x = torch.randn(256, *shape) * scale * 3 + scale  # per-channel mean and std far from 0 / 1
    y, ld = an(x)
    dims = [0] + list(range(2, y.dim()))
    torch.testing.assert_close(y.mean(dims), torch.zeros(shape[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dims, unbiased=False), torch.ones(shape[0]), atol=1e-4, rtol=0)
    spatial = math.prod(shape[1:]) if len(shape) > 1 else 1
    torch.testing.assert_close(ld, (-torch.log(x.std(dims, unbiased=False))).sum().expand(256) * spatial, rtol=1e-4, atol=1e-3)
    # initialised once: a second batch is not renormalised, and the flag travels with the weights
    assert int(an.initialized) == 1
    y2, _ = an(x * 10)
    assert y2.std() > 5
    fresh = ActNorm(shape[0])
    fresh.load_state_dict(an.state_dict())
    torch.testing.assert_close(fresh(x)[0], y)


def test_glow_net_actnorms_initialise_on_first_batch():
    torch.manual_seed(0)
    m = genzoo.build("glow", shape=(1, 8, 8), num_scales=2, steps=2, hidden=8)
    norms = [mod for mod in m.modules() if isinstance(mod, ActNorm)]
    assert norms and all(int(a.initialized) == 0 for a in norms)
    m.loss(torch.rand(16, 1, 8, 8) * 2 - 1)
    assert all(int(a.initialized) == 1 for a in norms)


# ------------------------------------------------------------------ masks, invertible conv details
def test_masks():
    cb = checkerboard_mask(3, 4, 0)[0]
    assert cb.tolist() == [[True, False, True, False], [False, True, False, True], [True, False, True, False]]
    assert torch.equal(checkerboard_mask(3, 4, 1), ~checkerboard_mask(3, 4, 0))
    assert channel_mask(4, 0).tolist() == [True, True, False, False]
    assert channel_mask(4, 1).tolist() == [False, False, True, True]
    assert alternating_mask(5, 0).tolist() == [True, False, True, False, True]
    with pytest.raises(ConfigError, match="keep some"):
        Coupling(torch.ones(4, dtype=torch.bool), torch.nn.Identity())


def test_lu_conv_matrix_and_logdet():
    torch.manual_seed(1)
    conv = InvertibleConv1x1(5, lu=True).double()
    perturb(conv, 2, 0.3)
    w = conv.matrix()
    torch.testing.assert_close(conv._logabsdet(), torch.linalg.slogdet(w)[1])
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(conv(x)[0], torch.einsum("ij,bjhw->bihw", w, x))
    plain = InvertibleConv1x1(5)
    q = plain.weight.detach().double()
    torch.testing.assert_close(q @ q.T, torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)  # a rotation at init


def test_squeeze_ordering():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    assert y.shape == (1, 4, 2, 2)
    # channel 2*di + dj holds pixel (2i + di, 2j + dj) (Glow's squeeze2d)
    assert y[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert y[0, 3, 1, 1].item() == 15.0


# ------------------------------------------------------------------ base distributions, units
def test_base_distributions_normalised_and_tempered():
    grid = torch.linspace(-30, 30, 60001, dtype=torch.float64)[:, None]
    for prior in (StandardNormal(), StandardLogistic()):
        mass = torch.trapezoid(prior.log_prob(grid).exp(), grid[:, 0])
        assert abs(float(mass) - 1.0) < 1e-6
        z = prior.sample((20000, 1), gen(0), temperature=0.5, dtype=torch.float64)
        ref = prior.sample((20000, 1), gen(0), temperature=1.0, dtype=torch.float64)
        torch.testing.assert_close(z, 0.5 * ref)
    torch.testing.assert_close(StandardLogistic().log_prob(torch.zeros(1, 3)), torch.tensor([-3 * math.log(4.0)]))


def test_loss_is_nats_and_bits_per_dim_formula():
    torch.manual_seed(0)
    m = genzoo.build("glow", shape=(1, 8, 8), num_scales=2, steps=1, hidden=8)
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    out = m.loss(x)
    assert set(out) == {"loss", "nll", "bits_per_dim"}
    torch.testing.assert_close(out["loss"], -m.log_prob(x).mean())
    # the pinned formula: bits/dim = nll / (D ln 2) + log2(256 / (hi - lo)) = ... + 7 on [-1, 1]
    torch.testing.assert_close(out["bits_per_dim"], out["nll"] / (64 * math.log(2)) + 7.0)
    out[("loss")].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)


# ------------------------------------------------------------------ trained 2-D flows
@pytest.fixture(scope="module")
def toy_flows():
    """NICE, RealNVP and Glow trained 300 steps on the 8 Gaussians (Adam, plain loop)."""
    data = sample_8gaussians(4096, gen(0))
    specs = {
        "nice": dict(couplings=4, hidden=32, depth=2, prior="gaussian"),
        "realnvp": dict(couplings=2, hidden=32, depth=2),
        "glow": dict(steps=4, hidden=32, depth=2),
    }
    out = {}
    for name, kw in specs.items():
        torch.manual_seed(0)
        m = genzoo.build(name, shape=(2,), **kw)
        opt = torch.optim.Adam(m.parameters(), 3e-3)
        g = gen(1)
        with torch.no_grad():
            start = float(-m.log_prob(data[:1024]).mean())
        for _ in range(300):
            idx = torch.randint(0, len(data), (256,), generator=g)
            loss = m.loss(data[idx])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[name] = (m.eval(), start)
    return out


@pytest.mark.parametrize("name", ["nice", "realnvp", "glow"])
def test_trained_2d_flow_density_integrates_to_one(toy_flows, name):
    m, start = toy_flows[name]
    test = sample_8gaussians(2000, gen(5))
    with torch.no_grad():
        nll = float(-m.log_prob(test).mean())
        lim, n = 9.0, 500
        ax = torch.linspace(-lim, lim, n)
        gx, gy = torch.meshgrid(ax, ax, indexing="ij")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        dens = m.log_prob(pts).exp().reshape(n, n).double()
    mass = float(torch.trapezoid(torch.trapezoid(dens, ax.double(), dim=1), ax.double()))
    assert abs(mass - 1.0) < 0.02, mass
    assert nll < start - 0.5  # it learned something
    assert nll > 2.7  # and the NLL respects the floor: the 8 Gaussians' entropy is ~2.84 nats


def test_sampling_reproducible_with_generator_and_temperature(toy_flows):
    m, _ = toy_flows["glow"]
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    a = m.sample(64, generator=gen(4))
    assert torch.equal(torch.rand(3), ref)  # the global RNG is untouched
    b = m.sample(64, generator=gen(4))
    assert a.shape == (64, 2) and torch.equal(a, b)
    assert not torch.equal(a, m.sample(64, generator=gen(5)))
    cold = m.sample(5, generator=gen(4), temperature=0.0)
    torch.testing.assert_close(cold, m.decode(torch.zeros(5, 2)))
    z = torch.randn((64, 2), generator=gen(4))
    torch.testing.assert_close(m.sample(64, generator=gen(4), temperature=0.5), m.decode(0.5 * z))
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        m.sample(2, temprature=0.5)
    with pytest.raises(ConfigError, match="temperature"):
        m.sample(2, temperature=-1.0)


def test_samples_follow_the_data(toy_flows):
    m, _ = toy_flows["realnvp"]
    s = m.sample(2000, generator=gen(0))
    r = s.norm(dim=1)
    assert 0.6 < float(((r > 2.0) & (r < 4.0)).float().mean())  # most samples on the ring of centres (radius 2.83)


# ------------------------------------------------------------------ images: encode / decode / interpolate
def tiny_image(name="glow", seed=0, **kw):
    torch.manual_seed(seed)
    args = {"glow": dict(num_scales=2, steps=2, hidden=8), "realnvp": dict(num_scales=1, couplings=1, hidden=8, blocks=1),
            "nice": dict(hidden=16, depth=1)}[name]
    args.update(kw)
    m = genzoo.build(name, shape=(1, 8, 8), **args)
    m.loss(torch.rand(32, 1, 8, 8) * 1.9 - 0.95)  # initialise actnorms
    perturb(m, seed + 1, 0.05)
    return m.eval()


@pytest.mark.parametrize("name", ["nice", "realnvp", "glow"])
def test_encode_decode_roundtrip_and_interpolation(name, tmp_path):
    m = tiny_image(name)
    x = torch.rand(4, 1, 8, 8) * 1.9 - 0.95
    z = m.encode(x)
    assert z.shape == (4, 64)
    torch.testing.assert_close(m.decode(z), x, atol=1e-4, rtol=0)
    grid = m.interpolate(x[:2], x[2:], steps=5)
    assert grid.shape == (2, 5, 1, 8, 8)
    torch.testing.assert_close(grid[:, 0], x[:2], atol=1e-4, rtol=0)
    torch.testing.assert_close(grid[:, -1], x[2:], atol=1e-4, rtol=0)
    mid = m.decode(0.5 * (z[:2] + z[2:]))
    torch.testing.assert_close(grid[:, 2], mid, atol=1e-5, rtol=0)
    p = save_interpolation_grid(m, x[:2], x[2:], tmp_path / "interp.png", steps=5)
    from PIL import Image

    img = Image.open(p)
    assert img.size[0] > img.size[1] > 0  # 5 columns, 2 rows
    s = m.sample(6, generator=gen(1), temperature=0.7)
    assert s.shape == (6, 1, 8, 8) and s.min() >= -1 and s.max() <= 1
    with pytest.raises(DataError, match="shape"):
        m.log_prob(torch.zeros(2, 1, 28, 28))
    with pytest.raises(DataError, match="latents"):
        m.decode(torch.zeros(2, 10))


def test_log_prob_options():
    m = tiny_image("realnvp")
    x = torch.rand(3, 1, 8, 8) * 1.9 - 0.95
    with pytest.raises(ConfigError, match="variational"):
        m.log_prob(x, k=5)
    with pytest.raises(ConfigError, match="unknown log_prob option"):
        m.log_prob(x, steps=3)
    with pytest.raises(ConfigError, match="unknown loss option"):
        m.loss(x, player="generator")


# ------------------------------------------------------------------ variational dequantisation
def test_variational_dequantizer_density_is_correct():
    """log q(u|x) against the change of variables computed by autograd: eps -> u."""
    torch.manual_seed(0)
    q = VariationalDequantizer((1, 4, 4), steps=2, hidden=8).double()
    perturb(q, 1, 0.2)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1
    u, log_q = q.sample(x, generator=gen(3))
    assert ((u > 0) & (u < 1)).all() and log_q.shape == (2,)
    eps = torch.randn(x.shape, generator=gen(3), dtype=torch.float64)
    h = q.features(x)

    def to_u(e):
        v, _ = q.flow(e, cond=h)
        return torch.sigmoid(v)

    torch.testing.assert_close(to_u(eps), u)
    jac = torch.autograd.functional.jacobian(to_u, eps).reshape(2, 16, 2, 16)
    for i in range(2):
        ref = StandardNormal().log_prob(eps[i:i + 1])[0] - torch.linalg.slogdet(jac[i, :, i])[1]
        torch.testing.assert_close(log_q[i], ref)


def test_variational_flow_bound_and_grid_mapping():
    torch.manual_seed(0)
    m = genzoo.build("glow", shape=(1, 8, 8), num_scales=2, steps=1, hidden=8, dequantization="variational",
                     deq_steps=2, deq_hidden=8)
    assert m.likelihood == "bound" and Flow.likelihood == "exact"
    k = torch.randint(0, 256, (4, 1, 8, 8), generator=gen(0))
    x = ScaleLevels(256)(k)  # the loader's grid for data.dequantize=none
    torch.testing.assert_close(m.bin_index(x), k.float())
    u = torch.rand(k.shape, generator=gen(1))
    y_loader = UniformDequantize(256)(k, gen(1))
    torch.testing.assert_close(m.dequantize(x, u), y_loader)  # same bins as data.dequantize=uniform
    torch.testing.assert_close(m.quantize(y_loader), x)
    lp1 = m.log_prob(x, generator=gen(2))
    assert torch.equal(lp1, m.log_prob(x, generator=gen(2)))  # reproducible with a generator
    lp8 = m.log_prob(x, k=8, generator=gen(2))
    assert lp1.shape == lp8.shape == (4,) and torch.isfinite(lp8).all()
    g = gen(2)
    terms = torch.stack([m.log_prob(x, generator=g) for _ in range(8)])
    torch.testing.assert_close(lp8, torch.logsumexp(terms, 0) - math.log(8))
    # closed form (replaces a "k = 8 bound >= mean of its terms" check that holds by Jensen for any
    # terms): the fresh q(u|x) is the identity flow on eps, u = sigmoid(eps), eps ~ N(0, I) drawn in
    # turn from the generator, so log q = sum log N(eps) - log sigmoid'(eps), and each term is
    # log p(y) - log q with y = lo + (hi - lo)(k + u) / L in the bins of the loader's mapping
    g = gen(2)
    with torch.no_grad():
        hand = []
        for _ in range(8):
            eps = torch.randn(x.shape, generator=g)
            u = torch.sigmoid(eps)
            y = -1.0 + 2.0 * (k.float() + u) / 256
            log_q = (-0.5 * eps**2 - 0.5 * math.log(2 * math.pi)
                     - torch.nn.functional.logsigmoid(eps) - torch.nn.functional.logsigmoid(-eps)).sum((1, 2, 3))
            hand.append(m.log_density(y) - log_q)
        hand = torch.stack(hand)
    torch.testing.assert_close(lp1.detach(), hand[0], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(lp8.detach(), torch.logsumexp(hand, 0) - math.log(8), rtol=1e-5, atol=1e-3)
    out = m.loss(x)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.dequantizer.parameters())
    m.eval()
    s = m.sample(5, generator=gen(3))
    kk = (s + 1) / 2 * 255
    torch.testing.assert_close(kk, kk.round(), atol=1e-4, rtol=0)  # samples on the data's 256-level grid


# ------------------------------------------------------------------ construction and data checks
def test_build_errors():
    with pytest.raises(ConfigError, match="num_scales=2 or less"):
        genzoo.build("realnvp", shape=(1, 28, 28), num_scales=3)
    with pytest.raises(ConfigError, match="num_scales=2 or less"):
        genzoo.build("glow", shape=(1, 28, 28), num_scales=3)
    with pytest.raises(ConfigError, match="prior"):
        genzoo.build("nice", shape=(4,), prior="cauchy")
    with pytest.raises(ConfigError, match="dequantization"):
        genzoo.build("nice", shape=(4,), dequantization="gaussian")
    with pytest.raises(ConfigError, match="norm"):
        genzoo.build("realnvp", shape=(4,), norm="layer")
    with pytest.raises(ConfigError, match="scale"):
        genzoo.build("glow", shape=(4,), scale="softplus")
    with pytest.raises(ConfigError, match="at least 2"):
        genzoo.build("nice", shape=(1,))
    reg = list_models()
    for name, cls in (("nice", NICE), ("realnvp", RealNVP), ("glow", Glow)):
        assert reg[name].cls is cls and reg[name].family == "flows"


def test_check_data_refusals():
    img = tiny_image("glow")
    deq = DataSpec("mnist", "image", (1, 8, 8), value_range=(-1.0, 1.0), dequantization="uniform")
    grid = DataSpec("mnist", "image", (1, 8, 8), value_range=(-1.0, 1.0))
    img.check_data(deq)
    with pytest.raises(ConfigError, match="dequantize=uniform"):
        img.check_data(grid)
    with pytest.raises(ConfigError, match="binarize=none"):
        img.check_data(DataSpec("mnist", "image", (1, 8, 8), value_range=None, discrete="binary", binarization="static"))
    with pytest.raises(ConfigError, match="token"):
        genzoo.build("nice", shape=(16,)).check_data(DataSpec("shakespeare", "text", (16,), value_range=None,
                                                               discrete="tokens", vocab_size=65))
    with pytest.raises(ConfigError, match="data_range"):
        img.check_data(DataSpec("mnist", "image", (1, 8, 8), value_range=(0.0, 1.0), dequantization="uniform"))
    with pytest.raises(ConfigError, match="shape"):
        img.check_data(DataSpec("mnist", "image", (1, 28, 28), value_range=(-1.0, 1.0), dequantization="uniform"))
    var = genzoo.build("glow", shape=(1, 8, 8), num_scales=1, steps=1, hidden=8, dequantization="variational")
    var.check_data(grid)
    with pytest.raises(ConfigError, match="dequantize=none"):
        var.check_data(deq)
    with pytest.raises(ConfigError, match="levels=17"):
        var.check_data(DataSpec("digits", "image", (1, 8, 8), value_range=(-1.0, 1.0), levels=17))
    genzoo.build("realnvp", shape=(2,)).check_data(DataSpec("moons", "vector", (2,), value_range=None))


# ------------------------------------------------------------------ peers' coupling layers
def _index_coupling(kind):
    torch.manual_seed(0)
    mask = torch.tensor([True, False, True, False, False])  # keep 0, 2; transform 1, 3, 4
    net = MLP(2, (2 if kind == "affine" else 1) * 3, 16, 1)
    c = Coupling(mask, net, kind=kind, scale="sigmoid")
    perturb(c, 1, 0.3)
    return c, mask


@pytest.mark.parametrize("kind", ["additive", "affine"])
def test_nflows_coupling_same_logdet(kind):
    nflows = pytest.importorskip("nflows")
    from nflows.transforms.coupling import AdditiveCouplingTransform, AffineCouplingTransform

    ours, mask = _index_coupling(kind)
    n_b = int((~mask).sum())

    class Shared(torch.nn.Module):
        """nflows' transform net: our network's weights; nflows computes scale = sigmoid(u + 2) + 1e-3, so
        u is chosen to give the same scale as ours, sigmoid(h + 2)."""

        def __init__(self, *_):
            super().__init__()
            self.inner = ours.net

        def forward(self, x, context=None):
            h = self.inner(x)
            if kind == "additive":
                return h
            shift, raw = h[:, :n_b], h[:, n_b:]
            u = torch.logit(torch.sigmoid(raw + 2) - 1e-3) - 2
            return torch.cat([shift, u], 1)

    cls = AffineCouplingTransform if kind == "affine" else AdditiveCouplingTransform
    theirs = cls((~mask).int(), lambda i, o: Shared())
    x = torch.randn(7, 5, generator=gen(2))
    z_ours, ld_ours = ours(x)
    z_theirs, ld_theirs = theirs(x)
    torch.testing.assert_close(z_ours, z_theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ld_ours, ld_theirs, atol=1e-5, rtol=1e-5)
    del nflows


def test_zuko_coupling_same_logdet():
    zuko = pytest.importorskip("zuko")
    from torch.distributions import AffineTransform
    from zuko.transforms import CouplingTransform

    ours, mask = _index_coupling("affine")
    n_b = int((~mask).sum())

    def meta(x_a):
        shift, raw = ours.net(x_a).split(n_b, dim=-1)
        return AffineTransform(shift, torch.sigmoid(raw + 2))

    theirs = CouplingTransform(meta, mask)
    x = torch.randn(7, 5, generator=gen(2))
    z_ours, ld_ours = ours(x)
    z_theirs, ld_theirs = theirs.call_and_ladj(x)
    if ld_theirs.dim() == 2:  # older zuko leaves the per-feature terms to the caller
        ld_theirs = ld_theirs.sum(-1)
    torch.testing.assert_close(z_ours, z_theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ld_ours, ld_theirs, atol=1e-5, rtol=1e-5)
    del zuko


# ------------------------------------------------------------------ CLI end to end
TINY = ["train.steps=12", "train.batch_size=32", "train.ckpt_every=6", "train.num_samples=8", "train.sample_every=6",
        "train.log_every=6", "train.valid_every=6", "train.valid_batches=1", "--no-progress"]


def test_cli_train_sample_eval_toy(tmp_path):
    run = tmp_path / "toy"
    assert main(["train", "flow_toy", *TINY, "model.hidden=16", "model.couplings=2", "--run-dir", str(run)]) == 0
    s = json.loads((run / "train_summary.json").read_text())
    assert s["steps"] == 12 and s["model"] == "RealNVP" and (run / "samples.png").is_file()
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["sample", str(run), "--n", "6", "--out", str(a), "temperature=0.5"]) == 0
    assert main(["sample", str(run), "--n", "6", "--out", str(b), "temperature=0.5"]) == 0
    xa = np.load(a)
    assert xa.shape == (6, 2) and np.array_equal(xa, np.load(b))
    out = tmp_path / "m.json"
    assert main(["eval", str(run), "--metrics", "nll", "--limit", "50", "--no-progress", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["nll"]
    assert r["num_examples"] == 50 and math.isfinite(r["nll_nats"]) and r["likelihood"] == "exact"
    assert r["offset_bits"] == 0.0  # continuous 2-D data: no dequantisation offset


def test_cli_glow_on_digits_with_actnorm_checkpoints(tmp_path):
    """An image flow through the trainer: actnorm's init flag and the EMA survive the checkpoint."""
    run = tmp_path / "glow"
    assert main(["train", "glow", "data.name=digits", "model.hidden=8", "model.steps=1", "train.time_budget=0",
                 *TINY, "--run-dir", str(run)]) == 0
    out = tmp_path / "m.json"
    assert main(["eval", str(run), "--metrics", "nll", "--limit", "20", "--no-progress", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["nll"]
    assert r["offset_bits"] == pytest.approx(math.log2(17 / 2))  # 17 grey levels dequantised onto [-1, 1]
    assert r["bits_per_dim"] == pytest.approx(r["nll_nats"] / (64 * math.log(2)) + math.log2(17 / 2))
    from genzoo.train.run import load_run

    model, _, _ = load_run(run)
    assert all(int(a.initialized) == 1 for a in model.modules() if isinstance(a, ActNorm))
    data = load_dataset("digits", "test", dequantize="uniform")
    x, _ = data.get_batch(torch.arange(4), gen(0))
    torch.testing.assert_close(model.decode(model.encode(x)), x, atol=1e-4, rtol=0)


def test_cli_refuses_undequantised_images(capsys):
    assert main(["train", "glow", "data.name=digits", "data.dequantize=none", "--no-progress"]) == 2
    assert "dequantize=uniform" in capsys.readouterr().err


# ------------------------------------------------------------------ issue 29: training bits/dim use the data's levels
@pytest.mark.parametrize("name", ["glow", "realnvp", "nice"])
def test_training_bits_per_dim_use_the_data_levels(name):
    m = tiny_image(name)
    assert m.levels == 256
    x = torch.rand(4, 1, 8, 8, generator=gen(3)) * 1.9 - 0.95
    out = m.loss(x)
    torch.testing.assert_close(out["bits_per_dim"], out["nll"] / (64 * math.log(2)) + 7.0)  # 256 levels in [-1, 1]
    m.check_data(DataSpec("digits", "image", (1, 8, 8), value_range=(-1.0, 1.0), dequantization="uniform", levels=17))
    out = m.loss(x)
    torch.testing.assert_close(out["bits_per_dim"], out["nll"] / (64 * math.log(2)) + math.log2(17 / 2))
