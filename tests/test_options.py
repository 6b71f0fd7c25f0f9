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

@pytest.mark.parametrize("name", sorted(list_models()))
def test_declared_options_are_the_signatures_keywords(name):
    """Every registered model declares its options by its signature: the attribute is exactly the
    keyword-only parameters, in order, then what a ``**kwargs`` forwards (declared beside it)."""
    cls = get_entry(name).cls
    for meth, attr, forwarded, fixed in (("sample", "sample_options", "sample_forwarded_options", {"generator"}),
                                         ("log_prob", "log_prob_options", "log_prob_forwarded_options", set())):
        fn = getattr(cls, meth)
        if fn is getattr(GenerativeModel, meth):  # not defined: no options (log_prob raises its one line)
            continue
        derived = _keyword_options(fn, fixed, getattr(cls, forwarded, None))
        assert derived is not None, f"{name}.{meth} takes **opts and lists its options by hand"
        assert tuple(getattr(cls, attr)) == derived, (name, meth)


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


def test_forwarded_options_join_the_keywords_and_are_checked():
    """The diffusion model's sample takes its own keywords plus each sampler's options (**sampler_opts);
    an option of no sampler is refused with the valid list, one of another sampler names the sampler."""
    m = genzoo.build("diffusion", shape=(2,), net="mlp", hidden=16, depth=1, process="flow", param="velocity",
                    loss="cfm", sampler="euler", steps=2)
    assert m.sample_options[:3] == ("sampler", "steps", "grid") and "eta" in m.sample_options
    assert "S_churn" in m.sample_options and "generator" not in m.sample_options
    assert m.sample(3, sampler="ddim", eta=0.0, steps=2).shape == (3, 2)
    with pytest.raises(ConfigError, match=r"unknown sample option 'etta' for Diffusion \(did you mean 'eta'\?\)"):
        m.sample(3, etta=0.5)
    with pytest.raises(ConfigError, match="sample option 'eta' does not apply to sampler 'euler'"):
        m.sample(3, eta=0.5)
    assert m.log_prob_options == ("exact_trace", "num_probes", "rtol", "atol", "t_min", "method", "generator", "labels")
    with pytest.raises(ConfigError, match="unknown log_prob option 'probes'"):
        m.log_prob(torch.zeros(1, 2), probes=2)


def test_pfgm_and_tarflow_keep_their_option_rules():
    p = genzoo.build("pfgm", shape=(2,), hidden=16, depth=1, steps=2)
    with pytest.raises(ConfigError, match="rtol / atol apply to sampler='rk45' only"):
        p.sample(2, rtol=1e-3)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        p.sample(2, steps=0)
    assert p.sample(2, steps=2, clamp=False).shape == (2, 2)
    t = genzoo.build("tarflow", shape=(4,), patch_size=1, blocks=1, dim=8, heads=1, layers_per_block=1)
    assert t.sample_options == ("temperature", "guidance", "attn_temp", "annealed_guidance", "labels", "denoise")
    with pytest.raises(ConfigError, match="need guidance >= 0"):
        t.sample(2, guidance=-1.0)
    with torch.no_grad():
        x = torch.zeros(2, 4)
        assert torch.equal(t.log_prob(x, noise=False), t.log_density(x))  # noise=False: the exact density at x
        assert not torch.equal(t.log_prob(x, generator=torch.Generator().manual_seed(0)), t.log_density(x))
