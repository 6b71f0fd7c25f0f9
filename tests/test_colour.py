"""Every image family at 3x32x32 colour (issue 32): tiny widths, loss / sample / log_prob, and the
autoregressive models' colour masks checked by the Jacobian (no conditional depends on a later
sub-pixel in the model's ordering: R | G given R | B given R, G within a pixel)."""
from __future__ import annotations

import pytest
import torch

import genzoo
from genzoo.data.base import DataSpec

SHAPE = (3, 32, 32)
GRID = DataSpec(name="cifar10", kind="image", shape=SHAPE, value_range=(-1.0, 1.0), levels=256, num_classes=10)
DEQ = DataSpec(name="cifar10", kind="image", shape=SHAPE, value_range=(-1.0, 1.0), levels=256, num_classes=10,
               dequantization="uniform")

UNET = dict(channels=16, channel_mult=(1, 2), attn_resolutions=(16,), num_res_blocks=1)
GAN = dict(latent_dim=16, channels=16)
# model -> (constructor arguments besides shape, the data it is trained on)
MODELS = {
    "vae": (dict(arch="conv", channels=16, latent_dim=8, decoder="logistic"), GRID),
    "nvae": (dict(channels=8, latent_channels=2, decoder="logistic"), GRID),
    "fvsbn": (dict(output="logistic", nr_mix=1), GRID),
    "nade": (dict(hidden=16, output="logistic", nr_mix=1), GRID),
    "made": (dict(hidden=(64,), output="logistic", nr_mix=1), GRID),
    "pixelcnn": (dict(blocks=1, output="logistic", nr_mix=1), GRID),
    "gated_pixelcnn": (dict(layers=2, output="logistic", nr_mix=1), GRID),
    "nice": (dict(couplings=2, hidden=32, depth=1), DEQ),
    "realnvp": (dict(num_scales=2, couplings=1, hidden=8, blocks=1), DEQ),
    "glow": (dict(num_scales=2, steps=1, hidden=16), DEQ),
    "tarflow": (dict(patch_size=4, blocks=2, layers_per_block=1, dim=32, heads=2), DEQ),
    "diffusion": (dict(UNET), DEQ),
    "shortcut": (dict(UNET), DEQ),
    "pfgm": (dict(UNET, steps=2), DEQ),
    **{g: (dict(GAN), GRID) for g in ("gan", "wgan", "wgan_gp", "gan_qp", "ogan", "bigan", "bigan_qp")},
    "image_transformer": (dict(levels=256, dim=16, depth=1, heads=2), GRID),
    "vqvae": (dict(channels=16, res_blocks=1, codebook_size=16, code_dim=4), GRID),
    # the perceptual loss on the shipped CIFAR-10 feature net (3x32x32)
    "vqgan": (dict(channels=16, res_blocks=1, codebook_size=16, code_dim=4, disc_channels=8), GRID),
}
# pixel-by-pixel samplers take D = 3,072 sequential passes at 3x32x32: they sample at 3x8x8 here (same code path)
SEQUENTIAL = {"fvsbn", "nade", "made", "pixelcnn", "gated_pixelcnn", "image_transformer"}
SAMPLE = {"diffusion": dict(sampler="euler", steps=2), "shortcut": dict(steps=2), "pfgm": dict(sampler="euler", steps=2)}
LOG_PROB = {"vae": dict(k=2), "nvae": dict(k=2), "diffusion": dict(method="euler"), "shortcut": dict(method="euler")}


def _data(spec: DataSpec, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (n, *SHAPE), generator=g).float()
    if spec.dequantization:
        return -1 + 2 * (k + torch.rand(k.shape, generator=g)) / 256
    return -1 + 2 * k / 255


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_image_model_at_3x32x32(name):
    args, spec = MODELS[name]
    torch.manual_seed(0)
    model = genzoo.build(name, shape=SHAPE, **args)
    model.check_data(spec)
    x = _data(spec, 2)
    players = model.players()
    for p in (players or [None]):
        out = model.loss(x, player=p) if p else model.loss(x)
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]), (name, p, out)
    model.eval()
    with torch.no_grad():
        sampler, shape = model, SHAPE
        if name in SEQUENTIAL:
            shape = (3, 8, 8)
            sampler = genzoo.build(name, shape=shape, **args).eval()
        s = sampler.sample(2, generator=torch.Generator().manual_seed(0), **SAMPLE.get(name, {}))
        assert s.shape == (2, *shape) and torch.isfinite(s).all(), (name, s.shape)
        if model.likelihood != "none":
            lp = model.log_prob(x, **LOG_PROB.get(name, {}))
            assert lp.shape == (2,) and torch.isfinite(lp).all(), (name, lp)


def test_the_image_transformer_sees_only_earlier_sub_pixels():
    """Sub-pixel order R | G given R | B given R, G: changing sub-pixel j changes the logits of later ones only."""
    shape = (3, 4, 4)
    torch.manual_seed(0)
    model = genzoo.build("image_transformer", shape=shape, levels=256, dim=16, depth=2, heads=2).eval()
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (1, *shape), generator=g)
    x = -1 + 2 * k.float() / 255
    base = model.logits(x)
    seq = lambda t: t.permute(0, 2, 3, 1).reshape(-1)          # noqa: E731  (C, H, W) -> sub-pixel raster order
    index = seq(torch.arange(48).reshape(1, *shape))              # flat (C, H, W) index of each sequence position
    for j in range(48):
        c, rest = divmod(int(index[j]), 16)
        k2 = k.clone()
        k2[0, c, rest // 4, rest % 4] = (k2[0, c, rest // 4, rest % 4] + 128) % 256   # another level
        diff = (model.logits(-1 + 2 * k2.float() / 255) - base).abs().amax(-1)[0]   # (48,): output i predicts sub-pixel i
        assert (diff[: j + 1] == 0).all(), (j, diff[: j + 1])
        if j < 47:
            assert diff[j + 1:].max() > 0, j


@pytest.mark.parametrize("name", ["fvsbn", "nade", "made", "pixelcnn", "gated_pixelcnn"])
def test_colour_autoregressive_masks_by_the_jacobian(name):
    """d conditional(x_d) / d x_e = 0 for every e at or after d in the model's ordering."""
    shape = (3, 5, 5)
    args = dict(MODELS[name][0])
    if name == "pixelcnn":
        args.update(first_kernel=3)
    torch.manual_seed(0)
    model = genzoo.build(name, shape=shape, **args).double()
    D = 75
    order = model.ordering()
    rank = torch.empty(D, dtype=torch.long)
    rank[order] = torch.arange(D)
    x = torch.rand(1, *shape, dtype=torch.float64) * 2 - 1

    def f(flat):
        return model.conditionals(flat.reshape(1, *shape)).reshape(-1, D)   # (P, D): the parameters of each d

    J = torch.autograd.functional.jacobian(f, x.reshape(-1))     # (P, D, D_in)
    dep = J.abs().sum(0) > 0                                      # dep[d, e]: conditional d depends on x_e
    later = rank[None, :] >= rank[:, None]                        # e at or after d
    assert not (dep & later).any(), f"{name}: conditionals see later sub-pixels at {(dep & later).nonzero()[:5].tolist()}"
    # and they do see something: every conditional after the first depends on an earlier sub-pixel
    assert dep[order[1:]].any(1).all(), name


def test_vqgan_perceptual_loss_at_colour_uses_the_cifar10_net():
    from genzoo.eval.features import CIFAR10FeatureNet

    m = genzoo.build("vqgan", shape=SHAPE, channels=8, res_blocks=1, codebook_size=16, code_dim=4, disc_channels=8)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, *SHAPE, generator=g) * 2 - 1
    y = torch.rand(4, *SHAPE, generator=g) * 2 - 1
    assert isinstance(m._feature_net(x.device), CIFAR10FeatureNet)
    same, diff = m.perceptual(x, x), m.perceptual(x, y)
    assert same.shape == (4,) and torch.allclose(same, torch.zeros(4), atol=1e-6) and (diff > 1e-3).all()
    from genzoo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\(3, 32, 32\).*perceptual_weight=0"):
        genzoo.build("vqgan", shape=(3, 16, 16))
