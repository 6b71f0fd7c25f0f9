"""TARFLOW (genzoo.models.flows.tarflow): exact inverse and log-determinant, the autoregressive
property of every block, cached = uncached decoding, guidance as the paper's mixing of two
predictions, the denoising step, reproducible sampling, the noise-augmented log_prob, and the
CLI end to end on the 8x8 digits. Everything is tiny (1x4x4 images with 2x2 patches)."""
from __future__ import annotations

import json
import math

import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data import DataSpec, load_dataset
from genzoo.errors import ConfigError, DataError
from genzoo.models.flows import TarFlow
from genzoo.models.flows.tarflow import AutoregressiveAffine, Patchify, TarFlowTransform
from genzoo.registry import list_models

D64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Move every parameter off its initialisation: the zero-initialised output heads make every
    block the identity, which would test nothing."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def tiny(seed: int = 0, **kw) -> TarFlow:
    """A float64 TARFLOW on 1x4x4 images with 2x2 patches (T = 4 patches of P = 4), perturbed, eval mode."""
    args = dict(shape=(1, 4, 4), patch_size=2, blocks=3, layers_per_block=1, dim=16, heads=2)
    args.update(kw)
    torch.manual_seed(seed)
    return perturb(genzoo.build("tarflow", **args).double(), seed + 1).eval()


def images(n: int = 3, seed: int = 0, shape=(1, 4, 4)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=gen(seed), dtype=D64) * 1.9 - 0.95


def block(reverse=False, num_classes=0, seq_len=5, patch_dim=3, seed=0) -> AutoregressiveAffine:
    torch.manual_seed(seed)
    b = AutoregressiveAffine(seq_len, patch_dim, dim=16, depth=2, heads=2, reverse=reverse, num_classes=num_classes)
    return perturb(b.double(), seed + 1).eval()


def autograd_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det dfn/dx| per example from the autograd Jacobian (examples must not interact)."""
    n, d = x.shape[0], x[0].numel()
    jac = torch.autograd.functional.jacobian(lambda inp: fn(inp).reshape(n, -1), x, vectorize=True).reshape(n, d, n, d)
    out = []
    for i in range(n):
        for j in range(n):
            if j != i:
                assert jac[i, :, j].abs().max() < 1e-12, "examples must not interact"
        out.append(torch.linalg.slogdet(jac[i, :, i])[1])
    return torch.stack(out)


# ------------------------------------------------------------------ invertibility and log-determinants
CASES = {
    "patchify-image": (lambda: Patchify((2, 4, 6), 2), (2, 4, 6), None),
    "patchify-vector": (lambda: Patchify((5,)), (5,), None),
    "block-forward": (lambda: block(), (5, 3), None),
    "block-reverse": (lambda: block(reverse=True), (5, 3), None),
    "block-class-conditional": (lambda: block(num_classes=4), (5, 3), torch.tensor([0, 3, 4])),  # 4 = the null label
    "model-image": (lambda: tiny().transform, (1, 4, 4), None),
    "model-image-conditional": (lambda: tiny(num_classes=3).transform, (1, 4, 4), torch.tensor([2, 0, 3])),
    "model-vector": (lambda: tiny(shape=(3,), blocks=4).transform, (3,), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_inverse_of_forward_is_identity_float64(name):
    factory, shape, cond = CASES[name]
    t = factory().double()
    x = images(3, 1, shape)
    with torch.no_grad():
        z, ld = t(x, cond)
        back = t.inverse(z, cond)
    assert ld.shape == (3,) and tuple(z.shape[1:]) == t.output_shape(shape)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)
    if not name.startswith("patchify"):
        assert not torch.allclose(z.reshape(3, -1), x.reshape(3, -1), atol=1e-3)  # not the identity
        assert ld.abs().min() > 1e-3


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("patchify")])
def test_logabsdet_matches_autograd_jacobian(name):
    factory, shape, cond = CASES[name]
    t = factory().double()
    x = images(3, 2, shape)
    with torch.no_grad():
        _, ld = t(x, cond)
    torch.testing.assert_close(ld, autograd_logdet(lambda inp: t(inp, cond)[0], x), rtol=1e-7, atol=1e-7)


def test_patch_order_is_unfold():
    x = torch.randn(2, 3, 4, 6, generator=gen(0))
    seq, ld = Patchify((3, 4, 6), 2)(x)
    torch.testing.assert_close(seq, torch.nn.functional.unfold(x, 2, stride=2).transpose(1, 2))
    assert seq.shape == (2, 6, 12) and torch.equal(ld, torch.zeros(2))


# ------------------------------------------------------------------ the autoregressive property
@pytest.mark.parametrize("reverse", [False, True])
def test_patch_i_never_changes_the_parameters_of_patches_up_to_i(reverse):
    """d(mu_j, alpha_j)/dx_i = 0 for every j at or before i in the block's reading order (autograd),
    and the first patch read has (mu, alpha) = 0: it passes unchanged."""
    b = block(reverse=reverse)
    T = 5
    x = images(1, 3, (T, 3))

    def params(inp):  # in the sequence's own order
        mu, alpha = b.params(b._order(inp))
        return torch.cat([b._order(mu), b._order(alpha)], -1)  # (1, T, 2P)

    jac = torch.autograd.functional.jacobian(params, x)[0, :, :, 0]  # (T, 2P, T, P)
    influence = jac.abs().sum((1, 3))  # [j, i]: how much patch i moves patch j's parameters
    order = list(range(T))[::-1] if reverse else list(range(T))
    for a, j in enumerate(order):
        for c, i in enumerate(order):
            if c >= a:
                assert influence[j, i] == 0, f"patch {i} changes the parameters of patch {j}"
            else:
                assert influence[j, i] > 1e-6  # and the earlier ones really condition it
    first = order[0]
    assert params(x)[0, first].abs().max() == 0
    z, _ = b(x)
    torch.testing.assert_close(z[0, first], x[0, first])


# ------------------------------------------------------------------ decoding: cache, guidance
@pytest.mark.parametrize("guide", [{}, {"guidance": 1.5}, {"guidance": 0.7, "attn_temp": 0.5, "annealed": True}])
def test_cached_and_uncached_inversion_agree(guide):
    b = block(num_classes=3)
    z = images(4, 4, (5, 3))
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        cached = b.inverse(z, y, cached=True, **guide)
        full = b.inverse(z, y, cached=False, **guide)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("conditional,annealed", [(True, False), (True, True), (False, False)])
def test_guided_inverse_mixes_the_two_predictions(conditional, annealed):
    """The guided decode x is the exact inverse of the autoregressive map whose parameters are
    (1 + w_i) (mu, alpha)(x_<i; label) - w_i (mu, alpha)(x_<i; null label, attention temperature tau)."""
    w, tau = 1.3, 0.4
    b = block(reverse=True, num_classes=3 if conditional else 0)
    z = images(3, 5, (5, 3))
    y = torch.tensor([2, 0, 1]) if conditional else None
    null = torch.full((3,), 3) if conditional else None
    with torch.no_grad():
        x = b.inverse(z, y, guidance=w, attn_temp=tau, annealed=annealed)
        xs = b._order(x)
        mu_c, a_c = b.params(xs, y)
        mu_u, a_u = b.params(xs, null, attn_temp=tau)
        T = xs.shape[1]
        wi = (w * torch.arange(T, dtype=D64) / (T - 1) if annealed else torch.full((T,), w, dtype=D64))[None, :, None]
        mu, alpha = mu_c + wi * (mu_c - mu_u), a_c + wi * (a_c - a_u)
        torch.testing.assert_close(b._order((xs - mu) * torch.exp(-alpha)), z, rtol=0, atol=1e-10)
        assert not torch.allclose(x, b.inverse(z, y), atol=1e-4)  # guidance changed the decode


# ------------------------------------------------------------------ the model: density, denoising, sampling
def test_vector_tarflow_density_integrates_to_one():
    m = tiny(shape=(2,), blocks=4, noise_std=0.0, seed=2)
    n, lim = 400, 8.0
    ax = torch.linspace(-lim, lim, n, dtype=D64)
    gx, gy = torch.meshgrid(ax, ax, indexing="ij")
    with torch.no_grad():
        dens = m.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).exp().reshape(n, n)
    mass = float(torch.trapezoid(torch.trapezoid(dens, ax, dim=1), ax))
    assert abs(mass - 1.0) < 1e-3, mass


def test_denoising_step_is_tweedie_and_identity_at_sigma_zero():
    m = tiny(noise_std=0.05, num_classes=2)
    y = images(2, 6)
    labels = torch.tensor([1, 0])
    assert torch.equal(m.denoise(y, labels, sigma=0.0), y)
    out = m.denoise(y, labels)  # sigma = noise_std
    # central finite differences of the exact log-density, coordinate by coordinate
    eps = 1e-6
    grad = torch.zeros_like(y)
    with torch.no_grad():
        for k in range(y[0].numel()):
            e = torch.zeros(y[0].numel(), dtype=D64)
            e[k] = eps
            e = e.reshape(y.shape[1:])
            grad.reshape(2, -1)[:, k] = (m.log_density(y + e, labels) - m.log_density(y - e, labels)) / (2 * eps)
    torch.testing.assert_close(out, y + 0.05 ** 2 * grad, rtol=0, atol=1e-9)
    assert (out - y).abs().max() > 1e-6


def test_sampling_reproducible_and_equal_to_decode_then_denoise():
    m = tiny(noise_std=0.1, num_classes=3)
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    a = m.sample(6, generator=gen(4))
    assert torch.equal(torch.rand(3), ref)  # the global RNG is untouched
    assert torch.equal(a, m.sample(6, generator=gen(4))) and a.shape == (6, 1, 4, 4) and a.dtype == D64
    assert not torch.equal(a, m.sample(6, generator=gen(5)))
    z = torch.randn((6, 16), generator=gen(4), dtype=D64)
    labels = torch.arange(6) % 3  # the default: classes cycled
    x = m.transform.inverse(z, labels)
    torch.testing.assert_close(a, m.denoise(x, labels).clamp(-1, 1))
    torch.testing.assert_close(m.sample(6, generator=gen(4), denoise=False), x.clamp(-1, 1))
    torch.testing.assert_close(m.sample(6, generator=gen(4), temperature=0.5, denoise=False),
                               m.transform.inverse(0.5 * z, labels).clamp(-1, 1))
    guided = m.sample(6, generator=gen(4), guidance=2.0, labels=1)
    assert not torch.allclose(guided, m.sample(6, generator=gen(4), labels=1), atol=1e-4)
    with pytest.raises(ConfigError, match="did you mean 'guidance'"):
        m.sample(2, guidence=1.0)
    with pytest.raises(ConfigError, match="labels must be in"):
        m.sample(2, labels=7)


def test_unconditional_guidance_needs_an_attention_temperature():
    m = tiny()
    with pytest.raises(ConfigError, match="attn_temp"):
        m.sample(2, guidance=0.5)
    with pytest.raises(ConfigError, match="unconditional"):
        m.sample(2, labels=1)
    a = m.sample(3, generator=gen(0), guidance=0.5, attn_temp=0.3)
    assert not torch.allclose(a, m.sample(3, generator=gen(0)), atol=1e-4)


def test_log_prob_is_the_noise_augmented_density():
    m = tiny(noise_std=0.05, num_classes=3)
    x = images(4, 7)
    with torch.no_grad():
        exact = m.log_prob(x, noise=False)
        torch.testing.assert_close(exact, m.log_density(x))  # default label: the null label
        torch.testing.assert_close(exact, m.log_density(x, torch.full((4,), 3)))
        noisy = m.log_prob(x, generator=gen(1))
        torch.testing.assert_close(noisy, m.log_density(x + 0.05 * torch.randn(x.shape, generator=gen(1), dtype=D64)))
        assert torch.equal(noisy, m.log_prob(x, generator=gen(1)))
        cond = m.log_prob(x, noise=False, labels=[0, 1, 2, 0])
        assert not torch.allclose(cond, exact)
    with pytest.raises(ConfigError, match="unknown log_prob option"):
        m.log_prob(x, k=4)
    out = m.loss((x, torch.tensor([0, 1, 2, 0])))
    assert set(out) == {"loss", "nll", "bits_per_dim"}
    torch.testing.assert_close(out["bits_per_dim"], out["nll"] / (16 * math.log(2)) + 7.0)
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(DataError, match="no labels"):
        m.loss(x)


def test_encode_decode_roundtrip_and_fresh_blocks_are_the_identity():
    m = tiny()
    x = images(3, 8)
    torch.testing.assert_close(m.decode(m.encode(x)), x, rtol=0, atol=1e-8)
    fresh = genzoo.build("tarflow", shape=(1, 4, 4), patch_size=2, blocks=2, layers_per_block=1, dim=16, heads=2)
    z, ld = fresh.transform(x.float())
    torch.testing.assert_close(z, Patchify((1, 4, 4), 2)(x.float())[0].reshape(3, -1))  # zero heads: identity blocks
    assert torch.equal(ld, torch.zeros(3))


def test_build_errors_registry_and_data_checks():
    assert list_models()["tarflow"].cls is TarFlow and list_models()["tarflow"].family == "flows"
    for kw, msg in [(dict(shape=(1, 6, 6), patch_size=4), "patch_size"), (dict(dequantization="variational"), "uniform"),
                    (dict(dim=30, heads=4), "divisible"), (dict(noise_std=-1.0), "noise_std"), (dict(shape=(1,)), "D >= 2")]:
        with pytest.raises(ConfigError, match=msg):
            genzoo.build("tarflow", **{"shape": (1, 4, 4), "patch_size": 2, **kw})
    assert isinstance(TarFlowTransform((1, 4, 4), 2, 2, dim=8, depth=1, heads=2).blocks[1], AutoregressiveAffine)
    deq = DataSpec("digits", "image", (1, 4, 4), value_range=(-1.0, 1.0), dequantization="uniform", levels=17)
    tiny().check_data(deq)
    with pytest.raises(ConfigError, match="no labels"):
        tiny(num_classes=10).check_data(deq)
    with pytest.raises(ConfigError, match="num_classes=10"):
        tiny(num_classes=3).check_data(DataSpec("digits", "image", (1, 4, 4), value_range=(-1.0, 1.0),
                                                dequantization="uniform", levels=17, num_classes=10))


# ------------------------------------------------------------------ CLI end to end
def test_cli_train_sample_eval_class_conditional_on_digits(tmp_path):
    run = tmp_path / "tarflow"
    assert main(["train", "tarflow", "data.name=digits", "model.patch_size=2", "model.blocks=2", "model.layers_per_block=1",
                 "model.dim=16", "model.num_classes=10", "train.steps=6", "train.batch_size=32", "train.ckpt_every=6",
                 "train.num_samples=4", "train.log_every=3", "train.valid_every=3", "train.valid_batches=1",
                 "train.time_budget=0", "--no-progress", "--run-dir", str(run)]) == 0
    s = json.loads((run / "train_summary.json").read_text())
    assert s["steps"] == 6 and s["model"] == "TarFlow" and (run / "samples.png").is_file()
    out = tmp_path / "m.json"
    assert main(["eval", str(run), "--metrics", "nll", "--limit", "16", "--no-progress", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["nll"]
    assert r["offset_bits"] == pytest.approx(math.log2(17 / 2)) and r["num_examples"] == 16
    assert r["bits_per_dim"] == pytest.approx(r["nll_nats"] / (64 * math.log(2)) + math.log2(17 / 2))
    a = tmp_path / "a.npy"
    assert main(["sample", str(run), "--n", "4", "--out", str(a), "labels=3", "guidance=1.5", "annealed_guidance=true"]) == 0
    import numpy as np

    xa = np.load(a)
    assert xa.shape == (4, 1, 8, 8) and xa.min() >= -1 and xa.max() <= 1
    from genzoo.train.run import load_run

    model, _, _ = load_run(run)
    data = load_dataset("digits", "test", dequantize="uniform")
    x, _ = data.get_batch(torch.arange(4), gen(0))
    torch.testing.assert_close(model.decode(model.encode(x)), x, atol=1e-4, rtol=0)


# ------------------------------------------------------------------ issue 29: bound, and the data's levels
def test_noise_augmented_tarflow_reports_a_bound():
    """With noise_std > 0 log_prob is the density of x + sigma eps, a bound on the data's
    likelihood (the class docstring): the model, the registry entry and the eval record say "bound"."""
    from genzoo.data.base import ArrayDataset
    from genzoo.eval import evaluate_nll

    assert TarFlow.likelihood == "bound" and list_models()["tarflow"].cls.likelihood == "bound"
    m = tiny(noise_std=0.05).float()
    assert m.likelihood == "bound"
    assert tiny(noise_std=0.0).likelihood == "exact"  # sigma = 0: a plain density of the data
    spec = DataSpec("toy", "image", (1, 4, 4), value_range=(-1.0, 1.0), dequantization="uniform", levels=256)
    ds = ArrayDataset(images(20, 3).float(), None, spec)
    r = evaluate_nll(m, ds, batch_size=8, progress=False)
    assert r["likelihood"] == "bound" and r["is_upper_bound"] is True


def test_training_bits_per_dim_use_the_data_levels():
    """17-level digits (uniformly dequantised) on a model built with the default levels=256: the
    offset is log2(17 / 2), not log2(256 / 2) (3.9 bits/dim too high)."""
    m = tiny(noise_std=0.0)
    assert m.levels == 256
    m.check_data(DataSpec("digits", "image", (1, 4, 4), value_range=(-1.0, 1.0), dequantization="uniform", levels=17))
    out = m.loss(images(4, 2))
    torch.testing.assert_close(out["bits_per_dim"], out["nll"] / (16 * math.log(2)) + math.log2(17 / 2))
