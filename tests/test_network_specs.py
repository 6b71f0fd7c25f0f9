"""Issue 30 item 4: the registry reads the whole class hierarchy (a subclass declares only its own
arguments), and a shared network's settings are one nested, validated section (``model.transformer``)."""
from __future__ import annotations

import inspect

import pytest
import torch

import genzoo
from genzoo.config import apply_overrides, load_recipe, parse_overrides, resolve
from genzoo.errors import ConfigError
from genzoo.models.gan import AdversarialModel
from genzoo.nn.transformer import Transformer, TransformerConfig
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
