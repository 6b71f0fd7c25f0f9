"""Issue 30 item 4: the registry reads the whole class hierarchy (a subclass declares only its own
arguments), and a shared network's settings are one nested, validated section (``model.transformer``)."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import genzoo
from genzoo.config import apply_overrides, load_recipe, parse_overrides, resolve
from genzoo.errors import ConfigError
from genzoo.models.gan import AdversarialModel
from genzoo.nn.denoiser import DenoiserConfig
from genzoo.nn.time_mlp import TimeMLP
from genzoo.nn.transformer import Transformer, TransformerConfig
from genzoo.nn.unet import UNet
from genzoo.registry import get_entry, resolve_args

BASE_GAN = [p for p in inspect.signature(AdversarialModel.__init__).parameters if p != "self"]


@pytest.mark.parametrize("name, own", [("gan", {"gen_loss": "non_saturating"}), ("wgan", {"d_steps": 5, "clip": 0.01}),
                                       ("wgan_gp", {"d_steps": 5, "gp_weight": 10.0}),
                                       ("gan_qp", {"d_steps": 2, "lam": 10.0, "qp_norm": "l2"}),
                                       ("bigan", {"gen_loss": "non_saturating"}),
                                       ("bigan_qp", {"d_steps": 2, "lam": 10.0, "qp_norm": "l1", "rec_x": 3.0, "rec_z": 2.0}),
                                       ("ogan", {"objective": "qp", "corr_weight": 0.5})])
def test_a_gan_declares_only_its_own_arguments(name, own):
    """The ten shared GAN arguments are AdversarialModel's alone; each objective adds its own (or a new
    default for one of them, such as WGAN's d_steps = 5) and the registry still lists them all, in order."""
    cls = get_entry(name).cls
    mine = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kw")]
    assert set(mine) == set(own) and not set(mine) & (set(BASE_GAN) - {"d_steps"})
    defaults = get_entry(name).signature_defaults()
    assert list(defaults)[:len(BASE_GAN)] == BASE_GAN and list(defaults)[len(BASE_GAN):] == [k for k in own if k != "d_steps"]
    assert {k: defaults[k] for k in own} == own
    m = genzoo.build(name, shape=(2,), hidden=8, depth=1, latent_dim=2)  # a base argument reaches the base
    assert m.hidden == 8 and m.latent_dim == 2 and m.player_steps()["discriminator"] == defaults["d_steps"]
    with pytest.raises(ConfigError, match="unknown key 'hiden'"):
        genzoo.build(name, hiden=8)


def test_charlm_reads_its_transformer_section_in_every_form():
    """Nested (the recipe's form), dotted (the command line's) and flat (configs written before the
    section) give the same settings and the same network."""
    nested = resolve_args("charlm", {"transformer": {"dim": 32, "depth": 1, "heads": 2, "pos": "learned"}})
    dotted = resolve_args("charlm", {"transformer.dim": 32, "transformer.depth": 1, "transformer.heads": 2,
                                     "transformer.pos": "learned"})
    flat = resolve_args("charlm", {"dim": "32", "depth": 1, "heads": 2, "pos": "learned"})  # "32": CLI strings coerce
    assert nested == dotted == flat and nested["transformer"]["dim"] == 32 and nested["transformer"]["norm"] == "layernorm"
    assert set(nested) == {"vocab_size", "shape", "transformer", "max_len"}
    torch.manual_seed(0)
    a = genzoo.build("charlm", vocab_size=11, shape=(8,), **{"transformer": nested["transformer"]})
    torch.manual_seed(0)
    b = genzoo.build("charlm", vocab_size=11, shape=(8,), dim=32, depth=1, heads=2, pos="learned")
    torch.manual_seed(0)
    c = Transformer(32, 1, 2, vocab_size=12, out_dim=11, causal=True, max_len=8, pos="learned")
    for m in (a, b):
        assert isinstance(m.net, Transformer) and m.net.pos == "learned"
        assert all(torch.equal(x, y) for x, y in zip(m.net.state_dict().values(), c.state_dict().values()))


def test_the_transformer_section_is_validated_by_its_own_fields():
    with pytest.raises(ConfigError, match=r"unknown key transformer.dimm for model 'charlm' \(did you mean 'dim'\?\)"):
        resolve_args("charlm", {"transformer.dimm": 3})
    with pytest.raises(ConfigError, match="bad model.transformer for 'charlm': unknown Transformer pos 'alibi'"):
        resolve_args("charlm", {"transformer": {"pos": "alibi"}})
    with pytest.raises(ConfigError, match="Transformer depth must be >= 1"):
        resolve_args("charlm", {"depth": 0})
    with pytest.raises(ConfigError, match="is a section of settings"):
        resolve_args("charlm", {"transformer": 3})
    with pytest.raises(ValueError, match="unknown Transformer setting 'width'"):
        TransformerConfig.of({"width": 3})
    assert TransformerConfig.of(None) == TransformerConfig() and TransformerConfig.of({"dim": 8}).dim == 8


def test_the_recipe_writes_the_section_and_the_command_line_reaches_it(tmp_path):
    cfg = resolve(apply_overrides(load_recipe("charlm"), parse_overrides(["model.transformer.pos=learned", "depth=2"])))
    t = cfg["model_args"]["transformer"]
    assert t["pos"] == "learned" and t["depth"] == 2 and t["dim"] == 128 and "pos" not in cfg["model_args"]
    assert get_entry("charlm").accepts("transformer.pos") and get_entry("charlm").accepts("pos")
    assert not get_entry("charlm").accepts("transformer.width") and not get_entry("vae").accepts("pos")


# -- the denoiser section of the diffusion family (Diffusion, its Shortcut subclass, PFGM) ----------------------

def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


SMALL_UNET = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4],
              "time_embedding": "fourier", "dropout": 0.1}
#: model -> (its own arguments, the UNet arguments the data and the model fix)
UNET_MODELS = {"diffusion": ({}, {"num_classes": 0}), "shortcut": ({}, {"num_classes": 8}),
               "pfgm": ({}, {"out_channels": 2})}


@pytest.mark.parametrize("name", sorted(UNET_MODELS))
def test_the_diffusion_family_reads_its_denoiser_section_in_every_form(name):
    """Nested (the recipe's form), dotted (the command line's) and flat (configs written before the section) give
    the same settings, and the model's network is bit for bit the UNet built by hand from them."""
    own, fixed = UNET_MODELS[name]
    nested = resolve_args(name, {"shape": (1, 8, 8), "denoiser": {"net": "unet", **SMALL_UNET}})
    dotted = resolve_args(name, {"shape": (1, 8, 8), "denoiser.net": "unet",
                                 **{f"denoiser.{k}": v for k, v in SMALL_UNET.items()}})
    flat = resolve_args(name, {"shape": (1, 8, 8), "net": "unet", **{k: str(v) for k, v in SMALL_UNET.items()}})
    assert nested == dotted == flat and nested["denoiser"]["channel_mult"] == (1, 2)
    assert nested["denoiser"]["hidden"] == 256 and "channels" not in nested  # untouched fields keep their defaults
    torch.manual_seed(0)
    m = genzoo.build(name, shape=(1, 8, 8), denoiser={"net": "unet", **SMALL_UNET})
    torch.manual_seed(0)
    u = UNet(in_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), image_size=(8, 8),
             dropout=0.1, time_embedding="fourier", **fixed)
    assert isinstance(m.net, UNet) and m.net_name == "unet" and _same_weights(m.net, u)
    assert m.denoiser_spec == DenoiserConfig(net="unet", **SMALL_UNET)
    assert callable(m.denoiser) if name != "pfgm" else True  # Diffusion's D(x, t) for the samplers is untouched


def test_the_mlp_denoiser_and_the_section_defaults():
    """Vectors get the TimeMLP (PFGM's on N + 1 inputs and outputs); each model's default section is its own
    (Diffusion: a UNet; PFGM: auto) and a bare default build is the old default network."""
    assert resolve_args("diffusion", {})["denoiser"] == dataclasses.asdict(DenoiserConfig())
    assert resolve_args("shortcut", {})["denoiser"] == dataclasses.asdict(DenoiserConfig())
    assert resolve_args("pfgm", {})["denoiser"] == dataclasses.asdict(DenoiserConfig(net="auto"))
    torch.manual_seed(1)
    d = genzoo.build("diffusion", shape=(3,), net="mlp", hidden=16, depth=1)
    torch.manual_seed(1)
    assert isinstance(d.net, TimeMLP) and _same_weights(d.net, TimeMLP(3, hidden=16, depth=1))
    torch.manual_seed(2)
    p = genzoo.build("pfgm", shape=(2,), denoiser={"hidden": 16, "depth": 2})  # auto -> the MLP for vectors
    torch.manual_seed(2)
    assert p.net_name == "mlp" and _same_weights(p.net, TimeMLP(3, out_dim=3, hidden=16, depth=2))
    assert genzoo.build("diffusion", shape=(2, 3), net="auto", hidden=8, depth=1).net_name == "mlp"
    torch.manual_seed(3)
    a = genzoo.build("diffusion")  # the MNIST default, 1,191,233 parameters (the UNet's docstring)
    assert isinstance(a.net, UNet) and sum(p.numel() for p in a.net.parameters()) == 1_191_233


def test_the_denoiser_section_is_validated_by_its_own_fields():
    with pytest.raises(ConfigError, match=r"unknown key denoiser.chanels for model 'diffusion' \(did you mean 'channels'\?\)"):
        resolve_args("diffusion", {"denoiser.chanels": 3})
    with pytest.raises(ConfigError, match="bad model.denoiser for 'pfgm': unknown denoiser net 'transformer'; valid: unet, mlp, auto"):
        resolve_args("pfgm", {"denoiser": {"net": "transformer"}})
    with pytest.raises(ConfigError, match="denoiser channel_mult must be a non-empty list"):
        resolve_args("shortcut", {"channel_mult": []})
    with pytest.raises(ConfigError, match="unknown denoiser time_embedding 'learned'"):
        resolve_args("diffusion", {"time_embedding": "learned"})
    with pytest.raises(ConfigError, match="is a section of settings"):
        resolve_args("diffusion", {"denoiser": 3})
    with pytest.raises(ConfigError, match=r"needs image data \(C, H, W\), got shape \(2,\); use model.denoiser.net=mlp"):
        genzoo.build("diffusion", shape=(2,))
    with pytest.raises(ConfigError, match="model.denoiser.attn_resolutions"):  # the UNet's hint names the section
        genzoo.build("diffusion", shape=(1, 8, 8), denoiser={"channel_mult": [1], "attn_resolutions": [5]})
    with pytest.raises(ValueError, match="unknown denoiser setting 'width'"):
        DenoiserConfig.of({"width": 3})
    with pytest.raises(ValueError, match="dropout must be in"):
        DenoiserConfig(dropout=1.0)
    assert DenoiserConfig.of(None, net="auto").net == "auto" and DenoiserConfig.of({"channel_mult": [1]}).channel_mult == (1,)
    assert get_entry("pfgm").accepts("denoiser.hidden") and get_entry("pfgm").accepts("hidden")
    assert not get_entry("pfgm").accepts("denoiser.dim") and not get_entry("diffusion").accepts("dim")


def test_a_run_folder_written_with_the_flat_arguments_still_loads(tmp_path):
    """Run folders written before the section hold net, hidden, ... flat in config.yaml: they load, to the same
    network and weights."""
    import yaml

    from genzoo.cli import main
    from genzoo.train.run import load_run

    run = tmp_path / "run"
    assert main(["train", "diffusion_toy", "train.steps=2", "train.num_samples=0", "train.sample_every=0",
                 "train.valid_every=0", "model.hidden=16", "model.depth=1", "--run-dir", str(run), "--no-progress"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model_args"]["denoiser"]["hidden"] == 16 and "hidden" not in cfg["model_args"]
    new = load_run(run)[0]
    cfg["model_args"].update(cfg["model_args"].pop("denoiser"))  # the old, flat form
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    old = load_run(run)[0]
    assert old.denoiser_spec == new.denoiser_spec and old.denoiser_spec.hidden == 16
    assert _same_weights(old.net, new.net)


# -- the Transformer section of the image transformer and the VQ prior -------------------------------------------

def test_the_image_transformer_reads_its_transformer_section_in_every_form():
    nested = resolve_args("image_transformer", {"transformer": {"dim": 16, "depth": 1, "heads": 2}})
    dotted = resolve_args("image_transformer", {"transformer.dim": 16, "transformer.depth": 1, "transformer.heads": 2})
    flat = resolve_args("image_transformer", {"dim": 16, "depth": "1", "heads": 2})
    assert nested == dotted == flat and nested["transformer"]["pos"] == "rope2d"  # the model's own default pos
    assert resolve_args("image_transformer", {})["transformer"]["dim"] == 64
    torch.manual_seed(0)
    m = genzoo.build("image_transformer", shape=(3, 4, 4), levels=256, transformer=nested["transformer"])
    torch.manual_seed(0)
    t = Transformer(16, 1, 2, vocab_size=257, out_dim=256, causal=True, max_len=48, pos="rope2d", grid=(4, 4),
                    grid_repeat=3)
    assert _same_weights(m.net, t)
    with pytest.raises(ConfigError, match="rope-tie"):
        genzoo.build("image_transformer", pos="rope-tie")
    with pytest.raises(ConfigError, match="bad model.transformer for 'image_transformer': unknown Transformer pos"):
        resolve_args("image_transformer", {"pos": "alibi"})


def test_the_vq_prior_reads_its_transformer_section():
    from genzoo.models.vq import VQPrior

    tok = genzoo.build("vqvae", shape=(1, 8, 8), channels=8, res_blocks=1, codebook_size=16, code_dim=4)
    assert resolve_args("vq_prior", {"dim": 16})["transformer"] == {**resolve_args("vq_prior", {})["transformer"], "dim": 16}
    assert resolve_args("vq_prior", {})["transformer"]["pos"] == "rope2d"
    torch.manual_seed(0)
    p = VQPrior(tok, transformer={"dim": 16, "depth": 1, "heads": 2})
    torch.manual_seed(0)
    L = tok.grid[0] * tok.grid[1]
    t = Transformer(16, 1, 2, vocab_size=17, out_dim=16, causal=True, max_len=L, pos="rope2d", grid=tok.grid)
    assert _same_weights(p.net, t)
    with pytest.raises(ConfigError, match="vq_prior: unknown Transformer setting 'width'"):
        VQPrior(tok, transformer={"width": 3})
