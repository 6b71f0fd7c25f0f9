"""Issue 30 item 2: options are signatures. A model's ``sample`` / ``log_prob`` keyword-only parameters
are its options (``sample_options`` / ``log_prob_options`` derived from them), and an unknown keyword
is refused in genzoo's one line instead of Python's TypeError."""
from __future__ import annotations

import inspect

import pytest
import torch

import genzoo
from genzoo.errors import ConfigError
from genzoo.models.base import GenerativeModel, _keyword_options
from genzoo.registry import get_entry, list_models

#: models whose options are their signatures (the rest still list them by hand, with **opts)
BY_SIGNATURE = {"gan", "wgan", "wgan_gp", "gan_qp", "bigan", "bigan_qp", "ogan", "vae", "nvae", "nade", "made", "charlm",
                "fvsbn", "pixelcnn", "gated_pixelcnn", "image_transformer", "realnvp", "glow", "nice", "vqvae", "vqgan",
                "vq_prior", "shortcut", "discrete_diffusion"}


@pytest.mark.parametrize("name", sorted(list_models()))
def test_declared_options_are_the_signatures_keywords(name):
    cls = get_entry(name).cls
    for meth, attr, fixed in (("sample", "sample_options", {"generator"}), ("log_prob", "log_prob_options", set())):
        fn = getattr(cls, meth)
        derived = _keyword_options(fn, fixed)
        if derived is not None:  # no **opts: the attribute is exactly the keyword-only parameters, in order
            assert tuple(getattr(cls, attr)) == derived, (name, meth)
    if name in BY_SIGNATURE:
        assert _keyword_options(cls.sample, {"generator"}) is not None, f"{name}.sample takes **opts again"


def test_an_unknown_option_gets_one_line_with_the_valid_ones():
    m = genzoo.build("vae", shape=(1, 8, 8), arch="mlp", hidden=16, latent_dim=2)
    assert m.sample_options == ("temperature", "mean") and m.log_prob_options == ("k", "chunk", "generator")
    assert m.sample(2, temperature=0.5).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"unknown sample option 'temprature' for VAE \(did you mean 'temperature'\?\); "
                                          r"valid options: temperature, mean"):
        m.sample(2, temprature=0.5)
    with pytest.raises(ConfigError, match="unknown log_prob option 'kk'"):
        m.log_prob(torch.zeros(1, 1, 8, 8), kk=3)
    with torch.no_grad():
        assert float(m.log_prob(torch.zeros(1, 1, 8, 8), k=2, generator=torch.Generator().manual_seed(0))) < 0
    # the signature is what `help()` and an editor show
    assert list(inspect.signature(type(m).sample).parameters) == ["self", "n", "generator", "temperature", "mean"]


def test_a_subclass_declaring_both_is_refused_and_one_inheriting_keeps_the_parents():
    with pytest.raises(TypeError, match="drop the sample_options tuple"):
        class Both(GenerativeModel):  # noqa: F841
            sample_options = ("t",)

            def sample(self, n, *, generator=None, t=1.0):
                return torch.zeros(n)

    class Mine(GenerativeModel):
        def sample(self, n, *, generator=None, t=1.0, s=2):
            return torch.full((n,), t * s)

    class Child(Mine):
        pass

    assert Mine.sample_options == Child.sample_options == ("t", "s")
    assert float(Child().sample(1, s=3)[0]) == 3.0
    with pytest.raises(ConfigError, match="unknown sample option 'u' for Child"):
        Child().sample(1, u=1)
